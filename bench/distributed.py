"""Two processes with one thread each against one process with two threads, on the same items.

    .venv/bin/python bench/distributed.py [--critique-pairs 16] [--score-pairs 256] [--repeats 2]
    .venv/bin/python bench/distributed.py --smoke      # tiny: checks that it runs

Issue 26's goal on a 2-core CPU: `accelerate launch` with 2 processes x 1 thread takes no more
than 1.1x the wall time of plain python with 1 process x 2 threads, for critique generation
(`critcore critique`, the local SmolLM2 critic, an empty cache each time) and for scoring
(`critcore score --data`, a MiniLM RM). On 2 cores the processes can only avoid repeating work;
on 8 GPUs the same code divides it by 8. Each side is a whole command (start-up, model loading,
the work, writing), timed in ABBA order over --repeats rounds with the CPU other processes used
meanwhile (bench/loadmeter.py); a round during which others used more than a quarter of a core
is flagged and left out of the median. The two sides must write the same critiques and the same
scores (max |diff| <= 1e-4). Writes --out (outputs/bench/distributed.json) with the CPU."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadmeter import Meter  # noqa: E402

OUT = ROOT / "outputs" / "bench" / "distributed.json"
DATA = ROOT.parent / "shared" / "data" / "mix" / "validation.jsonl"
LAUNCH_CONFIG = ROOT / "configs" / "accelerate" / "cpu.yaml"
GOAL = 1.1
SIDES = ("1x2", "2x1")  # processes x threads


def command(side: str, args: list) -> tuple[list[str], dict]:
    """The critcore CLI command of one side, and its environment."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if side == "1x2":
        return [sys.executable, "-m", "critcore.cli", *map(str, args)], {**env, "OMP_NUM_THREADS": "2"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(LAUNCH_CONFIG),
              "--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "critcore.cli"]
    return [*launch, *map(str, args)], {**env, "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(side: str, args: list) -> tuple[float, dict]:
    cmd, env = command(side, args)
    with Meter() as meter:
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{side}: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, meter.record()


def critique_stage(work: Path, n_pairs: int, max_new_tokens: int):
    """Arguments of one `critcore critique` run (an empty cache in a fresh folder), and what it wrote."""
    def args(run: Path) -> list:
        return ["critique", "--critic", "smollm2", "--data", DATA, "--limit", n_pairs, "--max-new-tokens", max_new_tokens,
                "--cache", run / "cache.sqlite", "--out", run / "critiqued.jsonl", "--quiet"]

    def result(run: Path) -> list[str]:
        rows = [json.loads(line) for line in (run / "critiqued.jsonl").read_text().splitlines()]
        return [[r["chosen_critique"], r["rejected_critique"]] for r in rows]

    return args, result


def score_stage(work: Path, n_pairs: int):
    """Arguments of one `critcore score --data` run of a saved MiniLM RM, and the scores it wrote."""
    from transformers import set_seed

    from critcore.model import RewardModel

    set_seed(0)
    RewardModel.load("minilm").save(work / "rm")  # a seeded fresh head: the speed does not depend on training
    spec = json.dumps({"format": "jsonl", "path": str(DATA), "limit": n_pairs})

    def args(run: Path) -> list:
        return ["score", "--model", work / "rm", "--data", spec, "--out", run / "scores.csv", "--quiet"]

    def result(run: Path) -> pd.DataFrame:
        return pd.read_csv(run / "scores.csv")

    return args, result


def same(a, b) -> tuple[bool, float | None]:
    """Whether the two sides wrote the same: equal critiques, or scores within 1e-4 (the max |diff|)."""
    if isinstance(a, list):
        return a == b, None
    numeric = [c for c in a.columns if c.startswith("score")]
    diff = float((a[numeric] - b[numeric]).abs().max().max())
    return list(a["id"]) == list(b["id"]) and diff <= 1e-4, diff


def run_stage(name: str, stage, work: Path, repeats: int) -> dict:
    args, result = stage
    rounds = []
    for r in range(repeats):
        order = SIDES if r % 2 == 0 else SIDES[::-1]
        seconds, loads, outputs = {}, {}, {}
        for side in order:
            run = work / f"{name}-{r}-{side}"
            run.mkdir()
            seconds[side], loads[side] = timed(side, args(run))
            outputs[side] = result(run)
        equal, diff = same(outputs["1x2"], outputs["2x1"])
        rounds.append({"order": list(order), "seconds": {k: round(v, 2) for k, v in seconds.items()},
                       "ratio": round(seconds["2x1"] / seconds["1x2"], 3), "same_output": equal, "max_abs_diff": diff,
                       "load": [x for side in order for x in loads[side]["load"]],
                       "other_cores": [loads[side]["other_cores"] for side in order],
                       "loaded": any(loads[side]["loaded"] for side in order)})
        print(f"{name} round {r + 1} ({' then '.join(order)}): 1x2 {seconds['1x2']:.1f} s, 2x1 {seconds['2x1']:.1f} s, "
              f"ratio {rounds[-1]['ratio']:.3f}, same output {equal}{'  LOADED' if rounds[-1]['loaded'] else ''}")
    quiet = [x["ratio"] for x in rounds if not x["loaded"]]
    median = statistics.median(quiet or [x["ratio"] for x in rounds])
    return {"rounds": rounds, "ratio_median": median, "all_rounds_loaded": not quiet,
            "same_output": all(x["same_output"] for x in rounds), "meets_goal": median <= GOAL}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--critique-pairs", type=int, default=16, help="pairs critiqued (2 critiques each)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--score-pairs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="ABBA rounds (each runs both sides)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--smoke", action="store_true", help="2 pairs critiqued with 4 tokens, 4 scored, one round")
    args = ap.parse_args()
    if args.smoke:
        args.critique_pairs, args.max_new_tokens, args.score_pairs, args.repeats = 2, 4, 4, 1
        args.out = str(Path(tempfile.mkdtemp()) / "distributed.json") if args.out == str(OUT) else args.out
    from critcore.hardware import cpu_info

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stages = {"critique": run_stage("critique", critique_stage(work, args.critique_pairs, args.max_new_tokens),
                                        work, args.repeats),
                  "scoring": run_stage("scoring", score_stage(work, args.score_pairs), work, args.repeats)}
    result = {"cpu": cpu_info(), "goal": f"2x1 / 1x2 wall time <= {GOAL}",
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "stages": stages,
              "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    for name, stage in stages.items():
        print(f"{name}: 2 processes x 1 thread / 1 process x 2 threads = {stage['ratio_median']:.3f} "
              f"(goal <= {GOAL}: {'met' if stage['meets_goal'] else 'NOT met'}), same output: {stage['same_output']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
