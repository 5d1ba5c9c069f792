"""A study run and its pipeline steps: StudyRun (output folder, cache, run.json), setup, loading
and critiquing the splits, and training one reward model into its stable folder."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import atomic
from .. import data as data_mod
from ..data import Pair
from .schema import PROJECT_ROOT, SCHEMAS, SECTION_LABELS, Backbone, backbones_of, build_critic, critics_of, slug
from .specs import load_spec, resolve_sections
from .validation import validate

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|authorization)$", re.I)


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
        from .. import __version__

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
    from ..cache import CritiqueCache

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
    from ..critique import LocalCritic, augment

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
    from ..experiment import results_row

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
    from ..experiment import run_rm, train_config

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


def load_results(run_dir: str | os.PathLike) -> list[dict]:
    """The finished RMs of a run folder, as rq1_train_all returns them ({row, summary, dir, reused}),
    read from rms/*/result.json: tabulate an interrupted run, or one made elsewhere, without
    retraining."""
    found = sorted(Path(run_dir).glob("rms/*/result.json"))
    return [{**json.loads(f.read_text()), "dir": str(f.parent)} for f in found]
