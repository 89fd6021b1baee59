// Registers the max_pool2d CUDA kernels (csrc/cuda/max_pool2d.cuh), compiled by g++ and run by the SIMT
// emulator, as torch.ops.fastconv_emulated.max_pool2d_fprop / _max_pool2d_bprop for CPU tensors, so the
// CUDA kernel source is tested on machines without a GPU (fastconv.emulation.max_pool2d). The host code is
// the same as the CUDA registration's (max_pool2d_host.h); only the backend below differs.
#include <torch/library.h>

#include "../cuda/max_pool2d_host.h"

namespace fastconv::FASTCONV_KERNEL_NAMESPACE {
namespace {

struct EmulatedBackend {
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cpu(), op, " (emulated CUDA kernel): expected CPU tensors, but got one on ", t.device());
  }
  struct Guard {
    explicit Guard(const at::Tensor&) {}
  };
  static Stream stream() { return Stream{}; }
  static void check_launch() {}  // the emulator throws from launch_kernel itself
};

std::tuple<at::Tensor, at::Tensor> max_pool2d_fprop_emulated(const at::Tensor& input, c10::IntArrayRef kernel_size,
                                                             c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                             c10::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_fprop_host<EmulatedBackend>(input, kernel_size, stride, padding, dilation, ceil_mode);
}

at::Tensor max_pool2d_bprop_emulated(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& indices, c10::IntArrayRef kernel_size,
                                     c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                                     bool ceil_mode) {
  return max_pool2d_bprop_host<EmulatedBackend>(grad_output, input, indices, kernel_size, stride, padding,
                                                dilation, ceil_mode);
}

}  // namespace
}  // namespace fastconv::FASTCONV_KERNEL_NAMESPACE

TORCH_LIBRARY_IMPL(fastconv_emulated, CPU, m) {
  m.impl("max_pool2d_fprop", &fastconv::FASTCONV_KERNEL_NAMESPACE::max_pool2d_fprop_emulated);
  m.impl("_max_pool2d_bprop", &fastconv::FASTCONV_KERNEL_NAMESPACE::max_pool2d_bprop_emulated);
}
