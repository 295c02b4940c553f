"""The round-robin corpus schedule is identical on every rank (checked across two real processes)."""

from __future__ import annotations

import os

import torch.distributed as dist
import torch.multiprocessing as mp

from emonet_dist.data.schedule import RoundRobinSchedule
from emonet_testkit import free_port

CORPORA = ["big", "small", "mid", "tiny", "target"]


def _rank(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sched = RoundRobinSchedule(CORPORA, seed=11)
    mine = [sched.round(r) for r in range(200)]
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    out[rank] = gathered[0] == gathered[1] and len(gathered[0]) == 200
    dist.destroy_process_group()


def test_two_ranks_share_the_schedule():
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(_rank, args=(2, free_port(), out), nprocs=2, join=True)
        assert dict(out) == {0: True, 1: True}


def test_every_round_visits_every_corpus_once_and_order_varies():
    sched = RoundRobinSchedule(CORPORA, seed=11)
    rounds = [sched.round(r) for r in range(50)]
    assert all(sorted(r) == sorted(CORPORA) for r in rounds)
    assert len(set(rounds)) > 10
    assert RoundRobinSchedule(CORPORA, seed=11, shuffle=False).round(7) == tuple(CORPORA)
    slots = RoundRobinSchedule(CORPORA, seed=11).slots(start_round=3)
    assert [next(slots)[2] for _ in range(5)] == list(rounds[3])
