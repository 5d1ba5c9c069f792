"""The dataset loaders, one per format, and `LOADERS`, the registry a data spec's format names.
Each returns a `Loaded`. A loader skips a record only for one of the reasons below, and counts
it; any other bad record raises DataError naming file, record and field.

    no_shared_prefix     HH-RLHF: the rejected dialogue does not start with the chosen one's prompt
    empty_response       chosen or rejected is empty or whitespace (occurs in HH, PandaLM,
                         AlpacaEval, UltraFeedback and the mix; Pair does not allow empty text)
    identical_responses  chosen and rejected are the same text: no preference to learn
    tie                  the source has no preference (equal UltraFeedback scores, AlpacaEval
                         preference 1.5), unless the loader is asked to keep ties; PandaLM always
                         keeps its ties (tie=True), for its two tie policies
    no_preference        AlpacaEval preference is null (the judge gave no answer)
    non_text_response    PandaLM: a response that is a JSON boolean, not text
    duplicate_pair       a row without an id (TRL's formats) whose prompt and responses repeat an
                         earlier row's: its id, derived from that content, would repeat

A record with several reasons is counted once, under the first: the source's own label before
the content checks. Records come through critcore.readers.rows_of, so every format also reads
tables; a refused record that another format reads gets a hint naming it (guess_format).
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable

from .errors import DataError
from .generated import GENERATED_KINDS, generated_pairs
from .readers import (Loaded, collect, degenerate, id_tag, in_memory, is_table, jsonl_records, local_only, rows_of,
                      text_field)
from .records import Pair, check_message, number

Convert = Callable[[int, str, Any], "Pair | str"]  # (index, where, record) -> a Pair or a skip reason


# --- Anthropic HH-RLHF -------------------------------------------------------------------------

_ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def _hh_messages(prompt: str, where: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:' -> user/assistant messages."""
    parts = _TURN.split(prompt)  # ['', 'Human', ' a', 'Assistant', ' b', ..., 'Assistant', '']
    if parts[0].strip() or len(parts) < 5:
        raise DataError(where, "chosen", "expected a dialogue starting with '\\n\\nHuman:'")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1:-2:2], parts[2:-2:2])]


def load_hh_rlhf(path_or_name="Anthropic/hh-rlhf", split="test", data_dir=None) -> Loaded:
    """Anthropic HH-RLHF: {chosen, rejected} full dialogues, from the hub or a local JSONL. The prompt
    is the chosen dialogue up to its final '\\n\\nAssistant:' (the DPO reference code's split); a
    rejected dialogue that does not start with it is skipped as 'no_shared_prefix', not guessed."""
    return _gather("hh-rlhf", path_or_name, rows_of(path_or_name, split, data_dir),
                   partial(_hh_rlhf, id_tag(path_or_name, split, data_dir), data_dir))


def _hh_rlhf(tag: str, data_dir: str | None, i, where, row):
    chosen, rejected = text_field(row, "chosen", where), text_field(row, "rejected", where)
    cut = chosen.rfind(_ASSISTANT)
    if cut < 0:
        raise DataError(where, "chosen", "no '\\n\\nAssistant:' turn")
    prompt = chosen[: cut + len(_ASSISTANT)]
    if not rejected.startswith(prompt):
        return "no_shared_prefix"
    c, r = chosen[len(prompt):].strip(), rejected[len(prompt):].strip()
    return degenerate(c, r) or Pair(id=f"hh-rlhf/{tag}/{i}", prompt=_hh_messages(prompt, where),
                                     chosen=c, rejected=r, subset=data_dir, source="hh-rlhf")


# --- PandaLM human test set --------------------------------------------------------------------

def pandalm_majority(votes: list[int]) -> int:
    """The label (0 tie, 1, 2) that at least two of three annotators gave; else a tie (0)."""
    return next((v for v in (0, 1, 2) if votes.count(v) >= 2), 0)


def load_pandalm(path_or_name) -> Loaded:
    """PandaLM testset-v1.json (a JSON list; local only, it is a GitHub file). The label is the
    majority of annotator1..3 (0 tie, 1 response1, 2 response2). Ties are kept, tie=True, so one set
    of scores gives both of PandaLM's tie policies (metrics.pandalm_accuracy); training leaves them
    out. A response that is a JSON boolean (a model's literal `true`) counts as 'non_text_response'."""
    path = local_only(path_or_name, "pandalm", "https://github.com/WeOpenML/PandaLM (data/testset-v1.json)")
    return _gather("pandalm", path, rows_of(path), _pandalm)


def _pandalm(i, where, row):
    idx = row.get("idx")
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise DataError(where, "idx", f"expected an integer, got {type(idx).__name__}")
    votes = []
    for k in ("annotator1", "annotator2", "annotator3"):
        v = row.get(k)
        if isinstance(v, bool) or v not in (0, 1, 2):
            raise DataError(where, k, f"expected 0, 1 or 2, got {v!r}")
        votes.append(v)
    label = pandalm_majority(votes)
    instruction, inp = text_field(row, "instruction", where), row.get("input", "")
    inp = "" if inp is None else inp
    if not isinstance(inp, str):
        raise DataError(where, "input", f"expected a string, got {type(inp).__name__}")
    if any(isinstance(row.get(k), bool) for k in ("response1", "response2")):
        return "non_text_response"
    r1, r2 = text_field(row, "response1", where), text_field(row, "response2", where)
    chosen, rejected = (r2, r1) if label == 2 else (r1, r2)
    meta = {"votes": votes, "cmp_key": row.get("cmp_key"), "motivation_app": row.get("motivation_app")}
    return degenerate(chosen, rejected) or Pair(
        id=f"pandalm/{idx}", prompt=instruction + (f"\n\n{inp}" if inp.strip() else ""),
        chosen=chosen, rejected=rejected, subset="pandalm", source="pandalm", tie=label == 0, meta=meta)


# --- RewardBench -------------------------------------------------------------------------------

def load_rewardbench(path_or_name="allenai/reward-bench", split="filtered") -> Loaded:
    """RewardBench (or the local RewardBench-shaped JSONL): prompt, chosen, rejected, chosen_model,
    rejected_model, subset, id. Ids are 'rewardbench/<id>'; the models go to meta."""
    return _gather("rewardbench", path_or_name, rows_of(path_or_name, split), _rewardbench)


def _rewardbench(i, where, row):
    rid = row.get("id")
    if rid is None:
        raise DataError(where, "id", "missing")
    c, r = text_field(row, "chosen", where), text_field(row, "rejected", where)
    meta = {k: row.get(k) for k in ("chosen_model", "rejected_model")}
    return degenerate(c, r) or Pair(id=f"rewardbench/{rid}", prompt=text_field(row, "prompt", where),
                                     chosen=c, rejected=r, subset=text_field(row, "subset", where),
                                     source="rewardbench", meta=meta)


# --- UltraFeedback binarized -------------------------------------------------------------------

def ultrafeedback_rating(gap: float) -> str:
    """GPT-4 score gap -> rating, as in the shared mix: <=1 slightly, <=3 better, else significantly."""
    return "slightly better" if gap <= 1 else "better" if gap <= 3 else "significantly better"


def _final_turn(row: dict, key: str, where: str) -> tuple[list[dict], str]:
    """Split a message list into (prompt messages, final assistant text)."""
    msgs = row.get(key)
    if msgs is None:
        raise DataError(where, key, "missing")
    if not isinstance(msgs, list) or len(msgs) < 2:
        raise DataError(where, key, "expected a list of at least two chat messages")
    for j, m in enumerate(msgs):
        check_message(m, where, f"{key}[{j}]")
    if msgs[-1]["role"] != "assistant":
        raise DataError(where, f"{key}[{len(msgs) - 1}]",
                        f"last message has role {msgs[-1]['role']!r}, not 'assistant'")
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"]


def load_ultrafeedback(path_or_name="HuggingFaceH4/ultrafeedback_binarized", split="test_prefs",
                       keep_ties: bool = False) -> Loaded:
    """UltraFeedback binarized: chosen/rejected message lists and GPT-4 scores (1-10); margin =
    score_chosen - score_rejected. Equal scores are skipped as 'tie', or kept with tie=True
    (margin 0, no rating) when keep_ties."""
    return _gather("ultrafeedback", path_or_name, rows_of(path_or_name, split),
                   partial(_ultrafeedback, id_tag(path_or_name, split), keep_ties))


def _ultrafeedback(tag: str, keep_ties: bool, i, where, row):
    prompt, c = _final_turn(row, "chosen", where)
    prompt_r, r = _final_turn(row, "rejected", where)
    if prompt_r != prompt:
        raise DataError(where, "rejected", "its prompt messages differ from those of 'chosen'")
    sc, sr = number(row, "score_chosen", where), number(row, "score_rejected", where)
    gap = sc - sr
    if gap < 0:
        raise DataError(where, "score_chosen", f"{sc} is below score_rejected {sr}")
    if gap == 0 and not keep_ties:
        return "tie"
    return degenerate(c, r) or Pair(id=f"ultrafeedback/{tag}/{i}", prompt=prompt, chosen=c, rejected=r,
                                     rating=ultrafeedback_rating(gap) if gap else None, margin=float(gap),
                                     source="ultrafeedback", tie=gap == 0,
                                     meta={"score_chosen": sc, "score_rejected": sr})


# --- AlpacaEval pairwise annotations ----------------------------------------------------------

def alpacaeval_rating(margin: float) -> str:
    """margin = 2*|preference-1.5| -> rating, as in the shared mix: <0.5 slightly, <0.9 better."""
    return "slightly better" if margin < 0.5 else "better" if margin < 0.9 else "significantly better"


def load_alpacaeval(path) -> Loaded:
    """AlpacaEval annotations (JSON list or JSONL; local only): instruction, output_1, output_2,
    generator_1, generator_2, preference in [1, 2], below 1.5 meaning output_1 is preferred.
    margin = 2*|preference-1.5|; preference 1.5 is skipped as 'tie', null as 'no_preference'."""
    path = local_only(path, "alpacaeval", "https://github.com/tatsu-lab/alpaca_eval (results/*/annotations.json)")
    return _gather("alpacaeval", path, rows_of(path), partial(_alpacaeval, id_tag(path, None)))


def _alpacaeval(tag: str, i, where, row):
    o1, o2 = text_field(row, "output_1", where), text_field(row, "output_2", where)
    instruction = text_field(row, "instruction", where)
    if "preference" not in row:
        raise DataError(where, "preference", "missing")
    if row["preference"] is None:
        return "no_preference"
    pref = number(row, "preference", where)
    if not 1 <= pref <= 2:
        raise DataError(where, "preference", f"{pref} is outside [1, 2]")
    if pref == 1.5:
        return "tie"
    first = pref < 1.5
    c, r = (o1, o2) if first else (o2, o1)
    g1, g2 = row.get("generator_1"), row.get("generator_2")
    margin = 2 * abs(pref - 1.5)
    return degenerate(c, r) or Pair(
        id=f"alpacaeval/{tag}/{i}", prompt=instruction, chosen=c, rejected=r,
        rating=alpacaeval_rating(margin), margin=margin, source="alpacaeval",
        meta={"preference": pref, "chosen_model": g1 if first else g2, "rejected_model": g2 if first else g1})


# --- critcore's own JSONL and TRL's preference formats -------------------------------------

def load_jsonl(path) -> Loaded:
    """critcore's JSONL (the shape `write_pairs` writes, and the shared mix's), or TRL's rows in a
    JSONL file (see load_trl). Like `read_pairs`, but pairs with an empty or identical response
    are counted and skipped, not refused."""
    if in_memory(path) or is_table(path):  # a table given as jsonl: read as TRL's rows are
        return _gather("jsonl", path, rows_of(path), _preference_row())
    path = Path(path)
    return _gather("jsonl", path, jsonl_records(path, guess_format), _preference_row())


def load_trl(path_or_name, split: str | None = None, data_dir: str | None = None) -> Loaded:
    """Rows with TRL's preference columns from any source (a file, a `save_to_disk` folder, a hub
    name, a Dataset, DatasetDict or DataFrame): standard or conversational with an explicit prompt,
    or conversational with an implicit one (the messages before the last, the same on both sides).
    Whole texts without a prompt are refused. A missing `id` is derived from the content (a row
    repeating an earlier one is skipped as 'duplicate_pair'); critcore's own columns are read as
    critcore JSONL reads them, other columns go to meta."""
    return _gather("trl", path_or_name, rows_of(path_or_name, split, data_dir, guess_format), _preference_row())


def derived_id(prompt, chosen: str, rejected: str) -> str:
    """A pair's id from its content: stable across runs, sources and row order."""
    text = json.dumps([prompt, chosen, rejected], ensure_ascii=False, sort_keys=True)
    return "pair/" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _completion(row: dict, key: str, where: str) -> str:
    """A completion of TRL's conversational explicit-prompt format: one assistant message (or text)."""
    value = row[key]
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or len(value) != 1:
        got = f"a list of {len(value)} messages" if isinstance(value, list) else type(value).__name__
        raise DataError(where, key, f"expected text or a list of one assistant message, got {got}")
    check_message(value[0], where, f"{key}[0]")
    if value[0]["role"] != "assistant":
        raise DataError(where, f"{key}[0].role", f"{value[0]['role']!r}, not 'assistant'")
    return value[0]["content"]


def _preference_row() -> Convert:
    """critcore's JSONL records and TRL's rows (load_trl) as pairs; ids derived where missing."""
    seen: set[str] = set()

    def convert(_, where, row):
        if not isinstance(row, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(row).__name__}")
        d = {k: v for k, v in row.items() if v is not None or k in ("id", "prompt", "chosen", "rejected")}
        for key in ("chosen", "rejected"):
            if d.get(key) is None:
                raise DataError(where, key, "missing")
        if isinstance(d["chosen"], list) and isinstance(d["rejected"], list) and d.get("prompt") is None:
            d["prompt"], d["chosen"] = _final_turn(d, "chosen", where)
            prompt_r, d["rejected"] = _final_turn(d, "rejected", where)
            if prompt_r != d["prompt"]:
                raise DataError(where, "rejected", "its prompt messages differ from those of 'chosen'")
        elif d.get("prompt") is None:
            raise DataError(where, "prompt", "missing" + (
                " (whole texts without a prompt, TRL's standard implicit-prompt format, do not say where the "
                "prompt ends: give a prompt column)" if isinstance(d["chosen"], str) else ""))
        else:
            d["chosen"], d["rejected"] = _completion(d, "chosen", where), _completion(d, "rejected", where)
        if isinstance(d["chosen"], str) and isinstance(d["rejected"], str):
            skip = degenerate(d["chosen"], d["rejected"])
            if skip:
                return skip
        if d.get("id") is None:
            d["id"] = derived_id(d["prompt"], d["chosen"], d["rejected"])
            if d["id"] in seen:
                return "duplicate_pair"
            seen.add(d["id"])
        return Pair.from_dict(d, where)

    return convert


# --- hints: which format reads a record -------------------------------------------------------

_SAME = {"jsonl": "trl"}  # formats that read records alike: never hinted for each other


def guess_format(record, exclude: str | None = None) -> str | None:
    """The format that reads `record` (its loader converts and validates it), or None; `exclude`:
    a format not to name (the one that just refused it)."""
    if not isinstance(record, dict):
        return None
    skip = {exclude, _SAME.get(exclude)}
    converters = {"pandalm": _pandalm, "alpacaeval": partial(_alpacaeval, "-"), "rewardbench": _rewardbench,
                  "ultrafeedback": partial(_ultrafeedback, "-", True), "hh-rlhf": partial(_hh_rlhf, "-", None),
                  "trl": _preference_row()}  # most specific first: an UltraFeedback row is also a TRL one
    for fmt, convert in converters.items():
        if fmt in skip:
            continue
        try:
            r = convert(0, "-", record)
            if isinstance(r, Pair):
                r.validate()
            return fmt
        except DataError:
            continue
    return None


def _gather(fmt: str, path, rows, convert: Convert) -> Loaded:
    """readers.collect, with a record another format reads refused with a hint naming that format."""
    def hinted(i, where, row):
        try:
            return convert(i, where, row)
        except DataError as e:
            other = guess_format(row, exclude=fmt)
            if other is None:
                raise
            raise DataError(e.where, e.field, f"{e.problem}; the record looks like format '{other}': "
                                              f"give {other}:PATH") from None

    return collect(fmt, path, rows, hinted)


# --- generated ---------------------------------------------------------------------------------

def load_generated(n: int = 64, seed: int = 0, split: str = "train", kinds: list[str] | None = None) -> Loaded:
    """The generated arithmetic / capital-city set with a known right answer (critcore.generated)."""
    pairs = generated_pairs(n, seed, split, kinds or GENERATED_KINDS)
    return Loaded(pairs, {}, "generated", f"generated:{split}", rows=len(pairs))


LOADERS: dict[str, Callable[..., Loaded]] = {
    "hh-rlhf": load_hh_rlhf, "pandalm": load_pandalm, "rewardbench": load_rewardbench,
    "ultrafeedback": load_ultrafeedback, "alpacaeval": load_alpacaeval, "jsonl": load_jsonl,
    "trl": load_trl, "generated": load_generated,
}
