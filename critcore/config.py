"""One typed configuration for every command, study and notebook.

A configuration is a dataclass (the schemas below; `TrainConfig` lives in critcore.train). Every
command and notebook resolves its parameters the same way (`resolve`):

    the schema's defaults  <-  a params YAML  <-  command-line flags and --set key=value

merged deeply: a block such as `train:` merges key by key into its defaults, while a free mapping
(`eval_data`, `critics`) given by a layer replaces the one before it; `--set a.b=v` changes one
key wherever it is, and may reach into a data spec a flag gave (`--data pl=PATH --set
eval_data.pl.limit=300`); a key that a flag and --set, or two --set, give different values is an
error. Values are coerced to their declared types (YAML's `1e-4` is a float), and an
unknown key is an error that names the nearest valid one. `${data}` in strings becomes the shared
data folder. `critcore config PARAMS` prints the result; run.json records it; each notebook's
`parameters` cell lists the same keys and defaults (tests/test_config.py keeps them in sync).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import pprint
import re
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import yaml

from .backbones import cache_dir
from .critique import parse_critic_spec
from .data import DataError, parse_spec, spec_dict
from .errors import ConfigError, UserError
from .report import METRICS, slug
from .train import TrainConfig


# ---------------------------------------------------------------- YAML (1.2 numbers)


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-4` is a string; YAML 1.2 (and every reader) means a float.
    A key given twice in one mapping is an error: PyYAML would keep the last silently."""

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # SafeLoader refuses it below
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping; first on line {first[key]}", key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: str | os.PathLike) -> dict:
    """A params file: a mapping at the top level. Errors name the file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig") as f:
            raw = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the params file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of parameters at the top level, got {type(raw).__name__}")
    return raw


def parse_sets(items) -> list[tuple[list[str], Any]]:
    """`--set train.lr=1e-4` items as (key path, value) with the value read as YAML."""
    out = []
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out.append((key.strip().split("."), yaml.load(raw, Loader=_Loader)))
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: invalid YAML value ({getattr(e, 'problem', None) or e})") from None
    return out


# ---------------------------------------------------------------- ${data}


def shared_data_dir() -> Path:
    """$CRITCORE_DATA, else ../shared/data beside the project (where tests and CI find it)."""
    if os.environ.get("CRITCORE_DATA"):
        return Path(os.environ["CRITCORE_DATA"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if os.path.isdir(base.parent / "shared" / "data"):  # False also for a folder this user may not enter
            return (base.parent / "shared" / "data").resolve()
    return Path.cwd().parent / "shared" / "data"


def expand(value, data_dir: Path | None = None):
    """Replace ${data} in every string of a params structure with the shared data folder."""
    data_dir = data_dir or shared_data_dir()
    if isinstance(value, str):
        return value.replace("${data}", str(data_dir))
    if isinstance(value, dict):
        return {k: expand(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, data_dir) for v in value]
    return value


def critique_cache_path(path: str | os.PathLike | None = None) -> str:
    """The one critique cache every command shares: `path` when given, else
    $CRITCORE_CACHE/critiques.sqlite; always absolute."""
    return str(Path(path).expanduser().resolve() if path else (cache_dir() / "critiques.sqlite").resolve())


# ---------------------------------------------------------------- the schemas

DataSpec = typing.Union[str, dict, list]  # FORMAT:PATH, a PATH, {format, path, ...} or a list (critcore.data.parse_spec)
CriticSpec = typing.Union[str, dict]  # none, smollm2, simulated:0.9, {backend: openai, ...} (critcore.critique)
Threads = typing.Union[int, Literal["auto"], None]


def _doc(text: str, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    """A field with its one-line documentation (shown in `critcore config` and notebook cells); a
    name in _SHARED stands for the documentation that several schemas share."""
    return field(default=default, default_factory=factory, metadata={"doc": _SHARED.get(text, text)})


_SHARED = {  # the documentation of the fields that several schemas declare, each with its own default (_doc)
    "study": "what these parameters run",
    "notebook": "the notebook that runs this study",
    "description": "one line for run.json and the README",
    "threads": "torch CPU threads: a number, null (torch's choice) or auto (1 on a busy CPU)",
    "train_data": "training pairs (a data spec)",
    "eval_data": "{name: data spec}; rewardbench and pandalm give the paper's columns",
    "sections": "sections.json path, rewardbench-v1, generated, or a mapping",
    "train": "training options (critcore.train.TrainConfig)",
    "critic_options": "options for every critic (null: the critic's default)",
}


@dataclass
class CriticOptions:
    """Options for every critic that takes them; null keeps the critic's own default."""

    max_new_tokens: int | None = _doc("most tokens in one critique", None)
    max_chars: int | None = _doc("prompt and response are cut to this many characters before templating", None)
    batch_size: int | None = _doc("items per critic call (one cache commit each)", None)
    template: str | None = _doc("critique template: a name in critcore/templates, a file or the text", None)
    engine: str | None = _doc("local critics: transformers (null) or ctranslate2", None)
    dtype: str | None = _doc("local critics on transformers: bfloat16 or float32 (null: bf16 where the CPU has it)", None)
    compute_type: str | None = _doc("local critics on ctranslate2: float32 (null), int8 or int8_float32", None)
    on_error: Literal["fail", "skip"] = _doc("an item the critic can never answer (e.g. over its context): fail the "
                                             "run once the rest is cached, or skip its pair (reported)", "fail")


@dataclass
class Base:
    """What every study and command shares."""

    study: str = _doc("study", "")
    notebook: str | None = _doc("notebook", None)
    description: str = _doc("description", "")
    run_id: str | None = _doc("default: the params file's stem (critcore run), else a hash of the parameters", None)
    out_dir: str | None = _doc("default: outputs/<study>/<run_id>", None)
    critique_cache: str | None = _doc("SQLite critique cache; default $CRITCORE_CACHE/critiques.sqlite", None)
    threads: Threads = _doc("threads", "auto")
    seed: int = _doc("data sampling and bootstrap seed (training seeds are train.seed)", 0)
    progress: bool = _doc("progress bars", True)
    n_boot: int = _doc("bootstrap replicates of every interval", 1000)

    def __post_init__(self):
        """Checks beyond types, for every way in: params files, --set, notebooks, Python."""
        bad = self.problems()
        if bad:
            raise ConfigError("; ".join(bad))

    def problems(self) -> list[str]:
        """What this configuration cannot run with, beyond types and keys (each schema adds its own)."""
        out = [f"{k} must be at least {low}, got {getattr(self, k)!r}" for k, low in (("n_boot", 1), ("seed", 0))
               if getattr(self, k) < low]
        if isinstance(self.threads, int) and self.threads < 1:
            out.append(f"threads must be positive, null or auto, got {self.threads!r}")
        return out + run_id_problems(self.run_id)


@dataclass
class RMStudy(Base):
    """A study that trains and evaluates reward models."""

    train_data: DataSpec | None = _doc("train_data", None)
    validation_data: DataSpec | None = _doc("validation pairs: the learning-rate sweep picks on these", None)
    eval_data: dict[str, DataSpec] | None = _doc("eval_data", None)
    sections: str | dict | None = _doc("sections", None)
    train: TrainConfig = _doc("train", factory=TrainConfig)
    lr_sweep: list[float] | None = _doc("learning rates: every arm trains at each (a study reports the effect at "
                                        "every rate, and at the one lr_selection picks on validation)", None)
    lr_selection: Literal["shared", "per_arm"] = _doc(
        "how a rate is picked on validation: shared (one rate for every arm, the best mean over the arms) or "
        "per_arm (each arm its best)", "shared")
    critic_options: CriticOptions = _doc("critic_options", factory=CriticOptions)

    def problems(self) -> list[str]:
        """Beyond Base's: repeats, each of which would train one RM twice and count it twice in
        the tables and the pooled tests."""
        backbones = getattr(self, "backbones", None) or [getattr(self, "backbone", "")]
        lists = {"backbone names (they name the RM folders)": [backbone_label(b) for b in backbones],
                 "seeds": getattr(self, "seeds", None) or [], "lr_sweep": self.lr_sweep or []}
        for b in backbones:
            if isinstance(b, BackboneSpec):
                lists |= {f"backbone {backbone_label(b)}: seeds": b.seeds or [],
                          f"backbone {backbone_label(b)}: lr_sweep": b.lr_sweep or []}
        repeats = [f"{what}: {', '.join(sorted({str(v) for v in vs if vs.count(v) > 1}))} given more than once"
                   for what, vs in lists.items() if len(set(vs)) < len(vs)]
        sweep = [f"lr_sweep must be a list of positive learning rates, got {self.lr_sweep!r}"] \
            if self.lr_sweep is not None and not (self.lr_sweep and all(x > 0 for x in self.lr_sweep)) else []
        sweep += ["lr_sweep needs validation_data (a rate is picked on validation, never on test)"] \
            if self.lr_sweep and not self.validation_data else []
        taken = ["eval_data: the name 'validation' is taken (RMs of a learning-rate grid score the validation "
                 "pairs under it)"] if "validation" in (self.eval_data or {}) else []
        return super().problems() + name_problems(self.eval_data, getattr(self, "critics", None)) + repeats + sweep + taken


def _baselines(critics: dict) -> list[str]:
    """The No-Critiques entries of a study's critics (a spec that does not parse is left to
    _check_specs, which names it)."""
    out = []
    for name, spec in critics.items():
        try:
            if parse_critic_spec(spec) is None:
                out.append(name)
        except UserError:
            pass
    return out


def run_id_problems(run_id: str | None) -> list[str]:
    """A run id names a folder under outputs/<study>/: '../x' would write outside it."""
    return _not_plain("run_id", [] if run_id is None else [run_id], "the run folder")


def name_problems(eval_data: dict | None, critics: dict | None = None) -> list[str]:
    """An evaluation set's name names its files (<name>_scores.csv) and its --set path, where a '.'
    would split it; a critic's names its RMs' folders."""
    return _not_plain("eval set name", eval_data or {}, "files", dots=False) + \
        _not_plain("critic name", critics or {}, "folders")


def _not_plain(what: str, names, it_names: str, dots: bool = True) -> list[str]:
    def plain(name: str) -> str:
        return slug(name) if dots else slug(name).replace(".", "-")

    allowed = "letters, digits, '.', '_' or '-'" if dots else "letters, digits, '_' or '-'"
    return [f"{what} {name!r}: use {allowed} (it names {it_names}), e.g. {plain(name)!r}"
            for name in names if plain(name) != name]


def backbone_label(b) -> str:
    """The name of one of a study's backbones (a name or a BackboneSpec) in folders and tables."""
    return slug(b.name or b.backbone) if isinstance(b, BackboneSpec) else slug(str(b).split("/")[-1])


_SMALL_EVAL = {
    "rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl", "per_stratum": 4, "seed": 0},
    "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 60, "seed": 0}}
_SECTIONS = "${data}/reward-bench-local/sections.json"


@dataclass
class TrainJob(RMStudy):
    """`critcore train`: one reward model, trained and (with eval_data) evaluated."""

    study: str = _doc("study", "train")
    backbone: str = _doc("minilm, smollm2, gemma3-270m, a local folder, a .gguf file or a hub name", "minilm")
    critic: CriticSpec | None = _doc("none: No-Critiques; null: the critiques the data carry; else a critic spec", None)


@dataclass
class Quickstart(RMStudy):
    study: str = _doc("study", "quickstart")
    notebook: str | None = _doc("notebook", "notebooks/quickstart.ipynb")
    description: str = _doc("description", "Critiques, then a No-Critiques and a Critique RM, evaluation, a table and a chart.")
    data: Literal["auto", "shared", "generated"] = _doc(
        "auto: a slice of ../shared/data when it exists, else the generated set", "auto")
    n_train: int = _doc("training pairs (a seeded slice)", 16)
    n_eval: int = _doc("evaluation pairs per set (RewardBench: one per subset at least; PandaLM: half)", 16)
    backbone: str = _doc("the RM backbone", "minilm")
    critic: CriticSpec = _doc("the critic beside No-Critiques", "smollm2")
    train: TrainConfig = _doc("train", factory=partial(
        TrainConfig, max_length=128, lr=1.0e-4, batch_size=8, micro_batch_size=8, epochs=2))
    critic_options: CriticOptions = _doc("critic_options", factory=partial(
        CriticOptions, max_new_tokens=24, max_chars=240, batch_size=32))

    def problems(self) -> list[str]:
        return super().problems() + [f"{k} must be a positive integer, got {getattr(self, k)!r}"
                                     for k in ("n_train", "n_eval") if getattr(self, k) < 1]

    def derive(self, data_dir: Path) -> "Quickstart":
        """Fill the data specs that `data` implies (those given are kept)."""
        mode = self.data
        if mode == "auto":
            mode = "shared" if (data_dir / "mix" / "train.jsonl").is_file() else "generated"
        n_train, n_eval, seed = self.n_train, self.n_eval, self.seed
        if mode == "shared":
            train = {"format": "jsonl", "path": f"{data_dir}/mix/train.jsonl", "limit": n_train, "seed": seed,
                     "stratify": None}
            evals = {"rewardbench": {"format": "rewardbench", "path": f"{data_dir}/reward-bench-local/filtered.jsonl",
                                     "limit": n_eval, "per_stratum": 1, "seed": seed},
                     "pandalm": {"format": "pandalm", "path": f"{data_dir}/pandalm/testset-v1.json",
                                 "limit": max(1, n_eval // 2), "seed": seed, "stratify": None}}
            sections = f"{data_dir}/reward-bench-local/sections.json"
        else:
            train = {"format": "generated", "n": n_train, "seed": seed, "split": "train"}
            evals = {"generated": {"format": "generated", "n": n_eval, "seed": seed, "split": "test"}}
            sections = "generated"
        return dataclasses.replace(self, train_data=self.train_data or train, eval_data=self.eval_data or evals,
                                   sections=self.sections or sections)


@dataclass
class BackboneSpec:
    """One backbone of an RQ1 study, with its own slice and options."""

    name: str = _doc("label in folder names and tables", "")
    backbone: str | None = _doc("what TrainConfig.backbone gets (default: name)", None)
    n_train: int | None = _doc("a nested slice of the training pairs", None)
    n_eval: int | None = _doc("a seeded sample of each evaluation set", None)
    critics: list[str] | None = _doc("critic names to train with (default all)", None)
    train: dict = _doc("TrainConfig overrides for this backbone", factory=dict)
    lr_sweep: list[float] | None = _doc("this backbone's learning rates (null: the study's; []: no sweep)", None)
    seeds: list[int] | None = _doc("this backbone's training seeds (null: the study's)", None)


@dataclass
class CPUSized(RMStudy):
    """RQ1 and RQ2's defaults: a slice of the local suite and PandaLM, CPU-sized training and critics."""

    eval_data: dict[str, DataSpec] | None = _doc("eval_data", factory=lambda: copy.deepcopy(_SMALL_EVAL))
    sections: str | dict | None = _doc("sections", _SECTIONS)
    train: TrainConfig = _doc("train", factory=partial(TrainConfig, max_length=256, lr=8.0e-5, batch_size=32,
                                                        micro_batch_size=8))
    critic_options: CriticOptions = _doc("critic_options", factory=partial(CriticOptions, max_new_tokens=48,
                                                                          max_chars=400, batch_size=32))


@dataclass
class AblationStep:
    """One protocol of an RQ1 ablation: an arm against No-Critiques on the Score."""

    label: str = _doc("what this step changes", "")
    arm: str = _doc("a critic name of this run or of compare_runs", "")
    weighting: Literal["suite", "equal"] = _doc("subset weights: the suite's counts, or the pairs scored", "suite")
    seeds: list[int] | None = _doc("training seeds (null: every seed)", None)
    lr: float | None = _doc("a fixed rate for both arms (null: chosen on validation by rule)", None)
    rule: Literal["shared", "per_arm"] = _doc("with lr null: shared or per_arm", "per_arm")


@dataclass
class RQ1(CPUSized):
    study: str = _doc("study", "rq1")
    notebook: str | None = _doc("notebook", "notebooks/rq1_critic_quality.ipynb")
    description: str = _doc("description", "RQ1: one RM per backbone x critic; RewardBench sections and PandaLM, "
                                               "paired tests vs No-Critiques.")
    backbones: list[typing.Union[str, BackboneSpec]] = _doc("names, or {name, backbone, n_train, n_eval, critics, train}",
                                                            factory=lambda: ["minilm"])
    critics: dict[str, CriticSpec] = _doc("name -> critic spec; none is No-Critiques",
                                          factory=lambda: {"none": "none", "smollm2": "smollm2"})
    seeds: list[int] | None = _doc("training seeds: one RM per seed (and rate of the grid) in every cell (null: "
                                   "train.seed only)", None)
    train_data: DataSpec | None = _doc("train_data", factory=lambda: {
        "format": "jsonl", "path": "${data}/mix/train.jsonl", "limit": 256, "seed": 0, "stratify": None})
    probe: bool = _doc("train the critique-only probe of every critic (its information)", True)
    compare_runs: list[str] = _doc("other RQ1 run folders (same pairs): their simulated critics draw the "
                                   "information curve, their arms join the ablation", factory=list)
    ablation: list[AblationStep] = _doc("protocols to compare, one at a time (see params/rq1_ablation.yaml)",
                                        factory=list)

    def problems(self) -> list[str]:
        baselines = _baselines(self.critics)
        lists = {"critics": self.critics, "backbones": self.backbones}
        lists |= {f"backbone {backbone_label(b)}: critics": b.critics for b in self.backbones
                  if isinstance(b, BackboneSpec) and b.critics is not None}
        empty = [f"{what}: none given, so no RM would be trained" for what, given in lists.items() if not given]
        return super().problems() + empty + ([f"critics: {', '.join(baselines)} are all No-Critiques; keep one "
                                              "(which would the paired tests compare with?)"] if len(baselines) > 1 else [])


@dataclass
class RQ2(CPUSized):
    study: str = _doc("study", "rq2")
    notebook: str | None = _doc("notebook", "notebooks/rq2_scaling.ipynb")
    description: str = _doc("description", "RQ2: RMs on nested training subsets with and without critiques; curves and worth-N.")
    backbone: str = _doc("the RM backbone", "minilm")
    critics: dict[str, CriticSpec] = _doc("exactly one No-Critiques baseline (none), one or more critics",
                                          factory=lambda: {"none": "none", "smollm2": "smollm2"})
    sizes: list[int] = _doc("nested subsets of train_data (one seeded permutation)", factory=lambda: [32, 64, 128, 256])
    seeds: list[int] | None = _doc("training seeds: one curve per seed (null: train.seed only)", None)
    worth_metrics: list[str] = _doc("curves to compute worth-N on (Score, a section or PandaLM)",
                                    factory=lambda: ["Score", "PandaLM"])
    train_data: DataSpec | None = _doc("train_data", factory=lambda: {
        "format": "jsonl", "path": "${data}/mix/train.jsonl"})

    def problems(self) -> list[str]:
        out = super().problems()
        if len(_baselines(self.critics)) != 1 or len(self.critics) < 2:
            out.append("rq2 needs exactly one No-Critiques critic ('none') and at least one critic")
        if not self.sizes or not all(s > 0 for s in self.sizes):
            out.append(f"sizes must be positive integers, got {self.sizes!r}")
        elif sorted(set(self.sizes)) != self.sizes:
            out.append(f"sizes must be strictly increasing, got {self.sizes}")
        bad = [m for m in self.worth_metrics if m not in METRICS]
        if bad:
            out.append(f"worth_metrics: unknown {bad}; use {', '.join(METRICS)}")
        return out


@dataclass
class JudgeSpec:
    model: str = _doc("a name in `models`", "")
    mode: Literal["direct", "critique"] = _doc("direct (Gen) or critique (Gen + Critiques)", "direct")
    max_new_tokens: int | None = _doc("score reply length (default judge_max_new_tokens)", None)
    critic: str | None = _doc("who writes the critiques (a name in models; default the judge's model)", None)
    template: str | None = _doc("judge prompt: a name in critcore/prompts, a file or the text", None)
    name: str | None = _doc("table label", None)


@dataclass
class LLMStudy(Base):
    """The studies that prompt language models (judge, metacritique): named backends, one thread."""

    threads: Threads = _doc("threads", 1)
    models: dict[str, CriticSpec] = _doc("named backends (critic specs), shared by every use of the name",
                                         factory=lambda: {"smollm2": {"backend": "local", "model": "smollm2",
                                                                      "max_new_tokens": 64}})
    max_chars: int = _doc("per filled-in text (the prompt keeps its end, the rest their start)", 4000)
    rq1_runs: list[str] = _doc("RQ1 run folders: their RMs join the table or the chart", factory=list)


@dataclass
class Judge(LLMStudy):
    study: str = _doc("study", "judge")
    notebook: str | None = _doc("notebook", "notebooks/generative_judge.ipynb")
    description: str = _doc("description", "Point-wise generative judges, Gen and Gen + Critiques.")
    data: DataSpec = _doc("the pairs to judge (a data spec)", factory=lambda: {
        "format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl", "limit": 4, "seed": 0})
    sections: str | dict | None = _doc("sections", _SECTIONS)
    judges: list[JudgeSpec] = _doc("one judge per entry", factory=lambda: [
        JudgeSpec(model="smollm2", mode="direct"), JudgeSpec(model="smollm2", mode="critique")])
    judge_max_new_tokens: int = _doc("score reply length", 16)

    def problems(self) -> list[str]:
        return super().problems() + ([] if self.judges else ["judges: none given, so nothing would be judged"])


@dataclass
class Reference:
    critic: str | None = _doc("a name in `models` that writes the reference critiques", None)
    file: str | None = _doc("or a JSONL of reference critiques", None)


@dataclass
class Metacritique(LLMStudy):
    study: str = _doc("study", "metacritique")
    notebook: str | None = _doc("notebook", "notebooks/metacritique.ipynb")
    description: str = _doc("description", "Meta-P, Meta-R and Meta-F1 of critics.")
    data: DataSpec = _doc("the pairs whose responses are critiqued (a data spec)", factory=lambda: {
        "format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl", "limit": 2, "seed": 0})
    sides: list[Literal["chosen", "rejected"]] = _doc("which responses", factory=lambda: ["chosen", "rejected"])
    critics: dict[str, CriticSpec] = _doc("table label -> a name in models or a critic spec",
                                          factory=lambda: {"SmolLM2": "smollm2"})
    reference: Reference = _doc("reference critiques: {critic: NAME} or {file: PATH}",
                                factory=lambda: Reference(critic="smollm2"))
    evaluator: CriticSpec = _doc("the model that extracts and checks AIUs (a name in models or a spec)", "smollm2")
    aiu_max_new_tokens: int = _doc("AIU extraction reply length", 96)
    verdict_max_new_tokens: int = _doc("verdict reply length", 16)
    max_aius: int | None = _doc("AIUs kept per critique (null: all)", 5)
    rm_critics: dict[str, str] = _doc("RM folder name -> critic label, where the RM's critic is not recorded",
                                      factory=dict)

    def problems(self) -> list[str]:
        return super().problems() + [f"{what}: none given, so nothing would be scored"
                                     for what, given in (("critics", self.critics), ("sides", self.sides)) if not given] + (
            [f"sides: {self.sides} names a side twice (its critiques would count twice)"]
            if len(set(self.sides)) < len(self.sides) else [])


@dataclass
class WithRM(Base):
    """What the commands that score with a saved reward model share."""

    model: str | None = _doc("a saved critcore RM folder", None)
    critic: CriticSpec | None = _doc("null: the critic in the RM's recipe; else a critic spec", None)
    critic_options: CriticOptions = _doc("options for the critic (null: the recipe's)", factory=CriticOptions)
    allow_critic_mismatch: bool = _doc("score with another critic than the RM's (cross-critic experiments)", False)
    max_length: int | None = _doc("null: the RM's recipe", None)
    batch_size: int = _doc("sequences per forward pass", 32)

    def problems(self) -> list[str]:
        small = [k for k in ("max_length", "batch_size") if getattr(self, k) is not None and getattr(self, k) < 1]
        return super().problems() + [f"{k} must be positive, got {getattr(self, k)!r}" for k in small]


@dataclass
class Evaluate(WithRM):
    """`critcore evaluate`: score datasets with a saved reward model."""

    study: str = _doc("study", "evaluate")
    eval_data: dict[str, DataSpec] = _doc("{name: data spec}", factory=dict)
    sections: str | dict | None = _doc("sections", None)

    def problems(self) -> list[str]:
        return super().problems() + name_problems(self.eval_data)


@dataclass
class Critique(Base):
    """`critcore critique`: add critiques to preference pairs."""

    study: str = _doc("study", "critique")
    critic: CriticSpec = _doc("a critic spec", "smollm2")
    critic_options: CriticOptions = _doc("options for the critic", factory=CriticOptions)
    data: DataSpec | None = _doc("the pairs (a data spec)", None)
    out: str | None = _doc("output JSONL, written atomically", None)


@dataclass
class Score(WithRM):
    """`critcore score`: the reward of one response, or of every pair of a file."""

    study: str = _doc("study", "score")
    prompt: str | None = _doc("the prompt", None)
    response: str | None = _doc("the response", None)
    critique: str | None = _doc("a critique to use instead of the recipe's critic", None)
    data: DataSpec | None = _doc("score every pair of this data spec instead", None)
    out: str | None = _doc("with data: the scored pairs as CSV", None)


SCHEMAS: dict[str, type] = {"train": TrainJob, "quickstart": Quickstart, "rq1": RQ1, "rq2": RQ2, "judge": Judge,
                            "metacritique": Metacritique, "evaluate": Evaluate, "critique": Critique, "score": Score}
STUDIES = ("quickstart", "rq1", "rq2", "judge", "metacritique")  # the ones with a notebook


# ---------------------------------------------------------------- resolving


def _dataclass_of(tp) -> type | None:
    """The dataclass a field holds (directly, or as X | None or str | X), else None."""
    if typing.get_origin(tp) is list:
        return None
    return next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)


def _nearest(key: str, known, path: str = "") -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    prefix = f"{path}." if path else ""
    return f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"


def _check_keys(tp, value, where: str, path: str) -> None:
    """Unknown keys anywhere in the dataclass parts of `value` (of type `tp`: a schema, a field's
    type, list[X]) are errors naming the nearest."""
    if typing.get_origin(tp) is list and typing.get_args(tp) and isinstance(value, list):
        for i, x in enumerate(value):
            _check_keys(typing.get_args(tp)[0], x, where, f"{path}[{i}]")
        return
    cls = _dataclass_of(tp)
    if cls is None or not isinstance(value, dict):
        return
    hints = typing.get_type_hints(cls)
    for key, v in value.items():
        at = f"{path}.{key}" if path else str(key)
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{at}'{_nearest(key, hints, path)}")
        _check_keys(hints[key], v, where, at)


def _merge_layer(cls, base: dict, layer: dict) -> dict:
    """`layer` over `base`: dataclass blocks merge key by key; anything else is replaced."""
    out = dict(base)
    hints = typing.get_type_hints(cls)
    for key, value in layer.items():
        sub = _dataclass_of(hints.get(key))
        if sub is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_layer(sub, out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(tree: dict, path: list[str], value, where: str) -> None:
    node = tree
    for i, key in enumerate(path[:-1]):
        nxt = node.get(key)
        if isinstance(nxt, str):  # a data spec FORMAT:PATH becomes {format, path} to take a key
            nxt = spec_dict(nxt)
        if nxt is None:
            nxt = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: --set {'.'.join(path)}: '{'.'.join(path[:i + 1])}' is not a mapping")
        node[key] = nxt = dict(nxt)
        node = nxt
    node[path[-1]] = value


def defaults(cls) -> dict:
    """The schema's defaults as plain values."""
    return to_dict(cls())


def to_dict(cfg) -> dict:
    """A configuration as plain YAML-able values. A `train` block leaves out its backbone, which
    the study or command sets (`backbone`, `backbones`)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if not (isinstance(cfg, TrainConfig) and f.name == "backbone")}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _validate(cls, merged: dict, where: str):
    """Coerce to the declared types (pydantic's lax mode: "1e-4" -> 1e-4, "8" -> 8); the keys
    were checked before (_check_keys), with a nearest-name hint pydantic does not give."""
    from pydantic import TypeAdapter, ValidationError

    try:
        cfg = TypeAdapter(cls).validate_python(merged)
    except ValidationError as e:
        err = e.errors()[0]
        if isinstance((err.get("ctx") or {}).get("error"), UserError):  # a schema's own check (problems)
            raise ConfigError(f"{where}: {err['ctx']['error']}") from None
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-", "union[", "literal[")))
        loc = re.sub(r"\.(str|dict|list\[[^\]]*\]|int|float|bool|none)(?=\.|$)", "", loc)
        got = err.get("input")
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        raise ConfigError(f"{where}: '{loc}': {err['msg'].lower()} (got {shown})") from None
    for at, given in _numbers_from_bools(merged, cfg, ""):
        raise ConfigError(f"{where}: '{at}': expected a number, got a boolean ({str(given).lower()})")
    return cfg


def _numbers_from_bools(raw, value, path: str):
    """The paths where lax mode made a number of a boolean: `lr: true` would train at 1.0 and
    `max_new_tokens: yes` would cut every critique to one token."""
    if isinstance(raw, bool):
        if not isinstance(value, bool):
            yield path, raw
    elif isinstance(raw, dict):
        for k, v in raw.items():
            yield from _numbers_from_bools(v, value.get(k) if isinstance(value, dict) else getattr(value, str(k), None),
                                           f"{path}.{k}" if path else str(k))
    elif isinstance(raw, list) and isinstance(value, (list, tuple)):
        for i, (r, v) in enumerate(zip(raw, value)):
            yield from _numbers_from_bools(r, v, f"{path}[{i}]")


def resolve(cls, *layers: dict, sets=(), where: str = "params", data_dir: Path | None = None):
    """The schema's defaults <- each layer (dicts, in order) <- `sets` ((path, value) pairs, as
    the command-line flags give them, or "k=v" strings, as --set does), typed and checked. Raises
    ConfigError naming `where` and the key, also for a key that `sets` give two different values."""
    merged = defaults(cls)
    for layer in layers:
        if not layer:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: expected a mapping of parameters, got {type(layer).__name__}")
        _check_keys(cls, layer, where, "")
        merged = _merge_layer(cls, merged, layer)
    pairs, given = [], {}
    for item in sets:
        (path, value), by = (parse_sets([item])[0], "--set") if isinstance(item, str) else (item, "a flag")
        key = ".".join(path)
        if key in given and given[key][0] != value:  # which one was meant? (a YAML key given twice is an error too)
            raise ConfigError(f"'{key}' is given twice on the command line, by {given[key][1]} ({given[key][0]!r}) "
                              f"and by {by} ({value!r}); give it once")
        given.setdefault(key, (value, by))
        pairs.append((path, value))
    for path, value in pairs:
        _check_keys(cls, _nest(path, value), "--set", "")
        _set_path(merged, path, copy.deepcopy(value), "--set")
    study = merged.get("study")
    default_study = cls().study
    if study != default_study:
        raise ConfigError(f"{where}: these parameters are for '{study}', not '{default_study}'")
    trains = [layer.get("train") for layer in (*layers, *(_nest(p, v) for p, v in pairs)) if isinstance(layer, dict)]
    if any(isinstance(train, dict) and "backbone" in train for train in trains):
        raise ConfigError(f"{where}: 'train.backbone': set it with the top-level "
                          f"`{'backbones' if cls is RQ1 else 'backbone'}`, not inside train")
    data_dir = data_dir or shared_data_dir()
    cfg = _validate(cls, expand(merged, data_dir), where)
    if hasattr(cfg, "derive"):
        cfg = cfg.derive(data_dir)
    _check_specs(cfg, where)
    return cfg


def _nest(path: list[str], value) -> dict:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def _check_specs(cfg, where: str) -> None:
    """Data specs and critic specs parse (nothing is read or loaded)."""
    def spec(value, at):
        for i, one in enumerate(value if isinstance(value, list) else [value]):
            try:
                parse_spec(one)
            except DataError as e:
                raise ConfigError(f"{where}: '{at}{f'[{i}]' if isinstance(value, list) else ''}': {e.problem}"
                                  + (f" ({e.field})" if e.field else "")) from None

    def critic(value, at):
        try:
            parse_critic_spec(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: '{at}': {e}") from None

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None:
            continue
        if f.name in ("train_data", "validation_data", "data"):
            spec(v, f.name)
        elif f.name == "eval_data":
            for name, s in v.items():
                spec(s, f"eval_data.{name}")
        elif f.name in ("critic", "evaluator") and not (isinstance(cfg, (Metacritique,)) and v in cfg.models):
            critic(v, f.name)
        elif f.name in ("critics", "models"):
            for name, s in v.items():
                if not (isinstance(cfg, Metacritique) and f.name == "critics" and s in cfg.models):
                    critic(s, f"{f.name}.{name}")


def schema_for(raw: dict, default: str = "train") -> type:
    """The schema a params mapping names with `study:` (default: `critcore train`'s)."""
    study = raw.get("study") or default
    if study not in SCHEMAS:
        raise ConfigError(f"unknown study '{study}'{_nearest(study, SCHEMAS)}")
    return SCHEMAS[study]


def load(params: str | os.PathLike | dict | None = None, sets=(), flags: dict | None = None,
         schema: type | str | None = None):
    """Resolve a params file (or mapping) with --set items and command-line flags (a mapping of
    key paths "a.b" -> value; None values are left out) into its typed configuration."""
    where = str(params) if isinstance(params, (str, os.PathLike)) else "params"
    raw = read_yaml(params) if isinstance(params, (str, os.PathLike)) else dict(params or {})
    cls = SCHEMAS[schema] if isinstance(schema, str) else schema or schema_for(raw)
    pairs = [(key.split("."), value) for key, value in (flags or {}).items() if value is not None]
    return resolve(cls, raw, sets=[*pairs, *(sets or [])], where=where)


def dump(cfg) -> str:
    """The configuration as YAML (what `critcore config` prints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True, width=110)


def docs(cls) -> dict[str, str]:
    """{field: one-line documentation} of a schema."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------- notebooks' parameters cells


def parameters_cell(study: str) -> str:
    """The source of a study notebook's `parameters` cell: every key of its schema with its default
    and documentation. tests/test_config.py checks each notebook against this;
    `make notebook-parameters` rewrites them."""
    cls = SCHEMAS[study]
    lines = [f"# Parameters: critcore.config.{cls.__name__}. papermill -f params/X.yaml (or -p KEY VALUE) replaces them,",
             "# merged into these defaults as `critcore config` shows; ${data} is ../shared/data ($CRITCORE_DATA)."]
    for name, value in defaults(cls).items():
        text = pprint.pformat(value, width=100, sort_dicts=False).replace("\n", "\n" + " " * (len(name) + 3))
        lines.append(f"{name} = {text}  # {docs(cls)[name]}")
    return "\n".join(lines)


def write_parameters_cells(root: Path | None = None) -> list[Path]:
    """Rewrite the `parameters` cell of every study notebook from its schema."""
    import nbformat

    root = root or Path(__file__).resolve().parents[1]
    written = []
    for study in STUDIES:
        path = root / SCHEMAS[study]().notebook
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        source = parameters_cell(study)
        if cell.source != source:
            cell.source = source
            nbformat.write(nb, path)
            written.append(path)
    return written
