// The blocked direct convolution's 16-lane tile, written once against the vector layer (simd/vec16.h) and
// compiled twice like the GEMM's 16-lane kernel: a file defines FC_VEC16_KERNEL (the target attribute)
// before including this; everything sits in an anonymous namespace so the two targets never share a symbol.
//   acc[i] += x[pixel i, c] * w[c, 0..15] over (r, s, c), in the portable tile's order, bias first.
// 14 pixels: one ZMM accumulator each, a weight vector loaded once per c for 14 FMAs.
#pragma once

#include <utility>

#include "conv2d_direct_blocked_tile.h"
#include "simd/vec16.h"

namespace fastconv::cpu::direct_blocked {
namespace {

template <class V, int NQ>
FC_VEC16_KERNEL void tile_vec16(const TileArgs& a, float* out) {
  const V b = a.bias16 ? V::loadu(a.bias16) : V::zero();
  V acc[NQ];
#pragma GCC unroll 14
  for (int i = 0; i < NQ; ++i) acc[i] = b;
  const int64_t C = a.C;
  const float* w = a.w;
  for (int64_t r = 0; r < a.R; ++r)
    for (int64_t s = 0; s < a.S; ++s) {
      const float* xrs = a.x + r * a.x_r + s * a.x_s;
      const float* xi[NQ];
#pragma GCC unroll 14
      for (int i = 0; i < NQ; ++i) xi[i] = xrs + a.off[i];
      for (int64_t c = 0; c < C; ++c, w += kTileK) {
        const V wc = V::loadu(w);
#pragma GCC unroll 14
        for (int i = 0; i < NQ; ++i) acc[i] = V::fma(V::broadcast(xi[i][c]), wc, acc[i]);
      }
    }
#pragma GCC unroll 14
  for (int i = 0; i < NQ; ++i) acc[i].storeu(out + i * kTileK);
}

template <class V, int... NQ>
TileFn vec16_tile(int nq, std::integer_sequence<int, NQ...>) {
  static constexpr TileFn fns[] = {nullptr, &tile_vec16<V, NQ + 1>...};
  return nq >= 1 && nq <= kTileQVec16 ? fns[nq] : nullptr;
}

}  // namespace
}  // namespace fastconv::cpu::direct_blocked
