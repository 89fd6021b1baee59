"""benchmarks/sass_report.py: the occupancy arithmetic against the sm_90 limits worked by hand, and the
--check rule (a tensor-core kernel that spills or lacks HMMA fails; other kernels are only reported)."""
import importlib.util
import os

import pytest

spec = importlib.util.spec_from_file_location(
    "sass_report", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sass_report.py"))
sass_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sass_report)


@pytest.mark.parametrize("registers,shared,threads,expected", [
    (32, 0, 256, 8),        # threads: 2048 / 256
    (40, 0, 256, 6),        # registers: 40 * 32 = 1280 per warp, 8 warps = 10240 per block, 65536 // 10240
    (255, 0, 128, 2),       # 255 -> 8160 -> 8192 per warp (256-register granules), 4 warps: 65536 // 32768
    (32, 100 * 1024, 128, 2),  # shared memory: 228 KiB // 100 KiB
    (16, 0, 32, 32),        # the 32-block limit
    (32, 240 * 1024, 128, 0),  # more shared memory than a block may have
])
def test_blocks_per_sm(registers, shared, threads, expected):
    assert sass_report.blocks_per_sm(registers, shared, threads) == expected


def row(name, tensor_core, **counts):
    return {"kernel": name, "tensor_core": tensor_core, "local": 0, "STL": 0, "LDL": 0, "HMMA": 0, **counts}


def test_check_rule():
    assert sass_report.problems([row("simt", False, local=64, STL=3)]) == []
    assert sass_report.problems([row("tc", True, HMMA=64)]) == []
    assert len(sass_report.problems([row("tc", True, HMMA=64, local=16, STL=2)])) == 1
    assert "without HMMA" in sass_report.problems([row("tc", True)])[0]


def test_names_are_shortened():
    full = "void fastconv::cuda_kernels::foo_kernel<c10::BFloat16, int>(float const*, int)"
    assert sass_report.short_name(full) == "foo_kernel<bf16, int>"
