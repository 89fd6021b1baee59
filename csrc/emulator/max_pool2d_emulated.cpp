// Registers the max_pool2d CUDA kernels (csrc/cuda/max_pool2d.cuh), compiled by g++ and run by the SIMT
// emulator, as torch.ops.fastconv_emulated.max_pool2d_fprop / _max_pool2d_bprop and the taps pair
// _max_pool2d_fprop_taps / _max_pool2d_bprop_taps for CPU tensors, so the CUDA kernel source is tested on
// machines without a GPU (fastconv.emulation.max_pool2d). The host code is the same as the CUDA
// registration's (max_pool2d_host.h); only the backend (emulated_backend.h, shared with conv2d_emulated.cpp)
// differs.
#include <torch/library.h>

#include "../cuda/max_pool2d_host.h"
#include "emulated_backend.h"

TORCH_LIBRARY_IMPL(fastconv_emulated, CPU, m) {
  fastconv::FASTCONV_KERNEL_NAMESPACE::register_max_pool2d<fastconv::EmulatedBackend>(m);
}
