// Depthwise convolution (groups == C == K: every channel convolved with its own R x S filter), forward and both
// gradients, float32 and float64, part of the "direct" algorithm. im2col runs depthwise as N*C GEMMs of
// 1 x R*S x P*Q, all overhead and no reuse. Two layouts, no layout copies of whole tensors:
//   - channels_last (NHWC): channels are the vector dimension, one load reads 8 channels of one pixel and the
//     weight is repacked as wt[r][s][c] so the same load serves the weight;
//   - fprop and dgrad are one gather kernel: each destination pixel sums, over a list of in-bounds taps,
//     source pixel x weight tap (fprop: the window's taps; dgrad: via Conv2dProblem::output_row_of_tap, the
//     outputs whose windows read this input pixel). No padding copy, no atomics, each output written once;
//   - wgrad reduces over (n, p, r, s, q) in that fixed order per channel group; batches split into a fixed
//     number of chunks chosen from the problem only, summed in chunk order, so the bits do not depend on the
//     thread count;
//   - NCHW: one (image, channel) plane at a time through a zero-padded, stride-phase-split copy that stays in
//     L1, output columns as the vector dimension (dgrad: grad_output spread by the stride, flipped filter; wgrad:
//     one channel per task, per-tap lane accumulators summed in a fixed order).
// AVX2+FMA (8 floats) chosen at run time; the same kernel source (conv2d_depthwise_kernels.h) is compiled a
// second time as the portable path (float64 always, float32 without AVX2).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "conv2d_cpu.h"
#include "cpu_features.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(FASTCONV_GEMM_NO_AVX2) && \
    (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FC_DW_HAVE_AVX2_CODE 1
#endif

namespace fastconv::cpu {

namespace {

std::atomic<bool> g_force_portable{false};

// A tap that lands inside the source: tap index (r or s) and the source row or column it reads.
struct DwTap {
  int64_t tap, src;
};

// Arguments of the gather kernel for one image: src and dst have channel stride 1.
template <typename T>
struct DwGather {
  const T* src;
  int64_t src_h, src_w;    // element strides of the source's rows and columns
  const T* wt;             // packed weight [R][S][C]
  int64_t S, C;
  const T* bias;           // [C] or null
  const DwTap* col_taps;   // [dst_cols][S]: the in-bounds column taps of each destination column
  const int* col_ntaps;    // [dst_cols]
  int64_t dst_cols, dst_w; // destination columns and their element stride
};

template <typename T>
struct DwWgrad {
  const Conv2dProblem* p;
  const T* dy;
  Strides4 dys;
  const T* x;
  Strides4 xs;
  const int64_t* q_begin;  // [S]: output columns whose tap s lands inside the input
  const int64_t* q_end;
  int64_t group;           // channels per task (4 vectors)
};

// One plane of the NCHW kernels: a zero-padded, phase-split copy buf[phase][row][col] of the source plane,
// read as out[i][j] <- buf[i * stride_h + r * dilation_h][tap_off[s] + j].
template <typename T>
struct DwPlane {
  int64_t rows, cols;       // output rows and columns of the plane
  int64_t R, S, stride_h, dilation_h;
  int64_t buf_w;            // elements per buffer row (one phase)
  const int64_t* tap_off;   // [S]: phase offset + column offset of tap s
};

// Portable vector policy: L lanes as a plain array; GCC vectorises the fixed-length loops for the baseline ISA.
template <typename T, int L>
struct VecPortable {
  static constexpr int kLanes = L;
  struct reg {
    T v[L];
  };
  static reg zero() {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = T(0);
    return r;
  }
  static reg load(const T* p) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = p[i];
    return r;
  }
  static reg load_n(const T* p, int n) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = i < n ? p[i] : T(0);
    return r;
  }
  static void store(T* p, const reg& a) {
    for (int i = 0; i < L; ++i) p[i] = a.v[i];
  }
  static void store_n(T* p, const reg& a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static reg fma(const reg& a, const reg& b, const reg& c) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static reg set1(T x) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = x;
    return r;
  }
  static reg add(const reg& a, const reg& b) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
};

}  // namespace

namespace dw_portable {
#include "conv2d_depthwise_kernels.h"
}  // namespace dw_portable

#ifdef FC_DW_HAVE_AVX2_CODE
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace dw_avx2 {

// 8 floats; the tail forms use AVX masked loads and stores, which never touch the masked-off lanes' memory.
struct VecAvx2 {
  static constexpr int kLanes = 8;
  using reg = __m256;
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg load(const float* p) { return _mm256_loadu_ps(p); }
  static inline reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static inline void store(float* p, reg a) { _mm256_storeu_ps(p, a); }
  static inline void store_n(float* p, reg a, int n) { _mm256_maskstore_ps(p, mask(n), a); }
  static inline reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg set1(float x) { return _mm256_set1_ps(x); }
};

#include "conv2d_depthwise_kernels.h"

}  // namespace dw_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace {

template <typename T>
using RowFn = void (*)(const DwGather<T>&, const DwTap*, int, T*);
template <typename T>
using GroupFn = void (*)(const DwWgrad<T>&, int64_t, int64_t, int64_t, T*);
template <typename T>
using PlaneFn = void (*)(const DwPlane<T>&, const T*, const T*, T, T*, int64_t, int64_t, T*);
template <typename T>
using PlaneWgradFn = void (*)(const DwPlane<T>&, const T*, const T*, int64_t, T*);

// The vector policy and lane count for T on this CPU.
template <typename T>
struct Kernels {
  RowFn<T> row;
  GroupFn<T> group;
  PlaneFn<T> plane;
  PlaneWgradFn<T> plane_wgrad;
  int64_t lanes;
};

template <typename T>
Kernels<T> kernels_for() {
  constexpr int L = std::is_same_v<T, float> ? 8 : 4;
  using VP = VecPortable<T, L>;
  return {&dw_portable::dw_gather_row<T, VP>, &dw_portable::dw_wgrad_group<T, VP>,
          &dw_portable::dw_plane_correlate<T, VP>, &dw_portable::dw_plane_wgrad<T, VP>, L};
}

template <>
Kernels<float> kernels_for<float>() {
#ifdef FC_DW_HAVE_AVX2_CODE
  if (cpu_has_avx2_fma() && !g_force_portable.load())
    return {&dw_avx2::dw_gather_row<float, dw_avx2::VecAvx2>, &dw_avx2::dw_wgrad_group<float, dw_avx2::VecAvx2>,
            &dw_avx2::dw_plane_correlate<float, dw_avx2::VecAvx2>, &dw_avx2::dw_plane_wgrad<float, dw_avx2::VecAvx2>,
            8};
#endif
  using VP = VecPortable<float, 8>;
  return {&dw_portable::dw_gather_row<float, VP>, &dw_portable::dw_wgrad_group<float, VP>,
          &dw_portable::dw_plane_correlate<float, VP>, &dw_portable::dw_plane_wgrad<float, VP>, 8};
}

// wt[r][s][c] = weight[c][0][r][s]: one contiguous vector of channels per tap.
at::Tensor pack_weight(const Conv2dProblem& p, const at::Tensor& weight) {
  return weight.reshape({p.C, p.R * p.S}).t().contiguous();
}

// An NHWC (channel stride 1) view of t, copying only when its channels are strided.
at::Tensor channels_innermost(const at::Tensor& t) {
  return t.stride(1) == 1 ? t : t.contiguous(at::MemoryFormat::ChannelsLast);
}

// dst[n][i][j][c] for i < dst rows, j < dst cols, from src through the tap lists. fprop: dst = y (P x Q), the
// taps of output (i, j) are the window's in-bounds ones; dgrad: dst = dx (H x W), the taps of input (i, j) are
// the (r, output row) pairs with output_row_of_tap(i, r) >= 0, likewise for columns.
template <typename T>
void gather(const Conv2dProblem& p, bool dgrad, const at::Tensor& src, const at::Tensor& wt, const T* bias,
            at::Tensor& dst) {
  const int64_t rows = dgrad ? p.H : p.P, cols = dgrad ? p.W : p.Q;
  const int64_t R = p.R, S = p.S;
  auto row_tap = [&](int64_t i, int64_t r) -> int64_t {
    if (dgrad) return p.output_row_of_tap(i, r);
    const int64_t h = i * p.stride_h - p.pad_h + r * p.dilation_h;
    return h >= 0 && h < p.H ? h : -1;
  };
  std::vector<DwTap> col_taps(std::max<int64_t>(1, cols * S));
  std::vector<int> col_ntaps(std::max<int64_t>(1, cols));
  for (int64_t j = 0; j < cols; ++j) {
    int n = 0;
    for (int64_t s = 0; s < S; ++s) {
      int64_t src_col;
      if (dgrad) {
        src_col = p.output_col_of_tap(j, s);
      } else {
        src_col = j * p.stride_w - p.pad_w + s * p.dilation_w;
        if (src_col < 0 || src_col >= p.W) src_col = -1;
      }
      if (src_col >= 0) col_taps[j * S + n++] = {s, src_col};
    }
    col_ntaps[j] = n;
  }
  const Kernels<T> k = kernels_for<T>();
  const Strides4 ss = strides_of(src), ds = strides_of(dst);
  DwGather<T> base;
  base.src = src.const_data_ptr<T>();
  base.src_h = ss.h;
  base.src_w = ss.w;
  base.wt = wt.const_data_ptr<T>();
  base.S = S;
  base.C = p.C;
  base.bias = bias;
  base.col_taps = col_taps.data();
  base.col_ntaps = col_ntaps.data();
  base.dst_cols = cols;
  base.dst_w = ds.w;
  T* dst_ptr = dst.mutable_data_ptr<T>();
  at::parallel_for(0, p.N * rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<DwTap> row_taps(R);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / rows, i = t % rows;
      int nr = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int64_t src_row = row_tap(i, r);
        if (src_row >= 0) row_taps[nr++] = {r, src_row};
      }
      DwGather<T> a = base;
      a.src += n * ss.n;
      k.row(a, row_taps.data(), nr, dst_ptr + n * ds.n + i * ds.h);
    }
  });
}

// The padded, phase-split plane buffer of the NCHW kernels. fprop / wgrad: the input plane at (pad_h, pad_w)
// inside rows x cols that hold every window, columns split into stride_w phases. dgrad: grad_output spread out
// by the stride (zeros between) at offsets (R-1)*d_h - pad_h, (S-1)*d_w - pad_w, read as a stride-1
// correlation with the flipped filter, so dx[h][w] gathers exactly the outputs whose windows cover (h, w).
struct PlaneGeometry {
  int64_t rows, cols, phases, buf_w, row0, col0;
  std::vector<int64_t> tap_off;
  int64_t size() const { return phases * rows * buf_w; }
  int64_t index(int64_t u, int64_t j) const { return (j % phases) * rows * buf_w + u * buf_w + j / phases; }
};

PlaneGeometry plane_geometry(const Conv2dProblem& p, bool dgrad) {
  PlaneGeometry g;
  if (dgrad) {
    g.rows = p.H + (p.R - 1) * p.dilation_h;
    g.cols = p.W + (p.S - 1) * p.dilation_w;
    g.phases = 1;
    g.row0 = (p.R - 1) * p.dilation_h - p.pad_h;
    g.col0 = (p.S - 1) * p.dilation_w - p.pad_w;
  } else {
    g.rows = std::max(p.H + p.pad_h, (p.P - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1);
    g.cols = std::max(p.W + p.pad_w, (p.Q - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1);
    g.phases = p.stride_w;
    g.row0 = p.pad_h;
    g.col0 = p.pad_w;
  }
  g.buf_w = (g.cols + g.phases - 1) / g.phases;
  g.tap_off.resize(p.S);
  for (int64_t s = 0; s < p.S; ++s) {
    const int64_t j = s * p.dilation_w;
    g.tap_off[s] = (j % g.phases) * g.rows * g.buf_w + j / g.phases;
  }
  return g;
}

// Copies plane src (rows x cols, strides sh, sw) into buf: element (i, k) to buffer row row0 + i * step,
// column col0 + k * step; positions outside the buffer are dropped (they feed no output). buf's other entries
// are never written, so they stay the zeros of the first fill.
template <typename T>
void fill_plane(const PlaneGeometry& g, const T* src, int64_t rows, int64_t cols, int64_t sh, int64_t sw,
                int64_t step_h, int64_t step_w, T* buf) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t u = g.row0 + i * step_h;
    if (u < 0 || u >= g.rows) continue;
    const T* s_row = src + i * sh;
    if (g.phases == 1 && step_w == 1 && sw == 1 && g.col0 >= 0 && g.col0 + cols <= g.cols) {
      std::copy(s_row, s_row + cols, buf + u * g.buf_w + g.col0);
      continue;
    }
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t j = g.col0 + k * step_w;
      if (j >= 0 && j < g.cols) buf[g.index(u, j)] = s_row[k * sw];
    }
  }
}

// NCHW fprop (dgrad = false) or dgrad (true): one (image, channel) plane per task through the plane buffer.
template <typename T>
void planes(const Conv2dProblem& p, bool dgrad, const at::Tensor& src, const at::Tensor& weight, const T* bias,
            at::Tensor& dst) {
  const PlaneGeometry g = plane_geometry(p, dgrad);
  const Kernels<T> k = kernels_for<T>();
  const at::Tensor wts = (dgrad ? weight.flip({2, 3}) : weight).reshape({p.C, p.R * p.S}).contiguous();
  DwPlane<T> a;
  a.rows = dgrad ? p.H : p.P;
  a.cols = dgrad ? p.W : p.Q;
  a.R = p.R;
  a.S = p.S;
  a.stride_h = dgrad ? 1 : p.stride_h;
  a.dilation_h = p.dilation_h;
  a.buf_w = g.buf_w;
  a.tap_off = g.tap_off.data();
  const Strides4 ss = strides_of(src), ds = strides_of(dst);
  const int64_t src_rows = dgrad ? p.P : p.H, src_cols = dgrad ? p.Q : p.W;
  const int64_t step_h = dgrad ? p.stride_h : 1, step_w = dgrad ? p.stride_w : 1;
  const T* s_ptr = src.const_data_ptr<T>();
  const T* w_ptr = wts.const_data_ptr<T>();
  T* d_ptr = dst.mutable_data_ptr<T>();
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.size(), T(0)), row_tmp(std::max<int64_t>(1, a.cols));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / p.C, c = t % p.C;
      fill_plane(g, s_ptr + n * ss.n + c * ss.c, src_rows, src_cols, ss.h, ss.w, step_h, step_w, buf.data());
      k.plane(a, buf.data(), w_ptr + c * p.R * p.S, bias ? bias[c] : T(0), d_ptr + n * ds.n + c * ds.c, ds.h, ds.w,
              row_tmp.data());
    }
  });
}

// fprop / dgrad: the NHWC gather when the destination's channels are contiguous, else the NCHW plane kernel.
template <typename T>
void gather_into(const Conv2dProblem& p, bool dgrad, const at::Tensor& src, const at::Tensor& weight,
                 const T* bias, at::Tensor& dst) {
  if (dst.stride(1) == 1) {
    gather<T>(p, dgrad, channels_innermost(src), pack_weight(p, weight), bias, dst);
  } else {
    planes<T>(p, dgrad, src, weight, bias, dst);
  }
}

// NCHW wgrad: one channel per task, images in order; per image the input plane goes through the plane buffer
// and dy x shifted input is accumulated per tap in vector lanes, summed lane by lane at the end.
template <typename T>
void wgrad_planes(const Conv2dProblem& p, const at::Tensor& dy_in, const at::Tensor& x, at::Tensor& dw) {
  const at::Tensor dy = dy_in.stride(3) == 1 ? dy_in : dy_in.contiguous();
  const PlaneGeometry g = plane_geometry(p, false);
  const Kernels<T> k = kernels_for<T>();
  DwPlane<T> a;
  a.rows = p.P;
  a.cols = p.Q;
  a.R = p.R;
  a.S = p.S;
  a.stride_h = p.stride_h;
  a.dilation_h = p.dilation_h;
  a.buf_w = g.buf_w;
  a.tap_off = g.tap_off.data();
  const Strides4 xs = strides_of(x), dys = strides_of(dy), ws = strides_of(dw);
  const T* x_ptr = x.const_data_ptr<T>();
  const T* dy_ptr = dy.const_data_ptr<T>();
  T* out = dw.mutable_data_ptr<T>();
  const int64_t taps = p.R * p.S, L = k.lanes;
  at::parallel_for(0, p.C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.size(), T(0)), acc(taps * L);
    for (int64_t c = begin; c < end; ++c) {
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t n = 0; n < p.N; ++n) {
        fill_plane(g, x_ptr + n * xs.n + c * xs.c, p.H, p.W, xs.h, xs.w, 1, 1, buf.data());
        k.plane_wgrad(a, buf.data(), dy_ptr + n * dys.n + c * dys.c, dys.h, acc.data());
      }
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) {
          T sum = T(0);
          for (int64_t l = 0; l < L; ++l) sum += acc[(r * p.S + s) * L + l];
          out[c * ws.n + r * ws.h + s * ws.w] = sum;
        }
    }
  });
}

// Batch chunks of wgrad: enough (group, chunk) tasks to keep cores busy when C is small, from the problem only.
int64_t wgrad_batch_chunks(const Conv2dProblem& p, int64_t groups) {
  constexpr int64_t kTargetTasks = 32;
  return std::max<int64_t>(1, std::min<int64_t>(p.N, (kTargetTasks + groups - 1) / groups));
}

template <typename T>
void wgrad(const Conv2dProblem& p, const at::Tensor& dy_in, const at::Tensor& x_in, at::Tensor& dw) {
  const at::Tensor dy = channels_innermost(dy_in), x = channels_innermost(x_in);
  const Kernels<T> k = kernels_for<T>();
  std::vector<int64_t> q_begin(p.S), q_end(p.S);
  for (int64_t s = 0; s < p.S; ++s) {
    // input column of output q under tap s: q * stride + off; keep 0 <= column < W.
    const int64_t off = s * p.dilation_w - p.pad_w;
    const int64_t lo = off >= 0 ? 0 : (-off + p.stride_w - 1) / p.stride_w;
    const int64_t hi = p.W - 1 - off < 0 ? 0 : (p.W - 1 - off) / p.stride_w + 1;
    q_begin[s] = std::min(lo, p.Q);
    q_end[s] = std::max(q_begin[s], std::min(hi, p.Q));
  }
  DwWgrad<T> a;
  a.p = &p;
  a.dy = dy.const_data_ptr<T>();
  a.dys = strides_of(dy);
  a.x = x.const_data_ptr<T>();
  a.xs = strides_of(x);
  a.q_begin = q_begin.data();
  a.q_end = q_end.data();
  a.group = 4 * k.lanes;
  const int64_t taps = p.R * p.S, groups = (p.C + a.group - 1) / a.group;
  const int64_t chunks = wgrad_batch_chunks(p, groups);
  std::vector<T> partial(chunks * groups * taps * a.group);
  at::parallel_for(0, groups * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / chunks, chunk = t % chunks;
      k.group(a, g * a.group, chunk * p.N / chunks, (chunk + 1) * p.N / chunks,
              partial.data() + (chunk * groups + g) * taps * a.group);
    }
  });
  // dw[c][0][r][s] = sum over chunks, in chunk order.
  T* out = dw.mutable_data_ptr<T>();
  const Strides4 ws = strides_of(dw);
  for (int64_t c = 0; c < p.C; ++c) {
    const int64_t g = c / a.group, lane = c % a.group;
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        T acc = T(0);
        for (int64_t chunk = 0; chunk < chunks; ++chunk)
          acc += partial[((chunk * groups + g) * taps + r * p.S + s) * a.group + lane];
        out[c * ws.n + r * ws.h + s * ws.w] = acc;
      }
  }
}

}  // namespace

bool depthwise_supported(const Conv2dProblem& p, at::ScalarType dtype) {
  // Zero padding only: its tap lists skip the padding (other modes take the direct loops, which map it).
  return (dtype == at::kFloat || dtype == at::kDouble) && p.groups == p.C && p.K == p.C &&
         p.padding_mode == PaddingMode::Zeros;
}

bool depthwise_uses_avx2() {
#ifdef FC_DW_HAVE_AVX2_CODE
  return cpu_has_avx2_fma() && !g_force_portable.load();
#else
  return false;
#endif
}

void set_depthwise_force_portable(bool force) { g_force_portable.store(force); }

int64_t depthwise_workspace_bytes(const Conv2dProblem& p, Conv2dOperator pass, bool channels_last, int64_t elem_size) {
  // NCHW: one padded plane buffer per thread (plus the lane accumulators of wgrad); no full-tensor copies.
  if (!channels_last) {
    const PlaneGeometry g = plane_geometry(p, pass == Conv2dOperator::Dgrad);
    return elem_size * at::get_num_threads() * (g.size() + p.R * p.S * 8) + elem_size * p.C * p.R * p.S;
  }
  if (pass == Conv2dOperator::Wgrad) {
    const int64_t group = elem_size == 4 ? 32 : 16, groups = (p.C + group - 1) / group;
    return elem_size * wgrad_batch_chunks(p, groups) * groups * group * p.R * p.S;
  }
  return elem_size * p.C * p.R * p.S;  // the packed weight
}

void conv2d_fprop_depthwise(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, input.scalar_type()));
  if (output.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_depthwise", [&] {
    const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
    gather_into<scalar_t>(p, false, input, weight, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, output);
  });
}

void conv2d_dgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::Tensor& grad_input) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, grad_output.scalar_type()));
  if (grad_input.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_depthwise", [&] {
    gather_into<scalar_t>(p, true, grad_output, weight, nullptr, grad_input);
  });
}

void conv2d_wgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                            at::Tensor& grad_weight) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, grad_output.scalar_type()));
  if (grad_weight.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_depthwise", [&] {
    if (input.stride(1) == 1)
      wgrad<scalar_t>(p, grad_output, input, grad_weight);
    else
      wgrad_planes<scalar_t>(p, grad_output, input, grad_weight);
  });
}

}  // namespace fastconv::cpu
