// The plain-loop conv2d kernels: algorithm "direct_simple" on CUDA (and under the emulator), the always-correct
// reference of every other GPU kernel and the fallback an explicit request runs, under its own name, where the
// requested algorithm's kernels do not apply. Deterministic: each output element is one thread's fixed-order
// sum, no atomics, no shared memory.
//
// Build: nvcc through csrc/cuda/conv2d_cuda.cu; g++ through csrc/emulator/conv2d_emulated.cpp (SIMT emulator).
// Test:  pytest tests/test_cuda_conv2d.py -k direct_simple (emulated, against torch in float64).
//
// Kernel versions:
//   conv2d_fprop_simple_kernel v1: one thread per output element, every operand read from global memory.
//   conv2d_dgrad_simple_kernel v1: one thread per input element gathers the (k, r, s) terms that reach it
//     (through the padding mode's readers) -> each grad-input element written once. Also direct's dgrad.
//   conv2d_wgrad_simple_kernel v1: one thread per weight element sums its N*P*Q terms in order.
#pragma once

#include "conv2d_common.cuh"

namespace fastconv::kernels {
inline namespace FASTCONV_KERNEL_NAMESPACE {

inline constexpr int kSimpleThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(256)
    conv2d_fprop_simple_kernel(Conv2dProblem p, const scalar_t* x, Strides4 xs, const scalar_t* wt, Strides4 ws,
                              const scalar_t* bias, scalar_t* y, Strides4 ys) {
  using acc = acc_t<scalar_t>;
  const int64_t total = p.output_numel();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(int64_t, i, total) {
    int64_t t = i;
    const int64_t q = t % p.Q; t /= p.Q;
    const int64_t out_h = t % p.P; t /= p.P;
    const int64_t k = t % p.K;
    const int64_t n = t / p.K;
    const int64_t g = k / Kg;
    acc sum = bias != nullptr ? static_cast<acc>(bias[k]) : acc(0);
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < p.R; ++r) {
        const int64_t h = p.input_row(out_h, r);
        if (h < 0) continue;
        for (int64_t s = 0; s < p.S; ++s) {
          const int64_t w = p.input_col(q, s);
          if (w < 0) continue;
          sum += static_cast<acc>(x[n * xs.n + (g * Cg + c) * xs.c + h * xs.h + w * xs.w]) *
                 static_cast<acc>(wt[k * ws.n + c * ws.c + r * ws.h + s * ws.w]);
        }
      }
    y[n * ys.n + k * ys.c + out_h * ys.h + q * ys.w] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(256)
    conv2d_dgrad_simple_kernel(Conv2dProblem p, const scalar_t* dy, Strides4 dys, const scalar_t* wt, Strides4 ws,
                               scalar_t* dx, Strides4 dxs) {
  using acc = acc_t<scalar_t>;
  const int64_t total = p.input_numel();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(int64_t, i, total) {
    int64_t t = i;
    const int64_t w = t % p.W; t /= p.W;
    const int64_t h = t % p.H; t /= p.H;
    const int64_t c = t % p.C;
    const int64_t n = t / p.C;
    const int64_t g = c / Cg, cg = c % Cg;
    acc sum = acc(0);
    p.for_each_reader(h, w, [&](int64_t r, int64_t s, int64_t out_h, int64_t out_w) {
      const scalar_t* dy_pos = dy + n * dys.n + out_h * dys.h + out_w * dys.w;
      const scalar_t* w_rs = wt + cg * ws.c + r * ws.h + s * ws.w;
      for (int64_t kk = 0; kk < Kg; ++kk) {
        const int64_t k = g * Kg + kk;
        sum += static_cast<acc>(dy_pos[k * dys.c]) * static_cast<acc>(w_rs[k * ws.n]);
      }
    });
    dx[n * dxs.n + c * dxs.c + h * dxs.h + w * dxs.w] = static_cast<scalar_t>(sum);
  }
}

// dw is contiguous [K][Cg][R][S].
template <typename scalar_t>
__global__ void __launch_bounds__(kSimpleThreads)
    conv2d_wgrad_simple_kernel(Conv2dProblem p, const scalar_t* dy, Strides4 dys, const scalar_t* x, Strides4 xs,
                               scalar_t* dw) {
  using acc = acc_t<scalar_t>;
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  FASTCONV_GRID_STRIDE_LOOP(int64_t, e, p.weight_numel()) {
    int64_t t = e;
    const int64_t s = t % p.S; t /= p.S;
    const int64_t r = t % p.R; t /= p.R;
    const int64_t cg = t % Cg;
    const int64_t k = t / Cg;
    const int64_t c = (k / Kg) * Cg + cg;
    acc sum = acc(0);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t out_h = 0; out_h < p.P; ++out_h) {
        const int64_t h = p.input_row(out_h, r);
        if (h < 0) continue;
        for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
          const int64_t w = p.input_col(out_w, s);
          if (w < 0) continue;
          sum += static_cast<acc>(dy[n * dys.n + k * dys.c + out_h * dys.h + out_w * dys.w]) *
                 static_cast<acc>(x[n * xs.n + c * xs.c + h * xs.h + w * xs.w]);
        }
      }
    dw[e] = static_cast<scalar_t>(sum);
  }
}

// A grid-stride launch of one thread per element of total; the grid is capped, the loop covers the rest.
template <typename Kernel, typename... Args>
void launch_per_element(Kernel kernel, int64_t total, Stream stream, Args&&... args) {
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div<int64_t>(total, kSimpleThreads), 65536);
  launch_kernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kSimpleThreads), 0, stream,
                std::forward<Args>(args)...);
}

template <typename scalar_t>
void launch_conv2d_fprop_simple(const Conv2dProblem& p, const scalar_t* x, Strides4 xs, const scalar_t* wt,
                                Strides4 ws, const scalar_t* bias, scalar_t* y, Strides4 ys, Stream stream) {
  launch_per_element(conv2d_fprop_simple_kernel<scalar_t>, p.output_numel(), stream, p, x, xs, wt, ws, bias, y, ys);
}

template <typename scalar_t>
void launch_conv2d_dgrad_simple(const Conv2dProblem& p, const scalar_t* dy, Strides4 dys, const scalar_t* wt,
                                Strides4 ws, scalar_t* dx, Strides4 dxs, Stream stream) {
  launch_per_element(conv2d_dgrad_simple_kernel<scalar_t>, p.input_numel(), stream, p, dy, dys, wt, ws, dx, dxs);
}

template <typename scalar_t>
void launch_conv2d_wgrad_simple(const Conv2dProblem& p, const scalar_t* dy, Strides4 dys, const scalar_t* x,
                                Strides4 xs, scalar_t* dw, Stream stream) {
  launch_per_element(conv2d_wgrad_simple_kernel<scalar_t>, p.weight_numel(), stream, p, dy, dys, x, xs, dw);
}

}  // namespace FASTCONV_KERNEL_NAMESPACE
}  // namespace fastconv::kernels
