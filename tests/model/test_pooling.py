"""Masked attention and statistics pooling; the lambda limits (acceptance 4)."""

from __future__ import annotations

import math

import pytest
import torch

from emonet_dist.model.pooling import AttentionPooling, StatsPooling, attention_weights, position_mask
from emonet_testkit import FP32_REORDERED, assert_close_relative


def test_position_mask_follows_the_flattening_order():
    m = position_mask(torch.tensor([2, 3]), freq=2, time=3)
    assert m.tolist() == [[True, True, False, True, True, False], [True] * 6]


def test_lambda_zero_is_the_masked_mean_and_larger_lambda_sharpens():
    e = torch.tensor([[2.0, -1.0, 0.5, 3.0, 9.0, 9.0]])
    valid = torch.tensor([[True, True, True, True, False, False]])
    a0 = attention_weights(e, valid, 0.0)
    torch.testing.assert_close(a0, torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0, 0.0]]))
    # lam = 1: the plain softmax over the valid scores; padded scores (even the largest) get exactly 0.
    ref = torch.softmax(e[:, :4], dim=1)
    a1 = attention_weights(e, valid, 1.0)
    torch.testing.assert_close(a1[:, :4], ref)
    assert (a1[:, 4:] == 0).all()
    entropies, top = [], []
    for lam in [0.0, 0.1, 0.3, 1.0, 3.0, 30.0]:
        a = attention_weights(e, valid, lam)[0, :4]
        entropies.append(float(torch.special.entr(a).sum()))
        top.append(float(a.max()))
    assert entropies[0] == pytest.approx(math.log(4), rel=FP32_REORDERED)  # four equal fp32 weights
    assert all(x > y for x, y in zip(entropies, entropies[1:]))
    assert all(x < y for x, y in zip(top, top[1:]))
    assert top[-1] > 0.999 and int(attention_weights(e, valid, 30.0).argmax()) == 3  # -> argmax of valid e


def test_attention_pooling_with_lambda_zero_is_the_masked_mean_of_positions():
    torch.manual_seed(0)
    pool = AttentionPooling(channels=5, units=7, lam=0.0)
    x = torch.randn(2, 5, 3, 6)
    n = torch.tensor([4, 6])
    out = pool(x, n)
    torch.testing.assert_close(out[0], x[0, :, :, :4].mean(dim=(1, 2)))
    torch.testing.assert_close(out[1], x[1].mean(dim=(1, 2)))


def test_attention_pooling_equals_the_paper_formula():
    torch.manual_seed(1)
    pool = AttentionPooling(channels=5, units=7, lam=0.3)
    x = torch.randn(1, 5, 2, 4)
    flat = x[0].reshape(5, -1).t()  # (N, C), position f * T + t
    e = torch.tanh(flat @ pool.proj.weight.t() + pool.proj.bias) @ pool.u
    alpha = torch.softmax(0.3 * e, dim=0)
    torch.testing.assert_close(pool(x, torch.tensor([4]))[0], (alpha[:, None] * flat).sum(0))


def test_stats_pooling_is_mean_and_std_over_valid_positions():
    x = torch.randn(2, 3, 4, 5)
    n = torch.tensor([3, 5])
    out = StatsPooling(eps=0.0)(x, n)
    assert out.shape == (2, 6)
    v = x[0, :, :, :3].reshape(3, -1)
    torch.testing.assert_close(out[0], torch.cat([v.mean(1), v.std(1, unbiased=False)]))


def test_pooling_ignores_whatever_the_padded_positions_hold():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, 5)
    n = torch.tensor([3, 5])
    garbage = x.clone()
    garbage[0, :, :, 3:] = 1e6
    for pool in [AttentionPooling(4, 6, lam=1.0), StatsPooling()]:
        torch.testing.assert_close(pool(garbage, n), pool(x, n), rtol=0, atol=0)  # exact: masked, not added
        # Same as pooling the utterance cropped to its valid frames.
        # other tensor shapes, other reduction order: rounding only
        assert_close_relative(pool(x, n)[0], pool(x[:1, :, :, :3], n[:1])[0], FP32_REORDERED, "cropped")
    nan = x.clone()
    nan[0, :, :, 3:] = float("nan")
    assert torch.isfinite(StatsPooling()(nan, n)).all()
