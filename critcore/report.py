"""Reporting: the labels of the paper's columns, percentages, result rows and the tables and
charts every study writes. Charts are saved with vega inlined, so the HTML renders offline."""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

SECTION_LABELS = {"chat": "Chat", "chat_hard": "Chat Hard", "safety": "Safety", "reasoning": "Reasoning",
                  "score": "Score"}
METRICS = list(SECTION_LABELS.values()) + ["PandaLM"]


def slug(text: str) -> str:
    """A name safe in folder and file names."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s or "x"


def pct(x, digits: int = 1):
    """A fraction as a percentage rounded to `digits`; None for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(100 * float(x), digits)


def ci_cells(label: str, ci: Mapping | None) -> dict:
    """{label, "label lo", "label hi"} in % from an {acc, lo, hi} interval (None where missing)."""
    ci = ci or {}
    return {label: pct(ci.get("acc")), f"{label} lo": pct(ci.get("lo")), f"{label} hi": pct(ci.get("hi"))}


def eval_names(summary: Mapping) -> tuple[str | None, str | None]:
    """(the eval set with section scores, the PandaLM set) of an evaluation summary."""
    sets = [k for k, v in summary.items() if isinstance(v, dict) and "overall" in v]
    rb = next((k for k in sets if summary[k].get("sections")), None)
    pl = "pandalm" if "pandalm" in sets else next((k for k in sets if summary[k].get("pandalm") and k != rb), None)
    return rb, pl


def results_row(summary: Mapping) -> dict:
    """Section scores, Score and PandaLM (ties dropped) in %, with 95% CI columns (`Chat`,
    `Chat lo`, `Chat hi`, ...), plus the sections of any other suite and the overall accuracy of
    any other eval set, as `<name>`, `<name> lo`, `<name> hi`."""
    rb, pl = eval_names(summary)
    sections = (summary.get(rb) or {}).get("sections") or {}
    row = {}
    for key, label in SECTION_LABELS.items():
        row.update(ci_cells(label, sections.get(key)))
    pandalm = summary.get(pl) or {}
    row.update(ci_cells("PandaLM", (pandalm.get("pandalm") or {}).get("drop") or pandalm.get("overall")))
    for key, ci in sections.items():
        if key not in SECTION_LABELS:  # sections of another suite (e.g. the generated set's)
            row.update(ci_cells(key.replace("_", " ").title(), ci))
    for name, v in summary.items():
        if isinstance(v, dict) and "overall" in v and name not in (rb, pl):
            row.update(ci_cells(name, v["overall"]))
    return row


def long_table(df, id_cols: Iterable[str]):
    """Wide result rows -> one row per metric: id columns, metric, acc, lo, hi (%)."""
    import pandas as pd

    id_cols = list(id_cols)
    metrics = [c for c in df.columns if f"{c} lo" in df.columns and f"{c} hi" in df.columns]
    rows = []
    for _, r in df.iterrows():
        for m in metrics:
            if r[m] is None or (isinstance(r[m], float) and math.isnan(r[m])):
                continue
            rows.append({**{c: r[c] for c in id_cols}, "metric": m, "acc": r[m], "lo": r[f"{m} lo"], "hi": r[f"{m} hi"]})
    return pd.DataFrame(rows, columns=id_cols + ["metric", "acc", "lo", "hi"])


def interval(value, lo, hi, digits: int = 1) -> str:
    """"value [lo, hi]", or "—" when the value is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def save_chart(chart, html_path, png_path) -> None:
    """An altair chart as self-contained HTML (vega inlined: it renders offline) and a PNG at 2x,
    each written atomically."""
    from . import atomic

    with atomic.atomic_open(html_path, "w", encoding="utf-8") as f:
        chart.save(f, format="html", inline=True)
    with atomic.atomic_open(png_path, "wb") as f:
        chart.save(f, format="png", scale_factor=2)


def save_table(df, path) -> None:
    """A DataFrame as CSV, atomically."""
    from . import atomic

    with atomic.atomic_open(path, "w", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)
