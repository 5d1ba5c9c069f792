"""What every critic backend is: the `CriticBackend` protocol (what augment, the cache, the judge
and metacritique use), `Critic`, the base class that implements it around a model backend
(critcore.llm) with a critique template, `Options`, the base of every backend's options model,
and the registry `BACKENDS` that `register` fills."""
from __future__ import annotations

import json
from typing import Callable, Iterator, Protocol, runtime_checkable

from ..llm import DEFAULT_MAX_CHARS, Failure, load_template, make_key
from ..llm.cache import sha256_text
from ..llm.complete import in_order
from ..llm.prompts import render
from ..schema import Schema


@runtime_checkable
class CriticBackend(Protocol):
    """A critic: `identity` and `params` (with the template, part of every cache key), `stream`
    of (index, critique or Failure, tokens) for `(prompt_text, response)` items as they finish,
    and the spec that rebuilds it. `needs_labels`: it is told which response is the chosen one
    (the simulation). `backend`: the model behind it (critcore.llm), or None when there is none."""

    identity: str
    params: dict
    template: str
    needs_labels: bool
    batch_size: int
    max_new_tokens: int
    backend: object

    def key(self, prompt: str, response: str, label: bool | None = None) -> str: ...
    def stream(self, items, labels=None) -> Iterator[tuple[int, "str | Failure", int]]: ...
    def spec(self) -> dict: ...
    def describe(self) -> dict: ...
    def release(self) -> None: ...


class Options(Schema):
    """The option every backend takes, its critique template (null: the default). A backend's
    model adds its own, with a `backend: Literal["name"]` field that names it; null stands for
    the backend's own default."""

    template: str | None = None


BACKENDS: dict[str, tuple[type[Options], type]] = {}  # backend name -> (options model, class)


def register(options: type[Options]) -> Callable[[type], type]:
    """Class decorator: `@register(MyOptions) class MyCritic(Critic)` makes `{"backend": NAME, ...}`
    specs build a MyCritic (NAME: the default of MyOptions.backend)."""
    def add(cls: type) -> type:
        BACKENDS[options.model_fields["backend"].default] = (options, cls)
        return cls
    return add


class Critic:
    """A model backend that writes critiques with a template. `max_chars` cuts the prompt
    (keeping its end) and the response (keeping its start) before templating."""

    needs_labels = False

    def __init__(self, backend, template=None, max_chars: int | None = DEFAULT_MAX_CHARS):
        self.backend = backend
        self.template = load_template(template)
        self.max_chars = max_chars
        self.identity = backend.identity
        self.params = {**backend.params, "max_chars": max_chars}
        self.batch_size, self.max_new_tokens = backend.batch_size, backend.max_new_tokens

    @property
    def template_sha(self) -> str:
        return sha256_text(self.template)

    @property
    def config_hash(self) -> str:
        """Short hash of template and params: two critics with equal identity and config_hash agree."""
        return sha256_text(json.dumps([self.template_sha, self.params], sort_keys=True))[:12]

    def key(self, prompt: str, response: str, label: bool | None = None) -> str:
        return make_key(self.identity, self.template_sha, self.params, prompt, response,
                        label if self.needs_labels else None)

    def stream(self, items, labels=None) -> Iterator[tuple[int, "str | Failure", int]]:
        """(index, critique or Failure, tokens) of `(prompt_text, response)` items as they finish."""
        return self.backend.stream([render(self.template, p, r, self.max_chars) for p, r in items])

    def generate(self, items: list[tuple[str, str]], labels: list[bool] | None = None) -> list[str]:
        """Critiques of `(prompt_text, response)` items, in order."""
        return [text for text, _ in in_order(self.stream(items, labels), len(items))]

    def complete(self, texts: list[str], max_new_tokens: int | None = None, answer_prefix: str | None = None):
        """The backend's replies to already-templated messages (used to serve HTTP in tests)."""
        return in_order(self.backend.stream(texts, max_new_tokens, answer_prefix), len(texts))

    def spec(self) -> dict:
        """A spec that make_critic turns back into an equal critic (same identity and config)."""
        return {**self.backend.spec(), "template": self.template, "max_chars": self.max_chars}

    def describe(self) -> dict:
        """What a reward model's recipe records of its critic: identity, config hash and spec."""
        return {"identity": self.identity, "config": self.config_hash, "spec": self.spec()}

    def release(self) -> None:
        """Free what the backend loaded (a model); it loads again when next asked."""
        self.backend.release()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, params={self.params})"
