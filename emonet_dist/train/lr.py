"""Learning-rate schedules of the paper (section 5.2.2): fixed-length stages (multi-corpus) or dev-UAR
plateaus (single corpus). Both are plain objects whose state goes into the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import OptimConfig, TrainConfig


@dataclass
class StageSchedule:
    """Multi-corpus: each stage lasts ``steps_per_stage`` rounds; training ends after the last stage."""

    steps_per_stage: int
    stages: int

    def stage(self, round_: int) -> int:
        return min(round_ // self.steps_per_stage, self.stages - 1)

    @property
    def total_rounds(self) -> int:
        return self.steps_per_stage * self.stages


@dataclass
class PlateauSchedule:
    """Single corpus: drop the LR after ``patience`` epochs without a dev-UAR gain; stop after the last stage's
    patience (or ``max_epochs``)."""

    patience: int
    stages: int
    max_epochs: int = 0
    stage: int = 0
    best: float = float("-inf")
    since_best: int = 0
    epochs: int = 0
    done: bool = False

    def end_epoch(self, dev_uar: float) -> str:
        """Record an epoch's dev UAR; returns ``improved``, ``same``, ``drop`` (LR falls) or ``stop``."""
        self.epochs += 1
        event = "same"
        if dev_uar > self.best:
            self.best, self.since_best, event = dev_uar, 0, "improved"
        else:
            self.since_best += 1
            if self.since_best >= self.patience:
                if self.stage + 1 < self.stages:
                    self.stage, self.since_best, event = self.stage + 1, 0, "drop"
                else:
                    self.done, event = True, "stop"
        if self.max_epochs and self.epochs >= self.max_epochs:
            self.done, event = True, "stop"
        return event

    def state(self) -> dict:
        return asdict(self)


def make_schedule(train: TrainConfig, optim: OptimConfig) -> StageSchedule | PlateauSchedule:
    if train.schedule == "multi":
        return StageSchedule(train.steps_per_stage, optim.stages)
    return PlateauSchedule(train.patience, optim.stages, train.max_epochs)
