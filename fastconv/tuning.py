"""algorithm="auto" on every backend (cpu, cuda, emulated): explain() reports which kernel a call runs and why,
read from the backend's plan (csrc/conv2d_plan.h: one kernel table and one ranked auto order per backend, in
csrc/cpu/conv2d_cpu.cpp and csrc/cuda/conv2d_host.h) that dispatch uses; the opt-in autotuner times the
candidates once per problem key on the tensors' backend and records the winner in C++, where auto looks it up.

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

CANDIDATES = ("direct", "im2col")  # timed where a request runs the algorithm's own kernel (no fallback)

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


def _backend(input, namespace):
    return "emulated" if namespace == "fastconv_emulated" else input.device.type


def _sync(backend):
    if backend == "cuda":
        torch.cuda.synchronize()


def maybe_autotune(input, weight, bias, stride, padding, dilation, groups, padding_mode="zeros",
                   namespace="fastconv"):
    """Called by conv2d for algorithm="auto" with normalised arguments (batched input, stride and dilation
    pairs, padding (top, bottom, left, right)): on the first call of a problem key, times the candidates on
    the tensors' backend and records the fastest in C++; later calls cost one lookup."""
    if not _state["enabled"] or input.dim() != 4:
        return
    if not _state["loaded"]:
        autotune(True)
    backend = _backend(input, namespace)
    args = (backend, list(input.shape), list(weight.shape), list(stride), list(padding), list(dilation), int(groups),
            _dtype_name(input.dtype), _is_channels_last(input))
    plan = _C.conv2d_plan(*args, "fprop", "auto", padding_mode)
    if plan["key"] in _choices:
        return
    x, w = input.detach(), weight.detach()
    b = bias.detach() if bias is not None else None
    op = getattr(torch.ops, namespace).conv2d_fprop
    times = {}

    def call(algorithm):
        op(x, w, b, list(stride), list(padding), list(dilation), groups, algorithm, padding_mode)
        _sync(backend)

    with torch.no_grad():
        for algorithm in CANDIDATES:
            if _C.conv2d_runs_itself(*args, "fprop", algorithm, padding_mode):
                times[algorithm] = _time(lambda: call(algorithm))
    if not times:
        return
    best = min(times, key=times.get)
    with _lock:
        _choices[plan["key"]] = {"algorithm": best, "times": times}
        _C.set_autotuned_choice(plan["key"], best)
        _save(_state["cache"])


class Explanation(dict):
    """explain()'s report: the forward plan's fields at the top level ("algorithm", "kernel", "reason",
    "workspace_bytes", "key", "autotuned", "output_size", "macs"), the backward passes' plans under "dgrad"
    and "wgrad", and "backend". str() is the summary text."""

    def __str__(self):
        lines = [f"fastconv.conv2d [{self['backend']}] {self['input_size']} * {self['weight_size']} -> "
                 f"{self['output_size']} ({self['macs']} MACs)"]
        for name, p in (("forward", self), ("dgrad", self["dgrad"]), ("wgrad", self["wgrad"])):
            lines.append(f"  {name:8s} {p['algorithm']}: {p['reason']}; workspace {p['workspace_bytes']} bytes")
        return "\n".join(lines)


def explain_on(backend, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
               padding_mode="zeros", verbose=False):
    """explain() for a named backend: "cpu", "cuda" or "emulated"."""
    from .ops import _check_algorithm, _check_padding_mode

    _check_algorithm(algorithm)
    _check_padding_mode(padding_mode)
    _, args = _plan_args(input, weight, stride, padding, dilation, groups)
    plan = Explanation(_C.conv2d_plan(backend, *args, "fprop", algorithm, padding_mode))
    # dgrad dispatches on grad_output's layout: the output's, channels_last when the input or the weight is.
    dgrad_args = args[:-1] + (args[-1] or _is_channels_last(weight),)
    plan["dgrad"] = _C.conv2d_plan(backend, *dgrad_args, "dgrad", algorithm, padding_mode)
    plan["wgrad"] = _C.conv2d_plan(backend, *args, "wgrad", algorithm, padding_mode)
    plan["backend"], plan["input_size"], plan["weight_size"] = backend, args[0], args[1]
    if verbose:
        print(plan)
    return plan


def explain(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
            padding_mode="zeros", verbose=False):
    """What fastconv.conv2d(input, weight, ...) runs on the tensors' backend (CPU or CUDA) with this algorithm
    (default auto) and why, for the forward and both backward passes, with each kernel's workspace in bytes.
    Returns an Explanation: a dict (forward plan at the top level, "dgrad" and "wgrad" sub-dicts) whose str()
    is the summary; verbose=True also prints it."""
    return explain_on(input.device.type, input, weight, bias, stride, padding, dilation, groups,
                      algorithm=algorithm, padding_mode=padding_mode, verbose=verbose)
