"""The conv2d and max_pool2d problem types (ConvShape, PoolShape), and the standard benchmark shapes as data:
convolution layers, pooling layers and GEMM problems.

The two types serve both the benchmark (``python -m fastconv bench``) and the check matrix
(``fastconv.testing``), which keeps its own small cases of them. The standard shapes live in the package
(not only in benchmarks/) so that ``python -m fastconv bench`` works after a plain install;
``benchmarks/shapes.py`` re-exports them for the pytest-benchmark tests.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .ops import _pair, same_padding


def _conv_out(size, kernel, stride, pad_before, pad_after, dilation):
    """Output size of a convolution along one axis, as PyTorch computes it."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def _pool_out(size, kernel, stride, pad, dilation, ceil_mode):
    """Output size of a pooling window along one axis, as PyTorch computes it."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _text(prefix, value, default):
    """Formats a size as " p1", " p1,2" or " p=same" (prefix "p"); "" when it is the default."""
    if value == default:
        return ""
    if isinstance(value, str):
        return f" {prefix}={value}"
    return f" {prefix}{value}" if isinstance(value, int) else f" {prefix}{value[0]},{value[1]}"


@dataclass(frozen=True)
class ConvShape:
    """One conv2d problem: input N,C,H,W; K filters of R×S over C/groups channels; pad, stride and
    dilation as torch.nn.functional.conv2d takes them (an int or a pair; pad also "same" or "valid");
    net: where it comes from (a network's layer, or what a check case exercises); bias: whether the
    check matrix gives it a bias (the benchmark times convolutions without one)."""

    name: str
    net: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    pad: int | tuple | str = 0
    stride: int | tuple = 1
    groups: int = 1
    dilation: int | tuple = 1
    bias: bool = True

    def args(self):
        """(stride, padding, dilation, groups) as given, for torch.nn.functional.conv2d."""
        return (self.stride, self.pad, self.dilation, self.groups)

    def kernel_args(self):
        """(stride, padding, dilation) as the fastconv operators take them: pairs, and the padding as
        (top, bottom, left, right)."""
        return _pair("stride", self.stride), self.pads(), _pair("dilation", self.dilation)

    def pads(self):
        """The padding as (top, bottom, left, right); "same" puts an even kernel's extra pixel at the
        bottom/right, as PyTorch does."""
        if self.pad == "valid":
            return (0, 0, 0, 0)
        if self.pad == "same":
            return same_padding((self.R, self.S), _pair("dilation", self.dilation))
        h, w = _pair("padding", self.pad)
        return (h, h, w, w)

    @property
    def P(self):
        stride, (top, bottom, _, _), dilation = self.kernel_args()
        return _conv_out(self.H, self.R, stride[0], top, bottom, dilation[0])

    @property
    def Q(self):
        stride, (_, _, left, right), dilation = self.kernel_args()
        return _conv_out(self.W, self.S, stride[1], left, right, dilation[1])

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
        s = f"{self.N}x{self.C}x{self.H}x{self.W}->{self.K} {self.R}x{self.S}"
        s += _text("p", self.pad, None) + _text("s", self.stride, None) + _text("d", self.dilation, 1)
        s += f" g{self.groups}" if self.groups != 1 else ""
        return s + ("" if self.bias else " nobias")

    def __str__(self):
        return f"{self.name} {self.describe()}"

    def as_dict(self):
        return dict(asdict(self), kind="conv", P=self.P, Q=self.Q, flops=self.flops)


@dataclass(frozen=True)
class PoolShape:
    """One max_pool2d problem: kernel, stride (None: the kernel size), pad and dilation as
    torch.nn.functional.max_pool2d takes them (an int or a pair), and ceil_mode."""

    name: str
    net: str
    N: int
    C: int
    H: int
    W: int
    kernel: int | tuple
    stride: int | tuple | None = None
    pad: int | tuple = 0
    dilation: int | tuple = 1
    ceil_mode: bool = False

    def args(self):
        """(kernel_size, stride, padding, dilation, ceil_mode), each size a pair, for max_pool2d."""
        kernel = _pair("kernel_size", self.kernel)
        stride = kernel if self.stride is None else _pair("stride", self.stride)
        return (kernel, stride, _pair("padding", self.pad), _pair("dilation", self.dilation), self.ceil_mode)

    @property
    def P(self):
        k, s, p, d, ceil = self.args()
        return _pool_out(self.H, k[0], s[0], p[0], d[0], ceil)

    @property
    def Q(self):
        k, s, p, d, ceil = self.args()
        return _pool_out(self.W, k[1], s[1], p[1], d[1], ceil)

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
        k = self.kernel if isinstance(self.kernel, int) else f"{self.kernel[0]}x{self.kernel[1]}"
        s = f"{self.N}x{self.C}x{self.H}x{self.W} k{k}" + _text("s", self.stride, None)
        s += _text("p", self.pad, None) + _text("d", self.dilation, 1)
        return s + (" ceil" if self.ceil_mode else "")

    def __str__(self):
        return f"{self.name} {self.describe()}"

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
