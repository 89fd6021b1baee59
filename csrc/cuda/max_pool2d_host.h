// The host half of the max_pool2d CUDA kernels, written once for both of their registrations:
// csrc/cuda/max_pool2d_cuda.cu (nvcc, real GPU, torch.ops.fastconv on CUDA tensors) and
// csrc/emulator/max_pool2d_emulated.cpp (g++, SIMT emulator, torch.ops.fastconv_emulated on CPU tensors).
// A Backend supplies what differs (CudaBackend in cuda_backend.h, EmulatedBackend in
// emulator/emulated_backend.h; conv2d_host.h takes the same two): the device check, a device guard, the stream:
//   struct Backend {
//     static void check_device(const char* op, const at::Tensor&);
//     using Guard = ...;                              // constructed from the input tensor
//     static fastconv::Stream stream();
//   };
// Everything else — argument checks, the problem, layouts, allocation, dtype dispatch, the empty early
// return, choosing 32- or 64-bit indexing, the launch, the registration of the four ops — is here.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../ops_common.h"
#include "max_pool2d.cuh"

namespace fastconv::FASTCONV_KERNEL_NAMESPACE {

// At most this many blocks per launch; a grid-stride loop covers the rest (H200: 132 SMs x 16 blocks of
// 256 threads is well past full occupancy, and it bounds the int32 overflow check).
inline constexpr int64_t kPoolMaxBlocks = 132 * 16;

inline dim3 pool_grid(int64_t total) {
  const int64_t blocks = std::min<int64_t>((total + kPoolThreadsPerBlock - 1) / kPoolThreadsPerBlock,
                                           kPoolMaxBlocks);
  return dim3(static_cast<unsigned>(blocks));
}

// The layout the kernels run in: channels_last when PyTorch would suggest it, else NCHW (contiguous).
inline at::MemoryFormat pool_memory_format(const at::Tensor& input) {
  return input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                           : at::MemoryFormat::Contiguous;
}

// What the host says about each form of the argmax: the ops' names, the argument's name, and the
// check that the window's taps fit the form.
template <typename Argmax>
struct PoolArgmaxOps;

template <>
struct PoolArgmaxOps<FlatIndexArgmax> {
  static constexpr const char* fprop = "max_pool2d_fprop";
  static constexpr const char* bprop = "_max_pool2d_bprop";
  static constexpr const char* name = "indices";
  static void check_problem(const char*, const Pool2dProblem&) {}
};

template <>
struct PoolArgmaxOps<TapArgmax> {
  static constexpr const char* fprop = "_max_pool2d_fprop_taps";
  static constexpr const char* bprop = "_max_pool2d_bprop_taps";
  static constexpr const char* name = "taps";
  static void check_problem(const char* op, const Pool2dProblem& p) { check_taps_fit_byte(op, p); }
};

template <typename Backend, typename Argmax>
std::tuple<at::Tensor, at::Tensor> max_pool2d_fprop_host(const at::Tensor& input_, c10::IntArrayRef kernel_size,
                                                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                         c10::IntArrayRef dilation, bool ceil_mode) {
  using Ops = PoolArgmaxOps<Argmax>;
  constexpr const char* op = Ops::fprop;
  check_pool2d_input(input_);
  Backend::check_device(op, input_);
  const Pool2dProblem p = make_pool2d_problem(input_.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  Ops::check_problem(op, p);
  typename Backend::Guard guard(input_);

  const at::MemoryFormat format = pool_memory_format(input_);
  const at::Tensor input = input_.contiguous(format);
  using argmax_t = typename Argmax::type;
  at::Tensor output = new_output({p.N, p.C, p.P, p.Q}, input.options(), format);
  at::Tensor argmax = new_output({p.N, p.C, p.P, p.Q},
                                 input.options().dtype(c10::CppTypeToScalarType<argmax_t>::value), format);
  const int64_t total = output.numel();
  if (total == 0) return {output, argmax};

  const dim3 grid = pool_grid(total);
  const bool use_int32 = pool2d_fits_int32(p, static_cast<int64_t>(grid.x) * kPoolThreadsPerBlock);
  const bool nhwc = format == at::MemoryFormat::ChannelsLast;
  // PyTorch's forward dtypes: floating and integer (check_pool2d_input refused the rest).
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    const auto* x = input.const_data_ptr<scalar_t>();
    auto* y = output.mutable_data_ptr<scalar_t>();
    auto* arg = argmax.mutable_data_ptr<argmax_t>();
    if (use_int32) {
      launch_kernel(nhwc ? max_pool2d_fprop_nhwc_kernel<Argmax, scalar_t, int32_t>
                         : max_pool2d_fprop_nchw_kernel<Argmax, scalar_t, int32_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), x, y, arg, p,
                    static_cast<int32_t>(total));
    } else {
      launch_kernel(nhwc ? max_pool2d_fprop_nhwc_kernel<Argmax, scalar_t, int64_t>
                         : max_pool2d_fprop_nchw_kernel<Argmax, scalar_t, int64_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), x, y, arg, p, total);
    }
  });
  return {output, argmax};
}

// argmax_ is max_pool2d_fprop's indices or _max_pool2d_fprop_taps' taps, as Argmax says.
template <typename Backend, typename Argmax>
at::Tensor max_pool2d_bprop_host(const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& argmax_,
                                 c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool ceil_mode) {
  using Ops = PoolArgmaxOps<Argmax>;
  using argmax_t = typename Argmax::type;
  constexpr const char* op = Ops::bprop;
  Backend::check_device(op, input_);
  Backend::check_device(op, grad_output_);
  Backend::check_device(op, argmax_);
  const Pool2dProblem p = make_pool2d_problem(input_.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  Ops::check_problem(op, p);
  check_pool2d_bprop_tensors(op, grad_output_, input_, argmax_, Ops::name,
                             c10::CppTypeToScalarType<argmax_t>::value, p);
  typename Backend::Guard guard(input_);

  // grad_input takes the input's layout; grad_output and the argmax are brought to it.
  const at::MemoryFormat format = pool_memory_format(input_);
  const at::Tensor grad_output = grad_output_.contiguous(format);
  const at::Tensor argmax = argmax_.contiguous(format);
  at::Tensor grad_input = new_output(input_.sizes(), input_.options(), format);
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;

  const dim3 grid = pool_grid(total);
  const bool use_int32 = pool2d_fits_int32(p, static_cast<int64_t>(grid.x) * kPoolThreadsPerBlock);
  const bool nhwc = format == at::MemoryFormat::ChannelsLast;
  // Floating types only: check_pool2d_bprop_tensors refused an integer grad_output (and input).
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), op, [&] {
    const auto* dy = grad_output.const_data_ptr<scalar_t>();
    const auto* arg = argmax.const_data_ptr<argmax_t>();
    auto* dx = grad_input.mutable_data_ptr<scalar_t>();
    if (use_int32) {
      launch_kernel(nhwc ? max_pool2d_bprop_nhwc_kernel<Argmax, scalar_t, int32_t>
                         : max_pool2d_bprop_nchw_kernel<Argmax, scalar_t, int32_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), dy, arg, dx, p,
                    static_cast<int32_t>(total));
    } else {
      launch_kernel(nhwc ? max_pool2d_bprop_nhwc_kernel<Argmax, scalar_t, int64_t>
                         : max_pool2d_bprop_nchw_kernel<Argmax, scalar_t, int64_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), dy, arg, dx, p, total);
    }
  });
  return grad_input;
}

// The four ops on the backend's dispatch key, in the library `m` that TORCH_LIBRARY_IMPL opened.
template <typename Backend>
void register_max_pool2d(torch::Library& m) {
  m.impl("max_pool2d_fprop", &max_pool2d_fprop_host<Backend, FlatIndexArgmax>);
  m.impl("_max_pool2d_bprop", &max_pool2d_bprop_host<Backend, FlatIndexArgmax>);
  m.impl("_max_pool2d_fprop_taps", &max_pool2d_fprop_host<Backend, TapArgmax>);
  m.impl("_max_pool2d_bprop_taps", &max_pool2d_bprop_host<Backend, TapArgmax>);
}

}  // namespace fastconv::FASTCONV_KERNEL_NAMESPACE
