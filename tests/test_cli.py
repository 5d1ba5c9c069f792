"""The command line, run as a user runs it: a real subprocess, real data, the real MiniLM. Stdout
carries only the result (JSON), user errors are one line with exit code 2, and a reward model
carries its recipe: scoring it without its critic is an error."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest


CLI = [sys.executable, "-m", "critcore.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None, env=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **(env or {})})


def one_line_error(out, *needles):
    """A user error: exit 2, one line on stderr naming what is wrong, no traceback, nothing on stdout."""
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("critcore ")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(lines) == 1 and not out.stdout.strip(), out.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_help_lists_every_command_and_every_option_has_help(capsys):
    from critcore.cli import build_parser, main

    out = run("--help")  # one real process; the rest in this one
    assert out.returncode == 0
    for command in ("train", "evaluate", "score", "critique", "run", "config", "demo"):
        assert command in out.stdout
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0 and command in capsys.readouterr().out

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"critcore {name} {action.option_strings or action.dest} has no help"
    critic_help = sub.choices["train"]._option_string_actions["--critic"].help
    assert "simulated:P" in critic_help and "backend" in critic_help  # --critic lists its forms
    assert "seeded random sample" in sub.choices["critique"]._option_string_actions["--limit"].help


def test_user_errors_are_one_line_and_write_nothing(tmp_path, shared_data):
    out_dir = tmp_path / "o"
    one_line_error(run("train", "--train", "nosuchformat:x.jsonl", "--out", out_dir), "unknown format 'nosuchformat'")
    one_line_error(run("train", "--train", "jsonl:", "--out", out_dir), "empty path")
    one_line_error(run("train", "--train", tmp_path, "--out", out_dir), "is a directory")
    one_line_error(run("train", "--train", tmp_path / "missing.jsonl", "--out", out_dir), "missing.jsonl", "no such file")
    params = tmp_path / "p.yaml"
    params.write_text("train_data: {format: jsonl, path: x.jsonl}\nbackbone_: minilm\n")
    one_line_error(run("train", params), "unknown key 'backbone_'", "did you mean 'backbone'")
    params.write_text(f"train_data: {shared_data}/mix/train.jsonl\ntrain: {{lrr: 1}}\n")
    one_line_error(run("train", params, "--out", out_dir), "'train.lrr'", "did you mean 'train.lr'")
    one_line_error(run("train", "--set", "novalue"), "key=value")
    one_line_error(run("score", "--model", tmp_path), "--prompt")
    one_line_error(run("train", "--train", f"{shared_data}/mix/train.jsonl", "--lr-sweep", "1e-4,2e-4x", "--out", out_dir),
                   "--lr-sweep", "comma-separated numbers", "'1e-4,2e-4x'")  # was a traceback
    one_line_error(run("train", "--train", f"{shared_data}/mix/train.jsonl", "--lr", "3e-5", "--set", "train.lr=2e-5",
                       "--out", out_dir), "'train.lr' is given twice", "by a flag (3e-05)", "by --set (2e-05)")
    one_line_error(run("run", "params/quick.yaml", "--set", "seed=1", "--set", "seed=2", "--dry-run", cwd=ROOT),
                   "'seed' is given twice", "by --set (1) and by --set (2)")  # critcore run resolves on its own path
    assert not out_dir.exists()


def test_unusable_cache_and_output_paths_are_one_line_errors(tmp_path, shared_data):
    """A cache file that is no SQLite database, a cache under a file, a cache that is a folder and
    an --out that is a folder: one line naming the path, exit 2, and nothing changed or left behind."""
    data = tmp_path / "in.jsonl"
    data.write_text(Path(f"{shared_data}/mix/validation.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(bytes(range(256)) * 20)
    folder = tmp_path / "folder"
    folder.mkdir()
    kept = tmp_path / "kept"  # a folder that holds something: --out there would replace it whole
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    cases = [(garbage, tmp_path / "o.jsonl", ["garbage.sqlite", "cannot be used as the critique cache", "not a database"]),
             (data / "c.sqlite", tmp_path / "o.jsonl", ["in.jsonl is a file, not a folder"]),
             (folder, tmp_path / "o.jsonl", ["folder: cannot be used as the critique cache"]),
             (tmp_path / "c.sqlite", kept, ["is a folder, not a file", "kept", "holds no saved dataset"])]
    for cache, out, needles in cases:
        one_line_error(run("critique", "--critic", "simulated:0.9", "--data", data, "--out", out, "--cache", cache),
                       *needles)
    assert garbage.read_bytes() == bytes(range(256)) * 20 and not list(folder.iterdir())
    assert [f.name for f in kept.iterdir()] == ["notes.txt"] and (kept / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".*.tmp"))
    # a run folder that is a file, and a params "file" that is a folder
    one_line_error(run("train", "--critic", "none", "--train", data, "--out", data, "--cache", tmp_path / "c.sqlite"),
                   "in.jsonl: a file, not a folder")
    one_line_error(run("run", "params/quick.yaml", "--set", f"out_dir={data}", "--dry-run", cwd=ROOT),
                   "in.jsonl: a file, not a folder")
    one_line_error(run("run", folder), "folder: a folder, not a params file")
    # a run id names one folder under outputs/<study>/: '../..' would write outside it
    one_line_error(run("train", "--critic", "none", "--train", data, "--run-id", "../../escaped", cwd=tmp_path,
                       env={"CRITCORE_OUTPUTS": str(tmp_path / "outs")}), "run_id '../../escaped'", "e.g. 'escaped'")
    one_line_error(run("run", "params/quick.yaml", "--run-id", "a/b", "--dry-run", cwd=ROOT), "--run-id", "'a/b'")
    # an evaluation set's name names its files: '../../evil' would write outside the run folder
    one_line_error(run("evaluate", "--model", tmp_path / "no-model", "--data", f"../../evil={data}", "--out",
                       tmp_path / "ev"), "--data: eval set name '../../evil'")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "outs").exists()
    assert data.read_text(encoding="utf-8").count("\n") == 1


def test_unknown_names_fail_fast(tmp_path, shared_data):
    for args, needle in ((["train", "--backbone", "minilmx", "--train", f"{shared_data}/mix/validation.jsonl"], "minilmx"),
                         (["train", "--critic", "smolm2", "--train", f"{shared_data}/mix/validation.jsonl"], "smolm2"),
                         (["score", "--model", tmp_path / "no-model", "--prompt", "p", "--response", "r"], "no-model")):
        started = time.monotonic()
        line = one_line_error(run(*args, "--out", tmp_path / "o"), needle)
        assert time.monotonic() - started < 120  # fails fast (no model load, no hub retries); generous for a loaded machine
        assert "minilm, smollm2, gemma3-270m" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_path_alone_evaluate_score_and_the_recipe(tmp_path, shared_data):
    cache = tmp_path / "c.sqlite"
    # --train PATH alone (no format, no --limit): the validation split is small enough
    res = run("train", "--train", f"{shared_data}/mix/validation.jsonl", "--limit", 16, "--out", tmp_path / "plain",
              "--max-length", 64, "--set", "train.batch_size=8", "--set", "train.micro_batch_size=8", "--quiet",
              "--cache", cache)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["critic"] == "none"  # stdout is one JSON object, nothing else
    plain = tmp_path / "plain" / "train" / "model"
    recipe = json.loads((plain / "critcore_recipe.json").read_text())  # the data carried no critiques
    assert recipe["critic"] is None and recipe["with_critiques"] is False
    assert [json.loads(r)["step"] for r in (tmp_path / "plain" / "train" / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    # a critique RM: its recipe names the critic, and the critiques land in the shared cache
    res = run("train", "--train", f"{shared_data}/mix/validation.jsonl", "--limit", 16, "--out", tmp_path / "crit",
              "--critic", "simulated:0.9", "--max-length", 64, "--set", "train.batch_size=8",
              "--set", "train.micro_batch_size=8", "--quiet", "--cache", cache)
    assert res.returncode == 0, res.stderr[-2000:]
    crit = tmp_path / "crit" / "train" / "model"
    recipe = json.loads((crit / "critcore_recipe.json").read_text())
    assert recipe["critic"]["identity"] == "simulated(p=0.9,seed=0)" and recipe["max_length"] == 64
    assert recipe["critic"]["source"] == "critic" and recipe["train_data"]["pairs"] == 16 and recipe["with_critiques"]
    assert json.loads((tmp_path / "crit" / "run.json").read_text())["config"]["critique_cache"] == str(cache)

    # evaluate takes the critic and max_length from the recipe; both PandaLM policies from one load
    pl = f"pandalm:{shared_data}/pandalm/testset-v1.json"
    res = run("evaluate", "--model", crit, "--data", f"pl={pl}", "--set", "eval_data.pl.limit=40", "--out",
              tmp_path / "ev", "--quiet", "--cache", cache)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["critic"] == "simulated(p=0.9,seed=0)"
    policies = summary["pl"]["pandalm"]
    assert policies["wrong"]["n"] == 40 and policies["drop"]["n"] == 40 - summary["pl"]["n_ties"]
    assert summary["pl"]["n_ties"] > 0
    from huggingface_hub import ModelCard

    results = ModelCard.load(crit / "README.md").data.eval_results  # evaluate put its numbers into the card
    assert {(r.dataset_name, r.metric_name): r.metric_value for r in results}[("pl", "accuracy (ties dropped)")] \
        == round(policies["drop"]["acc"], 4)
    scores = pd.read_csv(tmp_path / "ev" / "pl_scores.csv")  # one row per pair, with its texts and critiques
    assert len(scores) == 40 and scores.chosen_critique.notna().all() and set(scores.verdict) <= {"right", "wrong"}

    # scoring a critique RM without its critic, or with another, is an error naming both
    line = one_line_error(run("evaluate", "--model", crit, "--data", f"pl={pl}", "--critic", "none", "--out",
                              tmp_path / "ev2", "--cache", cache), "simulated(p=0.9,seed=0)", "without critiques")
    print(line)
    one_line_error(run("evaluate", "--model", crit, "--data", f"pl={pl}", "--critic", "simulated:0.5",
                       "--out", tmp_path / "ev2", "--cache", cache), "simulated(p=0.5,seed=0)", "--allow-critic-mismatch")
    assert not (tmp_path / "ev2").exists()
    # an unusable cache or a damaged sections file fails before the run folder exists
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database" * 100)
    (tmp_path / "sections.json").write_text('{"chat": 3}')
    one_line_error(run("evaluate", "--model", crit, "--data", f"pl={pl}", "--out", tmp_path / "ev2", "--cache",
                       tmp_path / "garbage.sqlite"), "garbage.sqlite", "critique cache")
    one_line_error(run("evaluate", "--model", crit, "--data", f"pl={pl}", "--out", tmp_path / "ev2", "--cache", cache,
                       "--set", f"sections={tmp_path / 'sections.json'}"), "sections.json", "'chat'")
    assert not (tmp_path / "ev2").exists()
    res = run("evaluate", "--model", crit, "--data", f"pl={pl}", "--set", "eval_data.pl.limit=8", "--critic",
              "simulated:0.5", "--allow-critic-mismatch", "--out", tmp_path / "ev3", "--quiet", "--cache", cache)
    assert res.returncode == 0 and json.loads(res.stdout)["critic"] == "simulated(p=0.5,seed=0)"

    # score: the recipe's critic writes the critique (here it cannot: it needs labels), or one is given
    one_line_error(run("score", "--model", crit, "--prompt", "What is 2+2?", "--response", "4", "--cache", cache),
                   "needs to know which response is preferred")
    a = json.loads(run("score", "--model", crit, "--prompt", "What is 2+2?", "--response", "4", "--critique",
                       "Correct.").stdout)
    b = json.loads(run("score", "--model", crit, "--prompt", "What is 2+2?", "--response", "4", "--critique",
                       "Wrong.").stdout)
    assert a["critique"] == "Correct." and a["reward"] != b["reward"]  # the critique is part of the input
    c = json.loads(run("score", "--model", plain, "--prompt", "What is 2+2?", "--response", "4").stdout)
    assert c["critique"] is None and isinstance(c["reward"], float)
    one_line_error(run("score", "--model", plain, "--prompt", "p", "--response", "r", "--critique", "x"),
                   "trained without critiques")
    one_line_error(run("score", "--model", plain, "--prompt", "p", "--response", " "), "--response is empty")


def test_train_critic_fills_the_shared_cache_and_a_rerun_generates_nothing(tmp_path, shared_data):
    env = {"CRITCORE_CACHE": str(tmp_path / "cache")}
    common = ["train", "--train", f"{shared_data}/mix/validation.jsonl", "--limit", 8, "--critic", "simulated:0.7",
              "--max-length", 48, "--set", "train.batch_size=8", "--quiet"]
    first = run(*common, "--out", tmp_path / "a", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["critique_cache"]["path"] == str((tmp_path / "cache" / "critiques.sqlite").resolve())
    assert record["critique_cache"]["generated"] == 16 and record["critique_cache"]["records"] == 16
    second = run(*common, "--out", tmp_path / "b", "--lr", 1e-4, env=env)  # another RM, same critiques
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["critique_cache"]["generated"] == 0 and record["critique_cache"]["hits"] == 16
    assert record["config"]["train"]["lr"] == 1e-4


def test_evaluate_warns_of_pairs_the_model_was_trained_on(tmp_path):
    """A saved RM's recipe carries short hashes of its training prompts and pairs, so `critcore
    evaluate` on a set that holds training pairs warns and records how many ("overlap" in
    summary.json and run.json); a disjoint set says nothing. No training text is kept."""
    from critcore.data import write_pairs
    from critcore.loaders import load_generated
    from critcore.train import TrainConfig, TrainingWarning, train

    pairs = load_generated(12, split="train").pairs
    with pytest.warns(TrainingWarning, match="3 optimizer step"):  # a tiny model is all this needs
        train(TrainConfig(max_length=32, batch_size=4, micro_batch_size=4, with_critiques=False), pairs,
              out_dir=tmp_path / "rm", progress=False)
    recipe = json.loads((tmp_path / "rm" / "model" / "critcore_recipe.json").read_text())
    assert len(recipe["train_data"]["pair_keys"].split()) == 12
    assert pairs[0].chosen not in json.dumps(recipe)
    leaky = load_generated(24, split="train").pairs  # the 12 training pairs and 12 others
    write_pairs(tmp_path / "leaky.jsonl", leaky)
    res = run("evaluate", "--model", tmp_path / "rm" / "model", "--data", f"leaky={tmp_path / 'leaky.jsonl'}",
              "--data", 'test={"format": "generated", "n": 8, "split": "test"}', "--out", tmp_path / "ev", "--quiet", "--cache", tmp_path / "c.sqlite")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OverlapWarning: held-out pairs share their prompt with training pairs" in res.stderr
    seen = json.loads((tmp_path / "ev" / "summary.json").read_text())["overlap"]
    assert list(seen) == ["leaky"] and seen["leaky"]["of"] == 24 and seen["leaky"]["same_pair"] == 12
    assert 12 <= seen["leaky"]["same_prompt"] <= 24
    assert json.loads((tmp_path / "ev" / "run.json").read_text())["overlap"] == seen
    res = run("score", "--model", tmp_path / "rm" / "model", "--data", tmp_path / "leaky.jsonl", "--out",
              tmp_path / "scores.csv", "--quiet", "--cache", tmp_path / "c.sqlite")
    assert res.returncode == 0 and "OverlapWarning: pairs the model was trained on" in res.stderr, res.stderr[-2000:]
