"""Light multi-scale disparity decoder: the U-Net's path with depthwise-separable convs and fewer channels.

Made for the light encoders (MobileNetV3, EfficientNet, RegNetY) on a CPU, where the U-Net decoder's full 3x3
convs at the fine levels cost more than such an encoder: a depthwise-separable 3x3 conv (a depthwise 3x3, then
a 1x1 across channels) does about ``9 + C_out`` multiply-adds per input channel and position instead of
``9 * C_out``. Same contract as :class:`~.decoder.DepthDecoder`: five encoder maps in, sigmoid disparities at
the configured scales out.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .decoder import DepthDecoder, depthwise_conv3x3

# Feature width of each level (level l at 1/2**l of the input): the U-Net's DECODER_CHANNELS (16 .. 256)
# halved at the coarse levels, where the encoder maps are wide and few positions make them cheap anyway, and
# kept near 16 at the fine ones, which the sigmoid heads read.
LIGHT_DECODER_CHANNELS = (16, 24, 32, 64, 128)


def separable_conv3x3(in_channels: int, out_channels: int, padding_mode: str) -> nn.Sequential:
    """Depthwise-separable 3x3 "same" conv + ReLU: a depthwise 3x3 (``padding_mode`` "reflection" or "zeros",
    no bias), a 1x1 conv to ``out_channels`` (with bias), then ReLU.

    No activation between the two convs (as Xception: the pair is a factorised 3x3 conv). ReLU rather than
    the U-Net's ELU: ONNX Runtime and TensorRT fuse it into the preceding conv, and INT8 quantisation folds it
    into the conv's output range.
    """
    return nn.Sequential(
        depthwise_conv3x3(in_channels, padding_mode),
        nn.Conv2d(in_channels, out_channels, 1),
        nn.ReLU(inplace=True),
    )


class LightDecoder(DepthDecoder):
    """Decode five encoder maps (1/2 .. 1/32) into sigmoid disparities at the requested scales, cheaply.

    :class:`~.decoder.DepthDecoder` with :func:`separable_conv3x3` blocks, by default
    :data:`LIGHT_DECODER_CHANNELS` wide: the same nearest 2x upsampling (ONNX ``Resize`` nearest, which every
    runtime and TensorRT take), skips and sigmoid heads (``head``: a 3x3 conv by default).

    Takes :class:`~.decoder.DepthDecoder`'s arguments but ``block``; ``padding_mode`` applies to every 3x3
    conv (depthwise ones and heads).
    """

    def __init__(
        self, num_ch_enc: Sequence[int], *args, channels: Sequence[int] = LIGHT_DECODER_CHANNELS, **kwargs
    ) -> None:
        super().__init__(num_ch_enc, *args, channels=channels, block=separable_conv3x3, **kwargs)
