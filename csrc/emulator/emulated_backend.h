// What the emulated registrations (conv2d_emulated.cpp, max_pool2d_emulated.cpp) supply to the GPU host code
// they share with CUDA (cuda/conv2d_host.h, cuda/max_pool2d_host.h): CPU tensors, no device guard, the
// emulator's stand-in stream. The emulator throws from launch_kernel itself.
#pragma once

#include <ATen/core/Tensor.h>

#include "../cuda/launch.cuh"

namespace fastconv {

struct EmulatedBackend {
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cpu(), op, " (emulated CUDA kernel): expected CPU tensors, but got one on ", t.device());
  }
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };
  static Stream stream() { return Stream{}; }
};

}  // namespace fastconv
