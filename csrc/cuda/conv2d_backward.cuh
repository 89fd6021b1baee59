// Direct backward kernels of conv2d on the GPU, all deterministic (no atomics, fixed summation orders):
// grad-input as a gather, grad-weight and grad-bias as block reductions.
//
// Build: nvcc through csrc/cuda/conv2d_cuda.cu; g++ through csrc/emulator/conv2d_emulated.cpp (SIMT emulator).
// Test:  pytest tests/test_cuda_conv2d.py (algorithm="direct"; bgrad for every algorithm; determinism tests).
//
// Kernel versions:
//   dgrad: conv2d_dgrad_simple_kernel (conv2d_simple.cuh), one thread per input element gathering the
//     (k, r, s) terms that reach it -> each grad-input element written once, no atomics, bitwise reproducible.
//   conv2d_wgrad_reduce_kernel v1: one 256-thread block per weight element; thread t sums the positions
//     t, t+256, ... of N*P*Q, then a shared-memory tree reduction -> a fixed order independent of scheduling,
//     no atomics, and N*P*Q-long reductions spread over 256 threads.
//   conv2d_bgrad_reduce_kernel v1: the same reduction per output channel.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kReduceThreads = 256;

// Tree reduction of one value per thread over a kReduceThreads block; every thread gets the total.
template <typename acc>
__device__ __forceinline__ acc block_reduce_sum(acc v, acc* partial) {
  const int tid = threadIdx.x;
  partial[tid] = v;
  __syncthreads();
  for (int s = kReduceThreads / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] += partial[tid + s];
    __syncthreads();
  }
  return partial[0];
}

// grid.x = K * Cg * R * S, one block per weight element; dw is contiguous [K][Cg][R][S].
template <typename scalar_t>
__global__ void __launch_bounds__(kReduceThreads)
    conv2d_wgrad_reduce_kernel(Conv2dProblem p, const scalar_t* dy, Strides4 dys, const scalar_t* x, Strides4 xs,
                               scalar_t* dw) {
  using acc = acc_t<scalar_t>;
  __shared__ acc partial[kReduceThreads];
  const int64_t e = blockIdx.x;
  int64_t t = e;
  const int64_t s = t % p.S; t /= p.S;
  const int64_t r = t % p.R; t /= p.R;
  const int64_t cg = t % p.C_per_group();
  const int64_t k = t / p.C_per_group();
  const int64_t c = (k / p.K_per_group()) * p.C_per_group() + cg;
  const int64_t PQ = p.P * p.Q, total = p.N * PQ;
  acc sum = acc(0);
  for (int64_t i = threadIdx.x; i < total; i += kReduceThreads) {
    const int64_t n = i / PQ, pq = i % PQ, out_h = pq / p.Q, out_w = pq % p.Q;
    const int64_t h = p.input_row(out_h, r), w = p.input_col(out_w, s);
    if (h < 0 || w < 0) continue;
    sum += static_cast<acc>(dy[n * dys.n + k * dys.c + out_h * dys.h + out_w * dys.w]) *
           static_cast<acc>(x[n * xs.n + c * xs.c + h * xs.h + w * xs.w]);
  }
  sum = block_reduce_sum(sum, partial);
  if (threadIdx.x == 0) dw[e] = static_cast<scalar_t>(sum);
}

// grid.x = K; db[k] = sum over n, p, q of dy[n, k, p, q].
template <typename scalar_t>
__global__ void __launch_bounds__(kReduceThreads)
    conv2d_bgrad_reduce_kernel(int64_t N, int64_t K, int64_t P, int64_t Q, const scalar_t* dy, Strides4 dys,
                               scalar_t* db) {
  using acc = acc_t<scalar_t>;
  __shared__ acc partial[kReduceThreads];
  const int64_t k = blockIdx.x;
  const int64_t PQ = P * Q, total = N * PQ;
  acc sum = acc(0);
  for (int64_t i = threadIdx.x; i < total; i += kReduceThreads) {
    const int64_t n = i / PQ, pq = i % PQ;
    sum += static_cast<acc>(dy[n * dys.n + k * dys.c + (pq / Q) * dys.h + (pq % Q) * dys.w]);
  }
  sum = block_reduce_sum(sum, partial);
  if (threadIdx.x == 0) db[k] = static_cast<scalar_t>(sum);
}

template <typename scalar_t>
void launch_conv2d_wgrad_direct(const Conv2dProblem& p, const scalar_t* dy, Strides4 dys, const scalar_t* x,
                                Strides4 xs, scalar_t* dw, Stream stream) {
  const int64_t total = p.weight_numel();
  if (total == 0) return;
  launch_kernel(conv2d_wgrad_reduce_kernel<scalar_t>, dim3(static_cast<unsigned>(total)), dim3(kReduceThreads), 0,
                stream, p, dy, dys, x, xs, dw);
}

template <typename scalar_t>
void launch_conv2d_bgrad(int64_t N, int64_t K, int64_t P, int64_t Q, const scalar_t* dy, Strides4 dys, scalar_t* db,
                         Stream stream) {
  if (K == 0) return;
  launch_kernel(conv2d_bgrad_reduce_kernel<scalar_t>, dim3(static_cast<unsigned>(K)), dim3(kReduceThreads), 0,
                stream, N, K, P, Q, dy, dys, db);
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
