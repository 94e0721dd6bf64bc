"""Convolutional KAN layers: ``KANConv1d`` and ``KANConv2d``, drop-ins for ``nn.Conv1d`` and
``nn.Conv2d``.

Every (input channel, kernel position) -> output channel connection is an edge with its own
spline and the silu residual: the layer unfolds its input into patches of ``in_channels /
groups * prod(kernel_size)`` values (im2col, by ``Tensor.unfold``) and applies one ``KANLinear`` per
group to every patch, so it computes through the same exact local-form kernel as
``KANLinear``, with no dense basis tensor on the kernel path (memory flat in the grid).
Padding is with zeros, as ``nn.Conv``'s default ``padding_mode``; a padded zero enters its
edges like any other input value (an edge's function at 0 need not be 0). ``bias`` adds one
number per output channel. The grid options (``grid``, ``k``, ``grid_range``, ``grid_update``
and the rest of ``KANLinear``'s keywords) apply to every group's layer.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layer import KANLinear

__all__ = ["KANConv1d", "KANConv2d"]


def _pair(value, name: str, dims: int) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or a tuple of {dims} ints, got {value!r}")
    return values


class _KANConvNd(nn.Module):
    dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, grid: int = 5, k: int = 3,
                 device=None, dtype=None, **kan_options) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' (the only one KAN convolutions support), got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size", self.dims)
        self.stride = _pair(stride, "stride", self.dims)
        self.dilation = _pair(dilation, "dilation", self.dims)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid', an int or a tuple, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' needs stride 1, as in nn.Conv")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", self.dims)
        if any(v < 1 for v in self.kernel_size + self.stride + self.dilation):
            raise ValueError("kernel_size, stride and dilation must be positive")
        self.padding_mode = padding_mode
        self.in_per_group = in_channels // groups * math.prod(self.kernel_size)
        self.out_per_group = out_channels // groups
        self.kans = nn.ModuleList(
            KANLinear(self.in_per_group, self.out_per_group, grid=grid, k=k, device=device, dtype=dtype, **kan_options)
            for _ in range(groups))
        self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype or torch.get_default_dtype())) if bias else None

    def extra_repr(self) -> str:
        layer = self.kans[0]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
                f"grid={layer.grid_size}, k={layer.k}")

    def _explicit_padding(self) -> tuple[int, ...]:
        if self.padding == "valid":
            return (0,) * self.dims
        if self.padding == "same":  # nn.Conv pads (total // 2) before, the rest after: forward pads by hand
            return tuple(d * (s - 1) for d, s in zip(self.dilation, self.kernel_size))
        return self.padding

    def _as_2d(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple, tuple, tuple, tuple]:
        """``x`` as ``(N, C, H, W)`` and the 2-d kernel, stride, dilation, padding."""
        return x, self.kernel_size, self.stride, self.dilation, self._explicit_padding()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == self.dims + 1
        if x.dim() not in (self.dims + 1, self.dims + 2):
            raise ValueError(f"{type(self).__name__} takes (N, C, *{self.dims} sizes) or (C, *{self.dims} sizes) input, "
                             f"got shape {tuple(x.shape)}")
        if unbatched:
            x = x.unsqueeze(0)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        image, kernel, stride, dilation, padding = self._as_2d(x)
        if self.padding == "same":  # total padding d*(k-1): half (rounded down) before, the rest after
            (top, left) = (padding[0] // 2, padding[1] // 2)
            image = F.pad(image, [left, padding[1] - left, top, padding[0] - top])
            padding = (0, 0)
        n = image.shape[0]
        if any(padding):
            image = F.pad(image, [padding[1], padding[1], padding[0], padding[0]])
        # (N, C, H_out, W_out, kh, kw) windows as a view, then one copy into rows of patches (for
        # sequences about 2-3x faster than F.unfold's per-sample im2col, forward and backward)
        windows = image
        for d in range(2):
            windows = windows.unfold(2 + d, dilation[d] * (kernel[d] - 1) + 1, stride[d])
        windows = windows[..., ::dilation[0], ::dilation[1]]
        out_size = list(windows.shape[2:4])
        length = out_size[0] * out_size[1]
        patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(n * length, self.groups, self.in_per_group)
        outputs = [kan(patches[:, g]) for g, kan in enumerate(self.kans)]
        out = outputs[0] if self.groups == 1 else torch.cat(outputs, dim=1)
        if self.bias is not None:
            out = out + self.bias
        out = out.reshape(n, length, self.out_channels).transpose(1, 2)
        out = out.reshape(n, self.out_channels, *(out_size if self.dims == 2 else out_size[1:]))
        return out.squeeze(0) if unbatched else out


class KANConv2d(_KANConvNd):
    """A KAN ``nn.Conv2d``: ``(N, C_in, H, W) -> (N, C_out, H_out, W_out)`` (module docstring).
    Arguments as ``nn.Conv2d`` (``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding`` (ints or ``"same"`` / ``"valid"``), ``dilation``, ``groups``, ``bias``,
    ``padding_mode="zeros"``, ``device``, ``dtype``) plus ``grid``, ``k`` and ``KANLinear``'s
    keywords."""

    dims = 2


class KANConv1d(_KANConvNd):
    """A KAN ``nn.Conv1d``: ``(N, C_in, L) -> (N, C_out, L_out)``; arguments as ``KANConv2d``
    with one-number sizes."""

    dims = 1

    def _as_2d(self, x: torch.Tensor):
        padding = self._explicit_padding()
        return (x.unsqueeze(2), (1, self.kernel_size[0]), (1, self.stride[0]), (1, self.dilation[0]),
                (0, padding[0]))
