#pragma once
// Packing: copy a block of A or B into the contiguous, zero-padded panel layout the micro-kernels
// read with unit stride. Any input strides work; the common layouts get a loop order that reads
// memory contiguously.
#include <cstdint>

#include "gemm_internal.h"

namespace fastconv::cpu::gemm_detail {

// A block (mc×kc, element (i,k) at A[i*rs + k*cs]) -> ceil(mc/MR) panels, each kc×MR with
// element (i,k) at panel[k*MR + i]. Rows past mc are zero.
// `fast_rowmajor`, when given, packs a full panel of row-major A.
template <typename T, int MR>
void pack_A(int64_t mc, int64_t kc, const T* A, int64_t rs, int64_t cs, T* __restrict out,
            PackPanel<T> fast_rowmajor) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    const int mr = static_cast<int>(mc - i0 < MR ? mc - i0 : MR);
    const T* a = A + i0 * rs;
    if (rs == 1 && mr == MR) {
      // Column-major A (e.g. Wᵀ in the backward pass): each k gives MR contiguous values.
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) out[k * MR + i] = a[k * cs + i];
    } else if (cs == 1 && mr == MR && fast_rowmajor != nullptr) {
      fast_rowmajor(kc, a, rs, out);
    } else if (cs == 1) {
      // Row-major A: walk each row along k so every read stream is contiguous.
      for (int i = 0; i < mr; ++i) {
        const T* row = a + i * rs;
        for (int64_t k = 0; k < kc; ++k) out[k * MR + i] = row[k];
      }
      for (int i = mr; i < MR; ++i)
        for (int64_t k = 0; k < kc; ++k) out[k * MR + i] = T(0);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = 0; i < MR; ++i) out[k * MR + i] = i < mr ? a[i * rs + k * cs] : T(0);
    }
    out += kc * MR;
  }
}

// B block (kc×nc, element (k,j) at B[k*rs + j*cs]) -> ceil(nc/NR) panels, each kc×NR with
// element (k,j) at panel[k*NR + j]. Columns past nc are zero.
// `fast_colmajor`, when given, packs a full panel of column-major B. `prefetch_ahead` asks for
// the row-major source of the panel two past this one to be prefetched (see below).
template <typename T, int NR>
void pack_B(int64_t kc, int64_t nc, const T* B, int64_t rs, int64_t cs, T* __restrict out,
            PackPanel<T> fast_colmajor, bool prefetch_ahead = false) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR) {
    const int nr = static_cast<int>(nc - j0 < NR ? nc - j0 : NR);
    const T* b = B + j0 * cs;
    if (cs == 1 && nr == NR) {
      // Row-major B (the im2col matrix): each k row is NR contiguous values, a plain copy.
      // A panel reads one cache line from each of kc rows a long stride apart, too many
      // streams for the hardware prefetcher, so every line would be a demand miss right before
      // the kernels need it. Prefetching the lines of the panel two ahead lets them arrive while
      // this and the next panel are multiplied (one ahead measured clearly worse; 3-8 no better).
      const bool pf = prefetch_ahead && j0 + NR >= nc;
      for (int64_t k = 0; k < kc; ++k) {
        if (pf) __builtin_prefetch(b + k * rs + 2 * NR);
        for (int j = 0; j < NR; ++j) out[k * NR + j] = b[k * rs + j];
      }
    } else if (rs == 1 && nr == NR && fast_colmajor != nullptr) {
      fast_colmajor(kc, b, cs, out);
    } else if (rs == 1) {
      // Column-major B (e.g. colᵀ for the weight gradient): walk each column along k.
      for (int j = 0; j < nr; ++j) {
        const T* col = b + j * cs;
        for (int64_t k = 0; k < kc; ++k) out[k * NR + j] = col[k];
      }
      for (int j = nr; j < NR; ++j)
        for (int64_t k = 0; k < kc; ++k) out[k * NR + j] = T(0);
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int j = 0; j < NR; ++j) out[k * NR + j] = j < nr ? b[k * rs + j * cs] : T(0);
    }
    out += kc * NR;
  }
}

}  // namespace fastconv::cpu::gemm_detail
