#!/usr/bin/env bash
# Everything this project checks on a CUDA machine, in one call (the CPU suite runs in CI):
#   1. the CUDA tests (tests/test_cuda.py, tests/test_gpu_decode.py, the CUDA ones in test_backends.py)
#   2. the whole test suite under that machine's torch/torchvision (parallel where pytest-xdist is there)
#   3. benchmarks/bench_cuda.py (seed loop vs predict, variants, forward-only and decode-only bounds)
# Logs and JSON go to $OUT (default .cuda-out/). Run from the repository root:
#   bash benchmarks/cuda_check.sh            # about 5 minutes on one H100/H200 with 16 cores
set -u
out=${OUT:-.cuda-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nproc
  $py -c "import sys, torch, torchvision, PIL, typer; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'Pillow', PIL.__version__, 'typer', typer.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

echo "== CUDA tests"
timeout 150 $py -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_gpu_decode.py \
  tests/test_backends.py -k "cuda or gpu or Cuda" 2>&1 | tee "$out/cuda_tests.log" | tail -25

echo "== full suite"
xdist=()
$py -c "import xdist" 2>/dev/null && xdist=(-n 8)
timeout 150 $py -m pytest -q -p no:cacheprovider "${xdist[@]}" 2>&1 | tee "$out/full_tests.log" | tail -15

echo "== CUDA benchmark"
timeout ${BENCH_TIMEOUT:-260} $py benchmarks/bench_cuda.py --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.log" | tail -60
