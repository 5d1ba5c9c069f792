"""Several processes (`accelerate launch`, over gloo on the CPU) do each stage's work once in total
and give what one process gives: critcore.distributed's split and gather keep item order, scoring
shards the pairs and gathers the rewards in pair order, a local critic generates each critique
once (a server critic is asked by the main process alone), and training reduces its metrics over
the processes and writes its run once. The processes run tests/launched.py or the CLI."""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critcore import distributed

ROOT = Path(__file__).resolve().parents[1]
LAUNCHED = Path(__file__).with_name("launched.py")
CPU_CONFIG = ROOT / "configs" / "accelerate" / "cpu.yaml"  # 2 processes (torchrun's launcher); gloo on the CPU


# --- one process, and the order of shares ---------------------------------------------------------

def test_one_process_needs_no_launcher_and_starts_nothing():
    """Plain python: one process, the main one; every function answers without importing
    accelerate (or torch), so a stage pays nothing for knowing the process group."""
    code = ("import sys, json; from critcore import distributed as d; "
            "out = [d.world(), d.rank(), d.is_main(), d.split([5, 6, 7]), d.gather([1, 2]), d.total([2, 0.5]), "
            "d.all_gather('x'), d.from_main('y'), d.barrier()]; "
            "print(json.dumps([out, 'accelerate' in sys.modules, 'torch' in sys.modules]))")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out, accelerate_loaded, torch_loaded = json.loads(res.stdout)
    assert out == [1, 0, True, [5, 6, 7], [1, 2], [2, 0.5], ["x"], "y", None]
    assert not accelerate_loaded and not torch_loaded


@pytest.mark.parametrize("n_items", [0, 1, 2, 10, 11])
def test_shares_cover_every_item_once_and_gather_restores_item_order(monkeypatch, n_items):
    """Three simulated processes: their shares partition the items, differ in size by at most one,
    spread a sorted list's long items evenly, and the gathered results come back in item order."""
    items = [f"item{i}" for i in range(n_items)]
    world = 3
    monkeypatch.setattr(distributed, "world", lambda: world)
    shares = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.split(items))
    assert sorted(x for share in shares for x in share) == sorted(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    results = [[x.upper() for x in share] for share in shares]  # each process's results of its share
    monkeypatch.setattr(distributed, "all_gather", lambda mine: results)
    assert distributed.gather(results[0]) == [x.upper() for x in items]
    monkeypatch.setattr(distributed, "all_gather", lambda mine: [[1, 0.5], [2, 0.25], [0, 0.0]])
    assert distributed.total([1, 0.5]) == [3, 0.75]


# --- several processes, launched -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}


def launch_cmd(*args, processes: int = 2, module: bool = False) -> list[str]:
    """`accelerate launch` with configs/accelerate/cpu.yaml of tests/launched.py, or of a module
    (-m), on a free port, on the CPU (ACCELERATE_USE_CPU, _env); processes=1 runs it under plain
    python instead."""
    target = ["-m", *args] if module else [str(LAUNCHED), *args]
    if processes == 1:
        return [str(a) for a in (sys.executable, *target)]
    return [str(a) for a in (sys.executable, "-m", "accelerate.commands.launch", "--config_file", CPU_CONFIG,
                             "--num_processes", processes, "--main_process_port", _free_port(), *target)]


def launch(*args, processes: int = 2, module: bool = False, timeout: int = 1800, **env: str) -> subprocess.CompletedProcess:
    res = subprocess.run(launch_cmd(*args, processes=processes, module=module), capture_output=True, text=True,
                         env={**_env(), **env}, cwd=ROOT, timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def ranks(out: Path) -> list[dict]:
    found = sorted(out.glob("rank-*.json"))
    return [json.loads(p.read_text()) for p in found]


def test_a_study_refuses_a_launcher_before_it_reads_anything(monkeypatch, tmp_path):
    """A study notebook's kernel cannot join the process group: under a launcher `run_study` stops
    at once, before the params are read or a run folder is made."""
    from critcore.errors import ConfigError
    from critcore.studies.runner import run_study

    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate launch, torchrun and mpirun set
    with pytest.raises(ConfigError, match=r"quick\.yaml: a study runs as one process, not under a launcher.*critcore train"):
        run_study(ROOT / "params" / "quick.yaml", run_id="launched", out_root=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_critcore_run_under_accelerate_launch_exits_2(tmp_path):
    res = subprocess.run(launch_cmd("critcore.cli", "run", "params/quick.yaml", "--run-id", "launched", module=True),
                         capture_output=True, text=True, env={**_env(), "CRITCORE_OUTPUTS": str(tmp_path)}, cwd=ROOT,
                         timeout=600)
    assert res.returncode != 0
    assert "a study runs as one process, not under a launcher" in res.stderr, res.stderr[-3000:]
    assert "exitcode  : 2 " in res.stderr  # torchrun's report of the first process to stop; it stops the other
    assert f"{ROOT / 'critcore'}/" not in res.stderr  # no traceback through critcore's files (torchrun prints its own)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_two_processes_share_items_and_gather_them_in_order(tmp_path):
    launch("gather", tmp_path)
    r0, r1 = ranks(tmp_path)
    assert (r0["rank"], r0["world"], r0["is_main"]) == (0, 2, True)
    assert (r1["rank"], r1["world"], r1["is_main"]) == (1, 2, False)
    assert r0["mine"] == [0, 2, 4, 6, 8, 10] and r1["mine"] == [1, 3, 5, 7, 9]
    assert r0["squares"] == r1["squares"] == [i * i for i in range(11)]
    assert r0["totals"] == r1["totals"] == [11, 1.0]
    assert r0["ranks"] == r1["ranks"] == [0, 1]
    assert r0["main"] == r1["main"] == "from 0"


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    """A saved MiniLM RM (seeded fresh head), 30 generated pairs, and their scores from one
    process (batch 8) and from two (batch 3)."""
    from transformers import set_seed

    from critcore.data import write_pairs
    from critcore.generated import generated_pairs
    from critcore.model import RewardModel

    work = tmp_path_factory.mktemp("scoring")
    set_seed(0)
    RewardModel.load("minilm").save(work / "rm")
    write_pairs(work / "pairs.jsonl", generated_pairs(30, split="test"))
    launch("score", work / "rm", work / "pairs.jsonl", work / "one", 8, processes=1)
    launch("score", work / "rm", work / "pairs.jsonl", work / "two", 3)
    return work


@pytest.mark.slow
def test_two_processes_score_as_one_each_pair_once(scoring):
    (one,), (r0, r1) = ranks(scoring / "one"), ranks(scoring / "two")
    for r in (r0, r1):  # every process has every score, in pair order
        assert r["ids"] == one["ids"]
        diff = max(abs(a - b) for key in ("chosen", "rejected") for a, b in zip(r[key], one[key]))
        assert diff <= 1e-4, diff
        assert r["overall"] == one["overall"]
    # Each forward row is one side of one pair: 2 sides x 30 pairs, twice (score_pairs, then evaluate),
    # done once in total and shared between the processes.
    assert one["rows"] == 2 * 2 * 30
    assert r0["rows"] + r1["rows"] == 2 * 2 * 30 and r0["rows"] > 0 and r1["rows"] > 0
    # batch_size is over all processes: each scores its share of each batch of 3 (2 rows at most)
    assert one["largest_batch"] == 8 and r0["largest_batch"] == r1["largest_batch"] == 2
    # The main process wrote the report, once: the same table one process writes.
    import pandas as pd

    a, b = pd.read_csv(scoring / "one" / "eval" / "test_scores.csv"), pd.read_csv(scoring / "two" / "eval" / "test_scores.csv")
    assert list(a["id"]) == list(b["id"]) and (a["score_chosen"] - b["score_chosen"]).abs().max() <= 1e-4
    assert sorted(p.name for p in (scoring / "two" / "eval").iterdir()) == ["summary.json", "test_report.html",
                                                                          "test_scores.csv"]


LOCAL_CRITIC = {"backend": "local", "model": "smollm2", "max_new_tokens": 8, "dtype": "float32", "batch_size": 4}


def _rows(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT COUNT(*) FROM critiques").fetchone()[0]


@pytest.fixture(scope="module")
def critique_pairs(tmp_path_factory):
    from critcore.data import write_pairs
    from critcore.generated import generated_pairs

    path = tmp_path_factory.mktemp("critique") / "pairs.jsonl"
    write_pairs(path, generated_pairs(5, split="validation"))  # 10 responses, all different
    return path


@pytest.mark.slow
def test_local_critic_writes_each_critique_once_from_its_share(tmp_path, critique_pairs):
    spec = json.dumps(LOCAL_CRITIC)
    cache = tmp_path / "cache.sqlite"
    # an empty model cache: one of the two processes dequantizes the GGUF while the other waits
    # (transformers' save_pretrained would write no weights from rank 1)
    launch("critique", spec, critique_pairs, cache, tmp_path / "two", CRITCORE_CACHE=str(tmp_path / "models"))
    assert len(list((tmp_path / "models" / "dequantized").glob("*/model.safetensors"))) == 1
    r0, r1 = ranks(tmp_path / "two")
    assert r0["asked"] + r1["asked"] == 10 and r0["asked"] == r1["asked"] == 5  # each item generated once
    assert r0["batches"] == r1["batches"] == [2, 2, 1]  # its share of each batch of 4
    assert _rows(cache) == 10
    for r in (r0, r1):  # the cache statistics count the group's inserts
        assert r["stats"]["generated"] == 10 and r["stats"]["misses"] == 10
    assert r0["critiques"] == r1["critiques"] and all(c and r for c, r in r0["critiques"])

    launch("critique", spec, critique_pairs, tmp_path / "alone.sqlite", tmp_path / "one", processes=1)
    (one,) = ranks(tmp_path / "one")
    assert one["asked"] == 10 and one["batches"] == [4, 4, 2] and one["critiques"] == r0["critiques"]  # greedy fp32: what one process writes

    launch("critique", spec, critique_pairs, cache, tmp_path / "again")  # everything cached: nothing generated
    for r in ranks(tmp_path / "again"):
        assert r["asked"] == 0 and r["stats"]["generated"] == 0 and r["stats"]["hits"] == 10
        assert r["critiques"] == r0["critiques"]
    assert _rows(cache) == 10


@pytest.mark.slow
def test_server_critic_is_asked_by_the_main_process_alone(tmp_path, critique_pairs):
    from critic_servers import ChatServer, digest_engine

    with ChatServer(digest_engine) as server:
        spec = json.dumps({"backend": "openai", "base_url": server.url, "model": "digest", "max_concurrency": 2})
        launch("critique", spec, critique_pairs, tmp_path / "cache.sqlite", tmp_path / "two")
        requests = server.counts["requests"]
    r0, r1 = ranks(tmp_path / "two")
    assert requests == 10 and (r0["asked"], r1["asked"]) == (10, 0)
    assert r0["critiques"] == r1["critiques"] and all(c and r for c, r in r0["critiques"])
    assert _rows(tmp_path / "cache.sqlite") == 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`critcore train` of a MiniLM No-Critiques RM (32 pairs, 4 steps of 8, micro-batches of 2,
    validation and a test set), by one process and by two."""
    from critcore.data import write_pairs
    from critcore.generated import generated_pairs

    work = tmp_path_factory.mktemp("train")
    for split, n in (("train", 32), ("validation", 16), ("test", 24)):
        write_pairs(work / f"{split}.jsonl", generated_pairs(n, split=split))
    args = ["critcore.cli", "train", "--backbone", "minilm", "--critic", "none", "--train", work / "train.jsonl",
            "--validation", work / "validation.jsonl", "--set", f"eval_data.test={work / 'test.jsonl'}",
            "--max-length", 48, "--lr", 1e-4, "--set", "train.batch_size=8", "--set", "train.micro_batch_size=2",
            "--set", "n_boot=50", "--quiet", "--cache", work / "cache.sqlite"]
    return {"work": work, "args": args, "one": launch(*args, "--out", work / "one", module=True, processes=1),
            "two": launch(*args, "--out", work / "two", module=True)}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_training_logs_and_scores_as_one(trained):
    one, two = trained["work"] / "one", trained["work"] / "two"
    # the result once on stdout, run.json once
    assert len(trained["two"].stdout.splitlines()) == 1
    assert json.loads((two / "run.json").read_text())["status"] == "completed"
    # the same effective batch of 8: the same steps, with loss and accuracy over both processes' pairs
    rows1, rows2 = _metrics(one), _metrics(two)
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [1, 2, 3, 4]
    # Step 1 is the same model on the same pairs: its loss, reduced over both processes, is the
    # one process's. After it the weights differ by the order in which the micro-batches'
    # gradients were summed, which Adam amplifies where a gradient is near zero (on an AMD EPYC
    # with AVX512-BF16: 1.3e-4 in loss by step 4 and 3.6e-4 in test scores; under 1e-4 on the
    # AVX2 EPYC before it).
    # A pair whose margin is that close to 0 can change sides: on an Intel Xeon with AMX, step 3's
    # losses were 5.7e-7 apart and one of its 8 pairs flipped. So after step 1, accuracies may
    # differ by one pair.
    assert rows2[0]["loss"] == pytest.approx(rows1[0]["loss"], abs=1e-6)
    assert rows2[0]["accuracy"] == rows1[0]["accuracy"]
    for a, b in zip(rows1, rows2):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-3)
        assert abs(b["accuracy"] - a["accuracy"]) * 8 <= 1 + 1e-9 and b["lr"] == pytest.approx(a["lr"], rel=1e-9)
    s1, s2 = (json.loads((run / "train" / "summary.json").read_text()) for run in (one, two))
    assert s2["train_pairs"] == s1["train_pairs"] == 32
    assert s2["validation"]["n"] == s1["validation"]["n"]
    assert abs(s2["validation"]["acc"] - s1["validation"]["acc"]) * s1["validation"]["n"] <= 1 + 1e-9
    # the test set scored once, in pair order, as one process scores it
    import pandas as pd

    a, b = pd.read_csv(one / "eval" / "test_scores.csv"), pd.read_csv(two / "eval" / "test_scores.csv")
    assert list(a["id"]) == list(b["id"])
    assert max((a[k] - b[k]).abs().max() for k in ("score_chosen", "score_rejected")) <= 2e-3


@pytest.mark.slow
def test_two_process_training_killed_and_resumed_ends_as_the_uninterrupted_run(trained):
    """One of the two processes SIGKILLed after the first checkpoint: the launcher ends the other
    and fails; launched again, the run resumes from the checkpoint, logs each step once and ends
    with the uninterrupted run's metrics and test scores. (SIGKILL of the launcher alone is no
    test: torchrun's workers run in their own session and carry on to the end.)"""
    import psutil

    work, out = trained["work"], trained["work"] / "killed"
    cmd = launch_cmd(*trained["args"], "--set", "train.save_every=1", "--out", out, module=True)
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    try:
        while not list((out / "train" / "checkpoints").glob("step-*")):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 900 s"
            time.sleep(0.02)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "critcore.cli" in p.cmdline()]
        assert len(workers) == 2
        workers[-1].kill()
        assert proc.wait(timeout=300) != 0  # the launcher ended the other process and failed
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "train" / "summary.json").exists()
    at_kill = max(int(p.name.split("-")[1]) for p in (out / "train" / "checkpoints").glob("step-*"))
    assert 1 <= at_kill < 4

    launch(*trained["args"], "--set", "train.save_every=1", "--out", out, module=True)
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["resumed_from_step"] == at_kill
    rows, ref = _metrics(out), _metrics(work / "two")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # each step once
    for a, b in zip(ref, rows):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5) and b["accuracy"] == a["accuracy"]
    import pandas as pd

    a, b = pd.read_csv(work / "two" / "eval" / "test_scores.csv"), pd.read_csv(out / "eval" / "test_scores.csv")
    assert max((a[k] - b[k]).abs().max() for k in ("score_chosen", "score_rejected")) <= 1e-5
    assert not (out / "train" / "checkpoints").exists()
