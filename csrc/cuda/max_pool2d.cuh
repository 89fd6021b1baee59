// max_pool2d forward and backward CUDA kernels, NCHW and channels_last (NHWC), written once.
//
// How it is built and tested:
//   * nvcc compiles this header through csrc/cuda/max_pool2d_cuda.cu (setup.py with FASTCONV_CUDA=1, or
//     only that file with the nvcc line of build/temp*/build.ninja), which registers the kernels as
//     torch.ops.fastconv.max_pool2d_fprop / _max_pool2d_bprop and the taps pair _max_pool2d_fprop_taps /
//     _max_pool2d_bprop_taps for CUDA tensors.
//   * g++ compiles the very same source through csrc/emulator/max_pool2d_emulated.cpp, where the SIMT
//     emulator (csrc/emulator/simt.h) runs every GPU thread as a CPU fiber; that registers
//     torch.ops.fastconv_emulated.* for CPU tensors (Python: fastconv.emulation.max_pool2d).
//   * tests/test_cuda_max_pool2d.py checks values AND indices against torch.nn.functional.max_pool2d and
//     fastconv/reference.py through the emulator (runs everywhere), and the same tests on a real GPU
//     (marked needs_cuda, skipped without one), CPU-vs-CUDA included.
//
// Semantics are PyTorch's: the running max starts at -inf with the index of the window's first in-bounds
// tap; a strictly greater value replaces it (ties keep the FIRST maximum); a NaN always replaces it (the
// LAST NaN in scan order wins). Values are compared in float (double for double). Integer inputs (the
// forward only, as PyTorch's) are compared in their own type, from lowest() instead of -inf. Indices are
// int64 flat positions h * W + w in the input plane; a dilated window lying wholly in the padding yields
// -inf (lowest()) and the index PyTorch computes, which may lie outside the plane. The taps pair records
// the same argmax as its tap number in the window (tap 0 for a window wholly in the padding, outside the
// input too). The backward is a gather: each input element sums, in a fixed order, the gradients of the
// windows that really contain it as a tap and whose argmax is it. It never dereferences an index or a tap,
// so it cannot read or write out of bounds, needs no atomics and is bitwise deterministic. A window wholly
// in the padding has no input taps, so its gradient goes nowhere.
//
// Every kernel is templated on index_t: int64_t in general, int32_t only when the host has proven with
// pool2d_fits_int32 that every offset and every intermediate coordinate fits (the fast path); and on the
// form of the argmax (FlatIndexArgmax: max_pool2d_fprop's int64 index; TapArgmax: _max_pool2d_fprop_taps'
// uint8 tap number r * S + s in the window), which only changes what is stored and what is compared.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "../conv2d_problem.h"
#include "launch.cuh"

namespace fastconv::FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kPoolThreadsPerBlock = 256;

// Comparison and accumulation type: float for float, half and bfloat16; double for double; an integer
// type itself (float would round int32 and int64 values, and ties would then pick the wrong index).
template <typename T>
struct PoolAccumulate {
  using type = std::conditional_t<std::is_integral_v<T> || std::is_same_v<T, double>, T, float>;
};

// Where the running max starts, and what the padding is: -inf, or lowest() for integers, which have no
// infinity (PyTorch's choice: a window wholly in the padding outputs it).
template <typename acc_t>
FASTCONV_HD inline acc_t pool_padding_value() {
  if constexpr (std::is_integral_v<acc_t>) {
    return std::numeric_limits<acc_t>::lowest();
  } else {
    return -std::numeric_limits<acc_t>::infinity();
  }
}

template <typename T>
FASTCONV_HD inline bool pool_is_nan(T v) {
  if constexpr (std::is_integral_v<T>) {
    return false;
  } else {
    return v != v;
  }
}

// First tap coordinate >= 0 of a window starting at `start` (< 0 in the padding) with this dilation.
template <typename index_t>
FASTCONV_HD inline index_t first_in_bounds(index_t start, index_t dilation) {
  return start < 0 ? start + ((-start + dilation - 1) / dilation) * dilation : start;
}

// Window range [first, last) of the output positions whose taps can reach input coordinate `x`.
template <typename index_t>
FASTCONV_HD inline void windows_covering(index_t x, index_t pad, index_t kernel, index_t stride, index_t dilation,
                                         index_t out_size, index_t& first, index_t& last) {
  const index_t span = (kernel - 1) * dilation + 1;
  first = x + pad < span ? 0 : (x + pad - span) / stride + 1;
  last = (x + pad) / stride + 1;
  if (last > out_size) last = out_size;
}

// Local copies of the problem in index_t, so the 32-bit path does all its arithmetic in 32 bits.
template <typename index_t>
struct PoolGeometry {
  index_t C, H, W, R, S, P, Q, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  FASTCONV_HD explicit PoolGeometry(const Pool2dProblem& p)
      : C(static_cast<index_t>(p.C)), H(static_cast<index_t>(p.H)), W(static_cast<index_t>(p.W)),
        R(static_cast<index_t>(p.R)), S(static_cast<index_t>(p.S)), P(static_cast<index_t>(p.P)),
        Q(static_cast<index_t>(p.Q)), pad_h(static_cast<index_t>(p.pad_h)), pad_w(static_cast<index_t>(p.pad_w)),
        stride_h(static_cast<index_t>(p.stride_h)), stride_w(static_cast<index_t>(p.stride_w)),
        dilation_h(static_cast<index_t>(p.dilation_h)), dilation_w(static_cast<index_t>(p.dilation_w)) {}
};

// The two forms of the argmax. of(g, h, w, dh, dw) is the record of input element (h, w), which lies dh
// rows and dw columns (in elements) past its window's origin; the forward stores it for the winner and the
// backward compares it for each window that has (h, w) as a real tap. of_empty(g, h0, w0) is the record of
// a window without any in-bounds tap, whose first in-bounds coordinates would be (h0, w0).
struct FlatIndexArgmax {
  using type = int64_t;
  template <typename index_t>
  FASTCONV_HD static int64_t of(const PoolGeometry<index_t>& g, index_t h, index_t w, index_t, index_t) {
    // In 64 bits: of_empty's index may lie past the plane.
    return static_cast<int64_t>(h) * g.W + w;
  }
  // PyTorch's index, outside the plane (or aliasing a pixel no tap of the window is on).
  template <typename index_t>
  FASTCONV_HD static int64_t of_empty(const PoolGeometry<index_t>& g, index_t h0, index_t w0) {
    return of(g, h0, w0, index_t(0), index_t(0));
  }
};

struct TapArgmax {
  using type = uint8_t;
  // The inverse of Pool2dProblem::tap_row/tap_col: fits a byte since the host checked taps_fit_byte().
  template <typename index_t>
  FASTCONV_HD static uint8_t of(const PoolGeometry<index_t>& g, index_t, index_t, index_t dh, index_t dw) {
    return static_cast<uint8_t>(dh / g.dilation_h * g.S + dw / g.dilation_w);
  }
  // Tap 0, the window's origin: outside the input like all its taps, so no element's tap matches it.
  template <typename index_t>
  FASTCONV_HD static uint8_t of_empty(const PoolGeometry<index_t>&, index_t, index_t) {
    return 0;
  }
};

// The scan of one window, shared by both layouts. `plane` points at element (0, 0) of the input plane and
// `pixel_stride` is the distance between horizontally adjacent pixels (1 for NCHW, C for channels_last).
template <typename Argmax, typename scalar_t, typename index_t>
FASTCONV_HD inline void pool_window(const scalar_t* __restrict__ plane, index_t pixel_stride,
                                    const PoolGeometry<index_t>& g, index_t p, index_t q, scalar_t& out_value,
                                    typename Argmax::type& out_argmax) {
  using acc_t = typename PoolAccumulate<scalar_t>::type;
  const index_t h_start = p * g.stride_h - g.pad_h;
  const index_t w_start = q * g.stride_w - g.pad_w;
  const index_t h_end = h_start + (g.R - 1) * g.dilation_h + 1 < g.H ? h_start + (g.R - 1) * g.dilation_h + 1 : g.H;
  const index_t w_end = w_start + (g.S - 1) * g.dilation_w + 1 < g.W ? w_start + (g.S - 1) * g.dilation_w + 1 : g.W;
  const index_t h0 = first_in_bounds(h_start, g.dilation_h);
  const index_t w0 = first_in_bounds(w_start, g.dilation_w);
  acc_t max_value = pool_padding_value<acc_t>();
  index_t max_h = h0, max_w = w0;
  for (index_t h = h0; h < h_end; h += g.dilation_h) {
    for (index_t w = w0; w < w_end; w += g.dilation_w) {
      const acc_t v = static_cast<acc_t>(plane[(h * g.W + w) * pixel_stride]);
      if (v > max_value || pool_is_nan(v)) {
        max_value = v;
        max_h = h;
        max_w = w;
      }
    }
  }
  out_value = static_cast<scalar_t>(max_value);
  out_argmax = h0 < h_end && w0 < w_end ? Argmax::of(g, max_h, max_w, max_h - h_start, max_w - w_start)
                                        : Argmax::of_empty(g, h0, w0);
}

// The gather of one input element (h, w), shared by both layouts: the sum, over windows in (p, q) order, of
// the gradients of windows that have (h, w) as a real tap and chose it. `grad_plane`/`argmax_plane` point
// at output (0, 0) of the plane; `pixel_stride` as in pool_window.
template <typename Argmax, typename scalar_t, typename index_t>
FASTCONV_HD inline scalar_t unpool_gather(const scalar_t* __restrict__ grad_plane,
                                          const typename Argmax::type* __restrict__ argmax_plane,
                                          index_t pixel_stride, const PoolGeometry<index_t>& g, index_t h, index_t w) {
  using acc_t = typename PoolAccumulate<scalar_t>::type;
  index_t p_first, p_last, q_first, q_last;
  windows_covering(h, g.pad_h, g.R, g.stride_h, g.dilation_h, g.P, p_first, p_last);
  windows_covering(w, g.pad_w, g.S, g.stride_w, g.dilation_w, g.Q, q_first, q_last);
  acc_t sum = 0;
  for (index_t p = p_first; p < p_last; ++p) {
    // h's offset from the window's first row; with dilation, a window may straddle h without a tap on it.
    // Only real taps count, which also keeps the made-up index of an all-padding window from aliasing a
    // real pixel.
    const index_t dh = h + g.pad_h - p * g.stride_h;
    if (g.dilation_h > 1 && dh % g.dilation_h != 0) continue;
    for (index_t q = q_first; q < q_last; ++q) {
      const index_t dw = w + g.pad_w - q * g.stride_w;
      if (g.dilation_w > 1 && dw % g.dilation_w != 0) continue;
      const index_t o = (p * g.Q + q) * pixel_stride;
      if (argmax_plane[o] == Argmax::of(g, h, w, dh, dw)) sum += static_cast<acc_t>(grad_plane[o]);
    }
  }
  return static_cast<scalar_t>(sum);
}

// Forward, NCHW: one thread per output element, consecutive threads take consecutive q, so stores are
// coalesced and loads nearly so (stride_w apart); a grid-stride loop covers any size with a capped grid.
template <typename Argmax, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreadsPerBlock)
    max_pool2d_fprop_nchw_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ output,
                                 typename Argmax::type* __restrict__ argmax, Pool2dProblem problem,
                                 index_t total) {
  const PoolGeometry<index_t> g(problem);
  FASTCONV_GRID_STRIDE_LOOP(index_t, i, total) {
    const index_t q = i % g.Q;
    const index_t p = (i / g.Q) % g.P;
    const index_t nc = i / (g.Q * g.P);
    pool_window<Argmax>(input + nc * g.H * g.W, index_t(1), g, p, q, output[i], argmax[i]);
  }
}

// Forward, channels_last: one thread per (n, p, q, c) with c fastest, so a warp reads C-contiguous input
// pixels and writes contiguous outputs: fully coalesced, where the NCHW mapping would stride by H*W.
template <typename Argmax, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreadsPerBlock)
    max_pool2d_fprop_nhwc_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ output,
                                 typename Argmax::type* __restrict__ argmax, Pool2dProblem problem,
                                 index_t total) {
  const PoolGeometry<index_t> g(problem);
  FASTCONV_GRID_STRIDE_LOOP(index_t, i, total) {
    const index_t c = i % g.C;
    const index_t pixel = i / g.C;  // (n * P + p) * Q + q
    const index_t q = pixel % g.Q;
    const index_t p = (pixel / g.Q) % g.P;
    const index_t n = pixel / (g.Q * g.P);
    pool_window<Argmax>(input + n * g.H * g.W * g.C + c, g.C, g, p, q, output[i], argmax[i]);
  }
}

// Backward, NCHW: one thread per input element gathers from the few windows covering it: no atomics, a
// fixed summation order (deterministic), coalesced stores over w.
template <typename Argmax, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreadsPerBlock)
    max_pool2d_bprop_nchw_kernel(const scalar_t* __restrict__ grad_output,
                                 const typename Argmax::type* __restrict__ argmax,
                                 scalar_t* __restrict__ grad_input, Pool2dProblem problem, index_t total) {
  const PoolGeometry<index_t> g(problem);
  FASTCONV_GRID_STRIDE_LOOP(index_t, i, total) {
    const index_t w = i % g.W;
    const index_t h = (i / g.W) % g.H;
    const index_t nc = i / (g.W * g.H);
    const index_t plane = nc * g.P * g.Q;
    grad_input[i] = unpool_gather<Argmax>(grad_output + plane, argmax + plane, index_t(1), g, h, w);
  }
}

// Backward, channels_last: the same gather with c fastest, so the grad_output and argmax reads of a warp are
// C-contiguous and the stores contiguous.
template <typename Argmax, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kPoolThreadsPerBlock)
    max_pool2d_bprop_nhwc_kernel(const scalar_t* __restrict__ grad_output,
                                 const typename Argmax::type* __restrict__ argmax,
                                 scalar_t* __restrict__ grad_input, Pool2dProblem problem, index_t total) {
  const PoolGeometry<index_t> g(problem);
  FASTCONV_GRID_STRIDE_LOOP(index_t, i, total) {
    const index_t c = i % g.C;
    const index_t pixel = i / g.C;  // (n * H + h) * W + w
    const index_t w = pixel % g.W;
    const index_t h = (pixel / g.W) % g.H;
    const index_t n = pixel / (g.W * g.H);
    const index_t plane = n * g.P * g.Q * g.C + c;
    grad_input[i] = unpool_gather<Argmax>(grad_output + plane, argmax + plane, g.C, g, h, w);
  }
}

// Whether the int32 path is safe: every element offset of input and output, every offset a grid-stride
// loop reaches before it stops (total + threads in flight), and every window coordinate the kernels form
// (start, end, first tap, stride multiples) fit in int32. Otherwise the kernels run with int64.
inline bool pool2d_fits_int32(const Pool2dProblem& p, int64_t threads_in_flight) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t in_numel = p.N * p.C * p.H * p.W;
  const int64_t out_numel = p.N * p.C * p.P * p.Q;
  const auto coordinates_fit = [&](int64_t size, int64_t out, int64_t pad, int64_t stride, int64_t kernel,
                                   int64_t dilation) {
    // Window starts reach (out - 1) * stride - pad, ends start + (kernel - 1) * dilation + 1, and the
    // backward forms x + pad and (out_size) * stride; all are bounded by this sum.
    return size + pad + out * stride + kernel * dilation + dilation <= kMax;
  };
  return in_numel + threads_in_flight <= kMax && out_numel + threads_in_flight <= kMax &&
         coordinates_fit(p.H, p.P, p.pad_h, p.stride_h, p.R, p.dilation_h) &&
         coordinates_fit(p.W, p.Q, p.pad_w, p.stride_w, p.S, p.dilation_w);
}

}  // namespace fastconv::FASTCONV_KERNEL_NAMESPACE
