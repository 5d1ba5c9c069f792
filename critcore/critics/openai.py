"""Any OpenAI-compatible `/v1/chat/completions` server as critic (critcore.llm.HTTPBackend).
Scaling with vLLM: serve the model on a GPU node and point many requests at it
(max_concurrency 64), so continuous batching fills it."""
from __future__ import annotations

from typing import Literal

from ..llm import DEFAULT_MAX_CHARS, HTTPBackend
from ..schema import Field, Float, Int
from .base import Critic, Options, register


class OpenAIOptions(Options):
    """null: HTTPBackend's default."""

    backend: Literal["openai"] = "openai"
    base_url: str
    max_chars: Int | None = Field(None, ge=1)
    model: str
    api_key_env: str | None = None
    max_new_tokens: Int | None = Field(None, ge=1)
    temperature: Float | None = Field(None, ge=0)
    seed: Int | None = None
    max_concurrency: Int | None = Field(None, ge=1)
    timeout: Float | None = Field(None, ge=0.001)
    max_retries: Int | None = Field(None, ge=0)
    backoff: Float | None = Field(None, ge=0)
    max_backoff: Float | None = Field(None, ge=0)


@register(OpenAIOptions)
class OpenAICritic(Critic):
    """An OpenAI-compatible server as critic: critcore.llm.HTTPBackend's options (api_key_env,
    max_new_tokens, temperature, seed, max_concurrency, timeout, max_retries, backoff,
    max_backoff) plus template and max_chars; each critique is cached as it arrives."""

    def __init__(self, base_url: str, model: str, *, template=None, max_chars: int | None = DEFAULT_MAX_CHARS,
                 **backend_options):
        super().__init__(HTTPBackend(base_url, model, **backend_options), template, max_chars)
        self.url = self.backend.url
