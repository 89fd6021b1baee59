// im2col and its gather-style inverse (col2im) for the im2col+GEMM convolution on the GPU.
// A chunk of `count` images is unrolled into col[n][c][r][s][p][q] (= [n][g][Cg*R*S][P*Q]: one
// [CgRS x PQ] matrix per image and group, ready for the batched GEMM in sgemm.cuh).
//
// Build: nvcc through csrc/cuda/conv2d_cuda.cu; g++ through csrc/emulator/conv2d_emulated.cpp (SIMT emulator).
// Test:  pytest tests/test_cuda_conv2d.py (algorithm="im2col" / "im2col_blas").
//
// Kernel versions:
//   im2col_kernel v1: one thread per column element, q fastest -> consecutive threads write consecutive
//     addresses and, for stride 1 NCHW input, read consecutive ones; a grid-stride loop with 64-bit indices.
//   col2im_gather_kernel v1: one thread per input element summing its column entries (R*S, more when a
//     reflect/replicate/circular padding also reads it) in a fixed order -> no atomics, each output
//     written once, bitwise deterministic.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kElementwiseThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(kElementwiseThreads)
    im2col_kernel(Conv2dProblem p, int64_t count, const scalar_t* x, Strides4 xs, scalar_t* col) {
  const int64_t total = count * p.C * p.R * p.S * p.P * p.Q;
  FASTCONV_GRID_STRIDE_LOOP(int64_t, i, total) {
    int64_t t = i;
    const int64_t q = t % p.Q; t /= p.Q;
    const int64_t out_h = t % p.P; t /= p.P;
    const int64_t s = t % p.S; t /= p.S;
    const int64_t r = t % p.R; t /= p.R;
    const int64_t c = t % p.C;
    const int64_t n = t / p.C;
    const int64_t h = p.input_row(out_h, r), w = p.input_col(q, s);
    col[i] = (h >= 0 && w >= 0) ? x[n * xs.n + c * xs.c + h * xs.h + w * xs.w] : scalar_t(0);
  }
}

// col holds accumulation-type values (float for half/bfloat16) so the sum rounds once.
template <typename scalar_t>
__global__ void __launch_bounds__(kElementwiseThreads)
    col2im_gather_kernel(Conv2dProblem p, int64_t count, const acc_t<scalar_t>* col, scalar_t* dx, Strides4 dxs) {
  using acc = acc_t<scalar_t>;
  const int64_t total = count * p.C * p.H * p.W;
  const int64_t PQ = p.P * p.Q;
  FASTCONV_GRID_STRIDE_LOOP(int64_t, i, total) {
    int64_t t = i;
    const int64_t w = t % p.W; t /= p.W;
    const int64_t h = t % p.H; t /= p.H;
    const int64_t c = t % p.C;
    const int64_t n = t / p.C;
    const acc* col_c = col + (n * p.C + c) * p.R * p.S * PQ;
    acc sum = acc(0);
    p.for_each_reader(h, w, [&](int64_t r, int64_t s, int64_t out_h, int64_t out_w) {
      sum += col_c[(r * p.S + s) * PQ + out_h * p.Q + out_w];
    });
    dx[n * dxs.n + c * dxs.c + h * dxs.h + w * dxs.w] = static_cast<scalar_t>(sum);
  }
}

// Blocks for a grid-stride loop over `total` elements: enough to fill the GPU, never more than needed.
inline unsigned elementwise_blocks(int64_t total) {
  const int64_t blocks = ceil_div<int64_t>(total, kElementwiseThreads);
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

template <typename scalar_t>
void launch_im2col(const Conv2dProblem& p, int64_t count, const scalar_t* x, Strides4 xs, scalar_t* col,
                   Stream stream) {
  const int64_t total = count * p.C * p.R * p.S * p.P * p.Q;
  if (total == 0) return;
  launch_kernel(im2col_kernel<scalar_t>, dim3(elementwise_blocks(total)), dim3(kElementwiseThreads), 0, stream,
                p, count, x, xs, col);
}

template <typename scalar_t>
void launch_col2im(const Conv2dProblem& p, int64_t count, const acc_t<scalar_t>* col, scalar_t* dx, Strides4 dxs,
                   Stream stream) {
  const int64_t total = count * p.C * p.H * p.W;
  if (total == 0) return;
  launch_kernel(col2im_gather_kernel<scalar_t>, dim3(elementwise_blocks(total)), dim3(kElementwiseThreads), 0,
                stream, p, count, col, dx, dxs);
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
