#!/usr/bin/env bash
# The GPU check, as one command for a machine with one GPU and no network:
#
#   scripts/gpu.sh            # on the GPU machine: about 6 to 8 minutes on one H200
#   scripts/gpu.sh --dry-run  # here, on the CPU: the same steps at toy size (tests/test_gpu_script.py)
#   STEPS="fsdp critiques" scripts/gpu.sh   # some steps only, in this order (default: the first four)
#
# It runs with the project's .venv where there is one (`make setup`). Where there is none (the lent
# H200: Python 3.12 with torch, no network), it installs the parts that scripts/gpu_bundle.sh made
# in .gpu/ (critcore's other dependencies and the embedded models as wheels, and ../shared/data).
# The critique cache ($CRITCORE_CACHE or ~/.cache/critcore) travels in the bundle, so critiques made
# on the CPU are reused. Steps, each logged under outputs/gpu/:
#   1. `critcore run params/rq1_cpu_smollm2.yaml`: rq1_cpu's SmolLM2-135M backbone with No-Critiques,
#      SmolLM2 and Gemma 3 270M critiques (the SmolLM2-backbone critique cells that this CPU cannot
#      train in a session), in outputs/rq1/$RUN_ID/ (default gpu). Its Gemma critiques cover every
#      split of rq1_cpu, so the CPU then trains rq1_cpu's Gemma column without generating them;
#   2. one `accelerate launch` training of a SmolLM2 RM (No-Critiques) on 1,000 pairs, bf16, and the GPU's training
#      pairs/s and MFU against the bf16 matmul peak measured on it (outputs/gpu/gpu.json);
#   3. critiques: every critique of params/rq1_cpu.yaml and params/rq1_ablation.yaml, in fp32 as
#      those studies ask (the cache keys the CPU uses), for the CPU to train those studies' RMs
#      without generating them: hours of a 2-core CPU (`critcore run ... --dry-run`), minutes here.
#      $CRITIQUE_SECONDS (default 900) bounds it: what is done stays cached, a rerun resumes;
#   4. sharded training (issue 26): a SmolLM2 RM on 200 pairs through configs/accelerate/fsdp.yaml,
#      gathered and saved as one plain checkpoint, then loaded back by plain transformers and by
#      critcore, with the same reward (outputs/gpu/fsdp.json). The dry run trains without FSDP
#      (accelerate shards only over GPUs) and runs the same checks.
#   studies (only when asked, after critiques): rq1_dose_cpu, rq1_cpu and rq1_ablation, in that
#      order (each draws on the one before: compare_runs), at micro-batch 32 (the same batch of 32,
#      one pass instead of four), bounded by $STUDY_SECONDS (default 1800); their folders without the
#      model weights and pages come back as outputs/gpu/studies.tar.gz. Hours of this CPU's time, minutes there.
# Last, whatever the steps: a copy of the critique cache, outputs/gpu/critiques.sqlite, to bring back.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=outputs/gpu
mkdir -p "$OUT"
RUN_ID=${RUN_ID:-gpu}
STEPS=${STEPS:-rq1 train critiques fsdp}
for step in $STEPS; do
  [[ $step =~ ^(rq1|train|critiques|fsdp|studies)$ ]] || { echo "gpu.sh: unknown step '$step' in STEPS (rq1, train, critiques, fsdp, studies)" >&2; exit 2; }
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=.venv/bin/python
if [[ ! -x $PY && -e .gpu/part-00 ]]; then
  BUNDLE=/tmp/critcore-gpu
  if [[ ! -e $BUNDLE/installed ]]; then
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/cache"
    cat .gpu/part-* | tar -C "$BUNDLE" -xf -
    tar -C "$BUNDLE" -xzf "$BUNDLE/data.tar.gz"
    [[ -e $BUNDLE/critiques.sqlite ]] && mv "$BUNDLE/critiques.sqlite" "$BUNDLE/cache/"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$BUNDLE/site" "$BUNDLE"/whl/*.whl
    PYTHONPATH="$BUNDLE/site" python3 -m ipykernel install --user --name critcore > /dev/null
    touch "$BUNDLE/installed"
  fi
  export PYTHONPATH="$BUNDLE/site:$PWD" CRITCORE_DATA="$BUNDLE/data" CRITCORE_CACHE="$BUNDLE/cache" PATH="$BUNDLE/site/bin:$PATH"
  PY=python3
fi
critcore() { $PY -m critcore.cli "$@"; }

if [[ $DRY == 1 ]]; then
  # Toy sizes, on the CPU: the same commands and files, in seconds.
  RQ1=(--dry-run)
  N=8
  LAUNCH=(--cpu --num_processes 1)
  EXTRA=(--set train.max_length=64 --set train.batch_size=8 --set train.micro_batch_size=8)
  PEAK=(512 0.5)
  SHARDED=(--cpu --num_processes 1)
  # a handful of pairs and short critiques (their own cache keys), with the studies' code path
  STUDY=(--dry-run)
  SMALL=(train_data.limit=2 validation_data.limit=2 critic_options.max_new_tokens=4
         'eval_data={pandalm: {format: pandalm, path: "${data}/pandalm/testset-v1.json", limit: 2}}')
else
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU: use --dry-run')"
  RQ1=(--set critic_options.batch_size=128)
  N=1000
  LAUNCH=(--num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
  EXTRA=(--set train.max_length=384 --set train.micro_batch_size=16)
  PEAK=(8192 3.0)
  SHARDED=(--config_file configs/accelerate/fsdp.yaml --num_processes 1)
  STUDY=(--set train.micro_batch_size=32)
  SMALL=(critic_options.batch_size=128)  # not in the cache key: the studies' critiques, faster
fi

rq1() {
# 1. rq1_cpu's SmolLM2-backbone cells (and every Gemma critique rq1_cpu needs)
critcore run params/rq1_cpu_smollm2.yaml --run-id "$RUN_ID" "${RQ1[@]}" > "$OUT/rq1_cpu_smollm2.log" 2>&1
}

train() {
# 2. one `accelerate launch` training, then pairs/s and MFU
rm -rf "$OUT/train"
$PY -m accelerate.commands.launch "${LAUNCH[@]}" -m critcore.cli train --quiet --backbone smollm2 \
  --train "jsonl:\${data}/mix/train.jsonl" --critic none --limit "$N" --out "$OUT/train" \
  "${EXTRA[@]}" > "$OUT/train.json" 2> "$OUT/train.log"

$PY - "$OUT" "${PEAK[@]}" <<'PY'
import json, sys
from pathlib import Path

import torch

from critcore import atomic
from critcore.hardware import matmul_peak
from critcore.model import RewardModel

out, n, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
summary = json.loads((out / "train" / "train" / "summary.json").read_text())
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "bfloat16" if summary["config"]["bf16"] else "float32"
peak = matmul_peak(dtype, n=n, seconds=seconds, device=device)
rm = RewardModel.load(str(out / "train" / "train" / "model"))
params = sum(p.numel() for p in rm.parameters()) - rm.hf.get_input_embeddings().weight.numel()
pairs_s = summary["pairs_per_s"]
result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "dtype": dtype,
          "train_pairs": summary["train_pairs"], "pairs_per_s": pairs_s, "train_seconds": summary["train_seconds"],
          "tokens_per_pair": summary.get("tokens_per_pair"), "non_embedding_params": params,
          "matmul_peak_tflops": round(peak / 1e12, 2)}
if summary.get("tokens_per_pair"):
    result["mfu"] = round(6 * params * summary["tokens_per_pair"] * pairs_s / peak, 4)
atomic.write_json(out / "gpu.json", result)
print(json.dumps(result))
PY
}

# 3. every critique of rq1_cpu and rq1_ablation, bounded in time; what is done stays cached
critiques() {
  local status=0
  timeout "${CRITIQUE_SECONDS:-900}" $PY - params/rq1_cpu.yaml params/rq1_ablation.yaml -- "${SMALL[@]}" \
    > "$OUT/critiques.log" 2>&1 <<'PY' || status=$?
import sys
from pathlib import Path

from critcore import config, studies
from critcore.run import start

cut = sys.argv.index("--")
for path in sys.argv[1:cut]:
    raw = config.read_yaml(path)
    # the --set items apply where the file has their block (rq1_ablation has no validation_data);
    # the critiques only: no training, so nothing that concerns the RMs (earlier runs, the probe, the ablation)
    sets = [s for s in sys.argv[cut + 1:] if s.split("=")[0].split(".")[0] in raw]
    cfg = config.load(path, sets=[*sets, f"run_id=gpu-critiques-{Path(path).stem}", "compare_runs=[]", "probe=false",
                                  "ablation=[]"])
    run = start(cfg)
    done = studies.critique_all(run, studies.load_splits(run))
    print(path, "critiqued by", sorted(done), flush=True)
PY
  [[ $status == 124 ]] && echo "critiques: stopped after ${CRITIQUE_SECONDS:-900} s; a rerun resumes" >> "$OUT/critiques.log"
  [[ $status == 0 || $status == 124 ]]
}

fsdp() {
# 4. sharded training, gathered into one plain checkpoint, loaded back two ways
rm -rf "$OUT/fsdp"
$PY -m accelerate.commands.launch "${SHARDED[@]}" -m critcore.cli train --quiet --backbone smollm2 \
  --train "jsonl:\${data}/mix/train.jsonl" --critic none --limit $((N < 200 ? N : 200)) --out "$OUT/fsdp" \
  "${EXTRA[@]}" > "$OUT/fsdp_train.json" 2> "$OUT/fsdp_train.log"
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from critcore import atomic
from critcore.evaluate import score_texts
from critcore.format import Formatter
from critcore.model import RewardModel

out = Path(sys.argv[1])
folder = out / "fsdp" / "train" / "model"
log = (out / "fsdp_train.log").read_text()
rm = RewardModel.load(str(folder))
fmt = Formatter(rm.tokenizer, 64)
ids = fmt.ids(fmt.text("What is 2 + 2?", "4"))
ours = score_texts(rm, [ids])[0]
hf = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
with torch.no_grad():
    plain = hf(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits.item()
result = {"files": sorted(p.name for p in folder.iterdir()), "recipe": rm.recipe is not None,
          # critcore warns when a launch asked for FSDP and accelerate did not shard: then the
          # gather-and-save path this step exists for did not run
          "asked_but_unsharded": "asked for FSDP" in log, "critcore_reward": ours, "plain_reward": plain,
          "same_reward": abs(ours - plain) < 1e-4}
atomic.write_json(out / "fsdp.json", result)
print(json.dumps(result), file=sys.stderr)
ok = result["same_reward"] and result["recipe"] and {"model.safetensors", "README.md"} <= set(result["files"])
sys.exit(0 if ok and not result["asked_but_unsharded"] else 1)
PY
}

# the three RQ1 studies, bounded in time; what is done stays (a rerun resumes); the folders come back without weights
studies() {
  local status=0 deadline=$((SECONDS + ${STUDY_SECONDS:-1800}))
  for study in rq1_dose_cpu rq1_cpu rq1_ablation; do
    timeout $((deadline - SECONDS > 1 ? deadline - SECONDS : 1)) $PY -m critcore.cli run "params/$study.yaml" \
      --set progress=false "${STUDY[@]}" > "$OUT/$study.log" 2>&1 || { status=$?; break; }
  done
  local folders
  folders=$(cd outputs && ls -d rq1/rq1_dose_cpu rq1/rq1_cpu rq1/rq1_ablation 2>/dev/null || true)
  rm -f "$OUT/studies.tar.gz"  # a dry run trains nothing: no folder, no archive
  [[ -z $folders ]] || (cd outputs && tar --exclude=model --exclude='*.safetensors' --exclude='checkpoint*' --exclude='*.html' \
    -czf ../"$OUT"/studies.tar.gz $folders)
  [[ $status == 0 ]] || echo "studies: $study stopped with status $status ($([[ $status == 124 ]] && echo 'out of time; a rerun resumes'))" >&2
  [[ $status == 0 || $status == 124 ]]
}

for step in $STEPS; do $step; done

# Last: the critique cache, copied consistently (SQLite's backup) beside its place, then renamed into it
rm -f "$OUT/critiques.sqlite.tmp"
$PY -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
  "${CRITCORE_CACHE:-$HOME/.cache/critcore}/critiques.sqlite" "$OUT/critiques.sqlite.tmp"
mv "$OUT/critiques.sqlite.tmp" "$OUT/critiques.sqlite"

