"""A local model as critic (critcore.llm.LocalBackend): any alias, GGUF file, model folder or
hub name, on transformers or CTranslate2."""
from __future__ import annotations

from typing import Literal

from ..llm import DEFAULT_MAX_CHARS, LocalBackend
from ..llm.local import COMPUTE_TYPES, DTYPES, ENGINES
from ..schema import Field, Float, Int
from .base import Critic, Options, register


class LocalOptions(Options):
    """null: LocalBackend's default."""

    backend: Literal["local"] = "local"
    max_chars: Int | None = Field(None, ge=1)
    model: str = "smollm2"
    engine: Literal[ENGINES] | None = None
    compute_type: Literal[COMPUTE_TYPES] | None = None
    dtype: Literal[DTYPES] | None = None
    max_new_tokens: Int | None = Field(None, ge=1)
    temperature: Float | None = Field(None, ge=0)
    seed: Int | None = None
    batch_size: Int | None = Field(None, ge=1)
    device: str | None = None


@register(LocalOptions)
class LocalCritic(Critic):
    """A local model as critic: critcore.llm.LocalBackend's options (engine, compute_type,
    max_new_tokens, temperature, seed, batch_size, device, dtype) plus template and max_chars."""

    def __init__(self, model: str = "smollm2", *, template=None, max_chars: int | None = DEFAULT_MAX_CHARS,
                 **backend_options):
        super().__init__(LocalBackend(model, **backend_options), template, max_chars)
        self.model_name = self.backend.model_name
