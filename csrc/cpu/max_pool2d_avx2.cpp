// AVX2 float32 max_pool2d kernels (see max_pool2d_avx2.h). Compiled with per-function target attributes,
// not a global -mavx2, so the rest of the extension keeps baseline flags; max_pool2d.cpp calls them only
// after cpu_has_avx2_fma(). Nothing here calls library code, and no lambdas: a lambda's body does not
// inherit its enclosing function's target attribute.
//
// Every kernel keeps the running max in a float vector and the running argmax in an int32 vector of the
// same 8 lanes (one blendv each), and widens the indices to int64 on the store. The winner rule is the
// scalar one, lane by lane: take = (v > max) | isnan(v), so ties keep the first tap in scan order and a
// NaN, once taken, is replaced only by a later NaN (PyTorch's rule: the last NaN wins).
#include "max_pool2d_avx2.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

// The two argmax forms every kernel entry point is built for: flat indices and tap numbers.
#define FASTCONV_POOL_AVX2_INSTANTIATE(Index)                                                                 \
  template void fprop_nchw_row<Index>(const float*, int64_t, Taps, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                      int64_t, float*, Index*);                                               \
  template void fprop_channels_last_row<Index>(const float*, int64_t, int64_t, Taps, const Taps*, int64_t,     \
                                               int64_t, int64_t, ArgmaxSteps, int64_t, float*, Index*, bool);

// FASTCONV_POOL_NO_AVX2 (or the GEMM's FASTCONV_GEMM_NO_AVX2) builds the non-x86 variant anywhere, to
// test that it compiles and that the scalar kernels take over.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(FASTCONV_POOL_NO_AVX2) && \
    !defined(FASTCONV_GEMM_NO_AVX2)
#include <immintrin.h>

#define FC_AVX2 __attribute__((target("avx2,fma")))
#define FC_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace fastconv::cpu::pool_avx2 {

bool available() { return true; }

namespace {

// The winner rule on 8 lanes; `id` carries int32 index bits in float lanes so one blendv moves it.
FC_AVX2_INLINE void take_max(__m256 v, __m256 index, __m256& max, __m256& id) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, max, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  max = _mm256_blendv_ps(max, v, take);
  id = _mm256_blendv_ps(id, index, take);
}

FC_AVX2_INLINE __m256 index_vector(int64_t index) {
  return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(index)));
}

FC_AVX2_INLINE void store_indices(int64_t* out, __m256i id) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(id)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(id, 1)));
}

// The same stores, non-temporal (32-byte aligned addresses): whole cache lines written without being
// read first. For outputs too large to stay in cache for their consumer anyway.
FC_AVX2_INLINE void stream_values(float* out, __m256 v) { _mm256_stream_ps(out, v); }
FC_AVX2_INLINE void stream_indices(int64_t* out, __m256i id) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(out), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(id)));
  _mm256_stream_si256(reinterpret_cast<__m256i*>(out + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(id, 1)));
}

// 8 tap numbers (bytes) widened to int32 lanes, and back: the argmax lanes' width.
FC_AVX2_INLINE __m256i load_taps(const uint8_t* in) {
  int64_t bytes;
  std::memcpy(&bytes, in, 8);
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
}

// Tap numbers (0..255) narrowed to 8 bytes. Never streamed: an eighth of the int64 indices' lines.
FC_AVX2_INLINE void store_taps(uint8_t* out, __m256i id) {
  const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(id), _mm256_extracti128_si256(id, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(words, words));
}

template <bool kStream>
FC_AVX2_INLINE void store_argmax(int64_t* out, __m256i id) {
  if constexpr (kStream) {
    stream_indices(out, id);
  } else {
    store_indices(out, id);
  }
}
template <bool kStream>
FC_AVX2_INLINE void store_argmax(uint8_t* out, __m256i id) {
  store_taps(out, id);
}

// ------------------------------------------------------------------------------------ NCHW forward
// v2 (v1 is the scalar loop in max_pool2d.cpp): 8 output columns at once. Stride 1 loads each tap's 8
// columns directly; stride 2 loads 16 consecutive inputs and splits them into even and odd columns with
// one in-lane shuffle each (two taps per load pair), leaving the lanes in the order 0,1,4,5,2,3,6,7 for
// every tap alike, so the max and argmax are put back in order once per block, not once per tap. The
// argmax lanes hold the tap's share row + j (a broadcast); flat indices add the columns' own offsets at
// the end, tap numbers need none (every window here starts at its lane's column).
template <int kStride, int kS, typename Index>
FC_AVX2_INLINE void nchw_block(const float* x, int64_t W, Taps r, int64_t row_step, int64_t S_runtime, int64_t b,
                               float* y, Index* ind) {
  const int64_t S = kS > 0 ? kS : S_runtime;
  __m256 max = _mm256_set1_ps(-__builtin_inff());
  __m256 id = index_vector(r.index);  // the first tap, (r.first, b): every column tap is in bounds
  for (int64_t h = r.first, row = r.index; h < r.end; ++h, row += row_step) {
    const float* xr = x + h * W + b;
    if constexpr (kStride == 1) {
      for (int64_t j = 0; j < S; ++j) take_max(_mm256_loadu_ps(xr + j), index_vector(row + j), max, id);
    } else {
      for (int64_t j = 0; j < S; j += 2) {
        const __m256 lo = _mm256_loadu_ps(xr + j), hi = _mm256_loadu_ps(xr + j + 8);
        take_max(_mm256_shuffle_ps(lo, hi, 0x88), index_vector(row + j), max, id);
        if (j + 1 < S) take_max(_mm256_shuffle_ps(lo, hi, 0xDD), index_vector(row + j + 1), max, id);
      }
    }
  }
  __m256i idi = _mm256_castps_si256(id);
  __m256i lanes;
  if constexpr (kStride == 1) {
    lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  } else {
    max = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(max), 0xD8));
    idi = _mm256_permute4x64_epi64(idi, 0xD8);
    lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  }
  if constexpr (std::is_same_v<Index, int64_t>) {
    idi = _mm256_add_epi32(idi, _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(b))));
  }
  _mm256_storeu_ps(y, max);
  store_argmax<false>(ind, idi);
}

template <int kStride, int kS, typename Index>
FC_AVX2 void nchw_row(const float* x, int64_t W, Taps r, int64_t row_step, int64_t pad_w, int64_t S,
                      int64_t q_begin, int64_t q_end, float* y, Index* ind) {
  int64_t q = q_begin;
  for (; q + 8 <= q_end; q += 8) {
    nchw_block<kStride, kS>(x, W, r, row_step, S, q * kStride - pad_w, y + q, ind + q);
  }
  if (q < q_end) {  // the tail as one block overlapping the last: same values written twice
    q = q_end - 8;
    nchw_block<kStride, kS>(x, W, r, row_step, S, q * kStride - pad_w, y + q, ind + q);
  }
}

// ------------------------------------------------------------------------------- channels_last forward
// v2 (v1: 16-channel blocks of 16-byte GCC vectors): 8-float AVX2 lanes over channels, kVecs vectors per
// pixel (32 channels where there are, so 4 independent compare/blend chains hide their latency), the
// running max and argmax in registers across the whole window.
template <int kVecs, bool kStream, typename Index>
FC_AVX2_INLINE void cl_block(const float* x, int64_t C, int64_t W, Taps r, Taps s, int64_t dh, int64_t dw,
                             ArgmaxSteps steps, float* y, Index* ind) {
  __m256 max[kVecs], id[kVecs];
  const __m256 seed = index_vector(window_seed<Index>(r, s));
  for (int v = 0; v < kVecs; ++v) {
    max[v] = _mm256_set1_ps(-__builtin_inff());
    id[v] = seed;
  }
  for (int64_t h = r.first, row = r.index; h < r.end; h += dh, row += steps.row) {
    for (int64_t w = s.first, tap = row + s.index; w < s.end; w += dw, tap += steps.col) {
      const float* xv = x + (h * W + w) * C;
      const __m256 index = index_vector(tap);
      for (int v = 0; v < kVecs; ++v) take_max(_mm256_loadu_ps(xv + 8 * v), index, max[v], id[v]);
    }
  }
  for (int v = 0; v < kVecs; ++v) {
    if constexpr (kStream) {
      stream_values(y + 8 * v, max[v]);
    } else {
      _mm256_storeu_ps(y + 8 * v, max[v]);
    }
    store_argmax<kStream>(ind + 8 * v, _mm256_castps_si256(id[v]));
  }
}

template <bool kStream, typename Index>
FC_AVX2 void cl_row(const float* x, int64_t C, int64_t W, Taps r, const Taps* cols, int64_t Q, int64_t dh,
                    int64_t dw, ArgmaxSteps steps, int64_t c_end, float* y, Index* ind) {
  for (int64_t q = 0; q < Q; ++q) {
    const Taps s = cols[q];
    float* yq = y + q * C;
    Index* iq = ind + q * C;
    int64_t c = 0;
    for (; c + 32 <= c_end; c += 32) cl_block<4, kStream>(x + c, C, W, r, s, dh, dw, steps, yq + c, iq + c);
    if (c + 16 <= c_end) {
      cl_block<2, kStream>(x + c, C, W, r, s, dh, dw, steps, yq + c, iq + c);
      c += 16;
    }
    if (c + 8 <= c_end) cl_block<1, kStream>(x + c, C, W, r, s, dh, dw, steps, yq + c, iq + c);
  }
  if constexpr (kStream) _mm_sfence();  // streamed stores are weakly ordered
}

// ------------------------------------------------------------------------------------- NCHW backward
FC_AVX2 void taps_2x2_plane(const float* dy, const uint8_t* taps, int64_t P, int64_t Q, int64_t H, int64_t W,
                            float* dx) {
  const __m256 zero = _mm256_setzero_ps();
  const int64_t q_vec = std::min(Q, W / 2) / 8 * 8;  // windows whose 16 columns lie inside the row
  for (int64_t h = 0; h < H; ++h) {
    float* dx_row = dx + h * W;
    const int64_t out_h = h / 2;
    if (out_h >= P) {  // below the last window
      std::fill(dx_row, dx_row + W, 0.0f);
      continue;
    }
    const float* dy_row = dy + out_h * Q;
    const uint8_t* tap_row = taps + out_h * Q;
    const int32_t left = static_cast<int32_t>(2 * (h % 2)), right = left + 1;  // this row's two taps
    int64_t q = 0;
    for (; q < q_vec; q += 8) {
      const __m256i t = load_taps(tap_row + q);
      const __m256 g = _mm256_loadu_ps(dy_row + q);
      const __m256 a = _mm256_add_ps(_mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(t, _mm256_set1_epi32(left))), g), zero);
      const __m256 b = _mm256_add_ps(_mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(t, _mm256_set1_epi32(right))), g), zero);
      const __m256 lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5 ...
      _mm256_storeu_ps(dx_row + 2 * q, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(dx_row + 2 * q + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (int64_t w = 2 * q; w < W; ++w) {  // the columns left, and those right of the last window
      const int64_t out_w = w / 2;
      const bool hit = out_w < Q && tap_row[out_w] == left + w % 2;
      dx_row[w] = hit ? 0.0f + dy_row[out_w] : 0.0f;
    }
  }
}

// ------------------------------------------------------------------------------ channels_last backward
FC_AVX2 void cl_taps_pixel(const float* dy_image, const uint8_t* taps_image, const Cover* covers, int64_t n_covers,
                           int64_t C, int64_t c_end, float* dx_pixel) {
  for (int64_t c = 0; c < c_end; c += 8) {
    __m256 sum = _mm256_setzero_ps();
    for (int64_t k = 0; k < n_covers; ++k) {
      const __m256i t = load_taps(taps_image + covers[k].j * C + c);
      const __m256 hit = _mm256_castsi256_ps(_mm256_cmpeq_epi32(t, _mm256_set1_epi32(covers[k].tap)));
      sum = _mm256_add_ps(sum, _mm256_and_ps(hit, _mm256_loadu_ps(dy_image + covers[k].j * C + c)));
    }
    _mm256_storeu_ps(dx_pixel + c, sum);
  }
}

}  // namespace

void bprop_channels_last_taps_pixel(const float* dy_image, const uint8_t* taps_image, const Cover* covers,
                                    int64_t n_covers, int64_t C, int64_t c_end, float* dx_pixel) {
  cl_taps_pixel(dy_image, taps_image, covers, n_covers, C, c_end, dx_pixel);
}

void bprop_nchw_taps_2x2_plane(const float* dy, const uint8_t* taps, int64_t P, int64_t Q, int64_t H, int64_t W,
                               float* dx) {
  taps_2x2_plane(dy, taps, P, Q, H, W, dx);
}

bool nchw_columns(int64_t W, int64_t Q, int64_t stride_w, int64_t pad_w, int64_t S, int64_t* begin,
                  int64_t* end) {
  if (stride_w != 1 && stride_w != 2) return false;
  // First column whose window starts inside the row; last whose loads end inside it. Stride 2 loads
  // 16 floats at each even tap offset j, reading up to column q*2 - pad + jmax + 15 of the block's
  // first q, i.e. one past the window of an odd-width kernel.
  const int64_t first = (pad_w + stride_w - 1) / stride_w;
  int64_t last;
  if (stride_w == 1) {
    last = W - S + pad_w;
  } else {
    const int64_t jmax = (S - 1) & ~int64_t(1);
    const int64_t num = W - 2 - jmax + pad_w;
    last = num >= 0 ? num / 2 : -1;
  }
  *begin = first;
  *end = std::min(Q, last + 1);
  return *end - *begin >= 8;
}

template <typename Index>
void fprop_nchw_row(const float* x, int64_t W, Taps r, int64_t row_step, int64_t stride_w, int64_t pad_w,
                    int64_t S, int64_t q_begin, int64_t q_end, float* y_row, Index* i_row) {
  if (stride_w == 1) {
    switch (S) {
      case 2: return nchw_row<1, 2>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
      case 3: return nchw_row<1, 3>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
      default: return nchw_row<1, 0>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
    }
  }
  switch (S) {
    case 2: return nchw_row<2, 2>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
    case 3: return nchw_row<2, 3>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
    default: return nchw_row<2, 0>(x, W, r, row_step, pad_w, S, q_begin, q_end, y_row, i_row);
  }
}

template <typename Index>
void fprop_channels_last_row(const float* x, int64_t C, int64_t W, Taps r, const Taps* cols, int64_t Q,
                             int64_t dilation_h, int64_t dilation_w, ArgmaxSteps steps, int64_t c_end,
                             float* y_row, Index* i_row, bool stream) {
  // Streaming needs every vector store aligned: C a multiple of 8 and 32-byte aligned rows.
  stream = stream && C % 8 == 0 && reinterpret_cast<uintptr_t>(y_row) % 32 == 0 &&
           (sizeof(Index) == 1 || reinterpret_cast<uintptr_t>(i_row) % 32 == 0);
  if (stream) {
    cl_row<true>(x, C, W, r, cols, Q, dilation_h, dilation_w, steps, c_end, y_row, i_row);
  } else {
    cl_row<false>(x, C, W, r, cols, Q, dilation_h, dilation_w, steps, c_end, y_row, i_row);
  }
}

FASTCONV_POOL_AVX2_INSTANTIATE(int64_t)
FASTCONV_POOL_AVX2_INSTANTIATE(uint8_t)

}  // namespace fastconv::cpu::pool_avx2

#else  // no AVX2 kernels in this build: available() is false and nothing else is called

namespace fastconv::cpu::pool_avx2 {

bool available() { return false; }
bool nchw_columns(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*) { return false; }
template <typename Index>
void fprop_nchw_row(const float*, int64_t, Taps, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                    Index*) {}
template <typename Index>
void fprop_channels_last_row(const float*, int64_t, int64_t, Taps, const Taps*, int64_t, int64_t, int64_t,
                             ArgmaxSteps, int64_t, float*, Index*, bool) {}
void bprop_nchw_taps_2x2_plane(const float*, const uint8_t*, int64_t, int64_t, int64_t, int64_t, float*) {}
void bprop_channels_last_taps_pixel(const float*, const uint8_t*, const Cover*, int64_t, int64_t, int64_t, float*) {}
FASTCONV_POOL_AVX2_INSTANTIATE(int64_t)
FASTCONV_POOL_AVX2_INSTANTIATE(uint8_t)

}  // namespace fastconv::cpu::pool_avx2

#endif
