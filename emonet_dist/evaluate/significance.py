"""McNemar's test on paired predictions: does a candidate model make a different proportion of errors than the
baseline on the same test utterances? (Gerczuk et al. 2021, Table 4, after McNemar 1947.)

Only the discordant utterances carry information: ``b`` = baseline right and candidate wrong, ``c`` = baseline
wrong and candidate right. Under H0 (equal error rates) each discordant utterance is equally likely to fall
either way, so ``min(b, c) ~ Binomial(b + c, 0.5)``.

* ``b + c < 25``: the exact two-sided binomial test (``scipy.stats.binomtest``). The chi-square approximation
  is poor with few discordant pairs, and the exact test costs nothing at that size.
* otherwise: ``(|b - c| - 1)^2 / (b + c)`` (Edwards' continuity correction) against chi-square with 1 dof.
* ``b + c == 0``: the models agree on every utterance; p = 1.

The test counts correct predictions, so on an imbalanced corpus a significant "+" (more utterances right) can
come with a *lower* UAR, when the extra hits are in the majority class (the caveat under the paper's Table 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scipy.stats import binomtest, chi2

from ..errors import EmonetError

EXACT_BELOW = 25
"""Discordant-pair count below which the exact binomial test is used."""


@dataclass(frozen=True)
class McNemarResult:
    b: int
    """Utterances the baseline got right and the candidate wrong."""
    c: int
    """Utterances the baseline got wrong and the candidate right."""
    n: int
    """Utterances matched by id (all of them, concordant ones included)."""
    method: str
    """``"exact"`` (binomial) or ``"chi2"`` (continuity-corrected chi-square, 1 dof)."""
    statistic: float
    """``min(b, c)`` for the exact test; the corrected chi-square value otherwise."""
    p_value: float
    """Two-sided p-value."""

    @property
    def better(self) -> bool:
        """The candidate is right more often than the baseline (c > b)."""
        return self.c > self.b

    def mark(self, alpha: float) -> str:
        """``"+"`` significant improvement, ``"−"`` significant decrease, ``""`` otherwise."""
        if self.p_value >= alpha or self.b == self.c:
            return ""
        return "+" if self.better else "\u2212"

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_from_counts(b: int, c: int, n: int | None = None) -> McNemarResult:
    """McNemar's test from the discordant counts; ``n`` (matched utterances) defaults to ``b + c``."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c if n is None else int(n)
    d = b + c
    if d == 0:  # binomtest refuses n=0; identical predictions are the clearest "no difference"
        return McNemarResult(b, c, n, "exact", 0.0, 1.0)
    if d < EXACT_BELOW:
        k = min(b, c)
        # min(b, c) and two-sided: the binomial(d, 0.5) is symmetric, so this equals the test on b itself
        return McNemarResult(b, c, n, "exact", float(k), float(binomtest(k, d, 0.5, alternative="two-sided").pvalue))
    stat = (abs(b - c) - 1) ** 2 / d
    return McNemarResult(b, c, n, "chi2", float(stat), float(chi2.sf(stat, 1)))


def mcnemar(ids_base, correct_base, ids_cand, correct_cand, corpus: str = "?") -> McNemarResult:
    """McNemar's test on two prediction sets matched by utterance id.

    Args:
        ids_base, ids_cand: utterance ids, one per prediction (length N_base, N_cand).
        correct_base, correct_cand: whether each prediction is right (bools, same lengths as the ids).
        corpus: named in errors.
    Raises:
        EmonetError: the id sets differ or hold duplicates (the two models were not tested on the same
            utterances, so their errors cannot be paired).
    """
    base = _by_id(ids_base, correct_base, corpus, "baseline")
    cand = _by_id(ids_cand, correct_cand, corpus, "candidate")
    check_same_ids(base.keys(), cand.keys(), corpus)
    b = sum(1 for k, ok in base.items() if ok and not cand[k])
    c = sum(1 for k, ok in base.items() if not ok and cand[k])
    return mcnemar_from_counts(b, c, len(base))


def check_same_ids(base_ids, cand_ids, corpus: str) -> int:
    """Refuse two prediction sets that do not cover the same utterances; returns the number matched."""
    base_ids, cand_ids = set(base_ids), set(cand_ids)
    if base_ids != cand_ids:
        only_b, only_c = sorted(base_ids - cand_ids), sorted(cand_ids - base_ids)
        raise EmonetError(
            f"corpus {corpus}: the baseline and candidate predictions cover different utterances "
            f"({len(base_ids & cand_ids)} ids matched, {len(only_b)} only in the baseline, e.g. {only_b[:3]}, "
            f"{len(only_c)} only in the candidate, e.g. {only_c[:3]}); McNemar's test needs the same test set "
            "for both runs: compare runs prepared from the same partitions")
    return len(base_ids)


def _by_id(ids, correct, corpus: str, which: str) -> dict:
    ids, correct = list(ids), list(correct)
    if len(ids) != len(correct):
        raise ValueError(f"{len(ids)} ids but {len(correct)} correctness flags")
    out = dict(zip(ids, (bool(x) for x in correct)))
    if len(out) != len(ids):
        raise EmonetError(f"corpus {corpus}: the {which} predictions list {len(ids) - len(out)} utterance id(s) "
                          "more than once; each test utterance must appear once")
    return out
