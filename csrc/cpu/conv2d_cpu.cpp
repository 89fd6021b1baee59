// CPU registration of the conv2d ops: argument checks, output allocation and the algorithm choice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "conv2d_cpu.h"

#include <mutex>
#include <sstream>
#include <unordered_map>

namespace fastconv::cpu {

namespace {

const char* algorithm_name(Conv2dAlgorithm a) {
  switch (a) {
    case Conv2dAlgorithm::Auto: return "auto";
    case Conv2dAlgorithm::Direct: return "direct";
    case Conv2dAlgorithm::Im2col: return "im2col";
    case Conv2dAlgorithm::Im2colBlas: return "im2col_blas";
    case Conv2dAlgorithm::DirectSimple: return "direct_simple";
  }
  return "?";
}

// Whether algorithm "direct" runs a blocked kernel for this pass (else the simple loops).
bool blocked_applies(const Conv2dProblem& p, Conv2dPass pass, at::ScalarType dtype) {
  if (pass == Conv2dPass::Fprop) return direct_blocked_supported(p, dtype);
  return pass == Conv2dPass::Dgrad && direct_blocked_dgrad_supported(p, dtype);
}

struct Choice {
  Conv2dAlgorithm algorithm;
  std::string reason;
};

// The blocked dgrad beats im2col + GEMM + col2im on every standard 3x3 layer here (1.4-2.6x, 7x7 maps
// included); below 7x7 the padded copy and tile edges are most of the work.
constexpr int64_t kDgradDirectMinPixels = 7 * 7;

// THE heuristic of auto (the only copy; fastconv.explain() reports it through _C.conv2d_plan).
Choice choose_algorithm(const Conv2dProblem& p, Conv2dPass pass, at::ScalarType dtype, bool channels_last) {
  if (depthwise_supported(p, dtype))
    return {Conv2dAlgorithm::Direct,
            channels_last ? "depthwise (groups == C == K), float32/float64: depthwise direct kernel, channels_last "
                            "(8 channels per vector, in-bounds tap lists, no im2col)"
                          : "depthwise (groups == C == K), float32/float64: depthwise direct kernel, NCHW (one plane "
                            "at a time through a zero-padded buffer, output columns per vector, no im2col)"};
  (void)channels_last;
  if (p.K_per_group() < 4 || p.gemm_k() < 4)
    return {Conv2dAlgorithm::Im2col,
            "tiny groups (depthwise-like: K/groups < 4 or C/groups*R*S < 4): im2col with (image, group) pairs in "
            "parallel, each a small serial GEMM"};
  if (p.is_pointwise())
    return {Conv2dAlgorithm::Im2col, "1x1 stride 1 without padding: the input itself is the GEMM operand (no im2col)"};
  if (pass == Conv2dPass::Fprop && direct_blocked_supported(p, dtype) && direct_blocked_uses_avx2() &&
      p.K >= 16 && p.R * p.S > 1 && p.P * p.Q >= 64)
    return {Conv2dAlgorithm::Direct,
            "float32, groups 1, K >= 16, a spatial window and a map of >= 64 pixels: blocked direct kernel "
            "(6 pixels x 16 channels AVX2 tile over a padded NHWC copy, no column buffer)"};
  if (pass == Conv2dPass::Dgrad && direct_blocked_dgrad_supported(p, dtype) && direct_blocked_uses_avx2() &&
      p.C >= 16 && p.R * p.S > 1 && p.H * p.W >= kDgradDirectMinPixels)
    return {Conv2dAlgorithm::Direct,
            "float32, stride 1, groups 1, C >= 16, a spatial window and a map of >= 49 pixels: dgrad as a forward "
            "convolution of grad_output with the flipped filter, through the blocked direct kernel"};
  return {Conv2dAlgorithm::Im2col, pass == Conv2dPass::Fprop
                                       ? "row (channels_last) im2col + one packed GEMM over the batch (1x1 strided, "
                                         "small maps < 64 pixels, groups, float64, K < 16 or no AVX2)"
                                       : "backward passes: im2col + packed GEMM (deterministic, fixed reduction order)"};
}

std::mutex g_tuned_mutex;
std::unordered_map<std::string, std::string>& tuned_choices() {
  static std::unordered_map<std::string, std::string> choices;
  return choices;
}

std::string problem_key(const Conv2dProblem& p, Conv2dPass pass, at::ScalarType dtype, bool channels_last) {
  std::ostringstream o;
  o << (pass == Conv2dPass::Fprop ? "fprop" : pass == Conv2dPass::Dgrad ? "dgrad" : "wgrad") << "|N" << p.N << "C"
    << p.C << "H" << p.H << "W" << p.W << "|K" << p.K << "R" << p.R << "S" << p.S << "|P" << p.P << "Q" << p.Q
    << "|pad" << p.pad_h << "," << p.pad_w << "|stride" << p.stride_h << "," << p.stride_w << "|dil"
    << p.dilation_h << "," << p.dilation_w << "|g" << p.groups << "|padmode" << static_cast<int>(p.padding_mode)
    << "|" << c10::toString(dtype) << "|"
    << (channels_last ? "channels_last" : "nchw") << "|threads" << at::get_num_threads();
  return o.str();
}

int64_t workspace_for(const Conv2dProblem& p, Conv2dPass pass, Conv2dAlgorithm a, at::ScalarType dtype,
                      bool channels_last) {
  const int64_t elem = c10::elementSize(dtype == at::kHalf || dtype == at::kBFloat16 ? at::kFloat : dtype);
  if (a == Conv2dAlgorithm::Im2col || a == Conv2dAlgorithm::Im2colBlas)
    return im2col_workspace_bytes(p, pass, channels_last, elem);
  if (a == Conv2dAlgorithm::Direct && depthwise_supported(p, dtype))
    return depthwise_workspace_bytes(p, pass, channels_last, elem);
  if (a == Conv2dAlgorithm::Direct && blocked_applies(p, pass, dtype))
    return pass == Conv2dPass::Fprop ? direct_blocked_workspace_bytes(p) : direct_blocked_dgrad_workspace_bytes(p);
  return 0;
}

}  // namespace

Conv2dPlan plan_conv2d(const Conv2dProblem& p, Conv2dPass pass, at::ScalarType dtype, bool channels_last,
                       c10::string_view requested) {
  Conv2dPlan plan;
  plan.key = problem_key(p, pass, dtype, channels_last);
  plan.autotuned = false;
  const Conv2dAlgorithm asked = parse_conv2d_algorithm(requested);
  if (asked != Conv2dAlgorithm::Auto) {
    plan.algorithm = asked;
    plan.reason = "requested explicitly";
  } else {
    std::string tuned;
    {
      std::lock_guard<std::mutex> lock(g_tuned_mutex);
      auto it = tuned_choices().find(plan.key);
      if (it != tuned_choices().end()) tuned = it->second;
    }
    if (!tuned.empty()) {
      plan.algorithm = parse_conv2d_algorithm(tuned);
      plan.reason = "autotuner: fastest measured for this problem key";
      plan.autotuned = true;
    } else {
      Choice c = choose_algorithm(p, pass, dtype, channels_last);
      plan.algorithm = c.algorithm;
      plan.reason = "heuristic: " + c.reason;
    }
  }
  plan.name = algorithm_name(plan.algorithm);
  if ((plan.algorithm == Conv2dAlgorithm::Im2col || plan.algorithm == Conv2dAlgorithm::Im2colBlas) &&
      p.is_pointwise())
    plan.name += " (1x1 GEMM, no column buffer)";
  if (plan.algorithm == Conv2dAlgorithm::Direct && depthwise_supported(p, dtype))
    plan.name += " (depthwise kernel)";
  else if (plan.algorithm == Conv2dAlgorithm::Direct && !blocked_applies(p, pass, dtype))
    plan.name += " (simple loops: the blocked kernel does not apply)";
  plan.workspace_bytes = workspace_for(p, pass, plan.algorithm, dtype, channels_last);
  return plan;
}

void set_autotuned_choice(const std::string& key, const std::string& algorithm) {
  const Conv2dAlgorithm a = parse_conv2d_algorithm(algorithm);
  TORCH_CHECK_VALUE(a != Conv2dAlgorithm::Auto, "an autotuned choice must name an algorithm, not 'auto'");
  std::lock_guard<std::mutex> lock(g_tuned_mutex);
  tuned_choices()[key] = algorithm;
}

void clear_autotuned_choices() {
  std::lock_guard<std::mutex> lock(g_tuned_mutex);
  tuned_choices().clear();
}

namespace {

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

Conv2dAlgorithm choose(const Conv2dProblem& p, Conv2dPass pass, const at::Tensor& layout_of,
                       c10::string_view requested) {
  const Conv2dAlgorithm asked = parse_conv2d_algorithm(requested);
  if (asked != Conv2dAlgorithm::Auto) return asked;
  return plan_conv2d(p, pass, layout_of.scalar_type(), is_channels_last(layout_of), requested).algorithm;
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
  const Conv2dAlgorithm chosen = choose(p, Conv2dPass::Fprop, input, algorithm);
  at::Tensor output =
      new_output({p.N, p.K, p.P, p.Q}, input.options(), conv2d_output_memory_format(input, weight));
  if (output.numel() == 0) return output;
  if (chosen == Conv2dAlgorithm::Direct && depthwise_supported(p, input.scalar_type())) {
    conv2d_fprop_depthwise(p, input, weight, bias_tensor, output);
  } else if (chosen == Conv2dAlgorithm::Direct && direct_blocked_supported(p, input.scalar_type())) {
    conv2d_fprop_direct_blocked(p, input, weight, bias_tensor, output);
  } else if (chosen == Conv2dAlgorithm::Direct || chosen == Conv2dAlgorithm::DirectSimple) {
    conv2d_fprop_direct(p, input, weight, bias_tensor, output);
  } else {
    conv2d_fprop_im2col(p, input, weight, bias_tensor, output, chosen == Conv2dAlgorithm::Im2colBlas);
  }
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
  const Conv2dAlgorithm chosen = choose(p, Conv2dPass::Dgrad, grad_output, algorithm);
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, grad_output.options(),
                                     conv2d_output_memory_format(grad_output, weight));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor dy = gemm_friendly(grad_output);
  if (chosen == Conv2dAlgorithm::Direct && depthwise_supported(p, dy.scalar_type())) {
    conv2d_dgrad_depthwise(p, dy, weight, grad_input);
  } else if (chosen == Conv2dAlgorithm::Direct && direct_blocked_dgrad_supported(p, dy.scalar_type())) {
    conv2d_dgrad_direct_blocked(p, dy, weight, grad_input);
  } else if (chosen == Conv2dAlgorithm::Direct || chosen == Conv2dAlgorithm::DirectSimple) {
    conv2d_dgrad_direct(p, dy, weight, grad_input);
  } else {
    conv2d_dgrad_im2col(p, dy, weight, grad_input, chosen == Conv2dAlgorithm::Im2colBlas);
  }
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
  const Conv2dAlgorithm chosen = choose(p, Conv2dPass::Wgrad, input, algorithm);
  at::Tensor grad_weight = new_output({p.K, p.C_per_group(), p.R, p.S}, grad_output.options());
  if (grad_weight.numel() == 0) return grad_weight;
  const at::Tensor dy = gemm_friendly(grad_output);
  if (chosen == Conv2dAlgorithm::Direct && depthwise_supported(p, dy.scalar_type())) {
    conv2d_wgrad_depthwise(p, dy, input, grad_weight);
  } else if (chosen == Conv2dAlgorithm::Direct || chosen == Conv2dAlgorithm::DirectSimple) {
    conv2d_wgrad_direct(p, dy, input, grad_weight);
  } else {
    conv2d_wgrad_im2col(p, dy, input, grad_weight, chosen == Conv2dAlgorithm::Im2colBlas);
  }
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
