// Standalone test of fastconv::cpu::gemm against a naive long-double triple loop.
// Covers edge shapes around MR/NR/KC/MC/NC, K = 0, transposed and strided operands, column-major
// and padded C, accumulate, both micro-kernels, float and double, and bitwise determinism
// across thread counts. Prints "N passed, N failed"; exits non-zero on any failure.
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/gemm_internal.h"

namespace {

std::mt19937_64 g_rng(12345);

// Storage layout of one matrix: element (r,c) at base[r*rs + c*cs]. `pad` leaves gaps so a
// kernel writing outside the matrix is caught.
enum class Layout { RowMajor, ColMajor, Padded, Strided };
const char* name(Layout l) {
  switch (l) {
    case Layout::RowMajor: return "row";
    case Layout::ColMajor: return "col";
    case Layout::Padded: return "pad";
    default: return "strided";
  }
}

struct Mat {
  int64_t rows, cols, rs, cs;
  size_t size;
};
Mat make_mat(int64_t rows, int64_t cols, Layout l) {
  Mat m{rows, cols, 0, 0, 0};
  switch (l) {
    case Layout::RowMajor: m.rs = cols; m.cs = 1; break;
    case Layout::ColMajor: m.rs = 1; m.cs = rows; break;
    case Layout::Padded: m.rs = cols + 3; m.cs = 1; break;          // row-major, ld > cols
    case Layout::Strided: m.rs = 2 * cols + 1; m.cs = 2; break;     // neither stride is 1
  }
  m.size = rows == 0 || cols == 0 ? 1 : size_t((rows - 1) * m.rs + (cols - 1) * m.cs + 1);
  return m;
}

template <typename T> std::vector<T> random_vec(size_t n) {
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = T(d(g_rng));
  return v;
}

struct Case {
  int64_t M, N, K;
  Layout la, lb, lc;
  bool accumulate;
};

template <typename T> void run_case(const Case& c, const char* kernel) {
  const Mat ma = make_mat(c.M, c.K, c.la), mb = make_mat(c.K, c.N, c.lb),
            mc = make_mat(c.M, c.N, c.lc);
  auto A = random_vec<T>(ma.size), B = random_vec<T>(mb.size), C = random_vec<T>(mc.size);
  const auto C0 = C;
  fastconv::cpu::gemm<T>(c.M, c.N, c.K, A.data(), ma.rs, ma.cs, B.data(), mb.rs, mb.cs,
                         C.data(), mc.rs, mc.cs, c.accumulate);

  // Error bound: a dot product of length K in precision eps has error below ~K·eps·Σ|a·b|;
  // the constant leaves room without hiding real mistakes (which are O(|a·b|) or larger).
  const double eps = std::numeric_limits<T>::epsilon();
  std::vector<char> inside(mc.size, 0);
  double worst = 0;
  bool ok = true;
  for (int64_t i = 0; i < c.M && ok; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      const size_t ci = size_t(i * mc.rs + j * mc.cs);
      inside[ci] = 1;
      long double ref = c.accumulate ? (long double)C0[ci] : 0.0L, mag = std::fabs((double)ref);
      for (int64_t k = 0; k < c.K; ++k) {
        const long double p = (long double)A[i * ma.rs + k * ma.cs] * B[k * mb.rs + j * mb.cs];
        ref += p;
        mag += std::fabs((double)p);
      }
      const double err = std::fabs((double)(C[ci] - ref));
      const double tol = 2.0 * (c.K + 2) * eps * (double)mag + 1e-30;
      worst = std::max(worst, err / tol);
      if (!(err <= tol)) ok = false;
    }
  bool untouched = true;
  for (size_t x = 0; x < mc.size; ++x)
    if (!inside[x] && std::memcmp(&C[x], &C0[x], sizeof(T)) != 0) untouched = false;
  CHECK(ok && untouched,
        "%s %s M=%lld N=%lld K=%lld A=%s B=%s C=%s acc=%d: %s (worst err/tol %.3g)", kernel,
        sizeof(T) == 4 ? "float" : "double", (long long)c.M, (long long)c.N, (long long)c.K,
        name(c.la), name(c.lb), name(c.lc), int(c.accumulate),
        ok ? "wrote outside C" : "wrong values", worst);
}

template <typename T> void run_all(const char* kernel) {
  // Around the float/double register tiles (6×16 / 6×8), cache blocks (MC 144/72, KC 256,
  // NC 3072/1536), and the im2col-like shapes.
  const int64_t shapes[][3] = {
      {1, 1, 1},     {1, 1, 7},     {7, 1, 1},      {1, 13, 1},    {2, 3, 4},
      {5, 17, 3},    {6, 16, 256},  {6, 8, 1},      {7, 17, 257},  {12, 32, 255},
      {13, 33, 300}, {11, 9, 513},  {37, 29, 64},   {145, 50, 10}, {73, 23, 40},
      {64, 49, 260}, {49, 64, 33},  {3, 200, 17},   {200, 3, 17},  {150, 3100, 9},
      {20, 1600, 5}, {289, 40, 31}, {16, 100, 1000}};
  const Layout layouts[] = {Layout::RowMajor, Layout::ColMajor, Layout::Padded, Layout::Strided};
  for (const auto& s : shapes) {
    // All A/B/C layout combinations with overwrite; accumulate on a subset.
    for (Layout la : layouts)
      for (Layout lb : layouts)
        for (Layout lc : {Layout::RowMajor, Layout::ColMajor, Layout::Strided})
          run_case<T>({s[0], s[1], s[2], la, lb, lc, false}, kernel);
    for (Layout l : layouts) run_case<T>({s[0], s[1], s[2], l, l, l, true}, kernel);
  }
  // K = 0: zeros, or C unchanged when accumulating.
  for (bool acc : {false, true})
    for (Layout lc : layouts) run_case<T>({5, 7, 0, Layout::RowMajor, Layout::RowMajor, lc, acc}, kernel);
  // M or N = 0: no-op (null pointers are never touched).
  fastconv::cpu::gemm<T>(0, 5, 3, nullptr, 3, 1, nullptr, 5, 1, nullptr, 5, 1, false);
  fastconv::cpu::gemm<T>(4, 0, 3, nullptr, 3, 1, nullptr, 0, 1, nullptr, 0, 1, true);
  CHECK(true, "zero-size");
}

// Same bits at 1 and 2 threads (and with the other split dimension), for each kernel.
template <typename T> void determinism(const char* kernel) {
  const int64_t shapes[][3] = {{64, 3136, 576}, {512, 49, 600}, {300, 300, 700}, {1, 5000, 300}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    auto A = random_vec<T>(M * K), B = random_vec<T>(K * N);
    std::vector<T> C1(M * N), C2(M * N), C3(M * N);
    at::set_num_threads(1);
    fastconv::cpu::gemm<T>(M, N, K, A.data(), K, 1, B.data(), N, 1, C1.data(), N, 1, false);
    at::set_num_threads(2);
    fastconv::cpu::gemm<T>(M, N, K, A.data(), K, 1, B.data(), N, 1, C2.data(), N, 1, false);
    fastconv::cpu::gemm<T>(M, N, K, A.data(), K, 1, B.data(), N, 1, C3.data(), N, 1, false);
    CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(T)) == 0 &&
              std::memcmp(C2.data(), C3.data(), C2.size() * sizeof(T)) == 0,
          "%s %s determinism M=%lld N=%lld K=%lld", kernel, sizeof(T) == 4 ? "float" : "double",
          (long long)M, (long long)N, (long long)K);
  }
}

// Called from inside an outer parallel region the GEMM must run serially on each caller's
// thread and still give the same bits as a top-level call.
template <typename T> void nested_parallel(const char* kernel) {
  const int64_t M = 100, N = 300, K = 200;
  auto A = random_vec<T>(M * K), B = random_vec<T>(K * N);
  std::vector<T> ref(M * N);
  fastconv::cpu::gemm<T>(M, N, K, A.data(), K, 1, B.data(), N, 1, ref.data(), N, 1, false);
  std::vector<std::vector<T>> out(4, std::vector<T>(M * N));
  at::parallel_for(0, 4, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      fastconv::cpu::gemm<T>(M, N, K, A.data(), K, 1, B.data(), N, 1, out[t].data(), N, 1, false);
  });
  bool same = true;
  for (const auto& o : out)
    same = same && std::memcmp(o.data(), ref.data(), ref.size() * sizeof(T)) == 0;
  CHECK(same, "%s %s nested in at::parallel_for", kernel, sizeof(T) == 4 ? "float" : "double");
}

// The AVX-512 kernel and its build through the portable vector layer are one source: the same bits, on
// ragged shapes and every C layout (masked tails, strided stores).
void avx512_matches_its_portable_build() {
  namespace gd = fastconv::cpu::gemm_detail;
  gd::set_kernel_override(3);
  if (std::string(fastconv::cpu::gemm_kernel_name()) != "avx512") {
    std::printf("avx512 not available here: its portable build is checked against the other kernels only\n");
    gd::set_kernel_override(0);
    return;
  }
  const int64_t shapes[][3] = {{1, 1, 1}, {13, 33, 300}, {12, 32, 255}, {145, 50, 10}, {64, 49, 600}, {7, 17, 1500}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    auto A = random_vec<float>(M * K), B = random_vec<float>(K * N);
    for (bool col_major_c : {false, true}) {
      const int64_t crs = col_major_c ? 1 : N, ccs = col_major_c ? M : 1;
      std::vector<float> native(M * N), portable(M * N);
      gd::set_kernel_override(3);
      fastconv::cpu::gemm<float>(M, N, K, A.data(), K, 1, B.data(), N, 1, native.data(), crs, ccs, false);
      gd::set_kernel_override(4);
      fastconv::cpu::gemm<float>(M, N, K, A.data(), K, 1, B.data(), N, 1, portable.data(), crs, ccs, false);
      CHECK(std::memcmp(native.data(), portable.data(), native.size() * sizeof(float)) == 0,
            "avx512 vs vec16-portable M=%lld N=%lld K=%lld col-major C=%d", (long long)M, (long long)N, (long long)K,
            col_major_c);
    }
  }
  gd::set_kernel_override(0);
}

}  // namespace

int main(int argc, char** argv) {
  namespace gd = fastconv::cpu::gemm_detail;
  const std::string default_kernel = fastconv::cpu::gemm_kernel_name();
  std::printf("dispatcher default: %s, threads: %d\n", default_kernel.c_str(),
              at::get_num_threads());
  // The environment override must reach the automatic choice.
  const char* env = std::getenv("FASTCONV_GEMM_KERNEL");
  if (env != nullptr && std::string(env) == "portable")
    CHECK(default_kernel == "portable", "FASTCONV_GEMM_KERNEL=portable ignored");
  if (argc > 1 && std::string(argv[1]) == "--dispatch-only") {
    // Quick pass with whatever the dispatcher picked by itself.
    for (Layout l : {Layout::RowMajor, Layout::ColMajor})
      run_case<float>({37, 45, 300, l, l, l, false}, default_kernel.c_str());
    return fastconv_test::summary();
  }
  // 1 portable, 2 AVX2, 3 AVX-512, 4 the AVX-512 kernel through the portable vector layer (any CPU).
  for (int which : {1, 2, 3, 4}) {
    gd::set_kernel_override(which);
    const std::string kernel = fastconv::cpu::gemm_kernel_name();
    const char* expected = which == 1 ? "portable" : which == 2 ? "avx2+fma" : which == 3 ? "avx512" : "vec16-portable";
    if (kernel != expected) {
      std::printf("%s not available here: skipping that kernel\n", expected);
      continue;
    }
    at::set_num_threads(2);
    run_all<float>(kernel.c_str());
    run_all<double>(kernel.c_str());
    determinism<float>(kernel.c_str());
    determinism<double>(kernel.c_str());
    nested_parallel<float>(kernel.c_str());
    nested_parallel<double>(kernel.c_str());
  }
  gd::set_kernel_override(0);
  avx512_matches_its_portable_build();
  return fastconv_test::summary();
}
