// The CPU convolution algorithms. Each takes a validated problem and writes a pre-allocated output of
// any strides; conv2d_cpu.cpp checks arguments, allocates outputs and chooses the algorithm.
#pragma once

#include <ATen/core/Tensor.h>

#include "../ops_common.h"

namespace fastconv::cpu {

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

// The blocked direct forward (conv2d_direct_blocked.cpp): float32, groups == 1.
bool direct_blocked_supported(const Conv2dProblem& p, at::ScalarType dtype);
bool direct_blocked_uses_avx2();
int64_t direct_blocked_workspace_bytes(const Conv2dProblem& p);
void conv2d_fprop_direct_blocked(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, at::Tensor& output, bool force_portable = false);
// dgrad through the blocked forward (stride 1, groups 1, zero padding no wider than the window reaches).
bool direct_blocked_dgrad_supported(const Conv2dProblem& p, at::ScalarType dtype);
int64_t direct_blocked_dgrad_workspace_bytes(const Conv2dProblem& p);
void conv2d_dgrad_direct_blocked(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::Tensor& grad_input);

// Bytes of column buffer the im2col path allocates for this pass (0 for the 1x1 GEMM).
int64_t im2col_workspace_bytes(const Conv2dProblem& p, Conv2dOperator pass, bool channels_last, int64_t elem_size);

// Depthwise convolution (conv2d_depthwise.cpp): groups == C == K, float32 / float64, every pass. The one
// predicate of when it runs under algorithm "direct" (and what auto picks for depthwise problems).
bool depthwise_supported(const Conv2dProblem& p, at::ScalarType dtype);
bool depthwise_uses_avx2();
void set_depthwise_force_portable(bool force);  // tests: run the portable float32 path on an AVX2 CPU
int64_t depthwise_workspace_bytes(const Conv2dProblem& p, Conv2dOperator pass, bool channels_last, int64_t elem_size);
void conv2d_fprop_depthwise(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output);
void conv2d_dgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::Tensor& grad_input);
void conv2d_wgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                            at::Tensor& grad_weight);

}  // namespace fastconv::cpu
