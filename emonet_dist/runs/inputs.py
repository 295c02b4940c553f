"""What data a run used: ``partitions.json`` (the exact speaker-independent split) and the corpora as MLflow
dataset inputs.

Per corpus, ``partitions.json`` holds ``{"fingerprint", "index_sha256", "source", "partitions": {partition:
{"utterances", "speakers"}}}``. In MLflow each corpus is a dataset input named after the corpus whose digest is
the sha256 of its shard index file (MLflow keeps at most 36 characters of a digest: the first 32 hex digits; the
whole sha256 is in the dataset's profile and the input tag ``emonet.index_sha256``). The index lists every
shard's own sha256, so equal digests mean the runs read the same audio, labels and split.
"""

from __future__ import annotations

import json
import re

from ..config import Config
from ..corpora.manifest import Utterance

DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters
INDEX_SHA_TAG = "emonet.index_sha256"


def read_partitions(cfg: Config) -> dict:
    """Which speakers (and how many utterances) each corpus's partitions hold, from the shard indexes (a missing
    corpus fails here, before a run is created)."""
    from ..data.remote import UrlPolicy
    from ..data.shards import load_index_with_digest

    out = {}
    for spec in cfg.data.corpora:
        index, sha, url = load_index_with_digest(cfg.data.shards, spec.name, UrlPolicy.from_config(cfg.data))
        out[spec.name] = {"fingerprint": index.get("fingerprint"), "index_sha256": sha, "source": url,
                          "partitions": {
                              part: {"utterances": info["utterances"], "speakers": info.get("speaker_ids",
                                                                                           info["speakers"])}
                              for part, info in index["partitions"].items()}}
    return out


def manifest_partitions(corpus: str, rows: list[Utterance], manifest_sha256: str | None, source: str) -> dict:
    """The ``read_partitions`` entry of a corpus read from its manifest (runs that do not read shards)."""
    parts = sorted({r.partition for r in rows})
    return {"fingerprint": None, "index_sha256": manifest_sha256, "source": source, "partitions": {
        p: {"utterances": sum(r.partition == p for r in rows), "speakers": sorted({r.speaker for r in rows
                                                                                if r.partition == p})}
        for p in parts}}


def dataset_inputs(parts: dict, context: str = "train") -> list:
    """MLflow ``DatasetInput`` per corpus of ``parts`` (as :func:`read_partitions` returns it) that has a digest."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for corpus, info in parts.items():
        sha = info.get("index_sha256")
        if not sha:
            continue
        source = str(info.get("source") or "")
        if re.match(r"https?://", source):
            source_type, source_json = "http", json.dumps({"url": source})
        elif source.startswith("pipe:"):
            source_type, source_json = "pipe", json.dumps({"command": source})
        else:
            source_type, source_json = "local", json.dumps({"uri": source})
        profile = {"index_sha256": sha, "fingerprint": info.get("fingerprint"),
                   "utterances": {p: v["utterances"] for p, v in info["partitions"].items()},
                   "speakers": {p: len(v["speakers"]) if isinstance(v["speakers"], list) else v["speakers"]
                                for p, v in info["partitions"].items()}}
        dataset = Dataset(name=corpus, digest=sha[:DIGEST_CHARS], source_type=source_type, source=source_json,
                          profile=json.dumps(profile))
        out.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context),
                                               InputTag(INDEX_SHA_TAG, sha)]))
    return out
