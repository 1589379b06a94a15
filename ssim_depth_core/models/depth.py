"""The depth network: encoder + disparity decoder (U-Net, light or SQL); ``forward`` is the exported graph."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..config import SIZE_MULTIPLE
from ..geometry import depth_to_disparity
from .decoder import OUTPUT_SCALES, DepthDecoder
from .encoder import build_encoder
from .light_decoder import LightDecoder
from .sql import SQLDecoder

if TYPE_CHECKING:
    from ..config import ModelConfig

DECODERS = ("unet", "sql", "light")  # the values of config.ModelConfig.decoder


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
        encoder: torchvision model name of the encoder ("resnet18", ..., "convnext_tiny", ...,
            "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf").
        pretrained: start the encoder from torchvision's ImageNet weights.
        padding_mode: decoder conv padding, "reflection" or "zeros".
        scales: decoder output scales (subset of 0..3, must include 0) returned by :meth:`forward_multiscale`;
            exactly (0,) with the "sql" decoder.
        initial_disparity: the untrained decoder's sigmoid output (``DepthDecoder``); None: PyTorch's default.
            "unet" and "light" only.
        decoder: "unet" (:class:`DepthDecoder`, sigmoid heads), "light" (:class:`LightDecoder`, the same heads
            after depthwise-separable convs) or "sql" (:class:`SQLDecoder`, depth bins).
        depth_range: (min_depth, max_depth) in metres that the "sql" bins divide.
        sql: keyword arguments of :class:`SQLDecoder` (``config.SQLConfig`` fields); default its defaults.
        decoder_channels: the "unet" or "light" decoder's five level widths, full resolution first; None:
            the decoder's own.
        disparity_head: the "unet" or "light" decoder's head, "conv" or "separable" (``disparity_head``).
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        pretrained: bool = False,
        padding_mode: str = "reflection",
        scales: Sequence[int] = OUTPUT_SCALES,
        initial_disparity: float | None = None,
        decoder: str = "unet",
        depth_range: tuple[float, float] = (0.1, 100.0),
        sql: Mapping[str, Any] | None = None,
        decoder_channels: Sequence[int] | None = None,
        disparity_head: str = "conv",
    ) -> None:
        super().__init__()
        if 0 not in scales:
            raise ValueError(f"scales must include 0 (the full-resolution output), got {list(scales)}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {list(DECODERS)}, got {decoder!r}")
        if decoder == "sql":
            if tuple(scales) != (0,):
                raise ValueError(
                    f"the sql decoder predicts the full-resolution map only: model.scales must be [0], got "
                    f"{list(scales)}"
                )
            if initial_disparity is not None:
                raise ValueError(
                    "model.initial_depth sets the unet decoder's sigmoid heads; the sql decoder's untrained "
                    "depth is the mean of its bin centres: leave model.initial_depth at 0"
                )
            patch_size = (sql or {}).get("patch_size", 16)
            if isinstance(patch_size, int) and patch_size > 0 and SIZE_MULTIPLE % patch_size:
                raise ValueError(
                    f"model.sql.patch_size must divide {SIZE_MULTIPLE} (inputs are multiples of it), got "
                    f"{patch_size}"
                )
        if decoder == "sql" and (decoder_channels is not None or disparity_head != "conv"):
            raise ValueError(
                "model.decoder_channels and model.disparity_head set the unet and light decoders, not sql"
            )
        widths = {} if decoder_channels is None else {"channels": tuple(decoder_channels)}
        if widths:
            if len(decoder_channels) != 5 or not all(isinstance(c, int) and c > 0 for c in decoder_channels):
                raise ValueError(
                    "model.decoder_channels must be five positive integer widths (full resolution to 1/16), "
                    f"got {list(decoder_channels)}"
                )
        self.encoder = build_encoder(encoder, pretrained)
        if decoder == "unet":
            self.decoder = DepthDecoder(
                self.encoder.num_ch_enc,
                scales,
                padding_mode,
                initial_disparity,
                **widths,
                head=disparity_head,
            )
        elif decoder == "light":
            self.decoder = LightDecoder(
                self.encoder.num_ch_enc,
                scales,
                padding_mode,
                initial_disparity,
                **widths,
                head=disparity_head,
            )
        else:
            self.decoder = SQLDecoder(self.encoder.num_ch_enc, *depth_range, padding_mode, **(sql or {}))

    @classmethod
    def from_config(cls, model_config: ModelConfig, pretrained: bool | None = None) -> DepthNet:
        """The depth net of a ``model`` config; ``pretrained`` overrides ``model.pretrained`` (False when
        rebuilding a trained network, whose weights are loaded next)."""
        return cls(
            encoder=model_config.encoder,
            pretrained=model_config.pretrained if pretrained is None else pretrained,
            padding_mode=model_config.padding_mode,
            scales=tuple(model_config.scales),
            initial_disparity=initial_disparity(model_config),
            decoder=model_config.decoder,
            depth_range=(model_config.min_depth, model_config.max_depth),
            sql=dataclasses.asdict(model_config.sql),
            decoder_channels=model_config.decoder_channels or None,
            disparity_head=model_config.disparity_head,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Full-resolution disparity, the inference/export entry point.

        Args:
            image: (B, 3, H, W) RGB in [0, 1], H and W multiples of 32.

        Returns:
            (B, 1, H, W) disparity in [0, 1] (``geometry.disparity_to_depth`` maps it to metres): the sigmoid
            head's output, or the SQL head's depth mapped by ``geometry.depth_to_disparity``.
        """
        check_image(image)
        return self.decoder(self.encoder(image), scales=(0,))[0]

    def forward_multiscale(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Disparities at every configured scale s, each (B, 1, H / 2**s, W / 2**s), for training."""
        check_image(image)
        return self.decoder(self.encoder(image))


def initial_disparity(model_config: ModelConfig) -> float | None:
    """``model.initial_depth`` as the decoder's sigmoid output, checked against the depth range."""
    depth = model_config.initial_depth
    if depth == 0:
        return None
    if not model_config.min_depth < depth < model_config.max_depth:
        raise ValueError(
            f"model.initial_depth must lie strictly between model.min_depth {model_config.min_depth} and "
            f"model.max_depth {model_config.max_depth} metres, got {depth!r}"
        )
    return depth_to_disparity(depth, model_config.min_depth, model_config.max_depth)
