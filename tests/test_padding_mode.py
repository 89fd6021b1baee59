"""padding_mode (reflect / replicate / circular) applied inside the kernels' index mapping: every CPU
algorithm and the CUDA kernels (through the emulator), forward and both gradients, against the float64
numpy reference (numpy.pad's modes) and torch.nn.Conv2d(padding_mode=...)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conv_cases import assert_close, same_padding, tolerance, with_layout

MODES = ("reflect", "replicate", "circular")
CPU_ALGORITHMS = ("direct", "direct_simple", "im2col", "im2col_blas")


@pytest.fixture(autouse=True)
def poisoned_outputs():
    fastconv._C.set_poison_outputs(True)
    yield
    fastconv._C.set_poison_outputs(False)


def _pads(padding, weight, dilation):
    """(top, bottom, left, right)."""
    if padding == "same":
        return same_padding(weight.shape[2:], dilation)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


def _check(fn, x, w, b, stride, padding, dilation, groups, mode, dtype=torch.float64):
    """fn's forward and gradients against the float64 reference with padding_mode=mode."""
    stride, dilation = (stride, stride) if isinstance(stride, int) else stride, \
        (dilation, dilation) if isinstance(dilation, int) else dilation
    pads = _pads(padding, w, dilation)
    xd, wd = x.detach().double().numpy(), w.detach().double().numpy()
    bd = None if b is None else b.detach().double().numpy()
    params = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, padding_mode=mode)
    y_ref = reference.conv2d_fprop(xd, wd, bd, **params)
    dy = torch.randn(y_ref.shape, dtype=torch.float64)
    dx_ref = reference.conv2d_dgrad(dy.numpy(), wd, xd.shape, **params)
    dw_ref = reference.conv2d_wgrad(dy.numpy(), xd, wd.shape, **params)

    xt = x.detach().to(dtype).requires_grad_()
    wt = w.detach().to(dtype).requires_grad_()
    bt = None if b is None else b.detach().to(dtype).requires_grad_()
    y = fn(xt, wt, bt, stride, padding, dilation, groups, mode)
    dx, dw = torch.autograd.grad(y, (xt, wt), dy.to(dtype))
    reduction = w.shape[1] * w.shape[2] * w.shape[3]
    assert_close(y, y_ref, tolerance(dtype, reduction), f"{mode} forward")
    # A padded pixel's gradient lands on the pixel it copies: up to (R*S)^2 terms for replicate corners.
    assert_close(dx, dx_ref, tolerance(dtype, w.shape[0] * reduction * w.shape[2] * w.shape[3]), f"{mode} grad_input")
    assert_close(dw, dw_ref, tolerance(dtype, y.shape[0] * y.shape[2] * y.shape[3] * 4), f"{mode} grad_weight")
    return y, dx, dw


def _native(algorithm):
    def fn(x, w, b, stride, padding, dilation, groups, mode):
        return fastconv.conv2d(x, w, b, stride, padding, dilation, groups, algorithm=algorithm, padding_mode=mode)
    return fn


def _emulated(algorithm):
    def fn(x, w, b, stride, padding, dilation, groups, mode):
        return fastconv.emulation.conv2d(x, w, b, stride, padding, dilation, groups, algorithm=algorithm,
                                         padding_mode=mode)
    return fn


# (N, C, H, W, K, R, S, stride, padding, dilation, groups): padding reaching the limit of each mode
# (reflect: size - 1, circular: size), strides that leave padded rows unread, dilation, groups, "same"
# with an even kernel (asymmetric), a 1-pixel-high input (replicate and circular only).
CASES = [
    (2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1),
    (1, 2, 5, 7, 3, 3, 2, 2, (2, 1), 1, 1),
    (2, 4, 7, 6, 6, 3, 3, (1, 2), (3, 2), (2, 1), 2),
    (1, 3, 4, 4, 2, 5, 5, 1, 3, 1, 1),
    (1, 2, 6, 6, 3, 4, 2, 1, "same", (1, 2), 1),
    (2, 6, 5, 5, 6, 3, 3, 1, 1, 1, 6),
    (1, 3, 9, 8, 17, 3, 3, 2, 2, 1, 1),
]


def _tensors(case, seed=0):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, dtype=torch.float64, generator=g)
    w = torch.randn(K, C // groups, R, S, dtype=torch.float64, generator=g)
    b = torch.randn(K, dtype=torch.float64, generator=g)
    return x, w, b, stride, padding, dilation, groups


def _fits(mode, x, w, padding, dilation):
    pads = _pads(padding, w, (dilation, dilation) if isinstance(dilation, int) else dilation)
    H, W = x.shape[2:]
    if mode == "reflect":
        return max(pads[:2]) < H and max(pads[2:]) < W
    if mode == "circular":
        return max(pads[:2]) <= H and max(pads[2:]) <= W
    return True


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_cpu_matches_reference(case, mode, algorithm, layout):
    x, w, b, stride, padding, dilation, groups = _tensors(case)
    if not _fits(mode, x, w, padding, dilation):
        pytest.skip("padding too large for this mode")
    _check(_native(algorithm), with_layout(x, layout), w, b, stride, padding, dilation, groups, mode)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("mode", MODES)
def test_cpu_float32_matches_reference(mode, algorithm):
    # float32 "direct" with groups 1 is the blocked AVX2 kernel (its padded NHWC buffer is filled by mapping).
    for case in CASES:
        x, w, b, stride, padding, dilation, groups = _tensors(case, seed=3)
        if _fits(mode, x, w, padding, dilation):
            _check(_native(algorithm), x, w, b, stride, padding, dilation, groups, mode, dtype=torch.float32)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "direct_simple"])
@pytest.mark.parametrize("mode", MODES)
def test_emulated_cuda_kernels_match_reference(mode, algorithm):
    for case in CASES[:5]:
        x, w, b, stride, padding, dilation, groups = _tensors(case, seed=4)
        if _fits(mode, x, w, padding, dilation):
            _check(_emulated(algorithm), x, w, b, stride, padding, dilation, groups, mode)


@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_conv2d_module(mode):
    torch.manual_seed(0)
    for padding in (1, (2, 1), "same"):
        ref = torch.nn.Conv2d(3, 5, (3, 4), padding=padding, padding_mode=mode, dtype=torch.float64)
        fast = fastconv.nn.Conv2d(3, 5, (3, 4), padding=padding, padding_mode=mode, dtype=torch.float64)
        fast.load_state_dict(ref.state_dict())
        x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
        assert torch.allclose(fast(x), ref(x), rtol=0, atol=1e-12)


def test_module_makes_no_padded_copy(monkeypatch):
    layer = fastconv.nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect", dtype=torch.float64)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    want = torch.nn.functional.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), layer.weight, layer.bias)

    def no_pad(*args, **kwargs):
        raise AssertionError("fastconv.nn.Conv2d padded a copy of its input")

    monkeypatch.setattr(F, "pad", no_pad)
    monkeypatch.setattr(torch.nn.functional, "pad", no_pad)
    y = layer(x)
    y.sum().backward()
    assert torch.allclose(y, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_gradgradcheck(mode):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)

    def fn(x, w, b):
        return fastconv.conv2d(x, w, b, (2, 1), (2, 1), (1, 2), 1, padding_mode=mode)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@given(
    mode=st.sampled_from(MODES),
    algorithm=st.sampled_from(CPU_ALGORITHMS),
    HW=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    RS=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    pads=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    channels_last=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_random_problems_match_reference(mode, algorithm, HW, RS, pads, stride, dilation, channels_last):
    H, W = HW
    limit = {"reflect": (H - 1, W - 1), "circular": (H, W), "replicate": (7, 7)}[mode]
    padding = (min(pads[0], limit[0]), min(pads[1], limit[1]))
    for d in range(2):  # the padded input must hold one dilated window
        if HW[d] + 2 * padding[d] < dilation[d] * (RS[d] - 1) + 1:
            return
    g = torch.Generator().manual_seed(H * 100 + W)
    x = torch.randn(2, 3, H, W, dtype=torch.float64, generator=g)
    w = torch.randn(4, 3, *RS, dtype=torch.float64, generator=g)
    b = torch.randn(4, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _check(_native(algorithm), x, w, b, stride, padding, dilation, 1, mode)


def test_zero_batch():
    x = torch.randn(0, 3, 5, 5)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = fastconv.conv2d(x, w, None, padding=1, padding_mode="reflect")
    assert y.shape == (0, 4, 5, 5)
    (dw,) = torch.autograd.grad(y.sum(), w)
    assert torch.equal(dw, torch.zeros_like(dw))


@pytest.mark.parametrize("mode,padding,message", [
    ("reflect", (3, 1), "should be less than the corresponding input dimension"),
    ("reflect", (1, 4), "should be less than the corresponding input dimension"),
    ("circular", (4, 1), "wrapping around more than once"),
])
def test_padding_too_large_for_mode(mode, padding, message):
    x, w = torch.randn(1, 2, 3, 4), torch.randn(2, 2, 3, 3)
    with pytest.raises(RuntimeError, match=message):
        fastconv.conv2d(x, w, padding=padding, padding_mode=mode)
    # torch.nn.Conv2d refuses the same call.
    ref = torch.nn.Conv2d(2, 2, 3, padding=padding, padding_mode=mode)
    with pytest.raises(RuntimeError):
        ref(x)


def test_replicate_takes_any_padding():
    x, w = torch.randn(1, 2, 2, 3, dtype=torch.float64), torch.randn(2, 2, 3, 3, dtype=torch.float64)
    ref = torch.nn.Conv2d(2, 2, 3, padding=6, padding_mode="replicate", bias=False, dtype=torch.float64)
    ref.weight.data.copy_(w)
    y = fastconv.conv2d(x, w, padding=6, padding_mode="replicate")
    assert torch.allclose(y, ref(x), rtol=0, atol=1e-12)


def test_bad_padding_mode_names_the_argument():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="padding_mode"):
        fastconv.conv2d(x, w, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding_mode"):
        torch.ops.fastconv.conv2d_fprop(x, w, None, [1, 1], [1, 1], [1, 1], 1, "auto", "mirror")


def test_empty_plane_with_padding_mode_is_refused():
    with pytest.raises(RuntimeError, match="non-zero"):
        fastconv.conv2d(torch.randn(1, 2, 0, 4), torch.randn(2, 2, 1, 1), padding_mode="replicate")


def test_explain_and_autotune_keys_tell_modes_apart():
    x, w = torch.randn(1, 2, 6, 6), torch.randn(4, 2, 3, 3)
    keys = {fastconv.explain(x, w, padding=1, padding_mode=m, verbose=False)["key"] for m in ("zeros",) + MODES}
    assert len(keys) == 4


def test_reference_reflect_padding_matches_torch_pad():
    # The reference's own mapping (numpy.pad) agrees with torch.nn.functional.pad for each mode.
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 5))
    for mode, np_mode in (("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")):
        want = F.pad(torch.from_numpy(x), (2, 1, 3, 2), mode=mode).numpy()
        got = np.pad(x, ((0, 0), (0, 0), (3, 2), (2, 1)), mode=np_mode)
        assert np.array_equal(got, want), mode
