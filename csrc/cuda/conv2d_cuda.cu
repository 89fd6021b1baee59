// CUDA registration of the conv2d ops (torch.ops.fastconv, CUDA key): CudaBackend (cuda_backend.h, shared
// with max_pool2d_cuda.cu) supplies the device check, the device guard and the current stream; everything
// else is the host code shared with the emulator (conv2d_host.h).
// Built only in CUDA builds (FASTCONV_CUDA=1 python setup.py build_ext --inplace); tested by the needs_cuda
// tests of tests/test_cuda_conv2d.py and tests/test_plan.py, and benchmarks/gpu_check.sh.
#include <torch/library.h>

#include "conv2d_host.h"
#include "cuda_backend.h"

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  fastconv::kernels::FASTCONV_KERNEL_NAMESPACE::register_conv2d<fastconv::CudaBackend>(m);
}
