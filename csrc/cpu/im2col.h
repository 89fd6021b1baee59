// im2col and its gather-style inverse, torch-free so the C++ tests can check them directly.
// A column matrix holds, for one image and one group, col[(c * R + r) * S + s][p * Q + q]
// = x[c, input_row(p, r), input_col(q, s)]: the input at p * stride_h - pad_h + r * dilation_h,
// q * stride_w - pad_w + s * dilation_w, or what the padding mode puts there (0, a reflection, ...).
#pragma once

#include <cstdint>

#include "../conv2d_problem.h"

namespace fastconv::cpu {

// x points at channel 0 of this image's group; strides are in elements, so any layout works.
template <typename T>
void im2col(const Conv2dProblem& p, const T* x, int64_t x_stride_c, int64_t x_stride_h, int64_t x_stride_w,
            T* col) {
  const int64_t PQ = p.P * p.Q;
  for (int64_t c = 0; c < p.C_per_group(); ++c) {
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        T* row = col + ((c * p.R + r) * p.S + s) * PQ;
        for (int64_t out_h = 0; out_h < p.P; ++out_h) {
          const int64_t h = p.input_row(out_h, r);
          T* dst = row + out_h * p.Q;
          if (h < 0) {
            for (int64_t out_w = 0; out_w < p.Q; ++out_w) dst[out_w] = T(0);
            continue;
          }
          const T* src = x + c * x_stride_c + h * x_stride_h;
          for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
            const int64_t w = p.input_col(out_w, s);
            dst[out_w] = w >= 0 ? src[w * x_stride_w] : T(0);
          }
        }
      }
    }
  }
}

// The inverse as a gather: each input element sums the column entries that came from it (through the
// padding too: Conv2dProblem::for_each_reader), in a fixed order, and is written exactly once. No scatter, so no
// races and the same bits every run.
// x points at channel 0 of this image's group.
template <typename T>
void col2im_gather(const Conv2dProblem& p, const T* col, T* x, int64_t x_stride_c, int64_t x_stride_h,
                   int64_t x_stride_w) {
  const int64_t PQ = p.P * p.Q;
  for (int64_t c = 0; c < p.C_per_group(); ++c) {
    for (int64_t h = 0; h < p.H; ++h) {
      for (int64_t w = 0; w < p.W; ++w) {
        T sum = T(0);
        p.for_each_reader(h, w, [&](int64_t r, int64_t s, int64_t out_h, int64_t out_w) {
          sum += col[((c * p.R + r) * p.S + s) * PQ + out_h * p.Q + out_w];
        });
        x[c * x_stride_c + h * x_stride_h + w * x_stride_w] = sum;
      }
    }
  }
}

}  // namespace fastconv::cpu

namespace fastconv::cpu {

// Channel range [c_begin, c_end) of im2col, so the rows of one column matrix can be filled in parallel.
template <typename T>
void im2col_channels(const Conv2dProblem& p, const T* x, int64_t x_stride_c, int64_t x_stride_h,
                     int64_t x_stride_w, T* col, int64_t c_begin, int64_t c_end) {
  Conv2dProblem one = p;
  one.C = (c_end - c_begin) * p.groups;  // C_per_group() == c_end - c_begin
  im2col(one, x + c_begin * x_stride_c, x_stride_c, x_stride_h, x_stride_w, col + c_begin * p.R * p.S * p.P * p.Q);
}

// Channels-last (row) im2col: one row per output pixel, row[(r * S + s) * Cg + c], so a channels_last
// input (unit channel stride) is copied in runs of Cg contiguous values. Rows [m_begin, m_end) of the
// pixels of one image; x points at channel 0 of this image's group.
template <typename T>
void im2col_rows(const Conv2dProblem& p, const T* x, int64_t x_stride_c, int64_t x_stride_h, int64_t x_stride_w,
                 T* col, int64_t m_begin, int64_t m_end) {
  const int64_t Cg = p.C_per_group(), CRS = p.gemm_k();
  for (int64_t m = m_begin; m < m_end; ++m) {
    const int64_t out_h = m / p.Q, out_w = m % p.Q;
    T* dst = col + (m - m_begin) * CRS;
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t h = p.input_row(out_h, r);
      for (int64_t s = 0; s < p.S; ++s, dst += Cg) {
        const int64_t w = p.input_col(out_w, s);
        if (h < 0 || w < 0) {
          for (int64_t c = 0; c < Cg; ++c) dst[c] = T(0);
          continue;
        }
        const T* src = x + h * x_stride_h + w * x_stride_w;
        if (x_stride_c == 1) {
          for (int64_t c = 0; c < Cg; ++c) dst[c] = src[c];
        } else {
          for (int64_t c = 0; c < Cg; ++c) dst[c] = src[c * x_stride_c];
        }
      }
    }
  }
}

// The inverse of im2col_rows as a gather, for input rows [h_begin, h_end) of one image: each input
// pixel sums, in a fixed order, the row segments that came from it. col holds all P*Q rows.
template <typename T>
void col2im_rows_gather(const Conv2dProblem& p, const T* col, T* x, int64_t x_stride_c, int64_t x_stride_h,
                        int64_t x_stride_w, int64_t h_begin, int64_t h_end) {
  const int64_t Cg = p.C_per_group(), CRS = p.gemm_k();
  for (int64_t h = h_begin; h < h_end; ++h) {
    for (int64_t w = 0; w < p.W; ++w) {
      T* dst = x + h * x_stride_h + w * x_stride_w;
      for (int64_t c = 0; c < Cg; ++c) dst[c * x_stride_c] = T(0);
      p.for_each_reader(h, w, [&](int64_t r, int64_t s, int64_t out_h, int64_t out_w) {
        const T* src = col + (out_h * p.Q + out_w) * CRS + (r * p.S + s) * Cg;
        if (x_stride_c == 1) {
          for (int64_t c = 0; c < Cg; ++c) dst[c] += src[c];
        } else {
          for (int64_t c = 0; c < Cg; ++c) dst[c * x_stride_c] += src[c];
        }
      });
    }
  }
}

}  // namespace fastconv::cpu
