"""One reward model of a run, in its stable folder rms/<backbone>__<critic>[__n<size>][__s<seed>][__lr<rate>]/:
critique, check, train (or reuse: critcore.train finds a finished model with the same config and
data), evaluate (or reuse: the evaluation key), and the row a study tabulates."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import torch
import transformers
from .progress import tqdm_bar

from . import atomic, distributed
from .critique import augment, check_same_critic
from .evaluate import evaluate
from .records import Pair
from .report import results_row, slug
from .run import Run, log, redact
from .splits import Splits
from .train import as_trained, critiques_of, data_key, has_model, lr_sweep, train

VALIDATION_SET = "validation"  # the evaluation-set name under which a study's grid RMs score the validation pairs


def _summaries(d: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in d.glob("**/summary.json") if "eval" not in p.parts}


SCORING_CODE = ("evaluate.py", "metrics.py", "stats.py", "model.py", "collate.py", "format.py", "records.py", "report.py",
                "templates/rm_plain.txt", "templates/rm_critique.txt")


def _eval_key(train_summary: dict, splits: Splits, train_cfg, n_boot: int, seed: int) -> str:
    """What decides an RM's evaluation: the trained model (its training summary), every evaluation
    pair with its critiques, the sections, the scoring options and the source of the code and
    templates that score and summarize, the bootstrap's replicates and seed, and the torch and
    transformers versions. A rerun whose key matches reuses eval/summary.json."""
    here = Path(__file__).parent
    blob = json.dumps({"train": train_summary, "eval": {k: data_key(v) for k, v in splits.eval.items()},
                       "sections": splits.sections, "max_length": train_cfg.max_length,
                       "with_critiques": train_cfg.with_critiques, "n_boot": n_boot, "seed": seed,
                       "versions": [torch.__version__, transformers.__version__],
                       "code": [(here / f).read_text(encoding="utf-8") for f in SCORING_CODE]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _critiqued_by(pairs: list[Pair], critic) -> bool:
    """Every pair already carries this critic's critiques (a study critiqued them up front)."""
    return all(p.has_critiques and p.meta.get("critic") == critic.identity
               and p.meta.get("critic_config") == critic.config_hash for p in pairs)


def fit_and_evaluate(train_cfg, splits: Splits, out_dir: Path, critic=None, cache=None, lrs=None,
                     progress: bool = True, n_boot: int = 1000, seed: int = 0) -> dict:
    """Critique every split with `critic` (a Critic, or None to use the pairs as they are), check
    that train and test were critiqued alike, train (or sweep learning rates on validation),
    evaluate, and write eval/summary.json. Returns the evaluation summary with the training
    summary under "train", the sweep under "sweep" and the critiques used under "critic". `n_boot`
    and `seed` draw every interval (a configuration's n_boot and seed)."""
    if critic is not None and not _critiqued_by(splits.all_pairs(), critic):
        splits = splits.with_pairs(augment(splits.all_pairs(), critic, cache, progress=progress))
    for _, split in splits.named()[1:]:  # validation and evaluation, as train
        check_same_critic(splits.train, split)
    described = critic.describe() if critic is not None else None
    sweep = None
    if lrs:
        result, sweep = lr_sweep(train_cfg, lrs, splits.train, splits.validation, out_dir / "sweep", progress, described)
    else:
        result = train(train_cfg, splits.train, splits.validation, out_dir / "train", progress, described)
    key = _eval_key(result.summary, splits, train_cfg, n_boot, seed)
    prior = out_dir / "eval" / "summary.json"
    try:
        summary = json.loads(prior.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}  # none yet, or unreadable: score again
    if isinstance(summary, dict) and summary.get("eval_key") == key:
        return {**summary, "model": str(result.model.folder)}  # the same model on the same pairs, scored by the same code
    summary = evaluate(result.model, splits.eval, out_dir / "eval", sections=splits.sections,
                       max_length=train_cfg.max_length, with_critiques=train_cfg.with_critiques, n_boot=n_boot,
                       seed=seed)
    summary["eval_key"] = key
    used = critiques_of(splits.train, train_cfg.with_critiques)
    summary["train"] = result.summary
    summary["sweep"] = sweep
    summary["critic"] = used["identity"] if used else "none"
    summary["critic_source"] = (result.summary.get("critic") or {}).get("source")
    summary["model"] = str(result.model.folder)  # the saved RM (the sweep's pick with lrs)
    if distributed.is_main():
        atomic.write_json(out_dir / "eval" / "summary.json", summary)
        result.model.add_results(summary)
    return summary


def folder_name(label: str, critic_name: str, size: int | None = None, seed: int | None = None,
                lr: float | None = None, seed_in_name: bool = True) -> str:
    """The stable folder of one RM of a study, under <run>/rms/ (the module's docstring)."""
    return (f"{slug(label)}__{slug(critic_name)}" + (f"__n{size}" if size is not None else "")
            + (f"__s{seed}" if seed is not None and seed_in_name else "")
            + (f"__lr{float(lr):g}" if lr is not None else ""))


def rm_train_config(cfg, backbone: str, train_overrides: Mapping | None = None, seed: int | None = None,
                    lr: float | None = None):
    """The TrainConfig of one RM of a study: the study's train block, the backbone's overrides, the
    seed and the rate of the grid."""
    return cfg.train.replace(backbone=backbone, **dict(train_overrides or {}), **({"seed": seed} if seed is not None else {}),
                             **({"lr": float(lr)} if lr is not None else {}))


def finished(folder: Path, train_cfg) -> bool:
    """Whether `folder` holds a finished RM (its result.json and its saved model) trained with
    `train_cfg`: a rerun reuses it unless its training data changed."""
    try:
        result = json.loads((Path(folder) / "result.json").read_text())
    except (OSError, ValueError):
        return False
    key = ((result.get("summary") or {}).get("train") or {}).get("run_key", {}).get("config")
    return key == as_trained(train_cfg).key() and has_model(Path(folder) / "train")


def train_rm(run: Run, backbone: str, label: str, critic_name: str, splits: Splits, critic=None,
             train_overrides: Mapping | None = None, size: int | None = None, seed: int | None = None,
             lr: float | None = None, seed_in_name: bool = True) -> dict:
    """Train and evaluate one RM of a study in its stable folder: a finished RM with the same
    config and data is reused. `lr`: one rate of the study's grid (critcore.studies.protocol): the
    RM trains at it, its folder says so, and it scores the validation pairs too (eval set
    "validation"), on which the study picks a rate. `seed`: the training seed (None: train.seed),
    in the folder's name unless `seed_in_name` is False (a study's only seed); the row always
    records the seed the RM trained with. Returns {row, summary, dir, reused}."""
    cfg = run.config
    out = run.out_dir / "rms" / folder_name(label, critic_name, size, seed, lr, seed_in_name)
    train_cfg = rm_train_config(cfg, backbone, train_overrides, seed, lr)
    if lr is not None and splits.validation:
        splits = dataclasses.replace(splits, eval={**splits.eval, VALIDATION_SET: splits.validation})
    before = _summaries(out)
    with run.step(f"rm {out.name}"):
        summary = fit_and_evaluate(train_cfg, splits, out, critic, run.cache, None, run.progress, cfg.n_boot, cfg.seed)
    reused = bool(before) and before == _summaries(out)
    tr = summary.get("train") or {}
    row = {"backbone": label, "critic": critic_name, "critic_id": summary.get("critic"),
           "n_train": tr.get("train_pairs", len(splits.train)), **({"size": size} if size is not None else {}),
           "seed": train_cfg.seed, **results_row(summary),
           "lr": (tr.get("config") or {}).get("lr"), "train_seconds": tr.get("train_seconds"), "reused": reused}
    record = {"row": row, "summary": summary, "dir": str(out), "reused": reused}
    if distributed.is_main():
        atomic.write_json(out / "result.json", redact({k: v for k, v in record.items() if k != "dir"}))
    run.rms.append({"dir": str(out.relative_to(run.out_dir)), "reused": reused,
                    "seconds": run.timings.get(f"rm {out.name}")})
    return record


def load_results(run_dir: str | os.PathLike) -> list[dict]:
    """The reward models of a run folder, read from rms/*/eval/summary.json with the row the
    study wrote in rms/*/result.json ({row, summary, dir, reused}): tabulate an interrupted run,
    or one made elsewhere, without retraining. Where there is no result.json, the row's backbone
    and critic come from the folder name <backbone>__<critic>[...] and its critic_id from the
    summary. An unreadable summary is a note on stderr, never an error."""
    out = []
    for path in sorted(Path(run_dir).glob("rms/*/eval/summary.json")):
        rm = path.parent.parent
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log(f"note: unreadable {path} ({e}); skipped")
            continue
        try:
            record = json.loads((rm / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        parts = rm.name.split("__")
        row = {"backbone": parts[0] if len(parts) > 1 else None, "critic": parts[1] if len(parts) > 1 else None,
               "critic_id": summary.get("critic"), **(record.get("row") or {})}
        out.append({"row": row, "summary": summary, "dir": str(rm), "reused": record.get("reused")})
    return out


def progress_bar(iterable, total: int, desc: str, run: Run):
    return tqdm_bar(iterable, total=total, desc=desc, unit="RM", disable=not run.progress)
