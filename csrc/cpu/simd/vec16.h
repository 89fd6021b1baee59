// A 16-lane float vector and its lane mask: the width of one AVX-512 register, with two implementations
// of one interface.
//   Vec16Avx512   intrinsics; usable only inside functions compiled for AVX-512 (FC_AVX512 below) and
//                 run only after cpu_has_avx512().
//   Vec16Portable plain arrays, any CPU. Each operation rounds as the instruction does (FMA through
//                 std::fma: one rounding), so a kernel written against the interface gives the same bits
//                 through either implementation, and its 16-lane logic (masks, tails, blends) is tested
//                 on CPUs without AVX-512 — the SIMT emulator's idea applied to SIMD.
// Only what the kernels use: load/store (aligned, unaligned, masked), broadcast, FMA, add, max, compare
// to mask, blend, horizontal sum. An aligned load or store of a misaligned address faults on the
// hardware; the portable layer stops the process with a message instead of hiding it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FASTCONV_HAVE_AVX512_CODE 1
#define FC_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"
#define FC_AVX512 __attribute__((target(FC_AVX512_TARGET)))
#define FC_AVX512_INLINE __attribute__((target(FC_AVX512_TARGET), always_inline)) inline
#else
#define FASTCONV_HAVE_AVX512_CODE 0
#endif

namespace fastconv::cpu::simd {

using Mask16 = uint16_t;  // bit i set: lane i takes part

// The first n lanes (n clamped to 0..16): the mask of a tail of n < 16 elements.
inline constexpr Mask16 first_lanes(int n) {
  return n <= 0 ? Mask16(0) : n >= 16 ? Mask16(0xFFFF) : Mask16((1u << n) - 1);
}

struct Vec16Portable {
  static constexpr const char* name = "vec16-portable";
  float lane[16];

  static void check_aligned(const void* p, const char* op) {
    if (reinterpret_cast<uintptr_t>(p) % 64 != 0) {
      std::fprintf(stderr, "fastconv Vec16Portable::%s: address %p is not 64-byte aligned (the AVX-512 "
                   "instruction would fault)\n", op, p);
      std::abort();
    }
  }
  static Vec16Portable zero() { return broadcast(0.0f); }
  static Vec16Portable broadcast(float x) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = x;
    return r;
  }
  static Vec16Portable load(const float* p) {
    check_aligned(p, "load");
    return loadu(p);
  }
  static Vec16Portable loadu(const float* p) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = p[i];
    return r;
  }
  // Lanes outside the mask read nothing (no fault past the end) and are zero.
  static Vec16Portable load_masked(const float* p, Mask16 m) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = (m >> i) & 1 ? p[i] : 0.0f;
    return r;
  }
  void store(float* p) const {
    check_aligned(p, "store");
    storeu(p);
  }
  void storeu(float* p) const {
    for (int i = 0; i < 16; ++i) p[i] = lane[i];
  }
  void store_masked(float* p, Mask16 m) const {
    for (int i = 0; i < 16; ++i)
      if ((m >> i) & 1) p[i] = lane[i];
  }
  // a * b + c with one rounding, as vfmadd.
  static Vec16Portable fma(Vec16Portable a, Vec16Portable b, Vec16Portable c) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = std::fma(a.lane[i], b.lane[i], c.lane[i]);
    return r;
  }
  static Vec16Portable add(Vec16Portable a, Vec16Portable b) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = a.lane[i] + b.lane[i];
    return r;
  }
  // vmaxps: the second operand when either is NaN (or both are zeros), as the instruction does.
  static Vec16Portable max(Vec16Portable a, Vec16Portable b) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = a.lane[i] > b.lane[i] ? a.lane[i] : b.lane[i];
    return r;
  }
  // Ordered a > b per lane (false for NaN), as _CMP_GT_OQ.
  static Mask16 greater(Vec16Portable a, Vec16Portable b) {
    Mask16 m = 0;
    for (int i = 0; i < 16; ++i) m |= Mask16(a.lane[i] > b.lane[i]) << i;
    return m;
  }
  // Unordered: lanes where a is NaN.
  static Mask16 is_nan(Vec16Portable a) {
    Mask16 m = 0;
    for (int i = 0; i < 16; ++i) m |= Mask16(std::isnan(a.lane[i])) << i;
    return m;
  }
  // b where the mask is set, else a.
  static Vec16Portable blend(Mask16 m, Vec16Portable a, Vec16Portable b) {
    Vec16Portable r;
    for (int i = 0; i < 16; ++i) r.lane[i] = (m >> i) & 1 ? b.lane[i] : a.lane[i];
    return r;
  }
  // Pairwise tree, in _mm512_reduce_add_ps's order: halves (8 + 8), then 4 + 4, 2 + 2, 1 + 1.
  float reduce_add() const {
    float t[16];
    for (int i = 0; i < 16; ++i) t[i] = lane[i];
    for (int width = 8; width >= 1; width /= 2)
      for (int i = 0; i < width; ++i) t[i] = t[i] + t[i + width];
    return t[0];
  }
};

#if FASTCONV_HAVE_AVX512_CODE
struct Vec16Avx512 {
  static constexpr const char* name = "avx512";
  __m512 v;

  FC_AVX512_INLINE static Vec16Avx512 zero() { return {_mm512_setzero_ps()}; }
  FC_AVX512_INLINE static Vec16Avx512 broadcast(float x) { return {_mm512_set1_ps(x)}; }
  FC_AVX512_INLINE static Vec16Avx512 load(const float* p) { return {_mm512_load_ps(p)}; }
  FC_AVX512_INLINE static Vec16Avx512 loadu(const float* p) { return {_mm512_loadu_ps(p)}; }
  FC_AVX512_INLINE static Vec16Avx512 load_masked(const float* p, Mask16 m) {
    return {_mm512_maskz_loadu_ps(static_cast<__mmask16>(m), p)};
  }
  FC_AVX512_INLINE void store(float* p) const { _mm512_store_ps(p, v); }
  FC_AVX512_INLINE void storeu(float* p) const { _mm512_storeu_ps(p, v); }
  FC_AVX512_INLINE void store_masked(float* p, Mask16 m) const {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>(m), v);
  }
  FC_AVX512_INLINE static Vec16Avx512 fma(Vec16Avx512 a, Vec16Avx512 b, Vec16Avx512 c) {
    return {_mm512_fmadd_ps(a.v, b.v, c.v)};
  }
  FC_AVX512_INLINE static Vec16Avx512 add(Vec16Avx512 a, Vec16Avx512 b) { return {_mm512_add_ps(a.v, b.v)}; }
  FC_AVX512_INLINE static Vec16Avx512 max(Vec16Avx512 a, Vec16Avx512 b) { return {_mm512_max_ps(a.v, b.v)}; }
  FC_AVX512_INLINE static Mask16 greater(Vec16Avx512 a, Vec16Avx512 b) {
    return _mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ);
  }
  FC_AVX512_INLINE static Mask16 is_nan(Vec16Avx512 a) { return _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q); }
  FC_AVX512_INLINE static Vec16Avx512 blend(Mask16 m, Vec16Avx512 a, Vec16Avx512 b) {
    return {_mm512_mask_blend_ps(static_cast<__mmask16>(m), a.v, b.v)};
  }
  FC_AVX512_INLINE float reduce_add() const {
    // The portable layer's order, spelled out (the _mm512_reduce_add_ps sequence is not specified).
    const __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
    const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    const __m128 h1 = _mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1));
    return _mm_cvtss_f32(h1);
  }
};
#endif

}  // namespace fastconv::cpu::simd
