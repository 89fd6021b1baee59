// What the CUDA registrations of fastconv's GPU ops (conv2d_cuda.cu, max_pool2d_cuda.cu) supply to the host
// code they share with the emulator (conv2d_host.h, max_pool2d_host.h): the device check, the device guard
// and the current stream (never the default one: CUDA graphs). launch_kernel checks every launch itself.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "launch.cuh"

namespace fastconv {

struct CudaBackend {
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda(), op, ": expected CUDA tensors, but got one on ", t.device());
  }
  struct Guard {
    c10::cuda::CUDAGuard guard;
    explicit Guard(const at::Tensor& t) : guard(t.device()) {}
  };
  static Stream stream() { return at::cuda::getCurrentCUDAStream().stream(); }
};

}  // namespace fastconv
