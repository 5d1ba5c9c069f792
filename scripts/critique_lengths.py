"""Cache a local critic's critiques at several lengths (max_new_tokens) from one generation.

Greedy decoding writes token by token, so the first N tokens of a generation of M > N tokens are
the generation of N tokens; in fp32 it does not depend on the batch either (critcore.llm.local).
This generates every missing item once at the longest length and stores, under each length's own
cache key, the reply that length would have given (LocalBackend.reply of the row cut at that
length, as LocalBackend.stream gives it). A study that asks for any of the lengths then finds its
critiques in the cache. An ablation over critique length (RQ1's 48 vs 64 tokens) thus costs one
generation, not one per length.

    python scripts/critique_lengths.py --critic gemma3-270m --lengths 64,48 \\
        --options '{"max_chars": 400, "batch_size": 32, "dtype": "float32"}' \\
        --data '{"format": "jsonl", "path": "../shared/data/mix/train.jsonl", "limit": 1000}' [--data ...] \\
        [--cache PATH] [--verify 32]

--verify N first generates N items directly at each shorter length and stops with an error unless
every derived reply equals the direct one. Refused for sampling (temperature > 0), for any dtype
but float32, where the prefix property is not exact, and for the CTranslate2 engine (the rows are
generated with transformers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from critcore.config import critique_cache_path
from critcore.critique import make_critic
from critcore.data import load, prompt_text
from critcore.llm import CritiqueCache
from critcore.llm.prompts import render


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--critic", required=True)
    ap.add_argument("--lengths", required=True, help="comma-separated max_new_tokens, e.g. 64,48")
    ap.add_argument("--options", default="{}", help="critic options as JSON (max_chars, batch_size, dtype)")
    ap.add_argument("--data", action="append", required=True, help="a data spec (JSON mapping or FORMAT:PATH)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--verify", type=int, default=0)
    args = ap.parse_args(argv)
    lengths = sorted({int(x) for x in args.lengths.split(",")}, reverse=True)
    options = json.loads(args.options)
    critics = {n: make_critic(args.critic, {**options, "max_new_tokens": n}) for n in lengths}
    longest = critics[lengths[0]]
    backend = longest.backend
    if backend.temperature > 0 or getattr(backend, "dtype", None) != "float32" or backend.engine != "transformers":
        print("critique_lengths: only for greedy fp32 generation with transformers (dtype float32, "
              "temperature 0, engine transformers)", file=sys.stderr)
        return 2
    items = []
    for spec in args.data:
        spec = json.loads(spec) if spec.lstrip().startswith("{") else spec
        for p in load(spec).pairs:
            items += [(prompt_text(p.prompt), p.chosen), (prompt_text(p.prompt), p.rejected)]
    items = list(dict.fromkeys(items))
    with CritiqueCache(critique_cache_path(args.cache)) as cache:
        keys = {n: [c.key(p, r) for p, r in items] for n, c in critics.items()}
        have = {n: cache.get_many(k) for n, k in keys.items()}
        todo = [i for i in range(len(items)) if any(keys[n][i] not in have[n] for n in lengths)]
        print(f"{len(items)} items, {len(todo)} to generate at {lengths[0]} tokens", file=sys.stderr, flush=True)
        backend._load()
        texts = [render(longest.template, *items[i], longest.max_chars) for i in todo]
        encoded = [backend._input_ids(t, None) for t in texts]  # as LocalBackend.stream encodes them
        if args.verify:
            sample = todo[: args.verify]
            for n in lengths[1:]:
                direct = critics[n].generate([items[i] for i in sample])
                rows = _generate(backend, [encoded[k] for k in range(len(sample))], lengths[0])
                derived = [backend.reply(row[:n])[0] for row in rows]
                bad = sum(a != b for a, b in zip(direct, derived))
                print(f"verify {n} tokens: {len(sample) - bad} of {len(sample)} derived replies equal the direct ones",
                      file=sys.stderr, flush=True)
                if bad:
                    return 1
        start, done = time.perf_counter(), 0
        for batch in backend.batches([len(e) for e in encoded]):
            rows = _generate(backend, [encoded[k] for k in batch], lengths[0])
            for n in lengths:
                cache.put_many(critics[n].identity, [(keys[n][todo[k]], *backend.reply(row[:n]))
                                                     for k, row in zip(batch, rows)])
            done += len(batch)
            print(f"{done}/{len(todo)} items, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return 0


def _generate(backend, batch, n_new):
    return backend._generate_transformers(batch, n_new, 0)


if __name__ == "__main__":
    sys.exit(main())
