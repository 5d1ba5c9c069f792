"""scripts/gpu.sh, the one-command GPU check, runs its dry path here on the CPU: the same steps
(rq1_cpu_smollm2 checked, one `accelerate launch` training, pairs/s and MFU, the critiques of
rq1_cpu and rq1_ablation, the sharded-training step's save and reload, the critique cache copied)
at toy size."""
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from critcore.backbones import cache_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run(shared_data):
    if not (ROOT / ".venv" / "bin" / "critcore").exists():
        pytest.skip("needs the project's .venv (make setup)")
    proc = subprocess.run(["scripts/gpu.sh", "--dry-run"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["train_pairs"] == 8 and result["pairs_per_s"] > 0
    # No upper bound: on a busy CPU the dry run's half-second probe can read below what training got
    # (MFU 1.30 here, with a niced job on the other core); the speed of the machine decides nothing.
    assert result["mfu"] > 0 and result["matmul_peak_tflops"] > 0
    fsdp = json.loads((ROOT / "outputs" / "gpu" / "fsdp.json").read_text())  # step 4, unsharded on the CPU
    assert fsdp["same_reward"] and fsdp["recipe"] and {"model.safetensors", "README.md"} <= set(fsdp["files"])
    assert "study rq1: OK" in (ROOT / "outputs" / "gpu" / "rq1_cpu_smollm2.log").read_text()
    log = (ROOT / "outputs" / "gpu" / "critiques.log").read_text()
    assert "params/rq1_cpu.yaml critiqued by ['gemma3-270m', 'none', 'smollm2']" in log
    assert "params/rq1_ablation.yaml critiqued by ['gemma3-270m-t64']" in log
    # a step name that does not exist is refused before anything runs
    bad = subprocess.run(["scripts/gpu.sh", "--dry-run"], check=False, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "STEPS": "fsdp critiqes"}, timeout=600)
    assert bad.returncode == 2 and "unknown step 'critiqes'" in bad.stderr
    source = cache_dir() / "critiques.sqlite"
    count = "SELECT count(*) FROM critiques"
    with sqlite3.connect(ROOT / "outputs" / "gpu" / "critiques.sqlite") as copy, sqlite3.connect(source) as db:
        assert copy.execute(count).fetchone() == db.execute(count).fetchone()
