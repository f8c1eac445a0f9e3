#!/usr/bin/env bash
# Everything this project checks on a CUDA machine, in one call (the CPU suite runs in CI):
#   1. the CUDA tests (tests/test_cuda.py, tests/test_gpu_decode.py, the CUDA ones in test_backends.py)
#   2. start-up: where the seconds before the first image go, and `predict dog.jpg` on CUDA
#   3. benchmarks.bench_cuda (seed loop vs predict, variants, forward-only and decode-only bounds)
#   4. the whole test suite under that machine's torch/torchvision (parallel where pytest-xdist is there)
#   5. benchmarks.studies.forward_cuda: the inference step alone, variant by variant (about 1.5 minutes)
#   6. benchmarks.studies.profile_cuda: the feed's ceiling, CLI variants with the rate after the first
#      batch, and py-spy samples of the main thread where py-spy is installed (about 3 minutes)
#   7. benchmarks.studies.exact_resize --device cuda: Pillow's exact resize redone on the GPU, checked byte
#      for byte and timed on a batch (a lead for the default's decode bound; about 15 s)
# Steps 5-7 run one-off studies (benchmarks/studies/, see benchmarks/README.md), here because a GPU
# machine is lent for minutes. Logs and JSON go to $OUT (default .cuda-out/). Run from the repository root
# (the benchmarks run as modules, `python -m benchmarks.X`):
#   bash benchmarks/cuda_check.sh            # steps 1-4 and 7, about 5 minutes on one H100/H200 with 16 cores
#   STEPS=tests,profile PROFILE_ARGS="--images 20000 --runs defaults,gpu-decode" bash benchmarks/cuda_check.sh
# Knobs: STEPS (default tests,startup,bench,suite,resize; add forward and profile), BENCH_ARGS (extra
# benchmarks.bench_cuda arguments), BENCH_TIMEOUT, SUITE_TIMEOUT, FORWARD_ARGS, FORWARD_TIMEOUT, PROFILE_ARGS,
# PROFILE_TIMEOUT, RESIZE_TIMEOUT.
set -u
[ -f benchmarks/common.py ] || { echo "cuda_check.sh: run it from the repository root" >&2; exit 2; }
steps=",${STEPS:-tests,startup,bench,suite,resize},"
steps=${steps// /}
for step in ${steps//,/ }; do
  case $step in
    tests | startup | bench | suite | forward | profile | resize) ;;
    *) echo "cuda_check.sh: unknown step '$step' in STEPS (tests, startup, bench, suite, forward, profile, resize)" >&2; exit 2 ;;
  esac
done
want() { [[ $steps == *",$1,"* ]]; }
out=${OUT:-.cuda-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
dog=../shared/images/dog.jpg
x05=../shared/weights/shufflenetv2_x0_5-imagenet-fp16.pth

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nproc
  $py -c "import sys, torch, torchvision, PIL, typer; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'Pillow', PIL.__version__, 'typer', typer.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$out/machine.txt"

want tests && echo "== CUDA tests" && timeout ${CUDA_TESTS_TIMEOUT:-120} $py -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_gpu_decode.py \
  tests/test_decoding.py tests/test_backends.py -k "cuda or gpu or Cuda or decoding" 2>&1 | tee "$out/cuda_tests.log" |
  grep -E "^(FAILED|ERROR)|^E  .{0,150}$|passed|failed" | head -30

want startup && echo "== start-up on CUDA" && timeout 60 $py - <<'EOF' 2>&1 | tee "$out/startup.txt"
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
t2 = time.perf_counter()
import torchvision  # noqa: F401
t3 = time.perf_counter()
from shufflenet_cli.models import resolve_model
model = resolve_model("x1_0").builder()(weights=None).cuda().eval().to(memory_format=torch.channels_last)
t4 = time.perf_counter()
with torch.inference_mode():
    model(torch.zeros(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)).cpu()
t5 = time.perf_counter()
print(f"import torch {t1 - t0:.2f} s, CUDA context {t2 - t1:.2f} s, import torchvision {t3 - t2:.2f} s, "
      f"build + move x1_0 {t4 - t3:.2f} s, first forward b128 {t5 - t4:.2f} s")
EOF
if want startup && [ -f "$dog" ]; then
  TIMEFORMAT="predict dog.jpg --device cuda: %R s wall"
  for _ in 1 2; do
    { time $py -m shufflenet_cli predict "$dog" -m x0_5 --weights "$x05" --device cuda -k 1 -f jsonl -q; } 2>&1 |
      tee -a "$out/startup.txt" | grep -E "Samoyed|wall"
  done
fi

# shellcheck disable=SC2086
want bench && echo "== CUDA benchmark" && timeout ${BENCH_TIMEOUT:-260} $py -m benchmarks.bench_cuda --json "$out/bench_cuda.json" ${BENCH_ARGS:-} 2>&1 |
  tee "$out/bench_cuda.log" | tail -60

if want suite && [ "${SUITE_TIMEOUT:-150}" != 0 ]; then
  echo "== full suite"
  xdist=()
  $py -c "import xdist" 2>/dev/null && xdist=(-n 12)
  timeout ${SUITE_TIMEOUT:-150} $py -m pytest -v -p no:cacheprovider "${xdist[@]}" >"$out/full_tests.log" 2>&1
  grep -cE " PASSED" "$out/full_tests.log"
  grep -E " (FAILED|ERROR)" "$out/full_tests.log" | sed -e 's/^\[gw[0-9]*\] *\[ *[0-9]*%\] *//' | head -20
fi

if want forward; then
  echo "== the inference step alone"
  # shellcheck disable=SC2086
  timeout ${FORWARD_TIMEOUT:-200} $py -m benchmarks.studies.forward_cuda --json "$out/forward.json" ${FORWARD_ARGS:-} 2>&1 | tee "$out/forward.log"
fi

if want profile; then
  echo "== where a run's time goes"
  # shellcheck disable=SC2086
  timeout ${PROFILE_TIMEOUT:-240} $py -m benchmarks.studies.profile_cuda --json "$out/profile.json" --raw-dir "$out" \
    ${PROFILE_ARGS:-} 2>&1 | tee "$out/profile.log" | grep -v "^run \|^feed \|^py-spy "
fi

if want resize; then
  echo "== the exact resize on the GPU"
  timeout ${RESIZE_TIMEOUT:-90} $py -m benchmarks.studies.exact_resize --device cuda 2>&1 | tee "$out/exact_resize.log"
fi
