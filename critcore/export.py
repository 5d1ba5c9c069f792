"""Pairs out as a Hugging Face dataset (a Parquet file or a `save_to_disk` folder, atomically): TRL's
preference columns plus the critiques and the critic's tags, with the critic and the template a
critique RM reads them with in the dataset's info, so TRL's RewardTrainer trains a critique RM from
it with one `map`. critcore reads it back (format trl) with its critiques and their critic."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from . import __version__, atomic
from .errors import UserError
from .format import template
from .records import Pair

DATASET_SUFFIXES = (".parquet",)  # --out FILE.parquet; a path without a suffix is a save_to_disk folder
# columns always written (TRL's and the critiques'); rating, subset, source and tie only when some pair has them
COLUMNS = ("id", "prompt", "chosen", "rejected", "chosen_critique", "rejected_critique", "critic", "critic_config")
OPTIONAL = ("rating", "subset", "source", "tie")


def is_dataset_path(path) -> bool:
    """Whether `--out PATH` asks for a dataset (a .parquet file, or a folder: no suffix, an
    existing folder, or a trailing '/') rather than critcore JSONL."""
    p = Path(path)
    return p.suffix in DATASET_SUFFIXES or str(path).endswith(("/", "\\")) or p.is_dir() or not p.suffix


def check_target(path) -> None:
    """Refuse a save_to_disk target that is an existing folder holding anything but a saved dataset:
    the atomic write replaces the folder whole, so it would delete what the folder holds."""
    p = Path(path)
    if p.is_dir() and any(p.iterdir()) and not (p / "dataset_info.json").is_file():
        raise UserError(f"{p}: is a folder, not a file, and holds no saved dataset; writing the dataset there "
                        "would replace it: give a new folder, a .parquet or a .jsonl file")


def rows(pairs: list[Pair]) -> list[dict]:
    """One row per pair in TRL's columns: standard (text) when every prompt is text, else
    conversational (a text prompt becomes one user message, each response one assistant message)."""
    chat = any(isinstance(p.prompt, list) for p in pairs)
    side = (lambda text: [{"role": "assistant", "content": text}]) if chat else (lambda text: text)
    out = []
    for p in pairs:
        prompt = [{"role": "user", "content": p.prompt}] if chat and isinstance(p.prompt, str) else p.prompt
        row = {"id": p.id, "prompt": prompt, "chosen": side(p.chosen), "rejected": side(p.rejected),
               "chosen_critique": p.chosen_critique, "rejected_critique": p.rejected_critique,
               "critic": p.meta.get("critic"), "critic_config": p.meta.get("critic_config")}
        out.append(row | {k: getattr(p, k) for k in OPTIONAL})
    kept = [k for k in OPTIONAL if any(r[k] not in (None, False) for r in out)]
    return [{k: r[k] for k in (*COLUMNS, *kept)} for r in out]


def info(pairs: list[Pair]) -> dict:
    """What the dataset's info records: the critic (identity and config hash; "none" without
    critiques), the template a critique RM reads `{completion}` and `{critique}` with, and critcore's version."""
    tags = sorted({(p.meta.get("critic"), p.meta.get("critic_config")) for p in pairs if p.has_critiques}, key=str)
    critic = [{"identity": c, "config": h} for c, h in tags]
    return {"critcore": __version__, "critic": critic[0] if len(critic) == 1 else critic or "none",
            "critique_template": template("rm_critique.txt"), "pairs": len(pairs)}


def describe(meta: dict) -> str:
    critic = meta["critic"]
    who = ("no critiques" if critic == "none" else
           f"critiques by {critic['identity']} (config {critic['config']})" if isinstance(critic, dict) else
           f"critiques by {len(critic)} critics")
    return (f"Preference pairs in TRL's columns with {who}, in chosen_critique / rejected_critique, written by "
            f"critcore {meta['critcore']}. A critique RM reads each response as {meta['critique_template']!r} "
            f"(critcore: {json.dumps(meta, ensure_ascii=False)})")


def to_dataset(pairs: Iterable[Pair]):
    """The pairs as a `datasets.Dataset` (rows) with the critic in its info (info)."""
    import datasets

    pairs = list(pairs)
    meta = info(pairs)
    return datasets.Dataset.from_list(rows(pairs), info=datasets.DatasetInfo(description=describe(meta))), meta


def read_info(dataset) -> dict | None:
    """The critcore record in a dataset's info (to_dataset), or None."""
    _, sep, tail = (dataset.info.description or "").rpartition("(critcore: ")
    return json.loads(tail[:-1]) if sep else None


def write_dataset(path, pairs: Iterable[Pair]) -> Path:
    """The pairs as a Parquet file (PATH.parquet) or a `save_to_disk` folder (any other PATH), atomically."""
    import pyarrow.parquet as pq

    ds, meta = to_dataset(pairs)
    path = Path(path)
    if path.suffix == ".parquet":
        table = ds.data.table
        schema_meta = {**(table.schema.metadata or {}), b"critcore": json.dumps(meta).encode()}
        with atomic.atomic_open(path, "wb") as f:
            pq.write_table(table.replace_schema_metadata(schema_meta), f)
    else:
        check_target(path)
        with atomic.atomic_dir(path) as tmp:
            ds.save_to_disk(str(tmp))
    return path
