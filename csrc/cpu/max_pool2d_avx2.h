// AVX2 float32 kernels for max_pool2d (max_pool2d_avx2.cpp). max_pool2d.cpp keeps the loops over
// planes and rows (and the parallel_for), checks cpu_has_avx2_fma() and available(), and calls these for
// the part of a row they cover; everything else goes through its scalar loops. The kernels follow the same
// rules as the scalar code, tap for tap: taps scanned row-major, a tap wins when strictly greater or NaN.
#pragma once

#include <cstdint>

namespace fastconv::cpu::pool_avx2 {

// One axis of one window: `first` is the first in-bounds tap (PyTorch's index seed; it can lie past the
// input when every tap of a dilated window falls in the padding), taps run first, first + d, ... < end.
struct Taps {
  int64_t first, end;
};

// Whether this build has the AVX2 kernels (x86); the caller also asks cpu_has_avx2_fma().
bool available();

// NCHW forward, unit dilation, stride_w 1 or 2. nchw_columns gives the output columns [begin, end) of a
// row whose windows lie wholly inside the row (and whose vector loads stay inside it); it returns
// false when there are fewer than 8 of them (or the stride is not handled): the row is then all scalar.
bool nchw_columns(int64_t W, int64_t Q, int64_t stride_w, int64_t pad_w, int64_t S, int64_t* begin,
                  int64_t* end);
// Outputs [q_begin, q_end) of one output row whose window rows are [h_first, h_end) of the plane x
// (H*W < 2^31: indices run in int32 lanes and are widened on the store).
void fprop_nchw_row(const float* x, int64_t W, int64_t h_first, int64_t h_end, int64_t stride_w,
                    int64_t pad_w, int64_t S, int64_t q_begin, int64_t q_end, float* y_row, int64_t* i_row);

// channels_last forward, one output row: channels [0, c_end) (c_end a multiple of 8) of every output
// pixel of the row; x is the image (H, W, C), cols the Q column windows. H*W < 2^31 with room for
// the past-the-plane seed of a window wholly in the padding. stream: write y and indices with
// non-temporal stores where they are aligned for it (large outputs).
void fprop_channels_last_row(const float* x, int64_t C, int64_t W, Taps r, const Taps* cols, int64_t Q,
                             int64_t dilation_h, int64_t dilation_w, int64_t c_end, float* y_row,
                             int64_t* i_row, bool stream);

}  // namespace fastconv::cpu::pool_avx2
