// Registers the max_pool2d CUDA kernels (csrc/cuda/max_pool2d.cuh) as torch.ops.fastconv.max_pool2d_fprop,
// _max_pool2d_bprop and the taps pair _max_pool2d_fprop_taps / _max_pool2d_bprop_taps for CUDA tensors.
// Only what is CUDA-specific lives here: the device check, the device guard, the current stream (never the
// default one: CUDA graphs) and the launch check; the rest is the shared host code in max_pool2d_host.h.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "max_pool2d_host.h"

namespace fastconv::FASTCONV_KERNEL_NAMESPACE {
namespace {

struct CudaBackend {
  static void check_device(const char* op, const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda(), op, ": expected CUDA tensors, but got one on ", t.device());
  }
  struct Guard {
    c10::cuda::CUDAGuard guard;
    explicit Guard(const at::Tensor& t) : guard(t.device()) {}
  };
  static Stream stream() { return at::cuda::getCurrentCUDAStream().stream(); }
  static void check_launch() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
};

}  // namespace
}  // namespace fastconv::FASTCONV_KERNEL_NAMESPACE

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  fastconv::FASTCONV_KERNEL_NAMESPACE::register_max_pool2d<fastconv::FASTCONV_KERNEL_NAMESPACE::CudaBackend>(m);
}
