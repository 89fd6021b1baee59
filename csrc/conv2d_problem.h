// The conv2d problem: sizes, output size and validation, computed in exactly one place
// (make_conv2d_problem) and used by every backend and every pass (fprop, dgrad, wgrad).
// Names follow CUTLASS: input N,C,H,W; filter K,C/groups,R,S; output N,K,P,Q.
#pragma once

#include <cstdint>

#ifndef FASTCONV_HD
#if defined(__CUDACC__)
#define FASTCONV_HD __host__ __device__
#else
#define FASTCONV_HD
#endif
#endif

namespace fastconv {

// Plain data so it can be passed by value to CUDA kernels and to the emulator.
struct Conv2dProblem {
  int64_t N, C, H, W;           // input
  int64_t K, R, S;              // filter: K output channels, R x S window
  int64_t P, Q;                 // output height and width
  int64_t pad_h, pad_w;         // top and left padding; bottom/right padding only shows in P and Q
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  FASTCONV_HD int64_t C_per_group() const { return C / groups; }
  FASTCONV_HD int64_t K_per_group() const { return K / groups; }
  // The implicit-GEMM reduction length of fprop (and of one im2col column): C/groups * R * S.
  FASTCONV_HD int64_t gemm_k() const { return C_per_group() * R * S; }
  FASTCONV_HD int64_t input_numel() const { return N * C * H * W; }
  FASTCONV_HD int64_t output_numel() const { return N * K * P * Q; }
  FASTCONV_HD int64_t weight_numel() const { return K * C_per_group() * R * S; }
  // Multiply-adds of fprop; dgrad and wgrad do the same number.
  FASTCONV_HD int64_t macs() const { return N * K * P * Q * gemm_k(); }

  // The backward gathers: the output row whose window puts tap r on input row h, or -1 when no
  // window does (h + pad - r * dilation must be a non-negative multiple of the stride below P * stride).
  FASTCONV_HD int64_t output_row_of_tap(int64_t h, int64_t r) const {
    return output_of_tap(h + pad_h - r * dilation_h, stride_h, P);
  }
  FASTCONV_HD int64_t output_col_of_tap(int64_t w, int64_t s) const {
    return output_of_tap(w + pad_w - s * dilation_w, stride_w, Q);
  }

 private:
  FASTCONV_HD static int64_t output_of_tap(int64_t offset, int64_t stride, int64_t extent) {
    if (offset < 0 || offset % stride != 0 || offset / stride >= extent) return -1;
    return offset / stride;
  }
};

// Pooling problem: same vocabulary, R x S is the pooling window, C channels pooled independently.
struct Pool2dProblem {
  int64_t N, C, H, W;
  int64_t R, S;
  int64_t P, Q;
  int64_t pad_h, pad_w;
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  bool ceil_mode;
};

// Direct: the blocked direct kernel where it applies (float32, groups == 1), else the simple loops;
// DirectSimple: always the simple strided loops (the always-correct fallback).
enum class Conv2dAlgorithm { Auto, Direct, Im2col, Im2colBlas, DirectSimple };

}  // namespace fastconv

