// torch.ops.fastconv.mm on the CPU: fastconv's own packed GEMM on two matrices of any strides, so the
// benchmark and the tests can set it beside torch.mm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "gemm/gemm.h"

namespace fastconv::cpu {

namespace {

at::Tensor mm(const at::Tensor& self, const at::Tensor& mat2) {
  TORCH_CHECK(self.dim() == 2 && mat2.dim() == 2, "fastconv.mm: expected 2-D matrices, but got self of size ",
              self.sizes(), " and mat2 of size ", mat2.sizes());
  TORCH_CHECK(at::isFloatingType(self.scalar_type()) && self.scalar_type() == mat2.scalar_type(),
              "fastconv.mm: expected floating point matrices of one dtype, but got self ", self.scalar_type(),
              " and mat2 ", mat2.scalar_type());
  TORCH_CHECK(self.device() == mat2.device(), "fastconv.mm: expected both matrices on one device, but got self on ",
              self.device(), " and mat2 on ", mat2.device());
  TORCH_CHECK(self.size(1) == mat2.size(0), "fastconv.mm: self and mat2 shapes cannot be multiplied (",
              self.size(0), "x", self.size(1), " and ", mat2.size(0), "x", mat2.size(1), ")");
  const int64_t M = self.size(0), K = self.size(1), N = mat2.size(1);
  at::Tensor out = new_output({M, N}, self.options());
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "fastconv_mm", [&] {
    gemm<scalar_t>(M, N, K, self.const_data_ptr<scalar_t>(), self.stride(0), self.stride(1),
                   mat2.const_data_ptr<scalar_t>(), mat2.stride(0), mat2.stride(1), out.mutable_data_ptr<scalar_t>(),
                   out.stride(0), out.stride(1), false);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) { m.impl("mm", &mm); }

}  // namespace fastconv::cpu
