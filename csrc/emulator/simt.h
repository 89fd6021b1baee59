// Host-side stand-in for the CUDA device API, so that kernel sources in .cuh
// headers compile with g++ and run on the CPU. Each GPU thread is a
// cooperative fiber; fibers switch only at barriers (__syncthreads,
// __syncwarp, shuffles, votes), so memory races between barriers behave like
// an unlucky but legal GPU schedule. Never include this under nvcc; include
// csrc/cuda/launch.cuh, which picks the right header for the compiler.
#pragma once

#if defined(__CUDACC__)
#error "simt.h is the host emulator; nvcc builds use the real CUDA headers"
#endif

#include "../cuda/device_limits.h"
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

#define FASTCONV_SIMT_EMULATED 1

// ---------------------------------------------------------------- vector types
// Same layout and names as CUDA's vector_types.h. If a TU has already pulled
// in the CUDA headers (host code of a CUDA build), theirs are used instead.
#if !defined(__VECTOR_TYPES_H__)
struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// The alignments match CUDA's so that vectorised loads in kernels have the
// same alignment requirements as on the GPU.
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
#endif

#if !defined(__VECTOR_FUNCTIONS_H__)
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
#endif

// ------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread; an OS thread runs one block at a time with all of
// that block's fibers, so this is exactly "one copy per resident block".
#define __shared__ static thread_local

inline constexpr int warpSize = 32;

namespace fastconv::simt {

// Byte written over dynamic shared memory at every block start and returned
// by shuffles whose source lane did not take part: 0xFF makes float/double
// NaN and integers -1, so reads of data nobody wrote stand out.
inline constexpr unsigned char kPoisonByte = 0xFF;

struct ThreadContext {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned char* dynamic_smem;
};

// Thrown by __trap(); carries the block and thread that trapped.
class KernelTrap : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Type-erased kernel invocation: invoke(closure) runs the kernel body for the
// current fiber.
struct KernelBody {
  void (*invoke)(const void* closure);
  const void* closure;
};

// Runs grid x block fibers; blocks are spread over worker_threads() OS
// threads. Rethrows the first exception raised by a kernel thread, and throws
// std::runtime_error for divergent barriers, deadlocks and stack overflow.
void launch_erased(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes, KernelBody body);

// OS threads a launch may use: $FASTCONV_SIMT_THREADS, else hardware_concurrency().
unsigned worker_threads();

template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
            std::size_t dynamic_smem_bytes, Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args),
                "fastconv::simt::launch: wrong number of kernel arguments");
  // Converted once, like the argument buffer of a real launch; every thread
  // then receives its own by-value copy.
  using Params = std::tuple<std::decay_t<KernelArgs>...>;
  struct Closure {
    void (*kernel)(KernelArgs...);
    Params params;
  };
  const Closure closure{kernel, Params(std::forward<Args>(args)...)};
  launch_erased(grid, block, dynamic_smem_bytes,
                KernelBody{[](const void* c) {
                             const auto& cl = *static_cast<const Closure*>(c);
                             std::apply(cl.kernel, cl.params);
                           },
                           &closure});
}

namespace detail {

enum class ShuffleKind { Index, Up, Down, Xor };
enum class VoteKind { Ballot, Any, All };

// Throws std::logic_error when called outside an emulated kernel.
const ThreadContext& current_thread();
unsigned char* dynamic_smem();
void block_barrier(const std::source_location& where);
void warp_barrier(unsigned mask);
void warp_shuffle(unsigned mask, ShuffleKind kind, int lane_arg, int width,
                  const void* value, void* result, std::size_t size);
unsigned warp_vote(unsigned mask, VoteKind kind, bool predicate);
[[noreturn]] void trap(const std::source_location& where);

template <typename T>
T shuffle(unsigned mask, const T& value, ShuffleKind kind, int lane_arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16,
                "shuffles move trivially copyable values of at most 16 bytes");
  T result;
  warp_shuffle(mask, kind, lane_arg, width, &value, &result, sizeof(T));
  return result;
}

template <typename T>
T atomic_update(T* address, T value, T (*op)(T, T)) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (!ref.compare_exchange_weak(old, op(old, value))) {
  }
  return old;
}

}  // namespace detail
}  // namespace fastconv::simt

// --------------------------------------------------------- built-in variables
#define threadIdx (::fastconv::simt::detail::current_thread().thread_idx)
#define blockIdx (::fastconv::simt::detail::current_thread().block_idx)
#define blockDim (::fastconv::simt::detail::current_thread().block_dim)
#define gridDim (::fastconv::simt::detail::current_thread().grid_dim)

// ------------------------------------------------------------- barriers
// The call site identifies the barrier: threads waiting at __syncthreads on
// different source lines are reported as divergent instead of being released.
inline void __syncthreads(std::source_location where = std::source_location::current()) {
  ::fastconv::simt::detail::block_barrier(where);
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::fastconv::simt::detail::warp_barrier(mask);
}

inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ------------------------------------------------------------- warp shuffles
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return ::fastconv::simt::detail::shuffle(
      mask, var, ::fastconv::simt::detail::ShuffleKind::Index, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return ::fastconv::simt::detail::shuffle(
      mask, var, ::fastconv::simt::detail::ShuffleKind::Up, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return ::fastconv::simt::detail::shuffle(
      mask, var, ::fastconv::simt::detail::ShuffleKind::Down, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return ::fastconv::simt::detail::shuffle(
      mask, var, ::fastconv::simt::detail::ShuffleKind::Xor, lane_mask, width);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::fastconv::simt::detail::warp_vote(
      mask, ::fastconv::simt::detail::VoteKind::Ballot, predicate != 0);
}
inline int __any_sync(unsigned mask, int predicate) {
  return static_cast<int>(::fastconv::simt::detail::warp_vote(
      mask, ::fastconv::simt::detail::VoteKind::Any, predicate != 0));
}
inline int __all_sync(unsigned mask, int predicate) {
  return static_cast<int>(::fastconv::simt::detail::warp_vote(
      mask, ::fastconv::simt::detail::VoteKind::All, predicate != 0));
}

// ------------------------------------------------------------- atomics
// Blocks run concurrently on several OS threads, so these must be real
// atomics; fibers of one block never interleave inside them.
inline int atomicAdd(int* a, int v) { return std::atomic_ref<int>(*a).fetch_add(v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*a).fetch_add(v);
}
inline float atomicAdd(float* a, float v) { return std::atomic_ref<float>(*a).fetch_add(v); }
inline double atomicAdd(double* a, double v) { return std::atomic_ref<double>(*a).fetch_add(v); }
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v); }
inline unsigned atomicSub(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_sub(v); }
inline int atomicExch(int* a, int v) { return std::atomic_ref<int>(*a).exchange(v); }
inline unsigned atomicExch(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).exchange(v); }
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v); }
inline int atomicCAS(int* a, int compare, int v) {
  std::atomic_ref<int>(*a).compare_exchange_strong(compare, v);
  return compare;
}
inline unsigned atomicCAS(unsigned* a, unsigned compare, unsigned v) {
  std::atomic_ref<unsigned>(*a).compare_exchange_strong(compare, v);
  return compare;
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare,
                                    unsigned long long v) {
  std::atomic_ref<unsigned long long>(*a).compare_exchange_strong(compare, v);
  return compare;
}
inline int atomicMax(int* a, int v) {
  return ::fastconv::simt::detail::atomic_update<int>(a, v, [](int x, int y) { return x > y ? x : y; });
}
inline unsigned atomicMax(unsigned* a, unsigned v) {
  return ::fastconv::simt::detail::atomic_update<unsigned>(
      a, v, [](unsigned x, unsigned y) { return x > y ? x : y; });
}
inline int atomicMin(int* a, int v) {
  return ::fastconv::simt::detail::atomic_update<int>(a, v, [](int x, int y) { return x < y ? x : y; });
}
inline unsigned atomicMin(unsigned* a, unsigned v) {
  return ::fastconv::simt::detail::atomic_update<unsigned>(
      a, v, [](unsigned x, unsigned y) { return x < y ? x : y; });
}

// ------------------------------------------------------------- misc
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

[[noreturn]] inline void __trap(std::source_location where = std::source_location::current()) {
  ::fastconv::simt::detail::trap(where);
}
