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

// What a convolution reads outside the input: torch.nn.Conv2d's padding_mode. The kernels map every
// padded coordinate to the input element it reads (Conv2dProblem::source_row/col), so no padded copy
// of the input is made, and the backward gathers from every padded coordinate that read an element
// (Conv2dProblem::readers_of_row/col).
enum class PaddingMode : int32_t { Zeros = 0, Reflect = 1, Replicate = 2, Circular = 3 };

// The padded coordinates that read one input coordinate: a run first..last (empty when first > last)
// and up to two more (the mirror images of reflect, the wrapped copies of circular), distinct.
struct PaddedReaders {
  int64_t first, last;
  int64_t extra[2];
  int64_t extra_count;

  FASTCONV_HD int64_t count() const { return last - first + 1 + extra_count; }
  FASTCONV_HD int64_t operator[](int64_t i) const {
    const int64_t run = last - first + 1;
    return i < run ? first + i : extra[i - run];
  }
};

// Element strides of a 4-D tensor (any layout: NCHW, channels_last, sliced), named after the dimension
// they step; every backend's kernels take their operands this way.
struct Strides4 {
  int64_t n, c, h, w;
};

// Plain data so it can be passed by value to CUDA kernels and to the emulator.
struct Conv2dProblem {
  int64_t N, C, H, W;           // input
  int64_t K, R, S;              // filter: K output channels, R x S window
  int64_t P, Q;                 // output height and width
  int64_t pad_h, pad_w;         // top and left padding; bottom/right padding only shows in P and Q
  int64_t stride_h, stride_w;
  int64_t dilation_h, dilation_w;
  int64_t groups;
  PaddingMode padding_mode;

  FASTCONV_HD int64_t C_per_group() const { return C / groups; }
  FASTCONV_HD int64_t K_per_group() const { return K / groups; }
  // The implicit-GEMM reduction length of fprop (and of one im2col column): C/groups * R * S.
  FASTCONV_HD int64_t gemm_k() const { return C_per_group() * R * S; }
  FASTCONV_HD int64_t input_numel() const { return N * C * H * W; }
  FASTCONV_HD int64_t output_numel() const { return N * K * P * Q; }
  FASTCONV_HD int64_t weight_numel() const { return K * C_per_group() * R * S; }
  // Multiply-adds of fprop; dgrad and wgrad do the same number.
  FASTCONV_HD int64_t macs() const { return N * K * P * Q * gemm_k(); }

  // A 1x1, stride-1, unpadded convolution: the input itself is the GEMM operand, no im2col.
  FASTCONV_HD bool is_pointwise() const {
    return R == 1 && S == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0 && P == H && Q == W;
  }

  // The input row that padded row h reads (h < 0 or h >= H lies in the padding), or -1 for a zero.
  FASTCONV_HD int64_t source_row(int64_t h) const { return source_of(h, H, padding_mode); }
  FASTCONV_HD int64_t source_col(int64_t w) const { return source_of(w, W, padding_mode); }
  // The input row (column) that tap r (s) of output row out_h (column out_w) reads, or -1 for a zero.
  FASTCONV_HD int64_t input_row(int64_t out_h, int64_t r) const {
    return source_row(out_h * stride_h - pad_h + r * dilation_h);
  }
  FASTCONV_HD int64_t input_col(int64_t out_w, int64_t s) const {
    return source_col(out_w * stride_w - pad_w + s * dilation_w);
  }

  // The pieces of for_each_reader. readers_of_row(h): the padded rows whose value is input row h (h
  // itself, and for reflect/replicate/circular its images in the padding); output_row_of_tap(hp, r): the
  // output row whose window puts tap r on padded row hp, or -1 when no window does (hp + pad - r * dilation
  // must be a non-negative multiple of the stride below P * stride). Padded rows no window reads drop out.
  FASTCONV_HD PaddedReaders readers_of_row(int64_t h) const {
    return readers_of(h, H, -pad_h, (P - 1) * stride_h - pad_h + (R - 1) * dilation_h, padding_mode);
  }
  FASTCONV_HD PaddedReaders readers_of_col(int64_t w) const {
    return readers_of(w, W, -pad_w, (Q - 1) * stride_w - pad_w + (S - 1) * dilation_w, padding_mode);
  }
  FASTCONV_HD int64_t output_row_of_tap(int64_t h, int64_t r) const {
    return output_of_tap(h + pad_h - r * dilation_h, stride_h, P);
  }
  FASTCONV_HD int64_t output_col_of_tap(int64_t w, int64_t s) const {
    return output_of_tap(w + pad_w - s * dilation_w, stride_w, Q);
  }
  // The backward gathers' loop: visit(r, s, out_h, out_w) for every tap (r, s) of every output whose
  // window reads input pixel (h, w), directly or through the padding, in one fixed order (row readers,
  // r, column readers, s) so every gather sums in the same order. With zero padding that is (r, s).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
  template <typename Visit>
  FASTCONV_HD void for_each_reader(int64_t h, int64_t w, Visit&& visit) const {
    const PaddedReaders rows = readers_of_row(h), cols = readers_of_col(w);
    for (int64_t i = 0; i < rows.count(); ++i) {
      for (int64_t r = 0; r < R; ++r) {
        const int64_t out_h = output_row_of_tap(rows[i], r);
        if (out_h < 0) continue;
        for (int64_t j = 0; j < cols.count(); ++j) {
          for (int64_t s = 0; s < S; ++s) {
            const int64_t out_w = output_col_of_tap(cols[j], s);
            if (out_w >= 0) visit(r, s, out_h, out_w);
          }
        }
      }
    }
  }

 private:
  FASTCONV_HD static int64_t output_of_tap(int64_t offset, int64_t stride, int64_t extent) {
    if (offset < 0 || offset % stride != 0 || offset / stride >= extent) return -1;
    return offset / stride;
  }
  // make_conv2d_problem guarantees the padding never wraps twice (reflect pads < extent, circular pads
  // <= extent), so one reflection or one wrap lands inside for every coordinate a window reads; a
  // coordinate beyond that (a tile's halo past the last window) reads nothing rather than out of bounds.
  FASTCONV_HD static int64_t source_of(int64_t x, int64_t extent, PaddingMode mode) {
    if (x >= 0 && x < extent) return x;
    int64_t source = -1;
    switch (mode) {
      case PaddingMode::Reflect: source = x < 0 ? -x : 2 * (extent - 1) - x; break;
      case PaddingMode::Replicate: source = x < 0 ? 0 : extent - 1; break;
      case PaddingMode::Circular: source = x < 0 ? x + extent : x - extent; break;
      default: break;
    }
    return source >= 0 && source < extent ? source : -1;
  }
  // first_read/last_read: the lowest and highest padded coordinates any window reads.
  FASTCONV_HD static PaddedReaders readers_of(int64_t x, int64_t extent, int64_t first_read, int64_t last_read,
                                              PaddingMode mode) {
    PaddedReaders readers{x, x, {0, 0}, 0};
    switch (mode) {
      case PaddingMode::Reflect:
        if (x > 0) readers.extra[readers.extra_count++] = -x;
        if (x < extent - 1) readers.extra[readers.extra_count++] = 2 * (extent - 1) - x;
        break;
      case PaddingMode::Replicate:
        if (x == 0 && first_read < 0) readers.first = first_read;
        if (x == extent - 1 && last_read > x) readers.last = last_read;
        break;
      case PaddingMode::Circular:
        readers.extra[readers.extra_count++] = x - extent;
        readers.extra[readers.extra_count++] = x + extent;
        break;
      default: break;
    }
    return readers;
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

  // The taps form of an argmax: its place r * S + s in the window of output (p, q), one byte. A window
  // with no tap inside the input records tap 0, whose position is then outside the input too, so the
  // backward drops its gradient exactly as it drops PyTorch's past-the-plane index.
  static constexpr int64_t kMaxByteTaps = 256;
  FASTCONV_HD bool taps_fit_byte() const { return R * S <= kMaxByteTaps; }
  FASTCONV_HD int64_t tap_row(int64_t p, int64_t tap) const { return p * stride_h - pad_h + tap / S * dilation_h; }
  FASTCONV_HD int64_t tap_col(int64_t q, int64_t tap) const { return q * stride_w - pad_w + tap % S * dilation_w; }
};

// The three passes of a convolution, CUTLASS's conv::Operator: fprop (output from input), dgrad (input
// gradient from output gradient), wgrad (weight gradient).
enum class Conv2dOperator { Fprop, Dgrad, Wgrad };

// The implicit-GEMM view of one pass, per group: C[M, N] = A[M, K] . B[K, N]. Every GEMM caller (CPU
// im2col, the CUDA host) takes its sizes from here; a caller working per image divides M by the batch.
struct GemmShape {
  int64_t M, N, K;
};
FASTCONV_HD inline GemmShape implicit_gemm(const Conv2dProblem& p, Conv2dOperator op) {
  switch (op) {
    case Conv2dOperator::Dgrad: return {p.N * p.H * p.W, p.C_per_group(), p.K_per_group() * p.R * p.S};
    case Conv2dOperator::Wgrad: return {p.K_per_group(), p.C_per_group() * p.R * p.S, p.N * p.P * p.Q};
    default: return {p.N * p.P * p.Q, p.K_per_group(), p.C_per_group() * p.R * p.S};
  }
}

// Direct: the blocked direct kernel where it applies (float32, groups == 1), else the simple loops;
// DirectSimple: always the simple strided loops (the always-correct fallback).
enum class Conv2dAlgorithm { Auto, Direct, Im2col, Im2colBlas, DirectSimple };

}  // namespace fastconv

