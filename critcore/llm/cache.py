"""A persistent critique store: SQLite in WAL mode, one row per critique, keyed by a sha256.

The key covers everything that decides a critique: the critic's identity, the template's hash,
the generation parameters, the prompt, the completion (and, for critics that see the pair label,
the label). Each `put_many` is one transaction, so a process killed at any moment leaves every
committed batch intact and nothing half-written; the primary key makes duplicates impossible."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from ..errors import DataError

_SCHEMA = """CREATE TABLE IF NOT EXISTS critiques (
    key TEXT PRIMARY KEY,
    critique TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    critic TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)"""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_key(critic: str, template_sha: str, params: dict, prompt: str, completion: str, label=None) -> str:
    """The cache key of one critique. Dict order in `params` does not matter."""
    blob = json.dumps(
        {"critic": critic, "template": template_sha, "params": params, "prompt": prompt,
         "completion": completion, "label": label},
        sort_keys=True, ensure_ascii=False,
    )
    return sha256_text(blob)


BUSY_SECONDS = 60  # how long a process waits for another's lock on the file


def _open(path: str) -> sqlite3.Connection:
    """The file, set up (WAL, the table). Processes that set up a new file at the same moment each
    read it, then want to write: SQLite answers one of them "database is locked" at once, without
    waiting (its deadlock rule; 4 of 10 trials of 6 processes), so the setup is tried again until
    the busy timeout is spent."""
    db = sqlite3.connect(path, timeout=BUSY_SECONDS)
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            db.commit()
            return db
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            db.rollback()
            time.sleep(0.05)


class CritiqueCache:
    """Critiques by key. `path=":memory:"` keeps them for this process only.

    `stats` counts, since this object was opened: hits and misses (unique keys looked up),
    duplicates (repeats of an item within one run, generated once), generated and tokens_generated
    (rows this process really inserted: when two processes share the file and both generate an
    item, only the first insert counts), and failed (items the generator gave up on). Under a
    launcher, critcore.llm.cached adds the other processes' generated, tokens and failed, so the
    counts are the group's. The file takes several writers: WAL, a 60 s busy timeout, INSERT OR IGNORE."""

    def __init__(self, path: str | Path = ":memory:"):
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = _open(self.path)
        except (OSError, sqlite3.DatabaseError) as e:  # a file that is no SQLite database, a folder, no rights
            why = (f"{e.filename} is a file, not a folder" if isinstance(e, FileExistsError)
                   else e.strerror if isinstance(e, OSError) and e.strerror else str(e))
            raise DataError(self.path, None, f"cannot be used as the critique cache ({why}); move it away, "
                                             "or give another path (--cache, critique_cache, $CRITCORE_CACHE)") from None
        self.stats = {"hits": 0, "misses": 0, "duplicates": 0, "generated": 0, "tokens_generated": 0, "failed": 0}

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """The stored critiques among `keys`; counts hits and misses."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for i in range(0, len(keys), 500):  # stay under SQLite's bound-variable limit
            chunk = keys[i : i + 500]
            q = f"SELECT key, critique FROM critiques WHERE key IN ({','.join('?' * len(chunk))})"
            for key, critique in self._db.execute(q, chunk):
                if isinstance(critique, str):
                    found[key] = critique
        self.stats["hits"] += len(found)
        self.stats["misses"] += len(keys) - len(found)
        return found

    def put_many(self, critic: str, rows: list[tuple[str, str, int]]) -> int:
        """Store (key, critique, tokens) rows in one transaction; a key already there is kept.
        Returns how many rows were new."""
        for key, critique, tokens in rows:
            if not isinstance(critique, str):
                raise TypeError(f"critique for {key[:12]} is {type(critique).__name__}, not str")
        new = 0
        with self._db:
            for k, c, t in rows:
                cur = self._db.execute("INSERT OR IGNORE INTO critiques (key, critique, tokens, critic) VALUES (?, ?, ?, ?)",
                                       (k, c, int(t), critic))
                if cur.rowcount:
                    new += 1
                    self.stats["tokens_generated"] += int(t)
        self.stats["generated"] += new
        return new

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM critiques").fetchone()[0]

    def report(self) -> dict:
        """`stats` plus the hit rate and the number of stored records."""
        looked_up = self.stats["hits"] + self.stats["misses"]
        return {**self.stats, "hit_rate": round(self.stats["hits"] / looked_up, 4) if looked_up else None,
                "records": len(self), "path": self.path}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CritiqueCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def open_cache(cache) -> Iterator[CritiqueCache]:
    """The cache for a CritiqueCache (given as is, left open), a path or None (in memory), which
    this opens and closes."""
    if isinstance(cache, CritiqueCache):
        yield cache
    else:
        with CritiqueCache(cache or ":memory:") as store:
            yield store
