// The launch limits of the GPU fastconv targets (sm_90), in one place: launch_kernel (launch.cuh) refuses
// what the GPU would, and the SIMT emulator (emulator/simt.h) enforces the same bounds on its own launches.
#pragma once

#include <cstddef>

namespace fastconv {

inline constexpr unsigned kMaxThreadsPerBlock = 1024;
// Opt-in maximum on sm_90; above the default 48 KiB launch_kernel raises the kernel attribute.
inline constexpr std::size_t kMaxDynamicSmemBytes = 227 * 1024;
inline constexpr std::size_t kDefaultDynamicSmemBytes = 48 * 1024;

}  // namespace fastconv
