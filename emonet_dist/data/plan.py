"""Pure functions that decide which samples each rank and loader worker reads, and in which order.

Samples are addressed by a *global index* ``g`` over the concatenation of a corpus partition's shards in index
order (shard ``s`` holds ``offsets[s] <= g < offsets[s + 1]``). Nothing here opens a file, so every rank can
compute the same plan from the shard counts in ``index.json`` and the shared seed.

Exact epochs (every selected training sample once per epoch across all ranks, the same batch count on every
rank so DDP cannot hang):

1. shuffle the shard order with ``(seed, epoch)``, then shuffle samples within windows of consecutive samples;
2. cut the sequence into ``world`` contiguous, near-equal rank ranges (a rank reads few shards, and at most
   two partially);
3. split each rank's range into the same number of batches ``B`` on every rank (sizes differ by at most one);
4. give each loader worker a contiguous block of those batches.

PyTorch's DataLoader returns the workers' batches round-robin, so a rank's position inside an epoch
(``k`` batches consumed) maps to per-worker positions with :func:`roundrobin_consumed`, and a resumed loader
continues in exactly the same order with :func:`resumed_worker`.
"""

from __future__ import annotations

import numpy as np


def offsets_of(counts: list[int]) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]`` for shard sample counts."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])


def epoch_sequence(counts: list[int], epoch: int, seed: int, window: int,
                   include: np.ndarray | None = None) -> np.ndarray:
    """The epoch's global sample order, the same on every rank.

    Args:
        counts: samples per shard, in index order.
        include: optional boolean mask over global indices (e.g. class-balanced subsampling).
    Returns:
        ``(N,)`` int64 global indices.
    """
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    offs = offsets_of(counts)
    order = rng.permutation(len(counts))
    seq = np.concatenate([np.arange(offs[s], offs[s + 1]) for s in order]) if len(counts) else np.zeros(0, np.int64)
    if include is not None:
        seq = seq[include[seq]]
    for start in range(0, len(seq), window):
        seq[start:start + window] = rng.permutation(seq[start:start + window])
    return seq


def rank_range(n: int, rank: int, world: int) -> tuple[int, int]:
    return (n * rank) // world, (n * (rank + 1)) // world


def batches_per_rank(n: int, world: int, batch_size: int) -> int:
    """The batch count every rank uses in an exact epoch of ``n`` samples."""
    sizes = [rank_range(n, r, world)[1] - rank_range(n, r, world)[0] for r in range(world)]
    if min(sizes) == 0:
        raise ValueError(f"{n} samples cannot be split over {world} ranks")
    return min(-(-max(sizes) // batch_size), min(sizes))


def exact_rank_batches(counts: list[int], epoch: int, seed: int, rank: int, world: int, batch_size: int,
                       window: int, include: np.ndarray | None = None) -> list[np.ndarray]:
    """This rank's batches for one exact epoch, as arrays of global indices (same count on every rank)."""
    seq = epoch_sequence(counts, epoch, seed, window, include)
    b = batches_per_rank(len(seq), world, batch_size)
    lo, hi = rank_range(len(seq), rank, world)
    return np.array_split(seq[lo:hi], b)


def worker_block(n_batches: int, worker: int, num_workers: int) -> range:
    """The contiguous block of a rank's batches that one loader worker produces."""
    return range((n_batches * worker) // num_workers, (n_batches * (worker + 1)) // num_workers)


def roundrobin_consumed(per_worker: list[int], k: int) -> tuple[list[int], int]:
    """Where the DataLoader stands after returning ``k`` batches of one epoch.

    The DataLoader asks workers in turn, starting at worker 0 on every new iterator, and skips a worker once it
    is exhausted. Returns the batches each worker has delivered and the worker whose turn is next.
    """
    if k > sum(per_worker):
        raise ValueError(f"position {k} is past the end of the epoch ({sum(per_worker)} batches)")
    taken = [0] * len(per_worker)
    w = 0
    for _ in range(k):
        while taken[w] >= per_worker[w]:
            w = (w + 1) % len(per_worker)
        taken[w] += 1
        w = (w + 1) % len(per_worker)
    return taken, w


def resumed_worker(slot: int, per_worker: list[int], k: int) -> tuple[int, int]:
    """Which original worker block a DataLoader worker ``slot`` continues after a resume at position ``k``, and
    how many of that block's batches are already consumed.

    A new DataLoader asks worker 0 first, so the slots are rotated: slot 0 continues the worker whose turn was
    next. The resumed run then returns exactly the batches the uninterrupted run would have, in the same order.
    """
    taken, nxt = roundrobin_consumed(per_worker, k)
    old = (slot + nxt) % len(per_worker)
    return old, taken[old]


def eval_rank_items(counts: list[int], rank: int, world: int, include: np.ndarray | None = None) -> np.ndarray:
    """Evaluation: every (included) sample once, in index order, in contiguous rank ranges."""
    items = np.arange(int(sum(counts)), dtype=np.int64)
    if include is not None:
        items = items[include]
    lo, hi = rank_range(len(items), rank, world)
    return items[lo:hi]


def class_balanced_mask(labels: list[str], seed: int) -> np.ndarray:
    """Keep an equal number of samples per class (the minority count), chosen at random with ``seed``.

    Used for the paper's arousal/valence aggregation, which subsamples each corpus partition to balance the
    mapped classes.
    """
    labels_arr = np.asarray(labels)
    classes, counts = np.unique(labels_arr, return_counts=True)
    keep = np.zeros(len(labels_arr), dtype=bool)
    rng = np.random.default_rng([seed, 0xBA1])
    for c in classes:
        idx = np.flatnonzero(labels_arr == c)
        keep[rng.choice(idx, size=counts.min(), replace=False)] = True
    return keep
