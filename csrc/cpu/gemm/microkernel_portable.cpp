// Plain C++ micro-kernel: the fallback on CPUs without AVX2+FMA and on non-x86 targets.
// Written so the compiler can vectorise the j loop with whatever SIMD the baseline flags allow.
#include "gemm_internal.h"

namespace fastconv::cpu::gemm_detail {
namespace {

// Always computes the full MR×NR tile (the packed panels are zero-padded) so that every
// element goes through the very same code, whatever the edge sizes; only the write-back is
// trimmed to mr×nr.
template <typename T>
void portable_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                     int64_t rs_c, int64_t cs_c, int mr, int nr, bool add) {
  constexpr int MR = Blocking<T>::MR, NR = Blocking<T>::NR;
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* a = Ap + k * MR;
    const T* b = Bp + k * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
  }
  for (int i = 0; i < mr; ++i) {
    T* c = C + i * rs_c;
    if (add) {
      for (int j = 0; j < nr; ++j) c[j * cs_c] += acc[i][j];
    } else {
      for (int j = 0; j < nr; ++j) c[j * cs_c] = acc[i][j];
    }
  }
}

}  // namespace

template <typename T> KernelSet<T> portable_kernels() {
  KernelSet<T> set;
  set.kernel = &portable_kernel<T>;
  return set;
}
template KernelSet<float> portable_kernels<float>();
template KernelSet<double> portable_kernels<double>();

}  // namespace fastconv::cpu::gemm_detail
