// The plan layer's shared pieces (conv2d_plan.h): algorithm names, the autotuner's per-backend choices
// with their lock-free hot path, and the registry through which _C reaches each backend's planner.
#include "conv2d_plan.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstring>
#include <map>
#include <sstream>

namespace fastconv {

const char* conv2d_algorithm_name(Conv2dAlgorithm a) {
  switch (a) {
    case Conv2dAlgorithm::Auto: return "auto";
    case Conv2dAlgorithm::Direct: return "direct";
    case Conv2dAlgorithm::Im2col: return "im2col";
    case Conv2dAlgorithm::Im2colBlas: return "im2col_blas";
    case Conv2dAlgorithm::DirectSimple: return "direct_simple";
  }
  return "?";
}

namespace {

// A call's fields as plain integers: hashed and compared without building a string.
using CallFields = std::array<int64_t, 22>;

CallFields fields_of(const TunedChoices* owner, const Conv2dCall& c) {
  const Conv2dProblem& p = c.p;
  return {reinterpret_cast<intptr_t>(owner), p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.pad_h, p.pad_w,
          p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.groups, static_cast<int64_t>(p.padding_mode),
          static_cast<int64_t>(c.op), static_cast<int64_t>(c.dtype), c.channels_last, at::get_num_threads()};
}

struct CallFieldsHash {
  size_t operator()(const CallFields& f) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    for (int64_t v : f) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

struct ThreadCache {
  uint64_t generation = 0;
  std::unordered_map<CallFields, Conv2dAlgorithm, CallFieldsHash> answers;
};

}  // namespace

std::string TunedChoices::key(const Conv2dCall& c) const {
  const Conv2dProblem& p = c.p;
  std::ostringstream o;
  o << backend_ << "|" << (c.op == Conv2dOperator::Fprop ? "fprop" : c.op == Conv2dOperator::Dgrad ? "dgrad" : "wgrad")
    << "|N" << p.N << "C" << p.C << "H" << p.H << "W" << p.W << "|K" << p.K << "R" << p.R << "S" << p.S << "|P"
    << p.P << "Q" << p.Q << "|pad" << p.pad_h << "," << p.pad_w << "|stride" << p.stride_h << "," << p.stride_w
    << "|dil" << p.dilation_h << "," << p.dilation_w << "|g" << p.groups << "|padmode"
    << static_cast<int>(p.padding_mode) << "|" << c10::toString(c.dtype) << "|"
    << (c.channels_last ? "channels_last" : "nchw") << "|threads" << at::get_num_threads();
  return o.str();
}

Conv2dAlgorithm TunedChoices::lookup(const Conv2dCall& call) {
  if (!any_.load(std::memory_order_acquire)) return Conv2dAlgorithm::Auto;
  thread_local ThreadCache cache;
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  if (cache.generation != generation) {
    cache.answers.clear();
    cache.generation = generation;
  }
  const CallFields fields = fields_of(this, call);
  auto it = cache.answers.find(fields);
  if (it != cache.answers.end()) return it->second;
  Conv2dAlgorithm answer = Conv2dAlgorithm::Auto;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = choices_.find(key(call));
    if (found != choices_.end()) answer = found->second;
  }
  cache.answers.emplace(fields, answer);
  return answer;
}

void TunedChoices::set(const std::string& key, Conv2dAlgorithm algorithm) {
  TORCH_CHECK_VALUE(algorithm != Conv2dAlgorithm::Auto, "an autotuned choice must name an algorithm, not 'auto'");
  std::lock_guard<std::mutex> lock(mutex_);
  choices_[key] = algorithm;
  any_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

void TunedChoices::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  choices_.clear();
  any_.store(false, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

namespace {
std::map<std::string, Conv2dPlannerHooks>& planners() {
  static std::map<std::string, Conv2dPlannerHooks> registry;
  return registry;
}
}  // namespace

bool register_conv2d_planner(const char* backend, Conv2dPlannerHooks hooks) {
  planners()[backend] = hooks;
  return true;
}

const Conv2dPlannerHooks* find_conv2d_planner(const std::string& backend) {
  auto it = planners().find(backend);
  return it == planners().end() ? nullptr : &it->second;
}

std::vector<std::string> conv2d_planner_backends() {
  std::vector<std::string> names;
  for (const auto& entry : planners()) names.push_back(entry.first);
  return names;
}

}  // namespace fastconv
