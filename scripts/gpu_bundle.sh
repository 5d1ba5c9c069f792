#!/usr/bin/env bash
# Packs what scripts/gpu.sh needs on a GPU machine that has Python 3.12 with torch but no network
# and no copy of this project's .venv (the lent H200): the wheels in scripts/gpu_requirements.txt
# (downloaded here for Python 3.12 on x86-64 Linux), ../shared/data and the critique cache
# ($CRITCORE_CACHE or ~/.cache/critcore, so critiques made here are reused), as one tar stream cut into
# parts of at most PART_MB MiB (default 48: with the project's own ~10 MB, one part fits a call) under .gpu/ (git-ignored), so that a tool carrying at
# most 64 MiB per call can send them one part per call. gpu.sh reassembles and installs them.
#
#   scripts/gpu_bundle.sh          # here, where PyPI is reachable: about 10 s and 420 MB
set -euo pipefail
cd "$(dirname "$0")/.."
PART_MB=${PART_MB:-48}
rm -rf .gpu && mkdir -p .gpu/stage/whl
platforms=()
for p in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  platforms+=(--platform "${p}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .gpu/stage/whl -r scripts/gpu_requirements.txt
tar -C "$(cd ../shared && pwd)" -czf .gpu/stage/data.tar.gz data
cache="${CRITCORE_CACHE:-$HOME/.cache/critcore}/critiques.sqlite"
stage=(whl data.tar.gz)
if [[ -e $cache ]]; then
  python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" "$cache" .gpu/stage/critiques.sqlite
  stage+=(critiques.sqlite)
fi
tar -C .gpu/stage -cf - "${stage[@]}" | split -b "${PART_MB}M" -d -a 2 - .gpu/part-
rm -rf .gpu/stage
ls -l .gpu
