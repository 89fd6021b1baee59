"""The max_pool2d NaN / ±inf / tie cases, once, for every implementation's tests: the float64 reference
(test_reference.py), fastconv's CPU kernel (test_max_pool2d.py) and the CUDA kernel, emulated and on a GPU
(test_cuda_max_pool2d.py). The rules are PyTorch's: a NaN beats any number and the last NaN in row-major
scan order wins; among equal maxima the first wins; padding is never chosen. Also the two helpers the
taps pair's tests share, written from the definitions, not from the product code."""
from dataclasses import dataclass

import numpy as np

NAN, INF = float("nan"), float("inf")

# One row pooled by a single (1, len(row)) window: (row, the window's value, its index into the row).
ROW_CASES = [
    ([1, NAN, 2], NAN, 1),            # a NaN beats any number
    ([NAN, 5, 2], NAN, 0),            # ... even when it comes first
    ([1, NAN, 2, NAN], NAN, 3),       # the LAST NaN in scan order wins
    ([NAN, INF, NAN, 1], NAN, 2),
    ([3, 3, 1], 3, 0),                # ties: the FIRST maximum wins
    ([1, 3, 3], 3, 1),
    ([-INF, -INF, -INF], -INF, 0),    # nothing beats -inf: the first position
    ([-INF, -1, -INF], -1, 1),
    ([INF, 2, INF], INF, 0),          # +inf ties like any number
    ([INF, INF, 2], INF, 0),
]


def row_id(case):
    """A readable test id for a ROW_CASES entry, e.g. "1,nan,2"."""
    return ",".join(str(v) for v in case[0])


@dataclass(frozen=True)
class PlaneCase:
    """One (H, W) plane pooled by max_pool2d(plane, *args): the expected values and indices (row-major
    into the plane)."""

    name: str
    plane: list
    args: tuple  # kernel_size, stride, padding as passed positionally
    values: list
    indices: list


PLANE_CASES = [
    # NaNs at (0, 1) and (1, 0): (1, 0) comes later in row-major order, so it wins.
    PlaneCase("nan_scan_order_is_row_major", [[1, NAN], [NAN, 2]], (2,), [[NAN]], [[2]]),
    # Equal maxima at (0, 1) and (1, 0): (0, 1) comes first.
    PlaneCase("tie_first_in_row_major_order", [[1, 7], [7, 2]], (2,), [[7]], [[1]]),
    # Stride 1: every window that overlaps the NaN reports it.
    PlaneCase("nan_in_overlapping_windows", [[1, 2, 3, 4], [5, NAN, 6, 7], [8, 9, 10, 11]], (2, 1),
              [[NAN, NAN, 7], [NAN, NAN, 11]], [[5, 5, 7], [5, 5, 11]]),
    # All-negative input with padding: the (-inf) padding never wins.
    PlaneCase("padding_is_never_chosen", (-np.arange(1.0, 10.0).reshape(3, 3)).tolist(), (2, 2, 1),
              [[-1, -2], [-4, -5]], [[0, 1], [3, 4]]),
    # All -inf with padding: each window reports its first in-bounds position, never a padded one.
    PlaneCase("all_neg_inf_with_padding", np.full((3, 3), -INF).tolist(), (3, 2, 1),
              [[-INF, -INF], [-INF, -INF]], [[0, 1], [3, 4]]),
]


# ---------------------------------------------------------------------------------------- taps helpers
def window_all_padding(size, out, kernel, stride, pad, dilation):
    """Per output position along one axis: True when no tap of the window lands inside [0, size)."""
    return np.array([all(not 0 <= o * stride - pad + r * dilation < size for r in range(kernel))
                     for o in range(out)])


def all_padding_mask(shape, P, Q, kernel, stride, padding, dilation):
    rows = window_all_padding(shape[-2], P, kernel[0], stride[0], padding[0], dilation[0])
    cols = window_all_padding(shape[-1], Q, kernel[1], stride[1], padding[1], dilation[1])
    return rows[:, None] | cols[None, :]


def tap_positions(taps, kernel, stride, padding, dilation):
    """Input coordinates (h, w) of each recorded tap: h = p*sh - ph + (t // S)*dh, w = q*sw - pw + (t % S)*dw."""
    t = taps.cpu().numpy().astype(np.int64)
    P, Q = t.shape[-2:]
    p, q = np.arange(P)[:, None], np.arange(Q)[None, :]
    h = p * stride[0] - padding[0] + (t // kernel[1]) * dilation[0]
    w = q * stride[1] - padding[1] + (t % kernel[1]) * dilation[1]
    return h, w
