// The blocked direct convolution's 16-lane tile through the portable vector layer: the AVX-512 tile's logic
// and bits on any CPU, for the tests (fastconv._C._set_vec16_portable).
#define FC_VEC16_KERNEL
#include "conv2d_direct_blocked_vec16.h"

namespace fastconv::cpu::direct_blocked {
TileFn direct_tile_vec16_portable(int nq) {
  return vec16_tile<simd::Vec16Portable>(nq, std::make_integer_sequence<int, kTileQVec16>{});
}
}  // namespace fastconv::cpu::direct_blocked
