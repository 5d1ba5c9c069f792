"""Do the fast local critics write the critiques the reference writes? And do RMs agree?

    .venv/bin/python bench/critique_quality.py [--engines transformers:qint8,ctranslate2:int8] [--pairs 200]
    .venv/bin/python bench/critique_quality.py --smoke

The quality check an engine must pass before critcore uses it by default, or the throughput
bench names it the fast engine (bench/critique_throughput.py):
1. Texts. Critiques the chosen and rejected responses of the first --pairs validation pairs with
   SmolLM2 in the reference configuration (transformers, fp32) and in each engine of --engines
   (ENGINE:PRECISION: transformers:bfloat16, ctranslate2:float32, ctranslate2:int8, and
   transformers:qint8, torch's dynamic int8, which critcore does not offer and this bench applies
   itself), through separate in-memory caches: the share of identical texts must be at
   least MIN_IDENTICAL_SHARE (bf16 qualified at 0.55). Also recorded: how far texts agree before
   they part (the shared prefix, as a share of the reference's characters) and how many repeat
   themselves (a 4-word sequence three times or more).
2. RMs. Runs the quickstart study (params/quick.yaml: MiniLM, No-Critiques and SmolLM2
   critiques, its training and critic settings) once per configuration, evaluated on --n-eval
   RewardBench-shaped pairs (the quickstart's 16 give intervals of zero width): the Score of the
   RM trained on each engine's critiques must lie within the reference RM's 95% CI and the
   reference's within its own. (transformers:qint8: its critiques are written first into the
   run's critique cache under the keys of the study's fp32 critic, which then finds them there.)
An engine passes when both hold. Writes --out (outputs/bench/critique_quality.json): the
verdicts under "engines", merged into what the file already holds (other engines, other CPUs).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import quantize_int8  # noqa: E402

OUT = ROOT / "outputs" / "bench" / "critique_quality.json"
MIN_IDENTICAL_SHARE = 0.5
REFERENCE = {"engine": "transformers", "dtype": "float32"}


def options(engine: str) -> dict:
    """critic_options of an ENGINE:PRECISION name (transformers:qint8: fp32, quantized by `critic`)."""
    name, _, precision = engine.partition(":")
    if precision == "qint8":
        return dict(REFERENCE)
    return {"engine": name, ("dtype" if name == "transformers" else "compute_type"): precision or "float32"}


def quantized(critic, engine: str):
    """The critic, with its model quantized in place when the engine is transformers:qint8."""
    if engine.endswith(":qint8"):
        critic.backend._load()
        quantize_int8(critic.backend._model)
    return critic


def shared_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def repeats_itself(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return any(grams.count(g) >= 3 for g in set(grams))


def texts_check(args, engines: list[str]) -> dict:
    from critcore.critique import LocalCritic, augment
    from critcore.data import load

    pairs = load(str(ROOT.parent / "shared" / "data" / "mix" / "validation.jsonl")).pairs[: args.pairs]
    texts, seconds = {}, {}
    for name, opts in [("reference", REFERENCE)] + [(e, options(e)) for e in engines]:
        critic = quantized(LocalCritic("smollm2", max_new_tokens=args.max_new_tokens, max_chars=400, batch_size=16,
                                       **opts), name)
        t = time.perf_counter()
        out = augment(pairs, critic, None, progress=not args.smoke)
        seconds[name] = round(time.perf_counter() - t, 1)
        texts[name] = [c for p in out for c in (p.chosen_critique, p.rejected_critique)]
        critic.release()
        print(f"{name}: {len(texts[name])} critiques in {seconds[name]} s", flush=True)
    ref = texts["reference"]
    out = {}
    for e in engines:
        same = sum(a == b for a, b in zip(ref, texts[e]))
        out[e] = {"critiques": len(ref), "identical": same, "identical_share": round(same / len(ref), 4),
                  "shared_prefix_share": round(sum(shared_prefix(a, b) for a, b in zip(ref, texts[e]))
                                               / max(1, sum(len(a) for a in ref)), 4),
                  "repetitive": sum(map(repeats_itself, texts[e])), "seconds": seconds[e],
                  "examples": [{"reference": a, "engine": b} for a, b in zip(ref, texts[e]) if a != b][:3]}
        print(f"{e}: {same}/{len(ref)} critiques identical; shared prefix {out[e]['shared_prefix_share']:.1%}; "
              f"repetitive {out[e]['repetitive']} (reference {sum(map(repeats_itself, ref))})", flush=True)
    return {"pairs": len(pairs), "reference_seconds": seconds["reference"],
            "reference_repetitive": sum(map(repeats_itself, ref)), "engines": out}


def quickstarts(args, engines: list[str]) -> list[dict]:
    """The quickstart study once per configuration: its result rows."""
    import pandas as pd

    from critcore.studies import run_study

    from critcore import config
    from critcore.critique import augment, make_critic
    from critcore.llm import CritiqueCache
    from critcore.splits import read_splits

    rows = []
    params = ROOT / "params" / "quick.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in [("reference", REFERENCE)] + [(e, options(e)) for e in engines]:
            sets = [f"critic_options.{k}={v}" for k, v in opts.items()] + [
                f"critique_cache={tmp}/{name.replace(':', '-')}.sqlite", f"n_eval={args.n_eval}"]
            t = time.perf_counter()
            if name.endswith(":qint8"):  # the study's own critic would write fp32 critiques: give it these
                raw = config.read_yaml(params)
                cfg = config.resolve(config.schema_for(raw), raw, sets=sets, where=str(params))
                critic = quantized(make_critic(cfg.critic, cfg.critic_options), name)
                with CritiqueCache(config.critique_cache_path(cfg.critique_cache)) as cache:
                    augment(read_splits(cfg).all_pairs(), critic, cache, progress=False)
                critic.release()
            out_dir = run_study(params, run_id=f"quality-{name.replace(':', '-')}",
                                out_root=Path(tmp) / "outputs", sets=sets, progress=False)
            generated = json.loads((out_dir / "run.json").read_text())["critique_cache"]["generated"]
            if name.endswith(":qint8") and generated:
                raise SystemExit(f"{name}: the study wrote {generated} critiques of its own instead of the engine's")
            table = pd.read_csv(out_dir / "results.csv", keep_default_na=False)  # an empty note is "", not NaN (invalid JSON)
            rows += [{"configuration": name, **r} for r in table.to_dict(orient="records")]
            print(f"quickstart {name}: {time.perf_counter() - t:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    print(df[df["metric"].isin(["Score", "PandaLM"])].to_string(index=False), flush=True)
    return rows


def verdict(texts: dict, rows: list[dict], engine: str) -> str:
    def score(conf):
        return next(r for r in rows if r["configuration"] == conf and r["metric"] == "Score" and r["critic"] != "none")

    reasons = []
    if texts["identical_share"] < MIN_IDENTICAL_SHARE:
        reasons.append(f"{texts['identical_share']:.1%} of texts identical (< {MIN_IDENTICAL_SHARE:.0%})")
    if rows:
        a, b = score("reference"), score(engine)
        if not (a["lo"] <= b["acc"] <= a["hi"] and b["lo"] <= a["acc"] <= b["hi"]):
            reasons.append(f"RM Score {b['acc']} [{b['lo']}, {b['hi']}] against the reference's "
                           f"{a['acc']} [{a['lo']}, {a['hi']}]")
    else:
        reasons.append("no RM check (--texts-only)")
    return "pass" if not reasons else "fail: " + "; ".join(reasons)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="ctranslate2:int8,transformers:qint8", help="ENGINE:PRECISION, comma-separated")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--n-eval", type=int, default=200, help="quickstart evaluation pairs (RewardBench; PandaLM: half)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts-only", action="store_true", help="the texts check only (no quickstart runs)")
    ap.add_argument("--smoke", action="store_true", help="2 pairs, 4 tokens, no quickstart runs")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.smoke:
        args.pairs, args.max_new_tokens, args.texts_only, args.engines = 2, 4, True, "transformers:qint8"
    import torch

    from critcore.hardware import cpu_info

    torch.set_num_threads(args.threads)
    engines = [e for e in args.engines.split(",") if e]
    texts = texts_check(args, engines)
    rows = [] if args.texts_only else quickstarts(args, engines)
    out = Path(tempfile.mkdtemp()) / "smoke.json" if args.smoke else Path(args.out)
    try:
        result = json.loads(out.read_text())
    except (OSError, ValueError):
        result = {}
    result.setdefault("engines", {})
    when = dt.datetime.now().isoformat(timespec="seconds")
    for e in engines:
        result["engines"][e] = {"verdict": verdict(texts["engines"][e], rows, e), "date": when, "cpu": cpu_info(),
                                "pairs": texts["pairs"], "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                                "load_average": os.getloadavg()[0], "reference": REFERENCE,
                                "reference_seconds": texts["reference_seconds"],
                                "reference_repetitive": texts["reference_repetitive"], **texts["engines"][e],
                                "quickstart": {"n_eval": args.n_eval, "rows": [r for r in rows if r["configuration"] in (e, "reference")]}}
        print(f"{e}: {result['engines'][e]['verdict']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
