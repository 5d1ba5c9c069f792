"""Every benchmark in bench/ runs in its smoke mode, so a refactor cannot break one unnoticed.
Speed goals live in the benchmarks themselves, never here."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_adamw_fused_smoke():
    assert "ratio" in smoke("adamw_fused.py")


@pytest.mark.slow
def test_critique_throughput_smoke(shared_data):
    last = json.loads(smoke("critique_throughput.py").strip().splitlines()[-1])
    assert set(last) == {"transformers_best_tok_s", "fast_best_tok_s", "ratio"} and last["ratio"] > 0


@pytest.mark.slow
def test_critique_quality_smoke(shared_data):
    assert "critiques identical" in smoke("critique_quality.py")


@pytest.mark.slow
def test_train_throughput_smoke(shared_data):
    pytest.importorskip("trl", reason="TRL is the bench extra (pip install 'critcore[bench]')")
    out = smoke("train_throughput.py")
    assert "ratio critcore/trl" in out and "scoring" in out
