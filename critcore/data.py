"""Preference pairs from files: JSONL I/O, the dataset loaders, data specs and sampling (the
record itself, `Pair`, is critcore.records)."""
from __future__ import annotations

import inspect
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import atomic
from .errors import DataError
from .generated import GENERATED_KINDS, generated_pairs
from .records import RATINGS, Pair, check_message, number, prompt_text  # noqa: F401 - RATINGS, prompt_text: public API


def write_pairs(path, pairs: Iterable[Pair]) -> None:
    """Write pairs as JSONL, atomically."""
    atomic.write_jsonl(path, (p.to_dict() for p in pairs))


def read_pairs(path) -> list[Pair]:
    """Read critcore's JSONL strictly: every record is validated, nothing is skipped.

    The shared training mix holds a few degenerate pairs (empty or identical responses), which
    this refuses; `load_jsonl` counts and skips those instead.
    """
    return [Pair.from_dict(d, where) for _, where, d in jsonl_records(Path(path))]


# ---------------------------------------------------------------------------------------------
# Dataset loaders. Each returns a `Loaded`. A loader skips a record only for one of the reasons
# below, and counts it; any other bad record raises DataError naming file, record and field.
#
#   no_shared_prefix     HH-RLHF: the rejected dialogue does not start with the chosen one's prompt
#   empty_response       chosen or rejected is empty or whitespace (occurs in HH, PandaLM,
#                        AlpacaEval, UltraFeedback and the mix; Pair does not allow empty text)
#   identical_responses  chosen and rejected are the same text: no preference to learn
#   tie                  the source has no preference (equal UltraFeedback scores, AlpacaEval
#                        preference 1.5), unless the loader is asked to keep ties; PandaLM always
#                        keeps its ties (tie=True), for its two tie policies
#   no_preference        AlpacaEval preference is null (the judge gave no answer)
#   non_text_response    PandaLM: a response that is a JSON boolean, not text
#
# A record with several reasons is counted once, under the first: the source's own label
# (no_shared_prefix, tie, no_preference) before the content checks (empty, then identical).
# ---------------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """What a loader read: the pairs, the skipped records counted by reason, and where from."""

    pairs: list[Pair]
    skipped: dict[str, int]
    source: str
    path: str
    rows: int = 0  # records read; rows == len(pairs) + sum(skipped) unless `load` applied a limit

    def __len__(self) -> int:
        return len(self.pairs)


def _read_bytes(path: Path) -> bytes:
    """A file's bytes (gunzipped when it is gzip); every reason it cannot be read is a DataError."""
    import gzip

    if not str(path):
        raise DataError("dataset spec", "path", "empty path")
    try:
        if path.is_dir():
            raise DataError(str(path), None, "is a directory, not a file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(str(path), None, "no such file") from None
    except PermissionError:
        raise DataError(str(path), None, "permission denied: the file cannot be read") from None
    except OSError as e:
        raise DataError(str(path), None, f"cannot be read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(str(path), None, f"a damaged gzip file ({e})") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(str(path), None, "is UTF-16 text; save it as UTF-8")
    return raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, as Windows editors write


def _decode(raw: bytes, path: Path, base: int = 0, lineno: int | None = None) -> str:
    """UTF-8 text; a bad byte is reported with its line and byte offset in the file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno if lineno is not None else raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}", None, f"byte {base + e.start} (0x{raw[e.start]:02x}) is not UTF-8; "
                                                "is the file Latin-1 or Windows-1252? Save it as UTF-8") from None


_FORMAT_KEYS = (  # (format, keys a record of it has), to say which format reads a mismatched file
    ("pandalm", {"response1", "response2", "annotator1"}),
    ("alpacaeval", {"output_1", "output_2", "preference"}),
    ("rewardbench", {"prompt", "chosen", "rejected", "subset", "chosen_model"}),
    ("ultrafeedback", {"chosen", "rejected", "score_chosen", "score_rejected"}),
    ("jsonl", {"id", "prompt", "chosen", "rejected"}),
    ("hh-rlhf", {"chosen", "rejected"}),
)


def guess_format(record) -> str | None:
    """The critcore format whose records look like `record` (by their keys), or None."""
    if not isinstance(record, dict):
        return None
    return next((fmt for fmt, keys in _FORMAT_KEYS if keys <= set(record)), None)


def jsonl_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(index, 'file:line', record) for each non-blank line of a JSONL file (or .jsonl.gz). A UTF-8
    BOM and CRLF line ends are accepted; a bad byte, a JSON array or a broken line is a DataError
    naming the line."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw.lstrip()[:1] == b"[":
        hint = ""
        try:
            first = json.loads(_decode(raw, path))[0]
            fmt = guess_format(first)
            hint = f"; its records look like format '{fmt}'" if fmt else ""
        except (ValueError, IndexError, KeyError, DataError):
            pass
        raise DataError(f"{path}:1", None, "this file is one JSON array, not JSON Lines (one object per line)"
                        f"{hint}: give the format that reads it, e.g. pandalm:PATH or alpacaeval:PATH")
    i, offset = 0, 0
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            d = json.loads(_decode(line, path, start, lineno))
        except json.JSONDecodeError as e:
            raise DataError(where, None, f"invalid JSON at column {e.colno} ({e.msg})") from None
        yield i, where, d
        i += 1


def _json_list_rows(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(index, 'file[index]', record) for each element of a JSON list."""
    try:
        data = json.loads(_decode(_read_bytes(path), path))
    except json.JSONDecodeError as e:
        hint = " (the file looks like JSON Lines: give format jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path}:{e.lineno}", None, f"invalid JSON ({e.msg}){hint}") from None
    if not isinstance(data, list):
        raise DataError(str(path), None, f"expected a JSON list, got {type(data).__name__}")
    for i, d in enumerate(data):
        yield i, f"{path}[{i}]", d


def _is_local(path_or_name) -> bool:
    p = Path(path_or_name)
    try:
        exists = p.exists()
    except OSError:  # a folder on the way cannot be entered: it is a local path all the same
        exists = True
    return exists or p.suffix in (".json", ".jsonl", ".gz") or str(path_or_name).startswith(("/", ".", "~"))


def _hub_rows(name: str, split: str, data_dir: str | None) -> Iterator[tuple[int, str, Any]]:
    try:
        import datasets  # lazy: heavy, and only needed for the hub
    except ImportError as e:
        raise ImportError(f"loading {name!r} from the Hugging Face hub needs the 'datasets' package") from e
    ds = datasets.load_dataset(name, data_dir=data_dir, split=split)
    for i, row in enumerate(ds):
        yield i, f"{name}:{split}[{i}]", row


def _rows(path_or_name, split=None, data_dir=None) -> Iterator[tuple[int, str, dict]]:
    """Records of a local .json (list) / .jsonl file, or of a hub dataset; each must be an object."""
    if _is_local(path_or_name):
        p = Path(path_or_name).expanduser()
        rows = _json_list_rows(p) if p.name.removesuffix(".gz").endswith(".json") else jsonl_records(p)
    else:
        rows = _hub_rows(str(path_or_name), split, data_dir)
    for i, where, d in rows:
        if not isinstance(d, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(d).__name__}")
        yield i, where, d


def _tag(path_or_name, split, data_dir=None) -> str:
    """The id infix: the file's stem, or the hub split (with its data_dir)."""
    if _is_local(path_or_name):
        return Path(path_or_name).stem
    return f"{data_dir}/{split}" if data_dir else split


def _local_only(path, fmt: str, upstream: str) -> Path:
    if not _is_local(path):
        raise DataError(str(path), None, f"not a local .json/.jsonl file; {fmt} is not on the Hugging Face hub, "
                                         f"download it from {upstream}")
    return Path(path).expanduser()


def _text(row: dict, key: str, where: str) -> str:
    if row.get(key) is None:
        raise DataError(where, key, "missing")
    if not isinstance(row[key], str):
        raise DataError(where, key, f"expected a string, got {type(row[key]).__name__}")
    return row[key]


def _degenerate(chosen: str, rejected: str) -> str | None:
    """The skip reason for a pair with no usable preference, or None."""
    if not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen.strip() == rejected.strip():
        return "identical_responses"
    return None


def _collect(source: str, path, rows: Iterable[tuple[int, str, Any]], convert: Callable[..., Pair | str]) -> Loaded:
    """Gather convert(index, where, record), a Pair or a skip reason, into a Loaded; validate, refuse duplicate ids."""
    out = Loaded([], {}, source, str(path))
    first: dict[str, str] = {}
    for i, where, d in rows:
        r = convert(i, where, d)
        out.rows += 1
        if isinstance(r, str):
            out.skipped[r] = out.skipped.get(r, 0) + 1
            continue
        r.validate(where)
        if r.id in first:
            raise DataError(where, "id", f"duplicate id {r.id!r} (first at {first[r.id]})")
        first[r.id] = where
        out.pairs.append(r)
    return out


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
    tag = _tag(path_or_name, split, data_dir)

    def convert(i, where, row):
        chosen, rejected = _text(row, "chosen", where), _text(row, "rejected", where)
        cut = chosen.rfind(_ASSISTANT)
        if cut < 0:
            raise DataError(where, "chosen", "no '\\n\\nAssistant:' turn")
        prompt = chosen[: cut + len(_ASSISTANT)]
        if not rejected.startswith(prompt):
            return "no_shared_prefix"
        c, r = chosen[len(prompt):].strip(), rejected[len(prompt):].strip()
        return _degenerate(c, r) or Pair(id=f"hh-rlhf/{tag}/{i}", prompt=_hh_messages(prompt, where),
                                         chosen=c, rejected=r, subset=data_dir, source="hh-rlhf")

    return _collect("hh-rlhf", path_or_name, _rows(path_or_name, split, data_dir), convert)


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
    path = _local_only(path_or_name, "pandalm", "https://github.com/WeOpenML/PandaLM (data/testset-v1.json)")

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
        instruction, inp = _text(row, "instruction", where), row.get("input", "")
        inp = "" if inp is None else inp
        if not isinstance(inp, str):
            raise DataError(where, "input", f"expected a string, got {type(inp).__name__}")
        if any(isinstance(row.get(k), bool) for k in ("response1", "response2")):
            return "non_text_response"
        r1, r2 = _text(row, "response1", where), _text(row, "response2", where)
        chosen, rejected = (r2, r1) if label == 2 else (r1, r2)
        meta = {"votes": votes, "cmp_key": row.get("cmp_key"), "motivation_app": row.get("motivation_app")}
        return _degenerate(chosen, rejected) or Pair(
            id=f"pandalm/{idx}", prompt=instruction + (f"\n\n{inp}" if inp.strip() else ""),
            chosen=chosen, rejected=rejected, subset="pandalm", source="pandalm", tie=label == 0, meta=meta)

    return _collect("pandalm", path, _rows(path), convert)


# --- RewardBench -------------------------------------------------------------------------------

def load_rewardbench(path_or_name="allenai/reward-bench", split="filtered") -> Loaded:
    """RewardBench (or the local RewardBench-shaped JSONL): prompt, chosen, rejected, chosen_model,
    rejected_model, subset, id. Ids are 'rewardbench/<id>'; the models go to meta."""

    def convert(i, where, row):
        rid = row.get("id")
        if rid is None:
            raise DataError(where, "id", "missing")
        c, r = _text(row, "chosen", where), _text(row, "rejected", where)
        meta = {k: row.get(k) for k in ("chosen_model", "rejected_model")}
        return _degenerate(c, r) or Pair(id=f"rewardbench/{rid}", prompt=_text(row, "prompt", where),
                                         chosen=c, rejected=r, subset=_text(row, "subset", where),
                                         source="rewardbench", meta=meta)

    return _collect("rewardbench", path_or_name, _rows(path_or_name, split), convert)


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
    tag = _tag(path_or_name, split)

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
        return _degenerate(c, r) or Pair(id=f"ultrafeedback/{tag}/{i}", prompt=prompt, chosen=c, rejected=r,
                            rating=ultrafeedback_rating(gap) if gap else None, margin=float(gap),
                            source="ultrafeedback", tie=gap == 0,
                            meta={"score_chosen": sc, "score_rejected": sr})

    return _collect("ultrafeedback", path_or_name, _rows(path_or_name, split), convert)


# --- AlpacaEval pairwise annotations ----------------------------------------------------------

def alpacaeval_rating(margin: float) -> str:
    """margin = 2*|preference-1.5| -> rating, as in the shared mix: <0.5 slightly, <0.9 better."""
    return "slightly better" if margin < 0.5 else "better" if margin < 0.9 else "significantly better"


def load_alpacaeval(path) -> Loaded:
    """AlpacaEval annotations (JSON list or JSONL; local only): instruction, output_1, output_2,
    generator_1, generator_2, preference in [1, 2], below 1.5 meaning output_1 is preferred.

    margin = 2*|preference-1.5|; preference 1.5 is skipped as 'tie', null as 'no_preference'.
    """
    path = _local_only(path, "alpacaeval", "https://github.com/tatsu-lab/alpaca_eval (results/*/annotations.json)")
    tag = path.stem

    def convert(i, where, row):
        o1, o2 = _text(row, "output_1", where), _text(row, "output_2", where)
        instruction = _text(row, "instruction", where)
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
        return _degenerate(c, r) or Pair(
            id=f"alpacaeval/{tag}/{i}", prompt=instruction, chosen=c, rejected=r,
            rating=alpacaeval_rating(margin), margin=margin, source="alpacaeval",
            meta={"preference": pref, "chosen_model": g1 if first else g2, "rejected_model": g2 if first else g1})

    return _collect("alpacaeval", path, _rows(path), convert)


# --- critcore's own JSONL (and the shared mix) -------------------------------------------------

def load_jsonl(path) -> Loaded:
    """critcore's JSONL (the shape `write_pairs` writes, and the shared mix's). Like `read_pairs`,
    but pairs with an empty or identical response are counted and skipped, not refused."""
    path = Path(path)

    def convert(_, where, d):
        if isinstance(d, dict) and isinstance(d.get("chosen"), str) and isinstance(d.get("rejected"), str):
            skip = _degenerate(d["chosen"], d["rejected"])
            if skip:
                return skip
        try:
            return Pair.from_dict(d, where)
        except DataError as e:
            fmt = guess_format(d)
            if e.problem == "missing" and fmt not in (None, "jsonl"):
                raise DataError(where, e.field, f"missing; the record looks like format '{fmt}': give {fmt}:PATH") from None
            raise

    return _collect("jsonl", path, jsonl_records(path), convert)


# --- dispatch and sampling ---------------------------------------------------------------------

def load_generated(n: int = 64, seed: int = 0, split: str = "train", kinds: list[str] | None = None) -> Loaded:
    """The generated arithmetic / capital-city set with a known right answer (critcore.generated)."""
    pairs = generated_pairs(n, seed, split, kinds or GENERATED_KINDS)
    return Loaded(pairs, {}, "generated", f"generated:{split}", rows=len(pairs))


LOADERS: dict[str, Callable[..., Loaded]] = {
    "hh-rlhf": load_hh_rlhf, "pandalm": load_pandalm, "rewardbench": load_rewardbench,
    "ultrafeedback": load_ultrafeedback, "alpacaeval": load_alpacaeval, "jsonl": load_jsonl,
    "generated": load_generated,
}
SAMPLING = ("limit", "seed", "stratify", "per_stratum")


@dataclass
class Spec:
    """A checked dataset spec: the format, its loader's keyword arguments (the path under the
    loader's first parameter, if it has one) and the sampling options."""

    format: str
    kwargs: dict
    limit: int | None = None
    seed: int = 0
    stratify: Any = "subset"
    per_stratum: int | None = None

    @property
    def path(self):
        """The path given, else the loader's default (a hub name), else None (generated data)."""
        name = _path_param(self.format)
        if name is None:
            return None
        default = inspect.signature(LOADERS[self.format]).parameters[name].default
        return self.kwargs.get(name, None if default is inspect.Parameter.empty else default)


def _path_param(fmt: str) -> str | None:
    first = next(iter(inspect.signature(LOADERS[fmt]).parameters))
    return first if first in ("path", "path_or_name") else None


def spec_dict(spec) -> dict:
    """A data spec as a mapping. A string is a JSON mapping when it starts with '{', FORMAT:PATH
    when it starts with a known format, a format alone (its hub default), or else a path to
    critcore JSONL; a path may hold ':'."""
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, os.PathLike):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DataError("dataset spec", None, f"expected a mapping, FORMAT:PATH or a path, got {type(spec).__name__}")
    if spec.lstrip().startswith("{"):  # a mapping written as JSON, as --critic takes one
        try:
            return spec_dict(json.loads(spec))
        except ValueError as e:
            raise DataError("dataset spec", None, f"{spec!r} is not a valid JSON mapping ({e})") from None
    fmt, sep, path = spec.partition(":")
    if sep and fmt in LOADERS:
        return {"format": fmt, "path": path}
    if spec in LOADERS:
        return {"format": spec}
    if sep and re.fullmatch(r"[A-Za-z][\w-]+", fmt) and not Path(spec).expanduser().exists():
        raise DataError("dataset spec", "format", f"unknown format {fmt!r} in {spec!r}; expected one of "
                                                  f"{', '.join(LOADERS)} (or a path to critcore JSONL)")
    return {"format": "jsonl", "path": spec}


def parse_spec(spec) -> Spec:
    """Check one data spec (see spec_dict; a mapping holds format, path, the sampling options
    limit, seed, stratify, per_stratum, and the loader's keyword arguments) without reading
    anything. A list of specs is checked with parse_specs."""
    spec = spec_dict(spec)
    fmt = spec.pop("format", None)
    if fmt not in LOADERS:
        raise DataError("dataset spec", "format", f"unknown format {fmt!r}; expected one of {', '.join(LOADERS)}")
    out = Spec(fmt, {}, spec.pop("limit", None), spec.pop("seed", 0), spec.pop("stratify", "subset"),
               spec.pop("per_stratum", None))
    for name in ("limit", "per_stratum"):
        v = getattr(out, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise DataError("dataset spec", name, f"must be a positive integer, got {v!r}")
    if isinstance(out.seed, bool) or not isinstance(out.seed, int):
        raise DataError("dataset spec", "seed", f"must be an integer, got {out.seed!r}")
    params = inspect.signature(LOADERS[fmt]).parameters
    path_name = _path_param(fmt)
    path = spec.pop("path", None)
    if path is not None:
        if path_name is None:
            raise DataError("dataset spec", "path", f"format {fmt!r} takes no path")
        if not str(path).strip():
            raise DataError("dataset spec", "path", f"empty path (give {fmt}:PATH)")
        spec[path_name] = str(path)
    if "tie_policy" in spec and fmt == "pandalm":
        raise DataError("dataset spec", "tie_policy", "no longer an option: PandaLM keeps its ties and every "
                                                      "evaluation reports both policies (ties dropped, ties wrong)")
    unknown = sorted(set(spec) - set(params))
    if unknown:
        options = ", ".join((["path"] if path_name else []) + list(SAMPLING) + [p for p in params if p != path_name])
        raise DataError("dataset spec", unknown[0], f"not an option of format {fmt!r}; options: {options}")
    if path_name and path_name not in spec and params[path_name].default is inspect.Parameter.empty:
        raise DataError("dataset spec", "path", f"format {fmt!r} needs a path")
    if "seed" in params:  # a loader that makes its data (generated) takes the seed too
        spec["seed"] = out.seed
    out.kwargs = spec
    return out


def parse_specs(spec) -> list[Spec]:
    """One spec, or a list of them (loaded one after the other), checked."""
    specs = spec if isinstance(spec, list) else [spec]
    if not specs:
        raise DataError("dataset spec", None, "an empty list of specs")
    return [parse_spec(s) for s in specs]


def describe_skips(loaded: Loaded) -> str:
    """"FILE: skipped N (reason n, ...)", or "" when nothing was skipped."""
    if not loaded.skipped:
        return ""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(loaded.skipped.items()))
    return f"{loaded.path}: skipped {sum(loaded.skipped.values())} of {loaded.rows} records ({reasons})"


_MEMO: dict[str, Loaded] = {}  # local files already loaded in this process, by spec and file stamp


def _load_one(s: Spec) -> Loaded:
    path = s.path
    stamp = None
    try:
        if path is not None and Path(str(path)).expanduser().is_file():
            st = Path(str(path)).expanduser().stat()
            stamp = (st.st_size, st.st_mtime_ns)
    except OSError:  # not memoised; the loader says what is wrong
        stamp = None
    if stamp is None:
        return LOADERS[s.format](**s.kwargs)
    key = json.dumps([s.format, s.kwargs, stamp], sort_keys=True, default=str)
    if key not in _MEMO:
        _MEMO[key] = LOADERS[s.format](**s.kwargs)
        if len(_MEMO) > 16:
            _MEMO.pop(next(iter(_MEMO)))
    hit = _MEMO[key]
    return Loaded(list(hit.pairs), dict(hit.skipped), hit.source, hit.path, hit.rows)


def load(spec) -> Loaded:
    """Load a dataset from a data spec (see parse_spec), or a list of specs one after the other. A
    limit applies `sample` (stratified by subset unless stratify is null) after loading; skipped
    counts are those of the full load. No pairs at all is a DataError naming the file and the
    skips."""
    parts = []
    for s in parse_specs(spec):
        loaded = _load_one(s)
        if not loaded.pairs:
            skips = describe_skips(loaded)
            raise DataError(loaded.path, None, "no pairs" + (f": {skips.split(': ', 1)[1]}" if skips else
                                                             " (the file holds no records)"))
        if s.limit is not None or s.per_stratum is not None:
            loaded.pairs = sample(loaded.pairs, s.limit, s.seed, stratify=s.stratify, per_stratum=s.per_stratum)
        parts.append(loaded)
    if len(parts) == 1:
        return parts[0]
    skipped = sum((Counter(p.skipped) for p in parts), Counter())
    return Loaded([p for part in parts for p in part.pairs], dict(skipped), "+".join(p.source for p in parts),
                  " + ".join(p.path for p in parts), sum(p.rows for p in parts))


def sample(pairs: list[Pair], n: int | None = None, seed: int = 0,
           stratify: str | Callable[[Pair], Any] | None = "subset", per_stratum: int | None = None) -> list[Pair]:
    """A deterministic sample of `pairs`, kept in input order.

    Without stratify: n pairs drawn with `seed`. With stratify (a Pair attribute or a key
    function): n is shared among strata in proportion to their sizes (largest remainder), and
    per_stratum is a floor: every stratum gives at least min(per_stratum, its size), so the total
    may exceed n; with n None each stratum gives exactly min(per_stratum, its size).
    """
    if n is not None and n < 0 or per_stratum is not None and per_stratum < 0:
        raise ValueError("n and per_stratum must be non-negative")
    rng = random.Random(seed)
    if stratify is None or (n is None and per_stratum is None):
        if n is None or n >= len(pairs):
            return list(pairs)
        return [pairs[i] for i in sorted(rng.sample(range(len(pairs)), n))]
    key = stratify if callable(stratify) else (lambda p: getattr(p, stratify))
    groups: dict[Any, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(key(p), []).append(i)
    names = sorted(groups, key=str)
    quota = dict.fromkeys(names, 0)
    if n is not None:
        n = min(n, len(pairs))
        exact = {g: n * len(groups[g]) / len(pairs) for g in names}
        quota = {g: int(exact[g]) for g in names}
        for g in sorted(names, key=lambda g: exact[g] - quota[g], reverse=True)[: n - sum(quota.values())]:
            quota[g] += 1
    if per_stratum is not None:
        quota = {g: max(quota[g], min(per_stratum, len(groups[g]))) for g in names}
    keep = [i for g in names for i in rng.sample(groups[g], quota[g])]
    return [pairs[i] for i in sorted(keep)]


def nested_subsets(pairs: list[Pair], sizes: Iterable[int], seed: int = 0) -> dict[int, list[Pair]]:
    """Nested subsets for data-scaling studies: prefixes of one seeded permutation, by size."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    out = {}
    for s in sizes:
        if not 0 <= s <= len(pairs):
            raise ValueError(f"subset size {s} is outside [0, {len(pairs)}]")
        out[s] = [pairs[i] for i in order[:s]]
    return out
