"""fastconv under PyTorch's transforms: torch.func (grad, jacrev, vjp, jvp, jacfwd, hessian, vmap) and
torch.autograd.forward_ad dual tensors, on the native CPU kernels and the emulated CUDA kernels, each
compared with torch.nn.functional in float64. Every op's derivatives are fastconv's own (derivatives.py),
and vmap runs fastconv's batching rules (batching.py), never PyTorch's per-sample fallback."""
import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import func

import fastconv
from fastconv import derivatives

BACKENDS = {
    "cpu": (fastconv.conv2d, fastconv.max_pool2d, "fastconv"),
    "emulated": (fastconv.emulation.conv2d, fastconv.emulation.max_pool2d, "fastconv_emulated"),
}
DT = torch.float64


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return BACKENDS[request.param]


@contextlib.contextmanager
def no_vmap_fallback():
    """PyTorch's per-sample fallback raises instead of warning: a vmap that passes used fastconv's rules."""
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(True)


def rand(*shape, dtype=DT):
    return torch.randn(*shape, dtype=dtype)


def close(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y)
        return
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # Nothing passes by being empty or zero where torch is not.
    assert (a.abs().sum() > 0) == (b.abs().sum() > 0)


CONV_ARGS = [
    dict(stride=1, padding=1),
    dict(stride=2, padding=(1, 0), dilation=(1, 2)),
    dict(stride=1, padding=1, groups=2),
]


def conv_pair(backend, kw):
    conv, _, _ = backend
    return (lambda x, w, b: conv(x, w, b, **kw)), (lambda x, w, b: F.conv2d(x, w, b, **kw))


def conv_data():
    return rand(2, 4, 7, 6), rand(6, 2, 3, 3), rand(6)


def conv_weight(kw, w):
    return w if kw.get("groups", 1) == 2 else rand(6, 4, 3, 3)


# ----------------------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", CONV_ARGS)
def test_conv_jvp_and_jacfwd(backend, kw):
    ours, theirs = conv_pair(backend, kw)
    x, w, b = conv_data()
    w = conv_weight(kw, w)
    tangents = (torch.randn_like(x), torch.randn_like(w), torch.randn_like(b))
    y1, t1 = func.jvp(ours, (x, w, b), tangents)
    y2, t2 = func.jvp(theirs, (x, w, b), tangents)
    close(y1, y2)
    close(t1, t2)
    xs = rand(1, 4, 5, 5)
    close(func.jacfwd(ours, argnums=(0, 1, 2))(xs, w, b), func.jacfwd(theirs, argnums=(0, 1, 2))(xs, w, b))


@pytest.mark.parametrize("kw", CONV_ARGS)
def test_conv_grad_jacrev_vjp(backend, kw):
    ours, theirs = conv_pair(backend, kw)
    x, w, b = conv_data()
    w = conv_weight(kw, w)
    close(func.grad(lambda *a: ours(*a).square().sum(), argnums=(0, 1, 2))(x, w, b),
          func.grad(lambda *a: theirs(*a).square().sum(), argnums=(0, 1, 2))(x, w, b))
    xs = rand(1, 4, 5, 5)
    close(func.jacrev(ours, argnums=(0, 1, 2))(xs, w, b), func.jacrev(theirs, argnums=(0, 1, 2))(xs, w, b))
    y1, vjp1 = func.vjp(ours, x, w, b)
    y2, vjp2 = func.vjp(theirs, x, w, b)
    v = torch.randn_like(y1)
    close(vjp1(v), vjp2(v))


def test_conv_hessian_and_forward_over_reverse(backend):
    ours, theirs = conv_pair(backend, dict(padding=1))
    x, w, b = rand(1, 2, 4, 4), rand(3, 2, 3, 3), rand(3)

    def loss(f):
        return lambda x, w, b: torch.tanh(f(x, w, b)).sum()

    close(func.hessian(loss(ours), argnums=(0, 1))(x, w, b), func.hessian(loss(theirs), argnums=(0, 1))(x, w, b))
    close(func.jacfwd(func.jacrev(loss(ours), argnums=1), argnums=0)(x, w, b),
          func.jacfwd(func.jacrev(loss(theirs), argnums=1), argnums=0)(x, w, b))


def test_conv_forward_ad_dual_tensors(backend):
    ours, theirs = conv_pair(backend, dict(padding=1, stride=2))
    x, w, b = rand(2, 4, 7, 6), rand(6, 4, 3, 3), rand(6)
    tx, tw, tb = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    results = []
    for f in (ours, theirs):
        with fwAD.dual_level():
            y = f(fwAD.make_dual(x, tx), fwAD.make_dual(w, tw), fwAD.make_dual(b, tb))
            primal, tangent = fwAD.unpack_dual(y)
            assert tangent is not None
            results.append((primal, tangent))
    close(results[0], results[1])


@pytest.mark.parametrize("dims", ["input", "weight", "both", "bias", "all"])
@pytest.mark.parametrize("kw", CONV_ARGS)
def test_conv_vmap(backend, kw, dims):
    ours, theirs = conv_pair(backend, kw)
    B = 3
    x, w, b = conv_data()
    w = conv_weight(kw, w)
    xs = torch.stack([torch.randn_like(x) for _ in range(B)], 1)
    ws = torch.stack([torch.randn_like(w) for _ in range(B)])
    bs = torch.stack([torch.randn_like(b) for _ in range(B)], -1)
    in_dims = {"input": (1, None, None), "weight": (None, 0, None), "both": (1, 0, None), "bias": (None, None, 1),
               "all": (1, 0, 1)}[dims]
    args = tuple(batched if d is not None else plain for batched, plain, d in zip((xs, ws, bs), (x, w, b), in_dims))
    with no_vmap_fallback():
        got = func.vmap(ours, in_dims=in_dims)(*args)
    want = func.vmap(theirs, in_dims=in_dims)(*args)
    close(got, want)


def test_conv_vmap_of_gradients(backend):
    """Per-sample gradients, the classic vmap(grad) use: every backward op batched by fastconv's rules."""
    ours, theirs = conv_pair(backend, dict(padding=1))
    x, w, b = rand(4, 1, 3, 5, 5), rand(2, 3, 3, 3), rand(2)

    def per_sample(f):
        return func.vmap(func.grad(lambda x, w, b: f(x, w, b).square().sum(), argnums=(0, 1, 2)),
                         in_dims=(0, None, None))(x, w, b)

    with no_vmap_fallback():
        got = per_sample(ours)
    close(got, per_sample(theirs))


def test_raw_ops_vmap_and_jvp(backend):
    """The dispatcher-level rules: torch.vmap over torch.ops.<ns>.* directly, and forward AD on the
    backward ops (their jvp), each against a loop of single calls."""
    _, _, ns = backend
    ops = getattr(torch.ops, ns)
    params = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "auto", "zeros")
    dys, w, xs = rand(3, 2, 4, 5, 5), rand(4, 3, 3, 3), rand(3, 2, 3, 5, 5)
    with no_vmap_fallback():
        dgrads = torch.vmap(lambda dy: ops._conv2d_dgrad(dy, w, [2, 3, 5, 5], *params))(dys)
        wgrads = torch.vmap(lambda dy, x: ops._conv2d_wgrad(dy, x, [4, 3, 3, 3], *params))(dys, xs)
        bgrads = torch.vmap(ops._conv2d_bgrad)(dys)
    for i in range(3):
        close(dgrads[i], torch.nn.grad.conv2d_input([2, 3, 5, 5], w, dys[i], padding=1))
        close(wgrads[i], torch.nn.grad.conv2d_weight(xs[i], [4, 3, 3, 3], dys[i], padding=1))
        close(bgrads[i], dys[i].sum((0, 2, 3)))
    dy, tdy, tw = dys[0], torch.randn_like(dys[0]), torch.randn_like(w)
    with fwAD.dual_level():
        out = ops._conv2d_dgrad(fwAD.make_dual(dy, tdy), fwAD.make_dual(w, tw), [2, 3, 5, 5], *params)
        tangent = fwAD.unpack_dual(out).tangent
    want = (torch.nn.grad.conv2d_input([2, 3, 5, 5], w, tdy, padding=1)
            + torch.nn.grad.conv2d_input([2, 3, 5, 5], tw, dy, padding=1))
    close(tangent, want)


def test_raw_op_under_functorch_grad_says_what_to_call():
    x, w = rand(1, 1, 4, 4), rand(1, 1, 3, 3)
    params = (None, [1, 1], [0, 0], [1, 1], 1, "auto", "zeros")
    with pytest.raises(RuntimeError, match="fastconv.conv2d"):
        func.grad(lambda x: torch.ops.fastconv.conv2d_fprop(x, w, *params).sum())(x)


# ----------------------------------------------------------------------------------------------------
# max_pool2d (the taps pair without indices, the int64 pair with them)
# ----------------------------------------------------------------------------------------------------
POOL_ARGS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
             dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))]


def pool_pair(backend, kw, return_indices):
    _, pool, _ = backend

    def ours(x):
        out = pool(x, **kw, return_indices=return_indices)
        return out[0] if return_indices else out

    def theirs(x):
        return F.max_pool2d(x, **kw)

    return ours, theirs


def distinct(*shape):
    """No ties: the gradient of a max is then unambiguous, and finite differences agree with it."""
    return torch.randperm(torch.Size(shape).numel(), dtype=DT).view(shape) / 7


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("kw", POOL_ARGS)
def test_pool_transforms(backend, kw, return_indices):
    ours, theirs = pool_pair(backend, kw, return_indices)
    x = distinct(2, 3, 7, 8)
    tx = torch.randn_like(x)
    close(func.jvp(ours, (x,), (tx,)), func.jvp(theirs, (x,), (tx,)))
    close(func.grad(lambda x: ours(x).square().sum())(x), func.grad(lambda x: theirs(x).square().sum())(x))
    small = distinct(1, 1, 5, 5)
    close(func.jacrev(ours)(small), func.jacrev(theirs)(small))
    close(func.jacfwd(ours)(small), func.jacfwd(theirs)(small))
    close(func.hessian(lambda x: ours(x).square().sum())(small), func.hessian(lambda x: theirs(x).square().sum())(small))
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ours(fwAD.make_dual(x, tx))).tangent
    assert tangent is not None
    close(tangent, func.jvp(theirs, (x,), (tx,))[1])
    xs = distinct(2, 3, 2, 7, 8)
    with no_vmap_fallback():
        got = func.vmap(ours, in_dims=1)(xs)
    close(got, func.vmap(theirs, in_dims=1)(xs))


def test_pool_vmap_of_gradients_and_backward_jvp(backend):
    ours, theirs = pool_pair(backend, dict(kernel_size=3, stride=2, padding=1), False)
    x = distinct(4, 2, 3, 7, 7)

    def per_sample(f):
        return func.vmap(func.grad(lambda x: f(x).square().sum()))(x)

    with no_vmap_fallback():
        got = per_sample(ours)
    close(got, per_sample(theirs))
    # Forward over reverse through the pooling backward (its jvp).
    t = torch.randn_like(x[0])
    close(func.jvp(func.grad(lambda x: ours(x).square().sum()), (x[0],), (t,))[1],
          func.jvp(func.grad(lambda x: theirs(x).square().sum()), (x[0],), (t,))[1])


@pytest.mark.parametrize("name", sorted(n for ns, n in derivatives._functions if ns == "fastconv"))
def test_every_op_has_a_nonzero_forward_tangent(name):
    """Every differentiable op gives its output a tangent, never None and never zero for a non-zero
    input tangent (the silent failure of an op without a jvp)."""
    ops = torch.ops.fastconv
    x, w, dy = rand(2, 3, 6, 6), rand(4, 3, 3, 3), rand(2, 4, 6, 6)
    conv = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "auto", "zeros")
    pool = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    _, idx = ops.max_pool2d_fprop(x, *pool)
    _, taps = ops._max_pool2d_fprop_taps(x, *pool)
    dy_pool = rand(2, 3, 3, 3)
    cases = {
        "conv2d_fprop": (lambda t: ops.conv2d_fprop(t, w, None, *conv), x),
        "_conv2d_dgrad": (lambda t: ops._conv2d_dgrad(t, w, [2, 3, 6, 6], *conv), dy),
        "_conv2d_wgrad": (lambda t: ops._conv2d_wgrad(dy, t, [4, 3, 3, 3], *conv), x),
        "_conv2d_bgrad": (lambda t: ops._conv2d_bgrad(t), dy),
        "max_pool2d_fprop": (lambda t: ops.max_pool2d_fprop(t, *pool)[0], x),
        "_max_pool2d_fprop_taps": (lambda t: ops._max_pool2d_fprop_taps(t, *pool)[0], x),
        "_max_pool2d_bprop": (lambda t: ops._max_pool2d_bprop(t, x, idx, *pool), dy_pool),
        "_max_pool2d_bprop_taps": (lambda t: ops._max_pool2d_bprop_taps(t, x, taps, *pool), dy_pool),
    }
    f, primal = cases[name]
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(primal, torch.randn_like(primal)))).tangent
    assert tangent is not None and tangent.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# Complex conv2d, and PyTorch's zero-channel quirk
# ----------------------------------------------------------------------------------------------------
COMPLEX_CASES = [
    dict(padding=1),
    dict(padding="same", dilation=2),
    dict(padding="valid", stride=2),
    dict(padding=1, groups=2),
    dict(padding=1, groups=4),  # depthwise
    dict(padding=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="circular", stride=(1, 2)),
]


def torch_conv(x, w, b, padding_mode="zeros", **kw):
    if padding_mode == "zeros":
        return F.conv2d(x, w, b, **kw)
    pad = kw.pop("padding")
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=padding_mode), w, b, **kw)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("kw", COMPLEX_CASES)
def test_complex_conv2d(backend, kw, dtype, layout):
    conv, _, _ = backend
    groups = kw.get("groups", 1)
    x = torch.randn(2, 4, 7, 8, dtype=dtype, requires_grad=True)
    w = torch.randn(8, 4 // groups, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(8, dtype=dtype, requires_grad=True)
    if layout == "channels_last":
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    y = conv(x, w, b, **kw)
    want = torch_conv(x, w, b, **kw)
    assert y.dtype == dtype
    if kw.get("padding_mode", "zeros") == "zeros":  # (torch pads a copy for the other modes: NCHW then)
        assert y.stride() == want.stride()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.complex64 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, want, **tol)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(want, (x, w, b), g), **tol)


def test_complex_conv2d_gradcheck(backend):
    conv, _, _ = backend
    x = torch.randn(1, 2, 4, 4, dtype=torch.complex128, requires_grad=True)
    w = torch.randn(2, 1, 3, 3, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(2, dtype=torch.complex128, requires_grad=True)

    def f(x, w, b):
        return conv(x, w, b, padding=1, groups=2, padding_mode="replicate")

    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x, w, b), fast_mode=True)


def test_complex_conv2d_refuses_mixed_dtypes(backend):
    conv, _, _ = backend
    with pytest.raises(RuntimeError, match="one dtype"):
        conv(torch.randn(1, 1, 3, 3, dtype=torch.complex64), torch.randn(1, 1, 1, 1))


@pytest.mark.parametrize("kw", [dict(stride=2), dict(padding=1), dict(groups=3, dilation=2)])
def test_zero_input_channels_has_pytorchs_shape(backend, kw):
    conv, _, _ = backend
    groups = kw.get("groups", 1)
    results = []
    for f in (conv, F.conv2d):
        x = torch.randn(2, 0, 11, 13, requires_grad=True)
        w = torch.randn(3 * groups, 0, 3, 3, requires_grad=True)
        b = torch.randn(3 * groups, requires_grad=True)
        y = f(x, w, b, **kw)
        y.sum().backward()
        results.append((y.shape, x.grad.shape, w.grad.shape, b.grad))
    assert results[0][:3] == results[1][:3]
    assert results[0][0][1] == 0
    torch.testing.assert_close(results[0][3], results[1][3])


def test_missing_input_is_a_type_error():
    with pytest.raises(TypeError, match="input"):
        fastconv.nn.Conv2d(3, 3, 3)(None)
    with pytest.raises(TypeError, match="input"):
        fastconv.nn.MaxPool2d(2)(None)
    with pytest.raises(TypeError, match="weight"):
        fastconv.conv2d(torch.randn(1, 1, 3, 3), None)


@pytest.mark.needs_cuda
def test_transforms_on_cuda():
    """The same transforms through the native CUDA kernels (float64, against torch's CUDA conv)."""
    x, w, b = (t.cuda() for t in (rand(2, 4, 7, 6), rand(6, 4, 3, 3), rand(6)))

    def ours(x, w, b):
        return fastconv.max_pool2d(fastconv.conv2d(x, w, b, padding=1), 2)

    def theirs(x, w, b):
        return F.max_pool2d(F.conv2d(x, w, b, padding=1), 2)

    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    close(func.jvp(ours, (x, w, b), tangents), func.jvp(theirs, (x, w, b), tangents))
    close(func.grad(lambda *a: ours(*a).square().sum(), argnums=(0, 1, 2))(x, w, b),
          func.grad(lambda *a: theirs(*a).square().sum(), argnums=(0, 1, 2))(x, w, b))
    ws = torch.stack([torch.randn_like(w) for _ in range(3)])
    with no_vmap_fallback():
        got = func.vmap(ours, in_dims=(None, 0, None))(x, ws, b)
    close(got, func.vmap(theirs, in_dims=(None, 0, None))(x, ws, b))
    small = (x[:1, :, :4, :4], w, b)
    close(func.hessian(lambda x: torch.tanh(ours(x, w, b)).sum())(small[0]),
          func.hessian(lambda x: torch.tanh(theirs(x, w, b)).sum())(small[0]))
