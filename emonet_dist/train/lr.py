"""Learning-rate schedules of the paper (section 5.2.2): fixed-length stages (multi-corpus) or dev-UAR
plateaus (single corpus). Both are frozen values: the stage schedule is fixed by the config, and the plateau
schedule's position is a new value after every epoch, kept in the training state and its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import OptimConfig, TrainConfig


@dataclass(frozen=True)
class StageSchedule:
    """Multi-corpus: each stage lasts ``steps_per_stage`` rounds; training ends after the last stage."""

    steps_per_stage: int
    stages: int

    def stage(self, round_: int) -> int:
        return min(round_ // self.steps_per_stage, self.stages - 1)

    @property
    def total_rounds(self) -> int:
        return self.steps_per_stage * self.stages


@dataclass(frozen=True)
class PlateauSchedule:
    """Single corpus: drop the LR after ``patience`` epochs without a dev-UAR gain; stop after the last stage's
    patience (or ``max_epochs``). Every field is saved in checkpoints (``typed.to_dict``) and read back strictly."""

    patience: int
    stages: int
    max_epochs: int = 0
    stage: int = 0
    best: float = float("-inf")
    since_best: int = 0
    epochs: int = 0
    done: bool = False

    def end_epoch(self, dev_uar: float) -> tuple[PlateauSchedule, str]:
        """The schedule after an epoch with this dev UAR, and what happened: ``improved``, ``same``, ``drop`` (the
        LR falls) or ``stop``."""
        epochs, stage, best, since_best, done = self.epochs + 1, self.stage, self.best, self.since_best, self.done
        event = "same"
        if dev_uar > best:
            best, since_best, event = dev_uar, 0, "improved"
        else:
            since_best += 1
            if since_best >= self.patience:
                if stage + 1 < self.stages:
                    stage, since_best, event = stage + 1, 0, "drop"
                else:
                    done, event = True, "stop"
        if self.max_epochs and epochs >= self.max_epochs:
            done, event = True, "stop"
        return replace(self, epochs=epochs, stage=stage, best=best, since_best=since_best, done=done), event


def make_schedule(train: TrainConfig, optim: OptimConfig) -> StageSchedule | PlateauSchedule:
    if train.schedule == "multi":
        return StageSchedule(train.steps_per_stage, optim.stages)
    return PlateauSchedule(train.patience, optim.stages, train.max_epochs)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> float:
    """Every parameter group of ``opt`` takes ``lr`` (stages change the LR of all groups alike); returns it."""
    for g in opt.param_groups:
        g["lr"] = lr
    return lr
