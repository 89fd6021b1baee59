// BLIS/GotoBLAS-style GEMM driver: cache blocking, packing, run-time kernel choice, threading.
//
//   for jc in N by NC:            B block (KC×NC) packed once, lives in L3
//     for pc in K by KC:
//       for ic in M by MC:        A block (MC×KC) packed, lives in L2
//         for jr in NC by NR:     KC×NR B panel stays in L1 across the ir loop
//           for ir in MC by MR:   MR×NR register tile
#include "gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "../cpu_features.h"
#include "gemm_internal.h"
#include "pack.h"

namespace fastconv::cpu {
namespace gemm_detail {
namespace {

bool env_forces_portable() {
  static const bool forced = [] {
    const char* e = std::getenv("FASTCONV_GEMM_KERNEL");
    return e != nullptr && std::strcmp(e, "portable") == 0;
  }();
  return forced;
}

std::atomic<int> g_override{0};

// AVX2 code exists in this build and the CPU can run it.
bool avx2_usable() {
  static const bool usable = avx2_kernels<float>().kernel != nullptr && cpu_has_avx2_fma();
  return usable;
}

// Whether the GEMM runs its AVX2 micro-kernels now: usable, and not overridden by the test hook or the
// environment (unlike max_pool2d.cpp's use_avx2, which asks only the CPU and the build).
bool gemm_runs_avx2() {
  switch (g_override.load(std::memory_order_relaxed)) {
    case 1: return false;
    case 2: return avx2_usable();
    default: return avx2_usable() && !env_forces_portable();
  }
}

template <typename T> KernelSet<T> select_kernels() {
  return gemm_runs_avx2() ? avx2_kernels<T>() : portable_kernels<T>();
}

// Per-thread packing scratch, 64-byte aligned (cache line; also satisfies the aligned AVX loads).
// Grown on demand and kept for the thread's lifetime, so steady-state calls do not allocate.
class ScratchBuffer {
 public:
  ~ScratchBuffer() { std::free(ptr_); }
  void* get(size_t bytes) {
    if (bytes > cap_) {
      std::free(ptr_);
      cap_ = (bytes + 63) / 64 * 64;
      ptr_ = std::aligned_alloc(64, cap_);
      if (ptr_ == nullptr) {
        cap_ = 0;
        throw std::bad_alloc();
      }
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};
thread_local ScratchBuffer tl_pack_a, tl_pack_b;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Split `len` into ceil(len/max_step) near-equal blocks (a multiple of `align` each) so that a
// length slightly over a block size does not leave a thin, inefficient remainder block.
inline int64_t balanced_step(int64_t len, int64_t max_step, int64_t align) {
  const int64_t blocks = ceil_div(len, max_step);
  return round_up(ceil_div(len, blocks), align);
}

template <typename T> struct Problem {
  int64_t M, N, K;
  const T* A; int64_t ars, acs;
  const T* B; int64_t brs, bcs;
  T* C; int64_t crs, ccs;
  bool accumulate;
  KernelSet<T> ks;
};

// Computes the C sub-block [m0,m1)×[n0,n1) serially on the calling thread.
template <typename T>
void gemm_region(const Problem<T>& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  // The K split depends on K alone, never on the region or thread count: it fixes the
  // summation order and so the bits of the result.
  const int64_t kc_step = balanced_step(p.K, Bk::KC, 1);
  const int64_t mc_step = balanced_step(m1 - m0, Bk::MC, MR);
  const int64_t nc_step = balanced_step(n1 - n0, Bk::NC, NR);

  T* pack_b = static_cast<T*>(tl_pack_b.get(sizeof(T) * kc_step * nc_step));
  T* pack_a = static_cast<T*>(tl_pack_a.get(sizeof(T) * kc_step * mc_step));

  for (int64_t jc = n0; jc < n1; jc += nc_step) {
    const int64_t nc = std::min(nc_step, n1 - jc);
    for (int64_t pc = 0; pc < p.K; pc += kc_step) {
      const int64_t kc = std::min(kc_step, p.K - pc);
      // First K block overwrites C unless the caller asked to accumulate; later ones add.
      const bool add = p.accumulate || pc > 0;
      for (int64_t ic = m0; ic < m1; ic += mc_step) {
        const int64_t mc = std::min(mc_step, m1 - ic);
        pack_A<T, MR>(mc, kc, p.A + ic * p.ars + pc * p.acs, p.ars, p.acs, pack_a,
                      p.ks.pack_a_rowmajor);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          T* bp = pack_b + jr * kc;
          // B panels are packed during the first pass over M, right before their first use,
          // so the freshly written panel is still in L1 for the kernels; the whole KC×NC block
          // would not fit in L2 and would otherwise make a round trip through L3. Later M
          // blocks reuse the packed panels.
          if (ic == m0)
            pack_B<T, NR>(kc, nr, p.B + pc * p.brs + (jc + jr) * p.bcs, p.brs, p.bcs, bp,
                          p.ks.pack_b_colmajor, /*prefetch_ahead=*/jr + 2 * NR < nc);
          T* c_col = p.C + (jc + jr) * p.ccs;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            p.ks.kernel(kc, pack_a + ir * kc, bp, c_col + (ic + ir) * p.crs, p.crs, p.ccs, mr, nr,
                     add);
          }
        }
      }
    }
  }
}

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = int64_t(1) << 18;

template <typename T> void gemm_impl(Problem<T> p) {
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;

  // Only columns are padded to vector width (rows have exact-size kernels), so a small or ragged
  // N wastes FMAs: e.g. N = 49 computes 56 columns. C = A·B and Cᵀ = Bᵀ·Aᵀ are the same
  // products summed in the same k order, so swapping roles gives identical bits and lets the
  // ragged dimension go to the rows. Column-major C also prefers the swap: its tiles then store
  // as contiguous vectors.
  {
    constexpr int64_t W = NR / 2;
    const int64_t cost_keep = p.M * round_up(p.N, W);
    const int64_t cost_swap = p.N * round_up(p.M, W);
    const bool c_col_major = p.crs == 1 && p.ccs != 1;
    const bool swap = c_col_major ? cost_swap * 20 <= cost_keep * 21    // within 5%
                                  : cost_swap * 20 < cost_keep * 19;    // saves over 5%
    if (swap) {
      std::swap(p.M, p.N);
      std::swap(p.A, p.B);
      // A' = Bᵀ: A'(j,k) = B(k,j), so its row stride is B's column stride and vice versa.
      std::swap(p.ars, p.bcs);
      std::swap(p.acs, p.brs);
      std::swap(p.crs, p.ccs);
    }
  }

  int64_t nthreads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (p.M * p.N * p.K < kMinParallelWork) nthreads = 1;
  // Each thread gets whole MR/NR tiles of the dimension with more tiles; the other dimension is
  // not split, so the threads never share a C element and never split K.
  const int64_t tiles_m = ceil_div(p.M, MR), tiles_n = ceil_div(p.N, NR);
  const bool split_n = tiles_n >= tiles_m;
  const int64_t tiles = split_n ? tiles_n : tiles_m;
  nthreads = std::min(nthreads, tiles);
  if (nthreads <= 1) {
    gemm_region(p, 0, p.M, 0, p.N);
    return;
  }
  const int64_t step = split_n ? NR : MR;
  const int64_t len = split_n ? p.N : p.M;
  at::parallel_for(0, nthreads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = std::min(len, tiles * t / nthreads * step);
      const int64_t hi = std::min(len, tiles * (t + 1) / nthreads * step);
      if (lo >= hi) continue;
      if (split_n) gemm_region(p, 0, p.M, lo, hi);
      else gemm_region(p, lo, hi, 0, p.N);
    }
  });
}

}  // namespace

void set_kernel_override(int which) { g_override.store(which, std::memory_order_relaxed); }

}  // namespace gemm_detail

template <typename T>
void gemm(int64_t M, int64_t N, int64_t K,
          const T* A, int64_t a_row_stride, int64_t a_col_stride,
          const T* B, int64_t b_row_stride, int64_t b_col_stride,
          T* C, int64_t c_row_stride, int64_t c_col_stride,
          bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * c_row_stride + j * c_col_stride] = T(0);
    return;
  }
  gemm_detail::gemm_impl<T>({M, N, K, A, a_row_stride, a_col_stride, B, b_row_stride,
                             b_col_stride, C, c_row_stride, c_col_stride, accumulate,
                             gemm_detail::select_kernels<T>()});
}

const char* gemm_kernel_name() { return gemm_detail::gemm_runs_avx2() ? "avx2+fma" : "portable"; }

template void gemm<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
                          int64_t, int64_t, float*, int64_t, int64_t, bool);
template void gemm<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t,
                           const double*, int64_t, int64_t, double*, int64_t, int64_t, bool);

}  // namespace fastconv::cpu
