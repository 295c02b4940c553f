"""Numeric limits of the config tree (:mod:`emonet_dist.config`): every int and float field, by class name.

Each config class's ``__post_init__`` calls :func:`check_limits`, so a value out of range is refused where the
config is built (YAML, overrides, a Tune sample, a Ray worker's ``Config.from_dict``), naming the field; the
loader turns the field name into the dotted key (``data.batch_size must be >= 1, got 0``). A float must also be
finite: nan and inf pass no check. ``tests/test_config.py`` checks that every numeric field has a limit here.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from .errors import ConfigError, short


@dataclasses.dataclass(frozen=True)
class Limit:
    """``lo <= value <= hi`` (``<`` where open); a float must also be finite (nan and inf pass no check)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return (self.lo < v if self.lo_open else self.lo <= v) and (v < self.hi if self.hi_open else v <= self.hi)

    def rule(self) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        if self.hi == math.inf:
            text = f"{'>' if self.lo_open else '>='} {lo}"
        else:
            text = f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        return text + (f" ({self.note})" if self.note else "")


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, int) or x.is_integer() else f"{x:.4g}"


_SEED = Limit(0, 2**63 - 1, note="torch and numpy take 64-bit seeds")
_COUNT = Limit(1)  # sizes, steps, counts
_ZERO_OK = Limit(0)  # counts where 0 means "none" or "all cores"
_POSITIVE = Limit(0, lo_open=True)
_FRACTION = Limit(0, 1, hi_open=True)
_RATE = Limit(1000, 384_000, note="Hz")

LIMITS: dict[str, dict[str, Limit]] = {
    "PrepareConfig": {
        "seed": _SEED, "dev_fraction": _FRACTION, "test_fraction": _FRACTION, "jobs": _ZERO_OK,
        "num_folds": Limit(0, note="0 = one fold per group, else at least 2")},
    "ShardConfig": {
        "samples_per_shard": _COUNT, "max_shard_mb": _POSITIVE, "sample_rate": _RATE, "seed": _SEED, "jobs": _ZERO_OK},
    "DataConfig": {
        "batch_size": _COUNT, "max_seconds": _POSITIVE, "eval_max_seconds": Limit(0, note="0 = whole utterances"),
        "shuffle_window": _COUNT, "num_workers": _ZERO_OK, "prefetch_factor": _COUNT, "seed": _SEED,
        "url_timeout_s": Limit(0, 3600, lo_open=True, note="seconds"), "url_retries": Limit(0, 10)},
    "FrontendConfig": {
        "sample_rate": _RATE, "n_fft": Limit(16), "hop_length": _COUNT, "n_mels": Limit(8), "f_min": Limit(0),
        "f_max": Limit(0, note="0 = sample_rate / 2"), "log_floor": _POSITIVE},
    "PoolingConfig": {"lam": Limit(0), "units": _COUNT},
    "HeadConfig": {
        "hidden": _COUNT, "dropout": _FRACTION, "speaker_hidden": _COUNT, "aam_scale": _POSITIVE,
        "aam_margin": Limit(0, math.pi / 2, hi_open=True, note="radians, below pi/2")},
    # widths double per stack: 10 stacks of base_width 64 already make 32768 filters, and 2**i stays a float
    "ModelConfig": {
        "stem_width": _COUNT, "base_width": _COUNT, "widen_factor": _POSITIVE, "num_stacks": Limit(1, 10),
        "blocks_per_stack": _COUNT},
    "OptimConfig": {
        "lr": _POSITIVE, "lr_decay": Limit(0, 1, lo_open=True), "stages": _COUNT, "finetune_scale": _POSITIVE,
        "momentum": _FRACTION, "weight_decay": Limit(0)},
    "TrainConfig": {
        "steps_per_stage": _COUNT, "patience": _COUNT, "max_epochs": Limit(0, note="0 = no cap"),
        "eval_every": _COUNT, "checkpoint_every": _COUNT, "log_every": _COUNT, "bn_recalibration_batches": _ZERO_OK,
        "threads": _ZERO_OK,
        "sampling_temperature": Limit(0.01, 1000, note="T: 1 = proportional to corpus size, large = uniform")},
    "RayConfig": {
        "num_workers": _COUNT, "cpus_per_worker": _POSITIVE, "gpus_per_worker": Limit(0),
        "max_failures": Limit(-1, note="-1 = unlimited"), "resources_timeout_s": Limit(0, note="seconds"),
        "bucket_mb": Limit(0, 1024, lo_open=True, note="MB")},
    "TuneConfig": {
        "num_samples": _COUNT, "max_concurrent": _COUNT, "grace_period": _COUNT, "reduction_factor": Limit(2),
        "max_failures": _ZERO_OK, "driver_cpus": _POSITIVE},
    "Config": {"seed": _SEED},
}


def check_limits(obj: object) -> None:
    """Raise a :class:`ConfigError` naming the first numeric field of ``obj`` outside its :data:`LIMITS`."""
    for name, limit in LIMITS.get(type(obj).__name__, {}).items():
        value = getattr(obj, name)
        if not limit.holds(value):
            kind = "a finite number " if isinstance(value, float) else ""
            raise ConfigError(f"{name} must be {kind}{limit.rule()}, got {short(value)}", key=name)


def numeric_fields(cls: type) -> list[str]:
    """The int and float fields of a config class (what :data:`LIMITS` must cover)."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]
