// The host half of the max_pool2d CUDA kernels, written once for both of their registrations:
// csrc/cuda/max_pool2d_cuda.cu (nvcc, real GPU, torch.ops.fastconv on CUDA tensors) and
// csrc/emulator/max_pool2d_emulated.cpp (g++, SIMT emulator, torch.ops.fastconv_emulated on CPU tensors).
// A Backend supplies what differs: the device check, a device guard, the stream, and a post-launch check:
//   struct Backend {
//     static constexpr const char* name;              // for messages
//     static void check_device(const char* op, const at::Tensor&);
//     using Guard = ...;                              // constructed from the input tensor
//     static fastconv::Stream stream();
//     static void check_launch();
//   };
// Everything else — argument checks, the problem, layouts, allocation, dtype dispatch, the empty early
// return, choosing 32- or 64-bit indexing, the launch — is here.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

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

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> max_pool2d_fprop_host(const at::Tensor& input_, c10::IntArrayRef kernel_size,
                                                         c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                         c10::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "max_pool2d_fprop";
  check_pool2d_input(op, input_);
  Backend::check_device(op, input_);
  const Pool2dProblem p = make_pool2d_problem(input_.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  typename Backend::Guard guard(input_);

  const at::MemoryFormat format = pool_memory_format(input_);
  const at::Tensor input = input_.contiguous(format);
  at::Tensor output = new_output({p.N, p.C, p.P, p.Q}, input.options(), format);
  at::Tensor indices = new_output({p.N, p.C, p.P, p.Q}, input.options().dtype(at::kLong), format);
  const int64_t total = output.numel();
  if (total == 0) return {output, indices};

  const dim3 grid = pool_grid(total);
  const bool use_int32 = pool2d_fits_int32(p, static_cast<int64_t>(grid.x) * kPoolThreadsPerBlock);
  const bool nhwc = format == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    const auto* x = input.const_data_ptr<scalar_t>();
    auto* y = output.mutable_data_ptr<scalar_t>();
    auto* ind = indices.mutable_data_ptr<int64_t>();
    if (use_int32) {
      launch_kernel(nhwc ? max_pool2d_fprop_nhwc_kernel<scalar_t, int32_t> : max_pool2d_fprop_nchw_kernel<scalar_t, int32_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), x, y, ind, p,
                    static_cast<int32_t>(total));
    } else {
      launch_kernel(nhwc ? max_pool2d_fprop_nhwc_kernel<scalar_t, int64_t> : max_pool2d_fprop_nchw_kernel<scalar_t, int64_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), x, y, ind, p, total);
    }
    Backend::check_launch();
  });
  return {output, indices};
}

template <typename Backend>
at::Tensor max_pool2d_bprop_host(const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& indices_,
                                 c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                 c10::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* op = "_max_pool2d_bprop";
  check_pool2d_input(op, input_);
  Backend::check_device(op, input_);
  Backend::check_device(op, grad_output_);
  Backend::check_device(op, indices_);
  TORCH_CHECK(grad_output_.device() == input_.device() && indices_.device() == input_.device(), op,
              ": expected grad_output, input and indices on one device, but got ", grad_output_.device(), ", ",
              input_.device(), " and ", indices_.device());
  TORCH_CHECK(grad_output_.scalar_type() == input_.scalar_type(), op,
              ": expected grad_output of the input's dtype ", input_.scalar_type(), ", but got ",
              grad_output_.scalar_type());
  TORCH_CHECK(indices_.scalar_type() == at::kLong, op, ": expected int64 indices, but got ",
              indices_.scalar_type());
  const Pool2dProblem p = make_pool2d_problem(input_.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const std::vector<int64_t> out_size{p.N, p.C, p.P, p.Q};
  TORCH_CHECK(grad_output_.sizes() == c10::IntArrayRef(out_size) && indices_.sizes() == c10::IntArrayRef(out_size),
              op, ": expected grad_output and indices of size ", c10::IntArrayRef(out_size), ", but got ",
              grad_output_.sizes(), " and ", indices_.sizes());
  typename Backend::Guard guard(input_);

  // grad_input takes the input's layout; grad_output and indices are brought to it.
  const at::MemoryFormat format = pool_memory_format(input_);
  const at::Tensor grad_output = grad_output_.contiguous(format);
  const at::Tensor indices = indices_.contiguous(format);
  at::Tensor grad_input = new_output(input_.sizes(), input_.options(), format);
  const int64_t total = grad_input.numel();
  if (total == 0) return grad_input;

  const dim3 grid = pool_grid(total);
  const bool use_int32 = pool2d_fits_int32(p, static_cast<int64_t>(grid.x) * kPoolThreadsPerBlock);
  const bool nhwc = format == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input_.scalar_type(), op, [&] {
    const auto* dy = grad_output.const_data_ptr<scalar_t>();
    const auto* ind = indices.const_data_ptr<int64_t>();
    auto* dx = grad_input.mutable_data_ptr<scalar_t>();
    if (use_int32) {
      launch_kernel(nhwc ? max_pool2d_bprop_nhwc_kernel<scalar_t, int32_t> : max_pool2d_bprop_nchw_kernel<scalar_t, int32_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), dy, ind, dx, p,
                    static_cast<int32_t>(total));
    } else {
      launch_kernel(nhwc ? max_pool2d_bprop_nhwc_kernel<scalar_t, int64_t> : max_pool2d_bprop_nchw_kernel<scalar_t, int64_t>,
                    grid, dim3(kPoolThreadsPerBlock), 0, Backend::stream(), dy, ind, dx, p, total);
    }
    Backend::check_launch();
  });
  return grad_input;
}

}  // namespace fastconv::FASTCONV_KERNEL_NAMESPACE
