"""Shared machinery for conv2d tests: random problems, layouts, and one comparison of an implementation
(forward and all three gradients) against the float64 reference and torch.nn.functional.conv2d."""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from fastconv import reference


@dataclass(frozen=True)
class ConvCase:
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple = (1, 1)
    padding: object = (0, 0)  # an int pair or "same" / "valid"
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = True

    def reference_padding(self):
        """(top, bottom, left, right), resolving "same" the way PyTorch does (extra pixel bottom/right)."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            return same_padding((self.R, self.S), self.dilation)
        return (self.padding[0], self.padding[0], self.padding[1], self.padding[1])


def same_padding(kernel_size, dilation):
    """The tests' own resolution of padding="same" (independent of fastconv.ops): (top, bottom, left,
    right), the extra pixel of an even effective kernel at the bottom/right as in PyTorch."""
    pads = []
    for d, k in zip(dilation, kernel_size):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


@st.composite
def conv_cases(draw, max_batch=3, max_channels_per_group=3, max_kernel=4, max_extra=5):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    Cg = draw(st.integers(1, max_channels_per_group))
    Kg = draw(st.integers(1, max_channels_per_group))
    R, S = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["ints", "ints", "same", "valid"]))
    if kind == "same" and stride != (1, 1):
        kind = "ints"
    if kind == "ints":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pad_h, pad_w = padding
    else:
        padding = kind
        pad_h = pad_w = 0
    # The padded input must hold at least one dilated window.
    H = max(1, dilation[0] * (R - 1) + 1 - 2 * pad_h) + draw(st.integers(0, max_extra))
    W = max(1, dilation[1] * (S - 1) + 1 - 2 * pad_w) + draw(st.integers(0, max_extra))
    return ConvCase(N=draw(st.integers(0, max_batch)), C=groups * Cg, H=H, W=W, K=groups * Kg, R=R, S=S,
                    stride=stride, padding=padding, dilation=dilation, groups=groups,
                    bias=draw(st.booleans()))


LAYOUTS = ("contiguous", "channels_last", "strided")


def with_layout(t, layout):
    """The same values in another memory layout: channels_last, or a non-contiguous view with a storage
    offset (every other column of a wider tensor)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype, device=t.device)
        wide.normal_()
        view = wide[..., 1::2]
        view.copy_(t)
        return view
    return t


def make_tensors(case, dtype, device="cpu", generator=None):
    g = generator or torch.Generator().manual_seed(0)
    x = torch.randn(case.N, case.C, case.H, case.W, dtype=torch.float64, generator=g)
    w = torch.randn(case.K, case.C // case.groups, case.R, case.S, dtype=torch.float64, generator=g)
    b = torch.randn(case.K, dtype=torch.float64, generator=g) if case.bias else None
    return [None if t is None else t.to(dtype=dtype, device=device) for t in (x, w, b)]


def tolerance(dtype, reduction):
    """Absolute tolerance for values of unit scale summed over `reduction` products."""
    eps = {torch.float64: 1e-15, torch.float32: 1e-7, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    return 20 * eps * max(1, reduction) ** 0.5 * 4


def run_conv(fn, case, x, w, b, grad_out=None, **kwargs):
    """Forward and, when grad_out is given, the three gradients of fn(x, w, b, ...)."""
    x = x.detach().requires_grad_(grad_out is not None)
    w = w.detach().requires_grad_(grad_out is not None)
    b = None if b is None else b.detach().requires_grad_(grad_out is not None)
    y = fn(x, w, b, case.stride, case.padding, case.dilation, case.groups, **kwargs)
    if grad_out is None:
        return y, None
    inputs = [t for t in (x, w, b) if t is not None]
    return y, torch.autograd.grad(y, inputs, grad_out)


def reference_conv(case, x, w, b, grad_out):
    """float64 numpy reference of the forward and the three gradients."""
    to_np = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    params = dict(stride=case.stride, padding=case.reference_padding(), dilation=case.dilation,
                  groups=case.groups)
    y = reference.conv2d_fprop(to_np(x), to_np(w), None if b is None else to_np(b), **params)
    dy = to_np(grad_out)
    grads = [reference.conv2d_dgrad(dy, to_np(w), tuple(x.shape), **params),
             reference.conv2d_wgrad(dy, to_np(x), tuple(w.shape), **params)]
    if b is not None:
        grads.append(reference.conv2d_bgrad(dy))
    return y, grads


def assert_close(actual, expected, atol, what):
    actual = actual.detach().double().cpu()
    expected = torch.as_tensor(np.asarray(expected)).double() if not torch.is_tensor(expected) else \
        expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{what}: NaN in the result (an element was never written?)"
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:.3g}"


def check_conv(fn, case, dtype=torch.float64, layout="contiguous", device="cpu", **kwargs):
    """fn (torch.nn.functional.conv2d's signature) against the reference and against F.conv2d: forward,
    grad input, grad weight, grad bias; output memory format as F.conv2d's."""
    x, w, b = make_tensors(case, dtype, device)
    x = with_layout(x, layout)
    g = torch.Generator().manual_seed(1)
    y_torch = F.conv2d(x.double().cpu(), w.double().cpu(), None if b is None else b.double().cpu(), case.stride,
                       case.padding, case.dilation, case.groups)
    grad_out = torch.randn(y_torch.shape, dtype=torch.float64, generator=g).to(dtype=dtype, device=device)
    grad_out = with_layout(grad_out, layout)
    y, grads = run_conv(fn, case, x, w, b, grad_out, **kwargs)
    y_ref, grads_ref = reference_conv(case, x, w, b, grad_out)
    atol_fwd = tolerance(dtype, case.C // case.groups * case.R * case.S)
    assert y.dtype == dtype and y.device.type == torch.device(device).type
    assert_close(y, y_ref, atol_fwd, "forward vs reference")
    _, grads_torch = run_conv(F.conv2d, case, x.double().cpu(), w.double().cpu(),
                              None if b is None else b.double().cpu(), grad_out.double().cpu())
    names = ["grad_input", "grad_weight", "grad_bias"]
    P, Q = y_torch.shape[2:]
    reductions = [case.K // case.groups * case.R * case.S, case.N * P * Q, case.N * P * Q]
    for name, got, want, want_torch, red in zip(names, grads, grads_ref, grads_torch, reductions):
        assert got.dtype == dtype
        assert_close(got, want, tolerance(dtype, red), f"{name} vs reference")
        assert_close(got, want_torch, tolerance(dtype, red), f"{name} vs torch")
    assert_close(y, y_torch, atol_fwd, "forward vs torch")
    if layout != "strided":
        expect_cl = y_torch.is_contiguous(memory_format=torch.channels_last) and not y_torch.is_contiguous()
        if expect_cl:
            assert y.is_contiguous(memory_format=torch.channels_last), "output should be channels_last"
    return y
