"""The projected wall time of a reward-model study, from throughputs measured on this project's
2-core CPU (RATES; bench/*.py and the study runs in the README), printed by
`critcore run PARAMS --dry-run`. Critiques already in the cache cost nothing; RMs already
trained are not seen here and are counted as new, so a rerun's projection is an upper bound."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import critique_cache_path
from ..critique import LocalCritic, make_critic
from ..records import prompt_text
from ..llm import CritiqueCache
from ..splits import read_splits
from .base import backbones_of, critics_of

# Measured 2026-11-30 on this project's machine (2 cores, AVX512-BF16), nothing else running.
RATES = {
    # seconds per critique at 48 new tokens, prompt and response cut to 400 characters, batch 32
    # (80 items of mix/train; bf16 against fp32 from bench/critique_throughput.py, 2.0x)
    "critique_s": {("smollm2", "bfloat16"): 0.49, ("smollm2", "float32"): 0.98,
                   ("gemma3-270m", "bfloat16"): 0.49, ("gemma3-270m", "float32"): 0.98},
    # training pairs per second at max_length 256 (bench/train_throughput.py), bf16 autocast
    "train_pairs_s": {"minilm": 6.0, "smollm2": 0.75},
    # sequences scored per second at max_length 256, fp32 (bench/train_throughput.py, scoring)
    "score_seqs_s": {"minilm": 30.0, "smollm2": 3.1},
}
NEW_TOKENS = 48  # the new tokens behind RATES["critique_s"]


@dataclass
class Line:
    step: str
    count: int
    seconds: float


def _critic_rate(critic) -> float | None:
    if not isinstance(critic, LocalCritic):
        return None  # simulated (free) or a server (not this machine's time)
    key = (critic.model_name, critic.backend.params.get("dtype", "bfloat16"))
    base = RATES["critique_s"].get(key)
    if base is None:
        return None
    return base * (0.4 + 0.6 * critic.max_new_tokens / NEW_TOKENS)  # the prompt pass, then decoding


def project(cfg, sizes: list[int] | None = None) -> list[Line]:
    """One line per costly step of a reward-model study (critiques per critic not in the cache,
    training and scoring per backbone); `sizes`: RQ2's nested training subsets, of which only the
    largest is critiqued."""
    splits = read_splits(cfg)
    pairs = splits.all_pairs()
    if sizes:
        pairs = splits.train[: max(sizes)] + pairs[len(splits.train):]
    lines = []
    used = {c for b in backbones_of(cfg) for c in (b.critics or critics_of(cfg))}
    with CritiqueCache(critique_cache_path(cfg.critique_cache)) as cache:
        for name, spec in critics_of(cfg).items():
            if name not in used:
                continue
            critic = make_critic(spec, cfg.critic_options)
            rate = _critic_rate(critic) if critic is not None else None
            if rate is None:
                continue
            keys = {critic.key(prompt_text(p.prompt), r, label) for p in pairs
                    for r, label in ((p.chosen, True), (p.rejected, False))}
            todo = len(keys) - len(cache.get_many(list(keys)))
            lines.append(Line(f"critiques {name}", todo, todo * rate))
    eval_seqs = 2 * sum(len(v) for v in splits.eval.values())
    for b in backbones_of(cfg):
        name = b.backbone if b.backbone in RATES["train_pairs_s"] else "smollm2"
        critics = [c for c in critics_of(cfg) if b.critics is None or c in b.critics]
        seeds, lrs = len(b.seeds), len(b.lr_sweep or [None])
        trained = sizes or [b.n_train or len(splits.train)]
        scale = b.train.get("max_length", cfg.train.max_length) / 256
        # every critic trains at every rate of the grid and every seed, and each RM scores the
        # evaluation sets and the validation pairs
        runs_per_size = len(critics) * lrs * seeds
        pairs = runs_per_size * sum(min(n, len(splits.train)) for n in trained)
        lines.append(Line(f"train {b.name}", runs_per_size * len(trained),
                          pairs * scale / RATES["train_pairs_s"][name]))
        scored = runs_per_size * len(trained) * (eval_seqs + (2 * len(splits.validation or []) if lrs > 1 else 0))
        lines.append(Line(f"score {b.name}", scored, scored * scale / RATES["score_seqs_s"][name]))
    return lines


def projection_text(cfg, sizes: list[int] | None = None) -> str:
    lines = project(cfg, sizes)
    total = sum(x.seconds for x in lines)
    rows = [f"  {x.step:28} {x.count:8d}  {x.seconds / 60:7.1f} min" for x in lines]
    return "\n".join(["projected wall time on this project's 2-core CPU (critcore.studies.budget.RATES):"] + rows
                     + [f"  {'total':28} {'':8}  {total / 60:7.1f} min"])
