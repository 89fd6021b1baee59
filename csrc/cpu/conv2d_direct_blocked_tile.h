// The register tile of the blocked direct convolution (conv2d_direct_blocked.cpp): its arguments, and
// the 16-lane (AVX-512) tile kernels, which are written once (conv2d_direct_blocked_vec16.h) and built
// natively (conv2d_direct_blocked_avx512.cpp) and through the portable vector layer
// (conv2d_direct_blocked_vec16_portable.cpp).
#pragma once

#include <cstdint>

namespace fastconv::cpu::direct_blocked {

constexpr int kTileQ = 6;        // output pixels per register tile (AVX2, portable)
constexpr int kTileQVec16 = 14;  // output pixels per register tile of the 16-lane (AVX-512) kernel
constexpr int kMaxTileQ = 14;
constexpr int kTileK = 16;       // output channels per register tile (two 8-float vectors or one 16-lane)

struct TileArgs {
  const float* x;          // padded input of this image
  int64_t off[kMaxTileQ];  // per tile pixel: offset of its window's top-left tap, channel 0 (any row)
  int64_t x_r;       // elements per tap row step (dilation_h * Wp * C)
  int64_t x_s;       // elements per tap column step (dilation_w * C)
  const float* w;    // wb block for this K block: [R][S][C][16]
  int64_t R, S, C;
  const float* bias16;  // 16 bias values (zero-padded) or null
};

using TileFn = void (*)(const TileArgs&, float*);

// The 16-lane tile for nq = 1..kTileQVec16 pixels; null where this build has no AVX-512 code.
TileFn direct_tile_avx512(int nq);
TileFn direct_tile_vec16_portable(int nq);

}  // namespace fastconv::cpu::direct_blocked
