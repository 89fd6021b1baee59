"""pytest-benchmark tests of fastconv's kernels beside PyTorch's (run: python -m pytest benchmarks
--benchmark-only). They are not part of the main test run (testpaths = ["tests"]).

--bench-all      the whole standard suite (default: the --quick subset of python -m fastconv bench)
--bench-threads  torch.set_num_threads (default 2)
"""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--bench-all", action="store_true", help="benchmark every standard shape, not the subset")
    parser.addoption("--bench-threads", type=int, default=2, help="torch.set_num_threads for the benchmarks")


def pytest_configure(config):
    torch.set_num_threads(config.getoption("--bench-threads"))


def run_candidate(benchmark, candidates, name, group, work, unit):
    """Times one candidate of fastconv.bench's candidate factories; skips it where it cannot run here."""
    try:
        fn = candidates[name]()
        fn()
    except Exception as exc:  # noqa: BLE001 - an unbuilt kernel is a skip, not a failure
        pytest.skip(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    benchmark.group = group
    benchmark.extra_info.update(work=work, unit=unit)
    with torch.no_grad():
        benchmark(fn)
    scale = 1e9
    benchmark.extra_info["throughput"] = work / benchmark.stats.stats.median / scale


@pytest.fixture
def run(benchmark):
    return lambda *args: run_candidate(benchmark, *args)
