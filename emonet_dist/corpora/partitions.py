"""Speaker-independent partitions and leave-one-speaker-group-out folds.

Both work on speaker-level counts (a speaker x class matrix), never on utterance rows, so memory grows with
the number of speakers, not utterances: 1 M utterances of 7,000 speakers partition in well under a second.

Speaker split: many seeded random speaker orders are filled greedily towards the target sizes; the split whose
partition sizes and class distributions are closest to the targets wins (a partition missing a class is heavily
penalised). The same seed gives the same split.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..config import PrepareConfig
from ..errors import CorpusError
from ..names import MAX_LEN

PARTITIONS = ("train", "dev", "test")


def speaker_split(speakers: list[str], counts: np.ndarray, cfg: PrepareConfig,
                  candidates: int = 64) -> dict[str, str]:
    """Assign each speaker to train/dev/test.

    Args:
        speakers: speaker ids, one per row of ``counts``.
        counts: ``(S, C)`` utterances per speaker and class.
        cfg: fractions and seed.
    Returns:
        ``{speaker: partition}``.
    """
    n_spk = len(speakers)
    targets = np.array([1.0 - cfg.dev_fraction - cfg.test_fraction, cfg.dev_fraction, cfg.test_fraction])
    wanted = [p for p, t in zip(PARTITIONS, targets) if t > 0]
    if n_spk < len(wanted):
        raise CorpusError(
            f"{n_spk} speaker(s) cannot fill {len(wanted)} speaker-independent partitions ({', '.join(wanted)}); "
            "set prepare.dev_fraction=0 / prepare.test_fraction=0, or use --split official with your own partitions"
        )
    order = np.argsort(np.array(speakers, dtype=object), kind="stable")  # seed-stable, input-order independent
    counts = counts[order]
    spk_sorted = [speakers[i] for i in order]
    per_spk = counts.sum(1).astype(np.float64)
    total = per_spk.sum()
    global_dist = counts.sum(0) / max(total, 1.0)
    rng = np.random.default_rng(cfg.seed)
    best, best_score = None, np.inf
    for _ in range(candidates):
        perm = rng.permutation(n_spk)
        assign = _greedy_fill(perm, per_spk, targets * total)
        score = _score(assign, counts, per_spk, targets, global_dist)
        if score < best_score:
            best, best_score = assign, score
    return {spk_sorted[i]: PARTITIONS[int(best[i])] for i in range(n_spk)}


def _greedy_fill(perm: np.ndarray, per_spk: np.ndarray, target_sizes: np.ndarray) -> np.ndarray:
    """Put each speaker (in ``perm`` order) into the partition furthest below its target size."""
    assign = np.zeros(len(perm), dtype=np.int8)
    filled = np.zeros(3)
    active = target_sizes > 0
    # Every wanted partition first receives one speaker, so small corpora still get dev and test.
    start = 0
    for p in np.flatnonzero(active)[::-1]:
        i = perm[start]
        assign[i], filled[p] = p, filled[p] + per_spk[i]
        start += 1
    for i in perm[start:]:
        deficit = np.where(active, (target_sizes - filled) / np.maximum(target_sizes, 1e-9), -np.inf)
        p = int(np.argmax(deficit))
        assign[i], filled[p] = p, filled[p] + per_spk[i]
    return assign


def _score(assign: np.ndarray, counts: np.ndarray, per_spk: np.ndarray, targets: np.ndarray,
           global_dist: np.ndarray) -> float:
    total = per_spk.sum()
    score = 0.0
    for p in range(3):
        if targets[p] <= 0:
            continue
        mask = assign == p
        part = counts[mask].sum(0)
        size = part.sum()
        score += abs(size / total - targets[p]) * 2.0
        if size == 0:
            return np.inf
        score += 0.5 * np.abs(part / size - global_dist).sum()
        score += 10.0 * np.count_nonzero((part == 0) & (global_dist > 0))
    return float(score)


def fold_split(groups: dict[str, float], num_folds: int, seed: int) -> dict[str, str]:
    """Leave-one-group-out folds.

    Args:
        groups: ``{group: utterance count}``; a group is a speaker or a recipe's speaker group (a session).
        num_folds: 0 gives one fold per group, named after it; otherwise groups are packed into
            ``fold1..foldK`` with balanced utterance counts.
    Returns:
        ``{group: partition}``.
    """
    names = sorted(groups)
    if num_folds == 0:
        parts = {g: _slug(g) for g in names}
        if len(set(parts.values())) != len(parts):
            parts = {g: f"fold{i + 1}" for i, g in enumerate(names)}
        return parts
    if num_folds > len(names):
        raise CorpusError(f"{num_folds} folds need at least {num_folds} speaker groups, found {len(names)}; "
                          f"use prepare.num_folds<={len(names)} (or 0 for one fold per group)")
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda g: -groups[g])  # largest first, ties in seeded order
    sizes = np.zeros(num_folds)
    out = {}
    for g in order:
        k = int(np.argmin(sizes))
        out[g] = f"fold{k + 1}"
        sizes[k] += groups[g]
    return out


def _slug(name: str) -> str:
    """A speaker group as a partition name (a shard subdirectory): see :func:`emonet_dist.names.check_name`."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:MAX_LEN] or "group"


def assign_speakers(spk_class: dict[str, Counter], groups: dict[str, str], split: str,
                    cfg: PrepareConfig) -> dict[str, str]:
    """``{speaker: partition}`` for ``split`` (``speaker`` or ``folds``) from per-speaker class counts.

    Args:
        spk_class: utterances per speaker and label.
        groups: speaker -> speaker group (fold unit); speakers without a group are their own group.
    """
    if split == "speaker":
        speakers = sorted(spk_class)
        labels = sorted({lab for c in spk_class.values() for lab in c})
        li = {lab: i for i, lab in enumerate(labels)}
        counts = np.zeros((len(speakers), len(labels)), dtype=np.int64)
        for i, spk in enumerate(speakers):
            for lab, n in spk_class[spk].items():
                counts[i, li[lab]] = n
        return speaker_split(speakers, counts, cfg)
    if split == "folds":
        sizes: Counter = Counter()
        for spk, c in spk_class.items():
            sizes[groups.get(spk, spk)] += sum(c.values())
        by_group = fold_split(dict(sizes), cfg.num_folds, cfg.seed)
        return {spk: by_group[groups.get(spk, spk)] for spk in spk_class}
    raise CorpusError(f"unknown split '{split}'; use speaker, folds or official")
