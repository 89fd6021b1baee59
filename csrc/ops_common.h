// Host-side (torch) half of the conv2d problem: building and validating a Conv2dProblem from a call's
// arguments, the tensor checks every backend shares, and output allocation.
#pragma once

#include "conv2d_problem.h"

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace fastconv {

// Validates sizes and hyper-parameters (messages name the argument, as PyTorch's do) and derives P, Q.
// padding is (pad_h, pad_w) or (pad_top, pad_bottom, pad_left, pad_right); padding_mode is
// torch.nn.Conv2d's: zeros | reflect | replicate | circular.
Conv2dProblem make_conv2d_problem(c10::IntArrayRef input_size, c10::IntArrayRef weight_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, int64_t groups, c10::string_view padding_mode);

// Tensor-level checks shared by every backend: floating dtypes that agree, one device.
void check_conv2d_tensors(const char* op, const at::Tensor& first, const char* first_name,
                          const at::Tensor& second, const char* second_name);
void check_conv2d_bias(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& bias);
void check_conv2d_grad_output(const Conv2dProblem& p, const at::Tensor& grad_output);

Conv2dAlgorithm parse_conv2d_algorithm(c10::string_view algorithm);

// PyTorch's rule: the output is channels_last when the input or the weight is.
at::MemoryFormat conv2d_output_memory_format(const at::Tensor& input, const at::Tensor& weight);

Pool2dProblem make_pool2d_problem(c10::IntArrayRef input_size, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  c10::IntArrayRef dilation, bool ceil_mode);
// The forward's dtypes: floating and integer as PyTorch's max_pool2d (bool and the like raise its
// NotImplementedError). The backward takes floating types only (check_pool2d_bprop_tensors).
void check_pool2d_input(const at::Tensor& input);
// The taps ops (_max_pool2d_fprop_taps/_bprop_taps) need R * S <= 256.
void check_taps_fit_byte(const char* op, const Pool2dProblem& p);
// The pooling backward's tensor checks, shared by every backend (each checks its device type first):
// a floating point grad_output of the input's dtype, the argmax (argmax_name: "indices" or "taps") of its
// form's dtype, all on one device, grad_output and the argmax of p's output size.
void check_pool2d_bprop_tensors(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& argmax, const char* argmax_name, at::ScalarType argmax_dtype,
                                const Pool2dProblem& p);

// Every kernel output is allocated here: when poisoning is on (tests), floating outputs are filled
// with NaN and integer outputs (indices, taps, integer pooled values) with their type's max(), so an
// element a kernel forgot to write shows up.
at::Tensor new_output(c10::IntArrayRef sizes, const at::TensorOptions& options,
                      at::MemoryFormat memory_format = at::MemoryFormat::Contiguous);
void set_poison_outputs(bool enabled);
bool poison_outputs();

}  // namespace fastconv
