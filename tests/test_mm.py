"""torch.ops.fastconv.mm: fastconv's own GEMM against a float64 numpy product, over shapes that are not
multiples of the register tile, transposed (strided) operands and both dtypes."""
import numpy as np
import pytest
import torch

import fastconv  # noqa: F401


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 13, 5), (64, 576, 196), (49, 300, 17), (6, 0, 16)])
@pytest.mark.parametrize("transpose", [False, True])
def test_mm_matches_numpy(dtype, M, K, N, transpose):
    g = torch.Generator().manual_seed(M * 1000 + K * 10 + N)
    a = torch.randn(M, K, dtype=dtype, generator=g)
    b = torch.randn(K, N, dtype=dtype, generator=g)
    if transpose:  # the same values through swapped strides: no copy in the GEMM
        a, b = a.t().contiguous().t(), b.t().contiguous().t()
    out = torch.ops.fastconv.mm(a, b)
    expected = a.double().numpy() @ b.double().numpy()
    atol = (1e-12 if dtype == torch.float64 else 1e-5) * max(K, 1) ** 0.5 * 4
    assert out.shape == (M, N) and out.dtype == dtype
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=0, atol=atol)


def test_mm_rejects_bad_shapes_and_dtypes():
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        torch.ops.fastconv.mm(torch.randn(3, 4), torch.randn(5, 2))
    with pytest.raises(RuntimeError, match="2-D"):
        torch.ops.fastconv.mm(torch.randn(3), torch.randn(3, 2))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.fastconv.mm(torch.randn(3, 4), torch.randn(4, 2, dtype=torch.float64))


GEMM_KERNELS = ["portable", "avx2", "avx512", "vec16-portable"]


@pytest.fixture(params=GEMM_KERNELS)
def gemm_kernel(request):
    """Each micro-kernel in turn (vec16-portable: the AVX-512 kernel's source through the portable vector
    layer, which every CPU runs); a kernel this CPU lacks skips."""
    ran = fastconv._C._set_gemm_kernel(request.param)
    try:
        if ran != {"avx2": "avx2+fma"}.get(request.param, request.param):
            pytest.skip(f"{request.param} is not available on this CPU (ISA level "
                        f"{fastconv.build_info()['cpu_isa']})")
        yield request.param
    finally:
        fastconv._C._set_gemm_kernel("auto")


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (13, 300, 33), (12, 255, 32), (145, 10, 50), (49, 600, 17)])
@pytest.mark.parametrize("transpose", [False, True])
def test_every_gemm_kernel_matches_numpy(gemm_kernel, M, K, N, transpose):
    g = torch.Generator().manual_seed(M + K + N)
    a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    if transpose:
        a, b = a.t().contiguous().t(), b.t().contiguous().t()
    expected = a.double().numpy() @ b.double().numpy()
    np.testing.assert_allclose(torch.ops.fastconv.mm(a, b).double().numpy(), expected, rtol=0,
                               atol=1e-5 * K ** 0.5 * 4)


def test_every_gemm_kernel_inside_a_convolution(gemm_kernel):
    import torch.nn.functional as F

    x, w, b = torch.randn(3, 5, 9, 11), torch.randn(7, 5, 3, 3), torch.randn(7)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        torch.testing.assert_close(fastconv.conv2d(xl, w, b, padding=1, algorithm="im2col"),
                                   F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


def test_isa_level_is_reported_and_capped():
    import subprocess
    import sys

    info = fastconv.build_info()
    assert info["cpu_isa"] in ("portable", "avx2", "avx512")
    code = "import fastconv; i = fastconv.build_info(); print(i['cpu_isa'], i['cpu_isa_detected'], fastconv._C._set_gemm_kernel('auto'))"
    for cap, allowed in (("portable", {"portable"}), ("avx2", {"portable", "avx2"})):
        out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "FASTCONV_CPU_ISA": cap},
                             capture_output=True, text=True, check=True).stdout.split()
        assert out[0] in allowed and out[1] == info["cpu_isa_detected"], out
        assert out[2] != "avx512", out
    bad = subprocess.run([sys.executable, "-c", "import fastconv, torch; torch.ops.fastconv.mm(torch.ones(2, 2), torch.ones(2, 2))"],
                         env={**__import__("os").environ, "FASTCONV_CPU_ISA": "sse9"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "FASTCONV_CPU_ISA must be one of portable, avx2, avx512" in bad.stderr
