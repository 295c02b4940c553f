"""Step [6]'s evaluation: dev scores of every corpus during training, and what a new best dev score keeps.

Evaluation is collective (every rank scores its slice of the split and the predictions are gathered), so every
rank calls these functions at the same step; files are written by rank 0 only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..data import plan
from ..data.loader import eval_batches
from ..model.weights import save_model
from ..runs.predictions import write_predictions
from ..tracking import metric_key
from .distributed import average_batchnorm_stats
from .evaluation import predict, score
from .state import Best, TrainState, step_seed
from .streams import eval_stream
from .worker import Worker


def evaluate_dev(w: Worker, state: TrainState) -> tuple[TrainState, dict[str, float]]:
    """Dev UAR/WA of every corpus, and the state with any new best (whose test predictions and model are kept).

    Returns the new state and the metrics (``dev_uar/<c>``, ``dev_wa/<c>``, ``dev_uar_mean``), which the state
    also keeps as ``last_eval``.
    """
    out = {}
    if not w.sync_bn:
        average_batchnorm_stats(w.model)  # local BN: ranks' running statistics differ until averaged
    for n in w.names:
        if w.cfg.train.bn_recalibration_batches:
            recalibrate_bn(w, n, state.step)
        pred = predict(w.model, eval_stream(w.datas[n], "dev", w.cfg.data, w.rank, w.size), n, w.device)
        s = score(pred, len(w.datas[n].classes))
        out[metric_key("dev_uar", n)], out[metric_key("dev_wa", n)] = s["uar"], s["wa"]
        # kept before the next corpus is recalibrated: the saved model is the one that scored this
        if state.improves(n, s["uar"]):
            state = state.with_best(n, keep_best(w, n, s["uar"], state.step))
    # the sweep objective (Ray Tune) and a one-number summary of multi-corpus runs
    out["dev_uar_mean"] = float(np.mean([out[metric_key("dev_uar", n)] for n in w.names]))
    return replace(state, last_eval=out), out


def keep_best(w: Worker, corpus: str, dev_uar: float, step: int) -> Best:
    """A new best dev UAR of ``corpus``: its test score now; rank 0 keeps its test predictions and the model."""
    test = eval_stream(w.datas[corpus], "test", w.cfg.data, w.rank, w.size)
    test_uar = None
    if test is not None:
        tp = predict(w.model, test, corpus, w.device)
        test_uar = score(tp, len(w.datas[corpus].classes))["uar"]
        if w.rank == 0:
            write_predictions(w.run_dir / "predictions" / "best" / f"{metric_key(corpus)}.csv", tp, corpus,
                              w.datas[corpus].classes)
    if w.rank == 0:
        save_model(w.model, w.run_dir / "best" / metric_key(corpus))
    return Best(dev_uar=dev_uar, step=step, test_uar=test_uar)


def recalibrate_bn(w: Worker, corpus: str, step: int) -> None:
    """Precise BN: this corpus's BN statistics from a fixed set of training batches and the current weights.

    Every rank runs the same number of batches (global BN statistics are collective)."""
    cfg = w.cfg
    stream = eval_stream(w.datas[corpus], "train", cfg.data, w.rank, w.size)
    utterances = stream.shards.total if stream.include is None else int(stream.include.sum())
    k = min(cfg.train.bn_recalibration_batches,
            *[-(-(hi - lo) // cfg.data.batch_size) for lo, hi in
              (plan.rank_range(utterances, r, w.size) for r in range(w.size))])
    w.model.train()  # BNs frozen by the mode stay in eval and keep their statistics
    live = [m for m in w.model.corpus_batchnorms(corpus).values() if m.training]
    momenta = [m.momentum for m in live]
    for m in live:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the k batches
    try:
        with torch.no_grad():
            for i, batch in enumerate(eval_batches(stream)):
                if i >= k:
                    break
                torch.manual_seed(step_seed(cfg.seed, step, 1000 + i, w.rank))
                w.model(batch["waves"].to(w.device), batch["lengths"].to(w.device), corpus)
    finally:
        for m, momentum in zip(live, momenta):
            m.momentum = momentum
    if not w.sync_bn:
        average_batchnorm_stats(w.model)  # local BN: every rank recalibrated on its own batches
