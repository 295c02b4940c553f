"""Temperature sampling in the training loop on one real worker (world size 1, the synthetic shards, a tiny model):
the schedule the loop builds uses the corpora's training sizes from their shard indexes, and a step that draws a
corpus twice trains two of its batches and reports their mean loss. (Which corpus a step draws is tested in
``tests/data/test_schedule.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emonet_dist.data.schedule import RoundRobinSchedule, TemperatureSchedule
from emonet_dist.train.loop import train_round
from emonet_dist.train.streams import corpus_schedule_for, train_loader
from emonet_dist.train.worker import setup_worker
from emonet_testkit import tiny_train_config


@pytest.fixture
def worker(synth_shards, tmp_path):
    threads = torch.get_num_threads()  # setup_worker sets the process's torch threads to the worker's CPUs
    cfg = tiny_train_config(synth_shards, tmp_path, "train.corpus_sampling=temperature",
                            "train.sampling_temperature=1.0")
    yield setup_worker(cfg, {"name": "sampling", "dir": str(tmp_path / "run")})
    torch.set_num_threads(threads)


def _index_train_count(shards: Path, corpus: str, partitions) -> int:
    index = json.loads((shards / corpus / "index.json").read_text())
    return sum(sh["samples"] for p in partitions for sh in index["partitions"][p]["shards"])


def test_the_loop_s_schedule_uses_the_training_sizes_of_the_shard_index(worker, synth_shards):
    w = worker
    sched = corpus_schedule_for(w.cfg, w.datas)
    assert isinstance(sched, TemperatureSchedule) and sched.corpora == tuple(w.names)
    sizes = [_index_train_count(synth_shards, d.spec.name, d.spec.train) for d in w.datas.values()]
    assert list(sched.sizes) == sizes and len(set(sizes)) == len(sizes)  # different sizes: the test can tell
    assert sched.probabilities.tolist() == pytest.approx([n / sum(sizes) for n in sizes], rel=1e-12)
    rr = corpus_schedule_for(w.cfg.replace({"train.corpus_sampling": "round_robin"}), w.datas)
    assert isinstance(rr, RoundRobinSchedule)


def test_a_step_that_draws_a_corpus_twice_trains_two_batches(worker):
    w = worker
    loaders = {n: train_loader(w.datas[n], w.cfg.data, w.rank, w.size) for n in w.names}
    twice = (w.names[0], w.names[0])
    other = {id(p) for p in w.model.corpus_parameters(w.names[1])}
    before = {k: v.detach().clone() for k, v in w.model.named_parameters()}
    losses, n_utts = train_round(w, loaders, twice, step=0)
    assert set(losses) == {w.names[0]} and loaders[w.names[0]].batch == 2 and loaders[w.names[1]].batch == 0
    assert n_utts == 2 * w.cfg.data.batch_size
    assert torch.isfinite(losses[w.names[0]])
    changed = {k for k, v in w.model.named_parameters() if not torch.equal(v, before[k])}
    assert changed  # the drawn corpus trained; the corpus not drawn in this step was left alone
    assert other and all(torch.equal(p, before[k]) for k, p in w.model.named_parameters() if id(p) in other)
