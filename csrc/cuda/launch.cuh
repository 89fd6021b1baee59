// The one kernel-launch helper for fastconv. The same call compiles under
// nvcc (real <<<>>> launch on a stream) and under the host compiler (the
// SIMT emulator in csrc/emulator runs the kernel on the CPU). Kernel sources
// include this header to get the CUDA built-ins on either compiler.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include "device_limits.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#else
#include "../emulator/simt.h"
#endif

// The grid-stride loop over [0, total): each thread starts at its global index and steps by the whole
// grid, so a grid capped at launch covers any size. index_t is int64_t, or int32_t where the host has
// proven every index fits.
#define FASTCONV_GRID_STRIDE_LOOP(index_t, i, total)                                             \
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (total);    \
       i += static_cast<index_t>(gridDim.x) * blockDim.x)

// Declares `T* name` pointing at the block's dynamic shared memory (the
// dynamic_smem_bytes given to launch_kernel). 16-byte aligned on both
// compilers; in the emulator it is filled with 0xFF bytes at block start.
#if defined(__CUDACC__)
#define FASTCONV_DYNAMIC_SMEM(T, name)                                     \
  extern __shared__ __align__(16) unsigned char fastconv_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(fastconv_dynamic_smem_)
#else
#define FASTCONV_DYNAMIC_SMEM(T, name) \
  T* name = reinterpret_cast<T*>(::fastconv::simt::detail::dynamic_smem())
#endif

// Kernels and host templates are defined in headers that two compilers see (nvcc for the .cu files,
// g++ for the emulator) and both objects end up in one library: a namespace per compiler keeps the
// two different bodies of the same template from being merged by the linker.
// FASTCONV_BACKEND_NAME: the backend as the plan layer and the autotuner's keys name it.
#if defined(__CUDACC__)
#define FASTCONV_KERNEL_NAMESPACE cuda_kernels
#define FASTCONV_BACKEND_NAME "cuda"
#else
#define FASTCONV_KERNEL_NAMESPACE emulated_kernels
#define FASTCONV_BACKEND_NAME "emulated"
#endif

namespace fastconv {

#if defined(__CUDACC__)
using Stream = cudaStream_t;
#else
struct HostStream {};
using Stream = HostStream;
#endif


// Rejects configurations the GPU would refuse, with the same message on both
// compilers, so host-only test runs catch them too.
inline void check_launch_config(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes) {
  auto fmt = [](dim3 d) {
    return std::to_string(d.x) + "x" + std::to_string(d.y) + "x" + std::to_string(d.z);
  };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
    throw std::invalid_argument("fastconv::launch_kernel: empty launch (grid " + fmt(grid) +
                                ", block " + fmt(block) + "); skip the launch instead");
  const unsigned long long threads =
      static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (threads > kMaxThreadsPerBlock || block.z > 64)
    throw std::invalid_argument("fastconv::launch_kernel: block " + fmt(block) + " has " +
                                std::to_string(threads) +
                                " threads; at most 1024 per block (and block.z <= 64)");
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
    throw std::invalid_argument("fastconv::launch_kernel: grid " + fmt(grid) +
                                " exceeds 2^31-1 x 65535 x 65535");
  if (dynamic_smem_bytes > kMaxDynamicSmemBytes)
    throw std::invalid_argument("fastconv::launch_kernel: " + std::to_string(dynamic_smem_bytes) +
                                " bytes of dynamic shared memory requested; at most " +
                                std::to_string(kMaxDynamicSmemBytes));
}

template <typename... KernelArgs, typename... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                   std::size_t dynamic_smem_bytes, Stream stream, Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args),
                "fastconv::launch_kernel: wrong number of kernel arguments");
  check_launch_config(grid, block, dynamic_smem_bytes);
#if defined(__CUDACC__)
  if (dynamic_smem_bytes > kDefaultDynamicSmemBytes) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dynamic_smem_bytes));
    if (err != cudaSuccess)
      throw std::runtime_error(std::string("fastconv::launch_kernel: cudaFuncSetAttribute: ") +
                               cudaGetErrorString(err));
  }
  kernel<<<grid, block, dynamic_smem_bytes, stream>>>(std::forward<Args>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fastconv::launch_kernel: ") + cudaGetErrorString(err));
#else
  (void)stream;
  ::fastconv::simt::launch(kernel, grid, block, dynamic_smem_bytes, std::forward<Args>(args)...);
#endif
}

}  // namespace fastconv
