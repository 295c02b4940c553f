"""Round-robin corpus schedule for multi-corpus training (EmoNet section 5.2.2).

One *round* visits every corpus once (one batch each); one round is one step of the LR schedule. The order of
corpora inside a round is a permutation drawn from ``(seed, round)``, so every rank computes the same order
without communicating, and every rank therefore trains the same corpus at the same moment (which is what
makes the per-corpus gradient averaging in the training loop correct). Corpora of very different sizes are
handled by their loaders: each corpus stream cycles through its own epochs.
"""

from __future__ import annotations

import numpy as np


class RoundRobinSchedule:
    def __init__(self, corpora: list[str] | tuple[str, ...], seed: int = 0, shuffle: bool = True):
        if not corpora:
            raise ValueError("a schedule needs at least one corpus")
        if len(set(corpora)) != len(corpora):
            raise ValueError(f"corpora must be unique, got {list(corpora)}")
        self.corpora = tuple(corpora)
        self.seed, self.shuffle = seed, shuffle

    def round(self, r: int) -> tuple[str, ...]:
        """The corpus order of round ``r`` (the same on every rank)."""
        if not self.shuffle or len(self.corpora) == 1:
            return self.corpora
        perm = np.random.default_rng([self.seed, r, 0x5C4ED]).permutation(len(self.corpora))
        return tuple(self.corpora[i] for i in perm)

    def slots(self, start_round: int = 0):
        """Endless ``(round, position, corpus)`` triples from ``start_round`` on."""
        r = start_round
        while True:
            for i, c in enumerate(self.round(r)):
                yield r, i, c
            r += 1
