"""Pooling the test predictions of a corpus's cross-validation folds: with speaker-group folds, each fold's test
set is a different group of speakers, so the folds' predictions together cover every utterance once. Pooled,
McNemar's test (:mod:`.significance`) and the bootstrap CI (:mod:`.bootstrap`) see the whole corpus (n = all its
utterances) instead of one small test speaker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EmonetError
from .predictions import Predictions
from .significance import McNemarResult, mcnemar


def pool_predictions(parts: Sequence[Predictions], what: str = "") -> Predictions:
    """One :class:`Predictions` holding the rows of every fold, in the folds' order.

    Raises:
        EmonetError: the parts are of different corpora or classes, or an utterance is in two folds' test sets
            (pooled predictions must be a partition of the corpus, or pairing and n would be wrong).
    """
    if not parts:
        raise EmonetError(f"nothing to pool{' for ' + what if what else ''}")
    first = parts[0]
    for p in parts[1:]:
        if (p.corpus, p.classes) != (first.corpus, first.classes):
            raise EmonetError(f"cannot pool {p.source or p.corpus} with {first.source or first.corpus}: corpus or "
                              f"classes differ ({p.corpus} {list(p.classes)} vs {first.corpus} {list(first.classes)})")
    ids = [i for p in parts for i in p.ids]
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for i in ids:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise EmonetError(f"corpus {first.corpus}{' (' + what + ')' if what else ''}: utterance {dup!r} is in the "
                          f"test predictions of two folds; pooled folds must cover each utterance once")
    return Predictions(first.corpus, first.classes, tuple(ids), tuple(x for p in parts for x in p.labels),
                       tuple(x for p in parts for x in p.predictions),
                       "+".join(p.source for p in parts if p.source))


def pooled_mcnemar(base_folds: Sequence[Predictions], cand_folds: Sequence[Predictions]) -> McNemarResult:
    """McNemar's test on the pooled predictions of two methods (the same seed's folds), paired by utterance id;
    n is the whole corpus. The folds need not match one to one, only the pooled utterance sets."""
    base, cand = pool_predictions(base_folds, "baseline"), pool_predictions(cand_folds, "candidate")
    return mcnemar(base.ids, base.correct, cand.ids, cand.correct, base.corpus)


def class_indices(pred: Predictions, order: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, predictions)`` as class indices ``(N,)``, rows in ``order`` of ids (default: as stored)."""
    index = {c: k for k, c in enumerate(pred.classes)}
    if order is None:
        rows: Sequence[int] = range(len(pred))
    else:
        where = {i: r for r, i in enumerate(pred.ids)}
        rows = [where[i] for i in order]
    return (np.asarray([index[pred.labels[r]] for r in rows], dtype=np.int64),
            np.asarray([index[pred.predictions[r]] for r in rows], dtype=np.int64))
