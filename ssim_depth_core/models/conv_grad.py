"""Convolution weight gradients by unfold + one GEMM, for CPU training on small feature maps.

oneDNN (PyTorch's CPU convolution) accumulates a weight gradient in weight-sized buffers per thread and
image, which costs more than the arithmetic when the output map is tiny and the weight large: a ResNet-18's
512x512 3x3 convs at 1/32 scale (2x6 positions at 192x64) run forward + backward slower than with an
unfold + GEMM weight gradient on some hosts (``bench/conv_grad.py`` measures it; figures in docs/training.md).
The gradient is the same, up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Output positions per image at or below which the unfold weight gradient is used: the boundary between the
# shapes that gain and those where oneDNN is as fast or faster in bench/conv_grad.py (docs/training.md).
SMALL_MAP_POSITIONS = 32


class _UnfoldWeightGradConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # oneDNN's input gradient has no such problem
            only_input = [True, False, False]
            grad_x = torch.ops.aten.convolution_backward(
                grad_output, x, weight, None, stride, padding, dilation, False, [0, 0], 1, only_input
            )[0]
        if ctx.needs_input_grad[1]:
            columns = F.unfold(x, weight.shape[2:], dilation, padding, stride)  # (N, C*kh*kw, L)
            out_channels = weight.shape[0]
            grad_rows = grad_output.transpose(0, 1).reshape(out_channels, -1)  # (O, N*L)
            grad_weight = (grad_rows @ columns.transpose(1, 2).reshape(-1, columns.shape[1])).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None


def conv2d_unfold_weight_grad(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """``F.conv2d`` (groups 1, zero padding) whose weight gradient is computed as unfold(x) x grad_output.

    Args:
        x: (N, C, H, W).
        weight: (O, C, kh, kw).
        bias: (O,) or None.

    Returns:
        (N, O, H_out, W_out), equal to ``F.conv2d(x, weight, bias, stride, padding, dilation)``.
    """
    return _UnfoldWeightGradConv2d.apply(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation))


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, when training on the CPU with an output of at most :data:`SMALL_MAP_POSITIONS`
    positions per image, takes :func:`conv2d_unfold_weight_grad`; everywhere else it is ``nn.Conv2d``."""

    def _output_positions(self, height: int, width: int) -> int:
        return math.prod(
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, kernel, stride, pad, dilation in zip(
                (height, width), self.kernel_size, self.stride, self.padding, self.dilation, strict=True
            )
        )

    def _conv_forward(self, input, weight, bias):
        use_unfold = (
            input.device.type == "cpu"
            and torch.is_grad_enabled()
            and weight.requires_grad
            and self.groups == 1
            and not isinstance(self.padding, str)
            and self._output_positions(*input.shape[-2:]) <= SMALL_MAP_POSITIONS
        )
        if not use_unfold:
            return super()._conv_forward(input, weight, bias)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        return conv2d_unfold_weight_grad(input, weight, bias, self.stride, padding, self.dilation)


def use_small_map_weight_grad(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` into a :class:`SmallMapConv2d`, in place.

    Parameters, state dict and forward results are unchanged; only the CPU backward of small maps is.
    """
    for child in module.modules():
        if type(child) is nn.Conv2d:
            child.__class__ = SmallMapConv2d
    return module
