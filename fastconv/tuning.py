"""algorithm="auto" on the CPU: explain() reports what the C++ heuristic (or the autotuner) picks for a call
and why; the opt-in autotuner times the candidates once per problem key and records the winner in C++,
where auto looks it up. The heuristic itself lives only in C++ (csrc/cpu/conv2d_cpu.cpp, choose_algorithm).

    fastconv.autotune(True)                    # or FASTCONV_AUTOTUNE=1
    fastconv.autotune(True, cache="tune.json") # or FASTCONV_AUTOTUNE_CACHE=tune.json: load now, save on each choice
"""
from __future__ import annotations

import json
import os
import threading
import time

import torch

from . import _C

CANDIDATES = ("direct", "im2col")

_lock = threading.Lock()
_state = {"enabled": os.environ.get("FASTCONV_AUTOTUNE", "") not in ("", "0", "false", "no", "off"),
          "cache": os.environ.get("FASTCONV_AUTOTUNE_CACHE") or None, "loaded": False}
_choices: dict[str, dict] = {}  # key -> {"algorithm": ..., "times": {...}}


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _is_channels_last(t):
    return t.dim() == 4 and torch._prims_common.suggest_memory_format(t) == torch.channels_last


def _plan_args(input, weight, stride, padding, dilation, groups):
    from .ops import _batched, _conv_padding, _pair

    input, _ = _batched(input, "conv2d")
    stride, dilation = _pair("stride", stride), _pair("dilation", dilation)
    padding = _conv_padding(padding, weight, stride, dilation)
    return input, (list(input.shape), list(weight.shape), list(stride), list(padding), list(dilation), int(groups),
                   _dtype_name(input.dtype), _is_channels_last(input))


def _load(path):
    if path and os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        for key, entry in data.items():
            _choices[key] = entry
            _C.set_autotuned_choice(key, entry["algorithm"])


def _save(path):
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_choices, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def autotune(enabled: bool = True, cache: str | None = None):
    """Turns the autotuner on or off. cache: a JSON file of choices, loaded now and rewritten after each new
    choice (default: $FASTCONV_AUTOTUNE_CACHE)."""
    with _lock:
        _state["enabled"] = bool(enabled)
        if cache is not None:
            _state["cache"] = cache
            _state["loaded"] = False
        if enabled and not _state["loaded"]:
            _load(_state["cache"])
            _state["loaded"] = True


def autotune_enabled():
    return _state["enabled"]


def clear_autotune_cache(memory_only: bool = True):
    """Forgets every recorded choice (in memory; the JSON file too unless memory_only)."""
    with _lock:
        _choices.clear()
        _C.clear_autotuned_choices()
        _state["loaded"] = False
        if not memory_only and _state["cache"] and os.path.exists(_state["cache"]):
            os.remove(_state["cache"])


def autotune_choices():
    """A copy of the recorded choices: key -> {"algorithm", "times"}."""
    return {k: dict(v) for k, v in _choices.items()}


def _time(fn, reps=3):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def maybe_autotune(input, weight, bias, stride, padding, dilation, groups, padding_mode="zeros"):
    """Called by conv2d for algorithm="auto" with normalised arguments (batched input, stride and dilation
    pairs, padding (top, bottom, left, right)): on the first call of a problem key, times the candidates
    and records the fastest in C++; later calls cost one lookup."""
    if not _state["enabled"] or input.device.type != "cpu" or input.dim() != 4:
        return
    if not _state["loaded"]:
        autotune(True)
    args = (list(input.shape), list(weight.shape), list(stride), list(padding), list(dilation), int(groups),
            _dtype_name(input.dtype), _is_channels_last(input))
    plan = _C.conv2d_plan(*args, "fprop", "auto", padding_mode)
    if plan["key"] in _choices:
        return
    x, w = input.detach(), weight.detach()
    b = bias.detach() if bias is not None else None
    times = {}
    with torch.no_grad():
        for algorithm in CANDIDATES:
            times[algorithm] = _time(lambda: torch.ops.fastconv.conv2d_fprop(
                x, w, b, list(stride), list(padding), list(dilation), groups, algorithm, padding_mode))
    best = min(times, key=times.get)
    with _lock:
        _choices[plan["key"]] = {"algorithm": best, "times": times}
        _C.set_autotuned_choice(plan["key"], best)
        _save(_state["cache"])


def explain(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
            padding_mode="zeros", verbose=True):
    """What fastconv.conv2d(input, weight, ...) runs on the CPU with this algorithm (default auto) and why,
    for the forward and both backward passes, with the im2col workspace size in bytes. Returns a dict
    (forward plan at the top level, "dgrad" and "wgrad" sub-dicts) and prints a summary when verbose."""
    _, args = _plan_args(input, weight, stride, padding, dilation, groups)
    plan = _C.conv2d_plan(*args, "fprop", algorithm, padding_mode)
    plan["dgrad"] = _C.conv2d_plan(*args, "dgrad", algorithm, padding_mode)
    plan["wgrad"] = _C.conv2d_plan(*args, "wgrad", algorithm, padding_mode)
    if verbose:
        print(f"fastconv.conv2d {args[0]} * {args[1]} -> {plan['output_size']} ({plan['macs']} MACs)")
        for name, p in (("forward", plan), ("dgrad", plan["dgrad"]), ("wgrad", plan["wgrad"])):
            print(f"  {name:8s} {p['algorithm']}: {p['reason']}; workspace {p['workspace_bytes']} bytes")
    return plan
