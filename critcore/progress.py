"""Progress bars a person can follow wherever a run is watched: tqdm's live bars in a terminal
and in JupyterLab; where output goes to a log (papermill, `critcore run`, a file or a pipe) one
whole line per update instead, since a log keeps only the first state of a bar redrawn in place."""
from __future__ import annotations

import os
import re
import sys

MODE_ENV = "CRITCORE_PROGRESS"  # "lines" or "bars"; unset: lines unless stderr is a terminal or a live notebook
LINE_EVERY_S = 10  # at most one line per bar this often (and its last state)


def as_lines() -> bool:
    """Whether bars are written as lines: $CRITCORE_PROGRESS, else in a notebook kernel not
    (critcore.run.setup sets lines for papermill), else when stderr is not a terminal."""
    mode = os.environ.get(MODE_ENV)
    if mode in ("lines", "bars"):
        return mode == "lines"
    if "ipykernel" in sys.modules:
        return False
    return not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class _Lines:
    """A file for tqdm that writes each redraw of a bar that moved it as one line on stderr (a
    redraw with the same count, as at close, only updates the times in brackets: no new line)."""

    def __init__(self):
        self.last = ""

    def write(self, text: str) -> None:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "").strip()  # no cursor moves in a log
        count = re.sub(r"\[[^\]]*\]$", "", text)
        if text and count != self.last:
            self.last = count
            print(text, file=sys.stderr, flush=True)

    def flush(self) -> None:
        sys.stderr.flush()


def tqdm_bar(iterable=None, **kwargs):
    """tqdm(iterable, **kwargs): a live bar, or a line every LINE_EVERY_S seconds (`as_lines`)."""
    if kwargs.get("disable") or not as_lines():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    from tqdm.std import tqdm

    kwargs.setdefault("mininterval", LINE_EVERY_S)
    return tqdm(iterable, file=_Lines(), ascii=True, ncols=100, **kwargs)
