"""Per-rank streaming of one corpus partition from WebDataset shards.

A :class:`CorpusStream` is a torch ``IterableDataset``; each DataLoader worker process runs ``__iter__`` and
yields ready batches (decoded, cropped, zero-padded). Which samples a worker reads comes from the pure plan in
:mod:`emonet_dist.data.plan`, split by node (rank) and then by loader worker, so:

* exact epochs cover every training sample once across all ranks, with the same batch count per rank;
* a run resumes mid-epoch at the exact batch (a worker skips the batches already consumed);
* crops are drawn from ``(seed, epoch, sample)``, so they do not depend on which worker read the sample.

Shard addresses may be local paths, URLs or ``pipe:`` commands (:mod:`emonet_dist.data.remote` opens them).
Every shard is read whole and checked against ``index.json`` before its samples are used
(:mod:`emonet_dist.data.reader`). A malformed sample fails the stream (``bad_samples="fail"``, the default) or is
dropped from its batch (``"skip"``): each batch lists the samples skipped since the previous batch under
``"skipped"`` (``{"shard", "member", "reason"}`` records), :class:`~emonet_dist.data.loader.CorpusLoader` sums
them in ``loader.skipped`` and :func:`~emonet_dist.data.loader.eval_batches` in ``stream.skipped``. A batch whose
samples are all bad is an error in both modes: dropping it would give ranks different batch counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ShardError, ShardReadError
from . import plan
from .index_schema import check_index
from .reader import SkipLog, read_shard, skip_record
from .remote import UrlPolicy, shard_url
from .samples import bad, decode
from .shards import load_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardList:
    """The shards of one corpus partition set: addresses, sample counts and labels in sample order."""

    corpus: str
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    labels: tuple[str, ...]
    """The label of every sample in global-index order (from ``index.json``; no shard is opened)."""
    sha256: tuple[str, ...] = ()
    """sha256 of every shard (from ``index.json``); checked as each shard is read. Empty: not checked."""

    @property
    def total(self) -> int:
        return int(sum(self.counts))


def shard_list(root: str, corpus: str, partitions: tuple[str, ...] | list[str], index: dict | None = None,
               policy: UrlPolicy = UrlPolicy()) -> ShardList:
    """Collect the shards of ``partitions`` of ``corpus`` under ``root`` from its ``index.json``."""
    index = check_index(index, corpus, f"index of corpus '{corpus}'") if index else load_index(root, corpus, policy)
    urls, counts, labels, hashes = [], [], [], []
    for part in partitions:
        if part not in index["partitions"]:
            raise ShardError(f"corpus '{corpus}' has no partition '{part}' (it has: "
                             f"{', '.join(sorted(index['partitions']))}); fix data.corpora[...] train/dev/test")
        for sh in index["partitions"][part]["shards"]:
            if sh["samples"] == 0:
                continue
            urls.append(shard_url(root, f"{corpus}/{sh['path']}"))
            counts.append(sh["samples"])
            labels.extend(sh["labels"])
            hashes.append(sh["sha256"])
    if not urls:
        raise ShardError(f"corpus '{corpus}' partitions {list(partitions)} hold no samples")
    return ShardList(corpus, tuple(urls), tuple(counts), tuple(labels), tuple(hashes))


def collate(waves: list[np.ndarray], targets: list[int], metas: list[dict], extra: dict) -> dict:
    """Zero-pad to the longest wave in the batch. ``waves``: (B, T) float32, ``lengths``: (B,) int64."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    # Padding in numpy: torch's element-wise copy fans out to its intra-op thread pool, which costs far more
    # than the copy itself when every core is already busy decoding.
    out = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = w
    return {"waves": torch.from_numpy(out), "lengths": torch.from_numpy(lengths),
            "targets": torch.tensor(targets, dtype=torch.int64),
            "ids": [m["id"] for m in metas], "labels": [m["label"] for m in metas], **extra}


class CorpusStream(IterableDataset):
    """Batches of one corpus for one rank.

    Args:
        shards: what to read (see :func:`shard_list`).
        targets: value of ``field`` in a sample's metadata -> class index.
        field: ``"label"`` (emotion) or ``"speaker"`` (speaker-ID pretraining).
        train: random crops, shuffling and epochs; otherwise one ordered pass over whole utterances.
        max_seconds: training crop length; ``eval_max_seconds`` caps evaluation utterances (0: whole).
        epoch_mode: ``exact`` or ``resampled`` (infinite, shards drawn with replacement).
        include: optional boolean mask over samples (class-balanced subsampling).
        start_epoch, start_batch: resume position of this rank (batches already consumed in that epoch).
        bad_samples: ``fail`` (a malformed sample is a :class:`ShardReadError`) or ``skip`` (drop and count it).
        policy: timeouts and retries of remote reads (``UrlPolicy.from_config(cfg.data)``).
    """

    def __init__(self, shards: ShardList, targets: dict[str, int], *, field: str = "label", train: bool = True,
                 batch_size: int = 64, max_seconds: float = 5.0, eval_max_seconds: float = 0.0,
                 sample_rate: int = 16000, epoch_mode: str = "exact", window: int = 512, seed: int = 0,
                 rank: int = 0, world: int = 1, include: np.ndarray | None = None, start_epoch: int = 0,
                 start_batch: int = 0, bad_samples: str = "fail", policy: UrlPolicy = UrlPolicy()):
        super().__init__()
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        if bad_samples not in ("fail", "skip"):
            raise ValueError(f"bad_samples must be 'fail' or 'skip', not {bad_samples!r}")
        n = int(include.sum()) if include is not None else shards.total
        if train and epoch_mode == "exact" and n < world:
            raise ShardError(f"corpus '{shards.corpus}' has {n} training samples, fewer than {world} ranks")
        self.shards, self.targets, self.field, self.train = shards, targets, field, train
        self.batch_size, self.sample_rate, self.epoch_mode, self.window = batch_size, sample_rate, epoch_mode, window
        self.max_samples = int(max_seconds * sample_rate)
        self.eval_max_samples = int(eval_max_seconds * sample_rate)
        self.seed, self.rank, self.world, self.include = seed, rank, world, include
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self._iters = 0  # epochs started by this copy; each DataLoader worker holds its own copy
        self.bad_samples, self.policy = bad_samples, policy
        self.skipped = SkipLog()
        """Skipped samples summed by the consumer in this process (see the module docstring)."""
        self._pending: list[dict] = []  # skip records not yet attached to a batch (in the reading process)
        self._logged: set = set()  # (shard, reason) pairs already logged: a corrupt shard warns once

    # -- planning ---------------------------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        """Batches this rank gets per exact epoch (the same on every rank)."""
        n = int(self.include.sum()) if self.include is not None else self.shards.total
        return plan.batches_per_rank(n, self.world, self.batch_size)

    # -- iteration --------------------------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.train:
            yield from self._eval(w, nw)
        elif self.epoch_mode == "resampled":
            yield from self._resampled(w, nw)
        else:
            epoch = self.start_epoch + self._iters
            skip = self.start_batch if self._iters == 0 else 0
            self._iters += 1
            yield from self._exact(epoch, skip, w, nw)

    def _exact(self, epoch: int, skip: int, w: int, nw: int):
        batches = plan.exact_rank_batches(list(self.shards.counts), epoch, self.seed, self.rank, self.world,
                                          self.batch_size, self.window, self.include)
        per_worker = [len(plan.worker_block(len(batches), i, nw)) for i in range(nw)]
        old, done = plan.resumed_worker(w, per_worker, skip)
        block = plan.worker_block(len(batches), old, nw)
        todo = [(j, batches[j]) for j in list(block)[done:]]
        yield from self._emit(todo, epoch, crop=True, worker=old)

    def _eval(self, w: int, nw: int):
        items = plan.eval_rank_items(list(self.shards.counts), self.rank, self.world, self.include)
        lo, hi = plan.rank_range(len(items), w, nw)
        mine = items[lo:hi]
        todo = [(j, mine[i:i + self.batch_size]) for j, i in enumerate(range(0, len(mine), self.batch_size))]
        yield from self._emit(todo, 0, crop=False, worker=w)

    def _emit(self, todo: list[tuple[int, np.ndarray]], epoch: int, crop: bool, worker: int):
        """Read the shards holding ``todo``'s samples in order of first use; yield batches as they complete."""
        if not todo:
            return
        offs = plan.offsets_of(list(self.shards.counts))
        flat = np.concatenate([b for _, b in todo])
        shard_of = np.searchsorted(offs, flat, side="right") - 1
        _, first = np.unique(shard_of, return_index=True)
        shard_order = shard_of[np.sort(first)]
        needed = set(flat.tolist())
        stash: dict[int, dict | ShardReadError] = {}
        nxt = 0
        for s in shard_order:
            got = self._read(int(s), lambda p, o=int(offs[s]): o + p in needed)
            stash.update({int(offs[s]) + pos: item for pos, item in got.items()})
            while nxt < len(todo) and all(int(g) in stash for g in todo[nxt][1]):
                j, gs = todo[nxt]
                yield self._build([stash.pop(int(g)) for g in gs], gs, epoch, crop,
                                  {"epoch": epoch, "batch": j, "worker": worker})
                nxt += 1
        if nxt != len(todo):
            raise ShardError(f"corpus '{self.shards.corpus}': shards ended before all planned samples were read "
                             "(a shard holds fewer samples than index.json says; run `emonet shard verify`)")

    def _resampled(self, w: int, nw: int):
        """Infinite stream: shards drawn with replacement (weighted by size), samples shuffled in a buffer."""
        rng = np.random.default_rng([self.seed, self.rank, w, self.start_epoch, self.start_batch, 0x2E5])
        counts = np.asarray(self.shards.counts, dtype=np.float64)
        offs = plan.offsets_of(list(self.shards.counts))
        buf: list[tuple[int, dict]] = []
        batch: list[tuple[int, dict]] = []
        j = 0
        while True:
            s = int(rng.choice(len(counts), p=counts / counts.sum()))
            o = int(offs[s])
            got = self._read(s, lambda p, o=o: self.include is None or bool(self.include[o + p]))
            for pos in sorted(got):
                buf.append((o + pos, got[pos]))
                if len(buf) < self.window:
                    continue
                batch.append(buf.pop(int(rng.integers(len(buf)))))
                if len(batch) == self.batch_size:
                    gs = np.array([g for g, _ in batch])
                    yield self._build([x for _, x in batch], gs, j, True, {"epoch": 0, "batch": j, "worker": w})
                    batch, j = [], j + 1

    def _read(self, s: int, keep) -> dict:
        sha = self.shards.sha256[s] if self.shards.sha256 else None
        return read_shard(self.shards.urls[s], self.shards.counts[s], sha, keep, self.policy)

    # -- decoding ---------------------------------------------------------------------------------------------
    def _build(self, items: list, gs: np.ndarray, epoch: int, crop: bool, extra: dict) -> dict:
        """One batch from checked items (see :func:`read_shard`); bad ones fail or are skipped."""
        waves, targets, metas = [], [], []
        for item, g in zip(items, gs):
            try:
                if isinstance(item, ShardReadError):
                    raise item
                meta = item["meta"]
                key = meta[self.field]
                if key not in self.targets:
                    raise bad(item["shard"], f"{item['sample']['__key__']}.json", f"{self.field} '{key[:60]}' is "
                              f"not in the label map of corpus '{self.shards.corpus}' ({len(self.targets)} classes)")
                wave = self._decode(item, int(g), epoch, crop)
            except ShardReadError as exc:
                if self.bad_samples == "fail":
                    raise
                self._pending.append(skip_record(exc, self._logged))
                continue
            waves.append(wave)
            targets.append(self.targets[key])
            metas.append(meta)
        if not waves:
            raise ShardError(f"corpus '{self.shards.corpus}': all {len(items)} samples of batch {extra['batch']} "
                             f"are bad (last: {self._pending[-1]['reason'][:120]}); run `emonet shard verify`")
        out = collate(waves, targets, metas, {"corpus": self.shards.corpus, **extra})
        out["skipped"], self._pending = self._pending, []
        return out

    def _decode(self, item: dict, g: int, epoch: int, crop: bool) -> np.ndarray:
        """Decode only the needed chunk: a random ``max_seconds`` crop (train) or the first ``eval_max``."""
        n = item["meta"]["num_samples"]  # checked against the FLAC header by decode()
        start, take = 0, n
        if crop and n > self.max_samples:
            take = self.max_samples
            start = int(np.random.default_rng([self.seed, epoch, g, 0xC20]).integers(0, n - take + 1))
        elif not crop and self.eval_max_samples and n > self.eval_max_samples:
            take = self.eval_max_samples
        return decode(item["sample"], item["meta"], item["shard"], self.sample_rate, start, take)
