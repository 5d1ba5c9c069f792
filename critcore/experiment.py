"""One reward-model experiment, as the CLI and the notebooks run it: load the data specs, add
critiques from one critic to every split, train (or sweep learning rates on validation), evaluate,
and flatten the results into a table row."""
from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path

import yaml

from . import atomic
from . import data as data_mod
from .critique import augment, check_same_critic, make_critic
from .data import Pair
from .evaluate import evaluate
from .metrics import load_sections
from .train import TrainConfig, lr_sweep, train

SECTION_NAMES = {"chat": "Chat", "chat_hard": "Chat Hard", "safety": "Safety", "reasoning": "Reasoning", "score": "Score"}


def shared_data_dir() -> Path:
    """$CRITCORE_DATA, else ../shared/data beside the project (where tests and CI find it)."""
    if os.environ.get("CRITCORE_DATA"):
        return Path(os.environ["CRITCORE_DATA"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base.parent / "shared" / "data").is_dir():
            return (base.parent / "shared" / "data").resolve()
    return Path.cwd().parent / "shared" / "data"


def expand(value, data_dir: Path | None = None):
    """Replace ${data} in every string of a params structure with the shared data directory."""
    data_dir = data_dir or shared_data_dir()
    if isinstance(value, str):
        return re.sub(r"\$\{data\}", str(data_dir), value)
    if isinstance(value, dict):
        return {k: expand(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, data_dir) for v in value]
    return value


def load_params(path: str | os.PathLike | None = None, **overrides) -> dict:
    """A params YAML (or {}) with `overrides` applied on top and ${data} expanded."""
    params = {}
    if path:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
        if not isinstance(params, dict):
            raise ValueError(f"{path}: expected a mapping of parameters at the top level")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return expand(params)


def load_pairs(spec) -> list[Pair]:
    """Pairs from a dataset spec (see critcore.data.load); prints counted skips."""
    loaded = data_mod.load(spec)
    if loaded.skipped:
        print(f"{loaded.path}: skipped {loaded.skipped}")
    return loaded.pairs


def train_config(params: dict) -> TrainConfig:
    cfg = dict(params.get("train") or {})
    if params.get("backbone"):
        cfg["backbone"] = params["backbone"]
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**cfg)


def run_rm(config: TrainConfig, train_pairs: list[Pair], val_pairs: list[Pair] | None,
           eval_sets: dict[str, list[Pair]], out_dir: str | os.PathLike, critic=None,
           critique_cache=None, lrs: list[float] | None = None, sections: dict | None = None,
           progress: bool = True) -> dict:
    """Critique every split with `critic` (None = No-Critiques), train, evaluate. Returns the
    evaluation summary with the training summary under "train" and the sweep under "sweep"."""
    out = Path(out_dir)
    critic = make_critic(critic)
    if critic is not None:
        train_pairs = augment(train_pairs, critic, critique_cache, progress=progress)
        val_pairs = augment(val_pairs, critic, critique_cache, progress=progress) if val_pairs else val_pairs
        eval_sets = {k: augment(v, critic, critique_cache, progress=progress) for k, v in eval_sets.items()}
    for split in ([val_pairs] if val_pairs else []) + list(eval_sets.values()):
        check_same_critic(train_pairs, split)
    sweep = None
    if lrs:
        result, sweep = lr_sweep(config, lrs, train_pairs, val_pairs, out / "sweep", progress)
    else:
        result = train(config, train_pairs, val_pairs, out / "train", progress)
    summary = evaluate(result.model, eval_sets, out / "eval", sections=sections, max_length=config.max_length,
                       with_critiques=config.with_critiques)
    summary["train"] = result.summary
    summary["sweep"] = sweep
    summary["critic"] = critic.identity if critic else "none"
    atomic.write_json(out / "eval" / "summary.json", summary)
    return summary


def run_from_params(params: dict, progress: bool = True) -> dict:
    """The `critcore train` job: a params dict with backbone, critic, train_data, validation_data,
    eval_data {name: spec}, sections, train {TrainConfig fields}, lr_sweep, critique_cache, out."""
    for key in ("train_data", "out"):
        if not params.get(key):
            raise ValueError(f"params: '{key}' is required")
    config = train_config(params)  # bad options fail before any data loads
    train_pairs = load_pairs(params["train_data"])
    val_pairs = load_pairs(params["validation_data"]) if params.get("validation_data") else None
    eval_sets = {name: load_pairs(spec) for name, spec in (params.get("eval_data") or {}).items()}
    sections = load_sections(params["sections"]) if params.get("sections") else None
    return run_rm(config, train_pairs, val_pairs, eval_sets, params["out"],
                  critic=params.get("critic"), critique_cache=params.get("critique_cache"),
                  lrs=params.get("lr_sweep"), sections=sections, progress=progress)


def _pct(ci: dict | None) -> dict:
    if not ci or ci.get("acc") is None:
        return {"acc": None, "lo": None, "hi": None}
    return {k: round(100 * ci[k], 1) if ci.get(k) is not None else None for k in ("acc", "lo", "hi")}


def results_row(summary: dict, rewardbench: str = "rewardbench", pandalm: str = "pandalm") -> dict:
    """Section scores, Score and PandaLM accuracy (in %) with 95% CIs, as flat columns:
    `Chat`, `Chat lo`, `Chat hi`, ..., `PandaLM`, `PandaLM lo`, `PandaLM hi`."""
    row = {}
    sections = (summary.get(rewardbench) or {}).get("sections") or {}
    for key, name in SECTION_NAMES.items():
        ci = _pct(sections.get(key))
        row.update({name: ci["acc"], f"{name} lo": ci["lo"], f"{name} hi": ci["hi"]})
    pl = summary.get(pandalm) or {}
    ci = _pct((pl.get("pandalm") or {}).get("drop") or pl.get("overall"))
    row.update({"PandaLM": ci["acc"], "PandaLM lo": ci["lo"], "PandaLM hi": ci["hi"]})
    return row
