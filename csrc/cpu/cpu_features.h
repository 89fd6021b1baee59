// The CPU instruction-set ladder, decided in one place: portable → AVX2+FMA → AVX-512 (F+BW+VL+DQ).
// Detected once per process from cpuid *and* the register state the OS saves (XGETBV): a CPU with AVX-512
// under an OS that does not save ZMM state must not run it. FASTCONV_CPU_ISA=portable|avx2|avx512 caps the
// level (tests, comparisons, users hit by AVX-512 down-clocking). Every kernel family asks cpu_isa().
#pragma once

#include <string>

namespace fastconv::cpu {

enum class CpuIsa : int { Portable = 0, Avx2 = 1, Avx512 = 2 };

CpuIsa cpu_isa();           // the level in use: detected, capped by FASTCONV_CPU_ISA and set_cpu_isa_cap
CpuIsa cpu_isa_detected();  // what this CPU and OS can run
const char* cpu_isa_name(CpuIsa isa);  // "portable", "avx2", "avx512"
// Tests and comparisons: cap the level at run time ("portable", "avx2", "avx512"; "" = the environment's
// cap). Kernel families read cpu_isa() per call, so the cap takes effect at the next call.
void set_cpu_isa_cap(const std::string& name);

inline bool cpu_has_avx2_fma() { return cpu_isa() >= CpuIsa::Avx2; }
inline bool cpu_has_avx512() { return cpu_isa() >= CpuIsa::Avx512; }

// Which implementation of the 16-lane vector layer (simd/vec16.h) the AVX-512 kernels run: Native where
// the level in use is avx512; Portable where a test asked for it (set_vec16_portable), on any CPU, so the
// AVX-512 kernels' logic is tested without AVX-512; None otherwise (the family's AVX2 or portable kernel).
enum class Vec16Impl { None, Native, Portable };
Vec16Impl vec16_impl();
void set_vec16_portable(bool on);

}  // namespace fastconv::cpu
