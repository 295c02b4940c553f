"""How the reference values in ``test_aso.py`` were made. Run it with deepsig 1.2.8 installed in a throwaway venv
(deepsig is not a dependency of emonet-dist)::

    python -m venv /tmp/ds && /tmp/ds/bin/pip install deepsig==1.2.8
    /tmp/ds/bin/python tests/evaluate/deepsig_reference.py 200000

Not collected by pytest (no ``test_`` prefix). deepsig's ``get_quantile_function`` calls ``np.sort`` once per
evaluated point (``np.vectorize``); it is swapped for a vectorised function with identical values (the script checks
this first: the same ε_min, bit for bit, at 1000 iterations), so 200,000 bootstrap iterations take a minute.
"""

import sys
import time

import deepsig.aso  # noqa: F401
import numpy as np
from deepsig import aso, multi_aso

da = sys.modules["deepsig.aso"]  # deepsig/__init__ exports the function aso under the module's name


# the scores of test_aso.py, copied (this script runs where emonet_dist and pytest need not be installed)
def cases():
    """``(name, scores_a, scores_b, num_comparisons)``, generated as the reference script generated them."""
    rs = np.random.RandomState(1234)  # README scenario 1: np.random.seed(1234); normal(0.9, 0.8, 5); normal(0, 1, 5)
    yield "readme1", rs.normal(0.9, 0.8, 5), rs.normal(0, 1, 5), 1
    rs = np.random.RandomState(1234)  # README scenario 2: three datasets, Bonferroni over 3
    a_s = [rs.normal(0.3, 0.8, 5) for _ in range(3)]
    b_s = [rs.normal(0, 1, 5) for _ in range(3)]
    for k, (a, b) in enumerate(zip(a_s, b_s)):
        yield f"readme2_{k}", a, b, 3
    rs = np.random.RandomState(1234)  # README scenario 3: 40 sample-level scores, its first two pairs, 9 comparisons
    a_s = [rs.normal(0.3, 0.8, 40) for _ in range(3)]
    b_s = [rs.normal(0, 1, 40) for _ in range(3)]
    yield "readme3_0", a_s[0], b_s[0], 9
    yield "readme3_1", a_s[0], b_s[1], 9
    rs = np.random.RandomState(7)  # UAR-like: 4 folds x 2 seeds vs 3 folds x 4 seeds, close and overlapping
    yield "uar_8v12", rs.normal(0.62, 0.03, 8), rs.normal(0.60, 0.04, 12), 1
    yield "uar_12v8", rs.normal(0.55, 0.05, 12), rs.normal(0.57, 0.02, 8), 1


def scenario4():
    """README scenario 4: three models' scores, N(0.1 / 0.15 / 0.2, 0.8), 5 seeds each."""
    rs = np.random.RandomState(1234)
    return {f"model {i + 1}": rs.normal(loc, 0.8, 5) for i, loc in enumerate(np.arange(0.1, 0.25, step=0.05))}


def fast_q(scores):
    cdf = np.sort(np.asarray(scores, dtype=float))
    n = len(cdf)
    return lambda p: cdf[np.clip(np.ceil(n * np.asarray(p)).astype(int) - 1, 0, n - 1)]


def main(its: int) -> None:
    a, b = next(cases())[1:3]
    slow = aso(a, b, seed=1234, show_progress=False)
    da.get_quantile_function = fast_q
    fast = aso(a, b, seed=1234, show_progress=False)
    print("vectorised quantile function changes nothing:", slow == fast)
    for name, a, b, m in cases():
        t0 = time.time()
        vr = da.compute_violation_ratio(a, b, dt=0.005)
        e1000 = aso(a, b, num_comparisons=m, seed=1234, show_progress=False)
        e = aso(a, b, num_comparisons=m, num_bootstrap_iterations=its, seed=1234, show_progress=False)
        print(f"{name}: violation ratio {vr!r}, eps_min(1000) {float(e1000)!r}, eps_min({its}) {float(e)!r} "
              f"({time.time() - t0:.0f} s)")
    for n in (1000, its):
        print(f"multi_aso({n}):", multi_aso(scenario4(), confidence_level=0.95, seed=1234, num_bootstrap_iterations=n,
                                            show_progress=False).tolist())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
