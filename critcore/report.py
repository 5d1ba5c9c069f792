"""Reporting: the labels of the paper's columns, percentages, result rows and the tables and
charts every study writes. Charts are saved with vega inlined, so the HTML renders offline, and
shown in notebooks without the network (`offline_charts`)."""
from __future__ import annotations

import base64
import html
import math
import re
import struct
from importlib import resources
from typing import Iterable, Mapping

from . import atomic

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
    rows = [{**{c: r[c] for c in id_cols}, "metric": m, "acc": r[m], "lo": r[f"{m} lo"], "hi": r[f"{m} hi"]}
            for _, r in df.iterrows() for m in metrics if pd.notna(r[m])]
    return pd.DataFrame(rows, columns=id_cols + ["metric", "acc", "lo", "hi"])


def save_chart(chart, html_path, png_path) -> None:
    """An altair chart as self-contained HTML (vega inlined: it renders offline) and a PNG at 2x,
    each written atomically."""
    with atomic.atomic_open(html_path, "w", encoding="utf-8") as f:
        chart.save(f, format="html", inline=True)
    with atomic.atomic_open(png_path, "wb") as f:
        chart.save(f, format="png", scale_factor=2)


# What JupyterLab 4, Notebook 7 and VS Code draw with the vega they bundle: vega-lite 5. altair 6
# writes vega-lite 6, whose MIME type they do not know, and its default renderer loads vega from a CDN.
NOTEBOOK_VEGALITE_MIME = "application/vnd.vegalite.v5+json"
NOTEBOOK_VEGALITE = "5.8"  # the oldest vega-lite 5 vl-convert compiles with: a spec it takes, those front ends take


def chart_mimebundle(spec: dict, **_options) -> tuple[dict, dict]:
    """A notebook display of a vega-lite spec that needs no network: the spec under the vega-lite 5
    MIME type (interactive in JupyterLab, Notebook 7, VS Code) and a PNG by vl-convert for any other
    viewer (alone when vega-lite 5 cannot compile the spec)."""
    import vl_convert

    v5 = {**spec, "$schema": "https://vega.github.io/schema/vega-lite/v5.json"}
    bundle: dict = {}
    try:
        png = vl_convert.vegalite_to_png(v5, vl_version=NOTEBOOK_VEGALITE, scale=2)
        bundle[NOTEBOOK_VEGALITE_MIME] = v5
    except ValueError:
        png = vl_convert.vegalite_to_png(spec, scale=2)
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR
    title = spec.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    bundle.update({"image/png": base64.b64encode(png).decode("ascii"), "text/plain": f"<chart: {title or 'untitled'}>"})
    return bundle, {"image/png": {"width": width // 2, "height": height // 2}}


def offline_charts() -> None:
    """Show every altair chart in this notebook with `chart_mimebundle`: drawn offline, with a
    static PNG kept in the saved notebook. `critcore.run.setup` (every study notebook) calls it."""
    import altair as alt

    alt.renderers.register("critcore", chart_mimebundle)
    alt.renderers.enable("critcore")


def save_table(df, path) -> None:
    """A DataFrame as CSV, atomically."""
    with atomic.atomic_open(path, "w", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


# ---------------------------------------------------------------- per-example pages

# a page of pairs to filter, search and sort, with no network; str.format fills it ({{ }}: a brace)
_PAGE = resources.files("critcore").joinpath("templates", "example_page.html").read_text(encoding="utf-8")


def _text_cell(text, cls: str = "", limit: int = 160) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "<td></td>"
    text = str(text)
    short = html.escape(text[:limit].replace("\n", " ")) + ("…" if len(text) > limit else "")
    body = f"<details><summary>{short}</summary><pre>{html.escape(text)}</pre></details>" if len(text) > limit \
        else f"<pre>{html.escape(text)}</pre>"
    return f'<td class="{cls}">{body}</td>'


def _page(title: str, note: str, head: list[str], rows: list[str], subsets) -> str:
    options = "".join(f"<option>{html.escape(str(s))}</option>" for s in sorted(set(subsets), key=str))
    return _PAGE.format(title=html.escape(title), note=note, subsets=options,
                        head="".join(f"<th>{html.escape(h)}</th>" for h in head), rows="\n".join(rows))


def example_page(df, title: str) -> str:
    """A self-contained HTML page with a row per pair of an evaluation frame (score_pairs), the worst
    mistakes (wrong, most negative margin) first."""
    order = df.assign(_wrong=df["verdict"] == "wrong").sort_values(["_wrong", "margin"], ascending=[False, True])
    rows = [f'<tr class="{r.verdict}" data-subset="{html.escape(str(r.subset))}" data-verdict="{r.verdict}">'
            f"<td>{html.escape(str(r.id))}</td><td>{html.escape(str(r.subset))}</td><td class='verdict'>{r.verdict}"
            f"{' (tie)' if r.tie else ''}</td><td class='num'>{r.margin:.3f}</td>"
            f"<td class='num'>{r.score_chosen:.3f}</td><td class='num'>{r.score_rejected:.3f}</td>"
            + _text_cell(r.prompt) + _text_cell(r.chosen) + _text_cell(r.chosen_critique, "critique")
            + _text_cell(r.rejected) + _text_cell(r.rejected_critique, "critique") + "</tr>"
            for r in order.itertuples(index=False)]
    wrong = int((df["verdict"] == "wrong").sum())
    note = (f"{len(df)} pairs, {wrong} wrong ({100 * wrong / max(1, len(df)):.1f}%): the margin is the chosen "
            "reward minus the rejected one; a pair is right when it is positive and the annotators did not tie.")
    head = ["id", "subset", "verdict", "margin", "reward chosen", "reward rejected", "prompt", "chosen",
            "chosen critique", "rejected", "rejected critique"]
    return _page(title, note, head, rows, df["subset"])


def disagreements(a, b, name_a: str, name_b: str):
    """The pairs two RMs scored differently (one right, the other wrong), side by side: the
    paper's Figure 1 for any two RMs on the same pairs (frames from score_pairs or their CSVs)."""
    cols = ["id", "verdict", "margin", "chosen_critique", "rejected_critique"]
    m = a.merge(b[cols], on="id", suffixes=(f" {name_a}", f" {name_b}"), validate="one_to_one")
    return m[m[f"verdict {name_a}"] != m[f"verdict {name_b}"]].reset_index(drop=True)


def disagreement_page(a, b, name_a: str, name_b: str, title: str | None = None) -> str:
    """disagreements() as a self-contained HTML page, with each RM's critiques."""
    d = disagreements(a, b, name_a, name_b)
    rows = []
    for r in d.to_dict(orient="records"):
        winner = name_a if r[f"verdict {name_a}"] == "right" else name_b
        rows.append(
            f'<tr class="right" data-subset="{html.escape(str(r["subset"]))}" data-verdict="{html.escape(winner)}">'
            f"<td>{html.escape(str(r['id']))}</td><td>{html.escape(str(r['subset']))}</td>"
            f"<td class='verdict'>{html.escape(winner)}</td>"
            f"<td class='num'>{r[f'margin {name_a}']:.3f}</td><td class='num'>{r[f'margin {name_b}']:.3f}</td>"
            + _text_cell(r["prompt"]) + _text_cell(r["chosen"]) + _text_cell(r["rejected"])
            + _text_cell(r[f"chosen_critique {name_a}"], "critique") + _text_cell(r[f"rejected_critique {name_a}"], "critique")
            + _text_cell(r[f"chosen_critique {name_b}"], "critique") + _text_cell(r[f"rejected_critique {name_b}"], "critique")
            + "</tr>")
    note = (f"{len(d)} of {len(a)} pairs scored differently: {name_a} right on {int((d[f'verdict {name_a}'] == 'right').sum())}, "
            f"{name_b} right on {int((d[f'verdict {name_b}'] == 'right').sum())}. The verdict filter picks the RM that was right.")
    head = ["id", "subset", "right", f"margin {name_a}", f"margin {name_b}", "prompt", "chosen", "rejected",
            f"chosen critique ({name_a})", f"rejected critique ({name_a})", f"chosen critique ({name_b})",
            f"rejected critique ({name_b})"]
    page = _page(title or f"{name_a} against {name_b}: the pairs they disagree on", note, head, rows, d["subset"])
    return page.replace('<option>right</option><option>wrong</option>',
                        f"<option>{html.escape(name_a)}</option><option>{html.escape(name_b)}</option>")
