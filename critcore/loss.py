"""Bradley-Terry loss with a margin: -log σ(r(x,y+) - r(x,y-) - m(rating))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .records import RATINGS, Pair

# Rating -> margin. Llama 2's two margin scales (Touvron et al. 2023, Table 28).
MARGIN_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "llama2-small": {"slightly better": 1 / 3, "better": 2 / 3, "significantly better": 1.0},
    "llama2-large": {"slightly better": 1.0, "better": 2.0, "significantly better": 3.0},
}


def margin_table(spec: str | dict | None) -> dict[str, float] | str:
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


def pair_margin(pair: Pair, table: dict[str, float] | str) -> float:
    """The margin for one pair: 0 where the pair has no rating (or no raw margin)."""
    if table == "raw":
        return float(pair.margin or 0.0)
    return table.get(pair.rating, 0.0) if pair.rating else 0.0


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of -log σ(r+ - r- - m). logsigmoid is stable for large |x|."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()
