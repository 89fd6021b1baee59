// Direct convolution on the CPU: every output element is one dot product over its window, read through
// the tensors' own strides (NCHW, channels_last or any view). Each output element is owned by one
// thread and summed in a fixed order, so all three passes are deterministic for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "conv2d_cpu.h"

#include <vector>

namespace fastconv::cpu {

namespace {

// The input row (column) each (output row, tap) reads, -1 for a zero: computed once, so the padding rule
// (zeros, reflect, replicate, circular) stays out of the inner loops. index(o, tap) is
// Conv2dProblem::input_row or input_col.
template <typename Index>
std::vector<int64_t> input_coords(int64_t outputs, int64_t taps, Index index) {
  std::vector<int64_t> coords(outputs * taps);
  for (int64_t o = 0; o < outputs; ++o)
    for (int64_t tap = 0; tap < taps; ++tap) coords[o * taps + tap] = index(o, tap);
  return coords;
}
std::vector<int64_t> input_rows(const Conv2dProblem& p) {
  return input_coords(p.P, p.R, [&](int64_t o, int64_t r) { return p.input_row(o, r); });
}
std::vector<int64_t> input_cols(const Conv2dProblem& p) {
  return input_coords(p.Q, p.S, [&](int64_t o, int64_t s) { return p.input_col(o, s); });
}

template <typename T>
void fprop_kernel(const Conv2dProblem& p, const T* x, Strides4 xs, const T* w, Strides4 ws, const T* bias, T* y,
                  Strides4 ys) {
  const int64_t Cg = p.C_per_group(), Kg = p.K_per_group();
  const std::vector<int64_t> rows = input_rows(p), cols = input_cols(p);
  at::parallel_for(0, p.N * p.K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nk = begin; nk < end; ++nk) {
      const int64_t n = nk / p.K, k = nk % p.K;
      const int64_t c_begin = (k / Kg) * Cg;
      for (int64_t out_h = 0; out_h < p.P; ++out_h) {
        const int64_t* rows_of_out = rows.data() + out_h * p.R;
        for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
          const int64_t* cols_of_out = cols.data() + out_w * p.S;
          T acc = bias ? bias[k] : T(0);
          for (int64_t c = 0; c < Cg; ++c) {
            const T* x_plane = x + n * xs.n + (c_begin + c) * xs.c;
            const T* w_plane = w + k * ws.n + c * ws.c;
            for (int64_t r = 0; r < p.R; ++r) {
              if (rows_of_out[r] < 0) continue;
              const T* x_row = x_plane + rows_of_out[r] * xs.h;
              const T* w_row = w_plane + r * ws.h;
              for (int64_t s = 0; s < p.S; ++s) {
                if (cols_of_out[s] >= 0) acc += x_row[cols_of_out[s] * xs.w] * w_row[s * ws.w];
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
// whose window reads (h, w), directly or through the padding (Conv2dProblem::for_each_reader).
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
            p.for_each_reader(h, x_w, [&](int64_t r, int64_t s, int64_t out_h, int64_t out_w) {
              acc += dy_plane[out_h * dys.h + out_w * dys.w] * w_plane[r * ws.h + s * ws.w];
            });
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
  const std::vector<int64_t> rows = input_rows(p), cols = input_cols(p);
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
              const int64_t h = rows[out_h * p.R + r];
              if (h < 0) continue;
              for (int64_t out_w = 0; out_w < p.Q; ++out_w) {
                const int64_t w = cols[out_w * p.S + s];
                if (w < 0) continue;
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
