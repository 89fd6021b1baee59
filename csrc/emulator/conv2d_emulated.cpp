// torch.ops.fastconv_emulated conv2d ops: fastconv's CUDA conv2d kernels (csrc/cuda/*.cuh), compiled by g++ and
// run on CPU tensors by the SIMT emulator, through the same host code as the CUDA registration
// (csrc/cuda/conv2d_host.h); only the backend (emulated_backend.h, shared with max_pool2d_emulated.cpp)
// differs. im2col_blas multiplies with at::matmul on the CPU here.
#include <torch/library.h>

#include "../cuda/conv2d_host.h"
#include "emulated_backend.h"

TORCH_LIBRARY_IMPL(fastconv_emulated, CPU, m) {
  fastconv::kernels::FASTCONV_KERNEL_NAMESPACE::register_conv2d<fastconv::EmulatedBackend>(m);
}
