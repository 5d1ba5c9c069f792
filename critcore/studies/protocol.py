"""The learning-rate protocol of the reward-model studies, and what an effect is worth. Every arm
(critic) trains at every rate of one grid (`lr_sweep`) and every seed; its effect against
No-Critiques is reported at every rate and at the rate a rule picks on validation ("shared" or
"per_arm"), with a hierarchical bootstrap (critcore.stats.arm_effects) and one word for how far the
conclusion survives the protocol (`robustness`):

- robust: the interval excludes 0 and the change has the same sign at every rate and every seed,
  with at least two of each;
- untested over seeds / over lr / over seeds and lr: as robust, but the grid has one seed or one
  rate, so the sign was never put to that test (a single run is not called robust);
- depends on lr: some rate's interval excludes 0, but the sign changes across the grid;
- noise: neither (no interval excludes 0, or a seed disagrees).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..metrics import correct, mcnemar_exact, section_scores, suite_counts
from ..report import eval_names
from ..rms import VALIDATION_SET
from ..stats import arm_effects

WORDS = ("robust", "untested over seeds", "untested over lr", "untested over seeds and lr", "depends on lr", "noise")


@dataclass
class Grid:
    """Correctness of every arm x seed x rate on the same pairs, and the metric's weights."""

    arms: list[str]  # the baseline first
    seeds: list
    rates: list[float]
    test: np.ndarray  # (arms, seeds, rates, pairs)
    val: np.ndarray | None  # (arms, seeds, rates, validation pairs)
    weights: np.ndarray
    strata: np.ndarray
    dirs: dict  # (arm, seed, rate) -> RM folder


def _frame(rm_dir: str, name: str) -> pd.DataFrame | None:
    path = Path(rm_dir) / "eval" / f"{name}_scores.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, usecols=["id", "subset", "tie", "score_chosen", "score_rejected"], dtype={"id": str})
    df["correct"] = correct(df).astype(float)
    return df.set_index("id")


def score_weights(subsets: list[str], scored: dict[str, int], sections: dict, weighting: str = "suite") -> np.ndarray:
    """The coefficient of each subset's accuracy in the Score (metrics.section_scores is linear in
    them): the suite's counts weigh the subsets ("suite"), or the pairs scored ("equal": a sample of
    50 per subset weighs them about equally, as critcore did before 2026-12-01)."""
    counts = suite_counts(sections, scored) if weighting == "suite" else dict(scored)
    eye = np.eye(len(subsets))
    return np.asarray(section_scores({s: eye[i] for i, s in enumerate(subsets)}, counts, sections)["score"])


def grid(results: list[dict], baseline: str, metric: str = "Score", sections: dict | None = None,
         weighting: str = "suite", arms: list[str] | None = None, seeds=None, rates=None) -> Grid | None:
    """The Grid of `results` (rows of train_rm: critic, seed, lr) for `metric` ("Score": the
    section-scored set, weighted as `weighting`; "PandaLM": the PandaLM set, annotator ties
    dropped). Only the seeds and rates every arm has are kept (an interrupted run tabulates what
    is complete); None when the baseline or the metric's set is missing."""
    cells = {(r["row"]["critic"], r["row"].get("seed"), r["row"].get("lr")): r["dir"] for r in results}
    arms = arms or list(dict.fromkeys([baseline, *(c for c, _, _ in cells)]))
    if baseline not in {c for c, _, _ in cells} or arms[0] != baseline:
        return None
    has = lambda a, s, lr: (a, s, lr) in cells  # noqa: E731
    seeds = [s for s in (seeds or sorted({s for _, s, _ in cells}, key=lambda s: s or 0))
             if all(any(has(a, s, lr) for _, _, lr in cells) for a in arms)]
    rates = [lr for lr in (rates or sorted({lr for _, _, lr in cells}, key=lambda x: x or 0))
             if all(has(a, s, lr) for a in arms for s in seeds)]
    if not seeds or not rates:
        return None
    summary = next(r["summary"] for r in results if r["row"]["critic"] == baseline)
    rb, pl = eval_names(summary)
    name = rb if metric == "Score" else pl
    if name is None or (metric == "Score" and not sections):
        return None
    frames = {(a, s, lr): _frame(cells[(a, s, lr)], name) for a in arms for s in seeds for lr in rates}
    for key, f in frames.items():  # a run folder copied without its per-pair scores, say
        if f is None:
            raise DataError(str(Path(cells[key]) / "eval" / f"{name}_scores.csv"), None,
                            f"missing, so the {metric} effects cannot be computed (the RM's per-pair scores; evaluate it again)")
    ref = frames[(baseline, seeds[0], rates[0])]
    keep = ~ref["tie"].astype(bool)
    if metric == "Score":
        listed = {s for members in sections.values() for s in members}
        keep &= ref["subset"].isin(listed)
    ids = ref.index[keep]
    for key, f in frames.items():
        if not ids.isin(f.index).all():
            raise ValueError(f"{cells[key]}: not scored on the same {name} pairs as {cells[(baseline, seeds[0], rates[0])]}")
    test = np.array([[[frames[(a, s, lr)].loc[ids, "correct"].to_numpy() for lr in rates] for s in seeds] for a in arms])
    if metric == "Score":
        subsets = sorted(ref.loc[ids, "subset"].unique())
        scored = ref.loc[ids, "subset"].value_counts().to_dict()
        weights = score_weights(subsets, scored, sections, weighting)
        strata = ref.loc[ids, "subset"].map({s: i for i, s in enumerate(subsets)}).to_numpy()
    else:
        weights, strata = np.ones(1), np.zeros(len(ids), dtype=int)
    vals = {k: _frame(cells[k], VALIDATION_SET) for k in frames}
    val = None
    if all(v is not None for v in vals.values()):
        vids = vals[(baseline, seeds[0], rates[0])].index
        val = np.array([[[vals[(a, s, lr)].loc[vids, "correct"].to_numpy() for lr in rates] for s in seeds]
                        for a in arms])
    return Grid(arms, seeds, rates, test, val, weights, strata, {k: cells[k] for k in frames})


def point_metrics(g: Grid) -> np.ndarray:
    """(arms, seeds, rates): the metric of every RM on all its pairs, in points."""
    coef = g.weights[g.strata] / np.bincount(g.strata)[g.strata]
    return 100 * np.einsum("aslp,p->asl", g.test, coef)


def robustness(cells: np.ndarray, per_rate: list[dict], headline: dict) -> tuple[str, str]:
    """The word for one arm's effect (module docstring) and why. cells: (seeds, rates) point
    changes; per_rate: {delta, lo, hi} at each rate; headline: the selected comparison."""
    excludes = lambda e: e["lo"] > 0 or e["hi"] < 0  # noqa: E731
    sign = np.sign(headline["delta"])
    if excludes(headline) and sign != 0 and (np.sign(cells) == sign).all():
        untried = [what for what, n in zip(("seeds", "lr"), cells.shape) if n < 2]
        if untried:
            one = " and ".join(f"1 {'seed' if w == 'seeds' else 'rate'}" for w in untried)
            return f"untested over {' and '.join(untried)}", f"interval excludes 0, but the grid has {one}"
        return "robust", "same sign at every rate and seed; interval excludes 0"
    rate_signs = {np.sign(e["delta"]) for e in per_rate} - {0}
    if len(rate_signs) > 1 and any(excludes(e) for e in per_rate):
        ups = [e["rate"] for e in per_rate if e["delta"] > 0]
        downs = [e["rate"] for e in per_rate if e["delta"] < 0]
        return "depends on lr", f"up at lr {', '.join(f'{x:g}' for x in ups)}; down at {', '.join(f'{x:g}' for x in downs)}"
    if any(excludes(e) for e in [*per_rate, headline]):
        if (np.sign(cells) != np.sign(cells[0])).any():  # at one rate, seeds differ in sign
            return "noise", "a seed disagrees in sign"
        if excludes(headline):
            return "noise", "a rate or seed shows no change or the other sign than the selected comparison"
        only = [f"{e['rate']:g}" for e in per_rate if excludes(e)]
        return "noise", f"the selected comparison's interval includes 0; only lr {', '.join(only)} excludes it"
    return "noise", "no interval excludes 0"


def effects(g: Grid, rules=("shared", "per_arm"), n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per arm and comparison ("lr X" for each rate, "best on validation, <rule>" for each
    rule when the grid has validation scores): change in points, 95% interval, bootstrap p,
    the rates used and the per-seed McNemar p-values (secondary: pairs are their only noise)."""
    rows = []
    comparisons = [(f"lr {lr:g}", i) for i, lr in enumerate(g.rates)]
    if g.val is not None and len(g.rates) > 1:
        comparisons += [(f"best on validation, {rule.replace('_', ' ')}", rule) for rule in rules]
    for label, rule in comparisons:
        e = arm_effects(g.test, g.weights, g.strata, g.val, 0, rule, n_boot=n_boot, seed=seed)
        for k, arm in enumerate(g.arms[1:]):
            ra, rb = int(e["rates"][k]), int(e["baseline_rate"])
            rows.append({"critic": arm, "comparison": label, "rule": rule if isinstance(rule, str) else "fixed",
                         "lr": g.rates[ra], "lr No-Critiques": g.rates[rb],
                         "change": round(100 * float(e["delta"][k]), 2), "lo": round(100 * float(e["lo"][k]), 2),
                         "hi": round(100 * float(e["hi"][k]), 2), "p": float(e["p"][k]),
                         "McNemar p per seed": " / ".join(
                             f"{mcnemar_exact(g.test[0, s, rb], g.test[k + 1, s, ra])['p_value']:.2g}"
                             for s in range(len(g.seeds)))})
    return rows


def effects_table(results: list[dict], baseline: str, sections: dict | None, rule: str = "shared",
                  group: dict | None = None, n_boot: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects, verdicts) of one group of RMs (one backbone, or one size of RQ2): `effects` has a
    row per critic, metric (Score, PandaLM) and comparison; `verdicts` a row per critic: the
    headline change (the rate `rule` picks), its robustness word and why, for Score and PandaLM,
    and whether the suite and PandaLM agree in sign."""
    rows, verdicts = [], {}
    for metric in ("Score", "PandaLM"):
        g = grid(results, baseline, metric, sections)
        if g is None:
            continue
        rows_m = [{**(group or {}), "metric": metric, **r} for r in effects(g, n_boot=n_boot, seed=seed)]
        rows += rows_m
        m = point_metrics(g)
        cells = m[1:] - m[0]  # (arms - 1, seeds, rates): each arm's change at the same seed and rate
        for k, arm in enumerate(g.arms[1:]):
            mine = [r for r in rows_m if r["critic"] == arm]
            per_rate = [{"delta": r["change"], "lo": r["lo"], "hi": r["hi"], "rate": r["lr"]} for r in mine
                        if r["rule"] == "fixed"]
            head = next((r for r in mine if r["rule"] == rule), None) or mine[0]
            word, why = robustness(cells[k], per_rate, {"delta": head["change"], "lo": head["lo"], "hi": head["hi"]})
            v = verdicts.setdefault(arm, {**(group or {}), "critic": arm, "seeds": len(g.seeds),
                                          "rates": ", ".join(f"{x:g}" for x in g.rates)})
            v.update({f"{metric} selection": head["comparison"], f"{metric} lr": head["lr"],
                      f"{metric} change": head["change"], f"{metric} lo": head["lo"], f"{metric} hi": head["hi"],
                      f"{metric} p": head["p"], f"{metric} robustness": word, f"{metric} why": why,
                      f"{metric} change by lr": ", ".join(f"{e['delta']:+.1f}" for e in per_rate)})
    for v in verdicts.values():
        if "Score change" in v and "PandaLM change" in v:
            same = np.sign(v["Score change"]) == np.sign(v["PandaLM change"])
            v["suite vs PandaLM"] = "agree" if same else "disagree"
    return pd.DataFrame(rows), pd.DataFrame(list(verdicts.values()))


def sentence(v: dict, metric: str = "Score") -> str:
    """One line a notebook prints for a verdict row."""
    return (f"{v.get('backbone', '')} {v['critic']}: {metric} {v[f'{metric} change']:+.1f} points "
            f"[{v[f'{metric} lo']:+.1f}, {v[f'{metric} hi']:+.1f}] ({v[f'{metric} selection']}, "
            f"lr {v[f'{metric} lr']:g}; by lr {v[f'{metric} change by lr']}): {v[f'{metric} robustness'].upper()} "
            f"({v[f'{metric} why']})").strip()


def protocol_effect(results: list[dict], baseline: str, arm: str, sections: dict, weighting: str = "suite",
                    seeds=None, rate=None, rule=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """One comparison under one protocol (for the ablation that reconciles two tables): `arm`
    against `baseline` on the Score weighted as `weighting`, over `seeds`, at a fixed `rate` or
    with a `rule` choosing on validation. {change, lo, hi, p, lr, lr No-Critiques} in points."""
    g = grid(results, baseline, "Score", sections, weighting, arms=[baseline, arm], seeds=seeds,
             rates=None if rate is None else [rate])
    if g is None:
        return {}
    choose = 0 if rule is None or rate is not None else rule  # a fixed rate chooses nothing (no validation needed)
    e = arm_effects(g.test, g.weights, g.strata, g.val, 0, choose, n_boot=n_boot, seed=seed)
    return {"change": round(100 * float(e["delta"][0]), 2), "lo": round(100 * float(e["lo"][0]), 2),
            "hi": round(100 * float(e["hi"][0]), 2), "p": float(e["p"][0]), "lr": g.rates[int(e["rates"][0])],
            "lr No-Critiques": g.rates[int(e["baseline_rate"])], "seeds": len(g.seeds)}


def validation_size(g: Grid, power: float = 0.8, level: float = 0.95) -> dict:
    """How many validation pairs would tell the grid's two best rates apart (for the baseline arm,
    averaged over seeds), by a paired normal approximation: n = (z_a + z_b)^2 * q / d^2, with d the
    difference in accuracy and q the share of discordant pairs, both as measured on validation."""
    from scipy.stats import norm

    if g.val is None or len(g.rates) < 2:
        return {}
    acc = g.val[0].mean(axis=(0, 2))  # per rate
    best, second = np.argsort(acc)[::-1][:2]
    a, b = g.val[0][:, best], g.val[0][:, second]
    d = float(acc[best] - acc[second])
    q = float((a != b).mean())
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    need = float("inf") if d == 0 else int(np.ceil(z ** 2 * q / d ** 2))
    return {"best": g.rates[best], "second": g.rates[second], "difference": round(100 * d, 2),
            "discordant": round(q, 3), "validation pairs": g.val.shape[-1], "needed": need}


def selected(results: list[dict], rule: str = "shared") -> list[dict]:
    """The RMs at the rate `rule` picks on validation, per backbone (and size in RQ2): the best
    validation accuracy averaged over seeds (and arms, for "shared"); every RM without a choice."""
    def val(r):
        return ((r["summary"].get(VALIDATION_SET) or {}).get("overall") or {}).get("acc")

    groups: dict = {}
    for r in results:
        row = r["row"]
        key = (row.get("backbone"), row.get("size")) + ((row["critic"],) if rule == "per_arm" else ())
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        rates = sorted({r["row"].get("lr") for r in rs}, key=lambda x: x or 0)
        if len(rates) < 2 or any(val(r) is None for r in rs):
            out += rs
            continue
        mean = {lr: np.mean([val(r) for r in rs if r["row"].get("lr") == lr]) for lr in rates}
        best = max(rates, key=lambda lr: (mean[lr], -rates.index(lr)))  # a tie goes to the lower rate
        out += [r for r in rs if r["row"].get("lr") == best]
    return out


def protocol_record(results: list[dict], baseline: str, rule: str, sections: dict | None) -> dict:
    """What run.json says of a group's learning-rate protocol: the grid, the rule, the rate it
    picked for each arm, the validation pairs it picked on, and how many it would take to tell the
    two best rates apart (validation_size)."""
    g = grid(results, baseline, "Score", sections)
    return {"grid": sorted({r["row"].get("lr") for r in results}, key=lambda x: x or 0), "rule": rule,
            "picked": {r["row"]["critic"]: r["row"].get("lr") for r in selected(results, rule)},
            "validation_pairs": None if g is None or g.val is None else int(g.val.shape[-1]),
            "validation_size": validation_size(g) if g is not None else {}}
