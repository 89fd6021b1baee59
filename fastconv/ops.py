"""The functional API (argument handling exactly as torch.nn.functional), and the autograd and fake
(meta) registrations of the fastconv operators. The kernels themselves are C++/CUDA, in csrc/."""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (loading the extension registers torch.ops.fastconv)
from . import derivatives

ALGORITHMS = ("auto", "direct", "im2col", "im2col_blas", "direct_simple")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
MAX_BYTE_TAPS = 256  # a pooling window of at most this many taps saves its argmax as one byte (Pool2dProblem)

# fastconv.tuning sets this to its maybe_autotune while the autotuner is on; conv2d calls it for
# algorithm="auto" with the normalised arguments. A hook, so that this module never imports tuning
# (which imports this one).
autotune_hook = None


# ----------------------------------------------------------------------------------------------------
# Argument normalisation, as torch.nn.functional does it
# ----------------------------------------------------------------------------------------------------
def _pair(name, value):
    if isinstance(value, int):
        return (value, value)
    values = tuple(value)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of 2 values to match the "
            f"convolution dimensions, but got {name}={list(values)}"
        )
    return values


def _conv_padding(padding, weight, stride, dilation):
    """Resolves padding into (top, bottom, left, right). "same" may be asymmetric: the extra pixel of an
    even effective kernel goes to the bottom/right, as in PyTorch."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        return same_padding(weight.shape[2:], dilation)
    pad_h, pad_w = _pair("padding", padding)
    return (pad_h, pad_h, pad_w, pad_w)


def same_padding(kernel_size, dilation):
    """padding="same" as (top, bottom, left, right): the extra pixel of an even effective kernel goes to
    the bottom/right, as in PyTorch."""
    pads = []
    for d, k in zip(dilation, kernel_size):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _batched(input, op, ndim=4):
    if input.dim() == ndim:
        return input, False
    if input.dim() == ndim - 1:
        return input.unsqueeze(0), True
    raise RuntimeError(
        f"Expected {ndim - 1}D (unbatched) or {ndim}D (batched) input to {op}, but got input of size: "
        f"{list(input.shape)}"
    )


def _check_tensor(op, name, position, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not {type(value).__name__}")


def _check_algorithm(algorithm):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, but got {algorithm!r}")


def _check_padding_mode(padding_mode):
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, but got padding_mode={padding_mode!r}")


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
           padding_mode="zeros"):
    """fastconv's conv2d: the signature, defaults and semantics of torch.nn.functional.conv2d, plus the
    choice of algorithm (one of ALGORITHMS; "auto": the C++ heuristic's pick, or the autotuner's) and
    torch.nn.Conv2d's padding_mode (one of PADDING_MODES), which the kernels apply as they read the input
    (no padded copy)."""
    return conv2d_with(derivatives.ops("fastconv"), input, weight, bias, stride, padding, dilation, groups, algorithm,
                       padding_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """fastconv's max_pool2d, mirroring torch.nn.functional.max_pool2d in every argument."""
    return max_pool2d_with(derivatives.ops("fastconv"), input, kernel_size, stride, padding, dilation, ceil_mode,
                           return_indices)


def conv2d_with(ops, input, weight, bias, stride, padding, dilation, groups, algorithm, padding_mode="zeros"):
    """conv2d on one operator library, derivatives.ops("fastconv") (native kernels) or
    derivatives.ops("fastconv_emulated")."""
    _check_tensor("conv2d", "input", 1, input)
    _check_tensor("conv2d", "weight", 2, weight)
    _check_algorithm(algorithm)
    _check_padding_mode(padding_mode)
    input, unbatched = _batched(input, "conv2d")
    if weight.dim() != 4:
        raise RuntimeError(
            f"Expected 4D weight (out_channels, in_channels/groups, kH, kW) for conv2d, but got weight of size: "
            f"{list(weight.shape)}"
        )
    stride = _pair("stride", stride)
    dilation = _pair("dilation", dilation)
    padding = _conv_padding(padding, weight, stride, dilation)
    if autotune_hook is not None and algorithm == "auto":
        autotune_hook(input, weight, bias, stride, padding, dilation, groups, padding_mode, ops.namespace)
    args = (stride, padding, dilation, groups, algorithm, padding_mode)
    if input.is_complex() or weight.is_complex() or (bias is not None and bias.is_complex()):
        out = _complex_conv2d(ops, input, weight, bias, *args)
    else:
        out = ops.conv2d_fprop(input, weight, bias, *args)
    if input.shape[1] == 0:
        # PyTorch's quirk, kept for drop-in parity: with no input channels its output has no channels
        # either (not K channels of bias). Narrowing the K-channel result keeps every argument in the
        # graph, so each gradient is zeros of its own shape, as PyTorch's.
        out = out.narrow(1, 0, 0)
    return out.squeeze(0) if unbatched else out


def _complex_conv2d(ops, input, weight, bias, *args):
    """Complex conv2d through the real kernels in Gauss's three-multiplication form, as PyTorch computes
    it: a = conv(xr, wr) + br, b = conv(xi, wi), c = conv(xr + xi, wr + wi) + br + bi; the output is
    a - b + i(c - a - b). Made of differentiable ops, so autograd gives PyTorch's (conjugate Wirtinger)
    gradients of complex inputs, and every transform of the real ops carries over."""
    if not (input.dtype == weight.dtype and (bias is None or bias.dtype == input.dtype)):
        dtypes = f"input {input.dtype}, weight {weight.dtype}" + ("" if bias is None else f", bias {bias.dtype}")
        raise RuntimeError(f"conv2d: expected input, weight and bias of one dtype, but got {dtypes}")
    layout = _output_memory_format(input, weight)

    def parts(t):
        return t.real.contiguous(memory_format=layout), t.imag.contiguous(memory_format=layout)

    x_re, x_im = parts(input)
    w_re, w_im = parts(weight)
    b_re = b_sum = None
    if bias is not None:
        b_re, b_sum = bias.real, bias.real + bias.imag
    a = ops.conv2d_fprop(x_re, w_re, b_re, *args)
    b = ops.conv2d_fprop(x_im, w_im, None, *args)
    c = ops.conv2d_fprop(x_re + x_im, w_re + w_im, b_sum, *args)
    return torch.complex(a - b, c - a - b)


def max_pool2d_with(ops, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    _check_tensor("max_pool2d", "input", 1, input)
    if input.dim() == 3 and 0 in input.shape:
        # make_pool2d_problem's message, with the size as the caller passed it (not the batched view).
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but "
                           f"got:{list(input.shape)}")
    input, unbatched = _batched(input, "max_pool2d")
    if unbatched:
        # PyTorch pools a 3-D input as a contiguous one (a 3-D tensor has no channels_last), so its
        # output is contiguous whatever the input's strides; unsqueezed, a (C, H, W) view with C
        # innermost would otherwise be taken for channels_last.
        input = input.contiguous()
    kernel_size = _pair("kernel_size", kernel_size)
    stride = kernel_size if stride is None or (not isinstance(stride, int) and len(stride) == 0) else stride
    args = (input, kernel_size, _pair("stride", stride), _pair("padding", padding), _pair("dilation", dilation),
            bool(ceil_mode))
    if not return_indices and kernel_size[0] * kernel_size[1] <= MAX_BYTE_TAPS:
        # Nobody sees the indices: the backward gets them as one-byte tap numbers (same gradient).
        out, _taps = ops._max_pool2d_fprop_taps(*args)
        return out.squeeze(0) if unbatched else out
    out, indices = ops.max_pool2d_fprop(*args)
    if unbatched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out


# ----------------------------------------------------------------------------------------------------
# Fake (meta) kernels: output shapes and memory formats only, for torch.compile and opcheck.
# The sizes follow the one C++ definition (make_conv2d_problem); these repeat only the formula.
# ----------------------------------------------------------------------------------------------------
def _output_memory_format(a, b):
    channels_last = torch.channels_last
    if suggest_memory_format(a) == channels_last or suggest_memory_format(b) == channels_last:
        return channels_last
    return torch.contiguous_format


def _conv_output_hw(input_hw, kernel_rs, stride, padding, dilation):
    pads = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    out = []
    for i in range(2):
        padded = input_hw[i] + pads[2 * i] + pads[2 * i + 1]
        out.append((padded - dilation[i] * (kernel_rs[i] - 1) - 1) // stride[i] + 1)
    return out


def _same_device(op, **tensors):
    """Mixed meta and real tensors dispatch to these meta kernels, which would return an uninitialised
    tensor on the real device (torch.nn.functional.conv2d does); refuse instead, naming the devices."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise RuntimeError(f"{op}: expected all tensors on one device, but got "
                           + ", ".join(f"{name} on {d}" for name, d in devices.items()))


def _register_conv_fakes(ns):
    @torch.library.register_fake(f"{ns}::conv2d_fprop")
    def _(input, weight, bias, stride, padding, dilation, groups, algorithm, padding_mode="zeros"):
        _same_device("conv2d", input=input, weight=weight, bias=bias)
        P, Q = _conv_output_hw(input.shape[2:], weight.shape[2:], stride, padding, dilation)
        return input.new_empty((input.shape[0], weight.shape[0], P, Q)).contiguous(
            memory_format=_output_memory_format(input, weight)
        )

    @torch.library.register_fake(f"{ns}::_conv2d_dgrad")
    def _(grad_output, weight, input_size, stride, padding, dilation, groups, algorithm, padding_mode="zeros"):
        _same_device("conv2d backward", grad_output=grad_output, weight=weight)
        return grad_output.new_empty(input_size).contiguous(
            memory_format=_output_memory_format(grad_output, weight)
        )

    @torch.library.register_fake(f"{ns}::_conv2d_wgrad")
    def _(grad_output, input, weight_size, stride, padding, dilation, groups, algorithm, padding_mode="zeros"):
        _same_device("conv2d backward", grad_output=grad_output, input=input)
        return grad_output.new_empty(weight_size).contiguous(
            memory_format=_output_memory_format(input, grad_output)
        )

    @torch.library.register_fake(f"{ns}::_conv2d_bgrad")
    def _(grad_output):
        return grad_output.new_empty((grad_output.shape[1],))


def _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _register_pool_fakes(ns):
    @torch.library.register_fake(f"{ns}::max_pool2d_fprop")
    def pool_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
        P, Q = (
            _pool_output_size(input.shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode)
            for i in range(2)
        )
        shape = (input.shape[0], input.shape[1], P, Q)
        memory_format = suggest_memory_format(input)
        out = input.new_empty(shape).contiguous(memory_format=memory_format)
        indices = input.new_empty(shape, dtype=torch.int64).contiguous(memory_format=memory_format)
        return out, indices

    @torch.library.register_fake(f"{ns}::_max_pool2d_fprop_taps")
    def _(input, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = pool_fake(input, kernel_size, stride, padding, dilation, ceil_mode)
        return out, torch.empty_like(indices, dtype=torch.uint8)

    @torch.library.register_fake(f"{ns}::_max_pool2d_bprop")
    def pool_bprop_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
        _same_device("max_pool2d backward", grad_output=grad_output, input=input, indices=indices)
        return torch.empty_like(input, memory_format=suggest_memory_format(input))

    torch.library.register_fake(f"{ns}::_max_pool2d_bprop_taps", pool_bprop_fake)


for _ns in ("fastconv", "fastconv_emulated"):
    _register_conv_fakes(_ns)
    _register_pool_fakes(_ns)

# Batching rules (vmap) and autocast rules of the ops above (derivatives.py registered their derivatives).
from . import autocast as _autocast  # noqa: E402,F401
from . import batching as _batching  # noqa: E402,F401
