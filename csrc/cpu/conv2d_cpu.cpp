// CPU registration of the conv2d ops: argument checks, output allocation and the algorithm choice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "conv2d_cpu.h"

namespace fastconv::cpu {

namespace {

// auto: im2col+GEMM spends its time in the GEMM and wins whenever there is a reduction to block;
// depthwise and other tiny-group problems have no GEMM worth the name, so the direct loops win.
Conv2dAlgorithm choose_algorithm(const Conv2dProblem& p, c10::string_view requested) {
  const Conv2dAlgorithm algorithm = parse_conv2d_algorithm(requested);
  if (algorithm != Conv2dAlgorithm::Auto) return algorithm;
  if (p.K_per_group() < 4 || p.gemm_k() < 4) return Conv2dAlgorithm::Direct;
  return Conv2dAlgorithm::Im2col;
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
                        c10::string_view algorithm) {
  check_conv2d_tensors("conv2d", input, "input", weight, "weight");
  if (is_reduced_precision(input)) {
    if (bias.has_value()) check_conv2d_tensors("conv2d", input, "input", *bias, "bias");
    return conv2d_fprop(input.to(at::kFloat), weight.to(at::kFloat), to_float(bias), stride, padding, dilation,
                        groups, algorithm)
        .to(input.scalar_type());
  }
  const Conv2dProblem p = make_conv2d_problem(input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  const at::Tensor bias_tensor = bias.has_value() ? *bias : at::Tensor();
  if (bias_tensor.defined()) check_conv2d_bias(p, input, bias_tensor);
  const Conv2dAlgorithm chosen = choose_algorithm(p, algorithm);
  at::Tensor output =
      new_output({p.N, p.K, p.P, p.Q}, input.options(), conv2d_output_memory_format(input, weight));
  if (output.numel() == 0) return output;
  if (chosen == Conv2dAlgorithm::Direct) {
    conv2d_fprop_direct(p, input, weight, bias_tensor, output);
  } else {
    conv2d_fprop_im2col(p, input, weight, bias_tensor, output, chosen == Conv2dAlgorithm::Im2colBlas);
  }
  return output;
}

at::Tensor conv2d_dgrad(const at::Tensor& grad_output, const at::Tensor& weight, c10::SymIntArrayRef input_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm) {
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", weight, "weight");
  if (is_reduced_precision(grad_output)) {
    return conv2d_dgrad(grad_output.to(at::kFloat), weight.to(at::kFloat), input_size, stride, padding, dilation,
                        groups, algorithm)
        .to(grad_output.scalar_type());
  }
  const Conv2dProblem p = make_conv2d_problem(C10_AS_INTARRAYREF_SLOW(input_size), weight.sizes(), stride,
                                              padding, dilation, groups);
  check_conv2d_grad_output(p, grad_output);
  const Conv2dAlgorithm chosen = choose_algorithm(p, algorithm);
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, grad_output.options(),
                                     conv2d_output_memory_format(grad_output, weight));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor dy = gemm_friendly(grad_output);
  if (chosen == Conv2dAlgorithm::Direct) {
    conv2d_dgrad_direct(p, dy, weight, grad_input);
  } else {
    conv2d_dgrad_im2col(p, dy, weight, grad_input, chosen == Conv2dAlgorithm::Im2colBlas);
  }
  return grad_input;
}

at::Tensor conv2d_wgrad(const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        c10::string_view algorithm) {
  check_conv2d_tensors("conv2d backward", grad_output, "grad_output", input, "input");
  if (is_reduced_precision(grad_output)) {
    return conv2d_wgrad(grad_output.to(at::kFloat), input.to(at::kFloat), weight_size, stride, padding, dilation,
                        groups, algorithm)
        .to(grad_output.scalar_type());
  }
  const Conv2dProblem p = make_conv2d_problem(input.sizes(), C10_AS_INTARRAYREF_SLOW(weight_size), stride,
                                              padding, dilation, groups);
  check_conv2d_grad_output(p, grad_output);
  const Conv2dAlgorithm chosen = choose_algorithm(p, algorithm);
  at::Tensor grad_weight = new_output({p.K, p.C_per_group(), p.R, p.S}, grad_output.options());
  if (grad_weight.numel() == 0) return grad_weight;
  const at::Tensor dy = gemm_friendly(grad_output);
  if (chosen == Conv2dAlgorithm::Direct) {
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
