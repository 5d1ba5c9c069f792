"""The metacritique study (the paper's Appendix E, Table 4): Meta-P, Meta-R and Meta-F1 of each
critic against reference critiques, and critique quality against the RM Score gain of RQ1 runs."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import model_validator

from .. import atomic, metacritique as M
from ..params import DataSpec, LLMStudy, doc, raise_all, register, suite_sample
from ..critique import make_critic, parse_critic_spec
from ..errors import UserError
from ..report import slug
from ..run import Run
from ..schema import Int, Schema
from ..splits import load_pairs
from .rq1_runs import rm_gains
from .validation import Report, check_critic, check_llm_study


class Reference(Schema):
    """Who or what gives the reference critiques: a model of `models`, or a file."""

    merges = False  # one of two forms: a layer's reference replaces the one before it

    critic: str | None = doc("a name in `models` that writes the reference critiques", None)
    file: str | None = doc("or a JSONL of reference critiques", None)


class Metacritique(LLMStudy):
    """The metacritique study: each critic's critiques against the reference ones, AIU by AIU
    (atomic information units), scored by an evaluator model."""

    study: str = doc("study", "metacritique")
    notebook: str | None = doc("notebook", "notebooks/metacritique.ipynb")
    description: str = doc("description", "Meta-P, Meta-R and Meta-F1 of critics.")
    data: DataSpec = doc("the pairs whose responses are critiqued (a data spec)", factory=partial(suite_sample, 2))
    sides: list[Literal["chosen", "rejected"]] = doc("which responses", factory=lambda: ["chosen", "rejected"])
    critics: dict[str, str | dict] = doc("table label -> a name in models or a critic spec",
                                         factory=lambda: {"SmolLM2": "smollm2"})
    reference: Reference = doc("reference critiques: {critic: NAME} or {file: PATH}",
                               factory=lambda: Reference(critic="smollm2"))
    evaluator: str | dict = doc("the model that extracts and checks AIUs (a name in models or a spec)", "smollm2")
    aiu_max_new_tokens: Int = doc("AIU extraction reply length", 96, gt=0)
    verdict_max_new_tokens: Int = doc("verdict reply length", 16, gt=0)
    max_aius: Int | None = doc("AIUs kept per critique (null: all)", 5, gt=0)
    rm_critics: dict[str, str] = doc("RM folder name -> critic label, where the RM's critic is not recorded",
                                     factory=dict)

    @model_validator(mode="after")
    def _metacritique_rules(self):
        """Critics and sides to score (each side once), each critic and the evaluator a name in
        models or a spec that parses, and exactly one reference."""
        problems = [f"{what}: none given, so nothing would be scored"
                    for what, given in (("critics", self.critics), ("sides", self.sides)) if not given]
        if len(set(self.sides)) < len(self.sides):
            problems.append(f"sides: {self.sides} names a side twice (its critiques would count twice)")
        for at, spec in [*((f"critics.{k}", v) for k, v in self.critics.items()), ("evaluator", self.evaluator)]:
            if not (isinstance(spec, str) and spec in self.models):
                try:
                    parse_critic_spec(spec)
                except UserError as e:
                    problems.append(f"'{at}': {e}")
        ref = self.reference
        if (ref.critic is None) == (ref.file is None):
            problems.append("reference: give exactly one of critic (a name in models) or file")
        elif ref.critic is not None and ref.critic not in self.models:
            problems.append(f"reference.critic: {ref.critic!r} is not in models {list(self.models)}")
        raise_all(problems)
        return self


def _checks(cfg: Metacritique, rep: Report, check_data: bool) -> None:
    check_llm_study(cfg, rep, check_data)
    for label, spec in cfg.critics.items():
        if not (isinstance(spec, str) and spec in cfg.models):
            rep.attempt(f"critic {label}", lambda spec=spec, label=label: check_critic(spec, None, rep, label))
    if cfg.reference.file is not None and not Path(cfg.reference.file).is_file():
        rep.errors.append(f"reference.file: no such file {cfg.reference.file}")
    if not (isinstance(cfg.evaluator, str) and cfg.evaluator in cfg.models):
        rep.attempt("evaluator", lambda: check_critic(cfg.evaluator, None, rep, "evaluator"))


register(Metacritique, checks=_checks)


def _backend(backends: dict, spec):
    """A name in `models` (one shared object, one model load), else a critic spec."""
    return backends[spec] if isinstance(spec, str) and spec in backends else make_critic(spec)


def metacritique_all(run: Run) -> dict:
    """Score every critic of run.config.critics against the references: {label: (items frame,
    summary)}, plus run.notes about the evaluator and the reference. Each frame is saved as
    items_<label>.csv."""
    cfg = run.config
    pairs = load_pairs(cfg.data)
    backends = {name: make_critic(spec) for name, spec in cfg.models.items()}
    ev = M.MetaCritic(_backend(backends, cfg.evaluator), aiu_max_new_tokens=cfg.aiu_max_new_tokens,
                      verdict_max_new_tokens=cfg.verdict_max_new_tokens, max_aius=cfg.max_aius, max_chars=cfg.max_chars)
    with run.step("reference"):
        if cfg.reference.file:
            refs = M.match_references(M.items_from_pairs(pairs, cfg.sides), M.load_references(cfg.reference.file))
            reference = f"file {cfg.reference.file}"
        else:
            ref_critic = backends[cfg.reference.critic]
            refs = [it.critique for it in M.critique_items(pairs, ref_critic, run.cache, cfg.sides, run.progress)]
            reference = ref_critic.identity
    missing = sum(r is None for r in refs)
    results = {}
    for label, spec in cfg.critics.items():
        critic = _backend(backends, spec)
        with run.step(f"critic {label}"):
            items = M.critique_items(pairs, critic, run.cache, cfg.sides, run.progress)
            for it, ref in zip(items, refs):
                it.reference = ref
            df = M.metacritique([it for it in items if it.reference is not None], ev, run.cache, run.progress)
        results[label] = (df, M.summarize(df, n_boot=cfg.n_boot, seed=cfg.seed), critic.identity)
        run.save_table(df, f"items_{slug(label).lower()}")
    run.notes.update(evaluator=ev.identity, reference=reference, missing_references=missing,
                     responses=len(pairs) * len(cfg.sides))
    return results


def metacritique_table(run: Run, results: dict):
    """One row per critic: Meta-P/R/F1 with CIs and the counts. Saved as table.csv, the display
    form as table.txt (with the evaluator and reference), the summaries as summary.json."""
    rows = [{**M.table_row(label, summary), "identity": identity} for label, (_, summary, identity) in results.items()]
    table = pd.DataFrame(rows)
    run.save_table(table, "table")
    head = f"evaluator: {run.notes['evaluator']}; reference: {run.notes['reference']}"
    shown = M.format_table(rows)
    atomic.write_text(run.path("table.txt"), head + "\n" + shown.to_string(index=False) + "\n")
    notes = {k: run.notes[k] for k in ("evaluator", "reference", "missing_references", "responses")}
    run.save_json({"critics": {label: s for label, (_, s, _) in results.items()}, **notes}, "summary")
    return table


def first_items(results: dict):
    """One response per critic: its AIUs, the reference's, and the verdicts."""
    return pd.DataFrame([{"critic": label, **{k: df[k].iloc[0] for k in ("id", "aius", "p_verdicts", "ref_aius",
                                                                          "r_verdicts")}}
                         for label, (df, _, _) in results.items() if len(df)])


def quality_vs_gain(run: Run, table):
    """Each RQ1 RM's Score gain over No-Critiques against its critic's Meta-F1 (rm_gains.csv and a
    chart), or None when run.config.rq1_runs match none of these critics."""
    import altair as alt

    cfg = run.config
    if not cfg.rq1_runs:
        return None
    names = {label: [label, identity, str(cfg.critics[label])] for label, identity in zip(table["critic"], table["identity"])}
    gains = rm_gains(cfg.rq1_runs, names, cfg.rm_critics)
    if not len(gains):
        return None
    run.save_table(gains, "rm_gains")
    data = gains.dropna(subset=["critic_label"]).merge(table, left_on="critic_label", right_on="critic")
    if not len(data):
        return None
    data["backbone"] = data["backbone"].fillna("?")
    base = alt.Chart(data).encode(x=alt.X("Meta-F1:Q", title="critique quality: Meta-F1 (%)"),
                                  y=alt.Y("gain:Q", title="RM Score gain over No-Critiques (points)"))
    chart = (base.mark_point(size=80, filled=True).encode(color="critic_label:N", shape="backbone:N",
                                                          tooltip=["critic_label", "run", "rm", "gain", "Meta-F1"])
             + base.mark_rule().encode(x="Meta-F1 lo:Q", x2="Meta-F1 hi:Q")
             + base.mark_text(dy=-10).encode(text="critic_label:N")).properties(
        title="Critique quality vs RM score gain", width=420, height=300)
    run.save_chart(chart, "quality_vs_gain")
    return chart
