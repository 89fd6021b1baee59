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
