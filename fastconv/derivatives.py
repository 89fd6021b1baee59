"""Derivatives of the fastconv operators, reverse mode (backward) and forward mode (jvp), registered as
each op's Autograd kernel.

Every op is linear in each of its tensor arguments, so each derivative is again made of fastconv ops:
gradients of any order work (gradgradcheck), forward-over-reverse works (torch.func.hessian), and no
derivative falls back to another library's convolution.

Why not ``torch.library.register_autograd``: the autograd.Function it generates has no ``jvp`` (a dual
tensor passed through it comes out with no tangent, and ``torch.func.jvp`` sees a zero tangent), and its
``forward`` takes ``ctx``, which functorch's transforms (grad, jacrev, hessian, vmap of autograd) refuse.
Here each op gets one autograd.Function in the form functorch wants: ``forward`` without ctx, a
``setup_context``, ``backward``, ``jvp``, and ``vmap`` (the batching rules of fastconv/batching.py).
"""
from __future__ import annotations

import functools

import torch
import torch.autograd.forward_ad as _forward_ad

_libraries = []  # keep the registrations alive
_functions = {}  # (namespace, op name) -> its autograd.Function




def register(ns, name, *, setup_context, backward, jvp):
    """Makes the autograd.Function for ns::name and registers it as the op's Autograd kernel. Calls that
    need no derivative (no input requires grad, no forward-mode AD in sight) skip the Function's cost.
    The Function's vmap rule comes from batching.py (register_vmap below)."""
    op = getattr(getattr(torch.ops, ns), name).default

    def forward(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    function = type(f"{ns}_{name}", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp),
    })

    def autograd_kernel(keyset, *args):
        if torch._C._are_functorch_transforms_active():
            # fastconv's own calls apply the Function before the dispatcher under functorch (Ops below);
            # reaching here means a raw torch.ops call, whose derivatives functorch would not see.
            raise RuntimeError(
                f"torch.ops.{ns}.{name} was called directly under a torch.func transform; call it through "
                f"fastconv.conv2d / fastconv.max_pool2d (or fastconv.derivatives.ops({ns!r}).{name}), "
                f"whose derivatives the transform sees")
        # A dual_level open means an argument may carry a tangent (checked by a flag: a per-tensor test
        # would cost every call); the Function's jvp then gives the output its tangent.
        if (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)) or _forward_ad._current_level >= 0:
            return function.apply(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)

    lib = torch.library.Library(ns, "IMPL")
    lib.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    _libraries.append(lib)
    _functions[(ns, name)] = function


def register_vmap(ns, name, rule):
    """rule(info, in_dims, *args) -> (output, out_dims) batches ns::name. It serves both ways a vmap meets
    the op: through its autograd.Function (fastconv's Python API under any functorch transform) and
    through the dispatcher (torch.vmap over torch.ops.<ns>.<name>). Either way the rule runs with the vmap
    level properly lowered, so the ops it calls may again be under grad/jvp/vmap levels below."""
    from torch._functorch.autograd_function import custom_function_call_vmap_helper
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

    function = _functions[(ns, name)]
    function.vmap = staticmethod(rule)

    def batched_kernel(keyset, *args):
        return custom_function_call_vmap_helper(retrieve_current_functorch_interpreter(), rule, function, *args)

    lib = torch.library.Library(ns, "IMPL")
    lib.impl(name, batched_kernel, "FuncTorchBatched", with_keyset=True)
    _libraries.append(lib)


class Ops:
    """The ops of one namespace as Python calls that every transform sees through. Under a functorch
    transform (grad, jvp, vmap, ...) an op's autograd.Function must be applied before the dispatcher:
    functorch intercepts Function.apply, not an Autograd kernel reached after it has unwrapped its
    tensors. Elsewhere the plain op is cheaper, and its Autograd kernel applies the same Function when a
    derivative is needed. Everything in fastconv that calls an op (the functional API, the derivatives,
    the batching rules) calls it through here."""

    def __init__(self, ns):
        self.namespace = ns
        self._library = getattr(torch.ops, ns)

    def __getattr__(self, name):
        op = getattr(self._library, name).default
        function = _functions[(self.namespace, name)]
        functorch_active = torch._C._are_functorch_transforms_active
        grad_enabled, any_requires_grad = torch.is_grad_enabled, torch._C._any_requires_grad
        is_compiling = torch.compiler.is_compiling
        below_autograd = _below_autograd(self.namespace, name, op)

        def call(*args):
            if functorch_active():
                return function.apply(*args)
            # is_compiling first: Dynamo folds it to True and never traces the C calls after it.
            if (not is_compiling() and _forward_ad._current_level < 0
                    and not (grad_enabled() and any_requires_grad(*args))):
                # No derivative in sight: what the Autograd kernel would do, without its Python call and
                # boxed redispatch (most of a small call's cost).
                return below_autograd(*args)
            return op(*args)

        call.__name__ = name
        setattr(self, name, call)  # resolved once per name
        return call


def _below_autograd(ns, name, op):
    """ns::name called below its Autograd kernel: for the forward ops, one unboxed C++ dispatcher call
    (_C's *_below_autograd); for the rest, the op under the guard."""
    from . import _C

    if name == "conv2d_fprop":
        return functools.partial(_C._conv2d_fprop_below_autograd, ns)
    if name in ("max_pool2d_fprop", "_max_pool2d_fprop_taps"):
        return functools.partial(_C._max_pool2d_fprop_below_autograd, ns, name == "_max_pool2d_fprop_taps")
    guard = torch._C._AutoDispatchBelowAutograd

    def below(*args):
        with guard():
            return op(*args)
    return below


_ops = {}


def ops(ns):
    """The Ops of namespace ns ("fastconv" or "fastconv_emulated")."""
    if ns not in _ops:
        _ops[ns] = Ops(ns)
    return _ops[ns]


def _add(a, b):
    """Sum of two tangent terms, either of which may be absent (None)."""
    if a is None:
        return b
    return a if b is None else a + b


# ----------------------------------------------------------------------------------------------------
# conv2d: fprop(x, w, b), dgrad(dy, w) and wgrad(dy, x) are bilinear, bgrad(dy) linear.
# ----------------------------------------------------------------------------------------------------
def register_conv(ns):
    lib = ops(ns)

    def fprop(*args):
        return lib.conv2d_fprop(*args)

    def dgrad(*args):
        return lib._conv2d_dgrad(*args)

    def wgrad(*args):
        return lib._conv2d_wgrad(*args)

    def bgrad(*args):
        return lib._conv2d_bgrad(*args)

    def fprop_setup(ctx, inputs, output):
        input, weight, bias, *params = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
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

    # d fprop = fprop(dx, w) + fprop(x, dw) + db
    def fprop_jvp(ctx, d_input, d_weight, d_bias, *_):
        input, weight = ctx.saved_tensors
        tangent = None
        if d_input is not None:
            tangent = fprop(d_input, weight, None, *ctx.params)
        if d_weight is not None:
            tangent = _add(tangent, fprop(input, d_weight, None, *ctx.params))
        if d_bias is not None:
            tangent = _add(tangent, d_bias.view(1, -1, 1, 1))
        return tangent

    register(ns, "conv2d_fprop", setup_context=fprop_setup, backward=fprop_backward, jvp=fprop_jvp)

    # The two backward ops are bilinear: op(a, b, size, *params), linear in a and in b. d_a(a, b, g, params)
    # and d_b(...) are the backward's gradients with respect to each; the jvp is op(da, b) + op(a, db).
    def register_bilinear(name, op, d_a, d_b):
        def setup(ctx, inputs, output):
            a, b, size, *params = inputs
            ctx.save_for_backward(a, b)
            ctx.save_for_forward(a, b)
            ctx.size = size
            ctx.params = params

        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            grad_a = d_a(a, b, grad, ctx.params) if ctx.needs_input_grad[0] else None
            grad_b = d_b(a, b, grad, ctx.params) if ctx.needs_input_grad[1] else None
            return grad_a, grad_b, None, None, None, None, None, None, None

        def jvp(ctx, da, db, *_):
            a, b = ctx.saved_tensors
            tangent = None if da is None else op(da, b, ctx.size, *ctx.params)
            return tangent if db is None else _add(tangent, op(a, db, ctx.size, *ctx.params))

        register(ns, name, setup_context=setup, backward=backward, jvp=jvp)

    # dgrad(dy, w) is the input gradient; d/d(dy) = fprop(g, w), d/dw = wgrad(dy, g).
    register_bilinear("_conv2d_dgrad", dgrad,
                      lambda dy, w, g, params: fprop(g, w, None, *params),
                      lambda dy, w, g, params: wgrad(dy, g, w.shape, *params))
    # wgrad(dy, x) is the weight gradient; d/d(dy) = fprop(x, g), d/dx = dgrad(dy, g).
    register_bilinear("_conv2d_wgrad", wgrad,
                      lambda dy, x, g, params: fprop(x, g, None, *params),
                      lambda dy, x, g, params: dgrad(dy, g, x.shape, *params))

    def bgrad_setup(ctx, inputs, output):
        ctx.grad_output_shape = inputs[0].shape

    def bgrad_backward(ctx, grad):
        return grad.view(1, -1, 1, 1).expand(ctx.grad_output_shape)

    def bgrad_jvp(ctx, d_grad_output):
        return bgrad(d_grad_output)

    register(ns, "_conv2d_bgrad", setup_context=bgrad_setup, backward=bgrad_backward, jvp=bgrad_jvp)


# ----------------------------------------------------------------------------------------------------
# max_pool2d: the output is the input gathered at the argmax, so its tangent is the input's tangent
# gathered there, and the backward (a scatter to the argmax) is linear in grad_output.
# ----------------------------------------------------------------------------------------------------
def gather_at_argmax(values, indices):
    """values (N, C, H, W) read at PyTorch's flat argmax indices (N, C, P, Q). An index outside the plane
    marks a window wholly in the padding, which reads no input: its element is zero."""
    plane = values.shape[2] * values.shape[3]
    flat = indices.flatten(2)
    inside = (flat >= 0) & (flat < plane)
    gathered = values.flatten(2).gather(2, flat.clamp(0, max(plane - 1, 0)))
    return torch.where(inside, gathered, torch.zeros_like(gathered)).view(indices.shape)


def flat_indices(taps, input_size, kernel_size, stride, padding, dilation):
    """PyTorch's flat indices h * W + w from tap numbers r * S + s (Pool2dProblem::tap_row/tap_col); a
    tap outside the input becomes an index outside the plane, which gather_at_argmax reads as zero."""
    H, W = input_size[2], input_size[3]
    P, Q = taps.shape[2], taps.shape[3]
    t = taps.long()
    p = torch.arange(P, device=taps.device).view(P, 1)
    q = torch.arange(Q, device=taps.device).view(1, Q)
    h = p * stride[0] - padding[0] + t.div(kernel_size[1], rounding_mode="floor") * dilation[0]
    w = q * stride[1] - padding[1] + t.remainder(kernel_size[1]) * dilation[1]
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    return torch.where(inside, h * W + w, torch.full_like(h, H * W))


def register_pool(ns):
    lib = ops(ns)

    def indices_of(argmax, input_size, params, taps):
        return flat_indices(argmax, input_size, *params[:4]) if taps else argmax

    def pool_pair(name, bprop, taps):
        def setup(ctx, inputs, output):
            input, *params = inputs
            ctx.save_for_backward(input, output[1])
            ctx.save_for_forward(output[1])
            ctx.input_size = input.shape
            ctx.params = params
            ctx.mark_non_differentiable(output[1])

        def backward(ctx, grad_output, _grad_argmax):
            input, argmax = ctx.saved_tensors
            return bprop(grad_output, input, argmax, *ctx.params), None, None, None, None, None

        def jvp(ctx, d_input, *_):
            (argmax,) = ctx.saved_tensors
            return gather_at_argmax(d_input, indices_of(argmax, ctx.input_size, ctx.params, taps)), None

        register(ns, name, setup_context=setup, backward=backward, jvp=jvp)

        # The backward scatters grad_output to the argmax: linear in grad_output, and its own derivative
        # (backward or forward) gathers from the argmax again.
        def bprop_setup(ctx, inputs, output):
            grad_output, input, argmax, *params = inputs
            indices = indices_of(argmax, input.shape, params, taps)
            ctx.save_for_backward(indices)
            ctx.save_for_forward(input, argmax)
            ctx.params = params

        def bprop_backward(ctx, grad):
            (indices,) = ctx.saved_tensors
            return gather_at_argmax(grad, indices), None, None, None, None, None, None, None

        def bprop_jvp(ctx, d_grad_output, *_):
            input, argmax = ctx.saved_tensors
            if d_grad_output is None:
                return None
            return bprop(d_grad_output, input, argmax, *ctx.params)

        register(ns, bprop_name(name), setup_context=bprop_setup, backward=bprop_backward, jvp=bprop_jvp)

    def bprop_name(fprop_name):
        return "_max_pool2d_bprop_taps" if fprop_name.endswith("_taps") else "_max_pool2d_bprop"

    pool_pair("max_pool2d_fprop", lambda *args: lib._max_pool2d_bprop(*args), taps=False)
    pool_pair("_max_pool2d_fprop_taps", lambda *args: lib._max_pool2d_bprop_taps(*args), taps=True)


for _ns in ("fastconv", "fastconv_emulated"):
    register_conv(_ns)
    register_pool(_ns)
