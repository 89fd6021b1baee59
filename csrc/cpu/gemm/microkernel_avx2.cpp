// AVX2+FMA micro-kernels. Compiled with per-function target attributes instead of a global -mavx2
// so the rest of the extension keeps baseline flags and this code only runs after the run-time
// CPU check in gemm.cpp. Nothing here may call non-inline library code: such code would be
// compiled for the baseline target and could not be inlined into an AVX2 function anyway.
#include "gemm_internal.h"

// FASTCONV_GEMM_NO_AVX2 builds the non-x86 variant anywhere (to test that it compiles and
// falls back cleanly).
#if (defined(__x86_64__) || defined(__i386__)) && !defined(FASTCONV_GEMM_NO_AVX2)
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

// In-register transposes, used by the transposed C store and the transposing packers.
// r[j] holds column j (8 consecutive k); afterwards r[k] holds row k (8 consecutive j).
FC_AVX2_INLINE void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    u[h + 0] = _mm256_shuffle_ps(t[h + 0], t[h + 2], 0x44);
    u[h + 1] = _mm256_shuffle_ps(t[h + 0], t[h + 2], 0xEE);
    u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// r[j] holds 4 consecutive values of line j; afterwards r[k] holds element k of lines 0..3.
FC_AVX2_INLINE void transpose4x4(__m256d r[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

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
  if constexpr (sizeof(T) == 4 && (ROWS == 6 || ROWS == 4)) {
    if (rs_c == 1 && nr == NVEC * W) {
      // Column-major C (the role-swapped problems and channels_last-style outputs): transpose
      // 8 columns at a time so each column's ROWS contiguous values move as one or two vector
      // stores instead of ROWS scalar ones.
#pragma GCC unroll 2
      for (int v = 0; v < NVEC; ++v) {
        __m256 r[8];
        for (int i = 0; i < ROWS; ++i) r[i] = acc[i][v];
        for (int i = ROWS; i < 8; ++i) r[i] = _mm256_setzero_ps();
        transpose8x8(r);
        for (int j = 0; j < 8; ++j) {
          float* c = C + (v * 8 + j) * cs_c;
          __m128 lo = _mm256_castps256_ps128(r[j]);
          if (add) lo = _mm_add_ps(_mm_loadu_ps(c), lo);
          _mm_storeu_ps(c, lo);
          if constexpr (ROWS == 6) {
            __m128 hi = _mm256_extractf128_ps(r[j], 1);
            if (add) {
              const __m128 old = _mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(c + 4));
              hi = _mm_add_ps(old, hi);
            }
            _mm_storel_pi(reinterpret_cast<__m64*>(c + 4), hi);
          }
        }
      }
      return;
    }
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

// ---- Transposing packers -------------------------------------------------------------------
// Element-by-element packing of a transposed source costs about a cycle per element, which is
// comparable to the FMAs it feeds when the other dimension is small (M = 49 or 64, say). In-register
// transposes move 8 (float) or 4 (double) elements per load and store instead.

// Column-major B, float: 16 columns -> out[k*16 + j].
FC_AVX2 void pack_b_colmajor_f32(int64_t kc, const float* b, int64_t ld, float* out) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    for (int g = 0; g < 2; ++g) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(b + (g * 8 + j) * ld + k);
      transpose8x8(r);
      for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(out + (k + kk) * 16 + g * 8, r[kk]);
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < 16; ++j) out[k * 16 + j] = b[j * ld + k];
}

// Column-major B, double: 8 columns -> out[k*8 + j].
FC_AVX2 void pack_b_colmajor_f64(int64_t kc, const double* b, int64_t ld, double* out) {
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    for (int g = 0; g < 2; ++g) {
      __m256d r[4];
      for (int j = 0; j < 4; ++j) r[j] = _mm256_loadu_pd(b + (g * 4 + j) * ld + k);
      transpose4x4(r);
      for (int kk = 0; kk < 4; ++kk) _mm256_store_pd(out + (k + kk) * 8 + g * 4, r[kk]);
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < 8; ++j) out[k * 8 + j] = b[j * ld + k];
}

// Row-major A, float: 6 rows -> out[k*6 + i]. Transposed as 8x8 with two zero rows; each k's
// 6 values are stored as 4 + 2 so nothing is written past the panel.
FC_AVX2 void pack_a_rowmajor_f32(int64_t kc, const float* a, int64_t ld, float* out) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 r[8];
    for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(a + i * ld + k);
    r[6] = r[7] = _mm256_setzero_ps();
    transpose8x8(r);
    for (int kk = 0; kk < 8; ++kk) {
      float* o = out + (k + kk) * 6;
      _mm_storeu_ps(o, _mm256_castps256_ps128(r[kk]));
      _mm_storel_pi(reinterpret_cast<__m64*>(o + 4), _mm256_extractf128_ps(r[kk], 1));
    }
  }
  for (; k < kc; ++k)
    for (int i = 0; i < 6; ++i) out[k * 6 + i] = a[i * ld + k];
}

// Row-major A, double: 6 rows -> out[k*6 + i]. Rows 0-3 as a 4x4 transpose, rows 4-5 as pairs.
FC_AVX2 void pack_a_rowmajor_f64(int64_t kc, const double* a, int64_t ld, double* out) {
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    __m256d r[4];
    for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(a + i * ld + k);
    transpose4x4(r);
    const __m256d r4 = _mm256_loadu_pd(a + 4 * ld + k), r5 = _mm256_loadu_pd(a + 5 * ld + k);
    const __m256d lo = _mm256_unpacklo_pd(r4, r5), hi = _mm256_unpackhi_pd(r4, r5);
    const __m128d tail[4] = {_mm256_castpd256_pd128(lo), _mm256_castpd256_pd128(hi),
                             _mm256_extractf128_pd(lo, 1), _mm256_extractf128_pd(hi, 1)};
    for (int kk = 0; kk < 4; ++kk) {
      double* o = out + (k + kk) * 6;
      _mm256_storeu_pd(o, r[kk]);
      _mm_storeu_pd(o + 4, tail[kk]);
    }
  }
  for (; k < kc; ++k)
    for (int i = 0; i < 6; ++i) out[k * 6 + i] = a[i * ld + k];
}

}  // namespace

template <> KernelSet<float> avx2_kernels<float>() {
  KernelSet<float> set;
  set.name = "avx2+fma";
  set.kernel = &avx2_kernel<float>;
  set.pack_a_rowmajor = &pack_a_rowmajor_f32;
  set.pack_b_colmajor = &pack_b_colmajor_f32;
  return set;
}
template <> KernelSet<double> avx2_kernels<double>() {
  KernelSet<double> set;
  set.name = "avx2+fma";
  set.kernel = &avx2_kernel<double>;
  set.pack_a_rowmajor = &pack_a_rowmajor_f64;
  set.pack_b_colmajor = &pack_b_colmajor_f64;
  return set;
}

}  // namespace fastconv::cpu::gemm_detail

#else  // not x86: no AVX2 code at all

namespace fastconv::cpu::gemm_detail {
template <> KernelSet<float> avx2_kernels<float>() { return {}; }
template <> KernelSet<double> avx2_kernels<double>() { return {}; }
}  // namespace fastconv::cpu::gemm_detail

#endif
