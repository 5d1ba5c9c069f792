"""One typed configuration: deep merges, YAML 1.2 numbers, unknown keys with the nearest name,
every params file and notebook on the same schema."""
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from critcore import config, studies  # noqa: F401 - studies registers the study schemas
from critcore.config import ConfigError, load, resolve

ROOT = Path(__file__).resolve().parents[1]
PARAMS = sorted((ROOT / "params").glob("*.yaml"))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_a_nested_block_merges_into_its_defaults(tmp_path):
    cfg = load(_write(tmp_path, "study: rq1\ntrain: {lr: 1e-4}\n"))
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_length == 256  # the rq1 default survives: the block merged, not replaced
    assert cfg.critic_options.max_new_tokens == 48
    # a free mapping given by a layer replaces the default one
    cfg = load(_write(tmp_path, "study: rq1\ncritics: {none: none, gemma: gemma3-270m}\n"))
    assert cfg.critics == {"none": "none", "gemma": "gemma3-270m"}


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    # PyYAML keeps the last of two equal keys, which here would drop lr: 1e-4 without a word
    path = _write(tmp_path, "study: rq1\ntrain:\n  lr: 1.0e-4\ntrain:\n  max_length: 128\n")
    assert yaml.safe_load(path.read_text())["train"] == {"max_length": 128}
    with pytest.raises(ConfigError, match=r"p\.yaml:4: .*key 'train' given twice in one mapping; first on line 2"):
        load(path)
    with pytest.raises(ConfigError, match=r"--set 'critics=\{a: none, a: smollm2\}'.*'a' given twice"):
        load(None, ["critics={a: none, a: smollm2}"], schema="rq1")
    with pytest.raises(ConfigError, match=r"--set 'train.lr=\[1': invalid YAML value"):
        load(None, ["train.lr=[1"], schema="rq1")
    assert load(_write(tmp_path, "study: rq1\ntrain: {lr: 1.0e-4}\ncritic_options: {max_new_tokens: 8}\n")).train.lr == 1e-4


def test_a_key_given_twice_on_the_command_line_is_an_error():
    # the flag and --set disagree: one of the two would be dropped without a word (--set won)
    with pytest.raises(ConfigError, match=r"'train.lr' is given twice on the command line, by a flag \(3e-05\) and by "
                                          r"--set \(2e-05\); give it once"):
        load(None, ["train.lr=2e-5"], {"train.lr": 3e-5, "train_data": "x.jsonl"}, schema="train")
    with pytest.raises(ConfigError, match=r"'seed' is given twice .* by --set \(1\) and by --set \(2\)"):
        load(None, ["seed=1", "seed=2"], schema="train")
    # the same value twice, and --set reaching into the spec a flag gave, are fine
    assert load(None, ["train.lr=3e-5"], {"train.lr": 3e-5, "train_data": "x.jsonl"}, schema="train").train.lr == 3e-5
    cfg = load(None, ["eval_data.pl.limit=300"], {"eval_data.pl": "pandalm:/x/testset.json", "model": "m"}, schema="evaluate")
    assert cfg.eval_data["pl"]["limit"] == 300


def test_numbers_are_yaml_1_2_and_coerced_to_their_types(tmp_path):
    path = _write(tmp_path, "study: rq1\ntrain: {lr: 1e-4, epochs: '2'}\nlr_sweep: [5e-5, 8e-5, 1.6e-4]\n"
                            "validation_data: v.jsonl\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-4"  # what PyYAML's YAML 1.1 does
    cfg = load(path)
    assert cfg.train.lr == 1e-4 and cfg.train.epochs == 2 and cfg.lr_sweep == [5e-5, 8e-5, 1.6e-4]
    cfg = load(None, ["train.lr=1e-4", "seeds=[0, 1, 2]"], schema="rq1")
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float) and cfg.seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="'train.lr'.*valid number.*'abc'"):
        load(None, ["train.lr=abc"], schema="rq1")
    with pytest.raises(ConfigError, match="'train.epochs'.*integer"):
        load(None, ["train.epochs=1.5"], schema="rq1")


# pydantic's lax mode reads true as 1: `lr: true` trained at 1.0 and `max_new_tokens: yes` cut
# every critique to one token, without a word
@pytest.mark.parametrize("text, sets, needle", [
    ("study: rq1\ntrain: {lr: true}\n", [], r"p\.yaml: 'train.lr': expected a number, got a boolean \(true\)"),
    ("study: quickstart\ncritic_options: {max_new_tokens: yes}\n", [], r"'critic_options.max_new_tokens': expected a number"),
    ("study: rq1\nbackbones: [minilm, {name: m, backbone: minilm, n_train: false}]\n", [],
     r"'backbones\[1\].n_train': expected a number, got a boolean \(false\)"),
    ("study: rq1\n", ["seeds=[0, true]"], r"'seeds\[1\]': expected a number"),
])
def test_a_boolean_is_never_read_as_a_number(tmp_path, text, sets, needle):
    with pytest.raises(ConfigError, match=needle):
        load(_write(tmp_path, text), sets)
    cfg = load(_write(tmp_path, "study: rq1\ntrain: {with_critiques: false}\nprogress: no\n"))  # booleans stay
    assert cfg.train.with_critiques is False and cfg.progress is False


def test_unknown_keys_name_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"p\.yaml: unknown key 'backbone_'; did you mean 'backbone'\?"):
        load(_write(tmp_path, "backbone_: minilm\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'; did you mean 'train.lr'\?"):
        load(_write(tmp_path, "study: rq2\ntrain: {lrr: 1}\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'backbones\[0\].n_trian'; did you mean 'backbones\[0\].n_train'"):
        load(_write(tmp_path, "study: rq1\nbackbones: [{name: m, n_trian: 3}]\n"))
    with pytest.raises(ConfigError, match=r"--set: unknown key 'critic_options.max_new_token'"):
        load(None, ["critic_options.max_new_token=3"], schema="rq1")
    with pytest.raises(ConfigError, match="unknown study 'rq9'"):
        load(_write(tmp_path, "study: rq9\n"))
    with pytest.raises(ConfigError, match="train.backbone.*top-level `backbones`"):
        load(_write(tmp_path, "study: rq1\ntrain: {backbone: smollm2}\n"))
    with pytest.raises(ConfigError, match="'eval_data.pl': unknown format 'csv'"):
        load(_write(tmp_path, "study: rq1\neval_data: {pl: {format: csv, path: x}}\n"))
    with pytest.raises(ConfigError, match="'critics.bad'.*simulated"):
        load(_write(tmp_path, "study: rq1\ncritics: {bad: 'simulated:x'}\n"))


@pytest.mark.parametrize("key, value, needle", [
    ("lr", 0, "train.lr must be positive, got 0"), ("lr", -1e-4, "train.lr must be positive"),
    ("epochs", 0, "train.epochs must be positive"), ("max_length", 0, "train.max_length must be positive"),
    ("micro_batch_size", 0, "train.micro_batch_size must be positive"), ("batch_size", 30, "not a multiple of"),
    ("warmup_ratio", 1.0, "train.warmup_ratio must be in [0, 1)"), ("min_lr_ratio", 1.5, "train.min_lr_ratio must be in [0, 1]"),
    ("weight_decay", -0.1, "train.weight_decay must be at least 0"), ("max_grad_norm", -1, "max_grad_norm must be at least 0"),
    ("save_every", -1, "save_every must be at least 0"), ("eval_batch_size", 0, "eval_batch_size must be positive"),
    ("threads", 0, "train.threads must be positive or null"), ("margin", "foo", "'train.margin': unknown margin preset"),
])
def test_training_options_that_would_train_nothing_or_else_are_refused(key, value, needle):
    """Each of these trained (lr 0, max_length 0, warmup past the end: a result, and no error) or
    died in a traceback (a zero micro-batch, a negative weight decay). Every way in is checked:
    a params layer, --set, and TrainConfig in Python."""
    from critcore.train import TrainConfig

    with pytest.raises(ConfigError, match=re.escape(needle)):
        resolve(config.SCHEMAS["train"], {"train_data": "x.jsonl", "train": {key: value}})
    with pytest.raises(ConfigError, match=re.escape(needle)):
        resolve(config.SCHEMAS["rq1"], {}, sets=[f"train.{key}={value}"])
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TrainConfig(**{key: value})
    assert TrainConfig(max_grad_norm=0, save_every=0, threads=None).max_grad_norm == 0  # 0: no clipping, no checkpoints


@pytest.mark.parametrize("schema, raw, needle", [
    ("rq1", {"n_boot": 0}, "n_boot must be at least 1, got 0"), ("rq1", {"seed": -1}, "seed must be at least 0"),
    ("train", {"threads": 0}, "threads must be positive, null or auto, got 0"),
    ("evaluate", {"batch_size": 0}, "batch_size must be positive"), ("score", {"max_length": 0}, "max_length must be positive"),
    ("quickstart", {"n_train": 0}, "n_train must be positive"),
    ("rq2", {"sizes": [8, 4]}, "sizes must be strictly increasing"),
])
def test_study_checks_run_on_every_way_in(schema, raw, needle):
    """A schema's checks run when it is built, so a notebook run by papermill (no dry run first)
    refuses them as `critcore run` does."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        resolve(config.SCHEMAS[schema], raw)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        config.SCHEMAS[schema](**raw)


def test_set_reaches_into_a_string_spec_and_flags_come_before_set():
    cfg = load(None, ["eval_data.pl.limit=300"], {"eval_data.pl": "pandalm:/x/testset.json", "model": "m"}, schema="evaluate")
    assert cfg.eval_data["pl"] == {"format": "pandalm", "path": "/x/testset.json", "limit": 300}
    cfg = load(None, ["train_data.seed=4"], {"train_data": "/x/a:b.jsonl", "train_data.limit": 10}, schema="train")
    assert cfg.train_data == {"format": "jsonl", "path": "/x/a:b.jsonl", "limit": 10, "seed": 4}


def test_config_command_prints_the_resolved_configuration(capsys):
    from critcore.cli import main

    assert main(["config", str(ROOT / "params" / "rq1_cpu.yaml"), "--set", "train.lr=1e-4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 1e-4 and printed["train"]["max_length"] == 256
    assert printed["critics"] == {"none": "none", "smollm2": "smollm2", "gemma3-270m": "gemma3-270m"}
    assert "${data}" not in str(printed) and printed["eval_data"]["pandalm"]["path"].endswith("pandalm/testset-v1.json")
    # what it prints resolves to itself: the same object run.json records and notebooks receive
    assert config.to_dict(resolve(config.SCHEMAS["rq1"], printed)) == printed


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_every_params_file_resolves(path):
    cfg = load(path)
    assert config.to_dict(resolve(type(cfg), config.to_dict(cfg))) == config.to_dict(cfg)


@pytest.mark.parametrize("study", config.STUDIES)
def test_notebook_parameters_cells_mirror_the_schema(study):
    """Each notebook's `parameters` cell lists exactly the schema's keys with its defaults (run
    `make notebook-parameters` after changing a schema)."""
    nb = nbformat.read(ROOT / config.SCHEMAS[study]().notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == config.parameters_cell(study)
    namespace: dict = {}
    exec(cell.source, namespace)  # noqa: S102 - our own notebook
    declared = {k: v for k, v in namespace.items() if not k.startswith("__")}
    assert declared == config.defaults(config.SCHEMAS[study])
    assert all(config.docs(config.SCHEMAS[study]).values())  # every key documented
