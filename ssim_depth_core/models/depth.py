"""The depth network: ResNet encoder + multi-scale disparity decoder; ``forward`` is the exported graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .decoder import OUTPUT_SCALES, DepthDecoder
from .encoder import ResnetEncoder

# The encoder downsamples five times; the decoder's skip connections need every level to halve exactly.
SIZE_MULTIPLE = 32


def check_image(image: torch.Tensor) -> None:
    """Raise ValueError unless ``image`` is (B, 3, H, W) with H and W multiples of :data:`SIZE_MULTIPLE`."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"image size {height}x{width} (HxW): height and width must be multiples of {SIZE_MULTIPLE}"
        )


class DepthNet(nn.Module):
    """Monocular disparity network.

    Args:
        num_layers: ResNet depth of the encoder, 18, 34 or 50.
        pretrained: start the encoder from torchvision's ImageNet weights.
        padding_mode: decoder conv padding, "reflection" or "zeros".
        scales: decoder output scales (subset of 0..3, must include 0) returned by :meth:`forward_multiscale`.
        initial_disparity: the untrained decoder's sigmoid output (``DepthDecoder``); None: PyTorch's default.
    """

    def __init__(
        self,
        num_layers: int = 18,
        pretrained: bool = False,
        padding_mode: str = "reflection",
        scales: Sequence[int] = OUTPUT_SCALES,
        initial_disparity: float | None = None,
    ) -> None:
        super().__init__()
        if 0 not in scales:
            raise ValueError(f"scales must include 0 (the full-resolution output), got {list(scales)}")
        self.encoder = ResnetEncoder(num_layers, pretrained)
        self.decoder = DepthDecoder(self.encoder.num_ch_enc, scales, padding_mode, initial_disparity)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Full-resolution disparity, the inference/export entry point.

        Args:
            image: (B, 3, H, W) RGB in [0, 1], H and W multiples of 32.

        Returns:
            (B, 1, H, W) sigmoid disparity in [0, 1] (``geometry.disparity_to_depth`` maps it to metres).
        """
        check_image(image)
        return self.decoder(self.encoder(image), scales=(0,))[0]

    def forward_multiscale(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Disparities at every configured scale s, each (B, 1, H / 2**s, W / 2**s), for training."""
        check_image(image)
        return self.decoder(self.encoder(image))
