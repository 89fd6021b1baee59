#include "cpu_features.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace fastconv::cpu {
namespace {

CpuIsa detect() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return CpuIsa::Portable;
  const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), avx = ecx & (1u << 28);
  if (!(osxsave && avx && fma)) return CpuIsa::Portable;
  // XCR0: which register files the OS saves on a context switch. Bits 1-2: XMM and YMM; bits 5-7: the
  // AVX-512 opmask, upper ZMM0-15 halves and ZMM16-31.
  uint32_t xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return CpuIsa::Portable;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return CpuIsa::Portable;
  if (!(ebx & (1u << 5))) return CpuIsa::Portable;  // AVX2
  const bool avx512 = (ebx & (1u << 16)) && (ebx & (1u << 17)) && (ebx & (1u << 30)) && (ebx & (1u << 31));
  if (avx512 && (xcr0_lo & 0xE6) == 0xE6) return CpuIsa::Avx512;  // F, DQ, BW, VL and ZMM state saved
  return CpuIsa::Avx2;
#else
  return CpuIsa::Portable;
#endif
}

CpuIsa parse(const std::string& name, const char* where) {
  if (name == "portable") return CpuIsa::Portable;
  if (name == "avx2") return CpuIsa::Avx2;
  if (name == "avx512") return CpuIsa::Avx512;
  TORCH_CHECK_VALUE(false, where, " must be one of portable, avx2, avx512, but got '", name, "'");
}

CpuIsa env_cap() {
  static const CpuIsa cap = [] {
    const char* e = std::getenv("FASTCONV_CPU_ISA");
    return e == nullptr || *e == '\0' ? CpuIsa::Avx512 : parse(e, "FASTCONV_CPU_ISA");
  }();
  return cap;
}

std::atomic<int> g_cap{-1};  // -1: the environment's cap
std::atomic<bool> g_vec16_portable{false};

}  // namespace

CpuIsa cpu_isa_detected() {
  static const CpuIsa detected = detect();
  return detected;
}

CpuIsa cpu_isa() {
  const int cap = g_cap.load(std::memory_order_relaxed);
  const CpuIsa limit = cap < 0 ? env_cap() : static_cast<CpuIsa>(cap);
  const CpuIsa detected = cpu_isa_detected();
  return detected < limit ? detected : limit;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Avx2: return "avx2";
    default: return "portable";
  }
}

void set_cpu_isa_cap(const std::string& name) {
  g_cap.store(name.empty() ? -1 : static_cast<int>(parse(name, "cpu_isa cap")), std::memory_order_relaxed);
}

Vec16Impl vec16_impl() {
  if (g_vec16_portable.load(std::memory_order_relaxed)) return Vec16Impl::Portable;
  return cpu_has_avx512() ? Vec16Impl::Native : Vec16Impl::None;
}

void set_vec16_portable(bool on) { g_vec16_portable.store(on, std::memory_order_relaxed); }

}  // namespace fastconv::cpu
