"""Supervised depth loss where ground truth exists (seed 001): L1 + SSIM + image-gradient terms, masked.

``L = lambda_1 * L1(d, d*) + (1 - SSIM(d, d*)) / 2 + L_grad`` compares a predicted map ``d`` with the ground
truth ``d*`` (depth, or inverse depth) only where the ground truth is valid, so sparse LiDAR ground truth
works as well as dense maps:

- the L1 term averages ``|d - d*|`` over the valid pixels;
- the SSIM term averages the conventional per-pixel dissimilarity ``(1 - SSIM) / 2`` (losses/ssim.py) over
  the pixels whose whole SSIM window is valid (the validity mask eroded by the window, with the same
  reflection padding as the SSIM statistics): a window that straddles missing ground truth would compare the
  prediction with the zeros that mark it;
- the gradient term compares forward differences ``d[x + 1] - d[x]`` (and along y) of both maps, averaged over
  the pixel pairs whose two pixels are both valid, x and y each averaged on their own and then added.

With sparse LiDAR ground truth (scan lines a few pixels apart) hardly any window is wholly valid, so the SSIM
part fades out; the gradient part keeps the neighbour pairs along the scan lines, and L1 carries the rest.
With dense ground truth all three act.
The :func:`supervised_term`, registered as ``"supervised"``, applies this to every output scale's
full-resolution depth (see its docstring for the units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssim_depth_core.losses.objective import Batch, Objective, Outputs, register_term
from ssim_depth_core.losses.ssim import SSIMLoss


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds; an exact 0 that still back-propagates when nothing is valid.

    Args:
        values: (B, C, H, W) finite values.
        mask: (B, C, H, W) bool (or 0/1) validity, broadcastable to ``values``.

    Returns:
        Scalar.
    """
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean |pred - target|`` over the pixels where ``mask`` holds (0 when none).

    Args:
        pred, target: (B, 1, H, W) maps.
        mask: (B, 1, H, W) bool validity of ``target``.

    Returns:
        Scalar.
    """
    return masked_mean((pred - target).abs(), mask)


def masked_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean |dx pred - dx target| + mean |dy pred - dy target|`` over pixel pairs valid at both ends.

    ``dx m = m[..., :, 1:] - m[..., :, :-1]`` and ``dy m = m[..., 1:, :] - m[..., :-1, :]``; the x mean runs
    over the horizontal neighbour pairs whose two pixels are valid, the y mean over such vertical pairs (each
    0 when there is none).

    Args:
        pred, target: (B, 1, H, W) maps.
        mask: (B, 1, H, W) bool validity of ``target``.

    Returns:
        Scalar.
    """
    error = pred - target
    error_dx = (error[..., :, 1:] - error[..., :, :-1]).abs()
    error_dy = (error[..., 1:, :] - error[..., :-1, :]).abs()
    valid_dx = mask[..., :, 1:] & mask[..., :, :-1]
    valid_dy = mask[..., 1:, :] & mask[..., :-1, :]
    return masked_mean(error_dx, valid_dx) + masked_mean(error_dy, valid_dy)


def window_valid(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Pixels whose whole ``window x window`` neighbourhood is valid (reflection padded, as the SSIM).

    Args:
        mask: (B, 1, H, W) bool.
        window: odd box size.

    Returns:
        (B, 1, H, W) bool: the mask eroded by the window.
    """
    pad = window // 2
    padded = F.pad(mask.float(), (pad,) * 4, mode="reflect")
    return -F.max_pool2d(-padded, window, stride=1) > 0.5


def masked_ssim_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, ssim: SSIMLoss, value_range: float = 1.0
) -> torch.Tensor:
    """``(1 - SSIM) / 2`` averaged over the pixels whose whole SSIM window is valid (0 when none).

    Args:
        pred, target: (B, 1, H, W) maps.
        mask: (B, 1, H, W) bool validity of ``target``.
        ssim: a conventional-form :class:`SSIMLoss` (its map is ``clamp((1 - SSIM) / 2, 0, 1)``).
        value_range: the maps' data range L: both are divided by it, so that the SSIM constants
            ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` fit them.

    Returns:
        Scalar.
    """
    valid = window_valid(mask, ssim.window)
    # Invalid target pixels enter only windows that are masked out; they must be finite all the same.
    return masked_mean(ssim(pred / value_range, target / value_range), valid)


def supervised_depth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    ssim: SSIMLoss,
    l1_weight: float = 0.1,
    value_range: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``l1_weight * L1 + (1 - SSIM) / 2 + L_grad`` of two maps, each part masked (module docstring).

    L1 and L_grad are in the maps' own units (metres for depth); the SSIM compares the maps divided by
    ``value_range`` (:func:`masked_ssim_loss`).

    Args:
        pred: (B, 1, H, W) predicted map.
        target: (B, 1, H, W) ground-truth map, finite everywhere (any value where invalid).
        mask: (B, 1, H, W) bool validity of ``target``.
        ssim: conventional-form :class:`SSIMLoss` (window of the SSIM term).
        l1_weight: lambda_1.
        value_range: data range of the maps, for the SSIM constants.

    Returns:
        The scalar loss and its unweighted parts ``{"l1", "ssim", "grad"}``.
    """
    if pred.ndim != 4 or pred.shape[1] != 1 or target.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(
            f"pred, target and mask must be (B, 1, H, W) of one shape, got {tuple(pred.shape)}, "
            f"{tuple(target.shape)} and {tuple(mask.shape)}"
        )
    if ssim.form != "conventional":
        raise ValueError(f"the supervised loss uses the conventional (1 - SSIM) / 2, got form '{ssim.form}'")
    mask = mask.bool()
    parts = {
        "l1": masked_l1(pred, target, mask),
        "ssim": masked_ssim_loss(pred, target, mask, ssim, value_range),
        "grad": masked_gradient_loss(pred, target, mask),
    }
    return l1_weight * parts["l1"] + parts["ssim"] + parts["grad"], parts


def depth_targets(
    depth: torch.Tensor, depth_gt: torch.Tensor, min_depth: float, max_depth: float, space: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Prediction and ground truth as maps of ``space``, the ground truth's validity and the data range.

    Valid ground truth is finite and inside the model's range ``[min_depth, max_depth]`` (0 marks missing
    ground truth). The data range is that of the values the model can produce: ``max_depth - min_depth``
    metres for ``"depth"``, ``1 / min_depth - 1 / max_depth`` per metre for ``"inverse_depth"``.

    Args:
        depth: (B, 1, H, W) predicted depth (metres).
        depth_gt: (B, 1, H, W) ground-truth depth (metres, 0 = invalid), at the size of ``depth``.
        min_depth, max_depth: the model's depth range.
        space: ``"depth"`` or ``"inverse_depth"``.

    Returns:
        ``(pred, target, mask, value_range)``: two (B, 1, H, W) maps (metres or 1 / metres), invalid targets
        set to 0, the (B, 1, H, W) bool mask and the data range.
    """
    mask = torch.isfinite(depth_gt) & (depth_gt >= min_depth) & (depth_gt <= max_depth)
    safe = torch.where(mask, depth_gt, torch.ones_like(depth_gt))
    if space == "depth":
        pred, target, value_range = depth, safe, max_depth - min_depth
    elif space == "inverse_depth":
        pred, target, value_range = 1.0 / depth, 1.0 / safe, 1.0 / min_depth - 1.0 / max_depth
    else:
        raise ValueError(f"supervised space must be 'depth' or 'inverse_depth', got {space!r}")
    target = torch.where(mask, target, torch.zeros_like(target))
    return pred, target, mask, value_range


@register_term("supervised", inputs=("depth_gt",))
def supervised_term(batch: Batch, outputs: Outputs, objective: Objective):
    """Seed 001's supervised loss against ``batch["depth_gt"]`` on every output scale, averaged over scales.

    Each scale's depth (already upsampled to the input size) is compared with the ground truth in the space
    of ``loss.supervised_space`` (:func:`depth_targets`: L1 and L_grad in metres, or 1 / metres; the SSIM
    on the maps divided by the model's range of them), with ``loss.supervised_l1_weight`` as lambda_1 and
    the SSIM window ``loss.ssim_window``. Ground truth of another size is resampled to the prediction's by
    nearest neighbour (0 = invalid stays invalid).
    """
    if "depth_gt" not in batch:
        raise KeyError(
            "the supervised term needs batch['depth_gt'] (B, 1, H, W) metres: the data source has no "
            "ground-truth depth (proj_depth/groundtruth or velodyne_points of a KITTI-layout drive)"
        )
    config = objective.config
    ssim = _supervised_ssim(objective)
    depth_gt = batch["depth_gt"].float()
    total = 0.0
    for i in range(len(objective.scales)):
        depth = outputs["depths"][i].float()
        gt = depth_gt
        if gt.shape[-2:] != depth.shape[-2:]:
            gt = F.interpolate(gt, size=depth.shape[-2:], mode="nearest")
        pred, target, mask, value_range = depth_targets(
            depth, gt, objective.min_depth, objective.max_depth, config.supervised_space
        )
        loss, _ = supervised_depth_loss(pred, target, mask, ssim, config.supervised_l1_weight, value_range)
        total = total + loss
    return total / len(objective.scales), {}


def _supervised_ssim(objective: Objective) -> SSIMLoss:
    """The objective's conventional-form SSIM of ``loss.ssim_window`` (made once, kept on the objective)."""
    ssim = getattr(objective, "_supervised_ssim", None)
    if ssim is None:
        l1_weight = objective.config.supervised_l1_weight
        if not l1_weight >= 0:
            raise ValueError(f"loss.supervised_l1_weight must be >= 0, got {l1_weight}")
        ssim = SSIMLoss(form="conventional", window=objective.config.ssim_window)
        objective._supervised_ssim = ssim
    return ssim
