"""Critic backends, one module each: its options model (a critcore.critics.base.Options with a
`backend: Literal["name"]` field) and its class (a Critic, or anything with the CriticBackend
protocol), joined in the registry by `@register(Options)`. Adding a backend is one new module and
its name in the import line below. `parse_critic_spec` reads every spec form; `make_critic`
builds the critic a spec names."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Union

from pydantic import Field, TypeAdapter, ValidationError

from ..errors import UserError
from ..schema import problem
from . import local, openai, simulated  # noqa: F401 - the backends: each registers itself (base.register)
from .base import BACKENDS, Critic, CriticBackend, Options, register  # noqa: F401 - the package's API
from .local import LocalCritic  # noqa: F401
from .openai import OpenAICritic  # noqa: F401
from .simulated import SimulatedCritic  # noqa: F401

CRITIC_FORMS = ('none | smollm2 | gemma3-270m | local:PATH_OR_HUB_NAME | org/model | simulated:P[,seed=N] | '
                '{"backend": "openai", "base_url": URL, "model": NAME, "api_key_env": VAR, ...}')


@lru_cache(maxsize=8)
def _options(models: tuple[type[Options], ...]) -> TypeAdapter:
    """The registered options models as one discriminated union on `backend`."""
    return TypeAdapter(Annotated[Union[models], Field(discriminator="backend")])


def _string_spec(spec: str) -> dict:
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


def parse_critic_spec(spec) -> dict | None:
    """A critic spec as a mapping {"backend": ..., ...} whose options its backend's model
    accepts, or None for No-Critiques, without building anything. The forms: CRITIC_FORMS (a
    mapping may also be given as JSON text)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise UserError(f"critic spec is not valid JSON ({e.msg}); forms: {CRITIC_FORMS}") from None
    if isinstance(spec, str):
        spec = _string_spec(spec)
    if not isinstance(spec, dict):
        raise UserError(f"a critic spec is a string or a mapping, got {type(spec).__name__}; forms: {CRITIC_FORMS}")
    spec = {"backend": "local", **spec}
    if spec["backend"] == "none":
        return None
    try:
        _options(tuple(options for options, _ in BACKENDS.values())).validate_python(spec)
    except ValidationError as e:
        model = BACKENDS.get(spec["backend"], (Options, None))[0]
        raise problem(e, model, f"critic {spec['backend']}", tagged=True) from None
    return spec


def make_critic(spec, options=None, **overrides) -> CriticBackend | None:
    """A critic from a spec (parse_critic_spec; a critic is returned as is), or None for
    No-Critiques. `options` (critcore.params.CriticOptions or a mapping) fill the options the
    backend takes and the spec does not set; `overrides` replace the spec's."""
    if isinstance(spec, CriticBackend):
        return spec
    spec = parse_critic_spec(spec)
    if spec is None:
        return None
    model, cls = BACKENDS[spec["backend"]]
    given = {k: v for k, v in dict(options or {}).items() if v is not None and k in model.model_fields and k not in spec}
    given.update(spec)
    given.update({k: v for k, v in overrides.items() if k in model.model_fields})
    kw = model.check(given, f"critic {spec['backend']}").model_dump(exclude_none=True, exclude={"backend"})
    return cls(**kw)


def model_backend(spec):
    """The model backend (critcore.llm) of a critic that has one (a local model, a server), for
    prompts other than critiques (the judge's, metacritique's): a spec or a critic."""
    critic = make_critic(spec)
    if getattr(critic, "backend", None) is None:
        raise UserError(f"this needs a local or OpenAI-compatible model, not {critic!r}")
    return critic.backend
