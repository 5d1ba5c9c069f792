#!/usr/bin/env bash
# RewardBench 0.1.4 (the newest release; it pins transformers 4.51) scores critcore's saved RMs,
# in its own virtual environment, and gets critcore's rewards:
#
#   scripts/rewardbench/check.sh [N]    # N pairs of the mix's validation split (default 100)
#
# Needs PyPI once (the venv, about 1 GB with the CPU torch wheel; kept in .venv-rewardbench) and
# ../shared/data. Prints the largest reward difference per run; exits 1 if one that should
# match does not (check.py says which).
# Writes $RB_OUT (default outputs/interop/rewardbench/): the RMs, pairs.jsonl, both sides' scores,
# RewardBench's logs and rewardbench_check.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
RB=${RB_VENV:-.venv-rewardbench}
OUT=${RB_OUT:-outputs/interop/rewardbench}
if [[ ! -x $RB/bin/rewardbench ]]; then
  python3.11 -m venv "$RB" || python3 -m venv "$RB"
  "$RB/bin/pip" install -q torch==2.13.0
  "$RB/bin/pip" install -q -r scripts/rewardbench/requirements.txt
  # rewardbench 0.1.4 declares trl/wandb/... it does not import for classifier RMs; its pins of
  # transformers 4.51 and a hub client < 1.0 are in requirements.txt
  "$RB/bin/pip" install -q --no-deps rewardbench==0.1.4 trl==0.12.2
fi
rm -rf "$OUT" && mkdir -p "$OUT"
.venv/bin/python scripts/rewardbench/check.py prepare "$OUT" "$N"
# RewardBench's CLI, unchanged, except that without a GPU the one call in its pipeline that moves
# the inputs to "cuda" (rewardbench/models/pipeline.py:44) moves them to the CPU instead.
RUN_REWARDBENCH='
import sys, torch, transformers.tokenization_utils_base as t
if not torch.cuda.is_available():
    to = t.BatchEncoding.to
    t.BatchEncoding.to = lambda self, device, **kw: to(self, "cpu" if device == "cuda" else device, **kw)
from rewardbench.rewardbench import main
sys.argv[0] = "rewardbench"
main()'
# Each RM at RewardBench's batch size (8, which it pads on the left), and MiniLM also at batch 1.
for run in minilm-b8 minilm-b1 smollm2-b8; do
  name=${run%-b*} batch=${run##*-b}
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$RB/bin/python" -c "$RUN_REWARDBENCH" --model "$OUT/$name" \
    --dataset "$OUT/pairs.jsonl" --load_json --not_quantized --torch_dtype float32 --batch_size "$batch" \
    --max_length 512 --save_all --output_dir "$OUT/rb/$run/" > "$OUT/rb-$run.log" 2>&1 \
    || { tail -20 "$OUT/rb-$run.log"; exit 1; }
done
.venv/bin/python scripts/rewardbench/check.py compare "$OUT"
