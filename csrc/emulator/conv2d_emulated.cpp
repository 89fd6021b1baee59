// torch.ops.fastconv_emulated conv2d ops: fastconv's CUDA conv2d kernels (csrc/cuda/*.cuh), compiled by g++ and
// run on CPU tensors by the SIMT emulator, through the same host code as the CUDA registration
// (csrc/cuda/conv2d_host.h). im2col_blas multiplies with at::matmul on the CPU here.
#include <torch/library.h>

#include "../cuda/conv2d_host.h"

namespace fastconv::emulated {

namespace {

namespace k = ::fastconv::kernels;

// explain, the autotuner and the tests' run counters reach this backend's planner through _C.
const bool registered = register_conv2d_planner("emulated", k::gpu_planner_hooks());

void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), op, ": the emulated kernels take CPU tensors, but ", name, " is on ",
              t.device());
}

at::Tensor conv2d_fprop(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_cpu("conv2d", input, "input");
  check_cpu("conv2d", weight, "weight");
  if (bias.has_value() && bias->defined()) check_cpu("conv2d", *bias, "bias");
  return k::conv2d_fprop_host(Stream{}, input, weight, bias, stride, padding, dilation, groups, algorithm,
                              padding_mode);
}

at::Tensor conv2d_dgrad(const at::Tensor& grad_output, const at::Tensor& weight, c10::SymIntArrayRef input_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_cpu("conv2d backward", grad_output, "grad_output");
  check_cpu("conv2d backward", weight, "weight");
  return k::conv2d_dgrad_host(Stream{}, grad_output, weight, input_size, stride, padding, dilation, groups,
                              algorithm, padding_mode);
}

at::Tensor conv2d_wgrad(const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_cpu("conv2d backward", grad_output, "grad_output");
  check_cpu("conv2d backward", input, "input");
  return k::conv2d_wgrad_host(Stream{}, grad_output, input, weight_size, stride, padding, dilation, groups,
                              algorithm, padding_mode);
}

at::Tensor conv2d_bgrad(const at::Tensor& grad_output) {
  check_cpu("conv2d backward", grad_output, "grad_output");
  return k::conv2d_bgrad_host(Stream{}, grad_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_emulated, CPU, m) {
  m.impl("conv2d_fprop", &conv2d_fprop);
  m.impl("_conv2d_dgrad", &conv2d_dgrad);
  m.impl("_conv2d_wgrad", &conv2d_wgrad);
  m.impl("_conv2d_bgrad", &conv2d_bgrad);
}

}  // namespace fastconv::emulated
