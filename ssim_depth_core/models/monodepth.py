"""Depth + pose networks and view synthesis for self-supervised training (the model outputs contract)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import STEREO, ModelConfig, check_frame_ids, source_slots
from ..geometry import disparity_to_depth, pose_to_matrix, warp
from .conv_grad import use_small_map_weight_grad
from .depth import DepthNet, check_image
from .pose import PoseNet

# Optional outputs that loss terms may need (``losses.objective.required_outputs``); each costs compute, so
# the model produces them only when asked: "source_depths" runs the depth net on the source frames as well
# (one pass over target and sources together), "features" keeps that pass's encoder feature maps.
EXTRA_OUTPUTS = ("features", "source_depths")


class MonodepthModel(nn.Module):
    """DepthNet + PoseNet producing disparities, depths, source->target warps for a training batch.

    The sources are the temporal frames ``frame_ids[1:]``, whose motion the pose net estimates, and with
    ``stereo`` the stereo partner's frame (key :data:`STEREO`), whose transform is the batch's known rig
    ``stereo_T``. Stereo-only training (``frame_ids`` [0]) builds no pose net.

    Args:
        model_config: network and depth-range settings.
        frame_ids: the batch's frame offsets; ``frame_ids[0]`` must be 0 (the target), the rest distinct
            non-zero source offsets (negative = earlier); [0] alone with ``stereo``.
        stereo: the batch carries the stereo partner's frame as its last image (Monodepth2's S / MS modes).
        extra_outputs: names from :data:`EXTRA_OUTPUTS` to produce besides the default contract (empty: the
            depth net sees the target frame only).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        frame_ids: Sequence[int],
        stereo: bool = False,
        extra_outputs: Collection[str] = (),
    ) -> None:
        super().__init__()
        unknown = sorted(set(extra_outputs) - set(EXTRA_OUTPUTS))
        if unknown:
            raise ValueError(f"unknown extra_outputs {unknown}; known: {list(EXTRA_OUTPUTS)}")
        self.extra_outputs = frozenset(extra_outputs)
        self.frame_ids = check_frame_ids(frame_ids, stereo=stereo)
        self.stereo = stereo
        self.slots = source_slots(self.frame_ids, stereo)
        self.min_depth = model_config.min_depth
        self.max_depth = model_config.max_depth
        self.depth_net = DepthNet.from_config(model_config)
        if model_config.pose_downsample < 1:
            raise ValueError(f"model.pose_downsample must be >= 1, got {model_config.pose_downsample}")
        self.pose_downsample = model_config.pose_downsample
        temporal = len(self.frame_ids) > 1
        self.pose_net = PoseNet(model_config.pose_encoder, model_config.pretrained) if temporal else None
        if model_config.small_map_weight_grad:
            use_small_map_weight_grad(self)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Run the networks and synthesise the target view from every source at every scale.

        Args:
            batch: the training batch contract: "images" and "images_aug" (B, F, 3, H, W) in [0, 1] with F =
                len(frame_ids), plus one with ``stereo`` (the partner's frame, last); "K" and "inv_K"
                (B, S, 3, 3), of which scale 0 is used; with ``stereo``, "stereo_T" (B, 4, 4) target camera ->
                partner camera.

        Returns:
            "disparities": list over scales of (B, 1, H / 2**s, W / 2**s);
            "depths": list over scales of (B, 1, H, W), each disparity upsampled then converted;
            "transforms": {source: (B, 4, 4) target camera -> source camera}, sources ``frame_ids[1:]``
            and, with ``stereo``, :data:`STEREO` (``batch["stereo_T"]``);
            "warped": {(source, scale_index): (B, 3, H, W) batch["images"] source warped into the target};
            with ``extra_outputs``: "source_depths": {source: list over scales of (B, 1, H, W)}, each source's
            own depth made like "depths"; "features": {frame: the five encoder maps of ``depth_net``}, frame 0
            the target, then every source key.
        """
        images, images_aug = batch["images"], batch["images_aug"]
        count = len(self.frame_ids) + self.stereo
        if images_aug.dim() != 5 or images_aug.shape[1] != count:
            partner = " + the stereo partner" if self.stereo else ""
            raise ValueError(
                f"batch['images_aug'] must be (B, {count}, 3, H, W) for frame_ids {self.frame_ids}{partner}, "
                f"got shape {tuple(images_aug.shape)}"
            )
        frames = images_aug[:, 0]
        if self.extra_outputs:  # the sources go through the depth net in the same pass as the target
            frames = torch.cat([frames, *(images_aug[:, slot] for slot in self.slots.values())])
            check_image(frames)
            features = self.depth_net.encoder(frames)
            disparities = self.depth_net.decoder(features)
        else:
            disparities = self.depth_net.forward_multiscale(frames)
        transforms: dict[int | str, torch.Tensor] = {}
        if self.pose_net is not None:
            transforms.update(self.source_transforms(batch))
        if self.stereo:
            transforms[STEREO] = _stereo_transform(batch, images.shape[0])

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
            extras: dict[str, Any] = {}
            if self.extra_outputs:
                frame_keys = [0, *self.slots]
                split = [d.chunk(len(frame_keys)) for d in depths]
                depths = [chunks[0] for chunks in split]
                disparities = [d.chunk(len(frame_keys))[0] for d in disparities]
                if "source_depths" in self.extra_outputs:
                    extras["source_depths"] = {
                        key: [chunks[index] for chunks in split]
                        for index, key in enumerate(frame_keys)
                        if index > 0
                    }
                if "features" in self.extra_outputs:
                    per_level = [f.chunk(len(frame_keys)) for f in features]
                    extras["features"] = {
                        key: [chunks[index] for chunks in per_level] for index, key in enumerate(frame_keys)
                    }

            K, inv_K = batch["K"][:, 0].float(), batch["inv_K"][:, 0].float()
            warped: dict[tuple[int | str, int], torch.Tensor] = {}
            for source, transform in transforms.items():
                for scale_index, depth in enumerate(depths):
                    warped[(source, scale_index)] = warp(
                        images[:, self.slots[source]], depth, transform, K, inv_K, "border"
                    )
        outputs = {"disparities": disparities, "depths": depths, "transforms": transforms, "warped": warped}
        return {**outputs, **extras}

    def source_transforms(self, batch: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The pose net's motion estimate: {source frame_id: (B, 4, 4) target camera -> source camera}.

        One pose-net pass over all (earlier, later) pairs of the temporal frames of ``batch["images_aug"]``.
        """
        images_aug = batch["images_aug"][:, : len(self.frame_ids)]
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


def _stereo_transform(batch: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """``batch["stereo_T"]`` checked: (B, 4, 4) float32 target camera -> stereo partner camera."""
    if "stereo_T" not in batch:
        raise KeyError("stereo training needs batch['stereo_T'] (B, 4, 4): target camera -> partner camera")
    stereo_T = batch["stereo_T"]
    if stereo_T.shape != (batch_size, 4, 4):
        raise ValueError(f"batch['stereo_T'] must be ({batch_size}, 4, 4), got {tuple(stereo_T.shape)}")
    return stereo_T.float()
