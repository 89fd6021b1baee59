// Kernels for tests/cpp/test_simt.cpp. Written as ordinary CUDA so that
// simt_test_kernels.cu can check they also compile under nvcc.
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"

namespace simt_test {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kReduceThreads = 256;
constexpr int kTile = 16;

// skip_barrier: 0 keeps every barrier, 1 drops the one after the load,
// 2 drops the one inside the tree loop (both are real bugs).
__global__ void block_sum_kernel(const float* in, float* out, int n, int skip_barrier) {
  __shared__ float partial[kReduceThreads];
  const int tid = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + tid;
  partial[tid] = i < n ? in[i] : 0.0f;
  if (skip_barrier != 1) __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) partial[tid] += partial[tid + s];
    if (skip_barrier != 2) __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

// The +1 column keeps the column reads conflict-free on the GPU.
__global__ void transpose_kernel(const float* in, float* out, int rows, int cols) {
  __shared__ float tile[kTile][kTile + 1];
  int x = blockIdx.x * kTile + threadIdx.x;
  int y = blockIdx.y * kTile + threadIdx.y;
  if (x < cols && y < rows) tile[threadIdx.y][threadIdx.x] = in[y * cols + x];
  __syncthreads();
  x = blockIdx.y * kTile + threadIdx.x;
  y = blockIdx.x * kTile + threadIdx.y;
  if (x < rows && y < cols) out[y * rows + x] = tile[threadIdx.x][threadIdx.y];
}

__global__ void reverse_in_block_kernel(const float* in, float* out, int n) {
  FASTCONV_DYNAMIC_SMEM(float, buf);
  const int t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  const int count = n - base < static_cast<int>(blockDim.x) ? n - base : blockDim.x;
  if (t < count) buf[t] = in[base + t];
  __syncthreads();
  if (t < count) out[base + t] = buf[count - 1 - t];
}

// Reads dynamic shared memory nobody wrote, to see the poison pattern.
__global__ void dump_dynamic_smem_kernel(unsigned char* out, int bytes, unsigned* misalignment) {
  FASTCONV_DYNAMIC_SMEM(unsigned char, raw);
  if (threadIdx.x == 0) {
    for (int i = 0; i < bytes; ++i) out[i] = raw[i];
    *misalignment = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(raw) % 16);
  }
}

__global__ void shuffle_kernel(const int* in, int* out_idx, int* out_up, int* out_down,
                               int* out_xor, int width) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x % 32;
  const int v = in[t];
  out_idx[t] = __shfl_sync(kFullMask, v, lane * 7 + 3, width);
  out_up[t] = __shfl_up_sync(kFullMask, v, 3, width);
  out_down[t] = __shfl_down_sync(kFullMask, v, 5, width);
  out_xor[t] = __shfl_xor_sync(kFullMask, v, 6, width);
}

__global__ void warp_sum_kernel(const float* in, float* warp_sums, double* all_lanes_sum) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[t];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[t / 32] = v;
  double d = in[t];
  for (int offset = 16; offset > 0; offset >>= 1) d += __shfl_xor_sync(kFullMask, d, offset);
  all_lanes_sum[t] = d;
}

__global__ void vote_kernel(unsigned* ballots, int* any, int* all) {
  const int lane = threadIdx.x % 32;
  const unsigned b = __ballot_sync(kFullMask, lane % 3 == 0);
  const int a = __any_sync(kFullMask, lane == 31);
  const int l = __all_sync(kFullMask, lane < 32);
  if (lane == 0) {
    ballots[threadIdx.x / 32] = b;
    any[threadIdx.x / 32] = a;
    all[threadIdx.x / 32] = l;
  }
}

// Each lane reads its right neighbour's slot, published within the warp.
__global__ void syncwarp_rotate_kernel(const int* in, int* out, int use_syncwarp) {
  __shared__ int buf[64];
  const int t = threadIdx.x;
  buf[t] = in[t];
  if (use_syncwarp) __syncwarp();
  out[t] = buf[(t & ~31) | ((t + 1) & 31)];
}

// Threads at or beyond `active` leave before any barrier; the rest must not
// wait for them, at __syncthreads or at __syncwarp.
__global__ void early_exit_kernel(const int* in, int* out, int active) {
  __shared__ int buf[128];
  const int t = threadIdx.x;
  if (t >= active) return;
  buf[t] = in[blockIdx.x * active + t];
  __syncthreads();
  int v = buf[active - 1 - t];
  __syncwarp();
  __syncthreads();
  buf[t] = v * 10;
  __syncthreads();
  out[blockIdx.x * active + t] = buf[active - 1 - t];
}

__global__ void atomic_count_kernel(float* fsum, double* dsum, int* isum) {
  atomicAdd(fsum, 1.0f);
  __syncthreads();
  atomicAdd(dsum, 0.5);
  atomicAdd(isum, static_cast<int>(threadIdx.x % 3));
}

// Writes each in-range element once; hits counts duplicate writes.
__global__ void grid_coords_kernel(int* hits, int* coords, int nx, int ny, int nz) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  const int z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x >= nx || y >= ny || z >= nz) return;
  const int idx = (z * ny + y) * nx + x;
  atomicAdd(&hits[idx], 1);
  coords[idx] = x + 1000 * y + 1000000 * z;
}

template <typename T, int N>
__global__ void template_smem_kernel(const T* in, T* out) {
  __shared__ T buf[N];
  const int t = threadIdx.x;
  buf[t] = in[t] * static_cast<T>(2);
  __syncthreads();
  out[t] = buf[N - 1 - t];
}

__global__ void trap_kernel(int* out) {
  if (blockIdx.x == 2 && threadIdx.x == 5) __trap();
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// Undefined behaviour on the GPU: the two halves wait at different barriers.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Lane 5 goes to __syncthreads while its warp waits for it in a shuffle.
__global__ void shuffle_deadlock_kernel(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 != 5) v = __shfl_sync(kFullMask, v, 0);
  __syncthreads();
  out[threadIdx.x] = v;
}

// Many barriers per block, the pattern of a tiled conv main loop.
__global__ void barrier_heavy_kernel(float* out, int rounds) {
  __shared__ float buf[256];
  const int t = threadIdx.x;
  float acc = static_cast<float>(t % 7);
  for (int r = 0; r < rounds; ++r) {
    buf[t] = acc;
    __syncthreads();
    acc = 0.5f * acc + 0.25f * buf[(t + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = acc;
}

}  // namespace simt_test
