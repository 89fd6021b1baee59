"""Autocast: fastconv's conv2d follows torch.nn.functional.conv2d's rule (run in the autocast dtype,
float32 inputs cast, float64 left alone), max_pool2d runs in its input's dtype, gradients come back in the
parameters' dtype. Each test compares with what torch itself does for the same model."""
import pytest
import torch
import torch.nn.functional as F

import fastconv


def model(conv, pool, x, w1, b1, w2):
    y = pool(torch.relu(conv(x, w1, b1, 1, 1)), 2)
    return conv(y, w2, None, 1, 1)


def params(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 10, generator=g, dtype=dtype).to(device)
    w1 = torch.randn(8, 3, 3, 3, generator=g, dtype=dtype).to(device).requires_grad_()
    b1 = torch.randn(8, generator=g, dtype=dtype).to(device).requires_grad_()
    w2 = torch.randn(4, 8, 3, 3, generator=g, dtype=dtype).to(device).requires_grad_()
    return x, w1, b1, w2


def run(conv, pool, device, autocast_dtype, dtype=torch.float32):
    x, w1, b1, w2 = params(device, dtype)
    with torch.autocast(device, dtype=autocast_dtype):
        y = model(conv, pool, x, w1, b1, w2)
        inner = pool(conv(x, w1, b1, 1, 1), 2)
    y.float().square().sum().backward()
    return y, inner, [t.grad for t in (w1, b1, w2)]


def compare(device, autocast_dtype, dtype=torch.float32, algorithm="auto"):
    conv = lambda *a: fastconv.conv2d(*a, algorithm=algorithm)  # noqa: E731
    y, inner, grads = run(conv, fastconv.max_pool2d, device, autocast_dtype, dtype)
    y_t, inner_t, grads_t = run(F.conv2d, F.max_pool2d, device, autocast_dtype, dtype)
    assert y.dtype == y_t.dtype and inner.dtype == inner_t.dtype
    assert [g.dtype for g in grads] == [g.dtype for g in grads_t]
    tol = {torch.bfloat16: 0.05, torch.float16: 5e-3}.get(y.dtype, 1e-4)
    scale = lambda t: t.abs().max().float().item() + 1  # noqa: E731
    torch.testing.assert_close(y.float(), y_t.float(), rtol=0, atol=tol * scale(y_t))
    for g, g_t in zip(grads, grads_t):
        torch.testing.assert_close(g.float(), g_t.float(), rtol=0, atol=3 * tol * scale(g_t))
    return y, grads


@pytest.mark.parametrize("algorithm", fastconv.ALGORITHMS)
def test_cpu_autocast_bfloat16_as_torch(algorithm):
    y, grads = compare("cpu", torch.bfloat16, algorithm=algorithm)
    assert y.dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in grads)


def test_cpu_autocast_follows_the_requested_dtype():
    y, grads = compare("cpu", torch.float16)
    assert y.dtype == torch.float16 and all(g.dtype == torch.float32 for g in grads)


def test_cpu_autocast_leaves_float64_alone():
    y, grads = compare("cpu", torch.bfloat16, dtype=torch.float64)
    assert y.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)


def test_max_pool2d_runs_in_its_input_dtype_under_autocast():
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu"):
        assert fastconv.max_pool2d(x, 2).dtype == torch.float32
        xb = x.bfloat16().requires_grad_()
        y, i = fastconv.max_pool2d(xb, 3, 2, 1, return_indices=True)
        y_t, i_t = F.max_pool2d(xb, 3, 2, 1, return_indices=True)
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_t) and torch.equal(i, i_t)
    y.sum().backward()
    assert xb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d_reduced_precision_cpu(dtype, channels_last):
    """The tiny dispatch addition in csrc/cpu/max_pool2d.cpp: values, indices, gradient exactly as torch's."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 19, 9, 8, generator=g).round(decimals=1).to(dtype)  # ties after rounding
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, i = fastconv.max_pool2d(xa, 3, 1, 1, return_indices=True)
    y_t, i_t = F.max_pool2d(xb, 3, 1, 1, return_indices=True)
    assert torch.equal(y, y_t) and torch.equal(i, i_t)
    dy = torch.randn(y.shape, generator=g).to(dtype)
    y.backward(dy)
    y_t.backward(dy)
    # overlapping windows sum up to 9 gradients per input; torch may accumulate them in float
    torch.testing.assert_close(xa.grad.float(), xb.grad.float(), rtol=0.02, atol=0.02)


def test_outside_autocast_nothing_changes():
    x, w1, b1, w2 = params()
    assert fastconv.conv2d(x, w1, b1).dtype == torch.float32
    with torch.autocast("cpu", enabled=False):
        assert fastconv.conv2d(x, w1, b1).dtype == torch.float32


def test_autocast_under_torch_compile_shapes():
    x, w1, b1, w2 = params()
    with torch.autocast("cpu"):
        y = torch.ops.fastconv.conv2d_fprop(x, w1, b1, [1, 1], [1, 1], [1, 1], 1, "auto")
    assert y.dtype == torch.bfloat16


@pytest.mark.needs_cuda
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_as_torch(autocast_dtype):
    y, grads = compare("cuda", autocast_dtype)
    assert y.dtype == autocast_dtype and all(g.dtype == torch.float32 for g in grads)


@pytest.mark.needs_cuda
def test_cuda_autocast_default_is_float16():
    x, w1, b1, w2 = params("cuda")
    with torch.autocast("cuda"):
        assert fastconv.conv2d(x, w1, b1).dtype == F.conv2d(x, w1, b1).dtype == torch.float16
