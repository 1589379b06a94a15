"""Networks: ResNet / ConvNeXt encoders, U-Net and SQL decoders, pose net, the exportable DepthNet and the
training model."""

from .decoder import DepthDecoder
from .depth import DepthNet
from .encoder import ConvNextEncoder, ResnetEncoder, build_encoder
from .monodepth import MonodepthModel
from .pose import PoseNet
from .sql import SQLDecoder

__all__ = [
    "ConvNextEncoder",
    "DepthDecoder",
    "DepthNet",
    "MonodepthModel",
    "PoseNet",
    "ResnetEncoder",
    "SQLDecoder",
    "build_encoder",
]
