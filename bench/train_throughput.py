"""Training and scoring throughput: critcore against TRL's RewardTrainer, in the same process run.

Both sides get the same backbone, the same pairs, the same token ids (critcore's Formatter, trimmed
to --max-length, so no pair is dropped), the same effective batch (micro-batch x accumulation =
32), learning rate, warmup + cosine-to-10% schedule, grad clipping, seed and 1 epoch, on 2 CPU
threads. --precision default runs each side at its own defaults, at the precision that is fast on
this CPU: bf16 autocast where the CPU has bf16 instructions (AVX512-BF16 or AMX), fp32 elsewhere,
where bf16 is emulated and some 100x slower (TRL 1.16 turns bf16 on whatever the CPU; here it gets
bf16=False, and keeps its other defaults: activation checkpointing; critcore: no checkpointing,
length-grouped batches). bf16 or fp32 force both sides, TRL without checkpointing; bf16 on a CPU
without it natively skips both sides and says why in the JSON (`skipped`), so the bench finishes in
bounded time on any CPU. Each side's wall time covers its training loop only. Both trained models
then score the same validation pairs; accuracies are compared with an exact McNemar test on the
paired outcomes.

The sides alternate (ABBA) over --repeats (2 by default: AB BA); the load average is recorded
before and after each timed run, with the CPU that other processes used meanwhile
(bench/loadmeter.py: the load average counts the benchmark itself); a ratio taken while others used
more than a quarter of a core is flagged and left out of the headline. The CPU (model, SIMD flags),
its matmul peak (fp32 and bf16) and its memory bandwidth are measured in the same run
(bench/roofline.py), for MFU: 6 x the Linear weights a token passes through (`matmul_params`) x
the real tokens, per second, over the peak of the precision used. Scoring: critcore's score_pairs against a plain per-pair
transformers loop (each sequence alone), fp32, on the validation pairs: the speed ratio and the
largest score difference. `roofline` in the JSON has one row per stage (training, scoring):
throughput, the bound and the fraction of it reached, with the peer's fraction beside it. The
scoring fraction is the median of --scoring-rounds rounds (5), each against an fp32 peak probed
beside it (`fraction_rounds`), and each training run against a peak probed beside it (`peak_gflops`
of each run; `fraction_runs`), since this kind of VM's peak drifts within minutes. Each row also
gives the spread of those probes (`peak_spread`) and the median run against the median probe
(`fraction_of_medians`): where the two fractions part, the machine's speed moved under the bench.
--repeats 0 --no-warmup measures scoring alone.

    python bench/train_throughput.py --backbone minilm --pairs 256 --max-length 256 --repeats 3
    python bench/train_throughput.py --backbone smollm2 --pairs 64 --max-length 256 --repeats 3
    python bench/train_throughput.py --smoke        # seconds: checks that it runs

Writes outputs/bench/train_throughput-<backbone>[-<precision>].json. TRL is a bench-only extra:
pip install 'critcore[bench]' (or pip install trl, keeping torch as installed).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mix"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadmeter import Meter  # noqa: E402
from roofline import machine_line, probes, stage, table  # noqa: E402
DEFAULT_PAIRS = {"minilm": 256, "smollm2": 64}
DEFAULT_VAL_PAIRS = {"minilm": None, "smollm2": 64}  # None: all 207


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="minilm", help="critcore alias or path (minilm, smollm2, ...)")
    ap.add_argument("--pairs", type=int, default=None, help="training pairs (default: 256 for minilm, 32 for smollm2)")
    ap.add_argument("--val-pairs", type=int, default=-1,
                    help="validation pairs (default: all 207 of mix/validation.jsonl for minilm, 64 for smollm2)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32, help="effective pairs per optimizer step")
    ap.add_argument("--micro-batch-size", type=int, default=8, help="pairs per forward (both sides)")
    ap.add_argument("--warmup-ratio", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2,
                    help="train each side this many times, alternating which goes first (ABBA...)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up forward/backward (the first trainer in a process then runs slower)")
    ap.add_argument("--only", choices=["critcore", "trl"], default=None, help="run one side only (profiling)")
    ap.add_argument("--precision", choices=["default", "bf16", "fp32"], default="default",
                    help="default: each side's own defaults at the precision that is fast on this CPU; "
                         "bf16 or fp32: both sides, TRL without checkpointing")
    ap.add_argument("--scoring-rounds", type=int, default=5,
                    help="timed scoring runs, each beside its own fp32 peak probe; the fraction is their median")
    ap.add_argument("--smoke", action="store_true", help="8 pairs, 1 repeat, tiny lengths: checks that it runs")
    ap.add_argument("--no-group-by-length", action="store_true", help="critcore: random batches instead of length-grouped")
    ap.add_argument("--train", default=str(DATA / "train.jsonl"))
    ap.add_argument("--validation", default=str(DATA / "validation.jsonl"))
    ap.add_argument("--out", default=None, help="JSON path (default outputs/bench/train_throughput-<backbone>.json)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.pairs, args.val_pairs, args.max_length, args.repeats = 8, 8, 48, min(args.repeats, 1)
        args.batch_size, args.micro_batch_size = 8, 8
    if args.pairs is None:
        args.pairs = DEFAULT_PAIRS.get(args.backbone, 64)
    if args.val_pairs == -1:
        args.val_pairs = DEFAULT_VAL_PAIRS.get(args.backbone, 64)
    if args.batch_size % args.micro_batch_size:
        ap.error("--batch-size must be a multiple of --micro-batch-size")
    return args


# ------------------------------------------------------------------------------------ helpers


def _df(pairs, chosen, rejected):
    import pandas as pd

    return pd.DataFrame({"subset": [p.subset or p.source or "all" for p in pairs], "tie": [p.tie for p in pairs],
                         "score_chosen": chosen, "score_rejected": rejected})


def _validation(pairs, chosen, rejected) -> tuple[dict, list[bool]]:
    from critcore.metrics import accuracy_with_ci, correct

    ok = correct(_df(pairs, chosen, rejected))
    return accuracy_with_ci(ok), [bool(x) for x in ok]


def _lengths(features, max_length: int) -> dict:
    """Sequence lengths, and the share of tokens a pair's two sides have in common as a prefix
    (an upper bound on what computing the shared prompt once per pair could save in a decoder)."""
    lens = [len(f["chosen"]) for f in features] + [len(f["rejected"]) for f in features]
    shared = 0
    for f in features:
        k = 0
        for x, y in zip(f["chosen"], f["rejected"]):
            if x != y:
                break
            k += 1
        shared += k
    return {"sequences": len(lens), "mean_tokens": round(statistics.fmean(lens), 1), "max_tokens": max(lens),
            "at_max_length": sum(1 for n in lens if n >= max_length),
            "shared_prefix_share": round(shared / sum(lens), 3)}


def _padded(batches: list[list[int]], features) -> dict:
    """Token slots a pair collator computes on (rows x width, chosen and rejected stacked) vs real tokens."""
    slots = real = 0
    for idx in batches:
        seqs = [features[i]["chosen"] for i in idx] + [features[i]["rejected"] for i in idx]
        slots += len(seqs) * max(len(s) for s in seqs)
        real += sum(len(s) for s in seqs)
    return {"token_slots": slots, "real_tokens": real, "padding_share": round(1 - real / slots, 3)}


def score_plain(model, sequences: list[list[int]], pad_id: int, batch_size: int = 32) -> list[float]:
    """Rewards from a plain transformers sequence classifier: right-padded batches, logits[:, 0]."""
    import torch

    model.eval()
    with torch.inference_mode():
        return _score_plain(model, sequences, pad_id, batch_size)


def _score_plain(model, sequences, pad_id, batch_size):
    from critcore.collate import pad_right, sorted_batches

    out = [0.0] * len(sequences)
    for idx in sorted_batches([len(s) for s in sequences], batch_size):
        ids, mask = pad_right([sequences[i] for i in idx], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        for i, s in zip(idx, logits):
            out[i] = s
    return out


def warmup(args, train_pairs) -> float:
    """One untimed forward + backward of the backbone on a full micro-batch, before either side.

    Without it, whichever trainer runs first in the process pays the process's warm-up inside its
    timed loop (measured: SmolLM2, 16 pairs, critcore first: 79 s vs 39 s for the same loop later;
    TRL behaves the same when it goes first). Most of it is the allocator: glibc serves big tensors
    with fresh mmap pages (page faults, zeroing) until its mmap threshold has adapted upward."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from critcore import backbones
    from critcore.collate import PairCollator
    from critcore.format import Formatter

    t0 = time.perf_counter()
    path = backbones.resolve(args.backbone)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.get_text_config().pad_token_id = tok.pad_token_id
    features, _ = Formatter(tok, args.max_length).encode_pairs(train_pairs[: args.micro_batch_size])
    batch = PairCollator(tok.pad_token_id)(features)
    model.train()
    for _ in range(2):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)
    del model, out
    gc.collect()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------ the two sides


def run_critcore(args, train_pairs, val_pairs, score: bool = True) -> dict:
    import torch

    from critcore.collate import length_grouped_batches
    from critcore.evaluate import score_pairs
    from critcore.format import Formatter
    from critcore.train import TrainConfig, train

    config = TrainConfig(backbone=args.backbone, lr=args.lr, batch_size=args.batch_size,
                         micro_batch_size=args.micro_batch_size, epochs=1, warmup_ratio=args.warmup_ratio,
                         min_lr_ratio=0.1, max_grad_norm=1.0, max_length=args.max_length, margin="none",
                         dropout=False, bf16=None if args.precision == "default" else side_bf16(args.precision),
                         gradient_checkpointing=False,
                         group_by_length=not args.no_group_by_length, seed=args.seed, threads=args.threads)
    t0 = time.perf_counter()
    result = train(config, train_pairs, None, None, progress=False)
    total = time.perf_counter() - t0
    rm = result.model
    loop = result.summary["train_seconds"]
    # Separate the set-up inside train(): model load and tokenization (timed again here, same calls).
    t1 = time.perf_counter()
    features, _ = Formatter(rm.tokenizer, args.max_length).encode_pairs(train_pairs)
    tokenize_s = time.perf_counter() - t1
    if config.group_by_length:  # the batch plan train() builds (1 epoch)
        lengths = [max(len(f["chosen"]), len(f["rejected"])) for f in features]
        batches = length_grouped_batches(lengths, config.micro_batch_size, config.seed)
    else:
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(config.seed)).tolist()
        batches = [order[i:i + config.micro_batch_size] for i in range(0, len(order), config.micro_batch_size)]
    val, ok, score_s = None, None, None
    if score:
        t2 = time.perf_counter()
        scores = score_pairs(rm, val_pairs, max_length=args.max_length, batch_size=32)
        score_s = round(time.perf_counter() - t2, 2)
        val, ok = _validation(val_pairs, scores["score_chosen"].tolist(), scores["score_rejected"].tolist())
    row = {"side": "critcore", "train_loop_s": round(loop, 2), "pairs": len(train_pairs),
           "bf16": result.summary["config"]["bf16"], "gradient_checkpointing": False,
           "pairs_per_s": round(len(train_pairs) / loop, 3), "steps": result.summary["steps"],
           "train_call_s": round(total, 2), "tokenize_s": round(tokenize_s, 2),
           "setup_s_other": round(total - loop - tokenize_s, 2), "score_val_s": score_s,
           "padding": _padded(batches, features),
           "threads": torch.get_num_threads(), "validation": val, "_correct": ok, "_features": features,
           "truncated": result.summary.get("truncated", {})}
    del rm, result
    gc.collect()
    return row


def run_trl(args, train_pairs, val_pairs, score: bool = True) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback, set_seed
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from critcore import backbones
    from critcore.format import Formatter

    path = backbones.resolve(args.backbone)
    set_seed(args.seed)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    load_s = time.perf_counter() - t0
    # TRL's own fallback when the tokenizer has no pad token (RewardTrainer does the same).
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    # Same token ids as critcore: its Formatter (chat template or plain template, trimmed to max_length).
    # TRL would otherwise *drop* pairs longer than max_length instead of trimming them, and its
    # text path appends eos_token, which a BERT tokenizer (MiniLM) does not have.
    t1 = time.perf_counter()
    features, _ = Formatter(tok, args.max_length).encode_pairs(train_pairs)
    val_features, _ = Formatter(tok, args.max_length).encode_pairs(val_pairs)
    tokenize_s = time.perf_counter() - t1
    ds = Dataset.from_dict({"chosen_ids": [f["chosen"] for f in features],
                            "rejected_ids": [f["rejected"] for f in features]})

    timer, slots = {}, {"token_slots": 0, "real_tokens": 0}

    class CountingCollator(DataCollatorForPreference):  # TRL's own collator; only counts padding
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            slots["token_slots"] += batch["input_ids"].numel()
            slots["real_tokens"] += int(batch["attention_mask"].sum())
            return batch

    class LoopTimer(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            timer["begin"] = time.perf_counter()
            timer["threads"] = torch.get_num_threads()

        def on_train_end(self, a, state, control, **kw):
            timer["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="trl-bench-") as tmp:
        config = RewardConfig(
            output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=args.batch_size // args.micro_batch_size, learning_rate=args.lr,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=args.warmup_ratio, weight_decay=0.0, max_grad_norm=1.0, max_length=args.max_length,
            disable_dropout=True, use_cpu=True,
            bf16=side_bf16(args.precision), **({} if args.precision == "default" else {"activation_checkpointing": False}),
            eval_strategy="no", save_strategy="no", report_to="none",
            dataloader_num_workers=0, seed=args.seed, logging_steps=10, disable_tqdm=True,
        )
        t2 = time.perf_counter()
        collator = CountingCollator(pad_token_id=tok.pad_token_id, pad_to_multiple_of=config.pad_to_multiple_of)
        trainer = RewardTrainer(model=model, args=config, train_dataset=ds, processing_class=tok,
                                data_collator=collator, callbacks=[LoopTimer()])
        init_s = time.perf_counter() - t2
        torch.set_num_threads(args.threads)
        t3 = time.perf_counter()
        out = trainer.train()
        train_call = time.perf_counter() - t3
    loop = timer["end"] - timer["begin"]
    n = len(trainer.train_dataset)
    model = trainer.model
    checkpointing = bool(getattr(model, "is_activation_checkpointing", None)
                         if hasattr(type(model), "is_activation_checkpointing")
                         else getattr(model, "is_gradient_checkpointing", False))
    val, ok, score_s = None, None, None
    if score:
        t4 = time.perf_counter()
        seqs = [f["chosen"] for f in val_features] + [f["rejected"] for f in val_features]
        scores = score_plain(model, seqs, tok.pad_token_id, batch_size=32)
        score_s = round(time.perf_counter() - t4, 2)
        m = len(val_pairs)
        val, ok = _validation(val_pairs, scores[:m], scores[m:])
    row = {"side": "trl", "train_loop_s": round(loop, 2), "pairs": n, "pairs_per_s": round(n / loop, 3),
           "bf16": bool(config.bf16),
           "steps": out.global_step, "train_call_s": round(train_call, 2), "model_load_s": round(load_s, 2),
           "tokenize_s": round(tokenize_s, 2), "trainer_init_s": round(init_s, 2),
           "score_val_s": score_s, "threads": timer.get("threads"), "optim": str(config.optim),
           "padding": {**slots, "padding_share": round(1 - slots["real_tokens"] / max(1, slots["token_slots"]), 3)},
           "gradient_checkpointing": checkpointing,
           "dropout_p": sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}), "validation": val, "_correct": ok,
           "_features": features, "train_loss": round(out.training_loss, 4)}
    del trainer, model
    gc.collect()
    return row


# ------------------------------------------------------------------------------------ main


def side_bf16(precision: str) -> bool:
    """Whether a side trains in bf16 at --precision: "default" is the precision that is fast on
    this CPU (bf16 only where it is native)."""
    from critcore.hardware import native_bf16

    return native_bf16() if precision == "default" else precision == "bf16"


def precision_note(precision: str) -> str:
    """What --precision meant for each side on this CPU, in words."""
    from critcore.hardware import native_bf16

    if precision != "default":
        return f"both sides forced to {precision}, TRL without activation checkpointing"
    if native_bf16():
        return "each side at its defaults: bf16 autocast (native on this CPU) for both"
    return ("each side at its defaults, in fp32: TRL's default bf16 autocast is turned off, since bf16 is "
            "emulated on this CPU (no AVX512-BF16 or AMX); critcore picks fp32 here itself")


def skipped_because(precision: str, peaks: dict) -> str | None:
    """Why no side trains at this precision here (None: they do)."""
    from critcore.hardware import native_bf16

    if side_bf16(precision) and not native_bf16():
        return (f"bf16 is emulated on this CPU (no AVX512-BF16 or AMX): the matmul probe ran at "
                f"{peaks['bfloat16']} GFLOP/s in bf16 against {peaks['float32']} in fp32")
    return None


def geometry(backbone: str) -> dict:
    """What the arithmetic of a token costs: the weights of the Linear layers every token passes
    through (2 FLOPs each forward, 6 forward and backward), all parameters (AdamW steps them all),
    and the attention shape. The embedding tables (words, positions, token types) are looked up,
    not multiplied, and a pooler (BERT's) and the reward head see one token per sequence, so none
    of them count: counting MiniLM's position table and pooler as per-token weights, as "all but
    the word embeddings" did, overstated its arithmetic by 3.5%."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from critcore import backbones

    model = AutoModelForSequenceClassification.from_pretrained(backbones.resolve(backbone), num_labels=1,
                                                               dtype=torch.float32)
    c = model.config.get_text_config()
    per_token = sum(m.weight.numel() for name, m in model.base_model.named_modules()
                    if isinstance(m, torch.nn.Linear) and not name.startswith("pooler"))
    total = sum(p.numel() for p in model.parameters())
    return {"matmul_params": per_token, "total": total, "layers": c.num_hidden_layers,
            "attention_width": c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads),
            "causal": hasattr(model, "score")}


def attention_flops(g: dict, lengths: list[int]) -> float:
    """Forward FLOPs of attention itself (scores and their weighted sum) over sequences of these
    lengths: 4 x layers x width x T^2 each, half of it where attention is causal."""
    return 4 * g["layers"] * g["attention_width"] * sum(t * t for t in lengths) * (0.5 if g["causal"] else 1.0)


def probe_peak(args, precision: str) -> float:
    """The matmul peak (GFLOP/s) of this precision, probed now: beside a timed run."""
    from critcore.hardware import matmul_peak

    return round(matmul_peak(precision, seconds=0.2 if args.smoke else 2.0) / 1e9, 1)


def compare_scoring(args, val_pairs) -> dict:
    """critcore's scoring (length-sorted, right-padded batches under inference_mode) against a
    plain per-pair transformers loop (each sequence alone, as a user would first write it) on the
    same token ids, both fp32: speed, the largest score difference, and the batch size used."""
    import torch
    from transformers import set_seed

    from critcore.evaluate import score_texts
    from critcore.format import Formatter
    from critcore.model import RewardModel

    set_seed(args.seed)
    rm = RewardModel.load(args.backbone).eval()
    features, _ = Formatter(rm.tokenizer, args.max_length).encode_pairs(val_pairs)
    seqs = [f["chosen"] for f in features] + [f["rejected"] for f in features]
    with Meter() as plain_meter:
        t = time.perf_counter()
        with torch.inference_mode():
            plain = [rm.hf(input_ids=torch.tensor([s]), attention_mask=torch.ones(1, len(s), dtype=torch.long)).logits[0, 0].item()
                     for s in seqs]
        plain_s = time.perf_counter() - t
    best = None
    for batch in (8, 32) if not args.smoke else (8,):
        with Meter() as meter:
            t = time.perf_counter()
            ours = score_texts(rm, seqs, batch_size=batch)
            seconds = time.perf_counter() - t
        if best is None or seconds < best[1]:
            best = (batch, seconds, ours, meter)
    batch, critcore_s, ours, meter = best
    # This VM's fp32 matmul peak moves by a fifth within minutes (probes of 134 and 164 GFLOP/s an
    # hour apart), so each timed scoring run gets its own probe beside it, alternating which goes
    # first: the fraction of the bound is the median over these rounds, as a ratio to a peer is.
    rounds = []
    for r in range(1 if args.smoke else args.scoring_rounds):
        row = {}
        for what in ("peak", "score") if r % 2 == 0 else ("score", "peak"):
            if what == "peak":
                row["peak_gflops"] = probe_peak(args, "float32")
            else:
                t = time.perf_counter()
                score_texts(rm, seqs, batch_size=batch)
                row["seconds"] = round(time.perf_counter() - t, 3)
        rounds.append(row)
    real = sum(len(x) for x in seqs)
    return {"sequences": len(seqs), "plain_loop_s": round(plain_s, 3), "critcore_s": round(critcore_s, 3),
            "critcore_batch": batch, "ratio": round(plain_s / critcore_s, 2),
            "max_abs_diff": max(abs(a - b) for a, b in zip(plain, ours)),
            "critcore_tokens_per_s": round(real / critcore_s, 1), "real_tokens": real, "lengths": [len(x) for x in seqs],
            "critcore_batches": -(-len(seqs) // batch), "rounds": rounds, "plain_meter": plain_meter.record(),
            "critcore_meter": meter.record()}


def probe_spread(row_of, median_run: dict, peaks: list[float]) -> dict:
    """How far a stage's fraction can be trusted on this machine: the spread of the peaks probed
    beside its timed runs ((max - min) / median), and the fraction of the medians (the median run's
    time against the median probe), which a quiet, steady machine makes equal to the median of
    the per-run fractions. On a 2-core Intel Xeon the probes moved from 161 to 233 GFLOP/s within
    one bench, so a run and the probe beside it can catch the machine at different speeds."""
    median = statistics.median(peaks)
    return {"peak_spread": round((max(peaks) - min(peaks)) / median, 3),
            "fraction_of_medians": row_of(dict(median_run, peak_gflops=median))["fraction"]}


def roofline_rows(result: dict, runs: list[dict], machine: dict, g: dict) -> list[dict]:
    """Training (critcore, TRL's fraction beside it) and scoring (critcore, the plain loop's beside
    it), each timed run against the peak probed beside it, the median run. The arithmetic: 2 FLOPs
    per Linear weight (`geometry`) and token forward, 6 forward and backward, plus attention itself
    (which MFU leaves out). Training streams the weights three times per micro-batch (forward, and
    the two products of the backward pass) and AdamW's seven tensors once per step; scoring streams
    them once per batch. Both are compute-bound by far (thousands of tokens share each weight read)."""
    peaks, bw = machine["matmul_peak_gflops"], machine["memory_gb_s"]
    n_params, rows = g["matmul_params"], []
    lengths = [len(f[k]) for f in runs[0]["_features"] for k in ("chosen", "rejected")] if runs else []

    def training(r: dict) -> dict:
        tokens = r["padding"]["real_tokens"]
        micro = -(-r["pairs"] // result["micro_batch_size"])
        return stage("training", seconds=r["train_loop_s"], flops=6 * n_params * tokens + 3 * attention_flops(g, lengths),
                     bytes_=4 * (3 * micro * n_params + 7 * r["steps"] * g["total"]),
                     peak_gflops=r["peak_gflops"], memory_gb_s=bw,
                     throughput=r["pairs_per_s"], unit="pairs/s", precision="bf16" if r["bf16"] else "fp32")

    by_side = {s: [r for r in runs if r["side"] == s] for s in ("critcore", "trl")}
    if by_side["critcore"]:
        mine = by_side["critcore"]
        rs = sorted((training(r) for r in mine), key=lambda x: x["fraction"])
        median_run = sorted(mine, key=lambda r: r["train_loop_s"])[len(mine) // 2]
        row = dict(rs[len(rs) // 2], fraction_runs=[x["fraction"] for x in rs],  # the median run
                   **probe_spread(training, median_run, [r["peak_gflops"] for r in mine]))
        if by_side["trl"]:
            peer = sorted(training(r)["fraction"] for r in by_side["trl"])
            row.update(peer="TRL RewardTrainer", peer_fraction=peer[len(peer) // 2])
        rows.append(row)
    sc = result["scoring"]
    flops = 2 * n_params * sc["real_tokens"] + attention_flops(g, sc["lengths"])

    def scoring(seconds: float, peak: float, **extra) -> dict:
        return stage("scoring", seconds=seconds, flops=flops, bytes_=4 * n_params * sc["critcore_batches"],
                     peak_gflops=peak, memory_gb_s=bw, throughput=sc["sequences"] / seconds, unit="seqs/s",
                     precision="fp32", **extra)

    beside = sorted((scoring(r["seconds"], r["peak_gflops"]) for r in sc["rounds"]), key=lambda x: x["fraction"])
    row = beside[len(beside) // 2]  # the median round, against the peak probed next to it
    median_round = sorted(sc["rounds"], key=lambda r: r["seconds"])[len(sc["rounds"]) // 2]
    row.update(**probe_spread(lambda r: scoring(r["seconds"], r["peak_gflops"]), median_round,
                              [r["peak_gflops"] for r in sc["rounds"]]))
    row.update(fraction_rounds=[x["fraction"] for x in beside], peer="plain per-sequence loop",
               peer_fraction=round(flops / sc["plain_loop_s"] / (peaks["float32"] * 1e9), 3),
               fraction_against_first_probe=scoring(sc["critcore_s"], peaks["float32"])["fraction"])
    rows.append(row)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import transformers

    from critcore import data
    from critcore.hardware import reuse_freed_memory
    from critcore.metrics import mcnemar_exact
    from critcore.provenance import git_info

    transformers.logging.set_verbosity_error()
    train_pairs = data.load({"format": "jsonl", "path": args.train, "limit": args.pairs, "stratify": None,
                             "seed": args.seed}).pairs
    val_pairs = data.load({"format": "jsonl", "path": args.validation, "limit": args.val_pairs,
                           "stratify": None, "seed": args.seed}).pairs
    reuse_freed_memory()  # as critcore's training and scoring do; both sides run under it (one process)
    machine = probes(seconds=0.2 if args.smoke else 3.0)
    peaks = machine["matmul_peak_gflops"]
    print(machine_line(machine), file=sys.stderr, flush=True)
    g = geometry(args.backbone)
    n_params = g["matmul_params"]
    skipped = skipped_because(args.precision, peaks)
    sides = [] if skipped or args.repeats == 0 else [args.only] if args.only else ["critcore", "trl"]
    if skipped:
        print(f"training skipped: {skipped}", file=sys.stderr, flush=True)

    warmup_s = None
    if sides and not args.no_warmup:
        print("warm-up (untimed) ...", file=sys.stderr, flush=True)
        warmup_s = round(warmup(args, train_pairs), 2)
    runners = {"critcore": run_critcore, "trl": run_trl}
    runs: list[dict] = []
    # Each timed run gets a peak probed beside it (before one run, after the next), as each scoring
    # round does: this kind of VM's peak moves by a fifth within minutes, which one probe at the
    # start would put into every fraction (201 GFLOP/s there against 177 to 189 beside the rounds).
    precision = "bfloat16" if side_bf16(args.precision) else "float32"
    for r in range(args.repeats if sides else 0):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            print(f"[repeat {r + 1}/{args.repeats}] training {side} ...", file=sys.stderr, flush=True)
            probe_first = len(runs) % 2 == 0
            peak = probe_peak(args, precision) if probe_first else None
            with Meter() as meter:
                row = runners[side](args, train_pairs, val_pairs, score=(r == 0))  # models are deterministic
            row.update(repeat=r + 1, peak_gflops=peak if probe_first else probe_peak(args, precision), **meter.record())
            flops = 6 * n_params * row["padding"]["real_tokens"]
            row["mfu"] = round(flops / row["train_loop_s"] / (row["peak_gflops"] * 1e9), 3)
            runs.append(row)
            acc = f", val acc {row['validation']['acc']:.3f}" if row["validation"] else ""
            print(f"  {side}: {row['pairs_per_s']:.2f} pairs/s, loop {row['train_loop_s']:.1f}s, MFU {row['mfu']:.1%}, "
                  f"load {row['load'][0]:.2f}->{row['load'][1]:.2f}, other work {row['other_cores']:.2f} cores"
                  f"{' LOADED' if row['loaded'] else ''}{acc}", file=sys.stderr, flush=True)

    by_side = {s: [x for x in runs if x["side"] == s] for s in sides}
    summary = {}
    for s, rows in by_side.items():
        pps = [x["pairs_per_s"] for x in rows]
        summary[s] = {"pairs_per_s_median": round(statistics.median(pps), 3), "pairs_per_s_runs": pps,
                      "val_acc": rows[0]["validation"]["acc"], "val_ci": [rows[0]["validation"]["lo"], rows[0]["validation"]["hi"]],
                      "padding_share": rows[0]["padding"]["padding_share"], "bf16": rows[0]["bf16"],
                      "gradient_checkpointing": rows[0]["gradient_checkpointing"],
                      "mfu_median": round(statistics.median(x["mfu"] for x in rows), 3)}
    result = {"backbone": args.backbone, "pairs": args.pairs, "val_pairs": len(val_pairs), "max_length": args.max_length,
              "lr": args.lr, "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
              "threads": args.threads, "repeats": args.repeats, "warmup_s": warmup_s, "precision": args.precision,
              "side_precision": {s: "bf16" if side_bf16(args.precision) else "fp32" for s in ("critcore", "trl")},
              "precision_note": precision_note(args.precision),
              "skipped": skipped, "group_by_length": not args.no_group_by_length, "matmul_params": n_params,
              "cpu": machine["cpu"], "matmul_peak_gflops": peaks, "memory_gb_s": machine["memory_gb_s"],
              "summary": summary}
    if len(sides) == 2:
        pairs_ = list(zip(by_side["critcore"], by_side["trl"]))
        ratios = [round(c["pairs_per_s"] / t["pairs_per_s"], 3) for c, t in pairs_]
        quiet = [x for (c, t), x in zip(pairs_, ratios) if not (c["loaded"] or t["loaded"])]
        result["ratio_runs"] = ratios
        result["ratio_loaded"] = [c["loaded"] or t["loaded"] for c, t in pairs_]
        result["ratio_median"] = round(statistics.median(quiet or ratios), 3)
        result["ratio_spread"] = [min(quiet or ratios), max(quiet or ratios)]
        result["headline_all_loaded"] = not quiet
        result["same_token_ids"] = by_side["critcore"][0]["_features"] == by_side["trl"][0]["_features"]
        result["mcnemar"] = mcnemar_exact(by_side["critcore"][0]["_correct"], by_side["trl"][0]["_correct"])
        result["pairs_dropped"] = {s: args.pairs - by_side[s][0]["pairs"] for s in sides}
    print("scoring: critcore against a plain per-pair loop ...", file=sys.stderr, flush=True)
    result["scoring"] = compare_scoring(args, val_pairs)
    result["scoring"]["mfu_fp32"] = round(2 * n_params * result["scoring"]["critcore_tokens_per_s"]
                                          / (peaks["float32"] * 1e9), 3)
    result["roofline"] = roofline_rows(result, runs, machine, g)
    result["scoring"].pop("lengths")
    if runs:
        result["train_lengths"] = _lengths(runs[0]["_features"], args.max_length)
    result["runs"] = [{k: v for k, v in x.items() if not k.startswith("_")} for x in runs]
    import accelerate
    import trl

    result["env"] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
                     "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "accelerate": accelerate.__version__, "cpus": os.cpu_count(),
                     "loadavg_start": [round(x, 2) for x in machine["loadavg"]],
                     "loadavg": [round(x, 2) for x in os.getloadavg()], "machine": platform.machine(),
                     "git": git_info()}

    # table
    print()
    print(f"backbone={args.backbone} pairs={args.pairs} val_pairs={len(val_pairs)} max_length={args.max_length} "
          f"batch={args.batch_size} (micro {args.micro_batch_size}) lr={args.lr:g} threads={args.threads} "
          f"precision={args.precision} ({', '.join(f'{k} {v}' for k, v in result['side_precision'].items())})")
    if skipped:
        print(f"training skipped: {skipped}")
    elif sides:
        print(f"{'side':<10}{'pairs/s':>10}{'loop s':>9}{'padding':>9}{'MFU':>7}{'val acc':>9}  95% CI")
    for s in sides:
        rows = by_side[s]
        v = rows[0]["validation"]
        print(f"{s:<10}{summary[s]['pairs_per_s_median']:>10.2f}{statistics.median(x['train_loop_s'] for x in rows):>9.1f}"
              f"{summary[s]['padding_share']:>9.1%}{summary[s]['mfu_median']:>7.1%}"
              f"{v['acc']:>9.3f}  [{v['lo']:.3f}, {v['hi']:.3f}]")
    if len(sides) == 2:
        print(f"ratio critcore/trl pairs/s: {result['ratio_median']:.2f}x median (runs: {result['ratio_runs']}, "
              f"loaded: {result['ratio_loaded']}); McNemar p={result['mcnemar']['p_value']:.3g}; "
              f"same token ids: {result['same_token_ids']}; pairs dropped: {result['pairs_dropped']}")
    sc = result["scoring"]
    print(f"scoring {sc['sequences']} sequences: critcore {sc['critcore_s']:.2f}s against a per-pair loop "
          f"{sc['plain_loop_s']:.2f}s: {sc['ratio']:.1f}x, largest difference {sc['max_abs_diff']:.2e}, "
          f"MFU {sc['mfu_fp32']:.1%}")
    print("roofline:")
    print(table(result["roofline"]))
    name = f"train_throughput-{Path(args.backbone).name}{'' if args.precision == 'default' else '-' + args.precision}.json"
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.smoke else ROOT / "outputs" / "bench") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
