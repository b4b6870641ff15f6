#!/usr/bin/env bash
# Every GPU check of issues #18, #11 and #12 in one run on a CUDA machine (the device tool's one lease):
# a smoke run of every command on tiny data, then the benches. Wheels that the GPU image lacks travel in
# .whl/ (see docs/benchmarks.md for how they are downloaded). Output: $OUT/log.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 SAESCOPE_PROGRESS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
log() { echo; echo "=== $* ($(date +%T))"; }
run() { local limit=$1; shift; log "$*"; timeout "$limit" "$@" || echo "!!! exit $? after limit ${limit}s: $*"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  run 150 python3 bench/gpu_smoke.py
  run 100 python3 bench/bench_train.py --sparsify --only "65,536" --steps 10 --rounds 3
  run 90 python3 bench/bench_index.py --tokens 3000000 --d-in 1024 --d-sae 65536 --k 32 --chunk 65536
  run 60 python3 bench/bench_live.py --clip-gpu --n 40
  run 80 python3 bench/bench_extract.py --clip --n 4096 --batch 256 --workers 14
} 2>&1 | tee "$OUT/log.txt"
