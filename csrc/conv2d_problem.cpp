// make_conv2d_problem and make_pool2d_problem: the single place where a call's sizes are checked and
// its output size derived. Messages follow PyTorch's for the same mistakes and name the argument.
#include "ops_common.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <atomic>
#include <limits>

namespace fastconv {

namespace {

std::atomic<bool> g_poison_outputs{false};

void check_pair(const char* name, c10::IntArrayRef values) {
  TORCH_CHECK(values.size() == 2, "expected ", name,
              " to be a single integer value or a list of 2 values to match the convolution dimensions, but got ",
              name, "=", values);
}

PaddingMode parse_padding_mode(c10::string_view mode) {
  if (mode == "zeros") return PaddingMode::Zeros;
  if (mode == "reflect") return PaddingMode::Reflect;
  if (mode == "replicate") return PaddingMode::Replicate;
  if (mode == "circular") return PaddingMode::Circular;
  TORCH_CHECK_VALUE(false,
                    "padding_mode must be one of {'zeros', 'reflect', 'replicate', 'circular'}, but got padding_mode='",
                    std::string(mode), "'");
}

// The limits torch.nn.functional.pad puts on each mode, so a padded coordinate maps into the input after
// one reflection or one wrap (Conv2dProblem::source_row relies on it).
void check_padding_fits(PaddingMode mode, c10::string_view mode_name, c10::IntArrayRef input_size,
                        const int64_t (&pads)[4]) {
  if (mode == PaddingMode::Zeros) return;
  TORCH_CHECK(input_size[1] > 0 && input_size[2] > 0 && input_size[3] > 0, "padding_mode='", std::string(mode_name),
              "' expects an input with non-zero channels, height and width, but got input of size: ", input_size);
  for (int d = 0; d < 2; ++d) {
    const int64_t extent = input_size[2 + d], before = pads[2 * d], after = pads[2 * d + 1];
    if (mode == PaddingMode::Reflect) {
      TORCH_CHECK(before < extent && after < extent, "padding_mode='reflect': padding (", before, ", ", after,
                  ") should be less than the corresponding input dimension, but got input of size ", input_size,
                  " at dimension ", 2 + d);
    } else if (mode == PaddingMode::Circular) {
      TORCH_CHECK(before <= extent && after <= extent, "padding_mode='circular': padding (", before, ", ", after,
                  ") causes wrapping around more than once for input of size ", input_size, " at dimension ",
                  2 + d);
    }
  }
}

}  // namespace

Conv2dProblem make_conv2d_problem(c10::IntArrayRef input_size, c10::IntArrayRef weight_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, int64_t groups, c10::string_view padding_mode) {
  TORCH_CHECK(input_size.size() == 4,
              "Expected 4D (batched) input to conv2d, but got input of size: ", input_size);
  TORCH_CHECK(weight_size.size() == 4,
              "Expected 4D weight (out_channels, in_channels/groups, kH, kW) for conv2d, but got weight of size: ",
              weight_size);
  check_pair("stride", stride);
  check_pair("dilation", dilation);
  TORCH_CHECK(padding.size() == 2 || padding.size() == 4,
              "expected padding to be 2 values (pad_h, pad_w) or 4 values (top, bottom, left, right), but got padding=",
              padding);
  for (int64_t s : stride) TORCH_CHECK(s > 0, "non-positive stride is not supported, but got stride=", stride);
  for (int64_t d : dilation)
    TORCH_CHECK(d > 0, "non-positive dilation is not supported, but got dilation=", dilation);
  for (int64_t q : padding) TORCH_CHECK(q >= 0, "negative padding is not supported, but got padding=", padding);
  const PaddingMode mode = parse_padding_mode(padding_mode);
  TORCH_CHECK(groups > 0, "non-positive groups is not supported, but got groups=", groups);
  for (int64_t s : input_size) TORCH_CHECK(s >= 0, "input sizes must be non-negative, but got ", input_size);
  for (int64_t s : weight_size) TORCH_CHECK(s >= 0, "weight sizes must be non-negative, but got ", weight_size);

  Conv2dProblem p{};
  p.N = input_size[0];
  p.C = input_size[1];
  p.H = input_size[2];
  p.W = input_size[3];
  p.K = weight_size[0];
  p.R = weight_size[2];
  p.S = weight_size[3];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  p.groups = groups;
  p.padding_mode = mode;
  const bool symmetric = padding.size() == 2;
  p.pad_h = padding[0];
  p.pad_w = symmetric ? padding[1] : padding[2];
  const int64_t pad_bottom = symmetric ? padding[0] : padding[1];
  const int64_t pad_right = symmetric ? padding[1] : padding[3];

  TORCH_CHECK(p.K >= 1, "Given groups=", groups, ", expected weight to be at least 1 at dimension 0, but got weight of size ",
              weight_size, " instead");
  TORCH_CHECK(p.K % groups == 0, "Given groups=", groups, ", expected weight to be divisible by ", groups,
              " at dimension 0, but got weight of size ", weight_size, " instead");
  TORCH_CHECK(p.C == weight_size[1] * groups, "Given groups=", groups, ", weight of size ", weight_size,
              ", expected input", input_size, " to have ", weight_size[1] * groups, " channels, but got ", p.C,
              " channels instead");
  TORCH_CHECK(p.R > 0 && p.S > 0, "expected a non-empty kernel, but got weight of size ", weight_size);

  const int64_t pads[4] = {p.pad_h, pad_bottom, p.pad_w, pad_right};
  check_padding_fits(mode, padding_mode, input_size, pads);

  const int64_t padded_h = p.H + p.pad_h + pad_bottom;
  const int64_t padded_w = p.W + p.pad_w + pad_right;
  const int64_t dilated_r = p.dilation_h * (p.R - 1) + 1;
  const int64_t dilated_s = p.dilation_w * (p.S - 1) + 1;
  TORCH_CHECK(padded_h >= dilated_r && padded_w >= dilated_s, "Calculated padded input size per channel: (",
              padded_h, " x ", padded_w, "). Kernel size: (", dilated_r, " x ", dilated_s,
              "). Kernel size can't be greater than actual input size");
  p.P = (padded_h - dilated_r) / p.stride_h + 1;
  p.Q = (padded_w - dilated_s) / p.stride_w + 1;
  return p;
}

void check_conv2d_tensors(const char* op, const at::Tensor& first, const char* first_name,
                          const at::Tensor& second, const char* second_name) {
  TORCH_CHECK(first.device() == second.device(), op, ": expected ", first_name, " and ", second_name,
              " to be on the same device, but got ", first_name, " on ", first.device(), " and ", second_name,
              " on ", second.device());
  TORCH_CHECK(first.scalar_type() == second.scalar_type(), op, ": expected ", first_name, " and ", second_name,
              " to have the same dtype, but got ", first_name, " of dtype ", first.scalar_type(), " and ",
              second_name, " of dtype ", second.scalar_type());
  TORCH_CHECK(at::isFloatingType(first.scalar_type()), op, ": expected floating point ", first_name,
              " and ", second_name, ", but got dtype ", first.scalar_type());
}

void check_conv2d_bias(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& bias) {
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == p.K, "Given weight with ", p.K,
              " output channels, expected bias to be 1-dimensional with ", p.K,
              " elements, but got bias of size ", bias.sizes(), " instead");
  check_conv2d_tensors("conv2d", input, "input", bias, "bias");
}

void check_conv2d_grad_output(const Conv2dProblem& p, const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.N && grad_output.size(1) == p.K &&
                  grad_output.size(2) == p.P && grad_output.size(3) == p.Q,
              "expected grad_output of size [", p.N, ", ", p.K, ", ", p.P, ", ", p.Q, "], but got ",
              grad_output.sizes());
}

Conv2dAlgorithm parse_conv2d_algorithm(c10::string_view algorithm) {
  if (algorithm == "auto") return Conv2dAlgorithm::Auto;
  if (algorithm == "direct") return Conv2dAlgorithm::Direct;
  if (algorithm == "im2col") return Conv2dAlgorithm::Im2col;
  if (algorithm == "im2col_blas") return Conv2dAlgorithm::Im2colBlas;
  if (algorithm == "direct_simple") return Conv2dAlgorithm::DirectSimple;
  TORCH_CHECK_VALUE(false, "algorithm must be one of 'auto', 'direct', 'im2col', 'im2col_blas', 'direct_simple', but got '",
                    std::string(algorithm), "'");
}

at::MemoryFormat conv2d_output_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

namespace {

// PyTorch's pooling output size, ceil_mode included: a last window may not start inside the right padding.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode) {
  const int64_t numerator = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // Floor division: the numerator can be negative when the window does not fit.
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

}  // namespace

Pool2dProblem make_pool2d_problem(c10::IntArrayRef input_size, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK(input_size.size() == 4, "Expected 4D (batched) input to max_pool2d, but got input of size: ",
              input_size);
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "max_pool2d: expected kernel_size, stride, padding and dilation of 2 values each, but got "
              "kernel_size=", kernel_size, ", stride=", stride, ", padding=", padding, ", dilation=", dilation);
  // PyTorch's checks, in its order and words, so a mistake reads the same as under
  // torch.nn.functional.max_pool2d: per axis (H, then W) while it derives the output size, then the whole
  // call. Its kernel size 0 (stride defaulting to it) therefore reports "stride should not be zero".
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK(stride[d] != 0, "stride should not be zero");
    TORCH_CHECK(padding[d] >= 0, "pad must be non-negative, but got pad: ", padding[d]);
    TORCH_CHECK(padding[d] <= ((kernel_size[d] - 1) * dilation[d] + 1) / 2,
                "pad should be at most half of effective kernel size, but got pad=", padding[d],
                ", kernel_size=", kernel_size[d], " and dilation=", dilation[d]);
  }
  TORCH_CHECK(kernel_size[0] > 0 && kernel_size[1] > 0, "kernel size should be greater than zero, but got kH: ",
              kernel_size[0], " kW: ", kernel_size[1]);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, "stride should be greater than zero, but got dH: ", stride[0],
              " dW: ", stride[1]);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, "dilation should be greater than zero, but got dilationH: ",
              dilation[0], " dilationW: ", dilation[1]);
  // Only the batch may be empty. An unbatched input reaches here with a batch of 1 prepended, so its
  // sizes print as 4-D.
  TORCH_CHECK(input_size[1] > 0 && input_size[2] > 0 && input_size[3] > 0,
              "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:", input_size);
  // Besides the dilated window above, PyTorch bounds the padding by half the kernel size itself.
  TORCH_CHECK(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2,
              "pad should be smaller than or equal to half of kernel size, but got padW = ", padding[1],
              ", padH = ", padding[0], ", kW = ", kernel_size[1], ", kH = ", kernel_size[0]);
  TORCH_CHECK(input_size[0] >= 0, "max_pool2d: negative batch size in input of size ", input_size);

  Pool2dProblem p{};
  p.N = input_size[0];
  p.C = input_size[1];
  p.H = input_size[2];
  p.W = input_size[3];
  p.R = kernel_size[0];
  p.S = kernel_size[1];
  p.pad_h = padding[0];
  p.pad_w = padding[1];
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.dilation_h = dilation[0];
  p.dilation_w = dilation[1];
  p.ceil_mode = ceil_mode;
  p.P = pooled_size(p.H, p.R, p.pad_h, p.stride_h, p.dilation_h, ceil_mode);
  p.Q = pooled_size(p.W, p.S, p.pad_w, p.stride_w, p.dilation_w, ceil_mode);
  TORCH_CHECK(p.P >= 1 && p.Q >= 1, "Given input size: (", p.C, "x", p.H, "x", p.W,
              "). Calculated output size: (", p.C, "x", p.P, "x", p.Q, "). Output size is too small");
  return p;
}

void check_taps_fit_byte(const char* op, const Pool2dProblem& p) {
  TORCH_CHECK(p.taps_fit_byte(), op, ": the taps form records an argmax in one byte, for windows of at most ",
              Pool2dProblem::kMaxByteTaps, " taps (R * S), but got kernel_size=[", p.R, ", ", p.S,
              "]; use max_pool2d_fprop's int64 indices");
}

void check_pool2d_bprop_tensors(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& argmax, const char* argmax_name, at::ScalarType argmax_dtype,
                                const Pool2dProblem& p) {
  TORCH_CHECK(grad_output.device() == input.device() && argmax.device() == input.device(), op,
              ": expected grad_output, input and ", argmax_name, " on one device, but got ", grad_output.device(),
              ", ", input.device(), " and ", argmax.device());
  // Integer max_pool2d is forward only: an integer tensor cannot require grad, so it has no gradient.
  TORCH_CHECK(at::isFloatingType(grad_output.scalar_type()), op,
              ": expected a floating point grad_output (integer max_pool2d has no backward), but got dtype ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op, ": expected grad_output of the input's dtype ",
              input.scalar_type(), ", but got ", grad_output.scalar_type());
  TORCH_CHECK(argmax.scalar_type() == argmax_dtype, op, ": expected ", argmax_dtype == at::kByte ? "uint8 " : "int64 ",
              argmax_name, ", but got ", argmax.scalar_type());
  const int64_t out_size_data[4] = {p.N, p.C, p.P, p.Q};
  const c10::IntArrayRef out_size(out_size_data);
  TORCH_CHECK(grad_output.sizes() == out_size && argmax.sizes() == out_size, op, ": expected grad_output and ",
              argmax_name, " of size ", out_size, ", but got ", grad_output.sizes(), " and ", argmax.sizes());
}

void check_pool2d_input(const at::Tensor& input) {
  // The types the forward kernels are instantiated for (AT_DISPATCH_ALL_TYPES_AND2(Half, BFloat16)), which
  // are PyTorch's; anything else is refused in PyTorch's words, as its NotImplementedError.
  const at::ScalarType t = input.scalar_type();
  const bool supported = t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16 ||
                         t == at::kByte || t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong;
  TORCH_CHECK_NOT_IMPLEMENTED(supported, "\"max_pool2d\" not implemented for '", t, "'");
}

void set_poison_outputs(bool enabled) { g_poison_outputs.store(enabled); }
bool poison_outputs() { return g_poison_outputs.load(); }

at::Tensor new_output(c10::IntArrayRef sizes, const at::TensorOptions& options, at::MemoryFormat memory_format) {
  at::Tensor out = at::empty(sizes, options.memory_format(memory_format));
  if (poison_outputs() && out.numel() > 0) {
    if (at::isFloatingType(out.scalar_type())) {
      out.fill_(std::numeric_limits<double>::quiet_NaN());
    } else {
      // Integers hold no NaN: their type's max(), which is no int64 index, no tap of a window under 256
      // taps, and an integer max_pool2d value only where the input holds it (lowest(), the padding, is
      // what a window wholly in the padding rightly outputs, so it would hide a forgotten element there).
      AT_DISPATCH_INTEGRAL_TYPES(out.scalar_type(), "new_output", [&] {
        out.fill_(std::numeric_limits<scalar_t>::max());
      });
    }
  }
  return out;
}

}  // namespace fastconv
