"""Critique throughput of the local SmolLM2-135M critic, by engine and batch size.

    .venv/bin/python bench/critique_throughput.py [--items 16] [--max-new-tokens 64] [--threads 2] [--repeats 3]
    .venv/bin/python bench/critique_throughput.py --smoke        # a seconds-long check that it runs

Every configuration (engine x batch size) runs in its own process on the same real items (the
chosen and rejected responses of seeded-random pairs of the training mix, each under
--max-chars characters), with the same --max-new-tokens and --threads, after a warm-up; the
process reports generation seconds, tokens generated and its peak memory (max RSS, model
included). Engines: transformers in fp32 (the reference, named "transformers") and in bf16,
ctranslate2 (float32 and int8) and llama.cpp (llama-cpp-python on the GGUF file, batch 1 only,
when it is installed). The reference of every ratio is fp32 transformers. transformers:qint8
(torch's dynamic int8 quantization of every Linear layer) is measured for the record, with its
share of texts identical to the reference, but never picked as the fast engine: critcore does
not offer it, since its texts drift from the reference (identical_to_transformers in the JSON).

1. A sweep finds each engine's best batch size.
2. The headline pairs then alternate (ABBA) over --repeats: the fast engine at its best batch
   against transformers at its best batch, and against transformers at batch 1. Each repeat
   gives a ratio; the report is the median ratio and its spread. The load average is recorded
   before and after every timed run, with the CPU other processes used meanwhile
   (bench/loadmeter.py); a ratio taken while others used more than a quarter of a core is
   flagged and left out of the headline.
Writes outputs/bench/critique_throughput.json (transformers_best_tok_s, fast_best_tok_s, ratio,
...). Run it with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadmeter import Meter  # noqa: E402
OUT = ROOT / "outputs" / "bench" / "critique_throughput.json"
MEASURED_ONLY = ("transformers:qint8",)  # in the sweep and its identical-text count, never the fast engine


def load_items(args) -> list[str]:
    """The rendered critique prompts of the benchmark items."""
    from critcore.data import load, prompt_text
    from critcore.llm import load_template, render

    pool = {prompt_text(p.prompt): p for p in load(f"jsonl:{args.data}").pairs  # one pair per prompt
            if len(prompt_text(p.prompt)) + len(p.chosen) + len(p.rejected) <= args.max_chars}
    pool = sorted(pool.values(), key=lambda p: p.id)
    pairs = random.Random(args.seed).sample(pool, (args.items + 1) // 2)
    template = load_template(None)
    items = [render(template, prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)]
    return items[: args.items]


# ---------------------------------------------------------------- one configuration, in its own process


def worker(engine: str, batch: int, args) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.items_file).read_text())
    if engine == "llama.cpp":
        out = _llama_cpp(texts, args)
    else:
        from critcore.llm import LocalBackend

        name, _, precision = engine.partition(":")
        if name == "transformers":  # plain "transformers" is the fp32 reference, whatever this CPU's default
            options = {"dtype": "float32" if precision in ("", "qint8") else precision}
        else:
            options = {"compute_type": precision} if precision else {}
        backend = LocalBackend("smollm2", engine=name, max_new_tokens=args.max_new_tokens, batch_size=batch, **options)
        if precision == "qint8":  # measured, not offered: torch's dynamic int8 quantization of every Linear
            backend._load()
            backend._model = torch.ao.quantization.quantize_dynamic(backend._model, {torch.nn.Linear}, dtype=torch.qint8)
        backend.complete(texts[:1], max_new_tokens=4)  # load and warm up
        t = time.perf_counter()
        replies = backend.complete(texts)
        out = {"seconds": time.perf_counter() - t, "tokens": sum(n for _, n in replies),
               "outputs": [r for r, _ in replies]}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _llama_cpp(texts: list[str], args) -> dict:
    from llama_cpp import Llama

    from critcore.backbones import _alias_source

    folder, gguf = _alias_source("smollm2")
    llm = Llama(model_path=str(folder / gguf), n_ctx=2048, n_threads=args.threads, n_batch=512, verbose=False, seed=0)
    ask = lambda t, n: llm.create_chat_completion([{"role": "user", "content": t}], max_tokens=n, temperature=0.0)  # noqa: E731
    ask(texts[0], 4)
    t = time.perf_counter()
    replies = [ask(x, args.max_new_tokens) for x in texts]
    return {"seconds": time.perf_counter() - t, "tokens": sum(r["usage"]["completion_tokens"] for r in replies),
            "outputs": [r["choices"][0]["message"]["content"].strip() for r in replies]}


# ---------------------------------------------------------------- the parent


def timed(engine: str, batch: int, args) -> dict:
    """One configuration in its own process (in this one for --smoke, which skips the imports)."""
    with Meter() as meter:
        if args.smoke:
            out = worker(engine, batch, args)
        else:
            cmd = [sys.executable, __file__, "--worker", engine, str(batch), "--items-file", args.items_file,
                   "--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if proc.returncode:
                raise SystemExit(f"{engine} batch {batch} failed:\n{proc.stderr[-3000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(engine=engine, batch=batch, tok_s=out["tokens"] / out["seconds"], **meter.record())
    print(f"  {engine:22} batch {batch:3d}: {out['tok_s']:8.2f} tok/s  {out['tokens']:5d} tokens in {out['seconds']:7.2f} s"
          f"  peak {out['peak_rss_mb']:7.1f} MB  load {out['load'][0]:.2f}->{out['load'][1]:.2f}, other work "
          f"{out['other_cores']:.2f} cores{'  LOADED' if out['loaded'] else ''}", flush=True)
    return out


def abba(a: tuple, b: tuple, repeats: int, args) -> list[dict]:
    """Repeats of a ratio a/b (tokens/s), the two sides alternating A B B A ..."""
    rows = []
    for r in range(repeats):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        x, y = timed(*first, args), timed(*second, args)
        ra, rb = (x, y) if r % 2 == 0 else (y, x)
        rows.append({"ratio": ra["tok_s"] / rb["tok_s"], "a_tok_s": ra["tok_s"], "b_tok_s": rb["tok_s"],
                     "loaded": ra["loaded"] or rb["loaded"], "load": ra["load"] + rb["load"],
                     "other_cores": [ra["other_cores"], rb["other_cores"]]})
    return rows


def headline(rows: list[dict]) -> dict:
    quiet = [r["ratio"] for r in rows if not r["loaded"]]
    use = quiet or [r["ratio"] for r in rows]
    return {"ratio_median": round(statistics.median(use), 3), "ratio_min": round(min(use), 3),
            "ratio_max": round(max(use), 3), "ratio_runs": [round(r["ratio"], 3) for r in rows],
            "loaded_runs_left_out": sum(r["loaded"] for r in rows) if quiet else 0,
            "all_runs_loaded": not quiet}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mix" / "train.jsonl"))
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-chars", type=int, default=1200, help="prompt+chosen+rejected characters, at most")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,4,16", help="batch sizes the sweep tries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="2 items, 4 tokens, 1 repeat: checks that it runs")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--items-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args)))
        return
    if args.smoke:
        args.items, args.max_new_tokens, args.repeats, args.batches = 2, 4, 1, "2"
    import importlib.util
    import tempfile

    items = load_items(args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(items, f)
        args.items_file = f.name
    engines = ["transformers", "transformers:bfloat16", "ctranslate2:float32", "ctranslate2:int8", *MEASURED_ONLY]
    if args.smoke:
        engines = ["transformers", "transformers:bfloat16", *MEASURED_ONLY]
    print(f"{len(items)} items, {args.max_new_tokens} new tokens, {args.threads} threads, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    print("sweep:")
    sweep = [timed(e, b, args) for e in engines for b in batches]
    if importlib.util.find_spec("llama_cpp") and not args.smoke:
        sweep.append(timed("llama.cpp", 1, args))
    best = {e: max((r for r in sweep if r["engine"] == e), key=lambda r: r["tok_s"]) for e in {r["engine"] for r in sweep}}
    fast = max((e for e in best if e != "transformers" and e not in MEASURED_ONLY), key=lambda e: best[e]["tok_s"])
    tf_best = best["transformers"]["batch"]
    chosen = ", ".join(f"{e} batch {r['batch']}" for e, r in sorted(best.items()))
    print(f"best: {chosen}; fastest: {fast}")
    ref = {e: r["outputs"] for e, r in best.items()}
    same = {e: sum(a == b for a, b in zip(ref[e], ref["transformers"])) for e in ref}
    print(f"headline, {args.repeats} repeats, ABBA:")
    vs_best = abba((fast, best[fast]["batch"]), ("transformers", tf_best), args.repeats, args)
    vs_one = abba((fast, best[fast]["batch"]), ("transformers", 1), args.repeats, args)
    h_best, h_one = headline(vs_best), headline(vs_one)
    result = {
        "items": len(items), "max_new_tokens": args.max_new_tokens, "threads": args.threads, "cores": os.cpu_count(),
        "fast_engine": fast, "fast_batch": best[fast]["batch"], "transformers_best_batch": tf_best,
        "transformers_best_tok_s": round(statistics.median(r["b_tok_s"] for r in vs_best), 2),
        "fast_best_tok_s": round(statistics.median(r["a_tok_s"] for r in vs_best), 2),
        "transformers_batch1_tok_s": round(statistics.median(r["b_tok_s"] for r in vs_one), 2),
        "ratio": h_best["ratio_median"], "vs_best": h_best, "vs_batch1": h_one,
        "identical_to_transformers": {e: f"{n}/{len(items)}" for e, n in same.items()},
        "sweep": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "outputs"} for r in sweep],
        "peak_rss_mb": {e: r["peak_rss_mb"] for e, r in best.items()},
    }
    print(f"{fast} batch {best[fast]['batch']} against transformers batch {tf_best}: {h_best['ratio_median']}x "
          f"(runs {h_best['ratio_runs']}); against transformers batch 1: {h_one['ratio_median']}x "
          f"(runs {h_one['ratio_runs']}); identical texts: {result['identical_to_transformers']}")
    out = Path(tempfile.mkdtemp()) / "smoke.json" if args.smoke else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("transformers_best_tok_s", "fast_best_tok_s", "ratio")}))


if __name__ == "__main__":
    main()
