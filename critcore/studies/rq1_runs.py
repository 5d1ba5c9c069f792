"""The reward models of finished RQ1 runs, for the judge and metacritique studies: a table row
per RM beside the judges, and each RM's Score gain over its backbone's No-Critiques RM."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..judge import table_row
from ..report import eval_names
from ..rms import load_results

_BASELINE = {"none", "nocritiques", "nocritique", "baseline"}


def find_rms(run_dirs) -> list[dict]:
    """Every RM of each RQ1 run folder (critcore.rms.load_results) as {run, name, backbone,
    critic, critic_id, summary, path}. A folder without RMs is a printed note, never an error."""
    out = []
    for run in [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs or []):
        results = load_results(run)
        if not results:
            print(f"note: no RM summaries under {run}/rms/*/eval/summary.json; skipped")
        for r in results:
            row = r["row"]
            out.append({"run": Path(run).name, "name": Path(r["dir"]).name, "path": r["dir"], "summary": r["summary"],
                        "backbone": row.get("backbone"), "critic": row.get("critic"), "critic_id": row.get("critic_id")})
    return out


def _sectioned(summary: dict) -> dict:
    rb, _ = eval_names(summary)
    return summary.get(rb) or {}


def rm_rows(run_dirs) -> list[dict]:
    """critcore.judge.table_row for every RM of the RQ1 runs (kind "classifier RM")."""
    return [{**table_row(f"RM {rm['run']}/{rm['name']}", {"n": None, **_sectioned(rm["summary"])}, kind="classifier RM"),
             "critic": rm["critic_id"] or rm["critic"]} for rm in find_rms(run_dirs)]


def _key(text) -> str:
    return re.sub(r"[^a-z0-9.]+", "", str(text).lower())


def rm_gains(run_dirs, critics: dict[str, list[str]] | None = None, rm_critics: dict[str, str] | None = None) -> pd.DataFrame:
    """Each RQ1 RM's Score gain (points) over the No-Critiques RM of its run and backbone. An RM gets
    the first label of `critics` (label -> names: label, identity, spec) one of whose names matches,
    ignoring case and punctuation, its critic (rm_critics[folder], else its recorded critic)."""
    columns = ["run", "backbone", "rm", "rm_critic", "critic_label", "score", "baseline_score", "gain"]
    found = find_rms(run_dirs)
    for f in found:
        f["names"] = {_key(n) for n in ((rm_critics or {}).get(f["name"]), f["critic"], f["critic_id"]) if n}
        if not f["names"]:
            f["names"] = {_key(f["name"])}
        score = ((_sectioned(f["summary"]).get("sections") or {}).get("score") or {}).get("acc")
        f["score"] = None if score is None else 100 * score
    rows = []
    for group in sorted({(f["run"], f["backbone"]) for f in found}, key=str):
        rms = [f for f in found if (f["run"], f["backbone"]) == group]
        base = [f for f in rms if f["names"] & _BASELINE]
        if not base or base[0]["score"] is None:
            print(f"note: run {group[0]}, backbone {group[1]}: no No-Critiques RM (critic 'none'); gains skipped")
            continue
        b = base[0]["score"]
        for f in rms:
            if f is base[0] or f["score"] is None:
                continue
            tag = next((label for label, names in (critics or {}).items()
                        if {_key(n) for n in [label, *names]} & (f["names"] | {_key(f["name"])})), None)
            rows.append({"run": group[0], "backbone": group[1], "rm": f["name"],
                         "rm_critic": (rm_critics or {}).get(f["name"]) or f["critic_id"] or f["critic"] or f["name"],
                         "critic_label": tag, "score": round(f["score"], 2), "baseline_score": round(b, 2),
                         "gain": round(f["score"] - b, 2)})
    return pd.DataFrame(rows, columns=columns)
