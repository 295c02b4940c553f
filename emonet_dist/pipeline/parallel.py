"""Runs side by side in one driver: as many at once as the Ray cluster's CPUs and GPUs hold.

A grid's chains and a job's independent steps (two transfers from the same pretraining run) each run in a thread
of the driver that starts its own Ray Train run (``TorchTrainer.fit`` from several threads is how Tune drives trials
too). How many at once comes from the largest run's workers against ``ray.cluster_resources()``; on a 2-CPU machine
with 2-worker runs that is one at a time, so nothing changes there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..config import Config
from .spec import BaselineStep, Step

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def run_need(cfg: Config, steps: Sequence[Step]) -> dict[str, float]:
    """The resources of the largest run of ``steps``: a training run's workers, or the one CPU of a baseline."""
    need: dict[str, float] = {"CPU": 1.0}
    for sub in steps:
        if isinstance(sub, BaselineStep) or not hasattr(sub, "overrides"):
            continue
        r = cfg.override(*sub.overrides).ray
        need["CPU"] = max(need["CPU"], r.num_workers * r.cpus_per_worker)
        need["GPU"] = max(need.get("GPU", 0.0), r.num_workers * r.gpus_per_worker)
    return need


def runs_at_once(need: dict[str, float], total: dict[str, float], max_parallel: int, items: int) -> int:
    """How many runs of ``need`` the cluster's ``total`` holds side by side (at least one, at most ``items`` and
    ``max_parallel`` when it is set)."""
    n = max(1, min(int(total.get(k, 0.0) // v) for k, v in need.items() if v > 0))
    return max(1, min(n, max_parallel or n, items))


def width(cfg: Config, steps: Sequence[Step], items: int, max_parallel: int = 0) -> int:
    """How many of ``items`` runs made of ``steps`` go at once on the cluster (started here if they train)."""
    if items <= 1 or all(isinstance(s, BaselineStep) for s in steps):
        return 1
    import ray

    from ..train.launch import init_ray

    init_ray(cfg)
    return runs_at_once(run_need(cfg, steps), ray.cluster_resources(), max_parallel, items)


def run_side_by_side(fn: Callable[[T], R], items: Sequence[T], n: int,
                     done: Callable[[int, int], None] | None = None) -> tuple[dict[int, R], dict[int, Exception]]:
    """``fn(item)`` for every item, ``n`` at a time, in the items' order. One failure does not stop the others:
    returns the results and the exceptions, by index. ``done(finished, total)`` is called as each one ends."""
    results: dict[int, R] = {}
    failed: dict[int, Exception] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            res = fn(items[i])
        except Exception as exc:  # noqa: BLE001 - reported with the others' outcomes
            with lock:
                failed[i] = exc
            return
        with lock:
            results[i] = res
            if done:
                done(len(results) + len(failed), len(items))

    if n <= 1:
        for i in range(len(items)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="emonet-run") as pool:
            list(pool.map(one, range(len(items))))
    return results, failed
