// The 16-lane GEMM micro-kernel, written once against the vector layer (simd/vec16.h) and compiled twice:
// microkernel_avx512.cpp with V = Vec16Avx512 (the kernel production runs on AVX-512 CPUs) and
// microkernel_vec16_portable.cpp with V = Vec16Portable (the same logic on any CPU, for the tests).
// Before including, a file defines FC_VEC16_KERNEL: the target attribute of the kernel functions (AVX-512
// for the native build, nothing for the portable one). Everything here sits in an anonymous namespace:
// each file gets its own copy, so the two targets never meet in one symbol.
//
// Register tile 12x32: 12 rows of A broadcast against 2 vectors of B, 24 accumulators + 2 B vectors + 1
// broadcast of the 32 ZMM registers (the AVX2 kernel's 6x16 uses 15 of 16 YMM). Per element the
// arithmetic is that of every fastconv micro-kernel: an FMA chain over k from zero, then one add into C.
#pragma once

#include "../simd/vec16.h"
#include "gemm_internal.h"

namespace fastconv::cpu::gemm_detail {
namespace {

using simd::first_lanes;

// ROWS ≤ MR rows and NVEC ≤ 2 vectors are computed: edge tiles get a smaller instantiation instead of
// FMAs on padding; a column tail is a masked load/store, not a scalar loop.
template <class V, int ROWS, int NVEC>
FC_VEC16_KERNEL void vec16_tile(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* C,
                                int64_t rs_c, int64_t cs_c, int nr, bool add) {
  constexpr int MR = Vec16Tile::MR, NR = Vec16Tile::NR;
  V acc[ROWS][NVEC];
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NVEC; ++v) acc[i][v] = V::zero();

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    V b[NVEC];
#pragma GCC unroll 2
    for (int v = 0; v < NVEC; ++v) b[v] = V::load(Bp + 16 * v);
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; ++i) {
      const V a = V::broadcast(Ap[i]);
#pragma GCC unroll 2
      for (int v = 0; v < NVEC; ++v) acc[i][v] = V::fma(a, b[v], acc[i][v]);
    }
    Ap += MR;
    Bp += NR;
  }

  if (cs_c == 1) {
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; ++i) {
      float* c = C + i * rs_c;
#pragma GCC unroll 2
      for (int v = 0; v < NVEC; ++v) {
        const int lanes = nr - 16 * v;
        if (lanes >= 16) {
          V out = add ? V::add(V::loadu(c + 16 * v), acc[i][v]) : acc[i][v];
          out.storeu(c + 16 * v);
        } else {
          const simd::Mask16 m = first_lanes(lanes);
          V out = add ? V::add(V::load_masked(c + 16 * v, m), acc[i][v]) : acc[i][v];
          out.store_masked(c + 16 * v, m);
        }
      }
    }
    return;
  }
  // Strided C (column-major or channels_last-style outputs): one element at a time.
  alignas(64) float lane[16];
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < NVEC; ++v) {
      acc[i][v].store(lane);
      const int lanes = nr - 16 * v < 16 ? nr - 16 * v : 16;
      for (int j = 0; j < lanes; ++j) {
        float* c = C + i * rs_c + (16 * v + j) * cs_c;
        *c = add ? *c + lane[j] : lane[j];
      }
    }
}

template <class V, int NVEC>
FC_VEC16_KERNEL void vec16_rows(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t rs_c,
                                int64_t cs_c, int mr, int nr, bool add) {
  switch (mr) {
    case 12: return vec16_tile<V, 12, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 11: return vec16_tile<V, 11, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 10: return vec16_tile<V, 10, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 9: return vec16_tile<V, 9, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 8: return vec16_tile<V, 8, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 7: return vec16_tile<V, 7, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 6: return vec16_tile<V, 6, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 5: return vec16_tile<V, 5, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 4: return vec16_tile<V, 4, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 3: return vec16_tile<V, 3, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    case 2: return vec16_tile<V, 2, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
    default: return vec16_tile<V, 1, NVEC>(kc, Ap, Bp, C, rs_c, cs_c, nr, add);
  }
}

template <class V>
FC_VEC16_KERNEL void vec16_kernel(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t rs_c,
                                  int64_t cs_c, int mr, int nr, bool add) {
  if (nr > 16) return vec16_rows<V, 2>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
  return vec16_rows<V, 1>(kc, Ap, Bp, C, rs_c, cs_c, mr, nr, add);
}

template <class V> KernelSet<float> vec16_kernel_set() {
  KernelSet<float> set;
  set.kernel = &vec16_kernel<V>;
  set.mr = Vec16Tile::MR;
  set.nr = Vec16Tile::NR;
  set.name = V::name;
  return set;
}

}  // namespace
}  // namespace fastconv::cpu::gemm_detail
