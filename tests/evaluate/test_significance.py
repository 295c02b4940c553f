"""McNemar's test: published worked examples, agreement with scipy on random prediction pairs, id matching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from emonet_dist.errors import EmonetError
from emonet_dist.evaluate.significance import EXACT_BELOW, McNemarResult, mcnemar, mcnemar_from_counts


def test_agresti_presidential_approval_chi_square():
    """Agresti (1990), *Categorical Data Analysis*, p. 350: approval of the President in two surveys of the same
    1600 people: approve/approve 794, approve/disapprove 150, disapprove/approve 86, disapprove/disapprove 570.
    It is the example of R's ``mcnemar.test`` (stats package documentation), whose output with the default
    continuity correction is ``McNemar's chi-squared = 16.818, df = 1, p-value = 4.115e-05``.
    (b + c = 236, so the chi-square branch applies.)"""
    r = mcnemar_from_counts(150, 86, n=1600)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(16.818, abs=5e-4)  # R prints 3 decimals: half a unit of the last
    assert r.p_value == pytest.approx(4.115e-05, rel=1.3e-4)  # 4 significant digits
    assert (r.b, r.c, r.n) == (150, 86, 1600)
    # the direction does not change the two-sided test
    assert mcnemar_from_counts(86, 150).p_value == r.p_value


def test_wikipedia_drug_example_with_continuity_correction():
    """Wikipedia, "McNemar's test", first example (drug vs placebo: 101, 121, 59, 33). With Edwards' continuity
    correction the statistic is (|121 - 59| - 1)^2 / 180 = 20.672222, p = 0.000005 to 6 decimals (as worked in
    Cardillo's MATLAB ``mcnemar`` File Exchange example for the same table)."""
    r = mcnemar_from_counts(121, 59)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(20.672222, abs=5e-7)  # quoted to 6 decimals
    assert round(r.p_value, 6) == 0.000005


def test_minitab_exact_example():
    """Minitab 18 help, "Why should I use McNemar's test?": 12 participants; correct before and incorrect after 1,
    incorrect before and correct after 8; "a p-value of 0.039". Exact: 2 * P(X <= 1 | 9, 0.5) = 20/512."""
    r = mcnemar_from_counts(1, 8, n=12)
    assert r.method == "exact"
    assert r.statistic == 1
    assert round(r.p_value, 3) == 0.039
    assert r.p_value == pytest.approx(20 / 512, rel=1e-12)


def test_no_discordant_pairs():
    r = mcnemar_from_counts(0, 0, n=50)
    assert (r.p_value, r.method, r.n) == (1.0, "exact", 50)
    assert r.mark(0.05) == ""


def test_threshold_between_exact_and_chi_square():
    assert mcnemar_from_counts(10, EXACT_BELOW - 1 - 10).method == "exact"
    assert mcnemar_from_counts(10, EXACT_BELOW - 10).method == "chi2"


def test_marks():
    assert mcnemar_from_counts(0, 30).mark(0.05) == "+"
    assert mcnemar_from_counts(30, 0).mark(0.05) == "\u2212"
    assert mcnemar_from_counts(3, 5).mark(0.05) == ""
    assert mcnemar_from_counts(0, 30).mark(1e-12) == ""  # p ~ 1.2e-7 is not below this alpha


@pytest.mark.parametrize("n,agree", [(8, 0.5), (20, 0.2), (30, 0.7), (60, 0.8), (80, 0.3), (200, 0.85), (400, 0.5),
                                     (2000, 0.9)])
def test_random_pairs_agree_with_scipy(n, agree):
    """Seeded random prediction pairs: b and c counted directly, and the p-value recomputed with scipy."""
    rng = np.random.default_rng(n)
    seen = set()
    for _ in range(20):
        base = rng.random(n) < rng.uniform(0.3, 0.9)
        # the candidate copies the baseline with probability `agree`, else is right at its own rate
        cand = np.where(rng.random(n) < agree, base, rng.random(n) < rng.uniform(0.3, 0.9))
        ids = [f"u{i}" for i in range(n)]
        perm = rng.permutation(n)  # the candidate lists its rows in another order
        r = mcnemar(ids, base, [ids[i] for i in perm], cand[perm], corpus="rand")
        b, c = int((base & ~cand).sum()), int((~base & cand).sum())
        assert (r.b, r.c, r.n) == (b, c, n)
        if b + c == 0:
            assert r.p_value == 1.0
        elif b + c < 25:
            assert r.method == "exact"
            assert r.p_value == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
        else:
            stat = (abs(b - c) - 1) ** 2 / (b + c)
            assert r.method == "chi2"
            assert r.statistic == pytest.approx(stat, rel=1e-12)
            assert r.p_value == pytest.approx(chi2.sf(stat, 1), rel=1e-12)
        seen.add(r.method)
    if n < EXACT_BELOW:  # b + c <= n: only the exact test is possible
        assert seen == {"exact"}
    if n >= 400:  # ~100 discordant pairs expected
        assert "chi2" in seen


def test_both_sides_of_the_threshold_covered():
    """The random sizes above reach both tests (guards against a parametrisation that drifts to one side)."""
    rng = np.random.default_rng(0)
    methods = set()
    for n in (10, 40, 400):
        base, cand = rng.random(n) < 0.6, rng.random(n) < 0.6
        methods.add(mcnemar(range(n), base, range(n), cand).method)
    assert methods == {"exact", "chi2"}


def test_mismatched_ids_refused_with_corpus_named():
    with pytest.raises(EmonetError, match=r"corpus ravdess:.*2 ids matched, 1 only in the baseline.*1 only in the"):
        mcnemar(["a", "b", "c"], [1, 0, 1], ["a", "b", "d"], [1, 1, 1], corpus="ravdess")


def test_duplicate_ids_refused():
    with pytest.raises(EmonetError, match="more than once"):
        mcnemar(["a", "a"], [1, 0], ["a", "b"], [1, 1], corpus="x")


def test_result_is_a_plain_record():
    r = mcnemar_from_counts(4, 9, n=40)
    assert isinstance(r, McNemarResult)
    assert r.to_dict() == {"b": 4, "c": 9, "n": 40, "method": "exact", "statistic": 4.0, "p_value": r.p_value}
