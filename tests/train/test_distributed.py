"""DDP equivalence: a 2-worker multi-corpus step equals 1 worker on the union of the batches.

Two real processes with a gloo process group run the training loop's own ``train_step`` (global loss
normalisation, summed gradients, global BatchNorm); a single process runs the same steps on the concatenated
batches. Shared parameters, per-corpus parameters and BN running statistics must agree to rounding error, measured
relative to each tensor's magnitude (see ``TOLERANCE``). One scenario gives rank 1 no samples of corpus B, and a
negative control shows that averaging gradients over the world size (instead of over the ranks that computed them)
is caught. The 2 workers sum their gradients as the loop does, in buckets launched during backward
(``emonet_dist.train.buckets``: a corpus's first step reduces after backward and makes its plan, later ones
overlap). The local-BN option (``ray.sync_batchnorm=false``) is checked for what it promises instead: ranks' BN
statistics agree after the loop's averaging. Under bf16 autocast (``train.precision=bf16``) the same equivalence
holds to bf16's rounding, and BatchNorm over the union batch keeps its statistics in fp32 (see ``BF16_TOLERANCE``).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.model.build import build_model
from emonet_dist.model.modes import set_mode
from emonet_dist.train import distributed as D
from emonet_dist.train.buckets import gradient_buckets
from emonet_dist.train.loop import train_step
from emonet_dist.train.precision import make_precision
from emonet_testkit import free_port, max_relative_error

# The device these tests run on: the CPU here; bench/gpu_check.py runs this file with EMONET_TEST_DEVICE=cuda (ranks
# on cuda:rank modulo the GPUs; NCCL with a GPU per rank, gloo when two ranks share one GPU).
DEVICE = os.environ.get("EMONET_TEST_DEVICE", "cpu")
CFG = ModelConfig(stem_width=4, base_width=8, pooling=PoolingConfig(units=8), head=HeadConfig(hidden=8, dropout=0.0))
CLASSES = {"A": 3, "B": 2}
WEIGHTS = {"A": torch.tensor([1.0, 2.0, 0.5]), "B": torch.tensor([1.5, 0.7])}
BUCKET_MB = 0.01  # ray.bucket_mb of the 2-worker side: the tiny model's gradients (~100 kB) fill several buckets


def _union_batches(seed: int, rounds: int) -> list[tuple[str, dict]]:
    """Rounds over A and B; each batch holds 6 utterances of different lengths, zero-padded together."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rounds):
        for corpus in ("A", "B"):
            lengths = torch.randint(2400, 4800, (6,), generator=g)
            waves = torch.randn(6, int(lengths.max()), generator=g, dtype=torch.float64)
            waves = waves.to(torch.get_default_dtype()) * 0.1
            for i, n in enumerate(lengths):
                waves[i, n:] = 0
            targets = torch.randint(0, CLASSES[corpus], (6,), generator=g)
            out.append((corpus, {"waves": waves, "lengths": lengths, "targets": targets, "ids": [""] * 6}))
    return out


def _rows(batch: dict, idx) -> dict:
    return {"waves": batch["waves"][idx], "lengths": batch["lengths"][idx], "targets": batch["targets"][idx],
            "ids": [""] * len(idx)}


def _split(batch: dict, rank: int, corpus: str, empty_b: bool) -> dict:
    """Rank 0 takes rows 0-2, rank 1 rows 3-5; with ``empty_b`` rank 1 gets no B rows and rank 0 all six."""
    if empty_b and corpus == "B":
        return _rows(batch, list(range(6)) if rank == 0 else [])
    return _rows(batch, list(range(3)) if rank == 0 else list(range(3, 6)))


def _fresh(frozen_bn: bool = False, device: torch.device | str = "cpu"):
    torch.manual_seed(0)
    model = build_model(CFG, CLASSES).to(device)
    groups = set_mode(model, "scratch")
    if frozen_bn:  # every BN normalises with its running statistics: each utterance's forward is its own
        bns = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
        model.freeze_batchnorms([n for n, m in model.named_modules() if isinstance(m, bns)])
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3)
    return model, opt, [p for g in groups for p in g["params"]]


def _device(rank: int) -> torch.device:
    return torch.device("cpu") if DEVICE == "cpu" else torch.device("cuda", rank % torch.cuda.device_count())


def _backend(world: int) -> str:
    return "nccl" if DEVICE != "cpu" and torch.cuda.device_count() >= world else "gloo"


def _host(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _run(rank: int, world: int, port: int, empty_b: bool, reduction: str, dtype: str, rounds: int,
         out: dict, precision: str = "fp32", frozen_bn: bool = False) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, dtype))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    device = _device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(world), rank=rank, world_size=world)
    if reduction == "average":  # the bug the test must catch: dividing by the world size
        sum_grads = D.sum_gradients

        def averaged(params, check=False):
            sum_grads(params, check)
            for p in params:
                if p.grad is not None:
                    p.grad.div_(world)
        import emonet_dist.train.loop as loop

        loop.sum_gradients = averaged
    model, opt, trainable = _fresh(frozen_bn, device)
    if reduction != "local-bn":
        D.use_global_batchnorm(model)
    # the loop's reduction: in buckets during backward (small ones, so that the model makes several); the negative
    # control patches the after-backward sum
    buckets = None if reduction == "average" else gradient_buckets(model, trainable, BUCKET_MB)
    model.train()
    for corpus, batch in _union_batches(1, rounds):
        train_step(model, opt, trainable, _split(batch, rank, corpus, empty_b), corpus, _weights(corpus, device),
                   device, make_precision(precision, device), buckets=buckets)
    if rank == 0:
        out["state"] = _host(model.state_dict())
    if reduction == "local-bn":  # ray.sync_batchnorm=false: what the loop does before evaluations and checkpoints
        out[f"before{rank}"] = _host(model.state_dict())
        D.average_batchnorm_stats(model)
        out[f"after{rank}"] = _host(model.state_dict())
    dist.destroy_process_group()


def _weights(corpus: str, device: torch.device) -> torch.Tensor:
    return WEIGHTS[corpus].to(device, torch.get_default_dtype())


@contextlib.contextmanager
def default_dtype(dtype: str):
    """The default dtype for the block, restored whatever happens (it is process-wide state)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _reference(dtype: str, rounds: int, precision: str = "fp32", frozen_bn: bool = False) -> dict:
    with default_dtype(dtype):
        device = _device(0)
        model, opt, trainable = _fresh(frozen_bn, device)
        model.train()
        for corpus, batch in _union_batches(1, rounds):
            train_step(model, opt, trainable, batch, corpus, _weights(corpus, device), device,
                       make_precision(precision, device))
        return _host(model.state_dict())


def _distributed(empty_b: bool, dtype: str, rounds: int, reduction: str = "sum", everything: bool = False,
                 precision: str = "fp32", frozen_bn: bool = False) -> dict:
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_run, args=(2, free_port(), empty_b, reduction, dtype, rounds, out, precision, frozen_bn), nprocs=2,
                 join=True)
        return dict(out) if everything else dict(out["state"])


def _relative_errors(got: dict, ref: dict, counters_equal: bool = True) -> dict[str, float]:
    """Per tensor: max|got - ref| / max|ref| (floating-point tensors; the step counters are compared exactly)."""
    out = {}
    for k, v in ref.items():
        if v.is_floating_point() and v.numel():
            out[k] = max_relative_error(got[k], v)
        elif counters_equal:
            assert torch.equal(got[k], v), k
    return out


# Why these sizes. The two sides compute the same sums in a different order (two ranks' partial sums plus a
# gloo all-reduce against one pass over the union batch; different kernel blocking for 3 and 6 rows), so they
# differ by rounding only, amplified by the tiny model's BatchNorms over 3-6 utterances and, in the second round,
# by momentum and weight decay. How much this computation amplifies rounding was measured on each side of the
# same scenario: two rounds in fp32 differ by up to 0.16 of a tensor's magnitude (2.6e6 ulps of 6e-8: corpus B's
# BN biases, |value| ~3e-3), two rounds in fp64 by up to 1.3e-9 (1.2e7 ulps of 1.1e-16; AMD EPYC family 25
# model 17; another EPYC gave 4.8e-13). The amplification is the same order in both precisions, so the fp64
# difference is rounding of the same computation, and it can reach ~1e-9 on some CPUs; one round amplifies far
# less (fp32, one round: up to 3.8e-5). Tolerances: fp32 one round 1e-3 (26x above the measured 3.8e-5), fp64
# two rounds 1e-7 (78x above the largest measured). Both stay at least 100x (fp32) and 10^6x (fp64) below the
# error of the negative control below (gradients off by a factor of two: relative errors of order 0.1-1), and
# fp64 stays sharp: a part of the step computed in fp32 by mistake would differ by ~6e-8 times the same
# amplification, far above 1e-7.
TOLERANCE = {"float32": 1e-3, "float64": 1e-7}


@pytest.mark.parametrize("empty_b", [False, True], ids=["both-ranks-see-B", "rank1-has-no-B"])
@pytest.mark.parametrize("dtype, rounds", [("float32", 1), ("float64", 2)], ids=["fp32-one-round", "fp64-two-rounds"])
def test_two_workers_equal_one_worker_on_the_union(empty_b, dtype, rounds):
    ref, got = _reference(dtype, rounds), _distributed(empty_b, dtype, rounds)
    errors = _relative_errors(got, ref)
    assert max(errors.values()) <= TOLERANCE[dtype], sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    # the comparison covers shared weights, both corpora's parameters and their BN running statistics
    assert any("adapters" in k for k in errors) and any("running_var" in k for k in errors)
    assert any(".bns.B." in k for k in errors) and any(".bns.A." in k for k in errors)
    # ... and they moved from their initial values by far more than the tolerance, so the equality is not trivial
    with default_dtype(dtype):
        start = _fresh()[0].state_dict()
    moved = {k for k, v in _relative_errors(ref, start, counters_equal=False).items() if v > 10 * TOLERANCE[dtype]}
    assert any("heads" in k for k in moved) and any("running_mean" in k for k in moved)


def test_averaging_over_the_world_size_is_caught():
    ref, wrong = _reference("float32", 1), _distributed(True, "float32", 1, reduction="average")
    assert max(_relative_errors(wrong, ref).values()) > 100 * TOLERANCE["float32"]


def test_local_batchnorm_ranks_agree_after_averaging():
    """ray.sync_batchnorm=false: each rank's BN statistics come from its own batch, so they differ after a step;
    the average the loop takes before every evaluation and checkpoint makes them agree (and is their mean),
    while the parameters agree throughout (gradients are still summed over the ranks)."""
    out = _distributed(False, "float32", 1, reduction="local-bn", everything=True)
    b0, b1, a0, a1 = out["before0"], out["before1"], out["after0"], out["after1"]
    stats = [k for k in b0 if k.endswith(("running_mean", "running_var"))]
    params = [k for k in b0 if k not in stats and not k.endswith("num_batches_tracked")]
    assert stats and params
    assert max(max_relative_error(b0[k], b1[k]) for k in stats) > 1e-2  # ranks saw different batches
    for k in stats:
        assert torch.equal(a0[k], a1[k]), k
        # one addition and a halving in fp32: within a few ulps of the magnitude
        assert max_relative_error(a0[k], (b0[k] + b1[k]) / 2) <= 1e-6, k
    for k in params:
        assert torch.equal(b0[k], b1[k]), k


# bf16 autocast. In the scenario above bf16 cannot show anything: that computation amplifies rounding some 600-fold in
# one round (see above), and bf16 rounds 2^16 times coarser than fp32 (unit roundoff 2^-9 = 2e-3), so 2 workers and
# 1 worker differed by 0.2 of the update (normwise, one round), as much as bf16 differs from fp32 there (0.2) and
# as the negative control (0.26). Two changes make it measurable: every BatchNorm normalises with its running
# statistics (frozen), so an utterance's forward does not depend on the others in its batch, and what is compared
# is the update (after - start) over all tensors, normwise. Measured (AMD EPYC, torch 2.9.1; one and two rounds):
# 2 workers vs 1 worker in bf16 3.2e-3 and 4.6e-3 (1.6-2.3 bf16 units: the per-utterance bf16 convolutions round
# differently for 3 and 6 rows), bf16 vs fp32 on 1 worker 2.1e-2, fp32 2 vs 1 workers 3e-7, the negative control
# (gradients averaged over the world size) 0.51. Tolerance 2e-2: 4x above the largest measured, no more than bf16's
# own distance from fp32 on the same step, 25x below the negative control. BatchNorm over the union batch in bf16
# is tested on its own below.
BF16_TOLERANCE = 2e-2


def _update_error(got: dict, ref: dict, start: dict) -> float:
    """||(got - start) - (ref - start)|| / ||ref - start|| over every floating-point tensor."""
    keys = [k for k, v in start.items() if v.is_floating_point()]
    num = sum(float((got[k].double() - ref[k].double()).square().sum()) for k in keys)
    den = sum(float((ref[k].double() - start[k].double()).square().sum()) for k in keys)
    return (num / den) ** 0.5


@pytest.mark.parametrize("empty_b", [False, True], ids=["both-ranks-see-B", "rank1-has-no-B"])
def test_two_workers_equal_one_worker_under_bf16_autocast(empty_b):
    ref = _reference("float32", 2, "bf16", frozen_bn=True)
    got = _distributed(empty_b, "float32", 2, precision="bf16", frozen_bn=True)
    start = _fresh(frozen_bn=True)[0].state_dict()
    assert _update_error(got, ref, start) <= BF16_TOLERANCE
    # both corpora's own parameters and the shared ones moved, and bf16 made a difference the size measured above
    moved = {k for k, v in _relative_errors(ref, start, counters_equal=False).items() if v > 1e-3}
    assert any(".adapters.A." in k for k in moved) and any(".adapters.B." in k for k in moved)
    assert any("heads.B" in k for k in moved) and "pooling.proj.weight" in moved
    assert _update_error(ref, _reference("float32", 2, "fp32", frozen_bn=True), start) > 1e-3


def test_averaging_over_the_world_size_is_caught_under_bf16_autocast():
    ref, start = _reference("float32", 1, "bf16", frozen_bn=True), _fresh(frozen_bn=True)[0].state_dict()
    wrong = _distributed(True, "float32", 1, reduction="average", precision="bf16", frozen_bn=True)
    assert _update_error(wrong, ref, start) > 10 * BF16_TOLERANCE


def _bn_run(rank: int, world: int, port: int, out: dict) -> None:
    """One GlobalBatchNorm step under bf16 autocast on this rank's rows of a fixed batch (world 1: all rows)."""
    torch.set_num_threads(1)
    device = _device(rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        dist.init_process_group(_backend(world), rank=rank, world_size=world)
    g = torch.Generator().manual_seed(3)
    x, dy = torch.randn(6, 5, 4, 9, generator=g) * 2 + 0.5, torch.randn(6, 5, 4, 9, generator=g)
    rows = slice(0, 6) if world == 1 else slice(3 * rank, 3 * rank + 3)
    bn = D.GlobalBatchNorm(5).to(device)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(5, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(5, generator=g))
    xb = x[rows].to(device, torch.bfloat16).requires_grad_()  # what a conv under autocast hands the BN
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = bn(xb)
    (y.float() * dy[rows].to(device)).sum().backward()
    D.sum_gradients([bn.weight, bn.bias])
    out[f"y{rank}"], out[f"dx{rank}"] = y.detach().float().cpu(), xb.grad.float().cpu()
    if rank == 0:
        out.update(**_host({"dw": bn.weight.grad, "db": bn.bias.grad, "mean": bn.running_mean,
                            "var": bn.running_var}),
                   dtypes=(str(y.dtype), str(xb.grad.dtype), str(bn.running_mean.dtype)))
    if world > 1:
        dist.destroy_process_group()


def test_global_batchnorm_under_bf16_autocast_equals_batchnorm_on_the_union():
    """BN over the union batch, in bf16 as autocast hands it: statistics, running averages and the parameters'
    gradients in fp32, output and input gradient in bf16, all as a single BN on the union batch computes them."""
    ref: dict = {}
    _bn_run(0, 1, 0, ref)
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_bn_run, args=(2, free_port(), out), nprocs=2, join=True)
        got = dict(out)
    assert got["dtypes"] == ref["dtypes"] == ("torch.bfloat16", "torch.bfloat16", "torch.float32")
    y, dx = torch.cat([got["y0"], got["y1"]]), torch.cat([got["dx0"], got["dx1"]])
    errors = {"y": max_relative_error(y, ref["y0"]), "dx": max_relative_error(dx, ref["dx0"]),
              **{k: max_relative_error(got[k], ref[k]) for k in ("dw", "db", "mean", "var")}}
    # Measured: y and dx equal, the fp32 quantities within 1.1e-7 (fp32 rounding of a differently ordered sum).
    # Tolerances: bf16 outputs one bf16 unit (2^-8 of the magnitude: a statistic differing in its last fp32 bits
    # may flip a rounding); fp32 quantities 1e-5, 100x above the measured and 100x below what statistics kept in
    # bf16 would give (~2^-9 = 2e-3, the old code's, which also let an fp16 count overflow at 65504).
    tolerance = {"y": 2 ** -8, "dx": 2 ** -8, "dw": 1e-5, "db": 1e-5, "mean": 1e-5, "var": 1e-5}
    assert all(errors[k] <= tolerance[k] for k in errors), errors
    assert float(ref["dw"].abs().min()) > 0 and float(ref["mean"].abs().min()) > 0  # non-trivial values
