"""The standard benchmark shapes, as data: convolution layers, pooling layers and GEMM problems.

They live in the package (not only in benchmarks/) so that ``python -m fastconv bench`` works after a
plain install; ``benchmarks/shapes.py`` re-exports them for the pytest-benchmark tests.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


def _out(size, kernel, stride, pad, dilation=1, ceil_mode=False):
    """Output size of a convolution or pooling window along one axis, as PyTorch computes it."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    return out


@dataclass(frozen=True)
class ConvShape:
    """One conv2d layer: input N,C,H,W; K filters of R×S over C/groups channels; square pad and stride."""

    name: str
    net: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    pad: int = 0
    stride: int = 1
    groups: int = 1

    @property
    def P(self):
        return _out(self.H, self.R, self.stride, self.pad)

    @property
    def Q(self):
        return _out(self.W, self.S, self.stride, self.pad)

    @property
    def flops(self):
        """Multiply-adds × 2 of one pass (forward, grad-input and grad-weight all do the same work)."""
        return 2 * self.N * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S

    def gemm(self):
        """The per-image, per-group GEMM of the im2col forward: (K/g × C/g·R·S) · (C/g·R·S × P·Q)."""
        return GemmShape(f"im2col.{self.name}", f"im2col fprop of {self.name}", self.K // self.groups,
                         self.P * self.Q, self.C // self.groups * self.R * self.S)

    def with_batch(self, n):
        return replace(self, N=n)

    def describe(self):
        g = f" g{self.groups}" if self.groups != 1 else ""
        return (f"{self.N}x{self.C}x{self.H}x{self.W}->{self.K} {self.R}x{self.S} "
                f"p{self.pad} s{self.stride}{g}")

    def as_dict(self):
        return dict(asdict(self), kind="conv", P=self.P, Q=self.Q, flops=self.flops)


@dataclass(frozen=True)
class PoolShape:
    """One max_pool2d layer: a square kernel, stride and padding, and ceil_mode."""

    name: str
    net: str
    N: int
    C: int
    H: int
    W: int
    kernel: int
    stride: int
    pad: int = 0
    ceil_mode: bool = False

    @property
    def P(self):
        return _out(self.H, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode)

    @property
    def Q(self):
        return _out(self.W, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode)

    def bytes(self, pass_, element_size=4, index_size=8):
        """Bytes PyTorch's pair must move at least once: forward reads the input and writes the output
        and its int64 argmax indices (which a training forward keeps); backward reads the output gradient
        and the indices and writes the whole input gradient. Every candidate is counted alike, so GB/s
        ratios are time ratios; fastconv's taps pair moves one-byte taps instead of the indices, so its
        GB/s can read above the machine's copy bandwidth."""
        inputs = self.N * self.C * self.H * self.W
        outputs = self.N * self.C * self.P * self.Q
        if pass_ == "forward":
            return inputs * element_size + outputs * (element_size + index_size)
        if pass_ == "backward":
            return outputs * (element_size + index_size) + inputs * element_size
        raise ValueError(f"no byte count for pooling pass {pass_!r}")

    def with_batch(self, n):
        return replace(self, N=n)

    def describe(self):
        ceil = " ceil" if self.ceil_mode else ""
        return f"{self.N}x{self.C}x{self.H}x{self.W} k{self.kernel} s{self.stride} p{self.pad}{ceil}"

    def as_dict(self):
        return dict(asdict(self), kind="pool", P=self.P, Q=self.Q)


@dataclass(frozen=True)
class GemmShape:
    """C[M×N] = A[M×K] · B[K×N]."""

    name: str
    net: str
    M: int
    N: int
    K: int

    @property
    def flops(self):
        return 2 * self.M * self.N * self.K

    def describe(self):
        return f"{self.M}x{self.K} * {self.K}x{self.N}"

    def as_dict(self):
        return dict(asdict(self), kind="gemm", flops=self.flops)


CONV_SHAPES = (
    ConvShape("resnet.conv2_3x3", "ResNet-18/34 stage 2", 8, 64, 56, 56, 64, 3, 3, pad=1),
    ConvShape("resnet.conv3_3x3", "ResNet-18/34 stage 3", 8, 128, 28, 28, 128, 3, 3, pad=1),
    ConvShape("resnet.conv4_3x3", "ResNet-18/34 stage 4", 8, 256, 14, 14, 256, 3, 3, pad=1),
    ConvShape("resnet.conv5_3x3", "ResNet-18/34 stage 5", 8, 512, 7, 7, 512, 3, 3, pad=1),
    ConvShape("resnet50.expand_1x1", "ResNet-50 bottleneck (conv2 expand)", 8, 64, 56, 56, 256, 1, 1),
    ConvShape("resnet50.reduce_1x1", "ResNet-50 bottleneck (conv2 reduce)", 8, 256, 56, 56, 64, 1, 1),
    ConvShape("resnet50.down_1x1_s2", "ResNet-50 downsample (conv5 shortcut)", 8, 1024, 14, 14, 2048, 1, 1,
              stride=2),
    ConvShape("resnet.stem_7x7_s2", "ResNet stem", 8, 3, 224, 224, 64, 7, 7, pad=3, stride=2),
    ConvShape("inception.5x5", "GoogLeNet inception 3a (5x5 branch)", 8, 192, 28, 28, 32, 5, 5, pad=2),
    ConvShape("vgg.conv2_3x3", "VGG-16 block 2", 8, 64, 112, 112, 128, 3, 3, pad=1),
    ConvShape("mobilenet.dw_3x3", "MobileNet depthwise", 8, 256, 28, 28, 256, 3, 3, pad=1, groups=256),
)

POOL_SHAPES = (
    PoolShape("resnet.maxpool_k3s2", "ResNet stem max pool", 32, 64, 112, 112, 3, 2, pad=1),
    PoolShape("vgg.maxpool_k2s2", "VGG max pool", 8, 128, 56, 56, 2, 2),
    PoolShape("alexnet.maxpool_k3s2_ceil", "AlexNet max pool (ceil_mode)", 8, 64, 55, 55, 3, 2, ceil_mode=True),
)

GEMM_SHAPES = (
    GemmShape("square.512", "square", 512, 512, 512),
    GemmShape("square.1024", "square", 1024, 1024, 1024),
    GemmShape("square.2048", "square", 2048, 2048, 2048),
) + tuple(s.gemm() for s in CONV_SHAPES if s.groups == 1)

# A small subset for a fast look (python -m fastconv bench --quick).
QUICK_CONV = ("resnet.conv3_3x3", "resnet50.expand_1x1", "mobilenet.dw_3x3")
QUICK_POOL = ("resnet.maxpool_k3s2",)
QUICK_GEMM = ("square.512", "im2col.resnet.conv3_3x3")

# The three layers the default ``python -m fastconv`` (info) times, batch reduced to fit in seconds.
INFO_CONV = ("resnet.conv3_3x3", "resnet50.expand_1x1", "resnet.stem_7x7_s2")
