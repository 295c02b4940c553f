"""safetensors + JSON checkpoints, per-corpus export/import, the backbone hash."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from emonet_dist import typed
from emonet_dist.config import ModelConfig, PoolingConfig
from emonet_dist.errors import EmonetError
from emonet_dist.model.build import build_model
from emonet_dist.model.weights import (
    backbone_hash,
    export_corpus,
    import_corpus,
    load_corpus,
    load_model,
    save_corpus,
    save_model,
)


def test_checkpoint_round_trip_then_add_a_corpus(tmp_path, tiny_cfg, randomized, make_waves):
    model = randomized(build_model(tiny_cfg(specaugment="conservative"), {"a": 4})).eval()
    model.add_corpus("ravdess:arousal", 2, labels=["low", "high"])
    model.add_corpus("vox", 20, kind="speaker")
    save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert typed.from_dict(ModelConfig, meta["config"]) == model.cfg
    assert meta["corpora"][1] == {"name": "ravdess:arousal", "kind": "emotion", "num_classes": 2,
                                  "labels": ["low", "high"]}
    assert set(load_file(str(tmp_path / "ckpt" / "model.safetensors"))) == set(model.state_dict())

    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.corpora == model.corpora and loaded.cfg == model.cfg
    waves, lengths, _ = make_waves([5000, 3000])
    for name in model.corpora:
        assert torch.equal(loaded(waves, lengths, name), model(waves, lengths, name))
    loaded.add_corpus("emodb", 7)  # N + 1
    assert loaded(waves, lengths, "emodb").shape == (2, 7)
    assert torch.equal(loaded(waves, lengths, "a"), model(waves, lengths, "a"))


def test_load_model_rejects_a_foreign_directory(tmp_path):
    with pytest.raises(EmonetError, match="model.safetensors"):
        load_model(tmp_path)


def test_one_corpus_exports_and_imports_separately_from_the_backbone(tmp_path, tiny_cfg, randomized, make_waves):
    cfg = tiny_cfg(pooling=PoolingConfig(units=16, shared=False))
    source = randomized(build_model(cfg, {"a": 4, "b": 3})).eval()
    tensors, meta = export_corpus(source, "b")
    assert meta["name"] == "b" and meta["num_classes"] == 3
    assert "backbone.stem.adapters.weight" in tensors and "heads.out.weight" in tensors
    assert "backbone.final_bn.running_mean" in tensors and "pooling.proj.weight" in tensors
    assert not any(k.startswith("backbone.stem.weight") for k in tensors)  # shared weights stay out

    # A second model with the same backbone but only corpus a receives b, under its own name and another.
    target = build_model(cfg, {"a": 4})
    target.load_state_dict(source.state_dict(), strict=False)
    target.eval()
    save_corpus(source, "b", tmp_path / "b")
    assert load_corpus(target, tmp_path / "b") == "b"
    import_corpus(target, tensors, meta, name="b-copy")
    waves, lengths, _ = make_waves([5000, 3000])
    assert torch.equal(target(waves, lengths, "b"), source(waves, lengths, "b"))
    assert torch.equal(target(waves, lengths, "b-copy"), source(waves, lengths, "b"))

    other = randomized(build_model(cfg, {"a": 4}), seed=5)
    with pytest.raises(EmonetError, match="another backbone"):
        import_corpus(other, tensors, meta)
    import_corpus(other, tensors, meta, check_backbone=False)  # explicit override works


def test_backbone_hash_tracks_shared_weights_only(tiny_cfg, randomized):
    model = randomized(build_model(tiny_cfg(), {"a": 4}))
    h = backbone_hash(model)
    assert h == backbone_hash(model) and len(h) == 64
    model.add_corpus("b", 3)
    with torch.no_grad():
        model.backbone.stem.adapters["a"].weight.add_(1.0)
        model.heads["a"].out.bias.add_(1.0)
    assert backbone_hash(model) == h  # corpus parameters do not count
    assert backbone_hash(model.to(memory_format=torch.channels_last)) == h
    with torch.no_grad():
        model.backbone.stacks[1][0].conv1.weight[0, 0, 0, 0] += 1e-3
    assert backbone_hash(model) != h


def test_stem_form_and_restoring_into_a_built_model(tmp_path, tiny_cfg, randomized, make_waves):
    from emonet_dist.model.weights import load_state_into, load_weights, save_weights

    model = randomized(build_model(tiny_cfg(), {"a": 4, "b": 2})).eval()
    save_weights(model, tmp_path / "ckpt" / "model")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "model.json").is_file()
    waves, lengths, _ = make_waves([5000, 3000])
    loaded = load_weights(tmp_path / "ckpt" / "model").eval()
    assert torch.equal(loaded(waves, lengths, "b"), model(waves, lengths, "b"))
    fresh = build_model(tiny_cfg(), {"a": 4, "b": 2}).eval()
    load_state_into(fresh, tmp_path / "ckpt" / "model")
    assert torch.equal(fresh(waves, lengths, "a"), model(waves, lengths, "a"))
    with pytest.raises(EmonetError, match="corpora"):
        load_state_into(build_model(tiny_cfg(), {"a": 4}), tmp_path / "ckpt" / "model")
    with pytest.raises(EmonetError, match="config"):
        load_state_into(build_model(tiny_cfg(stem_width=8), {"a": 4, "b": 2}), tmp_path / "ckpt" / "model")
