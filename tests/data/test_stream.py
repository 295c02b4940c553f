"""Per-rank streaming: exact epochs, equal batch counts, exact resume, crops, evaluation, resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emonet_dist.config import ShardConfig
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.data import plan
from emonet_dist.data.loader import CorpusLoader, eval_batches
from emonet_dist.data.shards import plan_shards
from emonet_dist.data.stream import CorpusStream, shard_list


def _stream(shards, part="train", **kw):
    sl = shard_list(str(shards), "tiny", [part])
    targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
    return CorpusStream(sl, targets, **{"batch_size": 4, "window": 8, "seed": 3, **kw})


def test_exact_epoch_two_ranks_two_workers_covers_train_once(tiny_corpus, tiny_shards):
    train_ids = {r.id for r in read_manifest(tiny_corpus) if r.partition == "train"}
    seen, counts = [], []
    for rank in range(2):
        st = _stream(tiny_shards, rank=rank, world=2)
        loader = CorpusLoader(st, num_workers=2)
        n = st.batches_per_epoch()
        batches = [next(loader) for _ in range(n)]
        assert {b["epoch"] for b in batches} == {0}
        assert next(loader)["epoch"] == 1  # the next batch already belongs to the next epoch
        counts.append(n)
        seen += [i for b in batches for i in b["ids"]]
        loader.close()
    assert counts[0] == counts[1]  # DDP needs the same number of steps on every rank
    assert len(seen) == len(set(seen)) and set(seen) == train_ids


def test_epochs_reshuffle_and_runs_repeat(tiny_shards):
    def first_epochs(seed):
        loader = CorpusLoader(_stream(tiny_shards, seed=seed), num_workers=2)
        out = [next(loader) for _ in range(2 * loader.stream.batches_per_epoch())]
        loader.close()
        return out

    a, b = first_epochs(3), first_epochs(3)
    assert [x["ids"] for x in a] == [x["ids"] for x in b]
    assert all(torch.equal(x["waves"], y["waves"]) for x, y in zip(a, b))
    half = len(a) // 2
    assert [x["ids"] for x in a[:half]] != [x["ids"] for x in a[half:]]  # epoch 1 is a new order
    assert [x["ids"] for x in first_epochs(4)] != [x["ids"] for x in a]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers", [0, 2, 3])
def test_resume_mid_epoch_is_exact(tiny_shards, workers):
    full_loader = CorpusLoader(_stream(tiny_shards, max_seconds=0.4), num_workers=workers)
    n = full_loader.stream.batches_per_epoch()
    full = [next(full_loader) for _ in range(n + 3)]
    full_loader.close()
    k = n // 2 + 1
    resumed = CorpusLoader(_stream(tiny_shards, max_seconds=0.4, start_epoch=0, start_batch=k), num_workers=workers)
    rest = [next(resumed) for _ in range(n + 3 - k)]
    assert resumed.state() == {"epoch": 1, "batch": 3}
    resumed.close()
    assert [x["ids"] for x in rest] == [x["ids"] for x in full[k:]]
    assert all(torch.equal(x["waves"], y["waves"]) for x, y in zip(rest, full[k:]))


def test_crops_and_padding(tiny_shards):
    st = _stream(tiny_shards, max_seconds=0.35)
    batch = next(iter(CorpusLoader(st, num_workers=0)))
    assert batch["waves"].shape[1] <= int(0.35 * 16000)
    assert batch["waves"].shape[1] == int(batch["lengths"].max())
    for wave, n in zip(batch["waves"], batch["lengths"]):
        assert torch.all(wave[n:] == 0) and wave[:n].abs().max() > 0
    assert batch["targets"].dtype == torch.int64 and len(batch["ids"]) == len(batch["targets"])


def test_eval_is_one_ordered_pass_of_whole_utterances(tiny_corpus, tiny_shards):
    durations = {r.id: r.duration for r in read_manifest(tiny_corpus) if r.partition == "dev"}
    ids = []
    for rank in range(2):
        for b in eval_batches(_stream(tiny_shards, "dev", train=False, rank=rank, world=2), num_workers=2):
            for i, n in zip(b["ids"], b["lengths"].tolist()):
                assert abs(n / 16000 - durations[i]) < 1e-3  # not cropped
            ids += b["ids"]
    # one pass: every dev utterance once; ordered: rank 0's contiguous range, then rank 1's, in the order the
    # shards hold them (the tiny_shards fixture's plan), so ranks' predictions concatenate without sorting
    assert len(ids) == len(set(ids)) == len(durations) > 0
    shard_plan = plan_shards(read_manifest(tiny_corpus), ShardConfig(samples_per_shard=5))
    assert ids == [r.id for shard in shard_plan["dev"] for r in shard]
    capped = next(iter(eval_batches(_stream(tiny_shards, "dev", train=False, eval_max_seconds=0.2))))
    assert capped["waves"].shape[1] <= 3200


def test_resampled_mode_is_endless(tiny_shards):
    st = _stream(tiny_shards, epoch_mode="resampled")
    loader = CorpusLoader(st, num_workers=2)
    batches = [next(loader) for _ in range(3 * st.batches_per_epoch())]
    assert all(len(b["ids"]) == 4 for b in batches)
    loader.close()


def test_class_balanced_subsampling(tiny_shards):
    sl = shard_list(str(tiny_shards), "tiny", ["train"])
    labels = list(sl.labels)
    labels[:5] = ["angry"] * 5  # make the classes unequal
    mask = plan.class_balanced_mask(labels, seed=0)
    kept = np.asarray(labels)[mask]
    _, counts = np.unique(kept, return_counts=True)
    assert len(set(counts.tolist())) == 1
    st = _stream(tiny_shards, include=mask)
    loader = CorpusLoader(st, num_workers=0)
    seen = [i for _ in range(st.batches_per_epoch()) for i in next(loader)["ids"]]
    assert len(seen) == int(mask.sum()) == len(set(seen))


def test_roundrobin_matches_dataloader_order():
    assert plan.roundrobin_consumed([3, 4], 7) == ([3, 4], 0)
    assert plan.roundrobin_consumed([3, 4], 5) == ([3, 2], 1)
    assert plan.roundrobin_consumed([1, 3], 3) == ([1, 2], 0)
    assert plan.resumed_worker(0, [3, 4], 5) == (1, 2)
    with pytest.raises(ValueError):
        plan.roundrobin_consumed([1, 1], 3)


def test_plan_batches_equal_across_ranks():
    counts = [5, 3, 7, 1, 9]
    for world in (1, 2, 3, 4):
        per_rank = [plan.exact_rank_batches(counts, 2, 0, r, world, 4, 6) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1
        flat = np.concatenate([x for bs in per_rank for x in bs])
        assert sorted(flat.tolist()) == list(range(sum(counts)))
        assert max(len(x) for bs in per_rank for x in bs) <= 4 + 1
