"""Seed 002 (Wang, Cheng, Liu): bidirectional weighted photometric loss with feature perception.

Monodepth2 synthesises the target from each source (reference) frame with the target's depth. The seed adds
the opposite direction (the target synthesised in each source's view with that source's own predicted depth
and the inverse pose) and compares what the two directions say about each other:

- ``photometric_bi`` (L_p^biw, eq. 3): the photometric error of both directions, each optionally weighted per
  pixel by ``M_valid = 1 - lambda_occ * M_occ`` (camera-flow occlusion, eq. 4-6, 9; ``loss.occlusion_mask``)
  and ``W_aw = 1 - depth_diff`` (eq. 7-8; ``loss.adaptive_weights``);
- ``dsc_bi`` (L_dsc^bi, eq. 2): depth-structure consistency, ``|a - b| / (a + b)`` between the depth a frame's
  points have once moved into the other camera and the depth predicted there, in both directions;
- ``feat_bi`` (L_feat^bi, eq. 1): the same bidirectional warp applied to the depth encoder's feature maps, L1.

Notation of this module: for a pair (a, b), ``grid_ab`` (B, H, W, 2) is where a's pixels land in b
(``grid_sample`` coordinates, ``align_corners=True``) when a's depth is moved by the transform a -> b, and
``z_ab`` (B, 1, H, W) is their depth in b's camera. "t" is the target, "s" a source; the model's transforms
map target-camera points into the source camera (t -> s), their inverse s -> t.

The terms need the depth net run on the source frames (``MonodepthModel`` with ``extra_outputs``); the trainer
asks the model for them only when one of these terms has a non-zero weight (``objective.required_outputs``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ssim_depth_core.config import LossConfig
from ssim_depth_core.geometry import backproject, pixel_grid, project_to_grid, ray_grid
from ssim_depth_core.losses.objective import (
    Objective,
    identity_errors,
    register_config_check,
    register_term,
)
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error

Batch = dict[str, Any]
Outputs = dict[str, Any]
FEATURE_LEVELS = (0, 1, 2)  # encoder level l (1 / 2**(l + 1) of the input) uses the batch's K at scale l + 1


def rigid_inverse(transform: torch.Tensor) -> torch.Tensor:
    """Inverse ``[R^T | -R^T t]`` of rigid transforms ``[R | t]``: (B, 4, 4) -> (B, 4, 4)."""
    rotation = transform[:, :3, :3].transpose(-1, -2)
    top = torch.cat([rotation, -rotation @ transform[:, :3, 3:]], dim=-1)
    bottom = torch.zeros_like(top[:, :1, :])
    bottom[:, 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def project_into(
    depth: torch.Tensor, transform: torch.Tensor, K: torch.Tensor, inv_K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the pixels of frame a land in frame b, and their depth there.

    Args:
        depth: (B, 1, H, W) depth of frame a.
        transform: (B, 4, 4) camera a -> camera b.
        K, inv_K: (B, 3, 3) intrinsics at this resolution (both frames share the camera).

    Returns:
        ``(grid, z)``: (B, H, W, 2) ``grid_sample`` positions in b (``align_corners=True``) and (B, 1, H, W)
        the z-depth of a's points in b's camera.
    """
    height, width = depth.shape[-2:]
    points = backproject(depth, ray_grid(inv_K, height, width)).flatten(2)
    moved = (transform[:, :3, :3] @ points + transform[:, :3, 3:]).unflatten(2, (height, width))
    return project_to_grid(moved, K), moved[:, 2:3]


def sample(values: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear samples of (B, C, h, w) ``values`` at (B, H, W, 2) ``grid`` -> (B, C, H, W) (as ``warp``)."""
    return F.grid_sample(values, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def camera_flow(grid: torch.Tensor) -> torch.Tensor:
    """Camera flow u: the displacement in pixels from each pixel to where ``grid`` sends it.

    Args:
        grid: (B, H, W, 2) ``grid_sample`` positions (``align_corners=True``) from :func:`project_into`.

    Returns:
        (B, 2, H, W) flow (du, dv) in pixels of this resolution.
    """
    _, height, width, _ = grid.shape
    half_size = grid.new_tensor([(width - 1) / 2, (height - 1) / 2])
    pixels = ((grid + 1) * half_size).permute(0, 3, 1, 2)
    return pixels - pixel_grid(height, width, grid.dtype, grid.device)[:2]


def in_view(grid: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: the point lies in front of the camera and projects inside the image (or on its
    edge)."""
    return (grid.abs() <= 1).all(-1).unsqueeze(1) & (z > 0)


def occlusion_mask(
    flow: torch.Tensor, flow_back: torch.Tensor, alpha1: float = 0.01, alpha2: float = 0.5
) -> torch.Tensor:
    """Forward-backward consistency check of camera flows: 1 where a pixel is occluded.

    A pixel is occluded where ``|u_f + u_b|^2 >= alpha1 * (|u_f|^2 + |u_b|^2) + alpha2``: the flow back
    from where the pixel lands does not return it home. The seed writes
    ``M_occ = Gamma(|u_f + u_b|^2, bound)`` with ``Gamma(a, b) = 1 for a < b`` (eq. 5-6, 9); taken
    literally that marks the *consistent* pixels, and ``M_valid = 1 - lambda_occ * M_occ`` (eq. 4) would
    then drop the pixels seen in both frames. We implement the forward-backward check of the optical-flow
    literature (where the defaults alpha1 = 0.01, alpha2 = 0.5 come from), in which the inconsistent pixels
    are the occluded ones, so that M_valid drops them.

    Args:
        flow: (B, 2, H, W) u_f, the camera flow of this frame's pixels into the other frame.
        flow_back: (B, 2, H, W) u_b, the other frame's camera flow sampled where each pixel lands.
        alpha1, alpha2: relative and absolute (pixels^2) tolerances.

    Returns:
        (B, 1, H, W) float mask, 1 = occluded.
    """
    mismatch = (flow + flow_back).square().sum(1, keepdim=True)
    magnitude = flow.square().sum(1, keepdim=True) + flow_back.square().sum(1, keepdim=True)
    return (mismatch >= alpha1 * magnitude + alpha2).to(flow.dtype)


def depth_difference(
    depth_moved: torch.Tensor, depth_predicted: torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """Normalised depth difference ``|a - b| / (a + b)``, in [0, 1] for positive depths (clamped to it).

    Args:
        depth_moved: (B, 1, H, W) a: depth of one frame's points moved into the other camera.
        depth_predicted: (B, 1, H, W) b: the other frame's predicted depth sampled at the same positions.
    """
    difference = (depth_moved - depth_predicted).abs() / (depth_moved + depth_predicted).abs().clamp_min(eps)
    return difference.clamp(max=1.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is set (0 when none is): (B, C, H, W) -> scalar."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def occlusion_masks(
    grid_ts: torch.Tensor, grid_st: torch.Tensor, alpha1: float, alpha2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Occlusion masks of both directions from the two camera flows (:func:`occlusion_mask`).

    Args:
        grid_ts: (B, H, W, 2) where the target's pixels land in the source.
        grid_st: (B, H, W, 2) where the source's pixels land in the target.

    Returns:
        ``(occluded_t, occluded_s)``: (B, 1, H, W) on the target's grid (weights source -> target errors)
        and on the source's grid (weights target -> source errors).
    """
    flow_ts, flow_st = camera_flow(grid_ts), camera_flow(grid_st)
    occluded_t = occlusion_mask(flow_ts, sample(flow_st, grid_ts), alpha1, alpha2)
    occluded_s = occlusion_mask(flow_st, sample(flow_ts, grid_st), alpha1, alpha2)
    return occluded_t, occluded_s


def depth_differences(
    grid_ts: torch.Tensor,
    z_ts: torch.Tensor,
    depth_t: torch.Tensor,
    grid_st: torch.Tensor,
    z_st: torch.Tensor,
    depth_s: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """depth_diff of both directions (seed eq. 2, 7-8): ``(diff_t, diff_s)``, (B, 1, H, W) each.

    ``diff_t`` lives on the target's grid: the target's points moved into the source camera (depth ``z_ts``)
    against the source's predicted depth where they land; ``diff_s`` the same from the source's side.
    """
    diff_t = depth_difference(z_ts, sample(depth_s, grid_ts))
    diff_s = depth_difference(z_st, sample(depth_t, grid_st))
    return diff_t, diff_s


def feature_perception_loss(
    features_t: torch.Tensor,
    features_s: torch.Tensor,
    depth_t: torch.Tensor,
    depth_s: torch.Tensor,
    transform: torch.Tensor,
    K: torch.Tensor,
    inv_K: torch.Tensor,
) -> torch.Tensor:
    """Seed eq. 1: ``mean |f_t - warp(f_s)| + mean |f_s - warp(f_t)|``, each frame's features synthesised in
    the other's view with the viewing frame's depth.

    Args:
        features_t, features_s: (B, C, h, w) feature maps of the target and of a source.
        depth_t, depth_s: (B, 1, h, w) their depths at the features' resolution.
        transform: (B, 4, 4) target camera -> source camera.
        K, inv_K: (B, 3, 3) intrinsics at the features' resolution.

    Returns:
        Scalar: the sum of both directions' mean L1 (over channels and pixels).
    """
    grid_ts, _ = project_into(depth_t, transform, K, inv_K)
    grid_st, _ = project_into(depth_s, rigid_inverse(transform), K, inv_K)
    forward = (features_t - sample(features_s, grid_ts)).abs().mean()
    backward = (features_s - sample(features_t, grid_st)).abs().mean()
    return forward + backward


def weighted_min_reprojection(
    errors: torch.Tensor,
    weights: torch.Tensor | None,
    identity_errors: torch.Tensor | None = None,
    min_reprojection: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`~ssim_depth_core.losses.photometric.min_reprojection_loss` with per-source pixel weights.

    The source of each pixel is chosen by the raw errors (their minimum; auto-masking compares the raw minimum
    with the identity error as usual), then the chosen error is multiplied by that source's weight; with
    ``min_reprojection`` false the weighted errors are averaged over sources. ``weights`` None gives exactly
    ``min_reprojection_loss``.

    Args:
        errors: (B, N, H, W) photometric errors of the N warped sources.
        weights: (B, N, H, W) per-pixel weights (no gradient expected), or None.
        identity_errors, min_reprojection, generator: as in ``min_reprojection_loss``.

    Returns:
        Scalar loss: the mean over all pixels.
    """
    loss, automask = min_reprojection_loss(errors, identity_errors, min_reprojection, generator)
    if weights is None:
        return loss
    if min_reprojection:
        index = errors.argmin(1, keepdim=True)
        combined = errors.gather(1, index) * weights.gather(1, index)
    else:
        combined = (errors * weights).mean(1, keepdim=True)
    return (automask * combined).mean()


@register_config_check
def check_bidirectional_options(config: LossConfig) -> None:
    """The seed-002 options: each only with the term that reads it (their ranges: :class:`LossConfig`)."""
    options = [name for name in ("occlusion_mask", "adaptive_weights") if getattr(config, name)]
    if options and not config.weights.get("photometric_bi", 0):
        raise ValueError(
            f"loss.{' and loss.'.join(options)} weight(s) the photometric_bi term's errors, but "
            "loss.weights.photometric_bi is 0 or absent: set it (e.g. loss.weights.photometric_bi=1 with "
            "loss.weights.photometric=0) or turn the option off"
        )
    levels = config.feature_levels
    if config.weights.get("feat_bi", 0) and (
        not levels or len(set(levels)) != len(levels) or any(level not in FEATURE_LEVELS for level in levels)
    ):
        raise ValueError(
            f"loss.feature_levels must be distinct encoder levels among {list(FEATURE_LEVELS)} (level l is "
            f"at 1 / 2**(l + 1) of the input, with the batch's K at scale l + 1), got {levels}"
        )


def _output(outputs: Outputs, key: str) -> Any:
    if key not in outputs:
        raise KeyError(
            f"outputs has no {key!r}: the seed-002 terms need MonodepthModel(..., extra_outputs=...) with "
            "losses.objective.required_outputs(loss_config) (the trainer passes it); present: "
            f"{sorted(outputs)}"
        )
    return outputs[key]


def _intrinsics(batch: Batch, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = batch["K"].shape[1]
    if scale >= count:
        raise ValueError(f"batch['K'] has intrinsics for scales 0..{count - 1}, scale {scale} is needed")
    return batch["K"][:, scale].float(), batch["inv_K"][:, scale].float()


@register_term("photometric_bi", needs=("source_depths",))
def bidirectional_photometric_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Seed eq. 3: the photometric error of both warp directions, averaged over scales.

    Source -> target: the ``photometric`` term's min-reprojection, auto-masked error (identical to it when no
    weighting option is on). Target -> source, per source: the target warped into the source's view with the
    source's depth and the inverse pose, against the source image; auto-masked per source (the un-warped
    target as the identity), averaged over sources. ``loss.occlusion_mask`` and ``loss.adaptive_weights``
    weight each direction's error per pixel by ``1 - occlusion_lambda * M_occ`` and ``1 - depth_diff``
    (no gradient through the weights: they say how far to trust a pixel, not something to optimise).
    """
    config = objective.config
    images = batch["images"]
    target = images[:, 0]
    source_depths = _output(outputs, "source_depths")
    warped = _output(outputs, "warped")
    K, inv_K = _intrinsics(batch, 0)
    weighted = config.occlusion_mask or config.adaptive_weights
    identity = identity_errors(batch, objective)
    generator = objective.generator(target.device)
    total = 0.0
    term_images: dict[str, torch.Tensor] = {}
    for i in range(len(objective.scales)):
        depth_t = outputs["depths"][i]
        forward_errors, forward_weights, backward_losses = [], [], []
        for n, (source, slot) in enumerate(objective.sources.items()):
            if (source, i) not in warped:
                raise KeyError(f"outputs['warped'] has no entry ({source!r}, {i}) (source, scale index)")
            transform = outputs["transforms"][source]
            depth_s = source_depths[source][i]
            grid_st, z_st = project_into(depth_s, rigid_inverse(transform), K, inv_K)
            forward_errors.append(
                reprojection_error(warped[(source, i)], target, objective.ssim, config.alpha)
            )
            backward_error = reprojection_error(
                sample(target, grid_st), images[:, slot], objective.ssim, config.alpha
            )
            weight_t = weight_s = torch.ones_like(depth_t)
            if weighted:
                with torch.no_grad():
                    grid_ts, z_ts = project_into(depth_t, transform, K, inv_K)  # as the model's warp
                    if config.occlusion_mask:
                        occluded_t, occluded_s = occlusion_masks(
                            grid_ts, grid_st, config.occlusion_alpha1, config.occlusion_alpha2
                        )
                        weight_t = weight_t * (1 - config.occlusion_lambda * occluded_t)
                        weight_s = weight_s * (1 - config.occlusion_lambda * occluded_s)
                        if i == 0 and n == 0:
                            term_images["occlusion"] = occluded_t
                    if config.adaptive_weights:
                        diff_t, diff_s = depth_differences(grid_ts, z_ts, depth_t, grid_st, z_st, depth_s)
                        weight_t = weight_t * (1 - diff_t)
                        weight_s = weight_s * (1 - diff_s)
                        if i == 0 and n == 0:
                            term_images["adaptive_weight"] = 1 - diff_t
            forward_weights.append(weight_t)
            automask = torch.ones_like(backward_error)
            if identity is not None:
                automask = min_reprojection_loss(backward_error, identity[:, n : n + 1], True, generator)[1]
            backward_losses.append((automask * weight_s * backward_error).mean())
        forward = weighted_min_reprojection(
            torch.cat(forward_errors, dim=1),
            torch.cat(forward_weights, dim=1) if weighted else None,
            identity,
            config.min_reprojection,
            generator,
        )
        total = total + forward + torch.stack(backward_losses).mean()
    return total / len(objective.scales), term_images


@register_term("dsc_bi", needs=("source_depths",))
def depth_structure_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Seed eq. 2: ``depth_diff`` averaged over the in-view pixels of each direction, the two directions
    added, averaged over sources and scales."""
    source_depths = _output(outputs, "source_depths")
    K, inv_K = _intrinsics(batch, 0)
    total = 0.0
    for i in range(len(objective.scales)):
        depth_t = outputs["depths"][i]
        for source in objective.sources:
            transform = outputs["transforms"][source]
            depth_s = source_depths[source][i]
            grid_ts, z_ts = project_into(depth_t, transform, K, inv_K)
            grid_st, z_st = project_into(depth_s, rigid_inverse(transform), K, inv_K)
            diff_t, diff_s = depth_differences(grid_ts, z_ts, depth_t, grid_st, z_st, depth_s)
            total = (
                total
                + masked_mean(diff_t, in_view(grid_ts, z_ts))
                + masked_mean(diff_s, in_view(grid_st, z_st))
            )
    return total / (len(objective.scales) * len(objective.sources)), {}


@register_term("feat_bi", needs=("source_depths", "features"))
def feature_perception_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Seed eq. 1 on the depth encoder's maps of ``loss.feature_levels``: each warped at its own resolution
    with the full-resolution depths area-averaged to it and the batch's intrinsics of that scale; averaged
    over levels and sources. ``loss.feature_detach`` (default) stops the gradient into the feature maps."""
    config = objective.config
    features = _output(outputs, "features")
    source_depths = _output(outputs, "source_depths")
    total = 0.0
    for level in config.feature_levels:
        K, inv_K = _intrinsics(batch, level + 1)
        features_t = features[0][level]
        size = features_t.shape[-2:]
        depth_t = F.interpolate(outputs["depths"][0], size=size, mode="area")
        for source in objective.sources:
            features_s = features[source][level]
            pair = (
                (features_t.detach(), features_s.detach())
                if config.feature_detach
                else (features_t, features_s)
            )
            depth_s = F.interpolate(source_depths[source][0], size=size, mode="area")
            total = total + feature_perception_loss(
                *pair, depth_t, depth_s, outputs["transforms"][source], K, inv_K
            )
    return total / (len(config.feature_levels) * len(objective.sources)), {}
