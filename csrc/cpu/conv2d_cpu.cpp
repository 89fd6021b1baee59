// CPU registration of the conv2d ops: argument checks, output allocation and the algorithm choice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "conv2d_cpu.h"
#include "../conv2d_plan.h"

namespace fastconv::cpu {

namespace {

struct CpuContext {};
using CpuKernel = Conv2dKernel<CpuContext>;

int64_t elem_size(const Conv2dCall& c) { return static_cast<int64_t>(c10::elementSize(c.dtype)); }
int64_t no_workspace(const Conv2dCall&) { return 0; }
const char* always(const Conv2dCall&) { return nullptr; }

// ---------------------------------------------------------------------------------------------- kernels
const char* depthwise_unsupported(const Conv2dCall& c) {
  return depthwise_supported(c.p, c.dtype) ? nullptr
                                           : "the depthwise kernel needs groups == C == K, float32/float64 and "
                                             "zero padding";
}
int64_t depthwise_workspace(const Conv2dCall& c) {
  return depthwise_workspace_bytes(c.p, c.op, c.channels_last, elem_size(c));
}
void run_depthwise(const CpuContext&, const Conv2dCall& c, const Conv2dOperands& o) {
  switch (c.op) {
    case Conv2dOperator::Fprop: conv2d_fprop_depthwise(c.p, o.a, o.b, o.bias, o.out); break;
    case Conv2dOperator::Dgrad: conv2d_dgrad_depthwise(c.p, o.a, o.b, o.out); break;
    case Conv2dOperator::Wgrad: conv2d_wgrad_depthwise(c.p, o.a, o.b, o.out); break;
  }
}

const char* blocked_unsupported(const Conv2dCall& c) {
  switch (c.op) {
    case Conv2dOperator::Fprop:
      return direct_blocked_supported(c.p, c.dtype) ? nullptr : "the blocked kernel needs float32 and groups == 1";
    case Conv2dOperator::Dgrad:
      return direct_blocked_dgrad_supported(c.p, c.dtype)
                 ? nullptr
                 : "the blocked dgrad needs float32, stride 1, groups == 1 and zero padding within the window's reach";
    default: return "there is no blocked wgrad kernel";
  }
}
int64_t blocked_workspace(const Conv2dCall& c) {
  return c.op == Conv2dOperator::Fprop ? direct_blocked_workspace_bytes(c.p) : direct_blocked_dgrad_workspace_bytes(c.p);
}
void run_blocked(const CpuContext&, const Conv2dCall& c, const Conv2dOperands& o) {
  if (c.op == Conv2dOperator::Fprop) {
    conv2d_fprop_direct_blocked(c.p, o.a, o.b, o.bias, o.out);
  } else {
    conv2d_dgrad_direct_blocked(c.p, o.a, o.b, o.out);
  }
}

void run_simple(const CpuContext&, const Conv2dCall& c, const Conv2dOperands& o) {
  switch (c.op) {
    case Conv2dOperator::Fprop: conv2d_fprop_direct(c.p, o.a, o.b, o.bias, o.out); break;
    case Conv2dOperator::Dgrad: conv2d_dgrad_direct(c.p, o.a, o.b, o.out); break;
    case Conv2dOperator::Wgrad: conv2d_wgrad_direct(c.p, o.a, o.b, o.out); break;
  }
}

// The 1x1 GEMM and the column im2col split the problems between them (the same is_pointwise the im2col
// entry points branch on), so explain can tell them apart.
const char* pointwise_unsupported(const Conv2dCall& c) {
  return c.p.is_pointwise() ? nullptr : "the input is a GEMM operand only for 1x1, stride 1, unpadded problems";
}
const char* columns_unsupported(const Conv2dCall& c) {
  return c.p.is_pointwise() ? "1x1 stride 1 unpadded problems take the 1x1 GEMM entry" : nullptr;
}
int64_t im2col_workspace(const Conv2dCall& c) {
  return im2col_workspace_bytes(c.p, c.op, c.channels_last, elem_size(c));
}
template <bool UseBlas>
void run_im2col(const CpuContext&, const Conv2dCall& c, const Conv2dOperands& o) {
  switch (c.op) {
    case Conv2dOperator::Fprop: conv2d_fprop_im2col(c.p, o.a, o.b, o.bias, o.out, UseBlas); break;
    case Conv2dOperator::Dgrad: conv2d_dgrad_im2col(c.p, o.a, o.b, o.out, UseBlas); break;
    case Conv2dOperator::Wgrad: conv2d_wgrad_im2col(c.p, o.a, o.b, o.out, UseBlas); break;
  }
}

// The CPU's kernels; an algorithm's kernels in the order an explicit request tries them.
const CpuKernel kKernels[] = {
    {"depthwise", Conv2dAlgorithm::Direct, "direct (depthwise kernel)", depthwise_unsupported, depthwise_workspace,
     run_depthwise},
    {"direct_blocked", Conv2dAlgorithm::Direct, "direct", blocked_unsupported, blocked_workspace, run_blocked},
    {"direct_simple", Conv2dAlgorithm::DirectSimple, "direct_simple", always, no_workspace, run_simple},
    {"im2col_1x1", Conv2dAlgorithm::Im2col, "im2col (1x1 GEMM, no column buffer)", pointwise_unsupported,
     im2col_workspace, run_im2col<false>},
    {"im2col", Conv2dAlgorithm::Im2col, "im2col", columns_unsupported, im2col_workspace, run_im2col<false>},
    {"im2col_blas_1x1", Conv2dAlgorithm::Im2colBlas, "im2col_blas (1x1 GEMM, no column buffer)",
     pointwise_unsupported, im2col_workspace, run_im2col<true>},
    {"im2col_blas", Conv2dAlgorithm::Im2colBlas, "im2col_blas", columns_unsupported, im2col_workspace,
     run_im2col<true>},
};

// ------------------------------------------------------------------------------------------------- auto
// THE heuristic of auto on the CPU (the GPU's ranked order, for comparison, is kAutoOrder in
// cuda/conv2d_host.h). Where the two differ: tiny groups, which the CPU's im2col runs as (image, group)
// pairs in parallel, each a small serial GEMM, while the GPU has no such GEMM and takes its direct kernels.

// The blocked dgrad beats im2col + GEMM + col2im on every standard 3x3 layer here (1.4-2.6x, 7x7 maps
// included); below 7x7 the padded copy and tile edges are most of the work.
constexpr int64_t kDgradDirectMinPixels = 7 * 7;

bool is_channels_last_call(const Conv2dCall& c) { return c.channels_last; }
bool tiny_groups(const Conv2dCall& c) { return c.p.K_per_group() < 4 || c.p.gemm_k() < 4; }
bool blocked_fprop_pays(const Conv2dCall& c) {
  return c.op == Conv2dOperator::Fprop && direct_blocked_uses_avx2() && c.p.K >= 16 && c.p.R * c.p.S > 1 &&
         c.p.P * c.p.Q >= 64;
}
bool blocked_dgrad_pays(const Conv2dCall& c) {
  return c.op == Conv2dOperator::Dgrad && direct_blocked_uses_avx2() && c.p.C >= 16 && c.p.R * c.p.S > 1 &&
         c.p.H * c.p.W >= kDgradDirectMinPixels;
}
bool is_fprop(const Conv2dCall& c) { return c.op == Conv2dOperator::Fprop; }

constexpr const char* kTinyGroups =
    "tiny groups (depthwise-like: K/groups < 4 or C/groups*R*S < 4): im2col with (image, group) pairs in parallel, "
    "each a small serial GEMM";

const Conv2dAutoRule kAutoOrder[] = {
    {"depthwise", is_channels_last_call,
     "depthwise (groups == C == K), float32/float64: depthwise direct kernel, channels_last (8 channels per vector, "
     "in-bounds tap lists, no im2col)"},
    {"depthwise", nullptr,
     "depthwise (groups == C == K), float32/float64: depthwise direct kernel, NCHW (one plane at a time through a "
     "zero-padded buffer, output columns per vector, no im2col)"},
    {"im2col_1x1", tiny_groups, kTinyGroups},
    {"im2col", tiny_groups, kTinyGroups},
    {"im2col_1x1", nullptr, "1x1 stride 1 without padding: the input itself is the GEMM operand (no im2col)"},
    {"direct_blocked", blocked_fprop_pays,
     "float32, groups 1, K >= 16, a spatial window and a map of >= 64 pixels: blocked direct kernel (6 pixels x 16 "
     "channels AVX2 tile over a padded NHWC copy, no column buffer)"},
    {"direct_blocked", blocked_dgrad_pays,
     "float32, stride 1, groups 1, C >= 16, a spatial window and a map of >= 49 pixels: dgrad as a forward "
     "convolution of grad_output with the flipped filter, through the blocked direct kernel"},
    {"im2col", is_fprop,
     "row (channels_last) im2col + one packed GEMM over the batch (1x1 strided, small maps < 64 pixels, groups, "
     "float64, K < 16 or no AVX2)"},
    {"im2col", nullptr, "backward passes: im2col + packed GEMM (deterministic, fixed reduction order)"},
};

Conv2dPlanner<CpuContext>& planner() {
  static Conv2dPlanner<CpuContext> instance("cpu", kKernels, kAutoOrder);
  return instance;
}

const bool registered = register_conv2d_planner(
    "cpu", {[](const Conv2dCall& c, Conv2dAlgorithm a) { return planner().report(c, a); },
            [](const Conv2dCall& c, Conv2dAlgorithm a) { return planner().runs_itself(c, a); },
            []() -> TunedChoices& { return planner().tuned(); }, [] { return planner().run_counts(); },
            [] { planner().reset_run_counts(); }});

}  // namespace

namespace {

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

// float16 / bfloat16 (autocast) run in float32 and are rounded once at the end: PyTorch's CPU
// convolution also accumulates reduced precision in float.
bool is_reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}
std::optional<at::Tensor> to_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
}

// Spatial strides the GEMM can walk as one dimension; expanded or sliced gradients are copied once.
at::Tensor gemm_friendly(const at::Tensor& t) { return t.contiguous(t.suggest_memory_format()); }

at::Tensor conv2d_fprop(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_conv2d_tensors("conv2d", input, "input", weight, "weight");
  if (is_reduced_precision(input)) {
    if (bias.has_value()) check_conv2d_tensors("conv2d", input, "input", *bias, "bias");
    return conv2d_fprop(input.to(at::kFloat), weight.to(at::kFloat), to_float(bias), stride, padding, dilation,
                        groups, algorithm, padding_mode)
        .to(input.scalar_type());
  }
  const Conv2dProblem p =
      make_conv2d_problem(input.sizes(), weight.sizes(), stride, padding, dilation, groups, padding_mode);
  at::Tensor bias_tensor = bias.has_value() ? *bias : at::Tensor();
  if (bias_tensor.defined()) {
    check_conv2d_bias(p, input, bias_tensor);
    bias_tensor = bias_tensor.contiguous();  // the kernels index it densely (a strided bias, e.g. a complex's .real)
  }
  at::Tensor output =
      new_output({p.N, p.K, p.P, p.Q}, input.options(), conv2d_output_memory_format(input, weight));
  if (output.numel() == 0) return output;
  const Conv2dCall call{p, Conv2dOperator::Fprop, input.scalar_type(), is_channels_last(input)};
  planner().run(CpuContext{}, call, {input, weight, bias_tensor, output}, parse_conv2d_algorithm(algorithm));
  return output;
}

at::Tensor conv2d_dgrad(const at::Tensor& grad_output, const at::Tensor& weight, c10::SymIntArrayRef input_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", weight, "weight");
  if (is_reduced_precision(grad_output)) {
    return conv2d_dgrad(grad_output.to(at::kFloat), weight.to(at::kFloat), input_size, stride, padding, dilation,
                        groups, algorithm, padding_mode)
        .to(grad_output.scalar_type());
  }
  const Conv2dProblem p = make_conv2d_problem(C10_AS_INTARRAYREF_SLOW(input_size), weight.sizes(), stride,
                                              padding, dilation, groups, padding_mode);
  check_conv2d_grad_output(p, grad_output);
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, grad_output.options(),
                                     conv2d_output_memory_format(grad_output, weight));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor dy = gemm_friendly(grad_output);
  const Conv2dCall call{p, Conv2dOperator::Dgrad, dy.scalar_type(), is_channels_last(grad_output)};
  planner().run(CpuContext{}, call, {dy, weight, at::Tensor(), grad_input}, parse_conv2d_algorithm(algorithm));
  return grad_input;
}

at::Tensor conv2d_wgrad(const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm, c10::string_view padding_mode) {
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", input, "input");
  if (is_reduced_precision(grad_output)) {
    return conv2d_wgrad(grad_output.to(at::kFloat), input.to(at::kFloat), weight_size, stride, padding, dilation,
                        groups, algorithm, padding_mode)
        .to(grad_output.scalar_type());
  }
  const Conv2dProblem p = make_conv2d_problem(input.sizes(), C10_AS_INTARRAYREF_SLOW(weight_size), stride,
                                              padding, dilation, groups, padding_mode);
  check_conv2d_grad_output(p, grad_output);
  at::Tensor grad_weight = new_output({p.K, p.C_per_group(), p.R, p.S}, grad_output.options());
  if (grad_weight.numel() == 0) return grad_weight;
  const at::Tensor dy = gemm_friendly(grad_output);
  const Conv2dCall call{p, Conv2dOperator::Wgrad, dy.scalar_type(), is_channels_last(input)};
  planner().run(CpuContext{}, call, {dy, input, at::Tensor(), grad_weight}, parse_conv2d_algorithm(algorithm));
  const at::MemoryFormat format = conv2d_output_memory_format(input, grad_output);
  return format == at::MemoryFormat::Contiguous ? grad_weight : grad_weight.contiguous(format);
}

// grad_bias[k] sums grad_output over batch and positions; one thread per channel, a fixed order.
at::Tensor conv2d_bgrad(const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4, "conv2d backward: expected a 4-D grad_output, but got ",
              grad_output.sizes());
  TORCH_CHECK(at::isFloatingType(grad_output.scalar_type()),
              "conv2d backward: expected a floating point grad_output, but got ", grad_output.scalar_type());
  if (is_reduced_precision(grad_output)) return conv2d_bgrad(grad_output.to(at::kFloat)).to(grad_output.scalar_type());
  const int64_t N = grad_output.size(0), K = grad_output.size(1), P = grad_output.size(2), Q = grad_output.size(3);
  at::Tensor grad_bias = new_output({K}, grad_output.options());
  if (K == 0) return grad_bias;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_bgrad", [&] {
    const scalar_t* dy = grad_output.const_data_ptr<scalar_t>();
    const Strides4 s = strides_of(grad_output);
    scalar_t* db = grad_bias.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        scalar_t acc = 0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t out_h = 0; out_h < P; ++out_h)
            for (int64_t out_w = 0; out_w < Q; ++out_w) acc += dy[n * s.n + k * s.c + out_h * s.h + out_w * s.w];
        db[k] = acc;
      }
    });
  });
  return grad_bias;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("conv2d_fprop", &conv2d_fprop);
  m.impl("_conv2d_dgrad", &conv2d_dgrad);
  m.impl("_conv2d_wgrad", &conv2d_wgrad);
  m.impl("_conv2d_bgrad", &conv2d_bgrad);
}

}  // namespace fastconv::cpu
