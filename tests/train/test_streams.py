"""Each rank's training loaders for GPUs (issue 15): pinned memory where the worker trains on CUDA, and
``data.num_workers`` loader processes prefetching ``data.prefetch_factor`` batches each."""

from __future__ import annotations

import pytest
import torch

from emonet_dist.config import Config, DataConfig
from emonet_dist.errors import ConfigError
from emonet_dist.train.streams import corpus_data, pin_memory, train_loader
from emonet_testkit import tiny_train_config


@pytest.mark.parametrize("setting, device, pinned", [
    ("auto", "cuda", True), ("auto", torch.device("cuda", 1), True), ("auto", "cpu", False),
    (True, "cpu", True), (False, "cuda", False)])
def test_pin_memory_is_on_for_cuda_unless_set(setting, device, pinned):
    assert pin_memory(DataConfig(pin_memory=setting), device) is pinned


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")  # no GPU here
def test_the_loader_settings_reach_the_dataloader(synth_shards, tmp_path):
    cfg = tiny_train_config(synth_shards, tmp_path, "data.num_workers=2", "data.prefetch_factor=3",
                            "data.pin_memory=true")
    cd = corpus_data(cfg.data.shards, cfg.data.corpora[0], cfg.data.seed)
    loader = train_loader(cd, cfg.data, 0, 1)
    try:
        dl = loader._dl  # the DataLoader is what must receive them
        assert (dl.num_workers, dl.prefetch_factor, dl.pin_memory) == (2, 3, True)
        assert len(next(loader)["ids"]) == cfg.data.batch_size
    finally:
        loader.close()
    auto = train_loader(cd, cfg.replace({"data.pin_memory": "auto"}).data, 0, 1, device="cpu")
    assert auto._dl.pin_memory is False
    auto.close()


def test_bad_loader_settings_are_refused():
    with pytest.raises(ConfigError, match="prefetch_factor"):
        DataConfig(prefetch_factor=0)
    with pytest.raises(ConfigError, match="pin_memory"):
        Config().override("data.pin_memory=sometimes")
