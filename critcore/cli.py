"""`critcore` command line: train, evaluate, score, critique, run, config, demo.

Every command reads its parameters the same way (critcore.config): a params YAML (optional),
then `--set key=value`, then its own flags, each a shorthand for one key. Progress, notes and
skip counts go to stderr; stdout carries only the result (one JSON line; YAML for `config`).
A user error prints one line and exits 2; a critic that fails exits 1; a bug keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

LIMIT_HELP = "a seeded random sample of N pairs (seed: the data spec's, default 0), kept in file order"


def _critic_help() -> str:
    from .critique import CRITIC_FORMS

    return f"critic spec: {CRITIC_FORMS}"


def _common(p: argparse.ArgumentParser, params: bool = True) -> None:
    if params:
        p.add_argument("params", nargs="?", help="a params YAML (see `critcore config`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. train.lr=1e-4 or eval_data.pandalm.limit=300 (repeatable)")


def _flags(args, mapping: dict[str, str]) -> dict:
    """{config key path: value} for the flags given (None = not given)."""
    return {key: getattr(args, dest) for dest, key in mapping.items() if getattr(args, dest, None) is not None}


def _load(args, schema: str, mapping: dict[str, str], extra: dict | None = None):
    from . import config

    flags = {**_flags(args, mapping), **(extra or {})}
    if getattr(args, "quiet", False):
        flags["progress"] = False
    return config.load(args.params, args.set, flags, schema=schema)


def _print(obj) -> None:
    print(json.dumps(obj, default=str))


# ---------------------------------------------------------------- commands


TRAIN_FLAGS = {"backbone": "backbone", "critic": "critic", "train": "train_data", "validation": "validation_data",
               "limit": "train_data.limit", "lr": "train.lr", "max_length": "train.max_length",
               "epochs": "train.epochs", "seed": "train.seed", "out": "out_dir", "cache": "critique_cache",
               "run_id": "run_id"}


def cmd_train(args) -> int:
    from .report import results_row
    from .run import train_job

    extra = {"lr_sweep": [float(x) for x in args.lr_sweep.split(",")]} if args.lr_sweep else None
    cfg = _load(args, "train", TRAIN_FLAGS, extra)
    summary = train_job(cfg)
    _print({"out": summary.get("out_dir"), "validation": summary["train"].get("validation"),
            "critic": summary.get("critic"), **results_row(summary)})
    return 0


EVAL_FLAGS = {"model": "model", "critic": "critic", "allow_critic_mismatch": "allow_critic_mismatch",
              "max_length": "max_length", "batch_size": "batch_size", "out": "out_dir", "cache": "critique_cache"}


def _data_flags(items) -> dict:
    from .config import ConfigError, name_problems

    out = {}
    for item in items or []:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--data expects NAME=SPEC, got {item!r}")
        for problem in name_problems({name: spec}):  # a '.' would also split the --set path below
            raise ConfigError(f"--data: {problem}")
        out[f"eval_data.{name}"] = spec
    return out


def cmd_evaluate(args) -> int:
    from .report import results_row
    from .run import evaluate_job

    cfg = _load(args, "evaluate", EVAL_FLAGS, _data_flags(args.data))
    summary = evaluate_job(cfg)
    _print({"out": summary["out_dir"], "critic": summary["critic"], **results_row(summary)})
    return 0


SCORE_FLAGS = {"model": "model", "prompt": "prompt", "response": "response", "critique": "critique",
               "critic": "critic", "data": "data", "out": "out", "allow_critic_mismatch": "allow_critic_mismatch",
               "max_length": "max_length", "cache": "critique_cache"}


def cmd_score(args) -> int:
    from .run import score_job

    _print(score_job(_load(args, "score", SCORE_FLAGS)))
    return 0


CRITIQUE_FLAGS = {"critic": "critic", "data": "data", "out": "out", "cache": "critique_cache", "limit": "data.limit",
                  "batch_size": "critic_options.batch_size", "max_new_tokens": "critic_options.max_new_tokens",
                  "template": "critic_options.template", "engine": "critic_options.engine",
                  "on_error": "critic_options.on_error"}


def cmd_critique(args) -> int:
    from .run import critique_job

    _print(critique_job(_load(args, "critique", CRITIQUE_FLAGS)))
    return 0


def cmd_run(args) -> int:
    from .studies.runner import run_study

    out = run_study(args.params, run_id=args.run_id, dry_run=args.dry_run, sets=args.set, project_time=args.dry_run)
    _print({"out_dir": str(out), "dry_run": args.dry_run})
    return 0


def cmd_config(args) -> int:
    from . import config

    cfg = config.load(args.params, args.set, schema=args.study)
    print(config.dump(cfg), end="")
    return 0


def cmd_demo(args) -> int:
    from .studies.runner import run_study

    _print({"out_dir": str(run_study("params/quick.yaml", run_id=args.run_id, sets=args.set))})
    return 0


# ---------------------------------------------------------------- the parser


def _scoring(p: argparse.ArgumentParser, critic: str) -> None:
    """The options of the commands that score a saved RM as it was trained."""
    p.add_argument("--critic", help=f"{critic}; default: the critic in the model's recipe")
    p.add_argument("--allow-critic-mismatch", action="store_true", default=None,
                   help="score with another critic than the model was trained with")
    p.add_argument("--max-length", type=int, help="default: the model's recipe")
    _cache(p)


def _cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="critique cache (default $CRITCORE_CACHE/critiques.sqlite)")


def _output(p: argparse.ArgumentParser, out: str, func, quiet: str = "no progress bars") -> None:
    """--out and --quiet, and the function that runs the command."""
    p.add_argument("--out", help=out)
    p.add_argument("--quiet", action="store_true", help=quiet)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, config

    parser = argparse.ArgumentParser(prog="critcore", description="Reward models trained with synthetic critiques.")
    parser.add_argument("--version", action="version", version=f"critcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    critic = _critic_help()

    p = sub.add_parser("train", help="train a reward model (and evaluate it when eval_data is given)")
    _common(p)
    p.add_argument("--backbone", help="minilm, smollm2, gemma3-270m, a local folder, a .gguf file or a hub name")
    p.add_argument("--critic", help=f"{critic}; none trains without critiques; unset uses the critiques the data carry")
    p.add_argument("--train", help="training data: FORMAT:PATH, a critcore JSONL path, or a format's hub default")
    p.add_argument("--validation", help="validation data spec (the learning-rate sweep picks on it)")
    p.add_argument("--limit", type=int, help=f"train on {LIMIT_HELP}")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--lr-sweep", help="comma-separated learning rates; the best on validation is kept")
    p.add_argument("--max-length", type=int, help="tokens per input (prompt, response and critique)")
    p.add_argument("--epochs", type=int, help="passes over the training pairs")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--run-id", help="names the output folder when --out is not given")
    _cache(p)
    _output(p, "output folder (default outputs/train/<run id>)", cmd_train)

    p = sub.add_parser("evaluate", help="score datasets with a saved reward model")
    _common(p)
    p.add_argument("--model", help="a saved critcore RM folder")
    p.add_argument("--data", action="append", metavar="NAME=SPEC",
                   help="an evaluation set, e.g. pandalm=pandalm:../shared/data/pandalm/testset-v1.json (repeatable)")
    _scoring(p, critic)
    p.add_argument("--batch-size", type=int, help="sequences per forward pass")
    _output(p, "output folder (default outputs/evaluate/<run id>)", cmd_evaluate)

    p = sub.add_parser("score", help="critique (with the model's critic) and score one response, or a data file")
    _common(p)
    p.add_argument("--model", help="a saved critcore RM folder")
    p.add_argument("--prompt", help="the prompt")
    p.add_argument("--response", help="the response")
    p.add_argument("--critique", help="use this critique instead of writing one with the model's critic")
    p.add_argument("--data", help="score every pair of this data spec instead (with --out)")
    _scoring(p, critic)
    _output(p, "with --data: the scored pairs as CSV", cmd_score)

    p = sub.add_parser("critique", help="add synthetic critiques to preference pairs")
    _common(p)
    p.add_argument("--critic", help=f"{critic}; default smollm2")
    p.add_argument("--data", help="the pairs: FORMAT:PATH, a critcore JSONL path or a JSON mapping {format, path, limit, ...}")
    _cache(p)
    p.add_argument("--limit", type=int, help=f"critique {LIMIT_HELP}")
    p.add_argument("--batch-size", type=int, help="items per critic call and cache commit")
    p.add_argument("--max-new-tokens", type=int, help="most tokens in one critique")
    p.add_argument("--template", help="template file, or a name in critcore/templates (default: paper)")
    p.add_argument("--engine", help="local critics: ctranslate2 or transformers")
    p.add_argument("--on-error", choices=["fail", "skip"], help="an item the critic can never answer: fail or skip it")
    _output(p, "output JSONL, written atomically", cmd_critique, quiet="no progress bar")

    p = sub.add_parser("run", help="run a study notebook with a params YAML (papermill)")
    p.add_argument("params", help="params YAML naming its study")
    _common(p, params=False)
    p.add_argument("--run-id", help="default: the params file's stem")
    p.add_argument("--dry-run", action="store_true",
                   help="check the parameters and data, print the projected wall time, train nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="print the fully resolved, typed parameters as YAML")
    _common(p)
    p.add_argument("--study", choices=sorted(config.SCHEMAS), help="the schema (default: the params' study, else train)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("demo", help="the quickstart study on the embedded defaults")
    _common(p, params=False)
    p.add_argument("--run-id", default="demo", help="output folder name under outputs/quickstart/")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .critique import CriticError
    from .errors import UserError

    try:
        return args.func(args)
    except UserError as e:
        print(f"critcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave cannot be read or written
        where = f": {e.filename}" if e.filename else ""
        print(f"critcore {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except CriticError as e:
        print(f"critcore {args.command}: critic failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"critcore {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if type(e).__name__ != "PapermillExecutionError":
            raise
        print(f"critcore {args.command}: the notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
