"""The effects and robustness words of a finished RQ1 run, recomputed from its folder with the
current rules (critcore.studies.rq1_effects): python scripts/rq1_verdicts.py RUN_DIR OUT_DIR writes
OUT_DIR/rq1_effects.csv and rq1_verdicts.csv. The bootstrap draws are those of the run (its seed)."""
import json
import sys
from pathlib import Path

from critcore.report import save_table
from critcore.rms import load_results
from critcore.studies.rq1 import rq1_effects

run, out = Path(sys.argv[1]), Path(sys.argv[2])
effects, verdicts = rq1_effects(json.loads((run / "run.json").read_text())["config"], load_results(run))
save_table(effects, out / "rq1_effects.csv")  # atomically, as a run writes its tables
save_table(verdicts, out / "rq1_verdicts.csv")
print(verdicts[[c for c in verdicts.columns if c == "critic" or c.endswith(("change", "robustness", "why"))]].to_string())
