"""A run's pairs: the train / validation / evaluation splits of a configuration, the overlap
warnings (held-out pairs seen in training), and one critique pass per critic over every split."""
from __future__ import annotations

import itertools
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

from . import data as data_mod
from .critique import augment, drop_failed, make_critic
from .generated import GENERATED_SECTIONS
from .metrics import REWARDBENCH_SECTIONS, load_sections
from .records import Pair, fingerprints, overlap, prompt_text
from .run import Run, log


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
    count_splits(run, splits)
    return splits


def count_splits(run: Run, splits: Splits) -> None:
    """Count the splits into run.json, and warn of (and record) held-out pairs seen in training and
    evaluation pairs that are validation pairs too (a learning-rate sweep picks on validation)."""
    run.notes["data"] = {k: len(v) for k, v in [("train", splits.train), ("validation", splits.validation or []),
                                                 *splits.eval.items()]}
    record_overlap(run, _overlaps(fingerprints(splits.train), dict(splits.named()[1:])))
    seen = _overlaps(fingerprints(splits.validation), splits.eval) if splits.validation else {}
    if seen:
        run.notes["validation_overlap"] = seen
        warn_overlap("evaluation pairs share their prompt with validation pairs, so a learning-rate sweep, which picks "
                      "on validation, would pick on them", seen)


def record_overlap(run: Run, seen: dict) -> None:
    """Warn of held-out pairs seen in training, and record how many in run.json ("overlap")."""
    if seen:
        run.notes["overlap"] = seen
        warn_overlap("held-out pairs share their prompt with training pairs, which inflates their scores", seen)


def warn_overlap(what: str, seen: dict) -> None:
    warnings.warn(f"{what}: {seen}", OverlapWarning, stacklevel=4)


class OverlapWarning(UserWarning):
    """Validation or evaluation pairs whose prompt is also a training prompt."""


def seen_by(rm, sets: Mapping[str, list[Pair]]) -> dict[str, dict[str, int]]:
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
        critiqued, skipped = _drop_failed(splits.with_pairs(pairs), name)
        run.critique_stats[name] = {"critic": critic.identity if critic else "none",
                                    "config": critic.config_hash if critic else None,
                                    "items": 0 if critic is None else 2 * len(everything), **delta,
                                    "pairs_skipped": dict(Counter(s["split"] for s in skipped)), "skipped": skipped,
                                    "seconds": run.timings[f"critiques {name}"]}
        if critic is not None:
            critic.release()
        out[name] = (critiqued, critic)
    return out


def _drop_failed(splits: Splits, name: str) -> tuple[Splits, list[dict]]:
    """Leave out the pairs whose critiques failed (on_error: skip), per split, and name each
    (split, id, reason) on stderr and in the returned list."""
    kept = [(split, *drop_failed(pairs)) for split, pairs in splits.named()]
    skipped = [{"split": split, **s} for split, _, left_out in kept for s in left_out]
    log_skipped(skipped, f"critic {name}: ")
    return splits.rebuilt(pairs for _, pairs, _ in kept), skipped


def log_skipped(skipped: list[dict], who: str = "") -> None:
    """One line on stderr for each pair left out because a critique could not be had."""
    for s in skipped:
        where = f" ({s['split']})" if "split" in s else ""
        log(f"{who}pair {s['id']}{where} left out (on_error: skip): {s['reason']}")


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
