// Shared pieces of fastconv's conv2d CUDA kernels: the accumulation type and the namespace that keeps nvcc
// and emulator instantiations apart (Strides4 is Conv2dProblem's neighbour, conv2d_problem.h).
//
// Built two ways from the same source: by nvcc in csrc/cuda/conv2d_cuda.cu (FASTCONV_CUDA=1 builds) and
// by g++ in csrc/emulator/conv2d_emulated.cpp, where the SIMT emulator runs every GPU thread as a fiber.
// Tested by tests/test_cuda_conv2d.py (emulated on the CPU; the needs_cuda tests on a real GPU).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../conv2d_problem.h"
#include "launch.cuh"

#if defined(__CUDACC__)
#define FASTCONV_UNROLL _Pragma("unroll")
#else
#define FASTCONV_UNROLL
#endif

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

// Half and BFloat16 accumulate in float; float and double in themselves.
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<c10::Half> {
  using type = float;
};
template <>
struct AccType<c10::BFloat16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccType<T>::type;

template <typename T>
__host__ __device__ __forceinline__ T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
