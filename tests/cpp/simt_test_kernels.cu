// Compile-only check (nvcc -std=c++20 -arch=sm_90 -c) that the emulator test
// kernels and launch.cuh are valid CUDA; nothing here is run.
#include "simt_test_kernels.cuh"

void simt_test_instantiate_launches(float* f, double* d, int* i, unsigned* u, unsigned char* c,
                                    fastconv::Stream s) {
  using namespace simt_test;
  fastconv::launch_kernel(block_sum_kernel, dim3(4), dim3(kReduceThreads), 0, s, f, f, 1000, 0);
  fastconv::launch_kernel(transpose_kernel, dim3(3, 5), dim3(kTile, kTile), 0, s, f, f, 70, 45);
  fastconv::launch_kernel(reverse_in_block_kernel, dim3(3), dim3(100), 100 * sizeof(float), s, f, f, 250);
  fastconv::launch_kernel(dump_dynamic_smem_kernel, dim3(1), dim3(32), 64, s, c, 64, u);
  fastconv::launch_kernel(shuffle_kernel, dim3(2), dim3(64), 0, s, i, i, i, i, i, 32);
  fastconv::launch_kernel(warp_sum_kernel, dim3(2), dim3(128), 0, s, f, f, d);
  fastconv::launch_kernel(vote_kernel, dim3(1), dim3(64), 0, s, u, i, i);
  fastconv::launch_kernel(syncwarp_rotate_kernel, dim3(1), dim3(64), 0, s, i, i, 1);
  fastconv::launch_kernel(early_exit_kernel, dim3(3), dim3(64), 0, s, i, i, 40);
  fastconv::launch_kernel(atomic_count_kernel, dim3(512), dim3(128), 0, s, f, d, i);
  fastconv::launch_kernel(grid_coords_kernel, dim3(2, 2, 2), dim3(4, 4, 4), 0, s, i, i, 7, 7, 7);
  fastconv::launch_kernel(template_smem_kernel<float, 64>, dim3(1), dim3(64), 0, s, f, f);
  fastconv::launch_kernel(template_smem_kernel<double, 64>, dim3(1), dim3(64), 0, s, d, d);
  fastconv::launch_kernel(trap_kernel, dim3(4), dim3(32), 0, s, i);
  fastconv::launch_kernel(divergent_barrier_kernel, dim3(1), dim3(64), 0, s, i);
  fastconv::launch_kernel(shuffle_deadlock_kernel, dim3(1), dim3(64), 0, s, i);
  fastconv::launch_kernel(barrier_heavy_kernel, dim3(300), dim3(256), 0, s, f, 16);
}
