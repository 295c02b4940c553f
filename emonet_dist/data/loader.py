"""Main-process side of streaming: endless, resumable batch iterators over :class:`CorpusStream`.

:class:`CorpusLoader` wraps one corpus's DataLoader for one rank. Exact epochs follow each other forever (small
corpora cycle while large ones are still in their first epoch); ``state()`` is the rank's data position
``{"epoch", "batch"}``, which a checkpoint stores and a new loader resumes from exactly.

Samples skipped under ``data.bad_samples=skip`` travel with the batches (their ``"skipped"`` records) from the
worker processes; ``CorpusLoader.skipped`` and, for evaluation passes, ``stream.skipped`` sum them
(:class:`~emonet_dist.data.reader.SkipLog`: ``count``, ``reasons``, the first records with shard and member).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from .reader import SkipLog
from .stream import CorpusStream


def _loader(stream: CorpusStream, num_workers: int, pin_memory: bool, persistent: bool, prefetch_factor: int = 2
            ) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=None,  # the stream yields ready, padded batches
        num_workers=num_workers,
        # Persistent workers keep their copy of the stream between epochs; each counts the epochs it has
        # started, which is how the next epoch's plan reaches them without re-forking.
        persistent_workers=persistent and num_workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


class CorpusLoader:
    """Endless training batches of one corpus for one rank."""

    def __init__(self, stream: CorpusStream, num_workers: int = 1, pin_memory: bool = False, prefetch_factor: int = 2):
        """``pin_memory``: batches in page-locked memory (asynchronous copies to a GPU); ``prefetch_factor``: batches
        each worker process prepares ahead."""
        self.stream = stream
        self.epoch, self.batch = stream.start_epoch, stream.start_batch
        self.exact = stream.epoch_mode == "exact"
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self._dl = _loader(stream, num_workers, pin_memory, persistent=True, prefetch_factor=prefetch_factor)
        self._it: Iterator | None = None
        self.skipped = SkipLog()
        """Samples skipped so far by this rank's loader (``skipped.count`` is the metric to log)."""

    def __next__(self) -> dict:
        if self._it is None:
            self._it = iter(self._dl)
        try:
            out = next(self._it)
        except StopIteration:
            if not self.exact:
                raise
            self.epoch, self.batch = self.epoch + 1, 0
            self._it = iter(self._dl)
            out = next(self._it)
        self.batch += 1
        self.skipped.add(out.get("skipped", ()))
        return out

    def __iter__(self):
        return self

    def state(self) -> dict:
        """The rank's data position: batches consumed in the current epoch (exact mode) or in total."""
        return {"epoch": self.epoch, "batch": self.batch}

    def close(self) -> None:
        # Dropping the iterator shuts persistent worker processes down.
        self._it = None
        self._dl = None


def eval_batches(stream: CorpusStream, num_workers: int = 0, pin_memory: bool = False) -> Iterator[dict]:
    """One ordered pass over an evaluation stream."""
    assert not stream.train, "eval_batches needs a stream built with train=False"
    for batch in _loader(stream, num_workers, pin_memory, persistent=False):
        stream.skipped.add(batch.get("skipped", ()))
        yield batch


def device_batch(batch: dict, device: torch.device | str) -> dict:
    """Move the tensors of a batch to ``device`` (non-blocking when memory is pinned)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
