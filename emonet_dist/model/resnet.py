"""The EmoNet backbone: a Wide-ResNet-style CNN with per-corpus residual adapters (paper section 5.2.1).

Stem: conv 3x3 (stem_width filters, stride 1) + BN. Then ``num_stacks`` stacks of ``blocks_per_stack`` basic
blocks (conv-BN-ReLU-conv-BN, add, ReLU); the first block of a stack has stride 2 and a shortcut of 2x2
average pooling plus zero channels. A final BN + ReLU. Every conv is an :class:`AdaptedConv` (shared 3x3 +
per-corpus 1x1 adapter + per-corpus BN), and the final BN is per corpus too, so no BN is shared.

Padding. The input holds 0 at frames ``>= n`` (see ``frontend.py``). Every tensor that feeds a conv or the
shortcut pooling is re-zeroed at its stage's padded frames, so each conv sees, for every utterance, exactly
the zeros its own padding would supply if the utterance were alone in the batch. A stride-2 stage then has
``ceil(n / 2)`` valid frames (the last output of a padding-1, stride-2 conv reads frame 2i+1 <= n, which is
zero either way). The shortcut pools odd sizes after padding one zero frame/bin, i.e. the same zero semantics,
and keeps its output the size of the conv's (``ceil``). In eval mode the valid outputs are therefore
identical (up to float summation order) for any amount of extra padding.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .adapters import AdaptedConv, CorpusDict


def halve_frames(n: Tensor) -> Tensor:
    """Valid frames after a stride-2 stage: ``ceil(n / 2)``. ``(B,)`` int64 -> ``(B,)`` int64."""
    return torch.div(n + 1, 2, rounding_mode="floor")


def _time_mask(n: Tensor, total: int, dtype: torch.dtype) -> Tensor:
    """``(B, 1, 1, total)`` of ``dtype``: 1 at valid frames, 0 at padded ones."""
    return (torch.arange(total, device=n.device) < n[:, None])[:, None, None, :].to(dtype)


def _mask_relu_(x: Tensor, mask: Tensor) -> Tensor:
    """``relu(x) * mask`` in place. Only used on BatchNorm outputs (or sums of them), which autograd does not
    save, so in-place is safe; it saves an allocation and a pass per mask (see docs/benchmarks.md)."""
    return F.relu_(x.mul_(mask))


def shortcut(x: Tensor, out_channels: int, stride: int) -> Tensor:
    """2x2 average pooling (stride 2) plus zero channels: ``(B, C_in, F, T) -> (B, C_out, ceil(F/2), ceil(T/2))``.

    Odd sizes are padded with one zero row/column first (divisor stays 4), matching the zero padding the
    stride-2 conv of the same block sees.
    """
    if stride == 2:
        pad_t, pad_f = x.shape[-1] % 2, x.shape[-2] % 2
        if pad_t or pad_f:
            x = F.pad(x, (0, pad_t, 0, pad_f))
        x = F.avg_pool2d(x, 2)
    elif stride != 1:
        raise ValueError(f"unsupported stride {stride}")
    extra = out_channels - x.shape[1]
    return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x


class BasicBlock(nn.Module):
    """conv(s)-BN-ReLU-conv-BN + shortcut, ReLU. ``(B, C_in, F, T) -> (B, C_out, F/s, T/s)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        kw = dict(adapters=cfg.adapters, adapter_init=cfg.adapter_init, fused=cfg.fuse_adapters)
        self.conv1 = AdaptedConv(in_channels, out_channels, stride, **kw)
        self.conv2 = AdaptedConv(out_channels, out_channels, 1, **kw)
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: Tensor, key: str, mask: Tensor) -> Tensor:
        """x: ``(B, C_in, F, T)``, zero at padded frames; mask: ``(B, 1, 1, T_out)``, 1 at this block's valid
        output frames. Returns ``(B, C_out, F_out, T_out)``, zero at padded frames."""
        h = _mask_relu_(self.conv1(x, key), mask)
        h = self.conv2(h, key).add_(shortcut(x, self.out_channels, self.stride))
        return _mask_relu_(h, mask)


class ResNet(nn.Module):
    """Stem, stacks, final per-corpus BN + ReLU. ``(B, 1, n_mels, T) -> (B, C, n_mels / 2**S, ceil(T / 2**S))``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.channels_last = cfg.channels_last
        self.stem = AdaptedConv(1, cfg.stem_width, 1, adapters=cfg.adapters, adapter_init=cfg.adapter_init,
                                fused=cfg.fuse_adapters)
        stacks, cin = [], cfg.stem_width
        for width in cfg.stack_widths:
            blocks = []
            for j in range(cfg.blocks_per_stack):
                blocks.append(BasicBlock(cin, width, 2 if j == 0 else 1, cfg))
                cin = width
            stacks.append(nn.ModuleList(blocks))
        self.stacks = nn.ModuleList(stacks)
        self.final_bn = CorpusDict(functools.partial(nn.BatchNorm2d, cin))
        self.out_channels = cin

    def forward(self, x: Tensor, n_frames: Tensor, key: str) -> tuple[Tensor, Tensor]:
        """
        Args:
            x: ``(B, 1, F, T)`` log-mel, 0 at frames ``>= n_frames``.
            n_frames: ``(B,)`` int64 valid frames.
            key: corpus key (``corpus_key(name)``).
        Returns:
            ``(B, C, F', T')`` features (padded frames hold arbitrary values; pool with the mask) and the valid
            output frames ``(B,)``.
        """
        # The frontend works in fp32; follow the weights' dtype (model.double()/half()). Under autocast the
        # weights stay fp32 and the convs cast for themselves.
        x = x.to(self.stem.weight.dtype)
        if self.channels_last:
            # For C = 1 both layouts are "contiguous" and the conv falls back to NCHW; channel stride 1 makes
            # the layout unambiguous (a view when x came from a (B, F, T) tensor via unsqueeze).
            b, c, f, t = x.shape
            x = x.contiguous().as_strided(x.shape, (c * f * t, 1, t * c, c)) if c == 1 else \
                x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x, key)
        x = x.mul_(_time_mask(n_frames, x.shape[-1], x.dtype))  # the stem has no ReLU (paper, original code)
        n = n_frames
        for stack in self.stacks:
            n = halve_frames(n)
            mask = _time_mask(n, (x.shape[-1] + 1) // 2, x.dtype)
            for block in stack:
                x = block(x, key, mask)
        return F.relu(self.final_bn[key](x)), n
