"""The LLM layer: model backends (local engines, an OpenAI-compatible HTTP client), prompt
templates, the content-keyed cache, and one cached, resumable completion loop that critiques,
the generative judge and metacritique all use. critcore.critique, judge and metacritique keep
only their own logic on top of it."""
from .cache import CritiqueCache, make_key, sha256_text
from .complete import ON_ERROR, Failure, cached, complete_cached
from .http import EndpointError, HTTPBackend, mask, read_key
from .local import ENGINES, LocalBackend
from .prompts import DEFAULT_MAX_CHARS, fill, load_prompt, load_template, render

__all__ = ["CritiqueCache", "make_key", "sha256_text", "ON_ERROR", "Failure", "cached", "complete_cached",
           "EndpointError", "HTTPBackend", "mask", "read_key", "ENGINES", "LocalBackend", "DEFAULT_MAX_CHARS", "fill", "load_prompt", "load_template",
           "render"]
