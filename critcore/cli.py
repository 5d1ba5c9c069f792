"""`critcore` command line: train, evaluate, score, critique, run, config, demo.

Every command reads its parameters the same way (critcore.config): a params YAML (optional),
then its own flags, each a shorthand for one key (the flag's `dest`), and `--set key=value`; a
key given twice with different values is an error. Progress, notes and skip counts go to
stderr; stdout carries only the result (one JSON line; YAML for `config`).
A user error prints one line and exits 2; a critic that fails exits 1; a bug keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

LIMIT_HELP = "a seeded random sample of N pairs (seed: the data spec's, default 0), kept in file order"


def _common(p: argparse.ArgumentParser, params: bool = True) -> None:
    if params:
        p.add_argument("params", nargs="?", help="a params YAML (see `critcore config`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter, e.g. train.lr=1e-4 or eval_data.pandalm.limit=300 (repeatable)")


_NOT_KEYS = {"command", "func", "params", "set", "eval_sets"}  # argparse's and the command's own


def _load(args, schema: str, extra: dict | None = None):
    """The configuration: params file, then every flag given (its dest is the key it sets) and --set."""
    from . import config

    flags = {key: value for key, value in vars(args).items() if key not in _NOT_KEYS}
    return config.load(args.params, args.set, {**flags, **(extra or {})}, schema=schema)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _print(obj) -> None:
    """The command's result on stdout (once: under a launcher, by the main process)."""
    from .distributed import is_main

    if is_main():
        print(json.dumps(obj, default=str))


# ---------------------------------------------------------------- commands


def _job(args, command: str, extra: dict | None = None):
    """The command's job (critcore.jobs) on its configuration, once that configuration and the
    models it names (critcore.backbones.check: none is loaded) are checked; only then is what runs
    it (torch, seconds) imported, so a bad one fails at once."""
    from .backbones import check
    from .critique import parse_critic_spec

    cfg = _load(args, command, extra)
    if getattr(cfg, "backbone", None):
        check(cfg.backbone)
    if getattr(cfg, "model", None):
        check(str(cfg.model), "model")
    spec = parse_critic_spec(getattr(cfg, "critic", None))
    if spec is not None and spec["backend"] == "local":
        check(str(spec.get("model", "smollm2")), "critic model")
    from . import jobs

    return getattr(jobs, f"{command}_job")(cfg)


def cmd_train(args) -> int:
    from .report import results_row

    summary = _job(args, "train")
    _print({"out": summary.get("out_dir"), "validation": summary["train"].get("validation"),
            "critic": summary.get("critic"), **results_row(summary)})
    return 0


def _data_flags(items) -> dict:
    from .errors import ConfigError
    from .params import check_eval_names

    out = {}
    for item in items or []:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--data expects NAME=SPEC, got {item!r}")
        try:
            check_eval_names({name: spec})  # a '.' would also split the --set path below
        except ConfigError as e:
            raise ConfigError(f"--data: {e}") from None
        out[f"eval_data.{name}"] = spec
    return out


def cmd_evaluate(args) -> int:
    from .report import results_row

    summary = _job(args, "evaluate", _data_flags(args.eval_sets))
    _print({"out": summary["out_dir"], "critic": summary["critic"], **results_row(summary)})
    return 0


def cmd_score(args) -> int:
    _print(_job(args, "score"))
    return 0


def cmd_critique(args) -> int:
    _print(_job(args, "critique"))
    return 0


def cmd_run(args) -> int:
    from .studies.runner import run_study

    out = run_study(args.params, run_id=args.run_id, dry_run=args.dry_run, sets=args.set, project_time=args.dry_run)
    _print({"out_dir": str(out), "dry_run": args.dry_run})
    return 0


def cmd_config(args) -> int:
    from . import config, studies  # noqa: F401 - studies registers the studies' schemas

    cfg = config.load(args.params, args.set, schema=args.study)
    print(config.dump(cfg), end="")
    return 0


def cmd_demo(args) -> int:
    """The quickstart, then its result table and where its files are (for a person, not JSON)."""
    from .studies.quickstart import quickstart_summary
    from .studies.runner import run_study

    print(quickstart_summary(run_study("params/quick.yaml", run_id=args.run_id, sets=args.set, brief=True)))
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
    p.add_argument("--cache", dest="critique_cache", help="critique cache (default $CRITCORE_CACHE/critiques.sqlite)")


def _output(p: argparse.ArgumentParser, out: str, func, key: str = "out_dir", quiet: str = "no progress bars") -> None:
    """--out (setting `key`) and --quiet, and the function that runs the command."""
    p.add_argument("--out", dest=key, help=out)
    p.add_argument("--quiet", dest="progress", action="store_false", default=None, help=quiet)
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, config
    from .critique import CRITIC_FORMS

    parser = argparse.ArgumentParser(prog="critcore", description="Reward models trained with synthetic critiques.")
    parser.add_argument("--version", action="version", version=f"critcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    critic = f"critic spec: {CRITIC_FORMS}"

    p = sub.add_parser("train", help="train a reward model (and evaluate it when eval_data is given)")
    _common(p)
    p.add_argument("--backbone", help="minilm, smollm2, gemma3-270m, a local folder, a .gguf file or a hub name")
    p.add_argument("--critic", help=f"{critic}; none trains without critiques; unset uses the critiques the data carry")
    p.add_argument("--train", dest="train_data",
                   help="training data: FORMAT:PATH, a critcore JSONL path, or a format's hub default")
    p.add_argument("--validation", dest="validation_data", help="validation data spec (the learning-rate sweep picks on it)")
    p.add_argument("--limit", dest="train_data.limit", type=int, help=f"train on {LIMIT_HELP}")
    p.add_argument("--lr", dest="train.lr", type=float, help="peak learning rate")
    p.add_argument("--lr-sweep", type=_floats, help="comma-separated learning rates; the best on validation is kept")
    p.add_argument("--max-length", dest="train.max_length", type=int, help="tokens per input (prompt, response and critique)")
    p.add_argument("--epochs", dest="train.epochs", type=int, help="passes over the training pairs")
    p.add_argument("--seed", dest="train.seed", type=int, help="training seed")
    p.add_argument("--run-id", help="names the output folder when --out is not given")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the trained RM (weights, recipe, model card) to this "
                                                         "hub repo, owner/name; the token comes from $HF_TOKEN")
    _cache(p)
    _output(p, "output folder (default outputs/train/<run id>)", cmd_train)

    p = sub.add_parser("evaluate", help="score datasets with a saved reward model")
    _common(p)
    p.add_argument("--model", help="a saved critcore RM folder")
    p.add_argument("--data", dest="eval_sets", action="append", metavar="NAME=SPEC",
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
    _output(p, "with --data: the scored pairs as CSV", cmd_score, key="out")

    p = sub.add_parser("critique", help="add synthetic critiques to preference pairs")
    _common(p)
    p.add_argument("--critic", help=f"{critic}; default smollm2")
    p.add_argument("--data", help="the pairs: FORMAT:PATH, a critcore JSONL path or a JSON mapping {format, path, limit, ...}")
    _cache(p)
    p.add_argument("--limit", dest="data.limit", type=int, help=f"critique {LIMIT_HELP}")
    p.add_argument("--batch-size", dest="critic_options.batch_size", type=int, help="items per critic call and cache commit (local critics; an HTTP critic commits each critique as it arrives)")
    p.add_argument("--max-new-tokens", dest="critic_options.max_new_tokens", type=int, help="most tokens in one critique")
    p.add_argument("--template", dest="critic_options.template",
                   help="template file, or a name in critcore/templates (default: paper)")
    p.add_argument("--engine", dest="critic_options.engine", help="local critics: ctranslate2 or transformers")
    p.add_argument("--on-error", dest="critic_options.on_error", choices=["fail", "skip"],
                   help="an item the critic can never answer: fail or skip it")
    _output(p, "output: critcore JSONL (.jsonl), or a dataset in TRL's columns with the critiques: a .parquet file "
               "or a save_to_disk folder (no suffix); written atomically", cmd_critique, key="out", quiet="no progress bar")

    p = sub.add_parser("run", help="run a study notebook with a params YAML (papermill)")
    p.add_argument("params", help="params YAML naming its study")
    _common(p, params=False)
    p.add_argument("--run-id", help="default: the params file's stem")
    p.add_argument("--dry-run", action="store_true",
                   help="check the parameters and data, print the projected wall time, train nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="print the fully resolved, typed parameters as YAML")
    _common(p)
    p.add_argument("--study", help=f"the schema: {', '.join(config.SCHEMAS)} or a study's name (default: the params' "
                                    "study, else train)")
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
