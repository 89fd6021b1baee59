// Registers the max_pool2d CUDA kernels (csrc/cuda/max_pool2d.cuh) as torch.ops.fastconv.max_pool2d_fprop,
// _max_pool2d_bprop and the taps pair _max_pool2d_fprop_taps / _max_pool2d_bprop_taps for CUDA tensors.
// What is CUDA-specific is CudaBackend (cuda_backend.h, shared with conv2d_cuda.cu); the rest is the shared
// host code in max_pool2d_host.h.
#include <torch/library.h>

#include "cuda_backend.h"
#include "max_pool2d_host.h"

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  fastconv::FASTCONV_KERNEL_NAMESPACE::register_max_pool2d<fastconv::CudaBackend>(m);
}
