"""The parameters every command and study declares, as schemas (critcore.schema): the field types,
the bases a study builds on (`Base`, `RMStudy`, `LLMStudy`, `CPUSized`), the commands' schemas, and
the registry a study module joins with `register`. critcore.config resolves parameters into them."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import AfterValidator, model_validator

from .critique import parse_critic_spec
from .data import DataError, parse_spec
from .errors import ConfigError, UserError
from .llm.local import COMPUTE_TYPES, DTYPES, ENGINES
from .recipe import TrainConfig
from .report import slug
from .schema import Field, Int, Schema


# ---------------------------------------------------------------- field types


def _data_spec(value):
    """A data spec parses (nothing is read)."""
    try:
        parse_spec(value)
    except DataError as e:
        raise ValueError(e.problem + (f" ({e.field})" if e.field else "")) from None
    return value


def _critic_spec(value):
    """A critic spec parses, its options included (nothing is built or loaded)."""
    try:
        parse_critic_spec(value)
    except UserError as e:
        raise ValueError(str(e)) from None
    return value


def _threads(value):
    if isinstance(value, int) and value < 1:
        raise ValueError(f"must be positive, null or auto, got {value!r}")
    return value


def plain_names(what: str, it_names: str, dots: bool = True) -> Callable:
    """A check that names which become paths are plain (a name, or the keys of a mapping): '../x'
    would write outside the run folder, and a '.' in an evaluation set's name would split its
    --set path. Its ConfigError names the key itself."""
    def check(value):
        for name in [] if value is None else [value] if isinstance(value, str) else value:
            plain = slug(name) if dots else slug(name).replace(".", "-")
            if plain != name:
                allowed = "letters, digits, '.', '_' or '-'" if dots else "letters, digits, '_' or '-'"
                raise ConfigError(f"{what} {name!r}: use {allowed} (it names {it_names}), e.g. {plain!r}")
        return value
    return check


check_run_id = plain_names("run_id", "the run folder")
check_eval_names = plain_names("eval set name", "files", dots=False)
check_critic_names = plain_names("critic name", "folders")


_Spec = Annotated[Union[str, dict], AfterValidator(_data_spec)]
# FORMAT:PATH, a PATH, {format, path, ...} or a list of them (critcore.data.parse_spec)
DataSpec = Union[_Spec, Annotated[list[_Spec], Field(min_length=1)]]
EvalData = Annotated[dict[str, DataSpec], AfterValidator(check_eval_names)]  # {name: data spec}; a name names files
# none, smollm2, simulated:0.9, {backend: openai, ...} (critcore.critique)
CriticSpec = Annotated[Union[str, dict], AfterValidator(_critic_spec)]
Critics = Annotated[dict[str, CriticSpec], AfterValidator(check_critic_names)]  # {name: critic spec}; a name names RMs
Sections = Union[str, dict]  # sections.json path, rewardbench-v1, generated, or a mapping (critcore.splits.resolve_sections)
Threads = Annotated[Union[int, Literal["auto"], None], AfterValidator(_threads)]


def doc(text: str, default: Any = ..., factory: Callable | None = None, **bounds):
    """A field with its one-line documentation (shown in `critcore config` and notebook cells), its
    default and its bounds (gt, ge, ...); a name in SHARED stands for the documentation that
    several schemas share."""
    if factory is not None:
        return Field(default_factory=factory, description=SHARED.get(text, text), **bounds)
    return Field(default, description=SHARED.get(text, text), **bounds)


SHARED = {  # the documentation of the fields that several schemas declare, each with its own default (doc)
    "study": "what these parameters run",
    "notebook": "the notebook that runs this study",
    "description": "one line for run.json and the README",
    "threads": "torch CPU threads: a number, null (torch's choice) or auto (1 on a busy CPU)",
    "train_data": "training pairs (a data spec)",
    "eval_data": "{name: data spec}; rewardbench and pandalm give the paper's columns",
    "sections": "sections.json path, rewardbench-v1, generated, or a mapping",
    "train": "training options (critcore.recipe.TrainConfig)",
    "critic_options": "options for every critic (null: the critic's default)",
}


# ---------------------------------------------------------------- the schemas every study and command shares


class CriticOptions(Schema):
    """Options for every critic that takes them; null keeps the critic's own default."""

    key_prefix = "critic_options"

    max_new_tokens: Int | None = doc("most tokens in one critique", None, gt=0)
    max_chars: Int | None = doc("prompt and response are cut to this many characters before templating", None, gt=0)
    batch_size: Int | None = doc("items per critic call (one cache commit each)", None, gt=0)
    template: str | None = doc("critique template: a name in critcore/templates, a file or the text", None)
    engine: Literal[ENGINES] | None = doc("local critics: transformers (null) or ctranslate2", None)
    dtype: Literal[DTYPES] | None = doc("local critics on transformers: bfloat16 or float32 (null: bf16 where the CPU has it)",
                                        None)
    compute_type: Literal[COMPUTE_TYPES] | None = doc("local critics on ctranslate2: float32 (null), int8 or int8_float32",
                                                      None)
    on_error: Literal["fail", "skip"] = doc("an item the critic can never answer (e.g. over its context): fail the "
                                            "run once the rest is cached, or skip its pair (reported)", "fail")


class Base(Schema):
    """What every study and command shares."""

    study: str = doc("study", "")
    notebook: str | None = doc("notebook", None)
    description: str = doc("description", "")
    run_id: Annotated[str | None, AfterValidator(check_run_id)] = doc(
        "default: the params file's stem (critcore run), else a hash of the parameters", None)
    out_dir: str | None = doc("default: outputs/<study>/<run_id>", None)
    critique_cache: str | None = doc("SQLite critique cache; default $CRITCORE_CACHE/critiques.sqlite", None)
    threads: Threads = doc("threads", "auto")
    seed: Int = doc("data sampling and bootstrap seed (training seeds are train.seed)", 0, ge=0)
    progress: bool = doc("progress bars", True)
    n_boot: Int = doc("bootstrap replicates of every interval", 1000, ge=1)

    def derive(self, data_dir: Path):
        """This configuration with what its settings imply filled in (the quickstart's data specs)."""
        return self


def repeats(lists: dict[str, list]) -> list[str]:
    """Values given more than once, each of which would train one RM twice and count it twice in
    the tables and the pooled tests."""
    return [f"{what}: {', '.join(sorted({str(v) for v in vs if vs.count(v) > 1}))} given more than once"
            for what, vs in lists.items() if len(set(vs)) < len(vs)]


def raise_all(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


class RMStudy(Base):
    """A study or command that trains and evaluates reward models."""

    train_data: DataSpec | None = doc("train_data", None)
    validation_data: DataSpec | None = doc("validation pairs: the learning-rate sweep picks on these", None)
    eval_data: EvalData | None = doc("eval_data", None)
    sections: Sections | None = doc("sections", None)
    train: TrainConfig = doc("train", factory=TrainConfig)
    lr_sweep: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = doc(
        "learning rates: every arm trains at each (a study reports the effect at every rate, and at the one "
        "lr_selection picks on validation)", None)
    lr_selection: Literal["shared", "per_arm"] = doc(
        "how a rate is picked on validation: shared (one rate for every arm, the best mean over the arms) or "
        "per_arm (each arm its best)", "shared")
    critic_options: CriticOptions = doc("critic_options", factory=CriticOptions)

    @model_validator(mode="after")
    def _rm_rules(self):
        """A rate is picked on validation pairs, never on the test, under the name `validation`;
        each rate trains once."""
        raise_all((["lr_sweep needs validation_data (a rate is picked on validation, never on test)"]
                   if self.lr_sweep and not self.validation_data else [])
                  + (["eval_data: the name 'validation' is taken (RMs of a learning-rate grid score the validation "
                      "pairs under it)"] if "validation" in (self.eval_data or {}) else [])
                  + repeats({"lr_sweep": self.lr_sweep or []}))
        return self


class BackboneSpec(Schema):
    """One backbone of an RQ1 study, with its own slice and options."""

    name: str = doc("label in folder names and tables", "")
    backbone: str | None = doc("what TrainConfig.backbone gets (default: name)", None)
    n_train: Int | None = doc("a nested slice of the training pairs", None)
    n_eval: Int | None = doc("a seeded sample of each evaluation set", None)
    critics: list[str] | None = doc("critic names to train with (default all)", None)
    train: dict = doc("TrainConfig overrides for this backbone", factory=dict)
    lr_sweep: list[Annotated[float, Field(gt=0)]] | None = doc(
        "this backbone's learning rates (null: the study's; []: no sweep)", None)
    seeds: list[Int] | None = doc("this backbone's training seeds (null: the study's)", None)


def backbone_label(b) -> str:
    """The name of one of a study's backbones (a name or a BackboneSpec) in folders and tables."""
    return slug(b.name or b.backbone) if isinstance(b, BackboneSpec) else slug(str(b).split("/")[-1])


def baselines(critics: dict) -> list[str]:
    """The No-Critiques entries of a study's critics (their specs were checked already)."""
    return [name for name, spec in critics.items() if parse_critic_spec(spec) is None]


SMALL_EVAL = {
    "rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl", "per_stratum": 4, "seed": 0},
    "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 60, "seed": 0}}
SECTIONS = "${data}/reward-bench-local/sections.json"


def suite_sample(limit: int) -> dict:
    """A seeded sample of the local RewardBench-shaped suite (a data spec)."""
    return {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl", "limit": limit, "seed": 0}


class CPUSized(RMStudy):
    """RQ1 and RQ2's defaults: a slice of the local suite and PandaLM, CPU-sized training and critics."""

    eval_data: EvalData = doc("eval_data", factory=lambda: copy.deepcopy(SMALL_EVAL), min_length=1)
    sections: Sections | None = doc("sections", SECTIONS)
    train: TrainConfig = doc("train", factory=partial(TrainConfig, max_length=256, lr=8.0e-5, batch_size=32,
                                                      micro_batch_size=8))
    critic_options: CriticOptions = doc("critic_options", factory=partial(CriticOptions, max_new_tokens=48,
                                                                        max_chars=400, batch_size=32))


class LLMStudy(Base):
    """The studies that prompt language models (judge, metacritique): named backends, one thread."""

    threads: Threads = doc("threads", 1)
    models: dict[str, CriticSpec] = doc("named backends (critic specs), shared by every use of the name",
                          factory=lambda: {"smollm2": {"backend": "local", "model": "smollm2", "max_new_tokens": 64}})
    max_chars: Int = doc("per filled-in text (the prompt keeps its end, the rest their start)", 4000, gt=0)
    rq1_runs: list[str] = doc("RQ1 run folders: their RMs join the table or the chart", factory=list)


class TrainJob(RMStudy):
    """`critcore train`: one reward model, trained and (with eval_data) evaluated."""

    study: str = doc("study", "train")
    train_data: DataSpec = doc("train_data")
    backbone: str = doc("minilm, smollm2, gemma3-270m, a local folder, a .gguf file or a hub name", "minilm")
    critic: CriticSpec | None = doc("none: No-Critiques; null: the critiques the data carry; else a critic spec", None)
    push_to_hub: str | None = doc("a hub repo (owner/name) to upload the trained RM to, its token from $HF_TOKEN", None)


class WithRM(Base):
    """What the commands that score with a saved reward model share."""

    model: str = doc("a saved critcore RM folder")
    critic: CriticSpec | None = doc("null: the critic in the RM's recipe; else a critic spec", None)
    critic_options: CriticOptions = doc("options for the critic (null: the recipe's)", factory=CriticOptions)
    allow_critic_mismatch: bool = doc("score with another critic than the RM's (cross-critic experiments)", False)
    max_length: Int | None = doc("null: the RM's recipe", None, gt=0)
    batch_size: Int = doc("sequences per forward pass", 32, gt=0)


class Evaluate(WithRM):
    """`critcore evaluate`: score datasets with a saved reward model."""

    study: str = doc("study", "evaluate")
    eval_data: EvalData = doc("{name: data spec}", min_length=1)
    sections: Sections | None = doc("sections", None)


class Critique(Base):
    """`critcore critique`: add critiques to preference pairs."""

    study: str = doc("study", "critique")
    critic: CriticSpec = doc("a critic spec", "smollm2")
    critic_options: CriticOptions = doc("options for the critic", factory=CriticOptions)
    data: DataSpec = doc("the pairs (a data spec)")
    out: str = doc("output: critcore JSONL (.jsonl), or TRL's columns as a .parquet file or a save_to_disk folder "
                   "(no suffix); written atomically")


class Score(WithRM):
    """`critcore score`: the reward of one response, or of every pair of a file."""

    study: str = doc("study", "score")
    prompt: str | None = doc("the prompt", None)
    response: str | None = doc("the response", None)
    critique: str | None = doc("a critique to use instead of the recipe's critic", None)
    data: DataSpec | None = doc("score every pair of this data spec instead", None)
    out: str | None = doc("with data: the scored pairs as CSV", None)

    @model_validator(mode="after")
    def _score_rules(self):
        if self.data is None and (self.prompt is None or self.response is None):
            raise ConfigError("give --prompt and --response, or --data SPEC with --out FILE")
        if self.data is not None and not self.out:
            raise ConfigError("--data needs --out FILE (the scored pairs as CSV)")
        if self.data is None and not self.response.strip():
            raise ConfigError("--response is empty (data files skip such responses too)")
        return self


# ---------------------------------------------------------------- the registry: commands and studies


@dataclass(frozen=True)
class Study:
    """A study, as its module registers it: its schema (with its notebook), the checks a dry run
    makes beyond the schema (`checks(cfg, report)`, on loaded data, critics and backbones), and
    its projected wall time (`projection(cfg)`, text), each None when it has none."""

    schema: type
    checks: Callable | None = None
    projection: Callable | None = None


SCHEMAS: dict[str, type] = {"train": TrainJob, "evaluate": Evaluate, "critique": Critique, "score": Score}
STUDIES: dict[str, Study] = {}  # filled as critcore.studies imports the study modules


def register(schema: type, checks: Callable | None = None, projection: Callable | None = None) -> type:
    """Register a study (critcore/studies/<name>.py does, once): `critcore run` and the notebooks
    find it by the default of its `study` field."""
    name = schema.model_fields["study"].default
    STUDIES[name] = Study(schema, checks, projection)
    SCHEMAS[name] = schema
    return schema
