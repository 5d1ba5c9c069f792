"""A run: its record (run.json, written once, by `Run.finish`), its folder and its lifecycle
(`start` from a configuration, `setup` from a notebook's parameters), shared by `critcore train`,
`evaluate`, `critcore run` and every notebook. Its steps are critcore.splits (the pairs and their
critiques) and critcore.rms (one reward model each). Everything a run writes goes under
`run.out_dir`, atomically: tables as CSV, charts as HTML and PNG, run.json and rms/."""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from . import __version__, atomic, config as config_mod, distributed, progress
from .errors import UserError
from .llm import CritiqueCache, mask
from .provenance import git_info, package_versions
from .report import offline_charts, save_chart, save_table

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|authorization)$", re.I)
RUNNER_ENV = "CRITCORE_RUNNER"  # set by `critcore run` for the notebook it executes: {params_file, command}


def project_root(*starts: str | os.PathLike) -> Path:
    """The project a run belongs to: the nearest folder at or above the first of `starts`, then
    the working folder, that holds a pyproject.toml; else the working folder. A notebook in
    notebooks/ (JupyterLab and papermill run it there) and a command in the project's root find
    the same one."""
    for start in (*starts, Path.cwd()):
        start = Path(start).resolve()
        found = next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), None)
        if found is not None:
            return found
    return Path.cwd().resolve()


def run_folder(path: str | os.PathLike, root: Path | None = None) -> Path:
    """An output path as an absolute one: a relative path lies in the project (`project_root`),
    wherever the run was started from."""
    return (project_root() if root is None else root).joinpath(Path(path).expanduser()).resolve()


def outputs_root(root: Path | None = None) -> Path:
    """$CRITCORE_OUTPUTS, else the project's outputs/ (relative paths in the project: `run_folder`)."""
    return run_folder(os.environ.get("CRITCORE_OUTPUTS") or "outputs", root)


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


def log(*parts) -> None:
    """Progress and notes go to stderr: stdout is for a command's final result."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- secrets


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


def redact(obj, secrets: list[str] | None = None):
    """Drop the values of secret-looking keys (api_key, token, ...; not api_key_env, which only
    names a variable) and mask every form of each secret inside strings (critcore.llm.mask):
    `secrets`, by default the keys in the variables that `obj`'s critic specs name."""
    if secrets is None:
        secrets = _secret_values(obj) if isinstance(obj, Mapping) else []
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v is not None else redact(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return mask(obj, secrets)
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------- the run record


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


@dataclass
class Run:
    """One execution of a study or command: its typed configuration, output folder, critique
    cache, and what run.json will record (timings, critique statistics, RMs, artifacts)."""

    config: Any  # a critcore.config schema instance
    run_id: str
    out_dir: Path
    cache: Any = None  # CritiqueCache
    threads: int | None = None
    timings: dict = field(default_factory=dict)
    critique_stats: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    rms: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    git: dict = field(default_factory=git_info)  # the code as it was when the run started

    @property
    def params(self) -> dict:
        """The resolved configuration as plain values."""
        return config_mod.to_dict(self.config)

    @property
    def progress(self) -> bool:
        return bool(self.config.progress)

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
        """`df` as <out_dir>/<name>.csv, atomically (as every save_*, by the main process only)."""
        path = self.path(f"{name}.csv")
        if distributed.is_main():
            save_table(df, path)
        self._record(path)
        return path

    def save_json(self, obj, name: str) -> Path:
        path = self.path(f"{name}.json")
        if distributed.is_main():
            atomic.write_json(path, redact(obj, _secret_values(self.params)))
        self._record(path)
        return path

    def save_chart(self, chart, name: str) -> tuple[Path, Path]:
        """An altair chart as <name>.html (offline) and <name>.png, each written atomically."""
        html, png = self.path(f"{name}.html"), self.path(f"{name}.png")
        if distributed.is_main():
            save_chart(chart, html, png)
        self._record(html)
        self._record(png)
        return html, png

    def record(self, status: str = "completed") -> dict:
        now = time.time()
        cache = self.cache.report() if self.cache is not None else {}
        attempt = {"started": _iso(self.started), "finished": _iso(now), "total_s": round(now - self.started, 3),
                   "status": status, "steps": self.timings, "cache": cache, "by_critic": self.critique_stats}
        runner = os.environ.get(RUNNER_ENV)
        return redact({
            "study": self.config.study, "run_id": self.run_id, "status": status, "out_dir": str(self.out_dir),
            "notebook": getattr(self.config, "notebook", None), "description": self.config.description,
            "config": self.params, "command": shlex.join(sys.argv),
            "runner": json.loads(runner) if runner else None,
            "git": self.git, "versions": package_versions(), "critcore": __version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "threads": self.threads, "wall": attempt,
            "critique_cache": {**cache, "by_critic": self.critique_stats},
            "rms": self.rms, "artifacts": sorted(self.artifacts), **self.notes,
        }, _secret_values(self.params))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, value, tb) -> None:
        """A `with` block records the run as completed, or as failed when it raised."""
        if self.cache is not None:
            self.finish("completed" if kind is None else "failed")

    def finish(self, status: str = "completed") -> Path:
        """Write run.json (earlier attempts of the same run id are kept under "history"; the main
        process writes it), close the critique cache and let go of the run folder (`atomic.claim`)."""
        path = self.path("run.json")
        if distributed.is_main():
            record = self.record(status)
            try:
                before = json.loads(path.read_text())
                history = before.pop("history", []) + [before["wall"]]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or damaged
                history = []
            record["history"] = history
            atomic.write_json(path, record)
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        atomic.release(self.out_dir)
        return path


def _config_hash(cfg) -> str:
    keep = {k: v for k, v in config_mod.to_dict(cfg).items() if k not in ("run_id", "out_dir", "progress", "description")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]


def check_out_dir(out_dir: Path) -> None:
    """A run folder's path must not be a file (mkdir would say only "File exists")."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: a file, not a folder: the run writes a folder there (give another out_dir)")


def start(cfg, run_id: str | None = None) -> Run:
    """Open a run for a resolved configuration: pick run_id and out_dir, set torch threads and
    open the critique cache."""
    run_id = run_id or cfg.run_id or f"nb-{_config_hash(cfg)}"
    out_dir = run_folder(cfg.out_dir) if cfg.out_dir else outputs_root() / cfg.study / run_id
    cache_path = config_mod.critique_cache_path(cfg.critique_cache)
    cfg = cfg.replace(run_id=run_id, out_dir=str(out_dir), critique_cache=cache_path)
    threads = choose_threads(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    check_out_dir(out_dir)
    cache = CritiqueCache(cache_path)  # an unusable cache fails before the run folder exists
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = json.loads(os.environ.get(RUNNER_ENV) or "{}")
    try:
        if runner.get("out_dir") != str(out_dir) and distributed.is_main():  # else `critcore run` holds it
            atomic.claim(out_dir)  # one run per run folder (under a launcher, its main process holds it)
    except UserError:
        cache.close()
        raise
    run = Run(config=cfg, run_id=run_id, out_dir=out_dir, cache=cache, threads=threads)
    log(f"{cfg.study} run {run_id} -> {out_dir}\ncritique cache {cache_path}" + (f"\ntorch threads {threads}" if threads else ""))
    return run


def _injected(namespace: Mapping) -> list[str]:
    """The names that papermill's injected cell ("# Parameters", from -f FILE or -p KEY VALUE)
    assigned: IPython keeps the source of every cell it ran in `In`. papermill only warns of a name
    the parameters cell does not declare, so a misspelt key would otherwise leave its default."""
    cells = [c for c in namespace.get("In", []) if isinstance(c, str) and c.startswith("# Parameters\n")]
    try:
        return [t.id for c in cells for node in ast.parse(c).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    except SyntaxError:
        return []


def setup(study: str, namespace: Mapping | None = None, **params) -> Run:
    """Start a study run from a notebook: the study's parameters from `namespace` (the notebook's
    globals(): only the schema's keys are read) updated with `params`, resolved as every command
    resolves them (critcore.config), then `start`. Charts shown after it draw offline
    (critcore.report.offline_charts)."""
    offline_charts()
    schema = config_mod.schema_for({"study": study})
    namespace = namespace or {}
    injected = _injected(namespace)
    if injected:  # papermill runs this notebook: its log keeps lines, not bars
        os.environ.setdefault(progress.MODE_ENV, "lines")
    names = [*schema.model_fields, *injected]  # an injected typo fails in resolve
    raw = {k: namespace[k] for k in names if k in namespace}
    raw.update(params)
    cfg = config_mod.resolve(schema, raw, where=f"{study} parameters")
    return start(cfg)
