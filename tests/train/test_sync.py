"""No host synchronisation between two reading points of the training loop (issue 15, acceptance 3).

On a GPU, every read of a device value on the host (``.item()``, ``.cpu()``, ``.tolist()``, ``float(t)``,
``if t:``) waits for the device to finish all queued work: one per step keeps the GPU idle while Python prepares
the next. ``torch.cuda.set_sync_debug_mode("error")`` finds them where CUDA exists; this machine has none, so the
test is its CPU stand-in: it wraps those Tensor methods and records every call, with where it came from, while two
real ranks (a gloo group of 2, the loop's own functions on the synthetic shards) train from one reading point
(evaluation, report or checkpoint: every 2 steps in the tiny config) to the next. The first round of a process is
left out on purpose: it compares the gradients' size over the ranks, a host read by design (start-up and after a
restore only). The data loader's own calls are not counted: its batches are host tensors that the step then copies
to the device (``emonet_dist/data``), so its reads synchronise nothing.
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from emonet_dist.data.schedule import RoundRobinSchedule
from emonet_dist.train.checkpoint import restore
from emonet_dist.train.distributed import broadcast_state
from emonet_dist.train.loop import log_losses, train_until_reading_point
from emonet_dist.train.state import Throughput
from emonet_dist.train.streams import train_loader
from emonet_dist.train.worker import setup_worker
from emonet_testkit import free_port, tiny_train_config

HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


class HostReads:
    """While active, every call of :data:`HOST_READS` on a tensor is recorded as ``method @ file:line`` of the
    innermost emonet_dist frame (or the innermost frame), then performed as usual."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.originals = {m: getattr(torch.Tensor, m) for m in HOST_READS}

    def _wrap(self, name: str):
        original = self.originals[name]

        def wrapped(tensor, *args, **kwargs):
            frames = traceback.extract_stack()[:-1]
            ours = [f for f in frames if "emonet_dist" in f.filename]
            if not any("emonet_dist/data/" in f.filename for f in ours):  # host batches, see the docstring
                where = (ours or frames)[-1]
                self.calls.append(f"{name} @ {where.filename.split('emonet_dist/')[-1]}:{where.lineno}")
            return original(tensor, *args, **kwargs)
        return wrapped

    def __enter__(self) -> HostReads:
        for m in HOST_READS:
            setattr(torch.Tensor, m, self._wrap(m))
        return self

    def __exit__(self, *exc) -> None:
        for m, original in self.originals.items():
            setattr(torch.Tensor, m, original)


def _rank(rank: int, world: int, port: int, cfg_dict: dict, out: dict) -> None:
    from emonet_dist.config import Config

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    base = Config.from_dict(cfg_dict)
    for precision in ("fp32", "bf16", "fp16"):
        cfg = base.replace({"train.precision": precision})
        w = setup_worker(cfg, {"name": "sync", "dir": os.path.join(cfg.output_dir, precision)})
        # what train_loop_per_worker does before its loop ([4]), then its loop up to the second reading point
        state = restore(w, None)
        broadcast_state(w.model)
        loaders = {n: train_loader(w.datas[n], cfg.data, w.rank, w.size) for n in w.names}
        rounds = RoundRobinSchedule(w.names, seed=cfg.data.seed, shuffle=cfg.train.shuffle_rounds)
        speed, pending = Throughput(first_step=0), []
        w.model.train()
        state, speed, _ = train_until_reading_point(w, loaders, rounds, state, speed, pending)
        log_losses(w, pending)
        first = state.step
        with HostReads() as reads:
            state, speed, _ = train_until_reading_point(w, loaders, rounds, state, speed, pending)
        logged = len(pending)
        log_losses(w, pending)  # the reading point: reads are due here
        finite = all(bool(torch.isfinite(p).all()) for p in w.model.parameters())
        out[f"{precision}{rank}"] = {"calls": reads.calls, "steps": (first, state.step), "logged": logged,
                                     "finite": finite}
        for loader in loaders.values():
            loader.close()
    dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_no_host_reads_between_two_reading_points(synth_shards, tmp_path):
    cfg = tiny_train_config(synth_shards, tmp_path, "tracking.enabled=false")
    assert cfg.train.checkpoint_every == 2 and cfg.train.log_every == 1  # reading points every 2 steps, logs every step
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, free_port(), cfg.to_dict(), out), nprocs=2, join=True)
        got = dict(out)
    for precision in ("fp32", "bf16", "fp16"):
        for rank in (0, 1):
            r = got[f"{precision}{rank}"]
            # two multi-corpus rounds (4 train steps) and their logged losses, then the reading point
            assert r["steps"] == (2, 4) and r["logged"] == 2, (precision, rank, r)
            assert r["calls"] == [], (precision, rank, r["calls"][:10])
            assert r["finite"], (precision, rank)


def test_the_instrument_sees_host_reads():
    """The negative control: the reads the old loop made (a float() per logged loss, the gradient-size check's
    .item()) are what the instrument records."""
    from emonet_dist.train import distributed

    with HostReads() as reads:
        loss = torch.tensor([0.5, 0.25])
        _ = [float(v) for v in loss]  # the old log_losses
        check = torch.tensor([8.0, -8.0])
        _ = check[0].item() != -check[1].item()  # the old sum_gradients, every step
        distributed.world()
    assert [c.split(" @ ")[0] for c in reads.calls] == ["__float__", "__float__", "item", "item"]
