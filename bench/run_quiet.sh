#!/usr/bin/env bash
# Every speed figure of docs/benchmarks.md for the CPU this runs on, in one go: about 55 minutes (estimated) on
# 2 quiet cores (the quality check first with --quality: some 40 minutes more, which need no quiet).
# Run it with nothing else running: each bench records the load average and the CPU other processes
# used during every timed run, and flags (and leaves out of its median) a run where they used over
# a quarter of a core.
#
#   bench/run_quiet.sh            # writes outputs/results/bench/<kind>/ (critcore.hardware.cpu_kind:
#                                 # fp32, native-bf16 or native-bf16-amx)
#   bench/run_quiet.sh --quality  # first the quality check of the int8 engines on this CPU (bench/critique_quality.py)
#   bench/run_quiet.sh --reduced  # tiny sizes, a few minutes: checks that the whole run completes
#
# Each bench alternates its two sides (ABBA) over its repeats:
# 0. (--quality) bench/critique_quality.py on ctranslate2:int8 and transformers:qint8 against fp32,
#    merged into outputs/results/bench/critique_quality.json, whose verdicts step 4 reads;
# 1. bench/adamw_fused.py: foreach against fused AdamW, 4 rounds;
# 2. bench/train_throughput.py with its defaults (2 repeats; the goal: under 15 minutes on any CPU);
# 3. bench/train_throughput.py --precision fp32, 4 repeats: critcore against TRL at matched
#    precision, MFU and the scoring fraction against the fp32 matmul peak measured in the run;
# 4. bench/critique_throughput.py: every engine at batch 16, 32 and 64, the fast engine (the fastest
#    that passed the quality check on this kind of CPU) and the fastest overall against fp32 at
#    batch 16, 3 repeats each, and the roofline of prefill and decode;
# 5. the projection of `critcore run bench/rq1_small.yaml --dry-run` against the same study's real
#    wall time (an empty critique cache, so every critique counts).
# quiet_run.json beside the benches' JSON records each step's command, wall time and load average
# before and after, the CPU, and the rq1_small projection against the measured run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
REDUCED=0 QUALITY=0
for arg in "$@"; do
  case $arg in
    --reduced) REDUCED=1 ;;
    --quality) QUALITY=1 ;;
    *) echo "run_quiet.sh: unknown option $arg (--reduced, --quality)" >&2; exit 2 ;;
  esac
done
KIND=$($PY -c "from critcore.hardware import cpu_kind; print(cpu_kind())")
OUT=${OUT:-outputs/results/bench/$KIND}
QUALITY_JSON=outputs/results/bench/critique_quality.json
if [[ $REDUCED == 1 ]]; then
  OUT=${OUT%/}-reduced
  QUALITY_JSON=$OUT/critique_quality.json
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step() {  # step NAME COMMAND...: run it, timed, with the load average before and after
  local name=$1; shift
  local load0 t0 t1 load1
  load0=$(cut -d' ' -f1-3 /proc/loadavg); t0=$(date +%s.%N)
  echo "== $name: $* (load average $load0)" >&2
  "$@"
  t1=$(date +%s.%N); load1=$(cut -d' ' -f1-3 /proc/loadavg)
  $PY - "$name" "$t0" "$t1" "$load0" "$load1" "$*" >>"$WORK/steps.jsonl" <<'EOF'
import json, sys
name, t0, t1, load0, load1, cmd = sys.argv[1:]
print(json.dumps({"step": name, "command": cmd, "seconds": round(float(t1) - float(t0), 1),
                  "loadavg_before": [float(x) for x in load0.split()], "loadavg_after": [float(x) for x in load1.split()]}))
EOF
}

if [[ $REDUCED == 1 ]]; then
  QUALITY_ARGS=(--pairs 4 --max-new-tokens 8 --texts-only)
  ADAMW=(--steps 1 --repeats 2)
  TRAIN_DEFAULT=(--pairs 16 --val-pairs 16 --max-length 64)
  TRAIN_FP32=(--pairs 16 --val-pairs 16 --max-length 64 --repeats 2)
  CRITIQUE=(--items 8 --max-new-tokens 8 --batches 4,8 --repeats 1)
  SMALL=(--set train_data.limit=8 --set validation_data.limit=8 --set eval_data.pandalm.limit=8
         --set eval_data.rewardbench.per_stratum=1 --set critic_options.max_new_tokens=8)
else
  QUALITY_ARGS=()
  ADAMW=(--repeats 4)
  TRAIN_DEFAULT=()
  TRAIN_FP32=(--repeats 4)
  CRITIQUE=()
  SMALL=()
fi

START=$(date +%s.%N)
if [[ $QUALITY == 1 ]]; then
  step "critique_quality" $PY bench/critique_quality.py --engines ctranslate2:int8,transformers:qint8 \
    ${QUALITY_ARGS[@]+"${QUALITY_ARGS[@]}"} --out "$QUALITY_JSON"
fi
step "adamw_fused" $PY bench/adamw_fused.py "${ADAMW[@]}" --out "$OUT/adamw_fused.json"
step "train_throughput defaults" $PY bench/train_throughput.py ${TRAIN_DEFAULT[@]+"${TRAIN_DEFAULT[@]}"} \
  --out "$OUT/train_throughput-minilm.json"
step "train_throughput fp32" $PY bench/train_throughput.py --precision fp32 "${TRAIN_FP32[@]}" \
  --out "$OUT/train_throughput-minilm-fp32.json"
step "critique_throughput" $PY bench/critique_throughput.py ${CRITIQUE[@]+"${CRITIQUE[@]}"} \
  --quality "$QUALITY_JSON" --out "$OUT/critique_throughput.json"
$PY -m critcore.cli run bench/rq1_small.yaml --dry-run --set "critique_cache=$WORK/rq1_small.sqlite" \
  ${SMALL[@]+"${SMALL[@]}"} 2>&1 | tee "$OUT/rq1_small_projection.txt"
step "rq1_small" env CRITCORE_OUTPUTS="$WORK/outputs" $PY -m critcore.cli run bench/rq1_small.yaml \
  --set "critique_cache=$WORK/rq1_small.sqlite" ${SMALL[@]+"${SMALL[@]}"}
END=$(date +%s.%N)

$PY - "$WORK/steps.jsonl" "$OUT/quiet_run.json" "$START" "$END" "$REDUCED" "$OUT/rq1_small_projection.txt" <<'EOF'
import datetime as dt, json, re, sys
from pathlib import Path
from critcore.hardware import cpu_info
steps, out, start, end, reduced, projection = sys.argv[1:]
steps = [json.loads(line) for line in Path(steps).read_text().splitlines()]
projected = re.search(r"^\s+total\s+([\d.]+) min", Path(projection).read_text(), re.M)
measured = next(s["seconds"] for s in steps if s["step"] == "rq1_small")
record = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_info(), "reduced": reduced == "1",
          "seconds": round(float(end) - float(start), 1), "steps": steps,
          "rq1_small": {"projected_min": float(projected.group(1)) if projected else None,
                        "measured_min": round(measured / 60, 1),
                        "note": "the projection counts critiques, training and scoring; the run adds loading, "
                                "the notebook and its report"}}
Path(out).write_text(json.dumps(record, indent=2) + "\n")
print(f"wrote {out}: {record['seconds'] / 60:.1f} min; rq1_small projected {record['rq1_small']['projected_min']} min, "
      f"measured {record['rq1_small']['measured_min']} min")
EOF
