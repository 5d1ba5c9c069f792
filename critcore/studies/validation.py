"""Dry runs: check a resolved study configuration without training, loading a model or using
the network (a Report of what was checked). Each study registers its own checks (critcore.config.
register), built from the ones here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import data as data_mod
from ..readers import is_local
from ..backbones import check
from ..errors import ConfigError
from ..params import STUDIES
from ..critique import make_critic
from ..splits import resolve_sections
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

    def text(self, brief: bool = False) -> str:
        """A line per check; brief: only the warnings and errors under one line that counts the checks."""
        head = f"study {self.study}: {'OK' if self.ok else f'{len(self.errors)} problem(s)'}"
        lines = [f"{head} ({len(self.checks)} checks passed)"] if brief else [head] + [f"  ok    {c}" for c in self.checks]
        lines += [f"  warn  {w}" for w in self.warnings] + [f"  ERROR {e}" for e in self.errors]
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError("invalid study parameters:\n" + "\n".join(f"  - {e}" for e in self.errors))

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
        elif is_local(path):
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
    return all(s.format == "generated" or is_local(s.path) for s in data_mod.parse_specs(spec))


def check_critic(spec, options, rep: Report, name: str) -> str:
    """A critic built from its spec (a local model name is checked, nothing is loaded): its identity."""
    c = make_critic(spec, options)
    if c is None:
        return "No-Critiques"
    key_env = getattr(c.backend, "api_key_env", None)  # a server's; its base_url was checked when built
    if key_env and not os.environ.get(key_env):
        rep.warnings.append(f"critic {name}: ${key_env} is not set here (needed when it runs)")
    return f"{c.identity} (config {c.config_hash})"


def validate(cfg, check_data: bool = True, base: Path | None = None) -> Report:
    """Check a resolved study configuration without training: its notebook, then its study's own
    checks (registered with critcore.params.register; data loaded and validated when check_data)."""
    rep = Report(cfg.study)
    if cfg.notebook:
        rep.attempt("notebook", lambda: str(find_notebook(cfg.notebook, base)))
    study = STUDIES.get(cfg.study)
    if study is not None and study.checks is not None:
        study.checks(cfg, rep, check_data)
    return rep


def check_rm_study(cfg, rep: Report, check_data: bool) -> None:
    """A reward-model study's critics (built, no model loaded, no network beyond a name check),
    backbones (named, not loaded) and their training keys, and its data (local files loaded and
    validated when check_data, hub names by shape) and sections."""
    critics = critics_of(cfg)
    for name, spec in critics.items():
        rep.attempt(f"critic {name}", lambda spec=spec, name=name: check_critic(spec, cfg.critic_options, rep, name))
    if not any(is_baseline(s) for s in critics.values()):
        rep.warnings.append("no No-Critiques critic ('none'): no paired tests will be computed")
    for b in backbones_of(cfg):
        kind = rep.attempt(f"backbone {b.name}", lambda b=b: f"{b.backbone}: {check(b.backbone, offline_ok=True)}")
        if kind and "not checked" in kind:
            rep.warnings.append(f"backbone {b.name}: {b.backbone} could not be checked on the hub from here")
        rep.checks.append(f"train config {b.name}: TrainConfig key {cfg.train.replace(backbone=b.backbone, **b.train).key()}")
    for name, spec in (("train_data", cfg.train_data), ("validation_data", cfg.validation_data),
                       *((f"eval_data {k}", v) for k, v in cfg.eval_data.items())):
        if spec:
            rep.attempt(name, lambda spec=spec: describe_spec(spec, check_data))
    sections = rep.attempt("sections", lambda: "none" if cfg.sections is None else ", ".join(resolve_sections(cfg.sections)))
    if check_data and rep.ok and cfg.sections and sections is not None:
        listed = {s for m in resolve_sections(cfg.sections).values() for s in m}
        if not any(not all_local(spec) or listed & {x.subset for x in data_mod.load(spec).pairs}
                   for spec in cfg.eval_data.values()):
            rep.warnings.append("no eval set has a subset listed in sections: no section scores")


def train_count(cfg) -> int | None:
    """The training pairs of a configuration whose train_data is local (loaded once), else None."""
    return len(data_mod.load(cfg.train_data).pairs) if all_local(cfg.train_data) else None


def check_llm_study(cfg, rep: Report, check_data: bool) -> None:
    """The judge's and metacritique's shared parts: the data, the named models, the RQ1 runs."""
    rep.attempt("data", lambda: describe_spec(cfg.data, check_data))
    for name, spec in cfg.models.items():
        rep.attempt(f"model {name}", lambda spec=spec, name=name: check_critic(spec, None, rep, name))
    for run_dir in cfg.rq1_runs:
        if not Path(run_dir).is_dir():
            rep.warnings.append(f"rq1_runs: no folder {run_dir} (skipped)")
