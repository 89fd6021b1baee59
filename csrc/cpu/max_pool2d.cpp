// max_pool2d on the CPU: the forward (values and the argmax) and the backward (each output gradient routed
// to its argmax). The argmax comes in two forms, both written by every forward kernel: PyTorch's int64
// flat index h * W + w (max_pool2d_fprop, returned by return_indices), and the tap number r * S + s in
// one byte (_max_pool2d_fprop_taps, what autograd keeps otherwise: an eighth of the memory and traffic).
// Two kernels per pass, one per memory format; any other strides are first made contiguous in the
// input's suggested format.
//   NCHW:          parallel over the N*P*C output rows (forward) or the N*C planes (backward). float32
//                  rows go 8 output columns at a time through AVX2 (max_pool2d_avx2.cpp) where the
//                  windows lie inside the row (unit dilation, stride_w 1 or 2); the rest is scalar.
//                  The backward scatters a plane in output order; from taps, 2x2 stride-2 windows
//                  (which tile the plane) write it directly instead.
//   channels_last: parallel over N*P output rows (forward); the innermost loop runs over contiguous
//                  channels so it vectorises (float32: AVX2 lanes, up to 32 channels in registers;
//                  others: 16-byte GCC vectors). The backward scatters per (image, channel block); from
//                  float32 taps, windows that do not overlap gather instead, each input pixel once.
// Semantics are PyTorch's CPU kernel's, tap for tap: the running max starts at -inf with the index of the
// window's first in-bounds tap; taps are scanned row-major and a tap wins when it is strictly greater or
// NaN, so ties keep the first maximum and the last NaN wins; padding is -inf and is never reported.
// Integer inputs (forward only, as PyTorch's) take the scalar and GCC-vector kernels with lowest() in
// place of -inf; no integer is NaN.
// The backward owns every grad_input element in exactly one thread and sums into it in output order, so
// it is bitwise deterministic for any thread count, and the same from either form of the argmax (but
// for a window wholly in the padding, whose int64 seed may wrap onto a pixel, as PyTorch's CPU does).
// Large outputs get transparent huge pages (first-touch faults otherwise dominate) and, over 16 MiB,
// non-temporal stores where the kernel writes whole aligned lines.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../ops_common.h"
#include "cpu_features.h"
#include "max_pool2d_avx2.h"

namespace fastconv::cpu {

namespace {

using pool_avx2::ArgmaxSteps;
using pool_avx2::Taps;  // one window axis: first in-bounds tap (the index seed), end, its argmax share

// Every kernel is built for both argmax forms, chosen by the type it writes: int64_t, PyTorch's flat
// index h * W + w (returned to users); uint8_t, the tap number r * S + s (kept only for the backward,
// which reads it back through Pool2dProblem::tap_row/tap_col). Both are a row share plus a column share.
template <typename Index>
constexpr bool kTapsForm = std::is_same_v<Index, uint8_t>;

template <typename Index>
ArgmaxSteps argmax_steps(const Pool2dProblem& p) {
  return kTapsForm<Index> ? ArgmaxSteps{p.S, 1} : ArgmaxSteps{p.dilation_h * p.W, p.dilation_w};
}

// The float32 AVX2 kernels (max_pool2d_avx2.cpp) run when the CPU has AVX2 and the build has them.
bool use_avx2() { return cpu_has_avx2_fma() && pool_avx2::available(); }

bool plane_fits_int32(const Pool2dProblem& p) {
  return p.H * p.W <= static_cast<int64_t>(std::numeric_limits<int32_t>::max());
}

// `scale`: what one step along this axis adds to the argmax (W or 1 for flat indices; S or 1 for tap
// numbers, which count taps from the window's origin). A window with no tap inside the input seeds
// PyTorch's flat index past the plane, or tap 0, which lies outside the input too.
std::vector<Taps> window_taps(int64_t out_size, int64_t stride, int64_t pad, int64_t dilation, int64_t kernel,
                              int64_t extent, bool taps_form, int64_t scale) {
  std::vector<Taps> taps(out_size);
  for (int64_t o = 0; o < out_size; ++o) {
    const int64_t origin = o * stride - pad;
    const int64_t end = std::min(origin + (kernel - 1) * dilation + 1, extent);
    int64_t first = origin;
    if (first < 0) first += (-first + dilation - 1) / dilation * dilation;
    const int64_t tap = first < end ? (first - origin) / dilation : 0;
    taps[o] = {first, end, (taps_form ? tap : first) * scale};
  }
  return taps;
}

template <typename Index>
std::vector<Taps> row_windows(const Pool2dProblem& p) {
  return window_taps(p.P, p.stride_h, p.pad_h, p.dilation_h, p.R, p.H, kTapsForm<Index>,
                     kTapsForm<Index> ? p.S : p.W);
}

template <typename Index>
std::vector<Taps> col_windows(const Pool2dProblem& p) {
  return window_taps(p.Q, p.stride_w, p.pad_w, p.dilation_w, p.S, p.W, kTapsForm<Index>, 1);
}

// What the running max starts from, and what padding is: -inf, or for integers, which have no infinity,
// lowest() as PyTorch's kernels do (a window wholly in the padding outputs it). Either way no input loses
// to it, so the index seeded with the window's first in-bounds tap stays when every tap is that value.
template <typename T>
inline T padding_value() {
  if constexpr (std::numeric_limits<T>::has_infinity) {
    return -std::numeric_limits<T>::infinity();
  } else {
    return std::numeric_limits<T>::lowest();
  }
}

template <typename T>
inline bool is_nan(T value) {
  if constexpr (std::is_integral_v<T>) {
    return false;
  } else {
    return value != value;
  }
}

// The winner rule, written without short-circuit so the channels_last loop stays branch-free.
template <typename T>
inline bool takes(T value, T running_max) {
  return (value > running_max) | is_nan(value);
}

// A fresh output of many megabytes comes straight from mmap, and on this kind of machine first-touch
// page faults on 4 KiB pages cost more than the pooling itself (a 100 MB output: ~25k faults, several
// times the kernel's time). Asking for transparent huge pages on the whole 2 MiB pages inside it, before
// anything writes it, makes that 512 times fewer faults (the same request PyTorch's allocator makes under
// THP_MEM_ALLOC_ENABLE=1). Advice only: a no-op where THP is off, memory already touched stays as it is.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = t.numel() * t.element_size();
  if (bytes < 4 * kHuge) return;  // small outputs come from the heap, already touched
  const uintptr_t data = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (data + kHuge - 1) & ~(kHuge - 1), end = (data + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// Outputs larger than this are written with non-temporal stores where a kernel can: they would not
// stay in cache for the next layer anyway, and a plain store first reads every line it writes. Smaller
// ones are left in the cache, where the next layer (or the next call, reusing the same heap memory)
// finds them. Half the 32 MiB L3 of the machines this was tuned on (sysconf's L3 size is not to be
// trusted in their VMs: it reports 256 MiB).
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// Work per parallel_for item, turned into a grain so tiny problems do not wake every thread.
int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_item));
}

// ---------------------------------------------------------------------------------------------- forward

// v1: one output at a time, the window scanned in registers. Used for every dtype and for the columns
// (and rows) the AVX2 kernel does not cover.
template <typename T, typename Index, bool kUnitDilation>
inline void nchw_outputs(const T* xp, int64_t W, Taps r, const Taps* cols, int64_t q_begin, int64_t q_end,
                         int64_t dh, int64_t dw, ArgmaxSteps steps, T* y_row, Index* i_row) {
  for (int64_t out_w = q_begin; out_w < q_end; ++out_w) {
    const Taps s = cols[out_w];
    T max_value = padding_value<T>();
    int64_t max_index = pool_avx2::window_seed<Index>(r, s);
    for (int64_t h = r.first, row = r.index; h < r.end; h += (kUnitDilation ? 1 : dh), row += steps.row) {
      const T* x_row = xp + h * W;
      for (int64_t w = s.first, index = row + s.index; w < s.end; w += (kUnitDilation ? 1 : dw), index += steps.col) {
        const T value = x_row[w];
        const bool take = takes(value, max_value);  // selects, not a branch: random data mispredicts
        max_value = take ? value : max_value;
        max_index = take ? index : max_index;
      }
    }
    y_row[out_w] = max_value;
    i_row[out_w] = static_cast<Index>(max_index);
  }
}

template <typename T, typename Index, bool kUnitDilation>
void fprop_nchw(const Pool2dProblem& p, const T* x, T* y, Index* indices) {
  const std::vector<Taps> rows = row_windows<Index>(p), cols = col_windows<Index>(p);
  const ArgmaxSteps steps = argmax_steps<Index>(p);
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  // v2 (float32, unit dilation, stride_w 1 or 2, AVX2): the columns whose windows lie inside the row
  // go 8 at a time through pool_avx2::fprop_nchw_row; the edge columns stay scalar.
  int64_t q_begin = Q, q_end = Q;
  const bool avx2 = std::is_same_v<T, float> && kUnitDilation && use_avx2() &&
                    (kTapsForm<Index> || plane_fits_int32(p)) &&
                    pool_avx2::nchw_columns(W, Q, p.stride_w, p.pad_w, p.S, &q_begin, &q_end);
  if (!avx2) q_begin = q_end = Q;
  // Parallel over output rows of all planes (not whole planes), so few large planes still split.
  at::parallel_for(0, p.N * p.C * P, grain_for(Q * p.R * p.S), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / P, out_h = item % P;
      const T* xp = x + plane * H * W;
      T* y_row = y + item * Q;
      Index* i_row = indices + item * Q;
      const Taps r = rows[out_h];
      nchw_outputs<T, Index, kUnitDilation>(xp, W, r, cols.data(), 0, q_begin, p.dilation_h, p.dilation_w, steps,
                                            y_row, i_row);
      if constexpr (std::is_same_v<T, float>) {
        if (q_begin < q_end) {
          pool_avx2::fprop_nchw_row(xp, W, r, steps.row, p.stride_w, p.pad_w, p.S, q_begin, q_end, y_row, i_row);
        }
      }
      nchw_outputs<T, Index, kUnitDilation>(xp, W, r, cols.data(), q_end, Q, p.dilation_h, p.dilation_w, steps,
                                            y_row, i_row);
    }
  });
}

// Channels are processed in blocks held in registers across the whole window. The running argmax is kept
// in an index type I as wide as T (int32 for float, when the plane allows) so the value and index selects
// use the same lanes; it is widened to int64 on the store. cl_window is the scalar form (the tail).
template <typename T>
constexpr int64_t channel_block() {
  return 64 / sizeof(T);  // 16 floats or 8 doubles
}

template <typename T, typename I, typename Index, int64_t kWidth, bool kUnitDilation>
inline void cl_window(const T* x_image, int64_t C, int64_t W, Taps r, Taps s, int64_t dh, int64_t dw,
                      ArgmaxSteps steps, int64_t width, T* y_out, Index* i_out) {
  // kWidth > 0: a full block with a compile-time width; kWidth == 0: the tail, `width` channels.
  const int64_t n = kWidth > 0 ? kWidth : width;
  T max_value[channel_block<T>()];
  I max_index[channel_block<T>()];
  const I seed = static_cast<I>(pool_avx2::window_seed<Index>(r, s));
  for (int64_t c = 0; c < n; ++c) {
    max_value[c] = padding_value<T>();
    max_index[c] = seed;
  }
  for (int64_t h = r.first, row = r.index; h < r.end; h += (kUnitDilation ? 1 : dh), row += steps.row) {
    for (int64_t w = s.first, tap = row + s.index; w < s.end; w += (kUnitDilation ? 1 : dw), tap += steps.col) {
      const I index = static_cast<I>(tap);
      const T* xv = x_image + (h * W + w) * C;
      for (int64_t c = 0; c < n; ++c) {
        const T value = xv[c];
        const bool take = takes(value, max_value[c]);
        max_value[c] = take ? value : max_value[c];
        max_index[c] = take ? index : max_index[c];
      }
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    y_out[c] = max_value[c];
    i_out[c] = static_cast<Index>(max_index[c]);
  }
}

// One full block of channels with explicit 16-byte vectors (GCC vector extensions, so SSE2 at the
// baseline): compare, NaN test and bitwise selects, four vectors in registers across the window. The
// auto-vectoriser leaves the same loop scalar (it fully unrolls it first, then fails to SLP the selects).
// Value and argmax lanes must be as wide: float, double, int32 and int64 (narrower integers go through
// cl_window, their argmax needing more bits than their lanes have).
template <typename T, typename I, typename Index, bool kUnitDilation>
inline void cl_block(const T* x_image, int64_t C, int64_t W, Taps r, Taps s, int64_t dh, int64_t dw,
                     ArgmaxSteps steps, T* y_out, Index* i_out) {
  static_assert(sizeof(T) == sizeof(I), "value and index lanes must be as wide");
  constexpr int kLanes = 16 / sizeof(T), kVecs = channel_block<T>() / kLanes;
  typedef T V __attribute__((vector_size(16)));
  typedef I IV __attribute__((vector_size(16)));
  V max_value[kVecs];
  IV max_index[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    max_value[v] = V{} + padding_value<T>();
    max_index[v] = IV{} + static_cast<I>(pool_avx2::window_seed<Index>(r, s));
  }
  for (int64_t h = r.first, row = r.index; h < r.end; h += (kUnitDilation ? 1 : dh), row += steps.row) {
    for (int64_t w = s.first, tap = row + s.index; w < s.end; w += (kUnitDilation ? 1 : dw), tap += steps.col) {
      const T* xv = x_image + (h * W + w) * C;
      const IV index = IV{} + static_cast<I>(tap);
      for (int v = 0; v < kVecs; ++v) {
        V value;
        std::memcpy(&value, xv + v * kLanes, sizeof(V));
        IV take = value > max_value[v];  // all-ones lanes where the tap wins
        if constexpr (!std::is_integral_v<T>) take |= value != value;
        max_value[v] = (V)(((IV)value & take) | ((IV)max_value[v] & ~take));
        max_index[v] = (index & take) | (max_index[v] & ~take);
      }
    }
  }
  for (int v = 0; v < kVecs; ++v) {
    std::memcpy(y_out + v * kLanes, &max_value[v], sizeof(V));
    for (int l = 0; l < kLanes; ++l) i_out[v * kLanes + l] = static_cast<Index>(max_index[v][l]);
  }
}

template <typename T, typename I, typename Index, bool kUnitDilation>
void fprop_channels_last(const Pool2dProblem& p, const T* x, T* y, Index* indices) {
  const std::vector<Taps> rows = row_windows<Index>(p), cols = col_windows<Index>(p);
  const ArgmaxSteps steps = argmax_steps<Index>(p);
  const int64_t C = p.C, H = p.H, W = p.W, P = p.P, Q = p.Q;
  constexpr int64_t kBlock = channel_block<T>();
  // v2 (float32 with int32 argmax lanes, AVX2): channels [0, C rounded down to 8) of the whole row go
  // through pool_avx2::fprop_channels_last_row; the last C % 8 channels stay scalar below.
  constexpr bool kFloat32 = std::is_same_v<T, float> && std::is_same_v<I, int32_t>;
  const int64_t c_avx2 = kFloat32 && use_avx2() ? C / 8 * 8 : 0;
  const bool stream = p.N * P * Q * C * static_cast<int64_t>(sizeof(T) + sizeof(Index)) > kStreamBytes;
  at::parallel_for(0, p.N * P, grain_for(Q * C * p.R * p.S), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / P, out_h = row % P;
      const T* x_image = x + n * H * W * C;
      const Taps r = rows[out_h];
      if constexpr (kFloat32) {
        if (c_avx2 > 0) {
          pool_avx2::fprop_channels_last_row(x_image, C, W, r, cols.data(), Q, p.dilation_h, p.dilation_w, steps,
                                             c_avx2, y + row * Q * C, indices + row * Q * C, stream);
        }
      }
      for (int64_t out_w = 0; out_w < Q; ++out_w) {
        const Taps s = cols[out_w];
        T* y_out = y + (row * Q + out_w) * C;
        Index* i_out = indices + (row * Q + out_w) * C;
        int64_t c = c_avx2;
        if constexpr (sizeof(I) == sizeof(T)) {
          for (; c + kBlock <= C; c += kBlock) {
            cl_block<T, I, Index, kUnitDilation>(x_image + c, C, W, r, s, p.dilation_h, p.dilation_w, steps,
                                                 y_out + c, i_out + c);
          }
        }
        for (; c + kBlock <= C; c += kBlock) {  // float with int64 indices: planes of 2^31 pixels or more
          cl_window<T, I, Index, kBlock, kUnitDilation>(x_image + c, C, W, r, s, p.dilation_h, p.dilation_w, steps,
                                                        kBlock, y_out + c, i_out + c);
        }
        if (c < C) {
          cl_window<T, I, Index, 0, kUnitDilation>(x_image + c, C, W, r, s, p.dilation_h, p.dilation_w, steps,
                                                   C - c, y_out + c, i_out + c);
        }
      }
    }
  });
}

// float keeps its running argmax in int32 lanes when every index it can report, the past-the-plane
// seed of a window wholly in the padding included, fits (tap numbers always do).
template <typename T, typename Index, bool kUnitDilation>
void fprop_channels_last(const Pool2dProblem& p, const T* x, T* y, Index* indices) {
  const bool fits_int32 = kTapsForm<Index> || (p.H + p.dilation_h + 1) * (p.W + p.dilation_w + 1) <=
                                                  static_cast<int64_t>(std::numeric_limits<int32_t>::max());
  if (sizeof(T) == 4 && fits_int32) {
    fprop_channels_last<T, int32_t, Index, kUnitDilation>(p, x, y, indices);
  } else {
    fprop_channels_last<T, int64_t, Index, kUnitDilation>(p, x, y, indices);
  }
}

// --------------------------------------------------------------------------------------------- backward
// The two readers of an argmax form scatter output gradients to the argmax's input position, in output
// order: one NCHW plane (scatter_plane) or the channels of one channels_last output pixel
// (scatter_pixel). An argmax outside the input comes only from a window wholly in the padding (PyTorch
// seeds its index past the plane; the taps form records tap 0, outside too): its output is the padding's
// -inf, which no input moves, so its gradient goes nowhere. Either way a bad argmax cannot reach outside.
class FlatArgmax {
 public:
  FlatArgmax(const Pool2dProblem& p, const int64_t* indices) : indices_(indices), plane_size_(p.H * p.W) {}

  template <typename T>
  void scatter_plane(int64_t plane, const T* dy, T* acc, int64_t PQ) const {
    const int64_t* ip = indices_ + plane * PQ;
    for (int64_t j = 0; j < PQ; ++j) {
      const int64_t index = ip[j];
      if (inside(index)) acc[index] += dy[j];
    }
  }

  // channels_last: channels [c0, c1) of output pixel j's gradients dy (indexed by channel) into the image.
  template <typename T>
  void scatter_pixel(int64_t j, int64_t /*out_h*/, int64_t /*out_w*/, int64_t C, int64_t c0, int64_t c1,
                     const T* dy, T* dx_image) const {
    const int64_t* ip = indices_ + j * C;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t index = ip[c];
      if (inside(index)) dx_image[index * C + c] += dy[c];
    }
  }

 private:
  bool inside(int64_t index) const { return static_cast<uint64_t>(index) < static_cast<uint64_t>(plane_size_); }
  const int64_t* indices_;
  int64_t plane_size_;
};

// Windows lying wholly inside the input (most of them; a contiguous range of rows and of columns) need
// no bounds test: a tap's position is the window origin's plus the tap's offset. A byte past R * S has
// an offset far below zero, so its gradient is dropped, never written out of bounds.
class TapArgmax {
 public:
  TapArgmax(const Pool2dProblem& p, const uint8_t* taps)
      : taps_(taps), H_(p.H), W_(p.W), rows_(axis(p.P, p.stride_h, p.pad_h, p.dilation_h, p.R, p.H)),
        cols_(axis(p.Q, p.stride_w, p.pad_w, p.dilation_w, p.S, p.W)) {
    constexpr int64_t kNowhere = std::numeric_limits<int64_t>::min() / 4;
    tap_row_.fill(kNowhere);
    tap_col_.fill(kNowhere);
    tap_offset_.fill(kNowhere);
    for (int64_t tap = 0; tap < p.R * p.S; ++tap) {  // relative to the window's origin
      tap_row_[tap] = p.tap_row(0, tap) + p.pad_h;
      tap_col_[tap] = p.tap_col(0, tap) + p.pad_w;
      tap_offset_[tap] = tap_row_[tap] * p.W + tap_col_[tap];
    }
  }

  template <typename T>
  void scatter_plane(int64_t plane, const T* dy, T* acc, int64_t PQ) const {
    const uint8_t* tp = taps_ + plane * PQ;
    const int64_t Q = cols_.size;
    for (int64_t out_h = 0; out_h < rows_.size; ++out_h) {
      const int64_t j0 = out_h * Q;
      const bool interior_row = rows_.interior(out_h);
      const int64_t lo = interior_row ? cols_.lo : Q, hi = interior_row ? cols_.hi : Q;
      for (int64_t out_w = 0; out_w < lo; ++out_w) {
        add(window(out_h, out_w).position(plane * PQ + j0 + out_w), dy[j0 + out_w], acc);
      }
      const int64_t row_origin = (out_h * rows_.stride - rows_.pad) * W_ - cols_.pad;
      for (int64_t out_w = lo; out_w < hi; ++out_w) {
        add(row_origin + out_w * cols_.stride + tap_offset_[tp[j0 + out_w]], dy[j0 + out_w], acc);
      }
      for (int64_t out_w = hi; out_w < Q; ++out_w) {
        add(window(out_h, out_w).position(plane * PQ + j0 + out_w), dy[j0 + out_w], acc);
      }
    }
  }

  template <typename T>
  void scatter_pixel(int64_t j, int64_t out_h, int64_t out_w, int64_t C, int64_t c0, int64_t c1, const T* dy,
                     T* dx_image) const {
    const uint8_t* tp = taps_ + j * C;
    if (rows_.interior(out_h) && cols_.interior(out_w)) {
      const int64_t origin = (out_h * rows_.stride - rows_.pad) * W_ + out_w * cols_.stride - cols_.pad;
      const int64_t* offset = tap_offset_.data();
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t index = origin + offset[tp[c]];
        if (index >= 0) dx_image[index * C + c] += dy[c];
      }
      return;
    }
    const Window w = window(out_h, out_w);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t index = w.position(j * C + c);
      if (index >= 0) dx_image[index * C + c] += dy[c];
    }
  }

  const uint8_t* taps() const { return taps_; }

 private:
  // A window's taps read back one at a time: element j's input position, or -1 (the border windows).
  struct Window {
    const TapArgmax* reader;
    int64_t origin_h, origin_w;
    bool interior;
    int64_t position(int64_t j) const {
      const TapArgmax& r = *reader;
      const uint8_t tap = r.taps_[j];
      if (interior) return origin_h * r.W_ + origin_w + r.tap_offset_[tap];  // < 0 for a bad byte
      const int64_t h = origin_h + r.tap_row_[tap], w = origin_w + r.tap_col_[tap];
      const bool inside = static_cast<uint64_t>(h) < static_cast<uint64_t>(r.H_) &&
                          static_cast<uint64_t>(w) < static_cast<uint64_t>(r.W_);
      return inside ? h * r.W_ + w : -1;
    }
  };
  Window window(int64_t out_h, int64_t out_w) const {
    return {this, out_h * rows_.stride - rows_.pad, out_w * cols_.stride - cols_.pad,
            rows_.interior(out_h) && cols_.interior(out_w)};
  }

  // One axis: outputs [lo, hi) have their whole window inside [0, extent).
  struct Axis {
    int64_t size, stride, pad, lo, hi;
    bool interior(int64_t o) const { return o >= lo && o < hi; }
  };
  static Axis axis(int64_t out_size, int64_t stride, int64_t pad, int64_t dilation, int64_t kernel,
                   int64_t extent) {
    const int64_t lo = std::min(out_size, (pad + stride - 1) / stride);
    const int64_t last_start = extent - 1 - (kernel - 1) * dilation + pad;  // the window of o starts at o*stride-pad
    const int64_t hi = last_start < 0 ? lo : std::clamp(last_start / stride + 1, lo, out_size);
    return {out_size, stride, pad, lo, hi};
  }
  template <typename T>
  static void add(int64_t index, T value, T* acc) {
    if (index >= 0) acc[index] += value;
  }
  const uint8_t* taps_;
  int64_t H_, W_;
  Axis rows_, cols_;
  std::array<int64_t, Pool2dProblem::kMaxByteTaps> tap_row_, tap_col_, tap_offset_;
};

// Copies a finished block to its place in the output with non-temporal stores (x86: SSE2, the
// baseline): the output is not read again here, so its cache lines need not be fetched first (a plain
// store reads every line before writing it: half the memory traffic of this pass). Elsewhere a memcpy.
void stream_copy(void* dst, const void* src, size_t bytes) {
#if defined(__SSE2__)
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  const size_t head = std::min(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  size_t i = head;
  for (; i + 64 <= bytes; i += 64) {
    for (int k = 0; k < 4; ++k) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16 * k));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16 * k), v);
    }
  }
  for (; i + 16 <= bytes; i += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  }
  std::memcpy(d + i, s + i, bytes - i);
#else
  std::memcpy(dst, src, bytes);
#endif
}

// Orders the streamed stores before the parallel region ends (they are weakly ordered).
void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Planes up to this size are summed in a per-thread buffer that stays in the L2 cache.
constexpr int64_t kStageBytes = 256 * 1024;

// v1: zero the plane in place, then scatter in output order (each plane is one thread's).
// v2 (grad_input larger than the stream threshold): the same scatter into a cache-resident buffer,
// streamed out once per plane: grad_input is written exactly once, without being read, instead of
// zeroed (read + write) and then updated in place.
// v3 (float32 tap numbers, 2x2 stride 2 windows that tile the plane, AVX2): each plane written once,
// directly (pool_avx2::bprop_nchw_taps_2x2_plane).
template <typename T, typename Argmax>
void bprop_nchw(const Pool2dProblem& p, const T* dy, const Argmax& argmax, T* dx) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  if constexpr (std::is_same_v<T, float> && std::is_same_v<Argmax, TapArgmax>) {
    const bool tiles_2x2 = p.R == 2 && p.S == 2 && p.stride_h == 2 && p.stride_w == 2 && p.pad_h == 0 &&
                           p.pad_w == 0 && p.dilation_h == 1 && p.dilation_w == 1;
    if (tiles_2x2 && use_avx2()) {
      at::parallel_for(0, p.N * p.C, grain_for(HW + PQ), [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          pool_avx2::bprop_nchw_taps_2x2_plane(dy + plane * PQ, argmax.taps() + plane * PQ, p.P, p.Q, p.H, p.W,
                                               dx + plane * HW);
        }
      });
      return;
    }
  }
  const bool staged = HW * static_cast<int64_t>(sizeof(T)) <= kStageBytes &&
                      p.N * p.C * HW * static_cast<int64_t>(sizeof(T)) > kStreamBytes;
  at::parallel_for(0, p.N * p.C, grain_for(HW + PQ), [&](int64_t begin, int64_t end) {
    std::vector<T> stage(staged ? HW : 0);
    for (int64_t plane = begin; plane < end; ++plane) {
      T* dxp = dx + plane * HW;
      T* acc = staged ? stage.data() : dxp;
      const T* dyp = dy + plane * PQ;
      std::fill(acc, acc + HW, T(0));
      argmax.scatter_plane(plane, dyp, acc, PQ);
      if (staged) stream_copy(dxp, acc, HW * sizeof(T));
    }
    stream_fence();
  });
}

// The windows holding each input coordinate along one axis as a tap, in output order: (o, k) with
// o * stride - pad + k * dilation == x, listed for x in [begin[x], begin[x + 1]).
struct AxisCovers {
  std::vector<int64_t> begin, out, tap;
};

AxisCovers axis_covers(int64_t out_size, int64_t stride, int64_t pad, int64_t dilation, int64_t kernel,
                       int64_t extent) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> lists(extent);
  for (int64_t o = 0; o < out_size; ++o) {
    for (int64_t k = 0; k < kernel; ++k) {
      const int64_t x = o * stride - pad + k * dilation;
      if (x >= 0 && x < extent) lists[x].push_back({o, k});
    }
  }
  AxisCovers covers;
  covers.begin.push_back(0);
  for (const auto& list : lists) {
    for (const auto& [o, k] : list) {
      covers.out.push_back(o);
      covers.tap.push_back(k);
    }
    covers.begin.push_back(static_cast<int64_t>(covers.out.size()));
  }
  return covers;
}

// v2 (float32 tap numbers, AVX2, windows that do not overlap): a gather
// (pool_avx2::bprop_channels_last_taps_pixel): each input pixel sums its covering windows' gradients and
// is written once; no zero-fill, no read-modify-write (VGG's 2x2 stride 2: 1.2x -> 2.0x PyTorch).
template <typename T>
void bprop_channels_last_taps_gather(const Pool2dProblem& p, const T* dy, const TapArgmax& argmax, T* dx) {
  const int64_t C = p.C, PQ = p.P * p.Q;
  const AxisCovers rows = axis_covers(p.P, p.stride_h, p.pad_h, p.dilation_h, p.R, p.H);
  const AxisCovers cols = axis_covers(p.Q, p.stride_w, p.pad_w, p.dilation_w, p.S, p.W);
  const int64_t c_vec = C / 8 * 8;
  at::parallel_for(0, p.N * p.H, grain_for(p.W * C * 4), [&](int64_t begin, int64_t end) {
    std::array<pool_avx2::Cover, Pool2dProblem::kMaxByteTaps> covers;  // at most R * S windows hold a pixel
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / p.H, h = item % p.H;
      const T* dy_image = dy + n * PQ * C;
      const uint8_t* taps_image = argmax.taps() + n * PQ * C;
      for (int64_t w = 0; w < p.W; ++w) {
        int64_t n_covers = 0;
        for (int64_t a = rows.begin[h]; a < rows.begin[h + 1]; ++a) {
          for (int64_t b = cols.begin[w]; b < cols.begin[w + 1]; ++b) {
            covers[n_covers++] = {rows.out[a] * p.Q + cols.out[b], static_cast<int32_t>(rows.tap[a] * p.S + cols.tap[b])};
          }
        }
        T* dx_pixel = dx + ((n * p.H + h) * p.W + w) * C;
        pool_avx2::bprop_channels_last_taps_pixel(dy_image, taps_image, covers.data(), n_covers, C, c_vec, dx_pixel);
        for (int64_t c = c_vec; c < C; ++c) {
          T sum = T(0);
          for (int64_t k = 0; k < n_covers; ++k) {
            const int64_t e = covers[k].j * C + c;
            if (taps_image[e] == covers[k].tap) sum += dy_image[e];
          }
          dx_pixel[c] = sum;
        }
      }
    }
  });
}

// Parallel over (image, channel block): a block of channels of one image is one thread's, scattered into
// in output order; blocks split the channels only when there are too few images to feed the threads.
template <typename T, typename Argmax>
void bprop_channels_last(const Pool2dProblem& p, const T* dy, const Argmax& argmax, T* dx) {
  const int64_t C = p.C, HW = p.H * p.W, PQ = p.P * p.Q;
  if constexpr (std::is_same_v<T, float> && std::is_same_v<Argmax, TapArgmax>) {
    // Only where windows do not overlap: with overlap the gather reads a window's taps and gradients
    // again for every pixel it shares (2.25x for 3x3 stride 2) and measured no faster than the scatter.
    const bool disjoint = (p.R - 1) * p.dilation_h < p.stride_h && (p.S - 1) * p.dilation_w < p.stride_w;
    if (disjoint && use_avx2()) return bprop_channels_last_taps_gather(p, dy, argmax, dx);
  }
  const int64_t threads = at::get_num_threads();
  int64_t blocks = std::max<int64_t>(1, (4 * threads + p.N - 1) / p.N);
  const int64_t min_block = channel_block<T>();
  blocks = std::max<int64_t>(1, std::min(blocks, C / min_block));
  const int64_t block = (C + blocks - 1) / blocks;
  blocks = (C + block - 1) / block;
  at::parallel_for(0, p.N * blocks, grain_for((HW + PQ) * block), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks, c0 = item % blocks * block, c1 = std::min(C, c0 + block);
      T* dx_image = dx + n * HW * C;
      const T* dy_image = dy + n * PQ * C;
      for (int64_t pixel = 0; pixel < HW; ++pixel) {
        std::fill(dx_image + pixel * C + c0, dx_image + pixel * C + c1, T(0));
      }
      for (int64_t out_h = 0, j = 0; out_h < p.P; ++out_h) {
        for (int64_t out_w = 0; out_w < p.Q; ++out_w, ++j) {
          argmax.scatter_pixel(n * PQ + j, out_h, out_w, C, c0, c1, dy_image + j * C, dx_image);
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------ ops

bool is_channels_last(at::MemoryFormat format) { return format == at::MemoryFormat::ChannelsLast; }

// The forward in either argmax form: int64 flat indices (max_pool2d_fprop) or uint8 tap numbers.
template <typename Index>
std::tuple<at::Tensor, at::Tensor> fprop_op(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                            at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, bool ceil_mode) {
  check_pool2d_input(input);
  const Pool2dProblem p = make_pool2d_problem(input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  if constexpr (kTapsForm<Index>) check_taps_fit_byte(op, p);
  const at::MemoryFormat format = input.suggest_memory_format();
  at::Tensor output = new_output({p.N, p.C, p.P, p.Q}, input.options(), format);
  at::Tensor indices = new_output({p.N, p.C, p.P, p.Q}, input.options().dtype(c10::CppTypeToScalarType<Index>()),
                                  format);
  if (p.N == 0) return {output, indices};
  advise_huge_pages(output);
  advise_huge_pages(indices);
  const at::Tensor x = input.contiguous(format);
  const bool unit_dilation = p.dilation_h == 1 && p.dilation_w == 1;
  AT_DISPATCH_ALL_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "max_pool2d", [&] {
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    scalar_t* yd = output.mutable_data_ptr<scalar_t>();
    Index* id = indices.mutable_data_ptr<Index>();
    if (is_channels_last(format)) {
      unit_dilation ? fprop_channels_last<scalar_t, Index, true>(p, xd, yd, id)
                    : fprop_channels_last<scalar_t, Index, false>(p, xd, yd, id);
    } else {
      unit_dilation ? fprop_nchw<scalar_t, Index, true>(p, xd, yd, id)
                    : fprop_nchw<scalar_t, Index, false>(p, xd, yd, id);
    }
  });
  return {output, indices};
}

// The backward from either argmax form; `argmax_name` is the argument's name in the schema.
template <typename Index>
at::Tensor bprop_op(const char* op, const char* argmax_name, const at::Tensor& grad_output, const at::Tensor& input,
                    const at::Tensor& argmax, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const Pool2dProblem p = make_pool2d_problem(input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  if constexpr (kTapsForm<Index>) check_taps_fit_byte(op, p);
  check_pool2d_bprop_tensors(op, grad_output, input, argmax, argmax_name, c10::CppTypeToScalarType<Index>(), p);
  const at::MemoryFormat format = input.suggest_memory_format();
  at::Tensor grad_input = new_output({p.N, p.C, p.H, p.W}, grad_output.options(), format);
  if (p.N == 0) return grad_input;
  advise_huge_pages(grad_input);
  const at::Tensor dy = grad_output.contiguous(format);
  const at::Tensor am = argmax.contiguous(format);
  using Argmax = std::conditional_t<kTapsForm<Index>, TapArgmax, FlatArgmax>;
  const Argmax reader(p, am.const_data_ptr<Index>());
  // Floating types only: check_pool2d_bprop_tensors refused an integer grad_output (and input).
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_output.scalar_type(), "max_pool2d_backward", [&] {
    const scalar_t* dyd = dy.const_data_ptr<scalar_t>();
    scalar_t* dxd = grad_input.mutable_data_ptr<scalar_t>();
    if (is_channels_last(format)) {
      bprop_channels_last<scalar_t>(p, dyd, reader, dxd);
    } else {
      bprop_nchw<scalar_t>(p, dyd, reader, dxd);
    }
  });
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_fprop(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                                    at::IntArrayRef dilation, bool ceil_mode) {
  return fprop_op<int64_t>("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_fprop_taps(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                                         at::IntArrayRef dilation, bool ceil_mode) {
  return fprop_op<uint8_t>("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode);
}

at::Tensor max_pool2d_bprop(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, bool ceil_mode) {
  return bprop_op<int64_t>("max_pool2d backward", "indices", grad_output, input, indices, kernel_size, stride,
                           padding, dilation, ceil_mode);
}

at::Tensor max_pool2d_bprop_taps(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& taps,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, bool ceil_mode) {
  return bprop_op<uint8_t>("max_pool2d backward", "taps", grad_output, input, taps, kernel_size, stride, padding,
                           dilation, ceil_mode);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("max_pool2d_fprop", &max_pool2d_fprop);
  m.impl("_max_pool2d_bprop", &max_pool2d_bprop);
  m.impl("_max_pool2d_fprop_taps", &max_pool2d_fprop_taps);
  m.impl("_max_pool2d_bprop_taps", &max_pool2d_bprop_taps);
}

}  // namespace fastconv::cpu
