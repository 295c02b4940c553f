"""Tiny EmoNet configs and inputs for the model tests (widths 4-32, inputs under a second)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.model.build import EmoNet


def tiny_config(**overrides) -> ModelConfig:
    """Stem 4, stacks (8, 16, 32): the paper's shape at 1/8 width; overrides replace top-level fields."""
    base = ModelConfig(stem_width=4, base_width=8, pooling=PoolingConfig(units=16),
                       head=HeadConfig(hidden=8, speaker_hidden=8))
    return dataclasses.replace(base, **overrides)


def randomize(model: EmoNet, seed: int = 0) -> EmoNet:
    """Give every parameter and BN statistic non-trivial values, so equalities cannot hold by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:  # 1/sqrt(fan_in) keeps activations O(1), so absolute tolerances mean something
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                is_bn_scale = name.endswith("weight")
                scale, shift = (0.2, 1.0) if is_bn_scale else (0.5, 0.0)
                p.copy_(torch.randn(p.shape, generator=g) * scale + shift)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def waves_batch(lengths: list[int], extra: int = 0, seed: int = 0,
                pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Random utterances of ``lengths`` samples, zero-padded (or ``pad_value``-padded) to max + extra.

    Returns ``waves (B, S)``, ``lengths (B,)`` and the unpadded utterances.
    """
    g = torch.Generator().manual_seed(seed)
    utts = [torch.randn(n, generator=g) * 0.1 for n in lengths]
    total = max(lengths) + extra
    waves = torch.full((len(lengths), total), pad_value)
    for i, u in enumerate(utts):
        waves[i, : len(u)] = u
    return waves, torch.tensor(lengths), utts


@pytest.fixture
def tiny_cfg():
    """Factory: ``tiny_cfg(**top_level_overrides) -> ModelConfig``."""
    return tiny_config


@pytest.fixture
def randomized():
    """Function: ``randomized(model, seed=0) -> model`` with random weights and BN statistics."""
    return randomize


@pytest.fixture
def make_waves():
    """Function: ``make_waves(lengths, extra=0, seed=0, pad_value=0.0) -> (waves, lengths, utterances)``."""
    return waves_batch
