"""Per-corpus modules: the :class:`CorpusDict` container and the conv + residual adapter + per-corpus BN unit.

Parallel residual adapters (Rebuffi et al. 2018; EmoNet paper section 5.2.1, Fig. 6): every shared 3x3 conv
has, per corpus, a 1x1 conv with the same stride and filters; their sum passes a per-corpus BatchNorm. All
per-corpus state lives in :class:`CorpusDict` containers, one entry per corpus, so the model can find "the
parameters of corpus c" and "the shared parameters" by walking its modules, and add a corpus at any time
without touching the others.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def corpus_key(name: str) -> str:
    """The ModuleDict key of a corpus name: reversible percent-escaping of '%' and '.'.

    ``nn.ModuleDict`` keys may not contain '.', and may not shadow an attribute of the dict (a corpus called
    ``train`` or ``keys``); such names get their first character escaped too. ``ravdess:arousal`` stays as it is.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"corpus name must be a non-empty string, got {name!r}")
    key = name.replace("%", "%25").replace(".", "%2E")
    if key in _reserved_keys():
        key = f"%{ord(key[0]):02X}{key[1:]}"
    return key


@functools.cache
def _reserved_keys() -> frozenset[str]:
    return frozenset(dir(CorpusDict(None)))


class CorpusDict(nn.ModuleDict):
    """One module per corpus, keyed by :func:`corpus_key`.

    Args:
        factory: builds a fresh module for a new corpus (a picklable callable, e.g. a ``functools.partial``);
            None when entries are always passed in explicitly (heads, whose class count differs per corpus).
        copyable: a new corpus may start as a copy of an existing corpus's entry (``init_from``).
    """

    def __init__(self, factory: Callable[[], nn.Module] | None, copyable: bool = True) -> None:
        super().__init__()
        self.factory = factory
        self.copyable = copyable

    def add(self, key: str, like: Tensor | None = None, init_from: str | None = None,
            module: nn.Module | None = None) -> nn.Module:
        """Create the entry for ``key`` on the device (and float dtype) of ``like``; copy ``init_from``'s state."""
        if key in self:
            raise KeyError(f"corpus key {key!r} already exists")
        if module is None:
            if self.factory is None:
                raise ValueError("this CorpusDict has no factory; pass the module")
            module = self.factory()
        if like is not None:
            module = module.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
        if init_from is not None and self.copyable:
            module.load_state_dict(self[init_from].state_dict())
        self[key] = module
        return module


class Adapter(nn.Module):
    """A per-corpus 1x1 conv, weight ``(C_out, C_in, 1, 1)``; the stride is applied by the owning unit."""

    def __init__(self, in_channels: int, out_channels: int, init: str = "zero") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        if init == "zero":
            nn.init.zeros_(self.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        else:
            raise ValueError(f"unknown adapter init {init!r}")


class AdaptedConv(nn.Module):
    """Shared conv 3x3 (+ per-corpus conv 1x1 adapter), then a per-corpus BatchNorm.

    ``(B, C_in, F, T) -> (B, C_out, ceil(F / s), ceil(T / s))`` for stride s, padding 1, no bias.

    With ``fused=True`` the two convs run as one: a 1x1 conv with stride s reads input position s*i, which is
    exactly the centre tap of the 3x3 conv (padding 1), so ``conv3x3(x, W) + conv1x1(x, A) = conv3x3(x, W + A
    placed at the kernel centre)``. The adapter gradient is the centre tap of the fused kernel's gradient.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, adapters: bool = True,
                 adapter_init: str = "zero", fused: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.fused = in_channels, out_channels, stride, fused
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.adapters = (CorpusDict(functools.partial(Adapter, in_channels, out_channels, adapter_init))
                         if adapters else None)
        self.bns = CorpusDict(functools.partial(nn.BatchNorm2d, out_channels))

    def forward(self, x: Tensor, key: str) -> Tensor:
        """x: ``(B, C_in, F, T)``; key: corpus key. Returns the per-corpus-normalised conv output."""
        if self.adapters is None:
            y = F.conv2d(x, self.weight, stride=self.stride, padding=1)
        else:
            a = self.adapters[key].weight
            if self.fused:
                y = F.conv2d(x, self.weight + F.pad(a, (1, 1, 1, 1)), stride=self.stride, padding=1)
            else:
                # A strided 1x1 conv reads x[..., ::s, ::s]; running it as subsample + stride-1 conv avoids
                # oneDNN's AVX2 1x1 stride-2 NHWC backward-weights kernel, which hangs or returns wrong
                # gradients when C_in < 8 (uxlfoundation/oneDNN#6035).
                xs = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
                y = F.conv2d(x, self.weight, stride=self.stride, padding=1) + F.conv2d(xs, a)
        return self.bns[key](y)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, adapters={self.adapters is not None}, "
                f"fused={self.fused}")
