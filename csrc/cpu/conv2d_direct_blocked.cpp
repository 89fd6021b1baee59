// Blocked direct convolution, forward (the "optimized" direct path beside the simple strided loops of
// conv2d_direct.cpp, which stay the always-correct "analytic" fallback). No im2col buffer:
//   - the input is copied once into a zero-padded NHWC buffer xp[N, H+pads, W+pads, C], so the inner
//     loops need no bounds checks and read channels contiguously (for NCHW this is the layout change);
//   - the weight is repacked once as wb[K/16][R][S][C][16] (K zero-padded to 16);
//   - a register tile of 6 output pixels (consecutive in (p, q) order, wrapping rows) x 16 channels is
//     accumulated over (r, s, c) in that fixed order: 6 broadcasts of x and 2 vector loads of w per
//     12 FMAs, like the GEMM's micro-kernel, with the input read in place instead of packed.
// AVX2+FMA through a target attribute, chosen at run time; a portable template computes the same tile.
// On AVX-512 the tile is 14 pixels x 16 channels (one ZMM accumulator per pixel, 14 of 32 registers; the
// weight layout is unchanged), written once against the 16-lane vector layer (simd/vec16.h), so the same
// source runs through the portable layer in the tests on any CPU.
// dgrad of a stride-1 convolution runs through the same forward kernel (conv2d_dgrad_direct_blocked).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "conv2d_cpu.h"
#include "conv2d_direct_blocked_tile.h"
#include "cpu_features.h"
#include "simd/vec16.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(FASTCONV_GEMM_NO_AVX2)
#include <immintrin.h>
#define FC_HAVE_AVX2_CODE 1
#endif

namespace fastconv::cpu {

using namespace direct_blocked;

namespace {

// AVX2 code exists in this build and the CPU can run it.
bool avx2_usable() {
#ifdef FC_HAVE_AVX2_CODE
  return cpu_has_avx2_fma();
#else
  return false;
#endif
}

// Portable tile: out[i][k] for i < nq.
template <int NQ>
void tile_portable(const TileArgs& a, float* out) {
  float acc[NQ][kTileK];
  for (int i = 0; i < NQ; ++i)
    for (int k = 0; k < kTileK; ++k) acc[i][k] = a.bias16 ? a.bias16[k] : 0.f;
  for (int64_t r = 0; r < a.R; ++r)
    for (int64_t s = 0; s < a.S; ++s) {
      const float* xrs = a.x + r * a.x_r + s * a.x_s;
      const float* wrs = a.w + (r * a.S + s) * a.C * kTileK;
      for (int64_t c = 0; c < a.C; ++c) {
        const float* wc = wrs + c * kTileK;
        for (int i = 0; i < NQ; ++i) {
          const float xv = xrs[a.off[i] + c];
          for (int k = 0; k < kTileK; ++k) acc[i][k] += xv * wc[k];
        }
      }
    }
  for (int i = 0; i < NQ; ++i)
    for (int k = 0; k < kTileK; ++k) out[i * kTileK + k] = acc[i][k];
}

#ifdef FC_HAVE_AVX2_CODE
// Twelve named accumulators rather than an array: with an array GCC kept the tile in memory and spilled
// every accumulator on every iteration (26 GFLOP/s on one core instead of near the FMA peak).
template <int NQ>
__attribute__((target("avx2,fma"))) void tile_avx2(const TileArgs& a, float* out) {
  const __m256 b0 = a.bias16 ? _mm256_loadu_ps(a.bias16) : _mm256_setzero_ps();
  const __m256 b1 = a.bias16 ? _mm256_loadu_ps(a.bias16 + 8) : _mm256_setzero_ps();
  __m256 c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1;
  __m256 c30 = b0, c31 = b1, c40 = b0, c41 = b1, c50 = b0, c51 = b1;
  const int64_t C = a.C, R = a.R, S = a.S, x_r = a.x_r, x_s = a.x_s;
  const float* w = a.w;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t s = 0; s < S; ++s) {
      const float* xrs = a.x + r * x_r + s * x_s;
      const float* x0 = xrs + a.off[0];
      const float* x1 = xrs + a.off[NQ > 1 ? 1 : 0];
      const float* x2 = xrs + a.off[NQ > 2 ? 2 : 0];
      const float* x3 = xrs + a.off[NQ > 3 ? 3 : 0];
      const float* x4 = xrs + a.off[NQ > 4 ? 4 : 0];
      const float* x5 = xrs + a.off[NQ > 5 ? 5 : 0];
      for (int64_t c = 0; c < C; ++c, w += kTileK) {
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
        __m256 xv;
#define FC_STEP(i, A0, A1, X)                \
  if constexpr (NQ > i) {                    \
    xv = _mm256_broadcast_ss(X + c);         \
    A0 = _mm256_fmadd_ps(xv, w0, A0);        \
    A1 = _mm256_fmadd_ps(xv, w1, A1);        \
  }
        FC_STEP(0, c00, c01, x0)
        FC_STEP(1, c10, c11, x1)
        FC_STEP(2, c20, c21, x2)
        FC_STEP(3, c30, c31, x3)
        FC_STEP(4, c40, c41, x4)
        FC_STEP(5, c50, c51, x5)
#undef FC_STEP
        (void)xv;
      }
    }
#define FC_STORE(i, A0, A1)                              \
  if constexpr (NQ > i) {                                \
    _mm256_storeu_ps(out + i * kTileK, A0);              \
    _mm256_storeu_ps(out + i * kTileK + 8, A1);          \
  }
  FC_STORE(0, c00, c01)
  FC_STORE(1, c10, c11)
  FC_STORE(2, c20, c21)
  FC_STORE(3, c30, c31)
  FC_STORE(4, c40, c41)
  FC_STORE(5, c50, c51)
#undef FC_STORE
}
#endif


// Which tile kernel, and how many pixels it takes, for this call.
enum class TileKernel { Portable, Avx2, Avx512, Vec16Portable };

TileKernel tile_kernel(bool force_portable) {
  if (force_portable) return TileKernel::Portable;
  switch (vec16_impl()) {
    case Vec16Impl::Portable: return TileKernel::Vec16Portable;
#if FASTCONV_HAVE_AVX512_CODE && defined(FC_HAVE_AVX2_CODE)
    case Vec16Impl::Native: return TileKernel::Avx512;
#endif
    default: return avx2_usable() ? TileKernel::Avx2 : TileKernel::Portable;
  }
}

int tile_pixels(TileKernel kernel) {
  return kernel == TileKernel::Avx512 || kernel == TileKernel::Vec16Portable ? kTileQVec16 : kTileQ;
}

TileFn tile_fn(int nq, TileKernel kernel) {
  if (kernel == TileKernel::Vec16Portable) return direct_tile_vec16_portable(nq);
#if FASTCONV_HAVE_AVX512_CODE && defined(FC_HAVE_AVX2_CODE)
  if (kernel == TileKernel::Avx512) return direct_tile_avx512(nq);
#endif
  const bool avx2 = kernel == TileKernel::Avx2;
#ifdef FC_HAVE_AVX2_CODE
  if (avx2) {
    static constexpr TileFn fns[] = {nullptr, tile_avx2<1>, tile_avx2<2>, tile_avx2<3>,
                                     tile_avx2<4>, tile_avx2<5>, tile_avx2<6>};
    return fns[nq];
  }
#endif
  static constexpr TileFn fns[] = {nullptr, tile_portable<1>, tile_portable<2>, tile_portable<3>,
                                   tile_portable<4>, tile_portable<5>, tile_portable<6>};
  return fns[nq];
}

}  // namespace

bool direct_blocked_supported(const Conv2dProblem& p, at::ScalarType dtype) {
  return dtype == at::kFloat && p.groups == 1;
}

bool direct_blocked_uses_avx2() { return avx2_usable(); }

int64_t direct_blocked_workspace_bytes(const Conv2dProblem& p) {
  const int64_t pad_b = std::max<int64_t>(0, (p.P - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1 - p.H - p.pad_h);
  const int64_t pad_r = std::max<int64_t>(0, (p.Q - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1 - p.W - p.pad_w);
  const int64_t Kp = (p.K + kTileK - 1) / kTileK * kTileK;
  return int64_t(sizeof(float)) *
         (p.N * (p.H + p.pad_h + pad_b) * (p.W + p.pad_w + pad_r) * p.C + Kp * p.C * p.R * p.S + Kp);
}

void conv2d_fprop_direct_blocked(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& bias, at::Tensor& output, bool force_portable) {
  TORCH_INTERNAL_ASSERT(direct_blocked_supported(p, input.scalar_type()));
  const int64_t N = p.N, C = p.C, K = p.K, R = p.R, S = p.S, P = p.P, Q = p.Q;
  // Rows and columns actually read (the bottom/right padding only matters as far as windows reach).
  const int64_t Hp = std::max(p.H + p.pad_h, (P - 1) * p.stride_h + (R - 1) * p.dilation_h + 1);
  const int64_t Wp = std::max(p.W + p.pad_w, (Q - 1) * p.stride_w + (S - 1) * p.dilation_w + 1);
  // The padded NHWC input the tile walks without bounds checks (the kernel's own layout, made for every
  // padding mode): zeros around one strided copy, or, for reflect/replicate/circular, each padded row and
  // column gathered from the input row and column it maps to.
  at::Tensor xp_t;
  if (p.padding_mode == PaddingMode::Zeros) {
    xp_t = at::zeros({N, Hp, Wp, C}, input.options());
    xp_t.narrow(1, p.pad_h, p.H).narrow(2, p.pad_w, p.W).copy_(input.permute({0, 2, 3, 1}));
  } else {
    std::vector<int64_t> rows(Hp), cols(Wp);
    for (int64_t i = 0; i < Hp; ++i) rows[i] = p.source_row(i - p.pad_h);
    for (int64_t j = 0; j < Wp; ++j) cols[j] = p.source_col(j - p.pad_w);
    const at::TensorOptions index = at::TensorOptions().dtype(at::kLong);
    xp_t = input.permute({0, 2, 3, 1})
               .index_select(1, at::tensor(c10::ArrayRef<int64_t>(rows), index))
               .index_select(2, at::tensor(c10::ArrayRef<int64_t>(cols), index))
               .contiguous();
  }
  // wb[kb][r][s][c][16]
  const int64_t KB = (K + kTileK - 1) / kTileK, Kp = KB * kTileK;
  at::Tensor w_t = at::zeros({Kp, C, R, S}, weight.options());
  w_t.narrow(0, 0, K).copy_(weight);
  const at::Tensor wb_t = w_t.view({KB, kTileK, C, R, S}).permute({0, 3, 4, 2, 1}).contiguous();
  at::Tensor b_t = at::zeros({Kp}, input.options());
  if (bias.defined()) b_t.narrow(0, 0, K).copy_(bias);

  const float* xp = xp_t.const_data_ptr<float>();
  const float* wb = wb_t.const_data_ptr<float>();
  const float* bp = bias.defined() ? b_t.const_data_ptr<float>() : nullptr;
  float* y = output.mutable_data_ptr<float>();
  const Strides4 ys = strides_of(output);
  const TileKernel kernel = tile_kernel(force_portable);
  const int tile_q = tile_pixels(kernel);
  // Tiles are tile_q consecutive output pixels in (p, q) order, wrapping across rows, so small maps (7x7)
  // still fill the tile. Tasks are (K block, image, group of tiles), K block slowest so a thread's weight
  // block stays in cache.
  const int64_t PQ = P * Q, tiles = (PQ + tile_q - 1) / tile_q;
  constexpr int64_t kTilesPerTask = 8;
  const int64_t groups_per_image = (tiles + kTilesPerTask - 1) / kTilesPerTask;
  at::parallel_for(0, KB * N * groups_per_image, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float tile[kMaxTileQ * kTileK];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t kb = t / (N * groups_per_image), n = (t / groups_per_image) % N, tg = t % groups_per_image;
      const int64_t k0 = kb * kTileK, kn = std::min<int64_t>(kTileK, K - k0);
      TileArgs a;
      a.x = xp + n * Hp * Wp * C;
      a.x_r = p.dilation_h * Wp * C;
      a.x_s = p.dilation_w * C;
      a.w = wb + kb * R * S * C * kTileK;
      a.R = R;
      a.S = S;
      a.C = C;
      a.bias16 = bp ? bp + k0 : nullptr;
      const int64_t tile_end = std::min(tiles, (tg + 1) * kTilesPerTask);
      for (int64_t ti = tg * kTilesPerTask; ti < tile_end; ++ti) {
        const int64_t m0 = ti * tile_q;
        const int nq = static_cast<int>(std::min<int64_t>(tile_q, PQ - m0));
        for (int i = 0; i < nq; ++i) {
          const int64_t out_h = (m0 + i) / Q, out_w = (m0 + i) % Q;
          a.off[i] = (out_h * p.stride_h * Wp + out_w * p.stride_w) * C;
        }
        tile_fn(nq, kernel)(a, tile);
        for (int i = 0; i < nq; ++i) {
          const int64_t out_h = (m0 + i) / Q, out_w = (m0 + i) % Q;
          float* y_px = y + n * ys.n + out_h * ys.h + out_w * ys.w + k0 * ys.c;
          if (ys.c == 1) {
            std::memcpy(y_px, tile + i * kTileK, sizeof(float) * kn);
          } else {
            for (int64_t k = 0; k < kn; ++k) y_px[k * ys.c] = tile[i * kTileK + k];
          }
        }
      }
    }
  });
}

}  // namespace fastconv::cpu

namespace fastconv::cpu {

namespace {

// dgrad of a stride-1 convolution is itself a convolution: grad_output padded by reach - pad on each side
// (reach = dilation * (R - 1)), with the filter flipped in R and S and its K and C swapped. This is the
// problem that convolution solves; it exists when no side is padded by more than the window reaches.
std::optional<Conv2dProblem> dgrad_as_fprop_problem(const Conv2dProblem& p) {
  if (p.stride_h != 1 || p.stride_w != 1 || p.groups != 1 || p.padding_mode != PaddingMode::Zeros) return std::nullopt;
  const int64_t reach_h = p.dilation_h * (p.R - 1), reach_w = p.dilation_w * (p.S - 1);
  const int64_t pad_bottom = p.P + reach_h - p.H - p.pad_h, pad_right = p.Q + reach_w - p.W - p.pad_w;
  const int64_t pads[4] = {reach_h - p.pad_h, reach_h - pad_bottom, reach_w - p.pad_w, reach_w - pad_right};
  for (int64_t q : pads)
    if (q < 0) return std::nullopt;
  return make_conv2d_problem({p.N, p.K, p.P, p.Q}, {p.C, p.K, p.R, p.S}, {1, 1}, pads,
                             {p.dilation_h, p.dilation_w}, 1, "zeros");
}

}  // namespace

bool direct_blocked_dgrad_supported(const Conv2dProblem& p, at::ScalarType dtype) {
  return dtype == at::kFloat && dgrad_as_fprop_problem(p).has_value();
}

int64_t direct_blocked_dgrad_workspace_bytes(const Conv2dProblem& p) {
  return direct_blocked_workspace_bytes(*dgrad_as_fprop_problem(p));
}

void conv2d_dgrad_direct_blocked(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                                 at::Tensor& grad_input) {
  const Conv2dProblem t = *dgrad_as_fprop_problem(p);
  TORCH_INTERNAL_ASSERT(t.P == p.H && t.Q == p.W);
  // The blocked forward repacks its filter from any strides: only the flip is a (filter-sized) copy.
  conv2d_fprop_direct_blocked(t, grad_output, weight.flip({2, 3}).transpose(0, 1), at::Tensor(), grad_input);
}

}  // namespace fastconv::cpu
