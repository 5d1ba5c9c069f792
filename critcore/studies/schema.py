"""Study parameters: the schemas (defaults) of the quickstart, RQ1 and RQ2, their resolution, and
the critics and backbones they name."""
from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout (critcore/studies/ is two levels down)
NOTEBOOKS = PROJECT_ROOT / "notebooks"

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
# The defaults both RQ studies share: a small slice of the local suite and PandaLM, CPU-sized
# critic and training options (resolve_params deep-copies them per run).
SMALL_SLICE = {
    "eval_data": {"rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                                  "per_stratum": 4, "seed": 0},
                  "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 60, "seed": 0}},
    "sections": "${data}/reward-bench-local/sections.json",
    "critic_options": {"max_new_tokens": 48, "max_chars": 400, "batch_size": 32},
    "train": {"max_length": 256, "lr": 8.0e-5, "batch_size": 32, "micro_batch_size": 8},
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
        **SMALL_SLICE,
    },
    "rq2": {
        **COMMON, "study": "rq2", "notebook": "notebooks/rq2_scaling.ipynb",
        "description": "RQ2: RMs on nested training subsets with and without critiques; curves and worth-N.",
        "backbone": "minilm",
        "critics": {"none": "none", "smollm2": "smollm2"},  # exactly one No-Critiques baseline, one or more critics
        "sizes": [32, 64, 128, 256],  # nested subsets of train_data (one seeded permutation)
        "worth_metrics": ["Score", "PandaLM"],  # curves to compute worth-N on
        "train_data": {"format": "jsonl", "path": "${data}/mix/train.jsonl"},
        **SMALL_SLICE,
    },
}
NOTEBOOK_FOR = {study: schema["notebook"] for study, schema in SCHEMAS.items()}
SECTION_LABELS = {"chat": "Chat", "chat_hard": "Chat Hard", "safety": "Safety", "reasoning": "Reasoning", "score": "Score"}


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
    from ..experiment import expand, shared_data_dir

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
    from ..critique import Critic, make_critic

    critic = make_critic(spec)
    if critic is None or not options or isinstance(spec, Critic):
        return critic
    accepted = set(inspect.signature(type(critic).__init__).parameters) - {"self"}
    given = spec if isinstance(spec, dict) else {}
    kw = {k: v for k, v in options.items() if k in accepted and k not in given}
    return make_critic(spec, **kw) if kw else critic
