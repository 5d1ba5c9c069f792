"""Batching: one padded tensor holding chosen then rejected, and length-grouped batch order."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence


def pad_right(seqs: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token-id lists, right-padded to the longest."""
    input_ids = pad_sequence([torch.tensor(s, dtype=torch.long) for s in seqs], batch_first=True,
                             padding_value=pad_token_id)
    attention_mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
    return input_ids, attention_mask


@dataclass
class PairCollator:
    """Stacks B pairs into one [2B, L] batch: rows 0..B-1 chosen, B..2B-1 rejected, right-padded.
    One forward pass then scores both sides."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        input_ids, attention_mask = pad_right(seqs, self.pad_token_id)
        margin = torch.tensor([f.get("margin", 0.0) for f in features], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "margin": margin}


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, group: int = 32) -> list[list[int]]:
    """Shuffle with `seed`, sort by length inside windows of `group` batches, then shuffle the batches.
    Batches of similar length pad less; the order is a pure function of (lengths, batch_size, seed)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length, for scoring (order does not change a score)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
