#!/usr/bin/env bash
# Every GPU check of issue #18 (and #11, #12) in one run on a CUDA machine (the device tool's one lease,
# about 7 minutes of the 15): a smoke run of every command on tiny data, the training step against
# sparsify with the dense-code GPU path (sae_core/dense_code.py) and, for comparison, the sparse kernels
# (SAESCOPE_DENSE_CODE=0), the index scan, the profiles of both, and extraction. Wheels that the GPU image
# lacks travel in .whl/ (docs/benchmarks.md says how they are downloaded). Output: $OUT/log.txt.
# Run it with: run(command="bash bench/gpu_session.sh", timeout_s=540)
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
  # 1. every command on tiny data: extract (hf tiny CLIP, bf16), train (all architectures, bf16), index, worker
  run 100 python3 bench/gpu_smoke.py
  # 2. training, d=1,024, 65,536 latents, k=32, batch 8,192, AuxK on (target >= 1.5x sparsify); then the
  #    sparse kernels on the GPU for the before/after of the dense-code path
  run 80 python3 bench/bench_train.py --sparsify --only "65,536" --steps 10 --rounds 2
  run 45 env SAESCOPE_DENSE_CODE=0 python3 bench/bench_train.py --only "65,536" --steps 5
  # 3. the index scan (target >= 2M tokens/s; 10M tokens do not fit the lease: the store write alone
  #    takes ~16 s per million)
  run 110 python3 bench/bench_index.py --tokens 3000000 --d-in 1024 --d-sae 65536 --k 32 --chunk 65536
  # where the time goes now, training step and scan (torch.profiler)
  run 50 python3 bench/gpu_profile.py
  # 4. extraction, CLIP ViT-L/14 built from its config with random weights: end to end vs model only
  run 60 python3 bench/bench_extract.py --clip --n 4096 --batch 256 --workers 14
} 2>&1 | tee "$OUT/log.txt"
