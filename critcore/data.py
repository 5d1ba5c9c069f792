"""Preference pairs: one record type, validation, JSONL I/O and the dataset loaders."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import atomic

RATINGS = ("slightly better", "better", "significantly better")


class DataError(ValueError):
    """Bad input, naming the file, the record and the field."""

    def __init__(self, where: str, field: str | None, problem: str):
        self.where, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}")


@dataclass
class Pair:
    """One preference pair. `prompt` is text or a list of chat messages ({role, content})."""

    id: str
    prompt: str | list[dict]
    chosen: str
    rejected: str
    rating: str | None = None  # one of RATINGS
    margin: float | None = None  # the source's raw preference strength
    subset: str | None = None
    source: str | None = None
    chosen_critique: str | None = None
    rejected_critique: str | None = None
    tie: bool = False  # annotators tied: kept only to be counted wrong
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "<dict>") -> "Pair":
        """Build and validate a pair from a mapping; errors name `where` and the field."""
        if not isinstance(d, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        for name in ("id", "prompt", "chosen", "rejected"):
            if name not in d or d[name] is None:
                raise DataError(where, name, "missing")
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        kwargs["meta"] = {**extra, **(d.get("meta") or {})}
        kwargs["id"] = str(kwargs["id"])
        pair = cls(**kwargs)
        pair.validate(where)
        return pair

    def validate(self, where: str = "<pair>") -> "Pair":
        _check_prompt(self.prompt, where)
        for name in ("chosen", "rejected"):
            _check_text(getattr(self, name), where, name)
        if self.chosen == self.rejected and not self.tie:
            raise DataError(where, "rejected", "identical to 'chosen'")
        if self.rating is not None and self.rating not in RATINGS:
            raise DataError(where, "rating", f"unknown rating {self.rating!r}; expected one of {RATINGS} or null")
        if self.margin is not None:
            if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)):
                raise DataError(where, "margin", f"expected a number, got {type(self.margin).__name__}")
            if not math.isfinite(self.margin):
                raise DataError(where, "margin", f"not a finite number: {self.margin}")
        for name in ("chosen_critique", "rejected_critique", "subset", "source"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DataError(where, name, f"expected a string or null, got {type(value).__name__}")
        if not isinstance(self.tie, bool):
            raise DataError(where, "tie", f"expected true/false, got {type(self.tie).__name__}")
        return self

    @property
    def has_critiques(self) -> bool:
        return self.chosen_critique is not None and self.rejected_critique is not None


def _check_text(value, where: str, name: str) -> None:
    if not isinstance(value, str):
        raise DataError(where, name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(where, name, "empty text")


def _check_prompt(prompt, where: str) -> None:
    if isinstance(prompt, str):
        return _check_text(prompt, where, "prompt")
    if not isinstance(prompt, list) or not prompt:
        raise DataError(where, "prompt", "expected text or a non-empty list of chat messages")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(where, f"prompt[{i}]", "expected a message {role: str, content: str}")


def prompt_text(prompt: str | list[dict]) -> str:
    """A chat prompt flattened to plain text (for critics and length statistics)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def write_pairs(path, pairs: Iterable[Pair]) -> None:
    """Write pairs as JSONL, atomically."""
    atomic.write_jsonl(path, (p.to_dict() for p in pairs))


def read_pairs(path) -> list[Pair]:
    """Read critcore's JSONL (also the shared training mix's shape); every record is validated."""
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(where, None, f"invalid JSON ({e.msg})") from None
            pairs.append(Pair.from_dict(d, where))
    return pairs
