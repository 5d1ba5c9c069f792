"""scripts/rq1_information_chart.py: the committed dose-response curve and rq1_cpu's real critics
on one chart, with the change the curve predicts for a real critic inside its range."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "outputs" / "results"
SCRIPT = ROOT / "scripts" / "rq1_information_chart.py"


def test_the_curve_predicts_inside_its_range_only(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(RESULTS / "rq1_dose_cpu"), str(RESULTS / "rq1_cpu"), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = pd.read_csv(tmp_path / "rq1_information_curve.csv")
    assert (tmp_path / "rq1_information_curve.png").stat().st_size > 10_000
    sim = info[info["kind"] == "simulated"].sort_values("information")
    real = info[info["kind"] == "real"].set_index("critic")
    assert list(sim["critic_p"]) == [0.5, 0.6, 0.7, 0.9, 1.0] and set(real.index) == {"smollm2", "gemma3-270m"}
    for critic, row in real.iterrows():
        inside = sim["information"].min() <= row["information"] <= sim["information"].max()
        expected = round(float(np.interp(row["information"], sim["information"], sim["Score change"])), 2)
        assert (row["predicted change"] == expected) if inside else np.isnan(row["predicted change"])
        if inside:
            assert row["measured - predicted"] == round(row["Score change"] - expected, 2)


def test_runs_at_different_rates_are_refused(tmp_path):
    real = pd.read_csv(RESULTS / "rq1_cpu" / "rq1_information.csv").assign(lr=5e-5)
    (tmp_path / "real").mkdir()
    real.to_csv(tmp_path / "real" / "rq1_information.csv", index=False)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(RESULTS / "rq1_dose_cpu"), str(tmp_path / "real"), str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "different rates" in proc.stderr
    assert not (tmp_path / "rq1_information_curve.csv").exists()
