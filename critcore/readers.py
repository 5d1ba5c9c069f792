"""Reading records for the dataset loaders (critcore.loaders): files, JSON lists, JSON Lines, tables
and hub datasets, and `collect`, which gathers a loader's pairs and counted skips into a `Loaded`."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import DataError
from .records import Pair


@dataclass
class Loaded:
    """What a loader read: the pairs, the skipped records counted by reason, and where from."""

    pairs: list[Pair]
    skipped: dict[str, int]
    source: str
    path: str
    rows: int = 0  # records read; rows == len(pairs) + sum(skipped) unless `load` applied a limit

    def __len__(self) -> int:
        return len(self.pairs)


def read_bytes(path: Path) -> bytes:
    """A file's bytes (gunzipped when it is gzip); every reason it cannot be read is a DataError."""
    import gzip

    if not str(path):
        raise DataError("dataset spec", "path", "empty path")
    try:
        if path.is_dir():
            raise DataError(str(path), None, "is a directory, not a file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(str(path), None, "no such file") from None
    except PermissionError:
        raise DataError(str(path), None, "permission denied: the file cannot be read") from None
    except OSError as e:
        raise DataError(str(path), None, f"cannot be read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(str(path), None, f"a damaged gzip file ({e})") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(str(path), None, "is UTF-16 text; save it as UTF-8")
    return raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark, as Windows editors write


def _decode(raw: bytes, path: Path, base: int = 0, lineno: int | None = None) -> str:
    """UTF-8 text; a bad byte is reported with its line and byte offset in the file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno if lineno is not None else raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}", None, f"byte {base + e.start} (0x{raw[e.start]:02x}) is not UTF-8; "
                                                "is the file Latin-1 or Windows-1252? Save it as UTF-8") from None


Guess = Callable[[Any], "str | None"]  # a record -> the format that reads it (critcore.loaders.guess_format)


def jsonl_records(path: Path, guess: Guess | None = None) -> Iterator[tuple[int, str, Any]]:
    """(index, 'file:line', record) for each non-blank line of a JSONL file (or .jsonl.gz); for a JSON
    array, `guess` names the format its first record matches in the error."""
    path = Path(path)
    raw = read_bytes(path)
    if raw.lstrip()[:1] == b"[":
        hint = ""
        try:
            first = json.loads(_decode(raw, path))[0]
            fmt = guess(first) if guess else None
            hint = f"; its records look like format '{fmt}'" if fmt else ""
        except (ValueError, IndexError, KeyError, DataError):
            pass
        raise DataError(f"{path}:1", None, "this file is one JSON array, not JSON Lines (one object per line)"
                        f"{hint}: give the format that reads it, e.g. pandalm:PATH or alpacaeval:PATH")
    i, offset = 0, 0
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            d = json.loads(_decode(line, path, start, lineno))
        except json.JSONDecodeError as e:
            raise DataError(where, None, f"invalid JSON at column {e.colno} ({e.msg})") from None
        yield i, where, d
        i += 1


def json_list_rows(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(index, 'file[index]', record) for each element of a JSON list."""
    try:
        data = json.loads(_decode(read_bytes(path), path))
    except json.JSONDecodeError as e:
        hint = " (the file looks like JSON Lines: give format jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path}:{e.lineno}", None, f"invalid JSON ({e.msg}){hint}") from None
    if not isinstance(data, list):
        raise DataError(str(path), None, f"expected a JSON list, got {type(data).__name__}")
    for i, d in enumerate(data):
        yield i, f"{path}[{i}]", d


TABLE_SUFFIXES = (".parquet", ".arrow")


def in_memory(source) -> bool:
    """A source that is an object (a Dataset, DatasetDict, DataFrame or list of records), not a path or hub name."""
    return not isinstance(source, (str, os.PathLike))


def table_object(source) -> bool:
    """A table in memory: a datasets.Dataset or DatasetDict, a pandas DataFrame, or a list of records."""
    return type(source).__name__ in ("Dataset", "DatasetDict", "DataFrame") or isinstance(source, (list, tuple))


def label(source) -> str:
    """How messages name a source: its path or hub name, or an object's type (Dataset, DataFrame, ...)."""
    return type(source).__name__ if in_memory(source) else str(source)


def is_table(path) -> bool:
    """A Parquet or Arrow file, or a folder `save_to_disk` wrote."""
    p = Path(path).expanduser()
    try:
        return p.suffix in TABLE_SUFFIXES or p.is_dir() and any(
            (p / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
    except OSError:  # cannot be looked at (permission): the reader that opens it says why
        return False


def is_local(path_or_name) -> bool:
    if in_memory(path_or_name):
        return True
    p = Path(path_or_name)
    try:
        exists = p.exists()
    except OSError:  # a folder on the way cannot be entered: it is a local path all the same
        exists = True
    return exists or p.suffix in (".json", ".jsonl", ".gz", *TABLE_SUFFIXES) or str(path_or_name).startswith(("/", ".", "~"))


def _datasets(what: str):
    try:
        import datasets  # lazy: heavy, and only needed for hub names and tables
    except ImportError as e:
        raise ImportError(f"reading {what} needs the 'datasets' package") from e
    return datasets


def hub_rows(name: str, split: str | None, data_dir: str | None) -> Iterator[tuple[int, str, Any]]:
    ds = _datasets(f"{name!r} from the Hugging Face hub").load_dataset(name, data_dir=data_dir, split=split)
    if split is None:  # a DatasetDict: its one split, or the one asked for
        yield from table_rows(ds, None, name)
        return
    for i, row in enumerate(ds):
        yield i, f"{name}:{split}[{i}]", row


def _one_split(dd, split: str | None, where: str):
    """The Dataset of a DatasetDict: `split`, else its only one."""
    names = list(dd)
    if split is None and len(names) == 1:
        split = names[0]
    if split not in dd:
        problem = f"no split {split!r}" if split is not None else f"{len(names)} splits"
        raise DataError(where, "split", f"{problem}; give one of {', '.join(names)}")
    return dd[split], f"{where}[{split}]"


def table_rows(source, split: str | None = None, where: str | None = None) -> Iterator[tuple[int, str, Any]]:
    """(index, 'SOURCE row i', record) for each row of a table file or folder, or of one in memory."""
    where = where or label(source)
    if not in_memory(source):
        source = _open_table(Path(source).expanduser())
    kind = type(source).__module__.split(".")[0]
    if type(source).__name__ == "DatasetDict":
        source, where = _one_split(source, split, where)
    if kind == "pandas":
        rows = (_python(r) for r in source.to_dict(orient="records"))
    elif kind in ("datasets", "pyarrow") or isinstance(source, (list, tuple)):
        rows = source.to_pylist() if kind == "pyarrow" else source
    else:
        raise DataError("dataset spec", "path", "expected a path, a hub name, a datasets.Dataset or DatasetDict, a "
                                                f"pandas DataFrame or a list of records, got {type(source).__name__}")
    for i, row in enumerate(rows):
        yield i, f"{where} row {i}", row


def _python(value):
    """A DataFrame cell as plain Python: numpy scalars and arrays unwrapped, NaN and pandas' NA as None."""
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [_python(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value or type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _open_table(path: Path):
    """A Parquet file as a pyarrow Table; an Arrow file or a save_to_disk folder as a Dataset (or DatasetDict)."""
    datasets = _datasets(str(path))
    if not path.exists():
        raise DataError(str(path), None, "no such file")
    try:
        if path.is_dir():
            return datasets.load_from_disk(str(path))
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        return datasets.Dataset.from_file(str(path))
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        kind = "save_to_disk folder" if path.is_dir() else f"{path.suffix[1:].capitalize()} file"
        raise DataError(str(path), None, f"not a readable {kind} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def rows_of(path_or_name, split=None, data_dir=None, guess: Guess | None = None) -> Iterator[tuple[int, str, dict]]:
    """Records (objects) of a local .json (list) or .jsonl file, a table, or a hub dataset."""
    if in_memory(path_or_name) or is_local(path_or_name) and is_table(path_or_name):
        rows = table_rows(path_or_name, split)
    elif is_local(path_or_name):
        p = Path(path_or_name).expanduser()
        rows = json_list_rows(p) if p.name.removesuffix(".gz").endswith(".json") else jsonl_records(p, guess)
    else:
        rows = hub_rows(str(path_or_name), split, data_dir)
    for i, where, d in rows:
        if not isinstance(d, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(d).__name__}")
        yield i, where, d


def id_tag(path_or_name, split, data_dir=None) -> str:
    """The id infix: the file's stem, the hub split (with its data_dir), or an object's split or type."""
    if in_memory(path_or_name):
        return split or label(path_or_name)
    if is_local(path_or_name):
        return Path(path_or_name).stem
    return f"{data_dir}/{split}" if data_dir else split


def local_only(path, fmt: str, upstream: str):
    if not is_local(path):
        raise DataError(str(path), None, f"not a local .json/.jsonl file; {fmt} is not on the Hugging Face hub, "
                                         f"download it from {upstream}")
    return path if in_memory(path) else Path(path).expanduser()


def text_field(row: dict, key: str, where: str) -> str:
    if row.get(key) is None:
        raise DataError(where, key, "missing")
    if not isinstance(row[key], str):
        raise DataError(where, key, f"expected a string, got {type(row[key]).__name__}")
    return row[key]


def degenerate(chosen: str, rejected: str) -> str | None:
    """The skip reason for a pair with no usable preference, or None."""
    if not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen.strip() == rejected.strip():
        return "identical_responses"
    return None


def collect(source: str, path, rows: Iterable[tuple[int, str, Any]], convert: Callable[..., Pair | str]) -> Loaded:
    """Gather convert(index, where, record), a Pair or a skip reason, into a Loaded; validate, refuse duplicate ids."""
    out = Loaded([], {}, source, label(path))
    first: dict[str, str] = {}
    for i, where, d in rows:
        r = convert(i, where, d)
        out.rows += 1
        if isinstance(r, str):
            out.skipped[r] = out.skipped.get(r, 0) + 1
            continue
        r.validate(where)
        if r.id in first:
            raise DataError(where, "id", f"duplicate id {r.id!r} (first at {first[r.id]})")
        first[r.id] = where
        out.pairs.append(r)
    return out
