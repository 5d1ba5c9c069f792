"""Bootstrap intervals, in one place for metrics (accuracies, section scores), scaling (worth-N)
and metacritique (Meta-P/R/F1). Percentile intervals are read from actual replicate values
(numpy's "inverted_cdf"), so a replicate of inf stays inf instead of turning the bound into NaN."""
from __future__ import annotations

import math

import numpy as np


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of replicate values (NaN replicates dropped; all
    NaN gives (nan, nan)); inf is kept."""
    check_level(level)
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(v, [alpha, 1 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def mean_with_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """The mean of the finite values with a percentile bootstrap CI (scipy.stats.bootstrap):
    {mean, lo, hi, n}, NaN when there are none and lo = hi = mean when all values are equal."""
    from scipy import stats

    check_level(level)
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    mean = float(x.mean())
    if np.ptp(x) == 0:
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    res = stats.bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                          random_state=np.random.default_rng(seed))
    return {"mean": mean, "lo": float(res.confidence_interval.low), "hi": float(res.confidence_interval.high), "n": n}


def bootstrap_accuracies(k: int, n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot bootstrap accuracies of a 0/1 array with k ones among n.

    Resampling n items with replacement from such an array draws each item as a one with
    probability k/n, so the count of ones is Binomial(n, k/n): drawing that count directly is the
    same bootstrap as resampling the pairs, without the n_boot x n index matrix."""
    return rng.binomial(n, k / n, size=n_boot) / n
