#!/usr/bin/env bash
# Every speed figure of the README's benchmark section, on the CPU this runs on, in one go: about
# 40 minutes on 2 quiet cores. Run it with nothing else running (each bench records the CPU other
# processes used during every timed run, and flags a run where they used over a quarter of a core).
#
#   bench/run_quiet.sh            # writes outputs/results/bench/<kind>/ (kind: native-bf16 or fp32)
#   bench/run_quiet.sh --reduced  # tiny sizes, a few minutes: checks that the whole run completes
#
# 1. bench/train_throughput.py with its defaults (the goal: it finishes in under 15 minutes on any CPU);
# 2. bench/train_throughput.py --precision fp32, 4 repeats ABBA: critcore against TRL at matched
#    precision, MFU and the scoring fraction against the fp32 matmul peak measured in the run;
# 3. bench/critique_throughput.py: every engine at batch 16, 32 and 64, the fast engine (the fastest
#    that passed bench/critique_quality.py) against fp32 at batch 16, 3 repeats ABBA, and the
#    roofline of prefill and decode.
# quiet_run.json beside the benches' JSON records each step's command, wall time and `uptime`
# before and after, and the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
REDUCED=0
[[ "${1:-}" == "--reduced" ]] && REDUCED=1
KIND=$($PY -c "from critcore.hardware import native_bf16; print('native-bf16' if native_bf16() else 'fp32')")
OUT=${OUT:-outputs/results/bench/$KIND}
[[ $REDUCED == 1 ]] && OUT=${OUT%/}-reduced
mkdir -p "$OUT"
STEPS=$(mktemp)
trap 'rm -f "$STEPS"' EXIT

step() {  # step NAME COMMAND...: run it, timed, with the load before and after
  local name=$1; shift
  local up0 t0 t1 up1
  up0=$(uptime); t0=$(date +%s.%N)
  echo "== $name: $*" >&2
  "$@"
  t1=$(date +%s.%N); up1=$(uptime)
  $PY - "$name" "$t0" "$t1" "$up0" "$up1" "$*" >>"$STEPS" <<'EOF'
import json, sys
name, t0, t1, up0, up1, cmd = sys.argv[1:]
print(json.dumps({"step": name, "command": cmd, "seconds": round(float(t1) - float(t0), 1),
                  "uptime_before": up0.strip(), "uptime_after": up1.strip()}))
EOF
}

if [[ $REDUCED == 1 ]]; then
  TRAIN_DEFAULT=(--pairs 16 --val-pairs 16 --max-length 64)
  TRAIN_FP32=(--pairs 16 --val-pairs 16 --max-length 64 --repeats 2)
  CRITIQUE=(--items 8 --max-new-tokens 8 --batches 4,8 --repeats 1)
else
  TRAIN_DEFAULT=()
  TRAIN_FP32=(--repeats 4)
  CRITIQUE=()
fi

START=$(date +%s.%N)
step "train_throughput defaults" $PY bench/train_throughput.py ${TRAIN_DEFAULT[@]+"${TRAIN_DEFAULT[@]}"} \
  --out "$OUT/train_throughput-minilm.json"
step "train_throughput fp32" $PY bench/train_throughput.py --precision fp32 "${TRAIN_FP32[@]}" \
  --out "$OUT/train_throughput-minilm-fp32.json"
step "critique_throughput" $PY bench/critique_throughput.py ${CRITIQUE[@]+"${CRITIQUE[@]}"} \
  --out "$OUT/critique_throughput.json"
END=$(date +%s.%N)

$PY - "$STEPS" "$OUT/quiet_run.json" "$START" "$END" "$REDUCED" <<'EOF'
import datetime as dt, json, sys
from pathlib import Path
from critcore.hardware import cpu_info
steps, out, start, end, reduced = sys.argv[1:]
record = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_info(), "reduced": reduced == "1",
          "seconds": round(float(end) - float(start), 1),
          "steps": [json.loads(line) for line in Path(steps).read_text().splitlines()]}
Path(out).write_text(json.dumps(record, indent=2) + "\n")
print(f"wrote {out}: {record['seconds'] / 60:.1f} min")
EOF
