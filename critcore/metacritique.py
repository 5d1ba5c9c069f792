"""Metacritique (the paper's Appendix E, after Sun et al. 2024, "The critique of critique"):
how good are a critic's critiques, measured against reference critiques. An LLM splits each
critique into atomic information units (AIUs); precision checks each AIU of the critique under
test against the reference, recall checks each reference AIU for coverage; Meta-P, Meta-R and
Meta-F1 are the plain means over items, with bootstrap CIs (prompts: critcore/prompts/metacritique_*).

Where MetaCritique divides by zero: a critique with no AIUs gets P = 0 (counted `empty_critiques`);
a reference with none leaves R and F1 undefined for that item, left out of their means (counted
`empty_references`). An unreadable verdict counts as false (`unparseable_verdicts`). The prompts
follow MetaCritique's without its few-shot examples, which small local models copy verbatim; a
local model's answer is prefilled; every output is cached by content, so a stopped run resumes.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .critique import augment, make_critic, model_backend
from .data import jsonl_records
from .errors import DataError
from .llm import complete_cached, fill, load_prompt, sha256_text
from .llm.cache import open_cache
from .records import Pair, prompt_text
from .report import pct
from .stats import mean_with_ci

AIU_PREFIX = "\n\nClaims:\n1."
VERDICT_PREFIX = "\n\nVerdict:"
SIDES = ("chosen", "rejected")


# ---------------------------------------------------------------- parsing

_MARKER = re.compile(r"^\s*(?:[-*•+▪◦]|\d{1,3}\s*[.):]|\(\d{1,3}\)|\[\d{1,3}\]|[a-z][.)]|"
                     r"(?:claim|aiu|unit)\s*#?\d*\s*[:.)-])\s*(.*\S)?\s*$", re.I)
_HEADER = re.compile(r"^\s*(?:here\s+(?:are|is)\b.*|(?:the\s+)?(?:atomic\s+information\s+units?|aius?|claims?|"
                     r"list|answer|output)\s*:?)\s*$", re.I)
_NONE = re.compile(r"^\W*(?:none|no\s+claims?|n/?a|nothing|no\s+(?:atomic\s+)?information(?:\s+units?)?)\W*$", re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def parse_aius(text: str | None, max_aius: int | None = None) -> list[str]:
    """The AIUs in an extraction output: a numbered or bulleted list's items, else its lines (one line:
    its sentences); headers, "None", items under two words and repeats dropped; at most `max_aius`."""
    if not text or _NONE.match(text.strip()):
        return []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    marked = [m.group(1) or "" for m in map(_MARKER.match, lines) if m]
    if marked:
        items = marked
    else:
        items = [ln for ln in lines if not _HEADER.match(ln)]
        if len(items) == 1:
            items = _SENTENCE.split(items[0].strip())
    out, seen = [], set()
    for item in (re.sub(r"[*_`]{1,3}", "", it).strip().strip(" \t\"'") for it in items):
        key = item.lower().rstrip(".")
        if len(re.findall(r"[A-Za-z]+", item)) < 2 or _HEADER.match(item) or _NONE.match(item) or key in seen:
            continue
        seen.add(key)
        out.append(item)
    return out[:max_aius] if max_aius else out


# Verdict words; every one not in _TRUE (false, no, incorrect, not covered, ...) means false.
_TRUE = {"true", "yes", "correct", "covered", "supported", "entailed", "accurate", "right", "valid"}
_WORD = r"(not\s+(?:true|correct|covered|supported|entailed|accurate)|true|false|yes|no|incorrect|correct|" \
        r"uncovered|covered|unsupported|supported|entailed|inaccurate|accurate|wrong|right|invalid|valid)"
_VERDICT_LABEL = re.compile(r"\b(?:verdict|answer|judgement|judgment|conclusion|label|result)\s*[:=\-]\s*[\s*_\"'`\[(]*"
                            + _WORD + r"\b", re.I)
_CLAIM_IS = re.compile(r"\bthe\s+claim\s+is\s+(?:therefore\s+|thus\s+|hence\s+)?[\s*_\"'`]*" + _WORD + r"\b", re.I)
_FIRST = re.compile(r"^[\s*_\"'`\[(#]*" + _WORD + r"\b(?!\s+(?:of|that|to|in)\b)", re.I)


def parse_verdict(text: str | None) -> bool | None:
    """True / False from a verification output (the last "Verdict: X", else the last "the claim is
    X", else a verdict word opening it), or None when it has no readable verdict."""
    if not text:
        return None
    for pattern in (_VERDICT_LABEL, _CLAIM_IS, _FIRST):
        matches = list(pattern.finditer(text))
        if matches:
            word = re.sub(r"\s+", " ", matches[-1].group(1).lower())
            return word in _TRUE
    return None


# ---------------------------------------------------------------- scores


def example_scores(precision_verdicts: list, recall_verdicts: list) -> dict:
    """P, R, F1 of one item from its verdicts (True / False / None = unparseable, counted false)."""
    n_p, n_r = len(precision_verdicts), len(recall_verdicts)
    true_p = sum(v is True for v in precision_verdicts)
    true_r = sum(v is True for v in recall_verdicts)
    p = true_p / n_p if n_p else 0.0
    r = true_r / n_r if n_r else math.nan
    f1 = math.nan if math.isnan(r) else 0.0 if p == 0 or r == 0 else 2 * p * r / (p + r)
    return {"precision": p, "recall": r, "f1": f1, "n_aius": n_p, "n_ref_aius": n_r,
            "true_aius": true_p, "covered_ref_aius": true_r,
            "unparseable": sum(v is None for v in precision_verdicts) + sum(v is None for v in recall_verdicts)}


def summarize(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Meta-P, Meta-R, Meta-F1 ({mean, lo, hi, n}) of a per-item frame (from `metacritique`) and
    the counts: items, empty_critiques, empty_references, aius, ref_aius, verdicts, unparseable_verdicts."""
    verdicts = int(df["n_aius"].sum() + df["n_ref_aius"].sum()) if len(df) else 0
    return {
        "meta_p": mean_with_ci(df["precision"], n_boot, seed, level),
        "meta_r": mean_with_ci(df["recall"], n_boot, seed, level),
        "meta_f1": mean_with_ci(df["f1"], n_boot, seed, level),
        "items": len(df),
        "empty_critiques": int((df["n_aius"] == 0).sum()),
        "empty_references": int((df["n_ref_aius"] == 0).sum()),
        "aius": int(df["n_aius"].sum()),
        "ref_aius": int(df["n_ref_aius"].sum()),
        "verdicts": verdicts,
        "unparseable_verdicts": int(df["unparseable"].sum()),
    }


# ---------------------------------------------------------------- items and references


@dataclass
class Item:
    """One critiqued response: `id` is "<pair id>#chosen" or "<pair id>#rejected"."""

    id: str
    prompt: str
    response: str
    critique: str | None = None
    reference: str | None = None
    meta: dict = field(default_factory=dict)


def items_from_pairs(pairs: list[Pair], sides=SIDES) -> list[Item]:
    """The responses of `pairs` as items (critiques taken from the pairs where present)."""
    return [Item(f"{p.id}#{side}", prompt_text(p.prompt), getattr(p, side), getattr(p, f"{side}_critique"),
                 meta={"pair": p.id, "side": side, "subset": p.subset}) for p in pairs for side in sides]


def _text_key(prompt: str, response: str) -> str:
    """A reference's key by content: prompt and response, whitespace runs as one space."""
    return "text:" + sha256_text("\0".join(re.sub(r"\s+", " ", t).strip() for t in (prompt, response)))


def load_references(path: str | os.PathLike) -> dict[str, str]:
    """Reference critiques from a JSONL file ({id[, side], critique} or {prompt, response, critique})
    as a lookup for `match_references`."""
    refs: dict[str, str] = {}
    first: dict[str, str] = {}
    for _, where, d in jsonl_records(Path(path)):
        if not isinstance(d, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(d).__name__}")
        if not isinstance(d.get("critique"), str) or not d["critique"].strip():
            raise DataError(where, "critique", "missing or empty: a reference critique is text")
        if d.get("side") not in (None, "chosen", "rejected"):
            raise DataError(where, "side", f"expected chosen or rejected, got {d['side']!r}")
        if d.get("id") is not None:
            key = "id:" + str(d["id"]) + (f"#{d['side']}" if d.get("side") else "")
        elif isinstance(d.get("response"), str) and d.get("prompt") is not None:
            key = _text_key(prompt_text(d["prompt"]), d["response"])
        else:
            raise DataError(where, "id", "missing: give 'id' (and optionally 'side'), or 'prompt' and 'response'")
        if key in first:  # which of the two would be the reference?
            raise DataError(where, "id" if key.startswith("id:") else "response", f"the same item as {first[key]}")
        first[key], refs[key] = where, d["critique"]
    return refs


def match_references(items: list[Item], refs: dict[str, str]) -> list[str | None]:
    """Each item's reference critique from a `load_references` lookup, by id, else by content."""
    return [refs.get("id:" + it.id, refs.get(_text_key(it.prompt, it.response))) for it in items]


def critique_items(pairs: list[Pair], critic, cache, sides=SIDES, progress: bool = True) -> list[Item]:
    """Items with `critique` written by `critic` (a spec or Critic) through `augment` and the
    critique cache: the same critiques, and cache entries, as RM training with that critic."""
    return items_from_pairs(augment(pairs, critic, cache, progress=progress), sides)


# ---------------------------------------------------------------- the evaluator


class MetaCritic:
    """The LLM that extracts AIUs and checks them (GPT-4 in the paper; any local or
    OpenAI-compatible backend here). Templates are names in critcore/prompts, paths or texts;
    `max_aius` caps the AIUs kept per critique (None: no cap)."""

    def __init__(self, backend="smollm2", *, aiu_template=None, precision_template=None, recall_template=None,
                 aiu_max_new_tokens: int = 128, verdict_max_new_tokens: int = 48, max_aius: int | None = 8,
                 max_chars: int | None = 4000):
        self.backend = make_critic(backend)
        self.aiu_template = load_prompt(aiu_template, "metacritique_aiu", ("critique",))
        self.precision_template = load_prompt(precision_template, "metacritique_precision",
                                              ("prompt", "response", "reference", "aiu"))
        self.recall_template = load_prompt(recall_template, "metacritique_recall", ("prompt", "response", "critique", "aiu"))
        self.model = model_backend(self.backend)
        self.aiu_max_new_tokens, self.verdict_max_new_tokens = int(aiu_max_new_tokens), int(verdict_max_new_tokens)
        self.max_aius, self.max_chars = max_aius, max_chars
        self.identity = self.backend.identity

    def extract(self, critiques: list[str], cache, progress: bool = True) -> list[list[str]]:
        """AIUs of each critique (an empty or blank critique has none, without a model call)."""
        todo = [i for i, c in enumerate(critiques) if c and c.strip()]
        texts = [fill(self.aiu_template, {"critique": critiques[i]}, self.max_chars) for i in todo]
        outs = complete_cached(self.model, texts, cache, task="metacritique-aiu", template_sha=sha256_text(self.aiu_template),
                               max_new_tokens=self.aiu_max_new_tokens, answer_prefix=AIU_PREFIX, progress=progress)
        aius: list[list[str]] = [[] for _ in critiques]
        for i, out in zip(todo, outs):
            aius[i] = parse_aius(out, self.max_aius)
        return aius

    def verify(self, template: str, task: str, rows: list[dict], cache, progress: bool = True) -> tuple[list, list[str]]:
        texts = [fill(template, r, self.max_chars) for r in rows]
        outs = complete_cached(self.model, texts, cache, task=task, template_sha=sha256_text(template),
                               max_new_tokens=self.verdict_max_new_tokens, answer_prefix=VERDICT_PREFIX, progress=progress)
        return [parse_verdict(o) for o in outs], outs

    def __repr__(self) -> str:
        return f"MetaCritic({self.backend!r}, max_aius={self.max_aius})"


def metacritique(items: list[Item], evaluator, cache=None, progress: bool = True) -> pd.DataFrame:
    """Meta-scores of each item's `critique` against its `reference` (both must be set), one row per
    item with the AIUs, verdicts and raw outputs as JSON strings. `evaluator`: a MetaCritic or a spec."""
    ev = evaluator if isinstance(evaluator, MetaCritic) else MetaCritic(evaluator)
    for it in items:
        if it.critique is None or it.reference is None:
            raise ValueError(f"item {it.id}: needs both a critique and a reference critique")
    with open_cache(cache) as store:
        both = ev.extract([it.critique for it in items] + [it.reference for it in items], store, progress)
        aius, ref_aius = both[: len(items)], both[len(items):]
        p_rows = [(k, {"prompt": it.prompt, "response": it.response, "reference": it.reference, "aiu": a})
                  for k, it in enumerate(items) for a in aius[k]]
        r_rows = [(k, {"prompt": it.prompt, "response": it.response, "critique": it.critique, "aiu": a})
                  for k, it in enumerate(items) for a in ref_aius[k]]
        p_verdicts, p_outs = ev.verify(ev.precision_template, "metacritique-precision", [r for _, r in p_rows], store, progress)
        r_verdicts, r_outs = ev.verify(ev.recall_template, "metacritique-recall", [r for _, r in r_rows], store, progress)
    per_p = [([], []) for _ in items]
    per_r = [([], []) for _ in items]
    for per, rows_, verdicts, outs in ((per_p, p_rows, p_verdicts, p_outs), (per_r, r_rows, r_verdicts, r_outs)):
        for (k, _), v, o in zip(rows_, verdicts, outs):
            per[k][0].append(v)
            per[k][1].append(o)
    rows = []
    for k, it in enumerate(items):
        scores = example_scores(per_p[k][0], per_r[k][0])
        rows.append({"id": it.id, **scores, "critique": it.critique, "reference": it.reference,
                     "aius": json.dumps(aius[k], ensure_ascii=False), "ref_aius": json.dumps(ref_aius[k], ensure_ascii=False),
                     "p_verdicts": json.dumps(per_p[k][0]), "r_verdicts": json.dumps(per_r[k][0]),
                     "p_outputs": json.dumps(per_p[k][1], ensure_ascii=False),
                     "r_outputs": json.dumps(per_r[k][1], ensure_ascii=False)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables and the RQ1 link


def table_row(critic: str, summary: dict) -> dict:
    """A Table 4-like row, in percent: critic, items, Meta-P/R/F1 with lo and hi, and counts."""
    row = {"critic": critic, "items": summary["items"]}
    for key, name in (("meta_p", "Meta-P"), ("meta_r", "Meta-R"), ("meta_f1", "Meta-F1")):
        s = summary[key]
        row.update({name: pct(s["mean"]), f"{name} lo": pct(s["lo"]), f"{name} hi": pct(s["hi"]), f"{name} n": s["n"]})
    return {**row, **{k: summary[k] for k in ("aius", "ref_aius", "empty_critiques", "empty_references", "verdicts",
                                              "unparseable_verdicts")}}


def format_table(rows: list[dict]) -> pd.DataFrame:
    """Rows as display strings "mean [lo, hi]"."""
    return pd.DataFrame([{
        "critic": r["critic"], "items": r["items"],
        **{c: "—" if r.get(c) is None else f"{r[c]:.1f} [{r[f'{c} lo']:.1f}, {r[f'{c} hi']:.1f}]"
           for c in ("Meta-P", "Meta-R", "Meta-F1")},
        "AIUs/critique": round(r["aius"] / r["items"], 2) if r["items"] else None,
        "empty critiques": r["empty_critiques"], "empty refs": r["empty_references"],
        "unparseable verdicts": f"{r['unparseable_verdicts']}/{r['verdicts']}"} for r in rows])
