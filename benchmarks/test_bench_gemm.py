"""fastconv's own GEMM (torch.ops.fastconv.mm) beside torch.mm: square sizes and the im2col GEMMs of
the conv suite. Skips fastconv's rows where the op has no CPU kernel yet."""
import pytest

from fastconv import bench
from shapes import selected, GEMM_SHAPES, QUICK_GEMM


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        shapes = selected(metafunc.config, GEMM_SHAPES, QUICK_GEMM)
        metafunc.parametrize("shape", shapes, ids=[s.name for s in shapes])


@pytest.mark.parametrize("candidate", ["torch", "fastconv"])
def test_mm(run, shape, candidate):
    cands = bench.gemm_candidates(shape, device="cpu", dtype=bench.DTYPES["float32"])
    run(cands, candidate, f"gemm {shape.name}", shape.flops, "GFLOP/s")
