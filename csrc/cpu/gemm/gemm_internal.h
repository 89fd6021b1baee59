#pragma once
// Pieces shared by the GEMM driver (gemm.cpp) and the micro-kernels. Not part of the public API.
#include <cstdint>

namespace fastconv::cpu::gemm_detail {

// Register tile of the AVX2 and portable micro-kernels, which share it so the packed layout does not
// depend on which of them runs: 6×16 float / 6×8 double = 12 ymm accumulators + 2 for B + 1 broadcast,
// out of 16. The 16-lane (AVX-512) kernel has its own, Vec16Tile. The cache blocks (MC, KC, NC) are not
// constants: gemm.cpp derives them from the caches the CPU reports and the tile in use.
template <typename T> struct Blocking;
template <> struct Blocking<float> { static constexpr int MR = 6, NR = 16; };
template <> struct Blocking<double> { static constexpr int MR = 6, NR = 8; };
struct Vec16Tile { static constexpr int MR = 12, NR = 32; };  // float only

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

// What one instruction set provides: the micro-kernel, its register tile (which fixes the packed
// layout) and its name. Null packers mean "use the generic loops in pack.h".
template <typename T> struct KernelSet {
  MicroKernel<T> kernel = nullptr;
  PackPanel<T> pack_a_rowmajor = nullptr;
  PackPanel<T> pack_b_colmajor = nullptr;
  int mr = Blocking<T>::MR, nr = Blocking<T>::NR;
  const char* name = "portable";
};

template <typename T> KernelSet<T> portable_kernels();
// kernel == nullptr when this build has no x86 AVX2 code; the caller still checks the CPU.
template <typename T> KernelSet<T> avx2_kernels();
// The 16-lane kernel (float): native AVX-512 (kernel == nullptr without x86 code), and the same source
// through the portable vector layer, which any CPU runs (tests).
KernelSet<float> avx512_kernels();
KernelSet<float> vec16_portable_kernels();

// Test hook: 0 = automatic (the CPU's ISA level, FASTCONV_CPU_ISA, FASTCONV_GEMM_KERNEL), 1 = force
// portable, 2 = force AVX2, 3 = force AVX-512, 4 = the AVX-512 kernel through the portable vector layer
// (2 and 3 are ignored where the CPU lacks the instructions; 3 and 4 apply to float, double keeps the
// automatic choice). Not thread-safe against concurrent gemm calls.
void set_kernel_override(int which);

}  // namespace fastconv::cpu::gemm_detail
