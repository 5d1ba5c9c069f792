"""Per stage of train_throughput JSONs: the median of per-run fractions, the median run against the median
probe, and the probes' spread (the arithmetic of bench/train_throughput.probe_spread, for files written before it)."""
import json, statistics, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); rows = {r["stage"]: r for r in d["roofline"]}
    mine = [r for r in d["runs"] if r["side"] == "critcore"]
    out = {}
    if "training" in rows and mine:
        p = [r["peak_gflops"] for r in mine]; m = statistics.median(p)
        s = sorted(r["train_loop_s"] for r in mine)[len(mine) // 2]
        out["training"] = (rows["training"]["fraction"], round(rows["training"]["gflops"] / s / m, 3), round((max(p) - min(p)) / m, 3))
    rd = d["scoring"]["rounds"]; p = [r["peak_gflops"] for r in rd]; m = statistics.median(p)
    s = sorted(r["seconds"] for r in rd)[len(rd) // 2]
    out["scoring"] = (rows["scoring"]["fraction"], round(rows["scoring"]["gflops"] / s / m, 3), round((max(p) - min(p)) / m, 3))
    print(f, "(median of fractions, fraction of medians, probe spread):", out)
