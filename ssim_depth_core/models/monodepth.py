"""Depth + pose networks and view synthesis for self-supervised training (the model outputs contract)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, check_frame_ids
from ..geometry import disparity_to_depth, pose_to_matrix, warp
from .conv_grad import use_small_map_weight_grad
from .depth import DepthNet
from .pose import PoseNet


class MonodepthModel(nn.Module):
    """DepthNet + PoseNet producing disparities, depths, source->target warps for a training batch.

    Args:
        model_config: network and depth-range settings.
        frame_ids: the batch's frame offsets; ``frame_ids[0]`` must be 0 (the target), the rest distinct
            non-zero source offsets (negative = earlier).
    """

    def __init__(self, model_config: ModelConfig, frame_ids: Sequence[int]) -> None:
        super().__init__()
        self.frame_ids = check_frame_ids(frame_ids)
        self.min_depth = model_config.min_depth
        self.max_depth = model_config.max_depth
        self.depth_net = DepthNet(
            model_config.num_layers, model_config.pretrained, model_config.padding_mode, model_config.scales
        )
        if model_config.pose_downsample < 1:
            raise ValueError(f"model.pose_downsample must be >= 1, got {model_config.pose_downsample}")
        self.pose_downsample = model_config.pose_downsample
        self.pose_net = PoseNet(model_config.pose_num_layers, model_config.pretrained)
        if model_config.small_map_weight_grad:
            use_small_map_weight_grad(self)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Run both networks and synthesise the target view from every source at every scale.

        Args:
            batch: the training batch contract: "images" and "images_aug" (B, F, 3, H, W) in [0, 1] with F =
                len(frame_ids); "K" and "inv_K" (B, S, 3, 3), of which scale 0 is used.

        Returns:
            "disparities": list over scales of (B, 1, H / 2**s, W / 2**s);
            "depths": list over scales of (B, 1, H, W), each disparity upsampled then converted;
            "transforms": {frame_id: (B, 4, 4) target camera -> source camera};
            "warped": {(frame_id, scale_index): (B, 3, H, W) batch["images"] source warped into the target}.
        """
        images, images_aug = batch["images"], batch["images_aug"]
        if images_aug.dim() != 5 or images_aug.shape[1] != len(self.frame_ids):
            raise ValueError(
                f"batch['images_aug'] must be (B, {len(self.frame_ids)}, 3, H, W) for frame_ids "
                f"{self.frame_ids}, got shape {tuple(images_aug.shape)}"
            )
        disparities = self.depth_net.forward_multiscale(images_aug[:, 0])
        transforms = self.source_transforms(batch)

        # Geometry in float32 even under autocast: half-precision pixel coordinates are off by whole pixels.
        with torch.autocast(images.device.type, enabled=False):
            height, width = images.shape[-2:]
            depths = []
            for disparity in disparities:
                disparity = disparity.float()
                if disparity.shape[-2:] != (height, width):
                    disparity = F.interpolate(
                        disparity, size=(height, width), mode="bilinear", align_corners=False
                    )
                depths.append(disparity_to_depth(disparity, self.min_depth, self.max_depth)[1])

            K, inv_K = batch["K"][:, 0].float(), batch["inv_K"][:, 0].float()
            warped: dict[tuple[int, int], torch.Tensor] = {}
            for index, frame_id in enumerate(self.frame_ids[1:], start=1):
                for scale_index, depth in enumerate(depths):
                    warped[(frame_id, scale_index)] = warp(
                        images[:, index], depth, transforms[frame_id], K, inv_K, "border"
                    )
        return {"disparities": disparities, "depths": depths, "transforms": transforms, "warped": warped}

    def source_transforms(self, batch: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The pose net's motion estimate: {source frame_id: (B, 4, 4) target camera -> source camera}.

        One pose-net pass over all (earlier, later) pairs of ``batch["images_aug"]``.
        """
        images_aug = batch["images_aug"]
        if self.pose_downsample > 1:
            frames = images_aug.flatten(0, 1)
            images_aug = F.avg_pool2d(frames, self.pose_downsample).unflatten(0, images_aug.shape[:2])
        target = images_aug[:, 0]
        sources = [images_aug[:, index] for index in range(1, len(self.frame_ids))]
        firsts = [s if f < 0 else target for s, f in zip(sources, self.frame_ids[1:], strict=True)]
        seconds = [target if f < 0 else s for s, f in zip(sources, self.frame_ids[1:], strict=True)]
        axis_angle, translation = self.pose_net(torch.cat(firsts), torch.cat(seconds))
        count = len(sources)
        with torch.autocast(images_aug.device.type, enabled=False):
            # The pose net saw each pair in temporal order; an earlier source needs the inverse motion.
            return {
                frame_id: pose_to_matrix(r.float(), t.float(), invert=frame_id < 0)
                for frame_id, r, t in zip(
                    self.frame_ids[1:], axis_angle.chunk(count), translation.chunk(count), strict=True
                )
            }
