#!/usr/bin/env bash
# Builds and runs the standalone GEMM test against the installed torch's headers and libraries.
# Usage: tests/cpp/build_and_run_gemm.sh   (with the project's Python environment active)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"
TORCH_INCLUDES="$("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")"
TORCH_LIB="$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")"
OUT="${BUILD_DIR:-$ROOT/build}/test_gemm"
mkdir -p "$(dirname "$OUT")"
# -fopenmp: this torch's at::parallel_for is inline OpenMP code; without it the GEMM runs serially.
# The rpath makes libgomp.so.1 resolve to torch's own copy, so there is one OpenMP runtime.
# shellcheck disable=SC2086
g++ -std=c++20 -O2 -fopenmp -Wall -Wextra -I "$ROOT/csrc" $TORCH_INCLUDES \
  "$ROOT/tests/cpp/test_gemm.cpp" "$ROOT"/csrc/cpu/gemm/*.cpp \
  -L"$TORCH_LIB" -lc10 -ltorch_cpu -Wl,-rpath,"$TORCH_LIB" -o "$OUT"
# The environment override, checked in a fresh process because the choice is made once.
FASTCONV_GEMM_KERNEL=portable "$OUT" --dispatch-only
"$OUT"
# The environment override, checked in a fresh process because the choice is made once.
FASTCONV_GEMM_KERNEL=portable "$OUT" --dispatch-only
