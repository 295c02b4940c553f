"""``train_loop_per_worker``: what every Ray Train worker runs, top to bottom.

    [1] config, rank, device     [2] data      [3] model and optimiser     [4] restore from a checkpoint
    [5] the loop: one step = one round over the corpora (multi) or one batch (single)
    [6] evaluation, best-dev bookkeeping and checkpoints        [7] final test predictions and artifacts

The distributed semantics (same corpus on every rank, global loss normalisation, summed gradients, global
BatchNorm) live in :mod:`emonet_dist.train.distributed`; the comments below mark where they apply.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data import plan
from ..data.loader import eval_batches
from ..data.remote import UrlPolicy
from ..data.schedule import RoundRobinSchedule
from ..model.modes import set_mode
from ..model.pretrained import build_model_for_run
from ..model.weights import save_model
from ..runs.predictions import write_predictions
from ..tracking import RunLogger, metric_key
from .checkpoint import read_state, restore_model, restore_optimizer, save_checkpoint
from .distributed import (
    assert_ranks_agree,
    average_batchnorm_stats,
    bn_state_digest,
    broadcast_state,
    global_weighted_ce,
    sum_gradients,
    use_global_batchnorm,
    world,
)
from .evaluation import predict, score
from .lr import StageSchedule, make_schedule
from .outputs import write_final_outputs
from .streams import corpus_data, eval_stream, train_loader


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            import ray.train

            return ray.train.torch.get_device()  # the GPU Ray assigned to this worker
        return torch.device("cpu")
    return torch.device(name)


def say(message: str) -> None:
    """One line of progress from a worker. Ray Train (v2) patches ``print`` in workers to go through its
    logger and, when ``sys.stdout`` is wrapped, to the stream as well, so every line reached the console twice;
    writing to the process's own stdout (which Ray forwards to the driver) prints it once."""
    stream = sys.__stdout__ or sys.stdout
    stream.write(message + "\n")
    stream.flush()


def quiet_ray_train_reports() -> None:
    """Ray Train (v2) logs every ``ray.train.report`` call at INFO, with all metrics, on the driver's console
    (hundreds of long lines per run). Keep it for warnings; our own progress lines say the same, once."""
    try:
        from ray.train.v2._internal.execution import context as ray_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(ray_context.__file__).setLevel(logging.WARNING)


def step_seed(seed: int, step: int, pos: int, rank: int) -> int:
    """Dropout and SpecAugment draw from a generator reseeded at every batch, so a resumed run makes the same
    draws as an uninterrupted one without saving RNG state (and ranks draw differently)."""
    return int(np.random.SeedSequence([seed, step, pos, rank]).generate_state(1)[0])


def train_step(model, opt, trainable: list, batch: dict, corpus: str, class_weights, device) -> torch.Tensor:
    """One SGD update on one corpus's batch; every rank calls it with the same corpus at the same time.

    Returns this rank's share of the union batch's loss (summed over ranks it is the loss).
    """
    waves, lengths = batch["waves"].to(device), batch["lengths"].to(device)
    targets = batch["targets"].to(device)
    logits = model(waves, lengths, corpus, labels=targets)
    loss = global_weighted_ce(logits, targets, class_weights)  # normalised by the union batch's weight
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sum_gradients(trainable)  # the union gradient is the sum of the ranks' shares, whoever computed them
    opt.step()
    return loss.detach()


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    # [1] config, rank, device ---------------------------------------------------------------------------------
    entered = time.time()  # setup/loop/final seconds in the final metrics say where a run's time went
    cfg = Config.from_dict(config["cfg"])
    run = config["run"]
    rank, size = world()
    quiet_ray_train_reports()
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads or max(1, int(cfg.ray.cpus_per_worker)))
    run_dir = Path(run["dir"])
    (run_dir / "workers").mkdir(parents=True, exist_ok=True)
    (run_dir / "workers" / f"rank{rank}.pid").write_text(f"{os.getpid()}\n")  # which process is which rank
    log = RunLogger(run.get("tracking_uri"), run.get("mlflow_run_id"), run_dir / "metrics.jsonl") if rank == 0 else None

    # [2] data: label maps and class weights from index.json; one endless loader per corpus ------------------
    policy = UrlPolicy.from_config(cfg.data)  # timeouts and retries of remote shard reads
    datas = {d.name: d for d in (corpus_data(cfg.data.shards, spec, cfg.data.seed, policy)
                                 for spec in cfg.data.corpora)}
    names = list(datas)
    if cfg.train.schedule == "single" and len(names) != 1:
        raise ValueError(f"train.schedule=single trains one corpus; data.corpora lists {len(names)}")

    # [3] model and optimiser ----------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (and in every run with this seed)
    model = build_model_for_run(cfg, datas).to(device)
    # requires_grad and the optimiser's groups; transfer modes train the one new corpus, scratch/finetune all
    groups = set_mode(model, cfg.train.mode, None if cfg.train.mode in ("scratch", "finetune") else names[0])
    sync_bn = size > 1 and cfg.ray.sync_batchnorm
    if sync_bn:
        use_global_batchnorm(model)  # BN statistics over the union batch of all ranks
    finetune = cfg.train.mode in ("finetune", "head")
    opt = torch.optim.SGD(groups, lr=cfg.optim.stage_lr(0, finetune), momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    class_w = {n: d.class_weights().to(device) if cfg.optim.class_weighted else None for n, d in datas.items()}

    # [4] restore: model, optimiser, schedule, best scores and data positions ------------------------------------
    sched = make_schedule(cfg.train, cfg.optim)
    state = {"step": 0, "positions": {}, "best": {}, "plateau": None}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            restore_model(d, model)
            restore_optimizer(d, model, opt)
            state = read_state(d)
        if state["plateau"]:
            sched.__dict__.update(state["plateau"])
        if log:
            say(f"[train] resumed at step {state['step']} from {ckpt.path}")
    broadcast_state(model)  # like DDP at start-up: every rank continues from rank 0's exact tensors
    loaders = {n: train_loader(datas[n], cfg.data, rank, size, state["positions"].get(n)) for n in names}
    rounds = RoundRobinSchedule(names, seed=cfg.data.seed, shuffle=cfg.train.shuffle_rounds)
    multi = isinstance(sched, StageSchedule)
    total = sched.total_rounds if multi else None
    step = state["step"]
    # Training throughput counts the training steps only (not evaluation or checkpoints), from the third step
    # of this process on (the first ones pay for warm-up): the figure the Ray-overhead benchmark compares.
    train_time, seen, first_step = 0.0, 0, step
    loop_start = time.time()

    def stage_now() -> int:
        return sched.stage(step) if multi else sched.stage

    def set_lr() -> float:
        lr = cfg.optim.stage_lr(stage_now(), finetune)
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    def recalibrate_bn(n: str) -> None:
        """Precise BN: this corpus's BN statistics from a fixed set of training batches and the current weights.

        Every rank runs the same number of batches (global BN statistics are collective)."""
        k = cfg.train.bn_recalibration_batches
        stream = eval_stream(datas[n], "train", cfg.data, rank, size)
        k = min(k, *[-(-(hi - lo) // cfg.data.batch_size) for lo, hi in
                     (plan.rank_range(stream.shards.total if stream.include is None else int(stream.include.sum()),
                                      r, size) for r in range(size))])
        bns = [m for m in model.corpus_batchnorms(n).values()]
        model.train()  # BNs frozen by the mode stay in eval and keep their statistics
        live = [m for m in bns if m.training]
        for m in live:
            m.reset_running_stats()
            m.momentum, m._saved_momentum = None, m.momentum  # cumulative average over the k batches
        with torch.no_grad():
            for i, batch in enumerate(eval_batches(stream)):
                if i >= k:
                    break
                torch.manual_seed(step_seed(cfg.seed, step, 1000 + i, rank))
                model(batch["waves"].to(device), batch["lengths"].to(device), n)
        for m in live:
            m.momentum = m._saved_momentum
            del m._saved_momentum
        if not sync_bn:
            average_batchnorm_stats(model)  # local BN: every rank recalibrated on its own batches

    def evaluate_dev() -> dict[str, float]:
        """Dev UAR/WA of every corpus; on a new best, test predictions and the model are kept for that corpus."""
        out = {}
        if not sync_bn:
            average_batchnorm_stats(model)  # local BN: ranks' running statistics differ until averaged
        for n in names:
            if cfg.train.bn_recalibration_batches:
                recalibrate_bn(n)
            pred = predict(model, eval_stream(datas[n], "dev", cfg.data, rank, size), n, device)
            s = score(pred, len(datas[n].classes))
            out[metric_key("dev_uar", n)], out[metric_key("dev_wa", n)] = s["uar"], s["wa"]
            if s["uar"] > state["best"].get(n, {}).get("dev_uar", -1.0):
                test = eval_stream(datas[n], "test", cfg.data, rank, size)
                entry = {"dev_uar": s["uar"], "step": step}
                if test is not None:
                    tp = predict(model, test, n, device)
                    entry["test_uar"] = score(tp, len(datas[n].classes))["uar"]
                    if rank == 0:
                        write_predictions(run_dir / "predictions" / "best" / f"{metric_key(n)}.csv", tp, n,
                                          datas[n].classes)
                if rank == 0:
                    save_best(n)
                state["best"][n] = entry
        # the sweep objective (Ray Tune) and a one-number summary of multi-corpus runs
        out["dev_uar_mean"] = float(np.mean([out[metric_key("dev_uar", n)] for n in names]))
        state["last_eval"] = out  # a run resumed from its final checkpoint reports these again
        return out

    def save_best(n: str) -> None:
        save_model(model, run_dir / "best" / metric_key(n))

    def checkpoint(metrics: dict) -> None:
        """Full state; rank 0 writes it and every rank reports (Ray needs all ranks to report)."""
        if not sync_bn:
            average_batchnorm_stats(model)
        assert_ranks_agree(bn_state_digest(model), "BatchNorm running statistics")
        state.update(step=step, positions={n: loaders[n].state() for n in names},
                     plateau=None if multi else sched.state())
        if rank == 0:
            tmp = Path(tempfile.mkdtemp(prefix="emonet-ckpt-"))
            save_checkpoint(tmp, model, opt, {**state, "config": cfg.to_dict()})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            ray.train.report(metrics)

    # [5] the loop ---------------------------------------------------------------------------------------------
    model.train()
    lr = set_lr()
    done = step >= total if multi else sched.done  # both true when resumed from the final checkpoint
    metrics = dict(state.get("last_eval") or {})  # a run resumed after its last step goes straight to [7]
    while not done:
        order = rounds.round(step) if multi else names
        losses = {}
        t0, n_utts = time.perf_counter(), 0
        for pos, n in enumerate(order):  # every rank trains the same corpus here (shared seeded schedule)
            batch = next(loaders[n])
            torch.manual_seed(step_seed(cfg.seed, step, pos, rank))
            losses[n] = train_step(model, opt, trainable, batch, n, class_w[n], device)
            n_utts += len(batch["ids"])
        if step >= first_step + 2:
            train_time, seen = train_time + time.perf_counter() - t0, seen + n_utts
        step += 1
        # an epoch of the single corpus ends (resampled streams count virtual epochs of the same length)
        epoch_end = not multi and loaders[names[0]].batch % loaders[names[0]].stream.batches_per_epoch() == 0
        if step % cfg.train.log_every == 0 or epoch_end:
            vals = torch.stack(list(losses.values()))
            if size > 1:
                torch.distributed.all_reduce(vals)  # shares -> global losses (one small collective)
            if log:
                log.log_metrics({**{metric_key("loss", n): float(v) for n, v in zip(losses, vals)}, "lr": lr,
                                 "train_utt_per_s": seen * size / max(train_time, 1e-9)}, step)

        # [6] evaluation, LR stages, checkpoints ----------------------------------------------------------------
        metrics = {}
        if multi:
            done = step >= total
            if step % cfg.train.eval_every == 0 or done:
                metrics = evaluate_dev()
            lr = set_lr()
        elif epoch_end:
            metrics = evaluate_dev()
            event = sched.end_epoch(metrics[metric_key("dev_uar", names[0])])
            done = sched.done
            lr = set_lr()
            if log and event in ("drop", "stop"):
                say(f"[train] epoch {sched.epochs}: {event} (best dev UAR {sched.best:.4f})")
        if metrics and log:
            log.log_metrics(metrics, step)
            say(f"[train] step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        periodic = (step % cfg.train.checkpoint_every == 0) if multi else \
            (epoch_end and sched.epochs % cfg.train.checkpoint_every == 0)
        if periodic and not done:  # Tune needs its metric in every report: the last evaluation, or one now
            checkpoint({"step": step, **(metrics or state.get("last_eval") or evaluate_dev())})
        elif metrics and not done:
            ray.train.report({"step": step, **metrics})  # every evaluation reaches Tune's schedulers

    # [7] final: test predictions of the last model, bundles, artifacts ------------------------------------------
    if not sync_bn:
        average_batchnorm_stats(model)
    loop_end = time.time()
    # start_step: 0 for a fresh worker group, the checkpoint's step after a restore (shows that one happened)
    final = {"step": step, "start_step": first_step, "train_utt_per_s": seen * size / max(train_time, 1e-9),
             "train_seconds": train_time,
             "loop_seconds": loop_end - loop_start, "setup_seconds": loop_start - entered, **metrics}
    for n in names:
        test = eval_stream(datas[n], "test", cfg.data, rank, size)
        if test is None:
            continue
        tp = predict(model, test, n, device)
        final[metric_key("test_uar_final", n)] = score(tp, len(datas[n].classes))["uar"]
        if "test_uar" in state["best"].get(n, {}):
            final[metric_key("test_uar_best", n)] = state["best"][n]["test_uar"]
            final[metric_key("dev_uar_best", n)] = state["best"][n]["dev_uar"]
        if rank == 0:
            write_predictions(run_dir / "predictions" / "final" / f"{metric_key(n)}.csv", tp, n, datas[n].classes)
    # data.bad_samples=skip: malformed training samples skipped, summed over the ranks (0 under the default, fail)
    skipped = torch.tensor([float(sum(loader.skipped.count for loader in loaders.values()))], device=device)
    if size > 1:
        torch.distributed.all_reduce(skipped)
    final["skipped_samples"] = float(skipped[0])
    for loader in loaders.values():
        loader.close()
    if log:
        write_final_outputs(model, datas, run_dir, log)
        # the last dev evaluation is already logged at this step; logging it again would duplicate its history
        log.log_metrics({k: v for k, v in final.items() if k not in metrics}, step)
        final["tracking_ok"] = 0.0 if log.error else 1.0
        if log.error:
            (run_dir / "tracking_error.txt").write_text(log.error + "\n")
    # final test predictions, bundles and their upload (the final checkpoint itself is not counted)
    final["final_seconds"] = time.time() - loop_end
    checkpoint(final)
