"""The max_pool2d CUDA kernels (csrc/cuda/max_pool2d.cuh), run two ways:

* "emulated": the kernel source compiled by g++ and run by the SIMT emulator on CPU tensors, through
  fastconv.emulation.max_pool2d / torch.ops.fastconv_emulated: runs everywhere;
* "cuda": the same source compiled by nvcc on a real GPU, through fastconv.max_pool2d on CUDA tensors
  (marked needs_cuda: skipped without a GPU), compared with the CPU too.

The taps pair (_max_pool2d_fprop_taps/_bprop_taps: the argmax as its one-byte place in the window) is
tested here for every backend at once: emulated, CUDA, and fastconv's own CPU kernels ("cpu").

The oracles are torch.nn.functional.max_pool2d (values AND indices must be identical) and the float64
reference in fastconv/reference.py. The emulator runs every GPU thread as a fiber, so shapes stay small.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

import fastconv
import fastconv.emulation
from fastconv.reference import max_pool2d_bprop, max_pool2d_fprop

from pool_cases import INF, NAN, PLANE_CASES, ROW_CASES, all_padding_mask, row_id, tap_positions


class Backend:
    def __init__(self, name, device, pool, ops):
        self.name, self.device, self.pool, self.ops = name, device, pool, ops

    def __repr__(self):
        return self.name


EMULATED = Backend("emulated", "cpu", fastconv.emulation.max_pool2d, torch.ops.fastconv_emulated)
CUDA = Backend("cuda", "cuda", fastconv.max_pool2d, torch.ops.fastconv)
BACKENDS = [pytest.param(EMULATED, id="emulated"), pytest.param(CUDA, id="cuda", marks=pytest.mark.needs_cuda)]
# The taps pair's tests also run fastconv's own CPU kernels (csrc/cpu/max_pool2d.cpp), with the same cases.
NATIVE_CPU = Backend("cpu", "cpu", fastconv.max_pool2d, torch.ops.fastconv)
TAPS_BACKENDS = [pytest.param(NATIVE_CPU, id="cpu"), *BACKENDS]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HYPOTHESIS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def has_native_cpu_pool():
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastconv::max_pool2d_fprop", "CPU")


# ------------------------------------------------------------------------------------------------ problems
@st.composite
def pool_problems(draw, max_batch=2):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    H = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 4))
    W = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 4))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "noncontiguous", "unbatched"]))
    batch = 1 if layout == "unbatched" else draw(st.integers(0, max_batch))
    shape = (batch, draw(st.integers(1, 3)), H, W)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["normal", "ties", "nan"]))
    if values == "normal":
        x = rng.standard_normal(shape)
    elif values == "ties":
        x = rng.integers(1, 4, shape).astype(np.float64)
    else:  # few distinct values, several NaNs and -infs per window
        x = rng.integers(1, 4, shape).astype(np.float64)
        x[rng.random(shape) < 0.2] = NAN
        x[rng.random(shape) < 0.1] = -INF
    return dict(x=x, layout=layout, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                ceil_mode=ceil_mode, dy_seed=int(rng.integers(2**32)))


def make_input(x, layout, device, dtype=torch.float32):
    """The array as a tensor in the problem's layout (same values, different strides)."""
    t = torch.tensor(x, dtype=dtype, device=device)
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":
        # Every other column of a twice-as-wide tensor, with N and C swapped in memory.
        wide = torch.full((t.shape[1], t.shape[0], t.shape[2], 2 * t.shape[3]), 7.0, dtype=dtype, device=device)
        wide[..., ::2] = t.transpose(0, 1)
        view = wide.transpose(0, 1)[..., ::2]
        assert_identical(view, t)
        return view
    if layout == "unbatched":
        return t[0]
    return t


def geometry(p):
    return dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], ceil_mode=p["ceil_mode"])


def assert_identical(actual, expected):
    """Bitwise-equal values (NaN == NaN) and equal dtype, shape."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True)


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, **HYPOTHESIS)
@given(p=pool_problems())
def test_fprop_matches_torch_and_reference(backend, p):
    x = make_input(p["x"], p["layout"], backend.device)
    y, idx = backend.pool(x, p["kernel"], return_indices=True, **geometry(p))
    x_cpu = make_input(p["x"], p["layout"], "cpu")
    y_t, idx_t = F.max_pool2d(x_cpu, p["kernel"], return_indices=True, **geometry(p))
    assert y.device.type == backend.device
    assert_identical(y, y_t)
    assert_identical(idx, idx_t)
    # Same layout as PyTorch's output.
    if y.dim() == 4:
        cl = torch.channels_last
        assert y.is_contiguous(memory_format=cl) == y_t.is_contiguous(memory_format=cl)
        assert idx.is_contiguous(memory_format=cl) == y.is_contiguous(memory_format=cl)
    x4 = x_cpu.double().numpy()  # the float32 values, in float64
    x4 = x4[None] if p["layout"] == "unbatched" else x4
    y_ref, idx_ref = max_pool2d_fprop(x4, p["kernel"], **geometry(p))
    if p["layout"] == "unbatched":
        y_ref, idx_ref = y_ref[0], idx_ref[0]
    np.testing.assert_array_equal(y.cpu().double().numpy(), y_ref)
    np.testing.assert_array_equal(idx.cpu().numpy(), idx_ref)
    if backend is CUDA:  # the GPU against PyTorch's own CUDA kernel too
        y_c, idx_c = F.max_pool2d(x, p["kernel"], return_indices=True, **geometry(p))
        assert_identical(y, y_c)
        assert_identical(idx, idx_c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row, value, index", ROW_CASES, ids=[row_id(c) for c in ROW_CASES])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_and_tie_rules(backend, row, value, index, dtype):
    for layout in ("contiguous", "channels_last"):
        # Two channels with the same row, so channels_last really interleaves them.
        x = make_input(np.array([[[row], [row]]], dtype=np.float64), layout, backend.device, dtype)
        y, idx = backend.pool(x, (1, len(row)), return_indices=True)
        expected = torch.tensor(value, dtype=dtype)
        assert torch.equal(idx.cpu(), torch.full((1, 2, 1, 1), index))
        assert_identical(y.cpu(), expected.expand(1, 2, 1, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", PLANE_CASES, ids=lambda c: c.name)
def test_nan_scan_order_overlap_and_padding(backend, case):
    for layout in ("contiguous", "channels_last"):
        # Two channels with the same plane, so channels_last really interleaves them.
        x = make_input(np.array([[case.plane, case.plane]], dtype=np.float64), layout, backend.device)
        y, idx = backend.pool(x, *case.args, return_indices=True)
        assert idx.cpu().tolist() == [[case.indices] * 2]
        assert_identical(y.cpu(), torch.tensor([[case.values] * 2], dtype=y.dtype))
        assert_identical(y, F.max_pool2d(x.cpu(), *case.args))


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_padding_window(backend):
    # Kernel 2, dilation 4, padding 1: in a 3-wide plane both taps (-1 and 3) are outside. PyTorch gives -inf
    # and an index past the row (aliasing the next row's pixel, or past the plane on the last row); the
    # forward copies that, and the backward sends that window's gradient nowhere (no out-of-bounds access).
    # In the last case the made-up index p * 3 + 3 of window (p, 0) names pixel (p + 1, 0), which lies
    # inside that window's span (between its taps): only the tap check keeps the gradient from going there.
    for shape, kernel, padding, dilation in [((3, 3), 2, 1, 4), ((3, 3), (1, 2), (0, 1), (1, 4)),
                                             ((3, 3), (2, 2), (0, 1), (1, 4))]:
        x = torch.randn(1, 2, *shape, dtype=torch.float64)
        y_t, idx_t = F.max_pool2d(x, kernel, 1, padding, dilation, return_indices=True)
        xd = x.to(backend.device).requires_grad_()
        y, idx = backend.pool(xd, kernel, 1, padding, dilation, return_indices=True)
        assert_identical(y, y_t)
        assert_identical(idx, idx_t)
        assert torch.isneginf(y).all()
        dy = torch.randn_like(y)
        (dx,) = torch.autograd.grad(y, xd, dy)
        assert torch.equal(dx.cpu(), torch.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
def test_dtypes_forward_and_backward(backend, dtype, layout):
    g = torch.Generator().manual_seed(0)
    x64 = torch.randint(-20, 20, (2, 3, 7, 6), generator=g).double() / 4  # exact in every dtype, with ties
    x64[0, 0, 1, 1] = NAN
    x = make_input(x64.numpy(), layout, backend.device, dtype).requires_grad_()
    y, idx = backend.pool(x, 3, 2, 1, return_indices=True)
    x_t = make_input(x64.numpy(), layout, "cpu", dtype).requires_grad_()
    y_t, idx_t = F.max_pool2d(x_t, 3, 2, 1, return_indices=True)
    assert_identical(y, y_t)
    assert_identical(idx, idx_t)
    dy = (torch.randint(-8, 8, y.shape, generator=g).double() / 8).to(dtype)  # sums exact in every dtype
    (dx,) = torch.autograd.grad(y, x, dy.to(backend.device))
    (dx_t,) = torch.autograd.grad(y_t, x_t, dy)
    assert dx.dtype == dtype
    assert_identical(dx, dx_t)


# ------------------------------------------------------------------------------------------------ backward
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=120, **HYPOTHESIS)
@given(p=pool_problems())
def test_bprop_matches_torch_and_reference(backend, p):
    x4 = p["x"][:1] if p["layout"] == "unbatched" else p["x"]
    _, idx_ref = max_pool2d_fprop(x4, p["kernel"], **geometry(p))
    P, Q = idx_ref.shape[2:]
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    # A window wholly in the padding has no input taps: its gradient goes nowhere (PyTorch's CPU backward
    # would write it out of bounds, so torch is the oracle only without such windows).
    dead = all_padding_mask(x4.shape, P, Q, p["kernel"], stride, p["padding"], p["dilation"])
    dy = np.random.default_rng(p["dy_seed"]).standard_normal(idx_ref.shape)
    dx_ref = max_pool2d_bprop(np.where(dead, 0.0, dy), np.where(dead, 0, idx_ref), x4.shape)
    if p["layout"] == "unbatched":
        dy, dx_ref = dy[0], dx_ref[0]

    x = make_input(p["x"], p["layout"], backend.device, torch.float64).requires_grad_()
    y = backend.pool(x, p["kernel"], **geometry(p))
    (dx,) = torch.autograd.grad(y, x, torch.tensor(dy, device=backend.device))
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx.detach().cpu().numpy(), dx_ref, rtol=1e-12, atol=1e-12)
    if dead.any():
        return
    x_t = make_input(p["x"], p["layout"], "cpu", torch.float64).requires_grad_()
    (dx_t,) = torch.autograd.grad(F.max_pool2d(x_t, p["kernel"], **geometry(p)), x_t, torch.tensor(dy))
    torch.testing.assert_close(dx.cpu(), dx_t, rtol=1e-12, atol=1e-12)
    if dx.dim() == 4 and dx.numel() > 0:  # grad_input in the input's layout, as PyTorch's
        cl = torch.channels_last
        assert dx.is_contiguous(memory_format=cl) == dx_t.is_contiguous(memory_format=cl)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck_float64(backend, layout):
    # Distinct values (no ties, no NaN), so the max is differentiable; overlapping windows, padding, ceil_mode.
    g = torch.Generator().manual_seed(1)
    x = torch.randperm(2 * 2 * 6 * 5, generator=g).double().view(2, 2, 6, 5) / 7
    x = make_input(x.numpy(), layout, backend.device, torch.float64).requires_grad_()

    def f(t):
        return backend.pool(t, (3, 2), (2, 1), (1, 1), (1, 2), ceil_mode=True)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_is_deterministic_and_sums_overlaps(backend, layout):
    # Stride 1, kernel 3 on ties: many windows pick the same pixel and their gradients must all be summed,
    # the same way every run (a gather in a fixed order, no atomics).
    g = torch.Generator().manual_seed(2)
    x = make_input(torch.randint(0, 3, (2, 5, 9, 8), generator=g).float().numpy(), layout, backend.device)
    x.requires_grad_()
    y = backend.pool(x, 3, 1, 1)
    dy = torch.randn(y.shape, generator=g).to(backend.device)
    grads = [torch.autograd.grad(backend.pool(x, 3, 1, 1), x, dy)[0] for _ in range(3)]
    for other in grads[1:]:
        assert torch.equal(grads[0], other)
    x_t = x.detach().cpu().requires_grad_()
    (dx_t,) = torch.autograd.grad(F.max_pool2d(x_t, 3, 1, 1), x_t, dy.cpu())
    torch.testing.assert_close(grads[0].cpu(), dx_t)
    # An expanded (stride-0) grad_output, as y.sum().backward() gives.
    x.grad = None
    backend.pool(x, 3, 1, 1).sum().backward()
    x_t.grad = None
    F.max_pool2d(x_t, 3, 1, 1).sum().backward()
    assert torch.equal(x.grad.cpu(), x_t.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    for layout in ("contiguous", "channels_last"):
        x = make_input(np.zeros((0, 3, 5, 5)), layout, backend.device).requires_grad_()
        y, idx = backend.pool(x, 2, return_indices=True)
        assert y.shape == idx.shape == (0, 3, 2, 2)
        y.sum().backward()
        assert x.grad.shape == x.shape


# ------------------------------------------------------------------------------------------------ op checks
def opcheck_samples(device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 6, generator=g).to(device)
    # opcheck runs each op a dozen times (schema, fake, autograd registration, AOT dispatch): keep it small.
    yield (x.clone().requires_grad_(True), [3, 2], [2, 1], [1, 1], [1, 2], True)
    yield (x.contiguous(memory_format=torch.channels_last), [2, 2], [2, 2], [0, 0], [1, 1], False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    for args in opcheck_samples(backend.device):
        torch.library.opcheck(backend.ops.max_pool2d_fprop.default, args)
        y, idx = backend.ops.max_pool2d_fprop(*[a.detach() if torch.is_tensor(a) else a for a in args])
        dy = torch.randn_like(y).requires_grad_(args[0].requires_grad)
        torch.library.opcheck(backend.ops._max_pool2d_bprop.default, (dy, args[0].detach(), idx, *args[1:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend):
    x = torch.randn(1, 2, 5, 5, device=backend.device)
    with pytest.raises(NotImplementedError, match="not implemented for 'Bool'"):
        backend.ops.max_pool2d_fprop(x.bool(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        backend.ops.max_pool2d_fprop(x, [2, 2], [2, 2], [2, 2], [1, 1], False)
    y, idx = backend.ops.max_pool2d_fprop(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="expected grad_output and indices of size"):
        backend.ops._max_pool2d_bprop(y[:, :1], x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="int64 indices"):
        backend.ops._max_pool2d_bprop(y, x, idx.int(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="dtype"):
        backend.ops._max_pool2d_bprop(y.double(), x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_emulated_rejects_cuda_tensors_and_cuda_ops_reject_cpu():
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.ops.fastconv_emulated.max_pool2d_fprop(torch.randn(1, 1, 4, 4, device="cuda"), [2, 2], [2, 2],
                                                         [0, 0], [1, 1], False)


# ------------------------------------------------------------------------------------------------ taps pair
# _max_pool2d_fprop_taps / _max_pool2d_bprop_taps: max_pool2d_fprop / _max_pool2d_bprop with the argmax as its
# uint8 tap number t = r * S + s in the window. Oracles: the backend's own int64 pair (itself checked against
# torch above) and torch; taps are turned into positions here by their definition, not by the product code.
TAPS_DTYPES = [torch.float32, torch.float64, torch.float16]


def check_taps_pair(backend, x, kernel, stride, padding, dilation, ceil_mode, seed=0):
    """The taps pair against the int64 pair on 4-D x: same values, taps naming the same elements (tap 0 for a
    window wholly in the padding), same layout, and a bitwise-identical backward. Returns (y, taps)."""
    args = (list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
    y, taps = backend.ops._max_pool2d_fprop_taps(x, *args)
    y_i, idx = backend.ops.max_pool2d_fprop(x, *args)
    assert y.device == taps.device == x.device
    assert_identical(y, y_i)
    assert taps.dtype == torch.uint8 and taps.shape == idx.shape
    assert taps.stride() == idx.stride()  # the indices' memory format
    y_t, idx_t = F.max_pool2d(x.cpu(), kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert_identical(y, y_t)
    assert_identical(idx, idx_t)

    H, W = x.shape[-2:]
    P, Q = y.shape[-2:]
    t = taps.cpu().numpy()
    assert (t < kernel[0] * kernel[1]).all()
    h, w = tap_positions(taps, kernel, stride, padding, dilation)
    inside = (0 <= h) & (h < H) & (0 <= w) & (w < W)
    dead = np.broadcast_to(all_padding_mask(x.shape, P, Q, kernel, stride, padding, dilation), t.shape)
    np.testing.assert_array_equal(inside, ~dead)
    assert (t[dead] == 0).all()
    np.testing.assert_array_equal(np.where(inside, h * W + w, -1), np.where(inside, idx.cpu().numpy(), -1))

    g = torch.Generator().manual_seed(seed)
    dy = (torch.randint(-8, 8, y.shape, generator=g).double() / 8).to(x.dtype).to(x.device)
    dx = backend.ops._max_pool2d_bprop_taps(dy, x, taps, *args)
    # A window wholly in the padding sends its gradient nowhere from taps; from an int64 index PyTorch's
    # CPU backward (and fastconv's CPU kernel, which follows it) sends it where the seed index wraps.
    live = torch.from_numpy(np.ascontiguousarray(~dead)).to(x.device)
    dx_i = backend.ops._max_pool2d_bprop(dy * live, x, idx, *args)
    assert_identical(dx, dx_i)
    assert dx.stride() == dx_i.stride()
    return y, taps


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
@pytest.mark.parametrize("dtype", TAPS_DTYPES)
@settings(max_examples=60, **HYPOTHESIS)
@given(p=pool_problems())
def test_taps_pair_matches_indices(backend, dtype, p):
    x = make_input(p["x"], p["layout"], backend.device, dtype)
    if p["layout"] == "unbatched":
        x = x.contiguous().unsqueeze(0)
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    check_taps_pair(backend, x, p["kernel"], stride, p["padding"], p["dilation"], p["ceil_mode"], p["dy_seed"])


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
@pytest.mark.parametrize("dtype", TAPS_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
def test_taps_pair_dtypes_and_layouts(backend, dtype, layout):
    g = torch.Generator().manual_seed(5)
    x64 = torch.randint(-20, 20, (2, 3, 9, 8), generator=g).double() / 4  # exact in every dtype, with ties
    x64[0, 0, 1, 1] = NAN
    x = make_input(x64.numpy(), layout, backend.device, dtype)
    for kernel, stride, padding, dilation, ceil_mode in [((3, 3), (2, 2), (1, 1), (1, 1), False),
                                                         ((3, 2), (2, 1), (1, 1), (2, 1), True),
                                                         ((2, 3), (1, 2), (1, 0), (3, 2), True)]:
        y, _ = check_taps_pair(backend, x, kernel, stride, padding, dilation, ceil_mode)
        assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
@pytest.mark.parametrize("row, value, index", ROW_CASES, ids=[row_id(c) for c in ROW_CASES])
@pytest.mark.parametrize("dtype", TAPS_DTYPES)
def test_taps_nan_inf_and_tie_rules(backend, row, value, index, dtype):
    for layout in ("contiguous", "channels_last"):
        # One (1, len(row)) window: its tap number is the index into the row.
        x = make_input(np.array([[[row], [row]]], dtype=np.float64), layout, backend.device, dtype)
        y, taps = check_taps_pair(backend, x, (1, len(row)), (1, 1), (0, 0), (1, 1), False)
        assert torch.equal(taps.cpu(), torch.full((1, 2, 1, 1), index, dtype=torch.uint8))
        assert_identical(y.cpu(), torch.tensor(value, dtype=dtype).expand(1, 2, 1, 1))


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
@pytest.mark.parametrize("case", PLANE_CASES, ids=lambda c: c.name)
def test_taps_nan_scan_order_overlap_and_padding(backend, case):
    # case.args is (kernel_size[, stride[, padding]]), each an int.
    kernel = (case.args[0],) * 2
    stride = (case.args[1],) * 2 if len(case.args) > 1 else kernel
    padding = (case.args[2],) * 2 if len(case.args) > 2 else (0, 0)
    for layout in ("contiguous", "channels_last"):
        x = make_input(np.array([[case.plane, case.plane]], dtype=np.float64), layout, backend.device)
        y, taps = check_taps_pair(backend, x, kernel, stride, padding, (1, 1), False)
        h, w = tap_positions(taps, kernel, stride, padding, (1, 1))
        assert (h * x.shape[-1] + w).tolist() == [[case.indices] * 2]
        assert_identical(y.cpu(), torch.tensor([[case.values] * 2], dtype=y.dtype))


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
def test_taps_all_padding_window(backend):
    # As test_all_padding_window: dilated windows with every tap in the padding record tap 0 (outside the
    # input too) and send their gradient nowhere; in the last case tap 0's window straddles a real pixel.
    for shape, kernel, padding, dilation in [((3, 3), (2, 2), (1, 1), (4, 4)), ((3, 3), (1, 2), (0, 1), (1, 4)),
                                             ((3, 3), (2, 2), (0, 1), (1, 4))]:
        for layout in ("contiguous", "channels_last"):
            x = make_input(np.random.default_rng(0).standard_normal((1, 2, *shape)), layout, backend.device,
                           torch.float64)
            y, taps = check_taps_pair(backend, x, kernel, (1, 1), padding, dilation, False)
            assert torch.isneginf(y).all()
            assert (taps == 0).all()
            dx = backend.ops._max_pool2d_bprop_taps(torch.ones_like(y), x, taps, list(kernel), [1, 1],
                                                    list(padding), list(dilation), False)
            assert torch.equal(dx.cpu(), torch.zeros(x.shape, dtype=x.dtype))


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
def test_taps_largest_window(backend):
    # 16 x 16 = 256 taps, the most a byte can number: the maximum at the last tap is tap 255.
    x = torch.zeros(1, 2, 16, 16, device=backend.device)
    x[0, 0, 15, 15] = 1
    x[0, 1, 15, 14] = 1
    y, taps = check_taps_pair(backend, x, (16, 16), (16, 16), (0, 0), (1, 1), False)
    assert taps.flatten().tolist() == [255, 254]


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
def test_taps_errors(backend):
    x = torch.randn(1, 2, 17, 17, device=backend.device)
    args = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    y, taps = backend.ops._max_pool2d_fprop_taps(x, *args)
    _, idx = backend.ops.max_pool2d_fprop(x, *args)
    with pytest.raises(RuntimeError, match="uint8 taps"):
        backend.ops._max_pool2d_bprop_taps(y, x, idx, *args)
    with pytest.raises(RuntimeError, match="expected grad_output and taps of size"):
        backend.ops._max_pool2d_bprop_taps(y, x, taps[:, :1], *args)
    with pytest.raises(RuntimeError, match="dtype"):
        backend.ops._max_pool2d_bprop_taps(y.double(), x, taps, *args)
    with pytest.raises(NotImplementedError, match="not implemented for 'Bool'"):
        backend.ops._max_pool2d_fprop_taps(x.bool(), *args)
    big = ([17, 17], [1, 1], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match=r"kernel_size.*\[17, 17\]"):
        backend.ops._max_pool2d_fprop_taps(x, *big)
    with pytest.raises(RuntimeError, match="kernel_size"):
        backend.ops._max_pool2d_bprop_taps(torch.zeros(1, 2, 1, 1, device=backend.device), x,
                                           torch.zeros(1, 2, 1, 1, dtype=torch.uint8, device=backend.device), *big)


def has_taps_fakes(ops):
    # The taps pair's fake (meta) kernels live in fastconv/ops.py; opcheck cannot run before they are there.
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{ops.name}::_max_pool2d_fprop_taps", "Meta")


@pytest.mark.parametrize("backend", TAPS_BACKENDS)
def test_taps_opcheck(backend):
    if not has_taps_fakes(backend.ops):
        pytest.skip("no fake kernel for the taps pair registered (fastconv/ops.py)")
    for args in opcheck_samples(backend.device):
        torch.library.opcheck(backend.ops._max_pool2d_fprop_taps.default, args)
        y, taps = backend.ops._max_pool2d_fprop_taps(*[a.detach() if torch.is_tensor(a) else a for a in args])
        dy = torch.randn_like(y).requires_grad_(args[0].requires_grad)
        torch.library.opcheck(backend.ops._max_pool2d_bprop_taps.default, (dy, args[0].detach(), taps, *args[1:]))


# ------------------------------------------------------------------------------------------------ CPU vs CUDA
@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
def test_cuda_matches_cpu_and_emulator(dtype, layout):
    g = torch.Generator().manual_seed(4)
    x64 = torch.randint(-30, 30, (3, 4, 11, 10), generator=g).double() / 4
    x64[1, 2, 3, 3] = NAN
    results = []
    for backend, device in ((CUDA, "cuda"), (EMULATED, "cpu")):
        x = make_input(x64.numpy(), layout, device, dtype).requires_grad_()
        y, idx = backend.pool(x, (3, 2), (2, 1), (1, 1), (2, 1), ceil_mode=True, return_indices=True)
        dy = torch.linspace(-1, 1, y.numel(), dtype=dtype).view(y.shape).to(device)
        (dx,) = torch.autograd.grad(y, x, dy)
        results.append((y.cpu(), idx.cpu(), dx.cpu()))
    if has_native_cpu_pool():  # fastconv's own CPU kernel, where it is built
        x = make_input(x64.numpy(), layout, "cpu", dtype).requires_grad_()
        y, idx = fastconv.max_pool2d(x, (3, 2), (2, 1), (1, 1), (2, 1), ceil_mode=True, return_indices=True)
        (dx,) = torch.autograd.grad(y, x, torch.linspace(-1, 1, y.numel(), dtype=dtype).view(y.shape))
        results.append((y, idx, dx))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_identical(a, b)


@pytest.mark.needs_cuda
def test_cuda_current_stream_and_device():
    x = torch.randn(2, 3, 16, 16, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    stream.synchronize()
    assert_identical(y, F.max_pool2d(x, 2))
    if torch.cuda.device_count() > 1:
        x1 = x.to("cuda:1")
        assert fastconv.max_pool2d(x1, 2).device == x1.device


@pytest.mark.needs_cuda
@pytest.mark.bigmem
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_64bit_indexing(layout):
    # 2^31 + a bit input elements in float16: offsets past int32, so the int64 kernels run.
    x = torch.randn(1, 16, 11586, 11586, device="cuda", dtype=torch.float16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert x.numel() > 2**31
    x.requires_grad_()
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    y_t, idx_t = F.max_pool2d(x.detach(), 2, return_indices=True)
    assert torch.equal(y, y_t) and torch.equal(idx, idx_t)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert dx[0, -1, -2:, -2:].sum().item() == 1.0
    assert dx.sum(dtype=torch.float64).item() == y.numel()
