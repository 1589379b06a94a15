"""Networks: ResNet encoder, disparity decoder, pose net, the exportable DepthNet and the training model."""

from .decoder import DepthDecoder
from .depth import DepthNet
from .encoder import ResnetEncoder
from .monodepth import MonodepthModel
from .pose import PoseNet

__all__ = ["DepthDecoder", "DepthNet", "MonodepthModel", "PoseNet", "ResnetEncoder"]
