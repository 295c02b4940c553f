"""Masked pooling of the backbone output ``(B, C, F', T')`` to one vector per utterance.

Both poolings treat the ``N = F' * T'`` positions as a set (EmoNet flattens F x T, paper eq. 1) and give
positions at frames ``>= n_frames`` exactly zero weight, so zero padding cannot change the result.

* :class:`AttentionPooling` (EmoNet, eqs. 2-4): ``e_i = u^T tanh(W x_i + b)``, ``alpha = softmax(lam * e)``
  over the valid positions, ``c = sum_i alpha_i x_i``. lam = 0 is the masked mean. Output ``(B, C)``.
* :class:`StatsPooling` (Padi et al. 2021, section 3.3): masked mean and standard deviation, ``(B, 2C)``.
  Padi et al. pool over time with (channel x frequency) features; pooling over the F' x T' positions instead
  keeps the output at 2C (512 rather than 4096 with the paper's widths), so the per-corpus head stays small,
  and makes the two poolings interchangeable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import PoolingConfig


def position_mask(n_frames: Tensor, freq: int, time: int) -> Tensor:
    """``(B, freq * time)`` bool, True at positions whose frame is valid (flattened as ``f * time + t``)."""
    valid_t = torch.arange(time, device=n_frames.device) < n_frames[:, None]  # (B, T)
    return valid_t[:, None, :].expand(-1, freq, -1).reshape(n_frames.shape[0], freq * time)


def flatten_positions(x: Tensor) -> Tensor:
    """``(B, C, F, T) -> (B, F * T, C)``; a view when x is channels_last."""
    b, c, f, t = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, f * t, c)


def attention_weights(e: Tensor, valid: Tensor, lam: float) -> Tensor:
    """``alpha = softmax(lam * e)`` over valid positions; padded positions get exactly 0.

    Args:
        e: ``(B, N)`` scores; valid: ``(B, N)`` bool (at least one True per row).
    Returns:
        ``(B, N)`` float32 weights summing to 1 per row.
    """
    # lam multiplies before masking: lam * -inf would be nan for lam = 0. Softmax in fp32 under autocast.
    logits = (lam * e.float()).masked_fill(~valid, float("-inf"))
    return torch.softmax(logits, dim=-1)


class AttentionPooling(nn.Module):
    """2D self-attention pooling with smoothing lam. ``(B, C, F, T), (B,) -> (B, C)``."""

    def __init__(self, channels: int, units: int = 256, lam: float = 0.3) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, units)  # W, b of eq. 2
        self.u = nn.Parameter(torch.randn(units) / units**0.5)
        self.lam = lam

    def scores(self, flat: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N)``: e_i = u^T tanh(W x_i + b)."""
        return torch.tanh(self.proj(flat)) @ self.u.to(flat.dtype)

    def forward(self, x: Tensor, n_frames: Tensor) -> Tensor:
        """x: ``(B, C, F, T)`` backbone output; n_frames: ``(B,)`` valid output frames. Returns ``(B, C)``."""
        flat = flatten_positions(x)
        alpha = attention_weights(self.scores(flat), position_mask(n_frames, x.shape[2], x.shape[3]), self.lam)
        return torch.bmm(alpha.to(flat.dtype).unsqueeze(1), flat).squeeze(1)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


class StatsPooling(nn.Module):
    """Masked mean and standard deviation over valid positions. ``(B, C, F, T), (B,) -> (B, 2C)`` = [mean, std]."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        """Added to the variance before the square root (finite gradient for constant features)."""

    def forward(self, x: Tensor, n_frames: Tensor) -> Tensor:
        flat = flatten_positions(x).float()
        valid = position_mask(n_frames, x.shape[2], x.shape[3])[..., None]  # (B, N, 1)
        count = valid.sum(dim=1).to(flat.dtype)  # (B, 1)
        # masked_fill, not a multiply: padded positions are excluded even if they held inf/nan.
        mean = flat.masked_fill(~valid, 0.0).sum(dim=1) / count
        centred = (flat - mean[:, None, :]).masked_fill(~valid, 0.0)
        std = torch.sqrt(centred.square().sum(dim=1) / count + self.eps)
        return torch.cat([mean, std], dim=1).to(x.dtype)


def build_pooling(cfg: PoolingConfig, channels: int) -> nn.Module:
    """The pooling module for ``cfg.kind`` on ``channels`` backbone channels."""
    if cfg.kind == "attention":
        return AttentionPooling(channels, cfg.units, cfg.lam)
    if cfg.kind == "stats":
        return StatsPooling()
    raise ValueError(f"unknown pooling kind {cfg.kind!r}")


def pooled_dim(cfg: PoolingConfig, channels: int) -> int:
    """Size of the pooled vector: C for attention, 2C for statistics."""
    return channels if cfg.kind == "attention" else 2 * channels
