// The 16-lane GEMM micro-kernel (microkernel_vec16.h) on AVX-512 intrinsics. Like the AVX2 file, compiled
// with per-function target attributes, not a global -mavx512f, and run only after cpu_has_avx512().
#include "../simd/vec16.h"
#include "gemm_internal.h"

#if FASTCONV_HAVE_AVX512_CODE && !defined(FASTCONV_GEMM_NO_AVX2)
#define FC_VEC16_KERNEL FC_AVX512
#include "microkernel_vec16.h"

namespace fastconv::cpu::gemm_detail {
KernelSet<float> avx512_kernels() { return vec16_kernel_set<simd::Vec16Avx512>(); }
}  // namespace fastconv::cpu::gemm_detail
#else
namespace fastconv::cpu::gemm_detail {
KernelSet<float> avx512_kernels() { return {}; }
}  // namespace fastconv::cpu::gemm_detail
#endif
