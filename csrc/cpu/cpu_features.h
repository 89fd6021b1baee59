// What the CPU can run, asked once: the AVX2+FMA code paths (GEMM micro-kernels, the blocked direct
// convolution) are compiled with target attributes and chosen at run time from this.
#pragma once

namespace fastconv::cpu {

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace fastconv::cpu
