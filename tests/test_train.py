"""Training on the real MiniLM backbone: the pair collator and batch order, a planted preference rule
learnt to >= 90% held-out accuracy, resume after SIGKILL, run reuse, and the per-step logs."""
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from critcore.collate import PairCollator, length_grouped_batches
from critcore.data import Pair, read_pairs, write_pairs
from critcore.evaluate import score_pairs
from critcore.model import RewardModel
from critcore.train import TrainConfig, TrainingWarning, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


# --- collator and batch order ------------------------------------------------------------------

def test_collator_stacks_chosen_then_rejected_right_padded():
    features = [{"chosen": [1, 2, 3], "rejected": [4, 5], "margin": 0.5},
                {"chosen": [6], "rejected": [7, 8, 9, 10]}]
    out = PairCollator(pad_token_id=99)(features)
    assert out["input_ids"].shape == out["attention_mask"].shape == (4, 4)  # [2B, L]
    assert out["input_ids"].dtype == out["attention_mask"].dtype == torch.long
    assert out["input_ids"].tolist() == [[1, 2, 3, 99], [6, 99, 99, 99], [4, 5, 99, 99], [7, 8, 9, 10]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["margin"].tolist() == [0.5, 0.0]
    assert out["margin"].dtype == torch.float32


def test_length_grouped_batches_cover_every_index_once_and_are_deterministic():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1001)]
    a = length_grouped_batches(lengths, 8, seed=3)
    assert a == length_grouped_batches(lengths, 8, seed=3)
    assert a != length_grouped_batches(lengths, 8, seed=4)
    flat = [i for b in a for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert all(1 <= len(b) <= 8 for b in a)
    assert sum(len(b) < 8 for b in a) <= math.ceil(len(lengths) / (8 * 32))  # one short batch per window at most


def _padding(lengths, batches):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouping_reduces_padding():
    rng = random.Random(1)
    lengths = [rng.randint(5, 500) for _ in range(1000)]
    order = list(range(len(lengths)))
    random.Random(2).shuffle(order)
    random_batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    grouped = length_grouped_batches(lengths, 8, seed=2)
    assert _padding(lengths, grouped) < 0.2 * _padding(lengths, random_batches)


# --- a planted preference rule is learnt ---------------------------------------------------------

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ITEMS = ["car", "house", "shirt", "bicycle", "umbrella", "mug", "chair", "kite", "lamp", "backpack"]
REPLIES = ["Here is a lovely {c} {item} for you.", "Try this {c} {item}, it is popular.", "I recommend a {c} {item}."]


def color_pairs(n: int, seed: int, prefix: str) -> list[Pair]:
    """The prompt asks for a colour; the chosen reply offers that colour, the rejected one another.
    Everything else is identical, and every colour is as often chosen as rejected, so only matching
    the reply's colour to the prompt's separates them."""
    rng, out = random.Random(seed), []
    for i in range(n):
        want, other = rng.sample(COLORS, 2)
        item, reply = rng.choice(ITEMS), rng.choice(REPLIES)
        out.append(Pair(id=f"{prefix}{i}", prompt=f"I would like a {want} {item}. Can you suggest one?",
                        chosen=reply.format(c=want, item=item), rejected=reply.format(c=other, item=item)))
    return out


def _accuracy(df) -> float:
    return float((df.score_chosen > df.score_rejected).mean())


def test_planted_signal_is_learnt(tmp_path):
    train_pairs, test_pairs = color_pairs(128, seed=0, prefix="train"), color_pairs(100, seed=1, prefix="test")
    assert not {p.prompt for p in test_pairs} >= {p.prompt for p in train_pairs}
    cfg = TrainConfig(backbone="minilm", lr=3e-4, batch_size=16, micro_batch_size=16, epochs=1, max_length=48,
                      warmup_ratio=0.1, threads=1)
    result = train(cfg, train_pairs, out_dir=tmp_path / "run", progress=False)
    acc = _accuracy(score_pairs(result.model, test_pairs, max_length=48))
    assert acc >= 0.9, f"held-out accuracy {acc:.2f} on a rule the model should learn"
    # The same backbone untrained does not already know the rule.
    from transformers import set_seed

    set_seed(cfg.seed)
    assert _accuracy(score_pairs(RewardModel.load("minilm"), test_pairs, max_length=48)) < 0.75


# --- resume after SIGKILL; reuse; logs ------------------------------------------------------------

RUN_SCRIPT = """
import json, sys
from critcore.data import read_pairs
from critcore.train import TrainConfig, TrainingWarning, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg, read_pairs(sys.argv[2]), read_pairs(sys.argv[3]), out_dir=sys.argv[4], progress=False)
"""

CFG = TrainConfig(backbone="minilm", lr=3e-4, batch_size=16, micro_batch_size=8, epochs=1, max_length=64,
                  warmup_ratio=0.3, save_every=1, threads=1, eval_batch_size=16,
                  bf16=False)  # fp32, exact on every CPU (one with native bf16 would train in bf16)
N_TRAIN, N_VAL = 80, 16
STEPS = N_TRAIN // CFG.batch_size  # 5
WARMUP = math.ceil(CFG.warmup_ratio * STEPS)  # 2


def _run_cmd(work: Path, cfg: TrainConfig, out: Path) -> list[str]:
    return [sys.executable, str(work / "run.py"), json.dumps(cfg.model_dump()), str(work / "train.jsonl"),
            str(work / "val.jsonl"), str(out)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _stable(summary: dict) -> dict:
    """The summary without its wall-clock fields and the settings that do not change the model."""
    out = {k: v for k, v in summary.items() if k not in ("train_seconds", "pairs_per_s", "resumed_from_step")}
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("save_every", "threads", "eval_batch_size")}
    return out


def _scores(model_dir: Path, pairs: list[Pair]) -> torch.Tensor:
    df = score_pairs(RewardModel.load(str(model_dir)), pairs, max_length=64)
    return torch.tensor(df[["score_chosen", "score_rejected"]].to_numpy())


def test_an_earlier_bf16_accelerator_does_not_change_the_training():
    """accelerate keeps one state per process, and TRL's trainers set it to bf16 (RewardConfig's
    default): an fp32 recipe trained after one must still train in fp32. It trained in bf16
    unawares, and the slow resume test's in-process reference came out ulps of bf16 apart."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    pairs, cfg = color_pairs(32, seed=5, prefix="t"), CFG.replace(save_every=0)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        fresh = train(cfg, pairs, progress=False).model.state_dict()
        AcceleratorState._reset_state(reset_partial_state=True)
        Accelerator(mixed_precision="bf16", cpu=True)  # as trl.RewardTrainer does with its defaults
        after = train(cfg, pairs, progress=False).model.state_dict()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert max((fresh[k] - after[k]).abs().max().item() for k in fresh) <= 1e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and the same run SIGKILLed after its first checkpoint and restarted."""
    work = tmp_path_factory.mktemp("resume")
    (work / "run.py").write_text(RUN_SCRIPT)
    write_pairs(work / "train.jsonl", color_pairs(N_TRAIN, seed=5, prefix="t"))
    write_pairs(work / "val.jsonl", color_pairs(N_VAL, seed=6, prefix="v"))
    ref, killed = work / "ref", work / "killed"

    t0 = time.monotonic()
    # The uninterrupted reference runs here (checkpointing does not change the model or the run key).
    train(CFG.replace(save_every=0), read_pairs(work / "train.jsonl"), read_pairs(work / "val.jsonl"),
          out_dir=ref, progress=False)
    t1 = time.monotonic()

    proc = subprocess.Popen(_run_cmd(work, CFG, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not list((killed / "checkpoints").glob("step-*")):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists() and not (killed / "model").exists()
    at_kill = max(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("step-*"))
    assert 1 <= at_kill < STEPS
    rows_at_kill = [r for r in _rows(killed) if r["step"] <= at_kill]
    # Keep the interrupted state, to show later that another config does not resume from it.
    stale = work / "stale"
    shutil.copytree(killed, stale)

    t2 = time.monotonic()
    subprocess.run(_run_cmd(work, CFG, killed), check=True, env=_env(), capture_output=True, timeout=600)
    print(f"reference {t1 - t0:.1f}s, killed run {t2 - t1:.1f}s, resumed run {time.monotonic() - t2:.1f}s")
    return {"work": work, "ref": ref, "killed": killed, "stale": stale, "at_kill": at_kill,
            "rows_at_kill": rows_at_kill, "val": read_pairs(work / "val.jsonl"),
            "train": read_pairs(work / "train.jsonl")}


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_model(runs):
    ref, killed = runs["ref"], runs["killed"]
    s_ref = json.loads((ref / "summary.json").read_text())
    s_killed = json.loads((killed / "summary.json").read_text())
    assert _stable(s_killed) == _stable(s_ref)
    assert s_killed["config"]["save_every"] == 1 and s_ref["config"]["save_every"] == 0
    assert s_killed["resumed_from_step"] == runs["at_kill"] and s_ref["resumed_from_step"] is None
    # train_seconds covers every segment: the seconds the checkpoint recorded before the kill, and more
    # (compared with the run's own record, not with the reference's: the machine's speed may differ)
    before = json.loads((runs["stale"] / "checkpoints" / f"step-{runs['at_kill']}" / "run_key.json").read_text())
    assert 0 < before["train_seconds"] < s_killed["train_seconds"]
    assert s_ref["steps"] == STEPS and "validation" in s_ref
    torch.testing.assert_close(_scores(killed / "model", runs["val"]), _scores(ref / "model", runs["val"]),
                               atol=1e-5, rtol=0)
    w_ref, w_killed = load_file(ref / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert w_ref.keys() == w_killed.keys()
    assert max((w_ref[k] - w_killed[k]).abs().max().item() for k in w_ref) <= 1e-5
    assert not (killed / "checkpoints").exists()  # cleaned up once finished

    rows, ref_rows = _rows(killed), _rows(ref)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # each step exactly once
    # The rows written before the kill were kept as they were (pairs_per_s is a wall-clock figure,
    # so a recomputed row would differ), i.e. the restart resumed rather than starting over.
    assert rows[:runs["at_kill"]] == runs["rows_at_kill"]
    for r, q in zip(rows, ref_rows):
        for k in ("loss", "accuracy", "lr"):
            assert r[k] == pytest.approx(q[k], abs=1e-5), (r["step"], k)


@pytest.mark.slow
def test_finished_run_is_reused_without_training(runs, monkeypatch):
    import critcore.train as train_module

    ref = runs["ref"]
    model_file, metrics = ref / "model" / "model.safetensors", ref / "metrics.jsonl"
    before = (model_file.stat().st_mtime_ns, metrics.read_text(), (ref / "summary.json").read_text())

    def tripwire(*args, **kwargs):
        raise AssertionError("a reused run started training")

    monkeypatch.setattr(train_module, "Formatter", tripwire)  # the first thing training does: encode the pairs
    result = train(CFG, runs["train"], runs["val"], out_dir=ref, progress=False)
    assert (model_file.stat().st_mtime_ns, metrics.read_text(), (ref / "summary.json").read_text()) == before
    assert not (ref / "checkpoints").exists()
    assert result.summary == json.loads((ref / "summary.json").read_text())
    # Changing only what does not change the model (checkpointing, threads) still reuses it.
    train(CFG.replace(save_every=0, threads=None, eval_batch_size=4), runs["train"], runs["val"], out_dir=ref,
          progress=False)
    assert model_file.stat().st_mtime_ns == before[0]


@pytest.mark.slow
def test_changed_config_retrains_from_scratch(runs):
    """A directory with a finished run and a leftover checkpoint of the old config: a new config
    must train from step 0, not load the old run's model, optimizer and schedule; and when it
    saves its own step-1 checkpoint it replaces the stale one instead of dying on it."""
    work = runs["work"]
    mixed = work / "mixed"
    shutil.copytree(runs["ref"], mixed)
    shutil.copytree(runs["stale"] / "checkpoints", mixed / "checkpoints")
    assert (mixed / "checkpoints" / "step-1").is_dir()
    (mixed / ".model.12345678.killed").mkdir()  # a save killed half-way, by a process long gone
    ((mixed / ".model.12345678.killed") / "model.safetensors").write_bytes(b"x" * 1000)
    old_weights = load_file(mixed / "model" / "model.safetensors")
    new_cfg = CFG.replace(lr=2 * CFG.lr, save_every=1)
    result = train(new_cfg, runs["train"], runs["val"], out_dir=mixed, progress=False)
    summary = json.loads((mixed / "summary.json").read_text())
    assert summary["config"]["lr"] == new_cfg.lr and summary == result.summary
    assert summary["run_key"] != json.loads((runs["ref"] / "summary.json").read_text())["run_key"]
    rows = _rows(mixed)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["lr"] for r in rows] == pytest.approx(_expected_lrs(new_cfg.lr), rel=1e-9)
    assert rows[0] != runs["rows_at_kill"][0]
    new_weights = load_file(mixed / "model" / "model.safetensors")
    assert max((new_weights[k] - old_weights[k]).abs().max().item() for k in new_weights) > 1e-4
    assert not (mixed / "checkpoints").exists()
    assert not list(mixed.glob(".model.*"))  # the orphan of the killed save is gone


@pytest.mark.slow
def test_a_damaged_summary_trains_again(runs):
    """A finished run whose summary.json was damaged (a disk filled up, a hand edit) is not known
    to be finished: it trains again, to the same result, instead of raising a traceback."""
    damaged = runs["work"] / "damaged"
    shutil.copytree(runs["ref"], damaged)
    (damaged / "summary.json").write_text('{"run_key": ')
    result = train(CFG, runs["train"], runs["val"], out_dir=damaged, progress=False)
    ref = json.loads((runs["ref"] / "summary.json").read_text())
    assert json.loads((damaged / "summary.json").read_text()) == result.summary
    assert result.summary["run_key"] == ref["run_key"]
    assert [r["step"] for r in _rows(damaged)] == list(range(1, STEPS + 1))
    for r, q in zip(_rows(damaged), _rows(runs["ref"])):
        assert r["loss"] == pytest.approx(q["loss"], abs=1e-5)


def _expected_lrs(peak: float) -> list[float]:
    """The lr each optimizer step used: linear warmup from peak / WARMUP at the first step to the
    peak at step WARMUP, then cosine towards min_lr_ratio of the peak."""
    out = []
    for s in range(STEPS):
        if s < WARMUP:
            out.append(peak * (s + 1) / WARMUP)
        else:
            progress = (s - WARMUP + 1) / (STEPS - WARMUP + 1)
            out.append(peak * (CFG.min_lr_ratio + (1 - CFG.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))))
    return out


@pytest.mark.slow
def test_metrics_log_every_step_with_the_lr_schedule(runs):
    rows = _rows(runs["ref"])
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for r in rows:
        assert set(r) == {"step", "loss", "accuracy", "lr", "pairs_per_s"}
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert 0 <= r["accuracy"] <= 1 and (r["accuracy"] * CFG.batch_size) == pytest.approx(round(r["accuracy"] * CFG.batch_size))
        assert r["pairs_per_s"] > 0
    lrs = [r["lr"] for r in rows]
    assert lrs == pytest.approx(_expected_lrs(CFG.lr), rel=1e-9)
    peak_at = lrs.index(max(lrs))
    assert lrs[0] > 0  # the first step learns
    assert max(lrs) == pytest.approx(CFG.lr) and peak_at == WARMUP - 1  # warmup reaches the peak at step WARMUP
    assert all(a < b for a, b in zip(lrs[:peak_at], lrs[1:peak_at + 1]))  # rising during warmup
    assert all(a > b for a, b in zip(lrs[peak_at:], lrs[peak_at + 1:]))  # then strictly decaying
    assert min(lrs[peak_at:]) > CFG.min_lr_ratio * CFG.lr  # towards, never below, 10% of the peak
    summary = json.loads((runs["ref"] / "summary.json").read_text())
    assert summary["train_pairs"] == N_TRAIN and summary["pairs_per_s"] > 0


def test_one_step_run_changes_the_weights_and_warns(tmp_path):
    """32 pairs at batch 32 are one optimizer step: it must train at a non-zero rate (transformers'
    schedule gave it 0), and the run warns that it is too short to mean much."""
    pairs = color_pairs(32, seed=3, prefix="one")
    cfg = TrainConfig(backbone="minilm", lr=1e-4, batch_size=32, micro_batch_size=16, max_length=48, threads=1)
    from transformers import set_seed

    set_seed(cfg.seed)
    before = {k: v.clone() for k, v in RewardModel.load("minilm").hf.state_dict().items()}
    with pytest.warns(TrainingWarning, match="only 1 optimizer step"):
        result = train(cfg, pairs, out_dir=tmp_path / "one", progress=False)
    rows = _rows(tmp_path / "one")
    assert len(rows) == 1 and rows[0]["lr"] == pytest.approx(cfg.lr)
    after = result.model.hf.state_dict()
    change = max((after[k] - before[k]).abs().max().item() for k in before if k in after)
    print(f"largest weight change of the one-step run: {change:.3e}")
    assert change > 1e-6


def test_ties_are_left_out_of_training(tmp_path):
    pairs = color_pairs(16, seed=4, prefix="t")
    tied = [replace(p, id=f"tie{i}", tie=True) for i, p in enumerate(color_pairs(8, seed=5, prefix="x"))]
    cfg = TrainConfig(backbone="minilm", batch_size=8, micro_batch_size=8, max_length=32, threads=1)
    with pytest.warns(TrainingWarning):
        result = train(cfg, pairs + tied, out_dir=tmp_path / "t", progress=False)
    assert result.summary["train_pairs"] == 16 and result.summary["skipped_ties"] == 8
    with pytest.raises(ValueError, match="8 annotator ties"):
        train(cfg, tied, progress=False)
