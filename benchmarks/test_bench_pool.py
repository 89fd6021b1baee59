"""max_pool2d: fastconv beside PyTorch, forward and backward, NCHW and channels_last."""
import pytest

from fastconv import bench
from shapes import selected, POOL_SHAPES, QUICK_POOL


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        shapes = selected(metafunc.config, POOL_SHAPES, QUICK_POOL)
        metafunc.parametrize("shape", shapes, ids=[s.name for s in shapes])


@pytest.mark.parametrize("candidate", ["torch", "fastconv", "fastconv_indices"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("pass_", bench.POOL_PASSES)
def test_max_pool2d(run, shape, pass_, layout, candidate):
    cands = bench.pool_candidates(shape, pass_, device="cpu", dtype=bench.DTYPES["float32"], layout=layout)
    run(cands, candidate, f"pool {shape.name} {layout} {pass_}", shape.bytes(pass_), "GB/s")
