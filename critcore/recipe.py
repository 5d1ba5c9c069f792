"""The recipe, as schemas: `TrainConfig` (the paper's training recipe: effective batch 32, 1
epoch, AdamW, warmup then cosine decay to 10% of the peak; critcore.train runs it), the rating ->
margin presets, and `Recipe`, what a saved RM records of how it was trained (critcore_recipe.json,
read back by critcore.model). Light on purpose: a configuration is checked before torch loads."""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import ConfigDict, StrictBool, StrictInt, field_validator, model_validator

from .errors import ConfigError, CriticMismatchError
from .format import MAX_LENGTH
from .records import RATINGS, Pair
from .schema import Field, Float, Int, Schema

RECIPE_FILE = "critcore_recipe.json"  # beside a saved RM's weights: what scoring needs to read it as it was trained

# Rating -> margin. Llama 2's two margin scales (Touvron et al. 2023, Table 28).
MARGIN_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "llama2-small": {"slightly better": 1 / 3, "better": 2 / 3, "significantly better": 1.0},
    "llama2-large": {"slightly better": 1.0, "better": 2.0, "significantly better": 3.0},
}


def margin_table(spec: str | dict | None) -> dict[str, float] | Literal["raw"]:
    """A rating -> margin mapping from a preset name, a dict, or 'raw' (use each pair's raw margin)."""
    if spec is None:
        return {}
    if spec == "raw":
        return "raw"
    if isinstance(spec, str):
        if spec not in MARGIN_PRESETS:
            raise ValueError(f"unknown margin preset {spec!r}; use one of {sorted(MARGIN_PRESETS)}, 'raw', or a dict")
        return MARGIN_PRESETS[spec]
    unknown = set(spec) - set(RATINGS)
    if unknown:
        raise ValueError(f"margin mapping has unknown ratings {sorted(unknown)}; expected {RATINGS}")
    return {k: float(v) for k, v in spec.items()}


class TrainConfig(Schema):
    """Training options. Values that would train nothing, or something else than asked, are
    refused whichever way a TrainConfig is made (params, --set, Python)."""

    key_prefix = "train"

    backbone: str = "minilm"
    lr: Float = Field(5e-5, gt=0)
    batch_size: Int = Field(32, gt=0)  # effective pairs per optimizer step
    micro_batch_size: Int = Field(8, gt=0)  # pairs per forward; gradients accumulate up to batch_size
    epochs: Int = Field(1, gt=0)
    warmup_ratio: Float = Field(0.05, ge=0, lt=1)
    min_lr_ratio: Float = Field(0.1, ge=0, le=1)  # cosine decays to this share of the peak
    weight_decay: Float = Field(0.0, ge=0)
    max_grad_norm: Float = Field(1.0, ge=0)  # 0: no clipping
    max_length: Int = Field(MAX_LENGTH, gt=0)
    margin: str | dict | None = "none"  # preset name, rating -> margin dict, or "raw"
    with_critiques: bool = True  # use pairs' critiques when they have them
    lora: dict | None = None  # e.g. {"r": 16, "alpha": 32}
    dropout: bool = False  # off by default for RM training
    bf16: bool | None = None  # bf16 autocast; None: on a GPU and on a CPU with native bf16 (critcore.hardware)
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    seed: Int = 0
    save_every: Int = Field(0, ge=0)  # optimizer steps between checkpoints; 0 = none
    threads: Int | None = Field(None, gt=0)
    eval_batch_size: Int = Field(32, gt=0)

    @field_validator("margin")
    @classmethod
    def _margin(cls, value):
        margin_table(value)
        return value

    @model_validator(mode="after")
    def _rules(self):
        self.accumulation()
        return self

    def accumulation(self, processes: int = 1) -> int:
        """Micro-batches per optimizer step on each of `processes` devices: batch_size must be a
        multiple of micro_batch_size x processes."""
        per_step = self.micro_batch_size * processes
        if self.batch_size % per_step:
            raise ConfigError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                             f"{self.micro_batch_size}" + (f" x {processes} processes" if processes > 1 else ""))
        return self.batch_size // per_step

    def key(self) -> str:
        """A hash of everything that changes the trained model (not logging or checkpointing)."""
        d = {k: v for k, v in self.model_dump().items() if k not in ("save_every", "threads", "eval_batch_size")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class Recipe(Schema):
    """What scoring reads of a saved RM's recipe (critcore.train.recipe writes it all): the
    length it was trained at, and its critic (null: trained without critiques), which must be
    there, or the RM would read as a No-Critiques RM."""

    model_config = ConfigDict(extra="allow")

    max_length: Annotated[StrictInt, Field(gt=0)]
    with_critiques: StrictBool
    critic: dict | None


def trained_critic(recipe: dict | None):
    """What a saved RM's recipe says of its critiques: a dict (identity, config and, unless they
    came with the data, the spec), None (trained without), or "unknown" (no recipe)."""
    return "unknown" if recipe is None else recipe.get("critic")


def say(critic) -> str:
    if critic is None:
        return "without critiques"
    return f"with critiques by {critic.get('identity')!r} (config {critic.get('config')})"


def check_recipe(expected, pairs: list[Pair], allow_mismatch: bool = False) -> None:
    """Pairs scored by an RM must carry the critiques it was trained with (`expected`,
    trained_critic): none for a No-Critiques RM, the same critic's for a critique RM; else its
    margins are not the ones its recipe gives. critcore.evaluate checks it wherever an RM scores;
    `allow_mismatch` (--allow-critic-mismatch) is for cross-critic experiments."""
    if expected == "unknown" or allow_mismatch:
        return
    tags = {(p.meta.get("critic"), p.meta.get("critic_config")) for p in pairs if p.has_critiques}
    got = None if not tags else {"identity": sorted(tags, key=str)[0][0], "config": sorted(tags, key=str)[0][1]}
    want = None if expected is None else {"identity": expected.get("identity"), "config": expected.get("config")}
    if len(tags) > 1 or got != want or (tags and sum(p.has_critiques for p in pairs) < len(pairs)):
        hint = ("; its critiques came with its training data: give --critic with that critic, or test data "
                "critiqued by it" if isinstance(expected, dict) and not expected.get("spec") else "")
        raise CriticMismatchError(f"the model was trained {say(expected)}, but the pairs carry "
                                  f"{say(got)[5:] if got else 'no critiques'}{hint}; allow_critic_mismatch=True "
                                  "(--allow-critic-mismatch) scores them anyway")
