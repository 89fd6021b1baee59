"""Batching rules: torch.vmap over the fastconv operators runs each op once on the whole batch, through
fastconv's kernels, instead of PyTorch's per-sample fallback (a slow loop with a warning).

The mapping, for a vmap batch of size B:
- a batched input (or grad_output) alone folds into the batch dimension N: one call on B·N samples;
- a batched weight makes a grouped convolution: B filter banks side by side, the input's channels
  repeated (or, when the input is batched too, its B samples laid side by side as channels), groups·B
  groups, so every vmap lane convolves only with its own filters;
- a batched bias is added to the output per lane (folded into the grouped call when the weight is
  batched too);
- max_pool2d works per channel, so every batched argument folds into N.
The weight gradient of a batched problem is always the grouped form: each lane's gradient is one group's.
"""
from __future__ import annotations

import torch

from .derivatives import ops as _ops_of, register_vmap


def _front(t, dim, B):
    """t with its vmap dimension first; an unbatched t is broadcast to B lanes (a view, no copy)."""
    return t.unsqueeze(0).expand(B, *t.shape) if dim is None else t.movedim(dim, 0)


def _side_by_side(t, dim, B):
    """A batch of B (N, C, H, W) tensors as one (N, B·C, H, W) tensor: lane b's channels are block b."""
    if dim is None:
        return t.repeat(1, B, 1, 1)
    t = t.movedim(dim, 1)
    return t.reshape(t.shape[0], -1, *t.shape[3:])


def _lanes_of_channels(t, B):
    """(N, B·K, P, Q) back to B lanes of (N, K, P, Q), the lane dimension first."""
    return t.unflatten(1, (B, -1)).movedim(1, 0)


def register_conv(ns):
    ops = _ops_of(ns)
    fprop, dgrad, wgrad, bgrad = ops.conv2d_fprop, ops._conv2d_dgrad, ops._conv2d_wgrad, ops._conv2d_bgrad

    def fprop_rule(info, in_dims, input, weight, bias, stride, padding, dilation, groups, algorithm,
                   padding_mode="zeros"):
        B = info.batch_size
        x_dim, w_dim, b_dim = in_dims[:3]
        params = (stride, padding, dilation)
        if w_dim is None:
            if x_dim is None:  # only the bias is batched: one convolution, B biases
                out = fprop(input, weight, None, *params, groups, algorithm, padding_mode).unsqueeze(0)
            else:
                x = input.movedim(x_dim, 0)
                out = fprop(x.flatten(0, 1), weight, bias if b_dim is None else None, *params, groups, algorithm,
                            padding_mode).unflatten(0, (B, -1))
            if b_dim is not None:
                out = out + bias.movedim(b_dim, 0).view(B, 1, -1, 1, 1)
            return out, 0
        w = weight.movedim(w_dim, 0)
        if bias is not None:
            bias = bias.repeat(B) if b_dim is None else bias.movedim(b_dim, 0).flatten()
        out = fprop(_side_by_side(input, x_dim, B), w.flatten(0, 1), bias, *params, groups * B, algorithm,
                    padding_mode)
        return _lanes_of_channels(out, B), 0

    def dgrad_rule(info, in_dims, grad_output, weight, input_size, stride, padding, dilation, groups, algorithm,
                   padding_mode="zeros"):
        B = info.batch_size
        dy_dim, w_dim = in_dims[:2]
        N, C, H, W = input_size
        params = (stride, padding, dilation)
        if w_dim is None:
            dy = _front(grad_output, dy_dim, B).flatten(0, 1)
            out = dgrad(dy, weight, [B * N, C, H, W], *params, groups, algorithm, padding_mode)
            return out.unflatten(0, (B, -1)), 0
        w = weight.movedim(w_dim, 0).flatten(0, 1)
        out = dgrad(_side_by_side(grad_output, dy_dim, B), w, [N, B * C, H, W], *params, groups * B, algorithm,
                    padding_mode)
        return _lanes_of_channels(out, B), 0

    def wgrad_rule(info, in_dims, grad_output, input, weight_size, stride, padding, dilation, groups, algorithm,
                   padding_mode="zeros"):
        B = info.batch_size
        dy_dim, x_dim = in_dims[:2]
        K, *rest = weight_size
        out = wgrad(_side_by_side(grad_output, dy_dim, B), _side_by_side(input, x_dim, B), [B * K, *rest],
                    stride, padding, dilation, groups * B, algorithm, padding_mode)
        return out.unflatten(0, (B, -1)), 0

    def bgrad_rule(info, in_dims, grad_output):
        B = info.batch_size
        return bgrad(_side_by_side(grad_output, in_dims[0], B)).view(B, -1), 0

    register_vmap(ns, "conv2d_fprop", fprop_rule)
    register_vmap(ns, "_conv2d_dgrad", dgrad_rule)
    register_vmap(ns, "_conv2d_wgrad", wgrad_rule)
    register_vmap(ns, "_conv2d_bgrad", bgrad_rule)


def register_pool(ns):
    ops = _ops_of(ns)

    def fprop_rule(op):
        def rule(info, in_dims, input, *params):
            B = info.batch_size
            out, argmax = op(_front(input, in_dims[0], B).flatten(0, 1), *params)
            return (out.unflatten(0, (B, -1)), argmax.unflatten(0, (B, -1))), (0, 0)

        return rule

    def bprop_rule(op):
        def rule(info, in_dims, grad_output, input, argmax, *params):
            B = info.batch_size
            folded = [_front(t, d, B).flatten(0, 1) for t, d in zip((grad_output, input, argmax), in_dims)]
            return op(*folded, *params).unflatten(0, (B, -1)), 0

        return rule

    register_vmap(ns, "max_pool2d_fprop", fprop_rule(ops.max_pool2d_fprop))
    register_vmap(ns, "_max_pool2d_fprop_taps", fprop_rule(ops._max_pool2d_fprop_taps))
    register_vmap(ns, "_max_pool2d_bprop", bprop_rule(ops._max_pool2d_bprop))
    register_vmap(ns, "_max_pool2d_bprop_taps", bprop_rule(ops._max_pool2d_bprop_taps))


for _ns in ("fastconv", "fastconv_emulated"):
    register_conv(_ns)
    register_pool(_ns)
