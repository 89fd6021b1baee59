"""The float32 AVX2 max_pool2d kernels (csrc/cpu/max_pool2d_avx2.cpp) against torch, bit for bit, and the
float64 reference: shapes chosen so the vector paths run (NCHW: stride_w 1 or 2, unit dilation, rows
with at least 8 interior output columns, tails that overlap the last full block, scalar edge columns;
channels_last: 32-, 16- and 8-channel blocks and a scalar channel tail), on data with ties, NaN and
±inf. On a CPU without AVX2 (or a non-x86 build) the same cases run through the scalar kernels.

Outputs are poisoned by conftest, so an element a kernel forgets to write fails."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv import reference

from pool_cases import all_padding_mask, tap_positions

NAN, INF = float("nan"), float("inf")
CL = torch.channels_last


def values(shape, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(shape, generator=gen)
    x = torch.randint(1, 4, shape, generator=gen).float()  # few values: many ties in every window
    if kind == "nan":
        x[torch.rand(shape, generator=gen) < 0.15] = NAN
        x[torch.rand(shape, generator=gen) < 0.1] = -INF
        x[torch.rand(shape, generator=gen) < 0.05] = INF
    elif kind == "neg_inf":  # whole windows of -inf: the argmax stays on the first tap
        x[torch.rand(shape, generator=gen) < 0.7] = -INF
    return x


def check(x, kernel, stride, padding, dilation=1, ceil_mode=False, grad=True):
    y, idx = fastconv.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    y_torch, idx_torch = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert y.stride() == y_torch.stride() and idx.stride() == idx_torch.stride()
    torch.testing.assert_close(y, y_torch, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, idx_torch)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    y_ref, idx_ref = reference.max_pool2d_fprop(x.double().numpy(), pair(kernel), pair(stride), pair(padding),
                                                pair(dilation), ceil_mode)
    np.testing.assert_array_equal(y.double().numpy(), y_ref)
    np.testing.assert_array_equal(idx.numpy(), idx_ref)
    if grad:
        layout = CL if y.is_contiguous(memory_format=CL) and not y.is_contiguous() else torch.contiguous_format
        dy = torch.randn(y.shape, dtype=y.dtype).contiguous(memory_format=layout)
        dx = torch.ops.fastconv._max_pool2d_bprop(dy, x, idx, list(pair(kernel)), list(pair(stride)),
                                                  list(pair(padding)), list(pair(dilation)), ceil_mode)
        dx_torch = torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, list(pair(kernel)), list(pair(stride)), list(pair(padding)), list(pair(dilation)), ceil_mode,
            idx_torch)
        assert dx.stride() == dx_torch.stride()
        assert torch.equal(dx, dx_torch)  # same order of sums: bitwise
    check_taps(x, pair(kernel), pair(stride), pair(padding), pair(dilation), ceil_mode, y, idx, grad)


def check_taps(x, kernel, stride, padding, dilation, ceil_mode, y, idx, grad):
    """The taps pair through the same vector paths: the same values, taps naming the indices' elements
    (decoded here by definition: h = p*sh - ph + (t // S)*dh, w = q*sw - pw + (t % S)*dw), the same
    backward bit for bit."""
    args = (list(kernel), list(stride), list(padding), list(dilation), ceil_mode)
    y_taps, taps = torch.ops.fastconv._max_pool2d_fprop_taps(x, *args)
    torch.testing.assert_close(y_taps, y, rtol=0, atol=0, equal_nan=True)
    assert taps.dtype == torch.uint8 and taps.stride() == idx.stride()
    h, w = tap_positions(taps, kernel, stride, padding, dilation)
    H, W = x.shape[-2:]
    P, Q = taps.shape[-2:]
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    # Exactly the windows wholly in the padding record a tap outside the input. PyTorch's index for
    # them is a seed past the plane, or one that wraps onto a pixel of the next row, where its CPU
    # backward then sends the gradient of a -inf; the taps form sends it nowhere (the output depends on
    # no input; PyTorch's CUDA backward does the same).
    dead = all_padding_mask(x.shape, P, Q, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(inside, np.broadcast_to(~dead, inside.shape))
    np.testing.assert_array_equal(np.where(inside, h * W + w, -1), np.where(inside, idx.numpy(), -1))
    if grad:
        dy = torch.randn(y.shape, dtype=y.dtype).contiguous(memory_format=torch.preserve_format)
        dx_taps = torch.ops.fastconv._max_pool2d_bprop_taps(dy, x, taps, *args)
        dx = torch.ops.fastconv._max_pool2d_bprop(dy * torch.from_numpy(inside), x, idx, *args)
        assert torch.equal(dx_taps, dx) and dx_taps.stride() == dx.stride()


# NCHW: widths around the 8-column block boundaries for both strides, every kernel width the vector
# kernel specialises (2, 3) and the generic one (1, 4, 5), padding at both edges, ceil_mode.
NCHW_CASES = [
    (kernel, stride, pad, ceil, W)
    for kernel, stride in itertools.product([1, 2, 3, 4, 5], [1, 2])
    for pad in sorted({0, kernel // 2})
    for ceil in (False, True)
    for W in (9, 16, 23, 24, 25, 37, 40, 57)
]


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "neg_inf"])
@pytest.mark.parametrize("kernel, stride, pad, ceil, W", NCHW_CASES)
def test_nchw_vector_rows(kernel, stride, pad, ceil, W, kind):
    x = values((2, 3, 7, W), kind, seed=W * 100 + kernel * 10 + stride)
    check(x, kernel, stride, pad, ceil_mode=ceil)


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("kernel, stride, pad", [((3, 2), (2, 1), (1, 0)), ((2, 3), (3, 2), (0, 1)),
                                                 ((3, 3), (1, 2), (1, 1)), ((1, 3), (2, 2), (0, 1))])
def test_nchw_vector_rows_rectangular(kernel, stride, pad, kind):
    x = values((1, 4, 13, 50), kind, seed=7)
    check(x, kernel, stride, pad)
    check(x, kernel, stride, pad, ceil_mode=True)


def test_nchw_dilation_and_stride3_stay_scalar_and_correct():
    x = values((2, 2, 11, 45), "ties", seed=3)
    check(x, 3, 2, 1, dilation=2)
    check(x, 3, 3, 1)
    check(x, 2, (1, 3), 0, ceil_mode=True)


@pytest.mark.parametrize("kind", ["normal", "nan"])
def test_nchw_standard_shapes(kind):
    check(values((2, 5, 112, 112), kind, 1), 3, 2, 1)                  # ResNet stem
    check(values((2, 5, 56, 56), kind, 2), 2, 2, 0)                    # VGG
    check(values((2, 5, 55, 55), kind, 3), 3, 2, 0, ceil_mode=True)   # AlexNet


def test_nchw_nan_and_tie_rules_in_vector_lanes():
    # One row of 40 columns, kernel (1, 3) stride 2: each window's rule is visible per lane.
    row = torch.full((40,), 1.0)
    row[5] = NAN          # window q=2 covers 4, 5, 6: NaN at 5
    row[[8, 9]] = NAN     # q=4 covers 8, 9, 10: the last NaN (9) wins
    row[[12, 14]] = 7.0   # q=6 covers 12, 13, 14: tie, the first (12) wins
    row[[17, 18]] = INF   # q=8 covers 16, 17, 18 (tie of +inf): 17
    x = row.view(1, 1, 1, 40).repeat(1, 2, 3, 1)
    y, idx = fastconv.max_pool2d(x, (1, 3), 2, return_indices=True)
    assert idx[0, 0, 0, [2, 4, 6, 8]].tolist() == [5, 9, 12, 17]
    check(x, (1, 3), 2, 0)
    check(x, (3, 3), 2, 1)


# channels_last: C covering 4-, 2- and 1-vector blocks and a scalar tail; dilation and padding.
CL_CHANNELS = [1, 7, 8, 9, 16, 24, 31, 32, 33, 40, 48, 56, 64, 67]


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "neg_inf"])
@pytest.mark.parametrize("C", CL_CHANNELS)
def test_channels_last_blocks(C, kind):
    x = values((2, C, 9, 8), kind, seed=C).contiguous(memory_format=CL)
    check(x, 3, 2, 1)
    check(x, 3, 2, 0, ceil_mode=True)
    check(x, 2, 2, 0)
    check(x, (2, 3), (1, 2), (1, 1), dilation=(2, 1))


@pytest.mark.parametrize("C", [8, 40])
def test_channels_last_window_wholly_in_padding(C):
    # Kernel 2, dilation 3, padding 1 on a 3x2 input: some windows have no tap in bounds, their index is
    # PyTorch's seed (past the plane, or wrapping onto another pixel).
    x = values((2, C, 3, 2), "normal", seed=5).contiguous(memory_format=CL)
    check(x, 2, 1, 1, dilation=3, grad=False)


@pytest.mark.parametrize("kind", ["normal", "nan"])
def test_channels_last_large_output_streams(kind):
    # Outputs over 16 MiB are written with non-temporal stores (C a multiple of 8; here 25 MB) ...
    x = values((8, 64, 128, 128), kind, seed=11).contiguous(memory_format=CL)
    check(x, 2, 2, 0)
    # ... and with plain stores where the rows are not aligned for them (C % 8 != 0).
    check(values((8, 68, 124, 124), kind, seed=12).contiguous(memory_format=CL), 2, 2, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nchw_backward_large_outputs(dtype):
    # grad_input over 16 MiB: planes up to 256 KiB are staged and streamed out (here 8x64x100x100) ...
    check(values((8, 64, 100, 100), "ties", seed=13).to(dtype), 3, 2, 1)
    # ... larger planes are summed in place.
    x = values((1, 2, 260, 261), "ties", seed=14).to(dtype)
    check(x, 3, 2, 1)
    check(x, 3, 1, 1)
