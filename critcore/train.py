"""Training: the paper's recipe (effective batch 32, 1 epoch, AdamW, warmup then cosine decay to 10%
of the peak learning rate), through accelerate so `accelerate launch` spreads it over devices with
no code change: each process trains on its share of every step's pairs, the metrics count every
process's, validation scoring is shared (critcore.distributed) and the main process writes.
Checkpoints every N steps; a killed run resumes to the same final model."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs
from .progress import tqdm_bar
from transformers import set_seed

from . import __version__, atomic, distributed
from .collate import PairCollator, length_grouped_batches
from .errors import CriticMismatchError
from .evaluate import score_pairs
from .format import OVER_LENGTH_POLICY, Formatter, template
from .hardware import reuse_freed_memory, use_bf16
from .loss import bradley_terry_loss, pair_margin
from .metrics import accuracy_with_ci, correct
from .model import RewardModel
from .provenance import git_info
from .recipe import TrainConfig, margin_table
from .data import pairs_of
from .records import Pair, fingerprints


MIN_STEPS = 10  # fewer optimizer steps than this get a warning: the schedule has barely begun


class TrainingWarning(UserWarning):
    """A run that will train, but probably not as the user meant."""


@dataclass
class TrainResult:
    model: RewardModel
    summary: dict = field(default_factory=dict)


def data_key(pairs: list[Pair]) -> str:
    """A hash of the pairs as they are, critiques included."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps(p.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def critiques_of(pairs: list[Pair], with_critiques: bool = True) -> dict | None:
    """Which critiques the pairs carry, from the tags critique.augment leaves in their meta:
    {"identity", "config"}; None when they carry none (or with_critiques is off)."""
    if not with_critiques:
        return None
    tags = {(p.meta.get("critic", "unknown"), p.meta.get("critic_config")) for p in pairs if p.has_critiques}
    if not tags:
        return None
    if len(tags) > 1:
        raise CriticMismatchError(f"the pairs mix critiques of several critics: {sorted(tags, key=str)}")
    identity, config = tags.pop()
    return {"identity": identity, "config": config}


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Linear warmup to the peak at step `warmup_steps` (counting from 1), then cosine decay
    towards min_lr_ratio of the peak. The first step already has a non-zero rate (1 / warmup of
    the peak), and a one-step run trains at the peak: transformers' schedule gives step 1 a rate
    of 0, so a 32-pair run at batch 32 changes nothing."""
    peak = max(warmup_steps - 1, 0)  # the index of the step at the peak rate

    def factor(step: int) -> float:
        if step < peak or (step == peak and warmup_steps):
            return (step + 1) / warmup_steps
        progress = (step - peak) / max(1, total_steps - peak)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def recipe(config: TrainConfig, train_pairs: list[Pair], critic: dict | None) -> dict:
    """What scoring needs to read a trained RM as it was trained, saved beside its weights."""
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
    prompts, whole = fingerprints(train_pairs)  # so that `critcore evaluate` can tell held-out pairs seen here
    return {"critcore": __version__, "git": git_info(), "backbone": config.backbone,
            "max_length": config.max_length, "over_length": OVER_LENGTH_POLICY,
            "templates": {"plain": sha(template("rm_plain.txt")), "critique": sha(template("rm_critique.txt"))},
            "with_critiques": critic is not None, "critic": critic,  # what it was trained on, not the switch
            "train_data": {"pairs": len(train_pairs), "sha256": data_key(train_pairs),
                           "sources": sorted({p.source for p in train_pairs if p.source}),
                           "prompt_keys": " ".join(sorted(set(prompts))), "pair_keys": " ".join(sorted(set(whole)))},
            "train_config": config.model_dump()}


def as_trained(config: TrainConfig) -> TrainConfig:
    """The configuration as train runs it, whose key() identifies the run: bf16 None decided for
    this device (a model trained in bf16 is another model)."""
    return config if config.bf16 is not None else config.replace(bf16=use_bf16(distributed.device().type))


def train(config: TrainConfig, train_pairs: list[Pair], val_pairs: list[Pair] | None = None,
          out_dir: str | os.PathLike | None = None, progress: bool = True, critic: dict | None = None) -> TrainResult:
    """Train an RM on `train_pairs`. With `out_dir`, writes metrics.jsonl, checkpoints/, model/ and
    summary.json there; a finished run with the same config and data is loaded instead of retrained,
    and an unfinished one resumes from its last checkpoint.

    Annotator ties (PandaLM) teach no preference and are left out (counted). `critic` describes
    the critic that wrote the pairs' critiques (critique.Critic.describe()); without it the recipe
    records the critic the pairs' own tags name. The saved model carries that recipe. Pairs may be
    anything critcore.data.load takes (a Dataset, a DataFrame, a data spec)."""
    train_pairs = pairs_of(train_pairs)
    val_pairs = pairs_of(val_pairs) if val_pairs is not None else None
    ties = sum(p.tie for p in train_pairs)
    train_pairs = [p for p in train_pairs if not p.tie]
    if not train_pairs:
        raise ValueError("no training pairs" + (f" ({ties} annotator ties left out)" if ties else ""))
    critic = _critic_of(train_pairs, config.with_critiques, critic)
    config = as_trained(config)
    run_key = {"config": config.key(), "data": data_key(train_pairs)}
    out = Path(out_dir) if out_dir else None
    finished = _finished(out, run_key)
    if finished is not None:
        return finished

    if config.threads:
        torch.set_num_threads(config.threads)
    if distributed.device().type == "cpu":
        reuse_freed_memory()
    set_seed(config.seed)
    rm = RewardModel.load(config.backbone, dropout=config.dropout, lora=config.lora)
    if config.gradient_checkpointing:
        rm.hf.gradient_checkpointing_enable()
    features, trims = _features(rm, config, train_pairs)  # token ids and margins

    # accelerate's state is one per process, and an earlier Accelerator may have set it to bf16
    # (TRL's trainers do): accelerate's autocast follows the recipe (train.bf16), not that state.
    accelerator = Accelerator(gradient_accumulation_steps=config.accumulation(distributed.world()),
                              kwargs_handlers=[AutocastKwargs(enabled=bool(config.bf16))])
    sharded = _sharded(accelerator, config, out)
    loader = torch.utils.data.DataLoader(features, batch_sampler=_batches(features, config),
                                         collate_fn=PairCollator(rm.tokenizer.pad_token_id))
    # The fused kernel steps ~7x faster than the default on CPU (bench/adamw_fused.py).
    optimizer = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay, fused=accelerator.device.type in ("cpu", "cuda"))
    rm, optimizer, loader = accelerator.prepare(rm, optimizer, loader)
    params = [p for p in rm.parameters() if p.requires_grad]  # after prepare: FSDP replaces them, clip those
    total_steps = math.ceil(len(loader) / accelerator.gradient_accumulation_steps)
    _warn_if_short(len(train_pairs), config, total_steps)
    scheduler = warmup_cosine(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps, config.min_lr_ratio)
    accelerator.register_for_checkpointing(scheduler)
    step, seconds_before = _resume(accelerator, out, run_key)

    loop = _Loop(accelerator, rm, optimizer, scheduler, params, config, out, run_key, step, seconds_before, total_steps)
    loop.run(loader, len(train_pairs), progress)
    saved = recipe(config, train_pairs, critic) if out else None
    rm = (_gathered(accelerator, rm, out / "model", saved) if sharded else accelerator.unwrap_model(rm)).eval()
    summary = {"run_key": run_key, "config": config.model_dump(), "train_pairs": len(train_pairs), "skipped_ties": ties,
               "steps": total_steps, "resumed_from_step": step or None, **loop.timing(),
               "tokens_per_pair": round(sum(len(f["chosen"]) + len(f["rejected"]) for f in features) / len(features), 1),
               "truncated": dict(trims), "critic": critic}
    if val_pairs:
        scores = score_pairs(rm, val_pairs, max_length=config.max_length, batch_size=config.eval_batch_size,
                             with_critiques=config.with_critiques, allow_critic_mismatch=True)  # its recipe is not saved yet
        summary["validation"] = accuracy_with_ci(correct(scores))
    if out and accelerator.is_main_process:
        if not sharded:
            rm.save(out / "model", saved)
        atomic.write_json(out / "summary.json", summary)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return TrainResult(rm, summary)


def _sharded(accelerator, config: TrainConfig, out: Path | None) -> bool:
    """Whether FSDP or DeepSpeed shards the weights over the processes. Sharded training saves the
    model to `out` (it needs one); a launch that asked for sharding and did not get it (accelerate
    shards only over GPUs) gets a warning: every process holds the whole model."""
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    if accelerator.distributed_type.name == "DEEPSPEED":  # it cannot read the micro-batch from a batch sampler
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro_batch_size
    asked = [name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"]
    if asked and not sharded:
        warnings.warn(f"the launch asked for {asked[0]}, but accelerate runs {accelerator.distributed_type.name} here "
                      "(it shards only over GPUs): every process holds the whole model", TrainingWarning, stacklevel=3)
    if sharded and out is None:
        raise ValueError("sharded training (FSDP, DeepSpeed) needs an out_dir to gather the model in")
    return sharded


def _gathered(accelerator, rm, path: Path, saved: dict) -> RewardModel:
    """A sharded RM whole: the main process saves it to `path` as one plain checkpoint with its
    recipe, and every process loads it back (on its device) to score with."""
    weights = accelerator.get_state_dict(rm)  # every process takes part; the main one gets them
    if accelerator.is_main_process:
        accelerator.unwrap_model(rm).save(path, saved, weights)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return RewardModel.load(str(path)).to(accelerator.device)


def _critic_of(pairs: list[Pair], with_critiques: bool, critic: dict | None) -> dict | None:
    """What the recipe records of the critiques trained on: the critic given (which must be the
    one the pairs' tags name), else the tags' own; None without critiques."""
    used = critiques_of(pairs, with_critiques)
    if critic is not None and used is not None and critic.get("identity") != used["identity"]:
        raise CriticMismatchError(f"the pairs carry critiques of {used['identity']!r}, not of {critic['identity']!r}")
    return None if used is None else {**used, "source": "data"} if critic is None else {**critic, "source": "critic"}


def has_model(out: Path) -> bool:
    """Whether the training run in `out` saved its RM (a save is renamed into place whole)."""
    return (Path(out) / "model" / "config.json").exists()


def _finished(out: Path | None, run_key: dict) -> TrainResult | None:
    """The finished run in `out` with this run key, loaded (on a GPU when there is one), else None."""
    if out is None:
        return None
    atomic.clean_leftovers(out / "model")  # a save killed half-way
    if not has_model(out):
        return None
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):  # none, or damaged: this run is not known to be finished
        return None
    if not isinstance(summary, dict) or summary.get("run_key") != run_key:
        return None
    return TrainResult(RewardModel.load(str(out / "model")).to(distributed.device()).eval(), summary)


def _features(rm: RewardModel, config: TrainConfig, pairs: list[Pair]) -> tuple[list[dict], Counter]:
    """Each pair's token ids (both sides, within max_length) and margin; how many sides were trimmed."""
    features, trims = Formatter(rm.tokenizer, config.max_length).encode_pairs(pairs, config.with_critiques)
    table = margin_table(config.margin)
    for f, p in zip(features, pairs):
        f["margin"] = pair_margin(p, table)
    return features, trims


def _batches(features: list[dict], config: TrainConfig) -> list[list[int]]:
    """Micro-batches of every epoch: length-grouped (a pair's two sides share one padded tensor, so
    by the longer side: 10% padding on the mix, not 16%) or in a seeded random order."""
    lengths = [max(len(f["chosen"]), len(f["rejected"])) for f in features]
    batches, size = [], config.micro_batch_size
    for epoch in range(config.epochs):
        if config.group_by_length:
            batches += length_grouped_batches(lengths, size, config.seed + epoch)
        else:
            order = torch.randperm(len(features), generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
            batches += [order[i:i + size] for i in range(0, len(order), size)]
    return batches


def _warn_if_short(n_pairs: int, config: TrainConfig, total_steps: int) -> None:
    if total_steps < MIN_STEPS:
        warnings.warn(f"{n_pairs} pairs at batch {config.batch_size} x {config.epochs} epoch(s) make only "
                      f"{total_steps} optimizer step(s) (fewer than {MIN_STEPS}): the learning-rate schedule "
                      "barely runs, so the RM learns little", TrainingWarning, stacklevel=3)


def _resume(accelerator, out: Path | None, run_key: dict) -> tuple[int, float]:
    """(optimizer steps done, training seconds so far) from this run's last checkpoint in `out`,
    its state loaded; (0, 0.0) when there is none. Another config's or data's checkpoint would
    resume the wrong training, so only this run key's count."""
    root = out / "checkpoints" if out else None
    if not (root and root.exists()):
        return 0, 0.0
    states = {int(p.name[5:]): _checkpoint_key(p) or {} for p in root.glob("step-*") if p.name[5:].isdigit()}
    done = [s for s, state in states.items() if state.get("run_key") == run_key]
    if not done:
        return 0, 0.0
    step = max(done)
    accelerator.load_state(str(root / f"step-{step}"))
    return step, states[step].get("train_seconds", 0.0)


class _Loop:
    """The optimizer steps from `step` on, with a progress bar by pair, one metrics.jsonl row per
    step (loss, accuracy, lr, pairs/s: of the step's pairs on every process) and a checkpoint every
    config.save_every steps."""

    def __init__(self, accelerator, rm, optimizer, scheduler, params, config: TrainConfig, out: Path | None,
                 run_key: dict, step: int, seconds_before: float, total_steps: int):
        self.accelerator, self.rm, self.optimizer, self.scheduler, self.params = accelerator, rm, optimizer, scheduler, params
        self.config, self.out, self.run_key, self.total_steps = config, out, run_key, total_steps
        self.step, self.seconds_before, self.pairs_seen, self.segment = step, seconds_before, 0, 0.0
        self.metrics = out / "metrics.jsonl" if out else None

    def run(self, loader, n_pairs: int, progress: bool) -> None:
        acc, config = self.accelerator, self.config
        if self.metrics and acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(self.metrics, self.step)
        batches = acc.skip_first_batches(loader, self.step * acc.gradient_accumulation_steps) if self.step else loader
        self.rm.train()
        bar = tqdm_bar(total=n_pairs * config.epochs, initial=min(self.step * config.batch_size, n_pairs * config.epochs),
                   desc="train", unit="pair", disable=not progress or not acc.is_main_process)
        started = time.perf_counter()
        window = [0.0, 0, 0]  # this process's loss x pairs, pairs ranked right and pairs since the last step
        for batch in batches:
            loss, n, right = self._forward_backward(batch)
            window = [window[0] + loss * n, window[1] + right, window[2] + n]
            if not acc.sync_gradients:
                continue
            loss_sum, right, pairs = distributed.total(window)  # the step's pairs on every process
            window = [0.0, 0, 0]
            self.pairs_seen += pairs
            bar.update(pairs)
            lr = self.scheduler.get_last_lr()[0]  # the rate this step used
            self.scheduler.step()
            self.step += 1
            row = {"step": self.step, "loss": loss_sum / pairs, "accuracy": right / pairs, "lr": lr,
                   "pairs_per_s": self.pairs_seen / (time.perf_counter() - started)}
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}")
            self._log(row, time.perf_counter() - started)
        bar.close()
        self.segment = time.perf_counter() - started

    def _forward_backward(self, batch) -> tuple[float, int, int]:
        """One micro-batch: Bradley-Terry loss, backward, and (at an accumulation boundary) the
        clipped optimizer step. Returns (loss, pairs, pairs ranked right)."""
        acc, config = self.accelerator, self.config
        with acc.accumulate(self.rm):
            with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=config.bf16):
                rewards = self.rm(batch["input_ids"], batch["attention_mask"]).float()
            n = batch["margin"].shape[0]
            r_chosen, r_rejected = rewards[:n], rewards[n:]
            loss = bradley_terry_loss(r_chosen, r_rejected, batch["margin"])
            acc.backward(loss)
            if acc.sync_gradients and config.max_grad_norm:
                acc.clip_grad_norm_(self.params, config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return loss.item(), n, int((r_chosen > r_rejected).sum())

    def _log(self, row: dict, seconds: float) -> None:
        if self.metrics and self.accelerator.is_main_process:
            with self.metrics.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.out and self.config.save_every and self.step % self.config.save_every == 0 and self.step < self.total_steps:
            _save_checkpoint(self.accelerator, self.out / "checkpoints", self.step,
                             {"run_key": self.run_key, "train_seconds": self.seconds_before + seconds})

    def timing(self) -> dict:
        return {"train_seconds": round(self.seconds_before + self.segment, 2),
                "pairs_per_s": round(self.pairs_seen / max(self.segment, 1e-9), 3)}


def _save_checkpoint(accelerator, root: Path, step: int, state: dict) -> None:
    """Write the checkpoint under a temporary name, then rename: a kill never leaves a partial one.
    It records the run key (only the same config and data resume from it) and the training
    seconds so far. Any other checkpoint there (an older step, or another run's) is replaced."""
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic.write_json(tmp / "run_key.json", state)
        shutil.rmtree(final, ignore_errors=True)  # another run's step-N: os.replace cannot overwrite a folder
        os.replace(tmp, final)
        for old in root.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)


def _checkpoint_key(path: Path) -> dict | None:
    """A checkpoint's state: {run_key, train_seconds} (older checkpoints held the bare run key)."""
    try:
        state = json.loads((path / "run_key.json").read_text())
    except (OSError, ValueError):
        return None
    return state if "run_key" in state else {"run_key": state}


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric rows up to the checkpoint being resumed from (drops a torn last line)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            rows.append(row)
    atomic.write_jsonl(path, rows)


def lr_sweep(config: TrainConfig, lrs: list[float], train_pairs: list[Pair], val_pairs: list[Pair],
             out_dir: str | os.PathLike | None = None, progress: bool = True,
             critic: dict | None = None) -> tuple[TrainResult, list[dict]]:
    """Train one RM per learning rate; pick the best on validation accuracy (never on test)."""
    if not val_pairs:
        raise ValueError("a learning-rate sweep needs validation pairs")
    rows, best = [], None
    for lr in lrs:
        sub = Path(out_dir) / f"lr-{float(lr):g}" if out_dir else None
        result = train(config.replace(lr=float(lr)), train_pairs, val_pairs, sub, progress, critic)
        rows.append({"lr": lr, **{f"val_{k}": v for k, v in result.summary["validation"].items()}})
        if best is None or result.summary["validation"]["acc"] > best.summary["validation"]["acc"]:
            best = result
    return best, rows
