"""Multi-scale disparity decoder: a U-Net style upsampling path over the encoder features."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Feature width of each decoder level; level l produces maps at 1/2**l of the input size.
DECODER_CHANNELS = (16, 32, 64, 128, 256)
OUTPUT_SCALES = (0, 1, 2, 3)
DISPARITY_HEADS = ("conv", "separable")  # the values of config.ModelConfig.disparity_head
_PADDING_MODES = {"reflection": "reflect", "zeros": "zeros"}


def _torch_padding(padding_mode: str) -> str:
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {sorted(_PADDING_MODES)}, got {padding_mode!r}")
    return _PADDING_MODES[padding_mode]


def conv3x3(in_channels: int, out_channels: int, padding_mode: str) -> nn.Conv2d:
    """3x3 "same" convolution with ``padding_mode`` "reflection" or "zeros"."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode=_torch_padding(padding_mode))


def depthwise_conv3x3(channels: int, padding_mode: str) -> nn.Conv2d:
    """Depthwise 3x3 "same" convolution (one filter per channel, no bias); ``padding_mode`` as in
    :func:`conv3x3`."""
    return nn.Conv2d(
        channels,
        channels,
        3,
        padding=1,
        groups=channels,
        bias=False,
        padding_mode=_torch_padding(padding_mode),
    )


def disparity_head(in_channels: int, padding_mode: str, kind: str = "conv") -> nn.Module:
    """The pre-sigmoid disparity head: "conv", a 3x3 conv to one channel, or "separable", a depthwise 3x3
    then a 1x1 conv to one channel.

    Both compute the same family of functions (the 1x1's weight per channel times the depthwise filter is
    any 3x3 filter); the separable one is the faster on ONNX Runtime's CPU provider, whose blocked-channel
    convs compute a one-channel 3x3 conv as wide as their channel block (docs/benchmarks.md). The conv with
    the bias is the head itself ("conv") or its last module ("separable").
    """
    if kind == "conv":
        return conv3x3(in_channels, 1, padding_mode)
    if kind == "separable":
        return nn.Sequential(depthwise_conv3x3(in_channels, padding_mode), nn.Conv2d(in_channels, 1, 1))
    raise ValueError(f"disparity head must be one of {list(DISPARITY_HEADS)}, got {kind!r}")


def conv_elu(in_channels: int, out_channels: int, padding_mode: str) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels, padding_mode), nn.ELU(inplace=True))


ConvBlock = Callable[[int, int, str], nn.Module]  # (in_channels, out_channels, padding_mode) -> "same" block


class UpsamplingPath(nn.Module):
    """The U-Net's upsampling path over five encoder maps (1/2 .. 1/32), shared by every depth head.

    Each level, from the coarsest (4) to the finest (0): a ``block`` (default a 3x3 conv + ELU), nearest 2x
    upsampling, concatenation with the encoder map of the new resolution (none at full resolution), another
    ``block``; level l's map has ``channels[l]`` channels at 1/2**l of the input size.

    Args:
        num_ch_enc: channels of the five encoder maps.
        padding_mode: "reflection" (fewer border artefacts) or "zeros" (exports to any TensorRT version).
        channels: the width of each level, finest first (default :data:`DECODER_CHANNELS`).
        block: builds each level's convs from (in_channels, out_channels, padding_mode).
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        padding_mode: str = "reflection",
        channels: Sequence[int] = DECODER_CHANNELS,
        block: ConvBlock = conv_elu,
    ) -> None:
        super().__init__()
        if len(num_ch_enc) != len(channels):
            raise ValueError(f"expected {len(channels)} encoder channel counts, got {list(num_ch_enc)}")
        self.channels = tuple(channels)
        self.pre_upsample = nn.ModuleList()
        self.post_skip = nn.ModuleList()
        in_channels = num_ch_enc[-1]
        for level in reversed(range(len(channels))):
            width = channels[level]
            skip = num_ch_enc[level - 1] if level > 0 else 0
            self.pre_upsample.append(block(in_channels, width, padding_mode))
            self.post_skip.append(block(width + skip, width, padding_mode))
            in_channels = width

    def levels(self, features: Sequence[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        """(level, map) from level 4 (1/16) down to level 0 (full resolution)."""
        x = features[-1]
        for index, level in enumerate(reversed(range(len(self.channels)))):
            x = F.interpolate(self.pre_upsample[index](x), scale_factor=2, mode="nearest")
            if level > 0:
                x = torch.cat([x, features[level - 1]], dim=1)
            x = self.post_skip[index](x)
            yield level, x


class DepthDecoder(UpsamplingPath):
    """Decode five encoder maps (1/2 .. 1/32) into sigmoid disparities at the requested scales.

    The :class:`UpsamplingPath`; a level whose scale is an output scale then has a :func:`disparity_head` +
    sigmoid giving one disparity.

    Args:
        num_ch_enc: channels of the five encoder maps.
        scales: output scales, a subset of 0..3; scale s is at 1/2**s of the input size.
        padding_mode: "reflection" (fewer border artefacts) or "zeros" (exports to any TensorRT version).
        initial_disparity: the sigmoid output in (0, 1) the untrained heads give (their bias); None keeps
            PyTorch's default initialisation (about 0.5).
        channels, block: the :class:`UpsamplingPath`'s.
        head: the :func:`disparity_head` kind, "conv" or "separable".
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        scales: Sequence[int] = OUTPUT_SCALES,
        padding_mode: str = "reflection",
        initial_disparity: float | None = None,
        channels: Sequence[int] = DECODER_CHANNELS,
        block: ConvBlock = conv_elu,
        head: str = "conv",
    ) -> None:
        if not scales or any(s not in OUTPUT_SCALES for s in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct values from {list(OUTPUT_SCALES)}, got {list(scales)}")
        super().__init__(num_ch_enc, padding_mode, channels, block)
        self.scales = tuple(scales)
        self.heads = nn.ModuleDict(
            {str(s): disparity_head(self.channels[s], padding_mode, head) for s in self.scales}
        )
        if initial_disparity is not None:
            if not 0 < initial_disparity < 1:
                raise ValueError(f"initial_disparity must be within (0, 1), got {initial_disparity!r}")
            for module in self.heads.values():
                output_conv = module if isinstance(module, nn.Conv2d) else module[-1]
                nn.init.constant_(output_conv.bias, math.log(initial_disparity / (1 - initial_disparity)))

    def forward(
        self, features: Sequence[torch.Tensor], scales: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Decode.

        Args:
            features: the five encoder maps, finest first.
            scales: the output scales to compute (default: all configured ones); each must be configured.

        Returns:
            One (B, 1, H / 2**s, W / 2**s) disparity in [0, 1] per scale, in the order of ``scales``.
        """
        scales = self.scales if scales is None else tuple(scales)
        missing = [s for s in scales if s not in self.scales]
        if missing:
            raise ValueError(
                f"scales {missing} have no output head; configured scales are {list(self.scales)}"
            )
        disparities: dict[int, torch.Tensor] = {}
        for level, x in self.levels(features):
            if level in scales:
                disparities[level] = torch.sigmoid(self.heads[str(level)](x))
        return [disparities[s] for s in scales]
