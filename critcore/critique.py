"""Synthetic critiques (Ye et al. 2024): critics, the cache-backed `augment`, and the checks that
train and test pairs, and a reward model and its test pairs, were critiqued alike.

A critic is a model backend (critcore.llm) with a critique template: `identity` and `params`
(part of every cache key), `template`, and `stream(items, labels)` for items
`(prompt_text, response)`. Three kinds:

- `LocalCritic`: a local model (default SmolLM2-135M-Instruct) on the CTranslate2 engine, or on
  transformers as the reference (critcore.llm.local).
- `OpenAICritic`: any OpenAI-compatible `/v1/chat/completions` server (critcore.llm.http).
- `SimulatedCritic`: no model at all; a labelled simulation with accuracy p, for dose-response.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import asdict, is_dataclass, replace
from typing import Iterator

from .records import Pair, prompt_text
from .errors import CriticError, CriticMismatchError, UserError  # noqa: F401 - CriticError is part of this API
from .llm import DEFAULT_MAX_CHARS, CritiqueCache, Failure, HTTPBackend, LocalBackend, cached, load_template, make_key
from .llm.cache import open_cache, sha256_text
from .llm.complete import in_order
from .llm.prompts import render


class Critic:
    """A backend that writes critiques with a template. `max_chars` cuts the prompt (keeping its
    end) and the response (keeping its start) before templating."""

    needs_labels = False  # True: it needs to know which response is the chosen one

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


class LocalCritic(Critic):
    """A local model as critic: critcore.llm.LocalBackend's options (engine, compute_type,
    max_new_tokens, temperature, seed, batch_size, device, dtype) plus template and max_chars."""

    def __init__(self, model: str = "smollm2", *, template=None, max_chars: int | None = DEFAULT_MAX_CHARS,
                 **backend_options):
        super().__init__(LocalBackend(model, **backend_options), template, max_chars)
        self.model_name = self.backend.model_name


class OpenAICritic(Critic):
    """An OpenAI-compatible server as critic: critcore.llm.HTTPBackend's options (api_key_env,
    max_new_tokens, temperature, seed, max_concurrency, timeout, max_retries, backoff,
    max_backoff, batch_size) plus template and max_chars. Scaling with vLLM: serve the model on a
    GPU node and point many requests at it (max_concurrency 64), so continuous batching fills it."""

    def __init__(self, base_url: str, model: str, *, template=None, max_chars: int | None = DEFAULT_MAX_CHARS,
                 **backend_options):
        super().__init__(HTTPBackend(base_url, model, **backend_options), template, max_chars)
        self.url = self.backend.url


# ---------------------------------------------------------------- a simulated critic

_GOOD = (
    "The response answers the request accurately and helpfully.",
    "The response addresses what the user asked directly, and its content is correct.",
    "The response is helpful and to the point; it contains no evident errors.",
    "The response follows the request closely and gives correct, relevant information.",
)
_FLAWED = (
    "The response has flaws: it does not answer the request well or contains errors.",
    "The response misses what the user asked for and includes questionable content.",
    "The response is unhelpful or partly incorrect; it should address the request more precisely.",
    "The response drifts from the request and should not be trusted as accurate.",
)


class SimulatedCritic(Critic):
    """A SIMULATION, not a model: it is told which response of a pair is the chosen one and writes
    a fixed-phrase critique judging it good (chosen) or flawed (rejected). Each verdict is right
    with probability `p`, decided by a hash of (seed, prompt, response, label), so results do not
    depend on call order or batching. For dose-response studies of critique quality."""

    needs_labels = True

    def __init__(self, p: float, seed: int = 0, *, template=None, batch_size: int = 256):
        if not 0.0 <= float(p) <= 1.0:
            raise UserError(f"simulated critic accuracy p must be in [0, 1], got {p}")
        self.p, self.seed = float(p), int(seed)
        self.identity = f"simulated(p={self.p:g},seed={self.seed})"
        self.template = load_template(template)  # unused by the simulation; kept for uniform keys
        self.params, self.max_chars, self.backend = {}, None, None
        self.batch_size, self.max_new_tokens = int(batch_size), 0

    def stream(self, items, labels=None):
        if labels is None or len(labels) != len(items):
            raise ValueError("the simulated critic needs each item's label (True = the chosen response)")
        for i, ((prompt, response), chosen) in enumerate(zip(items, labels)):
            h = hashlib.sha256(f"{self.seed}\0{prompt}\0{response}\0{bool(chosen)}".encode()).digest()
            right = int.from_bytes(h[:8], "big") / 2**64 < self.p
            phrases = _GOOD if (bool(chosen) == right) else _FLAWED
            yield i, phrases[h[8] % len(phrases)], 0

    def spec(self) -> dict:
        return {"backend": "simulated", "p": self.p, "seed": self.seed, "template": self.template}

    def release(self) -> None:
        pass


_BACKENDS = {"local": LocalCritic, "openai": OpenAICritic, "simulated": SimulatedCritic}


def model_backend(spec):
    """The LLM backend (critcore.llm) of a local or OpenAI-compatible critic, for prompts other
    than critiques (the judge's, metacritique's): a spec or a Critic."""
    critic = make_critic(spec)
    if not isinstance(critic, (LocalCritic, OpenAICritic)):
        raise UserError(f"this needs a local or OpenAI-compatible model, not {critic!r}")
    return critic.backend


CRITIC_FORMS = ('none | smollm2 | gemma3-270m | local:PATH_OR_HUB_NAME | org/model | simulated:P[,seed=N] | '
                '{"backend": "openai", "base_url": URL, "model": NAME, "api_key_env": VAR, ...}')


def parse_critic_spec(spec) -> dict | None:
    """A critic spec as a constructor mapping {"backend": ..., ...}, or None for No-Critiques,
    without building anything. The forms: CRITIC_FORMS (a dict may also be given as JSON text)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise UserError(f"critic spec is not valid JSON ({e.msg}); forms: {CRITIC_FORMS}") from None
    if isinstance(spec, str):
        if spec.startswith("simulated:"):
            p, _, rest = spec.removeprefix("simulated:").partition(",")
            try:
                kw = dict(item.split("=", 1) for item in rest.split(",") if item)
                return {"backend": "simulated", "p": float(p), **{k.strip(): int(v) for k, v in kw.items()}}
            except ValueError:
                raise UserError(f"bad simulated critic {spec!r}: write simulated:P or simulated:P,seed=N") from None
        if spec.startswith("openai:"):
            raise UserError('give an OpenAI-compatible critic as a mapping: '
                            '{"backend": "openai", "base_url": ..., "model": ...}')
        return {"backend": "local", "model": spec.removeprefix("local:")}
    if not isinstance(spec, dict):
        raise UserError(f"a critic spec is a string or a mapping, got {type(spec).__name__}; forms: {CRITIC_FORMS}")
    spec = dict(spec)
    backend = spec.setdefault("backend", "local")
    if backend == "none":
        return None
    if backend not in _BACKENDS:
        raise UserError(f"unknown critic backend {backend!r}; expected local, openai, simulated or none")
    accepted = _accepted(_BACKENDS[backend])
    unknown = sorted(set(spec) - accepted - {"backend"})
    if unknown:
        raise UserError(f"critic backend {backend!r} takes no option {unknown[0]!r}; options: {', '.join(sorted(accepted))}")
    return spec


def _accepted(cls) -> set[str]:
    """The options a critic class takes: its own and its backend's."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "backend_options"}
    backend = {LocalCritic: LocalBackend, OpenAICritic: HTTPBackend}.get(cls)
    if backend is not None:
        names |= set(inspect.signature(backend.__init__).parameters) - {"self"}
    return names


_AT_LEAST = {"max_new_tokens": 1, "batch_size": 1, "max_chars": 1, "max_concurrency": 1, "max_retries": 0,
             "timeout": 0.001, "backoff": 0, "max_backoff": 0, "temperature": 0}  # the numeric options of the backends


def make_critic(spec, options=None, **overrides) -> Critic | None:
    """A critic from a spec (parse_critic_spec; a Critic is returned as is), or None for
    No-Critiques. `options` (critcore.config.CriticOptions or a mapping) fill the constructor
    arguments the backend takes and the spec does not set; `overrides` replace the spec's."""
    if isinstance(spec, Critic):
        return spec
    spec = parse_critic_spec(spec)
    if spec is None:
        return None
    backend = spec.pop("backend")
    cls = _BACKENDS[backend]
    if is_dataclass(options):
        options = asdict(options)
    accepted = _accepted(cls)
    kw = {k: v for k, v in (options or {}).items() if v is not None and k in accepted and k not in spec}
    kw.update(spec)
    kw.update({k: v for k, v in overrides.items() if k in accepted})
    for key, low in _AT_LEAST.items():
        v = kw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low):
            raise UserError(f"critic {backend}: '{key}' must be a number of at least {low:g}, got {v!r}")
    try:
        return cls(**kw)
    except TypeError as e:  # a key missing from the spec, or one the backend does not take
        missing = re.findall(r"'(\w+)'", str(e)) if "missing" in str(e) else []
        raise UserError(f"critic {backend}: " + (f"the spec needs {', '.join(missing)}" if missing else str(e))) from None


def critic_for_model(recipe: dict | None, requested=None, options=None, allow_mismatch: bool = False):
    """The critic to score a reward model's test pairs with: `requested` (a spec; None = the one in
    the model's recipe). Returns (critic or None, what the recipe says: a dict, None for a
    No-Critiques RM, or "unknown" for a checkpoint without a recipe).

    A requested critic other than the recipe's, or none for a critique RM, is a
    CriticMismatchError naming both, unless allow_mismatch. A recipe whose critiques came with
    the training data (no spec to rebuild the critic from) needs `requested` or test pairs that
    carry the same critiques (see check_recipe)."""
    expected = "unknown" if recipe is None else recipe.get("critic")
    if requested is None:
        if isinstance(expected, dict) and expected.get("spec"):
            return make_critic(expected["spec"], options), expected
        return None, expected
    critic = make_critic(requested, options)
    if not allow_mismatch and expected != "unknown":
        got = None if critic is None else {"identity": critic.identity, "config": critic.config_hash}
        want = None if expected is None else {"identity": expected.get("identity"), "config": expected.get("config")}
        if got != want:
            raise CriticMismatchError(
                f"the model was trained {_say(expected)}, but it would be scored {_say(got)}; "
                "pass --allow-critic-mismatch (allow_critic_mismatch: true) for a cross-critic experiment")
    return critic, expected


def _say(critic) -> str:
    if critic is None:
        return "without critiques"
    return f"with critiques by {critic.get('identity')!r} (config {critic.get('config')})"


def check_recipe(expected, pairs: list[Pair], allow_mismatch: bool = False) -> None:
    """Test pairs must carry the critiques the model was trained with (`expected`, from
    critic_for_model): none for a No-Critiques RM, the same critic's for a critique RM."""
    if expected == "unknown" or allow_mismatch:
        return
    tags = {(p.meta.get("critic"), p.meta.get("critic_config")) for p in pairs if p.has_critiques}
    got = None if not tags else {"identity": sorted(tags, key=str)[0][0], "config": sorted(tags, key=str)[0][1]}
    want = None if expected is None else {"identity": expected.get("identity"), "config": expected.get("config")}
    if len(tags) > 1 or got != want or (tags and sum(p.has_critiques for p in pairs) < len(pairs)):
        hint = ("; its critiques came with its training data: give --critic with that critic, or test data "
                "critiqued by it" if isinstance(expected, dict) and not expected.get("spec") else "")
        raise CriticMismatchError(f"the model was trained {_say(expected)}, but the test pairs carry "
                                  f"{_say(got)[5:] if got else 'no critiques'}{hint}")


# ---------------------------------------------------------------- augmentation


def critique_texts(critic: Critic, items: list[tuple[str, str, bool | None]], cache: CritiqueCache,
                   progress: bool = True, on_error: str = "fail") -> list:
    """Critiques of (prompt text, response, label) items through the cache (critcore.llm.cached):
    cached ones are reused, identical items generated once, the rest stream from the critic,
    longest first, committed as they finish. With on_error="skip", an item the critic can never
    answer comes back as None."""
    keys = [critic.key(text, response, label) for text, response, label in items]

    def generate(todo):
        labels = [label for _, _, label in todo] if critic.needs_labels else None
        return critic.stream([(text, response) for text, response, _ in todo], labels)

    return cached(cache, keys, items, generate, critic.identity, critic.batch_size,
                  f"critiques ({critic.identity})", progress, on_error)


def augment(pairs: list[Pair], critic, cache: CritiqueCache | str | os.PathLike | None = None,
            progress: bool = True, on_error: str = "fail") -> list[Pair]:
    """The pairs with chosen_critique / rejected_critique filled and meta["critic"] set.

    `critic` is a Critic or a spec for make_critic; "none" clears critiques. `cache` is a
    CritiqueCache, a path to one, or None (in memory); see critique_texts. With on_error="skip",
    a pair whose critique failed is kept without critiques and marked meta["critique_failed"]
    (drop_failed leaves those out)."""
    critic = make_critic(critic)
    if critic is None:
        return [replace(p, chosen_critique=None, rejected_critique=None,
                        meta={**{k: v for k, v in p.meta.items() if k != "critic_config"}, "critic": "none"})
                for p in pairs]
    with open_cache(cache) as store:
        items = [(prompt_text(p.prompt), response, label) for p in pairs
                 for response, label in ((p.chosen, True), (p.rejected, False))]
        texts = critique_texts(critic, items, store, progress, on_error)
    tag = {"critic": critic.identity, "critic_config": critic.config_hash}
    out = []
    for i, p in enumerate(pairs):
        c, r = texts[2 * i], texts[2 * i + 1]
        if c is None or r is None:
            out.append(replace(p, chosen_critique=None, rejected_critique=None, meta={**p.meta, "critique_failed": True}))
        else:
            out.append(replace(p, chosen_critique=c, rejected_critique=r, meta={**p.meta, **tag}))
    return out


def drop_failed(pairs: list[Pair]) -> tuple[list[Pair], int]:
    """The pairs whose critiques did not fail, and how many were left out."""
    kept = [p for p in pairs if not p.meta.get("critique_failed")]
    return kept, len(pairs) - len(kept)


def check_same_critic(train_pairs: list[Pair], test_pairs: list[Pair]) -> str | None:
    """Raise CriticMismatchError unless train and test were critiqued alike: both without
    critiques, or both fully critiqued by one critic with one template and parameters.
    Returns the critic identity (None when neither side has critiques)."""

    def side(pairs, name):
        n = sum(p.has_critiques for p in pairs)
        if 0 < n < len(pairs):
            raise CriticMismatchError(f"{name}: only {n} of {len(pairs)} pairs have critiques")
        if n == 0:
            return None
        tags = {(p.meta.get("critic", "unknown"), p.meta.get("critic_config")) for p in pairs}
        if len(tags) > 1:
            raise CriticMismatchError(f"{name} mixes critics: {sorted(tags, key=str)}")
        return tags.pop()

    a, b = side(train_pairs, "train"), side(test_pairs, "test")
    if a != b:
        say = lambda t: "no critiques" if t is None else f"critic {t[0]!r} (config {t[1]})"  # noqa: E731
        raise CriticMismatchError(
            f"train and test must use the same critic: train has {say(a)}, test has {say(b)}")
    return a[0] if a else None
