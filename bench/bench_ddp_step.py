"""Where a 2-process training step spends its time: compute, and waiting in each kind of collective.

No Ray here: two processes joined by a gloo process group on 127.0.0.1 run the loop's own ``train_step`` on
the Ray Train benchmark's data and model, with one thread each. Every collective the step issues is timed
(the time includes waiting for the other rank). Variants, side by side in one run:

* ``global``  — the training loop's semantics: GlobalBatchNorm (two collectives per BN layer) and summed
                gradients (``emonet train`` with 2 workers does exactly this);
* ``local-bn`` — the same, but each rank normalises with its own batch statistics (no BN collectives): what the
                BN collectives cost;
* ``sync-only`` — no gradient or BN communication, but the ranks wait for each other once per batch (a 1-element
                all-reduce): what synchronous training costs by itself when two equal workers share two cores;
* ``no-comm`` — no collectives at all (two independent processes): the ceiling on this machine.

    python bench/bench_ddp_step.py [--rounds 16] [--base-width 32] [--shards DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
from bench_ray_train import CORPORA, make_cfg, synth_shards

from emonet_dist.config import Config
from emonet_dist.model.modes import set_mode
from emonet_dist.model.pretrained import build_model_for_run
from emonet_dist.train import distributed as D
from emonet_dist.train.loop import step_seed, train_step
from emonet_dist.train.streams import corpus_data, train_loader


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(fn, kind: str, acc: dict):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        acc[kind] += time.perf_counter() - t0
        acc[kind + " n"] += 1
        return out
    return wrapper


def _worker(rank: int, size: int, port: int, cfg_dict: dict, variant: str, out, profile: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if os.environ.get("BENCH_PIN"):
        os.sched_setaffinity(0, {rank % os.cpu_count()})
    cfg = Config.from_dict(cfg_dict)
    if variant != "no-comm":
        dist.init_process_group("gloo", rank=rank, world_size=size)
    acc: dict = defaultdict(float)
    # time every collective the step issues, by kind (BN forward/backward, gradients, loss normaliser)
    orig_gather, orig_reduce = dist.all_gather, dist.all_reduce
    dist.all_gather = _timed(orig_gather, "bn forward all_gather", acc)

    def reduce(t, *a, **k):
        kind = ("gradient all_reduce" if t.numel() > 100_000 else
                "tiny all_reduce" if t.numel() <= 2 else "bn backward all_reduce")  # loss, size check, sync
        return _timed(orig_reduce, kind, acc)(t, *a, **k)
    dist.all_reduce = reduce
    datas = {d.name: d for d in (corpus_data(cfg.data.shards, s, cfg.data.seed) for s in cfg.data.corpora)}
    torch.manual_seed(cfg.seed)
    model = build_model_for_run(cfg, datas)
    groups = set_mode(model, "scratch", None)
    if variant == "global":
        D.use_global_batchnorm(model)
    opt = torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    world = (rank, size) if variant in ("global", "local-bn") else (rank, 1)
    D.world = lambda: world  # no-comm, sync-only: the step believes it is alone
    loaders = {n: train_loader(d, cfg.data, rank, size) for n, d in datas.items()}
    weights = {n: d.class_weights() for n, d in datas.items()}
    model.train()
    busy, seen, frames = 0.0, 0, 0
    prof = None
    for step in range(cfg.train.steps_per_stage):
        if step == 2:
            acc.clear()
            if profile and rank == 0:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
        t0, n_utts = time.perf_counter(), 0
        for pos, n in enumerate(datas):
            batch = next(loaders[n])
            torch.manual_seed(step_seed(cfg.seed, step, pos, rank))
            train_step(model, opt, trainable, batch, n, weights[n], "cpu")
            if variant == "sync-only":
                dist.all_reduce(torch.zeros(1))  # wait for the other rank, nothing else
            n_utts += len(batch["ids"])
            if step >= 2:
                frames += int(batch["waves"].shape[-1])
        if step >= 2:
            busy, seen = busy + time.perf_counter() - t0, seen + n_utts
    if prof is not None:
        prof.__exit__(None, None, None)
        print(f"--- {variant}, rank 0: operators by self CPU time ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    out.put({"rank": rank, "busy": busy, "utt": seen, "samples_padded": frames, **acc})
    if variant != "no-comm":
        dist.destroy_process_group()


def run_variant(cfg: Config, variant: str, size: int = 2, profile: bool = False) -> list[dict]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_worker, args=(r, size, port, cfg.to_dict(), variant, out, profile))
             for r in range(size)]
    for p in procs:
        p.start()
    res = sorted((out.get(timeout=3600) for _ in procs), key=lambda r: r["rank"])
    for p in procs:
        p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--shards")
    ap.add_argument("--variants", default="no-comm,sync-only,local-bn,global")
    ap.add_argument("--profile", action="store_true", help="print rank 0's operator profile of every variant")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = synth_shards(args.shards, tmp)
        cfg = make_cfg(shards, tmp / "runs", args.rounds, args.base_width, 2)
        print(f"model base width {args.base_width}, batch 16 x <=3 s per rank, {args.rounds} rounds over "
              f"{', '.join(CORPORA)}, 2 processes x 1 thread, gloo on 127.0.0.1")
        for variant in args.variants.split(","):
            res = run_variant(cfg, variant, profile=args.profile)
            wall = max(r["busy"] for r in res)
            utt = sum(r["utt"] for r in res)
            print(f"\n{variant}: {utt / wall:.2f} utt/s (both ranks), per rank busy "
                  + ", ".join(f"{r['busy']:.1f} s" for r in res)
                  + "; padded samples per rank " + ", ".join(f"{r['samples_padded'] / 16000:.0f} s" for r in res))
            kinds = sorted({k for r in res for k in r if k.endswith("_reduce") or k.endswith("_gather")})
            for k in kinds:
                print(f"  {k:24s} " + ", ".join(f"{r.get(k, 0.0):6.2f} s ({int(r.get(k + ' n', 0))} calls)"
                                                for r in res)
                      + f"  = {100 * sum(r.get(k, 0.0) for r in res) / sum(r['busy'] for r in res):.1f} % of step time")


if __name__ == "__main__":
    main()
