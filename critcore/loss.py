"""Bradley-Terry loss with a margin: -log σ(r(x,y+) - r(x,y-) - m(rating)); the rating -> margin
presets are critcore.recipe.MARGIN_PRESETS."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .records import Pair


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
