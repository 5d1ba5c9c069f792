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
    """n_boot bootstrap accuracies of a 0/1 array with k ones among n: the count of ones in a
    resample is Binomial(n, k/n), so drawing it is the same bootstrap without an index matrix."""
    return rng.binomial(n, k / n, size=n_boot) / n


# ---------------------------------------------------------------- arms over seeds, rates and pairs

RULES = ("shared", "per_arm")  # how a study picks one learning rate from its grid (see arm_effects)


def _multinomial_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_boot): how often each of n items is drawn in each of n_boot resamples of n."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T.astype(np.float64)


def _select(val: np.ndarray, rule) -> np.ndarray:
    """The rate index each arm uses, from validation accuracies val (arms, ..., rates): an int is a
    fixed rate; "per_arm" takes each arm's best; "shared" the best of the mean over arms, for all."""
    if isinstance(rule, (int, np.integer)):
        return np.full(val.shape[:-1], int(rule))
    if rule == "per_arm":
        return val.argmax(axis=-1)
    if rule == "shared":
        return np.broadcast_to(val.mean(axis=0).argmax(axis=-1), val.shape[:-1])
    raise ValueError(f"learning-rate rule {rule!r}: use a rate index or one of {', '.join(RULES)}")


def arm_effects(test: np.ndarray, weights: np.ndarray, strata: np.ndarray, val: np.ndarray | None = None,
                baseline: int = 0, rule="shared", n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The change of every arm against `baseline` in a weighted accuracy, with a hierarchical
    bootstrap over training seeds, evaluation pairs (within strata) and validation pairs (the rate
    is chosen again in every replicate), each draw shared by all arms.

    test: 0/1 per arm, seed, rate and evaluation pair (A, S, L, n); the metric is sum_k weights[k] *
    mean(test over the pairs of stratum k), strata[i] = k of pair i. val: validation outcomes
    (A, S, L, m), unless `rule` is a rate index; else "per_arm" or "shared" (_select).
    Returns, per arm but the baseline, the point change, its interval, a two-sided bootstrap p and
    the rate index used."""
    check_level(level)
    test = np.asarray(test, dtype=np.float64)
    A, S, L, n = test.shape
    strata = np.asarray(strata)
    weights = np.asarray(weights, dtype=np.float64)
    if not isinstance(rule, (int, np.integer)):
        if val is None:
            raise ValueError(f"rule {rule!r} chooses on validation: give val")
    val = np.zeros((A, S, L, 1)) if val is None else np.asarray(val, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # per-pair coefficients of the metric; a resample of stratum k draws n_k of its pairs
    counts = np.bincount(strata, minlength=len(weights))
    coef = weights[strata] / counts[strata]
    draws = np.zeros((n, n_boot))
    for k in range(len(weights)):
        idx = np.flatnonzero(strata == k)
        if idx.size:
            draws[idx] = _multinomial_weights(idx.size, n_boot, rng)
    metric = np.einsum("aslp,p,pb->asbl", test, coef, draws, optimize=True)  # (A, S, B, L)
    m = val.shape[-1]
    val_draws = _multinomial_weights(m, n_boot, rng) / m
    val_acc = np.einsum("aslp,pb->asbl", val, val_draws, optimize=True)
    seeds = rng.integers(0, S, size=(n_boot, S))  # (B, S)

    def over_seeds(x):  # (A, S, B, L) -> (A, B, L): the mean over each replicate's seeds
        x = x.transpose(0, 2, 1, 3)  # (A, B, S, L)
        return np.take_along_axis(x, seeds[None, :, :, None], axis=2).mean(axis=2)

    boot_m, boot_v = over_seeds(metric), over_seeds(val_acc)
    pick = _select(boot_v, rule)  # (A, B)
    chosen = np.take_along_axis(boot_m, pick[..., None], axis=-1)[..., 0]  # (A, B)
    boot = chosen - chosen[baseline]
    point_m = np.einsum("aslp,p->asl", test, coef).mean(axis=1)  # (A, L)
    point_v = val.mean(axis=(1, 3))
    point_pick = _select(point_v, rule)
    point = np.take_along_axis(point_m, point_pick[:, None], axis=1)[:, 0]
    delta = point - point[baseline]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=1, method="inverted_cdf")
    p = np.minimum(1.0, 2 * np.minimum((boot <= 0).mean(axis=1), (boot >= 0).mean(axis=1)))
    keep = [a for a in range(A) if a != baseline]
    return {"delta": delta[keep], "lo": lo[keep], "hi": hi[keep], "p": p[keep], "rates": point_pick[keep],
            "baseline_rate": int(point_pick[baseline])}
