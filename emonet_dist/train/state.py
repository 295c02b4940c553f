"""What a training run has done so far, as explicit values: the state a checkpoint saves and a restart resumes.

:class:`TrainState` is frozen; the loop's functions (evaluation, best-dev bookkeeping, checkpoints) take one and
return a new one, so every change is visible where it happens. Tensors are not in it: the model's weights and
BatchNorm statistics and the optimiser's momentum live in the model and optimiser, and a checkpoint stores them
beside ``state.json`` (:mod:`emonet_dist.train.checkpoint`). Nor is an RNG state: dropout and SpecAugment draw
from a generator reseeded from (seed, step, position, rank) at every batch, so the step alone fixes the draws.

:class:`Throughput` is this process's own bookkeeping (timings are not restored with a checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import typed
from .lr import PlateauSchedule
from .precision import ScalerState


@dataclass(frozen=True)
class Position:
    """One rank's data position in one corpus: the epoch, and batches consumed in it (``CorpusLoader.state``)."""

    epoch: int = 0
    batch: int = 0


@dataclass(frozen=True)
class Best:
    """A corpus's best dev evaluation so far (its model and test predictions are saved as it happens)."""

    dev_uar: float
    step: int
    test_uar: float | None = None
    """Test UAR of the model at that step; None when the corpus has no test partition."""


@dataclass(frozen=True)
class TrainState:
    """Everything besides tensors that a restarted worker group needs to continue exactly (``state.json``)."""

    step: int = 0
    """Steps done: rounds over the corpora (multi) or batches of the single corpus."""
    positions: dict[str, Position] = field(default_factory=dict)
    """Corpus -> this rank's data position, as of the last checkpoint (where a restored loader resumes)."""
    best: dict[str, Best] = field(default_factory=dict)
    plateau: PlateauSchedule | None = None
    """The single-corpus LR schedule's position (epochs, stage, best dev UAR); None for the multi-corpus schedule,
    whose stage follows from the step."""
    last_eval: dict[str, float] | None = None
    """The latest dev evaluation's metrics: a report needs one, and a run resumed from its final checkpoint
    reports these again."""
    scaler: ScalerState | None = None
    """fp16's loss scaler as of the last checkpoint (``train.precision=fp16``); None otherwise."""

    def improves(self, corpus: str, dev_uar: float) -> bool:
        """Whether ``dev_uar`` beats the corpus's best so far (any score beats none)."""
        return dev_uar > (self.best[corpus].dev_uar if corpus in self.best else -1.0)

    def with_best(self, corpus: str, best: Best) -> TrainState:
        return replace(self, best={**self.best, corpus: best})

    def to_dict(self) -> dict:
        """The ``state.json`` form (plain JSON values)."""
        return typed.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        """Strictly from the ``state.json`` form: unknown keys and wrong types are refused (``ConfigError``).

        A checkpoint also stores the run's config next to the state, under ``config``, for whoever reads it; the
        run itself takes its config from the driver, so that entry is left out here."""
        return typed.from_dict(cls, {k: v for k, v in data.items() if k != "config"})


def step_seed(seed: int, step: int, pos: int, rank: int) -> int:
    """Dropout and SpecAugment draw from a generator reseeded at every batch, so a resumed run makes the same
    draws as an uninterrupted one without saving RNG state (and ranks draw differently)."""
    return int(np.random.SeedSequence([seed, step, pos, rank]).generate_state(1)[0])


@dataclass(frozen=True)
class Throughput:
    """Training throughput counts the training steps only (not evaluation or checkpoints), from the third step
    of this process on (the first ones pay for warm-up): the figure the Ray-overhead benchmark compares."""

    first_step: int
    """The step this process started at: 0 for a fresh worker group, the checkpoint's step after a restore."""
    seconds: float = 0.0
    utterances: int = 0

    def add(self, step: int, seconds: float, utterances: int) -> Throughput:
        """Count a step's time and this rank's utterances, unless it is one of the process's first two steps."""
        if step < self.first_step + 2:
            return self
        return replace(self, seconds=self.seconds + seconds, utterances=self.utterances + utterances)

    def per_second(self, world_size: int) -> float:
        """Utterances per second over all ranks (every rank trains a batch of the same size at each step)."""
        return self.utterances * world_size / max(self.seconds, 1e-9)
