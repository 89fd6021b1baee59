#!/usr/bin/env bash
# fastconv on a real GPU, in one command (about 3-6 minutes on one H200):
#   bash benchmarks/gpu_check.sh
# 1. builds fastconv with CUDA for the GPU present (pip install --no-build-isolation --no-deps -e .),
# 2. runs every needs_cuda test (pytest -m needs_cuda),
# 3. times fastconv's CUDA conv2d algorithms against cuDNN on the standard shapes (benchmarks/gpu_check.py),
# and prints a short summary table at the end. Logs go to $OUT (or /tmp/fastconv_gpu_check).
set -u
cd "$(dirname "$0")/.."
LOGS="${OUT:-/tmp/fastconv_gpu_check}"
mkdir -p "$LOGS"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 ))s; }

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)" \
  || { echo "gpu_check: no usable CUDA device"; exit 2; }

# 1. build (TORCH_CUDA_ARCH_LIST unset: torch builds for the GPU it sees)
export FASTCONV_CUDA=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
unset TORCH_CUDA_ARCH_LIST
timeout 420 pip install --no-build-isolation --no-deps -v -e . > "$LOGS/build.log" 2>&1
BUILD_RC=$?
BUILD_TIME=$(elapsed)
NVCC_WARNINGS=$(grep -ci "warning" "$LOGS/build.log" || true)
if [ $BUILD_RC -ne 0 ]; then tail -40 "$LOGS/build.log"; fi
python -c "import fastconv; print(fastconv._C.build_info())" > "$LOGS/build_info.txt" 2>&1
cat "$LOGS/build_info.txt"

# 2. CUDA tests
TEST_SUMMARY="not run (build failed)"
if [ $BUILD_RC -eq 0 ]; then
  timeout 240 python -m pytest -q -p no:cacheprovider -m needs_cuda tests/ > "$LOGS/tests.log" 2>&1
  TEST_RC=$?
  TEST_SUMMARY=$(tail -1 "$LOGS/tests.log")
  [ $TEST_RC -ne 0 ] && grep -E "^(FAILED|ERROR)" "$LOGS/tests.log" | head -20
fi
TEST_TIME=$(elapsed)

# 3. timings
if [ $BUILD_RC -eq 0 ]; then
  timeout 300 python benchmarks/gpu_check.py --budget-s 200 > "$LOGS/bench.log" 2>&1
  BENCH_RC=$?
else
  BENCH_RC=-1
fi

echo
echo "================================ fastconv gpu_check ================================"
printf "%-10s %-8s %s\n" "build" "$([ $BUILD_RC -eq 0 ] && echo ok || echo FAIL)" "rc=$BUILD_RC, $NVCC_WARNINGS lines mentioning 'warning' in $LOGS/build.log, done at $BUILD_TIME"
printf "%-10s %-8s %s\n" "tests" "" "$TEST_SUMMARY (done at $TEST_TIME)"
printf "%-10s %-8s %s\n" "bench" "rc=$BENCH_RC" "done at $(elapsed); full log $LOGS/bench.log"
echo
sed -n '/^fastconv CUDA time/,$p' "$LOGS/bench.log" 2>/dev/null || true
[ $BENCH_RC -ne 0 ] && tail -5 "$LOGS/bench.log" 2>/dev/null
echo "total $(elapsed)"
