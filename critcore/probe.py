"""How much a critic's critiques say about the label: a critique-only probe, a small RM that sees
the two critiques of a pair and nothing else; its held-out accuracy is the critic's *information*.
Pairs with two equal critiques are left out of training and count half at evaluation, so a critic
that says nothing scores 0.5 and a simulated critic right with probability p scores p. Annotator
ties are dropped at evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluate import score_pairs
from .metrics import correct
from .recipe import TrainConfig
from .records import Pair
from .stats import mean_with_ci
from .train import train

PROBE_PROMPT = "Which critique is of the better response?"  # the same for every pair: it carries nothing
PROBE_TRAIN = {"max_length": 96, "lr": 1e-4, "epochs": 2, "batch_size": 32, "micro_batch_size": 16}


def _text(critique: str | None) -> str:
    return f"Critique: {critique or ''}".strip()


def probe_pairs(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(pairs whose critiques differ, as critique-only pairs; pairs whose critiques are equal).
    Every pair must carry critiques."""
    differ, same = [], []
    for p in pairs:
        if not p.has_critiques:
            raise ValueError(f"pair {p.id}: no critiques to probe (critique the pairs first)")
        a, b = _text(p.chosen_critique), _text(p.rejected_critique)
        if a == b:
            same.append(p)
        else:
            differ.append(Pair(id=p.id, prompt=PROBE_PROMPT, chosen=a, rejected=b, subset=p.subset, source=p.source,
                               tie=p.tie))
    return differ, same


def probe_scores(rm, pairs: list[Pair], batch_size: int = 64):
    """Per held-out pair (annotator ties dropped): 1 if the probe ranks the chosen critique above,
    0 if below or level, 0.5 if the two critiques are the same text. Returns (ids, values)."""
    pairs = [p for p in pairs if not p.tie]
    differ, same = probe_pairs(pairs)
    df = score_pairs(rm, differ, batch_size=batch_size, with_critiques=False) if differ else None
    got = dict(zip(df["id"], correct(df).astype(float))) if df is not None else {}
    got.update({p.id: 0.5 for p in same})
    ids = [p.id for p in pairs]
    return ids, np.array([got[i] for i in ids])


def probe(train_pairs: list[Pair], heldout: dict[str, list[Pair]], out_dir: str | Path | None = None,
          backbone: str = "minilm", seed: int = 0, n_boot: int = 1000, progress: bool = False, **train_options) -> dict:
    """Train the probe on `train_pairs` (critiqued; a critcore RM in out_dir/train, reused when it
    exists) and measure it: {set: {acc, lo, hi, n, same}, "pooled": ..., "train": counts}."""
    pairs = [p for p in train_pairs if not p.tie]
    taught, equal = probe_pairs(pairs)
    if not taught:
        raise ValueError("every training pair has two equal critiques: nothing to probe with")
    config = TrainConfig(backbone=backbone, seed=seed).replace(**{**PROBE_TRAIN, **train_options})
    result = train(config, taught, None, Path(out_dir) / "train" if out_dir else None, progress)
    out, pooled = {}, []
    for name, held in heldout.items():
        _, values = probe_scores(result.model, held)
        same = sum(1 for p in held if not p.tie and _text(p.chosen_critique) == _text(p.rejected_critique))
        ci = mean_with_ci(values, n_boot=n_boot, seed=seed)
        out[name] = {"acc": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"], "same": same}
        pooled.append(values)
    ci = mean_with_ci(np.concatenate(pooled) if pooled else [], n_boot=n_boot, seed=seed)
    out["pooled"] = {"acc": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"],
                     "same": sum(v.get("same", 0) for v in out.values())}
    out["train"] = {"pairs": len(taught), "equal_left_out": len(equal)}
    return out
