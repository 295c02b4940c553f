"""Corpus schedules for multi-corpus training: which corpus each batch of a step comes from.

A step is ``K`` batches for ``K`` corpora under both schedules, so one step costs the same and the LR stages
(``train.steps_per_stage`` steps each) mean the same amount of training whichever schedule is chosen.

* :class:`RoundRobinSchedule` (``train.corpus_sampling=round_robin``, EmoNet section 5.2.2): a step is a *round*
  that visits every corpus once, in an order drawn from ``(seed, round)``. Every corpus gets the same number of
  batches, the smallest as many as the largest.
* :class:`TemperatureSchedule` (``train.corpus_sampling=temperature``): each of a step's ``K`` batches comes from
  a corpus drawn independently with probability ``p_c ∝ n_c^(1/T)``, ``n_c`` the corpus's training utterance
  count (T = 1: proportional to size; T → ∞: uniform; the multilingual-NMT sampling of Arivazhagan et al. 2019).

Both are pure functions of ``(seed, step)``: every rank computes the same sequence without communicating, so every
rank trains the same corpus at the same moment (which makes the per-corpus gradient reduction in the training
loop correct), and a resumed run continues the same sequence from its step, with no RNG state to save.
Corpora of very different sizes are handled by their loaders: each corpus stream cycles through its own epochs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

SAMPLINGS = ("round_robin", "temperature")


def _check_corpora(corpora: Sequence[str]) -> tuple[str, ...]:
    if not corpora:
        raise ValueError("a schedule needs at least one corpus")
    if len(set(corpora)) != len(corpora):
        raise ValueError(f"corpora must be unique, got {list(corpora)}")
    return tuple(corpora)


class RoundRobinSchedule:
    def __init__(self, corpora: list[str] | tuple[str, ...], seed: int = 0, shuffle: bool = True):
        self.corpora = _check_corpora(corpora)
        self.seed, self.shuffle = seed, shuffle

    def round(self, r: int) -> tuple[str, ...]:
        """The corpus order of round ``r`` (the same on every rank)."""
        if not self.shuffle or len(self.corpora) == 1:
            return self.corpora
        perm = np.random.default_rng([self.seed, r, 0x5C4ED]).permutation(len(self.corpora))
        return tuple(self.corpora[i] for i in perm)

    def slots(self, start_round: int = 0) -> Iterator[tuple[int, int, str]]:
        """Endless ``(round, position, corpus)`` triples from ``start_round`` on."""
        return _slots(self, start_round)


class TemperatureSchedule:
    """Temperature sampling: step ``r`` is ``K`` corpora drawn i.i.d. with ``p_c ∝ n_c^(1/T)``.

    Args:
        corpora: the ``K`` corpus (domain) names.
        sizes: ``n_c``, training utterances per corpus (same order), each > 0.
        temperature: ``T`` > 0.
        seed: the run's data seed; the draws of step ``r`` depend on ``(seed, r)`` only.
    """

    def __init__(self, corpora: list[str] | tuple[str, ...], sizes: Sequence[int], temperature: float,
                 seed: int = 0):
        self.corpora = _check_corpora(corpora)
        if len(sizes) != len(self.corpora) or any(int(n) <= 0 for n in sizes):
            raise ValueError(f"need one positive training size per corpus, got {list(sizes)} for {list(corpora)}")
        if not temperature > 0:
            raise ValueError(f"the sampling temperature must be > 0, got {temperature}")
        self.seed, self.temperature = seed, float(temperature)
        self.sizes = tuple(int(n) for n in sizes)
        # in log space: n^(1/T) overflows nothing and small T stays finite
        logits = np.log(np.asarray(self.sizes, dtype=np.float64)) / self.temperature
        w = np.exp(logits - logits.max())
        self.probabilities = w / w.sum()
        """``p_c`` in corpus order."""
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0

    def round(self, r: int) -> tuple[str, ...]:
        """The ``K`` corpora of step ``r`` (the same on every rank; corpora may repeat or be absent)."""
        u = np.random.default_rng([self.seed, r, 0x7E3A9]).random(len(self.corpora))
        idx = np.searchsorted(self._cdf, u, side="right")  # inverse CDF: P(idx = c) = p_c
        return tuple(self.corpora[i] for i in np.minimum(idx, len(self.corpora) - 1))

    def slots(self, start_round: int = 0) -> Iterator[tuple[int, int, str]]:
        """Endless ``(step, position, corpus)`` triples from ``start_round`` on."""
        return _slots(self, start_round)


def _slots(schedule: RoundRobinSchedule | TemperatureSchedule, start: int) -> Iterator[tuple[int, int, str]]:
    r = start
    while True:
        for i, c in enumerate(schedule.round(r)):
            yield r, i, c
        r += 1


def corpus_schedule(sampling: str, corpora: Sequence[str], sizes: Sequence[int], seed: int, *,
                    temperature: float = 1.0, shuffle: bool = True) -> RoundRobinSchedule | TemperatureSchedule:
    """The schedule ``train.corpus_sampling`` names; ``sizes`` (training utterances per corpus) are used by
    ``temperature`` only, ``shuffle`` (``train.shuffle_rounds``) by ``round_robin`` only."""
    if sampling == "round_robin":
        return RoundRobinSchedule(list(corpora), seed=seed, shuffle=shuffle)
    if sampling == "temperature":
        return TemperatureSchedule(list(corpora), sizes, temperature, seed=seed)
    raise ValueError(f"unknown corpus sampling {sampling!r}; use one of {SAMPLINGS}")
