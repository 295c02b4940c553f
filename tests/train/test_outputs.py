"""What a run leaves behind is written from copies: the training model stays on its device."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from emonet_dist.config import Config, CorpusConfig
from emonet_dist.model.build import build_model
from emonet_dist.tracking import RunLogger
from emonet_dist.train.outputs import write_final_outputs
from emonet_dist.train.streams import CorpusData
from emonet_testkit import final_tensors, same_tensors


def test_final_outputs_leave_the_model_on_its_device(tmp_path, monkeypatch):
    """This machine has no GPU, so the model stands in for one on a GPU: it says its parameters are on
    ``cuda:0`` (all the old code asked before moving it), and a move of the model (``.to``, ``.cpu``, ``.cuda``
    all go through ``_apply``) is recorded instead of done. Every output must still be written, from copies."""
    cfg = Config().replace({"model.stem_width": 4, "model.base_width": 8, "model.pooling.units": 16,
                            "model.head.hidden": 16})
    model = build_model(cfg.model)
    model.add_corpus("synth2", 2, kind="emotion", labels=["angry", "neutral"])
    datas = {"synth2": CorpusData(CorpusConfig("synth2"), ("angry", "neutral"), {"angry": 0, "neutral": 1},
                                  "label", "emotion", {}, {}, [3, 5])}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moves = []
    gpu = SimpleNamespace(device=torch.device("cuda", 0))
    monkeypatch.setattr(model, "parameters", lambda recurse=True: iter([gpu]))
    monkeypatch.setattr(model, "_apply", lambda fn, *args, **kwargs: moves.append(fn) or model)
    run = tmp_path / "run"
    write_final_outputs(model, datas, run, RunLogger(None, None, run / "metrics.jsonl"))
    assert moves == []
    assert same_tensors(final_tensors(run), before)
    assert (run / "backbone" / "backbone.safetensors").is_file()
    assert (run / "bundles" / "synth2" / "bundle.json").is_file()
