#pragma once
// Pieces shared by the GEMM driver (gemm.cpp) and the micro-kernels. Not part of the public API.
#include <cstdint>

namespace fastconv::cpu::gemm_detail {

// Register tile and cache blocks per element type. Both micro-kernels (AVX2 and portable) use the
// same MR×NR so the packed layout does not depend on which one runs.
//   MR×NR: 6×16 float / 6×8 double = 12 ymm accumulators + 2 for B + 1 broadcast, out of 16.
//   KC: a KC×NR panel of B (16 KiB float/double) stays in the 32 KiB L1 while the MR-row
//       panels of A stream past it.
//   MC: an MC×KC block of A (144 KiB float/double) sits in the 512 KiB per-core L2, leaving room
//       for the B panel and C lines passing through.
//   NC: a KC×NC block of B (~3 MiB float, ~6 MiB double) lives in the shared L3.
template <typename T> struct Blocking;
template <> struct Blocking<float> {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t MC = 144, KC = 256, NC = 3072;
};
template <> struct Blocking<double> {
  static constexpr int MR = 6, NR = 8;
  static constexpr int64_t MC = 72, KC = 256, NC = 1536;
};

// A micro-kernel computes one MR×NR tile from packed panels (Ap: kc×MR, Bp: kc×NR, both
// zero-padded) and writes its top-left mr×nr corner to C: C = acc, or C += acc when add.
// Every element is reduced in the same order (k = 0..kc-1 from zero, then one add to C) no matter
// which tile or edge variant computes it: that is what makes results independent of blocking
// over M/N and of thread count.
template <typename T>
using MicroKernel = void (*)(int64_t kc, const T* Ap, const T* Bp, T* C, int64_t rs_c,
                             int64_t cs_c, int mr, int nr, bool add);

// Packs one full panel whose source is "transposed" relative to the packed layout, which plain
// loops do element by element: MR rows of a row-major A (src(i,k) at src[i*ld + k]) or NR
// columns of a column-major B (src(k,j) at src[k + j*ld]). Output layout as in pack.h.
template <typename T>
using PackPanel = void (*)(int64_t kc, const T* src, int64_t ld, T* out);

// What one instruction set provides. Null packers mean "use the generic loops in pack.h".
template <typename T> struct KernelSet {
  MicroKernel<T> kernel = nullptr;
  PackPanel<T> pack_a_rowmajor = nullptr;
  PackPanel<T> pack_b_colmajor = nullptr;
};

template <typename T> KernelSet<T> portable_kernels();
// kernel == nullptr when this build has no x86 AVX2 code; the caller still checks the CPU.
template <typename T> KernelSet<T> avx2_kernels();

// Test hook: 0 = automatic (CPU check + FASTCONV_GEMM_KERNEL), 1 = force portable, 2 = force AVX2
// (ignored when the CPU lacks it). Not thread-safe against concurrent gemm calls.
void set_kernel_override(int which);

}  // namespace fastconv::cpu::gemm_detail
