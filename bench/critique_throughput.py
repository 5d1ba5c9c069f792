"""Throughput of the local SmolLM2 critic: batched vs sequential batch-1 generation, and the cache.

    .venv/bin/python bench/critique_throughput.py [--pairs 8] [--max-new-tokens 64] [--threads 2]

On the same 16 real items (chosen and rejected responses of 8 seeded-random pairs from the
training mix, with prompt+responses under --max-chars characters) it times:
  1. batched generation (one left-padded batch of 16), through `augment` with a fresh cache;
  2. sequential generation, one item at a time;
  3. a second `augment` over the same pairs with a new critic object and the same cache file.
It also times the prompt pass alone (one by one, and as one padded batch): on a CPU it is
compute-bound either way, so batching speeds up only the token-by-token part after it.
Prints a table and one JSON line. The load average is printed since shared CPUs skew timings."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mix" / "train.jsonl"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--max-chars", type=int, default=1200, help="prompt+chosen+rejected characters, at most")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from critcore.cache import CritiqueCache
    from critcore.critique import LocalCritic, _load_data, augment, render
    from critcore.data import prompt_text

    torch.set_num_threads(args.threads)
    pool = {prompt_text(p.prompt): p for p in _load_data(f"jsonl:{args.data}")  # one pair per prompt
            if len(prompt_text(p.prompt)) + len(p.chosen) + len(p.rejected) <= args.max_chars}
    pool = sorted(pool.values(), key=lambda p: p.id)
    pairs = random.Random(args.seed).sample(pool, args.pairs)
    items = [(prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)]
    n = len(items)
    make = lambda: LocalCritic("smollm2", max_new_tokens=args.max_new_tokens, batch_size=n, dtype=args.dtype)  # noqa: E731
    critic = make()
    texts = [render(critic.template, p, r, critic.max_chars) for p, r in items]
    critic.complete(texts[:1], max_new_tokens=2)  # load and warm up
    lengths = [len(critic._input_ids(t)) for t in texts]
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; dtype {args.dtype}; "
          f"{n} items, input tokens {min(lengths)}-{max(lengths)} (mean {sum(lengths) / n:.0f})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "critiques.sqlite"
        t = time.perf_counter()
        with CritiqueCache(db) as cache:
            out = augment(pairs, critic, cache=cache, batch_size=n, progress=False)
            cold = cache.report()
        assert cold["generated"] == n, cold
        batched_s = time.perf_counter() - t
        batched_texts = [c for p in out for c in (p.chosen_critique, p.rejected_critique)]

        t = time.perf_counter()
        seq = [critic.complete([x])[0] for x in texts]
        seq_s = time.perf_counter() - t
        seq_tokens = sum(k for _, k in seq)

        t = time.perf_counter()
        with CritiqueCache(db) as cache:  # a new critic object: the model is never loaded
            augment(pairs, make(), cache=cache, progress=False)
            warm = cache.report()
        cached_s = time.perf_counter() - t

    with torch.inference_mode():  # the prompt pass alone: one by one, and as one padded batch
        t = time.perf_counter()
        for x in texts:
            critic._model(torch.tensor([critic._input_ids(x)]), logits_to_keep=1)
        prefill_s = time.perf_counter() - t
        batch = critic._tok.pad({"input_ids": [critic._input_ids(x) for x in texts]}, return_tensors="pt")
        t = time.perf_counter()
        critic._model(**batch, logits_to_keep=1)
        prefill_batched_s = time.perf_counter() - t

    rows = [("sequential (batch 1)", seq_s, seq_tokens), (f"batched ({n} per batch)", batched_s, cold["tokens_generated"])]
    print(f"{'mode':24} {'wall s':>8} {'tokens':>7} {'tokens/s':>9} {'critiques/s':>12}")
    for name, s, tok in rows:
        print(f"{name:24} {s:8.2f} {tok:7d} {tok / s:9.2f} {n / s:12.3f}")
    same = sum(a == b for a, b in zip(batched_texts, (x for x, _ in seq)))
    print(f"speed-up batched/sequential: {seq_s / batched_s:.2f}x (critiques/s); outputs identical: {same}/{n}")
    print(f"prompt pass alone: {prefill_s:.2f}s one by one ({prefill_s / seq_s:.0%} of sequential), "
          f"{prefill_batched_s:.2f}s as one padded batch ({prefill_batched_s / batched_s:.0%} of batched)")
    decode_ratio = (seq_s - prefill_s) / max(batched_s - prefill_batched_s, 1e-9)
    print(f"generation after the prompt pass: {decode_ratio:.2f}x faster batched")
    print(f"second run through the cache: {cached_s:.3f}s, hit rate {warm['hit_rate']:.2f} "
          f"({warm['hits']} hits, {warm['misses']} misses)")
    print(json.dumps({"items": n, "threads": args.threads, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens,
                      "sequential_s": round(seq_s, 3), "batched_s": round(batched_s, 3),
                      "sequential_tokens_per_s": round(seq_tokens / seq_s, 2),
                      "batched_tokens_per_s": round(cold["tokens_generated"] / batched_s, 2),
                      "speedup": round(seq_s / batched_s, 2), "identical_outputs": same,
                      "prefill_s": round(prefill_s, 3),
                      "prefill_batched_s": round(prefill_batched_s, 3), "decode_speedup": round(decode_ratio, 2), "cached_run_s": round(cached_s, 4),
                      "cached_hit_rate": warm["hit_rate"], "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
