"""Resolving parameters: every command, study and notebook gets its configuration the same way
(`resolve`), as an instance of its schema (critcore.params, or the study's module):

    the schema's defaults  <-  a params YAML  <-  command-line flags and --set key=value

A block such as `train:` merges key by key, a free mapping (`eval_data`, `critics`) is replaced;
`--set a.b=v` may reach into a data spec a flag gave. An error names the file or flag that gave
the key, the key and, for an unknown key, the nearest valid one. `${data}` becomes the shared data
folder. Each notebook's `parameters` cell lists the same keys and defaults (parameters_cell).
"""
from __future__ import annotations

import copy
import os
import pprint
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from .backbones import cache_dir
from .data import spec_dict
from .errors import ConfigError
from .params import SCHEMAS, STUDIES
from .recipe import TrainConfig
from .schema import Schema, nearest


# ---------------------------------------------------------------- YAML (1.2 numbers)


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-4` is a string; YAML 1.2 (and every reader) means a float.
    A key given twice in one mapping is an error: PyYAML would keep the last silently."""

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader refuses it below
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping; first on line {first[key]}", key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: str | os.PathLike) -> dict:
    """A params file: a mapping at the top level. Errors name the file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig") as f:
            raw = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the params file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level, got {type(raw).__name__}")
    return raw


def parse_sets(items) -> list[tuple[list[str], Any]]:
    """`--set train.lr=1e-4` items as (key path, value) with the value read as YAML."""
    out = []
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out.append((key.strip().split("."), yaml.load(raw, Loader=_Loader)))
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: invalid YAML value ({getattr(e, 'problem', None) or e})") from None
    return out


# ---------------------------------------------------------------- ${data}


def shared_data_dir() -> Path:
    """$CRITCORE_DATA, else ../shared/data beside the project (where tests and CI find it)."""
    if os.environ.get("CRITCORE_DATA"):
        return Path(os.environ["CRITCORE_DATA"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if os.path.isdir(base.parent / "shared" / "data"):  # False also for a folder this user may not enter
            return (base.parent / "shared" / "data").resolve()
    return Path.cwd().parent / "shared" / "data"


def expand(value, data_dir: Path | None = None):
    """Replace ${data} in every string of a params structure with the shared data folder."""
    data_dir = data_dir or shared_data_dir()
    if isinstance(value, str):
        return value.replace("${data}", str(data_dir))
    if isinstance(value, dict):
        return {k: expand(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, data_dir) for v in value]
    return value


def critique_cache_path(path: str | os.PathLike | None = None) -> str:
    """The one critique cache every command shares: `path` when given, else
    $CRITCORE_CACHE/critiques.sqlite; always absolute."""
    return str(Path(path).expanduser().resolve() if path else (cache_dir() / "critiques.sqlite").resolve())


# ---------------------------------------------------------------- resolving


def _block(cls, key) -> type | None:
    """The schema a field holds as a block that merges key by key (X or X | None), else None."""
    field = cls.model_fields.get(key)
    tp = field.annotation if field else None
    return next((a for a in (tp, *typing.get_args(tp)) if isinstance(a, type) and issubclass(a, Schema) and a.merges),
                None)


def _merge_layer(cls, base: dict, layer: dict) -> dict:
    """`layer` over `base`: schema blocks merge key by key; anything else is replaced."""
    out = dict(base)
    for key, value in layer.items():
        sub = _block(cls, key)
        if sub is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_layer(sub, out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(tree: dict, path: list[str], value) -> None:
    node = tree
    for i, key in enumerate(path[:-1]):
        nxt = node.get(key)
        if isinstance(nxt, str):  # a data spec FORMAT:PATH becomes {format, path} to take a key
            nxt = spec_dict(nxt)
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set: --set {'.'.join(path)}: '{'.'.join(path[:i + 1])}' is not a mapping")
        node[key] = nxt = dict(nxt)
        node = nxt
    node[path[-1]] = value


def _holds(tree, path: list) -> bool:
    """Whether a layer gives the key at `path` (which names the layer in an error)."""
    for key in path:
        if isinstance(tree, dict) and key in tree or isinstance(tree, list) and isinstance(key, int) and key < len(tree):
            tree = tree[key]
        else:
            return False
    return True


def defaults(cls) -> dict:
    """The schema's defaults as plain values."""
    return {name: to_dict(f.get_default(call_default_factory=True)) for name, f in cls.model_fields.items()
            if not f.is_required()}


def to_dict(cfg) -> dict:
    """A configuration as plain YAML-able values. A `train` block leaves out its backbone, which
    the study or command sets (`backbone`, `backbones`)."""
    if isinstance(cfg, Schema):
        return {k: to_dict(getattr(cfg, k)) for k in type(cfg).model_fields
                if not (isinstance(cfg, TrainConfig) and k == "backbone")}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _nest(path: list[str], value) -> dict:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def resolve(cls, *layers: dict, sets=(), where: str = "params", data_dir: Path | None = None):
    """The schema's defaults <- each layer (dicts, in order) <- `sets` ((path, value) pairs, as
    the command-line flags give them, or "k=v" strings, as --set does), typed and checked. Raises
    ConfigError naming the layer that gave the key (`where` for the layers, "--set" for the
    sets) and the key, also for a key that `sets` give two different values."""
    merged, named = defaults(cls), []
    for layer in layers:
        if not layer:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: expected a mapping of parameters, got {type(layer).__name__}")
        merged = _merge_layer(cls, merged, layer)
        named.append((where, layer))
    pairs, given = [], {}
    for item in sets:
        (path, value), by = (parse_sets([item])[0], "--set") if isinstance(item, str) else (item, "a flag")
        key = ".".join(path)
        if key in given and given[key][0] != value:  # which one was meant? (a YAML key given twice is an error too)
            raise ConfigError(f"'{key}' is given twice on the command line, by {given[key][1]} ({given[key][0]!r}) "
                              f"and by {by} ({value!r}); give it once")
        given.setdefault(key, (value, by))
        pairs.append((path, value))
        _set_path(merged, path, copy.deepcopy(value))
        named.append(("--set", _nest(path, value)))
    study = merged.get("study")
    default_study = cls.model_fields["study"].default
    if study != default_study:
        raise ConfigError(f"{where}: these parameters are for '{study}', not '{default_study}'")
    if any(isinstance(layer.get("train"), dict) and "backbone" in layer["train"] for _, layer in named):
        raise ConfigError(f"{where}: 'train.backbone': set it with the top-level "
                          f"`{'backbones' if 'backbones' in cls.model_fields else 'backbone'}`, not inside train")
    data_dir = data_dir or shared_data_dir()
    blame = lambda path: next((w for w, layer in reversed(named) if path and _holds(layer, path)), where)  # noqa: E731
    cfg = cls.check(expand(merged, data_dir), blame)
    return cfg.derive(data_dir)


def schema_for(raw: dict, default: str = "train") -> type:
    """The schema a params mapping names with `study:` (default: `critcore train`'s)."""
    study = raw.get("study") or default
    if study not in SCHEMAS:
        raise ConfigError(f"unknown study '{study}'{nearest(study, SCHEMAS)}"
                          + ("" if STUDIES else " (the studies register when critcore.studies is imported)"))
    return SCHEMAS[study]


def load(params: str | os.PathLike | dict | None = None, sets=(), flags: dict | None = None,
         schema: type | str | None = None):
    """Resolve a params file (or mapping) with --set items and command-line flags (a mapping of
    key paths "a.b" -> value; None values are left out) into its typed configuration."""
    where = str(params) if isinstance(params, (str, os.PathLike)) else "params"
    raw = read_yaml(params) if isinstance(params, (str, os.PathLike)) else dict(params or {})
    cls = schema_for({"study": schema}) if isinstance(schema, str) else schema or schema_for(raw)
    pairs = [(key.split("."), value) for key, value in (flags or {}).items() if value is not None]
    return resolve(cls, raw, sets=[*pairs, *(sets or [])], where=where)


def dump(cfg) -> str:
    """The configuration as YAML (what `critcore config` prints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True, width=110)


def docs(cls) -> dict[str, str]:
    """{field: one-line documentation} of a schema."""
    return {name: f.description or "" for name, f in cls.model_fields.items()}


# ---------------------------------------------------------------- notebooks' parameters cells


def parameters_cell(study: str) -> str:
    """The source of a study notebook's `parameters` cell: every key of its schema with its default
    and documentation. tests/test_config.py checks each notebook against this;
    `make notebook-parameters` rewrites them."""
    cls = STUDIES[study].schema
    lines = [f"# Parameters: {cls.__module__}.{cls.__name__}. papermill -f params/X.yaml (or -p KEY VALUE) replaces them,",
             "# merged into these defaults as `critcore config` shows; ${data} is ../shared/data ($CRITCORE_DATA)."]
    for name, value in defaults(cls).items():
        text = pprint.pformat(value, width=100, sort_dicts=False).replace("\n", "\n" + " " * (len(name) + 3))
        lines.append(f"{name} = {text}  # {docs(cls)[name]}")
    return "\n".join(lines)


def write_parameters_cells(root: Path | None = None) -> list[Path]:
    """Rewrite the `parameters` cell of every study notebook from its schema."""
    import nbformat

    root = root or Path(__file__).resolve().parents[1]
    written = []
    for study, entry in STUDIES.items():
        path = root / entry.schema.model_fields["notebook"].default
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        source = parameters_cell(study)
        if cell.source != source:
            cell.source = source
            nbformat.write(nb, path)
            written.append(path)
    return written
