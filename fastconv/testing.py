"""The numerical and gradient check matrix, as a product: ``python -m fastconv check`` and
``fastconv.testing.check_conv2d(fn)`` / ``check_max_pool2d(fn)``.

Every case compares a callable with torch.nn.functional's signature against the float64 numpy reference
(fastconv.reference), never against PyTorch, so the matrix can judge ``torch.nn.functional.conv2d`` itself:

* forward and every gradient in float64 and float32 (contiguous, channels_last, non-contiguous with a
  storage offset) and in float16 / bfloat16 where the backend takes them (inputs rounded to the dtype, the
  reference computed from the rounded values);
* ``torch.autograd.gradcheck`` and ``gradgradcheck`` in float64;
* batch 0, odd shapes, strides, dilation, groups (depthwise too), "same"/"valid" padding, and the
  reflect / replicate / circular padding modes (fastconv's own ``padding_mode``, applied in its kernels;
  ``torch.nn.functional.pad`` first for a callable without one);
* max_pool2d: values and indices exactly, ties, NaN and -inf, ceil_mode, dilation, padding.

A tolerance is per element: ``k * eps(dtype) * sqrt(n) * m + tiny`` where n is the length of the reduction
and m is the same reduction over absolute values (so a sum with cancellation is not held to its small
result). ``err`` is the largest absolute error, ``err/tol`` the largest ratio (a case passes at <= 1).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import reference
from .shapes import ConvShape, PoolShape

__all__ = ["CaseResult", "CheckResult", "check_conv2d", "check_max_pool2d", "backends", "run_checks", "main"]

JSON_SCHEMA_VERSION = 1

_EPS = {torch.float64: 2.0 ** -52, torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
_DTYPE_NAMES = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
_TOL_FACTOR = 4.0


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    """One case of the matrix. status is "pass", "FAIL" or "skip"; error is the largest absolute error
    (None where a case has no single number, e.g. gradcheck); ratio is error / tolerance (pass at <= 1)."""
    name: str
    passed: bool
    error: float | None = None
    ratio: float | None = None
    message: str = ""
    op: str = ""
    backend: str = ""
    algorithm: str = ""
    check: str = ""
    seconds: float = 0.0
    skipped: bool = False

    @property
    def status(self):
        return "skip" if self.skipped else ("pass" if self.passed else "FAIL")


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.2e}"


@dataclass
class CheckResult:
    """The cases of one run. ``passed`` is True when no case failed (skipped cases do not fail a run);
    ``str()`` is the full per-case table, ``summary()`` one row per (op, backend, algorithm, check)."""
    cases: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self):
        return not any(c.status == "FAIL" for c in self.cases)

    @property
    def failures(self):
        return [c for c in self.cases if c.status == "FAIL"]

    def extend(self, other):
        self.cases += other.cases
        self.notes += other.notes
        return self

    def __bool__(self):
        return self.passed

    def __str__(self):
        rows = [(c.name, c.status, _fmt(c.error), _fmt(c.ratio), c.message) for c in self.cases]
        return _table(("case", "status", "err", "err/tol", "message"), rows) + self._footer()

    def _footer(self):
        counts = {s: sum(c.status == s for c in self.cases) for s in ("pass", "FAIL", "skip")}
        lines = [f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n" + "\n".join(lines)

    def summary(self):
        groups = {}
        for c in self.cases:
            groups.setdefault((c.op, c.backend, c.algorithm, c.check), []).append(c)
        rows = []
        for (op, backend, algorithm, check), cases in groups.items():
            ran = [c for c in cases if not c.skipped]
            failed = [c for c in ran if not c.passed]
            ratios = [c for c in ran if c.ratio is not None]
            worst = max(ratios, key=lambda c: (math.isnan(c.ratio), c.ratio), default=None)
            status = "FAIL" if failed else ("pass" if ran else "skip")
            rows.append((op, backend, algorithm, check, f"{len(ran) - len(failed)}/{len(ran)}", status,
                         _fmt(worst.error if worst else None), _fmt(worst.ratio if worst else None)))
        return _table(("op", "backend", "algorithm", "check", "passed", "status", "worst err", "err/tol"),
                      rows) + self._footer()

    def to_dict(self):
        return {"schema_version": JSON_SCHEMA_VERSION, "passed": self.passed,
                "torch_version": torch.__version__, "notes": list(self.notes),
                "cases": [dict(asdict(c), status=c.status) for c in self.cases]}


def _table(header, rows):
    rows = [tuple(str(v) for v in r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


class _Mismatch(AssertionError):
    def __init__(self, message, error=None, ratio=None):
        super().__init__(message)
        self.error, self.ratio = error, ratio


class _Worst:
    """Keeps the worst (error, ratio) over the comparisons of one case."""

    def __init__(self):
        self.error, self.ratio = 0.0, 0.0

    def update(self, error, ratio):
        self.error = max(self.error, error)
        self.ratio = max(self.ratio, ratio)


@np.errstate(invalid="ignore", over="ignore", divide="ignore")
def _compare(got, want, magnitude, n, dtype, what, worst, exact=False):
    """got (a tensor) against want (float64 numpy) elementwise; raises _Mismatch past the tolerance."""
    if not torch.is_tensor(got):
        raise _Mismatch(f"{what}: expected a tensor, got {type(got).__name__}")
    want = np.asarray(want, dtype=np.float64)
    if tuple(got.shape) != want.shape:
        raise _Mismatch(f"{what}: shape {tuple(got.shape)} != {want.shape}", math.inf, math.inf)
    g = got.detach().to("cpu", torch.float64).numpy()
    if g.size == 0:
        return
    if exact:
        tol = np.zeros_like(want)
    else:
        magnitude = np.asarray(magnitude)
        if dtype in (torch.float16, torch.bfloat16):
            # accumulated in float32 (as PyTorch does), then rounded: one or two roundings of the magnitude
            tol = _TOL_FACTOR * _EPS[torch.float32] * math.sqrt(max(1, n)) * magnitude + _EPS[dtype] * magnitude
        else:
            tol = _TOL_FACTOR * _EPS[dtype] * math.sqrt(max(1, n)) * magnitude
        tol = tol + 1e-300
    same = (g == want) | (np.isnan(g) & np.isnan(want))
    diff = np.where(same, 0.0, np.abs(g - want))
    diff = np.where(np.isnan(diff), np.inf, diff)
    ratio = np.where(diff == 0, 0.0, diff / np.where(tol > 0, tol, np.inf) if not exact else np.inf)
    err, worst_ratio = float(diff.max()), float(ratio.max())
    worst.update(err, worst_ratio)
    if worst_ratio > 1:
        at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise _Mismatch(f"{what}: max abs error {err:.3g} (at {tuple(int(i) for i in at)}: got "
                        f"{g[at]:.6g}, want {want[at]:.6g})", err, worst_ratio)


# ----------------------------------------------------------------------------------------------------
# Layouts and tensors
# ----------------------------------------------------------------------------------------------------
LAYOUTS = ("contiguous", "channels_last", "strided")


def _with_layout(t, layout):
    """The same values in another memory layout: channels_last, or a non-contiguous view with a storage
    offset (every other column of a wider tensor, so vector loads are misaligned too)."""
    if t is None or t.dim() != 4:
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.full((*t.shape[:-1], 2 * t.shape[-1] + 1), float("nan"), dtype=t.dtype, device=t.device)
        view = wide[..., 1::2]
        view.copy_(t)
        return view
    return t


def _np(t):
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def _leaf(t, device, dtype, requires_grad=True):
    return None if t is None else t.to(device=device, dtype=dtype).detach().requires_grad_(requires_grad)


# ----------------------------------------------------------------------------------------------------
# conv2d cases
# ----------------------------------------------------------------------------------------------------
# The cases: small shapes that reach every branch. QUICK: the --quick subset; GRAD_CHECK: small enough for
# gradcheck / gradgradcheck.
CONV_SHAPES = (
    ConvShape("basic", "3x3, padded", 2, 3, 7, 6, 4, 3, 3, pad=(1, 1)),
    ConvShape("odd", "odd sizes, a 3x2 kernel, stride and padding per axis", 3, 5, 11, 9, 7, 3, 2, pad=(1, 0),
              stride=(2, 1)),
    ConvShape("stride", "strides 2 and 3", 2, 4, 9, 8, 5, 3, 3, pad=(1, 2), stride=(2, 3)),
    ConvShape("dilation", "dilation 2 and 3", 2, 3, 9, 10, 2, 3, 3, pad=(2, 1), dilation=(2, 3)),
    ConvShape("groups", "two groups", 2, 6, 6, 7, 4, 3, 3, pad=(1, 1), groups=2),
    ConvShape("depthwise", "one group per channel, a channel multiplier of 2", 2, 4, 6, 6, 8, 3, 3, pad=(1, 1),
              groups=4),
    ConvShape("same", "padding='same' of an even, dilated kernel: asymmetric", 1, 3, 6, 5, 2, 4, 2, pad="same",
              dilation=(1, 2)),
    ConvShape("valid", "padding='valid', no bias", 2, 3, 5, 6, 3, 2, 3, pad="valid", bias=False),
    ConvShape("1x1", "a strided 1x1", 2, 8, 5, 5, 16, 1, 1, stride=(2, 2)),
    ConvShape("full", "the kernel covers the image: a 1x1 output", 2, 3, 3, 4, 3, 3, 4),
    ConvShape("thin", "a one-row image", 1, 2, 1, 13, 3, 1, 3, pad=(0, 1)),
    ConvShape("wide-K", "past GEMM tile edges", 2, 19, 5, 5, 33, 3, 3, pad=(1, 1)),
    ConvShape("batch0", "an empty batch", 0, 3, 5, 5, 4, 3, 3, pad=(1, 1)),
)
CONV_QUICK = {"basic", "odd", "dilation", "same", "batch0"}
CONV_GRAD_CHECK = {"basic", "stride", "dilation", "groups", "same", "thin"}

PAD_MODES = ("reflect", "replicate", "circular")


def _conv_tensors(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.N, shape.C, shape.H, shape.W, dtype=torch.float64, generator=g)
    w = torch.randn(shape.K, shape.C // shape.groups, shape.R, shape.S, dtype=torch.float64, generator=g)
    b = torch.randn(shape.K, dtype=torch.float64, generator=g) if shape.bias else None
    return x, w, b


def _conv_reference(shape, x, w, b, dy, padding_mode="zeros"):
    """float64 forward and gradients, and the same reductions over absolute values (the magnitudes)."""
    stride, pads, dilation = shape.kernel_args()
    params = dict(stride=stride, padding=pads, dilation=dilation, groups=shape.groups, padding_mode=padding_mode)
    x, w, b, dy = _np(x), _np(w), _np(b), _np(dy)
    y = reference.conv2d_fprop(x, w, b, **params)
    y_mag = reference.conv2d_fprop(np.abs(x), np.abs(w), None if b is None else np.abs(b), **params)
    out = {"forward": (y, y_mag)}
    if dy is not None:
        out["grad_input"] = (reference.conv2d_dgrad(dy, w, x.shape, **params),
                             reference.conv2d_dgrad(np.abs(dy), np.abs(w), x.shape, **params))
        out["grad_weight"] = (reference.conv2d_wgrad(dy, x, w.shape, **params),
                              reference.conv2d_wgrad(np.abs(dy), np.abs(x), w.shape, **params))
        if b is not None:
            out["grad_bias"] = (reference.conv2d_bgrad(dy), reference.conv2d_bgrad(np.abs(dy)))
    return out


def _conv_reductions(shape, P, Q):
    red = shape.C // shape.groups * shape.R * shape.S
    return {"forward": red + 1, "grad_input": shape.K // shape.groups * shape.R * shape.S,
            "grad_weight": shape.N * P * Q, "grad_bias": shape.N * P * Q}


def _conv_values_case(fn, shape, dtype, layout, device, worst, seed=0):
    """fn's forward and all gradients against the reference, in one dtype and layout."""
    x64, w64, b64 = _conv_tensors(shape, seed)
    # Values the dtype holds exactly, so the reference sees the very inputs fn sees.
    x64, w64 = x64.to(dtype).double(), w64.to(dtype).double()
    b64 = None if b64 is None else b64.to(dtype).double()
    x = _with_layout(_leaf(x64, device, dtype, False), layout).requires_grad_()
    w = _with_layout(_leaf(w64, device, dtype, False), "channels_last" if layout == "channels_last" else
                     layout).requires_grad_()
    b = _leaf(b64, device, dtype)
    y = fn(x, w, b, *shape.args())
    if not torch.is_tensor(y):
        raise _Mismatch(f"forward: expected a tensor, got {type(y).__name__}")
    if y.dtype != dtype or y.device.type != torch.device(device).type:
        raise _Mismatch(f"forward: dtype/device {y.dtype}/{y.device}, expected {dtype}/{device}")
    P, Q = (y.shape[2], y.shape[3]) if y.dim() == 4 else (0, 0)
    dy64 = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    dy64 = dy64.to(dtype).double()
    ref = _conv_reference(shape, x64, w64, b64, dy64)
    n = _conv_reductions(shape, P, Q)
    _compare(y, *ref["forward"], n["forward"], dtype, "forward", worst)
    if layout == "channels_last" and shape.N > 1 and y.numel() and not y.is_contiguous(
            memory_format=torch.channels_last):
        raise _Mismatch("forward: a channels_last input should give a channels_last output (as PyTorch's)")
    dy = _with_layout(dy64.to(device=device, dtype=dtype), layout)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, dy, allow_unused=True)
    for name, g, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, inputs):
        if g is None:
            g = torch.zeros_like(t)  # an input that did not take part: its gradient is zero
        if g.dtype != dtype:
            raise _Mismatch(f"{name}: dtype {g.dtype}, expected {dtype}")
        _compare(g, *ref[name], n[name], dtype, name, worst)


def _conv_pad_mode_case(fn, shape, mode, dtype, device, worst, native):
    """padding_mode=mode against the reference's (numpy.pad's reflect/edge/wrap), forward and gradients.
    native: fn takes padding_mode itself (fastconv applies it inside its kernels); otherwise the case pads
    with F.pad and calls fn with padding 0, as torch.nn.Conv2d does."""
    x64, w64, b64 = _conv_tensors(shape, 3)
    x64, w64 = x64.to(dtype).double(), w64.to(dtype).double()
    b64 = None if b64 is None else b64.to(dtype).double()
    top, bottom, left, right = shape.pads()
    x, w, b = _leaf(x64, device, dtype), _leaf(w64, device, dtype), _leaf(b64, device, dtype)
    if native:
        y = fn(x, w, b, *shape.args(), padding_mode=mode)
    else:
        y = fn(F.pad(x, (left, right, top, bottom), mode=mode), w, b, shape.stride, 0, shape.dilation, shape.groups)
    dy64 = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(dtype).double()
    ref = _conv_reference(shape, x64, w64, b64, dy64, padding_mode=mode)
    n = _conv_reductions(shape, y.shape[2], y.shape[3])
    _compare(y, *ref["forward"], n["forward"], dtype, "forward", worst)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, dy64.to(device=device, dtype=dtype))
    for name, g in zip(("grad_input", "grad_weight", "grad_bias"), grads):
        # A padded pixel's gradient lands on the pixel it copies: up to 4x the terms of zero padding.
        _compare(g, *ref[name], n["grad_input"] * 4 if name == "grad_input" else n[name], dtype, name, worst)


def _conv_gradcheck_case(fn, shape, device, second_order):
    x, w, b = _conv_tensors(shape, 5)
    inputs = [_leaf(t, device, torch.float64) for t in (x, w, b) if t is not None]

    def f(*args):
        return fn(args[0], args[1], args[2] if len(args) > 2 else None, *shape.args())

    check = torch.autograd.gradgradcheck if second_order else torch.autograd.gradcheck
    check(f, tuple(inputs), fast_mode=True, raise_exception=True)


# ----------------------------------------------------------------------------------------------------
# max_pool2d cases
# ----------------------------------------------------------------------------------------------------
POOL_SHAPES = (
    PoolShape("k2s2", "2x2, stride 2", 2, 3, 8, 8, (2, 2)),
    PoolShape("k3s2p1", "3x3, stride 2, padded", 2, 4, 9, 10, (3, 3), (2, 2), (1, 1)),
    PoolShape("overlap", "overlapping 3x2 windows", 2, 3, 7, 6, (3, 2), (1, 1), (1, 1)),
    PoolShape("dilation", "dilated windows", 2, 3, 9, 9, (3, 3), (1, 2), (1, 1), (2, 2)),
    PoolShape("ceil", "ceil_mode", 2, 3, 8, 7, (3, 3), (2, 2), ceil_mode=True),
    PoolShape("ceil-pad", "ceil_mode with padding", 1, 2, 6, 6, (2, 2), (3, 3), (1, 1), ceil_mode=True),
    PoolShape("ties", "windows with equal values: the first maximum wins", 2, 3, 8, 8, (3, 3), (2, 2), (1, 1)),
    PoolShape("nan-inf", "NaN and infinities", 2, 3, 8, 8, (3, 3), (2, 2), (1, 1)),
    PoolShape("channels", "channels_last: a block of channels and a tail", 2, 19, 6, 5, (2, 3), (2, 1), (1, 1)),
    PoolShape("batch0", "an empty batch", 0, 3, 6, 6, (2, 2)),
)
POOL_QUICK = {"k2s2", "k3s2p1", "ceil", "ties", "nan-inf", "batch0"}
POOL_GRAD_CHECK = {"k3s2p1", "overlap", "dilation"}
# The input values of a case, by name (default "random"): "distinct" has no ties anywhere, so the max is
# differentiable (gradcheck); "ties" small integers; "nan_inf" NaN, -inf and +inf among random values.
POOL_VALUES = {"k3s2p1": "distinct", "overlap": "distinct", "dilation": "distinct", "ties": "ties",
               "nan-inf": "nan_inf"}


def _pool_input(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = (shape.N, shape.C, shape.H, shape.W)
    values = POOL_VALUES.get(shape.name, "random")
    if values == "ties":
        return torch.randint(-2, 3, size, generator=g).double()
    if values == "distinct":
        return (torch.randperm(max(1, math.prod(size)), generator=g)[:math.prod(size)].double() / 7).view(size)
    x = torch.randn(size, dtype=torch.float64, generator=g)
    if values == "nan_inf":
        r = torch.rand(size, generator=g)
        x[r < 0.08] = float("nan")
        x[(r >= 0.08) & (r < 0.2)] = -float("inf")
        x[(r >= 0.2) & (r < 0.25)] = float("inf")
    return x


def _pool_values_case(fn, shape, dtype, layout, device, worst):
    x64 = _pool_input(shape).to(dtype).double()
    x = _with_layout(_leaf(x64, device, dtype, False), layout).requires_grad_()
    kernel, stride, padding, dilation, ceil_mode = shape.args()
    out = fn(x, kernel, stride, padding, dilation, ceil_mode, True)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise _Mismatch("return_indices=True should return (output, indices)")
    y, idx = out
    if y.dtype != dtype or idx.dtype != torch.int64:
        raise _Mismatch(f"dtypes {y.dtype}/{idx.dtype}, expected {dtype}/torch.int64")
    y_ref, idx_ref = reference.max_pool2d_fprop(_np(x64), kernel, stride, padding, dilation, ceil_mode)
    _compare(y, y_ref, None, 1, dtype, "forward", worst, exact=True)
    if tuple(idx.shape) != idx_ref.shape or not np.array_equal(idx.cpu().numpy(), idx_ref):
        if tuple(idx.shape) == idx_ref.shape:
            bad = np.argwhere(idx.cpu().numpy() != idx_ref)[0]
            raise _Mismatch(f"indices differ at {tuple(int(i) for i in bad)}: got {int(idx[tuple(bad)])}, "
                            f"want {int(idx_ref[tuple(bad)])}", math.inf, math.inf)
        raise _Mismatch(f"indices: shape {tuple(idx.shape)} != {idx_ref.shape}", math.inf, math.inf)
    if layout == "channels_last" and shape.N > 1 and not y.is_contiguous(memory_format=torch.channels_last):
        raise _Mismatch("a channels_last input should give a channels_last output (as PyTorch's)")
    y_plain = fn(x, kernel, stride, padding, dilation, ceil_mode)
    _compare(y_plain, y_ref, None, 1, dtype, "forward (return_indices=False)", worst, exact=True)
    dy64 = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype).double()
    (gx,) = torch.autograd.grad(y, x, _with_layout(dy64.to(device=device, dtype=dtype), layout))
    ok = (idx_ref >= 0) & (idx_ref < shape.H * shape.W)  # windows wholly in the padding route nowhere
    gx_ref = reference.max_pool2d_bprop(np.where(ok, _np(dy64), 0.0), np.where(ok, idx_ref, 0),
                                        x64.shape)
    gx_mag = reference.max_pool2d_bprop(np.where(ok, np.abs(_np(dy64)), 0.0), np.where(ok, idx_ref, 0), x64.shape)
    if gx.dtype != dtype:
        raise _Mismatch(f"grad_input: dtype {gx.dtype}, expected {dtype}")
    n = math.ceil(kernel[0] / stride[0]) * math.ceil(kernel[1] / stride[1])
    _compare(gx, gx_ref, gx_mag, n, dtype, "grad_input", worst)
    # Without the indices an implementation may keep the argmax its own way (fastconv: one-byte taps).
    (gx_plain,) = torch.autograd.grad(y_plain, x, _with_layout(dy64.to(device=device, dtype=dtype), layout))
    _compare(gx_plain, gx_ref, gx_mag, n, dtype, "grad_input (return_indices=False)", worst)


def _pool_gradcheck_case(fn, shape, device, second_order):
    x = _leaf(_pool_input(shape, 7), device, torch.float64)
    def f(t):
        return fn(t, *shape.args())

    check = torch.autograd.gradgradcheck if second_order else torch.autograd.gradcheck
    # Steps well below the gaps between the distinct values keep every argmax fixed.
    check(f, (x,), eps=1e-4, fast_mode=True, raise_exception=True)


# ----------------------------------------------------------------------------------------------------
# Running the matrix on one callable
# ----------------------------------------------------------------------------------------------------
_UNSUPPORTED = re.compile(r"no kernel|not implemented for|not supported|NotImplemented|could not run", re.I)


def _run_case(result, name, body, **meta):
    start = time.perf_counter()
    worst = _Worst()
    try:
        body(worst)
        case = CaseResult(name, True, worst.error, worst.ratio, "", **meta)
    except _Mismatch as e:
        case = CaseResult(name, False, e.error if e.error is not None else worst.error,
                          e.ratio if e.ratio is not None else worst.ratio, str(e), **meta)
    except Exception as e:  # noqa: BLE001  (any exception of the callable is a failed case)
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        case = CaseResult(name, False, None, None, message[:300], **meta)
    if meta.get("check") in ("gradcheck", "gradgradcheck"):
        case.error = case.ratio = None
    case.seconds = time.perf_counter() - start
    result.cases.append(case)
    return case


def _dtypes_checks(dtypes):
    checks = []
    for dtype in dtypes:
        layouts = LAYOUTS if dtype in (torch.float32,) else ("contiguous",)
        checks += [(dtype, layout) for layout in layouts]
    return checks


def check_conv2d(fn, *, device="cpu", dtypes=(torch.float64, torch.float32, torch.bfloat16, torch.float16),
                 quick=False, gradgrad=True, pad_modes=True, native_padding_mode=False, backend=None, algorithm="-",
                 shapes=None):
    """Runs the conv2d matrix on ``fn`` (torch.nn.functional.conv2d's signature) and returns a
    :class:`CheckResult`. ``fastconv.testing.check_conv2d(torch.nn.functional.conv2d).passed`` is True.
    native_padding_mode: fn also takes a ``padding_mode`` keyword (as fastconv.conv2d does) and the
    reflect/replicate/circular cases use it; otherwise they pad with F.pad first. shapes: the cases, of
    fastconv.shapes.ConvShape (default CONV_SHAPES)."""
    result = CheckResult()
    backend = backend or str(device)
    shapes = [s for s in (shapes or CONV_SHAPES) if s.name in CONV_QUICK or not quick]
    if quick:
        dtypes = [d for d in dtypes if d in (torch.float64, torch.float32, torch.bfloat16)]
    meta = dict(op="conv2d", backend=backend, algorithm=algorithm)
    prefix = f"conv2d[{backend}{'' if algorithm == '-' else '/' + algorithm}]"
    for dtype, layout in _dtypes_checks(dtypes):
        if quick and dtype == torch.float32 and layout == "strided":
            continue
        check = _DTYPE_NAMES[dtype] + ("" if layout == "contiguous" else " " + layout)
        for shape in shapes:
            _run_case(result, f"{prefix} {check} {shape}",
                      lambda worst, s=shape, d=dtype, lay=layout: _conv_values_case(fn, s, d, lay, device, worst),
                      check=check, **meta)
    if pad_modes and not quick:
        pad_shapes = [s for s in shapes if s.pads() != (0, 0, 0, 0) and s.N > 0 and s.groups == 1][:3]
        pad_dtypes = [d for d in (torch.float64, torch.float32) if d in dtypes]
        for mode, dtype, shape in ((m, d, s) for m in PAD_MODES for d in pad_dtypes for s in pad_shapes):
            _run_case(result, f"{prefix} {_DTYPE_NAMES[dtype]} pad={mode} {shape}",
                      lambda worst, s=shape, m=mode, d=dtype: _conv_pad_mode_case(fn, s, m, d, device, worst,
                                                                                  native_padding_mode),
                      check=f"padding_mode {mode}", **meta)
    orders = (False, True) if gradgrad else (False,)
    for second in orders:
        check = "gradgradcheck" if second else "gradcheck"
        for shape in shapes:
            if shape.name not in CONV_GRAD_CHECK or (quick and second):
                continue
            _run_case(result, f"{prefix} {check} f64 {shape}",
                      lambda worst, s=shape, o=second: _conv_gradcheck_case(fn, s, device, o), check=check, **meta)
    return result


def check_max_pool2d(fn, *, device="cpu", dtypes=(torch.float64, torch.float32, torch.bfloat16, torch.float16),
                     quick=False, gradgrad=True, backend=None, shapes=None):
    """Runs the max_pool2d matrix on ``fn`` (torch.nn.functional.max_pool2d's signature, return_indices
    included) and returns a :class:`CheckResult`. shapes: the cases, of fastconv.shapes.PoolShape (default
    POOL_SHAPES)."""
    result = CheckResult()
    backend = backend or str(device)
    shapes = [s for s in (shapes or POOL_SHAPES) if s.name in POOL_QUICK or not quick]
    if quick:
        dtypes = [d for d in dtypes if d in (torch.float64, torch.float32, torch.bfloat16)]
    meta = dict(op="max_pool2d", backend=backend, algorithm="-")
    prefix = f"max_pool2d[{backend}]"
    for dtype, layout in _dtypes_checks(dtypes):
        check = _DTYPE_NAMES[dtype] + ("" if layout == "contiguous" else " " + layout)
        for shape in shapes:
            _run_case(result, f"{prefix} {check} {shape}",
                      lambda worst, s=shape, d=dtype, lay=layout: _pool_values_case(fn, s, d, lay, device, worst),
                      check=check, **meta)
    for second in ((False, True) if gradgrad else (False,)):
        check = "gradgradcheck" if second else "gradcheck"
        for shape in shapes:
            if shape.name in POOL_GRAD_CHECK and not (quick and second):
                _run_case(result, f"{prefix} {check} f64 {shape}",
                          lambda worst, s=shape, o=second: _pool_gradcheck_case(fn, s, device, o), check=check,
                          **meta)
    return result


# ----------------------------------------------------------------------------------------------------
# Backends: CPU, CUDA, the emulator
# ----------------------------------------------------------------------------------------------------
def _fastconv_fns(backend):
    import fastconv

    if backend == "emulated":
        return fastconv.emulation.conv2d, fastconv.emulation.max_pool2d, "cpu"
    return fastconv.conv2d, fastconv.max_pool2d, backend


def backends():
    """The backends this machine can run: cpu always, cuda with a GPU, emulated when its kernels exist."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
    names.append("emulated")
    return names


def _probe(call):
    """None when the call works, else why not (a missing kernel or dtype); other errors are not hidden
    here: the matrix then runs and reports them case by case."""
    try:
        call()
        return None
    except (RuntimeError, NotImplementedError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return text[:110] if _UNSUPPORTED.search(str(e)) or isinstance(e, NotImplementedError) else None


def _skip(result, name, note, **meta):
    result.cases.append(CaseResult(name, True, message=note, skipped=True, **meta))
    result.notes.append(f"{name}: skipped ({note})")


def run_checks(backend_names=None, algorithms=None, quick=False, ops=("conv2d", "max_pool2d"), log=None):
    """The whole matrix: every backend x algorithm (conv2d) and every backend (max_pool2d)."""
    import fastconv

    result = CheckResult()
    for backend in backend_names or backends():
        if backend == "cuda" and not torch.cuda.is_available():
            _skip(result, "cuda", "torch.cuda.is_available() is False", op="*", backend="cuda", check="-")
            continue
        conv, pool, device = _fastconv_fns(backend)
        all_dtypes = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
        if "conv2d" in ops:
            for algorithm in algorithms or fastconv.ALGORITHMS:
                meta = dict(op="conv2d", backend=backend, algorithm=algorithm, check="-")
                fn = (lambda a: lambda *args, **kw: conv(*args, algorithm=a, **kw))(algorithm)
                tiny = lambda d: fn(torch.ones(1, 1, 3, 3, device=device, dtype=d),  # noqa: E731
                                    torch.ones(1, 1, 2, 2, device=device, dtype=d), None, 1, 0, 1, 1)
                why = _probe(lambda: tiny(torch.float32))
                if why:
                    _skip(result, f"conv2d[{backend}/{algorithm}]", why, **meta)
                    continue
                dtypes = [d for d in all_dtypes if d == torch.float32 or _probe(lambda d=d: tiny(d)) is None]
                for d in set(all_dtypes) - set(dtypes):
                    result.notes.append(f"conv2d[{backend}/{algorithm}]: {d} not supported, not checked")
                t0 = time.perf_counter()
                part = check_conv2d(fn, device=device, dtypes=dtypes, quick=quick, backend=backend,
                                    algorithm=algorithm, native_padding_mode=True)
                result.extend(part)
                if log:
                    log(f"conv2d[{backend}/{algorithm}]: {len(part.cases)} cases, {len(part.failures)} failed, "
                        f"{time.perf_counter() - t0:.1f} s")
        if "max_pool2d" in ops:
            meta = dict(op="max_pool2d", backend=backend, algorithm="-", check="-")
            tiny = lambda d: pool(torch.ones(1, 1, 2, 2, device=device, dtype=d), 2)  # noqa: E731
            why = _probe(lambda: tiny(torch.float32))
            if why:
                _skip(result, f"max_pool2d[{backend}]", why, **meta)
                continue
            dtypes = [d for d in all_dtypes if d == torch.float32 or _probe(lambda d=d: tiny(d)) is None]
            for d in set(all_dtypes) - set(dtypes):
                result.notes.append(f"max_pool2d[{backend}]: {d} not supported, not checked")
            t0 = time.perf_counter()
            part = check_max_pool2d(pool, device=device, dtypes=dtypes, quick=quick, backend=backend)
            result.extend(part)
            if log:
                log(f"max_pool2d[{backend}]: {len(part.cases)} cases, {len(part.failures)} failed, "
                    f"{time.perf_counter() - t0:.1f} s")
    return result


def main(argv=None):
    """python -m fastconv check [--backend B ...] [--algorithm A ...] [--quick] [--json FILE] [--verbose]
    Exit status 0 when every case passed, 1 when any failed."""
    import fastconv

    parser = argparse.ArgumentParser(prog="python -m fastconv check", description=main.__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=("cpu", "cuda", "emulated"),
                        help="a backend to check (repeatable); default: every available one")
    parser.add_argument("--algorithm", action="append", choices=fastconv.ALGORITHMS,
                        help="a conv2d algorithm to check (repeatable); default: all")
    parser.add_argument("--op", action="append", choices=("conv2d", "max_pool2d"), help="an op (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and dtypes (under 20 s on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write every case as JSON to FILE")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every case, not the summary")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    result = run_checks(args.backend, args.algorithm, args.quick, tuple(args.op or ("conv2d", "max_pool2d")),
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    print(str(result) if args.verbose else result.summary())
    for case in result.failures[:50]:
        print(f"FAIL {case.name}: {case.message}")
    print(f"{'PASSED' if result.passed else 'FAILED'} in {time.perf_counter() - t0:.1f} s "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    if args.json:
        data = result.to_dict()
        data["seconds"] = time.perf_counter() - t0
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=str)
    return 0 if result.passed else 1
