"""The quickstart and RQ1 (critic quality, the paper's Table 2 and Figure 2): training, tables,
paired tests and charts."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping, Union

import numpy as np
import pandas as pd
from pydantic import model_validator

from .. import atomic, config as config_mod, data as data_mod
from ..errors import ConfigError
from ..params import (BackboneSpec, CPUSized, Critics, DataSpec, backbone_label, baselines, doc, raise_all, register,
                      repeats)
from ..metrics import accuracy_with_ci, correct, length_bias, mcnemar_counts, mcnemar_exact
from ..probe import probe
from ..records import Pair
from ..report import disagreement_page, disagreements, eval_names, pct, slug
from ..rms import VALIDATION_SET, load_results, progress_bar, train_rm
from ..run import Run
from ..schema import Float, Int, Schema
from ..splits import Splits, resolve_sections
from ..stats import arm_effects
from .base import backbones_of, critics_of, is_baseline, simulated_p
from .budget import projection_text
from .protocol import effects_table, grid, protocol_effect, protocol_record, selected, sentence
from .validation import Report, check_rm_study, train_count


class AblationStep(Schema):
    """One protocol of an RQ1 ablation: an arm against No-Critiques on the Score."""

    label: str = doc("what this step changes", "")
    arm: str = doc("a critic name of this run or of compare_runs", "")
    weighting: Literal["suite", "equal"] = doc("subset weights: the suite's counts, or the pairs scored", "suite")
    seeds: list[Int] | None = doc("training seeds (null: every seed)", None)
    lr: Float | None = doc("a fixed rate for both arms (null: chosen on validation by rule)", None)
    rule: Literal["shared", "per_arm"] = doc("with lr null: shared or per_arm", "per_arm")


class RQ1(CPUSized):
    study: str = doc("study", "rq1")
    notebook: str | None = doc("notebook", "notebooks/rq1_critic_quality.ipynb")
    description: str = doc("description", "RQ1: one RM per backbone x critic; RewardBench sections and PandaLM, "
                                          "paired tests vs No-Critiques.")
    backbones: list[Union[str, BackboneSpec]] = doc("names, or {name, backbone, n_train, n_eval, critics, train}",
                                                    factory=lambda: ["minilm"])
    critics: Critics = doc("name -> critic spec; none is No-Critiques",
                           factory=lambda: {"none": "none", "smollm2": "smollm2"})
    seeds: list[Int] | None = doc("training seeds: one RM per seed (and rate of the grid) in every cell (null: "
                                  "train.seed only)", None)
    train_data: DataSpec = doc("train_data", factory=lambda: {
        "format": "jsonl", "path": "${data}/mix/train.jsonl", "limit": 256, "seed": 0, "stratify": None})
    probe: bool = doc("train the critique-only probe of every critic (its information)", True)
    compare_runs: list[str] = doc("other RQ1 run folders (same pairs): their simulated critics draw the "
                                  "information curve, their arms join the ablation", factory=list)
    ablation: list[AblationStep] = doc("protocols to compare, one at a time (see params/rq1_ablation.yaml)",
                                       factory=list)

    @model_validator(mode="after")
    def _rq1_rules(self):
        """Something to train in every cell, one baseline for the paired tests, no RM trained twice,
        and each backbone's own critics and training options usable."""
        specs = {backbone_label(b): b for b in self.backbones if isinstance(b, BackboneSpec)}
        lists = {"critics": self.critics, "backbones": self.backbones,
                 **{f"backbone {name}: critics": b.critics for name, b in specs.items() if b.critics is not None}}
        problems = [f"{what}: none given, so no RM would be trained" for what, given in lists.items() if not given]
        base = baselines(self.critics)
        if len(base) > 1:
            problems.append(f"critics: {', '.join(base)} are all No-Critiques; keep one (which would the paired tests "
                            "compare with?)")
        problems += [f"backbone {name}: critics {missing} are not in critics {list(self.critics)}"
                     for name, b in specs.items() if (missing := [c for c in b.critics or [] if c not in self.critics])]
        problems += repeats({"backbone names (they name the RM folders)": [backbone_label(b) for b in self.backbones],
                             "seeds": self.seeds or [],
                             **{f"backbone {name}: seeds": b.seeds or [] for name, b in specs.items()},
                             **{f"backbone {name}: lr_sweep": b.lr_sweep or [] for name, b in specs.items()}})
        for name, b in specs.items():
            try:
                self.train.replace(**b.train)
            except ConfigError as e:
                problems.append(f"backbone {name}: {e}")
        raise_all(problems)
        return self


def _checks(cfg: RQ1, rep: Report, check_data: bool) -> None:
    check_rm_study(cfg, rep, check_data)
    n_train = train_count(cfg) if check_data and rep.ok else None
    for b in backbones_of(cfg):
        if n_train is not None and b.n_train and b.n_train > n_train:
            rep.warnings.append(f"backbone {b.name}: n_train {b.n_train} > {n_train} training pairs (all are used)")


register(RQ1, checks=_checks, projection=projection_text)


def _slice(pairs: list[Pair], n: int | None, seed: int, nested: bool = False) -> list[Pair]:
    if not n or n >= len(pairs):
        return pairs
    if nested:
        order = data_mod.nested_subsets(list(range(len(pairs))), [n], seed)[n]
        return [pairs[i] for i in order]
    return data_mod.sample(pairs, n, seed, stratify=lambda p: p.subset or p.source)


def rq1_train_all(run: Run, critiqued: Mapping) -> list[dict]:
    """One RM per backbone x critic x training seed x rate of the grid, a backbone's n_train / n_eval
    slicing the data the same way for all its critics (its paired tests compare the same pairs)."""
    cfg = run.config
    jobs = [(b, c, s, lr) for b in backbones_of(cfg) for c in critiqued if b.critics is None or c in b.critics
            for s in b.seeds for lr in (b.lr_sweep or [None])]
    results = []
    for b, c, s, lr in progress_bar(jobs, len(jobs), "reward models", run):
        sp, critic = critiqued[c]
        sliced = Splits(_slice(sp.train, b.n_train, cfg.seed, nested=True), sp.validation,
                        {k: _slice(v, b.n_eval, cfg.seed) for k, v in sp.eval.items()}, sp.sections)
        results.append(train_rm(run, b.backbone, b.name, c, sliced, critic, dict(b.train),
                                seed=s, lr=lr, seed_in_name=b.seed_in_name))
    return results


def paired_tests(dir_a: str | os.PathLike, dir_b: str | os.PathLike, sections: dict | None = None) -> dict:
    """Exact McNemar tests of RM b against RM a per eval set, from the scores evaluate wrote: {b, c,
    p_value, n}, pooled over the subsets the sections list, annotator ties dropped."""
    listed = {s for m in (sections or {}).values() for s in m}
    out = {}
    for fa in sorted((Path(dir_a) / "eval").glob("*_scores.csv")):
        fb = Path(dir_b) / "eval" / fa.name
        if not fb.is_file() or fa.name == f"{VALIDATION_SET}_scores.csv":
            continue
        a, b = pd.read_csv(fa), pd.read_csv(fb)
        m = a.merge(b, on="id", suffixes=("_a", "_b"), validate="one_to_one")
        if len(m) != len(a) or len(m) != len(b):
            raise ValueError(f"{fa.name}: the two RMs were not scored on the same pairs ({len(a)} vs {len(b)}, {len(m)} shared)")
        m["tie"] = m["tie_a"].astype(bool)
        if listed and listed & set(m["subset_a"]):
            m = m[m["subset_a"].isin(listed)]
        m = m[~m["tie"]]
        ok_a = correct(m.rename(columns={"score_chosen_a": "score_chosen", "score_rejected_a": "score_rejected"}))
        ok_b = correct(m.rename(columns={"score_chosen_b": "score_chosen", "score_rejected_b": "score_rejected"}))
        out[fa.name.removesuffix("_scores.csv")] = {**mcnemar_exact(ok_a, ok_b), "n": int(len(m))}
    return out


def _config(run):
    """The typed configuration of `run`: a Run, its configuration, or a mapping of it (run.json's)."""
    if isinstance(run, Run):
        return run.config
    return config_mod.resolve(config_mod.SCHEMAS[run.get("study", "rq1")], dict(run)) if isinstance(run, Mapping) else run


def rq1_table(run, results: list[dict]):
    """Rows backbone x critic: the section scores, Score and PandaLM (%, with CIs), then against the
    backbone's No-Critiques RM the change in Score and PandaLM (points) and McNemar p-values."""
    cfg = _config(run)
    critics = critics_of(cfg)
    base_names = [n for n, s in critics.items() if is_baseline(s)]
    rows = []
    key = lambda row, critic: (row["backbone"], critic, row.get("seed"), row.get("lr"))  # noqa: E731 - same seed and rate
    by_key = {key(r["row"], r["row"]["critic"]): r for r in results}
    for r in results:
        row = dict(r["row"])
        spec = critics.get(row["critic"])
        row["critic_p"] = simulated_p(spec) if spec is not None else None
        base = next((by_key[key(row, b)] for b in base_names if key(row, b) in by_key), None)
        if base is not None and base is not r:
            for col in ("Score", "PandaLM"):
                a, b = base["row"].get(col), row.get(col)
                row[f"{col} change"] = None if a is None or b is None else round(b - a, 1)
            tests = paired_tests(base["dir"], r["dir"], resolve_sections(cfg.sections))
            rb, pl = eval_names(r["summary"])
            for name, t in tests.items():
                label = "RewardBench" if name == rb else "PandaLM" if name == pl else name
                row[f"p {label}"] = t["p_value"]
                row[f"discordant {label}"] = f"{t['b']}/{t['c']}"
        rows.append(row)
    order = [b.name for b in backbones_of(cfg)], list(critics)
    rows.sort(key=lambda x: tuple(o.index(v) if v in o else len(o) for o, v in zip(order, (x["backbone"], x["critic"])))
              + (x.get("lr") or 0, x.get("seed") or 0))
    df = pd.DataFrame(rows)
    first = ["backbone", "critic", "seed", "critic_id", "critic_p", "n_train"]
    tests = [c for c in df if c.endswith(" change")] + sorted(
        (c for c in df if c.startswith(("p ", "discordant "))),
        key=lambda c: (c.split(" ", 1)[1] != "RewardBench", c.split(" ", 1)[1] != "PandaLM", c.split(" ", 1)[1], c[0] != "p"))
    last = ["lr", "train_seconds", "reused"]
    middle = [c for c in df if c not in first + tests + last]
    return df[[c for c in first + middle + tests + last if c in df]]


def rq1_seed_table(table):
    """rq1_table over training seeds, one row per backbone x critic: for Score and PandaLM the seed
    mean, SD and mean CI, the mean change with a McNemar test pooled over seeds, and which is larger,
    the seed spread or the sampling error (the bootstrap SE, CI width / 3.92)."""
    rows = []
    keys = ["backbone", "critic"] + (["lr"] if "lr" in table and table["lr"].nunique() > 1 else [])
    for k, g in table.groupby(keys, sort=False):
        row = {**dict(zip(keys, k)), "seeds": len(g)}
        for m in ("Score", "PandaLM"):
            if m not in g or g[m].isna().all():
                continue
            sd = float(g[m].std(ddof=1)) if len(g) > 1 else 0.0
            se = float(((g[f"{m} hi"] - g[f"{m} lo"]) / 3.92).mean())
            row.update({m: round(float(g[m].mean()), 1), f"{m} seed SD": round(sd, 2),
                        f"{m} lo": round(float(g[f"{m} lo"].mean()), 1), f"{m} hi": round(float(g[f"{m} hi"].mean()), 1),
                        f"{m} bootstrap SE": round(se, 2), f"{m} larger": "seed spread" if sd > se else "sampling error"})
            if f"{m} change" in g and g[f"{m} change"].notna().any():
                label = "RewardBench" if m == "Score" else "PandaLM"
                disc = g.get(f"discordant {label}")
                row[f"{m} change"] = round(float(g[f"{m} change"].mean()), 1)
                row[f"{m} change range"] = f"{g[f'{m} change'].min():+.1f} .. {g[f'{m} change'].max():+.1f}"
                if disc is not None and disc.notna().all():
                    b_, c_ = np.array([[int(x) for x in str(d).split("/")] for d in disc]).sum(axis=0)
                    row[f"{m} pooled p"] = mcnemar_counts(int(b_), int(c_))["p_value"]
                    row[f"{m} pooled discordant"] = f"{b_}/{c_}"
        rows.append(row)
    return pd.DataFrame(rows)


def rq1_length_table(results: list[dict], n_boot: int = 1000, seed: int = 0):
    """Length bias of every RM per eval set: the reward-length Spearman correlation, and accuracy (%,
    CI) on the pairs whose rejected answer is longer and on the alpacaeval-length subset."""
    rows = []
    for r in results:
        for path in sorted((Path(r["dir"]) / "eval").glob("*_scores.csv")):
            if path.name == f"{VALIDATION_SET}_scores.csv":
                continue
            df = pd.read_csv(path)
            df = df[~df["tie"].astype(bool)]
            ok = correct(df)
            lb = length_bias(df)
            row = {"backbone": r["row"]["backbone"], "critic": r["row"]["critic"],
                   **{k: r["row"][k] for k in ("seed", "lr") if r["row"].get(k) is not None},
                   "eval": path.name.removesuffix("_scores.csv"), "n": len(df),
                   "reward-length rho": round(lb["spearman_rho"], 3), "rho p": lb["spearman_p"]}
            masks = {"rejected longer": (df["len_rejected"] > df["len_chosen"]).to_numpy(),
                     "alpacaeval-length": (df["subset"] == "alpacaeval-length").to_numpy()}
            for label, mask in masks.items():
                ci = accuracy_with_ci(ok[mask], n_boot=n_boot, seed=seed) if mask.any() else None
                row.update({label: pct(ci and ci["acc"]), f"{label} lo": pct(ci and ci["lo"]),
                            f"{label} hi": pct(ci and ci["hi"]), f"{label} n": int(mask.sum())})
            rows.append(row)
    return pd.DataFrame(rows)


def disagreement_examples(run: Run, results: list[dict], n: int = 3):
    """For every critic's RM against its backbone's No-Critiques RM, on every eval set: a page of
    the pairs they score differently, side by side with the critiques (disagree_<backbone>__<critic>
    __<set>.html, the paper's Figure 1), and the first `n` of them as a table."""
    critics = critics_of(run.config)
    results = selected(results, run.config.lr_selection)  # one rate per backbone: the one the study reports
    by_key = {(r["row"]["backbone"], r["row"]["critic"], r["row"].get("seed")): r for r in results}
    shown = []
    for r in results:
        b, c, seed = r["row"]["backbone"], r["row"]["critic"], r["row"].get("seed")
        if is_baseline(critics.get(c, "none")) or seed not in (None, min(x["row"].get("seed") or 0 for x in results)):
            continue  # one page per critic: its first seed against the baseline of that seed
        base = next((by_key[(b, k, seed)] for k, s in critics.items() if is_baseline(s) and (b, k, seed) in by_key), None)
        if base is None:
            continue
        for path in sorted((Path(r["dir"]) / "eval").glob("*_scores.csv")):
            other = Path(base["dir"]) / "eval" / path.name
            if not other.is_file() or path.name == f"{VALIDATION_SET}_scores.csv":
                continue
            a, z = pd.read_csv(other), pd.read_csv(path)
            name = path.name.removesuffix("_scores.csv")
            page = run.path(f"disagree_{b}__{c}__{name}.html")
            atomic.write_text(page, disagreement_page(a, z, "No-Critiques", c, f"{b}, {name}: No-Critiques against {c}"))
            run._record(page)
            d = disagreements(a, z, "No-Critiques", c).head(n)
            shown += [{"backbone": b, "critic": c, "eval": name, "id": x["id"], "subset": x["subset"],
                       "right": "No-Critiques" if x["verdict No-Critiques"] == "right" else c,
                       "prompt": str(x["prompt"])[:120], "chosen critique": x[f"chosen_critique {c}"],
                       "rejected critique": x[f"rejected_critique {c}"]} for x in d.to_dict(orient="records")]
    return pd.DataFrame(shown)


# ---------------------------------------------------------------- effects that survive the protocol


def rq1_effects(run, results: list[dict]):
    """(effects, verdicts) per backbone (protocol.effects_table); a Run also records the protocol in
    run.json's notes."""
    cfg = _config(run)
    base = next((n for n, s in critics_of(cfg).items() if is_baseline(s)), None)
    effects, verdicts = [], []
    for b in backbones_of(cfg):
        mine = [r for r in results if r["row"]["backbone"] == b.name]
        e, v = effects_table(mine, base, resolve_sections(cfg.sections), cfg.lr_selection, {"backbone": b.name},
                             n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        effects.append(e)
        verdicts.append(v)
        if isinstance(run, Run):
            run.notes.setdefault("lr_protocol", {})[b.name] = protocol_record(mine, base, cfg.lr_selection,
                                                                              resolve_sections(cfg.sections))
    return pd.concat(effects, ignore_index=True), pd.concat(verdicts, ignore_index=True)


def verdict_lines(verdicts) -> list[str]:
    """What a reader should take from the verdicts table: one sentence per critic and metric."""
    return [sentence(v, m) for v in verdicts.to_dict(orient="records") for m in ("Score", "PandaLM")
            if f"{m} change" in v and pd.notna(v.get(f"{m} change"))]


def rq1_probe_all(run: Run, critiqued: Mapping) -> pd.DataFrame:
    """The critique-only probe (critcore.probe) of every critic: trained on the first backbone's
    training pairs with that critic's critiques, measured on the evaluation sets. One row per
    critic: information (probe accuracy, %, ties half) with its CI, per set and pooled."""
    cfg = run.config
    b = backbones_of(cfg)[0]
    rows = []
    for name, (sp, critic) in critiqued.items():
        if critic is None:
            continue
        with run.step(f"probe {name}"):
            train = _slice(sp.train, b.n_train, cfg.seed, nested=True)
            heldout = {k: _slice(v, b.n_eval, cfg.seed) for k, v in sp.eval.items()}
            info = probe(train, heldout, run.path(f"probes/{slug(name)}"), seed=cfg.seed, n_boot=cfg.n_boot,
                         progress=run.progress)
        row = {"critic": name, "critic_p": simulated_p(critics_of(cfg)[name]), "probe train pairs": info["train"]["pairs"],
               "equal critiques left out": info["train"]["equal_left_out"]}
        for k, v in info.items():
            if k != "train":
                label = "information" if k == "pooled" else f"information {k}"
                row.update({label: pct(v["acc"]), f"{label} lo": pct(v["lo"]), f"{label} hi": pct(v["hi"]),
                            f"{label} n": v["n"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _other_runs(run: Run):
    """(results, probe table) of each run folder in compare_runs."""
    out = []
    for folder in run.config.compare_runs:
        probes = Path(folder) / "rq1_probe.csv"
        out.append((load_results(folder), pd.read_csv(probes) if probes.is_file() else pd.DataFrame()))
    return out


def rq1_information(run: Run, results: list[dict], probes, lr: float | None = None) -> pd.DataFrame:
    """Per critic of this run and of compare_runs, every RM at one rate (`lr`, default lr_selection's
    for the first backbone): its probe information, its Score change against its run's
    No-Critiques RM, and for a real critic the change the simulated critics' curve predicts."""
    cfg = run.config
    sections = resolve_sections(cfg.sections)
    b = backbones_of(cfg)[0].name
    runs = [(results, probes), *_other_runs(run)]
    if lr is None:  # the rate this run picks, if every run has it; else a rate they all have
        common = set.intersection(*({r["row"].get("lr") for r in res if r["row"]["backbone"] == b} for res, _ in runs))
        pick = next((r["row"].get("lr") for r in selected([r for r in results if r["row"]["backbone"] == b],
                                                          cfg.lr_selection)), None)
        lr = pick if pick in common or not common else min(common, key=lambda x: x or 0)
    rows = []
    for res, prb in runs:
        res = [r for r in res if r["row"]["backbone"] == b and r["row"].get("lr") == lr]
        base = next((r["row"]["critic"] for r in res if r["row"].get("critic_id") == "none"), None)  # No-Critiques
        g = grid(res, base, "Score", sections) if base else None
        if g is None or prb is None or not len(prb):
            continue
        e = arm_effects(g.test, g.weights, g.strata, None, 0, 0, n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        for k, arm in enumerate(g.arms[1:]):
            p = prb[prb["critic"] == arm]
            if not len(p):
                continue
            p = p.iloc[0]
            rows.append({"critic": arm, "kind": "simulated" if pd.notna(p.get("critic_p")) else "real",
                         "critic_p": p.get("critic_p"), "information": p["information"],
                         "information lo": p["information lo"], "information hi": p["information hi"],
                         "Score change": round(100 * float(e["delta"][k]), 2), "lo": round(100 * float(e["lo"][k]), 2),
                         "hi": round(100 * float(e["hi"][k]), 2), "seeds": len(g.seeds), "lr": lr})
    df = pd.DataFrame(rows)
    return with_predictions(df) if len(df) else df


def with_predictions(info: pd.DataFrame) -> pd.DataFrame:
    """`info` (rq1_information's rows) with, for each real critic, the Score change that the
    simulated critics' curve predicts at its information (inside the curve's range, two points or
    more; else None) and measured - predicted."""
    curve = info[info["kind"] == "simulated"].sort_values("information")
    def predict(x):
        if len(curve) < 2 or not curve["information"].min() <= x <= curve["information"].max():
            return None
        return round(float(np.interp(x, curve["information"], curve["Score change"])), 2)
    info = info.copy()
    info["predicted change"] = [predict(x) if k == "real" else None for x, k in zip(info["information"], info["kind"])]
    info["measured - predicted"] = [None if p is None else round(m - p, 2)
                                    for m, p in zip(info["Score change"], info["predicted change"])]
    return info


def rq1_ablation(run: Run, results: list[dict]) -> pd.DataFrame:
    """The configured `ablation`: each step one protocol (arm, subset weighting, seeds, a fixed
    rate or a rule choosing on validation), the arm against No-Critiques on the Score, computed
    from this run's RMs and those of compare_runs (an arm named in both is this run's)."""
    cfg = run.config
    if not cfg.ablation:
        return pd.DataFrame()
    b = backbones_of(cfg)[0].name
    pool = [r for r in results if r["row"]["backbone"] == b]
    mine = {r["row"]["critic"] for r in pool}
    for res, _ in _other_runs(run):
        pool += [r for r in res if r["row"]["backbone"] == b and r["row"]["critic"] not in mine]
    base = next((r["row"]["critic"] for r in pool if r["row"].get("critic_id") == "none"), None)  # No-Critiques
    if base is None:
        return pd.DataFrame()
    sections = resolve_sections(cfg.sections)
    rows = []
    for step in cfg.ablation:
        e = protocol_effect(pool, base, step.arm, sections, step.weighting, step.seeds, step.lr, step.rule,
                            n_boot=max(cfg.n_boot, 2000), seed=cfg.seed)
        rows.append({"step": step.label, "arm": step.arm, "weighting": step.weighting,
                     "seeds": ", ".join(map(str, step.seeds)) if step.seeds else "all",
                     "learning rate": f"{step.lr:g} for both" if step.lr is not None else
                     f"best on validation, {step.rule.replace('_', ' ')}",
                     **{("Score " + k if k in ("change", "lo", "hi", "p") else k): v for k, v in e.items()}})
    df = pd.DataFrame(rows)
    if "Score change" in df:
        df["sign"] = np.where(df["Score change"] > 0, "+", np.where(df["Score change"] < 0, "-", "0"))
    return df
