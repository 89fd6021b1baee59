"""algorithm="auto" on every backend (cpu, cuda, emulated): explain() reports which kernel a call runs and why,
read from the backend's plan (csrc/conv2d_plan.h: one kernel table and one ranked auto order per backend, in
csrc/cpu/conv2d_cpu.cpp and csrc/cuda/conv2d_host.h) that dispatch uses; the opt-in autotuner times the
candidates once per problem key on the tensors' backend and records the winner in C++, where auto looks it up.

    fastconv.autotune(True)                    # or FASTCONV_AUTOTUNE=1
    fastconv.autotune(True, cache="tune.json") # or FASTCONV_AUTOTUNE_CACHE=tune.json: load now, save on each choice

The cache file keeps each machine's choices apart, {machine: {problem key: {"algorithm", "times"}}}: the
machine part names the fastconv version and the CPU instruction set and thread count (or the GPU and its
compute capability), so a file copied to another machine, or kept across an upgrade, is not applied there.
A damaged file gives a warning and an empty cache, never an exception; processes tuning into one file at
once merge their choices into it under a lock (the file beside it, tune.json.lock) and replace it atomically,
so it stays valid JSON.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
import threading
import time
import warnings

import torch

from . import _C
from . import ops as _ops

try:
    import fcntl  # POSIX: serialises the read-merge-replace of processes sharing one cache file
except ImportError:  # pragma: no cover - Windows: no lock, the replace is still atomic
    fcntl = None

CANDIDATES = ("direct", "im2col")  # timed where a request runs the algorithm's own kernel (no fallback)

_lock = threading.Lock()
_state = {"enabled": os.environ.get("FASTCONV_AUTOTUNE", "") not in ("", "0", "false", "no", "off"),
          "cache": os.environ.get("FASTCONV_AUTOTUNE_CACHE") or None, "machine": None}
# The choices in effect, all of one machine (_state["machine"]): problem key -> {"algorithm", "times"}.
_choices: dict[str, dict] = {}


def _fastconv_version():
    try:
        return importlib.metadata.version("fastconv")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


_VERSION = _fastconv_version()


def _machine_key(device):
    """What a timing depends on besides the problem: the fastconv version, and the CPU instruction set in
    use and the thread count, or the GPU's name and compute capability."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"fastconv {_VERSION}; cuda {torch.cuda.get_device_name(index)} sm_{major}{minor}"
    # The level in use, read per call: FASTCONV_CPU_ISA or a test may cap it below what the CPU has.
    return f"fastconv {_VERSION}; cpu {_C.build_info()['cpu_isa']}; {torch.get_num_threads()} threads"


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _is_channels_last(t):
    return t.dim() == 4 and torch._prims_common.suggest_memory_format(t) == torch.channels_last


def _plan_args(input, weight, stride, padding, dilation, groups):
    input, _ = _ops._batched(input, "conv2d")
    stride, dilation = _ops._pair("stride", stride), _ops._pair("dilation", dilation)
    padding = _ops._conv_padding(padding, weight, stride, dilation)
    return input, (list(input.shape), list(weight.shape), list(stride), list(padding), list(dilation), int(groups),
                   _dtype_name(input.dtype), _is_channels_last(input))


def _valid_entry(entry):
    return (isinstance(entry, dict) and entry.get("algorithm") in _ops.ALGORITHMS and entry["algorithm"] != "auto"
            and isinstance(entry.get("times", {}), dict))


def _read(path):
    """The cache file as {machine: {key: entry}}, or {} with a warning when it cannot be used (unreadable,
    not JSON, truncated, or not of that shape): a damaged cache costs a re-tune, never a failed call."""
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: not JSON, truncated, not UTF-8
        problem = f"{type(e).__name__}: {e}"
    else:
        if not isinstance(data, dict):
            problem = f"expected a JSON object, got {type(data).__name__}"
        elif not all(isinstance(m, dict) and all(map(_valid_entry, m.values())) for m in data.values()):
            problem = 'expected {machine: {problem key: {"algorithm": <a fastconv algorithm>, "times": {...}}}}'
        else:
            return data
    warnings.warn(f"fastconv: ignoring the autotune cache {path} ({problem}); starting with an empty cache",
                  RuntimeWarning, stacklevel=3)
    return {}


def _use_machine(machine):
    """Makes the file's choices for `machine` the ones in effect (here and in C++), forgetting any other
    machine's: a thread count changed since the last call means other timings. Called under _lock."""
    _choices.clear()
    _C.clear_autotuned_choices()
    _state["machine"] = machine
    for key, entry in _read(_state["cache"]).get(machine, {}).items():
        _choices[key] = entry
        _C.set_autotuned_choice(key, entry["algorithm"])


def _save(path):
    """Merges this process's choices into the file: read what is there under a lock (another process may
    have added its own since), add ours, write a unique temporary file beside it and rename it over the
    old one, so a reader sees the old file or the new one, never half of one. A cache that cannot be
    written gives a warning; the choices stay in effect in memory."""
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        with open(path + ".lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            data = _read(path)
            data.setdefault(_state["machine"], {}).update(_choices)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
    except OSError as e:
        warnings.warn(f"fastconv: could not save the autotune cache {path} ({type(e).__name__}: {e})",
                      RuntimeWarning, stacklevel=3)


def autotune(enabled: bool = True, cache: str | None = None):
    """Turns the autotuner on or off. cache: a JSON file of choices, loaded now and merged into after each
    new choice (default: $FASTCONV_AUTOTUNE_CACHE)."""
    with _lock:
        _state["enabled"] = bool(enabled)
        if cache is not None:
            _state["cache"] = cache
            _state["machine"] = None
        if enabled and _state["machine"] is None:
            _use_machine(_machine_key("cpu"))
        # conv2d calls the tuner through this hook only while it is on (ops never imports this module).
        _ops.autotune_hook = maybe_autotune if enabled else None


def autotune_enabled():
    return _state["enabled"]


def clear_autotune_cache(memory_only: bool = True):
    """Forgets every recorded choice (in memory; the JSON file too unless memory_only)."""
    with _lock:
        _choices.clear()
        _C.clear_autotuned_choices()
        _state["machine"] = None  # the next use loads the file again
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
    machine = _machine_key(input.device)
    if machine != _state["machine"]:
        with _lock:
            _use_machine(machine)
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


if _state["enabled"]:  # FASTCONV_AUTOTUNE=1: on from the start
    autotune(True)
