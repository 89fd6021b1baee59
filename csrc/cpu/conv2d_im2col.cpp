// im2col + GEMM on the CPU, per (image, group):
//   fprop  y[Kg, PQ]    = W[Kg, CgRS] · col[CgRS, PQ]
//   dgrad  dcol[CgRS, PQ] = Wᵀ · dy[Kg, PQ], then col2im as a gather (deterministic)
//   wgrad  dW[Kg, CgRS] += dy[Kg, PQ] · colᵀ, images summed in order (deterministic)
// The GEMM sees the output through its strides, so NCHW and channels_last outputs need no transpose.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "conv2d_cpu.h"
#include "gemm/gemm.h"
#include "gemm/gemm_blas.h"
#include "im2col.h"

namespace fastconv::cpu {

namespace {

template <typename T>
using GemmFn = void (*)(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t, int64_t, T*,
                        int64_t, int64_t, bool);

template <typename T>
GemmFn<T> select_gemm(bool use_blas) {
  return use_blas ? &gemm_blas<T> : &gemm<T>;
}

// A [Kg, P*Q] slice of a 4-D output seen as a matrix needs P and Q to collapse into one stride,
// true for NCHW and channels_last tensors we allocate ourselves and for contiguous grad_outputs.
void check_pq_collapses(const at::Tensor& t, const char* name) {
  TORCH_INTERNAL_ASSERT(t.numel() == 0 || t.size(2) == 1 || t.size(3) == 1 || t.stride(2) == t.size(3) * t.stride(3),
                        name, " must have collapsible spatial strides");
}

template <typename T>
void fprop(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
           at::Tensor& output, GemmFn<T> gemm_fn) {
  const Strides4 xs = strides_of(input), ys = strides_of(output);
  const T* x = input.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();  // contiguous [K, Cg*R*S]
  const T* b = bias.defined() ? bias.const_data_ptr<T>() : nullptr;
  T* y = output.mutable_data_ptr<T>();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), CRS = p.gemm_k(), PQ = p.P * p.Q;
  at::parallel_for(0, p.N * p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      im2col(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data());
      T* y_ng = y + n * ys.n + g * Kg * ys.c;
      if (b) {
        for (int64_t k = 0; k < Kg; ++k)
          for (int64_t pq = 0; pq < PQ; ++pq) y_ng[k * ys.c + pq * ys.w] = b[g * Kg + k];
      }
      gemm_fn(Kg, PQ, CRS, w + g * Kg * CRS, CRS, 1, col.data(), PQ, 1, y_ng, ys.c, ys.w, b != nullptr);
    }
  });
}

template <typename T>
void dgrad(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
           at::Tensor& grad_input, GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), dxs = strides_of(grad_input);
  const T* dy = grad_output.const_data_ptr<T>();
  const T* w = weight.const_data_ptr<T>();
  T* dx = grad_input.mutable_data_ptr<T>();
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), CRS = p.gemm_k(), PQ = p.P * p.Q;
  at::parallel_for(0, p.N * p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t ng = begin; ng < end; ++ng) {
      const int64_t n = ng / p.groups, g = ng % p.groups;
      // Wᵀ is W read with swapped strides.
      gemm_fn(CRS, PQ, Kg, w + g * Kg * CRS, 1, CRS, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), PQ,
              1, false);
      col2im_gather(p, col.data(), dx + n * dxs.n + g * Cg * dxs.c, dxs.c, dxs.h, dxs.w);
    }
  });
}

template <typename T>
void wgrad(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input, at::Tensor& grad_weight,
           GemmFn<T> gemm_fn) {
  const Strides4 dys = strides_of(grad_output), xs = strides_of(input);
  const T* dy = grad_output.const_data_ptr<T>();
  const T* x = input.const_data_ptr<T>();
  T* dw = grad_weight.mutable_data_ptr<T>();  // contiguous [K, Cg*R*S]
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group(), CRS = p.gemm_k(), PQ = p.P * p.Q;
  if (p.N == 0) {
    std::fill(dw, dw + p.K * CRS, T(0));
    return;
  }
  // Groups in parallel; within a group the images add up in order, so the sum has one fixed order.
  at::parallel_for(0, p.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> col(CRS * PQ);
    for (int64_t g = begin; g < end; ++g) {
      for (int64_t n = 0; n < p.N; ++n) {
        im2col(p, x + n * xs.n + g * Cg * xs.c, xs.c, xs.h, xs.w, col.data());
        // colᵀ is col read with swapped strides.
        gemm_fn(Kg, CRS, PQ, dy + n * dys.n + g * Kg * dys.c, dys.c, dys.w, col.data(), 1, PQ, dw + g * Kg * CRS,
                CRS, 1, n > 0);
      }
    }
  });
}

}  // namespace

void conv2d_fprop_im2col(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output, bool use_blas) {
  check_pq_collapses(output, "output");
  const at::Tensor weight_matrix = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_im2col", [&] {
    fprop<scalar_t>(p, input, weight_matrix, bias, output, select_gemm<scalar_t>(use_blas));
  });
}

void conv2d_dgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                         at::Tensor& grad_input, bool use_blas) {
  check_pq_collapses(grad_output, "grad_output");
  const at::Tensor weight_matrix = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_im2col", [&] {
    dgrad<scalar_t>(p, grad_output, weight_matrix, grad_input, select_gemm<scalar_t>(use_blas));
  });
}

void conv2d_wgrad_im2col(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                         at::Tensor& grad_weight, bool use_blas) {
  check_pq_collapses(grad_output, "grad_output");
  TORCH_INTERNAL_ASSERT(grad_weight.is_contiguous(), "grad_weight must be contiguous");
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_im2col", [&] {
    wgrad<scalar_t>(p, grad_output, input, grad_weight, select_gemm<scalar_t>(use_blas));
  });
}

}  // namespace fastconv::cpu
