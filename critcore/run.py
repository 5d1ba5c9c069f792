"""One path from a configuration to a run folder, used by `critcore train`, `critcore run`
and every notebook: the run record (run.json, written once, by `Run.finish`) and the steps

    load_splits -> critique_splits -> train_rm (critique, train, evaluate, report per RM)

Everything a run writes goes under `run.out_dir`, atomically: tables as CSV, charts as HTML and
PNG, run.json, and one stable folder per reward model, rms/<backbone>__<critic>[__n<size>][__s<seed>][__lr<rate>]/,
where `critcore.train.train` finds a finished model, so a rerun reuses it; critiques come from the
one critique cache (`config.critique_cache_path`).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import platform
import re
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import transformers
from tqdm.auto import tqdm

from . import __version__, atomic, config as config_mod
from . import data as data_mod
from .backbones import check as check_backbone
from .critique import (augment, check_recipe, check_same_critic, critic_for_model, critique_texts, drop_failed,
                       make_critic)
from .records import Pair, fingerprints, overlap, prompt_text
from .errors import UserError
from .llm import CritiqueCache
from .model import RewardModel
from .provenance import git_info, package_versions
from .report import results_row, save_chart, save_table, slug
from .train import critiques_of, data_key, lr_sweep, train

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|authorization)$", re.I)
VALIDATION_SET = "validation"  # the evaluation-set name under which a study's grid RMs score the validation pairs
RUNNER_ENV = "CRITCORE_RUNNER"  # set by `critcore run` for the notebook it executes: {params_file, command}


def outputs_root() -> Path:
    """$CRITCORE_OUTPUTS, else outputs/ in the current folder."""
    return Path(os.environ.get("CRITCORE_OUTPUTS") or "outputs")


def choose_threads(setting) -> int | None:
    """The torch thread count for `threads`: an int as is; None leaves torch alone; "auto" gives 1
    when the load average already fills the CPUs (2 threads on 2 busy cores spin-wait and run
    several times slower than 1), else None."""
    if setting in (None, "none"):
        return None
    if setting == "auto":
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        except OSError:
            busy = False
        return 1 if busy else None
    return int(setting)


def log(*parts) -> None:
    """Progress and notes go to stderr: stdout is for a command's final result."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- secrets


def _secret_values(params: Mapping) -> list[str]:
    """Values of the environment variables that critic specs name as API keys (to mask)."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "api_key_env" and isinstance(v, str) and os.environ.get(v):
                    out.append(os.environ[v])
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dict(params))
    return [s for s in out if len(s) >= 4]


def redact(obj, secrets: list[str] | None = None):
    """Drop the values of secret-looking keys (api_key, token, ...; not api_key_env, which only
    names a variable) and mask any known secret value inside strings."""
    secrets = secrets or []
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v is not None else redact(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------- the run record


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


@dataclass
class Run:
    """One execution of a study or command: its typed configuration, output folder, critique
    cache, and what run.json will record (timings, critique statistics, RMs, artifacts)."""

    config: Any  # a critcore.config schema instance
    run_id: str
    out_dir: Path
    cache: Any = None  # CritiqueCache
    threads: int | None = None
    timings: dict = field(default_factory=dict)
    critique_stats: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    rms: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    git: dict = field(default_factory=git_info)  # the code as it was when the run started

    @property
    def params(self) -> dict:
        """The resolved configuration as plain values."""
        return config_mod.to_dict(self.config)

    @property
    def progress(self) -> bool:
        return bool(self.config.progress)

    @contextlib.contextmanager
    def step(self, name: str):
        """Time a step (seconds go to run.json "wall.steps")."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def _record(self, path: Path) -> None:
        rel = str(path.relative_to(self.out_dir)) if path.is_relative_to(self.out_dir) else str(path)
        if rel not in self.artifacts:
            self.artifacts.append(rel)

    def save_table(self, df, name: str) -> Path:
        """`df` as <out_dir>/<name>.csv, atomically."""
        path = self.path(f"{name}.csv")
        save_table(df, path)
        self._record(path)
        return path

    def save_json(self, obj, name: str) -> Path:
        path = self.path(f"{name}.json")
        atomic.write_json(path, redact(obj, _secret_values(self.params)))
        self._record(path)
        return path

    def save_chart(self, chart, name: str) -> tuple[Path, Path]:
        """An altair chart as <name>.html (offline) and <name>.png, each written atomically."""
        html, png = self.path(f"{name}.html"), self.path(f"{name}.png")
        save_chart(chart, html, png)
        self._record(html)
        self._record(png)
        return html, png

    def record(self, status: str = "completed") -> dict:
        now = time.time()
        cache = self.cache.report() if self.cache is not None else {}
        attempt = {"started": _iso(self.started), "finished": _iso(now), "total_s": round(now - self.started, 3),
                   "status": status, "steps": self.timings, "cache": cache, "by_critic": self.critique_stats}
        runner = os.environ.get(RUNNER_ENV)
        return redact({
            "study": self.config.study, "run_id": self.run_id, "status": status, "out_dir": str(self.out_dir),
            "notebook": getattr(self.config, "notebook", None), "description": self.config.description,
            "config": self.params, "command": shlex.join(sys.argv),
            "runner": json.loads(runner) if runner else None,
            "git": self.git, "versions": package_versions(), "critcore": __version__,
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "threads": self.threads, "wall": attempt,
            "critique_cache": {**cache, "by_critic": self.critique_stats},
            "rms": self.rms, "artifacts": sorted(self.artifacts), **self.notes,
        }, _secret_values(self.params))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind, value, tb) -> None:
        """A `with` block records the run as completed, or as failed when it raised."""
        if self.cache is not None:
            self.finish("completed" if kind is None else "failed")

    def finish(self, status: str = "completed") -> Path:
        """Write run.json (earlier attempts of the same run id are kept under "history"), close
        the critique cache and let go of the run folder (`atomic.claim`)."""
        path = self.path("run.json")
        record = self.record(status)
        try:
            before = json.loads(path.read_text())
            history = before.pop("history", []) + [before["wall"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or damaged
            history = []
        record["history"] = history
        atomic.write_json(path, record)
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        atomic.release(self.out_dir)
        return path


def _config_hash(cfg) -> str:
    keep = {k: v for k, v in config_mod.to_dict(cfg).items() if k not in ("run_id", "out_dir", "progress", "description")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:10]


def check_out_dir(out_dir: Path) -> None:
    """A run folder's path must not be a file (mkdir would say only "File exists")."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: a file, not a folder: the run writes a folder there (give another out_dir)")


def start(cfg, run_id: str | None = None) -> Run:
    """Open a run for a resolved configuration: pick run_id and out_dir, set torch threads and
    open the critique cache."""
    run_id = run_id or cfg.run_id or f"nb-{_config_hash(cfg)}"
    out_dir = Path(cfg.out_dir or outputs_root() / cfg.study / run_id).resolve()
    cache_path = config_mod.critique_cache_path(cfg.critique_cache)
    cfg = cfg.replace(run_id=run_id, out_dir=str(out_dir), critique_cache=cache_path)
    threads = choose_threads(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    check_out_dir(out_dir)
    cache = CritiqueCache(cache_path)  # an unusable cache fails before the run folder exists
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = json.loads(os.environ.get(RUNNER_ENV) or "{}")
    try:
        if runner.get("out_dir") != str(out_dir):  # else `critcore run` holds it for this notebook
            atomic.claim(out_dir)  # one process per run folder
    except UserError:
        cache.close()
        raise
    run = Run(config=cfg, run_id=run_id, out_dir=out_dir, cache=cache, threads=threads)
    log(f"{cfg.study} run {run_id} -> {out_dir}\ncritique cache {cache_path}" + (f"\ntorch threads {threads}" if threads else ""))
    return run


def _injected(namespace: Mapping) -> list[str]:
    """The names that papermill's injected cell ("# Parameters", from -f FILE or -p KEY VALUE)
    assigned: IPython keeps the source of every cell it ran in `In`. papermill only warns of a name
    the parameters cell does not declare, so a misspelt key would otherwise leave its default."""
    cells = [c for c in namespace.get("In", []) if isinstance(c, str) and c.startswith("# Parameters\n")]
    try:
        return [t.id for c in cells for node in ast.parse(c).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    except SyntaxError:
        return []


def setup(study: str, namespace: Mapping | None = None, **params) -> Run:
    """Start a study run from a notebook: the study's parameters from `namespace` (the notebook's
    globals(): only the schema's keys are read) updated with `params`, resolved as every command
    resolves them (critcore.config), then `start`."""
    schema = config_mod.SCHEMAS[study]
    namespace = namespace or {}
    names = [*schema.model_fields, *_injected(namespace)]  # an injected typo fails in resolve
    raw = {k: namespace[k] for k in names if k in namespace}
    raw.update(params)
    cfg = config_mod.resolve(schema, raw, where=f"{study} parameters")
    return start(cfg)


# ---------------------------------------------------------------- data


def load_pairs(spec) -> list[Pair]:
    """Pairs of a data spec; counted skips go to stderr."""
    loaded = data_mod.load(spec)
    note = data_mod.describe_skips(loaded)
    if note:
        log(note)
    return loaded.pairs


@dataclass
class Splits:
    train: list[Pair]
    validation: list[Pair] | None
    eval: dict[str, list[Pair]]
    sections: dict | None = None

    def named(self) -> list[tuple[str, list[Pair]]]:
        """(name, pairs) of each split there is: train, validation, then the evaluation sets."""
        val = [("validation", self.validation)] if self.validation is not None else []
        return [("train", self.train), *val, *self.eval.items()]

    def all_pairs(self) -> list[Pair]:
        return [p for _, pairs in self.named() for p in pairs]

    def rebuilt(self, lists) -> "Splits":
        """Same shape, with new pair lists in named() order."""
        lists = list(lists)
        val = lists.pop(1) if self.validation is not None else None
        return Splits(lists[0], val, dict(zip(self.eval, lists[1:])), self.sections)

    def with_pairs(self, pairs: list[Pair]) -> "Splits":
        """Same shape, pairs replaced in all_pairs() order (after augmenting them in one go)."""
        ends = list(itertools.accumulate(len(v) for _, v in self.named()))
        return self.rebuilt(pairs[a:b] for a, b in zip([0, *ends], ends))


def resolve_sections(sections) -> dict | None:
    """A sections mapping from a params value: None, a {section: {subset: count}} mapping, a JSON
    path, "rewardbench-v1" (metrics.REWARDBENCH_SECTIONS) or "generated"."""
    from .generated import GENERATED_SECTIONS
    from .metrics import REWARDBENCH_SECTIONS, load_sections

    if sections is None or isinstance(sections, dict):
        return sections
    if sections == "rewardbench-v1":
        return REWARDBENCH_SECTIONS
    if sections == "generated":
        return GENERATED_SECTIONS
    return load_sections(sections)


def read_splits(cfg) -> Splits:
    """Train / validation / eval pairs and the sections of a configuration."""
    train = load_pairs(cfg.train_data)
    val = load_pairs(cfg.validation_data) if cfg.validation_data else None
    evals = {name: load_pairs(spec) for name, spec in (cfg.eval_data or {}).items()}
    return Splits(train, val, evals, resolve_sections(cfg.sections))


def load_splits(run: Run) -> Splits:
    """read_splits, timed and counted in the run record."""
    with run.step("load data"):
        splits = read_splits(run.config)
    _count(run, splits)
    return splits


def _count(run: Run, splits: Splits) -> None:
    """Count the splits into run.json, and warn of (and record) held-out pairs seen in training and
    evaluation pairs that are validation pairs too (a learning-rate sweep picks on validation)."""
    run.notes["data"] = {k: len(v) for k, v in [("train", splits.train), ("validation", splits.validation or []),
                                                 *splits.eval.items()]}
    _record_overlap(run, _overlaps(fingerprints(splits.train), dict(splits.named()[1:])))
    seen = _overlaps(fingerprints(splits.validation), splits.eval) if splits.validation else {}
    if seen:
        run.notes["validation_overlap"] = seen
        _warn_overlap("evaluation pairs share their prompt with validation pairs, so a learning-rate sweep, which picks "
                      "on validation, would pick on them", seen)


def _record_overlap(run: Run, seen: dict) -> None:
    """Warn of held-out pairs seen in training, and record how many in run.json ("overlap")."""
    if seen:
        run.notes["overlap"] = seen
        _warn_overlap("held-out pairs share their prompt with training pairs, which inflates their scores", seen)


def _warn_overlap(what: str, seen: dict) -> None:
    warnings.warn(f"{what}: {seen}", OverlapWarning, stacklevel=4)


class OverlapWarning(UserWarning):
    """Validation or evaluation pairs whose prompt is also a training prompt."""


def _seen_by(rm, sets: Mapping[str, list[Pair]]) -> dict[str, dict[str, int]]:
    """_overlaps() of evaluation sets with the pairs a saved RM was trained on, from the hashes in
    its recipe (recipes from before 2026-12-01 carry none: nothing is found)."""
    trained = (rm.recipe or {}).get("train_data") or {}
    return _overlaps((trained.get("prompt_keys", "").split(), trained.get("pair_keys", "").split()), sets)


def _overlaps(trained, sets: Mapping[str, list[Pair]]) -> dict[str, dict[str, int]]:
    """For each set that shares prompts with the pairs `trained` fingerprints: how many of its pairs
    share their prompt (whitespace aside) and how many are trained pairs outright."""
    seen = {name: overlap(trained, held) for name, held in sets.items()}
    return {name: counts for name, counts in seen.items() if counts}


def describe_splits(splits: Splits):
    """A small table: split, pairs, subsets (or sources)."""
    import pandas as pd

    rows = []
    for name, pairs in splits.named():
        groups = sorted({p.subset or p.source or "?" for p in pairs})
        rows.append({"split": name, "pairs": len(pairs), "subsets": len(groups),
                     "examples": ", ".join(groups[:6]) + (" ..." if len(groups) > 6 else "")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- critiques


def critique_splits(run: Run, splits: Splits, critics: Mapping[str, Any]) -> dict[str, tuple[Splits, Any]]:
    """Critique every split once with each critic (name -> spec; one augment call per critic,
    cache-backed): {name: (critiqued splits, critic or None)}. A local critic's model is released
    afterwards (later lookups are cache hits and never load it)."""
    out = {}
    everything = splits.all_pairs()
    on_error = run.config.critic_options.on_error
    for name, spec in critics.items():
        critic = make_critic(spec, run.config.critic_options)
        before = dict(run.cache.stats)
        with run.step(f"critiques {name}"):
            pairs = augment(everything, critic if critic is not None else "none", run.cache, run.progress, on_error)
        delta = {k: run.cache.stats[k] - before.get(k, 0) for k in run.cache.stats}
        critiqued, dropped = _drop_failed(splits.with_pairs(pairs), name)
        run.critique_stats[name] = {"critic": critic.identity if critic else "none",
                                    "config": critic.config_hash if critic else None,
                                    "items": 0 if critic is None else 2 * len(everything), **delta,
                                    "pairs_skipped": dropped, "seconds": run.timings[f"critiques {name}"]}
        if critic is not None:
            critic.release()
        out[name] = (critiqued, critic)
    return out


def _drop_failed(splits: Splits, name: str) -> tuple[Splits, dict]:
    """Leave out the pairs whose critiques failed (on_error: skip), per split, and say so."""
    kept = [(split, *drop_failed(pairs)) for split, pairs in splits.named()]
    dropped = {split: n for split, _, n in kept if n}
    if dropped:
        log(f"critic {name}: pairs left out because a critique could not be had: {dropped}")
    return splits.rebuilt(pairs for _, pairs, _ in kept), dropped


def critique_examples(critiqued: Mapping, n: int = 3, split: str = "train", width: int = 160):
    """The first `n` pairs of a split with each critic's critiques, for a look."""
    import pandas as pd

    rows = []
    cut = lambda t: (t or "").replace("\n", " ")[:width]  # noqa: E731
    for name, (sp, critic) in critiqued.items():
        if critic is None:
            continue
        for p in (sp.train if split == "train" else sp.eval.get(split, []))[:n]:
            rows.append({"critic": name, "prompt": cut(prompt_text(p.prompt)), "chosen": cut(p.chosen),
                         "chosen critique": cut(p.chosen_critique), "rejected": cut(p.rejected),
                         "rejected critique": cut(p.rejected_critique)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- one reward model


def _summaries(d: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in d.glob("**/summary.json") if "eval" not in p.parts}


SCORING_CODE = ("evaluate.py", "metrics.py", "stats.py", "model.py", "collate.py", "format.py", "report.py",
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
    from .evaluate import evaluate

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
        return summary  # the same model on the same pairs, scored by the same code
    summary = evaluate(result.model, splits.eval, out_dir / "eval", sections=splits.sections,
                       max_length=train_cfg.max_length, with_critiques=train_cfg.with_critiques, n_boot=n_boot,
                       seed=seed)
    summary["eval_key"] = key
    used = critiques_of(splits.train, train_cfg.with_critiques)
    summary["train"] = result.summary
    summary["sweep"] = sweep
    summary["critic"] = used["identity"] if used else "none"
    summary["critic_source"] = (result.summary.get("critic") or {}).get("source")
    atomic.write_json(out_dir / "eval" / "summary.json", summary)
    return summary


def train_rm(run: Run, backbone: str, label: str, critic_name: str, splits: Splits, critic=None,
             train_overrides: Mapping | None = None, size: int | None = None, seed: int | None = None,
             lr: float | None = None) -> dict:
    """Train and evaluate one RM of a study in its stable folder: a finished RM with the same
    config and data is reused. `lr`: one rate of the study's grid (critcore.studies.protocol): the
    RM trains at it, its folder says so, and it scores the validation pairs too (eval set
    "validation"), on which the study picks a rate. Returns {row, summary, dir, reused}."""
    cfg = run.config
    out = run.out_dir / "rms" / (f"{slug(label)}__{slug(critic_name)}" + (f"__n{size}" if size is not None else "")
                                 + (f"__s{seed}" if seed is not None else "")
                                 + (f"__lr{float(lr):g}" if lr is not None else ""))  # see the module's docstring
    train_cfg = cfg.train.replace(backbone=backbone, **dict(train_overrides or {}),
                                  **({"seed": seed} if seed is not None else {}),
                                  **({"lr": float(lr)} if lr is not None else {}))
    if lr is not None and splits.validation:
        splits = dataclasses.replace(splits, eval={**splits.eval, VALIDATION_SET: splits.validation})
    before = _summaries(out)
    with run.step(f"rm {out.name}"):
        summary = fit_and_evaluate(train_cfg, splits, out, critic, run.cache, None, run.progress, cfg.n_boot, cfg.seed)
    reused = bool(before) and before == _summaries(out)
    tr = summary.get("train") or {}
    row = {"backbone": label, "critic": critic_name, "critic_id": summary.get("critic"),
           "n_train": tr.get("train_pairs", len(splits.train)), **({"size": size} if size is not None else {}),
           **({"seed": seed} if seed is not None else {}), **results_row(summary),
           "lr": (tr.get("config") or {}).get("lr"), "train_seconds": tr.get("train_seconds"), "reused": reused}
    record = {"row": row, "summary": summary, "dir": str(out), "reused": reused}
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
    return tqdm(iterable, total=total, desc=desc, unit="RM", disable=not run.progress)


# ---------------------------------------------------------------- `critcore train`


def train_job(cfg) -> dict:
    """`critcore train`: one RM from a TrainJob configuration, in cfg.out_dir (train/, eval/,
    run.json). critic null keeps the critiques the data carry; "none" trains without critiques."""
    check_backbone(cfg.backbone)  # names and data fail before anything is written
    critic = make_critic(cfg.critic, cfg.critic_options) if cfg.critic is not None else None
    splits = read_splits(cfg)
    with start(cfg) as run:
        _count(run, splits)
        if cfg.critic is not None and critic is None:  # "none": No-Critiques, whatever the data carry
            splits = splits.with_pairs(augment(splits.all_pairs(), "none"))
        with run.step("rm"):
            summary = fit_and_evaluate(cfg.train.replace(backbone=cfg.backbone), splits, run.out_dir,
                                       critic, run.cache, cfg.lr_sweep, run.progress, cfg.n_boot, cfg.seed)
        if critic is not None:
            run.critique_stats[str(critic.identity)] = dict(run.cache.stats)
        run.notes["result"] = results_row(summary)
    return {**summary, "out_dir": str(run.out_dir)}


# ---------------------------------------------------------------- `critcore evaluate`, `score`, `critique`


def _critique_as_trained(pairs: list[Pair], critic, expected, cfg, cache, progress: bool) -> list[Pair]:
    """Test pairs critiqued the way the model expects: by `critic`; stripped of critiques for a
    No-Critiques model; as they are for a checkpoint without a recipe. Then checked."""
    if critic is not None:
        pairs = augment(pairs, critic, cache, progress=progress)
    elif expected is None and any(p.has_critiques for p in pairs):
        log("the model was trained without critiques: the critiques in the data are not used")
        pairs = augment(pairs, "none")
    check_recipe(expected, pairs, cfg.allow_critic_mismatch or critic is not None)
    return pairs


def evaluate_job(cfg) -> dict:
    """`critcore evaluate`: score each eval set with a saved RM, critiqued as the RM was trained
    (its recipe), into cfg.out_dir (<name>_scores.csv, summary.json, run.json)."""
    from .evaluate import evaluate

    rm = RewardModel.load(cfg.model)
    critic, expected = critic_for_model(rm.recipe, cfg.critic, cfg.critic_options, cfg.allow_critic_mismatch)
    sets = {name: load_pairs(spec) for name, spec in cfg.eval_data.items()}
    sections = resolve_sections(cfg.sections)  # bad input fails before the run folder exists
    with start(cfg) as run:
        _record_overlap(run, _seen_by(rm, sets))
        with run.step("critiques"):
            sets = {name: _critique_as_trained(pairs, critic, expected, cfg, run.cache, run.progress)
                    for name, pairs in sets.items()}
        with run.step("evaluate"):
            summary = evaluate(rm, sets, run.out_dir, sections=sections, max_length=cfg.max_length,
                               batch_size=cfg.batch_size, n_boot=cfg.n_boot, seed=cfg.seed, progress=run.progress)
        used = [critiques_of(p) for p in sets.values()]
        summary["critic"] = next((u["identity"] for u in used if u), "none")
        summary["recipe_critic"] = expected
        summary["overlap"] = run.notes.get("overlap", {})
        atomic.write_json(run.out_dir / "summary.json", summary)
        run.notes["result"] = results_row(summary)
    return {**summary, "out_dir": str(run.out_dir)}


def score_job(cfg) -> dict:
    """`critcore score`: one response (critiqued with the RM's critic unless a critique is given)
    -> {reward, critique, critic, model}; or every pair of cfg.data -> a CSV at cfg.out."""
    from .evaluate import score_one, score_pairs

    rm = RewardModel.load(cfg.model)
    if cfg.critique is not None:
        if not cfg.allow_critic_mismatch and (rm.recipe or {}).get("critic", "unknown") is None:
            raise config_mod.ConfigError("score: the model was trained without critiques, so --critique would not be "
                                         "read as it was trained; pass --allow-critic-mismatch to score it anyway")
        critic, expected = None, "given"
    else:
        critic, expected = critic_for_model(rm.recipe, cfg.critic, cfg.critic_options, cfg.allow_critic_mismatch)
    with CritiqueCache(config_mod.critique_cache_path(cfg.critique_cache)) as cache:
        if cfg.data is not None:
            pairs = load_pairs(cfg.data)
            seen = _seen_by(rm, {"data": pairs}).get("data")
            if seen:
                _warn_overlap("pairs the model was trained on, or whose prompt it saw", seen)
            pairs = _critique_as_trained(pairs, critic, expected, cfg, cache, cfg.progress)
            df = score_pairs(rm, pairs, cfg.max_length, cfg.batch_size, progress=cfg.progress)
            save_table(df, cfg.out)
            return {"out": str(cfg.out), "pairs": len(df), "critic": critic.identity if critic else None}
        critique = cfg.critique
        if critique is None and critic is not None:
            if critic.needs_labels:
                raise config_mod.ConfigError(f"score: the critic {critic.identity} needs to know which response is "
                                             "preferred, so it cannot critique one response; give --critique")
            critique = critique_texts(critic, [(cfg.prompt, cfg.response, None)], cache, progress=False)[0]
        elif critique is None and isinstance(expected, dict):
            raise config_mod.ConfigError(f"score: the model was trained with critiques by {expected.get('identity')!r} "
                                         "that came with its data; give --critique TEXT or --critic SPEC")
    reward = score_one(rm, cfg.prompt, cfg.response, critique, cfg.max_length)
    return {"reward": reward, "critique": critique, "critic": critic.identity if critic else None,
            "model": str(cfg.model)}


def critique_job(cfg) -> dict:
    """`critcore critique`: cfg.data with critiques by cfg.critic, written to cfg.out (JSONL)."""
    pairs = load_pairs(cfg.data)
    critic = make_critic(cfg.critic, cfg.critic_options)
    start_t = time.perf_counter()
    with CritiqueCache(config_mod.critique_cache_path(cfg.critique_cache)) as cache:
        out, skipped = drop_failed(augment(pairs, critic, cache, cfg.progress, cfg.critic_options.on_error))
        if skipped:
            log(f"{skipped} pairs left out: a critique could not be had (on_error: skip)")
        data_mod.write_pairs(cfg.out, out)
        return {"critic": critic.identity if critic else "none", "pairs": len(out), "pairs_skipped": skipped,
                **cache.report(), "seconds": round(time.perf_counter() - start_t, 2), "out": str(cfg.out)}
