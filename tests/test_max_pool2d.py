"""fastconv.max_pool2d against torch.nn.functional.max_pool2d (values, indices, memory format, gradients,
errors) and against the float64 numpy reference; NaN/-inf/tie rules; gradcheck, opcheck, torch.compile;
a deterministic backward.

Outputs are poisoned (NaN / the integer dtype's max()) by conftest, so an element a kernel forgets to write fails."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

import lecture_examples as lecture
from pool_cases import INF, NAN, PLANE_CASES, ROW_CASES, all_padding_mask, row_id

CL = torch.channels_last
LAYOUTS = ["nchw", "channels_last", "slice", "transposed", "channels_last_slice", "unbatched", "unbatched_cl"]


# ------------------------------------------------------------------------------------------ helpers
def make_input(x, layout):
    """The values x (N, C, H, W) as a tensor of the given layout: contiguous, channels_last, a slice of a
    larger tensor, a transposed view, a channel slice of a channels_last tensor, or an unbatched 3-D
    tensor (the first image; contiguous or a view of a channels_last one)."""
    N, C, H, W = x.shape
    if layout == "nchw":
        return x.clone()
    if layout == "channels_last":
        return x.contiguous(memory_format=CL)
    if layout == "slice":
        big = torch.randn(N, C + 1, H + 2, 2 * W + 1, dtype=x.dtype)
        view = big[:, 1:, 1:H + 1, 1::2]
        view.copy_(x)
        return view
    if layout == "transposed":
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "channels_last_slice":
        big = torch.randn(N, C + 3, H, W, dtype=x.dtype).contiguous(memory_format=CL)
        view = big[:, 2:C + 2]
        view.copy_(x)
        return view
    if layout == "unbatched":
        return x[0].clone()
    if layout == "unbatched_cl":
        return x[:1].contiguous(memory_format=CL)[0]
    raise ValueError(layout)


def as_batched(t):
    return t if t.dim() == 4 else t.unsqueeze(0)


def assert_same(actual, expected):
    """Bitwise equal (NaN equal to NaN), same dtype, shape and strides."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)
    assert actual.stride() == expected.stride(), (actual.stride(), expected.stride())


def valid_mask(indices, H, W):
    return (indices >= 0) & (indices < H * W)


@st.composite
def pool_problems(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = draw(st.one_of(st.just((1, 1)), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    layout = draw(st.sampled_from(LAYOUTS))
    N = 1 if layout.startswith("unbatched") else draw(st.integers(0, 2))
    C = draw(st.sampled_from([1, 2, 3, 8, 9, 17]))  # 8 and 16 are the channels_last block widths
    H = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]) + draw(st.integers(0, 6))
    W = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]) + draw(st.integers(0, 6))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    values = draw(st.sampled_from(["normal", "ties", "nan"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (N, C, H, W)
    if values == "normal":
        x = torch.randn(shape, generator=gen, dtype=dtype)
    else:  # few distinct values: many ties, and for "nan" several NaNs and -infs per window
        x = torch.randint(1, 4, shape, generator=gen).to(dtype)
        if values == "nan":
            x[torch.rand(shape, generator=gen) < 0.2] = NAN
            x[torch.rand(shape, generator=gen) < 0.1] = -INF
    return dict(x=make_input(x, layout), kernel=kernel, args=(stride, padding, dilation, ceil_mode), gen=gen)


# ----------------------------------------------------------------------------- property tests
@settings(max_examples=150, deadline=None)
@given(pool_problems())
def test_fprop_matches_torch_and_reference(p):
    x, kernel, args = p["x"], p["kernel"], p["args"]
    y, idx = fastconv.max_pool2d(x, kernel, *args, return_indices=True)
    y_torch, idx_torch = F.max_pool2d(x, kernel, *args, return_indices=True)
    assert_same(y, y_torch)
    assert_same(idx, idx_torch)
    # Without return_indices the value alone, as torch.
    assert_same(fastconv.max_pool2d(x, kernel, *args), y_torch)

    stride, padding, dilation, ceil_mode = args
    y_ref, idx_ref = reference.max_pool2d_fprop(as_batched(x).double().numpy(), kernel, stride, padding,
                                                dilation, ceil_mode)
    np.testing.assert_array_equal(as_batched(y).double().numpy(), y_ref)
    np.testing.assert_array_equal(as_batched(idx).numpy(), idx_ref)


@settings(max_examples=100, deadline=None)
@given(pool_problems())
def test_bprop_matches_torch_and_reference(p):
    x, kernel, args = p["x"], p["kernel"], p["args"]
    x = x.detach().requires_grad_()
    y, idx = fastconv.max_pool2d(x, kernel, *args, return_indices=True)
    dy = torch.randn(y.shape, generator=p["gen"], dtype=y.dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert dx.shape == x.shape
    x4 = as_batched(x)
    H, W = x4.shape[2:]
    inside = valid_mask(as_batched(idx), H, W)
    if bool(inside.all()):
        # torch's backward writes out of bounds for an index outside the plane: only compare without.
        x_torch = x.detach().clone().requires_grad_()
        y_torch = F.max_pool2d(x_torch, kernel, *args)
        (dx_torch,) = torch.autograd.grad(y_torch, x_torch, dy, retain_graph=True)
        assert_same(dx, dx_torch)  # same summation order, so bitwise equal even in float32
        # Without return_indices autograd keeps one-byte tap numbers instead: the same gradient, except
        # that a window wholly in the padding (whose index torch wraps onto a pixel) sends it nowhere.
        stride, padding, dilation, _ = args
        stride = kernel if stride is None else (stride, stride) if isinstance(stride, int) else stride
        dead = torch.from_numpy(all_padding_mask(x4.shape, *y.shape[-2:], kernel, stride, padding, dilation))
        (dx_taps,) = torch.autograd.grad(fastconv.max_pool2d(x, kernel, *args), x, dy)
        (dx_live,) = torch.autograd.grad(y_torch, x_torch, torch.where(dead, torch.zeros_like(dy), dy))
        assert_same(dx_taps, dx_live)
    # Out-of-plane indices (windows wholly in the padding) route their gradient nowhere.
    dy4 = as_batched(dy).double().numpy()
    idx4 = as_batched(idx).numpy()
    inside = inside.numpy()
    dx_ref = reference.max_pool2d_bprop(np.where(inside, dy4, 0), np.where(inside, idx4, 0), x4.shape)
    tol = 1e-12 if x.dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(as_batched(dx).double().numpy(), dx_ref, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------- examples
def test_lecture_example():
    x = torch.from_numpy(lecture.POOL_X)[None, None]
    for t in (x, x.float(), x.expand(1, 3, 4, 4).contiguous(memory_format=CL)):
        y, idx = fastconv.max_pool2d(t, 2, 2, return_indices=True)
        for c in range(t.shape[1]):
            np.testing.assert_array_equal(y[0, c].double().numpy(), lecture.POOL_Y)
            np.testing.assert_array_equal(idx[0, c].numpy(), lecture.POOL_INDICES)


def pool_both(rows, *args, channels=1, **kwargs):
    """fastconv on a plane repeated over `channels`, in NCHW and channels_last, checked against torch;
    returns the first channel's (values, indices) as lists."""
    x = torch.tensor(rows, dtype=torch.float64)[None, None].repeat(2, channels, 1, 1)
    results = []
    for t in (x, x.contiguous(memory_format=CL), x.float()):
        y, idx = fastconv.max_pool2d(t, *args, return_indices=True, **kwargs)
        y_torch, idx_torch = F.max_pool2d(t, *args, return_indices=True, **kwargs)
        assert_same(y, y_torch)
        assert_same(idx, idx_torch)
        for n in range(2):
            for c in range(channels):
                assert_same(y[n, c], y[0, 0])
                assert_same(idx[n, c], idx[0, 0])
        results.append((y[0, 0].double().tolist(), idx[0, 0].tolist()))
    return results[0]


@pytest.mark.parametrize("channels", [1, 17])  # 17: a full channels_last block and a tail
@pytest.mark.parametrize("row, value, index", ROW_CASES, ids=[row_id(c) for c in ROW_CASES])
def test_nan_inf_and_tie_rules(row, value, index, channels):
    y, idx = pool_both([row], (1, len(row)), channels=channels)
    np.testing.assert_array_equal(y, [[value]])
    assert idx == [[index]]


@pytest.mark.parametrize("channels", [1, 17])
@pytest.mark.parametrize("case", PLANE_CASES, ids=lambda c: c.name)
def test_nan_scan_order_overlap_and_padding(case, channels):
    y, idx = pool_both(case.plane, *case.args, channels=channels)
    np.testing.assert_array_equal(y, case.values)
    assert idx == case.indices


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_window_wholly_in_padding(memory_format):
    # Kernel 2, dilation 3, padding 1 on a 3x2 input: in w the taps sit at -1 and 2, both outside. PyTorch
    # returns -inf and seeds the index with the first tap >= 0 per axis: row 0 -> (2, 2) = 6, past the
    # plane; row 1 -> (0, 2) = 2, which wraps to pixel (1, 0). The backward ignores 6 (torch would write
    # out of bounds) and, as torch does, routes row 1's gradient to pixel (1, 0).
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64).contiguous(memory_format=memory_format)
    y, idx = fastconv.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    y_torch, idx_torch = F.max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    assert_same(y, y_torch)
    assert_same(idx, idx_torch)
    assert (y == -INF).all() and idx[..., 0].tolist() == [[[6, 2]] * 3] * 2
    dy = torch.randn(y.shape, dtype=y.dtype)
    dx = torch.ops.fastconv._max_pool2d_bprop(dy, x, idx, [2, 2], [1, 1], [1, 1], [3, 3], False)
    expected = torch.zeros_like(x)
    expected[:, :, 1, 0] = dy[:, :, 1, 0]
    assert_same(dx, expected.contiguous(memory_format=memory_format))
    # Second order through the same indices must stay in bounds too.
    torch.autograd.gradgradcheck(
        lambda t: fastconv.max_pool2d(t, 2, 1, 1, 3), (x.detach().requires_grad_(),))


def test_window_wholly_in_padding_without_indices_sends_its_gradient_nowhere():
    # The case above through the taps pair (no return_indices): row 1's -inf depends on no input, and
    # its gradient goes nowhere (as PyTorch's CUDA backward; its CPU backward follows the wrapped seed).
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    y = fastconv.max_pool2d(x, 2, 1, 1, 3)
    dy = torch.randn(y.shape, dtype=y.dtype)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(dx, torch.zeros_like(x))


def test_autograd_saves_one_byte_per_output():
    # What the graph keeps for the backward: the input and uint8 taps, not int64 indices (8x the memory);
    # with return_indices the indices themselves are saved, as PyTorch does.
    def saved_dtypes(return_indices):
        dtypes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: dtypes.append(t.dtype) or t, lambda t: t):
            x = torch.randn(2, 3, 8, 8, requires_grad=True)
            fastconv.max_pool2d(x, 2, return_indices=return_indices)
        return dtypes

    assert sorted(map(str, saved_dtypes(False))) == ["torch.float32", "torch.uint8"]
    assert sorted(map(str, saved_dtypes(True))) == ["torch.float32", "torch.int64"]


@pytest.mark.parametrize("kernel", [(16, 16), (17, 17), (1, 300)])
def test_windows_past_256_taps_keep_int64_indices(kernel):
    # A tap number must fit a byte; larger windows take the int64 pair, with the same results.
    x = torch.randn(1, 2, 20, 301, dtype=torch.float64, requires_grad=True)
    y = fastconv.max_pool2d(x, kernel, 2)
    y_torch = F.max_pool2d(x, kernel, 2)
    assert_same(y, y_torch)
    dy = torch.randn(y.shape, dtype=y.dtype)
    assert_same(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_torch, x, dy)[0])


def test_bprop_ignores_indices_outside_the_plane():
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    dy = torch.tensor([[[[1.0, 2.0]], [[4.0, 8.0]]]], dtype=torch.float64)
    idx = torch.tensor([[[[-1, 3]], [[4, 2**40]]]])
    for memory_format in (torch.contiguous_format, CL):
        t = x.contiguous(memory_format=memory_format)
        dx = torch.ops.fastconv._max_pool2d_bprop(dy, t, idx, [2, 1], [2, 1], [0, 0], [1, 1], False)
        assert dx.flatten(2).tolist() == [[[0, 0, 0, 2], [0, 0, 0, 0]]]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_empty_batch(memory_format):
    x = torch.randn(0, 3, 7, 6).contiguous(memory_format=memory_format).requires_grad_()
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_torch, idx_torch = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert_same(y, y_torch)
    assert_same(idx, idx_torch)
    (dx,) = torch.autograd.grad(y, x, torch.randn(y.shape))
    assert dx.shape == x.shape


def test_standard_shapes_small():
    # AlexNet's 3x3 stride 2 ceil_mode and ResNet's 3x3 s2 p1, at small sizes, both layouts.
    for x in (torch.randn(2, 24, 27, 27), torch.randn(2, 24, 28, 28).contiguous(memory_format=CL)):
        for args in ((3, 2, 0, 1, True), (3, 2, 1), (2, 2)):
            y, idx = fastconv.max_pool2d(x, *args, return_indices=True)
            y_torch, idx_torch = F.max_pool2d(x, *args, return_indices=True)
            assert_same(y, y_torch)
            assert_same(idx, idx_torch)


# --------------------------------------------------------------------- autograd / op checks
def distinct(shape, memory_format=torch.contiguous_format):
    """float64 values at least 1 apart, shuffled: no ties, so finite differences do not flip a max."""
    x = torch.randperm(int(np.prod(shape))).double().view(shape) * 0.5
    return x.contiguous(memory_format=memory_format).requires_grad_()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("args", [(2, 2), (3, 1, 1), (3, 2, 1, 2, True), ((2, 3), (1, 2), (1, 0))])
def test_gradcheck(memory_format, args):
    x = distinct((1, 2, 6, 7), memory_format)
    fn = lambda t: fastconv.max_pool2d(t, *args)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def opcheck_samples():
    x = torch.randn(2, 3, 7, 6)
    return [(x, [2, 2], [2, 2], [0, 0], [1, 1], False),
            (x.contiguous(memory_format=CL), [3, 3], [2, 1], [1, 1], [1, 2], True)]


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    for x, *params in opcheck_samples():
        x = x.clone(memory_format=torch.preserve_format).requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.fastconv.max_pool2d_fprop, (x, *params))
        y, idx = torch.ops.fastconv.max_pool2d_fprop(x.detach(), *params)
        dy = torch.randn(y.shape).requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.fastconv._max_pool2d_bprop, (dy, x.detach(), idx, *params))


def test_torch_compile_fullgraph():
    def f(x):
        return fastconv.max_pool2d(x.relu(), 3, 2, 1).sum(dim=1)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for memory_format in (torch.contiguous_format, CL):
        x = torch.randn(2, 4, 9, 8).contiguous(memory_format=memory_format).requires_grad_()
        x2 = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = compiled(x)
        y_eager = f(x2)
        assert_same(y, y_eager)
        dy = torch.randn(y.shape)
        y.backward(dy)
        y_eager.backward(dy)
        assert_same(x.grad, x2.grad)


# ------------------------------------------------------------------------------------- errors
BAD_CALLS = [
    ("stride", lambda x: ((x, 0), {})),            # kernel 0: the stride defaults to it, and torch names that
    ("kernel", lambda x: ((x, 0, 1), {})),
    ("kernel", lambda x: ((x, (2, 0), 1), {})),
    ("stride", lambda x: ((x, 2, 0), {})),
    ("stride", lambda x: ((x, 2, -1), {})),
    ("dilation", lambda x: ((x, 2, 1, 0, 0), {})),
    ("dilation", lambda x: ((x, 2, 1, 0, (1, 0)), {})),
    ("pad", lambda x: ((x, 2, 1, 2), {})),
    ("pad", lambda x: ((x, 3, 1, 2, 2), {})),       # at most half the kernel, not the dilated one
    ("pad", lambda x: ((x, 2, 1, -1), {})),
    ("too small", lambda x: ((x[..., :2, :2], 3), {})),
    ("too small", lambda x: ((x[..., :2, :], 2, 1, 0, 3), {})),
    ("input", lambda x: ((x[0, 0], 2), {})),          # 2-D
    ("input", lambda x: ((x[None], 2), {})),          # 5-D
]


@pytest.mark.parametrize("name, call", BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_raise_like_torch(name, call):
    x = torch.randn(2, 3, 5, 5)
    args, kwargs = call(x)
    with pytest.raises(Exception) as torch_error:
        F.max_pool2d(*args, return_indices=True, **kwargs)
    with pytest.raises(type(torch_error.value), match=f"(?i){name}"):
        fastconv.max_pool2d(*args, return_indices=True, **kwargs)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint16, torch.complex64])
def test_dtypes_torch_refuses_are_rejected_naming_the_dtype(dtype):
    # Integer inputs pool as torch's (tests/test_max_pool2d_int.py); these torch refuses, and so does fastconv.
    x = torch.zeros(1, 1, 4, 4, dtype=dtype)
    name = {torch.bool: "Bool", torch.uint16: "UInt16", torch.complex64: "ComplexFloat"}[dtype]
    for pool in (F.max_pool2d, fastconv.max_pool2d):
        with pytest.raises(NotImplementedError, match=f"not implemented for '{name}'"):
            pool(x, 2)


def test_half_input_pools_as_torch():
    # float16/bfloat16 are dispatched since autocast (tests/test_autocast.py has the full comparison)
    x = torch.randn(1, 1, 4, 4).half()
    assert torch.equal(fastconv.max_pool2d(x, 2), torch.nn.functional.max_pool2d(x, 2))


def test_bprop_rejects_mismatched_arguments():
    x = torch.randn(1, 2, 4, 4)
    y, idx = torch.ops.fastconv.max_pool2d_fprop(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    params = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    bprop = torch.ops.fastconv._max_pool2d_bprop
    with pytest.raises(RuntimeError, match="indices"):
        bprop(y, x, idx.int(), *params)
    with pytest.raises(RuntimeError, match="grad_output"):
        bprop(y.double(), x, idx, *params)
    with pytest.raises(RuntimeError, match="grad_output"):
        bprop(y[:, :, :1], x, idx, *params)
    with pytest.raises(RuntimeError, match="indices"):
        bprop(y, x, idx[:, :1], *params)


# ---------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bprop_is_deterministic_across_runs_and_threads(memory_format, dtype):
    # Overlapping windows on a few distinct values: many windows pick the same pixel, so the sum order
    # of each grad_input element shows in the last bits of float32.
    x = torch.randint(0, 3, (3, 40, 19, 17)).to(dtype).contiguous(memory_format=memory_format)
    dy = torch.randn(3, 40, 19, 17, dtype=dtype) * 1e3
    params = ([3, 3], [1, 1], [1, 1], [1, 1], False)
    _, idx = torch.ops.fastconv.max_pool2d_fprop(x, *params)
    _, taps = torch.ops.fastconv._max_pool2d_fprop_taps(x, *params)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2, 1):
            torch.set_num_threads(n)
            results.append(torch.ops.fastconv._max_pool2d_bprop(dy, x, idx, *params))
            results.append(torch.ops.fastconv._max_pool2d_bprop_taps(dy, x, taps, *params))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert torch.equal(r, results[0])
    assert r.abs().sum() > 0
