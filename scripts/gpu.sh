#!/usr/bin/env bash
# The GPU check, as one command for a machine with one GPU and no network:
#
#   scripts/gpu.sh            # on the GPU machine: about 5 to 8 minutes on one H200 (projected)
#   scripts/gpu.sh --dry-run  # here, on the CPU: the same steps at toy size (tests/test_gpu_script.py)
#
# It needs the project with a working .venv (carried from here, or made by `make setup` where
# PyPI is reachable) and ../shared/data beside it. Steps:
#   1. finish params/rq1_results.yaml: the SmolLM2-backbone cells with SmolLM2 and Gemma
#      critiques (every finished RM and every cached critique is reused);
#   2. one `accelerate launch` training of a SmolLM2 RM on 1,000 pairs, bf16;
#   3. the GPU's training pairs/s and MFU against the bf16 matmul peak measured on it.
# Everything lands in outputs/gpu/ (gpu.json, the logs) and outputs/rq1/rq1_results/.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=.venv/bin/python
CRITCORE=.venv/bin/critcore
OUT=outputs/gpu
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ $DRY == 1 ]]; then
  # Toy sizes, on the CPU: the same commands and files, in seconds.
  $CRITCORE run params/rq1_results.yaml --dry-run > "$OUT/rq1_results.log" 2>&1
  N=8
  LAUNCH=(--cpu --num_processes 1)
  EXTRA=(--set train.max_length=64 --set train.batch_size=8 --set train.micro_batch_size=8)
else
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU: use --dry-run')"
  $CRITCORE run params/rq1_results.yaml > "$OUT/rq1_results.log" 2>&1
  N=1000
  LAUNCH=(--num_processes 1 --mixed_precision bf16)
  EXTRA=(--set train.max_length=384 --set train.micro_batch_size=16)
fi

rm -rf "$OUT/train"
.venv/bin/accelerate launch "${LAUNCH[@]}" -m critcore.cli train --quiet --backbone smollm2 \
  --train "jsonl:../shared/data/mix/train.jsonl" --limit "$N" --out "$OUT/train" --cache "$OUT/critiques.sqlite" \
  "${EXTRA[@]}" > "$OUT/train.json" 2> "$OUT/train.log"

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path

import torch

from critcore.hardware import matmul_peak
from critcore.model import RewardModel

out = Path(sys.argv[1])
summary = json.loads((out / "train" / "train" / "summary.json").read_text())
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "bfloat16" if summary["config"]["bf16"] else "float32"
peak = matmul_peak(dtype, n=4096 if device == "cuda" else 512, seconds=3.0 if device == "cuda" else 0.5, device=device)
rm = RewardModel.load(str(out / "train" / "train" / "model"))
params = sum(p.numel() for p in rm.parameters()) - rm.hf.get_input_embeddings().weight.numel()
pairs_s = summary["pairs_per_s"]
result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "dtype": dtype,
          "train_pairs": summary["train_pairs"], "pairs_per_s": pairs_s, "train_seconds": summary["train_seconds"],
          "tokens_per_pair": summary.get("tokens_per_pair"), "non_embedding_params": params,
          "matmul_peak_tflops": round(peak / 1e12, 2)}
if summary.get("tokens_per_pair"):
    result["mfu"] = round(6 * params * summary["tokens_per_pair"] * pairs_s / peak, 4)
(out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result))
PY
