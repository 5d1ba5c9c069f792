"""One cached, resumable completion loop, for critiques, the generative judge and metacritique.

Items are looked up by a content key in the cache; the missing ones go to a generator (a
backend's `stream`), longest first, and every finished output is committed as soon as it
arrives, in groups of the backend's `batch_size` (1 for an HTTP backend: each reply is
committed on its own; a local model's batch arrives at once), so a run killed at any moment
keeps all it had finished. An item the generator gives up on (a `Failure`) is never cached:
with on_error="fail" the loop raises a CriticError once everything else is committed; with
"skip" it returns the Failure, with its reason, for that item. An error the generator raises
(e.g. an HTTP endpoint that refuses the key) ends the loop at once, after committing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import CriticError
from ..progress import tqdm_bar
from .cache import CritiqueCache, make_key

ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class Failure:
    """An item the backend could not answer (after its retries): why."""

    reason: str


Generate = Callable[[list], Iterator[tuple[int, "str | Failure", int]]]


def in_order(stream: Iterable[tuple[int, "str | Failure", int]], n: int) -> list[tuple[str, int]]:
    """(text, tokens) of a backend's `stream` of n items, in item order; CriticError on a Failure."""
    out: list = [None] * n
    for i, text, tokens in stream:
        if isinstance(text, Failure):
            raise CriticError(text.reason)
        out[i] = (text, tokens)
    return out


def cached(cache: CritiqueCache, keys: Sequence[str], items: Sequence, generate: Generate, writer: str,
           batch_size: int = 16, desc: str = "outputs", progress: bool = True, on_error: str = "fail") -> list:
    """The output for each item (its Failure when on_error="skip" and it failed), from `cache`
    or from `generate(missing items)`, which yields (index into them, text or Failure, tokens) in
    any order. Identical keys are generated once; outputs are committed `batch_size` at a time."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    todo = dict(zip(keys, items))
    cache.stats["duplicates"] += len(keys) - len(todo)
    found = cache.get_many(list(todo))
    missing = sorted((k for k in todo if k not in found), key=lambda k: -len(str(todo[k])))
    failures: dict[str, str] = {}
    pending: list[tuple[str, str, int]] = []
    with tqdm_bar(total=len(missing), desc=desc, unit="item", disable=not progress or not missing) as bar:
        try:
            for i, out, tokens in (generate([todo[k] for k in missing]) if missing else ()):
                key = missing[i]
                if isinstance(out, Failure):
                    failures[key] = found[key] = out
                    cache.stats["failed"] += 1
                else:
                    found[key] = out
                    pending.append((key, out, tokens))
                if len(pending) >= batch_size:
                    cache.put_many(writer, pending)
                    pending = []
                bar.update(1)
        finally:
            if pending:  # what finished before an error or a Ctrl-C is kept
                cache.put_many(writer, pending)
    if failures and on_error == "fail":
        reasons = sorted({f.reason for f in failures.values()})
        raise CriticError(f"{len(failures)} of {len(missing)} items failed ({'; '.join(reasons[:3])}); the "
                          f"{len(missing) - len(failures)} that finished are cached, so a rerun asks only for these "
                          "(on_error: skip leaves them out instead)")
    return [found.get(k) for k in keys]


def complete_cached(backend, texts: list[str], cache: CritiqueCache, *, task: str, template_sha: str,
                    max_new_tokens: int | None = None, answer_prefix: str | None = None, progress: bool = True,
                    on_error: str = "fail") -> list:
    """A backend's replies to rendered prompts, through the cache. The key is the backend's
    identity, its generation parameters with the task, the answer prefix and max_new_tokens, the
    prompt template's sha256 and the rendered prompt."""
    params = {**backend.params, "task": task, "max_new_tokens": max_new_tokens or backend.max_new_tokens}
    if answer_prefix is not None and backend.uses_prefix:
        params["answer_prefix"] = answer_prefix
    keys = [make_key(backend.identity, template_sha, params, text, "") for text in texts]
    return cached(cache, keys, texts, lambda todo: backend.stream(todo, max_new_tokens, answer_prefix),
                  f"{backend.identity}#{task}", backend.batch_size, f"{task} ({backend.identity})", progress, on_error)
