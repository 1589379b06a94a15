"""Unfold weight gradients for small maps: numerical gradients (gradcheck), autograd of F.conv2d, and the
switch of a whole model, which must change no parameter, output or gradient."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssim_depth_core.config import ModelConfig
from ssim_depth_core.models import MonodepthModel
from ssim_depth_core.models.conv_grad import (
    SMALL_MAP_POSITIONS,
    SmallMapConv2d,
    conv2d_unfold_weight_grad,
    use_small_map_weight_grad,
)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "bias"),
    [((1, 1), (1, 1), (1, 1), True), ((2, 2), (1, 1), (1, 1), False), ((1, 2), (0, 2), (1, 2), True)],
)
def test_unfold_conv_passes_gradcheck(stride, padding, dilation, bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True) if bias else None

    def function(x, weight, b):
        return conv2d_unfold_weight_grad(x, weight, b, stride, padding, dilation)

    assert torch.autograd.gradcheck(function, (x, weight, b))
    torch.testing.assert_close(function(x, weight, b), F.conv2d(x, weight, b, stride, padding, dilation))


def test_unfold_weight_gradient_equals_conv2d_autograd_on_a_resnet_layer4_shape():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 512, 2, 6, generator=generator)
    weight = torch.randn(512, 512, 3, 3, generator=generator) / 48
    grad_output = torch.randn(4, 512, 2, 6, generator=generator)
    results = []
    for conv in (F.conv2d, conv2d_unfold_weight_grad):
        inputs = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
        conv(inputs[0], inputs[1], None, (1, 1), (1, 1), (1, 1)).backward(grad_output)
        results.append([tensor.grad for tensor in inputs])
    for native, unfold in zip(*results, strict=True):
        torch.testing.assert_close(unfold, native, rtol=1e-4, atol=1e-4)


def _small_and_large_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),  # 8x8 = 64 positions: oneDNN path
        nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 4x4 = 16 positions: unfold path
        nn.Conv2d(16, 4, 3, padding=1, padding_mode="reflect"),  # unfold path after reflection padding
    )


def test_switched_model_keeps_outputs_gradients_and_state_dict():
    torch.manual_seed(2)
    native = _small_and_large_net()
    switched = use_small_map_weight_grad(copy.deepcopy(native))
    assert [type(m) for m in switched] == [SmallMapConv2d] * 3
    assert native.state_dict().keys() == switched.state_dict().keys()
    x = torch.rand(2, 3, 8, 8)
    outputs = [net(x) for net in (native, switched)]
    torch.testing.assert_close(outputs[1], outputs[0])
    for output in outputs:
        output.square().sum().backward()
    for a, b in zip(native.parameters(), switched.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)


def test_only_small_maps_in_cpu_training_take_the_unfold_path():
    net = use_small_map_weight_grad(_small_and_large_net())
    x = torch.rand(1, 3, 8, 8)
    large = net[0](x)
    small = net[1](large)
    assert 4 * 4 <= SMALL_MAP_POSITIONS < 8 * 8
    assert "ConvolutionBackward" in type(large.grad_fn).__name__
    assert "UnfoldWeightGrad" in type(small.grad_fn).__name__
    with torch.no_grad():
        assert net[1](large).grad_fn is None


def test_monodepth_model_switch_follows_config():
    frame_ids = [0, -1, 1]
    on = MonodepthModel(ModelConfig(), frame_ids)
    off = MonodepthModel(ModelConfig(small_map_weight_grad=False), frame_ids)
    assert all(type(m) is SmallMapConv2d for m in on.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, SmallMapConv2d) for m in off.modules())
