"""Where scoring's time goes on this CPU: torch.profiler over score_texts (414 seqs, batch 8), by op."""
import sys, time, torch
from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "bench"))
torch.set_num_threads(2)
import transformers; transformers.logging.set_verbosity_error()
from critcore import data
from critcore.evaluate import score_texts
from critcore.format import Formatter
from critcore.model import RewardModel
from critcore.hardware import matmul_peak
import train_throughput as tt
val = data.load({"format": "jsonl", "path": str(tt.DATA / "validation.jsonl"), "limit": None, "stratify": None, "seed": 0}).pairs
rm = RewardModel.load("minilm").eval()
feats, _ = Formatter(rm.tokenizer, 256).encode_pairs(val)
seqs = [f["chosen"] for f in feats] + [f["rejected"] for f in feats]
g = tt.geometry("minilm")
flops = 2 * g["matmul_params"] * sum(map(len, seqs)) + tt.attention_flops(g, [len(s) for s in seqs])
score_texts(rm, seqs, batch_size=8)
for r in range(3):
    p = matmul_peak("float32", seconds=2.0) / 1e9
    t = time.perf_counter(); score_texts(rm, seqs, batch_size=8); s = time.perf_counter() - t
    print(f"round {r}: {s:.2f} s, peak {p:.0f}, fraction {flops / s / p / 1e9:.3f}", flush=True)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
    t = time.perf_counter(); score_texts(rm, seqs, batch_size=8); s = time.perf_counter() - t
print(f"profiled: {s:.2f} s")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
