// Placeholder until fastconv's own packed GEMM lands: forwards to the BLAS path.
#include "gemm.h"
#include "gemm_blas.h"

namespace fastconv::cpu {

template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_row_stride, int64_t a_col_stride, const T* B,
          int64_t b_row_stride, int64_t b_col_stride, T* C, int64_t c_row_stride, int64_t c_col_stride,
          bool accumulate) {
  gemm_blas<T>(M, N, K, A, a_row_stride, a_col_stride, B, b_row_stride, b_col_stride, C, c_row_stride,
               c_col_stride, accumulate);
}

const char* gemm_kernel_name() { return "blas"; }

template void gemm<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                          int64_t, float*, int64_t, int64_t, bool);
template void gemm<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t, const double*, int64_t,
                           int64_t, double*, int64_t, int64_t, bool);

}  // namespace fastconv::cpu
