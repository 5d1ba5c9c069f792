"""Critique throughput of the local SmolLM2-135M critic, by engine and batch size, with the roofline.

    .venv/bin/python bench/critique_throughput.py [--items 64] [--max-new-tokens 48] [--batches 16,32,64] [--repeats 3]
    .venv/bin/python bench/critique_throughput.py --smoke        # a seconds-long check that it runs

Every configuration (engine x batch size) runs in its own process on the same real items (the
chosen and rejected responses of seeded-random pairs of the training mix, each under
--max-chars characters), with the same --max-new-tokens and --threads, after a warm-up; the
process reports generation seconds, tokens generated, the seconds spent in the prompt pass
(prefill: the forward passes over whole prompts, timed by hooks; transformers only, since
CTranslate2 overlaps a batch's prompt pass with its decoding) and its peak memory (max RSS, model
included). Engines: transformers in fp32 (the reference, named "transformers"), in bf16 (only
where the CPU has bf16 natively: elsewhere it is emulated, some 100x slower, and is skipped with
the reason in `skipped`) and in qint8 (torch's dynamic int8 of every Linear layer, applied here:
critcore does not offer it), ctranslate2 (float32 and int8), and llama.cpp (llama-cpp-python on the
GGUF file, batch 1 only, when it is installed).

1. A sweep measures every engine at every batch size (--batches; studies critique at 32).
2. The fast engine is the fastest in the sweep among the configurations that passed the quality
   check (bench/critique_quality.py, whose verdicts --quality names), the fp32 reference
   included: so it is never slower than the reference. An engine without a verdict on record
   is not picked.
3. The headline alternates (ABBA) over --repeats: the fast engine at its best batch against
   the reference at batch 16; so does the fastest configuration overall, when it is another
   (what the quality check costs, with the verdict that kept it out). Verdicts taken on the
   other kind of CPU (native bf16 or not) do not count. The load average is recorded before and after every timed run,
   with the CPU other processes used meanwhile (bench/loadmeter.py); a ratio taken while others
   used more than a quarter of a core is flagged and left out of the headline.
4. The roofline (bench/roofline.py) of every transformers configuration, prefill and decode apart: prefill
   against the matmul peak of the engine's precision (the int8 engines: torch's dynamic int8
   Linear), decode against the slower of that peak and the memory bandwidth (each decoding step
   streams the weights; each token reads its key/value cache).
Writes outputs/bench/critique_throughput.json (reference_tok_s, fast_engine, fast_tok_s, ratio,
roofline, ...). Run it with nothing else running.
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
from roofline import machine_line, probes, quantize_int8, stage, table  # noqa: E402

OUT = ROOT / "outputs" / "bench" / "critique_throughput.json"
QUALITY = ROOT / "outputs" / "results" / "bench" / "critique_quality.json"
REFERENCE = "transformers"  # fp32 transformers, whose greedy texts do not depend on the batch
REFERENCE_BATCH = 16
ENGINES = ("transformers", "transformers:bfloat16", "transformers:qint8", "ctranslate2:float32", "ctranslate2:int8")


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


def skipped_engines(engines) -> dict[str, str]:
    """The engines that would run emulated bf16 on this CPU, with the reason."""
    from critcore.hardware import native_bf16

    if native_bf16():
        return {}
    return {e: "bf16 is emulated on this CPU (no AVX512-BF16 or AMX): some 100x slower than fp32"
            for e in engines if "bfloat16" in e}


# ---------------------------------------------------------------- one configuration, in its own process


def backend_for(engine: str, batch: int, max_new_tokens: int):
    """A LocalBackend for ENGINE:PRECISION, loaded (transformers:qint8: fp32, then quantized)."""
    from critcore.llm import LocalBackend

    name, _, precision = engine.partition(":")
    if name == "transformers":  # plain "transformers" is the fp32 reference, whatever this CPU's default
        options = {"dtype": "float32" if precision in ("", "qint8") else precision}
    else:
        options = {"compute_type": precision} if precision else {}
    backend = LocalBackend("smollm2", engine=name, max_new_tokens=max_new_tokens, batch_size=batch, **options)
    backend._load()
    if precision == "qint8":
        quantize_int8(backend._model)
    return backend


class PrefillClock:
    """Seconds spent in the prompt pass of a transformers engine: the forward passes over more than
    one token (hooks on the model), and the prompts they covered. CTranslate2 gets none: the prompts
    of its batch get their first new tokens far apart (SmolLM2 fp32, 16 prompts of 224 to 333
    tokens: from 4.8 to 11.4 s, while the batch with max_length=1 took 10.6 s), so its prompt pass
    and its decoding overlap and no clock separates them; its rows carry whole-generation speed."""

    def __init__(self, backend):
        self.seconds, self.prompts = 0.0, 0
        backend._model.register_forward_pre_hook(self._start, with_kwargs=True)
        backend._model.register_forward_hook(self._stop, with_kwargs=True)

    def _start(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._t = time.perf_counter() if ids is not None and ids.shape[1] > 1 else None
        self.prompts += ids.shape[0] if self._t is not None else 0

    def _stop(self, module, args, kwargs, output):
        if self._t is not None:
            self.seconds += time.perf_counter() - self._t


def worker(engine: str, batch: int, args) -> dict:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.items_file).read_text())
    if engine == "llama.cpp":
        out = _llama_cpp(texts, args)
    else:
        backend = backend_for(engine, batch, args.max_new_tokens)
        backend.complete(texts[:1], max_new_tokens=4)  # load and warm up
        clock = PrefillClock(backend) if backend.engine == "transformers" else None
        t = time.perf_counter()
        replies = backend.complete(texts)
        out = {"seconds": time.perf_counter() - t,
               **({"prefill_seconds": clock.seconds, "prefill_prompts": clock.prompts} if clock else {}),
               "tokens": sum(n for _, n in replies), "outputs": [r for r, _ in replies],
               "new_tokens": [n for _, n in replies],
               "batches": backend.batches([len(backend._input_ids(x, None)) for x in texts]),
               "prompt_tokens": [len(backend._input_ids(x, None)) for x in texts]}
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


# ---------------------------------------------------------------- the roofline of one configuration


def geometry() -> dict:
    """What the roofline needs of SmolLM2-135M: the Linear weights a token passes through (the
    output head apart), the head's size, and the attention shape."""
    import torch
    from transformers import AutoModelForCausalLM

    from critcore.backbones import resolve

    model = AutoModelForCausalLM.from_pretrained(resolve("smollm2"), dtype=torch.float32)
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    linear = sum(m.weight.numel() for m in model.model.modules() if isinstance(m, torch.nn.Linear))
    return {"linear": linear, "head": model.lm_head.weight.numel(), "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads, "head_dim": head_dim}


def weight_bytes(engine: str) -> tuple[int, int]:
    """Bytes per weight of (the Linear layers, the output head) for an engine."""
    return {"transformers:qint8": (1, 1), "transformers:bfloat16": (2, 2)}.get(engine, (4, 4))


def roofline_of(row: dict, g: dict, machine: dict) -> list[dict]:
    """Prefill and decode of one measured configuration. Prefill: every prompt token through the
    Linear weights, causal attention over the prompt, the head once per row; the weights streamed
    once per batch. Decode: the rest of the tokens, each through all weights and attention over
    its context; each step of a batch (as many as its longest answer) streams the weights once,
    each token reads its context's key/value cache (fp32). None where no clock timed the prompt pass
    (CTranslate2, llama.cpp)."""
    if "prefill_seconds" not in row:
        return []
    engine = row["engine"]
    precision = {"transformers:qint8": "qint8", "transformers:bfloat16": "bfloat16"}.get(engine, "float32")
    peak, bw = machine["matmul_peak_gflops"][precision], machine["memory_gb_s"]
    wb, hb = weight_bytes(engine)
    weights = g["linear"] * wb + g["head"] * hb
    attn = g["layers"] * g["heads"] * g["head_dim"]  # multiply-adds per key, per token
    kv = 2 * g["layers"] * g["kv_heads"] * g["head_dim"] * 4  # bytes per cached token
    p, n = row["prompt_tokens"], row["new_tokens"]
    pre_flops = sum(2 * g["linear"] * p[i] + 2 * attn * p[i] ** 2 + 2 * g["head"] for i in range(len(p)))
    pre_bytes = len(row["batches"]) * weights + kv * sum(p)
    dec_flops = dec_bytes = 0.0
    for idx in row["batches"]:
        steps = max(n[i] for i in idx) - 1  # the first new token comes out of the prompt pass
        dec_bytes += steps * weights
        for i in idx:
            for t in range(1, n[i]):
                dec_flops += 2 * (g["linear"] + g["head"]) + 4 * attn * (p[i] + t)
                dec_bytes += kv * (p[i] + t)
    pre_s, dec_s = row["prefill_seconds"], row["seconds"] - row["prefill_seconds"]
    if pre_s <= 0 or dec_s <= 0:
        return []  # the clock saw no prompt pass
    common = {"peak_gflops": peak, "memory_gb_s": bw, "precision": precision, "engine": engine, "batch": row["batch"]}
    return [stage("critique prefill", seconds=pre_s, flops=pre_flops, bytes_=pre_bytes, throughput=sum(p) / pre_s,
                  unit="tok/s", **common),
            stage("critique decode", seconds=dec_s, flops=dec_flops, bytes_=dec_bytes,
                  throughput=(row["tokens"] - len(n)) / dec_s, unit="tok/s", **common)]


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


def qualified(path: Path, native_bf16: bool) -> dict[str, str]:
    """engine -> the quality verdict on record ("pass" or why not), from critique_quality.py's JSON.
    A verdict taken on the other kind of CPU (native bf16 or not) does not count here: the int8
    and bf16 kernels differ between them, and so may the texts."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {REFERENCE: "pass"}
    verdicts = {REFERENCE: "pass"}
    for e, v in record.get("engines", {}).items():
        same_kind = v.get("cpu", {}).get("native_bf16") == native_bf16
        verdicts[e] = v["verdict"] if same_kind else "quality checked on the other kind of CPU only"
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mix" / "train.jsonl"))
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--max-chars", type=int, default=1200, help="prompt+chosen+rejected characters, at most")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="16,32,64", help="batch sizes the sweep tries")
    ap.add_argument("--engines", default=",".join(ENGINES), help="engines the sweep tries (the reference always)")
    ap.add_argument("--quality", default=str(QUALITY), help="critique_quality.py's JSON: which engines qualified")
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
        args.engines = "transformers,transformers:bfloat16,transformers:qint8"
    import importlib.util
    import tempfile

    import torch

    from critcore.provenance import git_info

    torch.set_num_threads(args.threads)
    machine = probes(seconds=0.2 if args.smoke else 3.0, precisions=("float32", "bfloat16", "qint8"))
    g = geometry()
    items = load_items(args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(items, f)
        args.items_file = f.name
    engines = [REFERENCE] + [e for e in args.engines.split(",") if e and e != REFERENCE]
    skipped = skipped_engines(engines)
    engines = [e for e in engines if e not in skipped]
    verdicts = qualified(Path(args.quality), machine["cpu"]["native_bf16"])
    print(machine_line(machine), flush=True)
    print(f"{len(items)} items, {args.max_new_tokens} new tokens, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.2f}; skipped: {skipped or 'none'}", flush=True)
    batches = sorted({int(b) for b in args.batches.split(",")} | ({REFERENCE_BATCH} if not args.smoke else set()))
    print("sweep:")
    sweep = [timed(e, b, args) for e in engines for b in batches]
    if importlib.util.find_spec("llama_cpp") and not args.smoke:
        sweep.append(timed("llama.cpp", 1, args))
    reference = next(r for r in sweep if r["engine"] == REFERENCE and r["batch"] == (batches[0] if args.smoke else REFERENCE_BATCH))
    ref_texts = reference["outputs"]
    for r in sweep:
        r["identical"] = sum(a == b for a, b in zip(r["outputs"], ref_texts))
        r["vs_reference"] = round(r["tok_s"] / reference["tok_s"], 3)
        r["quality"] = verdicts.get(r["engine"], "no quality check on record")
        r["roofline"] = roofline_of(r, g, machine)
    best = {e: max((r for r in sweep if r["engine"] == e), key=lambda r: r["tok_s"]) for e in {r["engine"] for r in sweep}}
    passing = [r for r in sweep if r["quality"] == "pass"]
    fast = max(passing, key=lambda r: r["tok_s"])
    print(f"fastest that passed the quality check: {fast['engine']} batch {fast['batch']} "
          f"({fast['tok_s']:.1f} tok/s, {fast['vs_reference']}x the reference at batch {reference['batch']})")
    fast_engine, fast_batch, note = fast["engine"], fast["batch"], None
    if fast is reference:
        rows, h = [], None
        note = "the reference itself was the fastest configuration that passed the quality check"
    else:
        print(f"headline, {args.repeats} repeats, ABBA:")
        rows = abba((fast["engine"], fast["batch"]), (REFERENCE, reference["batch"]), args.repeats, args)
        h = headline(rows)
        if h["ratio_median"] < 1:  # never name an engine slower than the reference
            note = f"{fast_engine} batch {fast_batch} was slower than the reference in the headline ({h['ratio_median']}x)"
            fast_engine, fast_batch = REFERENCE, reference["batch"]
    fastest = max(sweep, key=lambda r: r["tok_s"])
    h_fastest = None
    if fastest is not fast and fastest is not reference:  # what the quality check costs, measured the same way
        print(f"the fastest overall, {fastest['engine']} batch {fastest['batch']} ({fastest['quality']}), "
              f"against the reference, {args.repeats} repeats, ABBA:")
        h_fastest = headline(abba((fastest["engine"], fastest["batch"]), (REFERENCE, reference["batch"]),
                                  args.repeats, args))
    won = h is not None and h["ratio_median"] >= 1
    ref_tok_s = statistics.median(r["b_tok_s"] for r in rows) if rows else reference["tok_s"]
    result = {
        "cpu": machine["cpu"], "matmul_peak_gflops": machine["matmul_peak_gflops"], "memory_gb_s": machine["memory_gb_s"],
        "items": len(items), "prompt_tokens": sum(reference["prompt_tokens"]), "max_new_tokens": args.max_new_tokens,
        "threads": args.threads, "batches": batches, "skipped": skipped,
        "reference": f"{REFERENCE} batch {reference['batch']}",
        "reference_tok_s": round(ref_tok_s, 2), "fast_engine": fast_engine, "fast_batch": fast_batch,
        "fast_tok_s": round(statistics.median(r["a_tok_s"] for r in rows) if won else ref_tok_s, 2),
        "ratio": h["ratio_median"] if won else 1.0, "headline": h, "note": note,
        "fastest_overall": {"engine": fastest["engine"], "batch": fastest["batch"], "tok_s": round(fastest["tok_s"], 2),
                            "vs_reference": fastest["vs_reference"], "quality": fastest["quality"],
                            "headline": h_fastest},
        "quality_source": str(args.quality), "quality": {e: verdicts.get(e, "no quality check on record") for e in best},
        "identical_to_reference": {f"{r['engine']} batch {r['batch']}": f"{r['identical']}/{len(items)}" for r in sweep},
        "roofline": [x for r in sweep for x in r["roofline"]],
        "sweep": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                   if k not in ("outputs", "roofline", "batches", "new_tokens", "prompt_tokens")} for r in sweep],
        "peak_rss_mb": {e: r["peak_rss_mb"] for e, r in best.items()},
        "loadavg_start": [round(x, 2) for x in machine["loadavg"]], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "git": git_info(),
    }
    print("roofline:")
    print(table(result["roofline"]))
    print(f"fast engine: {fast_engine} batch {fast_batch}, {result['ratio']}x the reference"
          f"{' (runs ' + str(h['ratio_runs']) + ')' if h else ''}"
          f"{'; ' + note if note else ''}")
    if h_fastest:
        print(f"fastest overall: {fastest['engine']} batch {fastest['batch']}, {h_fastest['ratio_median']}x the reference "
              f"(runs {h_fastest['ratio_runs']}); quality: {fastest['quality']}")
    out = Path(tempfile.mkdtemp()) / "smoke.json" if args.smoke else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    print(json.dumps({k: result[k] for k in ("reference_tok_s", "fast_engine", "fast_tok_s", "ratio")}))


if __name__ == "__main__":
    main()
