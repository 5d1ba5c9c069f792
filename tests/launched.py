"""What tests/test_distributed.py runs in each process of `accelerate launch` (or under plain
python, as one process): one stage of critcore, with what this process did written to
OUT/rank-<rank>.json.

    launched.py gather OUT                  split, gather, total, all_gather, from_main, barrier
    launched.py score MODEL PAIRS OUT BATCH score_pairs and evaluate (eval/ under OUT); forward rows counted
    launched.py critique SPEC PAIRS CACHE OUT   augment through the SQLite cache; items asked of the critic counted
"""
import json
import sys
from pathlib import Path

from critcore import distributed


def _write(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"rank": distributed.rank(), "world": distributed.world(), "is_main": distributed.is_main(), **record}
    (out / f"rank-{distributed.rank()}.json").write_text(json.dumps(record))


def gather(out: Path) -> None:
    mine = distributed.split(list(range(11)))
    squares = distributed.gather([i * i for i in mine])
    totals = distributed.total([len(mine), 0.5])
    ranks = distributed.all_gather(distributed.rank())
    main = distributed.from_main(f"from {distributed.rank()}")
    distributed.barrier()
    _write(out, {"mine": mine, "squares": squares, "totals": totals, "ranks": ranks, "main": main})


def score(model: str, pairs_file: str, out: Path, batch_size: int) -> None:
    from critcore.data import read_pairs
    from critcore.evaluate import evaluate, score_pairs
    from critcore.model import RewardModel

    rm = RewardModel.load(model)
    rows, largest = [0], [0]
    forward = rm.forward

    def counted(input_ids, attention_mask):
        rows[0] += input_ids.shape[0]
        largest[0] = max(largest[0], input_ids.shape[0])
        return forward(input_ids, attention_mask)

    rm.forward = counted
    pairs = read_pairs(pairs_file)
    df = score_pairs(rm, pairs, batch_size=batch_size, with_critiques=False)
    summary = evaluate(rm, {"test": pairs}, out / "eval", batch_size=batch_size, with_critiques=False, n_boot=50)
    _write(out, {"rows": rows[0], "largest_batch": largest[0], "ids": df["id"].tolist(), "chosen": df["score_chosen"].tolist(),
                 "rejected": df["score_rejected"].tolist(), "overall": summary["test"]["overall"]})


def critique(spec: str, pairs_file: str, cache_path: str, out: Path) -> None:
    from critcore.critique import augment, make_critic
    from critcore.data import read_pairs
    from critcore.llm import CritiqueCache

    critic = make_critic(json.loads(spec))
    asked, batches = [], []
    if critic.backend is not None:
        stream, generate = critic.backend.stream, getattr(critic.backend, "_generate_transformers", None)

        def counted(texts, *args, **kwargs):
            asked.extend(texts)
            return stream(texts, *args, **kwargs)

        def batch_counted(batch, *args):  # a local model's batches
            batches.append(len(batch))
            return generate(batch, *args)

        critic.backend.stream = counted
        if generate is not None:
            critic.backend._generate_transformers = batch_counted
    with CritiqueCache(cache_path) as cache:
        pairs = augment(read_pairs(pairs_file), critic, cache, progress=False)
        stats = dict(cache.stats)
    _write(out, {"asked": len(asked), "batches": batches, "stats": stats,
                 "critiques": [[p.chosen_critique, p.rejected_critique] for p in pairs]})


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "gather":
        gather(Path(args[0]))
    elif command == "score":
        score(args[0], args[1], Path(args[2]), int(args[3]))
    elif command == "critique":
        critique(args[0], args[1], args[2], Path(args[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
