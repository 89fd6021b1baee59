// The CPU convolution algorithms. Each takes a validated problem and writes a pre-allocated output of
// any strides; conv2d_cpu.cpp checks arguments, allocates outputs and chooses the algorithm.
#pragma once

#include <ATen/core/Tensor.h>

#include "../ops_common.h"

namespace fastconv::cpu {

// Element strides of a 4-D tensor, named after the dimension they step.
struct Strides4 {
  int64_t n, c, h, w;
};
inline Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

void conv2d_fprop_direct(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output);
void conv2d_dgrad_direct(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                         at::Tensor& grad_input);
void conv2d_wgrad_direct(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                         at::Tensor& grad_weight);

// use_blas selects at::mm instead of fastconv's GEMM (a comparison point only).
void conv2d_fprop_im2col(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output, bool use_blas);
void conv2d_dgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                         at::Tensor& grad_input, bool use_blas);
void conv2d_wgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                         at::Tensor& grad_weight, bool use_blas);

}  // namespace fastconv::cpu
