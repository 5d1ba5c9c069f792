"""`critcore` command line: train, evaluate, score, critique, run, demo."""
from __future__ import annotations

import argparse
import json
import sys
import time


def _set(values: list[str]) -> dict:
    """--set train.lr=1e-4 style overrides, values parsed as YAML."""
    import yaml

    out: dict = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"critcore: --set expects key=value, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(dict(base.get(k) or {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def _params(args, **flags) -> dict:
    from .experiment import expand, load_params

    params = load_params(args.params, **flags)
    return expand(_merge(params, _set(args.set)))


def cmd_train(args) -> int:
    from .experiment import results_row, run_from_params

    train_flags = {k: v for k, v in (("lr", args.lr), ("max_length", args.max_length), ("epochs", args.epochs),
                                     ("seed", args.seed)) if v is not None}
    params = _params(args, backbone=args.backbone, critic=args.critic, out=args.out,
                     lr_sweep=[float(x) for x in args.lr_sweep.split(",")] if args.lr_sweep else None)
    if args.train:
        params["train_data"] = args.train
    if args.validation:
        params["validation_data"] = args.validation
    if args.limit is not None:
        spec = params.get("train_data")
        params["train_data"] = {**(spec if isinstance(spec, dict) else _spec(spec)), "limit": args.limit}
    params["train"] = {**(params.get("train") or {}), **train_flags}
    start = time.perf_counter()
    summary = run_from_params(params, progress=not args.quiet)
    val = summary["train"].get("validation")
    print(json.dumps({"out": params["out"], "validation": val, **results_row(summary),
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


def _spec(text: str) -> dict:
    fmt, sep, path = text.partition(":")
    return {"format": fmt, "path": path} if sep else {"format": "jsonl", "path": text}


def cmd_evaluate(args) -> int:
    from .critique import augment
    from .evaluate import evaluate
    from .experiment import load_pairs, results_row
    from .metrics import load_sections
    from .model import RewardModel

    params = _params(args, out=args.out, critic=args.critic)
    specs = dict(params.get("eval_data") or {})
    for item in args.data or []:
        name, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"critcore evaluate: --data expects NAME=SPEC, got {item!r}")
        specs[name] = spec
    if not specs:
        raise SystemExit("critcore evaluate: give --data NAME=SPEC or eval_data in the params file")
    if not params.get("out"):
        raise SystemExit("critcore evaluate: give --out DIR or out in the params file")
    sets = {name: load_pairs(spec) for name, spec in specs.items()}
    if params.get("critic") not in (None, "none"):
        sets = {k: augment(v, params["critic"], params.get("critique_cache")) for k, v in sets.items()}
    rm = RewardModel.load(args.model)
    sections = load_sections(params["sections"]) if params.get("sections") else None
    summary = evaluate(rm, sets, params["out"], sections=sections, max_length=args.max_length)
    print(json.dumps({"out": params["out"], **results_row(summary, *_names(sets))}))
    return 0


def _names(sets: dict) -> tuple[str, str]:
    rb = next((n for n in sets if "pandalm" not in n), "rewardbench")
    return rb, next((n for n in sets if "pandalm" in n), "pandalm")


def cmd_score(args) -> int:
    from .evaluate import score_one
    from .model import RewardModel

    rm = RewardModel.load(args.model)
    print(f"{score_one(rm, args.prompt, args.response, args.critique, args.max_length):.6f}")
    return 0


def cmd_run(args) -> int:
    from .studies import run_study

    out = run_study(args.params, run_id=args.run_id, dry_run=args.dry_run)
    print(out)
    return 0


def cmd_demo(args) -> int:
    from .studies import run_study

    print(run_study("params/quick.yaml", run_id=args.run_id))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .critique import add_cli

    parser = argparse.ArgumentParser(prog="critcore", description="Reward models trained with synthetic critiques.")
    parser.add_argument("--version", action="version", version=f"critcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a reward model (and evaluate it when eval_data is given)")
    p.add_argument("params", nargs="?", help="params YAML (keys: backbone, critic, train_data, validation_data, eval_data, sections, train, lr_sweep, out)")
    p.add_argument("--backbone", help="minilm, smollm2, gemma3-270m, a local dir, a .gguf file or a hub name")
    p.add_argument("--critic", help="critic spec: none, smollm2, simulated:0.9, ... (see critcore critique --help)")
    p.add_argument("--train", help="training data spec, FORMAT:PATH or a JSONL path")
    p.add_argument("--validation", help="validation data spec")
    p.add_argument("--limit", type=int, help="train on this many pairs (a seeded sample)")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-sweep", help="comma-separated learning rates; the best on validation is kept")
    p.add_argument("--max-length", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a param, e.g. train.bf16=true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score datasets with a saved reward model")
    p.add_argument("params", nargs="?", help="params YAML (eval_data, sections, critic, out)")
    p.add_argument("--model", required=True, help="a saved critcore RM directory")
    p.add_argument("--data", action="append", metavar="NAME=SPEC", help="e.g. pandalm=pandalm:../shared/data/pandalm/testset-v1.json")
    p.add_argument("--critic", help="critic for the test set: must be the one the RM was trained with")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="print the reward of one response")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--response", required=True)
    p.add_argument("--critique")
    p.add_argument("--max-length", type=int, default=512)
    p.set_defaults(func=cmd_score)

    add_cli(sub)

    p = sub.add_parser("run", help="run a study notebook with a params YAML (papermill)")
    p.add_argument("params", help="params YAML naming its notebook")
    p.add_argument("--run-id", help="default: the params file's stem")
    p.add_argument("--dry-run", action="store_true", help="check the parameters and data specs, train nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the quickstart study on the embedded defaults")
    p.add_argument("--run-id", default="demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"critcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .critique import CriticError

        if isinstance(e, CriticError):
            print(f"critcore {args.command}: critic failed: {e}", file=sys.stderr)
            return 1
        if type(e).__name__ != "PapermillExecutionError":
            raise
        print(f"critcore {args.command}: the notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
