"""The generative-judge study (the paper's Table 2, bottom): each judge of the configuration
scores both responses of every pair, Gen and Gen + Critiques, beside classifier RMs of RQ1 runs."""
from __future__ import annotations

import pandas as pd

from .. import atomic, judge as J
from ..critique import make_critic
from ..errors import ConfigError
from ..report import slug
from ..run import Run, load_pairs, resolve_sections
from .rq1_runs import rm_rows


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
    files = [slug(j.name).lower() for j in judges]
    twice = sorted({j.name for j, f in zip(judges, files) if files.count(f) > 1})
    if twice:  # one would silently replace the other in the table and its CSV
        raise ConfigError(f"judges: {', '.join(map(repr, twice))}: the same name twice; give each judge its own name")
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
