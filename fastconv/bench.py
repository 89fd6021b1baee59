"""The benchmark harness: ``python -m fastconv bench`` (the full suite) and ``python -m fastconv`` (info).

Every row times a set of *candidates* on the same tensors, in the same process: PyTorch's default path
(the baseline: oneDNN on the CPU, cuDNN on CUDA), PyTorch's im2col path (oneDNN/cuDNN disabled), and each
fastconv algorithm. The candidates are interleaved: every repeat runs each of them once, round-robin,
with the starting candidate rotated, so that the machine's drift (other jobs, clocks, caches) falls on
all of them alike. Each candidate is warmed up first and its warm-up result is checked against the
baseline's, so a fast but wrong kernel reports "wrong", never a speed-up. The figure is the median of the
repeats. A candidate that raises (a kernel not built yet, an op with no kernel for this device) is shown
as "n/a" and the run goes on.

Throughput is GFLOP/s for convolutions and GEMMs (2·N·K·P·Q·C/g·R·S per pass) and GB/s for pooling
(bytes read + written); ``ratio`` is the baseline's time over the candidate's (above 1: faster than
PyTorch). ``--baseline`` takes the convolution ratios against another candidate instead (``torch_im2col``:
fastconv's im2col against PyTorch's own im2col path); the outputs are still checked against PyTorch's
default path, and pooling, GEMM and model rows keep ``torch`` as their baseline. ``peak`` is the fraction
of the machine's own peak, measured at start with a large torch.mm (and, for GB/s, a large tensor copy).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import fnmatch
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .ops import ALGORITHMS
from .shapes import (CONV_SHAPES, GEMM_SHAPES, INFO_CONV, POOL_SHAPES, QUICK_CONV, QUICK_GEMM, QUICK_POOL,
                     ConvShape, GemmShape, PoolShape)

SCHEMA = "fastconv-bench/1"
# PyTorch's default path: the reference every output is checked against, and the default baseline of the
# ratios (--baseline changes the latter for convolutions).
BASELINE = "torch"
# fastconv's algorithms (ops.ALGORITHMS) timed by default: all but direct_simple, the plain loops kept as the
# always-correct fallback, far slower on these layers (--algorithms direct_simple times it too).
FASTCONV_ALGORITHMS = tuple(a for a in ALGORITHMS if a != "direct_simple")
CONV_CANDIDATES = (BASELINE, "torch_im2col") + FASTCONV_ALGORITHMS
CONV_PASSES = ("forward", "grad_input", "grad_weight", "train_step")
POOL_PASSES = ("forward", "backward")
SECTIONS = ("conv", "pool", "gemm", "model", "overhead")
# The per-call cost of the whole Python + dispatcher + planner path: problems so small that the arithmetic is
# nothing beside it. Target: within 2x of PyTorch's per-call time (ratio >= 0.5).
OVERHEAD_SHAPES = (ConvShape("overhead.conv_1x1x8x8_3x3", "per-call cost", 1, 1, 8, 8, 1, 3, 3, pad=1),
                   PoolShape("overhead.pool_1x1x8x8_k2", "per-call cost", 1, 1, 8, 8, 2, 2))
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9, torch.bfloat16: 5e-2, torch.float16: 1e-2}
MODEL = "resnet18.b8.112"

# torch.backends.mkldnn.flags() also sets oneDNN's TF32 switch, which warns on builds without Intel GPUs.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


# ----------------------------------------------------------------------------------------------------
# Timing: interleaved candidates, warm-up, validation, median
# ----------------------------------------------------------------------------------------------------
class Timer:
    """Times ``number`` back-to-back calls of fn and returns seconds per call. On the CPU a wall clock;
    on CUDA a pair of events on the current stream, synchronised after the calls."""

    def __init__(self, device="cpu"):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn, number=1):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / number
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class Measurement:
    """The samples (seconds per call) of one candidate, or why it has none."""

    samples: list = field(default_factory=list)
    error: str | None = None
    number: int = 1
    note: str | None = None

    @property
    def median(self):
        return statistics.median(self.samples) if self.samples and self.error is None else None


def short_error(exc):
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 90:
        first = first[:87] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _as_tensors(out):
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(t for t in out if isinstance(t, torch.Tensor))


def compare(reference, out, tolerance):
    """None when out matches reference (max error within tolerance × the reference's largest value),
    else a short description of the mismatch."""
    ref, got = _as_tensors(reference), _as_tensors(out)
    if len(ref) != len(got):
        return f"wrong: {len(got)} outputs, expected {len(ref)}"
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            return f"wrong: shape {list(g.shape)}, expected {list(r.shape)}"
        r64, g64 = r.detach().double(), g.detach().double()
        scale = max(r64.abs().max().item(), 1e-30) if r64.numel() else 1.0
        err = (g64 - r64).abs().max().item() if r64.numel() else 0.0
        if not err <= tolerance * scale:  # also catches NaN
            return f"wrong: max error {err:.3g} (scale {scale:.3g})"
    return None


def measure(candidates, repeat=5, warmup=1, timer=None, min_sample_s=0.0, reference=None, tolerance=None,
            max_number=1000, budget_s=None):
    """Times each candidate, interleaved round-robin, and returns {name: Measurement}.

    candidates: {name: make}, where make() returns the zero-argument function to time (so that the
    set-up of a candidate may fail too). Each is warmed up ``warmup`` times; the last warm-up result is
    compared with the ``reference`` candidate's when a tolerance is given. When one call is shorter than
    min_sample_s, each sample times ``number`` calls instead (chosen from the warm-up) and is divided.
    Then ``repeat`` rounds: each round calls every live candidate once, starting one candidate later
    than the round before. A candidate that raises anywhere keeps its error and is dropped.
    With a budget_s, a candidate whose warm-up call shows that ``repeat`` samples would take longer gets
    only as many as fit (at least one); one whose single warm-up call already took budget_s or more keeps
    that call as its only sample (a slow kernel's first-call overhead is small beside it). Both are noted.
    """
    timer = timer or Timer()
    results = {name: Measurement() for name in candidates}
    live, outputs, quota = {}, {}, {}
    for name, make in candidates.items():
        try:
            fn = make()
            out, elapsed = None, 0.0
            for _ in range(max(1, warmup)):
                box = []
                elapsed = timer(lambda: box.append(fn()), 1)
                out = box[-1] if box else None
            timer.sync()
            outputs[name] = out
            results[name].number = 1
            if min_sample_s > 0 and elapsed < min_sample_s:
                results[name].number = min(max_number, max(1, math.ceil(min_sample_s / max(elapsed, 1e-9))))
            live[name] = fn
            quota[name] = repeat
            if budget_s is not None and elapsed * repeat > budget_s:
                if elapsed >= budget_s:
                    quota[name] = 0
                    results[name].samples.append(elapsed)
                    results[name].note = "over --budget: the warm-up call is the one sample"
                else:
                    quota[name] = max(1, int(budget_s // elapsed))
                    results[name].note = f"over --budget: {quota[name]} of {repeat} samples"
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run is reported, never fatal
            results[name].error = short_error(exc)
    if tolerance is not None and reference in outputs and outputs[reference] is not None:
        for name in list(live):
            if name != reference and outputs.get(name) is not None:
                try:
                    mismatch = compare(outputs[reference], outputs[name], tolerance)
                except Exception as exc:  # noqa: BLE001
                    mismatch = "wrong: " + short_error(exc)
                if mismatch:
                    results[name].error = mismatch
                    del live[name]
    outputs.clear()
    names = list(live)
    for r in range(repeat):
        if not names:
            break
        start = r % len(names)
        for name in names[start:] + names[:start]:
            if name not in live or len(results[name].samples) >= quota[name]:
                continue
            try:
                results[name].samples.append(timer(live[name], results[name].number))
            except Exception as exc:  # noqa: BLE001
                results[name].error = short_error(exc)
                del live[name]
    return results


# ----------------------------------------------------------------------------------------------------
# Rows and their candidates
# ----------------------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str  # conv | pool | gemm | model
    shape: str
    desc: str
    layout: str  # nchw | channels_last | "-"
    pass_: str
    candidate: str
    seconds: float | None
    samples: list
    work: float | None  # FLOPs, bytes or images per call
    unit: str  # GFLOP/s | GB/s | img/s
    error: str | None = None
    ratio: float | None = None
    peak_fraction: float | None = None
    number: int = 1
    note: str | None = None

    @property
    def throughput(self):
        if self.seconds is None or not self.work:
            return None
        scale = 1.0 if self.unit in ("img/s", "call/s") else 1e9
        return self.work / self.seconds / scale

    def as_dict(self):
        return {
            "section": self.section, "shape": self.shape, "desc": self.desc, "layout": self.layout,
            "pass": self.pass_, "candidate": self.candidate, "median_s": self.seconds,
            "samples_s": list(self.samples), "calls_per_sample": self.number, "work": self.work,
            "unit": self.unit, "throughput": self.throughput, "ratio": self.ratio,
            "peak_fraction": self.peak_fraction, "error": self.error, "note": self.note,
        }


def rows_from(measurements, *, section, shape, desc, layout, pass_, work, unit, peak=None, baseline=BASELINE):
    """Turns one measure() result into rows, with ratios to the baseline and fractions of the peak."""
    base = measurements.get(baseline)
    base_s = base.median if base is not None else None
    rows = []
    for name, m in measurements.items():
        row = Row(section, shape, desc, layout, pass_, name, m.median, list(m.samples), work, unit, m.error,
                  number=m.number, note=m.note)
        if row.seconds is not None:
            if base_s is not None:
                row.ratio = base_s / row.seconds
            if peak and row.throughput is not None:
                row.peak_fraction = row.throughput / peak
        rows.append(row)
    return rows


def _fmt(shape):
    return torch.channels_last if shape == "channels_last" else torch.contiguous_format


@contextlib.contextmanager
def _torch_im2col(device):
    """PyTorch's own im2col + GEMM path: oneDNN (CPU) or cuDNN (CUDA) switched off."""
    if torch.device(device).type == "cuda":
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _in(ctx_factory, fn):
    def run():
        with ctx_factory():
            return fn()
    return run


def conv_candidates(shape: ConvShape, pass_, names, *, device, dtype, layout):
    """{name: make} for one convolution shape and pass."""
    mf = _fmt(layout)
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*size):
        return torch.randn(*size, generator=g, dtype=torch.float32).to(device=device, dtype=dtype).contiguous(
            memory_format=mf)

    x = rand(shape.N, shape.C, shape.H, shape.W)
    w = rand(shape.K, shape.C // shape.groups, shape.R, shape.S) / math.sqrt(shape.C // shape.groups * shape.R * shape.S)
    dy = rand(shape.N, shape.K, shape.P, shape.Q)
    stride, pad4, dil = shape.kernel_args()
    pad, groups = shape.pad, shape.groups  # as given: F.conv2d and fastconv.conv2d take "same" too

    def torch_fn():
        if pass_ == "forward":
            return lambda: F.conv2d(x, w, None, stride, pad, dil, groups)
        if pass_ in ("grad_input", "grad_weight"):
            top_left = pad4[0::2]
            if top_left != pad4[1::2]:
                raise ValueError("PyTorch's convolution_backward takes symmetric padding only")
            mask = [pass_ == "grad_input", pass_ == "grad_weight", False]
            i = 0 if pass_ == "grad_input" else 1
            return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, stride, top_left, dil, False, [0, 0],
                                                               groups, mask)[i]
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

        def step():
            with torch.enable_grad():
                y = F.conv2d(xg, wg, None, stride, pad, dil, groups)
                return torch.autograd.grad(y, (xg, wg), dy)
        return step

    def fastconv_fn(algorithm):
        import fastconv
        ops = torch.ops.fastconv
        if pass_ == "forward":
            return lambda: fastconv.conv2d(x, w, None, stride, pad, dil, groups, algorithm=algorithm)
        if pass_ == "grad_input":
            return lambda: ops._conv2d_dgrad(dy, w, list(x.shape), stride, pad4, dil, groups, algorithm)
        if pass_ == "grad_weight":
            return lambda: ops._conv2d_wgrad(dy, x, list(w.shape), stride, pad4, dil, groups, algorithm)
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()

        def step():
            with torch.enable_grad():
                y = fastconv.conv2d(xg, wg, None, stride, pad, dil, groups, algorithm=algorithm)
                return torch.autograd.grad(y, (xg, wg), dy)
        return step

    out = {}
    for name in names:
        if name == BASELINE:
            out[name] = torch_fn
        elif name == "torch_im2col":
            out[name] = lambda: _in(lambda: _torch_im2col(device), torch_fn())
        else:
            out[name] = (lambda a: lambda: fastconv_fn(a))(name)
    return out


def pool_candidates(shape: PoolShape, pass_, *, device, dtype, layout):
    mf = _fmt(layout)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape.N, shape.C, shape.H, shape.W, generator=gen).to(device=device, dtype=dtype).contiguous(
        memory_format=mf)
    dy = torch.randn(shape.N, shape.C, shape.P, shape.Q, generator=gen).to(device=device, dtype=dtype).contiguous(
        memory_format=mf)
    params = shape.args()  # kernel, stride, padding, dilation (pairs), ceil_mode

    def torch_fn():
        if pass_ == "forward":
            return lambda: F.max_pool2d(x, *params)
        _, idx = F.max_pool2d(x, *params, return_indices=True)
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(dy, x, *params, idx)

    # Each library's pair as its autograd runs it: PyTorch saves int64 indices; fastconv.max_pool2d
    # saves one-byte tap numbers unless return_indices asks for the indices ("fastconv_indices").
    def fastconv_fn():
        import fastconv
        if pass_ == "forward":
            return lambda: fastconv.max_pool2d(x, *params)
        _, taps = torch.ops.fastconv._max_pool2d_fprop_taps(x, *params)
        return lambda: torch.ops.fastconv._max_pool2d_bprop_taps(dy, x, taps, *params)

    def fastconv_indices_fn():
        import fastconv
        if pass_ == "forward":
            return lambda: fastconv.max_pool2d(x, *params, return_indices=True)[0]
        _, idx = fastconv.max_pool2d(x, *params, return_indices=True)
        return lambda: torch.ops.fastconv._max_pool2d_bprop(dy, x, idx, *params)

    return {BASELINE: torch_fn, "fastconv": fastconv_fn, "fastconv_indices": fastconv_indices_fn}


def gemm_candidates(shape: GemmShape, *, device, dtype):
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(shape.M, shape.K, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(shape.K, shape.N, generator=gen).to(device=device, dtype=dtype)
    return {BASELINE: lambda: (lambda: torch.mm(a, b)),
            "fastconv": lambda: (lambda: torch.ops.fastconv.mm(a, b))}


def model_candidates(algorithms, *, device, dtype, layout, batch=8, size=112):
    """A ResNet-18 training step (forward, cross-entropy, backward, SGD step), unconverted and converted
    to fastconv layers by fastconv.nn.convert."""
    import torchvision  # noqa: F401  (an ImportError makes the whole row n/a)

    mf = _fmt(layout)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=mf)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)

    def build():
        torch.manual_seed(0)
        from torchvision.models import resnet18
        return resnet18().to(device=device, dtype=dtype, memory_format=mf)

    def stepper(model):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step():
            with torch.enable_grad():
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), labels)
                loss.backward()
                opt.step()
            return loss.detach()
        return step

    def converted(algorithm):
        import fastconv.nn as fnn

        model = build()
        fnn.convert(model, algorithm=algorithm)  # in place; returns a report
        return stepper(model)

    out = {BASELINE: lambda: stepper(build())}
    for a in algorithms:
        out[a] = (lambda a: lambda: converted(a))(a)
    return out


# ----------------------------------------------------------------------------------------------------
# Peaks, metadata
# ----------------------------------------------------------------------------------------------------
def measure_peak(device, dtype, size=2048, repeat=5, timer=None):
    """The machine's peak as this harness sees it: GFLOP/s of torch.mm on size² matrices, and GB/s of a
    large tensor copy (bytes read + written)."""
    timer = timer or Timer(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    n = (1 << 26) if torch.device(device).type == "cuda" else (1 << 24)
    src = torch.ones(n, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    m = measure({"mm": lambda: (lambda: torch.mm(a, b)), "copy": lambda: (lambda: dst.copy_(src))},
                repeat=repeat, warmup=2, timer=timer, min_sample_s=0.02 if timer.cuda else 0.0)
    # A peak is the best the machine did, not its typical speed: the fastest sample, not the median.
    gflops = 2 * size ** 3 / min(m["mm"].samples) / 1e9 if m["mm"].median else None
    gbps = 2 * n * src.element_size() / min(m["copy"].samples) / 1e9 if m["copy"].median else None
    return {"gemm_size": size, "gflops": gflops, "copy_bytes": 2 * n * src.element_size(), "gbps": gbps}


def best_peak(*peaks):
    """The best of several peak measurements (at the start and at the end of a run, on a shared machine)."""
    peaks = [p for p in peaks if p]
    if not peaks:
        return {}
    out = dict(peaks[0])
    for key in ("gflops", "gbps"):
        values = [p[key] for p in peaks if p.get(key)]
        out[key] = max(values) if values else None
    out["measurements"] = [{k: p.get(k) for k in ("gflops", "gbps")} for p in peaks]
    return out


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        commit = out.stdout.strip() or None
        if commit:
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def build_info():
    try:
        import fastconv
        return dict(fastconv.build_info())
    except Exception as exc:  # noqa: BLE001
        return {"error": short_error(exc)}


def metadata(config):
    device = torch.device(config.device)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python -m fastconv bench " + " ".join(config.argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
                                                                                   or platform.machine()),
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": config.dtype,
        "baseline": config.baseline,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "build_info": build_info(),
    }
    return meta


# ----------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------
def _select(shapes, patterns, quick_names=None):
    out = list(shapes)
    if quick_names is not None:
        out = [s for s in out if s.name in quick_names]
    if patterns:
        out = [s for s in out if any(fnmatch.fnmatch(s.name, p) or p in s.name for p in patterns)]
    return out


def plan(config, conv_shapes=CONV_SHAPES, pool_shapes=POOL_SHAPES, gemm_shapes=GEMM_SHAPES):
    """The list of (section, shape, layout, pass) jobs the configuration asks for."""
    q = config.quick
    conv = _select(conv_shapes, config.shapes, QUICK_CONV if q and conv_shapes is CONV_SHAPES else None)
    pool = _select(pool_shapes, config.shapes, QUICK_POOL if q and pool_shapes is POOL_SHAPES else None)
    gemm = _select(gemm_shapes, config.shapes, QUICK_GEMM if q and gemm_shapes is GEMM_SHAPES else None)
    if config.batch:
        conv = [s.with_batch(config.batch) for s in conv]
        pool = [s.with_batch(config.batch) for s in pool]
    jobs = []
    if "conv" in config.sections:
        for s in conv:
            for layout in config.conv_layouts:
                for p in config.passes:
                    if p in CONV_PASSES:
                        jobs.append(("conv", s, layout, p))
    if "pool" in config.sections:
        pool_passes = [p for p in POOL_PASSES if p == "forward" and "forward" in config.passes
                       or p == "backward" and set(config.passes) & {"backward", "grad_input", "train_step"}]
        for s in pool:
            for layout in config.pool_layouts:
                for p in pool_passes:
                    jobs.append(("pool", s, layout, p))
    if "gemm" in config.sections and "forward" in config.passes:
        for s in gemm:
            jobs.append(("gemm", s, "-", "forward"))
    if "overhead" in config.sections and "forward" in config.passes:
        for s in OVERHEAD_SHAPES:
            jobs.append(("overhead", s, "nchw", "forward"))
    model_selected = not config.shapes or any(fnmatch.fnmatch(MODEL, p) or p in MODEL for p in config.shapes)
    if "model" in config.sections and model_selected and "train_step" in config.passes and not q:
        jobs.append(("model", None, config.conv_layouts[0], "train_step"))
    return jobs


def run_job(job, config, peak, timer):
    section, shape, layout, pass_ = job
    dtype = DTYPES[config.dtype]
    common = dict(repeat=config.repeat, warmup=config.warmup, timer=timer, min_sample_s=config.min_sample_s,
                  reference=BASELINE, tolerance=TOLERANCE[dtype], budget_s=config.budget)
    flops_peak, bw_peak = peak.get("gflops"), peak.get("gbps")
    if section == "conv":
        names = [BASELINE] + [a for a in config.algorithms if a != BASELINE]
        cands = conv_candidates(shape, pass_, names, device=config.device, dtype=dtype, layout=layout)
        # Each of these passes does the same work: 2·N·K·P·Q·C/g·R·S FLOPs; a training step does all three.
        work = shape.flops * (3 if pass_ == "train_step" else 1)
        m = measure(cands, **common)
        return rows_from(m, section=section, shape=shape.name, desc=shape.describe(), layout=layout, pass_=pass_,
                         work=work, unit="GFLOP/s", peak=flops_peak, baseline=config.baseline)
    if section == "pool":
        cands = pool_candidates(shape, pass_, device=config.device, dtype=dtype, layout=layout)
        m = measure(cands, **common)
        elem = torch.empty((), dtype=dtype).element_size()
        return rows_from(m, section=section, shape=shape.name, desc=shape.describe(), layout=layout, pass_=pass_,
                         work=shape.bytes(pass_, elem), unit="GB/s", peak=bw_peak)
    if section == "overhead":
        # Interleaved medians of calls on a tiny problem, many per sample: the ratio is the result, never
        # the absolute time (a shared machine's noise is larger than the difference).
        if isinstance(shape, ConvShape):
            cands = conv_candidates(shape, "forward", [BASELINE, "auto"], device=config.device, dtype=dtype,
                                    layout=layout)
        else:
            cands = pool_candidates(shape, "forward", device=config.device, dtype=dtype, layout=layout)
        m = measure(cands, **dict(common, repeat=max(config.repeat, 15), min_sample_s=max(config.min_sample_s, 0.02)))
        return rows_from(m, section=section, shape=shape.name, desc=shape.describe(), layout=layout, pass_=pass_,
                         work=1, unit="call/s", peak=None)
    if section == "gemm":
        m = measure(gemm_candidates(shape, device=config.device, dtype=dtype), **common)
        return rows_from(m, section=section, shape=shape.name, desc=shape.describe(), layout="-", pass_=pass_,
                         work=shape.flops, unit="GFLOP/s", peak=flops_peak)
    algos = [a for a in config.model_algorithms]
    try:
        cands = model_candidates(algos, device=config.device, dtype=dtype, layout=layout)
    except Exception as exc:  # noqa: BLE001 - torchvision missing
        m = {n: Measurement(error=short_error(exc)) for n in [BASELINE] + algos}
    else:
        # Training from random weights diverges between candidates: no output check for the model.
        m = measure(cands, **dict(common, tolerance=None))
    return rows_from(m, section=section, shape=MODEL, desc="ResNet-18 train step, batch 8, 112x112", layout=layout,
                     pass_=pass_, work=8, unit="img/s", peak=None)


def baseline_of(section, conv_baseline=BASELINE):
    """The candidate a section's ratios are taken against: --baseline for convolutions, else torch."""
    return conv_baseline if section == "conv" else BASELINE


def summarize(rows, baseline=BASELINE):
    """Geometric mean of the ratios per (section, pass, layout, candidate), over the shapes that ran;
    baseline: the conv rows' baseline (left out, as torch is for the other sections)."""
    groups = {}
    for r in rows:
        if r.section not in ("conv", "pool", "gemm") or r.candidate == baseline_of(r.section, baseline):
            continue
        key = (r.section, r.pass_, r.layout, r.candidate)
        groups.setdefault(key, []).append(r.ratio)
    out = []
    for (section, pass_, layout, cand), ratios in groups.items():
        ok = [x for x in ratios if x is not None and x > 0]
        geo = math.exp(sum(math.log(x) for x in ok) / len(ok)) if ok else None
        out.append({"section": section, "pass": pass_, "layout": layout, "candidate": cand, "geomean_ratio": geo,
                    "count": len(ok), "total": len(ratios)})
    return out


def progress(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, file=sys.stderr, unit="row", dynamic_ncols=True, leave=False)


def run_suite(config, conv_shapes=CONV_SHAPES, pool_shapes=POOL_SHAPES, gemm_shapes=GEMM_SHAPES):
    """Runs the configured suite and returns the result document (the --json schema)."""
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False here")
        torch.backends.cuda.matmul.allow_tf32 = False  # measure float32 as float32, not TF32
        torch.backends.cudnn.allow_tf32 = False
    timer = Timer(config.device)
    dtype = DTYPES[config.dtype]
    jobs = plan(config, conv_shapes, pool_shapes, gemm_shapes)
    peak = measure_peak(config.device, dtype, size=config.peak_size, timer=timer) if config.peak_size else {}
    rows = []
    bar = progress(len(jobs), config.progress)
    with torch.no_grad():
        for job in jobs:
            if bar is not None:
                name = job[1].name if job[1] is not None else MODEL
                bar.set_description(f"{job[0]} {name} {job[3]}")
            rows += run_job(job, config, peak, timer)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if config.peak_size:
        # Measured again at the end: the machine is shared, so the best of the two is the peak, and every
        # fraction is taken against that one figure.
        peak = best_peak(peak, measure_peak(config.device, dtype, size=config.peak_size, timer=timer))
        for r in rows:
            ref = peak.get("gbps") if r.unit == "GB/s" else peak.get("gflops") if r.unit == "GFLOP/s" else None
            r.peak_fraction = r.throughput / ref if ref and r.throughput is not None else None
    return {"schema": SCHEMA, "meta": metadata(config), "peak": peak, "rows": [r.as_dict() for r in rows],
            "summary": summarize(rows, config.baseline)}


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------
def _ratio(x):
    return f"{x:.2f}x" if x is not None else "n/a"


def _pct(x):
    return f"{100 * x:.0f}%" if x is not None else ""


def _thr(row):
    t = row.get("throughput")
    if t is None:
        return ""
    return f"{t:.1f} {row['unit']}" if t < 1000 else f"{t:.0f} {row['unit']}"


def _cell_error(row):
    err = row.get("error") or ""
    return "wrong" if err.startswith("wrong") else "n/a"


def format_table(doc, ratios_only=False):
    """The long text table: one line per candidate, grouped by (section, shape, layout, pass)."""
    headers = ["section", "shape", "layout", "pass", "candidate"]
    headers += ["ratio", "peak"] if ratios_only else ["median ms", "throughput", "ratio", "peak"]
    headers.append("note")
    lines, prev = [], None
    for r in doc["rows"]:
        key = (r["section"], r["shape"], r["layout"], r["pass"])
        first = key != prev
        prev = key
        label = [r["section"], r["shape"], r["layout"], r["pass"]] if first else ["", "", "", ""]
        if r["median_s"] is None:
            vals = [_cell_error(r), ""] if ratios_only else ["", "", _cell_error(r), ""]
            note = r.get("error") or ""
        else:
            vals = [_ratio(r["ratio"]), _pct(r["peak_fraction"])]
            if not ratios_only:
                vals = [f"{1e3 * r['median_s']:.3f}", _thr(r)] + vals
            note = r.get("note") or ""
        lines.append(label + [r["candidate"]] + vals + [note])
    return _columns(headers, lines, right={"median ms", "throughput", "ratio", "peak"})


def _columns(headers, lines, right=()):
    widths = [max([len(h)] + [len(str(line[i])) for line in lines]) for i, h in enumerate(headers)]
    widths[-1] = 0  # the last column (notes) is not padded

    def fmt(cells):
        parts = [(str(c).rjust(w) if h in right else str(c).ljust(w)) for c, w, h in zip(cells, widths, headers)]
        return "  ".join(parts).rstrip()
    rule = ["-" * w for w in widths[:-1]] + ["-" * len(headers[-1])]
    return "\n".join([fmt(headers), fmt(rule)] + [fmt(line) for line in lines])


def pivot(doc):
    """{(section, shape, desc, layout, pass): {candidate: row}} in row order, and the candidate order."""
    table, cands = {}, []
    for r in doc["rows"]:
        key = (r["section"], r["shape"], r["desc"], r["layout"], r["pass"])
        table.setdefault(key, {})[r["candidate"]] = r
        if r["candidate"] not in cands:
            cands.append(r["candidate"])
    return table, cands


def format_markdown(doc, ratios_only=True, show_peak=True):
    """A wide Markdown table: one line per (shape, layout, pass); per candidate the ratio to PyTorch's
    default and, after it, the fraction of the measured peak."""
    out = []
    sections = []
    for r in doc["rows"]:
        if r["section"] not in sections:
            sections.append(r["section"])
    table, _ = pivot(doc)
    noted = False
    for section in sections:
        keys = [k for k in table if k[0] == section]
        cands = []
        for k in keys:
            for c in table[k]:
                if c not in cands:
                    cands.append(c)
        base = baseline_of(section, doc["meta"].get("baseline", BASELINE))
        out.append(f"\n**{section}** (ratio to `{base}`, higher is faster"
                   + ("; in brackets the fraction of the measured peak)" if show_peak else ")") + "\n")
        head = ["shape", "layout", "pass"] + cands
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["--:"] * len(cands)) + "|")
        for k in keys:
            cells = []
            for c in cands:
                r = table[k].get(c)
                if r is None:
                    cells.append("")
                elif r["median_s"] is None:
                    cells.append(_cell_error(r))
                else:
                    text = _ratio(r["ratio"])
                    if show_peak and r["peak_fraction"] is not None:
                        text += f" ({_pct(r['peak_fraction'])})"
                    if not ratios_only:
                        text += f" {_thr(r)}"
                    if r.get("note"):
                        text += " †"
                        noted = True
                    cells.append(text)
            shape = f"`{k[1]}` {k[2]}" if k[2] else f"`{k[1]}`"
            out.append("| " + " | ".join([shape, k[3], k[4]] + cells) + " |")
    if noted:
        out.append("\n† fewer samples than --repeat: the kernel was over --budget (the JSON has the samples)")
    return "\n".join(out).lstrip("\n")


def format_summary(doc):
    lines = []
    for s in doc["summary"]:
        geo = _ratio(s["geomean_ratio"])
        lines.append([s["section"], s["pass"], s["layout"], s["candidate"], geo, f"{s['count']}/{s['total']}"])
    return _columns(["geomean", "pass", "layout", "candidate", "ratio", "shapes"], lines + [["", "", "", "", "", ""]],
                    right={"ratio"}).rstrip()


def format_header(doc):
    m, p = doc["meta"], doc["peak"]
    bi = m.get("build_info", {})
    lines = [f"fastconv bench  {m['date']}  commit {m['commit'] or 'unknown'}",
             f"device {m['device']} ({m['device_type']}), {m['threads']} threads, {m['dtype']}, torch {m['torch']}, "
             f"gemm kernel {bi.get('gemm_kernel', '?')}, instruction set {bi.get('cpu_isa', '?')} (FASTCONV_CPU_ISA caps it)"]
    if p.get("gflops"):
        lines.append(f"measured peak (best of start and end): torch.mm {p['gemm_size']}^2 {p['gflops']:.1f} "
                     f"GFLOP/s; copy {p['gbps']:.1f} GB/s (read + write, DRAM-sized)")
    base = m.get("baseline", BASELINE)
    if base == BASELINE:
        lines.append(f"ratio = time of '{BASELINE}' (PyTorch's default path) / time of the candidate; "
                     "peak = throughput / measured peak")
    else:
        lines.append(f"ratio = time of the baseline / time of the candidate, the baseline being '{base}' for "
                     f"convolutions and '{BASELINE}' (PyTorch's default path) for the other sections; "
                     "peak = throughput / measured peak")
    return "\n".join(lines)


def figure(doc):
    """The --plot figure: one panel per section, bars for that section's own candidates (its baseline left
    out) per (shape, layout, pass). The ratio axis is logarithmic, bars drawn from 1x, so 0.02x and 6x are
    both readable and slower reads as far below the line as faster reads above it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    table, _ = pivot(doc)
    conv_baseline = doc["meta"].get("baseline", BASELINE)
    sections = list(dict.fromkeys(k[0] for k in table))
    panels = []
    for section in sections:
        keys = [k for k in table if k[0] == section]
        base = baseline_of(section, conv_baseline)
        cands = [c for c in dict.fromkeys(c for k in keys for c in table[k]) if c != base]
        panels.append((section, base, keys, cands))
    ratios = [r["ratio"] for k in table for r in table[k].values() if r.get("ratio")]
    low, high = min(ratios + [1.0]) / 1.5, max(ratios + [1.0]) * 1.5
    width_in = max(8.0, 0.3 * max((len(keys) * max(1, len(cands)) for _, _, keys, cands in panels), default=1))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 4.5 * len(panels)), squeeze=False)
    for ax, (section, base, keys, cands) in zip(axes[:, 0], panels):
        width = 0.8 / max(1, len(cands))
        for i, c in enumerate(cands):
            xs, ys = [], []
            for j, k in enumerate(keys):
                ratio = (table[k].get(c) or {}).get("ratio")
                if ratio:  # failed, wrong or absent: no bar (a log axis has no zero)
                    xs.append(j + i * width)
                    ys.append(ratio)
            ax.bar(xs, [y - 1.0 for y in ys], width, bottom=1.0, label=c)
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([f"{k[1]} {k[3]} {k[4]}" for k in keys], rotation=75, ha="right", fontsize=7)
        ax.set_ylabel(f"{section}: speed relative to {base}\n(higher is faster)", fontsize=8)
        ax.legend(fontsize=8)
    m = doc["meta"]
    axes[0, 0].set_title(f"fastconv {m['commit'] or ''} on {m['device']}, {m['threads']} threads, {m['dtype']}",
                         fontsize=9)
    fig.tight_layout()
    return fig


def plot(doc, path):
    import matplotlib.pyplot as plt

    fig = figure(doc)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def _csv(choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items
    return parse


def parser():
    p = argparse.ArgumentParser(prog="python -m fastconv bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=_csv(), default=None,
                   help="only shapes whose name contains or matches (fnmatch) one of these, comma-separated")
    p.add_argument("--sections", type=_csv(SECTIONS), default=[x for x in SECTIONS if x != "overhead"],
                   help="conv,pool,gemm,model (the default), overhead (the per-call cost of tiny problems; on request)")
    p.add_argument("--passes", type=_csv(CONV_PASSES + ("backward",)), default=list(CONV_PASSES),
                   help="forward,grad_input,grad_weight,train_step (pooling: forward and backward)")
    p.add_argument("--algorithms", type=_csv(("torch_im2col",) + ALGORITHMS), default=None,
                   help="conv candidates beside 'torch': torch_im2col," + ",".join(ALGORITHMS)
                        + " (default: all but direct_simple)")
    p.add_argument("--baseline", choices=[BASELINE, "torch_im2col", *ALGORITHMS], default=BASELINE,
                   help="the conv candidate the ratios and geometric means are taken against (default torch; "
                        "torch_im2col: fastconv's im2col against PyTorch's own im2col path). Added to the "
                        "candidates when --algorithms leaves it out. Pooling, GEMM and model rows: always torch")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--channels-last", nargs="?", const="only", choices=["only", "both"], default=None,
                   help="channels_last tensors ('only'), or NCHW and channels_last ('both'). Without it: "
                        "convolutions NCHW, pooling both")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per row (default 7; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per candidate (default 1; cuda 3)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time one candidate of one row for at most about this long: fewer samples for slow "
                        "kernels (noted in the table)")
    p.add_argument("--min-sample", dest="min_sample_s", type=float, default=None, metavar="SECONDS",
                   help="repeat calls shorter than this within one sample (default 0.02 on the CPU, 0.001 on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every conv/pool shape")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="a small subset (3 conv, 1 pool, 2 gemm shapes), 3 repeats")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON (schema " + SCHEMA + ")")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the ratios (needs matplotlib: the plot extra)")
    p.add_argument("--format", choices=["text", "markdown"], default="text")
    p.add_argument("--ratios-only", action="store_true", help="leave absolute times and throughputs out")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the torch.mm peak (0: skip)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    return p


def configure(argv):
    config = parser().parse_args(argv)
    config.argv = list(argv)
    cuda = torch.device(config.device).type == "cuda"
    if config.repeat is None:
        config.repeat = 3 if config.quick else 7
    if config.warmup is None:
        config.warmup = 3 if cuda else 1
    if config.min_sample_s is None:
        # Short calls are repeated within one sample: a 1 ms kernel timed alone on a shared 2-core machine
        # is at the mercy of the scheduler (one descheduled OpenMP thread stalls the whole call).
        config.min_sample_s = 1e-3 if cuda else 0.02
    if config.algorithms is None:
        config.algorithms = list(CONV_CANDIDATES[1:])
    config.model_algorithms = [a for a in config.algorithms if a in ALGORITHMS]
    if config.model_algorithms == list(FASTCONV_ALGORITHMS):
        config.model_algorithms = ["auto"]  # the whole model once per algorithm only when asked for
    if config.baseline != BASELINE and config.baseline not in config.algorithms:
        config.algorithms.insert(0, config.baseline)  # conv rows only: the model's baseline is torch
    if config.quick and config.passes == list(CONV_PASSES):
        config.passes = ["forward", "train_step"]
    config.conv_layouts = {None: ["nchw"], "only": ["channels_last"], "both": ["nchw", "channels_last"]}[
        config.channels_last]
    config.pool_layouts = ["nchw", "channels_last"] if config.channels_last in (None, "both") else ["channels_last"]
    return config


def main(argv=None, conv_shapes=CONV_SHAPES, pool_shapes=POOL_SHAPES, gemm_shapes=GEMM_SHAPES):
    argv = list(sys.argv[1:] if argv is None else argv)
    config = configure(argv)
    if config.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'fastconv[plot]' (or pip install matplotlib)",
                  file=sys.stderr)
            return 2
    if config.threads:
        torch.set_num_threads(config.threads)
    doc = run_suite(config, conv_shapes, pool_shapes, gemm_shapes)
    print(format_header(doc))
    print()
    if config.format == "markdown":
        print(format_markdown(doc, ratios_only=config.ratios_only))
    else:
        print(format_table(doc, ratios_only=config.ratios_only))
    if doc["summary"]:
        print()
        print(format_summary(doc))
    if config.json:
        with open(config.json, "w") as f:
            json.dump(doc, f, indent=1)
    if config.plot:
        plot(doc, config.plot)
        print(f"\nplot written to {config.plot}")
    return 0


def info_main(argv=None, conv_shapes=CONV_SHAPES):
    """The default ``python -m fastconv``: the build info and a short side-by-side timing of fastconv's
    algorithms beside torch.nn.functional.conv2d on three standard layers (batch reduced), as ratios."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(info_main.__doc__)
        return 0
    info = build_info()
    print("fastconv build:")
    for k, v in info.items():
        print(f"  {k:14s} {v}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = 8 if device == "cuda" else 2
    argv = ["--device", device, "--sections", "conv", "--passes", "forward", "--batch", str(batch),
            "--repeat", "3", "--peak-size", "0", "--no-progress"]
    if conv_shapes is CONV_SHAPES:
        argv += ["--shapes", ",".join(INFO_CONV)]
    config = configure(argv)
    doc = run_suite(config, conv_shapes=conv_shapes)
    table, cands = pivot(doc)
    print(f"\nconv2d forward on {doc['meta']['device']} ({device}, {doc['meta']['threads']} threads, float32, "
          f"batch {batch}): speed relative to torch.nn.functional.conv2d (higher is faster)")
    head = ["shape"] + [c for c in cands if c != BASELINE]
    lines = []
    for key, row in table.items():
        lines.append([f"{key[1]} {key[2]}"] + [_ratio(row[c]["ratio"]) if row.get(c) and row[c]["median_s"]
                                               else _cell_error(row.get(c) or {}) for c in head[1:]])
    print(_columns(head + [""], [line + [""] for line in lines], right=set(head[1:])))
    print("\nThe full suite: python -m fastconv bench --help")
    return 0
