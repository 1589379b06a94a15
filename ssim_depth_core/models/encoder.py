"""Feature encoders: torchvision ResNet, ConvNeXt and light (MobileNetV3, EfficientNet, RegNetY) trunks with
ImageNet normalisation built in.

All return feature maps at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input (the decoders' skips), finest first, with
their channel counts in ``num_ch_enc``. :func:`build_encoder` picks one by torchvision model name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

logger = logging.getLogger(__name__)

# ImageNet V1 weights for every depth, the weights the published Monodepth2 results start from.
_RESNETS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}
_CONVNEXTS = {
    "convnext_tiny": (models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1),
    "convnext_small": (models.convnext_small, models.ConvNeXt_Small_Weights.IMAGENET1K_V1),
    "convnext_base": (models.convnext_base, models.ConvNeXt_Base_Weights.IMAGENET1K_V1),
    "convnext_large": (models.convnext_large, models.ConvNeXt_Large_Weights.IMAGENET1K_V1),
}
# Light trunks made for mobile CPUs (issue 20), with torchvision's current ImageNet weights of each (V2 where
# there is one: the same network, a better training recipe). EfficientNet's stochastic depth (a regulariser
# for long ImageNet schedules; training only) is off: the depth nets train briefly and densely, as ResNets do.
_LIGHT = {
    "mobilenet_v3_large": (models.mobilenet_v3_large, models.MobileNet_V3_Large_Weights.IMAGENET1K_V2),
    "efficientnet_b0": (
        functools.partial(models.efficientnet_b0, stochastic_depth_prob=0.0),
        models.EfficientNet_B0_Weights.IMAGENET1K_V1,
    ),
    "regnet_y_400mf": (models.regnet_y_400mf, models.RegNet_Y_400MF_Weights.IMAGENET1K_V2),
}
ENCODER_NAMES = (*_RESNETS, *_CONVNEXTS, *_LIGHT)  # the values of config.EncoderName
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


def _resnet_init(weight: torch.Tensor) -> None:
    # torchvision's ResNet init; its MobileNetV3, EfficientNet and RegNet init their convs the same way (He
    # normal, fan-out: RegNet writes it as normal(0, sqrt(2 / fan_out)))
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def _convnext_init(weight: torch.Tensor) -> None:
    nn.init.trunc_normal_(weight, std=0.02)  # torchvision's ConvNeXt init


def independent_input_conv(
    conv: nn.Conv2d, num_input_images: int, init: Callable[[torch.Tensor], None] = _resnet_init
) -> nn.Conv2d:
    """A freshly initialised ``conv`` for ``num_input_images`` stacked frames, each with its own filters.

    From scratch, :func:`stack_input_conv`'s tied filters would only see the frames' sum, blind to their
    difference (the motion the pose net must find); independent filters (``init``: the backbone's own
    initialisation of its weight, He for ResNets) see both. The bias, if any, starts at zero.
    """
    stacked = _wider_input(conv, num_input_images)
    init(stacked.weight)
    if stacked.bias is not None:
        nn.init.zeros_(stacked.bias)
    return stacked


def _input_conv(
    conv: nn.Conv2d, num_input_images: int, pretrained: bool, init: Callable[[torch.Tensor], None]
) -> nn.Conv2d:
    """``conv`` itself for one image, else adapted to the stacked frames (pretrained: tied filters)."""
    if num_input_images == 1:
        return conv
    if pretrained:
        return stack_input_conv(conv, num_input_images)
    return independent_input_conv(conv, num_input_images, init)


def _backbone(table: dict, name: str, pretrained: bool, num_input_images: int) -> nn.Module:
    """torchvision model ``name`` of ``table`` (ImageNet weights when ``pretrained``), arguments checked."""
    if name not in table:
        family = "ResNet" if table is _RESNETS else "ConvNeXt" if table is _CONVNEXTS else "light"
        raise ValueError(f"{family} encoder must be one of {list(table)}, got {name!r}")
    if num_input_images < 1:
        raise ValueError(f"num_input_images must be >= 1, got {num_input_images}")
    builder, weights = table[name]
    if pretrained:
        logger.info("loading torchvision ImageNet weights %s", weights)
    device = torch.get_default_device()
    if device.type == "meta" and table is _LIGHT:
        # RegNet's builder computes its block widths with tensors and reads them back, which the meta device
        # (shape-only builds: bench/model_sizes.py) cannot: build these small trunks on the CPU, then move.
        with torch.device("cpu"):
            return builder(weights=weights if pretrained else None).to(device)
    return builder(weights=weights if pretrained else None)


class _Normalise(nn.Module):
    """ImageNet mean/std normalisation of ``num_input_images`` RGB frames stacked along channels."""

    def __init__(self, num_input_images: int) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN * num_input_images).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD * num_input_images).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class ResnetEncoder(nn.Module):
    """torchvision ResNet trunk returning five feature maps, for RGB input in [0, 1].

    The ImageNet mean/std normalisation happens inside, so callers (and the exported ONNX graph) feed plain
    [0, 1] RGB. The classifier head is dropped, so every parameter is used (DDP-friendly).

    Args:
        name: "resnet18", "resnet34" or "resnet50".
        pretrained: start from torchvision's ImageNet weights (downloaded or read from the torch hub cache).
        num_input_images: frames stacked along channels (2 for the pose net); the first conv is adapted with
            :func:`stack_input_conv` (pretrained) or :func:`independent_input_conv` (from scratch).
    """

    def __init__(self, name: str = "resnet18", pretrained: bool = False, num_input_images: int = 1) -> None:
        super().__init__()
        resnet = _backbone(_RESNETS, name, pretrained, num_input_images)
        self.num_input_images = num_input_images
        self.conv1 = _input_conv(resnet.conv1, num_input_images, pretrained, _resnet_init)
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
        self.normalise = _Normalise(num_input_images)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encode images.

        Args:
            images: (B, 3 * num_input_images, H, W) RGB in [0, 1].

        Returns:
            Five maps with ``num_ch_enc`` channels at 1/2 (after the stem ReLU), 1/4 (layer1), 1/8, 1/16
            and 1/32 (layer4) of the input size.
        """
        x = self.normalise(images)
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]


# Indices in torchvision's ``ConvNeXt.features`` of the four stages (the others are the 4x4 stem and the
# 2x2 downsampling layers between stages): outputs at 1/4, 1/8, 1/16 and 1/32 of the input.
_CONVNEXT_STAGES = (1, 3, 5, 7)
HALF_SCALE_CHANNELS = 64  # the ConvNeXt encoder's own 1/2-scale map (torchvision's ConvNeXt has none)


class ConvNextEncoder(nn.Module):
    """torchvision ConvNeXt trunk returning the maps of its four stages, for RGB input in [0, 1].

    ConvNeXt's stem is a 4x4 stride-4 patchify conv, so the backbone has no 1/2-scale map; with
    ``half_scale_map`` a small stem of its own (two 3x3 convs + BatchNorm + ReLU, the first of stride 2,
    :data:`HALF_SCALE_CHANNELS` channels, always from scratch) gives the U-Net decoder its finest skip. The
    pose net reads only the 1/32 map and leaves it out, so that every parameter is used. ImageNet
    normalisation is inside; the classifier head is dropped.

    Args:
        name: "convnext_tiny", "convnext_small", "convnext_base" or "convnext_large".
        pretrained: start the backbone from torchvision's ImageNet weights.
        num_input_images: frames stacked along channels; the patchify conv is adapted as the ResNet's first
            conv is (:func:`stack_input_conv` pretrained, else independent filters with ConvNeXt's init).
        half_scale_map: add the 1/2-scale map (five maps); False: the four stage maps only.
    """

    def __init__(
        self,
        name: str = "convnext_tiny",
        pretrained: bool = False,
        num_input_images: int = 1,
        half_scale_map: bool = True,
    ) -> None:
        super().__init__()
        convnext = _backbone(_CONVNEXTS, name, pretrained, num_input_images)
        self.num_input_images = num_input_images
        self.normalise = _Normalise(num_input_images)
        self.features = convnext.features[: _CONVNEXT_STAGES[-1] + 1]
        patchify = self.features[0][0]
        self.features[0][0] = _input_conv(patchify, num_input_images, pretrained, _convnext_init)
        widths = tuple(self.features[i][0].block[0].out_channels for i in _CONVNEXT_STAGES)
        self.half_scale: nn.Module | None = None
        if half_scale_map:
            in_channels, out_channels = 3 * num_input_images, HALF_SCALE_CHANNELS
            self.half_scale = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            widths = (out_channels, *widths)
        self.num_ch_enc: tuple[int, ...] = widths

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encode images.

        Args:
            images: (B, 3 * num_input_images, H, W) RGB in [0, 1].

        Returns:
            The maps with ``num_ch_enc`` channels: with ``half_scale_map`` its own at 1/2, then the four
            stages' at 1/4, 1/8, 1/16 and 1/32 of the input size.
        """
        x = self.normalise(images)
        maps = [] if self.half_scale is None else [self.half_scale(x)]
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _CONVNEXT_STAGES:
                maps.append(x)
        return maps


def _light_trunk(name: str, model: nn.Module) -> tuple[nn.Sequential, tuple[int, ...]]:
    """The feature trunk of torchvision light model ``name`` as one sequence, and the indices in it of the
    last layer at each stride 2, 4, 8, 16, 32 (the layer before the next stride-2 one, and the last)."""
    if name == "regnet_y_400mf":  # stem (stride 2), then four stages each starting with a stride-2 block
        return nn.Sequential(model.stem, *model.trunk_output), (0, 1, 2, 3, 4)
    if name == "mobilenet_v3_large":  # features[16]: the 1x1 conv to 960 channels before the pooling
        return model.features, (1, 3, 6, 12, 16)
    return model.features, (1, 2, 3, 5, 8)  # efficientnet_b0; features[8]: its 1x1 conv to 1280 channels


class LightEncoder(nn.Module):
    """torchvision MobileNetV3-Large, EfficientNet-B0 or RegNetY-400MF trunk returning five feature maps, for
    RGB input in [0, 1].

    The whole convolutional trunk (``features`` of MobileNetV3 / EfficientNet, including the final 1x1 conv to
    960 / 1280 channels, as torchvision's own segmentation models tap it; RegNet's ``stem`` and
    ``trunk_output``); the pooling and classifier are dropped, so every parameter is used. Each map is the
    output of the last layer at its stride: MobileNetV3 ``features`` 1, 3, 6, 12, 16; EfficientNet 1, 2, 3, 5,
    8; RegNet the stem and blocks 1-4. ImageNet normalisation is inside.

    Args:
        name: "mobilenet_v3_large", "efficientnet_b0" or "regnet_y_400mf".
        pretrained: start from torchvision's ImageNet weights.
        num_input_images: frames stacked along channels; the stem's 3x3 stride-2 conv is adapted as the
            ResNet's first conv is (:func:`stack_input_conv` pretrained, else independent He-initialised
            filters, the init torchvision gives these trunks).
    """

    def __init__(self, name: str = "mobilenet_v3_large", pretrained: bool = False, num_input_images: int = 1):
        super().__init__()
        model = _backbone(_LIGHT, name, pretrained, num_input_images)
        self.num_input_images = num_input_images
        self.normalise = _Normalise(num_input_images)
        self.features, self.taps = _light_trunk(name, model)
        stem = self.features[0]
        stem[0] = _input_conv(stem[0], num_input_images, pretrained, _resnet_init)
        # Every block of these trunks ends in a BatchNorm (after the 1x1 projection of an inverted residual or
        # a RegNet bottleneck): its width is the block's output width.
        self.num_ch_enc: tuple[int, ...] = tuple(
            [m.num_features for m in self.features[i].modules() if isinstance(m, nn.BatchNorm2d)][-1]
            for i in self.taps
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encode images.

        Args:
            images: (B, 3 * num_input_images, H, W) RGB in [0, 1].

        Returns:
            Five maps with ``num_ch_enc`` channels at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size.
        """
        x = self.normalise(images)
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                maps.append(x)
        return maps


def build_encoder(
    name: str, pretrained: bool = False, num_input_images: int = 1, half_scale_map: bool = True
) -> ResnetEncoder | ConvNextEncoder | LightEncoder:
    """The encoder for torchvision model ``name`` (one of :data:`ENCODER_NAMES`).

    ``half_scale_map`` (ConvNeXt only; the other trunks' 1/2 map is on the way to their deeper ones) as in
    :class:`ConvNextEncoder`.
    """
    if name in _RESNETS:
        return ResnetEncoder(name, pretrained, num_input_images)
    if name in _CONVNEXTS:
        return ConvNextEncoder(name, pretrained, num_input_images, half_scale_map)
    if name in _LIGHT:
        return LightEncoder(name, pretrained, num_input_images)
    raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODER_NAMES)}")
