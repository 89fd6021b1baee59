// AVX2+FMA micro-kernels. Compiled with per-function target attributes instead of a global -mavx2
// so the rest of the extension keeps baseline flags and this code only runs after the run-time
// CPU check in gemm.cpp. Nothing here may call non-inline library code: such code would be
// compiled for the baseline target and could not be inlined into an AVX2 function anyway.
#include "gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define FC_AVX2 __attribute__((target("avx2,fma")))
#define FC_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace fastconv::cpu::gemm_detail {
namespace {

// Thin overloads so one kernel template serves float (8 lanes) and double (4 lanes).
FC_AVX2_INLINE __m256 vzero(float) { return _mm256_setzero_ps(); }
FC_AVX2_INLINE __m256d vzero(double) { return _mm256_setzero_pd(); }
FC_AVX2_INLINE __m256 vload(const float* p) { return _mm256_load_ps(p); }
FC_AVX2_INLINE __m256d vload(const double* p) { return _mm256_load_pd(p); }
FC_AVX2_INLINE __m256 vloadu(const float* p) { return _mm256_loadu_ps(p); }
FC_AVX2_INLINE __m256d vloadu(const double* p) { return _mm256_loadu_pd(p); }
FC_AVX2_INLINE void vstoreu(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
FC_AVX2_INLINE void vstoreu(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
FC_AVX2_INLINE __m256 vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
FC_AVX2_INLINE __m256d vbroadcast(const double* p) { return _mm256_broadcast_sd(p); }
FC_AVX2_INLINE __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
FC_AVX2_INLINE __m256d vfma(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
FC_AVX2_INLINE __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
FC_AVX2_INLINE __m256d vadd(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }

// ROWS ≤ MR rows and NVEC ≤ 2 vectors of columns are computed; edge tiles get a smaller
// instantiation instead of wasted FMAs on padding. The packed panels keep their full MR / NR
// strides. Per element the arithmetic is identical across instantiations (an FMA chain over k
// from zero, then one add into C), so results do not depend on where a tile falls.
template <typename T, int ROWS, int NVEC>
FC_AVX2 void kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* C,
                    int64_t rs_c, int64_t cs_c, int mr, int nr, bool add) {
  constexpr int MR = Blocking<T>::MR, NR = Blocking<T>::NR;
  constexpr int W = 32 / sizeof(T);
  using V = decltype(vzero(T{}));

  // C is touched only after the k loop; start pulling its lines in now.
  for (int i = 0; i < ROWS; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(C + i * rs_c), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * rs_c + (NVEC * W - 1) * cs_c), _MM_HINT_T0);
  }

  V acc[ROWS][NVEC];
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NVEC; ++v) acc[i][v] = vzero(T{});

#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    V b[NVEC];
#pragma GCC unroll 2
    for (int v = 0; v < NVEC; ++v) b[v] = vload(Bp + v * W);
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      const V a = vbroadcast(Ap + i);
#pragma GCC unroll 2
      for (int v = 0; v < NVEC; ++v) acc[i][v] = vfma(a, b[v], acc[i][v]);
    }
    Ap += MR;
    Bp += NR;
  }

  if (cs_c == 1 && nr == NVEC * W) {
    // Row-contiguous C and a full-width tile: write whole vectors.
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      T* c = C + i * rs_c;
#pragma GCC unroll 2
      for (int v = 0; v < NVEC; ++v)
        vstoreu(c + v * W, add ? vadd(vloadu(c + v * W), acc[i][v]) : acc[i][v]);
    }
    return;
  }
  // Strided C (e.g. column-major) or a partial-width tile: go through a scratch tile. The
  // scalar add below rounds exactly like the vector add above.
  alignas(32) T tile[ROWS][NVEC * W];
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NVEC; ++v) vstoreu(&tile[i][v * W], acc[i][v]);
  if (add) {
    for (int j = 0; j < nr; ++j)
      for (int i = 0; i < ROWS; ++i) C[i * rs_c + j * cs_c] += tile[i][j];
  } else {
    for (int j = 0; j < nr; ++j)
      for (int i = 0; i < ROWS; ++i) C[i * rs_c + j * cs_c] = tile[i][j];
  }
  (void)mr;
}

template <typename T, int NVEC>
FC_AVX2 void dispatch_rows(int64_t kc, const T* Ap, const T* Bp, T* C, int64_t rs_c,
                           int64_t cs_c, int mr, int nr, bool add) {
  switch (mr) {
    case 6: return kernel<T, 6, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
    case 5: return kernel<T, 5, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
    case 4: return kernel<T, 4, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
    case 3: return kernel<T, 3, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
    case 2: return kernel<T, 2, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
    default: return kernel<T, 1, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
  }
}

static_assert(Blocking<float>::MR == 6 && Blocking<float>::NR == 16, "kernel assumes 6x16");
static_assert(Blocking<double>::MR == 6 && Blocking<double>::NR == 8, "kernel assumes 6x8");

template <typename T>
FC_AVX2 void avx2_kernel(int64_t kc, const T* Ap, const T* Bp, T* C, int64_t rs_c, int64_t cs_c,
                         int mr, int nr, bool add) {
  constexpr int W = 32 / sizeof(T);
  // A tile at most half as wide as NR only needs one vector of columns.
  if (nr > W) return dispatch_rows<T, 2>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
  return dispatch_rows<T, 1>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
}

}  // namespace

template <typename T> MicroKernel<T> avx2_microkernel() { return &avx2_kernel<T>; }

}  // namespace fastconv::cpu::gemm_detail

#else  // not x86: no AVX2 code at all

namespace fastconv::cpu::gemm_detail {
template <typename T> MicroKernel<T> avx2_microkernel() { return nullptr; }
}  // namespace fastconv::cpu::gemm_detail

#endif

namespace fastconv::cpu::gemm_detail {
template MicroKernel<float> avx2_microkernel<float>();
template MicroKernel<double> avx2_microkernel<double>();
}  // namespace fastconv::cpu::gemm_detail
