// im2col + GEMM on the CPU, per (image, group), with the sizes of the implicit-GEMM mapping (implicit_gemm,
// conv2d_problem.h; fprop's M = N·P·Q, N = Kg, K = CgRS; wgrad's M = Kg, N = CgRS, K = N·P·Q):
//   fprop  y[Kg, PQ]    = W[Kg, CgRS] · col[CgRS, PQ]            (fprop's GEMM transposed, per image)
//   dgrad  dcol[CgRS, PQ] = Wᵀ · dy[Kg, PQ], then col2im as a gather (deterministic): through columns the
//          reduction is over Kg (fprop's N) and col2im sums the R·S taps, not dgrad's implicit K = Kg·R·S
//   wgrad  dW[Kg, CgRS] += dy[Kg, PQ] · colᵀ, images summed in order (deterministic)
// The GEMM sees the output through its strides, so NCHW and channels_last outputs need no transpose.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "conv2d_cpu.h"
#include "gemm/gemm.h"
#include "gemm/gemm_blas.h"
#include "im2col.h"

namespace fastconv::cpu {

namespace {

template <typename T>
using GemmFn = void (*)(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, T*,
                        int64_t, int64_t, bool);

template <typename T>
GemmFn<T> select_gemm(bool use_blas) {
  return use_blas ? &gemm_blas<T> : &gemm<T>;
}

// A [Kg, P*Q] slice of a 4-D output seen as a matrix needs P and Q to collapse into one stride,
// true for NCHW and channels_last tensors we allocate ourselves and for contiguous grad_outputs.
void check_pq_collapses(const at::Tensor& t, const char* name) {
  TORCH_INTERNAL_ASSERT(t.numel() == 0 || t.size(2) == 1 || t.size(3) == 1 || t.stride(2) == t.size(3) * t.stride(3),
                        name, " must have collapsible spatial strides");
}

template <typename T>
void fprop_outer(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
           at::Tensor& output, GemmFn<T> gemm_fn) {
  const Strides4 xs = strides_of(input), ys = strides_of(output);
  const T* x = input.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();  // contiguous [K, Cg*R*S]
  const T* b = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
  T* y = output.mutable_data_ptr<T>();
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);  // per group; see the top
  const int64_t Cg = p.C_per_group(), Kg = gemm.N, CRS = gemm.K, PQ = p.P * p.Q;
  at::parallel_for(0, p.N * p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      im2col(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data());
      T* y_ng = y + n * ys.n + g * Kg * ys.c;
      if (b) {
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t pq = 0; pq < PQ; ++pq) y_ng[k * ys.c + pq * ys.w] = b[g * Kg + k];
      }
      gemm_fn(Kg, PQ, CRS, w + g * Kg * CRS, CRS, 1, col.data(), PQ, 1, y_ng, ys.c, ys.w, b != nullptr);
    }
  });
}

template <typename T>
void dgrad_outer(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input, GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), dxs = strides_of(grad_input);
  const T* dy = grad_output.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  T* dx = grad_input.mutable_data_ptr<T>();
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);  // per group; see the top
  const int64_t Cg = p.C_per_group(), Kg = gemm.N, CRS = gemm.K, PQ = p.P * p.Q;
  at::parallel_for(0, p.N * p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      // Wᵀ is W read with swapped strides.
      gemm_fn(CRS, PQ, Kg, w + g * Kg * CRS, 1, CRS, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), PQ,
              1, false);
      col2im_gather(p, col.data(), dx + n * dxs.n + g * Cg * dxs.c, dxs.c, dxs.h, dxs.w);
    }
  });
}

template <typename T>
void wgrad_outer(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                 at::Tensor& grad_weight, GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), xs = strides_of(input);
  const T* dy = grad_output.const_data_ptr<T>();
  const T* x = input.const_data_ptr<T>();
  T* dw = grad_weight.mutable_data_ptr<T>();  // contiguous [K, Cg*R*S]
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Wgrad);  // dW[Kg, CgRS], per group
  const int64_t Cg = p.C_per_group(), Kg = gemm.M, CRS = gemm.N, PQ = p.P * p.Q;
  // Groups in parallel; within a group the images add up in order, so the sum has one fixed order.
  at::parallel_for(0, p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t g = begin; g < end; ++g) {
      for (int64_t n = 0; n < p.N; ++n) {
        im2col(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data());
        // colᵀ is col read with swapped strides.
        gemm_fn(Kg, CRS, PQ, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), 1, PQ, dw + g * Kg * CRS,
                CRS, 1, n > 0);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// The fast paths: one parallel GEMM at a time (the GEMM threads itself when called outside a parallel
// region) fed by a parallel im2col, so a batch of 1 uses every core.
//   1x1 stride 1 no padding: no im2col at all, the input is the GEMM operand.
//   channels_last: row im2col [pixels, R*S*Cg] (runs of Cg contiguous channels) against the weight
//     repacked once as [K, R, S, Cg]; rows of several images go into one GEMM when strides allow.
//   NCHW: column im2col [Cg*R*S, P*Q] per image.
// Chunk sizes depend on the problem only, never on the thread count, so wgrad keeps one summation order.
// ---------------------------------------------------------------------------------------------------
constexpr int64_t kColBudgetBytes = int64_t(8) << 20;

// Rows (output pixels) per chunk of a row-major column matrix of `row_len` elements per row.
// The one formula: the kernels allocate by it and im2col_workspace_bytes reports it.
int64_t rows_per_chunk(int64_t row_len, int64_t elem_size) {
  return std::max<int64_t>(64, kColBudgetBytes / (elem_size * std::max<int64_t>(row_len, 1)));
}
template <typename T>
int64_t rows_per_chunk(int64_t row_len) {
  return rows_per_chunk(row_len, int64_t(sizeof(T)));
}

// Calls f(m0, m1) over the global pixel rows [0, N*PQ) in chunks; a chunk crosses images only when
// `across` (every tensor addressed by row collapses n into its pixel stride).
template <typename F>
void for_row_chunks(int64_t N, int64_t PQ, int64_t chunk, bool across, F&& f) {
  const int64_t total = N * PQ;
  for (int64_t m0 = 0; m0 < total;) {
    int64_t m1 = std::min(total, m0 + chunk);
    if (!across) m1 = std::min(m1, (m0 / PQ + 1) * PQ);
    f(m0, m1);
    m0 = m1;
  }
}

// Rows [m0, m1) of group g's row-major column matrix [N*P*Q, Cg*R*S] (row m = image m / PQ, pixel
// m % PQ), in parallel over rows.
template <typename T>
void im2col_row_range(const Conv2dProblem& p, const T* x, const Strides4& xs, int64_t g, int64_t m0, int64_t m1,
                      T* col) {
  const int64_t PQ = p.P * p.Q, CRS = p.gemm_k(), Cg = p.C_per_group();
  at::parallel_for(m0, m1, 8, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / PQ, pix = m % PQ;
      im2col_rows(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col + (m - m0) * CRS, pix, pix + 1);
    }
  });
}

template <typename T>
void fill_bias(const Conv2dProblem& p, const T* b, T* y, Strides4 ys) {
  at::parallel_for(0, p.N * p.P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t np = begin; np < end; ++np) {
      const int64_t n = np / p.P, out_h = np % p.P;
      for (int64_t out_w = 0; out_w < p.Q; ++out_w)
        for (int64_t k = 0; k < p.K; ++k) y[n * ys.n + k * ys.c + out_h * ys.h + out_w * ys.w] = b[k];
    }
  });
}

bool collapses(Strides4 s, int64_t PQ) { return s.n == PQ * s.w; }

template <typename T>
void fprop(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
           at::Tensor& output, GemmFn<T> gemm_fn) {
  const Strides4 xs = strides_of(input), ys = strides_of(output);
  const T* x = input.const_data_ptr<T>();
  const T* b = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
  T* y = output.mutable_data_ptr<T>();
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);  // per group; see the top
  const int64_t Cg = p.C_per_group(), Kg = gemm.N, CRS = gemm.K, PQ = p.P * p.Q;
  if (b) fill_bias(p, b, y, ys);
  const bool acc = b != nullptr;
  const bool x_pixels_collapse = xs.h == p.W * xs.w;
  if (p.is_pointwise() && x_pixels_collapse) {
    const T* w = weight.const_data_ptr<T>();  // [K, Cg]
    if (xs.c == 1) {
      // channels_last: Y[pixels, Kg] = X[pixels, Cg] · Wᵀ, the whole batch in one GEMM when it collapses.
      const bool across = collapses(xs, PQ) && collapses(ys, PQ);
      for (int64_t g = 0; g < p.groups; ++g)
        for_row_chunks(p.N, PQ, across ? p.N * PQ : PQ, across, [&](int64_t m0, int64_t m1) {
          const int64_t n = m0 / PQ, pix = m0 % PQ;
          gemm_fn(m1 - m0, Kg, Cg, x + n * xs.n + pix * xs.w + g * Cg * xs.c, xs.w, xs.c, w + g * Kg * Cg, 1, Cg,
                  y + n * ys.n + pix * ys.w + g * Kg * ys.c, ys.w, ys.c, acc);
        });
    } else {
      // NCHW: per image Y[Kg, HW] = W[Kg, Cg] · X[Cg, HW].
      for (int64_t n = 0; n < p.N; ++n)
        for (int64_t g = 0; g < p.groups; ++g)
          gemm_fn(Kg, PQ, Cg, w + g * Kg * Cg, Cg, 1, x + n * xs.n + g * Cg * xs.c, xs.c, xs.w,
                  y + n * ys.n + g * Kg * ys.c, ys.c, ys.w, acc);
    }
    return;
  }
  if (xs.c == 1) {
    const at::Tensor wp_tensor = weight.permute({0, 2, 3, 1}).contiguous();  // [K, R, S, Cg]
    const T* wp = wp_tensor.const_data_ptr<T>();
    const bool across = collapses(ys, PQ);
    const int64_t chunk = rows_per_chunk<T>(CRS);
    std::vector<T> col(std::min(chunk, across ? p.N * PQ : PQ) * CRS);
    for (int64_t g = 0; g < p.groups; ++g)
      for_row_chunks(p.N, PQ, chunk, across, [&](int64_t m0, int64_t m1) {
        im2col_row_range(p, x, xs, g, m0, m1, col.data());
        const int64_t n = m0 / PQ, pix = m0 % PQ;
        gemm_fn(m1 - m0, Kg, CRS, col.data(), CRS, 1, wp + g * Kg * CRS, 1, CRS,
                y + n * ys.n + pix * ys.w + g * Kg * ys.c, ys.w, ys.c, acc);
      });
    return;
  }
  const T* w = weight.const_data_ptr<T>();  // [K, Cg*R*S]
  std::vector<T> col(CRS * PQ);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t g = 0; g < p.groups; ++g) {
      at::parallel_for(0, Cg, 1, [&](int64_t begin, int64_t end) {
        im2col_channels(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data(), begin, end);
      });
      gemm_fn(Kg, PQ, CRS, w + g * Kg * CRS, CRS, 1, col.data(), PQ, 1, y + n * ys.n + g * Kg * ys.c, ys.c, ys.w,
              acc);
    }
}

template <typename T>
void dgrad(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input, GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), dxs = strides_of(grad_input);
  const T* dy = grad_output.const_data_ptr<T>();
  T* dx = grad_input.mutable_data_ptr<T>();
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Fprop);  // per group; see the top
  const int64_t Cg = p.C_per_group(), Kg = gemm.N, CRS = gemm.K, PQ = p.P * p.Q;
  const bool dx_pixels_collapse = dxs.h == p.W * dxs.w;
  if (p.is_pointwise() && dx_pixels_collapse) {
    const T* w = weight.const_data_ptr<T>();  // [K, Cg]
    if (dxs.c == 1) {
      // DX[pixels, Cg] = DY[pixels, Kg] · W[Kg, Cg]
      const bool across = collapses(dys, PQ) && collapses(dxs, PQ);
      for (int64_t g = 0; g < p.groups; ++g)
        for_row_chunks(p.N, PQ, across ? p.N * PQ : PQ, across, [&](int64_t m0, int64_t m1) {
          const int64_t n = m0 / PQ, pix = m0 % PQ;
          gemm_fn(m1 - m0, Cg, Kg, dy + n * dys.n + pix * dys.w + g * Kg * dys.c, dys.w, dys.c, w + g * Kg * Cg, Cg,
                  1, dx + n * dxs.n + pix * dxs.w + g * Cg * dxs.c, dxs.w, dxs.c, false);
        });
    } else {
      for (int64_t n = 0; n < p.N; ++n)
        for (int64_t g = 0; g < p.groups; ++g)
          gemm_fn(Cg, PQ, Kg, w + g * Kg * Cg, 1, Cg, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w,
                  dx + n * dxs.n + g * Cg * dxs.c, dxs.c, dxs.w, false);
    }
    return;
  }
  if (dxs.c == 1) {
    const at::Tensor wp_tensor = weight.permute({0, 2, 3, 1}).contiguous();  // [K, R, S, Cg]
    const T* wp = wp_tensor.const_data_ptr<T>();
    std::vector<T> col(PQ * CRS);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t g = 0; g < p.groups; ++g) {
        gemm_fn(PQ, CRS, Kg, dy + n * dys.n + g * Kg * dys.c, dys.w, dys.c, wp + g * Kg * CRS, CRS, 1, col.data(),
                CRS, 1, false);
        at::parallel_for(0, p.H, 1, [&](int64_t begin, int64_t end) {
          col2im_rows_gather(p, col.data(), dx + n * dxs.n + g * Cg * dxs.c, dxs.c, dxs.h, dxs.w, begin, end);
        });
      }
    return;
  }
  const T* w = weight.const_data_ptr<T>();
  std::vector<T> col(CRS * PQ);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t g = 0; g < p.groups; ++g) {
      gemm_fn(CRS, PQ, Kg, w + g * Kg * CRS, 1, CRS, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), PQ,
              1, false);
      at::parallel_for(0, Cg, 1, [&](int64_t begin, int64_t end) {
        Conv2dProblem part = p;
        part.C = (end - begin) * p.groups;
        col2im_gather(part, col.data() + begin * p.R * p.S * PQ, dx + n * dxs.n + (g * Cg + begin) * dxs.c, dxs.c,
                      dxs.h, dxs.w);
      });
    }
}

template <typename T>
void wgrad(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input, at::Tensor& grad_weight,
           GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), xs = strides_of(input);
  const T* dy = grad_output.const_data_ptr<T>();
  const T* x = input.const_data_ptr<T>();
  T* dw = grad_weight.mutable_data_ptr<T>();  // contiguous [K, Cg*R*S]
  const GemmShape gemm = implicit_gemm(p, Conv2dOperator::Wgrad);  // dW[Kg, CgRS], per group
  const int64_t Cg = p.C_per_group(), Kg = gemm.M, CRS = gemm.N, PQ = p.P * p.Q;
  // Every sum below runs in an order fixed by the problem alone (chunks and the GEMM's K split depend on
  // sizes, not on threads), so the bits are the same for any thread count.
  const bool x_pixels_collapse = xs.h == p.W * xs.w;
  if (p.is_pointwise() && x_pixels_collapse) {
    // DW[Kg, Cg] = Σ DY[Kg, pixels] · X[pixels, Cg]
    const bool across = collapses(dys, PQ) && collapses(xs, PQ);
    for (int64_t g = 0; g < p.groups; ++g)
      for_row_chunks(p.N, PQ, across ? p.N * PQ : PQ, across, [&](int64_t m0, int64_t m1) {
        const int64_t n = m0 / PQ, pix = m0 % PQ;
        gemm_fn(Kg, Cg, m1 - m0, dy + n * dys.n + pix * dys.w + g * Kg * dys.c, dys.c, dys.w,
                x + n * xs.n + pix * xs.w + g * Cg * xs.c, xs.w, xs.c, dw + g * Kg * Cg, Cg, 1, m0 > 0);
      });
    return;
  }
  if (xs.c == 1) {
    at::Tensor dwp_tensor = at::empty({p.K, p.R, p.S, Cg}, grad_weight.options());
    T* dwp = dwp_tensor.mutable_data_ptr<T>();
    const bool across = collapses(dys, PQ);
    const int64_t chunk = rows_per_chunk<T>(CRS);
    std::vector<T> col(std::min(chunk, across ? p.N * PQ : PQ) * CRS);
    for (int64_t g = 0; g < p.groups; ++g)
      for_row_chunks(p.N, PQ, chunk, across, [&](int64_t m0, int64_t m1) {
        im2col_row_range(p, x, xs, g, m0, m1, col.data());
        const int64_t n = m0 / PQ, pix = m0 % PQ;
        gemm_fn(Kg, CRS, m1 - m0, dy + n * dys.n + pix * dys.w + g * Kg * dys.c, dys.c, dys.w, col.data(), CRS, 1,
                dwp + g * Kg * CRS, CRS, 1, m0 > 0);
      });
    grad_weight.copy_(dwp_tensor.permute({0, 3, 1, 2}));
    return;
  }
  std::vector<T> col(CRS * PQ);
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t n = 0; n < p.N; ++n) {
      at::parallel_for(0, Cg, 1, [&](int64_t begin, int64_t end) {
        im2col_channels(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data(), begin, end);
      });
      gemm_fn(Kg, CRS, PQ, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), 1, PQ, dw + g * Kg * CRS, CRS,
              1, n > 0);
    }
}

// Many groups (depthwise and friends): each (image, group) GEMM is tiny, so the old outer-parallel
// loops with a serial GEMM per thread do better than a parallel GEMM per group. The choice must not
// depend on the thread count: the two paths sum wgrad in different orders.
bool use_outer_parallel(const Conv2dProblem& p) { return p.groups >= 4; }

// Whether a call goes through channels_last copies of its operands (the row im2col) rather than column
// im2col on them as they are: the entry points below branch on this, and im2col_workspace_bytes counts
// the copies by it. channels_last: the operand whose layout decides (input; dgrad: grad_input).
bool via_channels_last_copies(const Conv2dProblem& p, bool channels_last) {
  return !use_outer_parallel(p) && !p.is_pointwise() && !channels_last && p.C_per_group() > 1;
}

}  // namespace

void conv2d_fprop_im2col(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output, bool use_blas) {
  check_pq_collapses(output, "output");
  const at::Tensor weight_matrix = weight.contiguous();
  if (via_channels_last_copies(p, input.stride(1) == 1)) {
    // NCHW (or any non-channels_last) input: one layout change of the input, and of the output when it
    // is not channels_last, buys the row im2col (contiguous channel runs) and one GEMM over the whole
    // batch; both copies are O(input + output), small next to the C*R*S-long reduction per output.
    const at::Tensor x_cl = input.contiguous(at::MemoryFormat::ChannelsLast);
    const bool out_cl = output.stride(1) == 1 && output.stride(3) == p.K && output.stride(2) == p.Q * p.K &&
                        output.stride(0) == p.P * p.Q * p.K;
    at::Tensor y_cl = out_cl ? output : at::empty({p.N, p.K, p.P, p.Q}, output.options(), at::MemoryFormat::ChannelsLast);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_im2col", [&] {
      fprop<scalar_t>(p, x_cl, weight_matrix, bias, y_cl, select_gemm<scalar_t>(use_blas));
    });
    if (!out_cl) output.copy_(y_cl);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_im2col", [&] {
    (use_outer_parallel(p) ? fprop_outer<scalar_t> : fprop<scalar_t>)(p, input, weight_matrix, bias, output, select_gemm<scalar_t>(use_blas));
  });
}

void conv2d_dgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                         at::Tensor& grad_input, bool use_blas) {
  check_pq_collapses(grad_output, "grad_output");
  const at::Tensor weight_matrix = weight.contiguous();
  if (via_channels_last_copies(p, grad_input.stride(1) == 1)) {
    // As in fprop: the channels_last row path on copies (gradient in, gradient out) beats column im2col.
    const at::Tensor dy_cl = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor dx_cl = at::empty({p.N, p.C, p.H, p.W}, grad_input.options(), at::MemoryFormat::ChannelsLast);
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_im2col", [&] {
      dgrad<scalar_t>(p, dy_cl, weight_matrix, dx_cl, select_gemm<scalar_t>(use_blas));
    });
    grad_input.copy_(dx_cl);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_im2col", [&] {
    (use_outer_parallel(p) ? dgrad_outer<scalar_t> : dgrad<scalar_t>)(p, grad_output, weight_matrix, grad_input, select_gemm<scalar_t>(use_blas));
  });
}

void conv2d_wgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                         at::Tensor& grad_weight, bool use_blas) {
  check_pq_collapses(grad_output, "grad_output");
  TORCH_INTERNAL_ASSERT(grad_weight.is_contiguous(), "grad_weight must be contiguous");
  if (p.N == 0) {  // nothing to sum: both loops below would only accumulate into it
    grad_weight.zero_();
    return;
  }
  if (via_channels_last_copies(p, input.stride(1) == 1)) {
    // channels_last copies of both operands: row im2col and GEMMs over many images at once. The chunking
    // depends on sizes only, so the summation order (and the bits) stays independent of the thread count.
    const at::Tensor x_cl = input.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor dy_cl = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_im2col", [&] {
      wgrad<scalar_t>(p, dy_cl, x_cl, grad_weight, select_gemm<scalar_t>(use_blas));
    });
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_im2col", [&] {
    (use_outer_parallel(p) ? wgrad_outer<scalar_t> : wgrad<scalar_t>)(p, grad_output, input, grad_weight,
                                                                        select_gemm<scalar_t>(use_blas));
  });
}

}  // namespace fastconv::cpu

namespace fastconv::cpu {
int64_t im2col_workspace_bytes(const Conv2dProblem& p, Conv2dOperator pass, bool channels_last, int64_t elem_size) {
  const int64_t CRS = p.gemm_k(), PQ = p.P * p.Q;
  if (p.is_pointwise()) return 0;
  if (use_outer_parallel(p)) return at::get_num_threads() * CRS * PQ * elem_size;
  const int64_t copies = via_channels_last_copies(p, channels_last) ? (p.input_numel() + p.output_numel()) * elem_size : 0;
  const int64_t repacked_weight = pass != Conv2dOperator::Wgrad ? p.weight_numel() * elem_size : 0;
  if (pass == Conv2dOperator::Dgrad) return CRS * PQ * elem_size + repacked_weight + copies;  // one image's rows
  const int64_t rows = std::min(rows_per_chunk(CRS, elem_size), p.N * PQ);
  return rows * CRS * elem_size + repacked_weight + copies +
         (pass == Conv2dOperator::Wgrad ? p.weight_numel() * elem_size : 0);
}
}  // namespace fastconv::cpu
