// Every fastconv operator schema, declared once. Each backend registers its kernels in its own file
// (cpu/, cuda/, emulator/); autograd and fake (meta) kernels are registered from Python (fastconv/ops.py).
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include "conv2d_plan.h"
#include "cpu/conv2d_cpu.h"
#include "cpu/cpu_features.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/gemm_internal.h"
#include "ops_common.h"

namespace {

// The schemas, written once. The native library (CPU and CUDA kernels) and the emulated library (the CUDA
// kernel source run on the CPU by the SIMT emulator) declare the same ops, so one Python layer serves both.
void define_ops(torch::Library& m) {
  // padding is (pad_h, pad_w) or (top, bottom, left, right); algorithm is auto | direct | im2col | im2col_blas
  // | direct_simple; padding_mode is torch.nn.Conv2d's (zeros | reflect | replicate | circular).
  m.def("conv2d_fprop(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, str algorithm, str padding_mode=\"zeros\") -> Tensor");
  m.def("_conv2d_dgrad(Tensor grad_output, Tensor weight, SymInt[4] input_size, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, str algorithm, str padding_mode=\"zeros\") -> Tensor");
  m.def("_conv2d_wgrad(Tensor grad_output, Tensor input, SymInt[4] weight_size, int[2] stride, int[] padding, "
        "int[2] dilation, int groups, str algorithm, str padding_mode=\"zeros\") -> Tensor");
  m.def("_conv2d_bgrad(Tensor grad_output) -> Tensor");
  // Returns (output, indices); indices are int64 flat positions h * W + w in the input plane, as PyTorch's.
  m.def("max_pool2d_fprop(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> (Tensor, Tensor)");
  m.def("_max_pool2d_bprop(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  // The pair autograd runs when the indices are not returned: the argmax is saved as its tap number in
  // the window, r * S + s, in one byte (uint8; R * S <= 256), an eighth of the int64 index's memory
  // traffic and of what the graph keeps alive. Same values, same gradients, bit for bit.
  m.def("_max_pool2d_fprop_taps(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def("_max_pool2d_bprop_taps(Tensor grad_output, Tensor input, Tensor taps, int[2] kernel_size, "
        "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
}

}  // namespace

TORCH_LIBRARY(fastconv, m) {
  define_ops(m);
  // fastconv's own GEMM on 2-D tensors, exposed for tests and the benchmark's GEMM-vs-torch.mm rows.
  m.def("mm(Tensor self, Tensor mat2) -> Tensor");
}

TORCH_LIBRARY(fastconv_emulated, m) { define_ops(m); }

namespace {

std::string simd_level() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
  if (__builtin_cpu_supports("avx")) return "avx";
  return "sse2";
#else
  return "portable";
#endif
}

const fastconv::Conv2dPlannerHooks& planner_of(const std::string& backend) {
  const fastconv::Conv2dPlannerHooks* planner = fastconv::find_conv2d_planner(backend);
  TORCH_CHECK_VALUE(planner != nullptr, "conv2d: no '", backend, "' backend in this build of fastconv (built with ",
                    c10::Join(", ", fastconv::conv2d_planner_backends()), ")");
  return *planner;
}

fastconv::Conv2dOperator parse_pass(const std::string& pass) {
  TORCH_CHECK_VALUE(pass == "fprop" || pass == "dgrad" || pass == "wgrad", "pass must be fprop, dgrad or wgrad");
  return pass == "fprop" ? fastconv::Conv2dOperator::Fprop
         : pass == "dgrad" ? fastconv::Conv2dOperator::Dgrad
                           : fastconv::Conv2dOperator::Wgrad;
}

// The dtype the backend's kernels compute in: the CPU runs float16/bfloat16 in float32.
at::ScalarType compute_dtype(const std::string& backend, const std::string& dtype) {
  const at::ScalarType st = dtype == "float64"   ? at::kDouble
                            : dtype == "float16"  ? at::kHalf
                            : dtype == "bfloat16" ? at::kBFloat16
                                                  : at::kFloat;
  return backend == "cpu" && (st == at::kHalf || st == at::kBFloat16) ? at::kFloat : st;
}

// The forward ops called from Python without their Autograd kernel, for calls that need no derivative
// (derivatives.Ops decides: no grad, no forward AD, no functorch, not compiling). A torch.ops call from
// Python boxes its arguments and, through the Python Autograd kernel, redispatches boxed again: on a tiny
// problem most of the call. This is one unboxed dispatcher call below autograd, so every backend and the
// fake kernels are still reached through the dispatcher.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const std::string& ns, const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((ns + "::" + name).c_str(), "").typed<Signature>();
}

using Conv2dFpropSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                                        c10::string_view, c10::string_view);
using PoolFpropSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                              at::IntArrayRef, at::IntArrayRef, bool);

bool built_with_cuda() {
#ifdef FASTCONV_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastconv: hand-written conv2d and max_pool2d kernels registered as torch.ops.fastconv";
  m.def("build_info", [] {
    pybind11::dict info;
    info["torch_version"] = TORCH_VERSION;
    info["cuda"] = built_with_cuda();
    info["compiler"] = std::string(__VERSION__);
    info["cpu_simd"] = simd_level();
    info["cpu_isa"] = std::string(fastconv::cpu::cpu_isa_name(fastconv::cpu::cpu_isa()));
    info["cpu_isa_detected"] = std::string(fastconv::cpu::cpu_isa_name(fastconv::cpu::cpu_isa_detected()));
    info["gemm_kernel"] = std::string(fastconv::cpu::gemm_kernel_name());
    info["cpu_threads"] = at::get_num_threads();
    return info;
  }, "How this build of fastconv was made: torch version, CUDA or not, compiler, SIMD level, GEMM kernel.");
  m.def("_set_cpu_isa_cap", &fastconv::cpu::set_cpu_isa_cap,
        "Tests: cap the instruction-set level (portable | avx2 | avx512; '' = FASTCONV_CPU_ISA's) from now on.");
  m.def("_set_vec16_portable", &fastconv::cpu::set_vec16_portable,
        "Tests: run every AVX-512 kernel through the portable 16-lane vector layer (any CPU), or not.");
  m.def("_set_gemm_kernel",
        [](const std::string& name) {
          const int which = name == "auto"             ? 0
                            : name == "portable"       ? 1
                            : name == "avx2"           ? 2
                            : name == "avx512"         ? 3
                            : name == "vec16-portable" ? 4
                                                       : -1;
          TORCH_CHECK_VALUE(which >= 0, "gemm kernel must be auto, portable, avx2, avx512 or vec16-portable, "
                            "but got '", name, "'");
          fastconv::cpu::gemm_detail::set_kernel_override(which);
          return std::string(fastconv::cpu::gemm_kernel_name());
        },
        "Tests: force the GEMM micro-kernel; returns the one that runs (the CPU may lack the one asked for).");
  m.def("set_poison_outputs", &fastconv::set_poison_outputs,
        "Fill every new kernel output with NaN (integers: their max()) before the kernel writes it; for tests.");
  m.def("poison_outputs", &fastconv::poison_outputs);
  // What a conv2d call runs on one backend (cpu | cuda | emulated) and why, from the same
  // make_conv2d_problem and the same planner (kernel table, ranked auto order) the ops dispatch through.
  // dtype: "float32" | "float64" | "float16" | "bfloat16"; pass: fprop | dgrad | wgrad.
  m.def("conv2d_plan",
        [](const std::string& backend, std::vector<int64_t> input_size, std::vector<int64_t> weight_size,
           std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
           const std::string& dtype, bool channels_last, const std::string& pass, const std::string& algorithm,
           const std::string& padding_mode) {
          const fastconv::Conv2dPlannerHooks& planner = planner_of(backend);
          const fastconv::Conv2dProblem p = fastconv::make_conv2d_problem(input_size, weight_size, stride, padding,
                                                                          dilation, groups, padding_mode);
          const fastconv::Conv2dCall call{p, parse_pass(pass), compute_dtype(backend, dtype), channels_last};
          const fastconv::Conv2dPlanReport plan = planner.report(call, fastconv::parse_conv2d_algorithm(algorithm));
          pybind11::dict d;
          d["algorithm"] = plan.algorithm;
          d["kernel"] = plan.kernel;
          d["reason"] = plan.reason;
          d["key"] = plan.key;
          d["workspace_bytes"] = plan.workspace_bytes;
          d["autotuned"] = plan.autotuned;
          d["output_size"] = std::vector<int64_t>{p.N, p.K, p.P, p.Q};
          d["macs"] = p.macs();
          return d;
        });
  m.def("conv2d_runs_itself",
        [](const std::string& backend, std::vector<int64_t> input_size, std::vector<int64_t> weight_size,
           std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
           const std::string& dtype, bool channels_last, const std::string& pass, const std::string& algorithm,
           const std::string& padding_mode) {
          const fastconv::Conv2dProblem p = fastconv::make_conv2d_problem(input_size, weight_size, stride, padding,
                                                                          dilation, groups, padding_mode);
          const fastconv::Conv2dCall call{p, parse_pass(pass), compute_dtype(backend, dtype), channels_last};
          return planner_of(backend).runs_itself(call, fastconv::parse_conv2d_algorithm(algorithm));
        },
        "Whether an explicit request of the algorithm runs one of its own kernels (no simple-loops fallback).");
  m.def("conv2d_backends", &fastconv::conv2d_planner_backends, "The backends with a conv2d planner in this build.");
  // A key names its backend first ("cpu|fprop|..."), so one call serves every backend's autotuner.
  m.def("set_autotuned_choice",
        [](const std::string& key, const std::string& algorithm) {
          planner_of(key.substr(0, key.find('|'))).tuned().set(key, fastconv::parse_conv2d_algorithm(algorithm));
        },
        "Record the algorithm auto should run for a problem key (from conv2d_plan); used by the autotuner.");
  m.def("clear_autotuned_choices", [] {
    for (const std::string& backend : fastconv::conv2d_planner_backends()) planner_of(backend).tuned().clear();
  });
  m.def("_conv2d_run_counts", [](const std::string& backend) { return planner_of(backend).run_counts(); },
        "Tests: how often each kernel entry of a backend's table has run, in table order.");
  m.def("_reset_conv2d_run_counts", [](const std::string& backend) { planner_of(backend).reset_run_counts(); });
  m.def("_conv2d_fprop_below_autograd",
        [](const std::string& ns, const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
           std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
           const std::string& algorithm, const std::string& padding_mode) {
          static const auto native = find_op<Conv2dFpropSignature>("fastconv", "conv2d_fprop");
          static const auto emulated = find_op<Conv2dFpropSignature>("fastconv_emulated", "conv2d_fprop");
          const at::AutoDispatchBelowAutograd below;
          return (ns == "fastconv" ? native : emulated)
              .call(input, weight, bias, stride, padding, dilation, groups, algorithm, padding_mode);
        },
        pybind11::arg("ns"), pybind11::arg("input"), pybind11::arg("weight"), pybind11::arg("bias"),
        pybind11::arg("stride"), pybind11::arg("padding"), pybind11::arg("dilation"), pybind11::arg("groups"),
        pybind11::arg("algorithm"), pybind11::arg("padding_mode") = "zeros");
  m.def("_max_pool2d_fprop_below_autograd",
        [](const std::string& ns, bool taps, const at::Tensor& input, std::vector<int64_t> kernel_size,
           std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation, bool ceil_mode) {
          static const auto native = find_op<PoolFpropSignature>("fastconv", "max_pool2d_fprop");
          static const auto emulated = find_op<PoolFpropSignature>("fastconv_emulated", "max_pool2d_fprop");
          static const auto native_taps = find_op<PoolFpropSignature>("fastconv", "_max_pool2d_fprop_taps");
          static const auto emulated_taps =
              find_op<PoolFpropSignature>("fastconv_emulated", "_max_pool2d_fprop_taps");
          const bool is_native = ns == "fastconv";
          const auto& op = taps ? (is_native ? native_taps : emulated_taps) : (is_native ? native : emulated);
          const at::AutoDispatchBelowAutograd below;
          return op.call(input, kernel_size, stride, padding, dilation, ceil_mode);
        });
  m.def("_set_depthwise_force_portable", &fastconv::cpu::set_depthwise_force_portable,
        "Tests: run the depthwise kernel's portable float32 path even where AVX2 is available.");
}
