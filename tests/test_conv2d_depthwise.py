"""The depthwise kernel (groups == C == K, csrc/cpu/conv2d_depthwise.cpp) behind algorithm "direct" and auto:
forward and the three gradients against the float64 reference and torch in every layout, channel tails (C not
a multiple of the 8-lane vector, C < 8, several wgrad channel groups), strides, dilation, asymmetric padding,
batch 0 and 1, the portable path, gradcheck, and bitwise determinism across thread counts. conftest poisons
every output with NaN, so an element the kernel never writes fails check_conv."""
import pytest
import torch
import torch.nn.functional as F

import fastconv
from conv_cases import ConvCase, check_conv, make_tensors

LAYOUTS = ("contiguous", "channels_last", "strided")


def dw(N, C, H, W, R, S, **kw):
    return ConvCase(N, C, H, W, C, R, S, groups=C, **kw)


CASES = {
    "3x3_pad1": dw(2, 16, 9, 10, 3, 3, padding=(1, 1)),
    "c8_exact_vector": dw(2, 8, 6, 7, 3, 3, padding=(1, 1)),
    "c13_tail": dw(2, 13, 7, 9, 3, 3, padding=(1, 1)),
    "c3_below_vector": dw(3, 3, 6, 5, 3, 3, padding=(1, 1)),
    "c1": dw(2, 1, 6, 6, 3, 3, padding=(1, 1)),
    "c20_group_tail": dw(2, 20, 5, 6, 3, 3, padding=(1, 1)),
    "c37_two_groups": dw(2, 37, 6, 5, 3, 3, padding=(1, 1)),
    "c70_three_groups": dw(1, 70, 4, 5, 3, 3, padding=(1, 1), bias=False),
    "stride2": dw(2, 11, 11, 10, 3, 3, stride=(2, 2), padding=(1, 1)),
    "stride_3x2_no_pad": dw(2, 9, 13, 11, 3, 3, stride=(3, 2)),
    "dilation2": dw(2, 10, 9, 9, 3, 3, padding=(2, 2), dilation=(2, 2)),
    "stride_and_dilation": dw(2, 12, 12, 11, 3, 3, stride=(2, 3), padding=(2, 1), dilation=(2, 1)),
    "same_even_4x4": dw(2, 9, 7, 8, 4, 4, padding="same"),
    "same_even_2x4_dilated": dw(1, 17, 8, 9, 2, 4, padding="same", dilation=(2, 1)),
    "5x5": dw(2, 24, 8, 9, 5, 5, padding=(2, 2)),
    "1x3": dw(2, 19, 5, 8, 1, 3, padding=(0, 1)),
    "3x1_valid": dw(2, 7, 8, 5, 3, 1, padding="valid"),
    "1x1": dw(2, 10, 4, 5, 1, 1),
    "padding_beyond_window": dw(1, 9, 3, 4, 3, 3, padding=(3, 2)),
    "kernel_equals_input": dw(2, 5, 4, 5, 4, 5),
    "batch1": dw(1, 32, 6, 6, 3, 3, padding=(1, 1)),
    "batch0": dw(0, 12, 5, 5, 3, 3, padding=(1, 1)),
    "no_bias": dw(2, 14, 6, 6, 3, 3, padding=(1, 1), bias=False),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("algorithm", ["direct", "auto"])
def test_depthwise_matches_reference_and_torch(algorithm, name, layout, dtype):
    check_conv(fastconv.conv2d, CASES[name], dtype, layout, algorithm=algorithm)


@pytest.fixture
def portable():
    fastconv._C._set_depthwise_force_portable(True)
    yield
    fastconv._C._set_depthwise_force_portable(False)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["3x3_pad1", "c13_tail", "c3_below_vector", "c37_two_groups", "stride_and_dilation",
                                  "same_even_4x4", "padding_beyond_window"])
def test_depthwise_portable_float32(portable, name, layout):
    check_conv(fastconv.conv2d, CASES[name], torch.float32, layout, algorithm="direct")


@pytest.mark.parametrize("name", ["3x3_pad1", "c13_tail"])
def test_depthwise_weight_channels_last(name):
    """A channels_last weight (for [C, 1, R, S] the strides differ, the layout is ambiguous) with NCHW input."""
    case = CASES[name]
    x, w, b = make_tensors(case, torch.float32)
    w = w.contiguous(memory_format=torch.channels_last)
    y = fastconv.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups, algorithm="direct")
    torch.testing.assert_close(y, F.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [dw(2, 5, 6, 5, 3, 3, stride=(2, 1), padding=(1, 1), dilation=(1, 2)),
                                  dw(1, 9, 5, 6, 2, 3, padding="same")])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_depthwise_gradcheck(case, channels_last):
    x, w, b = make_tensors(case, torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = tuple(t.requires_grad_() for t in (x, w, b))

    def fn(x, w, b):
        return fastconv.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups, algorithm="direct")

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def fwd_bwd(case, channels_last, algorithm):
    x, w, b = make_tensors(case, torch.float32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y = fastconv.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups, algorithm=algorithm)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    return (y.detach(), *torch.autograd.grad(y, (x, w, b), dy))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", [dw(6, 45, 11, 9, 3, 3, padding=(1, 1)),
                                  dw(9, 6, 10, 10, 3, 3, stride=(2, 2), padding=(1, 1))], ids=["c45", "c6_n9"])
def test_depthwise_bitwise_deterministic_across_threads(case, channels_last):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = fwd_bwd(case, channels_last, "direct")
        assert all(torch.equal(a, b) for a, b in zip(first, fwd_bwd(case, channels_last, "direct")))
        for n in (1, 3):
            torch.set_num_threads(n)
            again = fwd_bwd(case, channels_last, "direct")
            for i, (a, b) in enumerate(zip(first, again)):
                assert torch.equal(a, b), f"result {i} differs bitwise with {n} threads"
    finally:
        torch.set_num_threads(old)


def test_explain_names_the_depthwise_kernel():
    x, w = torch.randn(2, 16, 10, 10), torch.randn(16, 1, 3, 3)
    for channels_last in (False, True):
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        plan = fastconv.explain(xi, w, padding=1, groups=16, verbose=False)
        for p in (plan, plan["dgrad"], plan["wgrad"]):
            assert p["algorithm"].startswith("direct") and "depthwise" in p["algorithm"], p
            assert "depthwise" in p["reason"]
    # a channel multiplier of 2 is not the depthwise kernel's problem
    plan = fastconv.explain(x, torch.randn(32, 1, 3, 3), padding=1, groups=16, algorithm="direct", verbose=False)
    assert "depthwise" not in plan["algorithm"]
    # the explanation matches what runs
    y = fastconv.conv2d(x, w, padding=1, groups=16)
    assert torch.equal(y, fastconv.conv2d(x, w, padding=1, groups=16, algorithm="direct"))
