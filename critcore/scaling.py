"""Data-scaling math for RQ2: "one critique-augmented pair is worth N plain pairs". The
*equivalent size* of a Critique RM's accuracy at size s is the training size at which the
No-Critiques curve reaches it, interpolated linearly in log(size); the ratio is equivalent size / s,
with a bootstrap CI over the evaluation pairs. The first crossing counts (a noisy curve is not
smoothed) and nothing is extrapolated: a target above every point is `not_reached` (size inf), one at
or below the first is `at_or_below_min` (size sizes[0], an upper bound), NaN inputs `undefined`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .stats import percentile_interval

INTERPOLATED, AT_OR_BELOW_MIN, NOT_REACHED, UNDEFINED = "interpolated", "at_or_below_min", "not_reached", "undefined"


@dataclass(frozen=True)
class Equivalent:
    """Where a No-Critiques curve reaches a target accuracy."""

    size: float  # interpolated size; sizes[0] for at_or_below_min; inf for not_reached; nan if undefined
    status: str  # interpolated | at_or_below_min | not_reached | undefined


def _curve(sizes: Sequence[float], accs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sizes, dtype=float).ravel()
    a = np.asarray(accs, dtype=float).ravel()
    if s.shape != a.shape:
        raise ValueError(f"sizes and accuracies differ in length: {s.size} vs {a.size}")
    if s.size == 0:
        raise ValueError("empty curve")
    if not np.all(s > 0):
        raise ValueError(f"sizes must be positive, got {s.tolist()}")
    order = np.argsort(s, kind="stable")
    s, a = s[order], a[order]
    if np.any(np.diff(s) == 0):
        raise ValueError(f"duplicate sizes in {s.tolist()}")
    return s, a


def equivalent_size(sizes: Sequence[float], accs: Sequence[float], target: float) -> Equivalent:
    """The smallest training size at which the curve (sizes, accs, in any order) reaches `target`,
    interpolated in log(size) inside the first segment [s_i, s_i+1] with acc_i < target <= acc_i+1."""
    s, a = _curve(sizes, accs)
    if math.isnan(float(target)) or np.isnan(a).any():
        return Equivalent(math.nan, UNDEFINED)
    if target <= a[0]:
        return Equivalent(float(s[0]), AT_OR_BELOW_MIN)
    for i in range(len(s) - 1):
        a0, a1 = a[i], a[i + 1]
        if a0 < target <= a1:
            t = (target - a0) / (a1 - a0)
            size = math.exp(math.log(s[i]) + t * (math.log(s[i + 1]) - math.log(s[i])))
            # exp(log(x)) can miss x by an ulp; land exactly on a measured point when t is 0 or 1
            size = float(s[i + 1]) if t == 1 else size
            return Equivalent(size, INTERPOLATED)
    return Equivalent(math.inf, NOT_REACHED)


def worth_n(base_sizes: Sequence[float], base_accs: Sequence[float], size: float, acc: float) -> dict:
    """How many No-Critiques pairs one critique-augmented pair is worth, at training size `size`
    where the Critique RM has accuracy `acc`: {ratio = equivalent_size / size, equivalent_size, status}."""
    if not size > 0:
        raise ValueError(f"size must be positive, got {size}")
    eq = equivalent_size(base_sizes, base_accs, acc)
    return {"ratio": eq.size / size, "equivalent_size": eq.size, "status": eq.status}


# ---------------------------------------------------------------- metrics on subset accuracies

SubsetMetric = Callable[[Mapping[str, "float | np.ndarray"], Mapping[str, int]], "float | np.ndarray"]


def pooled_accuracy(subset_acc: Mapping, counts: Mapping[str, int]):
    """Accuracy over all pairs: the count-weighted mean of the subset accuracies."""
    total = sum(counts[s] for s in subset_acc)
    return sum(counts[s] * subset_acc[s] for s in subset_acc) / total


def section_score(sections: Mapping) -> SubsetMetric:
    """The RewardBench Score (mean of section scores, metrics.section_scores, subsets weighted by
    metrics.suite_counts) as a SubsetMetric."""
    from .metrics import section_scores, suite_counts

    def metric(subset_acc, counts):
        scores = section_scores(dict(subset_acc), suite_counts(sections, counts), dict(sections))
        if "score" not in scores:
            raise ValueError("no subset of the sections is present in the evaluation pairs")
        return scores["score"]

    return metric


def _strata(n: int, strata) -> dict[str, np.ndarray]:
    if strata is None:
        return {"all": np.arange(n)}
    labels = np.asarray(strata, dtype=object).ravel()
    if labels.size != n:
        raise ValueError(f"strata has {labels.size} labels for {n} pairs")
    return {str(k): np.flatnonzero(labels == k) for k in sorted(set(labels.tolist()), key=str)}


def bootstrap_metric(correct: Mapping, strata=None, metric: SubsetMetric = pooled_accuracy, n_boot: int = 1000,
                     seed: int = 0) -> tuple[dict, dict]:
    """({key: point value}, {key: n_boot replicates}) of `metric` for models scored on the SAME pairs
    (`correct`: key -> aligned per-pair outcomes, 0/1 or shares over seeds). Each replicate resamples
    the pairs within every stratum (`strata`: a label per pair; None: one), shared by all models."""
    keys = list(correct)
    if not keys:
        return {}, {}
    arrays = {k: np.asarray(correct[k], dtype=float).ravel() for k in keys}
    n = arrays[keys[0]].size
    for k, v in arrays.items():
        if v.size != n:
            raise ValueError(f"model {k!r} has {v.size} outcomes, expected {n} (models must share the pairs)")
    groups = {s: idx for s, idx in _strata(n, strata).items() if idx.size}
    counts = {s: int(idx.size) for s, idx in groups.items()}
    rng = np.random.default_rng(seed)
    draws = {s: idx[rng.integers(0, idx.size, size=(n_boot, idx.size))] for s, idx in groups.items()}
    points, reps = {}, {}
    for k, v in arrays.items():
        points[k] = float(metric({s: float(v[idx].mean()) for s, idx in groups.items()}, counts))
        reps[k] = np.asarray(metric({s: v[d].mean(axis=1) for s, d in draws.items()}, counts), dtype=float)
    return points, reps


def worth_n_table(base: Mapping[int, "np.ndarray"], critique: Mapping[int, "np.ndarray"], strata=None,
                  metric: SubsetMetric = pooled_accuracy, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> list[dict]:
    """Worth-N at every size of the Critique curve (`base`, `critique`: training size -> per-pair
    outcomes on the same pairs), one row per size, with the percentile interval of the ratios of
    bootstrap replicates that recompute both curves (inf where they do not reach)."""
    models = {("base", s): v for s, v in base.items()} | {("critique", s): v for s, v in critique.items()}
    points, reps = bootstrap_metric(models, strata, metric, n_boot, seed)
    base_sizes = sorted(base)
    rows = []
    for size in sorted(critique):
        p = worth_n(base_sizes, [points[("base", s)] for s in base_sizes], size, points[("critique", size)])
        boot = np.array([
            worth_n(base_sizes, [reps[("base", s)][b] for s in base_sizes], size, reps[("critique", size)][b])["ratio"]
            for b in range(n_boot)])
        lo, hi = percentile_interval(boot, level)
        rows.append({"size": int(size), "acc": points[("critique", size)],
                     "base_acc": points.get(("base", size), math.nan), **p, "lo": lo, "hi": hi,
                     "share_not_reached": float(np.isinf(boot).mean()) if n_boot else math.nan, "n_boot": n_boot})
    return rows
