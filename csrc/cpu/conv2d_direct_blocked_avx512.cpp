// The blocked direct convolution's 16-lane tile on AVX-512 intrinsics (per-function target attributes; run
// only after cpu_has_avx512()).
#include "conv2d_direct_blocked_tile.h"
#include "simd/vec16.h"

#if FASTCONV_HAVE_AVX512_CODE && !defined(FASTCONV_GEMM_NO_AVX2)
#define FC_VEC16_KERNEL FC_AVX512
#include "conv2d_direct_blocked_vec16.h"

namespace fastconv::cpu::direct_blocked {
TileFn direct_tile_avx512(int nq) {
  return vec16_tile<simd::Vec16Avx512>(nq, std::make_integer_sequence<int, kTileQVec16>{});
}
}  // namespace fastconv::cpu::direct_blocked
#else
namespace fastconv::cpu::direct_blocked {
TileFn direct_tile_avx512(int) { return nullptr; }
}  // namespace fastconv::cpu::direct_blocked
#endif
