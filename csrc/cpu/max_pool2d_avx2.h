// AVX2 float32 kernels for max_pool2d (max_pool2d_avx2.cpp). max_pool2d.cpp keeps the loops over
// planes and rows (and the parallel_for), checks cpu_has_avx2_fma() and available(), and calls these for
// the part of a row they cover; everything else goes through its scalar loops. The kernels follow the same
// rules as the scalar code, tap for tap: taps scanned row-major, a tap wins when strictly greater or NaN.
#pragma once

#include <cstdint>
#include <type_traits>

namespace fastconv::cpu::pool_avx2 {

// One axis of one window: `first` is the first in-bounds tap (PyTorch's index seed; it can lie past the
// input when every tap of a dilated window falls in the padding), taps run first, first + d, ... < end.
// `index` is that first tap's share of the recorded argmax, which is the sum of a row share and a column
// share, each stepping by a fixed amount per tap (ArgmaxSteps): PyTorch's flat index h * W + w, or the
// tap number r * S + s of the taps form (Pool2dProblem::tap_row/tap_col).
struct Taps {
  int64_t first, end;
  int64_t index;
};

// The argmax a window's scan starts from: its first in-bounds tap. A window with no tap inside the
// input keeps it: PyTorch's flat seed (past the plane, or wrapped onto the next row), or, for tap
// numbers (Index uint8_t), tap 0, which lies outside the input too (Pool2dProblem).
template <typename Index>
inline int64_t window_seed(Taps r, Taps s) {
  const bool no_tap_inside = r.first >= r.end || s.first >= s.end;
  return std::is_same_v<Index, uint8_t> && no_tap_inside ? 0 : r.index + s.index;
}

// How the argmax share grows from one tap to the next along a window's rows and columns.
struct ArgmaxSteps {
  int64_t row, col;
};

// Whether this build has the AVX2 kernels (x86); the caller also asks cpu_has_avx2_fma().
bool available();

// NCHW forward, unit dilation, stride_w 1 or 2. nchw_columns gives the output columns [begin, end) of a
// row whose windows lie wholly inside the row (and whose vector loads stay inside it); it returns
// false when there are fewer than 8 of them (or the stride is not handled): the row is then all scalar.
bool nchw_columns(int64_t W, int64_t Q, int64_t stride_w, int64_t pad_w, int64_t S, int64_t* begin,
                  int64_t* end);
// Outputs [q_begin, q_end) of one output row whose window rows are r of the plane x (H*W < 2^31:
// indices run in int32 lanes and are widened on the store). Index int64_t: flat indices (row_step W);
// uint8_t: tap numbers (row_step S; these windows lie inside the row, so a column's tap is its offset).
template <typename Index>
void fprop_nchw_row(const float* x, int64_t W, Taps r, int64_t row_step, int64_t stride_w, int64_t pad_w,
                    int64_t S, int64_t q_begin, int64_t q_end, float* y_row, Index* i_row);

// channels_last forward, one output row: channels [0, c_end) (c_end a multiple of 8) of every output
// pixel of the row; x is the image (H, W, C), cols the Q column windows. H*W < 2^31 with room for
// the past-the-plane seed of a window wholly in the padding. stream: write y (and int64 indices) with
// non-temporal stores where they are aligned for it (large outputs).
template <typename Index>
void fprop_channels_last_row(const float* x, int64_t C, int64_t W, Taps r, const Taps* cols, int64_t Q,
                             int64_t dilation_h, int64_t dilation_w, ArgmaxSteps steps, int64_t c_end,
                             float* y_row, Index* i_row, bool stream);

// NCHW backward from tap numbers, 2x2 windows with stride 2, no padding, unit dilation (VGG's pooling):
// the windows tile the plane, so each input pixel takes the gradient of the one window holding it or
// zero, and the plane (P x Q outputs, H x W inputs) is written once, row by row, with no zero-fill pass
// and no read-modify-write. Eight windows (16 columns) at a time, a compare and a mask per tap; bitwise
// the scatter's result (a -0 gradient is written as the scatter's 0 + -0 = +0).
void bprop_nchw_taps_2x2_plane(const float* dy, const uint8_t* taps, int64_t P, int64_t Q, int64_t H, int64_t W,
                               float* dx);

// channels_last backward from tap numbers as a gather: one input pixel's gradient, channels [0, c_end)
// (a multiple of 8), summed over the windows that hold the pixel as a tap (covers, in output order: the
// window's output pixel j and the pixel's tap number there), each a compare and a masked add. The
// pixel is written once: no zero-fill pass, no read-modify-write of the image. Bitwise the scatter's
// sum (same order; a masked +0 leaves a sum that started from +0 as it was).
struct Cover {
  int64_t j;
  int32_t tap;
};
void bprop_channels_last_taps_pixel(const float* dy_image, const uint8_t* taps_image, const Cover* covers,
                                    int64_t n_covers, int64_t C, int64_t c_end, float* dx_pixel);

}  // namespace fastconv::cpu::pool_avx2
