// CUDA registration of the conv2d ops (torch.ops.fastconv, CUDA key): device checks, the device guard and the
// current stream; everything else is the host code shared with the emulator (conv2d_host.h). Every launch goes
// through fastconv::launch_kernel, which checks cudaGetLastError after it.
// Built only in CUDA builds (FASTCONV_CUDA=1 python setup.py build_ext --inplace); tested by the needs_cuda
// tests of tests/test_cuda_conv2d.py and benchmarks/gpu_check.sh.
#include <ATen/TensorUtils.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "conv2d_host.h"

namespace fastconv::cuda {

namespace {

namespace k = ::fastconv::kernels;

// explain, the autotuner and the tests' run counters reach this backend's planner through _C.
const bool registered = register_conv2d_planner("cuda", k::gpu_planner_hooks());

at::Tensor conv2d_fprop(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  const at::TensorArg input_arg{input, "input", 1}, weight_arg{weight, "weight", 2};
  at::checkAllSameGPU("conv2d", {input_arg, weight_arg});
  if (bias.has_value() && bias->defined()) at::checkAllSameGPU("conv2d", {input_arg, {*bias, "bias", 3}});
  const c10::cuda::CUDAGuard guard(input.device());
  return k::conv2d_fprop_host(at::cuda::getCurrentCUDAStream(), input, weight, bias, stride, padding, dilation,
                              groups, algorithm, padding_mode);
}

at::Tensor conv2d_dgrad(const at::Tensor& grad_output, const at::Tensor& weight, c10::SymIntArrayRef input_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  at::checkAllSameGPU("conv2d backward", {{grad_output, "grad_output", 1}, {weight, "weight", 2}});
  const c10::cuda::CUDAGuard guard(grad_output.device());
  return k::conv2d_dgrad_host(at::cuda::getCurrentCUDAStream(), grad_output, weight, input_size, stride, padding,
                              dilation, groups, algorithm, padding_mode);
}

at::Tensor conv2d_wgrad(const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  at::checkAllSameGPU("conv2d backward", {{grad_output, "grad_output", 1}, {input, "input", 2}});
  const c10::cuda::CUDAGuard guard(grad_output.device());
  return k::conv2d_wgrad_host(at::cuda::getCurrentCUDAStream(), grad_output, input, weight_size, stride, padding,
                              dilation, groups, algorithm, padding_mode);
}

at::Tensor conv2d_bgrad(const at::Tensor& grad_output) {
  at::checkAllSameGPU("conv2d backward", {{grad_output, "grad_output", 1}});
  const c10::cuda::CUDAGuard guard(grad_output.device());
  return k::conv2d_bgrad_host(at::cuda::getCurrentCUDAStream(), grad_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("conv2d_fprop", &conv2d_fprop);
  m.impl("_conv2d_dgrad", &conv2d_dgrad);
  m.impl("_conv2d_wgrad", &conv2d_wgrad);
  m.impl("_conv2d_bgrad", &conv2d_bgrad);
}

}  // namespace fastconv::cuda
