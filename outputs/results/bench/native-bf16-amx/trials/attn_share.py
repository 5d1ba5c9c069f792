import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "bench"))
import transformers; transformers.logging.set_verbosity_error()
from critcore import data
from critcore.format import Formatter
from critcore.model import RewardModel
import train_throughput as tt
val = data.load({"format": "jsonl", "path": str(tt.DATA / "validation.jsonl"), "limit": None, "stratify": None, "seed": 0}).pairs
rm = RewardModel.load("minilm")
feats, _ = Formatter(rm.tokenizer, 256).encode_pairs(val)
seqs = [f["chosen"] for f in feats] + [f["rejected"] for f in feats]
g = tt.geometry("minilm"); L = [len(s) for s in seqs]
lin = 2 * g["matmul_params"] * sum(L); att = tt.attention_flops(g, L)
srt = sorted(L); padded = sum(max(srt[i:i+8]) * len(srt[i:i+8]) for i in range(0, len(srt), 8))
print(f"tokens {sum(L)} padded(batch 8) {padded} linear {lin/1e9:.1f} GFLOP attention {att/1e9:.1f} GFLOP share {att/(lin+att):.3f} mean len {sum(L)/len(L):.0f}")
