"""AdamW step time, default (foreach) against fused, on SmolLM2-135M-sized float32 parameters.

    python bench/adamw_fused.py [--threads 1] [--steps 3] [--repeats 2] [--out PATH]
    python bench/adamw_fused.py --smoke      # a second: checks that it runs

The two optimizers alternate (ABBA) over --repeats, each timed over --steps steps after a warm-up
step, with the load average before and after and the CPU other processes used meanwhile
(bench/loadmeter.py); a ratio taken while others used more than a quarter of a core is flagged
and left out of the median. critcore.train uses the fused kernel on CPU and CUDA; this is the
measurement behind that. --out writes the runs as JSON."""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadmeter import Meter  # noqa: E402


def step_seconds(params, fused: bool, steps: int) -> tuple[float, dict]:
    """Seconds per AdamW step (after one untimed step that allocates the state), and the load."""
    opt = torch.optim.AdamW(params, lr=1e-4, fused=fused)
    opt.step()
    with Meter() as meter:
        t = time.perf_counter()
        for _ in range(steps):
            opt.step()
        seconds = (time.perf_counter() - t) / steps
    return seconds, meter.record()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="ABBA rounds (each times both optimizers)")
    ap.add_argument("--out", default=None, help="write the runs and the median ratio as JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny tensors, one step, one round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # SmolLM2-135M: a 28M embedding and ~180 other tensors, ~136M values in all.
    sizes = [28_000, 600] * 2 if args.smoke else [28_000_000] + [600_000] * 180
    if args.smoke:
        args.steps, args.repeats = 1, 1
    params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    runs = []
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        timed = {fused: step_seconds(params, fused, args.steps) for fused in order}
        (foreach_s, foreach_load), (fused_s, fused_load) = timed[False], timed[True]
        runs.append({"foreach_s": round(foreach_s, 4), "fused_s": round(fused_s, 4), "ratio": round(foreach_s / fused_s, 2),
                     "load": foreach_load["load"] + fused_load["load"],
                     "other_cores": [foreach_load["other_cores"], fused_load["other_cores"]],
                     "loaded": foreach_load["loaded"] or fused_load["loaded"]})
        print(f"round {r + 1} ({'foreach first' if r % 2 == 0 else 'fused first'}): foreach {foreach_s:.3f} s/step, "
              f"fused {fused_s:.3f} s/step, {foreach_s / fused_s:.1f}x{'  LOADED' if runs[-1]['loaded'] else ''}")
    quiet = [x["ratio"] for x in runs if not x["loaded"]]
    result = {"threads": args.threads, "steps": args.steps, "values": sum(sizes), "runs": runs,
              "ratio_median": statistics.median(quiet or [x["ratio"] for x in runs]), "all_runs_loaded": not quiet,
              "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print(f"ratio    {result['ratio_median']:.1f}x (median of {len(quiet or runs)} rounds)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
