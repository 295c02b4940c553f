"""Mixed precision (``train.precision``): autocast around the model, and a gradient scaler for fp16.

What runs in which precision, and why:

* **The model's forward** runs under ``torch.autocast`` with bf16 or fp16: convolutions and linear layers take the
  low precision; the weights, their gradients and the optimiser's momentum stay fp32 (autocast casts copies).
  The log-mel frontend switches autocast off for itself (fp16 power spectra underflow the log floor), and the
  attention softmax runs in fp32 (:mod:`emonet_dist.model.pooling`).
* **The loss** is computed outside autocast from fp32 logits, so the global normalisation (an all-reduce of the
  union batch's class weights) is fp32, and so are the gradients that :func:`~.distributed.sum_gradients` sums.
* **fp16** needs loss scaling (its smallest normal, 6e-5, is far above small gradients): the loss is multiplied by
  the scaler's scale before backward, the gradients are summed over ranks while still scaled (a sum commutes with
  the scale), and the scaler unscales them and skips the step if any is inf/nan. The sum carries one rank's
  inf/nan to every rank, so all ranks skip together and stay identical. The optimiser is then torch's fused SGD,
  which reads the scaler's inf flag on the device; the default SGD would make the scaler read it on the host,
  a synchronisation at every step. The scaler's state (scale, steps since the last back-off) is part of the
  training state and comes back with a checkpoint (``TrainState.scaler``, plain JSON in ``state.json``).
* **bf16** has fp32's exponent range and needs no scaler.

``auto`` takes bf16 on a CUDA device that supports it and fp32 otherwise (CPU autocast exists but is slower than
fp32 on most CPUs without AMX).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class ScalerState:
    """The fp16 gradient scaler's state between steps (``torch.amp.GradScaler.state_dict``'s two variables)."""

    scale: float
    """The current loss scale (a power of two)."""
    growth_tracker: int
    """Steps without inf/nan since the scale last changed (it doubles after ``growth_interval`` of them)."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device``; None for fp32 (no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision[:20]!r}")
    if precision == "auto":
        cuda = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass(frozen=True)
class Precision:
    """How a training step runs its forward, backward and optimiser step (see the module docstring)."""

    dtype: torch.dtype | None
    """Autocast dtype; None: fp32 throughout."""
    device_type: str
    scaler: torch.amp.GradScaler | None = None
    """fp16's loss scaler; None for fp32 and bf16."""

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def fused_optimizer(self) -> bool:
        """Whether the SGD must be torch's fused one (fp16: the scaler's inf check stays on the device)."""
        return self.scaler is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast for the model's forward (nothing for fp32)."""
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        """The optimiser step; with a scaler: unscale, skip on inf/nan, update the scale (all on the device)."""
        if self.scaler is None:
            opt.step()
            return
        self.scaler.step(opt)
        self.scaler.update()

    def state(self) -> ScalerState | None:
        """The scaler's state for a checkpoint (reads the scale from the device: checkpoint points only)."""
        if self.scaler is None:
            return None
        s = self.scaler.state_dict()
        return ScalerState(scale=float(s["scale"]), growth_tracker=int(s["_growth_tracker"]))

    def load(self, state: ScalerState | None) -> None:
        """Restore the scaler's state from a checkpoint (None: keep the fresh scaler's)."""
        if self.scaler is None or state is None:
            return
        s = self.scaler.state_dict()
        self.scaler.load_state_dict({**s, "scale": state.scale, "_growth_tracker": state.growth_tracker})


def make_precision(precision: str, device: torch.device) -> Precision:
    """The :class:`Precision` of ``train.precision`` on ``device``."""
    dtype = autocast_dtype(precision, device)
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    return Precision(dtype, device.type, scaler)


FP32 = Precision(None, "cpu")
"""No autocast, no scaler: what ``train.precision=fp32`` gives on any device."""
