"""The quickstart (`make demo`): a No-Critiques and a Critique RM on a small slice, a table and a
chart. Its steps are RQ1's (critcore.studies.rq1), with one backbone and one critic."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Literal

import pandas as pd

from ..params import CriticOptions, CriticSpec, RMStudy, doc, register
from ..report import long_table
from ..recipe import TrainConfig
from ..run import Run
from ..schema import Int
from .budget import projection_text
from .rq1 import rq1_train_all
from .rq1_charts import bars
from .validation import check_rm_study


class Quickstart(RMStudy):
    study: str = doc("study", "quickstart")
    notebook: str | None = doc("notebook", "notebooks/quickstart.ipynb")
    description: str = doc("description", "Critiques, then a No-Critiques and a Critique RM, evaluation, a table and a chart.")
    data: Literal["auto", "shared", "generated"] = doc(
        "auto: a slice of ../shared/data when it exists, else the generated set", "auto")
    n_train: Int = doc("training pairs (a seeded slice)", 16, gt=0)
    n_eval: Int = doc("evaluation pairs per set (RewardBench: one per subset at least; PandaLM: half)", 16, gt=0)
    backbone: str = doc("the RM backbone", "minilm")
    critic: CriticSpec = doc("the critic beside No-Critiques", "smollm2")
    train: TrainConfig = doc("train", factory=partial(
        TrainConfig, max_length=128, lr=1.0e-4, batch_size=8, micro_batch_size=8, epochs=2))
    critic_options: CriticOptions = doc("critic_options", factory=partial(
        CriticOptions, max_new_tokens=24, max_chars=240, batch_size=32))

    def derive(self, data_dir: Path) -> "Quickstart":
        """Fill the data specs that `data` implies (those given are kept)."""
        mode = self.data
        if mode == "auto":
            mode = "shared" if (data_dir / "mix" / "train.jsonl").is_file() else "generated"
        n_train, n_eval, seed = self.n_train, self.n_eval, self.seed
        if mode == "shared":
            train = {"format": "jsonl", "path": f"{data_dir}/mix/train.jsonl", "limit": n_train, "seed": seed,
                     "stratify": None}
            evals = {"rewardbench": {"format": "rewardbench", "path": f"{data_dir}/reward-bench-local/filtered.jsonl",
                                     "limit": n_eval, "per_stratum": 1, "seed": seed},
                     "pandalm": {"format": "pandalm", "path": f"{data_dir}/pandalm/testset-v1.json",
                                 "limit": max(1, n_eval // 2), "seed": seed, "stratify": None}}
            sections = f"{data_dir}/reward-bench-local/sections.json"
        else:
            train = {"format": "generated", "n": n_train, "seed": seed, "split": "train"}
            evals = {"generated": {"format": "generated", "n": n_eval, "seed": seed, "split": "test"}}
            sections = "generated"
        return self.replace(train_data=self.train_data or train, eval_data=self.eval_data or evals,
                            sections=self.sections or sections)


register(Quickstart, checks=check_rm_study, projection=projection_text)

quickstart_train_all = rq1_train_all  # the quickstart is RQ1 with one backbone and one critic


NO_INTERVAL = "no interval: 1 pair per subset (or every resample agrees)"


def quickstart_table(run: Run, results: list[dict]):
    """One row per RM and metric: critic, metric, acc, lo, hi (%), with the RM's training size,
    and a note where an interval has no width (the demo's slice has one pair per subset)."""
    table = long_table(pd.DataFrame([r["row"] for r in results]), ["backbone", "critic", "n_train"])
    table["note"] = [NO_INTERVAL if lo == hi else "" for lo, hi in zip(table["lo"], table["hi"])]
    return table


def quickstart_chart(table):
    """Grouped bars: accuracy per metric, one bar per critic, with 95% CI error bars; a subtitle
    says when some have no width."""
    title = "No-Critiques vs Critiques (95% CI)"
    if (table["lo"] == table["hi"]).any():
        title = {"text": title, "subtitle": f"bars without an error bar: {NO_INTERVAL}"}
    return bars(table, "metric", "critic", title=title)


def quickstart_summary(out_dir: Path) -> str:
    """What `critcore demo` prints at the end, on one screen: accuracy per metric (rows) and RM
    (columns) with its 95% CI, a mark on intervals without width, and what the run folder holds."""
    table = pd.read_csv(out_dir / "results.csv", keep_default_na=False)
    rm = table["critic"] if table["backbone"].nunique() == 1 else table["backbone"] + " " + table["critic"]
    cells = table.assign(rm=rm, cell=[f"{a:.1f} [{lo:.1f}, {hi:.1f}]" + ("*" if note else "")
                                      for a, lo, hi, note in zip(table["acc"], table["lo"], table["hi"], table["note"])])
    wide = cells.pivot(index="metric", columns="rm", values="cell").reindex(index=cells["metric"].unique(),
                                                                            columns=cells["rm"].unique())
    width = max(22, *(len(c) + 3 for c in wide.to_numpy().ravel()))
    lines = [f"{'accuracy % [95% CI]':<21}" + "".join(f"{c:<{width}}" for c in wide.columns).rstrip()]
    lines += [f"{m:<21}" + "".join(f"{c:<{width}}" for c in row).rstrip() for m, row in wide.iterrows()]
    if (table["note"] != "").any():
        lines.append(f"* {NO_INTERVAL}")
    where = Path(os.path.relpath(out_dir)) if Path.cwd() in out_dir.resolve().parents else out_dir
    files = [("results.csv", "the table above"),
             *((f"{p.name}, .png", "the chart") for p in sorted(out_dir.glob("*.html")) if p.with_suffix(".png").is_file()),
             ("rms/*/eval/*_report.html", f"per-example pages, sortable and searchable ({len(list(out_dir.glob('rms/*/eval/*_report.html')))})"),
             ("disagree_*.html", f"the pairs the RMs rank differently ({len(list(out_dir.glob('disagree_*.html')))})"),
             *((p.name, "the executed notebook") for p in sorted(out_dir.glob("*.ipynb"))),
             ("run.json", "the run record: parameters, versions, timings")]
    lines += ["", f"in {where}/:"] + [f"  {name:<26}{what}" for name, what in files]
    return "\n".join(lines)
