"""Relative camera motion between two frames: an encoder on the stacked pair + a small conv head."""

from __future__ import annotations

import torch
from torch import nn

from .encoder import build_encoder

# Raw head outputs are scaled down so that the initial motion is near identity (Monodepth2 convention).
POSE_SCALE = 0.01
_HEAD_WIDTH = 256


class PoseNet(nn.Module):
    """Predict the motion from ``frame_a`` to ``frame_b`` as an axis-angle rotation and a translation.

    The encoder sees both frames stacked along channels (its first conv adapted for six channels); the head is
    a 1x1 squeeze, two 3x3 convs (ReLU after each) and a 1x1 conv to six values per location, averaged over
    the image and multiplied by :data:`POSE_SCALE`.

    Args:
        encoder: torchvision model name of the encoder ("resnet18", "resnet50", "convnext_tiny", ...).
        pretrained: start the encoder from torchvision's ImageNet weights.
    """

    def __init__(self, encoder: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, pretrained, num_input_images=2, half_scale_map=False)
        self.head = nn.Sequential(
            nn.Conv2d(self.encoder.num_ch_enc[-1], _HEAD_WIDTH, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(_HEAD_WIDTH, _HEAD_WIDTH, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(_HEAD_WIDTH, _HEAD_WIDTH, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(_HEAD_WIDTH, 6, 1),
        )

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimate motion.

        Args:
            frame_a, frame_b: (B, 3, H, W) RGB in [0, 1], in temporal order.

        Returns:
            (axis_angle (B, 3), translation (B, 3)); pass them to ``geometry.pose_to_matrix``.
        """
        features = self.encoder(torch.cat([frame_a, frame_b], dim=1))[-1]
        motion = POSE_SCALE * self.head(features).mean(dim=(2, 3))
        return motion[:, :3], motion[:, 3:]
