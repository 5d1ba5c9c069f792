"""The quickstart (`make demo`): a No-Critiques and a Critique RM on a small slice, a table and a
chart. Its steps are RQ1's (critcore.studies.rq1), with one backbone and one critic."""
from __future__ import annotations

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
    """What `critcore demo` prints at the end: the result table, then where the charts, the
    per-example pages, the executed notebook and run.json are."""
    table = pd.read_csv(out_dir / "results.csv", keep_default_na=False)
    lines = [f"{'critic':<10} {'metric':<10} {'acc %':>6}  95% CI"]
    for r in table.itertuples():
        ci = f"[{r.lo:.1f}, {r.hi:.1f}]"
        lines.append(f"{r.critic:<10} {r.metric:<10} {r.acc:>6.1f}  {ci:<13} {r.note}".rstrip())
    charts = sorted(p for png in out_dir.glob("*.png") for p in (png.with_suffix(".html"), png) if p.is_file())
    pages = sorted(set(out_dir.glob("**/*.html")) - set(charts))  # per-example reports, disagreements
    lines += ["", f"results:  {out_dir / 'results.csv'}", *(f"chart:    {p}" for p in charts),
              *(f"page:     {p}" for p in pages), *(f"notebook: {p}" for p in sorted(out_dir.glob("*.ipynb"))),
              f"record:   {out_dir / 'run.json'}"]
    return "\n".join(lines)
