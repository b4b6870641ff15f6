#!/usr/bin/env bash
# Second GPU run: the two benches that ran out of time in gpu_session.sh, at smaller sizes.
set -uo pipefail
export PYTHONUNBUFFERED=1 SAESCOPE_PROGRESS=0 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{
  echo "=== bench_index 1M ($(date +%T))"; timeout 170 python3 bench/bench_index.py --tokens 1000000 --d-in 1024 --d-sae 65536 --k 32 --chunk 65536 || echo "!!! exit $?"
  echo "=== bench_extract clip 2048 ($(date +%T))"; timeout 150 python3 bench/bench_extract.py --clip --n 2048 --batch 256 --workers 14 || echo "!!! exit $?"
} 2>&1 | tee "$OUT/log2.txt"
