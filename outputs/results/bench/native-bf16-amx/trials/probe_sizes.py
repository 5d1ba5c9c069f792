"""How the fp32 matmul probe reads by size on this CPU, and how much it moves: 6 rounds, sizes alternating order."""
import torch, statistics, json, os
from critcore.hardware import matmul_peak, rate
torch.set_num_threads(2)
sizes = [256, 512, 768, 1024, 2048]
res = {n: [] for n in sizes}
a = torch.randn(1600, 384); w = torch.randn(1536, 384); w2 = torch.randn(384, 1536); b = torch.randn(1536)
lin = {"ffn_up 1600x384x1536": [], "ffn_down 1600x1536x384": []}
x2 = torch.randn(1600, 1536)
for r in range(6):
    order = sizes if r % 2 == 0 else sizes[::-1]
    for n in order:
        res[n].append(round(matmul_peak("float32", n=n, seconds=1.5) / 1e9, 1))
    lin["ffn_up 1600x384x1536"].append(round(rate(lambda: torch.nn.functional.linear(a, w, b), 2 * 1600 * 384 * 1536, 1.5) / 1e9, 1))
    lin["ffn_down 1600x1536x384"].append(round(rate(lambda: torch.nn.functional.linear(x2, w2, None), 2 * 1600 * 384 * 1536, 1.5) / 1e9, 1))
    print(r, {n: res[n][-1] for n in sizes}, {k: v[-1] for k, v in lin.items()}, os.getloadavg()[0], flush=True)
for k, v in list(res.items()) + list(lin.items()):
    print(k, "median", statistics.median(v), "min", min(v), "max", max(v), "spread", round((max(v) - min(v)) / statistics.median(v), 2))
