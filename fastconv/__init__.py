"""fastconv: hand-written C++ and CUDA kernels for conv2d and max_pool2d, as real PyTorch operators."""
import torch  # noqa: F401  (must load before the extension)

from . import _C, emulation, nn
from .ops import ALGORITHMS, conv2d, max_pool2d
from .tuning import autotune, autotune_choices, clear_autotune_cache, explain

build_info = _C.build_info

__all__ = ["ALGORITHMS", "autotune", "autotune_choices", "build_info", "clear_autotune_cache", "conv2d", "emulation",
           "explain", "max_pool2d", "nn"]
