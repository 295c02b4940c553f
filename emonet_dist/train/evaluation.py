"""Distributed evaluation: every rank scores its slice of a split, rank results are gathered, all ranks get
the same predictions and scores."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..data.loader import device_batch, eval_batches
from ..data.stream import CorpusStream
from ..metrics import scores
from .distributed import world


@torch.no_grad()
def predict(model, stream: CorpusStream, corpus: str, device, num_workers: int = 0) -> dict:
    """Posteriors for every utterance of ``stream`` (all ranks' slices, in index order).

    Returns ``{"ids": [...], "targets": (N,), "labels": [...], "probs": (N, C)}``.
    """
    was_training = model.training
    model.eval()
    ids, targets, labels, probs = [], [], [], []
    for batch in eval_batches(stream, num_workers=num_workers):
        b = device_batch(batch, device)
        logits = model(b["waves"], b["lengths"], corpus)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        ids += batch["ids"]
        labels += batch["labels"]
        targets.append(batch["targets"].numpy())
    model.train(was_training)
    local = {"ids": ids, "labels": labels,
             "targets": np.concatenate(targets) if targets else np.zeros(0, np.int64),
             "probs": np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)}
    _, size = world()
    if size == 1:
        return local
    parts: list = [None] * size
    dist.all_gather_object(parts, local)  # ranks hold contiguous slices in rank order
    width = max(p["probs"].shape[1] for p in parts if len(p["ids"]))
    return {"ids": [i for p in parts for i in p["ids"]], "labels": [x for p in parts for x in p["labels"]],
            "targets": np.concatenate([p["targets"] for p in parts]),
            "probs": np.concatenate([p["probs"].reshape(-1, width) for p in parts])}


def score(pred: dict, num_classes: int) -> dict:
    return scores(pred["targets"], pred["probs"].argmax(1) if len(pred["ids"]) else [], num_classes)
