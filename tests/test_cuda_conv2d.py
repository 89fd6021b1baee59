"""fastconv's CUDA conv2d kernels (csrc/cuda), forward and backward, every algorithm and dtype.

Without a GPU the kernels run through the SIMT emulator (fastconv.emulation.conv2d, CPU tensors): the very
source nvcc compiles, each GPU thread a fiber, so a missing __syncthreads or a wrong index fails here. The
same tests run on a real device (device="cuda", marker needs_cuda, skipped without one) through
fastconv.conv2d. Oracles: the float64 numpy reference (fastconv.reference) and torch.nn.functional.conv2d.
The emulator is slow: shapes are tiny, but chosen to cross every tile edge (GEMM 64x64x16, direct 8x16xKT8).
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.emulation
from fastconv import reference as ref
from fastconv.ops import _conv_padding, _pair

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

DEVICES = ["emulated", pytest.param("cuda", marks=pytest.mark.needs_cuda)]
ALGORITHMS = ["direct", "im2col", "im2col_blas", "direct_simple"]

# name: (N, C, H, W), (K, R, S), stride, padding, dilation, groups
CASES = {
    # GEMM: M=Kg=66 (two row tiles), N=PQ=81 (two column tiles), K=CRS=27 (a partial k-slab);
    # direct: P=9, Q=9 (partial 8x16 tile), Kg=66 (a partial group of 8 channels).
    "gemm_edges": ((1, 3, 9, 9), (66, 3, 3), 1, 1, 1, 1),
    "basic": ((2, 3, 5, 7), (4, 3, 3), 1, 1, 1, 1),
    "pointwise": ((2, 5, 4, 5), (6, 1, 1), 1, 0, 1, 1),  # 1x1: the input is the column matrix
    "pointwise_stride2": ((1, 4, 5, 5), (3, 1, 1), 2, 0, 1, 1),
    "stride_dilation": ((1, 3, 8, 9), (4, 3, 3), (2, 1), 1, (2, 1), 1),
    "groups": ((1, 4, 6, 5), (6, 3, 3), 1, 1, 1, 2),
    "depthwise": ((2, 4, 5, 6), (4, 3, 3), 1, 1, 1, 4),
    "same_even": ((1, 3, 5, 6), (2, 2, 4), 1, "same", 1, 1),  # asymmetric padding
    "wide_direct_tile": ((1, 2, 10, 18), (9, 3, 2), 1, (0, 1), 1, 1),  # 2x2 direct tiles, KT edge
    "batch0": ((0, 3, 5, 5), (4, 3, 3), 1, 1, 1, 1),
}
SMALL_CASES = ["basic", "pointwise", "depthwise", "same_even"]

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=2e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=1e-1),
}


def conv_fn(device):
    return fastconv.emulation.conv2d if device == "emulated" else fastconv.conv2d


def torch_device(device):
    return "cpu" if device == "emulated" else device


def make_case(name, dtype, device, layout="contiguous", seed=0):
    (N, C, H, W), (K, R, S), stride, padding, dilation, groups = CASES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(K, C // groups, R, S, generator=g, dtype=torch.float64)
    b = torch.randn(K, generator=g, dtype=torch.float64)
    dev = torch_device(device)
    x, w, b = (t.to(dev, dtype) for t in (x, w, b))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontiguous":  # every other column of a wider tensor, and a transposed weight
        wide = torch.zeros(N, C, H, 2 * W, dtype=dtype, device=dev)
        wide[..., ::2] = x
        x = wide[..., ::2]
        w = w.transpose(2, 3).contiguous().transpose(2, 3)
        assert not x.is_contiguous()
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def reference_all(x, w, b, dy, params):
    """float64 reference: output and the three gradients, as torch tensors."""
    stride, dilation = _pair("stride", params["stride"]), _pair("dilation", params["dilation"])
    pad = _conv_padding(params["padding"], w, stride, dilation)
    args = dict(stride=stride, padding=pad, dilation=dilation, groups=params["groups"])
    xn, wn, bn, dyn = (t.detach().double().cpu().numpy() for t in (x, w, b, dy))
    y = ref.conv2d_fprop(xn, wn, bn, **args)
    dx = ref.conv2d_dgrad(dyn, wn, xn.shape, **args)
    dw = ref.conv2d_wgrad(dyn, xn, wn.shape, **args)
    db = ref.conv2d_bgrad(dyn)
    return [torch.from_numpy(a) for a in (y, dx, dw, db)]


def run_fastconv(device, algorithm, x, w, b, params, dy=None, seed=1):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    y = conv_fn(device)(x, w, b, **params, algorithm=algorithm)
    if dy is None:
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    return [y, dx, dw, db], dy


def check_against_oracles(device, algorithm, name, dtype, layout="contiguous"):
    x, w, b, params = make_case(name, dtype, device, layout)
    (y, dx, dw, db), dy = run_fastconv(device, algorithm, x, w, b, params)
    tol = TOLERANCES[dtype]
    expected = reference_all(x, w, b, dy, params)
    for got, want, what in zip((y, dx, dw, db), expected, ("output", "grad_input", "grad_weight", "grad_bias")):
        assert got.dtype == dtype and got.shape == want.shape, what
        assert not got.isnan().any(), f"{what}: NaN (an element the kernel never wrote)"
        torch.testing.assert_close(got.double().cpu(), want, **tol, msg=lambda m: f"{what} vs reference: {m}")
    # torch.nn.functional.conv2d in the same dtype (float32 accumulation for half on CPU is not given,
    # so low-precision dtypes are compared through float32).
    cdtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    xt, wt, bt = (t.detach().to(cdtype).requires_grad_() for t in (x, w, b))
    yt = F.conv2d(xt, wt, bt, **params)
    gt = torch.autograd.grad(yt, (xt, wt, bt), dy.to(cdtype))
    for got, want, what in zip((y, dx, dw, db), (yt, *gt), ("output", "grad_input", "grad_weight", "grad_bias")):
        torch.testing.assert_close(got.to(cdtype), want, **tol, msg=lambda m: f"{what} vs F.conv2d: {m}")
    # The output format follows PyTorch's rule (channels_last in, channels_last out).
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float64_every_case(device, algorithm, name):
    check_against_oracles(device, algorithm, name, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["gemm_edges", "depthwise", "same_even", "pointwise"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_low_precision(device, algorithm, name, dtype):
    check_against_oracles(device, algorithm, name, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous"])
@pytest.mark.parametrize("name", ["basic", "pointwise", "groups"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_layouts(device, algorithm, name, layout):
    check_against_oracles(device, algorithm, name, torch.float32, layout)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["basic", "depthwise"])
def test_auto(device, name):
    check_against_oracles(device, "auto", name, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_and_no_bias(device):
    x, w, b, params = make_case("basic", torch.float32, device)
    got = conv_fn(device)(x[0], w, None, **params)
    torch.testing.assert_close(got, F.conv2d(x[0], w, None, **params), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_vectorised_gemm_path(device):
    """C*R*S and P*Q multiples of 4: the float4 loads of both GEMM operands, against the scalar path."""
    dev = torch_device(device)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 10, generator=g).to(dev)  # PQ = 80, CRS = 36
    w = torch.randn(20, 4, 3, 3, generator=g).to(dev)
    for algorithm in ("im2col", "direct"):
        got = conv_fn(device)(x, w, None, padding=1, algorithm=algorithm)
        torch.testing.assert_close(got, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
    # misaligned operands (a view starting one float in) must take the scalar path and still be right
    x_off = torch.randn(1 * 4 * 8 * 10 + 1, generator=g).to(dev)[1:].view(1, 4, 8, 10)
    got = conv_fn(device)(x_off, w, None, padding=1, algorithm="im2col")
    torch.testing.assert_close(got, F.conv2d(x_off, w, padding=1), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- gradcheck, determinism
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradcheck_emulated(algorithm):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return fastconv.emulation.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2, algorithm=algorithm)

    assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_backward_is_deterministic(device, algorithm):
    x, w, b, params = make_case("wide_direct_tile", torch.float32, device)
    first, dy = run_fastconv(device, algorithm, x, w, b, params)
    for _ in range(2):
        again, _ = run_fastconv(device, algorithm, x, w, b, params, dy=dy)
        for a, c in zip(first, again):
            assert torch.equal(a, c)


# ---------------------------------------------------------------------------------------------------- opcheck
OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_opcheck_emulated(algorithm):
    ops = torch.ops.fastconv_emulated
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 3, 3, generator=g, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, generator=g, requires_grad=True)
    b = torch.randn(2, generator=g, requires_grad=True)
    params = ([1, 1], [0, 1, 0, 1], [1, 1], 1, algorithm)
    torch.library.opcheck(ops.conv2d_fprop, (x, w, b, *params), test_utils=OPCHECK_TESTS)
    dy = torch.randn(1, 2, 3, 3, generator=g)
    torch.library.opcheck(ops._conv2d_dgrad, (dy, w.detach(), [1, 2, 3, 3], *params), test_utils=OPCHECK_TESTS)
    torch.library.opcheck(ops._conv2d_wgrad, (dy, x.detach(), [2, 2, 2, 2], *params), test_utils=OPCHECK_TESTS)
    torch.library.opcheck(ops._conv2d_bgrad, (dy,), test_utils=OPCHECK_TESTS)


def test_emulated_rejects_bad_arguments():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(RuntimeError, match="groups"):
        fastconv.emulation.conv2d(x, torch.randn(4, 3, 3, 3), groups=2)
    with pytest.raises(RuntimeError, match="dtype"):
        fastconv.emulation.conv2d(x, torch.randn(4, 3, 3, 3, dtype=torch.float64))


# ------------------------------------------------------------------------------------------ CPU vs CUDA
@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("algorithm", ["auto", *ALGORITHMS])
def test_cpu_vs_cuda_gradients(algorithm, dtype):
    x, w, b, params = make_case("gemm_edges", dtype, "cpu")
    x_cpu, w_cpu, b_cpu = (t.detach().requires_grad_() for t in (x, w, b))
    y_cpu = fastconv.conv2d(x_cpu, w_cpu, b_cpu, **params, algorithm=algorithm)
    dy = torch.randn_like(y_cpu)
    g_cpu = torch.autograd.grad(y_cpu, (x_cpu, w_cpu, b_cpu), dy)
    x_gpu, w_gpu, b_gpu = (t.detach().cuda().requires_grad_() for t in (x, w, b))
    y_gpu = fastconv.conv2d(x_gpu, w_gpu, b_gpu, **params, algorithm=algorithm)
    g_gpu = torch.autograd.grad(y_gpu, (x_gpu, w_gpu, b_gpu), dy.cuda())
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, **tol)
    for a, c in zip(g_gpu, g_cpu):
        torch.testing.assert_close(a.cpu(), c, **tol)


@pytest.mark.needs_cuda
def test_cuda_uses_current_stream_and_device_checks():
    x, w, b, params = make_case("basic", torch.float32, "cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = fastconv.conv2d(x, w, b, **params, algorithm="im2col")
    s.synchronize()
    torch.testing.assert_close(y, F.conv2d(x, w, b, **params), rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError):
        fastconv.conv2d(x, w.cpu(), b, **params)
