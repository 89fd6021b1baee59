"""Float64 reference for conv2d and max_pool2d, in plain numpy.

This module is the independent yardstick for fastconv's kernels, so it never
calls torch: every result is built from shifted slices of the (padded) input,
one kernel offset (r, s) at a time, which keeps the arithmetic visible.

Names follow CUTLASS: x is (N, C, H, W), w is (K, C/groups, R, S) and the
output y is (N, K, P, Q).
"""

import numpy as np


def _pair(v):
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def _pad4(padding):
    """Return (top, bottom, left, right) from an int, (h, w) or a 4-tuple."""
    if np.isscalar(padding):
        padding = (padding, padding)
    if len(padding) == 2:
        ph, pw = _pair(padding)
        padding = (ph, ph, pw, pw)
    top, bottom, left, right = (int(p) for p in padding)
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    return top, bottom, left, right


def _conv_out(size, pad_lo, pad_hi, k, stride, dilation):
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def _window(a, r, s, P, Q, stride, dilation):
    """The (..., P, Q) view of a padded array seen by kernel tap (r, s)."""
    sh, sw = stride
    dh, dw = dilation
    h0, w0 = r * dh, s * dw
    return a[..., h0:h0 + (P - 1) * sh + 1:sh, w0:w0 + (Q - 1) * sw + 1:sw]


def _conv_geometry(input_size, weight_size, stride, padding, dilation, groups):
    N, C, H, W = input_size
    K, Cg, R, S = weight_size
    if groups < 1 or C % groups or K % groups or Cg != C // groups:
        raise ValueError(f"bad groups={groups} for C={C}, K={K}, C/groups={Cg}")
    stride, dilation, pad = _pair(stride), _pair(dilation), _pad4(padding)
    P = _conv_out(H, pad[0], pad[1], R, stride[0], dilation[0])
    Q = _conv_out(W, pad[2], pad[3], S, stride[1], dilation[1])
    if P < 1 or Q < 1:
        raise ValueError(f"empty output {P}x{Q}: kernel larger than padded input")
    return stride, pad, dilation, P, Q


# torch.nn.Conv2d's padding_mode -> numpy.pad's mode (numpy's "reflect" mirrors without repeating the
# edge, as torch's does).
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _padded(x, pad, padding_mode):
    """x (N, C, H, W) padded by pad (top, bottom, left, right) as torch.nn.Conv2d's padding_mode does."""
    return np.pad(x, ((0, 0), (0, 0), pad[:2], pad[2:]), mode=NUMPY_PAD_MODES[padding_mode])


def _unpad_sum(dxp, pad, H, W, padding_mode):
    """The adjoint of _padded for reflect/replicate/circular: every padded position adds its gradient to
    the input position it copies, found by padding an index ramp the same way."""
    rows = np.pad(np.arange(H), pad[:2], mode=NUMPY_PAD_MODES[padding_mode])
    cols = np.pad(np.arange(W), pad[2:], mode=NUMPY_PAD_MODES[padding_mode])
    dx = np.zeros(dxp.shape[:-2] + (H, W))
    for i, h in enumerate(rows):
        for j, w in enumerate(cols):
            dx[..., h, w] += dxp[..., i, j]
    return dx


def _grouped_weight(w, groups):
    K, Cg, R, S = w.shape
    return w.reshape(groups, K // groups, Cg, R, S)


def conv2d_fprop(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, padding_mode="zeros"):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    stride, pad, dilation, P, Q = _conv_geometry(
        x.shape, w.shape, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    xp = _padded(x, pad, padding_mode)
    xg = xp.reshape(N, groups, Cg, *xp.shape[2:])
    wg = _grouped_weight(w, groups)
    y = np.zeros((N, groups, K // groups, P, Q))
    for r in range(R):
        for s in range(S):
            xs = _window(xg, r, s, P, Q, stride, dilation)
            y += np.einsum("ngcpq,gkc->ngkpq", xs, wg[..., r, s])
    y = y.reshape(N, K, P, Q)
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64).reshape(1, K, 1, 1)
    return y


def conv2d_dgrad(dy, w, input_size, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, padding_mode="zeros"):
    # Each input pixel receives dy times the weight tap that read it in
    # fprop; scattering into the padded input, then folding the padding back
    # onto the pixels it copied (cropping, for zero padding) does exactly that.
    dy = np.asarray(dy, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    stride, pad, dilation, P, Q = _conv_geometry(
        input_size, w.shape, stride, padding, dilation, groups)
    N, C, H, W = input_size
    K, Cg, R, S = w.shape
    if dy.shape != (N, K, P, Q):
        raise ValueError(f"dy has shape {dy.shape}, expected {(N, K, P, Q)}")
    dyg = dy.reshape(N, groups, K // groups, P, Q)
    wg = _grouped_weight(w, groups)
    dxp = np.zeros((N, groups, Cg, H + pad[0] + pad[1], W + pad[2] + pad[3]))
    for r in range(R):
        for s in range(S):
            _window(dxp, r, s, P, Q, stride, dilation)[...] += np.einsum(
                "ngkpq,gkc->ngcpq", dyg, wg[..., r, s])
    if padding_mode == "zeros":
        dx = dxp[..., pad[0]:pad[0] + H, pad[2]:pad[2] + W]
    else:
        dx = _unpad_sum(dxp, pad, H, W, padding_mode)
    return dx.reshape(N, C, H, W)


def conv2d_wgrad(dy, x, weight_size, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1, padding_mode="zeros"):
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    stride, pad, dilation, P, Q = _conv_geometry(
        x.shape, weight_size, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    K, Cg, R, S = weight_size
    if dy.shape != (N, K, P, Q):
        raise ValueError(f"dy has shape {dy.shape}, expected {(N, K, P, Q)}")
    xp = _padded(x, pad, padding_mode)
    xg = xp.reshape(N, groups, Cg, *xp.shape[2:])
    dyg = dy.reshape(N, groups, K // groups, P, Q)
    dw = np.zeros((groups, K // groups, Cg, R, S))
    for r in range(R):
        for s in range(S):
            xs = _window(xg, r, s, P, Q, stride, dilation)
            dw[..., r, s] = np.einsum("ngkpq,ngcpq->gkc", dyg, xs)
    return dw.reshape(K, Cg, R, S)


def conv2d_bgrad(dy):
    return np.asarray(dy, dtype=np.float64).sum(axis=(0, 2, 3))


def _pool_out(size, k, stride, pad, dilation, ceil_mode):
    # PyTorch's pooling_output_shape: floor (or ceil) division, and in
    # ceil_mode a last window may not start inside the right padding.
    num = size + 2 * pad - dilation * (k - 1) - 1
    out = (num + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _first_inside(out, stride, pad, dilation):
    """Per output position, the first window row (or column) that is >= 0.

    PyTorch seeds each window's index with this position, so a window whose
    taps all read -inf (or padding) reports it. It can even lie past the
    input when every tap of a dilated window falls in the padding.
    """
    start = np.arange(out) * stride - pad
    skip = np.where(start < 0, -(start // dilation), 0)  # ceil(-start / d)
    return start + skip * dilation


def max_pool2d_fprop(x, kernel_size, stride=None, padding=(0, 0),
                     dilation=(1, 1), ceil_mode=False):
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None or np.size(stride) == 0 else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError("padding must be at most half the kernel size")
    P = _pool_out(H, kh, sh, ph, dh, ceil_mode)
    Q = _pool_out(W, kw, sw, pw, dw, ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"empty output {P}x{Q}")

    # -inf padding never beats the running max (compared with a strict >),
    # so it is never reported; the far side is padded for ceil_mode windows.
    bottom = max(0, (P - 1) * sh + (kh - 1) * dh + 1 - H - ph)
    right = max(0, (Q - 1) * sw + (kw - 1) * dw + 1 - W - pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, bottom), (pw, right)),
                constant_values=-np.inf)

    rows = np.arange(P) * sh - ph
    cols = np.arange(Q) * sw - pw
    y = np.full((N, C, P, Q), -np.inf)
    first = (_first_inside(P, sh, ph, dh)[:, None] * W
             + _first_inside(Q, sw, pw, dw)[None, :])
    idx = np.broadcast_to(first, (N, C, P, Q)).astype(np.int64)
    # Taps in PyTorch's scan order (row-major in the window). A strictly
    # greater value wins, so the first maximum is kept on ties; any NaN wins,
    # so the last NaN in the window is reported.
    for r in range(kh):
        for s in range(kw):
            v = _window(xp, r, s, P, Q, (sh, sw), (dh, dw))
            take = (v > y) | np.isnan(v)
            pos = (rows[:, None] + r * dh) * W + (cols[None, :] + s * dw)
            y = np.where(take, v, y)
            idx = np.where(take, pos, idx)
    return y, idx


def max_pool2d_bprop(dy, indices, input_size):
    dy = np.asarray(dy, dtype=np.float64)
    indices = np.asarray(indices)
    N, C, H, W = input_size
    if dy.shape != indices.shape or dy.shape[:2] != (N, C):
        raise ValueError(f"dy {dy.shape} / indices {indices.shape} do not "
                         f"match input_size {tuple(input_size)}")
    if indices.size and (indices.min() < 0 or indices.max() >= H * W):
        raise ValueError("an index lies outside the input plane")
    P, Q = dy.shape[2:]
    dx = np.zeros((N * C, H * W))
    # add.at, not fancy assignment: overlapping windows may pick the same
    # input pixel, and every one of their gradients must be summed.
    np.add.at(dx, (np.arange(N * C)[:, None], indices.reshape(N * C, P * Q)),
              dy.reshape(N * C, P * Q))
    return dx.reshape(N, C, H, W)
