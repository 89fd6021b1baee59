// fastconv's own batched GEMM for the im2col convolution: C = A·B (+ bias per row) (+ C if accumulate),
// every operand strided (a transpose is a swap of strides, never a copy), any M, N, K.
//
// Build: nvcc through csrc/cuda/conv2d_cuda.cu (FASTCONV_CUDA=1 python setup.py build_ext --inplace);
// g++ through csrc/emulator/conv2d_emulated.cpp, where the SIMT emulator runs it on the CPU.
// Test:  pytest tests/test_cuda_conv2d.py (algorithm="im2col"; needs_cuda tests on a GPU).
//
// Kernel versions (llm.c style):
//   gemm_tiled_kernel v1: 64x64 block tile, BK=16 k-slab of A and B staged in shared memory, 256 threads,
//     each a 4x4 register block of C (rows ty+16i, cols tx+16j: conflict-free shared reads, coalesced
//     stores) -> every element loaded from global memory is reused 64 times from shared memory and 4 times
//     from registers, instead of once per multiply-add.
//   kVecA / kVecB: the same kernel loading A or B with one 16-byte float4 per thread where the host proved
//     alignment (unit stride along the loaded dimension, leading dimension and base pointers multiples of
//     4 floats, K or N a multiple of 4) -> a quarter of the load instructions; scalar loads otherwise.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kGemmBM = 64;
inline constexpr int kGemmBN = 64;
inline constexpr int kGemmBK = 16;
inline constexpr int kGemmThreads = 256;  // 16 x 16, each 4 x 4 outputs
inline constexpr int kGemmTM = 4;
inline constexpr int kGemmTN = 4;

// C(i, j) = sum_k A(i, k) B(k, j); X(a, b) lives at X[a * rs + b * cs]. The batch index z of
// blockIdx.z splits into (b1, b2) = (z / batch2, z % batch2); each operand is offset by b1 * x_b1 + b2 * x_b2
// (conv: b1 = image, b2 = group). bias (may be null) is indexed bias[b2 * bias_b2 + i].
struct GemmArgs {
  int64_t M, N, K;
  int64_t rs_a, cs_a, rs_b, cs_b, rs_c, cs_c;
  int64_t batch2;
  int64_t a_b1, a_b2, b_b1, b_b2, c_b1, c_b2, bias_b2;
  bool accumulate;
};

template <typename scalar_t, typename out_t, bool kVecA, bool kVecB>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_tiled_kernel(GemmArgs g, const scalar_t* A, const scalar_t* B, const scalar_t* bias, out_t* C) {
  using acc = acc_t<scalar_t>;
  __shared__ __align__(16) acc As[kGemmBK][kGemmBM];  // A tile stored k-major: As[k][row]
  __shared__ __align__(16) acc Bs[kGemmBK][kGemmBN];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t z = blockIdx.z;
  const int64_t b1 = z / g.batch2, b2 = z % g.batch2;
  A += b1 * g.a_b1 + b2 * g.a_b2;
  B += b1 * g.b_b1 + b2 * g.b_b2;
  C += b1 * g.c_b1 + b2 * g.c_b2;
  if (bias != nullptr) bias += b2 * g.bias_b2;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kGemmBM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kGemmBN;
  // Consecutive threads walk the dimension of unit stride, so scalar loads coalesce whichever it is.
  const bool a_k_fastest = g.cs_a == 1;
  const bool b_n_fastest = g.cs_b == 1 || g.rs_b != 1;

  acc sum[kGemmTM][kGemmTN];
  FASTCONV_UNROLL
  for (int i = 0; i < kGemmTM; ++i)
    FASTCONV_UNROLL
    for (int j = 0; j < kGemmTN; ++j) sum[i][j] = acc(0);

  for (int64_t k0 = 0; k0 < g.K; k0 += kGemmBK) {
    // ---- stage A[row0:+64, k0:+16] into As (transposed)
    if constexpr (kVecA) {
      const int r = tid / 4, kk = (tid % 4) * 4;
      const int64_t gr = row0 + r, gk = k0 + kk;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (gr < g.M && gk < g.K) v = *reinterpret_cast<const float4*>(A + gr * g.rs_a + gk);
      As[kk + 0][r] = v.x;
      As[kk + 1][r] = v.y;
      As[kk + 2][r] = v.z;
      As[kk + 3][r] = v.w;
    } else {
      FASTCONV_UNROLL
      for (int l = 0; l < kGemmBM * kGemmBK / kGemmThreads; ++l) {
        const int idx = tid + l * kGemmThreads;
        const int r = a_k_fastest ? idx / kGemmBK : idx % kGemmBM;
        const int kk = a_k_fastest ? idx % kGemmBK : idx / kGemmBM;
        const int64_t gr = row0 + r, gk = k0 + kk;
        As[kk][r] = (gr < g.M && gk < g.K) ? static_cast<acc>(A[gr * g.rs_a + gk * g.cs_a]) : acc(0);
      }
    }
    // ---- stage B[k0:+16, col0:+64] into Bs
    if constexpr (kVecB) {
      const int kk = tid / 16, c = (tid % 16) * 4;
      const int64_t gk = k0 + kk, gc = col0 + c;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (gk < g.K && gc < g.N) v = *reinterpret_cast<const float4*>(B + gk * g.rs_b + gc);
      Bs[kk][c + 0] = v.x;
      Bs[kk][c + 1] = v.y;
      Bs[kk][c + 2] = v.z;
      Bs[kk][c + 3] = v.w;
    } else {
      FASTCONV_UNROLL
      for (int l = 0; l < kGemmBN * kGemmBK / kGemmThreads; ++l) {
        const int idx = tid + l * kGemmThreads;
        const int kk = b_n_fastest ? idx / kGemmBN : idx % kGemmBK;
        const int c = b_n_fastest ? idx % kGemmBN : idx / kGemmBK;
        const int64_t gk = k0 + kk, gc = col0 + c;
        Bs[kk][c] = (gk < g.K && gc < g.N) ? static_cast<acc>(B[gk * g.rs_b + gc * g.cs_b]) : acc(0);
      }
    }
    __syncthreads();  // the tiles are complete before anyone reads them

    FASTCONV_UNROLL
    for (int kk = 0; kk < kGemmBK; ++kk) {
      acc a[kGemmTM], b[kGemmTN];
      FASTCONV_UNROLL
      for (int i = 0; i < kGemmTM; ++i) a[i] = As[kk][ty + 16 * i];
      FASTCONV_UNROLL
      for (int j = 0; j < kGemmTN; ++j) b[j] = Bs[kk][tx + 16 * j];
      FASTCONV_UNROLL
      for (int i = 0; i < kGemmTM; ++i)
        FASTCONV_UNROLL
        for (int j = 0; j < kGemmTN; ++j) sum[i][j] += a[i] * b[j];
    }
    __syncthreads();  // everyone is done reading before the next slab overwrites the tiles
  }

  FASTCONV_UNROLL
  for (int i = 0; i < kGemmTM; ++i) {
    const int64_t gr = row0 + ty + 16 * i;
    if (gr >= g.M) continue;
    const acc bias_i = bias != nullptr ? static_cast<acc>(bias[gr]) : acc(0);
    FASTCONV_UNROLL
    for (int j = 0; j < kGemmTN; ++j) {
      const int64_t gc = col0 + tx + 16 * j;
      if (gc >= g.N) continue;
      out_t* dst = C + gr * g.rs_c + gc * g.cs_c;
      acc v = sum[i][j] + bias_i;
      if (g.accumulate) v += static_cast<acc>(*dst);
      *dst = static_cast<out_t>(v);
    }
  }
}

// Host side: chooses the vectorised variants when alignment allows (float only) and launches.
template <typename scalar_t, typename out_t>
void launch_gemm(const GemmArgs& g, int64_t batch, const scalar_t* A, const scalar_t* B, const scalar_t* bias,
                 out_t* C, Stream stream) {
  if (g.M == 0 || g.N == 0 || batch == 0) return;
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  auto mult4 = [](int64_t v) { return v % 4 == 0; };
  const bool batched1 = batch > g.batch2;
  bool vec_a = false, vec_b = false;
  if constexpr (std::is_same_v<scalar_t, float>) {
    vec_a = g.cs_a == 1 && mult4(g.rs_a) && mult4(g.K) && aligned(A) && mult4(g.a_b2) &&
            (!batched1 || mult4(g.a_b1));
    vec_b = g.cs_b == 1 && mult4(g.rs_b) && mult4(g.N) && aligned(B) && mult4(g.b_b2) &&
            (!batched1 || mult4(g.b_b1));
  }
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(g.N, kGemmBN)),
                  static_cast<unsigned>(ceil_div<int64_t>(g.M, kGemmBM)), static_cast<unsigned>(batch));
  const dim3 block(kGemmThreads);
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (vec_a && vec_b) {
      launch_kernel(gemm_tiled_kernel<scalar_t, out_t, true, true>, grid, block, 0, stream, g, A, B, bias, C);
      return;
    } else if (vec_a) {
      launch_kernel(gemm_tiled_kernel<scalar_t, out_t, true, false>, grid, block, 0, stream, g, A, B, bias, C);
      return;
    } else if (vec_b) {
      launch_kernel(gemm_tiled_kernel<scalar_t, out_t, false, true>, grid, block, 0, stream, g, A, B, bias, C);
      return;
    }
  }
  launch_kernel(gemm_tiled_kernel<scalar_t, out_t, false, false>, grid, block, 0, stream, g, A, B, bias, C);
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
