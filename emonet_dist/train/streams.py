"""What each rank reads: label maps, class weights and the train/dev/test streams of every corpus.

Everything comes from the shard index (``index.json``), so a worker never needs the driver's disk: the shard
root may be a local directory, a shared file system or a URL.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config, CorpusConfig, DataConfig
from ..corpora import av
from ..data.loader import CorpusLoader
from ..data.plan import class_balanced_mask
from ..data.remote import UrlPolicy
from ..data.schedule import RoundRobinSchedule, TemperatureSchedule, corpus_schedule
from ..data.shards import load_index
from ..data.stream import CorpusStream, ShardList, shard_list
from ..errors import EmonetError
from .state import Position


@dataclass
class CorpusData:
    """One training domain (a corpus, or a corpus mapped to arousal/valence) as seen by one rank."""

    spec: CorpusConfig
    classes: tuple[str, ...]
    """Class names in logit order."""
    targets: dict[str, int]
    """Value of ``field`` in a sample's metadata -> class index."""
    field: str
    kind: str
    """``emotion`` or ``speaker`` (the model's head type)."""
    shards: dict[str, ShardList]
    """``train``/``dev``/``test`` -> shards."""
    include: dict[str, np.ndarray | None]
    """Per split, the class-balanced subset for arousal/valence tasks (None: everything)."""
    class_counts: list[int]
    """Training samples per class (after subsampling)."""

    @property
    def name(self) -> str:
        return self.spec.domain

    @property
    def train_size(self) -> int:
        """Training utterances (after subsampling): ``n_c`` of temperature sampling, from the index alone."""
        keep = self.include["train"]
        return int(keep.sum()) if keep is not None else self.shards["train"].total

    def class_weights(self) -> torch.Tensor:
        """N / (C * n_c) per class (sklearn's "balanced"); classes without samples get weight 0."""
        counts = np.asarray(self.class_counts, dtype=np.float64)
        w = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
        return torch.tensor(w, dtype=torch.float32)


def corpus_data(root: str, spec: CorpusConfig, seed: int, policy: UrlPolicy = UrlPolicy()) -> CorpusData:
    """Label maps, class weights and shard lists of one corpus; ``policy``: timeouts and retries of remote reads."""
    index = load_index(root, spec.name, policy)
    shards = {split: shard_list(root, spec.name, getattr(spec, split), index, policy)
              for split in ("train", "dev", "test") if getattr(spec, split)}
    if "train" not in shards:
        raise EmonetError(f"corpus '{spec.name}' has no training partitions (data.corpora[...].train is empty)")
    if spec.task == "emotion":
        classes, field, kind = tuple(index["classes"]), "label", "emotion"
        targets = {c: i for i, c in enumerate(classes)}
    elif spec.task == "speaker":
        classes, field, kind = tuple(index["speakers"]), "speaker", "speaker"
        targets = {c: i for i, c in enumerate(classes)}
    else:  # arousal / valence through the paper's Table 2
        classes, field, kind = av.CLASSES[spec.task], "label", "emotion"
        targets = {lab: classes.index(av.map_label(lab, spec.task)) for lab in index["classes"]}
    include: dict[str, np.ndarray | None] = {}
    for split, sl in shards.items():
        if spec.task in ("arousal", "valence"):
            # the paper balances the mapped classes in every partition of every corpus separately
            mapped = [targets[lab] for lab in sl.labels]
            include[split] = class_balanced_mask(mapped, seed=seed)
        else:
            include[split] = None
    counts = Counter()
    if field == "label":
        keep = include["train"]
        for i, lab in enumerate(shards["train"].labels):
            if keep is None or keep[i]:
                counts[targets[lab]] += 1
    class_counts = [counts.get(i, 0) for i in range(len(classes))] if field == "label" else [1] * len(classes)
    return CorpusData(spec, classes, targets, field, kind, shards, include, class_counts)


def corpus_schedule_for(cfg: Config, datas: dict[str, CorpusData]) -> RoundRobinSchedule | TemperatureSchedule:
    """The corpus schedule of a multi-corpus run (``train.corpus_sampling``), as every rank builds it: from the
    data seed and the corpora's training sizes in their shard indexes, so ranks agree without communicating."""
    t = cfg.train
    return corpus_schedule(t.corpus_sampling, list(datas), [d.train_size for d in datas.values()], cfg.data.seed,
                           temperature=t.sampling_temperature, shuffle=t.shuffle_rounds)


def pin_memory(data: DataConfig, device: torch.device | str) -> bool:
    """``data.pin_memory`` for a worker training on ``device`` (``auto``: on for CUDA, where it makes the step's
    host-to-device copies asynchronous; pinning is useless work on a CPU)."""
    if data.pin_memory == "auto":
        return torch.device(device).type == "cuda"
    return bool(data.pin_memory)


def train_loader(cd: CorpusData, data: DataConfig, rank: int, world: int, position: Position | None = None,
                 device: torch.device | str = "cpu") -> CorpusLoader:
    """Endless, resumable training batches of one corpus for this rank, from ``position`` (default: the start), with
    ``data.num_workers`` loader processes prefetching ``data.prefetch_factor`` batches each, pinned for ``device``
    (:func:`pin_memory`)."""
    pos = position or Position()
    stream = CorpusStream(cd.shards["train"], cd.targets, field=cd.field, train=True, batch_size=data.batch_size,
                          max_seconds=data.max_seconds, window=data.shuffle_window,
                          epoch_mode=data.epoch_mode if cd.spec.epoch_mode == "inherit" else cd.spec.epoch_mode,
                          seed=data.seed, rank=rank, world=world, include=cd.include["train"],
                          start_epoch=pos.epoch, start_batch=pos.batch, bad_samples=data.bad_samples,
                          policy=UrlPolicy.from_config(data))
    return CorpusLoader(stream, num_workers=data.num_workers, pin_memory=pin_memory(data, device),
                        prefetch_factor=data.prefetch_factor)


def eval_stream(cd: CorpusData, split: str, data: DataConfig, rank: int, world: int) -> CorpusStream | None:
    """One ordered pass over ``split`` of this corpus for this rank (None when the split is not configured)."""
    if split not in cd.shards:
        return None
    return CorpusStream(cd.shards[split], cd.targets, field=cd.field, train=False, batch_size=data.batch_size,
                        eval_max_seconds=data.eval_max_seconds, seed=data.seed, rank=rank, world=world,
                        include=cd.include[split], bad_samples=data.bad_samples, policy=UrlPolicy.from_config(data))
