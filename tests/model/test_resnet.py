"""Backbone shapes, zero adapters versus the plain ResNet (acceptance 2), memory formats."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emonet_dist.model.build import build_model
from emonet_dist.model.resnet import halve_frames
from emonet_testkit import FP32_REORDERED, assert_close_relative, max_relative_error


def test_output_shape_and_valid_frames(tiny_cfg, make_waves):
    model = build_model(tiny_cfg(), {"a": 4}).eval()
    waves, lengths, _ = make_waves([8000, 3000])
    feats, n_out = model.encode(waves, lengths, "a")
    # 1 + 8000 // 256 = 32 frames; 64 mels -> 8 bins after three stride-2 stacks; T -> ceil(T / 8)
    assert feats.shape == (2, 32, 8, 4)
    n_in = model.frontend(waves, lengths)[1]
    assert n_in.tolist() == [31, 11]
    assert n_out.tolist() == [4, 2] == [-(-n // 8) for n in n_in.tolist()]
    assert halve_frames(torch.tensor([1, 2, 3, 47])).tolist() == [1, 1, 2, 24]


@pytest.mark.parametrize("train", [False, True])
def test_zero_adapters_equal_the_plain_resnet(tiny_cfg, randomized, make_waves, train):
    cfg = tiny_cfg(adapter_init="zero")
    adapted = randomized(build_model(cfg, {"a": 3}))
    with torch.no_grad():  # zero adapters, everything else (shared convs, BNs, pooling, head) random
        for name, p in adapted.named_parameters():
            if ".adapters." in name:
                p.zero_()
    plain = build_model(dataclasses.replace(cfg, adapters=False), {"a": 3})
    result = plain.load_state_dict(adapted.state_dict(), strict=False)
    assert not result.missing_keys and all(".adapters." in k for k in result.unexpected_keys)
    assert not any(".adapters." in n for n, _ in plain.named_parameters())
    adapted.train(train)
    plain.train(train)
    for m in (adapted, plain):  # dropout off, so train mode compares the BN batch-statistics path
        m.heads["a"].dropout.p = 0.0
    waves, lengths, _ = make_waves([7000, 4000, 5500])
    # adding zero-weight 1x1 convolutions changes the kernels (fused weights), not the function
    assert_close_relative(adapted(waves, lengths, "a"), plain(waves, lengths, "a"), FP32_REORDERED, "zero adapters")
    # And non-zero adapters do change the function.
    with torch.no_grad():
        adapted.backbone.stem.adapters["a"].weight.fill_(0.5)
    assert max_relative_error(adapted(waves, lengths, "a"), plain(waves, lengths, "a")) > 100 * FP32_REORDERED


def test_channels_last_and_nchw_compute_the_same(tiny_cfg, randomized, make_waves):
    a = randomized(build_model(tiny_cfg(channels_last=True), {"a": 3})).eval()
    b = build_model(tiny_cfg(channels_last=False), {"a": 3}).eval()
    b.load_state_dict(a.state_dict())
    waves, lengths, _ = make_waves([6000, 4100])
    feats, _ = a.encode(waves, lengths, "a")
    assert feats.is_contiguous(memory_format=torch.channels_last)
    assert_close_relative(a(waves, lengths, "a"), b(waves, lengths, "a"), FP32_REORDERED, "channels_last vs NCHW")


def test_odd_mel_counts_keep_shortcut_and_conv_shapes_aligned(tiny_cfg, make_waves):
    from emonet_dist.config import FrontendConfig

    model = build_model(tiny_cfg(frontend=FrontendConfig(n_mels=50)), {"a": 2}).eval()
    waves, lengths, _ = make_waves([5000, 3000])
    feats, _ = model.encode(waves, lengths, "a")
    assert feats.shape[2] == 7  # 50 -> 25 -> 13 -> 7 (ceil, like the stride-2 convs)
