"""AdamW step time, default (foreach) against fused, on SmolLM2-135M-sized float32 parameters.

    python bench/adamw_fused.py [--threads 1] [--steps 3]
    python bench/adamw_fused.py --smoke      # a second: checks that it runs

critcore.train uses the fused kernel on CPU and CUDA; this is the measurement behind that."""
import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny tensors, one step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # SmolLM2-135M: a 28M embedding and ~180 other tensors, ~136M values in all.
    sizes = [28_000, 600] * 2 if args.smoke else [28_000_000] + [600_000] * 180
    args.steps = 1 if args.smoke else args.steps
    params = [torch.nn.Parameter(torch.randn(n)) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    times = {}
    for fused in (False, True):
        opt = torch.optim.AdamW(params, lr=1e-4, fused=fused)
        opt.step()  # warm-up: allocates the state
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        times["fused" if fused else "foreach"] = (time.perf_counter() - t) / args.steps
    for k, v in times.items():
        print(f"{k:8s} {v:.3f} s/step")
    print(f"ratio    {times['foreach'] / times['fused']:.1f}x")


if __name__ == "__main__":
    main()
