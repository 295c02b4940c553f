"""``train_loop_per_worker``: what every Ray Train worker runs, top to bottom.

    [1] config, rank, device     [2] data      [3] model and optimiser     [4] restore from a checkpoint
    [5] the loop: one step = one round over the corpora (multi) or one batch (single), on the device without
        host reads until the next reading point (an evaluation, report or checkpoint), where losses are logged
    [6] evaluation, best-dev bookkeeping and checkpoints        [7] final test predictions and artifacts

What stays fixed for the run ([1]-[3]) is a :class:`~emonet_dist.train.worker.Worker`; what changes and must
survive a restart (step, best scores, the plateau schedule's position, data positions, the last evaluation) is a
frozen :class:`~emonet_dist.train.state.TrainState`, which the functions of [4], [6] and [7] take and return:
restoring and checkpointing (:mod:`~emonet_dist.train.checkpoint`), dev evaluation and best models
(:mod:`~emonet_dist.train.dev_eval`), the final metrics and outputs (:mod:`~emonet_dist.train.finish`).

The distributed semantics (same corpus on every rank, global loss normalisation, summed gradients, global
BatchNorm) live in :mod:`emonet_dist.train.distributed`, the gradient sum overlapped with backward in
:mod:`emonet_dist.train.buckets`, mixed precision (``train.precision``) in
:mod:`emonet_dist.train.precision`; the comments below mark where they apply.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import Config
from ..data.schedule import RoundRobinSchedule, TemperatureSchedule
from ..log import run_log
from ..log import setup_worker as worker_logging
from ..runs.run import LOGS
from ..tracking import metric_key
from .buckets import GradientBuckets
from .checkpoint import report_checkpoint, restore
from .dev_eval import evaluate_dev
from .distributed import broadcast_state, global_weighted_ce, sum_gradients
from .finish import final_metrics
from .lr import set_lr
from .precision import FP32, Precision
from .state import Throughput, TrainState, step_seed
from .streams import corpus_schedule_for, train_loader
from .worker import Worker, say, setup_worker


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    entered = time.time()  # setup/loop/final seconds in the final metrics say where a run's time went
    worker_logging()  # progress lines to this process's stdout (Ray forwards it), at the driver's CLI level
    rank = ray.train.get_context().get_world_rank()
    with run_log(Path(config["run"]["dir"]) / LOGS / f"rank{rank}.log"):  # an MLflow artifact of the run
        run_worker(config, entered)


def run_worker(config: dict, entered: float) -> None:
    import ray.train

    # [1] config, rank, device  [2] data  [3] model and optimiser: what stays fixed for the run ---------------
    w = setup_worker(Config.from_dict(config["cfg"]), config["run"])

    # [4] restore: model, optimiser, loss scaler, schedule, best scores and data positions ----------------------
    state = restore(w, ray.train.get_checkpoint())
    broadcast_state(w.model)  # like DDP at start-up: every rank continues from rank 0's exact tensors
    # one endless loader per corpus, from this rank's data position
    loaders = {n: train_loader(w.datas[n], w.cfg.data, w.rank, w.size, state.positions.get(n), w.device)
               for n in w.names}
    rounds = corpus_schedule_for(w.cfg, w.datas)  # a function of (seed, step): same on every rank, after a resume
    speed = Throughput(first_step=state.step)
    loop_start = time.time()

    # [5] the loop: steps on the device up to the next reading point, then [6] ----------------------------------
    w.model.train()
    metrics = dict(state.last_eval or {})  # a run resumed after its last step goes straight to [7]
    pending: list[LossRecord] = []
    while not finished(w, state):  # already true when resumed from the final checkpoint
        state, speed, epoch_end = train_until_reading_point(w, loaders, rounds, state, speed, pending)
        log_losses(w, pending)  # the losses of the steps since the last reading point, read now
        # [6] evaluation, LR stages, checkpoints ----------------------------------------------------------------
        state, metrics = evaluate_and_checkpoint(w, state, loaders, epoch_end)

    # [7] final: test predictions of the last model, bundles, artifacts; the final checkpoint ---------------------
    final = final_metrics(w, state, loaders, metrics, speed, entered, loop_start)
    report_checkpoint(w, state, loaders, final)


def train_step(model, opt, trainable: list, batch: dict, corpus: str, class_weights, device,
               amp: Precision = FP32, check: bool = False, buckets: GradientBuckets | None = None) -> torch.Tensor:
    """One SGD update on one corpus's batch; every rank calls it with the same corpus at the same time.

    Args:
        amp: the run's precision: autocast around the model (the loss and the gradient sum stay fp32) and, for
            fp16, the loss scaler (``emonet_dist.train.precision``).
        check: compare the gradients' size over the ranks first (a host synchronisation: first round only).
        buckets: the multi-worker run's reducer of ``trainable``: gradients are summed in buckets while backward
            runs (``emonet_dist.train.buckets``); None: summed after backward (:func:`sum_gradients`), the same sums.
    Returns this rank's share of the union batch's loss (summed over ranks it is the loss), on the device.
    """
    waves, lengths = batch["waves"].to(device, non_blocking=True), batch["lengths"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    with amp.autocast():  # the model only; its log-mel frontend runs in fp32 by itself
        logits = model(waves, lengths, corpus, labels=targets)
    loss = global_weighted_ce(logits.float(), targets, class_weights)  # normalised by the union batch's weight
    opt.zero_grad(set_to_none=True)
    # the union gradient is the sum of the ranks' shares, whoever computed them: summed in buckets as backward
    # produces them (their reductions overlap the rest of backward), or after it
    with buckets.reduce(corpus, check) if buckets is not None else contextlib.nullcontext():
        amp.backward(loss)  # fp16: the scaled loss
    if buckets is None:
        sum_gradients(trainable, check)
    amp.step(opt)  # fp16: unscale, skip the step on inf/nan (all ranks alike: the sum spread it), update the scale
    return loss.detach()


def train_round(w: Worker, loaders: dict, order: list[str], step: int, check: bool = False
                ) -> tuple[dict[str, torch.Tensor], int]:
    """One step: a batch of each corpus in ``order``. Returns this rank's loss shares (per corpus, the mean over
    its batches when temperature sampling drew it more than once; only the corpora drawn) and the utterances
    trained."""
    losses, counts, n_utts = {}, {}, 0
    for pos, n in enumerate(order):  # every rank trains the same corpus here (shared seeded schedule)
        batch = next(loaders[n])
        torch.manual_seed(step_seed(w.cfg.seed, step, pos, w.rank))
        loss = train_step(w.model, w.opt, w.trainable, batch, n, w.class_weights[n], w.device, w.amp, check,
                          w.buckets)
        losses[n], counts[n] = (losses[n] + loss, counts[n] + 1) if n in losses else (loss, 1)
        n_utts += len(batch["ids"])
    return {n: v / counts[n] if counts[n] > 1 else v for n, v in losses.items()}, n_utts


@dataclass(frozen=True)
class LossRecord:
    """One logged step: this rank's loss shares (on the device, one per corpus of the run in order; 0 for a corpus
    the step did not draw), the corpora it drew (known on the host), the LR and the throughput."""

    step: int
    shares: torch.Tensor
    drawn: frozenset[str]
    lr: float
    utt_per_s: float


def train_until_reading_point(w: Worker, loaders: dict, rounds: RoundRobinSchedule | TemperatureSchedule,
                              state: TrainState, speed: Throughput, pending: list[LossRecord]
                              ) -> tuple[TrainState, Throughput, bool]:
    """[5] Steps until the next reading point (:func:`reading_point`), with no host synchronisation in between:
    losses stay on the device (appended to ``pending`` every ``log_every`` steps) and only the first round of a
    process (start-up, or after a restore) compares the gradients' size over the ranks (tests/train/test_sync.py).

    Returns the state after the last step, the throughput and whether that step ended an epoch."""
    while True:
        lr = set_lr(w.opt, current_lr(w, state))  # the stage's LR: from the step (multi) or the plateau schedule
        order = rounds.round(state.step) if w.multi else w.names
        t0 = time.perf_counter()  # on a GPU, host time: the device catches up at the reading points
        losses, n_utts = train_round(w, loaders, order, state.step, check=state.step == speed.first_step)
        speed = speed.add(state.step, time.perf_counter() - t0, n_utts)
        state = replace(state, step=state.step + 1)
        epoch_end = epoch_ended(w, loaders)
        if state.step % w.cfg.train.log_every == 0 or epoch_end:
            zero = next(iter(losses.values())).new_zeros(())
            shares = torch.stack([losses.get(n, zero) for n in w.names])
            pending.append(LossRecord(state.step, shares, frozenset(losses), lr, speed.per_second(w.size)))
        if reading_point(w, state, epoch_end):
            return state, speed, epoch_end


def reading_point(w: Worker, state: TrainState, epoch_end: bool) -> bool:
    """Whether the loop reads device values after this step: an evaluation, a report or checkpoint, or the end
    (multi: every ``eval_every`` and ``checkpoint_every`` steps and the last; single: every epoch's end)."""
    if not w.multi:
        return epoch_end
    train = w.cfg.train
    return state.step % train.eval_every == 0 or state.step % train.checkpoint_every == 0 or finished(w, state)


def log_losses(w: Worker, pending: list[LossRecord]) -> None:
    """Every rank joins the reduction of the pending loss shares (one collective for all of them); rank 0 logs
    the global losses, LR and throughput of each pending step. Empties ``pending``."""
    if not pending:
        return
    vals = torch.stack([r.shares for r in pending])  # (steps, corpora)
    if w.size > 1:
        torch.distributed.all_reduce(vals)  # shares -> global losses (one small collective)
    if w.log:
        rows = vals.tolist()  # CPU-GPU sync point: a reading point
        for r, row in zip(pending, rows):
            w.log.log_metrics({**{metric_key("loss", n): v for n, v in zip(w.names, row) if n in r.drawn}, "lr": r.lr,
                               "train_utt_per_s": r.utt_per_s}, r.step)
    pending.clear()


def evaluate_and_checkpoint(w: Worker, state: TrainState, loaders: dict, epoch_end: bool
                            ) -> tuple[TrainState, dict[str, float]]:
    """[6] after a step: a dev evaluation when one is due (multi: every ``eval_every`` steps and at the end;
    single: every epoch, which also moves the plateau schedule on), then a checkpoint or a report when due.

    Returns the new state and the evaluation's metrics (empty when there was none)."""
    import ray.train

    train, metrics = w.cfg.train, {}
    if w.multi:
        if state.step % train.eval_every == 0 or finished(w, state):
            state, metrics = evaluate_dev(w, state)
    elif epoch_end:
        state, metrics = evaluate_dev(w, state)
        plateau, event = state.plateau.end_epoch(metrics[metric_key("dev_uar", w.names[0])])
        state = replace(state, plateau=plateau)
        if w.log and event in ("drop", "stop"):
            say(f"[train] epoch {plateau.epochs}: {event} (best dev UAR {plateau.best:.4f})")
    if metrics and w.log:
        w.log.log_metrics(metrics, state.step)
        say(f"[train] step {state.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    done = finished(w, state)  # [7] ends with the final checkpoint
    periodic = (state.step % train.checkpoint_every == 0) if w.multi else \
        (epoch_end and state.plateau.epochs % train.checkpoint_every == 0)
    if periodic and not done:  # Tune needs its metric in every report: the last evaluation, or one now
        if not (metrics or state.last_eval):
            state, _ = evaluate_dev(w, state)
        state = report_checkpoint(w, state, loaders, {"step": state.step, **(metrics or state.last_eval)})
    elif metrics and not done:
        ray.train.report({"step": state.step, **metrics})  # every evaluation reaches Tune's schedulers
    return state, metrics


def current_lr(w: Worker, state: TrainState) -> float:
    """The LR of the current stage: from the step (multi) or from the plateau schedule's position (single)."""
    stage = w.schedule.stage(state.step) if w.multi else state.plateau.stage
    return w.cfg.optim.stage_lr(stage, w.finetune)


def finished(w: Worker, state: TrainState) -> bool:
    return state.step >= w.schedule.total_rounds if w.multi else state.plateau.done


def epoch_ended(w: Worker, loaders: dict) -> bool:
    """Whether the step just taken ended an epoch of the single corpus (resampled streams count virtual epochs of
    the same length); multi-corpus runs count steps, not epochs."""
    if w.multi:
        return False
    loader = loaders[w.names[0]]
    return loader.batch % loader.stream.batches_per_epoch() == 0
