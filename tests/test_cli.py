"""The command line, run as a user runs it: a real subprocess, real data, the real MiniLM."""
import json
import subprocess
import sys


CLI = [sys.executable, "-m", "critcore.cli"]


def run(*args, cwd=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("train", "evaluate", "score", "critique", "run", "demo"):
        assert command in out.stdout
    for command in ("train", "evaluate", "score", "critique"):
        assert run(command, "--help").returncode == 0


def test_bad_arguments_get_clear_messages(tmp_path):
    out = run("score", "--model", str(tmp_path))
    assert out.returncode == 2 and "--prompt" in out.stderr
    out = run("train", "--train", "nosuchformat:x.jsonl", "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "unknown format 'nosuchformat'" in out.stderr
    params = tmp_path / "p.yaml"
    params.write_text("train_data: {format: jsonl, path: x.jsonl}\nout: o\ntrain: {lrr: 1}\n")
    out = run("train", str(params))
    assert out.returncode == 2 and "lrr" in out.stderr
    out = run("train", "--set", "novalue")
    assert out.returncode != 0 and "key=value" in out.stderr


def test_bad_record_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"id": "a", "prompt": "p", "chosen": "x", "rejected": "y"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "rating": "way better"}) + "\n")
    out = run("train", "--train", f"jsonl:{bad}", "--out", str(tmp_path / "o"))
    # load_jsonl raises on an unknown rating (only empty/identical responses are counted skips)
    assert out.returncode == 2
    assert f"{bad}:2" in out.stderr and "rating" in out.stderr


def test_train_evaluate_score_end_to_end(tmp_path, shared_data):
    out_dir = tmp_path / "run"
    res = run("train", "--backbone", "minilm", "--train", f"jsonl:{shared_data}/mix/train.jsonl", "--limit", "16",
              "--out", str(out_dir), "--max-length", "64", "--set", "train.micro_batch_size=8",
              "--set", "train.batch_size=8", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    model = out_dir / "train" / "model"
    assert (model / "model.safetensors").exists()
    rows = [json.loads(line) for line in (out_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss", "accuracy", "lr", "pairs_per_s"} <= set(rows[0])

    params = tmp_path / "eval.yaml"
    params.write_text("eval_data:\n  pl: {format: pandalm, path: '${data}/pandalm/testset-v1.json', tie_policy: wrong, limit: 12}\n")
    res = run("evaluate", str(params), "--model", str(model), "--out", str(tmp_path / "ev"), "--max-length", "64")
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["pl"]["n"] == 12
    assert set(summary["pl"]["pandalm"]) == {"drop", "wrong"}
    scores = (tmp_path / "ev" / "pl_scores.csv").read_text().splitlines()
    assert scores[0].startswith("id,subset") and len(scores) == 13

    a = run("score", "--model", str(model), "--prompt", "What is 2+2?", "--response", "4")
    b = run("score", "--model", str(model), "--prompt", "What is 2+2?", "--response", "4", "--critique", "Correct.")
    assert a.returncode == 0 and b.returncode == 0
    assert float(a.stdout) != float(b.stdout)  # the critique is part of the input
