"""Corpus schedules: round-robin (unchanged), temperature sampling's frequencies, identical on every rank (checked
across two real processes building them from real shard indexes), and a resumed schedule continues the sequence."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from emonet_dist.data.schedule import RoundRobinSchedule, TemperatureSchedule, corpus_schedule
from emonet_testkit import free_port, tiny_train_config

CORPORA = ["big", "small", "mid", "tiny", "target"]
SIZES = [1440, 300, 588, 120, 480]


def _old_round(corpora, seed, shuffle, r):
    """The round-robin schedule's ``round`` before temperature sampling existed (commit 25a3906), verbatim."""
    if not shuffle or len(corpora) == 1:
        return tuple(corpora)
    perm = np.random.default_rng([seed, r, 0x5C4ED]).permutation(len(corpora))
    return tuple(corpora[i] for i in perm)


def _rank(rank: int, world: int, port: int, shards: str, out) -> None:
    """One rank: the schedules of both samplings, built as the training loop builds them (from the shard indexes)."""
    from emonet_dist.train.streams import corpus_data, corpus_schedule_for

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mine = {}
    for sampling in ("round_robin", "temperature"):
        cfg = tiny_train_config(shards, "unused", "data.seed=11", f"train.corpus_sampling={sampling}",
                                "train.sampling_temperature=1.5")
        datas = {s.domain: corpus_data(cfg.data.shards, s, cfg.data.seed) for s in cfg.data.corpora}
        sched = corpus_schedule_for(cfg, datas)
        mine[sampling] = [sched.round(r) for r in range(500)]
    mine["sizes"] = [d.train_size for d in datas.values()]
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    out[rank] = gathered
    dist.destroy_process_group()


def test_two_ranks_share_the_schedule(synth_shards):
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, free_port(), str(synth_shards), out), nprocs=2, join=True)
        got = dict(out)
    assert set(got) == {0, 1}
    r0, r1 = got[0][0], got[0][1]  # what rank 0 gathered from rank 0 and from rank 1
    assert got[1] == got[0]
    for sampling in ("round_robin", "temperature"):
        assert len(r0[sampling]) == 500 and r0[sampling] == r1[sampling]
    # the temperature schedule used the corpora's real training sizes: it draws both, and not in equal rounds
    assert len(r0["sizes"]) == 2 and min(r0["sizes"]) > 0
    draws = Counter(c for rnd in r0["temperature"] for c in rnd)
    assert len(draws) == 2 and any(len(set(rnd)) == 1 for rnd in r0["temperature"])


def test_every_round_visits_every_corpus_once_and_order_varies():
    sched = RoundRobinSchedule(CORPORA, seed=11)
    rounds = [sched.round(r) for r in range(50)]
    assert all(sorted(r) == sorted(CORPORA) for r in rounds)
    assert len(set(rounds)) > 10
    assert RoundRobinSchedule(CORPORA, seed=11, shuffle=False).round(7) == tuple(CORPORA)
    slots = RoundRobinSchedule(CORPORA, seed=11).slots(start_round=3)
    assert [next(slots)[2] for _ in range(5)] == list(rounds[3])


@pytest.mark.parametrize("seed,shuffle", [(0, True), (11, True), (2**40 + 3, True), (5, False)])
def test_round_robin_is_unchanged(seed, shuffle):
    """``train.corpus_sampling=round_robin`` (the default) gives exactly the sequence of the old schedule."""
    new = corpus_schedule("round_robin", CORPORA, SIZES, seed, temperature=3.0, shuffle=shuffle)
    assert isinstance(new, RoundRobinSchedule)
    assert [new.round(r) for r in range(1000)] == [_old_round(CORPORA, seed, shuffle, r) for r in range(1000)]


def test_temperature_one_samples_in_proportion_to_size():
    """T = 1: over 10,000 steps (50,000 draws) each corpus's share is n_c / sum(n) within 2 % of that share."""
    sched = TemperatureSchedule(CORPORA, SIZES, temperature=1.0, seed=3)
    draws = Counter(c for r in range(10_000) for c in sched.round(r))
    total = sum(draws.values())
    assert total == 10_000 * len(CORPORA)  # a step is K batches, as under round-robin
    expected = np.asarray(SIZES) / sum(SIZES)
    got = np.asarray([draws[c] / total for c in CORPORA])
    assert np.allclose(sched.probabilities, expected, rtol=1e-12)
    assert np.all(np.abs(got - expected) <= 0.02 * expected), (got, expected)
    # and the sequence is not round-robin in disguise: steps repeat corpora and leave some out
    assert sum(len(set(sched.round(r))) < len(CORPORA) for r in range(100)) > 50


def test_temperature_flattens_the_distribution():
    sizes = np.asarray(SIZES, dtype=float)
    for t in (0.5, 2.0, 5.0):
        p = TemperatureSchedule(CORPORA, SIZES, temperature=t).probabilities
        assert np.allclose(p, sizes ** (1 / t) / (sizes ** (1 / t)).sum(), rtol=1e-12)
    assert np.allclose(TemperatureSchedule(CORPORA, SIZES, temperature=1000).probabilities, 0.2, atol=2e-3)
    hot = TemperatureSchedule(CORPORA, SIZES, temperature=0.01, seed=1)  # almost only the largest corpus
    assert Counter(c for r in range(200) for c in hot.round(r)).most_common(1)[0] == ("big", 1000)


def test_a_resumed_schedule_continues_the_same_sequence():
    """The training loop builds a fresh schedule after a restart and asks for its step: a pure function of
    (seed, step), so the resumed run draws what the uninterrupted one drew (no RNG state is carried)."""
    first = TemperatureSchedule(CORPORA, SIZES, temperature=2.0, seed=7)
    uninterrupted = [first.round(r) for r in range(300)]
    for _ in range(5):  # whatever the first object did meanwhile does not matter
        first.round(12345)
    resumed = TemperatureSchedule(CORPORA, SIZES, temperature=2.0, seed=7)
    assert [resumed.round(r) for r in range(137, 300)] == uninterrupted[137:]
    slots = resumed.slots(start_round=137)
    assert [next(slots)[2] for _ in range(5 * 10)] == [c for rnd in uninterrupted[137:147] for c in rnd]
    other_seed = TemperatureSchedule(CORPORA, SIZES, temperature=2.0, seed=8)
    assert [other_seed.round(r) for r in range(300)] != uninterrupted


def test_bad_schedules_refused():
    with pytest.raises(ValueError, match="positive training size"):
        TemperatureSchedule(CORPORA, [1, 2, 3, 0, 5], temperature=1.0)
    with pytest.raises(ValueError, match="positive training size"):
        TemperatureSchedule(CORPORA, [1, 2], temperature=1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        TemperatureSchedule(CORPORA, SIZES, temperature=0.0)
    with pytest.raises(ValueError, match="unique"):
        TemperatureSchedule(["a", "a"], [1, 2], temperature=1.0)
    with pytest.raises(ValueError, match="unknown corpus sampling"):
        corpus_schedule("uniform", CORPORA, SIZES, 0)
