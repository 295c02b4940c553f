"""Classifier and additive-angular-margin heads."""

from __future__ import annotations

import math

import pytest
import torch

from emonet_dist.config import HeadConfig
from emonet_dist.model.heads import AAMHead, ClassifierHead, build_head
from emonet_testkit import assert_close_relative


def test_classifier_head_shapes_and_ignores_labels():
    head = ClassifierHead(16, 8, 5, dropout=0.2).eval()
    x = torch.randn(4, 16)
    assert head(x).shape == (4, 5)
    assert torch.equal(head(x), head(x, labels=torch.zeros(4, dtype=torch.long)))


def test_aam_head_adds_the_margin_to_the_target_angle_only_with_labels():
    torch.manual_seed(0)
    head = AAMHead(16, 8, 10, margin=0.3, scale=20.0).train()
    x = torch.randn(6, 16)
    labels = torch.tensor([0, 3, 9, 3, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        head(x)
    logits = head(x, labels)
    cos = head.cosine(x)  # train mode: the same batch statistics as the call above
    target = torch.nn.functional.one_hot(labels, 10).bool()
    torch.testing.assert_close(logits[~target], 20.0 * cos[~target])
    theta = torch.acos(cos[target].clamp(-1, 1))
    expect = torch.where(theta + 0.3 < math.pi, torch.cos(theta + 0.3), cos[target] - math.sin(math.pi - 0.3) * 0.3)
    # acos near +-1 amplifies fp32 rounding of the cosine (d acos/dx = 1/sqrt(1 - x^2)): 1e-4 of the logits' scale
    assert_close_relative(logits[target], 20.0 * expect, 1e-4, "margin logits")
    assert (logits[target] < 20.0 * cos[target]).all()
    head.eval()
    torch.testing.assert_close(head(x), 20.0 * head.cosine(x))


def test_build_head_picks_the_speaker_head_type():
    assert isinstance(build_head("emotion", 16, 4, HeadConfig()), ClassifierHead)
    spk = build_head("speaker", 16, 1000, HeadConfig(speaker_head="aam", speaker_hidden=64))
    assert isinstance(spk, AAMHead) and spk.weight.shape == (1000, 64)
    soft = build_head("speaker", 16, 1000, HeadConfig(speaker_hidden=64))
    assert isinstance(soft, ClassifierHead) and soft.out.out_features == 1000
    with pytest.raises(ValueError):
        build_head("music", 16, 4, HeadConfig())
