"""Atomic file writes: write to a temporary file beside the target, then rename."""
from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(path: Path) -> None:
    """Remove the temporary files and folders that a killed writer of `path` left beside it
    (.<name>.<pid>.*), where that process is gone."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        pid = leftover.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Open a temporary file beside `path`; on a clean exit fsync it and rename it onto `path`.
    Leftovers of a writer killed before its rename are removed first."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, obj, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path, rows) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory beside `path`; on a clean exit it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def made_once(path: str | os.PathLike, done: str):
    """For a folder that several processes may need to build (a converted model in the cache):
    yield True to the one that must build it, False where `path/done` already exists. Callers wait
    for each other on an flock of .<name>.lock beside it, so none reads or replaces a folder that
    another is still writing; build it with atomic_dir."""
    import fcntl

    path = Path(path)
    if (path / done).exists():
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield not (path / done).exists()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_HELD: dict[str, object] = {}  # folder -> the open lock file this process holds
atexit.register(lambda: [f.close() for f in _HELD.values()])  # the OS would too, but quietly


def claim(folder: str | os.PathLike) -> None:
    """Hold `folder` for this process (an flock on folder/.lock, with our pid in it) until
    `release`. Another process that holds it is a UserError naming its pid: two writers of one run
    folder would both train the same models and interleave their logs. The lock goes with its
    process, so a killed run leaves nothing to clean; this process may claim a folder again (a
    notebook cell run twice)."""
    import fcntl

    from .errors import UserError

    key = str(Path(folder).resolve())
    if key in _HELD:
        return
    f = open(Path(key) / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(f"{key}: another critcore process (pid {holder}) is running this run; wait for it, or give "
                        "another run id or out_dir") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    _HELD[key] = f


def release(folder: str | os.PathLike) -> None:
    """Let go of a folder `claim` took (nothing if this process does not hold it)."""
    f = _HELD.pop(str(Path(folder).resolve()), None)
    if f is not None:
        f.close()
