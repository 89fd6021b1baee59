// The plan layer: which kernel runs a conv2d call, and why. Each backend (CPU: cpu/conv2d_cpu.cpp; CUDA and
// emulated CUDA: cuda/conv2d_host.h) has one table of kernel entries and one ranked order for auto;
// dispatch, explain, the workspace report and the autotuner all read the same entries, so they cannot
// disagree. Like cuDNN's find/get and oneDNN's primitive descriptors, in miniature.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "conv2d_problem.h"

namespace fastconv {

// One call as the planner sees it: the problem, the pass, the dtype the kernels compute in and the layout.
struct Conv2dCall {
  Conv2dProblem p;
  Conv2dOperator op;
  at::ScalarType dtype;
  bool channels_last;
};

// The tensors of one pass. fprop: a = input, b = weight, out = output; dgrad: a = grad_output, b = weight,
// out = grad_input; wgrad: a = grad_output, b = input, out = grad_weight. bias is undefined but in fprop.
struct Conv2dOperands {
  const at::Tensor& a;
  const at::Tensor& b;
  const at::Tensor& bias;
  at::Tensor& out;
};

// One kernel of a backend. Context is what a backend's kernels need beyond the tensors (the CUDA stream).
template <typename Context>
struct Conv2dKernel {
  const char* name;            // the kernel, as run counters and tests name it
  Conv2dAlgorithm algorithm;   // the algorithm it implements
  const char* label;           // what explain calls it
  // nullptr when the kernel runs this call, else why not.
  const char* (*unsupported)(const Conv2dCall&);
  int64_t (*workspace_bytes)(const Conv2dCall&);
  void (*run)(const Context&, const Conv2dCall&, const Conv2dOperands&);
};

// One rung of auto's ranked order: the first rung whose kernel supports the call and whose condition
// holds wins. The last rung of every order is unconditional and its kernel supports every call.
struct Conv2dAutoRule {
  const char* kernel;
  bool (*applies)(const Conv2dCall&);
  const char* reason;
};

enum class Conv2dPlanSource : uint8_t { Requested, Autotuned, Heuristic };

// The outcome of planning, without a string built: an index into the backend's table.
struct Conv2dChoice {
  int kernel;
  Conv2dPlanSource source;
  Conv2dAlgorithm requested;    // what was asked for (or the autotuner recorded); Auto for the heuristic
  const char* reason;           // the heuristic's reason; nullptr otherwise
  const char* fallback_reason;  // set when no kernel of the requested algorithm applies: why not
};

// What explain reports for one call.
struct Conv2dPlanReport {
  std::string algorithm;  // the label, e.g. "direct (simple loops: ...)"
  std::string kernel;     // the table entry that runs
  std::string reason;
  std::string key;        // the autotuner's key for this call
  int64_t workspace_bytes;
  bool autotuned;
};

const char* conv2d_algorithm_name(Conv2dAlgorithm a);

// The autotuner's choices of one backend. The string key (problem_key) is the autotuner's, from Python;
// the hot path never builds it: while nothing is recorded the lookup is one atomic load, and a thread
// caches each call's answer by the call's fields, flushed when a choice changes.
class TunedChoices {
 public:
  explicit TunedChoices(const char* backend) : backend_(backend) {}
  Conv2dAlgorithm lookup(const Conv2dCall& call);
  void set(const std::string& key, Conv2dAlgorithm algorithm);
  void clear();
  std::string key(const Conv2dCall& call) const;

 private:
  const char* backend_;
  std::mutex mutex_;  // guards choices_; only a thread's first call of a problem takes it
  std::unordered_map<std::string, Conv2dAlgorithm> choices_;
  std::atomic<uint64_t> generation_{1};
  std::atomic<bool> any_{false};
};

// Run counts per kernel entry, so tests can check that the kernel explain names is the one that ran.
class Conv2dRunCounts {
 public:
  explicit Conv2dRunCounts(size_t n) : counts_(n) {}
  void hit(int kernel) { counts_[kernel].fetch_add(1, std::memory_order_relaxed); }
  int64_t get(int kernel) const { return counts_[kernel].load(std::memory_order_relaxed); }
  void reset() {
    for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
  }

 private:
  std::vector<std::atomic<int64_t>> counts_;
};

// The planner over one backend's table and ranked order; header-only so the CUDA host code (compiled by
// nvcc and by the emulator's g++) instantiates it for its own Context.
template <typename Context>
class Conv2dPlanner {
 public:
  using Kernel = Conv2dKernel<Context>;

  Conv2dPlanner(const char* backend, c10::ArrayRef<Kernel> table, c10::ArrayRef<Conv2dAutoRule> order)
      : table_(table), order_(order), tuned_(backend), counts_(table.size()) {
    for (const Conv2dAutoRule& rule : order_) order_kernels_.push_back(index_of(rule.kernel));
  }

  Conv2dChoice choose(const Conv2dCall& call, Conv2dAlgorithm asked) {
    if (asked != Conv2dAlgorithm::Auto) return resolve(call, asked, Conv2dPlanSource::Requested);
    const Conv2dAlgorithm tuned = tuned_.lookup(call);
    if (tuned != Conv2dAlgorithm::Auto) return resolve(call, tuned, Conv2dPlanSource::Autotuned);
    for (size_t i = 0; i < order_.size(); ++i) {
      const Conv2dAutoRule& rule = order_[i];
      const int k = order_kernels_[i];
      if (table_[k].unsupported(call) == nullptr && (rule.applies == nullptr || rule.applies(call)))
        return {k, Conv2dPlanSource::Heuristic, Conv2dAlgorithm::Auto, rule.reason, nullptr};
    }
    TORCH_INTERNAL_ASSERT(false, "conv2d: auto's ranked order must end with a rung that always applies");
  }

  void run(const Context& context, const Conv2dCall& call, const Conv2dOperands& operands, Conv2dAlgorithm asked) {
    const int k = choose(call, asked).kernel;
    counts_.hit(k);
    table_[k].run(context, call, operands);
  }

  Conv2dPlanReport report(const Conv2dCall& call, Conv2dAlgorithm asked) {
    const Conv2dChoice c = choose(call, asked);
    const Kernel& e = table_[c.kernel];
    Conv2dPlanReport r;
    r.kernel = e.name;
    r.algorithm = c.fallback_reason != nullptr ? std::string(conv2d_algorithm_name(c.requested)) + " (simple loops: " +
                                                     c.fallback_reason + ")"
                                               : std::string(e.label);
    switch (c.source) {
      case Conv2dPlanSource::Requested: r.reason = "requested explicitly"; break;
      case Conv2dPlanSource::Autotuned: r.reason = "autotuner: fastest measured for this problem key"; break;
      case Conv2dPlanSource::Heuristic: r.reason = std::string("heuristic: ") + c.reason; break;
    }
    r.key = tuned_.key(call);
    r.workspace_bytes = e.workspace_bytes(call);
    r.autotuned = c.source == Conv2dPlanSource::Autotuned;
    return r;
  }

  // Whether an explicit request runs its own algorithm's kernel (no fallback): the autotuner's candidates.
  bool runs_itself(const Conv2dCall& call, Conv2dAlgorithm a) { return resolve(call, a, {}).fallback_reason == nullptr; }

  TunedChoices& tuned() { return tuned_; }
  std::vector<std::pair<std::string, int64_t>> run_counts() const {
    std::vector<std::pair<std::string, int64_t>> out;
    for (size_t k = 0; k < table_.size(); ++k) out.emplace_back(table_[k].name, counts_.get(static_cast<int>(k)));
    return out;
  }
  void reset_run_counts() { counts_.reset(); }

 private:
  int index_of(const char* name) const {
    for (size_t k = 0; k < table_.size(); ++k)
      if (std::string_view(table_[k].name) == name) return static_cast<int>(k);
    TORCH_INTERNAL_ASSERT(false, "conv2d: no kernel named ", name);
  }

  // An algorithm's own kernels in table order; when none applies, the always-correct simple loops,
  // reported under the requested name with the reason (never another algorithm's kernel).
  Conv2dChoice resolve(const Conv2dCall& call, Conv2dAlgorithm a, Conv2dPlanSource source) const {
    const char* why_not = nullptr;
    int fallback = -1;
    for (size_t k = 0; k < table_.size(); ++k) {
      if (table_[k].algorithm == Conv2dAlgorithm::DirectSimple && fallback < 0) fallback = static_cast<int>(k);
      if (table_[k].algorithm != a) continue;
      why_not = table_[k].unsupported(call);
      if (why_not == nullptr) return {static_cast<int>(k), source, a, nullptr, nullptr};
    }
    TORCH_INTERNAL_ASSERT(fallback >= 0 && why_not != nullptr, "conv2d: no kernel for algorithm ",
                          conv2d_algorithm_name(a));
    return {fallback, source, a, nullptr, why_not};
  }

  c10::ArrayRef<Kernel> table_;
  c10::ArrayRef<Conv2dAutoRule> order_;
  std::vector<int> order_kernels_;
  TunedChoices tuned_;
  Conv2dRunCounts counts_;
};

// What _C reaches each backend's planner through; a backend registers itself when its library loads (a
// build without CUDA has no "cuda" entry).
struct Conv2dPlannerHooks {
  Conv2dPlanReport (*report)(const Conv2dCall&, Conv2dAlgorithm);
  bool (*runs_itself)(const Conv2dCall&, Conv2dAlgorithm);
  TunedChoices& (*tuned)();
  std::vector<std::pair<std::string, int64_t>> (*run_counts)();
  void (*reset_run_counts)();
};
bool register_conv2d_planner(const char* backend, Conv2dPlannerHooks hooks);
// nullptr when the backend is not in this build.
const Conv2dPlannerHooks* find_conv2d_planner(const std::string& backend);
std::vector<std::string> conv2d_planner_backends();

}  // namespace fastconv
