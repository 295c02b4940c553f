"""The EmoNet module: corpora, ownership of parameters, padding invariance (acceptance 3), device/dtype."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emonet_dist.config import HeadConfig, PoolingConfig
from emonet_dist.errors import EmonetError
from emonet_dist.model.build import build_model
from emonet_testkit import FP32_REORDERED, assert_close_relative, max_relative_error


@pytest.mark.parametrize("kind", ["attention", "stats"])
def test_padding_leaves_pooled_vectors_and_logits_unchanged(tiny_cfg, randomized, make_waves, kind):
    """Each utterance alone (no padding at all) versus in batches padded by 0 .. 5000 extra samples, and with
    non-zero garbage in the padding: identical pooled vectors and logits (eval mode)."""
    model = randomized(build_model(tiny_cfg(pooling=PoolingConfig(kind=kind, units=16, lam=1.0)), {"a": 4})).eval()
    lengths = [9000, 4100, 6337, 2600, 8191]
    _, _, utts = make_waves(lengths)
    with torch.no_grad():
        alone_pooled = torch.cat([model.embed(u[None], torch.tensor([len(u)]), "a") for u in utts])
        alone_logits = torch.cat([model(u[None], torch.tensor([len(u)]), "a") for u in utts])
        for extra, pad_value in [(0, 0.0), (1, 0.0), (255, 0.0), (257, 0.0), (2048, 0.0), (5000, 0.0), (700, 0.3)]:
            waves, lens, _ = make_waves(lengths, extra=extra, pad_value=pad_value)
            # one utterance alone and a padded batch of five run different CPU kernels: rounding only
            assert_close_relative(model.embed(waves, lens, "a"), alone_pooled, FP32_REORDERED, f"pooled, +{extra}")
            assert_close_relative(model(waves, lens, "a"), alone_logits, FP32_REORDERED, f"logits, +{extra}")


def test_without_the_backbone_masks_padding_would_change_the_output(tiny_cfg, randomized, make_waves, monkeypatch):
    """The invariance above is earned by the masks: switch them off and the same comparison fails."""
    from emonet_dist.model import resnet

    model = randomized(build_model(tiny_cfg(pooling=PoolingConfig(units=16, lam=1.0)), {"a": 4})).eval()
    monkeypatch.setattr(resnet, "_time_mask", lambda n, total, dtype: torch.ones(1, 1, 1, total, dtype=dtype))
    lengths = [9000, 4100]
    _, _, utts = make_waves(lengths)
    waves, lens, _ = make_waves(lengths, extra=2048)
    with torch.no_grad():
        alone = torch.cat([model.embed(u[None], torch.tensor([len(u)]), "a") for u in utts])
        assert max_relative_error(model.embed(waves, lens, "a"), alone) > 100 * FP32_REORDERED


def test_add_corpus_leaves_other_corpora_untouched(tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(), {"a": 4})).eval()
    waves, lengths, _ = make_waves([5000, 3000])
    before = model(waves, lengths, "a")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    info = model.add_corpus("ravdess:arousal", 2, labels=["low", "high"])
    model.add_corpus("iemocap.v2", 4)
    assert info.key == "ravdess:arousal" and info.labels == ("low", "high")
    assert list(model.corpora) == ["a", "ravdess:arousal", "iemocap.v2"]
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert torch.equal(model(waves, lengths, "a"), before)
    assert model(waves, lengths, "ravdess:arousal").shape == (2, 2)
    assert model(waves, lengths, "iemocap.v2").shape == (2, 4)
    assert not model.heads["ravdess:arousal"].training  # new modules follow the model's mode


def test_add_corpus_errors_name_the_problem(tiny_cfg):
    model = build_model(tiny_cfg(), {"a": 4})
    with pytest.raises(EmonetError, match="already"):
        model.add_corpus("a", 3)
    with pytest.raises(EmonetError, match="at least 2"):
        model.add_corpus("b", 1)
    with pytest.raises(EmonetError, match="labels"):
        model.add_corpus("b", 3, labels=["x"])
    with pytest.raises(EmonetError, match="kind"):
        model.add_corpus("b", 3, kind="music")
    with pytest.raises(EmonetError, match="not in the model.*'a'"):
        model(torch.zeros(1, 4000), torch.tensor([4000]), "nope")


def test_parameters_split_into_shared_and_per_corpus(tiny_cfg):
    model = build_model(tiny_cfg(pooling=PoolingConfig(units=16, shared=False)), {"a": 4, "b": 3})
    shared = {id(p) for p in model.shared_parameters()}
    a = {id(p) for p in model.corpus_parameters("a")}
    b = {id(p) for p in model.corpus_parameters("b")}
    assert not (shared & a) and not (shared & b) and not (a & b)
    assert shared | a | b == {id(p) for p in model.parameters()}
    names = [n for n, _ in model.named_corpus_parameters("a")]
    assert any(".adapters.a." in n for n in names) and any(n.startswith("heads.a.") for n in names)
    assert any(n.startswith("pooling.a.") for n in names)  # per-corpus pooling belongs to the corpus
    assert all(n.startswith("backbone.") for n, _ in model.named_shared_parameters())
    bufs = model.corpus_buffers("a")
    assert bufs and all(".a." in n for n in bufs)
    assert {n.rsplit(".", 1)[1] for n in bufs} == {"running_mean", "running_var", "num_batches_tracked"}
    bns = model.corpus_batchnorms("a")
    assert len(bns) == 1 + 2 * 6 + 1 + 1  # stem, 2 per block, final, head


def test_init_from_starts_a_corpus_with_the_source_function(tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(), {"src": 4})).eval()
    model.add_corpus("new", 3, init_from="src")
    waves, lengths, _ = make_waves([5000, 3000])
    # exact: the same kernels on the same input with copied weights
    torch.testing.assert_close(model.embed(waves, lengths, "new"), model.embed(waves, lengths, "src"), rtol=0, atol=0)
    model.add_corpus("fresh", 3)
    assert not torch.allclose(model.embed(waves, lengths, "fresh"), model.embed(waves, lengths, "src"))


def test_speaker_corpus_with_aam_takes_labels_through_forward(tiny_cfg, make_waves):
    cfg = tiny_cfg(head=HeadConfig(hidden=8, speaker_hidden=12, speaker_head="aam"))
    model = build_model(cfg)
    model.add_corpus("vox", 50, kind="speaker")
    waves, lengths, _ = make_waves([5000, 3000, 4000])
    labels = torch.tensor([1, 7, 49])
    logits = model(waves, lengths, "vox", labels=labels)
    assert logits.shape == (3, 50)
    logits.sum().backward()
    with pytest.raises(ValueError, match="labels"):
        model(waves, lengths, "vox")


def test_model_follows_dtype_and_runs_under_autocast(tiny_cfg, make_waves):
    model = build_model(tiny_cfg(), {"a": 4}).double().eval()
    model.add_corpus("b", 2)
    assert all(p.dtype == torch.float64 for p in model.corpus_parameters("b"))
    waves, lengths, _ = make_waves([5000, 3000])
    assert model(waves, lengths, "b").dtype == torch.float64
    model = build_model(tiny_cfg(), {"a": 4}).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(waves, lengths, "a")
    assert torch.isfinite(logits).all()
    logits.float().sum().backward()


def test_unfused_and_fused_models_agree(tiny_cfg, randomized, make_waves):
    fused = randomized(build_model(tiny_cfg(fuse_adapters=True), {"a": 4})).eval()
    unfused = build_model(dataclasses.replace(fused.cfg, fuse_adapters=False), {"a": 4}).eval()
    unfused.load_state_dict(fused.state_dict())
    waves, lengths, _ = make_waves([5000, 3000])
    assert_close_relative(fused(waves, lengths, "a"), unfused(waves, lengths, "a"), FP32_REORDERED, "fused vs unfused")
