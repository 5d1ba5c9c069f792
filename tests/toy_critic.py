"""A toy critic backend, written as a contributor adds one (CONTRIBUTING.md): this one module,
with its options model and its class joined by @register, and one line that imports it (in
critcore, its name in the import line of critcore/critics/__init__.py; here, the test's import).
It writes a fixed verdict and the response's first words: no model."""
from __future__ import annotations

from typing import Literal

from critcore.critics import Critic, Options, register
from critcore.llm import load_template
from critcore.schema import Field, Int


class ToyOptions(Options):
    backend: Literal["toy"] = "toy"
    word: str | None = None
    repeat: Int | None = Field(None, ge=1)


@register(ToyOptions)
class ToyCritic(Critic):
    def __init__(self, word: str = "fine", repeat: int = 1, *, template=None):
        self.word, self.repeat = word, repeat
        self.identity, self.params = f"toy:{word}", {"repeat": repeat}
        self.template = load_template(template)  # part of the cache key, as for every critic
        self.backend, self.max_chars, self.batch_size, self.max_new_tokens = None, None, 64, 0

    def stream(self, items, labels=None):
        for i, (_, response) in enumerate(items):
            yield i, f"{' '.join([self.word] * self.repeat)}: {' '.join(response.split()[:4])}", 0

    def spec(self) -> dict:
        return {"backend": "toy", "word": self.word, "repeat": self.repeat, "template": self.template}

    def release(self) -> None:
        pass
