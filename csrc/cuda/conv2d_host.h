// The host side of fastconv's GPU conv2d, written once for two backends: the CUDA registration
// (csrc/cuda/conv2d_cuda.cu, nvcc, device pointers, the current CUDA stream) and the emulated registration
// (csrc/emulator/conv2d_emulated.cpp, g++, CPU tensors, the SIMT emulator). As for max_pool2d
// (max_pool2d_host.h), a Backend (CudaBackend, EmulatedBackend) supplies the device check, the device guard
// and the stream; checks, allocation, dtype dispatch, empty-tensor early returns, workspace, the sequence
// of launches and the registration of the ops live here. The kernel table and auto's ranked order (the
// GPU's plan layer) are near the end of this file.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../conv2d_plan.h"
#include "../ops_common.h"
#include "conv2d_backward.cuh"
#include "conv2d_direct.cuh"
#include "conv2d_simple.cuh"
#include "im2col.cuh"
#include "sgemm.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline Strides4 strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The stride of the combined spatial index p * Q + q of a 4-D tensor, or -1 when P and Q do not collapse.
inline int64_t pq_stride(const at::Tensor& t) {
  if (t.size(3) == 1) return t.stride(2);
  if (t.size(2) == 1) return t.stride(3);
  return t.stride(2) == t.size(3) * t.stride(3) ? t.stride(3) : -1;
}

// A tensor whose spatial dimensions collapse: itself when they do (no copy), else a copy in its layout.
inline at::Tensor pq_collapsible(const at::Tensor& t) {
  return pq_stride(t) >= 0 ? t : t.contiguous(t.suggest_memory_format());
}

inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// Images per im2col chunk: the column workspace stays under 2^26 elements and the GEMM batch under 65535.
inline int64_t images_per_chunk(const Conv2dProblem& p) {
  const int64_t per_image = std::max<int64_t>(1, p.C * p.R * p.S * p.P * p.Q);
  int64_t nb = std::max<int64_t>(1, (int64_t(1) << 26) / per_image);
  nb = std::min<int64_t>(nb, std::max<int64_t>(1, 65535 / p.groups));
  return std::min<int64_t>(nb, std::max<int64_t>(p.N, 1));
}

// The im2col path's buffers for one call: the kernels below allocate exactly these and explain reports
// their bytes, so the two cannot drift. pointwise: the 1x1 GEMM reads the tensors themselves (no columns).
struct Im2colBuffers {
  int64_t images;     // per chunk
  int64_t col_elems;  // the column buffer (the column gradient in dgrad, in the accumulation type)
  int64_t acc_elems;  // wgrad of float16/bfloat16: the weight gradient accumulated in float
  int64_t elem_bytes, acc_bytes;
  int64_t bytes(Conv2dOperator op) const {
    return col_elems * (op == Conv2dOperator::Dgrad ? acc_bytes : elem_bytes) + acc_elems * acc_bytes;
  }
};
inline Im2colBuffers im2col_buffers(const Conv2dProblem& p, Conv2dOperator op, at::ScalarType dtype, bool pointwise,
                                    bool use_blas) {
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);  // per image: col is [K = CgRS, M / N = PQ]
  const bool reduced = dtype == at::kHalf || dtype == at::kBFloat16;
  Im2colBuffers b{};
  b.elem_bytes = static_cast<int64_t>(c10::elementSize(dtype));
  b.acc_bytes = reduced ? 4 : b.elem_bytes;
  b.images = op == Conv2dOperator::Wgrad && !use_blas ? 1 : images_per_chunk(p);
  b.col_elems = pointwise ? 0 : b.images * p.groups * gemm.K * p.P * p.Q;
  b.acc_elems = op == Conv2dOperator::Wgrad && reduced ? p.K * gemm.K : 0;
  return b;
}

template <typename scalar_t>
at::ScalarType acc_scalar_type() {
  return c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
}

// ------------------------------------------------------------------------------------------------ fprop
template <typename scalar_t>
void fprop_im2col(Stream stream, const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                  const scalar_t* bias, at::Tensor& output, bool use_blas) {
  // fprop's implicit GEMM per image and group, transposed: y[Kg, PQ] = W[Kg, CgRS] . col[CgRS, PQ].
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);
  const int64_t G = p.groups, Kg = gemm.N, CRS = gemm.K, PQ = gemm.M / p.N;
  const at::Tensor wm = weight.contiguous();  // [K, Cg*R*S]
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  scalar_t* y = output.mutable_data_ptr<scalar_t>();
  const Strides4 xs = strides4(input), ys = strides4(output);
  const int64_t y_pq = pq_stride(output);
  TORCH_INTERNAL_ASSERT(y_pq >= 0, "conv2d: the output's spatial dimensions must collapse");
  const bool pointwise = p.is_pointwise() && pq_stride(input) >= 0 && !use_blas;
  const Im2colBuffers buffers = im2col_buffers(p, Conv2dOperator::Fprop, input.scalar_type(), pointwise, use_blas);
  const int64_t nb = buffers.images;
  at::Tensor col;
  if (!pointwise) col = at::empty({nb, G, CRS, PQ}, input.options());
  for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
    const int64_t cnt = std::min(nb, p.N - n0);
    const scalar_t* B = nullptr;
    GemmArgs g{};
    g.M = Kg; g.N = PQ; g.K = CRS;
    g.rs_a = CRS; g.cs_a = 1; g.a_b1 = 0; g.a_b2 = Kg * CRS;
    g.rs_c = ys.c; g.cs_c = y_pq; g.c_b1 = ys.n; g.c_b2 = Kg * ys.c;
    g.batch2 = G; g.bias_b2 = Kg; g.accumulate = false;
    if (pointwise) {
      B = x + n0 * xs.n;
      g.rs_b = xs.c; g.cs_b = pq_stride(input); g.b_b1 = xs.n; g.b_b2 = p.C_per_group() * xs.c;
    } else {
      launch_im2col<scalar_t>(p, cnt, x + n0 * xs.n, xs, col.mutable_data_ptr<scalar_t>(), stream);
      B = col.const_data_ptr<scalar_t>();
      g.rs_b = PQ; g.cs_b = 1; g.b_b1 = G * CRS * PQ; g.b_b2 = CRS * PQ;
    }
    if (use_blas) {  // the comparison point: the same columns multiplied by at::matmul (cuBLAS on a GPU)
      at::Tensor out = at::matmul(wm.reshape({1, G, Kg, CRS}), col.narrow(0, 0, cnt)).reshape({cnt, p.K, p.P, p.Q});
      output.narrow(0, n0, cnt).copy_(out);
      continue;
    }
    launch_gemm<scalar_t, scalar_t>(g, cnt * G, wm.const_data_ptr<scalar_t>(), B, bias, y + n0 * ys.n, stream);
  }
}

// ------------------------------------------------------------------------------------------------ dgrad
template <typename scalar_t>
void dgrad_im2col(Stream stream, const Conv2dProblem& p, const at::Tensor& dy_in, const at::Tensor& weight,
                  at::Tensor& grad_input, bool use_blas) {
  using acc = acc_t<scalar_t>;
  // Not dgrad's implicit GEMM (M = NHW, K = KgRS): through columns it is fprop's GEMM transposed,
  // dcol[CgRS, PQ] = W^T[CgRS, Kg] . dy[Kg, PQ], and col2im sums the R*S taps.
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);
  const int64_t G = p.groups, Kg = gemm.N, CRS = gemm.K, PQ = gemm.M / p.N;
  const at::Tensor dy = pq_collapsible(dy_in);
  const at::Tensor wm = weight.contiguous();  // [K, Cg*R*S]; W^T is read with swapped strides
  const Strides4 dys = strides4(dy), dxs = strides4(grad_input);
  scalar_t* dx = grad_input.mutable_data_ptr<scalar_t>();
  const int64_t dx_pq = pq_stride(grad_input);
  const bool pointwise = p.is_pointwise() && dx_pq >= 0 && !use_blas;
  const int64_t nb = im2col_buffers(p, Conv2dOperator::Dgrad, dy.scalar_type(), pointwise, use_blas).images;
  at::Tensor dcol;
  if (!pointwise) dcol = at::empty({nb, G, CRS, PQ}, dy.options().dtype(acc_scalar_type<scalar_t>()));
  for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
    const int64_t cnt = std::min(nb, p.N - n0);
    if (use_blas) {
      const at::Tensor dyc = dy.narrow(0, n0, cnt).reshape({cnt, G, Kg, PQ});
      dcol.narrow(0, 0, cnt).copy_(at::matmul(wm.reshape({1, G, Kg, CRS}).transpose(-1, -2), dyc));
      launch_col2im<scalar_t>(p, cnt, dcol.const_data_ptr<acc>(), dx + n0 * dxs.n, dxs, stream);
      continue;
    }
    GemmArgs g{};
    g.M = CRS; g.N = PQ; g.K = Kg;
    g.rs_a = 1; g.cs_a = CRS; g.a_b1 = 0; g.a_b2 = Kg * CRS;
    g.rs_b = dys.c; g.cs_b = pq_stride(dy); g.b_b1 = dys.n; g.b_b2 = Kg * dys.c;
    g.batch2 = G; g.bias_b2 = 0; g.accumulate = false;
    const scalar_t* B = dy.const_data_ptr<scalar_t>() + n0 * dys.n;
    if (pointwise) {  // the column gradient is the input gradient itself
      g.rs_c = dxs.c; g.cs_c = dx_pq; g.c_b1 = dxs.n; g.c_b2 = p.C_per_group() * dxs.c;
      launch_gemm<scalar_t, scalar_t>(g, cnt * G, wm.const_data_ptr<scalar_t>(), B, nullptr, dx + n0 * dxs.n,
                                      stream);
    } else {
      g.rs_c = PQ; g.cs_c = 1; g.c_b1 = G * CRS * PQ; g.c_b2 = CRS * PQ;
      launch_gemm<scalar_t, acc>(g, cnt * G, wm.const_data_ptr<scalar_t>(), B, nullptr, dcol.mutable_data_ptr<acc>(),
                                 stream);
      launch_col2im<scalar_t>(p, cnt, dcol.const_data_ptr<acc>(), dx + n0 * dxs.n, dxs, stream);
    }
  }
}

// ------------------------------------------------------------------------------------------------ wgrad
// dW[g] = sum over images, in order, of dy[n, g] (Kg x PQ) . col[n, g]^T (PQ x CgRS); accumulated in the
// accumulation type (a float workspace for half/bfloat16), so no atomics and one fixed order.
template <typename scalar_t>
void wgrad_im2col(Stream stream, const Conv2dProblem& p, const at::Tensor& dy_in, const at::Tensor& input,
                  at::Tensor& grad_weight, bool use_blas) {
  using acc = acc_t<scalar_t>;
  // wgrad's implicit GEMM per group, one image (a K slice of N*P*Q) at a time: dW[M = Kg, N = CgRS].
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Wgrad);
  const int64_t G = p.groups, Kg = gemm.M, CRS = gemm.N, PQ = p.P * p.Q;
  const at::Tensor dy = pq_collapsible(dy_in);
  const Strides4 dys = strides4(dy), xs = strides4(input);
  const bool same_type = std::is_same_v<acc, scalar_t>;
  at::Tensor dw_acc = same_type ? grad_weight : at::empty({p.K, CRS}, dy.options().dtype(acc_scalar_type<scalar_t>()));
  if (p.N == 0) {
    grad_weight.zero_();
    return;
  }
  const bool pointwise = p.is_pointwise() && pq_stride(input) >= 0 && !use_blas;
  const int64_t nb = im2col_buffers(p, Conv2dOperator::Wgrad, dy.scalar_type(), pointwise, use_blas).images;
  at::Tensor col;
  if (!pointwise) col = at::empty({nb, G, CRS, PQ}, input.options());
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  for (int64_t n0 = 0; n0 < p.N; n0 += nb) {
    const int64_t cnt = std::min(nb, p.N - n0);
    if (!pointwise) launch_im2col<scalar_t>(p, cnt, x + n0 * xs.n, xs, col.mutable_data_ptr<scalar_t>(), stream);
    if (use_blas) {
      const at::Tensor dyc = dy.narrow(0, n0, cnt).reshape({cnt, G, Kg, PQ});
      const at::Tensor part = at::matmul(dyc, col.narrow(0, 0, cnt).transpose(-1, -2)).sum(0).reshape({p.K, CRS});
      if (n0 == 0) {
        dw_acc.view({p.K, CRS}).copy_(part);
      } else {
        dw_acc.view({p.K, CRS}).add_(part.to(dw_acc.scalar_type()));
      }
      continue;
    }
    GemmArgs g{};
    g.M = Kg; g.N = CRS; g.K = PQ;
    g.rs_a = dys.c; g.cs_a = pq_stride(dy); g.a_b1 = 0; g.a_b2 = Kg * dys.c;
    g.rs_c = CRS; g.cs_c = 1; g.c_b1 = 0; g.c_b2 = Kg * CRS;
    g.batch2 = G; g.bias_b2 = 0; g.accumulate = n0 > 0;
    const scalar_t* B = nullptr;
    if (pointwise) {
      B = x + n0 * xs.n;
      g.rs_b = pq_stride(input); g.cs_b = xs.c; g.b_b1 = 0; g.b_b2 = p.C_per_group() * xs.c;
    } else {
      B = col.const_data_ptr<scalar_t>();
      g.rs_b = 1; g.cs_b = PQ; g.b_b1 = 0; g.b_b2 = CRS * PQ;
    }
    launch_gemm<scalar_t, acc>(g, G, dy.const_data_ptr<scalar_t>() + n0 * dys.n, B, nullptr,
                               dw_acc.mutable_data_ptr<acc>(), stream);
  }
  if (!same_type) grad_weight.view({p.K, CRS}).copy_(dw_acc);
}

// ------------------------------------------------------------------------------------------------ bgrad
template <typename Backend>
at::Tensor conv2d_bgrad_host(const at::Tensor& grad_output) {
  Backend::check_device("conv2d backward", grad_output);
  const typename Backend::Guard guard(grad_output);
  const Stream stream = Backend::stream();
  TORCH_CHECK(grad_output.dim() == 4, "conv2d backward: expected a 4-D grad_output, but got ", grad_output.sizes());
  TORCH_CHECK(at::isFloatingType(grad_output.scalar_type()),
              "conv2d backward: expected a floating point grad_output, but got ", grad_output.scalar_type());
  const int64_t N = grad_output.size(0), K = grad_output.size(1), P = grad_output.size(2), Q = grad_output.size(3);
  at::Tensor grad_bias = new_output({K}, grad_output.options());
  if (K == 0) return grad_bias;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "fastconv_conv2d_bgrad", [&] {
    launch_conv2d_bgrad<scalar_t>(N, K, P, Q, grad_output.const_data_ptr<scalar_t>(), strides4(grad_output),
                                  grad_bias.mutable_data_ptr<scalar_t>(), stream);
  });
  return grad_bias;
}

// ------------------------------------------------------------------------------------------------- plan
// The GPU's kernel table (the CPU's is kKernels in cpu/conv2d_cpu.cpp): dispatch, explain, the workspace
// report and the autotuner all read these entries.
struct GpuContext {
  Stream stream;
};
using GpuKernel = Conv2dKernel<GpuContext>;

template <typename scalar_t>
const scalar_t* bias_ptr(const at::Tensor& bias) {
  return bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
}

inline const char* gpu_always(const Conv2dCall&) { return nullptr; }
inline int64_t gpu_no_workspace(const Conv2dCall&) { return 0; }

inline void run_gpu_simple(const GpuContext& ctx, const Conv2dCall& c, const Conv2dOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.a.scalar_type(), "fastconv_conv2d_direct_simple", [&] {
    const scalar_t* a = o.a.const_data_ptr<scalar_t>();
    const scalar_t* b = o.b.const_data_ptr<scalar_t>();
    scalar_t* out = o.out.mutable_data_ptr<scalar_t>();
    switch (c.op) {
      case Conv2dOperator::Fprop:
        launch_conv2d_fprop_simple<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), bias_ptr<scalar_t>(o.bias), out,
                                             strides4(o.out), ctx.stream);
        break;
      case Conv2dOperator::Dgrad:
        launch_conv2d_dgrad_simple<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), out, strides4(o.out), ctx.stream);
        break;
      case Conv2dOperator::Wgrad:
        launch_conv2d_wgrad_simple<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), out, ctx.stream);
        break;
    }
  });
}

inline const char* gpu_direct_unsupported(const Conv2dCall& c) {
  if (c.op != Conv2dOperator::Fprop) return nullptr;
  const int64_t acc_bytes = c.dtype == at::kDouble ? 8 : 4;
  return direct_fprop_launch(c.p, acc_bytes).fits()
             ? nullptr
             : "the tiled forward's shared-memory tile or grid does not fit this problem";
}
// direct's dgrad is the gather of the simple loops itself (no faster deterministic one yet).
inline void run_gpu_direct(const GpuContext& ctx, const Conv2dCall& c, const Conv2dOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.a.scalar_type(), "fastconv_conv2d_direct", [&] {
    const scalar_t* a = o.a.const_data_ptr<scalar_t>();
    const scalar_t* b = o.b.const_data_ptr<scalar_t>();
    scalar_t* out = o.out.mutable_data_ptr<scalar_t>();
    switch (c.op) {
      case Conv2dOperator::Fprop:
        launch_conv2d_fprop_direct<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), bias_ptr<scalar_t>(o.bias), out,
                                             strides4(o.out), ctx.stream);
        break;
      case Conv2dOperator::Dgrad:
        launch_conv2d_dgrad_simple<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), out, strides4(o.out), ctx.stream);
        break;
      case Conv2dOperator::Wgrad:
        launch_conv2d_wgrad_direct<scalar_t>(c.p, a, strides4(o.a), b, strides4(o.b), out, ctx.stream);
        break;
    }
  });
}

template <bool UseBlas>
int64_t gpu_im2col_workspace(const Conv2dCall& c) {
  return im2col_buffers(c.p, c.op, c.dtype, c.p.is_pointwise() && !UseBlas, UseBlas).bytes(c.op);
}
template <bool UseBlas>
void run_gpu_im2col(const GpuContext& ctx, const Conv2dCall& c, const Conv2dOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.a.scalar_type(), "fastconv_conv2d_im2col", [&] {
    switch (c.op) {
      case Conv2dOperator::Fprop:
        fprop_im2col<scalar_t>(ctx.stream, c.p, o.a, o.b, bias_ptr<scalar_t>(o.bias), o.out, UseBlas);
        if (UseBlas && o.bias.defined()) o.out.add_(o.bias.view({1, c.p.K, 1, 1}));  // fastconv's GEMM adds it
        break;
      case Conv2dOperator::Dgrad: dgrad_im2col<scalar_t>(ctx.stream, c.p, o.a, o.b, o.out, UseBlas); break;
      case Conv2dOperator::Wgrad: wgrad_im2col<scalar_t>(ctx.stream, c.p, o.a, o.b, o.out, UseBlas); break;
    }
  });
}

inline const GpuKernel kGpuKernels[] = {
    {"direct", Conv2dAlgorithm::Direct, "direct", gpu_direct_unsupported, gpu_no_workspace, run_gpu_direct},
    {"direct_simple", Conv2dAlgorithm::DirectSimple, "direct_simple", gpu_always, gpu_no_workspace, run_gpu_simple},
    {"im2col", Conv2dAlgorithm::Im2col, "im2col", gpu_always, gpu_im2col_workspace<false>, run_gpu_im2col<false>},
    {"im2col_blas", Conv2dAlgorithm::Im2colBlas, "im2col_blas", gpu_always, gpu_im2col_workspace<true>,
     run_gpu_im2col<true>},
};

// THE heuristic of auto on the GPU, beside the CPU's (kAutoOrder in cpu/conv2d_cpu.cpp). Tiny groups take
// the direct kernels here, where the CPU runs im2col as many small serial GEMMs: a GEMM of K/groups < 4
// rows or a reduction shorter than 4 wastes the GPU GEMM's tiles.
inline bool gpu_tiny_groups(const Conv2dCall& c) { return c.p.K_per_group() < 4 || c.p.gemm_k() < 4; }
inline const Conv2dAutoRule kGpuAutoOrder[] = {
    {"direct", gpu_tiny_groups,
     "tiny groups (depthwise-like: K/groups < 4 or C/groups*R*S < 4): direct kernels, no GEMM worth the name"},
    {"im2col", nullptr, "im2col + the tiled GEMM (implicit GEMM's sizes, one column chunk at a time)"},
};

inline Conv2dPlanner<GpuContext>& gpu_planner() {
  static Conv2dPlanner<GpuContext> instance(FASTCONV_BACKEND_NAME, kGpuKernels, kGpuAutoOrder);
  return instance;
}

// Named functions, not lambdas: nvcc's host pass rejects captureless lambdas in this brace initialiser.
inline Conv2dPlanReport gpu_report(const Conv2dCall& c, Conv2dAlgorithm a) { return gpu_planner().report(c, a); }
inline bool gpu_runs_itself(const Conv2dCall& c, Conv2dAlgorithm a) { return gpu_planner().runs_itself(c, a); }
inline TunedChoices& gpu_tuned() { return gpu_planner().tuned(); }
inline std::vector<std::pair<std::string, int64_t>> gpu_run_counts() { return gpu_planner().run_counts(); }
inline void gpu_reset_run_counts() { gpu_planner().reset_run_counts(); }

inline Conv2dPlannerHooks gpu_planner_hooks() {
  return {gpu_report, gpu_runs_itself, gpu_tuned, gpu_run_counts, gpu_reset_run_counts};
}

// ------------------------------------------------------------------------------------------------ entry
// The ops: checks, allocation, then the planner's kernel.
template <typename Backend>
at::Tensor conv2d_fprop_host(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             c10::string_view algorithm, c10::string_view padding_mode) {
  Backend::check_device("conv2d", input);
  Backend::check_device("conv2d", weight);
  if (bias.has_value() && bias->defined()) Backend::check_device("conv2d", *bias);
  check_conv2d_tensors("conv2d", input, "input", weight, "weight");
  const typename Backend::Guard guard(input);
  const Conv2dProblem p =
      make_conv2d_problem(input.sizes(), weight.sizes(), stride, padding, dilation, groups, padding_mode);
  at::Tensor bias_tensor = bias.has_value() ? *bias : at::Tensor();
  if (bias_tensor.defined()) {
    check_conv2d_bias(p, input, bias_tensor);
    bias_tensor = bias_tensor.contiguous();
  }
  at::Tensor output =
      new_output({p.N, p.K, p.P, p.Q}, input.options(), conv2d_output_memory_format(input, weight));
  if (output.numel() == 0) return output;
  const Conv2dCall call{p, Conv2dOperator::Fprop, input.scalar_type(), is_channels_last(input)};
  gpu_planner().run(GpuContext{Backend::stream()}, call, {input, weight, bias_tensor, output}, parse_conv2d_algorithm(algorithm));
  return output;
}

template <typename Backend>
at::Tensor conv2d_dgrad_host(const at::Tensor& grad_output, const at::Tensor& weight, c10::SymIntArrayRef input_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             c10::string_view algorithm, c10::string_view padding_mode) {
  Backend::check_device("conv2d backward", grad_output);
  Backend::check_device("conv2d backward", weight);
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", weight, "weight");
  const typename Backend::Guard guard(grad_output);
  const Conv2dProblem p = make_conv2d_problem(C10_AS_INTARRAYREF_SLOW(input_size), weight.sizes(), stride,
                                              padding, dilation, groups, padding_mode);
  check_conv2d_grad_output(p, grad_output);
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, grad_output.options(),
                                     conv2d_output_memory_format(grad_output, weight));
  if (grad_input.numel() == 0) return grad_input;
  const Conv2dCall call{p, Conv2dOperator::Dgrad, grad_output.scalar_type(), is_channels_last(grad_output)};
  gpu_planner().run(GpuContext{Backend::stream()}, call, {grad_output, weight, at::Tensor(), grad_input}, parse_conv2d_algorithm(algorithm));
  return grad_input;
}

template <typename Backend>
at::Tensor conv2d_wgrad_host(const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             c10::string_view algorithm, c10::string_view padding_mode) {
  Backend::check_device("conv2d backward", grad_output);
  Backend::check_device("conv2d backward", input);
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", input, "input");
  const typename Backend::Guard guard(grad_output);
  const Conv2dProblem p = make_conv2d_problem(input.sizes(), C10_AS_INTARRAYREF_SLOW(weight_size), stride,
                                              padding, dilation, groups, padding_mode);
  check_conv2d_grad_output(p, grad_output);
  at::Tensor grad_weight = new_output({p.K, p.C_per_group(), p.R, p.S}, grad_output.options());
  if (grad_weight.numel() == 0) return grad_weight;
  const Conv2dCall call{p, Conv2dOperator::Wgrad, grad_output.scalar_type(), is_channels_last(input)};
  gpu_planner().run(GpuContext{Backend::stream()}, call, {grad_output, input, at::Tensor(), grad_weight}, parse_conv2d_algorithm(algorithm));
  const at::MemoryFormat format = conv2d_output_memory_format(input, grad_output);
  return format == at::MemoryFormat::Contiguous ? grad_weight : grad_weight.contiguous(format);
}

// The conv2d ops of one library on one backend (the registering file, conv2d_cuda.cu or
// emulator/conv2d_emulated.cpp, names both), and this compiler's planner for explain, the autotuner and
// the run counters.
template <typename Backend>
void register_conv2d(torch::Library& m) {
  m.impl("conv2d_fprop", &conv2d_fprop_host<Backend>);
  m.impl("_conv2d_dgrad", &conv2d_dgrad_host<Backend>);
  m.impl("_conv2d_wgrad", &conv2d_wgrad_host<Backend>);
  m.impl("_conv2d_bgrad", &conv2d_bgrad_host<Backend>);
  register_conv2d_planner(FASTCONV_BACKEND_NAME, gpu_planner_hooks());
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
