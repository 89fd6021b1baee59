// Direct convolution on the CPU: every output element is one dot product over its window, read through
// the tensors' own strides (NCHW, channels_last or any view). Each output element is owned by one
// thread and summed in a fixed order, so all three passes are deterministic for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "conv2d_cpu.h"

namespace fastconv::cpu {

namespace {

// The first and one-past-last kernel tap whose input row lies inside [0, extent) for output position
// `out`: hoists the padding test out of the inner loops.
struct TapRange {
  int64_t begin, end;
};
inline TapRange valid_taps(int64_t out, int64_t stride, int64_t pad, int64_t dilation, int64_t taps,
                           int64_t extent) {
  const int64_t origin = out * stride - pad;
  int64_t begin = 0;
  if (origin < 0) begin = (-origin + dilation - 1) / dilation;
  int64_t end = taps;
  const int64_t last = extent - 1 - origin;  // the tap t needs origin + t * dilation <= extent - 1
  end = last < 0 ? 0 : std::min(taps, last / dilation + 1);
  return {begin, std::max(begin, end)};
}

template <typename T>
void fprop_kernel(const Conv2dProblem& p, const T* x, Strides4 xs, const T* w, Strides4 ws, const T* bias, T* y,
                  Strides4 ys) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K;
      const int64_t c_begin = (k / Kg) * Cg;
      for (int64_t out_h = 0; out_h < p.P; ++out_h) {
        const TapRange rr = valid_taps(out_h, p.stride_h, p.pad_h, p.dilation_h, p.R, p.H);
        const int64_t h0 = out_h * p.stride_h - p.pad_h;
        for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
          const TapRange sr = valid_taps(out_w, p.stride_w, p.pad_w, p.dilation_w, p.S, p.W);
          const int64_t w0 = out_w * p.stride_w - p.pad_w;
          T acc = bias ? bias[k] : T(0);
          for (int64_t c = 0; c < Cg; ++c) {
            const T* x_plane = x + n * xs.n + (c_begin + c) * xs.c;
            const T* w_plane = w + k * ws.n + c * ws.c;
            for (int64_t r = rr.begin; r < rr.end; ++r) {
              const T* x_row = x_plane + (h0 + r * p.dilation_h) * xs.h;
              const T* w_row = w_plane + r * ws.h;
              for (int64_t s = sr.begin; s < sr.end; ++s) {
                acc += x_row[(w0 + s * p.dilation_w) * xs.w] * w_row[s * ws.w];
              }
            }
          }
          y[n * ys.n + k * ys.c + out_h * ys.h + out_w * ys.w] = acc;
        }
      }
    }
  });
}

// grad_input[n, c, h, w] gathers grad_output[n, k, out_h, out_w] * weight[k, c, r, s] over every (k, r, s)
// whose window covers (h, w) (Conv2dProblem::output_row_of_tap / output_col_of_tap).
template <typename T>
void dgrad_kernel(const Conv2dProblem& p, const T* dy, Strides4 dys, const T* w, Strides4 ws, T* dx,
                  Strides4 dxs) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.N * p.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / p.C, c = nc % p.C;
      const int64_t g = c / Cg, c_in_group = c % Cg;
      for (int64_t h = 0; h < p.H; ++h) {
        for (int64_t x_w = 0; x_w < p.W; ++x_w) {
          T acc = T(0);
          for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
            const T* dy_plane = dy + n * dys.n + k * dys.c;
            const T* w_plane = w + k * ws.n + c_in_group * ws.c;
            for (int64_t r = 0; r < p.R; ++r) {
              const int64_t out_h = p.output_row_of_tap(h, r);
              if (out_h < 0) continue;
              for (int64_t s = 0; s < p.S; ++s) {
                const int64_t out_w = p.output_col_of_tap(x_w, s);
                if (out_w < 0) continue;
                acc += dy_plane[out_h * dys.h + out_w * dys.w] * w_plane[r * ws.h + s * ws.w];
              }
            }
          }
          dx[n * dxs.n + c * dxs.c + h * dxs.h + x_w * dxs.w] = acc;
        }
      }
    }
  });
}

// grad_weight[k, c, r, s] sums grad_output * input over the batch and every output position.
template <typename T>
void wgrad_kernel(const Conv2dProblem& p, const T* dy, Strides4 dys, const T* x, Strides4 xs, T* dw,
                  Strides4 dws) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  at::parallel_for(0, p.K * Cg, 1, [&](int64_t begin, int64_t end) {
    for (int64_t kc = begin; kc < end; ++kc) {
      const int64_t k = kc / Cg, c_in_group = kc % Cg;
      const int64_t c = (k / Kg) * Cg + c_in_group;
      for (int64_t r = 0; r < p.R; ++r) {
        for (int64_t s = 0; s < p.S; ++s) {
          T acc = T(0);
          for (int64_t n = 0; n < p.N; ++n) {
            const T* dy_plane = dy + n * dys.n + k * dys.c;
            const T* x_plane = x + n * xs.n + c * xs.c;
            for (int64_t out_h = 0; out_h < p.P; ++out_h) {
              const int64_t h = out_h * p.stride_h - p.pad_h + r * p.dilation_h;
              if (h < 0 || h >= p.H) continue;
              for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
                const int64_t w = out_w * p.stride_w - p.pad_w + s * p.dilation_w;
                if (w < 0 || w >= p.W) continue;
                acc += dy_plane[out_h * dys.h + out_w * dys.w] * x_plane[h * xs.h + w * xs.w];
              }
            }
          }
          dw[k * dws.n + c_in_group * dws.c + r * dws.h + s * dws.w] = acc;
        }
      }
    }
  });
}

}  // namespace

void conv2d_fprop_direct(const Conv2dProblem& p, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv2d_fprop_direct", [&] {
    fprop_kernel<scalar_t>(p, input.const_data_ptr<scalar_t>(), strides_of(input),
                           weight.const_data_ptr<scalar_t>(), strides_of(weight),
                           bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                           output.mutable_data_ptr<scalar_t>(), strides_of(output));
  });
}

void conv2d_dgrad_direct(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& weight,
                         at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_dgrad_direct", [&] {
    dgrad_kernel<scalar_t>(p, grad_output.const_data_ptr<scalar_t>(), strides_of(grad_output),
                           weight.const_data_ptr<scalar_t>(), strides_of(weight),
                           grad_input.mutable_data_ptr<scalar_t>(), strides_of(grad_input));
  });
}

void conv2d_wgrad_direct(const Conv2dProblem& p, const at::Tensor& grad_output, const at::Tensor& input,
                         at::Tensor& grad_weight) {
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv2d_wgrad_direct", [&] {
    wgrad_kernel<scalar_t>(p, grad_output.const_data_ptr<scalar_t>(), strides_of(grad_output),
                           input.const_data_ptr<scalar_t>(), strides_of(input),
                           grad_weight.mutable_data_ptr<scalar_t>(), strides_of(grad_weight));
  });
}

}  // namespace fastconv::cpu
