"""Log-mel frontend and SpecAugment, run on the model's device (paper section 5.1; Padi et al. 2021, Table 1).

Waveforms ``(B, S)`` at 16 kHz, zero-padded per batch, become log-mel spectrograms ``(B, 1, F, T)`` with
``F = n_mels`` and ``T = 1 + S // hop`` (torchaudio's centred STFT), plus the number of *valid* frames per
utterance ``(B,)``.

Why "valid" frames and why they are set to 0
    A centred frame ``j`` reads samples ``[j*hop - n_fft/2, j*hop + n_fft/2)``. For an utterance of ``L``
    samples, frames that reach past ``L`` read the batch's zero padding (or, for the longest utterance, the
    STFT's reflect padding), so their values depend on what else is in the batch. Only frames with
    ``j*hop + n_fft/2 <= L`` are kept: ``n = (L - n_fft//2) // hop + 1`` (at least 1); with hop = n_fft/2 that
    drops just the last frame. Every frame ``>= n`` is set to exactly 0, the value a convolution's zero padding
    uses, and the backbone keeps it 0 at every layer (``resnet.py``). The network therefore computes the same
    thing for an utterance whatever padding follows it: padding invariance is exact, not approximate.

Per-utterance normalisation (``frontend.normalize: utterance``, off by default as in the paper)
    Each mel band of each utterance (a training crop, or the whole utterance at evaluation) is shifted and
    scaled to mean 0 and variance 1 over the utterance's valid frames only, before the padding is set to 0, so
    the invariance above still holds.

SpecAugment (training only)
    Padi et al. use up to ``N_f`` frequency masks of width ``f ~ U[0, F]`` and ``N_t`` time masks of width
    ``t ~ U[0, min(W, p*T)]`` where ``T`` is the utterance's own frame count. In Padi et al. W is the maximum
    time-*mask* width (the original SpecAugment used the letter for time warping); we follow Padi's definition
    and apply **no time warping** (torchaudio has no batched warp for log-mels and the paper's policies do not
    need it). Frequency masks use ``torchaudio.functional.mask_along_axis_iid`` directly (F is the same for
    every utterance). torchaudio's time masking caps widths and places masks using the *padded* length, so time
    masks use the same sampling formula as torchaudio, but per utterance: ``w = floor(u1 * cap_i)``,
    ``start = floor(u2 * (n_i - w))`` with ``cap_i = min(W, floor(p * n_i))``. Masked values are 0, the same
    value as padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import Tensor, nn

from ..config import FrontendConfig


@dataclass(frozen=True)
class SpecAugmentPolicy:
    """One row of Padi et al. Table 1."""

    freq_param: int
    """F: maximum frequency-mask width in mel bins."""
    time_param: int
    """W: maximum time-mask width in frames (before the p cap)."""
    p: float
    """Time masks are at most p * (the utterance's frame count) wide."""
    freq_masks: int
    time_masks: int


POLICIES: dict[str, SpecAugmentPolicy | None] = {
    "none": None,
    "conservative": SpecAugmentPolicy(freq_param=15, time_param=50, p=0.2, freq_masks=2, time_masks=2),
    "aggressive": SpecAugmentPolicy(freq_param=27, time_param=70, p=0.2, freq_masks=2, time_masks=2),
}


def valid_frames(lengths: Tensor, n_fft: int, hop_length: int, total_frames: int) -> Tensor:
    """Frames whose whole window lies inside the utterance: ``(L - n_fft//2) // hop + 1``, clamped to [1, T].

    Args:
        lengths: ``(B,)`` int64, utterance lengths in samples.
        total_frames: T, the frame count of the padded batch.
    Returns:
        ``(B,)`` int64 on the device of ``lengths``.
    """
    n = torch.div(lengths.long() - n_fft // 2, hop_length, rounding_mode="floor") + 1
    # An utterance shorter than half a window (16 ms) keeps one frame so pooling has something to average.
    return n.clamp(min=1, max=total_frames)


def frame_mask(n_frames: Tensor, total: int) -> Tensor:
    """``(B, total)`` bool, True for frames ``< n_frames``."""
    return torch.arange(total, device=n_frames.device) < n_frames[:, None]


def normalize_utterances(x: Tensor, n_frames: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-utterance mean and variance normalisation of each band of ``x (B, F, T)`` over its valid frames.

    Statistics use only frames ``< n_frames`` (the padding holds 0 and is left at 0), so padding invariance stays
    exact. A band that is constant over the utterance (one frame, or silence at the log floor) becomes 0.

    Returns:
        ``(B, F, T)``: ``(x - mean) / sqrt(var + eps)`` at valid frames, 0 at padded ones.
    """
    valid = frame_mask(n_frames, x.shape[-1])[:, None, :]  # (B, 1, T)
    n = n_frames.to(x.dtype)[:, None, None]
    mean = x.masked_fill(~valid, 0.0).sum(-1, keepdim=True) / n
    centred = (x - mean).masked_fill(~valid, 0.0)
    var = centred.square().sum(-1, keepdim=True) / n
    return centred * torch.rsqrt(var + eps)


def time_mask_intervals(n_frames: Tensor, time_param: int, p: float, count: int,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample ``count`` time masks per utterance inside its own valid frames.

    Width ``w = floor(u1 * min(W, floor(p * n)))`` and start ``floor(u2 * (n - w))``, u ~ U[0, 1) (torchaudio's
    formula, with n the utterance's own frame count instead of the padded one).

    Args:
        n_frames: ``(B,)`` int64 valid frames per utterance.
        generator: optional RNG on the device of ``n_frames`` (default: the global one).
    Returns:
        ``starts, ends``: ``(B, count)`` int64, masks cover frames ``[start, end)`` with ``end <= n``.
    """
    b = n_frames.shape[0]
    n = n_frames.to(torch.float32)  # frame counts are far below 2**24, so float32 holds them exactly
    cap = torch.minimum(torch.full_like(n, float(time_param)), torch.floor(n * p))
    u = torch.rand((2, b, count), generator=generator, dtype=torch.float32, device=n_frames.device)
    width = torch.floor(u[0] * cap[:, None])
    start = torch.floor(u[1] * (n[:, None] - width))
    return start.long(), (start + width).long()


def apply_time_masks(x: Tensor, starts: Tensor, ends: Tensor, value: float = 0.0) -> Tensor:
    """Set frames ``[starts[b, k], ends[b, k])`` of ``x (B, 1, F, T)`` to ``value`` (out of place)."""
    t = torch.arange(x.shape[-1], device=x.device)
    hit = ((t >= starts[..., None]) & (t < ends[..., None])).any(dim=1)  # (B, T)
    return x.masked_fill(hit[:, None, None, :], value)


class SpecAugment(nn.Module):
    """Frequency and time masking of ``(B, 1, F, T)`` log-mels; identity in eval mode or for policy ``none``."""

    def __init__(self, policy: str) -> None:
        super().__init__()
        self.policy_name = policy
        self.policy = POLICIES[policy]

    def forward(self, x: Tensor, n_frames: Tensor) -> Tensor:
        """x: ``(B, 1, F, T)``; n_frames: ``(B,)`` valid frames. Returns the masked copy."""
        pol = self.policy
        if not self.training or pol is None:
            return x
        for _ in range(pol.freq_masks):
            # iid: every utterance gets its own mask; axis 2 is F of (B, 1, F, T).
            x = torchaudio.functional.mask_along_axis_iid(x, pol.freq_param, 0.0, axis=2)
        if pol.time_masks:
            starts, ends = time_mask_intervals(n_frames, pol.time_param, pol.p, pol.time_masks)
            x = apply_time_masks(x, starts, ends)
        return x

    def extra_repr(self) -> str:
        return f"policy={self.policy_name!r}, {self.policy}"


class LogMelFrontend(nn.Module):
    """Waveforms -> log-mel ``(B, 1, F, T)`` with padded frames set to 0, plus valid frame counts.

    The mel filterbank and window are fixed buffers (torchaudio's ``MelSpectrogram``: power 2, Hann window,
    centred reflect-padded STFT, HTK mel scale); nothing here trains.
    """

    def __init__(self, cfg: FrontendConfig, specaugment: str = "none") -> None:
        super().__init__()
        self.cfg = cfg
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            f_min=cfg.f_min, f_max=cfg.f_max or None, power=2.0, center=True, pad_mode="reflect")
        self.specaugment = SpecAugment(specaugment)

    def num_frames(self, num_samples: int) -> int:
        """T for a padded batch of ``num_samples`` samples (centred STFT)."""
        return 1 + num_samples // self.cfg.hop_length

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            waves: ``(B, S)`` float, 16 kHz, zero-padded after each utterance.
            lengths: ``(B,)`` int64, samples per utterance.
        Returns:
            ``x (B, 1, n_mels, T)`` float32 log-mel (natural log, floored), 0 at frames ``>= n_frames``;
            ``n_frames (B,)`` int64.
        """
        if waves.dim() != 2 or lengths.shape != waves.shape[:1]:
            raise ValueError(f"expected waves (B, S) and lengths (B,), "
                             f"got {tuple(waves.shape)} and {tuple(lengths.shape)}")
        if waves.shape[0] == 0:
            # An empty batch still runs the whole network (a rank with no samples of a corpus must join the
            # global BatchNorm collectives); the STFT's reflect padding cannot take a batch of 0.
            empty = waves.new_zeros(0, 1, self.cfg.n_mels, self.num_frames(waves.shape[1]))
            return empty, lengths.new_zeros(0)
        # The STFT and the log are computed in fp32 even under autocast: fp16 power spectra underflow the floor.
        with torch.autocast(device_type=waves.device.type, enabled=False):
            mel = self.melspec(waves.float())  # (B, F, T)
            x = torch.log(mel.clamp_min(self.cfg.log_floor))
            n_frames = valid_frames(lengths.to(waves.device), self.cfg.n_fft, self.cfg.hop_length, x.shape[-1])
            if self.cfg.normalize == "utterance":
                x = normalize_utterances(x, n_frames)
        x = x.masked_fill(~frame_mask(n_frames, x.shape[-1])[:, None, :], 0.0).unsqueeze(1)
        return self.specaugment(x, n_frames), n_frames
