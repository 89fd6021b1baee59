// The same contract as gemm() but through at::mm (MKL/oneDNN): the im2col_blas comparison point only.
#pragma once
#include <cstdint>
namespace fastconv::cpu {
template <typename T>
void gemm_blas(int64_t M, int64_t N, int64_t K,
               const T* A, int64_t a_row_stride, int64_t a_col_stride,
               const T* B, int64_t b_row_stride, int64_t b_col_stride,
               T* C, int64_t c_row_stride, int64_t c_col_stride,
               bool accumulate);
}
