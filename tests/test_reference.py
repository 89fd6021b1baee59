"""Check fastconv.reference against torch.nn.functional in float64.

torch is only the oracle here; the reference itself must not use it.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings, strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import lecture_examples as lec
from fastconv import reference
from fastconv.reference import (conv2d_bgrad, conv2d_dgrad, conv2d_fprop,
                                conv2d_wgrad, max_pool2d_bprop,
                                max_pool2d_fprop)
from pool_cases import INF, NAN, PLANE_CASES, ROW_CASES, row_id

# The tensors here are tiny: a thread pool only adds contention, which made
# the suite several times slower on a busy 2-core machine.
torch.set_num_threads(1)

TOL = dict(rtol=1e-10, atol=1e-12)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


def plane(a):
    """An (H, W) array as a (1, 1, H, W) batch."""
    return np.asarray(a, dtype=np.float64)[None, None]


# ---------------------------------------------------------------- conv2d

@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    c_per_group = 1 if depthwise else draw(st.integers(1, 3))
    k_per_group = draw(st.integers(1, 3))
    R, S = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if draw(st.booleans()):
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        padding, pad4 = (ph, pw), (ph, ph, pw, pw)
    else:
        pad4 = tuple(draw(st.integers(0, 2)) for _ in range(4))
        padding = pad4
    # Smallest input that still yields one output row/column, plus a bit.
    H = max(1, dilation[0] * (R - 1) + 1 - pad4[0] - pad4[1])
    W = max(1, dilation[1] * (S - 1) + 1 - pad4[2] - pad4[3])
    H += draw(st.integers(0, 4))
    W += draw(st.integers(0, 4))
    N = draw(st.integers(0, 2))
    C, K = groups * c_per_group, groups * k_per_group
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dict(x=rng.standard_normal((N, C, H, W)),
                w=rng.standard_normal((K, c_per_group, R, S)),
                b=rng.standard_normal(K),
                dy_seed=rng.integers(2**32),
                stride=stride, padding=padding, pad4=pad4,
                dilation=dilation, groups=groups)


def torch_conv(x, w, b, stride, pad4, dilation, groups):
    """F.conv2d, with asymmetric padding applied by F.pad beforehand."""
    top, bottom, left, right = pad4
    if top == bottom and left == right:
        return F.conv2d(x, w, b, stride, (top, left), dilation, groups)
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, w, b, stride, 0, dilation, groups)


@settings(max_examples=200, deadline=None)
@given(conv_problems())
def test_conv2d_matches_torch(p):
    geom = dict(stride=p["stride"], padding=p["padding"],
                dilation=p["dilation"], groups=p["groups"])
    x = t64(p["x"]).requires_grad_()
    w = t64(p["w"]).requires_grad_()
    b = t64(p["b"]).requires_grad_()
    y = torch_conv(x, w, b, p["stride"], p["pad4"], p["dilation"],
                   p["groups"])
    dy = np.random.default_rng(p["dy_seed"]).standard_normal(tuple(y.shape))
    y.backward(t64(dy))

    y_ref = conv2d_fprop(p["x"], p["w"], p["b"], **geom)
    assert y_ref.shape == tuple(y.shape)
    assert_allclose(y_ref, y.detach().numpy(), **TOL)
    assert_allclose(conv2d_dgrad(dy, p["w"], p["x"].shape, **geom),
                    x.grad.numpy(), **TOL)
    assert_allclose(conv2d_wgrad(dy, p["x"], p["w"].shape, **geom),
                    w.grad.numpy(), **TOL)
    assert_allclose(conv2d_bgrad(dy), b.grad.numpy(), **TOL)


def test_conv2d_without_bias_and_padding_forms_agree():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((4, 2, 3, 3))
    y2 = conv2d_fprop(x, w, None, 1, (1, 2), 1, 2)
    y4 = conv2d_fprop(x, w, None, 1, (1, 1, 2, 2), 1, 2)
    assert_array_equal(y2, y4)
    assert_allclose(y2, F.conv2d(t64(x), t64(w), None, 1, (1, 2), 1, 2), **TOL)


def test_conv2d_padding_half_kernel_keeps_size():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 9, 8))
    for k in (3, 5, 7):
        w = rng.standard_normal((3, 2, k, k))
        y = conv2d_fprop(x, w, padding=(k // 2, k // 2))
        assert y.shape == (1, 3, 9, 8)
        assert_allclose(y, F.conv2d(t64(x), t64(w), padding=k // 2), **TOL)


def test_conv2d_dilation_by_hand():
    # A dilated 2x2 ones filter sums the corners of a 3x3 block; on the
    # arange plane (linear in h and w) that is 4 times the block centre.
    y = conv2d_fprop(plane(lec.X7), plane(np.ones((2, 2))), dilation=(2, 2))
    assert_array_equal(y[0, 0], 4 * lec.X7[1:-1, 1:-1])


def test_conv2d_rejects_empty_output_and_bad_groups():
    with pytest.raises(ValueError):
        conv2d_fprop(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError):
        conv2d_fprop(np.ones((1, 3, 4, 4)), np.ones((2, 1, 3, 3)), groups=2)


# ------------------------------------------------------------ max_pool2d

@st.composite
def pool_problems(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3),
                                                 st.integers(1, 3))))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)),
               draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    H = max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0])
    W = max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1])
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)),
             H + draw(st.integers(0, 5)), W + draw(st.integers(0, 5)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["normal", "ties", "nan"]))
    if values == "normal":
        x = rng.standard_normal(shape)
    elif values == "ties":
        x = rng.integers(1, 4, shape).astype(np.float64)
    else:
        # Few distinct values, several NaNs and -infs per window.
        x = rng.integers(1, 4, shape).astype(np.float64)
        x[rng.random(shape) < 0.2] = NAN
        x[rng.random(shape) < 0.1] = -INF
    return dict(x=x, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode,
                dy_seed=rng.integers(2**32))


def torch_pool(x, kernel, stride, padding, dilation, ceil_mode):
    return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                        return_indices=True)


@settings(max_examples=300, deadline=None)
@given(pool_problems())
def test_max_pool2d_matches_torch(p):
    geom = dict(stride=p["stride"], padding=p["padding"],
                dilation=p["dilation"], ceil_mode=p["ceil_mode"])
    y_ref, idx_ref = max_pool2d_fprop(p["x"], p["kernel"], **geom)
    y, idx = torch_pool(t64(p["x"]), p["kernel"], **geom)
    assert y_ref.shape == tuple(y.shape)
    assert idx_ref.dtype == np.int64
    assert_array_equal(y_ref, y.numpy())        # NaN == NaN here
    assert_array_equal(idx_ref, idx.numpy())


@settings(max_examples=200, deadline=None)
@given(pool_problems())
def test_max_pool2d_bprop_matches_torch(p):
    N, C, H, W = p["x"].shape
    geom = dict(stride=p["stride"], padding=p["padding"],
                dilation=p["dilation"], ceil_mode=p["ceil_mode"])
    _, idx_ref = max_pool2d_fprop(p["x"], p["kernel"], **geom)
    # A dilated window that lies wholly in the padding reports an index
    # outside the plane (see test_max_pool2d_window_all_padding); torch's
    # backward would write out of bounds, so such problems are skipped.
    assume(((idx_ref >= 0) & (idx_ref < H * W)).all())
    x = t64(p["x"]).requires_grad_()
    y, _ = torch_pool(x, p["kernel"], **geom)
    dy = np.random.default_rng(p["dy_seed"]).standard_normal(idx_ref.shape)
    y.backward(t64(dy))
    dx = max_pool2d_bprop(dy, idx_ref, p["x"].shape)
    assert_allclose(dx, x.grad.numpy(), **TOL)


def pool_both(x, *args, **kwargs):
    """Reference and torch results for one plane, as (H, W) arrays."""
    y_ref, idx_ref = max_pool2d_fprop(plane(x), *args, **kwargs)
    y, idx = F.max_pool2d(t64(plane(x)), *args, return_indices=True, **kwargs)
    assert_array_equal(y_ref, y.numpy())
    assert_array_equal(idx_ref, idx.numpy())
    return y_ref[0, 0], idx_ref[0, 0]


@pytest.mark.parametrize("row, value, index", ROW_CASES, ids=[row_id(c) for c in ROW_CASES])
def test_max_pool2d_nan_and_tie_rules(row, value, index):
    y, idx = pool_both([row], (1, len(row)))
    assert_array_equal(y, [[value]])
    assert_array_equal(idx, [[index]])


@pytest.mark.parametrize("case", PLANE_CASES, ids=lambda c: c.name)
def test_max_pool2d_nan_scan_order_overlap_and_padding(case):
    y, idx = pool_both(case.plane, *case.args)
    assert_array_equal(y, case.values)
    assert_array_equal(idx, case.indices)


def test_max_pool2d_ceil_mode_drops_window_starting_in_padding():
    x = np.random.default_rng(2).standard_normal((5, 5))
    # floor: (5 + 2 - 1 - 1) // 2 + 1 = 3; ceil would give 4, but the 4th
    # window would start at 3*2 - 1 = 5, inside the right padding: dropped.
    y, _ = pool_both(x, 2, 2, 1, ceil_mode=True)
    assert y.shape == (3, 3)
    # Without padding ceil_mode keeps the partial last window (starts at 4).
    y, idx = pool_both(x, 2, 2, 0, ceil_mode=True)
    assert y.shape == (3, 3)
    assert y[2, 2] == x[4, 4] and idx[2, 2] == 24
    y, _ = pool_both(x, 2, 2, 0, ceil_mode=False)
    assert y.shape == (2, 2)


def test_max_pool2d_padding_half_kernel_and_dilation():
    x = np.random.default_rng(3).standard_normal((7, 6))
    y, _ = pool_both(x, 3, 1, 1)                 # pad = k // 2 keeps size
    assert y.shape == (7, 6)
    y, _ = pool_both(x, 4, 1, 2)                 # pad = k / 2, even kernel
    assert y.shape == (8, 7)
    y, idx = pool_both(x, 2, 1, 0, 3)            # taps 3 apart
    assert y.shape == (4, 3)
    for p in range(4):
        for q in range(3):
            taps = x[p:p + 4:3, q:q + 4:3]
            assert y[p, q] == taps.max()


def test_max_pool2d_window_all_padding():
    # Kernel 2, dilation 3, padding 1 on a 2x2 input: the one window's taps
    # sit at -1 and 2 on both axes, all outside. PyTorch returns -inf and
    # seeds the index with the first tap >= 0, (2, 2) -> 2*2 + 2 = 6, which
    # is past the plane. The reference copies that, and bprop refuses it.
    y, idx = pool_both([[1.0, 2.0], [3.0, 4.0]], 2, 1, 1, 3)
    assert_array_equal(y, [[-INF]])
    assert_array_equal(idx, [[6]])
    with pytest.raises(ValueError):
        max_pool2d_bprop(np.ones((1, 1, 1, 1)), idx[None, None], (1, 1, 2, 2))


def test_max_pool2d_bprop_sums_overlapping_picks():
    # Stride 1 windows that all pick the same pixel add their gradients.
    x = plane([[9, 1, 2], [3, 4, 5], [6, 7, 8]])
    _, idx = max_pool2d_fprop(x, 2, 1)
    dx = max_pool2d_bprop(plane([[1, 10], [100, 1000]]), idx, x.shape)
    assert_array_equal(dx[0, 0], [[1, 0, 0], [0, 0, 10], [0, 100, 1000]])


def test_max_pool2d_rejects_padding_over_half_kernel():
    with pytest.raises(ValueError):
        max_pool2d_fprop(np.ones((1, 1, 5, 5)), 3, 1, 2)


# ---------------------------------------------------- lecture examples

def test_lecture_5x5_with_x_filter():
    y = conv2d_fprop(plane(lec.X5), plane(lec.FILTER_X3))
    assert_array_equal(y[0, 0], lec.Y_X5_X3)


def test_lecture_7x7_with_3x3_filter():
    w = plane(lec.FILTER_ONES3)
    y1 = conv2d_fprop(plane(lec.X7), w, stride=(1, 1))
    y2 = conv2d_fprop(plane(lec.X7), w, stride=(2, 2))
    y3 = conv2d_fprop(plane(lec.ONES7), w, stride=(1, 1), padding=(1, 1))
    assert y1.shape[2:] == (5, 5) and y2.shape[2:] == (3, 3)
    assert y3.shape[2:] == (7, 7)
    assert_array_equal(y1[0, 0], lec.Y_X7_STRIDE1)
    assert_array_equal(y2[0, 0], lec.Y_X7_STRIDE2)
    assert_array_equal(y3[0, 0], lec.Y_ONES7_PAD1)


def test_lecture_ten_5x5_filters_keep_32x32():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(lec.LAYER10_INPUT)
    w = rng.standard_normal(lec.LAYER10_WEIGHT)
    b = rng.standard_normal(lec.LAYER10_WEIGHT[0])
    assert w.size + b.size == lec.LAYER10_PARAMS
    y = conv2d_fprop(x, w, b, stride=(1, 1), padding=(2, 2))
    assert y.shape == lec.LAYER10_OUTPUT
    # One output pixel by hand: the 5x5x3 block around (10, 20), since
    # padding 2 centres the filter on the pixel.
    assert np.isclose(y[0, 7, 10, 20],
                      np.sum(x[0, :, 8:13, 18:23] * w[7]) + b[7])


def test_lecture_six_5x5x3_filters_give_28x28_maps():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(lec.LAYER6_INPUT)
    w = rng.standard_normal(lec.LAYER6_WEIGHT)
    y = conv2d_fprop(x, w)
    assert y.shape == lec.LAYER6_OUTPUT
    assert np.isclose(y[0, 5, 27, 0], np.sum(x[0, :, 27:32, 0:5] * w[5]))


def test_lecture_max_pool_2x2_stride_2():
    y, idx = max_pool2d_fprop(plane(lec.POOL_X), (2, 2), (2, 2))
    assert_array_equal(y[0, 0], lec.POOL_Y)
    assert_array_equal(idx[0, 0], lec.POOL_INDICES)


# ------------------------------------------------------------ hygiene

def test_reference_does_not_import_torch():
    # Load the module file on its own (the fastconv package itself loads torch): the reference must
    # stand apart from the code it checks.
    path = reference.__file__
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('reference', {path!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
