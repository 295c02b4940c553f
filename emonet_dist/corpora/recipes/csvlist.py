"""Generic list recipe: any corpus described by a CSV file.

Layout: a CSV with a header row ``path,label,speaker[,partition]`` (extra columns go to ``extra``). Relative
paths are resolved against the CSV's folder. With a ``partition`` column, ``--split auto`` keeps it (and the
speaker-leakage check still applies).

    emonet corpus prepare csv my_corpus.csv --out corpora/my_corpus --name my_corpus
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ...errors import CorpusError
from ..manifest import Found, Skipped

NAME = "csv"
LAYOUT = "a CSV file with header path,label,speaker[,partition] (paths relative to the CSV's folder)"
WALK = False
REQUIRED = ("path", "label", "speaker")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    if not root.is_file():
        raise CorpusError(f"{root} is not a file; the csv recipe expects {LAYOUT}")
    with open(root, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CorpusError(f"{root}: header {header} lacks column(s) {', '.join(missing)}; expected {LAYOUT}")
        for lineno, raw in enumerate(reader, 2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{root}:{lineno}"
            empty = [c for c in REQUIRED if not row.get(c)]
            if empty:
                yield Skipped(where, f"outside expected layout: empty {', '.join(empty)} on line {lineno}")
                continue
            path = Path(row["path"]).expanduser()
            path = path if path.is_absolute() else (root.parent / path)
            extra = {k: v for k, v in row.items() if k not in REQUIRED and k != "partition"}
            yield Found(path.resolve(), row["label"], row["speaker"], extra, partition=row.get("partition") or None)
