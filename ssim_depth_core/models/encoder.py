"""ResNet feature encoder (torchvision backbone) with ImageNet normalisation built in."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision import models

logger = logging.getLogger(__name__)

# ImageNet V1 weights for every depth, the weights the published Monodepth2 results start from.
_RESNETS = {
    18: (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    34: (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    50: (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _wider_input(conv: nn.Conv2d, num_input_images: int) -> nn.Conv2d:
    """A conv like ``conv`` taking ``num_input_images`` frames stacked along channels (fresh weights)."""
    return nn.Conv2d(
        conv.in_channels * num_input_images,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )


def stack_input_conv(conv: nn.Conv2d, num_input_images: int) -> nn.Conv2d:
    """A copy of ``conv`` that takes ``num_input_images`` frames stacked along channels.

    The weight is repeated over the frames and divided by their number, so that identical frames give the
    response a single frame gives to ``conv`` (this keeps pretrained filters meaningful).
    """
    stacked = _wider_input(conv, num_input_images)
    with torch.no_grad():
        stacked.weight.copy_(conv.weight.repeat(1, num_input_images, 1, 1) / num_input_images)
        if conv.bias is not None:
            stacked.bias.copy_(conv.bias)
    return stacked


def independent_input_conv(conv: nn.Conv2d, num_input_images: int) -> nn.Conv2d:
    """A freshly initialised ``conv`` for ``num_input_images`` stacked frames, each with its own filters.

    From scratch, :func:`stack_input_conv`'s tied filters would only see the frames' sum, blind to their
    difference (the motion the pose net must find); independent He-initialised filters see both.
    """
    stacked = _wider_input(conv, num_input_images)
    nn.init.kaiming_normal_(stacked.weight, mode="fan_out", nonlinearity="relu")  # torchvision's ResNet init
    if stacked.bias is not None:
        nn.init.zeros_(stacked.bias)
    return stacked


class ResnetEncoder(nn.Module):
    """torchvision ResNet trunk returning five feature maps, for RGB input in [0, 1].

    The ImageNet mean/std normalisation happens inside, so callers (and the exported ONNX graph) feed plain
    [0, 1] RGB. The classifier head is dropped, so every parameter is used (DDP-friendly).

    Args:
        num_layers: ResNet depth, 18, 34 or 50.
        pretrained: start from torchvision's ImageNet weights (downloaded or read from the torch hub cache).
        num_input_images: frames stacked along channels (2 for the pose net); the first conv is adapted with
            :func:`stack_input_conv` (pretrained) or :func:`independent_input_conv` (from scratch).
    """

    def __init__(self, num_layers: int = 18, pretrained: bool = False, num_input_images: int = 1) -> None:
        super().__init__()
        if num_layers not in _RESNETS:
            raise ValueError(f"ResNet num_layers must be one of {sorted(_RESNETS)}, got {num_layers}")
        if num_input_images < 1:
            raise ValueError(f"num_input_images must be >= 1, got {num_input_images}")
        builder, weights = _RESNETS[num_layers]
        if pretrained:
            logger.info("loading torchvision ImageNet weights %s", weights)
        resnet = builder(weights=weights if pretrained else None)
        self.num_input_images = num_input_images
        if num_input_images == 1:
            self.conv1 = resnet.conv1
        elif pretrained:
            self.conv1 = stack_input_conv(resnet.conv1, num_input_images)
        else:
            self.conv1 = independent_input_conv(resnet.conv1, num_input_images)
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )
        expansion = type(resnet.layer1[0]).expansion  # 1 for basic blocks, 4 for bottlenecks
        self.num_ch_enc: tuple[int, ...] = (
            64,
            64 * expansion,
            128 * expansion,
            256 * expansion,
            512 * expansion,
        )
        mean = torch.tensor(IMAGENET_MEAN * num_input_images).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD * num_input_images).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encode images.

        Args:
            images: (B, 3 * num_input_images, H, W) RGB in [0, 1].

        Returns:
            Five maps with ``num_ch_enc`` channels at 1/2 (after the stem ReLU), 1/4 (layer1), 1/8, 1/16
            and 1/32 (layer4) of the input size.
        """
        x = (images - self.mean) / self.std
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]
