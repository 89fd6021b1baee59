"""The functional API (argument handling exactly as torch.nn.functional), and the autograd and fake
(meta) registrations of the fastconv operators. The kernels themselves are C++/CUDA, in csrc/."""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (loading the extension registers torch.ops.fastconv)

ALGORITHMS = ("auto", "direct", "im2col", "im2col_blas", "direct_simple")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
MAX_BYTE_TAPS = 256  # a pooling window of at most this many taps saves its argmax as one byte (Pool2dProblem)


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
    choice of algorithm ("auto", "direct", "im2col", or "im2col_blas" for comparison) and torch.nn.Conv2d's
    padding_mode ("zeros", "reflect", "replicate", "circular"), which the kernels apply as they read the
    input (no padded copy)."""
    return conv2d_with(torch.ops.fastconv, input, weight, bias, stride, padding, dilation, groups, algorithm,
                       padding_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """fastconv's max_pool2d, mirroring torch.nn.functional.max_pool2d in every argument."""
    return max_pool2d_with(torch.ops.fastconv, input, kernel_size, stride, padding, dilation, ceil_mode,
                           return_indices)


def conv2d_with(ops, input, weight, bias, stride, padding, dilation, groups, algorithm, padding_mode="zeros"):
    """conv2d on one operator library: torch.ops.fastconv (native kernels) or torch.ops.fastconv_emulated."""
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
    if algorithm == "auto" and ops is torch.ops.fastconv:
        from .tuning import maybe_autotune

        maybe_autotune(input, weight, bias, stride, padding, dilation, groups, padding_mode)
    out = ops.conv2d_fprop(input, weight, bias, stride, padding, dilation, groups, algorithm, padding_mode)
    return out.squeeze(0) if unbatched else out


def max_pool2d_with(ops, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
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


# ----------------------------------------------------------------------------------------------------
# Autograd. Every op is linear in each tensor argument, so each backward is again made of fastconv
# ops, and gradients of any order work (gradgradcheck).
# ----------------------------------------------------------------------------------------------------
def _register_conv_autograd(ns):
    ops = getattr(torch.ops, ns)
    fprop, dgrad, wgrad, bgrad = ops.conv2d_fprop, ops._conv2d_dgrad, ops._conv2d_wgrad, ops._conv2d_bgrad

    def fprop_setup(ctx, inputs, output):
        input, weight, bias, *params = inputs
        ctx.save_for_backward(input, weight)
        ctx.params = params
        ctx.has_bias = bias is not None

    def fprop_backward(ctx, grad):
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = dgrad(grad, weight, input.shape, *ctx.params)
        if ctx.needs_input_grad[1]:
            grad_weight = wgrad(grad, input, weight.shape, *ctx.params)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = bgrad(grad)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::conv2d_fprop", fprop_backward, setup_context=fprop_setup)

    # dgrad(dy, w) = the input gradient; its own gradients: d/d(dy) = fprop(g, w), d/dw = wgrad(dy, g).
    def dgrad_setup(ctx, inputs, output):
        grad_output, weight, input_size, *params = inputs
        ctx.save_for_backward(grad_output, weight)
        ctx.params = params

    def dgrad_backward(ctx, grad):
        grad_output, weight = ctx.saved_tensors
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_output = fprop(grad, weight, None, *ctx.params)
        if ctx.needs_input_grad[1]:
            d_weight = wgrad(grad_output, grad, weight.shape, *ctx.params)
        return d_grad_output, d_weight, None, None, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::_conv2d_dgrad", dgrad_backward, setup_context=dgrad_setup)

    # wgrad(dy, x) = the weight gradient; d/d(dy) = fprop(x, g), d/dx = dgrad(dy, g).
    def wgrad_setup(ctx, inputs, output):
        grad_output, input, weight_size, *params = inputs
        ctx.save_for_backward(grad_output, input)
        ctx.params = params

    def wgrad_backward(ctx, grad):
        grad_output, input = ctx.saved_tensors
        d_grad_output = d_input = None
        if ctx.needs_input_grad[0]:
            d_grad_output = fprop(input, grad, None, *ctx.params)
        if ctx.needs_input_grad[1]:
            d_input = dgrad(grad_output, grad, input.shape, *ctx.params)
        return d_grad_output, d_input, None, None, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::_conv2d_wgrad", wgrad_backward, setup_context=wgrad_setup)

    def bgrad_setup(ctx, inputs, output):
        ctx.grad_output_shape = inputs[0].shape

    def bgrad_backward(ctx, grad):
        return grad.view(1, -1, 1, 1).expand(ctx.grad_output_shape)

    torch.library.register_autograd(f"{ns}::_conv2d_bgrad", bgrad_backward, setup_context=bgrad_setup)


def _register_pool_autograd(ns):
    ops = getattr(torch.ops, ns)

    def fprop_setup(ctx, inputs, output):
        input, *params = inputs
        ctx.save_for_backward(input, output[1])
        ctx.params = params

    def fprop_backward(ctx, grad_output, _grad_indices):
        input, indices = ctx.saved_tensors
        grad_input = ops._max_pool2d_bprop(grad_output, input, indices, *ctx.params)
        return grad_input, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::max_pool2d_fprop", fprop_backward, setup_context=fprop_setup)

    def taps_backward(ctx, grad_output, _grad_taps):
        input, taps = ctx.saved_tensors
        grad_input = ops._max_pool2d_bprop_taps(grad_output, input, taps, *ctx.params)
        return grad_input, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::_max_pool2d_fprop_taps", taps_backward, setup_context=fprop_setup)

    # The backward routes each output gradient to its argmax, so its own gradient gathers from there.
    def bprop_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    def taps_bprop_setup(ctx, inputs, output):
        grad_output, input, taps, *params = inputs
        ctx.save_for_backward(_flat_indices(taps, input.shape, *params[:4]))

    def bprop_backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        # An index outside the plane (a window wholly in the padding) received no gradient in the
        # backward, so its output's gradient-of-gradient is zero; clamp it so the gather stays in bounds.
        plane = grad.shape[2] * grad.shape[3]
        flat = indices.flatten(2)
        inside = (flat >= 0) & (flat < plane)
        gathered = grad.flatten(2).gather(2, flat.clamp(0, plane - 1))
        gathered = torch.where(inside, gathered, torch.zeros_like(gathered)).view(indices.shape)
        return gathered, None, None, None, None, None, None, None

    torch.library.register_autograd(f"{ns}::_max_pool2d_bprop", bprop_backward, setup_context=bprop_setup)
    torch.library.register_autograd(f"{ns}::_max_pool2d_bprop_taps", bprop_backward, setup_context=taps_bprop_setup)


def _flat_indices(taps, input_size, kernel_size, stride, padding, dilation):
    """PyTorch's flat indices h * W + w from tap numbers r * S + s (Pool2dProblem::tap_row/tap_col); a
    tap outside the input becomes an index outside the plane, which the gradient gather drops."""
    H, W = input_size[2], input_size[3]
    P, Q = taps.shape[2], taps.shape[3]
    t = taps.long()
    p = torch.arange(P, device=taps.device).view(P, 1)
    q = torch.arange(Q, device=taps.device).view(1, Q)
    h = p * stride[0] - padding[0] + t.div(kernel_size[1], rounding_mode="floor") * dilation[0]
    w = q * stride[1] - padding[1] + t.remainder(kernel_size[1]) * dilation[1]
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    return torch.where(inside, h * W + w, torch.full_like(h, H * W))


for _ns in ("fastconv", "fastconv_emulated"):
    _register_conv_fakes(_ns)
    _register_pool_fakes(_ns)
    _register_conv_autograd(_ns)
    _register_pool_autograd(_ns)

from . import autocast as _autocast  # noqa: E402,F401  (autocast rules for the ops above, as F.conv2d's)
