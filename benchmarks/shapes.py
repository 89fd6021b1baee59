"""The standard benchmark shapes. The data lives in the package (fastconv/shapes.py) so that
``python -m fastconv bench`` works after an install; this module re-exports it for benchmarks/."""
from fastconv.shapes import (  # noqa: F401
    CONV_SHAPES,
    GEMM_SHAPES,
    INFO_CONV,
    POOL_SHAPES,
    QUICK_CONV,
    QUICK_GEMM,
    QUICK_POOL,
    ConvShape,
    GemmShape,
    PoolShape,
)


def selected(config, shapes, quick_names):
    """The shapes a pytest-benchmark run covers: all with --bench-all, else the --quick subset."""
    if config.getoption("--bench-all"):
        return list(shapes)
    return [s for s in shapes if s.name in quick_names]
