"""Networks: ResNet / ConvNeXt / light encoders, U-Net, light and SQL decoders, pose net, the exportable
DepthNet and the training model."""

from .decoder import DepthDecoder
from .depth import DepthNet
from .encoder import ConvNextEncoder, LightEncoder, ResnetEncoder, build_encoder
from .light_decoder import LightDecoder
from .monodepth import MonodepthModel
from .pose import PoseNet
from .sql import SQLDecoder

__all__ = [
    "ConvNextEncoder",
    "DepthDecoder",
    "DepthNet",
    "LightDecoder",
    "LightEncoder",
    "MonodepthModel",
    "PoseNet",
    "ResnetEncoder",
    "SQLDecoder",
    "build_encoder",
]
