"""The information chart of issue 22 from committed tables: the simulated critics' curve of one
dose-response run and the real critics of another RQ1 run on the same pairs and rate, each from its
rq1_information.csv, with the change the curve predicts for each real critic (inside its range).
For runs whose RM folders are gone, where compare_runs cannot be used:

  python scripts/rq1_information_chart.py CURVE_DIR REAL_DIR OUT_DIR

writes OUT_DIR/rq1_information_curve.csv, .html and .png."""
import sys
from pathlib import Path

import pandas as pd

from critcore.report import offline_charts, save_chart, save_table
from critcore.studies.rq1 import with_predictions
from critcore.studies.rq1_charts import information_chart

curve_dir, real_dir, out = map(Path, sys.argv[1:4])
sim = pd.read_csv(curve_dir / "rq1_information.csv")
real = pd.read_csv(real_dir / "rq1_information.csv")
sim, real = sim[sim["kind"] == "simulated"], real[real["kind"] == "real"]
if set(sim["lr"]) != set(real["lr"]):
    sys.exit(f"the runs compare at different rates: {sorted(set(sim['lr']))} and {sorted(set(real['lr']))}")
info = with_predictions(pd.concat([sim, real], ignore_index=True))
save_table(info, out / "rq1_information_curve.csv")
offline_charts()
save_chart(information_chart(info), out / "rq1_information_curve.html", out / "rq1_information_curve.png")
print(info[info["kind"] == "real"][["critic", "information", "Score change", "lo", "hi", "predicted change", "measured - predicted"]].to_string())
