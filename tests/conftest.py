import os

import pytest
import torch

import fastconv

# Every kernel output starts as NaN (integer ones, indices and taps included, as their dtype's max()), so an
# element a kernel forgets shows up.
fastconv._C.set_poison_outputs(True)

# Tests run on small shapes; two threads are enough and keep the shared machines responsive.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-bigmem", action="store_true", help="run tests that need tens of GiB of memory")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    skip_slow = pytest.mark.skip(reason="slow: opt in with --run-slow")
    skip_bigmem = pytest.mark.skip(reason="needs much memory: opt in with --run-bigmem")
    for item in items:
        if "needs_cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "bigmem" in item.keywords and not config.getoption("--run-bigmem"):
            item.add_marker(skip_bigmem)
