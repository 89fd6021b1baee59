// Direct convolution forward on the GPU: y[n,k,p,q] = bias[k] + sum_{c,r,s} x[n, g*Cg+c, h, w] * W[k,c,r,s].
//
// Build: nvcc through csrc/cuda/conv2d_cuda.cu; g++ through csrc/emulator/conv2d_emulated.cpp (SIMT emulator).
// Test:  pytest tests/test_cuda_conv2d.py (algorithm="direct").
//
// Kernel versions:
//   v1 is conv2d_fprop_simple_kernel (conv2d_simple.cuh): one thread per output, every operand read from
//     global memory -> correct for every shape; direct_simple, and what a "direct" request falls back to
//     (reported as such) when a tile of v2 does not fit in shared memory.
//   conv2d_fprop_tiled_kernel v2: a block computes an 8x16 output tile for KT output channels; per chunk of CT
//     input channels it stages the input tile with its halo (zeros for padding) and the KT x CT x R x S filter
//     tile in shared memory, then each thread accumulates KT outputs in registers -> each input element is read
//     from global memory once per block instead of R*S*KT times, each filter value once per block.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kDirectTileQ = 16;  // threadIdx.x
inline constexpr int kDirectTileP = 8;   // threadIdx.y
inline constexpr int kDirectThreads = kDirectTileQ * kDirectTileP;

// Shared-memory footprint of v2, in accumulation-type elements: CT input tiles with halo + the filter tile.
struct DirectTile {
  int64_t in_h, in_w;  // input tile with halo
  int64_t ct;          // input channels staged per step
  FASTCONV_HD int64_t smem_elements(int64_t kt, const Conv2dProblem& p) const {
    return ct * in_h * in_w + kt * ct * p.R * p.S;
  }
};

// grid: x = n * tiles_p * tiles_q + tile, y = g * k_tiles + k_tile. block: 16 x 8.
template <typename scalar_t, int KT>
__global__ void __launch_bounds__(kDirectThreads)
    conv2d_fprop_tiled_kernel(Conv2dProblem p, DirectTile tile, int64_t tiles_p, int64_t tiles_q, int64_t k_tiles,
                              const scalar_t* x, Strides4 xs, const scalar_t* wt, Strides4 ws, const scalar_t* bias,
                              scalar_t* y, Strides4 ys) {
  using acc = acc_t<scalar_t>;
  FASTCONV_DYNAMIC_SMEM(acc, smem);
  const int64_t RS = p.R * p.S;
  const int64_t in_plane = tile.in_h * tile.in_w;
  acc* in_s = smem;                       // [ct][in_h][in_w]
  acc* w_s = smem + tile.ct * in_plane;   // [KT][ct][R*S]

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * kDirectTileQ + tx;
  int64_t bx = blockIdx.x;
  const int64_t tile_q = bx % tiles_q; bx /= tiles_q;
  const int64_t tile_p = bx % tiles_p;
  const int64_t n = bx / tiles_p;
  const int64_t g = blockIdx.y / k_tiles;
  const int64_t k0 = (blockIdx.y % k_tiles) * KT;  // within the group
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  const int64_t p0 = tile_p * kDirectTileP, q0 = tile_q * kDirectTileQ;
  const int64_t h0 = p0 * p.stride_h - p.pad_h, w0 = q0 * p.stride_w - p.pad_w;
  const scalar_t* x_n = x + n * xs.n + g * Cg * xs.c;
  const scalar_t* w_g = wt + g * Kg * ws.n;

  acc sum[KT];
  FASTCONV_UNROLL
  for (int kk = 0; kk < KT; ++kk) sum[kk] = acc(0);

  for (int64_t c0 = 0; c0 < Cg; c0 += tile.ct) {
    // Stage the input tiles (halo included, mapped through the padding mode; zeros for zero padding or
    // past the last channel).
    for (int64_t i = tid; i < tile.ct * in_plane; i += kDirectThreads) {
      const int64_t cl = i / in_plane, hw = i % in_plane;
      const int64_t h = p.source_row(h0 + hw / tile.in_w), w = p.source_col(w0 + hw % tile.in_w);
      const int64_t c = c0 + cl;
      in_s[i] = (c < Cg && h >= 0 && w >= 0)
                    ? static_cast<acc>(x_n[c * xs.c + h * xs.h + w * xs.w])
                    : acc(0);
    }
    // Stage the filter tile.
    for (int64_t i = tid; i < KT * tile.ct * RS; i += kDirectThreads) {
      const int64_t kk = i / (tile.ct * RS), rem = i % (tile.ct * RS);
      const int64_t cl = rem / RS, rs = rem % RS;
      const int64_t k = k0 + kk, c = c0 + cl;
      w_s[i] = (k < Kg && c < Cg) ? static_cast<acc>(w_g[k * ws.n + c * ws.c + (rs / p.S) * ws.h + (rs % p.S) * ws.w])
                                  : acc(0);
    }
    __syncthreads();  // tiles complete before use

    for (int64_t cl = 0; cl < tile.ct; ++cl) {
      const acc* in_c = in_s + cl * in_plane;
      for (int64_t r = 0; r < p.R; ++r) {
        const acc* in_row = in_c + (ty * p.stride_h + r * p.dilation_h) * tile.in_w + tx * p.stride_w;
        for (int64_t s = 0; s < p.S; ++s) {
          const acc v = in_row[s * p.dilation_w];
          const acc* w_rs = w_s + cl * RS + r * p.S + s;
          FASTCONV_UNROLL
          for (int kk = 0; kk < KT; ++kk) sum[kk] += v * w_rs[kk * tile.ct * RS];
        }
      }
    }
    __syncthreads();  // done reading before the next chunk overwrites the tiles
  }

  const int64_t out_h = p0 + ty, out_w = q0 + tx;
  if (out_h >= p.P || out_w >= p.Q) return;
  scalar_t* y_pos = y + n * ys.n + out_h * ys.h + out_w * ys.w;
  FASTCONV_UNROLL
  for (int kk = 0; kk < KT; ++kk) {
    const int64_t k = g * Kg + k0 + kk;
    if (k0 + kk >= Kg) break;
    const acc b = bias != nullptr ? static_cast<acc>(bias[k]) : acc(0);
    y_pos[k * ys.c] = static_cast<scalar_t>(sum[kk] + b);
  }
}

inline constexpr int64_t kDirectSmemBudgetBytes = 48 * 1024;

// v2's launch for a problem and accumulation-type size: the one computation both the launcher and the
// planner's "does the tiled kernel apply" read.
struct DirectLaunch {
  DirectTile tile;
  int64_t kt, tiles_p, tiles_q, k_tiles, grid_x, grid_y, smem_bytes;
  bool fits() const { return smem_bytes <= kDirectSmemBudgetBytes && grid_x <= 0x7fffffff && grid_y <= 65535; }
};

inline DirectLaunch direct_fprop_launch(const Conv2dProblem& p, int64_t acc_bytes) {
  DirectLaunch l{};
  const int64_t Kg = p.K_per_group();
  l.kt = Kg >= 8 ? 8 : 1;  // depthwise-like groups would waste 7 of 8 channel slots
  l.tile = {(kDirectTileP - 1) * p.stride_h + (p.R - 1) * p.dilation_h + 1,
            (kDirectTileQ - 1) * p.stride_w + (p.S - 1) * p.dilation_w + 1, 1};
  for (int64_t ct : {8, 4, 2}) {
    if (ct <= p.C_per_group() &&
        DirectTile{l.tile.in_h, l.tile.in_w, ct}.smem_elements(l.kt, p) * acc_bytes <= kDirectSmemBudgetBytes) {
      l.tile.ct = ct;
      break;
    }
  }
  l.tiles_p = ceil_div<int64_t>(p.P, kDirectTileP);
  l.tiles_q = ceil_div<int64_t>(p.Q, kDirectTileQ);
  l.k_tiles = ceil_div<int64_t>(Kg, l.kt);
  l.grid_x = p.N * l.tiles_p * l.tiles_q;
  l.grid_y = p.groups * l.k_tiles;
  l.smem_bytes = l.tile.smem_elements(l.kt, p) * acc_bytes;
  return l;
}

// The caller has checked direct_fprop_launch(p, sizeof(acc)).fits().
template <typename scalar_t>
void launch_conv2d_fprop_direct(const Conv2dProblem& p, const scalar_t* x, Strides4 xs, const scalar_t* wt,
                                Strides4 ws, const scalar_t* bias, scalar_t* y, Strides4 ys, Stream stream) {
  const DirectLaunch l = direct_fprop_launch(p, sizeof(acc_t<scalar_t>));
  if (!l.fits()) throw std::invalid_argument("conv2d direct: the tiled kernel's tile or grid does not fit");
  const dim3 grid(static_cast<unsigned>(l.grid_x), static_cast<unsigned>(l.grid_y));
  const dim3 block(kDirectTileQ, kDirectTileP);
  const auto smem = static_cast<std::size_t>(l.smem_bytes);
  if (l.kt == 8) {
    launch_kernel(conv2d_fprop_tiled_kernel<scalar_t, 8>, grid, block, smem, stream, p, l.tile, l.tiles_p, l.tiles_q,
                  l.k_tiles, x, xs, wt, ws, bias, y, ys);
  } else {
    launch_kernel(conv2d_fprop_tiled_kernel<scalar_t, 1>, grid, block, smem, stream, p, l.tile, l.tiles_p, l.tiles_q,
                  l.k_tiles, x, xs, wt, ws, bias, y, ys);
  }
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
