// SIMT emulator: runs a CUDA-style grid on the CPU.
//
// Each OS worker thread takes whole blocks off a shared counter. A block's
// threads are fibers on that OS thread, run one at a time by a scheduler:
// every runnable fiber runs until it waits at a barrier or returns, then the
// scheduler releases whatever barrier is complete and starts the next phase.
// Phases alternate forward and reverse fiber order (and the starting
// direction alternates between blocks), so a missing barrier shows up
// whichever thread the racing code assumes runs first.
#include "simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

// Context switching. glibc's swapcontext makes an rt_sigprocmask syscall on
// every switch (~0.35 us each here, ~730 ns per fiber round trip), which
// dominates emulated kernels with many barriers. On x86-64 we switch with a
// few instructions instead (about 7x faster end to end on a barrier-heavy
// kernel); ucontext remains the portable fallback, and is also used at run
// time when a CET shadow stack is active, since a hand-made `ret` onto a
// fresh stack would not match it (glibc's ucontext handles shadow stacks).
// Define FASTCONV_SIMT_USE_UCONTEXT to force the fallback.
#include <ucontext.h>
#if defined(__x86_64__) && !defined(FASTCONV_SIMT_USE_UCONTEXT)
#define FASTCONV_SIMT_ASM_SWITCH 1
#else
#define FASTCONV_SIMT_ASM_SWITCH 0
#endif

#if FASTCONV_SIMT_ASM_SWITCH
// Saves the callee-saved registers and the SSE/x87 control words on the
// current stack, stores the stack pointer in *save_sp, and resumes the
// context whose stack pointer is load_sp.
extern "C" void fastconv_simt_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl fastconv_simt_switch
    .hidden fastconv_simt_switch
    .type fastconv_simt_switch, @function
fastconv_simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fastconv_simt_switch, .-fastconv_simt_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace fastconv::simt {
namespace {

constexpr unsigned kWarpSize = 32;
constexpr std::uint64_t kStackCanary = 0x5AFEC0DEDEADBEEFull;
constexpr std::size_t kCanaryWords = 4;

enum class State : std::uint8_t { Runnable, AtBlockBarrier, AtWarpBarrier, Done };
enum class WarpOp : std::uint8_t { Sync, Shuffle, Vote };

class BlockRunner;

struct Fiber {
  ThreadContext ctx{};
  BlockRunner* runner = nullptr;
  unsigned linear_tid = 0;
  State state = State::Done;

  // Where the fiber waits at __syncthreads.
  std::source_location where;

  // Warp-level rendezvous. The scheduler fills `result` when it releases the
  // group, while every participant is still parked, so no exchange buffer
  // can be overwritten by a lane that runs ahead.
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  unsigned src_lane = 0;
  unsigned group = 0;  // lanes released together with this one
  std::size_t size = 0;
  alignas(16) unsigned char value[16];
  alignas(16) unsigned char result[16];

  // Stack: [canary | usable ...]; overflow runs into the canary at the low end.
  unsigned char* stack = nullptr;
  std::size_t stack_bytes = 0;
  void* sp = nullptr;  // asm switch
  ucontext_t uc{};     // ucontext fallback

  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber() {
    if (stack) munmap(stack, stack_bytes);
  }
};

thread_local Fiber* tl_fiber = nullptr;

std::size_t stack_bytes_setting() {
  static const std::size_t bytes = [] {
    std::size_t kib = 64;
    if (const char* env = std::getenv("FASTCONV_SIMT_STACK_KB")) {
      long v = std::atol(env);
      if (v >= 16) kib = static_cast<std::size_t>(v);
    }
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return (kib * 1024 + page - 1) / page * page;
  }();
  return bytes;
}

std::string format_uint3(uint3 v) {
  char s[48];
  std::snprintf(s, sizeof s, "(%u,%u,%u)", v.x, v.y, v.z);
  return s;
}

std::string format_site(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line()) + ":" +
         std::to_string(s.column());
}

std::string format_mask(unsigned m) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", m);
  return s;
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         std::strcmp(a.file_name(), b.file_name()) == 0;
}

[[noreturn]] void fiber_entry();

// Out of line because getcontext is returns_twice, which confuses GCC's
// uninitialised-use analysis of the enclosing function.
__attribute__((noinline)) void init_ucontext(ucontext_t& uc) {
  if (getcontext(&uc) != 0) throw std::runtime_error("fastconv::simt: getcontext failed");
}

bool asm_switch_usable() {
#if FASTCONV_SIMT_ASM_SWITCH
  // rdsspq leaves 0 (it executes as a NOP) unless a shadow stack is active.
  static const bool usable = [] {
    unsigned long long ssp = 0;
    asm volatile("rdsspq %0" : "+r"(ssp));
    return ssp == 0;
  }();
  return usable;
#else
  return false;
#endif
}

struct LaunchShape {
  dim3 grid;
  dim3 block;
  std::size_t dynamic_smem_bytes;
  KernelBody body;
};

// Owns the fibers, their stacks and the dynamic shared memory for one block
// at a time. Runners are pooled across launches so stacks are allocated once.
class BlockRunner {
 public:
  BlockRunner() = default;
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;
  ~BlockRunner() { std::free(smem_); }

  void run_block(const LaunchShape& shape, std::uint64_t linear_block);

  KernelBody body() const { return body_; }
  void record_kernel_error(std::exception_ptr e) {
    if (!kernel_error_) kernel_error_ = std::move(e);
  }
  void yield_to_scheduler(Fiber& f) {
#if FASTCONV_SIMT_ASM_SWITCH
    if (use_asm_) return fastconv_simt_switch(&f.sp, scheduler_sp_);
#endif
    swapcontext(&f.uc, &scheduler_uc_);
  }

 private:
  void ensure_fibers(unsigned n);
  void ensure_smem(std::size_t bytes);
  void start_fiber(Fiber& f);
  void resume(Fiber& f);
  bool release_waiters();
  bool release_warp(unsigned warp);
  void release_warp_group(unsigned warp, unsigned group);
  [[noreturn]] void fail_blocked(const char* what);
  std::string describe_thread(const Fiber& f) const;

  std::vector<std::unique_ptr<Fiber>> fibers_;
  unsigned nthreads_ = 0;
  unsigned char* smem_ = nullptr;
  std::size_t smem_capacity_ = 0;
  KernelBody body_{};
  std::exception_ptr kernel_error_;
  const bool use_asm_ = asm_switch_usable();
  void* scheduler_sp_ = nullptr;
  ucontext_t scheduler_uc_{};
};

void BlockRunner::ensure_fibers(unsigned n) {
  while (fibers_.size() < n) {
    auto f = std::make_unique<Fiber>();
    f->stack_bytes = stack_bytes_setting();
    // MAP_NORESERVE: most of each stack is never touched. No guard page:
    // one per fiber would cost two VMAs per fiber and can exhaust
    // vm.max_map_count on many-core hosts; the canary below catches overflow
    // at the next switch instead.
    void* p = mmap(nullptr, f->stack_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    f->stack = static_cast<unsigned char*>(p);
    // getcontext costs a syscall, so do it once per fiber, not per block.
    if (!use_asm_) init_ucontext(f->uc);
    f->runner = this;
    f->linear_tid = static_cast<unsigned>(fibers_.size());
    fibers_.push_back(std::move(f));
  }
}

void BlockRunner::ensure_smem(std::size_t bytes) {
  if (bytes <= smem_capacity_) return;
  std::free(smem_);
  smem_ = nullptr;
  smem_capacity_ = 0;
  const std::size_t rounded = (bytes + 63) / 64 * 64;
  smem_ = static_cast<unsigned char*>(std::aligned_alloc(64, rounded));
  if (!smem_) throw std::bad_alloc();
  smem_capacity_ = rounded;
}

#if FASTCONV_SIMT_ASM_SWITCH
// Builds the frame fastconv_simt_switch expects to pop: control words, six
// callee-saved registers, then fiber_entry as the return address. The zero
// above it is fiber_entry's own (never used) return address; it also puts
// rsp at 8 mod 16 on entry, as after a call.
void* initial_asm_frame(unsigned char* stack, std::size_t bytes) {
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15};
  auto* sp = reinterpret_cast<std::uint64_t*>(top);
  *--sp = 0;
  *--sp = reinterpret_cast<std::uint64_t>(&fiber_entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  // Inherit the launching thread's FP modes (e.g. flush-to-zero).
  std::uint32_t mxcsr;
  std::uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  *--sp = static_cast<std::uint64_t>(mxcsr) | (static_cast<std::uint64_t>(fcw) << 32);
  return sp;
}
#endif

void BlockRunner::start_fiber(Fiber& f) {
  auto* canary = reinterpret_cast<std::uint64_t*>(f.stack);
  for (std::size_t i = 0; i < kCanaryWords; ++i) canary[i] = kStackCanary;
#if FASTCONV_SIMT_ASM_SWITCH
  if (use_asm_) {
    f.sp = initial_asm_frame(f.stack, f.stack_bytes);
    return;
  }
#endif
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = f.stack_bytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, fiber_entry, 0);
}

void BlockRunner::resume(Fiber& f) {
  tl_fiber = &f;
#if FASTCONV_SIMT_ASM_SWITCH
  if (use_asm_)
    fastconv_simt_switch(&scheduler_sp_, f.sp);
  else
#endif
    swapcontext(&scheduler_uc_, &f.uc);
  tl_fiber = nullptr;
  const auto* canary = reinterpret_cast<const std::uint64_t*>(f.stack);
  for (std::size_t i = 0; i < kCanaryWords; ++i) {
    if (canary[i] != kStackCanary) {
      // Memory next to the stack may be damaged: report loudly and stop.
      throw std::runtime_error(
          "fastconv::simt: fiber stack overflow in " + describe_thread(f) + " (stack is " +
          std::to_string(f.stack_bytes / 1024) +
          " KiB; set FASTCONV_SIMT_STACK_KB higher or move large arrays to shared memory)");
    }
  }
}

std::string BlockRunner::describe_thread(const Fiber& f) const {
  return "block " + format_uint3(f.ctx.block_idx) + " thread " + format_uint3(f.ctx.thread_idx);
}

void BlockRunner::run_block(const LaunchShape& shape, std::uint64_t linear_block) {
  const dim3 b = shape.block;
  const dim3 g = shape.grid;
  nthreads_ = b.x * b.y * b.z;
  body_ = shape.body;
  kernel_error_ = nullptr;
  ensure_fibers(nthreads_);
  ensure_smem(std::max<std::size_t>(shape.dynamic_smem_bytes, 16));
  std::memset(smem_, kPoisonByte, shape.dynamic_smem_bytes);

  const uint3 block_idx{static_cast<unsigned>(linear_block % g.x),
                        static_cast<unsigned>(linear_block / g.x % g.y),
                        static_cast<unsigned>(linear_block / (std::uint64_t{g.x} * g.y))};
  for (unsigned t = 0; t < nthreads_; ++t) {
    Fiber& f = *fibers_[t];
    f.ctx.thread_idx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
    f.ctx.block_idx = block_idx;
    f.ctx.block_dim = b;
    f.ctx.grid_dim = g;
    f.ctx.dynamic_smem = smem_;
    f.state = State::Runnable;
    start_fiber(f);
  }

  bool forward = (linear_block & 1) == 0;
  do {
    for (unsigned i = 0; i < nthreads_; ++i) {
      Fiber& f = *fibers_[forward ? i : nthreads_ - 1 - i];
      if (f.state != State::Runnable) continue;
      resume(f);
      // The remaining fibers are abandoned mid-kernel; their stacks are
      // simply rebuilt for the next block (destructors of their locals do
      // not run).
      if (kernel_error_) std::rethrow_exception(kernel_error_);
    }
    forward = !forward;
  } while (release_waiters());
}

// Called when every fiber is parked or done. Releases complete warp groups
// first, then the block barrier; returns false once all fibers are done.
bool BlockRunner::release_waiters() {
  bool released = false;
  for (unsigned w = 0; w * kWarpSize < nthreads_; ++w) released |= release_warp(w);
  if (released) return true;

  unsigned alive = 0;
  const Fiber* first = nullptr;
  for (unsigned t = 0; t < nthreads_; ++t) {
    const Fiber& f = *fibers_[t];
    if (f.state == State::Done) continue;
    ++alive;
    if (f.state != State::AtBlockBarrier) fail_blocked("deadlock");
    if (!first) first = &f;
    if (!same_site(f.where, first->where)) fail_blocked("divergent __syncthreads");
  }
  if (alive == 0) return false;
  // Threads that already returned no longer count, as on the GPU.
  for (unsigned t = 0; t < nthreads_; ++t) {
    Fiber& f = *fibers_[t];
    if (f.state == State::AtBlockBarrier) f.state = State::Runnable;
  }
  return true;
}

bool BlockRunner::release_warp(unsigned w) {
  const unsigned base = w * kWarpSize;
  const unsigned lanes = std::min(kWarpSize, nthreads_ - base);
  unsigned alive = 0, waiting = 0;
  for (unsigned l = 0; l < lanes; ++l) {
    const State s = fibers_[base + l]->state;
    if (s != State::Done) alive |= 1u << l;
    if (s == State::AtWarpBarrier) waiting |= 1u << l;
  }
  bool released = false;
  unsigned pending = waiting;
  while (pending) {
    const unsigned l = static_cast<unsigned>(__builtin_ctz(pending));
    const Fiber& f = *fibers_[base + l];
    if (!(f.mask & (1u << l))) {
      throw std::runtime_error("fastconv::simt: " + describe_thread(f) +
                               " called a warp intrinsic with a mask that excludes itself");
    }
    // Lanes that have exited, or that do not exist in a partial last warp,
    // are not waited for.
    const unsigned group = f.mask & alive;
    pending &= ~group;
    pending &= ~(1u << l);
    if (group & ~waiting) continue;  // someone is still at __syncthreads: maybe deadlock
    for (unsigned rest = group; rest; rest &= rest - 1) {
      const Fiber& o = *fibers_[base + static_cast<unsigned>(__builtin_ctz(rest))];
      if (o.mask != f.mask || o.op != f.op || o.size != f.size) {
        throw std::runtime_error(
            "fastconv::simt: mismatched warp intrinsics: " + describe_thread(f) + " (mask " +
            format_mask(f.mask) + ") and " + describe_thread(o) + " (mask " + format_mask(o.mask) +
            ") wait at different warp operations or with different masks");
      }
    }
    release_warp_group(w, group);
    released = true;
  }
  return released;
}

void BlockRunner::release_warp_group(unsigned w, unsigned group) {
  const unsigned base = w * kWarpSize;
  const Fiber& leader = *fibers_[base + static_cast<unsigned>(__builtin_ctz(group))];
  if (leader.op == WarpOp::Vote) {
    unsigned ballot = 0;
    for (unsigned rest = group; rest; rest &= rest - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(rest));
      if (fibers_[base + l]->value[0]) ballot |= 1u << l;
    }
    for (unsigned rest = group; rest; rest &= rest - 1) {
      std::memcpy(fibers_[base + static_cast<unsigned>(__builtin_ctz(rest))]->result, &ballot,
                  sizeof ballot);
    }
  } else if (leader.op == WarpOp::Shuffle) {
    for (unsigned rest = group; rest; rest &= rest - 1) {
      Fiber& f = *fibers_[base + static_cast<unsigned>(__builtin_ctz(rest))];
      // Reading a lane outside the group is undefined on the GPU; poison it.
      if (f.src_lane < kWarpSize && (group & (1u << f.src_lane)))
        std::memcpy(f.result, fibers_[base + f.src_lane]->value, f.size);
      else
        std::memset(f.result, kPoisonByte, f.size);
    }
  }
  for (unsigned rest = group; rest; rest &= rest - 1) {
    Fiber& f = *fibers_[base + static_cast<unsigned>(__builtin_ctz(rest))];
    f.group = group;
    f.state = State::Runnable;
  }
}

void BlockRunner::fail_blocked(const char* what) {
  // Summarise where the live threads are parked, one line per distinct spot.
  std::ostringstream msg;
  msg << "fastconv::simt: " << what << " in block "
      << format_uint3(fibers_[0]->ctx.block_idx) << "; threads are parked at:";
  std::vector<std::pair<std::string, unsigned>> spots;
  std::vector<std::string> examples;
  unsigned done = 0;
  for (unsigned t = 0; t < nthreads_; ++t) {
    const Fiber& f = *fibers_[t];
    std::string spot;
    if (f.state == State::Done) {
      ++done;
      continue;
    } else if (f.state == State::AtBlockBarrier) {
      spot = "__syncthreads at " + format_site(f.where);
    } else {
      spot = std::string(f.op == WarpOp::Sync      ? "__syncwarp"
                         : f.op == WarpOp::Shuffle ? "a shuffle"
                                                   : "a vote") +
             " (warp " + std::to_string(t / kWarpSize) + ", mask " + format_mask(f.mask) + ")";
    }
    auto it = std::find_if(spots.begin(), spots.end(), [&](auto& s) { return s.first == spot; });
    if (it == spots.end()) {
      spots.emplace_back(spot, 1);
      examples.push_back(format_uint3(f.ctx.thread_idx));
    } else {
      ++it->second;
    }
  }
  for (std::size_t i = 0; i < spots.size() && i < 8; ++i)
    msg << "\n  " << spots[i].second << " thread(s) at " << spots[i].first << ", e.g. thread "
        << examples[i];
  if (spots.size() > 8) msg << "\n  ... and " << spots.size() - 8 << " more";
  msg << "\n  " << done << " thread(s) exited";
  throw std::runtime_error(msg.str());
}

[[noreturn]] void fiber_entry() {
  Fiber* f = tl_fiber;
  BlockRunner* runner = f->runner;
  try {
    const KernelBody body = runner->body();
    body.invoke(body.closure);
  } catch (...) {
    runner->record_kernel_error(std::current_exception());
  }
  f->state = State::Done;
  runner->yield_to_scheduler(*f);
  std::abort();  // a finished fiber is never resumed
}

Fiber& fiber_or_throw(const char* what) {
  if (!tl_fiber)
    throw std::logic_error(std::string("fastconv::simt: ") + what +
                           " used outside an emulated kernel");
  return *tl_fiber;
}

void park_at_warp(Fiber& f, WarpOp op, unsigned mask, std::size_t size) {
  f.op = op;
  f.mask = mask;
  f.size = size;
  f.state = State::AtWarpBarrier;
  f.runner->yield_to_scheduler(f);
}

// ---------------------------------------------------------------- runner pool
std::mutex g_pool_mutex;
std::vector<std::unique_ptr<BlockRunner>> g_pool;

std::unique_ptr<BlockRunner> acquire_runner() {
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    if (!g_pool.empty()) {
      auto r = std::move(g_pool.back());
      g_pool.pop_back();
      return r;
    }
  }
  return std::make_unique<BlockRunner>();
}

void release_runner(std::unique_ptr<BlockRunner> r) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_pool.push_back(std::move(r));
}

}  // namespace

// ---------------------------------------------------------------- detail API
namespace detail {

const ThreadContext& current_thread() { return fiber_or_throw("threadIdx/blockIdx/blockDim/gridDim").ctx; }

unsigned char* dynamic_smem() { return fiber_or_throw("FASTCONV_DYNAMIC_SMEM").ctx.dynamic_smem; }

void block_barrier(const std::source_location& where) {
  Fiber& f = fiber_or_throw("__syncthreads");
  f.where = where;
  f.state = State::AtBlockBarrier;
  f.runner->yield_to_scheduler(f);
}

void warp_barrier(unsigned mask) { park_at_warp(fiber_or_throw("__syncwarp"), WarpOp::Sync, mask, 0); }

void warp_shuffle(unsigned mask, ShuffleKind kind, int lane_arg, int width, const void* value,
                  void* result, std::size_t size) {
  Fiber& f = fiber_or_throw("__shfl_*_sync");
  if (width <= 0 || width > static_cast<int>(kWarpSize) || (width & (width - 1)) != 0)
    throw std::invalid_argument("fastconv::simt: shuffle width must be a power of two <= 32, got " +
                                std::to_string(width));
  const unsigned lane = f.linear_tid % kWarpSize;
  const unsigned w = static_cast<unsigned>(width);
  const unsigned seg_start = lane & ~(w - 1);
  const unsigned in_seg = lane - seg_start;
  unsigned src = lane;  // out-of-range sources return the caller's own value
  switch (kind) {
    case ShuffleKind::Index:
      src = seg_start + (static_cast<unsigned>(lane_arg) & (w - 1));
      break;
    case ShuffleKind::Up:
      if (lane_arg >= 0 && in_seg >= static_cast<unsigned>(lane_arg)) src = lane - lane_arg;
      break;
    case ShuffleKind::Down:
      if (lane_arg >= 0 && in_seg + static_cast<unsigned>(lane_arg) < w) src = lane + lane_arg;
      break;
    case ShuffleKind::Xor: {
      // Like the hardware: lanes may read earlier segments, never later ones.
      const unsigned j = lane ^ static_cast<unsigned>(lane_arg);
      if (j <= seg_start + w - 1) src = j;
      break;
    }
  }
  std::memcpy(f.value, value, size);
  f.src_lane = src;
  park_at_warp(f, WarpOp::Shuffle, mask, size);
  std::memcpy(result, f.result, size);
}

unsigned warp_vote(unsigned mask, VoteKind kind, bool predicate) {
  Fiber& f = fiber_or_throw("__ballot_sync/__any_sync/__all_sync");
  f.value[0] = predicate ? 1 : 0;
  park_at_warp(f, WarpOp::Vote, mask, 0);
  unsigned ballot;
  std::memcpy(&ballot, f.result, sizeof ballot);
  // "all" is judged over the lanes that took part (mask minus exited lanes).
  switch (kind) {
    case VoteKind::Ballot:
      return ballot;
    case VoteKind::Any:
      return ballot != 0;
    case VoteKind::All:
      return ballot == f.group;
  }
  return 0;
}

[[noreturn]] void trap(const std::source_location& where) {
  Fiber& f = fiber_or_throw("__trap");
  throw KernelTrap("fastconv::simt: __trap() at " + format_site(where) + " in block " +
                   format_uint3(f.ctx.block_idx) + " thread " + format_uint3(f.ctx.thread_idx));
}

}  // namespace detail

// ---------------------------------------------------------------- launch
unsigned worker_threads() {
  if (const char* env = std::getenv("FASTCONV_SIMT_THREADS")) {
    const long v = std::atol(env);
    if (v >= 1) return static_cast<unsigned>(std::min<long>(v, 256));
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? hc : 1;
}

void launch_erased(dim3 grid, dim3 block, std::size_t dynamic_smem_bytes, KernelBody body) {
  if (tl_fiber) throw std::logic_error("fastconv::simt: launching a kernel from a kernel is not supported");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
    throw std::invalid_argument("fastconv::simt: grid and block dimensions must be non-zero");
  const std::uint64_t threads = std::uint64_t{block.x} * block.y * block.z;
  if (threads > kMaxThreadsPerBlock)
    throw std::invalid_argument("fastconv::simt: " + std::to_string(threads) +
                                " threads per block; at most 1024 are allowed");
  if (dynamic_smem_bytes > kMaxDynamicSmemBytes)
    throw std::invalid_argument("fastconv::simt: " + std::to_string(dynamic_smem_bytes) +
                                " bytes of dynamic shared memory; at most 232448 are allowed");

  const std::uint64_t nblocks = std::uint64_t{grid.x} * grid.y * grid.z;
  const LaunchShape shape{grid, block, dynamic_smem_bytes, body};
  std::atomic<std::uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  auto work = [&] {
    std::unique_ptr<BlockRunner> runner;
    try {
      runner = acquire_runner();
      while (!failed.load(std::memory_order_relaxed)) {
        const std::uint64_t b = next.fetch_add(1);
        if (b >= nblocks) break;
        runner->run_block(shape, b);
      }
    } catch (...) {
      tl_fiber = nullptr;
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
    if (runner) release_runner(std::move(runner));
  };

  const unsigned nworkers =
      static_cast<unsigned>(std::min<std::uint64_t>(nblocks, worker_threads()));
  std::vector<std::thread> helpers;
  for (unsigned i = 1; i < nworkers; ++i) {
    try {
      helpers.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // fewer OS threads only makes the launch slower
    }
  }
  work();  // the launching thread takes blocks too
  for (auto& t : helpers) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace fastconv::simt
