// im2col and the gather-style col2im, checked below Python against naive loops: every column entry is
// the input pixel (or zero) its formula names, and col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)>.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "check.h"
#include "cpu/im2col.h"

namespace {

fastconv::Conv2dProblem problem(int64_t C, int64_t H, int64_t W, int64_t R, int64_t S, int64_t stride_h,
                                int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                                int64_t pad_right, int64_t dilation_h, int64_t dilation_w) {
  fastconv::Conv2dProblem p{};
  p.N = 1, p.C = C, p.H = H, p.W = W, p.K = 1, p.R = R, p.S = S, p.groups = 1;
  p.stride_h = stride_h, p.stride_w = stride_w, p.pad_h = pad_top, p.pad_w = pad_left;
  p.dilation_h = dilation_h, p.dilation_w = dilation_w;
  p.P = (H + pad_top + pad_bottom - dilation_h * (R - 1) - 1) / stride_h + 1;
  p.Q = (W + pad_left + pad_right - dilation_w * (S - 1) - 1) / stride_w + 1;
  return p;
}

void check_problem(const fastconv::Conv2dProblem& p, bool channels_last) {
  std::mt19937 rng(static_cast<unsigned>(p.C * 131 + p.H * 17 + p.R * 7 + p.stride_w));
  std::normal_distribution<double> normal;
  const int64_t sc = channels_last ? 1 : p.H * p.W, sh = channels_last ? p.W * p.C : p.W,
                sw = channels_last ? p.C : 1;
  std::vector<double> x(p.C * p.H * p.W);
  for (double& v : x) v = normal(rng);
  const int64_t rows = p.C * p.R * p.S, PQ = p.P * p.Q;
  std::vector<double> col(rows * PQ, std::nan(""));  // poisoned: every entry must be written
  fastconv::cpu::im2col(p, x.data(), sc, sh, sw, col.data());
  bool exact = true;
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s)
        for (int64_t oh = 0; oh < p.P; ++oh)
          for (int64_t ow = 0; ow < p.Q; ++ow) {
            const int64_t h = oh * p.stride_h - p.pad_h + r * p.dilation_h;
            const int64_t w = ow * p.stride_w - p.pad_w + s * p.dilation_w;
            const double want = (h >= 0 && h < p.H && w >= 0 && w < p.W) ? x[c * sc + h * sh + w * sw] : 0.0;
            const double got = col[((c * p.R + r) * p.S + s) * PQ + oh * p.Q + ow];
            if (!(got == want)) exact = false;
          }
  CHECK(exact, "im2col entries differ (C=%ld H=%ld W=%ld R=%ld S=%ld)", (long)p.C, (long)p.H, (long)p.W,
        (long)p.R, (long)p.S);

  // Adjoint test: <im2col(x), c> == <x, col2im(c)> for random c.
  std::vector<double> c_rand(rows * PQ);
  for (double& v : c_rand) v = normal(rng);
  std::vector<double> back(p.C * p.H * p.W, std::nan(""));
  fastconv::cpu::col2im_gather(p, c_rand.data(), back.data(), sc, sh, sw);
  double lhs = 0, rhs = 0;
  bool written = true;
  for (int64_t i = 0; i < rows * PQ; ++i) lhs += col[i] * c_rand[i];
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(back[i])) written = false;
    rhs += x[i] * back[i];
  }
  CHECK(written, "col2im left an input element unwritten");
  CHECK(std::fabs(lhs - rhs) <= 1e-9 * (1 + std::fabs(lhs)), "col2im is not im2col's adjoint: %.17g vs %.17g",
        lhs, rhs);
}

}  // namespace

int main() {
  for (bool cl : {false, true}) {
    check_problem(problem(1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1), cl);
    check_problem(problem(3, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), cl);
    check_problem(problem(2, 9, 11, 3, 2, 2, 3, 1, 0, 0, 1, 2, 1), cl);
    check_problem(problem(4, 5, 5, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1), cl);
    check_problem(problem(2, 8, 7, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1), cl);
    check_problem(problem(3, 6, 9, 4, 2, 1, 1, 1, 2, 0, 1, 1, 3), cl);
    check_problem(problem(1, 13, 4, 2, 3, 4, 1, 2, 2, 1, 1, 3, 1), cl);
  }
  return fastconv_test::summary();
}
