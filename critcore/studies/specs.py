"""Data specs: loading them (critcore.data formats, generated data, lists of specs), checking
them without a download, and resolving `sections`."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from .. import data as data_mod
from ..data import Loaded, Pair
from .generated import GENERATED_SECTIONS, load_generated


def _spec_dict(spec) -> dict:
    if isinstance(spec, str):
        fmt, sep, path = spec.partition(":")
        return {"format": fmt, "path": path} if sep else {"format": fmt}
    if not isinstance(spec, dict):
        raise ValueError(f"a dataset spec must be a mapping or 'format:path', got {type(spec).__name__}")
    return dict(spec)


_LOAD_CACHE: dict[str, Loaded] = {}


def load_spec(spec) -> list[Pair]:
    """Pairs of a data spec: what `critcore.data.load` takes, {"format": "generated", "n", "seed",
    "split", "kinds"}, or a list of specs (concatenated, in order). Local files are loaded once per
    process (keyed by spec and file mtime)."""
    if isinstance(spec, list):
        return [p for s in spec for p in load_spec(s)]
    d = _spec_dict(spec)
    if d.get("format") == "generated":
        d.pop("format")
        return list(load_generated(**d).pairs)
    path = d.get("path")
    stamp = Path(path).stat().st_mtime_ns if path and Path(path).is_file() else None
    key = json.dumps([d, stamp], sort_keys=True, default=str)
    if key not in _LOAD_CACHE:
        loaded = data_mod.load(d)
        if loaded.skipped:
            print(f"{loaded.path}: skipped {loaded.skipped}")
        _LOAD_CACHE[key] = loaded
        if len(_LOAD_CACHE) > 16:
            _LOAD_CACHE.pop(next(iter(_LOAD_CACHE)))
    return list(_LOAD_CACHE[key].pairs)


def _is_local(path) -> bool:
    p = Path(str(path))
    return p.is_file() or p.suffix in (".json", ".jsonl") or str(path).startswith(("/", "./", "../", "~"))


_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_spec(spec, load: bool = True) -> str:
    """Validate a data spec; returns a one-line description. Local files are loaded and validated
    (load=True) or only checked to exist; hub datasets are checked for shape only (no network)."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError("an empty list of dataset specs")
        return " + ".join(check_spec(s, load) for s in spec)
    d = _spec_dict(spec)
    fmt = d.get("format")
    if fmt == "generated":
        opts = set(inspect.signature(load_generated).parameters)
        unknown = sorted(set(d) - opts - {"format"})
        if unknown:
            raise ValueError(f"generated data: unknown option(s) {unknown}; options: {sorted(opts)}")
        pairs = load_spec(d) if load else None
        return f"generated {d.get('split', 'train')}" + (f": {len(pairs)} pairs" if pairs is not None else "")
    path = str(data_mod.parse_spec(d).path)
    if "${" in path:
        raise ValueError(f"unexpanded variable in path {path!r}")
    if _is_local(path):
        if not Path(path).is_file():
            raise ValueError(f"{fmt}: no such file {path}")
        if not load:
            return f"{fmt} {path} (exists)"
        pairs = load_spec(d)
        if not pairs:
            raise ValueError(f"{fmt} {path}: no pairs")
        return f"{fmt} {path}: {len(pairs)} pairs"
    if fmt in ("pandalm", "alpacaeval"):
        raise ValueError(f"{fmt} is local only, but {path!r} is not a local .json/.jsonl file")
    if not _HUB_NAME.fullmatch(path):
        raise ValueError(f"{fmt}: {path!r} is neither a local file nor a hub dataset name")
    params = inspect.signature(data_mod.LOADERS[fmt]).parameters
    split = d.get("split", params["split"].default if "split" in params else None)
    return f"{fmt} hub dataset {path}" + (f" split {split}" if split else "") + " (shape checked, not downloaded)"


def resolve_sections(sections) -> dict | None:
    """A sections mapping from a params value: None, a {section: {subset: count}} mapping, a JSON
    path, "rewardbench-v1" (metrics.REWARDBENCH_SECTIONS) or "generated" (GENERATED_SECTIONS)."""
    from ..metrics import REWARDBENCH_SECTIONS, load_sections

    if sections is None or isinstance(sections, dict):
        return sections
    if sections == "rewardbench-v1":
        return REWARDBENCH_SECTIONS
    if sections == "generated":
        return GENERATED_SECTIONS
    return load_sections(sections)


def _all_local(spec) -> bool:
    if isinstance(spec, list):
        return all(_all_local(s) for s in spec)
    d = _spec_dict(spec)
    return d.get("format") == "generated" or _is_local(d.get("path", ""))
