"""Eager against torch.compile (inductor, frozen weights, dynamic shapes) for critcore's scoring on this CPU:
414 sequences at batch 8, ABBA over 4 rounds after one untimed pass each; rewards compared."""
import sys, time, torch, os
from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "bench"))
torch.set_num_threads(2)
import transformers; transformers.logging.set_verbosity_error()
import torch._inductor.config as ic
ic.freezing = True
ic.cpp.weight_prepack = True
from critcore import data
from critcore.evaluate import score_texts
from critcore.format import Formatter
from critcore.model import RewardModel
from critcore.hardware import matmul_peak
import train_throughput as tt
val = data.load({"format": "jsonl", "path": str(tt.DATA / "validation.jsonl"), "limit": None, "stratify": None, "seed": 0}).pairs
eager = RewardModel.load("minilm").eval()
comp = RewardModel.load("minilm").eval()
comp.hf.load_state_dict(eager.hf.state_dict())  # the reward head is initialised at random: the same one on both
feats, _ = Formatter(eager.tokenizer, 256).encode_pairs(val)
seqs = [f["chosen"] for f in feats] + [f["rejected"] for f in feats]
g = tt.geometry("minilm")
flops = 2 * g["matmul_params"] * sum(map(len, seqs)) + tt.attention_flops(g, [len(s) for s in seqs])
comp.hf = torch.compile(comp.hf, dynamic=True)
a = score_texts(eager, seqs, batch_size=8)
t = time.perf_counter(); b = score_texts(comp, seqs, batch_size=8); print(f"first compiled pass {time.perf_counter()-t:.1f} s; max |diff| {max(abs(x-y) for x,y in zip(a,b)):.2e}", flush=True)
res = {"eager": [], "compiled": []}
for r in range(4):
    for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
        p = matmul_peak("float32", seconds=1.5) / 1e9
        t = time.perf_counter(); score_texts(eager if side == "eager" else comp, seqs, batch_size=8); s = time.perf_counter() - t
        res[side].append((round(s, 2), round(flops / s / p / 1e9, 3)))
        print(r, side, f"{s:.2f} s peak {p:.0f} fraction {flops/s/p/1e9:.3f} load {os.getloadavg()[0]:.2f}", flush=True)
import statistics
for k, v in res.items():
    print(k, "median s", statistics.median(x[0] for x in v), "median fraction", statistics.median(x[1] for x in v))
