"""fastconv's CUDA kernels run on CPU tensors by the SIMT emulator (csrc/emulator): the very kernel
source that nvcc compiles, executed thread by thread, so machines without a GPU still test it.
Same signatures as fastconv.conv2d / fastconv.max_pool2d, differentiable through the emulated
backward kernels (torch.ops.fastconv_emulated)."""
from . import derivatives, ops, tuning


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
           padding_mode="zeros"):
    return ops.conv2d_with(derivatives.ops("fastconv_emulated"), input, weight, bias, stride, padding, dilation, groups,
                           algorithm, padding_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    return ops.max_pool2d_with(derivatives.ops("fastconv_emulated"), input, kernel_size, stride, padding, dilation,
                               ceil_mode, return_indices)


def explain(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
            padding_mode="zeros", verbose=False):
    """fastconv.explain for the emulated CUDA kernels: the same signature and report, read from the plan the
    emulated ops dispatch through (csrc/cuda/conv2d_host.h, compiled for the emulator)."""
    return tuning.explain_on("emulated", input, weight, bias, stride, padding, dilation, groups, algorithm=algorithm,
                             padding_mode=padding_mode, verbose=verbose)
