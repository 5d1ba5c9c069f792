"""The preference pair: one record type and its checks, at the bottom of critcore. Loaders
(critcore.data, critcore.generated), formatting, the loss, training and scoring all read it."""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .errors import DataError

RATINGS = ("slightly better", "better", "significantly better")
ROLES = ("system", "user", "assistant", "tool")


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
        if self.margin is not None and number(vars(self), "margin", where) < 0:
            raise DataError(where, "margin", f"{self.margin} is negative: chosen must be the preferred response")
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
        check_message(m, where, f"prompt[{i}]")


def check_message(m, where: str, field: str) -> None:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
        raise DataError(where, field, "expected a message {role: str, content: str}")
    if m["role"] not in ROLES:
        raise DataError(where, f"{field}.role", f"unknown role {m['role']!r}; expected one of {', '.join(ROLES)}")


def prompt_text(prompt: str | list[dict]) -> str:
    """A chat prompt flattened to plain text (for critics and length statistics)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def fingerprints(pairs: Iterable[Pair]) -> tuple[list[str], list[str]]:
    """(prompt keys, pair keys), one of each per pair: short hashes of its prompt (whitespace
    aside) and of the prompt with both responses. They tell held-out pairs seen in training
    (`overlap`) without keeping the training texts, so a saved RM's recipe can carry them."""
    def key(*texts: str) -> str:
        return hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:12]

    prompts, whole = [], []
    for p in pairs:
        prompt = " ".join(prompt_text(p.prompt).split())
        prompts.append(key(prompt))
        whole.append(key(prompt, p.chosen, p.rejected))
    return prompts, whole


def overlap(trained: tuple[Iterable[str], Iterable[str]], held: list[Pair]) -> dict[str, int] | None:
    """How many `held` pairs share their prompt with a trained pair and how many are trained pairs
    outright (`trained`: the training pairs' fingerprints); None when none share a prompt."""
    prompts, whole = set(trained[0]), set(trained[1])
    held_prompts, held_whole = fingerprints(held)
    shared = sum(k in prompts for k in held_prompts)
    return {"same_prompt": shared, "same_pair": sum(k in whole for k in held_whole), "of": len(held)} if shared else None


def number(row: dict, key: str, where: str) -> float:
    v = row.get(key)
    if v is None:
        raise DataError(where, key, "missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataError(where, key, f"expected a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise DataError(where, key, f"not a finite number: {v}")
    return v
