"""Per-rank streaming of one corpus partition from WebDataset shards.

A :class:`CorpusStream` is a torch ``IterableDataset``; each DataLoader worker process runs ``__iter__`` and
yields ready batches (decoded, cropped, zero-padded). Which samples a worker reads comes from the pure plan in
:mod:`emonet_dist.data.plan`, split by node (rank) and then by loader worker, so:

* exact epochs cover every training sample once across all ranks, with the same batch count per rank;
* a run resumes mid-epoch at the exact batch (a worker skips the batches already consumed);
* crops are drawn from ``(seed, epoch, sample)``, so they do not depend on which worker read the sample.

Shard addresses may be local paths, URLs or ``pipe:`` commands; WebDataset's ``gopen`` opens them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ShardError
from . import plan
from .shards import load_index, shard_url
from .tario import iter_samples, open_shard


@dataclass(frozen=True)
class ShardList:
    """The shards of one corpus partition set: addresses, sample counts and labels in sample order."""

    corpus: str
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    labels: tuple[str, ...]
    """The label of every sample in global-index order (from ``index.json``; no shard is opened)."""

    @property
    def total(self) -> int:
        return int(sum(self.counts))


def shard_list(root: str, corpus: str, partitions: tuple[str, ...] | list[str], index: dict | None = None
               ) -> ShardList:
    """Collect the shards of ``partitions`` of ``corpus`` under ``root`` from its ``index.json``."""
    index = index or load_index(root, corpus)
    urls, counts, labels = [], [], []
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
    if not urls:
        raise ShardError(f"corpus '{corpus}' partitions {list(partitions)} hold no samples")
    return ShardList(corpus, tuple(urls), tuple(counts), tuple(labels))


def iter_shard(url: str):
    """Yield ``(position, {"flac": bytes, "json": bytes, ...})`` for every sample of one shard, in order."""
    try:
        stream = open_shard(url)
    except Exception as exc:  # noqa: BLE001 - local, http and pipe openers raise different types
        raise ShardError(f"cannot open shard {url}: {exc}") from exc
    try:
        yield from enumerate(iter_samples(stream))
    except (EOFError, ValueError, OSError) as exc:
        raise ShardError(f"cannot read shard {url}: {exc} (run `emonet shard verify`)") from exc
    finally:
        stream.close()


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
    """

    def __init__(self, shards: ShardList, targets: dict[str, int], *, field: str = "label", train: bool = True,
                 batch_size: int = 64, max_seconds: float = 5.0, eval_max_seconds: float = 0.0,
                 sample_rate: int = 16000, epoch_mode: str = "exact", window: int = 512, seed: int = 0,
                 rank: int = 0, world: int = 1, include: np.ndarray | None = None, start_epoch: int = 0,
                 start_batch: int = 0):
        super().__init__()
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
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

    # -- planning ---------------------------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        """Batches this rank gets per exact epoch (the same on every rank)."""
        n = int(self.include.sum()) if self.include is not None else self.shards.total
        return plan.batches_per_rank(n, self.world, self.batch_size)

    def worker_batch_counts(self, num_workers: int) -> list[int]:
        b = self.batches_per_epoch()
        return [len(plan.worker_block(b, w, max(num_workers, 1))) for w in range(max(num_workers, 1))]

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
        stash: dict[int, dict] = {}
        nxt = 0
        for s in shard_order:
            for pos, sample in iter_shard(self.shards.urls[s]):
                g = int(offs[s]) + pos
                if g in needed:
                    stash[g] = sample
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
            for pos, sample in iter_shard(self.shards.urls[s]):
                g = int(offs[s]) + pos
                if self.include is not None and not self.include[g]:
                    continue
                buf.append((g, sample))
                if len(buf) < self.window:
                    continue
                batch.append(buf.pop(int(rng.integers(len(buf)))))
                if len(batch) == self.batch_size:
                    gs = np.array([g for g, _ in batch])
                    yield self._build([x for _, x in batch], gs, j, True, {"epoch": 0, "batch": j, "worker": w})
                    batch, j = [], j + 1

    # -- decoding ---------------------------------------------------------------------------------------------
    def _build(self, samples: list[dict], gs: np.ndarray, epoch: int, crop: bool, extra: dict) -> dict:
        waves, targets, metas = [], [], []
        for sample, g in zip(samples, gs):
            meta = json.loads(sample["json"])
            key = meta[self.field]
            if key not in self.targets:
                raise ShardError(f"corpus '{self.shards.corpus}': {self.field} '{key}' of {meta['id']} is not in "
                                 f"the label map ({len(self.targets)} classes)")
            waves.append(self._decode(sample["flac"], int(g), epoch, crop))
            targets.append(self.targets[key])
            metas.append(meta)
        return collate(waves, targets, metas, {"corpus": self.shards.corpus, **extra})

    def _decode(self, data: bytes, g: int, epoch: int, crop: bool) -> np.ndarray:
        """Decode only the needed chunk: a random ``max_seconds`` crop (train) or the first ``eval_max``."""
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate != self.sample_rate:
                raise ShardError(f"shard audio is {f.samplerate} Hz, expected {self.sample_rate} Hz; re-shard with "
                                 f"shard.sample_rate={self.sample_rate}")
            n = f.frames
            take = n
            if crop and n > self.max_samples:
                take = self.max_samples
                start = int(np.random.default_rng([self.seed, epoch, g, 0xC20]).integers(0, n - take + 1))
                f.seek(start)
            elif not crop and self.eval_max_samples and n > self.eval_max_samples:
                take = self.eval_max_samples
            wave = f.read(take, dtype="float32", always_2d=True)
        return wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
