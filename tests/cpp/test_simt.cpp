// Tests for the SIMT emulator (csrc/emulator) through the public launch
// helper. Build and run: tests/cpp/build_and_run_simt.sh
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "simt_test_kernels.cuh"

namespace {

// Groups the CHECKs of one test under a name: "ok" or "FAIL" per test; the counts are per check, and an
// unexpected exception counts as one failed check.
void run_test(const char* name, const std::function<void()>& body) {
  const int failed_before = fastconv_test::g_failed;
  const auto start = std::chrono::steady_clock::now();
  try {
    body();
  } catch (const std::exception& e) {
    fastconv_test::fail(__FILE__, __LINE__, "unexpected exception");
    std::printf(" -- %s\n", e.what());
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s %s (%.1f ms)\n", fastconv_test::g_failed == failed_before ? "ok  " : "FAIL", name, ms);
}

// Returns the exception message, or "<no exception>" if f did not throw E.
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  fastconv::launch_kernel(kernel, grid, block, smem, fastconv::Stream{}, std::forward<Args>(args)...);
}

using namespace simt_test;

std::vector<float> reduction_input(int n) {
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i % 13 + 1);
  return in;
}

std::vector<float> run_block_sum(const std::vector<float>& in, int skip_barrier) {
  const int n = static_cast<int>(in.size());
  const int blocks = (n + kReduceThreads - 1) / kReduceThreads;
  std::vector<float> out(blocks, -1.0f);
  launch(block_sum_kernel, dim3(blocks), dim3(kReduceThreads), 0, in.data(), out.data(), n,
         skip_barrier);
  return out;
}

bool block_sums_match(const std::vector<float>& in, const std::vector<float>& out) {
  for (size_t b = 0; b < out.size(); ++b) {
    float expect = 0;
    for (size_t i = b * kReduceThreads; i < in.size() && i < (b + 1) * kReduceThreads; ++i)
      expect += in[i];
    if (out[b] != expect) return false;
  }
  return true;
}

void test_reduction_with_barriers() {
  const auto in = reduction_input(10 * kReduceThreads - 77);
  CHECK(block_sums_match(in, run_block_sum(in, 0)));
}

void test_reduction_missing_barrier_is_wrong() {
  const auto in = reduction_input(10 * kReduceThreads);
  CHECK(!block_sums_match(in, run_block_sum(in, 1)));
  CHECK(!block_sums_match(in, run_block_sum(in, 2)));
}

void test_transpose() {
  const int rows = 45, cols = 70;
  std::vector<float> in(rows * cols), out(rows * cols, -1.0f);
  for (int i = 0; i < rows * cols; ++i) in[i] = static_cast<float>(i);
  launch(transpose_kernel, dim3((cols + kTile - 1) / kTile, (rows + kTile - 1) / kTile),
         dim3(kTile, kTile), 0, in.data(), out.data(), rows, cols);
  bool ok = true;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) ok &= out[c * rows + r] == in[r * cols + c];
  CHECK(ok);
}

void test_dynamic_smem() {
  const int n = 250, threads = 100;
  std::vector<float> in(n), out(n, -1.0f);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i * 3);
  launch(reverse_in_block_kernel, dim3((n + threads - 1) / threads), dim3(threads),
         threads * sizeof(float), in.data(), out.data(), n);
  bool ok = true;
  for (int b = 0; b * threads < n; ++b) {
    const int count = std::min(threads, n - b * threads);
    for (int t = 0; t < count; ++t) ok &= out[b * threads + t] == in[b * threads + count - 1 - t];
  }
  CHECK(ok);

  // Unwritten dynamic shared memory reads back as poison, even after a
  // previous launch filled it, and the buffer is 16-byte aligned.
  std::vector<unsigned char> bytes(4096, 0);
  unsigned misalignment = 99;
  launch(dump_dynamic_smem_kernel, dim3(1), dim3(32), bytes.size(), bytes.data(),
         static_cast<int>(bytes.size()), &misalignment);
  bool poisoned = true;
  for (unsigned char b : bytes) poisoned &= b == fastconv::simt::kPoisonByte;
  CHECK(poisoned);
  CHECK(misalignment == 0);
  float as_float;
  std::memcpy(&as_float, bytes.data(), sizeof as_float);
  CHECK(std::isnan(as_float));
}

int expected_shuffle(const std::vector<int>& in, int t, int kind, int width) {
  const int lane = t % 32, warp_base = t - lane;
  const int seg = lane / width * width;
  int src = lane;
  switch (kind) {
    case 0: src = seg + ((lane * 7 + 3) % width); break;
    case 1: src = lane - seg >= 3 ? lane - 3 : lane; break;
    case 2: src = lane - seg + 5 < width ? lane + 5 : lane; break;
    case 3: src = (lane ^ 6) < seg + width ? lane ^ 6 : lane; break;
  }
  return in[warp_base + src];
}

void test_shuffles() {
  for (int width : {32, 8, 4}) {
    const int n = 128;
    std::vector<int> in(n), idx(n), up(n), down(n), x(n);
    for (int i = 0; i < n; ++i) in[i] = 1000 + i * 11;
    launch(shuffle_kernel, dim3(2), dim3(64), 0, in.data(), idx.data(), up.data(), down.data(),
           x.data(), width);
    bool ok = true;
    for (int t = 0; t < n; ++t) {
      ok &= idx[t] == expected_shuffle(in, t, 0, width);
      ok &= up[t] == expected_shuffle(in, t, 1, width);
      ok &= down[t] == expected_shuffle(in, t, 2, width);
      ok &= x[t] == expected_shuffle(in, t, 3, width);
    }
    if (!ok) std::fprintf(stderr, "  width %d\n", width);
    CHECK(ok);
  }
}

void test_warp_reduction() {
  const int n = 256;
  std::vector<float> in(n), sums(n / 32, -1.0f);
  std::vector<double> all(n, -1.0);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i % 10) * 0.5f;
  launch(warp_sum_kernel, dim3(2), dim3(128), 0, in.data(), sums.data(), all.data());
  bool ok = true;
  for (int w = 0; w < n / 32; ++w) {
    float expect = 0;
    for (int l = 0; l < 32; ++l) expect += in[w * 32 + l];
    ok &= sums[w] == expect;
    for (int l = 0; l < 32; ++l) ok &= all[w * 32 + l] == static_cast<double>(expect);
  }
  CHECK(ok);
}

void test_votes() {
  std::vector<unsigned> ballots(2);
  std::vector<int> any(2), all(2);
  launch(vote_kernel, dim3(1), dim3(64), 0, ballots.data(), any.data(), all.data());
  unsigned expect = 0;
  for (int l = 0; l < 32; l += 3) expect |= 1u << l;
  CHECK(ballots[0] == expect && ballots[1] == expect);
  CHECK(any[0] == 1 && any[1] == 1);
  CHECK(all[0] == 1 && all[1] == 1);
}

void test_syncwarp() {
  std::vector<int> in(64), out(64, -1);
  for (int i = 0; i < 64; ++i) in[i] = i * i;
  launch(syncwarp_rotate_kernel, dim3(1), dim3(64), 0, in.data(), out.data(), 1);
  bool ok = true;
  for (int t = 0; t < 64; ++t) ok &= out[t] == in[(t & ~31) | ((t + 1) & 31)];
  CHECK(ok);
  // Without the __syncwarp the first lane to run reads a slot not yet
  // written. New input values, because static __shared__ memory still holds
  // the previous launch's (here: correct) values.
  for (int& v : in) v += 1;
  std::vector<int> racy(64, -1);
  launch(syncwarp_rotate_kernel, dim3(1), dim3(64), 0, in.data(), racy.data(), 0);
  bool all_right = true;
  for (int t = 0; t < 64; ++t) all_right &= racy[t] == in[(t & ~31) | ((t + 1) & 31)];
  CHECK(!all_right);
}

void test_early_exit() {
  const int active = 40, blocks = 3;
  std::vector<int> in(active * blocks), out(active * blocks, -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i) + 1;
  launch(early_exit_kernel, dim3(blocks), dim3(64), 0, in.data(), out.data(), active);
  // Reversed twice within the active range, times ten.
  bool ok = true;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < active; ++t) ok &= out[b * active + t] == in[b * active + t] * 10;
  CHECK(ok);
}

// Host-only: which OS threads ran blocks.
std::mutex g_ids_mutex;
std::set<std::thread::id> g_ids;
__global__ void record_os_thread_kernel(int* blocks_seen) {
  if (threadIdx.x == 0) {
    atomicAdd(blocks_seen, 1);
    std::lock_guard<std::mutex> lock(g_ids_mutex);
    g_ids.insert(std::this_thread::get_id());
  }
  __syncthreads();
}

void test_atomics_across_os_threads() {
  setenv("FASTCONV_SIMT_THREADS", "4", 1);
  CHECK(fastconv::simt::worker_threads() == 4);
  float fsum = 0;
  double dsum = 0;
  int isum = 0;
  const int blocks = 512, threads = 128;
  launch(atomic_count_kernel, dim3(blocks), dim3(threads), 0, &fsum, &dsum, &isum);
  CHECK(fsum == static_cast<float>(blocks * threads));
  CHECK(dsum == 0.5 * blocks * threads);
  int per_block = 0;
  for (int t = 0; t < threads; ++t) per_block += t % 3;
  CHECK(isum == blocks * per_block);

  int blocks_seen = 0;
  g_ids.clear();
  launch(record_os_thread_kernel, dim3(blocks), dim3(threads), 0, &blocks_seen);
  CHECK(blocks_seen == blocks);
  CHECK(g_ids.size() > 1);
  std::printf("     %zu OS threads ran blocks\n", g_ids.size());
  unsetenv("FASTCONV_SIMT_THREADS");
}

void check_grid(int nx, int ny, int nz, dim3 block) {
  const int n = nx * ny * nz;
  std::vector<int> hits(n, 0), coords(n, -1);
  const dim3 grid((nx + block.x - 1) / block.x, (ny + block.y - 1) / block.y,
                  (nz + block.z - 1) / block.z);
  launch(grid_coords_kernel, grid, block, 0, hits.data(), coords.data(), nx, ny, nz);
  bool ok = true;
  for (int z = 0; z < nz; ++z)
    for (int y = 0; y < ny; ++y)
      for (int x = 0; x < nx; ++x) {
        const int i = (z * ny + y) * nx + x;
        ok &= hits[i] == 1 && coords[i] == x + 1000 * y + 1000000 * z;
      }
  CHECK(ok);
}

void test_2d_3d_grids() {
  check_grid(37, 23, 1, dim3(8, 4));
  check_grid(13, 9, 7, dim3(4, 4, 4));
  check_grid(5, 3, 70, dim3(2, 1, 32));
}

void test_template_shared() {
  std::vector<float> fin(64), fout(64);
  std::vector<double> din(64), dout(64);
  for (int i = 0; i < 64; ++i) fin[i] = static_cast<float>(i), din[i] = i + 0.25;
  launch(template_smem_kernel<float, 64>, dim3(1), dim3(64), 0, fin.data(), fout.data());
  launch(template_smem_kernel<double, 64>, dim3(1), dim3(64), 0, din.data(), dout.data());
  bool ok = true;
  for (int t = 0; t < 64; ++t) ok &= fout[t] == 2 * fin[63 - t] && dout[t] == 2 * din[63 - t];
  CHECK(ok);
}

// Host-only: a C++ exception thrown by one thread while others wait.
__global__ void throwing_kernel(int* out) {
  if (blockIdx.x == 3 && threadIdx.x == 7) throw std::out_of_range("boom from the kernel");
  __syncthreads();
  out[blockIdx.x] = 1;
}

void test_exceptions_propagate() {
  std::vector<int> out(64 * 8, 0);
  const std::string msg = message_of<std::out_of_range>(
      [&] { launch(throwing_kernel, dim3(8), dim3(64), 0, out.data()); });
  CHECK(msg == "boom from the kernel");

  const std::string trap = message_of<fastconv::simt::KernelTrap>(
      [&] { launch(trap_kernel, dim3(4), dim3(32), 0, out.data()); });
  CHECK(contains(trap, "__trap()") && contains(trap, "block (2,0,0) thread (5,0,0)"));
  std::printf("     %s\n", trap.c_str());

  // The emulator is still usable afterwards.
  test_reduction_with_barriers();
}

void test_divergent_barrier_reported() {
  std::vector<int> out(64, 0);
  const std::string msg = message_of<std::runtime_error>(
      [&] { launch(divergent_barrier_kernel, dim3(1), dim3(64), 0, out.data()); });
  CHECK(contains(msg, "divergent __syncthreads"));
  std::printf("     %s\n", msg.c_str());
}

void test_deadlock_reported() {
  std::vector<int> out(64, 0);
  const std::string msg = message_of<std::runtime_error>(
      [&] { launch(shuffle_deadlock_kernel, dim3(1), dim3(64), 0, out.data()); });
  CHECK(contains(msg, "deadlock"));
  std::printf("     %s\n", msg.c_str());
}

void test_bad_launch_rejected() {
  float f = 0;
  const std::string msg = message_of<std::invalid_argument>(
      [&] { launch(barrier_heavy_kernel, dim3(1), dim3(32, 64), 0, &f, 1); });
  CHECK(contains(msg, "2048 threads"));
  CHECK(message_of<std::invalid_argument>(
            [&] { launch(barrier_heavy_kernel, dim3(0), dim3(32), 0, &f, 1); }) !=
        "<no exception>");
  CHECK(message_of<std::invalid_argument>([&] {
          launch(barrier_heavy_kernel, dim3(1), dim3(32), 300 * 1024, &f, 1);
        }) != "<no exception>");
  // Built-ins outside a kernel are an error, not a crash.
  CHECK(message_of<std::logic_error>([] { (void)threadIdx.x; }) != "<no exception>");
}

void test_barrier_heavy_throughput() {
  const int blocks = 300, threads = 256, rounds = 16;
  std::vector<float> out(blocks * threads);
  const auto start = std::chrono::steady_clock::now();
  launch(barrier_heavy_kernel, dim3(blocks), dim3(threads), 0, out.data(), rounds);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<float> acc(threads);
  for (int t = 0; t < threads; ++t) acc[t] = static_cast<float>(t % 7);
  for (int r = 0; r < rounds; ++r) {
    std::vector<float> next(threads);
    for (int t = 0; t < threads; ++t) next[t] = 0.5f * acc[t] + 0.25f * acc[(t + 1) % threads];
    acc = next;
  }
  bool ok = true;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) ok &= out[b * threads + t] == acc[t];
  CHECK(ok);
  const double switches = 2.0 * rounds * blocks * threads;
  std::printf("     %d blocks x %d threads x %d barriers: %.3f s (%.0f ns per fiber-barrier)\n",
              blocks, threads, 2 * rounds, s, s / switches * 1e9);
}

}  // namespace

int main() {
  run_test("shared-memory reduction with barriers", test_reduction_with_barriers);
  run_test("reduction with a barrier removed gives a wrong sum", test_reduction_missing_barrier_is_wrong);
  run_test("tiled transpose through padded __shared__ tile", test_transpose);
  run_test("dynamic shared memory (and its poison)", test_dynamic_smem);
  run_test("__shfl_sync/_up/_down/_xor with widths 32, 8, 4", test_shuffles);
  run_test("warp reductions (shfl_down float, shfl_xor double)", test_warp_reduction);
  run_test("__ballot_sync/__any_sync/__all_sync", test_votes);
  run_test("__syncwarp (and a race without it)", test_syncwarp);
  run_test("early-exit threads do not block later barriers", test_early_exit);
  run_test("atomicAdd from blocks on several OS threads", test_atomics_across_os_threads);
  run_test("2-D/3-D grids with ragged edges", test_2d_3d_grids);
  run_test("__shared__ in kernel templates", test_template_shared);
  run_test("exceptions and __trap propagate out of launch", test_exceptions_propagate);
  run_test("divergent __syncthreads is reported", test_divergent_barrier_reported);
  run_test("warp/block deadlock is reported", test_deadlock_reported);
  run_test("bad launch configurations are rejected", test_bad_launch_rejected);
  run_test("barrier-heavy kernel throughput", test_barrier_heavy_throughput);
  return fastconv_test::summary();
}
