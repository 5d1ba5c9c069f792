"""A simulated critic: no model at all, for dose-response studies of critique quality."""
from __future__ import annotations

import hashlib
from typing import Literal

from ..llm import load_template
from ..schema import Field, Float, Int
from .base import Critic, Options, register

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


class SimulatedOptions(Options):
    backend: Literal["simulated"] = "simulated"
    p: Float = Field(ge=0, le=1)
    seed: Int | None = None
    batch_size: Int | None = Field(None, ge=1)


@register(SimulatedOptions)
class SimulatedCritic(Critic):
    """A SIMULATION, not a model: it is told which response of a pair is the chosen one and writes
    a fixed-phrase critique judging it good (chosen) or flawed (rejected). Each verdict is right
    with probability `p`, decided by a hash of (seed, prompt, response, label), so results do not
    depend on call order or batching."""

    needs_labels = True

    def __init__(self, p: float, seed: int = 0, *, template=None, batch_size: int = 256):
        self.p, self.seed = float(SimulatedOptions(p=p).p), int(seed)
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
