"""Ray Train overhead and scaling: training throughput (utterances/s) measured side by side in one run.

Six measurements on the same model, data and per-worker threads (1):

* plain    — the loop's own ``train_step`` in this process, no Ray, no process group;
* plain 2p — two such processes at once, independent (no Ray, no collectives): what two cores give at best,
             the machine's ceiling for the scaling ratio (shared caches, memory bandwidth, clock);
* torch ddp 2p — two processes training one model with PyTorch's own ``DistributedDataParallel`` over gloo
             (no Ray; local BatchNorm, ``find_unused_parameters`` for the other corpora's adapters and heads, each
             rank its own batch, plain class-weighted cross-entropy): what the field's reference synchronous
             data-parallel step reaches on these cores, without Ray's processes;
* ray x1   — ``emonet train`` with 1 Ray Train worker;
* ray x2   — the same with 2 workers (each with its own batch: twice the data per step, weak scaling) in the
             default config: local BatchNorm (``ray.sync_batchnorm=false``, each worker's own batch statistics)
             and gradients summed in buckets during backward (``ray.bucket_mb``);
* ray x2 global-bn — the same with ``ray.sync_batchnorm=true`` (two collectives per BN layer per step);
* ray x2 no-comm — two Ray Train workers in the same local Ray instance, each running the ``plain`` loop with no
             process group and no collective at all (Ray Train's ``DataParallelTrainer``; they start together at
             a barrier): what any 2-worker Ray Train job can reach on these cores, with Ray's own processes
             (controller, its actors, dashboard, GCS, raylet) running beside the workers. No synchronous
             configuration can beat it, so it is the ceiling of the default config under Ray;
* ray x2 meet-only — the same two workers meeting once per corpus step at a barrier (a TCP store on 127.0.0.1)
             and otherwise independent, no data exchanged: the least any synchronous 2-worker step costs under Ray
             here (each step waits for the slower rank), the ceiling of a synchronous config such as the default.

``--skip`` leaves sides out (their ratios are then not printed).

Throughput counts training steps only (not evaluation or checkpointing) after two warm-up rounds, the same way
on every side (``train_utt_per_s`` in the run's metrics). Every scaling ratio is printed next to the ceiling
(plain 2p / plain) and as a fraction of it. Targets: ray x1 / plain >= 0.95 (issue 4); the default ray x2 at
0.9 of the ceiling or more (issue 15), measured on an idle machine.

    python bench/bench_ray_train.py [--rounds 16] [--base-width 32] [--repeat 3] [--shards DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from emonet_dist.config import Config, ShardConfig
from emonet_dist.corpora.synth import build_synthetic
from emonet_dist.data.shards import shard_corpus
from emonet_dist.model.modes import set_mode
from emonet_dist.model.pretrained import build_model_for_run
from emonet_dist.train.launch import init_ray, run_training, storage_path, worker_resources
from emonet_dist.train.loop import step_seed, train_step
from emonet_dist.train.streams import corpus_data, train_loader

CORPORA = ("synth7", "synth5")
SKIPPABLE = ("torch ddp 2p", "ray x2 global-bn", "ray x2 no-comm", "ray x2 meet-only")


def make_cfg(shards: Path, out: Path, rounds: int, base_width: int, workers: int, *extra: str) -> Config:
    return Config().override(
        f"output_dir={out}", f"data.shards={shards}", "name=bench",
        f"data.corpora=[{', '.join('{name: ' + c + '}' for c in CORPORA)}]", "data.batch_size=16",
        "data.max_seconds=3.0", "data.num_workers=0", f"model.base_width={base_width}",
        f"model.stem_width={max(base_width // 2, 4)}", "optim.stages=1", f"train.steps_per_stage={rounds}",
        f"train.eval_every={rounds}", f"train.checkpoint_every={rounds}", f"train.log_every={rounds}",
        "train.threads=1", f"ray.num_workers={workers}", "ray.cpus_per_worker=1", "tracking.enabled=false",
        *extra)


def plain_loop(cfg: Config, rank: int = 0, world: int = 1, meet: Callable[[str], None] | None = None) -> float:
    """The same steps without Ray: utterances/s over the training steps after two warm-up rounds. With
    ``world`` > 1 (an initialised gloo process group) the model is wrapped in PyTorch's DDP instead; ``meet(key)``
    runs after every corpus step (a barrier with the other workers)."""
    torch.set_num_threads(1)
    datas = {d.name: d for d in (corpus_data(cfg.data.shards, s, cfg.data.seed) for s in cfg.data.corpora)}
    torch.manual_seed(cfg.seed)
    model = build_model_for_run(cfg, datas)
    groups = set_mode(model, "scratch", None)
    opt = torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    loaders = {n: train_loader(d, cfg.data, rank, world) for n, d in datas.items()}
    weights = {n: d.class_weights() for n, d in datas.items()}
    model.train()
    ddp = DDP(model, find_unused_parameters=True) if world > 1 else None
    busy, seen = 0.0, 0
    for step in range(cfg.train.steps_per_stage):
        t0, n_utts = time.perf_counter(), 0
        for pos, n in enumerate(datas):
            batch = next(loaders[n])
            torch.manual_seed(step_seed(cfg.seed, step, pos, rank))
            if ddp is None:
                train_step(model, opt, trainable, batch, n, weights[n], "cpu")
            else:
                _ddp_step(ddp, opt, batch, n, weights[n])
            if meet is not None:
                meet(f"{step}-{pos}")
            n_utts += len(batch["ids"])
        if step >= 2:
            busy, seen = busy + time.perf_counter() - t0, seen + n_utts
    return seen / busy


def _ddp_step(ddp, opt, batch: dict, corpus: str, class_weights) -> None:
    """PyTorch DDP's step: its reducer averages the gradients in buckets during backward."""
    logits = ddp(batch["waves"], batch["lengths"], corpus, labels=batch["targets"])
    loss = F.cross_entropy(logits, batch["targets"], weight=class_weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _plain_worker(cfg_dict: dict, start, out, rank: int, world: int, rendezvous: str) -> None:
    cfg = Config.from_dict(cfg_dict)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    start.wait()  # both processes begin together, so their steps overlap
    out.put(plain_loop(cfg, rank, world))
    if world > 1:
        dist.destroy_process_group()


def plain_concurrent(cfg: Config, processes: int = 2, ddp: bool = False) -> float:
    """``processes`` plain loops at once (spawned, 1 thread each), independent or (``ddp``) one DDP job: their
    summed utterances/s."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(processes), ctx.Queue()
    world = processes if ddp else 1
    rendezvous = Path(cfg.output_dir) / f"ddp-rendezvous-{time.time_ns()}"  # a fresh file: gloo's file store
    rendezvous.parent.mkdir(parents=True, exist_ok=True)
    procs = [ctx.Process(target=_plain_worker, args=(cfg.to_dict(), start, out, i if ddp else 0, world, rendezvous))
             for i in range(processes)]
    for pr in procs:
        pr.start()
    rates = [out.get(timeout=3600) for _ in procs]
    for pr in procs:
        pr.join()
    return sum(rates)


def _independent_ray_worker(config: dict) -> None:
    import ray.train
    from ray.train.collective import barrier, broadcast_from_rank_zero
    from torch.distributed import TCPStore

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    meet = None
    if config["meet"]:  # a barrier per corpus step through a TCP store that rank 0 serves on loopback
        store = TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False) if rank == 0 else None
        port = broadcast_from_rank_zero(store.port if store is not None else None)
        store = store or TCPStore("127.0.0.1", port, world, is_master=False)

        def meet(key: str) -> None:
            if store.add(key, 1) < world:
                store.wait([f"go-{key}"])
            else:  # the last to arrive releases the others
                store.set(f"go-{key}", "1")
    barrier()  # both workers begin together, as plain 2p's processes do
    rate = plain_loop(Config.from_dict(config["cfg"]), meet=meet)  # no process group: the plain step, under Ray
    Path(config["out"], f"rate-{rank}").write_text(repr(rate))


def ray_independent(cfg: Config, workers: int = 2, meet: bool = False) -> float:
    """``workers`` Ray Train workers, each the ``plain`` loop with no collective (``meet``: with a barrier after
    every corpus step): their summed utterances/s."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    init_ray(cfg)
    out = Path(cfg.output_dir) / f"no-comm-{time.time_ns()}"
    out.mkdir(parents=True)
    cfg = cfg.override(f"ray.num_workers={workers}")
    DataParallelTrainer(
        _independent_ray_worker, train_loop_config={"cfg": cfg.to_dict(), "out": str(out), "meet": meet},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker=worker_resources(cfg)),
        run_config=ray.train.RunConfig(name=out.name, storage_path=str(storage_path(cfg)))).fit()
    rates = [float((out / f"rate-{r}").read_text()) for r in range(workers)]
    return sum(rates)


def synth_shards(given: str | None, tmp: Path) -> Path:
    """The shard directory to benchmark on: ``given``, or synth7 + synth5 built and sharded under ``tmp``."""
    if given:
        return Path(given)
    build_synthetic(tmp / "corpora", names=list(CORPORA))
    for c in CORPORA:
        shard_corpus(tmp / "corpora" / c, tmp / "shards", ShardConfig(samples_per_shard=64))
    return tmp / "shards"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="measure every side this many times; prints the medians")
    ap.add_argument("--shards", help="existing shard directory holding synth7 and synth5 (default: build them)")
    ap.add_argument("--skip", nargs="*", default=[], choices=SKIPPABLE, help="sides to leave out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = synth_shards(args.shards, tmp)
        runs = []
        for i in range(args.repeat):  # every side once per repeat, in the same order: the noise hits all sides
            cfg = make_cfg(shards, tmp / "runs", args.rounds, args.base_width, 1)
            res = {"plain": plain_loop(cfg), "plain 2p": plain_concurrent(cfg)}
            if "torch ddp 2p" not in args.skip:
                res["torch ddp 2p"] = plain_concurrent(cfg, ddp=True)
            for key, workers, extra in (("ray x1", 1, ()), ("ray x2", 2, ()),
                                        ("ray x2 global-bn", 2, ("ray.sync_batchnorm=true",))):
                if key not in args.skip:
                    r = run_training(make_cfg(shards, tmp / "runs", args.rounds, args.base_width, workers, *extra))
                    res[key] = r.metrics["train_utt_per_s"]
            for key, meet in (("ray x2 no-comm", False), ("ray x2 meet-only", True)):
                if key not in args.skip:
                    res[key] = ray_independent(cfg, meet=meet)
            print(f"\nrepeat {i + 1}/{args.repeat}: model base width {args.base_width}, batch 16 x <=3 s per worker, "
                  f"{args.rounds} rounds over {', '.join(CORPORA)}, 1 thread per worker")
            for k, v in res.items():
                print(f"  {k:16s} {v:8.2f} utt/s")
            runs.append(report(res))
    if len(runs) > 1:
        print(f"\nmedian over {len(runs)} repeats (each ratio from one repeat's own sides):")
        for key in runs[0]:
            vals = sorted(r[key] for r in runs)
            print(f"  {key:34s} median {statistics.median(vals):.3f}  (" + ", ".join(f"{v:.3f}" for v in vals) + ")")


def report(res: dict[str, float]) -> dict[str, float]:
    """Print the ratios, each scaling ratio next to the 2-process ceiling; return them (sides left out with
    ``--skip`` have none)."""
    ceiling = res["plain 2p"] / res["plain"]
    out = {"ray x1 / plain": res["ray x1"] / res["plain"], "ceiling (plain 2p / plain)": ceiling}
    print(f"  Ray overhead: ray x1 / plain = {out['ray x1 / plain']:.3f} (target >= 0.95)")
    print(f"  ceiling:      plain 2p / plain = {ceiling:.3f} (two independent processes, no Ray: what this machine's "
          f"two cores allow)")
    if "torch ddp 2p" in res:
        ddp = res["torch ddp 2p"] / res["plain"]
        out["torch ddp 2p, of ceiling"] = ddp / ceiling
        print(f"  torch DDP:    torch ddp 2p / plain = {ddp:.3f}; of ceiling {ddp / ceiling:.3f} (PyTorch's own "
              f"synchronous 2-process step, no Ray)")
    for key, what in (("ray x2", "default: local BN, bucketed gradients"), ("ray x2 global-bn", "global BN"),
                      ("ray x2 no-comm", "no collective: the most any 2-worker job reaches under Ray here"),
                      ("ray x2 meet-only", "a barrier per corpus step, no data: the most a synchronous step "
                                           "reaches under Ray here")):
        if key in res:
            ratio = res[key] / res["ray x1"]
            out[f"{key}, of ceiling"] = ratio / ceiling
            print(f"  scaling, {key} / ray x1 = {ratio:.3f} ({what}); ceiling {ceiling:.3f}, of ceiling "
                  f"{ratio / ceiling:.3f}")
    for key in ("ray x2 no-comm", "ray x2 meet-only"):
        if key in res:
            out[f"ray x2 (default) / {key}"] = res["ray x2"] / res[key]
    print(f"  of ceiling:   (ray x2 / ray x1) / (plain 2p / plain) = {out['ray x2, of ceiling']:.3f} "
          f"(the default config; target >= 0.9 on an idle machine)")
    return out


if __name__ == "__main__":
    main()
