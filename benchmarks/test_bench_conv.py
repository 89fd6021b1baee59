"""conv2d: every fastconv algorithm beside PyTorch's default (oneDNN) and im2col paths, on the standard
shapes (the --quick subset unless --bench-all), forward, grad-input, grad-weight and a training step."""
import pytest

from fastconv import bench
from shapes import selected, CONV_SHAPES, QUICK_CONV


def pytest_generate_tests(metafunc):
    if "shape" in metafunc.fixturenames:
        shapes = selected(metafunc.config, CONV_SHAPES, QUICK_CONV)
        metafunc.parametrize("shape", shapes, ids=[s.name for s in shapes])


@pytest.mark.parametrize("candidate", bench.CONV_CANDIDATES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("pass_", bench.CONV_PASSES)
def test_conv2d(run, shape, pass_, layout, candidate):
    cands = bench.conv_candidates(shape, pass_, [candidate], device="cpu", dtype=bench.DTYPES["float32"],
                                  layout=layout)
    work = shape.flops * (3 if pass_ == "train_step" else 1)
    run(cands, candidate, f"conv {shape.name} {layout} {pass_}", work, "GFLOP/s")
