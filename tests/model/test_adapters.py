"""The conv + residual adapter + per-corpus BN unit and corpus keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emonet_dist.model.adapters import AdaptedConv, CorpusDict, corpus_key
from emonet_testkit import FP32_REORDERED, assert_close_relative


def test_corpus_keys_are_valid_module_names_and_unique():
    names = ["ravdess", "ravdess:arousal", "iemocap.v2", "a%2Eb", "train", "keys", "factory", "x.y:z"]
    keys = [corpus_key(n) for n in names]
    assert len(set(keys)) == len(names)
    assert corpus_key("ravdess:arousal") == "ravdess:arousal"
    cd = CorpusDict(lambda: torch.nn.Identity())
    for k in keys:
        assert "." not in k
        cd.add(k)  # ModuleDict accepts every key (no '.', no clash with an attribute)
    with pytest.raises(ValueError):
        corpus_key("")


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_adapter_equals_parallel_convs_including_gradients(stride):
    torch.manual_seed(0)
    fused = AdaptedConv(4, 8, stride, fused=True, adapter_init="kaiming")
    fused.adapters.add("c")
    fused.bns.add("c")
    parallel = AdaptedConv(4, 8, stride, fused=False)
    parallel.adapters.add("c")
    parallel.bns.add("c")
    parallel.load_state_dict(fused.state_dict())
    x = torch.randn(3, 4, 16, 11)
    y1, y2 = fused(x, "c"), parallel(x, "c")
    assert_close_relative(y1, y2, FP32_REORDERED, "fused vs parallel")
    assert y1.shape == (3, 8, 16 // stride, -(-11 // stride))
    # The reference: the paper's two parallel convs, written out.
    a = fused.adapters["c"].weight
    ref = fused.bns["c"](F.conv2d(x, fused.weight, stride=stride, padding=1) + F.conv2d(x, a, stride=stride))
    assert_close_relative(y1, ref, FP32_REORDERED, "fused vs the paper's two convolutions")
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    # weight gradients sum over batch and positions (528 products per entry), in another order: still rounding
    assert_close_relative(fused.weight.grad, parallel.weight.grad, FP32_REORDERED, "3x3 gradient")
    assert_close_relative(fused.adapters["c"].weight.grad, parallel.adapters["c"].weight.grad, FP32_REORDERED,
                          "adapter gradient")


def test_new_corpus_entries_are_fresh_or_copied():
    conv = AdaptedConv(2, 4, 1, adapter_init="zero")
    conv.adapters.add("a")
    conv.bns.add("a")
    assert torch.equal(conv.adapters["a"].weight, torch.zeros(4, 2, 1, 1))
    with torch.no_grad():
        conv.adapters["a"].weight.normal_()
        conv.bns["a"].running_mean.normal_()
    conv.adapters.add("b", init_from="a")
    conv.bns.add("b", init_from="a")
    assert torch.equal(conv.adapters["b"].weight, conv.adapters["a"].weight)
    assert conv.adapters["b"].weight is not conv.adapters["a"].weight
    assert torch.equal(conv.bns["b"].running_mean, conv.bns["a"].running_mean)
    with pytest.raises(KeyError):
        conv.adapters.add("a")
