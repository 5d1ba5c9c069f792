"""Scoring pairs with a reward model and writing the evaluation artifacts."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import torch
from .progress import tqdm_bar

from . import atomic, distributed
from .collate import pad_right, sorted_batches
from .data import pairs_of
from .errors import CriticMismatchError
from .format import MAX_LENGTH, Formatter
from .hardware import reuse_freed_memory
from .metrics import correct, pandalm_accuracy, summarize
from .model import RewardModel
from .recipe import check_recipe, say, trained_critic
from .records import Pair, prompt_text
from .report import example_page


class UnsectionedWarning(UserWarning):
    """Evaluation pairs whose subset no section lists."""


def max_length_of(rm: RewardModel, max_length: int | None = None) -> int:
    """`max_length` when given, else the one the RM was trained with (its recipe), else the default."""
    return int(max_length or (rm.recipe or {}).get("max_length") or MAX_LENGTH)


@torch.inference_mode()
def score_texts(rm: RewardModel, sequences: list[list[int]], batch_size: int = 32, progress: bool = False) -> list[float]:
    """Rewards for token-id sequences, in fp32. Batches are length-sorted and right-padded, so a
    score does not depend on the batch size or on what else is in the batch. Under a launcher every
    process scores its share (critcore.distributed.split of the length-sorted sequences) in its
    share of each batch (batch_size is over all processes) and every process gets all the
    rewards, in order; every process must call it."""
    rm.eval()
    device = next(rm.parameters()).device
    if device.type == "cpu":
        reuse_freed_memory()
    pad = rm.tokenizer.pad_token_id
    ranked = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    order = distributed.split(ranked)
    mine = [0.0] * len(order)
    with tqdm_bar(total=len(order), desc="score", unit="text", disable=not progress or not distributed.is_main()) as bar:
        for idx in sorted_batches([len(sequences[i]) for i in order], distributed.share(batch_size)):
            ids, mask = pad_right([sequences[order[k]] for k in idx], pad)
            out = rm(ids.to(device), mask.to(device)).float().cpu().tolist()
            for k, s in zip(idx, out):
                mine[k] = s
            bar.update(len(idx))
    scores = [0.0] * len(sequences)
    for i, s in zip(ranked, distributed.gather(mine)):
        scores[i] = s
    return scores


def score_pairs(rm: RewardModel, pairs: list[Pair], max_length: int | None = None, batch_size: int = 32,
                with_critiques: bool = True, progress: bool = False, allow_critic_mismatch: bool = False) -> pd.DataFrame:
    """One row per pair, the whole example: id, subset, source, tie (annotators), score_chosen,
    score_rejected, margin (chosen minus rejected reward), verdict (right: chosen strictly above
    rejected and no annotator tie; else wrong), lengths (characters), whether critiques were
    used, and the texts: prompt, chosen, rejected, chosen_critique, rejected_critique.
    max_length: None takes the RM's recipe. The pairs must carry the critiques the RM was trained
    with (its recipe; critcore.recipe.check_recipe) unless allow_critic_mismatch."""
    check_recipe(trained_critic(rm.recipe), pairs if with_critiques else [], allow_critic_mismatch)
    fmt = Formatter(rm.tokenizer, max_length_of(rm, max_length))
    features, _ = fmt.encode_pairs(pairs, with_critiques)
    seqs = [f["chosen"] for f in features] + [f["rejected"] for f in features]
    scores = score_texts(rm, seqs, batch_size, progress)
    n = len(pairs)
    used = [with_critiques and p.has_critiques for p in pairs]
    df = pd.DataFrame({
        "id": [p.id for p in pairs],
        "subset": [p.subset or p.source or "all" for p in pairs],
        "source": [p.source for p in pairs],
        "tie": [p.tie for p in pairs],
        "score_chosen": scores[:n],
        "score_rejected": scores[n:],
        "len_chosen": [len(p.chosen) for p in pairs],
        "len_rejected": [len(p.rejected) for p in pairs],
        "critiques": used,
    })
    df["margin"] = df["score_chosen"] - df["score_rejected"]
    df["verdict"] = ["right" if ok else "wrong" for ok in correct(df)]
    df["prompt"] = [prompt_text(p.prompt) for p in pairs]
    df["chosen"] = [p.chosen for p in pairs]
    df["rejected"] = [p.rejected for p in pairs]
    df["chosen_critique"] = [p.chosen_critique if u else None for p, u in zip(pairs, used)]
    df["rejected_critique"] = [p.rejected_critique if u else None for p, u in zip(pairs, used)]
    return df


def score_one(rm: RewardModel, prompt, response: str, critique: str | None = None, max_length: int | None = None,
              allow_critic_mismatch: bool = False) -> float:
    """The reward of one response, with a critique for a critique RM and none for a No-Critiques
    RM (as its recipe says), unless allow_critic_mismatch."""
    expected = trained_critic(rm.recipe)
    if not allow_critic_mismatch and expected != "unknown" and (critique is None) != (expected is None):
        raise CriticMismatchError(
            f"the model was trained {say(expected)}, but it would be scored {'without' if critique is None else 'with'} "
            "a critique" + ("; give the critique (--critique TEXT) or a critic (--critic SPEC)" if critique is None else "")
            + "; allow_critic_mismatch=True (--allow-critic-mismatch) scores it anyway")
    ids, _ = Formatter(rm.tokenizer, max_length_of(rm, max_length)).encode(prompt, response, critique)
    return score_texts(rm, [ids])[0]


def evaluate(rm: RewardModel, datasets: dict[str, list[Pair]], out_dir: str | os.PathLike | None = None,
             sections: dict | None = None, max_length: int | None = None, batch_size: int = 32,
             with_critiques: bool = True, n_boot: int = 1000, seed: int = 0, progress: bool = False,
             allow_critic_mismatch: bool = False) -> dict:
    """Score each named dataset (pairs, or anything critcore.data.load takes: a Dataset, a
    DataFrame, a data spec); write `<name>_scores.csv` and `summary.json` under out_dir (the main
    process writes; under a launcher every process scores its share and returns the summary). A
    set with RewardBench subsets that no section lists gets a warning naming them."""
    datasets = {name: pairs_of(pairs) for name, pairs in datasets.items()}
    write = out_dir is not None and distributed.is_main()
    listed = {s for members in (sections or {}).values() for s in members}
    summary = {}
    for name, pairs in datasets.items():
        df = score_pairs(rm, pairs, max_length, batch_size, with_critiques, progress, allow_critic_mismatch)
        use_sections = sections if listed & set(df["subset"]) else None
        summary[name] = summarize(df, sections=use_sections, n_boot=n_boot, seed=seed)
        outside = sorted(set(df["subset"]) - listed) if use_sections or (df["source"] == "rewardbench").any() else []
        if sections is not None and outside:
            warnings.warn(f"{name}: subset(s) {', '.join(outside)} are in no section: they count in no section "
                          "score", UnsectionedWarning, stacklevel=2)
        if df["tie"].any() or (df["source"] == "pandalm").any():  # both tie policies, one set of scores
            summary[name]["pandalm"] = pandalm_accuracy(df, n_boot=n_boot, seed=seed)
        if write:
            path = Path(out_dir) / f"{name}_scores.csv"
            with atomic.atomic_open(path, "w", encoding="utf-8", newline="") as f:
                df.to_csv(f, index=False)
            atomic.write_text(Path(out_dir) / f"{name}_report.html", example_page(df, f"{name}: {len(df)} pairs"))
    if write:
        atomic.write_json(Path(out_dir) / "summary.json", summary)
    return summary
