"""The `critcore run` runner: read a params file, validate it, execute its notebook with
papermill and record the run in run.json."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Mapping

from .. import atomic
from .run import _iso, _redact, _secret_values, git_info, outputs_root, package_versions
from .schema import NOTEBOOK_FOR, PROJECT_ROOT, SCHEMAS, slug
from .validation import find_notebook, notebook_parameters, validate, validate_generic


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
    from .. import __version__

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
    from ..experiment import expand

    if not path:
        return None
    path = Path(expand(str(path)))
    if not path.is_file():
        return {"path": str(path), "records": None}
    from ..cache import CritiqueCache

    with CritiqueCache(path) as c:
        return {"path": str(path), "records": len(c)}
