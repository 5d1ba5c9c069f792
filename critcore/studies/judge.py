"""The generative-judge study (the paper's Table 2, bottom): each judge of the configuration
scores both responses of every pair, Gen and Gen + Critiques, beside classifier RMs of RQ1 runs."""
from __future__ import annotations

from functools import partial
from typing import Literal

import pandas as pd
from pydantic import model_validator

from .. import atomic, judge as J
from ..params import SECTIONS, DataSpec, LLMStudy, Sections, doc, raise_all, register, suite_sample
from ..critique import make_critic, parse_critic_spec
from ..report import slug
from ..run import Run
from ..schema import Int, Schema
from ..splits import load_pairs, resolve_sections
from .rq1_runs import rm_rows
from .validation import Report, check_llm_study


class JudgeSpec(Schema):
    """One judge: a model of `models` and a mode, Gen or Gen + Critiques."""

    model: str = doc("a name in `models`", "")
    mode: Literal["direct", "critique"] = doc("direct (Gen) or critique (Gen + Critiques)", "direct")
    max_new_tokens: Int | None = doc("score reply length (default judge_max_new_tokens)", None, gt=0)
    critic: str | None = doc("who writes the critiques (a name in models; default the judge's model)", None)
    template: str | None = doc("judge prompt: a name in critcore/prompts, a file or the text", None)
    name: str | None = doc("table label", None)


class Judge(LLMStudy):
    """The generative-judge study: point-wise judges beside the classifier RMs of RQ1 runs."""

    study: str = doc("study", "judge")
    notebook: str | None = doc("notebook", "notebooks/generative_judge.ipynb")
    description: str = doc("description", "Point-wise generative judges, Gen and Gen + Critiques.")
    data: DataSpec = doc("the pairs to judge (a data spec)", factory=partial(suite_sample, 4))
    sections: Sections | None = doc("sections", SECTIONS)
    judges: list[JudgeSpec] = doc("one judge per entry", factory=lambda: [
        JudgeSpec(model="smollm2", mode="direct"), JudgeSpec(model="smollm2", mode="critique")])
    judge_max_new_tokens: Int = doc("score reply length", 16, gt=0)

    @model_validator(mode="after")
    def _judge_rules(self):
        """Judges to run, on models that are named, each under its own name (one would silently
        replace the other in the table and its CSV)."""
        problems = [] if self.judges else ["judges: none given, so nothing would be judged"]
        problems += [f"judges[{i}].{key}: {getattr(j, key)!r} is not in models {list(self.models)}"
                     for i, j in enumerate(self.judges) for key in ("model", "critic")
                     if getattr(j, key) is not None and getattr(j, key) not in self.models]
        if not problems:
            names = [j.name or J.default_name((parse_critic_spec(self.models[j.model]) or {}).get("model", j.model), j.mode)
                     for j in self.judges]
            files = [slug(n).lower() for n in names]
            twice = sorted({n for n, f in zip(names, files) if files.count(f) > 1})
            problems += [f"judges: {', '.join(map(repr, twice))}: the same name twice; give each judge its own name"] if twice else []
        raise_all(problems)
        return self


def _checks(cfg: Judge, rep: Report, check_data: bool) -> None:
    check_llm_study(cfg, rep, check_data)
    if cfg.sections:
        rep.attempt("sections", lambda: ", ".join(resolve_sections(cfg.sections)))


register(Judge, checks=_checks)


def judge_all(run: Run) -> dict:
    """{judge name: (per-pair frame, summary)} for every judge in run.config.judges; each frame
    is saved as judge_<name>.csv."""
    cfg = run.config
    pairs = load_pairs(cfg.data)
    sections = resolve_sections(cfg.sections)
    backends = {name: make_critic(spec) for name, spec in cfg.models.items()}
    judges = [J.Judge(backends[spec.model], spec.mode, template=spec.template, name=spec.name,
                      max_new_tokens=spec.max_new_tokens or cfg.judge_max_new_tokens,
                      critic=backends[spec.critic] if spec.critic else None, max_chars=cfg.max_chars)
              for spec in cfg.judges]
    results = {}
    for judge in judges:
        with run.step(f"judge {judge.name}"):
            df = J.judge_pairs(pairs, judge, run.cache, progress=run.progress)
        results[judge.name] = (df, J.summarize_judge(df, sections, n_boot=cfg.n_boot, seed=cfg.seed))
        run.save_table(df, f"judge_{slug(judge.name).lower()}")
    run.notes["data"] = {"pairs": len(pairs)}
    return results


def judge_table(run: Run, results: dict):
    """One row per judge (and per classifier RM of run.config.rq1_runs): section scores with CIs,
    tie and unparseable rates. Saved as table.csv, the display form as table.txt, and the
    summaries as summary.json."""
    rows = [J.table_row(name, summary) for name, (_, summary) in results.items()] + rm_rows(run.config.rq1_runs)
    table = pd.DataFrame(rows)
    run.save_table(table, "table")
    shown = J.format_table(rows)
    atomic.write_text(run.path("table.txt"), shown.to_string(index=False) + "\n")
    run.save_json({"judges": {name: s for name, (_, s) in results.items()},
                   "rm_rows": [r for r in rows if r["kind"] != "judge"]}, "summary")
    return shown


def ties_table(run: Run, results: dict):
    """Tie and unparseable rates per section (%, of the pairs in each section), saved as ties.csv."""
    rows = [J.table_row(name, summary) for name, (_, summary) in results.items()]
    table = pd.DataFrame(rows)
    cols = ["model"] + [c for c in table.columns if c.endswith(" ties %")] + ["Ties %", "Unparseable %"]
    run.save_table(table[cols], "ties")
    return table[cols]


def judge_examples(results: dict, n: int = 3):
    """A few raw judge outputs per judge, with the scores read from them."""
    cols = ["judge", "id", "output_chosen", "score_chosen", "output_rejected", "score_rejected"]
    return pd.concat([df.assign(judge=name)[cols].head(n) for name, (df, _) in results.items()])
