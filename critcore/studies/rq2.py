"""RQ2 (data scaling, the paper's Figures 3 and 6): RMs on nested training subsets, curves,
worth-N and charts."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import AfterValidator, model_validator

from .. import data as data_mod
from ..params import CPUSized, Critics, DataSpec, baselines, doc, raise_all, register, repeats
from ..errors import ConfigError
from ..metrics import correct
from ..report import METRICS, SECTION_LABELS, eval_names, long_table
from ..rms import progress_bar, train_rm
from ..run import Run
from ..scaling import pooled_accuracy, section_score, worth_n_table
from ..schema import Field, Int
from ..splits import Splits, load_splits, resolve_sections
from .base import backbones_of, critics_of, is_baseline
from .budget import projection_text
from .protocol import effects_table, protocol_record
from .validation import Report, check_rm_study, train_count


def _increasing(sizes: list[int]) -> list[int]:
    if sorted(set(sizes)) != sizes:
        raise ValueError(f"must be strictly increasing, got {sizes}")
    return sizes


class RQ2(CPUSized):
    study: str = doc("study", "rq2")
    notebook: str | None = doc("notebook", "notebooks/rq2_scaling.ipynb")
    description: str = doc("description", "RQ2: RMs on nested training subsets with and without critiques; curves and worth-N.")
    backbone: str = doc("the RM backbone", "minilm")
    critics: Critics = doc("exactly one No-Critiques baseline (none), one or more critics",
                           factory=lambda: {"none": "none", "smollm2": "smollm2"})
    sizes: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1), AfterValidator(_increasing)] = doc(
        "nested subsets of train_data (one seeded permutation)", factory=lambda: [32, 64, 128, 256])
    seeds: list[Int] | None = doc("training seeds: one curve per seed (null: train.seed only)", None)
    worth_metrics: list[Literal[tuple(METRICS)]] = doc("curves to compute worth-N on (Score, a section or PandaLM)",
                                                       factory=lambda: ["Score", "PandaLM"])
    train_data: DataSpec = doc("train_data", factory=lambda: {"format": "jsonl", "path": "${data}/mix/train.jsonl"})

    @model_validator(mode="after")
    def _rq2_rules(self):
        """Curves against one baseline, and no RM trained twice."""
        raise_all((["rq2 needs exactly one No-Critiques critic ('none') and at least one critic"]
                   if len(baselines(self.critics)) != 1 or len(self.critics) < 2 else [])
                  + repeats({"seeds": self.seeds or []}))
        return self


def check_sizes(sizes: list[int], n_train: int) -> None:
    """The nested subsets must fit in the training pairs (the loaded ones: a dry run and the run check it)."""
    if max(sizes) > n_train:
        raise ConfigError(f"sizes: the largest subset {max(sizes)} exceeds the {n_train} training pairs")


def _checks(cfg: RQ2, rep: Report, check_data: bool) -> None:
    check_rm_study(cfg, rep, check_data)
    if len(cfg.sizes) < 2:
        rep.warnings.append("one size: no curve and no worth-N")
    n_train = train_count(cfg) if check_data and rep.ok else None
    if n_train is not None:
        try:
            check_sizes(cfg.sizes, n_train)
        except ConfigError as e:
            rep.errors.append(str(e))


register(RQ2, checks=_checks, projection=lambda cfg: projection_text(cfg, cfg.sizes))


def rq2_splits(run: Run) -> Splits:
    """The splits, with the training pairs cut to the largest nested subset (one seeded
    permutation: its prefixes are the subsets, the only pairs that need critiques)."""
    splits = load_splits(run)
    check_sizes(run.config.sizes, len(splits.train))
    largest = max(run.config.sizes)
    order = data_mod.nested_subsets(list(range(len(splits.train))), [largest], run.config.seed)[largest]
    return dataclasses.replace(splits, train=[splits.train[i] for i in order])


def rq2_train_all(run: Run, critiqued: Mapping) -> list[dict]:
    """One RM per critic x size (x training seed x rate of the learning-rate grid), each on the
    nested subset of that size."""
    cfg = run.config
    b = backbones_of(cfg)[0]
    jobs = [(c, n, s, lr) for c in critiqued for n in cfg.sizes for s in b.seeds for lr in (b.lr_sweep or [None])]
    results = []
    for c, n, s, lr in progress_bar(jobs, len(jobs), "reward models", run):
        sp, critic = critiqued[c]
        sub = dataclasses.replace(sp, train=sp.train[:n])
        results.append(train_rm(run, b.backbone, b.name, c, sub, critic, size=n,
                                seed=s, lr=lr, seed_in_name=b.seed_in_name))
    return results


def rq2_table(results: list[dict]):
    df = pd.DataFrame([r["row"] for r in results])
    return df.sort_values(["critic", "size", "lr"], kind="stable").reset_index(drop=True)


def rq2_effects(run: Run, results: list[dict]):
    """(effects, verdicts) per training size (critcore.studies.protocol.effects_table): every critic
    against No-Critiques at every rate of the grid and at the rate lr_selection picks."""
    cfg = run.config
    base = next(n for n, s in critics_of(cfg).items() if is_baseline(s))
    parts = [effects_table([r for r in results if r["row"]["size"] == n], base, resolve_sections(cfg.sections),
                           cfg.lr_selection, {"size": n}, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed) for n in cfg.sizes]
    run.notes["lr_protocol"] = {str(n): protocol_record([r for r in results if r["row"]["size"] == n], base,
                                                        cfg.lr_selection, resolve_sections(cfg.sections)) for n in cfg.sizes}
    return pd.concat([e for e, _ in parts], ignore_index=True), pd.concat([v for _, v in parts], ignore_index=True)


def rq2_curves(table):
    """Long format for the curves: critic, size, metric, acc, lo, hi (%), averaged over seeds."""
    if "seed" in table and table["seed"].nunique() > 1:
        numeric = [c for c in table.columns if c not in ("backbone", "critic", "critic_id", "size", "seed", "reused")
                   and table[c].dtype.kind in "fi"]
        table = table.groupby(["critic", "size"], as_index=False, sort=False)[numeric].mean()
    return long_table(table, ["critic", "size"])


def _correct_by_id(rms: list[Path], name: str):
    """Per pair, the share of the RMs (one per training seed) that score it right."""
    frames = [pd.read_csv(Path(rm) / "eval" / f"{name}_scores.csv") for rm in rms]
    df = frames[0][["id", "subset", "tie"]].copy()
    df["correct"] = sum(correct(f).astype(float) for f in frames) / len(frames)
    return df.set_index("id")


def rq2_worth_n(run: Run, results: list[dict]):
    """Worth-N (scaling.worth_n_table) of every critic against No-Critiques for each of
    `worth_metrics`, on curves averaged over the training seeds (per pair, the share right)."""
    cfg = run.config
    critics = critics_of(cfg)
    base = next(n for n, s in critics.items() if is_baseline(s))
    sections = resolve_sections(cfg.sections)
    by: dict = {}  # critic -> size -> the RMs of every seed
    for r in results:
        by.setdefault(r["row"]["critic"], {}).setdefault(r["row"]["size"], []).append(r)
    if base not in by:
        return pd.DataFrame()
    any_summary = next(iter(by[base].values()))[0]["summary"]
    rb, pl = eval_names(any_summary)
    rows = []
    inverse = {v: k for k, v in SECTION_LABELS.items()}
    for metric_name in cfg.worth_metrics or ["Score"]:
        if metric_name == "PandaLM":
            if pl is None:
                continue
            name, metric, strat_col = pl, pooled_accuracy, None
        else:
            if rb is None or not sections:
                continue
            key = inverse[metric_name]
            secs = sections if key == "score" else {key: sections[key]}
            name, metric, strat_col = rb, section_score(secs), "subset"
        frames = {(c, s): _correct_by_id([Path(r["dir"]) for r in rs], name) for c in by for s, rs in by[c].items()}
        ref = frames[(base, min(by[base]))]
        keep = ~ref["tie"].astype(bool)
        if strat_col:
            keep &= ref["subset"].isin({s for m in secs.values() for s in m})
        ids = ref.index[keep]
        strata = ref.loc[ids, strat_col].to_numpy() if strat_col else None
        arr = {k: f.loc[ids, "correct"].to_numpy(dtype=float) for k, f in frames.items()}
        for c in by:
            if c == base:
                continue
            table = worth_n_table({s: arr[(base, s)] for s in by[base]}, {s: arr[(c, s)] for s in by[c]}, strata,
                                  metric, n_boot=cfg.n_boot, seed=cfg.seed)
            for t in table:
                rows.append({"critic": c, "metric": metric_name, **t,
                             "acc": round(100 * t["acc"], 2), "base_acc": round(100 * t["base_acc"], 2)
                             if not np.isnan(t["base_acc"]) else None})
    cols = ["critic", "metric", "size", "acc", "base_acc", "equivalent_size", "ratio", "lo", "hi", "status",
            "share_not_reached", "n_boot"]
    return pd.DataFrame(rows, columns=cols)


def rq2_score_chart(curves, metric: str = "Score"):
    """`metric` against #training pairs (log scale), one line per critic, with a 95% CI band."""
    import altair as alt

    df = curves[curves["metric"] == metric]
    base = alt.Chart(df).encode(x=alt.X("size:Q", title="training pairs", scale=alt.Scale(type="log", base=2)),
                                color=alt.Color("critic:N", sort=None))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False)), y2="hi:Q")
    line = base.mark_line(point=True).encode(y="acc:Q", tooltip=["critic", "size", "acc", "lo", "hi"])
    return (band + line).properties(title=f"{metric} vs training pairs (95% CI)", width=360, height=260)


def rq2_sections_chart(curves):
    """One panel per section (and PandaLM): accuracy against #training pairs, by critic."""
    import altair as alt

    df = curves[curves["metric"] != "Score"]
    base = alt.Chart().encode(x=alt.X("size:Q", title="training pairs", scale=alt.Scale(type="log", base=2)),
                              color=alt.Color("critic:N", sort=None))
    layer = alt.layer(base.mark_area(opacity=0.15).encode(y=alt.Y("lo:Q", title="accuracy (%)", scale=alt.Scale(zero=False)), y2="hi:Q"),
                      base.mark_line(point=True).encode(y="acc:Q"), data=df)
    return layer.properties(width=220, height=180).facet(facet=alt.Facet("metric:N", sort=None), columns=3).resolve_scale(y="independent")


def rq2_worth_chart(worth):
    """Worth-N ratio against training size (log scales) with its CI; 1 = no gain. An infinite ratio
    or CI end is drawn at its bound max(size) / size (not_reached: up-triangle; at_or_below_min:
    down-triangle); the table has the exact values."""
    import altair as alt

    df = worth.copy()
    if len(df):
        cap = df["size"].max() / df["size"]
        df["shown"] = np.where(np.isfinite(df["ratio"]), df["ratio"], cap)
        df["lo_shown"] = np.minimum(np.where(np.isfinite(df["lo"]), df["lo"], cap), df["shown"])
        df["hi_shown"] = np.maximum(np.where(np.isfinite(df["hi"]), df["hi"], cap), df["shown"])
        df["bound"] = df["status"].map({"not_reached": "at least (not reached)", "at_or_below_min": "at most",
                                        "interpolated": "interpolated"}).fillna("undefined")
        df = df[np.isfinite(df["shown"])].replace([np.inf, -np.inf], None)
    base = alt.Chart().encode(x=alt.X("size:Q", title="training pairs (Critique RM)", scale=alt.Scale(type="log", base=2)),
                              color=alt.Color("critic:N", sort=None))
    y = alt.Y("shown:Q", title="one critique pair is worth N plain pairs", scale=alt.Scale(type="log"))
    layers = alt.layer(
        base.mark_line().encode(y=y),
        base.mark_point(filled=True, size=70).encode(
            y=y, shape=alt.Shape("bound:N", scale=alt.Scale(domain=["interpolated", "at least (not reached)", "at most", "undefined"],
                                                           range=["circle", "triangle-up", "triangle-down", "cross"])),
            tooltip=["critic", "metric", "size", "ratio", "lo", "hi", "status"]),
        base.mark_errorbar().encode(y=alt.Y("lo_shown:Q", title="one critique pair is worth N plain pairs"), y2="hi_shown:Q"),
        alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(1)),
        data=df,
    ).properties(width=300, height=240)
    return layers.facet(column=alt.Column("metric:N", title=None, sort=None)).properties(
        title="worth-N (95% bootstrap CI; 1 = no gain)")
