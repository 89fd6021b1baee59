// Minimal Python binding of fastconv::cpu::gemm on torch tensors, for benchmarks/bench_gemm.py.
// Tensor strides are passed straight through, so .t() views exercise the transposed paths.
#include <torch/extension.h>

#include "cpu/gemm/gemm.h"

namespace {

void gemm_tensors(const at::Tensor& A, const at::Tensor& B, at::Tensor& C, bool accumulate) {
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && C.dim() == 2, "gemm: 2-D tensors expected");
  TORCH_CHECK(A.device().is_cpu() && B.device().is_cpu() && C.device().is_cpu(), "gemm: CPU only");
  TORCH_CHECK(A.scalar_type() == B.scalar_type() && A.scalar_type() == C.scalar_type(),
              "gemm: dtypes differ");
  const int64_t M = A.size(0), K = A.size(1), N = B.size(1);
  TORCH_CHECK(B.size(0) == K && C.size(0) == M && C.size(1) == N, "gemm: shape mismatch");
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "fastconv_gemm", [&] {
    fastconv::cpu::gemm<scalar_t>(M, N, K, A.const_data_ptr<scalar_t>(), A.stride(0), A.stride(1),
                                  B.const_data_ptr<scalar_t>(), B.stride(0), B.stride(1),
                                  C.data_ptr<scalar_t>(), C.stride(0), C.stride(1), accumulate);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemm", &gemm_tensors, "C = A@B (or C += A@B)", py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("accumulate") = false, py::call_guard<py::gil_scoped_release>());
  m.def("kernel_name", [] { return std::string(fastconv::cpu::gemm_kernel_name()); });
}
