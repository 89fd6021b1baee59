#pragma once
#include <cstdint>
namespace fastconv::cpu {
// C = A·B, or C += A·B when accumulate. A is M×K, B is K×N, C is M×N; each matrix is a pointer plus
// its row and column strides in elements, so transposed operands and channels_last outputs need no copy.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K,
          const T* A, int64_t a_row_stride, int64_t a_col_stride,
          const T* B, int64_t b_row_stride, int64_t b_col_stride,
          T* C, int64_t c_row_stride, int64_t c_col_stride,
          bool accumulate);
// What the dispatcher picked at run time, for build_info() and benchmarks: "avx2+fma" or "portable".
const char* gemm_kernel_name();
}
