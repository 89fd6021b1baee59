"""fastconv.conv2d on the CPU: every algorithm against the float64 reference and torch.nn.functional,
gradients of first and second order, operator registration (opcheck, torch.compile), determinism."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conv_cases import LAYOUTS, ConvCase, check_conv, conv_cases, make_tensors

ALGORITHMS = ["direct", "im2col", "im2col_blas", "auto"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=25, deadline=None)
@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS))
def test_matches_reference_and_torch_float64(algorithm, case, layout):
    check_conv(fastconv.conv2d, case, torch.float64, layout, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@settings(max_examples=15, deadline=None)
@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS))
def test_matches_reference_and_torch_float32(algorithm, case, layout):
    check_conv(fastconv.conv2d, case, torch.float32, layout, algorithm=algorithm)


SPECIAL_CASES = {
    "1x1": ConvCase(2, 5, 6, 7, 4, 1, 1),
    "1x1_stride2": ConvCase(2, 5, 7, 7, 4, 1, 1, stride=(2, 2)),
    "kernel_equals_input": ConvCase(2, 3, 5, 4, 2, 5, 4),
    "stride_larger_than_kernel": ConvCase(1, 2, 11, 10, 3, 2, 2, stride=(3, 4)),
    "depthwise": ConvCase(2, 6, 8, 8, 6, 3, 3, padding=(1, 1), groups=6),
    "depthwise_multiplier": ConvCase(2, 4, 7, 6, 8, 3, 3, padding=(1, 1), groups=4),
    "same_even_kernel": ConvCase(2, 3, 6, 7, 4, 4, 2, padding="same"),
    "same_dilated": ConvCase(1, 3, 9, 8, 2, 3, 2, padding="same", dilation=(2, 3)),
    "odd_everything": ConvCase(3, 3, 13, 11, 5, 3, 5, stride=(2, 3), padding=(2, 1), dilation=(2, 1)),
    "empty_batch": ConvCase(0, 3, 5, 5, 4, 3, 3),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", sorted(SPECIAL_CASES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_special_cases(algorithm, name, layout):
    check_conv(fastconv.conv2d, SPECIAL_CASES[name], torch.float64, layout, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("case", [ConvCase(2, 4, 6, 5, 4, 3, 2, stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                           groups=2),
                                  ConvCase(1, 2, 5, 6, 3, 2, 2, padding="same")])
def test_gradcheck_and_gradgradcheck(algorithm, case):
    x, w, b = make_tensors(case, torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, w, b))

    def fn(x, w, b):
        return fastconv.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups,
                               algorithm=algorithm)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_needs_input_grad_is_respected(monkeypatch):
    x, w, b = make_tensors(ConvCase(2, 3, 6, 6, 4, 3, 3), torch.float64)
    w.requires_grad_()
    called = []
    original = torch.ops.fastconv._conv2d_dgrad

    class Spy:
        def __call__(self, *args):
            called.append(args)
            return original(*args)

    monkeypatch.setattr(torch.ops.fastconv, "_conv2d_dgrad", Spy())
    # The autograd formula looked the op up at registration time, so spy through the profiler instead.
    with torch.autograd.profiler.profile() as prof:
        fastconv.conv2d(x, w, b).sum().backward()
    names = {e.name for e in prof.function_events}
    assert "fastconv::_conv2d_wgrad" in names
    assert "fastconv::_conv2d_dgrad" not in names, "grad of an input that does not need it was computed"
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_opcheck(algorithm):
    case = ConvCase(2, 4, 7, 6, 6, 3, 2, stride=(2, 1), padding=(1, 1), groups=2)
    x, w, b = make_tensors(case, torch.float32)
    params = ((2, 1), (1, 1, 1, 1), (1, 1), 2, algorithm)
    y = torch.ops.fastconv.conv2d_fprop(x, w, b, *params)
    dy = torch.randn_like(y)
    for requires_grad in (False, True):
        args = [t.clone().requires_grad_(requires_grad) for t in (x, w, b)]
        torch.library.opcheck(torch.ops.fastconv.conv2d_fprop, (*args, *params))
    torch.library.opcheck(torch.ops.fastconv._conv2d_dgrad, (dy, w, list(x.shape), *params))
    torch.library.opcheck(torch.ops.fastconv._conv2d_wgrad, (dy, x, list(w.shape), *params))
    torch.library.opcheck(torch.ops.fastconv._conv2d_bgrad, (dy,))
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.fastconv.conv2d_fprop, (xc, w, b, *params))


def test_torch_compile_fullgraph_has_no_graph_break():
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    w, b = model[0].weight, model[0].bias

    def f(x):
        return torch.relu(fastconv.conv2d(x, w, b, padding=1)).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compiled(x), f(x))
    compiled(x).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


# ------------------------------------------------------------------------------------------------
# The worked examples of the convolution lecture
# ------------------------------------------------------------------------------------------------
from lecture_examples import (FILTER_ONES3, FILTER_X3, LAYER6_INPUT, LAYER6_OUTPUT, LAYER6_WEIGHT,  # noqa: E402
                              LAYER10_INPUT, LAYER10_OUTPUT, LAYER10_PARAMS, LAYER10_WEIGHT, ONES7, X5, X7,
                              Y_ONES7_PAD1, Y_X5_X3, Y_X7_STRIDE1, Y_X7_STRIDE2)


def plane(a):
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lecture_5x5_with_x_filter(algorithm):
    y = fastconv.conv2d(plane(X5), plane(FILTER_X3), algorithm=algorithm)
    assert torch.equal(y[0, 0], torch.from_numpy(Y_X5_X3))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lecture_7x7_stride_and_padding(algorithm):
    w = plane(FILTER_ONES3)
    assert torch.equal(fastconv.conv2d(plane(X7), w, algorithm=algorithm)[0, 0], torch.from_numpy(Y_X7_STRIDE1))
    assert torch.equal(fastconv.conv2d(plane(X7), w, stride=2, algorithm=algorithm)[0, 0],
                       torch.from_numpy(Y_X7_STRIDE2))
    assert torch.equal(fastconv.conv2d(plane(ONES7), w, padding=1, algorithm=algorithm)[0, 0],
                       torch.from_numpy(Y_ONES7_PAD1))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lecture_layer_shapes_and_parameters(algorithm):
    x = torch.randn(LAYER10_INPUT)
    w, b = torch.randn(LAYER10_WEIGHT), torch.randn(LAYER10_WEIGHT[0])
    assert fastconv.conv2d(x, w, b, stride=1, padding=2, algorithm=algorithm).shape == LAYER10_OUTPUT
    assert w.numel() + b.numel() == LAYER10_PARAMS
    y = fastconv.conv2d(torch.randn(LAYER6_INPUT), torch.randn(LAYER6_WEIGHT), algorithm=algorithm)
    assert y.shape == LAYER6_OUTPUT


# ------------------------------------------------------------------------------------------------
# Semantics of the functional API
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_input_channels(algorithm):
    # The kernels compute the empty reduction's value: every output is its bias. The functional API
    # returns PyTorch's shape instead (0 output channels), for drop-in parity with its tests.
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(3, 0, 3, 3), torch.randn(3)
    y = torch.ops.fastconv.conv2d_fprop(x, w, b, [1, 1], [0, 0], [1, 1], 1, algorithm, "zeros")
    assert torch.equal(y, b.view(1, 3, 1, 1).expand(2, 3, 3, 3))
    assert fastconv.conv2d(x, w, b, algorithm=algorithm).shape == F.conv2d(x, w, b).shape == (2, 0, 3, 3)


def test_unbatched_input():
    x, w = torch.randn(3, 9, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y = fastconv.conv2d(x, w, padding=1)
    assert y.shape == (4, 9, 8)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))


def test_channels_last_weight_gives_channels_last_output_like_torch():
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    assert fastconv.conv2d(x, w).is_contiguous(memory_format=torch.channels_last)
    assert F.conv2d(x, w).is_contiguous(memory_format=torch.channels_last)


def test_backward_is_deterministic_across_runs_and_thread_counts():
    case = ConvCase(4, 8, 12, 12, 8, 3, 3, padding=(1, 1), groups=2)
    x, w, b = make_tensors(case, torch.float32)
    grad_out = torch.randn(4, 8, 12, 12)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2, 1, 2):
            torch.set_num_threads(n_threads)
            for algorithm in ("direct", "im2col"):
                xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
                fastconv.conv2d(xr, wr, br, padding=1, groups=2, algorithm=algorithm).backward(grad_out)
                results.append((algorithm, xr.grad, wr.grad, br.grad))
    finally:
        torch.set_num_threads(threads)
    for algorithm in ("direct", "im2col"):
        runs = [r[1:] for r in results if r[0] == algorithm]
        for run in runs[1:]:
            for a, b_ in zip(runs[0], run):
                assert torch.equal(a, b_), f"{algorithm}: gradients differ between runs"


def test_algorithm_name_is_checked():
    with pytest.raises(ValueError, match="algorithm"):
        fastconv.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm"):
        torch.ops.fastconv.conv2d_fprop(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), None, [1, 1], [0, 0],
                                        [1, 1], 1, "winograd")


@pytest.mark.parametrize("conv", [fastconv.conv2d, fastconv.emulation.conv2d], ids=["cpu", "emulated"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_strided_bias(conv, algorithm):
    # A bias that is a strided view (every other element; a complex bias's .real is one) is read by its
    # strides, not as if it were dense.
    x, w = torch.randn(2, 4, 7, 7, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64)
    b = torch.randn(12, dtype=torch.float64)[::2]
    torch.testing.assert_close(conv(x, w, b, padding=1, algorithm=algorithm), F.conv2d(x, w, b, padding=1))
