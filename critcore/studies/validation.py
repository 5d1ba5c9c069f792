"""Dry runs: check a resolved study configuration without training, loading a model or using
the network (a Report of what was checked), and project its wall time."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import config as config_mod
from .. import data as data_mod
from ..backbones import check
from ..config import LLMStudy
from ..critique import OpenAICritic, make_critic
from ..run import resolve_sections
from .base import backbones_of, critics_of, is_baseline

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = PROJECT_ROOT / "notebooks"


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
            raise config_mod.ConfigError("invalid study parameters:\n" + "\n".join(f"  - {e}" for e in self.errors))

    def attempt(self, label: str, fn):
        try:
            out = fn()
            self.checks.append(f"{label}: {out}" if isinstance(out, str) else label)
            return out
        except Exception as e:  # noqa: BLE001 - every problem goes in the report
            self.errors.append(f"{label}: {e}")
            return None


def find_notebook(name: str | os.PathLike, base: Path | None = None) -> Path:
    """A notebook path as given, relative to `base` (the params file's folder) or the project root,
    or a name inside notebooks/."""
    name = Path(name)
    for cand in (name, *(([base / name, base.parent / name]) if base else []), PROJECT_ROOT / name, NOTEBOOKS / name.name):
        if cand.is_file():
            return cand.resolve()
    raise FileNotFoundError(f"notebook {name} not found (looked in the current folder, the project and {NOTEBOOKS})")


def notebook_parameters(notebook: str | os.PathLike) -> dict:
    """The names (and defaults) a notebook's `parameters` cell declares (papermill.inspect_notebook)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def describe_spec(spec, load: bool = True) -> str:
    """A one-line description of a data spec: local files are loaded and validated (load=True) or
    only checked to exist; hub datasets are checked for shape only (no network)."""
    parts = []
    for s in data_mod.parse_specs(spec):
        path = s.path
        if s.format == "generated":
            parts.append(f"generated {s.kwargs.get('split', 'train')}")
        elif data_mod._is_local(path):
            if not Path(path).expanduser().is_file():
                raise FileNotFoundError(f"{s.format}: no such file {path}")
            parts.append(f"{s.format} {path}")
        elif s.format in ("pandalm", "alpacaeval"):
            raise ValueError(f"{s.format} is local only, but {path!r} is not a local .json/.jsonl file")
        else:
            parts.append(f"{s.format} hub dataset {path} (shape checked, not downloaded)")
    text = " + ".join(parts)
    if load and all_local(spec):
        text += f": {len(data_mod.load(spec).pairs)} pairs"
    return text


def all_local(spec) -> bool:
    return all(s.format == "generated" or data_mod._is_local(s.path) for s in data_mod.parse_specs(spec))


def _check_train(train, backbone: str, overrides: dict) -> str:
    """The study's training options with a backbone's overrides: TrainConfig checks them."""
    cfg = config_mod.resolve(config_mod.TrainJob, {"train": {**config_mod.to_dict(train), **overrides}},
                             where="train").train
    return f"TrainConfig key {replace(cfg, backbone=backbone).key()}"


def _critic(spec, options, rep: Report, name: str) -> str:
    c = make_critic(spec, options)  # a local model name is checked here, without loading it
    if c is None:
        return "No-Critiques"
    key_env = c.backend.api_key_env if isinstance(c, OpenAICritic) else None  # its base_url was checked when built
    if key_env and not os.environ.get(key_env):
        rep.warnings.append(f"critic {name}: ${key_env} is not set here (needed when it runs)")
    return f"{c.identity} (config {c.config_hash})"


def validate(cfg, check_data: bool = True, base: Path | None = None) -> Report:
    """Check a resolved study configuration without training: its notebook, critics (built, no
    model loaded, no network beyond a name check), backbones (named, not loaded), training options,
    sizes, and the data (local files loaded and validated when check_data, hub names by shape)."""
    rep = Report(cfg.study)
    if cfg.notebook:
        rep.attempt("notebook", lambda: str(find_notebook(cfg.notebook, base)))
    if isinstance(cfg, LLMStudy):
        return _validate_llm_study(cfg, rep, check_data)
    critics = critics_of(cfg)
    for name, spec in critics.items():
        rep.attempt(f"critic {name}", lambda spec=spec, name=name: _critic(spec, cfg.critic_options, rep, name))
    if not any(is_baseline(s) for s in critics.values()):
        rep.warnings.append("no No-Critiques critic ('none'): no paired tests will be computed")
    for b in backbones_of(cfg):
        kind = rep.attempt(f"backbone {b.name}", lambda b=b: f"{b.backbone}: {check(b.backbone, offline_ok=True)}")
        if kind and "not checked" in kind:
            rep.warnings.append(f"backbone {b.name}: {b.backbone} could not be checked on the hub from here")
        rep.attempt(f"train config {b.name}", lambda b=b: _check_train(cfg.train, b.backbone, b.train))
        missing = [c for c in b.critics or [] if c not in critics]
        if missing:
            rep.errors.append(f"backbone {b.name}: critics {missing} are not in critics {list(critics)}")
    if len(getattr(cfg, "sizes", [0, 0])) < 2:
        rep.warnings.append("one size: no curve and no worth-N")
    if not cfg.train_data:
        rep.errors.append("train_data is required")
    else:
        rep.attempt("train_data", lambda: describe_spec(cfg.train_data, check_data))
    if cfg.validation_data:
        rep.attempt("validation_data", lambda: describe_spec(cfg.validation_data, check_data))
    if not cfg.eval_data:
        rep.errors.append("eval_data must be a non-empty mapping {name: spec}")
    for name, spec in (cfg.eval_data or {}).items():
        rep.attempt(f"eval_data {name}", lambda spec=spec: describe_spec(spec, check_data))
    sections = rep.attempt("sections", lambda: "none" if cfg.sections is None else ", ".join(resolve_sections(cfg.sections)))
    if check_data and not rep.errors:
        _check_loaded(cfg, rep, sections is not None)
    return rep


def _check_loaded(cfg, rep: Report, sections_ok: bool) -> None:
    """Checks that need the loaded data: enough training pairs, sections matching the eval sets."""
    n_train = len(data_mod.load(cfg.train_data).pairs) if all_local(cfg.train_data) else None
    if n_train is not None:
        wanted = max(getattr(cfg, "sizes", None) or [0])
        if wanted > n_train:
            rep.errors.append(f"sizes: the largest subset {wanted} exceeds the {n_train} training pairs")
        for b in backbones_of(cfg):
            if b.n_train and b.n_train > n_train:
                rep.warnings.append(f"backbone {b.name}: n_train {b.n_train} > {n_train} training pairs (all are used)")
    if cfg.sections and sections_ok:
        listed = {s for m in resolve_sections(cfg.sections).values() for s in m}
        hit = any(not all_local(spec) or listed & {x.subset for x in data_mod.load(spec).pairs}
                  for spec in cfg.eval_data.values())
        if not hit:
            rep.warnings.append("no eval set has a subset listed in sections: no section scores")


def _validate_llm_study(cfg, rep: Report, check_data: bool) -> Report:
    """The judge and metacritique studies: data, models, judges or critics, references."""
    rep.attempt("data", lambda: describe_spec(cfg.data, check_data))
    for name, spec in cfg.models.items():
        rep.attempt(f"model {name}", lambda spec=spec, name=name: _critic(spec, None, rep, name))
    if hasattr(cfg, "judges"):
        for i, j in enumerate(cfg.judges):
            for key in ("model", "critic"):
                value = getattr(j, key)
                if value is not None and value not in cfg.models:
                    rep.errors.append(f"judges[{i}].{key}: {value!r} is not in models {list(cfg.models)}")
        if cfg.sections:
            rep.attempt("sections", lambda: ", ".join(resolve_sections(cfg.sections)))
    else:
        for label, spec in cfg.critics.items():
            if not (isinstance(spec, str) and spec in cfg.models):
                rep.attempt(f"critic {label}", lambda spec=spec, label=label: _critic(spec, None, rep, label))
        ref = cfg.reference
        if (ref.critic is None) == (ref.file is None):
            rep.errors.append("reference: give exactly one of critic (a name in models) or file")
        elif ref.critic is not None and ref.critic not in cfg.models:
            rep.errors.append(f"reference.critic: {ref.critic!r} is not in models {list(cfg.models)}")
        elif ref.file is not None and not Path(ref.file).is_file():
            rep.errors.append(f"reference.file: no such file {ref.file}")
        if not (isinstance(cfg.evaluator, str) and cfg.evaluator in cfg.models):
            rep.attempt("evaluator", lambda: _critic(cfg.evaluator, None, rep, "evaluator"))
    for run_dir in cfg.rq1_runs:
        if not Path(run_dir).is_dir():
            rep.warnings.append(f"rq1_runs: no folder {run_dir} (skipped)")
    return rep
