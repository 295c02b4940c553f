"""Step [7] of the loop: the final metrics of a run (test scores of the last model, the best-dev test scores,
skipped samples, where the time went) and rank 0's outputs (final model, backbone, bundles, MLflow artifacts)."""

from __future__ import annotations

import time

import torch

from ..runs.predictions import write_predictions
from ..tracking import FLUSH_SECONDS, metric_key
from .distributed import average_batchnorm_stats
from .evaluation import predict, score
from .outputs import write_final_outputs
from .state import Throughput, TrainState
from .streams import eval_stream
from .worker import Worker


def final_metrics(w: Worker, state: TrainState, loaders: dict, metrics: dict, speed: Throughput,
                  entered: float, loop_start: float) -> dict:
    """The run's final metrics, logged by rank 0 with the outputs; closes ``loaders``.

    Args:
        metrics: the last dev evaluation's metrics (already logged at this step, so not logged again).
        entered, loop_start: ``time.time()`` when the worker started and when its loop started.
    """
    if not w.sync_bn:
        average_batchnorm_stats(w.model)  # local BN: the ranks score and save one model
    loop_end = time.time()
    # start_step: 0 for a fresh worker group, the checkpoint's step after a restore (shows that one happened)
    final = {"step": state.step, "start_step": speed.first_step, "train_utt_per_s": speed.per_second(w.size),
             "train_seconds": speed.seconds,
             "loop_seconds": loop_end - loop_start, "setup_seconds": loop_start - entered, **metrics}
    final.update(final_test_scores(w, state))
    final["skipped_samples"] = skipped_samples(w, loaders)
    for loader in loaders.values():
        loader.close()
    if w.log:
        write_final_outputs(w.model, w.datas, w.run_dir, w.log)
        # the last dev evaluation is already logged at this step; logging it again would duplicate its history
        w.log.log_metrics({k: v for k, v in final.items() if k not in metrics}, state.step)
        error = w.log.close(FLUSH_SECONDS)  # what is still queued for MLflow, with a deadline
        final["tracking_ok"] = 0.0 if error else 1.0
        final["tracking_max_wait_s"] = w.log.max_wait_s  # the longest a logging call held up the loop
        if error:
            (w.run_dir / "tracking_error.txt").write_text(error + "\n")
    # final test predictions, bundles and their upload (the final checkpoint itself is not counted)
    final["final_seconds"] = time.time() - loop_end
    return final


def final_test_scores(w: Worker, state: TrainState) -> dict[str, float]:
    """Test UAR of the last model per corpus, with the test and dev UAR at its best dev score; rank 0 writes the
    final test predictions."""
    out = {}
    for n in w.names:
        test = eval_stream(w.datas[n], "test", w.cfg.data, w.rank, w.size)
        if test is None:
            continue
        tp = predict(w.model, test, n, w.device)
        out[metric_key("test_uar_final", n)] = score(tp, len(w.datas[n].classes))["uar"]
        best = state.best.get(n)
        if best is not None and best.test_uar is not None:
            out[metric_key("test_uar_best", n)] = best.test_uar
            out[metric_key("dev_uar_best", n)] = best.dev_uar
        if w.rank == 0:
            write_predictions(w.run_dir / "predictions" / "final" / f"{metric_key(n)}.csv", tp, n,
                              w.datas[n].classes)
    return out


def skipped_samples(w: Worker, loaders: dict) -> float:
    """data.bad_samples=skip: malformed training samples skipped, summed over the ranks (0 under the default,
    fail)."""
    skipped = torch.tensor([float(sum(loader.skipped.count for loader in loaders.values()))], device=w.device)
    if w.size > 1:
        torch.distributed.all_reduce(skipped)
    return float(skipped[0])
