#include "gemm_blas.h"

#include <ATen/ATen.h>

namespace fastconv::cpu {

template <typename T>
void gemm_blas(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_row_stride, int64_t a_col_stride,
               const T* B, int64_t b_row_stride, int64_t b_col_stride, T* C, int64_t c_row_stride,
               int64_t c_col_stride, bool accumulate) {
  if (M == 0 || N == 0) return;
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  // from_blob never takes ownership; the const_casts are only for at::from_blob's signature.
  at::Tensor a = at::from_blob(const_cast<T*>(A), {M, K}, {a_row_stride, a_col_stride}, options);
  at::Tensor b = at::from_blob(const_cast<T*>(B), {K, N}, {b_row_stride, b_col_stride}, options);
  at::Tensor c = at::from_blob(C, {M, N}, {c_row_stride, c_col_stride}, options);
  if (accumulate) {
    c.addmm_(a, b);
  } else {
    c.copy_(at::mm(a, b));
  }
}

template void gemm_blas<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                               int64_t, float*, int64_t, int64_t, bool);
template void gemm_blas<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t, const double*,
                                int64_t, int64_t, double*, int64_t, int64_t, bool);

}  // namespace fastconv::cpu
