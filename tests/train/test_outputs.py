"""What a run leaves behind is written from copies: the training model stays on its device (its final outputs,
bundles, best models and checkpoints alike)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from emonet_dist.config import Config, CorpusConfig
from emonet_dist.model.build import build_model
from emonet_dist.model.weights import save_model
from emonet_dist.tracking import RunLogger
from emonet_dist.train.checkpoint import save_checkpoint
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
    tensors = _tensor_identities(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4000) * 0.1, torch.tensor([4000, 3000]), "synth2").sum().backward()
    opt.step()  # momentum buffers for the checkpoint
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moves = []
    gpu = SimpleNamespace(device=torch.device("cuda", 0))
    monkeypatch.setattr(model, "parameters", lambda recurse=True: iter([gpu]))
    monkeypatch.setattr(model, "_apply", lambda fn, *args, **kwargs: moves.append(fn) or model)
    run = tmp_path / "run"
    write_final_outputs(model, datas, run, RunLogger(None, None, run / "metrics.jsonl"))
    save_model(model, run / "best" / "synth2")  # what a new best dev score keeps
    save_checkpoint(tmp_path / "ckpt", model, opt, {"step": 1})  # what every checkpoint writes
    assert moves == []
    # the same tensor objects, with the same storage, on the same device: nothing was moved or replaced
    assert _tensor_identities(model) == tensors
    assert same_tensors(final_tensors(run), before)
    assert (run / "backbone" / "backbone.safetensors").is_file()
    assert (run / "bundles" / "synth2" / "bundle.json").is_file()
    assert (run / "best" / "synth2" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "optim.safetensors").is_file()


def _tensor_identities(model) -> dict[str, tuple[int, int, torch.device]]:
    """Name -> (object id, storage address, device) of every parameter and buffer."""
    return {k: (id(t), t.data_ptr(), t.device) for k, t in [*model.named_parameters(), *model.named_buffers()]}
