"""Does the fast local critic write the critiques the reference writes? And do RMs agree?

    .venv/bin/python bench/critique_quality.py [--pairs 200] [--max-new-tokens 48] [--threads 2]
    .venv/bin/python bench/critique_quality.py --smoke

1. Critiques the chosen and rejected responses of the first --pairs validation pairs with
   SmolLM2 in the reference configuration (transformers, fp32) and in the fast one (--fast:
   transformers in bf16 by default, or ctranslate2:float32, ctranslate2:int8), through separate
   in-memory caches, and reports the share of identical texts.
2. Runs the quickstart study (params/quick.yaml: MiniLM, No-Critiques and SmolLM2 critiques)
   once per configuration and puts their Scores and PandaLM accuracies, with 95% CIs, side by side.
Writes outputs/bench/critique_quality.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "outputs" / "bench" / "critique_quality.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--fast", default="transformers:bfloat16", help="ENGINE:PRECISION of the fast configuration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2 pairs, 4 tokens, no quickstart runs")
    ap.add_argument("--quickstart-only", action="store_true", help="keep the texts part of --out, redo the quickstarts")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.max_new_tokens = 2, 4
    import torch

    from critcore.critique import LocalCritic, augment
    from critcore.data import load

    torch.set_num_threads(args.threads)
    pairs = load(str(ROOT.parent / "shared" / "data" / "mix" / "validation.jsonl")).pairs[: args.pairs]
    texts, seconds = {}, {}
    engine, _, precision = args.fast.partition(":")
    fast = {"engine": engine, ("dtype" if engine == "transformers" else "compute_type"): precision or "float32"}
    engines = {"reference": {"engine": "transformers", "dtype": "float32"}, "fast": fast}
    if args.quickstart_only:
        result = json.loads(Path(args.out).read_text())
        return quickstarts(args, engines, result)
    for name, opts in engines.items():
        critic = LocalCritic("smollm2", max_new_tokens=args.max_new_tokens, max_chars=400, batch_size=16, **opts)
        t = time.perf_counter()
        out = augment(pairs, critic, None, progress=not args.smoke)
        seconds[name] = round(time.perf_counter() - t, 1)
        texts[name] = [c for p in out for c in (p.chosen_critique, p.rejected_critique)]
        critic.release()
    same = sum(a == b for a, b in zip(texts["reference"], texts["fast"]))
    result = {"pairs": len(pairs), "critiques": len(texts["reference"]), "identical": same,
              "identical_share": round(same / len(texts["reference"]), 4), "seconds": seconds,
              "reference": engines["reference"], "fast": fast, "max_new_tokens": args.max_new_tokens,
              "threads": args.threads, "load_average": os.getloadavg()[0]}
    print(f"{same}/{len(texts['reference'])} critiques identical; seconds {seconds}")
    if args.smoke:
        (Path(tempfile.mkdtemp()) / "smoke.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    quickstarts(args, engines, result)


def quickstarts(args, engines: dict, result: dict) -> None:
    """The quickstart study once per configuration; its rows go into result["quickstart"]."""
    import pandas as pd

    from critcore.studies import run_study

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in engines.items():
            sets = [f"critic_options.{k}={v}" for k, v in opts.items()] + [f"critique_cache={tmp}/{name}.sqlite"]
            out_dir = run_study(ROOT / "params" / "quick.yaml", run_id=f"quality-{name}",
                                out_root=Path(tmp) / "outputs", sets=sets, progress=False)
            table = pd.read_csv(out_dir / "results.csv")
            rows += [{"configuration": name, **r} for r in table.to_dict(orient="records")]
    result["quickstart"] = rows
    df = pd.DataFrame(rows)
    print(df[df["metric"].isin(["Score", "PandaLM"])].to_string(index=False))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
