"""`critcore run`: resolve a params file into its study's configuration, check it (a dry run),
then execute the study's notebook with papermill, which records the run in run.json."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

from .. import atomic, distributed
from .. import progress as progress_mod
from .. import config as config_mod
from ..params import STUDIES, check_run_id
from ..report import slug
from ..run import RUNNER_ENV, Run, check_out_dir, log, outputs_root, project_root, redact, run_folder
from .validation import PROJECT_ROOT, find_notebook, validate

KERNEL = "critcore"  # `make setup` registers it; papermill falls back to python3 where it is missing


def _find_params(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (PROJECT_ROOT / p).is_file():
        return PROJECT_ROOT / p
    raise config_mod.ConfigError(f"{path}: " + ("a folder, not a params file" if p.is_dir() else "no such params file"))


def kernel_name() -> str:
    """The project's Jupyter kernel when it is registered, else python3."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"
    except Exception:  # noqa: BLE001 - no jupyter_client: papermill will say so
        return "python3"


def run_study(params_path: str | os.PathLike, run_id: str | None = None, dry_run: bool = False, *,
              out_root: str | os.PathLike | None = None, sets=(), progress: bool = True,
              project_time: bool = False, brief: bool = False) -> Path:
    """`critcore run PARAMS`: resolve and validate the params (local data loaded), then execute their
    study's notebook with papermill into <out_root>/<study>/<run_id>/. dry_run stops after the
    validation report (with project_time, the projected wall time) and writes nothing.
    brief (the demo's terminal) logs the validation in one line unless it finds a problem, and
    only the cells' stderr (progress lines, critcore's messages), not papermill's own lines."""
    path = _find_params(params_path)
    if distributed.launched():  # the env says so at once; nothing joins a process group
        raise config_mod.ConfigError(
            f"{path}: a study runs as one process, not under a launcher: each launched process would run its own "
            "papermill kernel, outside the process group, and write the same run folder; launch its RMs as "
            "`critcore train` jobs instead (docs/distributed.md)")
    raw = config_mod.read_yaml(path)
    if not raw.get("study"):
        raise config_mod.ConfigError(f"{path}: no `study:` key; a params file without one is for `critcore train`")
    cfg = config_mod.resolve(config_mod.schema_for(raw), raw, sets=sets, where=str(path))
    if not cfg.notebook:
        raise config_mod.ConfigError(f"{path}: study '{cfg.study}' has no notebook; use `critcore {cfg.study}`")
    try:
        check_run_id(run_id)
    except config_mod.ConfigError as e:
        raise config_mod.ConfigError(f"--run-id: {e}") from None
    run_id = run_id or cfg.run_id or slug(path.stem)
    project = project_root(path.parent)  # relative paths lie in the params file's project
    root = run_folder(out_root, project) if out_root else outputs_root(project)
    out_dir = run_folder(cfg.out_dir, project) if cfg.out_dir else root / cfg.study / run_id
    check_out_dir(out_dir)
    report = validate(cfg, check_data=True, base=path.parent)
    log(f"{path}: {report.text(brief)}" if brief else f"{path}:\n{report.text()}")
    report.raise_if_errors()
    if dry_run:
        projection = STUDIES[cfg.study].projection
        if project_time and projection is not None:
            log(projection(cfg.replace(out_dir=str(out_dir))))  # RMs finished there are reused
        log(f"dry run: nothing trained; a run would write to {out_dir}")
        return out_dir
    import papermill

    notebook = find_notebook(cfg.notebook, path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.claim(out_dir)  # held for the notebook too: a second runner stops here, before writing anything
    cfg = cfg.replace(run_id=run_id, out_dir=str(out_dir), critique_cache=config_mod.critique_cache_path(cfg.critique_cache),
                      progress=cfg.progress and progress)
    final, running = out_dir / notebook.name, out_dir / f".running.{notebook.name}"
    token = uuid.uuid4().hex
    os.environ[RUNNER_ENV] = json.dumps({"id": token, "out_dir": str(out_dir), "params_file": str(path), "notebook": str(notebook),
                                         "executed_notebook": final.name, "command": " ".join(sys.argv)})
    mode = os.environ.get(progress_mod.MODE_ENV)
    os.environ[progress_mod.MODE_ENV] = "lines"  # the kernel's bars reach the log as lines
    _log_papermill(logging.WARNING if brief else logging.INFO)
    t0, error = time.perf_counter(), None
    try:  # the cells' output, bars included, goes to the log line by line (log_output), in place of papermill's bar
        papermill.execute_notebook(str(notebook), str(running), parameters=config_mod.to_dict(cfg),
                                   kernel_name=kernel_name(), cwd=str(Path.cwd()), progress_bar=False,
                                   log_output=cfg.progress and not brief,
                                   stderr_file=sys.stderr if cfg.progress and brief else None)
    except BaseException as e:
        error = e
        raise
    finally:
        os.environ.pop(RUNNER_ENV, None)
        if mode is None:
            os.environ.pop(progress_mod.MODE_ENV, None)
        else:
            os.environ[progress_mod.MODE_ENV] = mode
        if running.exists():
            os.replace(running, final)
        _finish_record(out_dir, cfg, token, time.perf_counter() - t0, error)
        atomic.release(out_dir)
    return out_dir


def _log_papermill(level: int) -> None:
    """papermill's messages at `level` on stderr, unless the caller set up logging itself."""
    if logging.getLogger().handlers:
        return
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _finish_record(out_dir: Path, cfg, token: str, seconds: float, error) -> None:
    """Add the runner's wall time to the run.json the notebook wrote in this run (it carries the
    runner's token); when the notebook died before writing one, write a failed record."""
    path = out_dir / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if (record.get("runner") or {}).get("id") != token:
        record = Run(config=cfg, run_id=cfg.run_id, out_dir=out_dir).record("failed" if error else "completed")
        record["runner"] = {"id": token}
    if error is not None:
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {str(error)[-2000:]}"
    record["runner"]["wall_s"] = round(seconds, 3)
    atomic.write_json(path, redact(record))
