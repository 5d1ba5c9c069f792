"""Every benchmark in bench/ runs in its smoke mode, so a refactor cannot break one unnoticed.
Speed goals live in the benchmarks themselves, never here."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, *args: str, env: dict | None = None, stderr: bool = False) -> str:
    """The bench's stdout in its smoke mode (and its stderr after it, where the CPU line goes)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr if stderr else proc.stdout


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def written(out: str) -> dict:
    """The JSON a bench wrote, from its `wrote PATH` line."""
    return json.loads(Path(re.search(r"^wrote (\S+)", out, re.M).group(1)).read_text())


def test_adamw_fused_smoke():
    assert "ratio" in smoke("adamw_fused.py")


def test_critique_throughput_smoke(shared_data):
    out = smoke("critique_throughput.py")
    last = json.loads(out.strip().splitlines()[-1])
    assert set(last) == {"reference_tok_s", "fast_engine", "fast_tok_s", "ratio"}
    assert last["ratio"] >= 1.0  # the fast engine is never slower than the reference
    result = written(out)
    assert result["cpu"]["model"] and result["memory_gb_s"] > 0 and result["matmul_peak_gflops"]["float32"] > 0
    assert result["git"]["commit"] == head_commit()  # the code it measured
    stages = {(r["stage"], r["engine"]) for r in result["roofline"]}
    assert {("critique prefill", "transformers"), ("critique decode", "transformers")} <= stages
    assert all(0 < r["fraction"] for r in result["roofline"])
    assert result["quality"]["transformers"] == "pass"
    if not result["cpu"]["native_bf16"]:
        assert "transformers:bfloat16" in result["skipped"]


def test_critique_quality_smoke(shared_data):
    out = smoke("critique_quality.py")
    assert "critiques identical" in out
    verdict = written(out)["engines"]["transformers:qint8"]["verdict"]
    assert verdict.startswith("fail") and "no RM check" in verdict  # the smoke runs no quickstart


def test_train_throughput_smoke(shared_data):
    pytest.importorskip("trl", reason="TRL is the bench extra (pip install 'critcore[bench]')")
    out = smoke("train_throughput.py")
    assert "ratio critcore/trl" in out and "scoring" in out
    result = written(out)
    assert result["cpu"]["model"] and result["memory_gb_s"] > 0 and result["env"]["git"]["commit"] == head_commit()
    assert [r["stage"] for r in result["roofline"]] == ["training", "scoring"]
    assert all(0 < r["fraction"] and r["bound"] == "compute" for r in result["roofline"])
    training, mine = result["roofline"][0], [r for r in result["runs"] if r["side"] == "critcore"]
    assert all(r["peak_gflops"] > 0 for r in result["runs"])  # each timed run against a peak probed beside it
    assert len(training["fraction_runs"]) == len(mine) and training["fraction"] in training["fraction_runs"]
    assert training["bound_value"] in {f"{r['peak_gflops']} GFLOP/s" for r in mine}
    scoring = result["roofline"][1]  # each timed scoring round against a peak probed beside it
    assert len(result["scoring"]["rounds"]) == 1 and scoring["fraction_rounds"] == [scoring["fraction"]]
    assert scoring["bound_value"] == f"{result['scoring']['rounds'][0]['peak_gflops']} GFLOP/s"
    for row in training, scoring:  # one run, one round: the medians are that run's
        assert row["peak_spread"] == 0 and row["fraction_of_medians"] == row["fraction"]
    fast = "bf16" if result["cpu"]["native_bf16"] else "fp32"
    assert result["side_precision"] == {"critcore": fast, "trl": fast}  # --precision default: what is fast here
    assert ("emulated" in result["precision_note"]) != result["cpu"]["native_bf16"]
    assert {r["bf16"] for r in result["runs"]} == {fast == "bf16"}


def test_a_stage_says_how_far_its_probes_moved_and_its_fraction_of_the_medians():
    """Where the peak moves between probes, the median of per-run fractions and the median run
    against the median probe part: both are recorded, with the probes' spread."""
    spread = bench_module("train_throughput").probe_spread
    rounds = [{"seconds": 10.0, "peak_gflops": 100.0}, {"seconds": 11.0, "peak_gflops": 200.0},
              {"seconds": 12.0, "peak_gflops": 150.0}]
    row_of = lambda r: {"fraction": round(1000 / r["seconds"] / r["peak_gflops"], 3)}  # noqa: E731
    assert sorted(row_of(r)["fraction"] for r in rounds)[1] == 0.556  # the median of per-round fractions
    assert spread(row_of, rounds[1], [r["peak_gflops"] for r in rounds]) == {
        "peak_spread": 0.667, "fraction_of_medians": 0.606}  # (200 - 100) / 150; 11 s against 150
    assert spread(row_of, rounds[0], [200.0, 200.0])["peak_spread"] == 0


def test_train_throughput_skips_emulated_bf16(shared_data):
    """On a CPU without native bf16, --precision bf16 would run some 100x slower: both sides are
    skipped with the reason, and the bench still finishes (scoring, in fp32). A CPU with native
    bf16 runs as one without it under oneDNN's AVX2 cap, which the output names."""
    import os

    from critcore.hardware import native_bf16

    pytest.importorskip("trl", reason="TRL is the bench extra (pip install 'critcore[bench]')")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"} if native_bf16() else None
    out = smoke("train_throughput.py", "--precision", "bf16", env=env, stderr=True)
    result = written(out)
    assert "emulated" in result["skipped"] and result["runs"] == [] and "training skipped" in out
    assert [r["stage"] for r in result["roofline"]] == ["scoring"]
    assert result["cpu"]["native_bf16"] is False
    if env:
        assert result["cpu"]["isa_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "capped: ONEDNN_MAX_CPU_ISA=AVX2" in out


def test_train_throughput_scores_alone(shared_data):
    """--repeats 0 --no-warmup trains nothing and measures scoring alone (its fraction of the
    roofline, against a peak probed beside it)."""
    pytest.importorskip("trl", reason="TRL is the bench extra (pip install 'critcore[bench]')")
    out = smoke("train_throughput.py", "--repeats", "0", "--no-warmup")
    result = written(out)
    assert result["runs"] == [] and result["summary"] == {} and "ratio_runs" not in result
    assert [r["stage"] for r in result["roofline"]] == ["scoring"] and result["roofline"][0]["fraction"] > 0


def bench_module(name: str):
    """bench/<name>.py as a module."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "bench"))  # for the helpers it imports (roofline, loadmeter)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return bench


def test_the_flop_count_is_the_linear_weights_every_token_passes_through(tmp_path):
    """MiniLM (BERT): per layer the four attention projections and the two feed-forward ones; its
    position and token-type tables are looked up and its pooler sees one token per sequence, so
    they do not count (they did, as "all but the word embeddings": 10,993,153, 3.5% too many).
    A small Llama (grouped keys and values, untied head) saved to disk: its projections only."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    geometry = bench_module("train_throughput").geometry
    g = geometry("minilm")
    h, i, layers = 384, 1536, 6
    assert g["matmul_params"] == layers * (4 * h * h + 2 * h * i) == 10_616_832
    assert g["total"] > 2 * g["matmul_params"] and g["causal"] is False
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    g = geometry(str(tmp_path))
    kv = 2 * 16  # two key-value heads of 16
    assert g["matmul_params"] == 2 * (2 * 64 * 64 + 2 * 64 * kv + 3 * 64 * 96) and g["causal"] is True


def test_critique_throughput_counts_only_verdicts_of_this_kind_of_cpu(tmp_path):
    """A quality verdict taken on a CPU of the other kind (native bf16 or not) does not qualify an
    engine here; the fp32 reference always does; no file on record leaves only the reference."""
    bench = bench_module("critique_throughput")
    record = {"engines": {"ctranslate2:int8": {"verdict": "pass", "cpu": {"native_bf16": True}},
                          "transformers:qint8": {"verdict": "fail: 0.0% of texts identical", "cpu": {"native_bf16": False}}}}
    path = tmp_path / "critique_quality.json"
    path.write_text(json.dumps(record))
    here = bench.qualified(path, native_bf16=False)
    assert here["transformers"] == "pass" and here["transformers:qint8"].startswith("fail")
    assert here["ctranslate2:int8"] != "pass" and "other kind of CPU" in here["ctranslate2:int8"]
    assert bench.qualified(path, native_bf16=True)["ctranslate2:int8"] == "pass"
    assert bench.qualified(tmp_path / "missing.json", native_bf16=False) == {"transformers": "pass"}


@pytest.mark.slow
def test_the_prefill_clock_times_every_prompt_of_a_batch(shared_data):
    """The transformers engine's prompt pass: every prompt of the batch, in less than the whole
    generation. CTranslate2 gets no clock (its prompt pass overlaps its decoding: the first clock,
    stopped at its batch's first token, read prefill up to 2.1x the matmul peak), so no roofline
    row either."""
    import time

    bench = bench_module("critique_throughput")
    args = type("Args", (), {"data": str(ROOT.parent / "shared" / "data" / "mix" / "train.jsonl"), "items": 4,
                             "max_chars": 1200, "seed": 0})()
    texts = bench.load_items(args)
    backend = bench.backend_for("transformers", 4, 8)
    backend.complete(texts[:1], max_new_tokens=2)  # load and warm up, as the worker does
    clock = bench.PrefillClock(backend)
    start = time.perf_counter()
    backend.complete(texts)
    assert clock.prompts == 4 and 0 < clock.seconds < time.perf_counter() - start
    row = {"engine": "ctranslate2:float32", "batch": 4, "seconds": 10.0, "tokens": 8, "new_tokens": [2] * 4, "batches": [[0, 1, 2, 3]], "prompt_tokens": [100] * 4}
    machine = {"matmul_peak_gflops": {"float32": 100.0}, "memory_gb_s": 10.0}
    assert bench.roofline_of(row, bench.geometry(), machine) == []  # no clock, no split
    rows = bench.roofline_of({**row, "engine": "transformers", "prefill_seconds": 4.0}, bench.geometry(), machine)
    assert [r["stage"] for r in rows] == ["critique prefill", "critique decode"]


def test_distributed_smoke(shared_data):
    """Both sides (accelerate's 2 processes x 1 thread, plain python's 1 x 2) of both stages run
    and write the same critiques and scores."""
    out = smoke("distributed.py")
    result = written(out)
    assert result["cpu"]["model"] and set(result["stages"]) == {"critique", "scoring"}
    for stage in result["stages"].values():
        (round_,) = stage["rounds"]
        assert round_["same_output"] and set(round_["seconds"]) == {"1x2", "2x1"} and round_["ratio"] > 0
    assert result["stages"]["scoring"]["rounds"][0]["max_abs_diff"] <= 1e-4
