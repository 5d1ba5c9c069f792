"""The effects and robustness words of a finished RQ1 run, recomputed from its folder with the
current rules (critcore.studies.protocol): python scripts/rq1_verdicts.py RUN_DIR OUT_DIR writes
OUT_DIR/rq1_effects.csv and rq1_verdicts.csv. The bootstrap draws are those of the run (its seed)."""
import sys, json
from critcore.rms import load_results
from critcore.studies.protocol import effects_table
from critcore.metrics import load_sections
run = sys.argv[1]; out = sys.argv[2]
results = load_results(run)
cfg = json.load(open(f"{run}/run.json"))["config"]
e, v = effects_table(results, "none", load_sections(cfg["sections"]), cfg.get("lr_selection", "shared"),
                     {"backbone": "minilm"}, n_boot=2000, seed=cfg["seed"])
e.to_csv(f"{out}/rq1_effects.csv", index=False); v.to_csv(f"{out}/rq1_verdicts.csv", index=False)
print(v[[c for c in v.columns if c == "critic" or c.endswith(("change", "robustness", "why"))]].to_string())
