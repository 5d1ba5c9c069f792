"""Generative judges (Ye et al. 2024, §5.3, Table 2 bottom): an LLM reads one (prompt, response)
and writes a 0-10 score; a pair is right when the chosen response scores strictly higher. Mode
"direct" ("Gen") asks for the score; "critique" ("Gen + Critiques") first has a critic (by default
the judge's own model, through `augment` and the critique cache) critique the response, and puts
the critique in the judge prompt. Equal scores are a judge tie and count wrong; an output with no
readable score in 0..10 is "unparseable" (never 0) and its pair counts wrong; both are reported.
The prompts go through critcore.llm's one cached completion loop (a local model's answer is
prefilled with "Score (0-10):"), so an interrupted run resumes from what it had committed.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .critique import augment, make_critic, model_backend
from .records import Pair, prompt_text
from .llm import DEFAULT_MAX_CHARS, complete_cached, fill, load_prompt, sha256_text
from .llm.cache import open_cache

MODES = {"direct": "Gen", "critique": "Gen + Critiques"}
JUDGE_TEMPLATES = {"direct": "judge_direct", "critique": "judge_with_critique"}
SCORE_PREFIX = "\n\nScore (0-10):"
SCORE_RANGE = (0.0, 10.0)


# ---------------------------------------------------------------- score parsing

_WORDS = {w: float(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}
_NUM = r"(?P<v>[-+]?\d+(?:\.\d+)?)"
_NUM_W = r"(?P<v>[-+]?\d+(?:\.\d+)?|(?:" + "|".join(_WORDS) + r")\b)"
_SCALE = r"(?:\s*(?:/|out\s+of)\s*(?P<s>\d+(?:\.\d+)?|ten))?"
_LABEL = (r"\b(?:overall\s+|final\s+|total\s+)?(?:score|rating|grade)\b"
          r"[\s*_\"'`]*(?:\((?P<p>[^()\n]{0,20})\))?[\s*_\"'`]*"   # "Score (0-10):", "**Score**:"
          r"(?:is\s*:?|of|would\s+be|=|:|-|–|—)?[\s*_\[\(\"'`]*")
_RANGE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)")
_PATTERNS = [  # (name, regex); the first kind that matches decides, using its last match
    ("labeled", re.compile(_LABEL + _NUM_W + r"(?!\w)(?!\s*[-–]\s*\d)" + _SCALE, re.I)),  # not a range "(10-20)"
    ("fraction", re.compile(r"(?<![\w.])" + _NUM_W + r"\s*(?:/|out\s+of)\s*(?P<s>\d+(?:\.\d+)?|ten)\b", re.I)),
    ("phrase", re.compile(r"\b(?:give|giving|gave|rate|rated|assign|assigning|award|deserves?|earns?|merits?)"
                          r"\s+(?:it|this|this\s+response|the\s+response)?\s*(?:an?\s+|a\s+score\s+of\s+|a\s+rating\s+of\s+)?"
                          + _NUM + r"(?![\w%])" + _SCALE, re.I)),
    ("bold", re.compile(r"\*\*\s*" + _NUM + _SCALE + r"\s*\*\*")),
    ("leading", re.compile(r"^[\s\[\(\*\"'`]*" + _NUM + r"(?![\w%])(?![.)]\s*\S)" + _SCALE)),
]


def _number(text: str) -> float:
    t = text.lower()
    return _WORDS[t] if t in _WORDS else float(t)


def _other_scale(m: re.Match, high: float) -> bool:
    """A label that declares another scale: "Rating (10-100): 10", "Score (1-5): 4"."""
    paren = m.groupdict().get("p")
    r = _RANGE.search(paren) if paren else None
    return bool(r) and float(r.group(2)) != high


def parse_score(text: str | None, low: float = SCORE_RANGE[0], high: float = SCORE_RANGE[1]) -> float | None:
    """The 0-10 score in a judge's output, or None. The first kind of _PATTERNS found decides, its
    last occurrence counting (a label declaring another scale is passed over); a number out of
    [low, high], signed, or on another scale ("4/5") makes the output unparseable: None."""
    if not text:
        return None
    for _, pattern in _PATTERNS:
        matches = [m for m in pattern.finditer(text) if not _other_scale(m, high)]
        if not matches:
            continue
        m = matches[-1]
        value, scale = m.group("v"), m.groupdict().get("s")
        if scale is not None and _number(scale) != high:
            return None
        score = _number(value)
        return score if not value.startswith(("-", "+")) and low <= score <= high and math.isfinite(score) else None
    return None


# ---------------------------------------------------------------- the judge


def default_name(model: str, mode: str) -> str:
    """A judge's table label when it is given none: "<model> Gen" or "<model> Gen + Critiques"."""
    return f"{model} {MODES[mode]}"


class Judge:
    """A point-wise generative judge: `backend` (a critic spec or Critic) scores; in "critique" mode
    `critic` (default the backend itself) writes the critiques; `template`: a name in
    critcore/prompts, a path or the text."""

    def __init__(self, backend="smollm2", mode: str = "direct", *, template=None, max_new_tokens: int = 32,
                 critic=None, answer_prefix: str = SCORE_PREFIX, max_chars: int | None = DEFAULT_MAX_CHARS,
                 name: str | None = None):
        if mode not in MODES:
            raise ValueError(f"judge mode must be one of {sorted(MODES)}, got {mode!r}")
        self.mode, self.max_chars = mode, max_chars
        self.backend = make_critic(backend)
        self.model = model_backend(self.backend)
        self.max_new_tokens, self.answer_prefix = int(max_new_tokens), answer_prefix
        required = ("prompt", "response") + (("critique",) if mode == "critique" else ())
        self.template = load_prompt(template, JUDGE_TEMPLATES[mode], required)
        self.critic = None
        if mode == "critique":
            self.critic = self.backend if critic is None else make_critic(critic)
            if self.critic is None:
                raise ValueError("a 'critique' judge needs a critic (got 'none')")
        self.name = name or default_name(self.backend.identity.split(":", 1)[-1], mode)

    def render(self, prompt: str, response: str, critique: str | None = None) -> str:
        values = {"prompt": prompt, "response": response}
        if self.mode == "critique":
            values["critique"] = critique or ""
        return fill(self.template, values, self.max_chars)

    def __repr__(self) -> str:
        return f"Judge({self.name!r}, mode={self.mode!r}, backend={self.backend!r})"


def judge_pairs(pairs: list[Pair], judge, cache=None, progress: bool = True) -> pd.DataFrame:
    """Score both responses of every pair with `judge` (a Judge, a backend spec, or a dict of Judge
    arguments): one row per pair with the scores (NaN when unparseable), outputs and critiques.
    `cache`: a CritiqueCache, a path to one, or None (in memory)."""
    from .metrics import correct

    if isinstance(judge, (str, dict)):
        judge = Judge(**judge) if isinstance(judge, dict) else Judge(judge)
    elif not isinstance(judge, Judge):
        raise TypeError(f"judge spec must be a dict, got {type(judge).__name__}")
    with open_cache(cache) as store:
        if judge.mode == "critique":
            pairs = augment(pairs, judge.critic, store, progress=progress)
        texts = [judge.render(prompt_text(p.prompt), response, critique) for p in pairs
                 for response, critique in ((p.chosen, p.chosen_critique), (p.rejected, p.rejected_critique))]
        outputs = complete_cached(judge.model, texts, store, task=f"judge-{judge.mode}",
                                  template_sha=sha256_text(judge.template), max_new_tokens=judge.max_new_tokens,
                                  answer_prefix=judge.answer_prefix, progress=progress)
    scores = [parse_score(o) for o in outputs]
    sc = np.array([np.nan if s is None else s for s in scores[0::2]], dtype=float)
    sr = np.array([np.nan if s is None else s for s in scores[1::2]], dtype=float)
    critiqued = judge.mode == "critique"
    df = pd.DataFrame({
        "id": [p.id for p in pairs], "subset": [p.subset or p.source or "all" for p in pairs],
        "source": [p.source for p in pairs], "tie": [p.tie for p in pairs],
        "score_chosen": sc, "score_rejected": sr, "parsed_chosen": ~np.isnan(sc), "parsed_rejected": ~np.isnan(sr),
        "judge_tie": sc == sr,  # NaN == NaN is False: a tie needs two readable scores
        "output_chosen": outputs[0::2], "output_rejected": outputs[1::2],
        "critique_chosen": [p.chosen_critique if critiqued else None for p in pairs],
        "critique_rejected": [p.rejected_critique if critiqued else None for p in pairs],
        "len_chosen": [len(p.chosen) for p in pairs], "len_rejected": [len(p.rejected) for p in pairs]})
    df["correct"] = correct(df)
    return df


# ---------------------------------------------------------------- numbers


def judge_stats(df: pd.DataFrame) -> dict:
    """Counts beside the accuracy: judge ties, unparseable outputs and pairs (and their rates)."""
    n = len(df)
    unparsed_pairs = int((~(df["parsed_chosen"] & df["parsed_rejected"])).sum())
    unparsed_outputs = int((~df["parsed_chosen"]).sum() + (~df["parsed_rejected"]).sum())
    ties = int(df["judge_tie"].sum())
    rate = lambda k, d: k / d if d else None  # noqa: E731
    return {"n": n, "judge_ties": ties, "tie_rate": rate(ties, n),
            "unparseable_outputs": unparsed_outputs, "unparseable_pairs": unparsed_pairs,
            "unparseable_rate": rate(unparsed_pairs, n)}


def summarize_judge(df: pd.DataFrame, sections: dict | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """metrics.summarize of the judge's scores (ties and unparseable pairs count wrong), with
    "judge" = judge_stats overall and "judge_sections" = judge_stats per section present."""
    from .metrics import _subsets_of, summarize

    summary = summarize(df, sections=sections, n_boot=n_boot, seed=seed, level=level)
    summary["judge"] = judge_stats(df)
    parts = {section: df[df["subset"].isin(_subsets_of(members))] for section, members in (sections or {}).items()}
    summary["judge_sections"] = {section: judge_stats(part) for section, part in parts.items() if len(part)}
    return summary


def table_row(name: str, summary: dict, kind: str = "judge") -> dict:
    """One table row: model, kind, the results_row columns (section %, lo, hi), and for judges
    Ties % and Unparseable % (pairs) overall and per section ("Chat ties %", ...)."""
    from .report import SECTION_LABELS, pct, results_row

    row = {"model": name, "kind": kind, **results_row({"rewardbench": summary})}
    row.pop("PandaLM", None), row.pop("PandaLM lo", None), row.pop("PandaLM hi", None)
    stats = summary.get("judge")
    row["n"] = summary.get("n")
    row["Ties %"] = pct(stats["tie_rate"]) if stats else None
    row["Unparseable %"] = pct(stats["unparseable_rate"]) if stats else None
    for key, label in SECTION_LABELS.items():
        s = (summary.get("judge_sections") or {}).get(key)
        if key != "score":
            row[f"{label} ties %"] = pct(s["tie_rate"]) if s else None
    return row


def format_table(rows: list[dict], columns=("Chat", "Chat Hard", "Safety", "Reasoning", "Score")) -> pd.DataFrame:
    """Rows as display strings "acc [lo, hi]" (percent), with the judge columns kept."""
    return pd.DataFrame([{
        "model": r["model"], "kind": r["kind"], "n": r.get("n"),
        **{c: "—" if r.get(c) is None else f"{r[c]:.1f} [{r[f'{c} lo']:.1f}, {r[f'{c} hi']:.1f}]" for c in columns},
        **{c: "—" if r.get(c) is None else f"{r[c]:.1f}" for c in ("Ties %", "Unparseable %")}} for r in rows])
