#!/usr/bin/env bash
# Builds and runs the SIMT emulator tests. Run from anywhere.
#   FASTCONV_SIMT_USE_UCONTEXT=1  also builds/runs the portable ucontext variant
#   SIMT_NVCC_CHECK=1             also compiles the test kernels with nvcc (no GPU needed)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${SIMT_BUILD_DIR:-$root/build/simt}"
mkdir -p "$out"
flags=(-std=c++20 -O2 -Wall -Wextra -pthread -I"$root/csrc")

g++ "${flags[@]}" -o "$out/test_simt" "$root/tests/cpp/test_simt.cpp" "$root/csrc/emulator/simt.cpp"
"$out/test_simt"

if [[ "${FASTCONV_SIMT_USE_UCONTEXT:-0}" == 1 ]]; then
  echo "--- ucontext fallback"
  g++ "${flags[@]}" -DFASTCONV_SIMT_USE_UCONTEXT -o "$out/test_simt_ucontext" \
    "$root/tests/cpp/test_simt.cpp" "$root/csrc/emulator/simt.cpp"
  "$out/test_simt_ucontext"
fi

if [[ "${SIMT_NVCC_CHECK:-0}" == 1 ]]; then
  echo "--- nvcc compile check"
  nvcc -std=c++20 -arch=sm_90 -I"$root/csrc" -c "$root/tests/cpp/simt_test_kernels.cu" \
    -o "$out/simt_test_kernels.o"
  echo "nvcc: simt_test_kernels.cu compiled"
fi
