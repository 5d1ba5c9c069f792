"""Preference pairs from files: critcore's JSONL, data specs (a format of critcore.loaders with
its options and the sampling ones) and loading them, seeded sampling and nested subsets. The
record itself, `Pair`, is critcore.records; reading files, critcore.readers."""
from __future__ import annotations

import inspect
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import atomic
from .errors import DataError
from .loaders import LOADERS
from .readers import Loaded, is_table, jsonl_records, table_object
from .records import RATINGS, Pair, prompt_text  # noqa: F401 - RATINGS, prompt_text: public API


def write_pairs(path, pairs: Iterable[Pair]) -> None:
    """Write pairs as JSONL, atomically."""
    atomic.write_jsonl(path, (p.to_dict() for p in pairs))


def read_pairs(path) -> list[Pair]:
    """Read critcore's JSONL strictly: every record is validated, nothing is skipped (`load_jsonl`
    counts and skips degenerate pairs instead)."""
    return [Pair.from_dict(d, where) for _, where, d in jsonl_records(Path(path))]


SAMPLING = ("limit", "seed", "stratify", "per_stratum")


@dataclass
class Spec:
    """A checked dataset spec: the format, its loader's keyword arguments (the path under the
    loader's first parameter, if it has one) and the sampling options."""

    format: str
    kwargs: dict
    limit: int | None = None
    seed: int = 0
    stratify: Any = "subset"
    per_stratum: int | None = None

    @property
    def path(self):
        """The path given, else the loader's default (a hub name), else None (generated data)."""
        name = _path_param(self.format)
        if name is None:
            return None
        default = inspect.signature(LOADERS[self.format]).parameters[name].default
        return self.kwargs.get(name, None if default is inspect.Parameter.empty else default)


def _path_param(fmt: str) -> str | None:
    first = next(iter(inspect.signature(LOADERS[fmt]).parameters))
    return first if first in ("path", "path_or_name") else None


def spec_dict(spec) -> dict:
    """A data spec as a mapping: a JSON mapping, FORMAT:PATH, a format alone (its hub default), or a
    path (a table is format trl, anything else critcore JSONL); a Dataset or DataFrame is format trl."""
    if table_object(spec) and not isinstance(spec, (list, tuple)):  # before dict: a DatasetDict is one; a list is specs
        return {"format": "trl", "path": spec}
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, os.PathLike):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DataError("dataset spec", None, "expected a mapping, FORMAT:PATH, a path, a Dataset, DatasetDict or "
                                              f"DataFrame, got {type(spec).__name__}")
    if spec.lstrip().startswith("{"):  # a mapping written as JSON, as --critic takes one
        try:
            return spec_dict(json.loads(spec))
        except ValueError as e:
            raise DataError("dataset spec", None, f"{spec!r} is not a valid JSON mapping ({e})") from None
    fmt, sep, path = spec.partition(":")
    if sep and fmt in LOADERS:
        return {"format": fmt, "path": path}
    if spec in LOADERS:
        return {"format": spec}
    if sep and re.fullmatch(r"[A-Za-z][\w-]+", fmt) and not Path(spec).expanduser().exists():
        raise DataError("dataset spec", "format", f"unknown format {fmt!r} in {spec!r}; expected one of "
                                                  f"{', '.join(LOADERS)} (or a path to critcore JSONL)")
    return {"format": "trl" if is_table(spec) else "jsonl", "path": spec}


def parse_spec(spec) -> Spec:
    """Check one data spec (see spec_dict; a mapping holds format, path, the sampling options
    limit, seed, stratify, per_stratum, and the loader's keyword arguments) without reading
    anything. A list of specs is checked with parse_specs."""
    spec = spec_dict(spec)
    fmt = spec.pop("format", None)
    if fmt not in LOADERS:
        raise DataError("dataset spec", "format", f"unknown format {fmt!r}; expected one of {', '.join(LOADERS)}")
    out = Spec(fmt, {}, spec.pop("limit", None), spec.pop("seed", 0), spec.pop("stratify", "subset"),
               spec.pop("per_stratum", None))
    for name in ("limit", "per_stratum"):
        v = getattr(out, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise DataError("dataset spec", name, f"must be a positive integer, got {v!r}")
    if isinstance(out.seed, bool) or not isinstance(out.seed, int):
        raise DataError("dataset spec", "seed", f"must be an integer, got {out.seed!r}")
    params = inspect.signature(LOADERS[fmt]).parameters
    path_name = _path_param(fmt)
    path = spec.pop("path", None)
    if path is not None:
        if path_name is None:
            raise DataError("dataset spec", "path", f"format {fmt!r} takes no path")
        if table_object(path):
            spec[path_name] = path
        elif not str(path).strip():
            raise DataError("dataset spec", "path", f"empty path (give {fmt}:PATH)")
        else:
            spec[path_name] = str(path)
    if "tie_policy" in spec and fmt == "pandalm":
        raise DataError("dataset spec", "tie_policy", "no longer an option: PandaLM keeps its ties and every "
                                                      "evaluation reports both policies (ties dropped, ties wrong)")
    unknown = sorted(set(spec) - set(params))
    if unknown:
        options = ", ".join((["path"] if path_name else []) + list(SAMPLING) + [p for p in params if p != path_name])
        raise DataError("dataset spec", unknown[0], f"not an option of format {fmt!r}; options: {options}")
    if path_name and path_name not in spec and params[path_name].default is inspect.Parameter.empty:
        raise DataError("dataset spec", "path", f"format {fmt!r} needs a path")
    if "seed" in params:  # a loader that makes its data (generated) takes the seed too
        spec["seed"] = out.seed
    out.kwargs = spec
    return out


def parse_specs(spec) -> list[Spec]:
    """One spec, or a list of them (loaded one after the other), checked."""
    specs = spec if isinstance(spec, list) else [spec]
    if not specs:
        raise DataError("dataset spec", None, "an empty list of specs")
    return [parse_spec(s) for s in specs]


def describe_skips(loaded: Loaded) -> str:
    """"FILE: skipped N (reason n, ...)", or "" when nothing was skipped."""
    if not loaded.skipped:
        return ""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(loaded.skipped.items()))
    return f"{loaded.path}: skipped {sum(loaded.skipped.values())} of {loaded.rows} records ({reasons})"


_MEMO: dict[str, Loaded] = {}  # local files already loaded in this process, by spec and file stamp


def _load_one(s: Spec) -> Loaded:
    path = s.path
    stamp = None
    try:
        if isinstance(path, str) and Path(path).expanduser().is_file():
            st = Path(str(path)).expanduser().stat()
            stamp = (st.st_size, st.st_mtime_ns)
    except OSError:  # not memoised; the loader says what is wrong
        stamp = None
    if stamp is None:
        return LOADERS[s.format](**s.kwargs)
    key = json.dumps([s.format, s.kwargs, stamp], sort_keys=True, default=str)
    if key not in _MEMO:
        _MEMO[key] = LOADERS[s.format](**s.kwargs)
        if len(_MEMO) > 16:
            _MEMO.pop(next(iter(_MEMO)))
    hit = _MEMO[key]
    return Loaded(list(hit.pairs), dict(hit.skipped), hit.source, hit.path, hit.rows)


def load(spec) -> Loaded:
    """Load a data spec (parse_spec), or a list of them one after the other, sampled after loading
    (skips counted on the full load). No pairs at all is a DataError naming the file and the skips."""
    parts = []
    for s in parse_specs(spec):
        loaded = _load_one(s)
        if not loaded.pairs:
            skips = describe_skips(loaded)
            raise DataError(loaded.path, None, "no pairs" + (f": {skips.split(': ', 1)[1]}" if skips else
                                                             " (the file holds no records)"))
        if s.limit is not None or s.per_stratum is not None:
            loaded.pairs = sample(loaded.pairs, s.limit, s.seed, stratify=s.stratify, per_stratum=s.per_stratum)
        parts.append(loaded)
    if len(parts) == 1:
        return parts[0]
    skipped = sum((Counter(p.skipped) for p in parts), Counter())
    return Loaded([p for part in parts for p in part.pairs], dict(skipped), "+".join(p.source for p in parts),
                  " + ".join(p.path for p in parts), sum(p.rows for p in parts))


def pairs_of(data) -> list[Pair]:
    """Pairs as they are, or those of anything `load` takes (a data spec, a Dataset, a DataFrame)."""
    if isinstance(data, list) and all(isinstance(p, Pair) for p in data):
        return data
    loaded = load(data)
    note = describe_skips(loaded)
    if note:
        import sys

        print(note, file=sys.stderr)
    return loaded.pairs


def sample(pairs: list[Pair], n: int | None = None, seed: int = 0,
           stratify: str | Callable[[Pair], Any] | None = "subset", per_stratum: int | None = None) -> list[Pair]:
    """A seeded sample of `pairs` in input order. With stratify (a Pair attribute or a key function)
    n is shared among strata by size (largest remainder), and every stratum gives at least
    min(per_stratum, its size), so the total may exceed n."""
    if n is not None and n < 0 or per_stratum is not None and per_stratum < 0:
        raise ValueError("n and per_stratum must be non-negative")
    rng = random.Random(seed)
    if stratify is None or (n is None and per_stratum is None):
        if n is None or n >= len(pairs):
            return list(pairs)
        return [pairs[i] for i in sorted(rng.sample(range(len(pairs)), n))]
    key = stratify if callable(stratify) else (lambda p: getattr(p, stratify))
    groups: dict[Any, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(key(p), []).append(i)
    names = sorted(groups, key=str)
    quota = dict.fromkeys(names, 0)
    if n is not None:
        n = min(n, len(pairs))
        exact = {g: n * len(groups[g]) / len(pairs) for g in names}
        quota = {g: int(exact[g]) for g in names}
        for g in sorted(names, key=lambda g: exact[g] - quota[g], reverse=True)[: n - sum(quota.values())]:
            quota[g] += 1
    if per_stratum is not None:
        quota = {g: max(quota[g], min(per_stratum, len(groups[g]))) for g in names}
    keep = [i for g in names for i in rng.sample(groups[g], quota[g])]
    return [pairs[i] for i in sorted(keep)]


def nested_subsets(pairs: list[Pair], sizes: Iterable[int], seed: int = 0) -> dict[int, list[Pair]]:
    """Nested subsets for data-scaling studies: prefixes of one seeded permutation, by size."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    out = {}
    for s in sizes:
        if not 0 <= s <= len(pairs):
            raise ValueError(f"subset size {s} is outside [0, {len(pairs)}]")
        out[s] = [pairs[i] for i in order[:s]]
    return out
