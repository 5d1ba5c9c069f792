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

A record with several reasons is counted once, under the first: the source's own label
(no_shared_prefix, tie, no_preference) before the content checks (empty, then identical).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .errors import DataError
from .generated import GENERATED_KINDS, generated_pairs
from .readers import Loaded, collect, degenerate, guess_format, id_tag, jsonl_records, local_only, rows_of, text_field
from .records import Pair, check_message, number


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
    """Anthropic HH-RLHF: {chosen, rejected} full dialogues, from the hub or a local JSONL.

    The prompt is the chosen dialogue up to its final '\\n\\nAssistant:' (as chat messages); the
    responses are what follows in each dialogue, stripped. This is the DPO reference code's
    split; where the rejected dialogue does not start with that prompt (a response that itself
    contains '\\n\\nAssistant:'), the row is skipped as 'no_shared_prefix' rather than guessed.
    """
    tag = id_tag(path_or_name, split, data_dir)

    def convert(i, where, row):
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

    return collect("hh-rlhf", path_or_name, rows_of(path_or_name, split, data_dir), convert)


# --- PandaLM human test set --------------------------------------------------------------------

def pandalm_majority(votes: list[int]) -> int:
    """The label (0 tie, 1, 2) that at least two of three annotators gave; else a tie (0)."""
    return next((v for v in (0, 1, 2) if votes.count(v) >= 2), 0)


def load_pandalm(path_or_name) -> Loaded:
    """PandaLM testset-v1.json (a JSON list; local only, it is a GitHub file).

    The label is the majority of annotator1..3 (0 tie, 1 response1, 2 response2); three different
    votes are a tie. Ties are kept, marked tie=True (chosen = response1), so one set of scores
    gives both of PandaLM's policies (metrics.pandalm_accuracy): ties dropped, and ties counted
    wrong. Training leaves tied pairs out. A response that is a JSON boolean instead of text (six
    in the real file: a model's literal `true`) is no response text: the pair is skipped and
    counted as 'non_text_response'.
    """
    path = local_only(path_or_name, "pandalm", "https://github.com/WeOpenML/PandaLM (data/testset-v1.json)")

    def convert(i, where, row):
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

    return collect("pandalm", path, rows_of(path), convert)


# --- RewardBench -------------------------------------------------------------------------------

def load_rewardbench(path_or_name="allenai/reward-bench", split="filtered") -> Loaded:
    """RewardBench (or the local RewardBench-shaped JSONL): prompt, chosen, rejected, chosen_model,
    rejected_model, subset, id. Ids are 'rewardbench/<id>'; the models go to meta."""

    def convert(i, where, row):
        rid = row.get("id")
        if rid is None:
            raise DataError(where, "id", "missing")
        c, r = text_field(row, "chosen", where), text_field(row, "rejected", where)
        meta = {k: row.get(k) for k in ("chosen_model", "rejected_model")}
        return degenerate(c, r) or Pair(id=f"rewardbench/{rid}", prompt=text_field(row, "prompt", where),
                                         chosen=c, rejected=r, subset=text_field(row, "subset", where),
                                         source="rewardbench", meta=meta)

    return collect("rewardbench", path_or_name, rows_of(path_or_name, split), convert)


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
    """UltraFeedback binarized: chosen/rejected message lists and GPT-4 scores (1-10).

    The prompt is the messages before the last (assistant) one; margin = score_chosen -
    score_rejected; rating from `ultrafeedback_rating`. Equal scores are skipped as 'tie', or
    kept with tie=True (margin 0, no rating) when keep_ties.
    """
    tag = id_tag(path_or_name, split)

    def convert(i, where, row):
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

    return collect("ultrafeedback", path_or_name, rows_of(path_or_name, split), convert)


# --- AlpacaEval pairwise annotations ----------------------------------------------------------

def alpacaeval_rating(margin: float) -> str:
    """margin = 2*|preference-1.5| -> rating, as in the shared mix: <0.5 slightly, <0.9 better."""
    return "slightly better" if margin < 0.5 else "better" if margin < 0.9 else "significantly better"


def load_alpacaeval(path) -> Loaded:
    """AlpacaEval annotations (JSON list or JSONL; local only): instruction, output_1, output_2,
    generator_1, generator_2, preference in [1, 2], below 1.5 meaning output_1 is preferred.

    margin = 2*|preference-1.5|; preference 1.5 is skipped as 'tie', null as 'no_preference'.
    """
    path = local_only(path, "alpacaeval", "https://github.com/tatsu-lab/alpaca_eval (results/*/annotations.json)")
    tag = path.stem

    def convert(i, where, row):
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

    return collect("alpacaeval", path, rows_of(path), convert)


# --- critcore's own JSONL (and the shared mix) -------------------------------------------------

def load_jsonl(path) -> Loaded:
    """critcore's JSONL (the shape `write_pairs` writes, and the shared mix's). Like `read_pairs`,
    but pairs with an empty or identical response are counted and skipped, not refused."""
    path = Path(path)

    def convert(_, where, d):
        if isinstance(d, dict) and isinstance(d.get("chosen"), str) and isinstance(d.get("rejected"), str):
            skip = degenerate(d["chosen"], d["rejected"])
            if skip:
                return skip
        try:
            return Pair.from_dict(d, where)
        except DataError as e:
            fmt = guess_format(d)
            if e.problem == "missing" and fmt not in (None, "jsonl"):
                raise DataError(where, e.field, f"missing; the record looks like format '{fmt}': give {fmt}:PATH") from None
            raise

    return collect("jsonl", path, jsonl_records(path), convert)


# --- generated ---------------------------------------------------------------------------------

def load_generated(n: int = 64, seed: int = 0, split: str = "train", kinds: list[str] | None = None) -> Loaded:
    """The generated arithmetic / capital-city set with a known right answer (critcore.generated)."""
    pairs = generated_pairs(n, seed, split, kinds or GENERATED_KINDS)
    return Loaded(pairs, {}, "generated", f"generated:{split}", rows=len(pairs))


LOADERS: dict[str, Callable[..., Loaded]] = {
    "hh-rlhf": load_hh_rlhf, "pandalm": load_pandalm, "rewardbench": load_rewardbench,
    "ultrafeedback": load_ultrafeedback, "alpacaeval": load_alpacaeval, "jsonl": load_jsonl,
    "generated": load_generated,
}
