"""Layers: drop-in replacements for torch.nn.Conv2d and torch.nn.MaxPool2d that run fastconv's kernels,
`convert` to swap them into an existing model, and LeNet-5.

The layers subclass their torch.nn namesakes, so the constructor signature, the defaults, the parameter
names, the initialisation, the state_dict and the repr are torch's own; only `forward` differs (and
Conv2d takes one more keyword, `algorithm`).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveMaxPoolNd, _MaxPoolNd

from . import ops

__all__ = ["Conv2d", "MaxPool2d", "ConversionReport", "convert", "LeNet5"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d computed by fastconv.conv2d. Same arguments as torch.nn.Conv2d, plus the keyword
    `algorithm` (one of fastconv.ALGORITHMS), shown in the repr when it is not "auto"."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, algorithm="auto"):
        ops._check_algorithm(algorithm)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self.algorithm = algorithm

    def extra_repr(self):
        s = super().extra_repr()
        if self.algorithm != "auto":
            s += f", algorithm={self.algorithm!r}"
        return s

    def _conv_forward(self, input, weight, bias):
        # reflect / replicate / circular are applied inside the kernels (torch.nn.Conv2d pads a copy).
        return ops.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                          algorithm=self.algorithm, padding_mode=self.padding_mode)


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by fastconv.max_pool2d. Same arguments as torch.nn.MaxPool2d."""

    def forward(self, input):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              ceil_mode=self.ceil_mode, return_indices=self.return_indices)


# ----------------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ConversionReport:
    """What `convert` did: the qualified names of the modules it replaced, and the convolution and
    max-pooling modules it left alone, each with the reason. The root module's name is ""."""

    replaced: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __str__(self):
        def show(name):
            return name or "<root>"

        lines = [f"fastconv.nn.convert: {len(self.replaced)} module(s) replaced, {len(self.skipped)} skipped"]
        lines += [f"  replaced  {show(name)}" for name in self.replaced]
        lines += [f"  skipped   {show(name)}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


_REPLACEMENTS = {torch.nn.Conv2d: Conv2d, torch.nn.MaxPool2d: MaxPool2d}


def _skip_reason(module):
    """Why a convolution or max-pooling module is left alone; None for any other module (not reported)."""
    kind = type(module)
    if isinstance(module, (Conv2d, MaxPool2d)):
        algorithm = getattr(module, "algorithm", None)
        return f"already fastconv ({kind.__qualname__}" + (f", algorithm={algorithm!r})" if algorithm else ")")
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(module, torch.nn.Conv2d):
        return f"{name} is a subclass of torch.nn.Conv2d with its own behaviour; not converted"
    if isinstance(module, torch.nn.MaxPool2d):
        return f"{name} is a subclass of torch.nn.MaxPool2d with its own behaviour; not converted"
    if isinstance(module, _ConvNd):
        return f"{name} has no fastconv kernel (fastconv serves torch.nn.Conv2d only)"
    if isinstance(module, (_MaxPoolNd, _AdaptiveMaxPoolNd)):
        return f"{name} has no fastconv kernel (fastconv serves torch.nn.MaxPool2d only)"
    return None


def convert(model, *, algorithm="auto"):
    """Replaces, in place and recursively, every torch.nn.Conv2d and torch.nn.MaxPool2d of `model`
    (exactly those classes, not subclasses) with fastconv.nn.Conv2d / fastconv.nn.MaxPool2d, and returns
    a ConversionReport.

    Each module changes class where it stands (as torch's lazy modules do when they materialise), so it
    keeps its Parameter and buffer objects, device, dtype, training mode and hooks, a module shared by
    several parents stays shared, and the root itself is converted when it is a Conv2d or MaxPool2d.
    Modules fastconv cannot serve (Conv1d/Conv3d, transposed convolutions, other max poolings, subclasses
    it does not know, modules already fastconv) are left alone and listed in `report.skipped`, so
    converting twice is a no-op."""
    ops._check_algorithm(algorithm)
    report = ConversionReport()
    seen = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen:
            continue
        seen.add(id(module))
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is None:
            reason = _skip_reason(module)
            if reason is not None:
                report.skipped.append((name, reason))
            continue
        module.__class__ = replacement
        if replacement is Conv2d:
            module.algorithm = algorithm
        report.replaced.append(name)
    return report


# ----------------------------------------------------------------------------------------------------
# LeNet-5
# ----------------------------------------------------------------------------------------------------
class LeNet5(torch.nn.Module):
    """LeNet-5 (LeCun et al., 1998) with max pooling for the subsampling layers and ReLU activations:

        INPUT 1@32x32 → C1 conv5x5 6@28x28 → S2 maxpool2 6@14x14 → C3 conv5x5 16@10x10
        → S4 maxpool2 16@5x5 → C5 conv5x5 120@1x1 → F6 linear 84 → OUTPUT linear num_classes

    layers="fastconv" builds it from fastconv.nn layers (with `algorithm`), layers="torch" from torch.nn
    ones; both initialise identically from the same seed."""

    def __init__(self, num_classes=10, in_channels=1, *, layers="fastconv", algorithm="auto"):
        super().__init__()
        if layers == "fastconv":
            def conv(c, k):
                return Conv2d(c, k, 5, algorithm=algorithm)

            pool = MaxPool2d
        elif layers == "torch":
            def conv(c, k):
                return torch.nn.Conv2d(c, k, 5)

            pool = torch.nn.MaxPool2d
        else:
            raise ValueError(f"layers must be 'fastconv' or 'torch', but got {layers!r}")
        self.c1 = conv(in_channels, 6)
        self.s2 = pool(2)
        self.c3 = conv(6, 16)
        self.s4 = pool(2)
        self.c5 = conv(16, 120)
        self.f6 = torch.nn.Linear(120, 84)
        self.output = torch.nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.s2(F.relu(self.c1(x)))
        x = self.s4(F.relu(self.c3(x)))
        x = F.relu(self.c5(x)).flatten(-3)
        return self.output(F.relu(self.f6(x)))
