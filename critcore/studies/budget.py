"""The projected wall time of a reward-model study, printed by `critcore run PARAMS --dry-run`: the
rates measured on this CPU's kind (PROFILES: with or without native bf16) scaled by this CPU's fp32
matmul peak measured now over the profile's. Cached critiques cost nothing, nor do RMs finished in
the run folder with the same training configuration, which a rerun reuses (one whose training
pairs changed trains again, so the projection of such a rerun is a lower bound)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import critique_cache_path
from ..critique import LocalCritic, make_critic
from ..records import prompt_text
from ..rms import finished, folder_name, rm_train_config
from ..llm import CritiqueCache
from ..run import choose_threads
from ..splits import read_splits
from .base import backbones_of, critics_of


@dataclass(frozen=True)
class Profile:
    cpu: str
    fp32_peak_gflops: float  # the fp32 matmul peak measured beside the rates
    # seconds per critique by dtype at 48 new tokens, prompt and response cut to 400 characters,
    # batch 32: SmolLM2-135M's, which Gemma 3 270M is taken to share (CRITIQUE_MODELS)
    critique_s: dict = field(default_factory=dict)
    # training pairs per second at max_length 256 (bench/train_throughput.py), at the CPU's default precision
    train_pairs_s: dict = field(default_factory=dict)
    # sequences scored per second at max_length 256, fp32 (bench/train_throughput.py, scoring)
    score_seqs_s: dict = field(default_factory=dict)


PROFILES = {
    # Measured 2026-11-30 on this project's first machine (2 cores, AVX512-BF16), nothing else running:
    # critiques over 80 items of mix/train (bf16 2.0x fp32, bench/critique_throughput.py), training
    # in bf16 autocast, fp32 peak 195 GFLOP/s (bench/train_throughput.py, 2026-12-01).
    "native-bf16": Profile(
        cpu="2 cores with native bf16 (AVX512-BF16)", fp32_peak_gflops=195.0,
        critique_s={"bfloat16": 0.49, "float32": 0.98},
        train_pairs_s={"minilm": 6.0, "smollm2": 0.75},
        score_seqs_s={"minilm": 30.0, "smollm2": 3.1}),
    # 2 cores of an AMD EPYC, AVX2 only (bf16 emulated: 1 GFLOP/s), quiet, fp32 peak 173 GFLOP/s
    # (issue 27): MiniLM trains at 5.1 pairs/s in fp32 (256 pairs, max_length 256) and scores at
    # 79.6% of the fp32 peak by the FLOP count of the time, 3.5% high (0.90x the bf16 machine's
    # tokens/s, which scales its scoring rates);
    # SmolLM2-135M fp32 critiques at 49.1 tok/s against 56.5 there (batch 16), bf16 (emulated) at
    # 12. SmolLM2's training rate is MiniLM's scaled by the FLOPs per pair (non-embedding
    # parameters x tokens: x0.0955), which on the bf16 machine predicts 0.76 against 0.754 measured.
    "fp32": Profile(
        cpu="2 cores without native bf16 (AMD EPYC, AVX2)", fp32_peak_gflops=173.0,
        critique_s={"float32": 1.13, "bfloat16": 4.6},
        train_pairs_s={"minilm": 5.1, "smollm2": 0.49},
        score_seqs_s={"minilm": 27.0, "smollm2": 2.8}),
}
NEW_TOKENS = 48  # the new tokens behind Profile.critique_s
CRITIQUE_MODELS = ("smollm2", "gemma3-270m")  # the local critics Profile.critique_s applies to


def profile_kind() -> str:
    """The PROFILES entry of this CPU's kind. An AMX CPU takes the "native-bf16" one, scaled by its
    fp32 peak: on a 2-core Intel Xeon with AMX (2026-12-05) bench/rq1_small.yaml was projected at
    4.2 min and ran in 4.7 (outputs/results/bench/native-bf16-amx/quiet_run.json)."""
    from ..hardware import native_bf16

    return "native-bf16" if native_bf16() else "fp32"


@dataclass
class Line:
    step: str
    count: int
    seconds: float
    reused: int = 0  # RMs finished in the run folder, not counted


def _critic_rate(critic, profile: Profile) -> float | None:
    if not isinstance(critic, LocalCritic):
        return None  # simulated (free) or a server (not this machine's time)
    if critic.model_name not in CRITIQUE_MODELS:
        return None
    base = profile.critique_s.get(critic.backend.params.get("dtype", "float32"))  # ctranslate2: at the fp32 rate
    if base is None:
        return None  # float16: not measured
    return base * (0.4 + 0.6 * critic.max_new_tokens / NEW_TOKENS)  # the prompt pass, then decoding


def project(cfg, profile: Profile, scale: float = 1.0, sizes: list[int] | None = None) -> list[Line]:
    """One line per costly step of a reward-model study (critiques per critic not in the cache,
    training and scoring per backbone), at `profile`'s rates times `scale`; `sizes`: RQ2's nested
    training subsets, of which only the largest is critiqued."""
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
            rate = _critic_rate(critic, profile) if critic is not None else None
            if rate is None:
                continue
            keys = {critic.key(prompt_text(p.prompt), r, label) for p in pairs
                    for r, label in ((p.chosen, True), (p.rejected, False))}
            todo = len(keys) - len(cache.get_many(list(keys)))
            lines.append(Line(f"critiques {name}", todo, todo * rate / scale))
    eval_seqs = 2 * sum(len(v) for v in splits.eval.values())
    rms = Path(cfg.out_dir) / "rms" if cfg.out_dir else None
    for b in backbones_of(cfg):
        name = b.backbone if b.backbone in profile.train_pairs_s else "smollm2"
        critics = [c for c in critics_of(cfg) if b.critics is None or c in b.critics]
        length = b.train.get("max_length", cfg.train.max_length) / 256
        # every critic trains at every rate of the grid and every seed (and RQ2 size), in the folder
        # critcore.rms.train_rm gives it, and each RM scores the evaluation sets and the validation pairs
        jobs = [(c, n, s, lr) for c in critics for n in (sizes or [None]) for s in b.seeds for lr in (b.lr_sweep or [None])]
        todo = [(c, n, s, lr) for c, n, s, lr in jobs if not (rms and finished(
            rms / folder_name(b.name, c, n, s, lr, b.seed_in_name), rm_train_config(cfg, b.backbone, b.train, s, lr)))]
        pairs = sum(min(n or b.n_train or len(splits.train), len(splits.train)) for _, n, _, _ in todo)
        reused = len(jobs) - len(todo)
        lines.append(Line(f"train {b.name}", len(todo), pairs * length / (profile.train_pairs_s[name] * scale), reused))
        scored = len(todo) * (eval_seqs + (2 * len(splits.validation or []) if b.lr_sweep else 0))
        lines.append(Line(f"score {b.name}", scored, scored * length / (profile.score_seqs_s[name] * scale)))
    return lines


def calibration(cfg) -> tuple[str, Profile, float, float]:
    """(kind, profile, scale, peak): this CPU's profile, and its fp32 matmul peak now (GFLOP/s,
    on the threads the study will use) over the profile's."""
    import torch

    from ..hardware import matmul_peak

    kind = profile_kind()
    before = torch.get_num_threads()
    threads = choose_threads(cfg.threads)
    try:
        if threads:
            torch.set_num_threads(threads)
        peak = matmul_peak("float32", seconds=0.5) / 1e9
    finally:
        torch.set_num_threads(before)
    return kind, PROFILES[kind], peak / PROFILES[kind].fp32_peak_gflops, peak


def projection_text(cfg, sizes: list[int] | None = None) -> str:
    import os

    kind, profile, scale, peak = calibration(cfg)
    lines = project(cfg, profile, scale, sizes)
    total = sum(x.seconds for x in lines)
    rows = [f"  {x.step:28} {x.count:8d}  {x.seconds / 60:7.1f} min"
            + (f"  ({x.reused} finished in the run folder: reused)" if x.reused else "") for x in lines]
    head = (f"projected wall time, rates of the '{kind}' profile ({profile.cpu}; critcore.studies.budget.PROFILES) "
            f"scaled by this CPU's fp32 matmul peak measured now, {peak:.0f} GFLOP/s against "
            f"{profile.fp32_peak_gflops:.0f} (x{scale:.2f}; load average {os.getloadavg()[0]:.1f}):")
    return "\n".join([head] + rows + [f"  {'total':28} {'':8}  {total / 60:7.1f} min  "
                                       f"(at the profile's own rates: {total * scale / 60:.1f} min)"])
