"""Overlapped bucketed gradient reduction (``emonet_dist.train.buckets``) on 2 real gloo processes.

* The overlap is real: with several buckets, reductions are launched from the gradient hooks while backward still
  has gradients to produce (a recorded sequence of gradient arrivals and launches).
* The sums are today's: the loop's ``train_step`` with buckets gives bit for bit the gradients and parameters of
  the after-backward :func:`~emonet_dist.train.distributed.sum_gradients` (fp32, two rounds over two corpora,
  the second overlapped). Two ranks' sums are a + b in either path, so the comparison is exact.
* Gradients that do not come behave as today: a planned parameter that gets no gradient in a later step stays
  None (its bucket is reduced after backward with the gradients that are there), and a gradient outside the plan
  is still summed.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.model.build import build_model
from emonet_dist.model.modes import set_mode
from emonet_dist.train.buckets import GradientBuckets, gradient_buckets, plan_buckets
from emonet_dist.train.distributed import sum_gradients
from emonet_dist.train.loop import train_step
from emonet_testkit import free_port

CFG = ModelConfig(stem_width=4, base_width=8, pooling=PoolingConfig(units=8), head=HeadConfig(hidden=8, dropout=0.0))
CLASSES = {"A": 3, "B": 2}


def _batch(seed: int, rank: int, corpus: str) -> dict:
    g = torch.Generator().manual_seed(seed * 10 + rank)
    waves = torch.randn(3, 4000, generator=g) * 0.1
    return {"waves": waves, "lengths": torch.tensor([4000, 3000, 2500]),
            "targets": torch.randint(0, CLASSES[corpus], (3,), generator=g), "ids": [""] * 3}


def _fresh():
    torch.manual_seed(0)
    model = build_model(CFG, CLASSES)
    groups = set_mode(model, "scratch")
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=1e-3)
    return model, opt, [p for g in groups for p in g["params"]]


def _steps(rank: int, overlapped: bool) -> tuple[dict, dict, dict]:
    """Two rounds over A and B; the summed gradients of every step, the final state and what the buckets saw."""
    model, opt, trainable = _fresh()
    names = {id(p): n for n, p in model.named_parameters()}
    buckets = gradient_buckets(model, trainable, 0.01) if overlapped else None
    events: list[tuple[str, int]] = []
    if buckets is not None:  # registered after the reducer's hooks: they see each gradient's launches
        for p in trainable:
            p.register_post_accumulate_grad_hook(lambda p: events.append((names[id(p)], len(buckets.works))))
    model.train()
    grads, seen = {}, {}
    for step, corpus in enumerate(["A", "B", "A", "B"]):
        events.clear()
        train_step(model, opt, trainable, _batch(step, rank, corpus), corpus, None, "cpu", buckets=buckets)
        grads[step] = {names[id(p)]: p.grad.clone() for p in trainable if p.grad is not None}
        if buckets is not None:
            seen[step] = {"events": list(events), "in_backward": buckets.launched_in_backward,
                          "buckets": len(buckets.plans[corpus].buckets)}
    return grads, {k: v.clone() for k, v in model.state_dict().items()}, seen


class _Toy(nn.Module):
    """Three layers; ``skip`` leaves the middle one out of the graph (its parameters get no gradient)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x, skip: bool):
        h = self.a(x)
        return self.c(h if skip else self.b(h))


def _missing_grads(rank: int) -> dict:
    """Plan made with every layer, then a step without the middle one; plan made without it, then a step with it.
    Each step reduced by the buckets and, on a copy of the gradients, by sum_gradients."""
    out = {}
    for plan_skip, step_skip in ((False, True), (True, False)):
        toy = _Toy()
        params = list(toy.parameters())
        buckets = GradientBuckets(params, bucket_mb=5e-5)  # 52 bytes: 2-4 buckets of the toy
        for skip, key in ((plan_skip, "plan"), (step_skip, "step")):
            x = torch.randn(5, 4, generator=torch.Generator().manual_seed(rank + (key == "step")))
            for p in params:
                p.grad = None
            with buckets.reduce("c"):
                toy(x, skip).square().sum().backward()
            got = [None if p.grad is None else p.grad.clone() for p in params]
            for p in params:
                p.grad = None
            toy(x, skip).square().sum().backward()
            sum_gradients(params)
            want = [None if p.grad is None else p.grad.clone() for p in params]
            out[(plan_skip, key)] = (got, want, len(buckets.plans["c"].buckets))
        buckets.close()
    return out


def _rank(rank: int, world: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out[f"after{rank}"] = _steps(rank, overlapped=False)[:2]
    out[f"buckets{rank}"] = _steps(rank, overlapped=True)
    out[f"missing{rank}"] = _missing_grads(rank)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks() -> dict:
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, free_port(), out), nprocs=2, join=True)
        return dict(out)


def test_reductions_start_while_backward_still_produces_gradients(two_ranks):
    for rank in (0, 1):
        seen = two_ranks[f"buckets{rank}"][2]
        assert seen[0]["in_backward"] == seen[1]["in_backward"] == 0  # a corpus's first step makes its plan
        for step in (2, 3):  # planned: every bucket launched from the hooks, the first long before backward ended
            s = seen[step]
            assert s["buckets"] >= 3 and s["in_backward"] == s["buckets"], s
            launched = [n for _, n in s["events"]]
            assert launched[-1] == s["buckets"]
            first = next(i for i, n in enumerate(launched) if n > 0)
            assert first < len(launched) // 2, (first, len(launched))  # gradients still to come after the launch


def test_overlapped_sums_equal_the_after_backward_sums_exactly(two_ranks):
    for rank in (0, 1):
        grads_after, state_after = two_ranks[f"after{rank}"]
        grads_buckets, state_buckets, _ = two_ranks[f"buckets{rank}"]
        for step in range(4):
            assert grads_after[step].keys() == grads_buckets[step].keys()
            for k, g in grads_after[step].items():
                assert torch.equal(g, grads_buckets[step][k]), (rank, step, k)
        for k, v in state_after.items():
            assert torch.equal(v, state_buckets[k]), (rank, k)
    # the sums are sums over the ranks: both ranks hold the same gradients, and the steps moved the weights
    g0, g1 = two_ranks["buckets0"][0], two_ranks["buckets1"][0]
    assert all(torch.equal(g0[3][k], g1[3][k]) for k in g0[3])
    assert not torch.equal(state_after["heads.B.fc.weight"], _fresh()[0].state_dict()["heads.B.fc.weight"])


def test_missing_and_unplanned_gradients_are_reduced_as_before(two_ranks):
    for rank in (0, 1):
        out = two_ranks[f"missing{rank}"]
        for key, (got, want, n_buckets) in out.items():
            assert n_buckets >= 2, key
            assert [g is None for g in got] == [w is None for w in want], key
            assert all(g is None or torch.equal(g, w) for g, w in zip(got, want)), key
        # the middle layer's weight and bias (params 2 and 3): missing in the step after a full plan, present in
        # the step after a plan without it
        assert out[(False, "step")][0][2] is None and out[(True, "step")][0][2] is not None


def test_a_plan_cuts_buckets_in_order_with_a_small_first_one():
    params = [nn.Parameter(torch.zeros(n)) for n in (100, 300_000, 300_000, 10, 10)]
    for p in params:
        p.grad = torch.zeros_like(p)
    plan = plan_buckets(params, bucket_bytes=2 ** 21, first_bytes=1000)
    assert [[p.numel() for p in b.params] for b in plan.buckets] == [[100], [300_000], [300_000, 10, 10]]
    assert [b.buffer.numel() for b in plan.buckets] == [100, 300_000, 300_020]
    assert [plan.where[id(p)] for p in params] == [0, 1, 2, 2, 2]
