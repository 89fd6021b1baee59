// The 16-lane GEMM micro-kernel (microkernel_vec16.h) through the portable vector layer: the AVX-512
// kernel's exact logic and bits on any CPU, for the tests (gemm kernel override "vec16-portable").
#define FC_VEC16_KERNEL
#include "microkernel_vec16.h"

namespace fastconv::cpu::gemm_detail {
KernelSet<float> vec16_portable_kernels() { return vec16_kernel_set<simd::Vec16Portable>(); }
}  // namespace fastconv::cpu::gemm_detail
