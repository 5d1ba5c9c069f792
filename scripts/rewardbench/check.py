"""critcore's saved RMs read by RewardBench 0.1.4 (transformers 4.51) give critcore's rewards.

Run by scripts/rewardbench/check.sh in two environments:

    .venv/bin/python scripts/rewardbench/check.py prepare OUT N   # critcore: save RMs, write pairs, score them
    (RewardBench's own CLI scores OUT/pairs.jsonl with each RM, in its own venv: check.sh)
    .venv/bin/python scripts/rewardbench/check.py compare OUT     # compare; exit 1 where they should match and do not

The RMs are MiniLM and SmolLM2-135M with a random (seeded, not ~0) head, so a wrong template,
rope_theta or tokenizer shows as a different reward. The pairs are the first N of the mix's
validation split that fit 512 tokens for both RMs.
"""
from __future__ import annotations

import sys
from pathlib import Path

BACKBONES = ("minilm", "smollm2")
HEAD_STD = {"minilm": 0.5, "smollm2": 0.05}  # rewards of a few units: far from 0, so differences show
# relative to the largest |reward| (at least 1): the order in which a 30-layer fp32 model sums moves
# with the CPU and the batch shapes (SmolLM2 at batch 8: 1.0e-5 on rewards up to 2.7 on an AMD EPYC;
# 1.25e-4 on rewards up to 6.2 on an Intel Xeon with AMX), while a misread input moves rewards by 0.1 or more
TOLERANCE = 1e-4
MAX_LENGTH = 512  # MiniLM's positions


def prepare(out: Path, n: int) -> None:
    import torch
    from transformers import set_seed

    from critcore import atomic
    from critcore.data import load, prompt_text
    from critcore.evaluate import score_pairs
    from critcore.format import Formatter
    from critcore.model import RewardModel

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "mix" / "validation.jsonl"
    rms = {}
    for name in BACKBONES:
        set_seed(0)
        rms[name] = RewardModel.load(name)
        with torch.no_grad():
            head = rms[name].hf.score if rms[name].is_decoder else rms[name].hf.classifier
            head.weight.normal_(0, HEAD_STD[name])
    # RewardBench does not trim: a text over the model's length fails (or, with --force_truncation,
    # loses the end of the response), so the check uses pairs that fit MAX_LENGTH for both RMs.
    fits = [Formatter(rm.tokenizer, MAX_LENGTH) for rm in rms.values()]
    pairs = [p for p in load(f"jsonl:{data}").pairs
             if not any(f.encode(p.prompt, r)[1] for f in fits for r in (p.chosen, p.rejected))][:n]
    rows = []
    for p in pairs:  # RewardBench's preference schema: full conversations, the prompt turns first
        turns = [{"role": "user", "content": p.prompt}] if isinstance(p.prompt, str) else list(p.prompt)
        rows.append({"id": p.id, "chosen": turns + [{"role": "assistant", "content": p.chosen}],
                     "rejected": turns + [{"role": "assistant", "content": p.rejected}]})
    atomic.write_jsonl(out / "pairs.jsonl", rows)
    for name, rm in rms.items():
        rm.save(out / name)
        df = score_pairs(rm, pairs, max_length=MAX_LENGTH)
        df[["id", "score_chosen", "score_rejected"]].to_csv(out / f"{name}_critcore.csv", index=False)
    print(f"prepared {len(pairs)} pairs ({sum(not isinstance(p.prompt, str) for p in pairs)} multi-turn) "
          f"and {len(BACKBONES)} RMs in {out}; prompt chars: {sum(len(prompt_text(p.prompt)) for p in pairs)}")


def compare(out: Path) -> int:
    """Each RewardBench run against critcore's rewards. RewardBench pads on the left; a decoder RM
    reads its last real token and is unaffected, but an encoder (BERT-style absolute positions, no
    position_ids passed) sees every padded text shifted, so MiniLM must match only at batch 1."""
    import pandas as pd

    from critcore import atomic

    report, failed = {}, []
    for run_dir in sorted((out / "rb").iterdir()):
        run = run_dir.name  # e.g. minilm-b8
        name, batch = run.rsplit("-b", 1)
        ours = pd.read_csv(out / f"{name}_critcore.csv")
        theirs = pd.read_json(next(run_dir.rglob("*_all.jsonl")), lines=True)
        theirs = theirs.map(lambda v: v[0] if isinstance(v, list) else v)  # one reward per text, in a list
        if len(theirs) != len(ours):
            print(f"{run}: RewardBench scored {len(theirs)} pairs, critcore {len(ours)}")
            return 1
        diff = pd.concat([(ours.score_chosen - theirs.chosen).abs(), (ours.score_rejected - theirs.rejected).abs()])
        scale = float(pd.concat([ours.score_chosen, ours.score_rejected]).abs().max())
        same_winner = float(((ours.score_chosen > ours.score_rejected) == (theirs.chosen > theirs.rejected)).mean())
        must_match = name != "minilm" or batch == "1"
        ok = float(diff.max()) <= TOLERANCE * max(1.0, scale)
        report[run] = {"pairs": len(ours), "batch_size": int(batch), "max_abs_diff": float(diff.max()),
                       "largest_reward": scale, "same_winner": same_winner, "must_match": must_match, "match": ok}
        print(f"{run}: {len(ours)} pairs, max |reward difference| {diff.max():.2e} (largest |reward| {scale:.1f}), "
              f"same winner on {same_winner:.0%}{'' if must_match else ' (left padding shifts an encoder: expected)'}")
        if must_match and not ok:
            failed.append(run)
    atomic.write_json(out / "rewardbench_check.json", report)
    if failed:
        print(f"differ where they should match: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "prepare":
        prepare(folder, int(sys.argv[3]))
    else:
        sys.exit(compare(folder))
