"""The commands that run one job from a configuration: `critcore train` (one RM, critiqued,
trained and evaluated in a run folder), `evaluate` and `score` (a saved RM on pairs critiqued as
it was trained) and `critique` (pairs with critiques, as JSONL)."""
from __future__ import annotations

import time

from . import atomic, card, config as config_mod, distributed
from . import data as data_mod
from . import export
from .backbones import check as check_backbone
from .critique import augment, critic_for_model, critique_texts, drop_failed, make_critic
from .evaluate import evaluate, score_one, score_pairs
from .llm import CritiqueCache
from .model import RewardModel
from .records import Pair
from .report import results_row, save_table
from .rms import fit_and_evaluate
from .run import log, start
from .splits import (count_splits, load_pairs, log_skipped, read_splits, record_overlap, resolve_sections, seen_by,
                     warn_overlap)
from .train import critiques_of


def train_job(cfg) -> dict:
    """`critcore train`: one RM from a TrainJob configuration, in cfg.out_dir (train/, eval/,
    run.json). critic null keeps the critiques the data carry; "none" trains without critiques.
    push_to_hub uploads the trained RM with its card (its token is checked before anything runs)."""
    check_backbone(cfg.backbone)  # names and data fail before anything is written
    if cfg.push_to_hub:
        card.hub_token(cfg.push_to_hub)
    critic = make_critic(cfg.critic, cfg.critic_options) if cfg.critic is not None else None
    splits = read_splits(cfg)
    with start(cfg) as run:
        count_splits(run, splits)
        if cfg.critic is not None and critic is None:  # "none": No-Critiques, whatever the data carry
            splits = splits.with_pairs(augment(splits.all_pairs(), "none"))
        with run.step("rm"):
            summary = fit_and_evaluate(cfg.train.replace(backbone=cfg.backbone), splits, run.out_dir,
                                       critic, run.cache, cfg.lr_sweep, run.progress, cfg.n_boot, cfg.seed)
        if critic is not None:
            run.critique_stats[str(critic.identity)] = dict(run.cache.stats)
        run.notes["result"] = results_row(summary)
        if cfg.push_to_hub and distributed.is_main():
            with run.step("push to hub"):
                run.notes["pushed"] = card.push(summary["model"], cfg.push_to_hub)
    return {**summary, "out_dir": str(run.out_dir)}


# ---------------------------------------------------------------- `critcore evaluate`, `score`, `critique`


def _critique_as_trained(pairs: list[Pair], critic, expected, cache, progress: bool) -> list[Pair]:
    """Test pairs critiqued the way the model expects: by `critic`; stripped of critiques for a
    No-Critiques model; as they are for a checkpoint without a recipe (scoring checks them)."""
    if critic is not None:
        pairs = augment(pairs, critic, cache, progress=progress)
    elif expected is None and any(p.has_critiques for p in pairs):
        log("the model was trained without critiques: the critiques in the data are not used")
        pairs = augment(pairs, "none")
    return pairs


def evaluate_job(cfg) -> dict:
    """`critcore evaluate`: score each eval set with a saved RM, critiqued as the RM was trained
    (its recipe), into cfg.out_dir (<name>_scores.csv, summary.json, run.json)."""
    rm = RewardModel.load(cfg.model).to(distributed.device())
    critic, expected = critic_for_model(rm.recipe, cfg.critic, cfg.critic_options, cfg.allow_critic_mismatch)
    sets = {name: load_pairs(spec) for name, spec in cfg.eval_data.items()}
    sections = resolve_sections(cfg.sections)  # bad input fails before the run folder exists
    with start(cfg) as run:
        record_overlap(run, seen_by(rm, sets))
        with run.step("critiques"):
            sets = {name: _critique_as_trained(pairs, critic, expected, run.cache, run.progress)
                    for name, pairs in sets.items()}
        with run.step("evaluate"):
            summary = evaluate(rm, sets, run.out_dir, sections=sections, max_length=cfg.max_length,
                               batch_size=cfg.batch_size, n_boot=cfg.n_boot, seed=cfg.seed, progress=run.progress,
                               allow_critic_mismatch=cfg.allow_critic_mismatch or critic is not None)
        used = [critiques_of(p) for p in sets.values()]
        summary["critic"] = next((u["identity"] for u in used if u), "none")
        summary["recipe_critic"] = expected
        summary["overlap"] = run.notes.get("overlap", {})
        if distributed.is_main():
            atomic.write_json(run.out_dir / "summary.json", summary)
            if not cfg.allow_critic_mismatch:  # the card carries the numbers; a cross-critic experiment's are not its own
                rm.add_results(summary)
        run.notes["result"] = results_row(summary)
    return {**summary, "out_dir": str(run.out_dir)}


def score_job(cfg) -> dict:
    """`critcore score`: one response (critiqued with the RM's critic unless a critique is given)
    -> {reward, critique, critic, model}; or every pair of cfg.data -> a CSV at cfg.out. Says on
    stderr what it is doing: loading a critic can take a while (a GGUF model is dequantized once)."""
    log(f"loading the reward model {cfg.model}")
    rm = RewardModel.load(cfg.model).to(distributed.device())
    critic, expected = (None, "given") if cfg.critique is not None else \
        critic_for_model(rm.recipe, cfg.critic, cfg.critic_options, cfg.allow_critic_mismatch)
    with CritiqueCache(config_mod.critique_cache_path(cfg.critique_cache)) as cache:
        if cfg.data is not None:
            pairs = load_pairs(cfg.data)
            seen = seen_by(rm, {"data": pairs}).get("data")
            if seen:
                warn_overlap("pairs the model was trained on, or whose prompt it saw", seen)
            pairs = _critique_as_trained(pairs, critic, expected, cache, cfg.progress)
            df = score_pairs(rm, pairs, cfg.max_length, cfg.batch_size, progress=cfg.progress,
                             allow_critic_mismatch=cfg.allow_critic_mismatch or critic is not None)
            if distributed.is_main():
                save_table(df, cfg.out)
            return {"out": str(cfg.out), "pairs": len(df), "critic": critic.identity if critic else None}
        critique = cfg.critique
        if critique is None and critic is not None:
            if critic.needs_labels:
                raise config_mod.ConfigError(f"score: the critic {critic.identity} needs to know which response is "
                                             "preferred, so it cannot critique one response; give --critique")
            log(f"writing the critique with {critic.identity} (a local model is loaded first)")
            critique = critique_texts(critic, [(cfg.prompt, cfg.response, None)], cache, progress=False)[0]
    log("scoring")
    reward = score_one(rm, cfg.prompt, cfg.response, critique, cfg.max_length, cfg.allow_critic_mismatch)
    return {"reward": reward, "critique": critique, "critic": critic.identity if critic else None,
            "model": str(cfg.model)}


def critique_job(cfg) -> dict:
    """`critcore critique`: cfg.data with critiques by cfg.critic, written to cfg.out: critcore JSONL,
    or a dataset in TRL's columns (a .parquet file, or a save_to_disk folder: critcore.export)."""
    pairs = load_pairs(cfg.data)  # the data's errors first, then the output's
    as_dataset = export.is_dataset_path(cfg.out)
    if as_dataset:
        export.check_target(cfg.out)  # before any critique is written
    critic = make_critic(cfg.critic, cfg.critic_options)
    start_t = time.perf_counter()
    with CritiqueCache(config_mod.critique_cache_path(cfg.critique_cache)) as cache:
        out, skipped = drop_failed(augment(pairs, critic, cache, cfg.progress, cfg.critic_options.on_error))
        log_skipped(skipped)
        if distributed.is_main():
            (export.write_dataset if as_dataset else data_mod.write_pairs)(cfg.out, out)
        return {"critic": critic.identity if critic else "none", "pairs": len(out), "pairs_skipped": len(skipped),
                "skipped": skipped, **cache.report(), "seconds": round(time.perf_counter() - start_t, 2),
                "out": str(cfg.out)}
