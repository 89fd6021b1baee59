// Depthwise convolution (groups == C == K: every channel convolved with its own R x S filter), forward and both
// gradients, float32 and float64, part of the "direct" algorithm. im2col runs depthwise as N*C GEMMs of
// 1 x R*S x P*Q, all overhead and no reuse; here channels are the vector dimension instead:
//   - the layout is NHWC (channels_last; an NCHW tensor is copied once), so one vector load reads 8 channels of
//     one pixel and the weight is repacked as wt[r][s][c] so the same load serves the weight;
//   - fprop and dgrad are one gather kernel: each destination pixel sums, over a list of in-bounds taps,
//     source pixel x weight tap (fprop: the window's taps; dgrad: via Conv2dProblem::output_row_of_tap, the
//     outputs whose windows read this input pixel). No padding copy, no atomics, each output written once;
//   - wgrad reduces over (n, p, r, s, q) in that fixed order per channel group; batches split into a fixed
//     number of chunks chosen from the problem only, summed in chunk order, so the bits do not depend on the
//     thread count.
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

// The vector policy and lane count for T on this CPU.
template <typename T>
struct Kernels {
  RowFn<T> row;
  GroupFn<T> group;
  int64_t lanes;
};

template <typename T>
Kernels<T> kernels_for() {
  constexpr int L = std::is_same_v<T, float> ? 8 : 4;
  using VP = VecPortable<T, L>;
  return {&dw_portable::dw_gather_row<T, VP>, &dw_portable::dw_wgrad_group<T, VP>, L};
}

template <>
Kernels<float> kernels_for<float>() {
#ifdef FC_DW_HAVE_AVX2_CODE
  if (cpu_has_avx2_fma() && !g_force_portable.load())
    return {&dw_avx2::dw_gather_row<float, dw_avx2::VecAvx2>, &dw_avx2::dw_wgrad_group<float, dw_avx2::VecAvx2>, 8};
#endif
  using VP = VecPortable<float, 8>;
  return {&dw_portable::dw_gather_row<float, VP>, &dw_portable::dw_wgrad_group<float, VP>, 8};
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

// Runs the gather into dst, through an NHWC buffer when dst's channels are strided (NCHW).
template <typename T>
void gather_into(const Conv2dProblem& p, bool dgrad, const at::Tensor& src, const at::Tensor& wt, const T* bias,
                 at::Tensor& dst) {
  if (dst.stride(1) == 1) {
    gather<T>(p, dgrad, channels_innermost(src), wt, bias, dst);
    return;
  }
  // new_output: poisoned under tests, so an element the kernel skips shows through the copy too.
  at::Tensor tmp = new_output(dst.sizes(), dst.options(), at::MemoryFormat::ChannelsLast);
  gather<T>(p, dgrad, channels_innermost(src), wt, bias, tmp);
  dst.copy_(tmp);
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
  return (dtype == at::kFloat || dtype == at::kDouble) && p.groups == p.C && p.K == p.C;
}

bool depthwise_uses_avx2() {
#ifdef FC_DW_HAVE_AVX2_CODE
  return cpu_has_avx2_fma() && !g_force_portable.load();
#else
  return false;
#endif
}

void set_depthwise_force_portable(bool force) { g_force_portable.store(force); }

int64_t depthwise_workspace_bytes(const Conv2dProblem& p, Conv2dPass pass, bool channels_last, int64_t elem_size) {
  const int64_t packed_weight = p.C * p.R * p.S;
  if (pass == Conv2dPass::Wgrad) {
    const int64_t group = elem_size == 4 ? 32 : 16, groups = (p.C + group - 1) / group;
    return elem_size * (wgrad_batch_chunks(p, groups) * groups * group * p.R * p.S +
                        (channels_last ? 0 : p.input_numel() + p.output_numel()));
  }
  // NCHW: an NHWC copy of the source and an NHWC destination buffer.
  return elem_size * (packed_weight + (channels_last ? 0 : p.input_numel() + p.output_numel()));
}

void conv2d_fprop_depthwise(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, at::Tensor& output) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, input.scalar_type()));
  if (output.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_depthwise", [&] {
    const at::Tensor wt = pack_weight(p, weight);
    const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
    gather_into<scalar_t>(p, false, input, wt, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, output);
  });
}

void conv2d_dgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::Tensor& grad_input) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, grad_output.scalar_type()));
  if (grad_input.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_depthwise", [&] {
    const at::Tensor wt = pack_weight(p, weight);
    gather_into<scalar_t>(p, true, grad_output, wt, nullptr, grad_input);
  });
}

void conv2d_wgrad_depthwise(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                            at::Tensor& grad_weight) {
  TORCH_INTERNAL_ASSERT(depthwise_supported(p, grad_output.scalar_type()));
  if (grad_weight.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_depthwise", [&] {
    wgrad<scalar_t>(p, grad_output, input, grad_weight);
  });
}

}  // namespace fastconv::cpu
