"""Velocity supervision: the predicted camera translation's length against the distance travelled."""

from __future__ import annotations

import torch


def velocity_loss(translation: torch.Tensor, travel: torch.Tensor) -> torch.Tensor:
    """Mean of ``| ||t|| - d |`` over the (sample, source) pairs whose travelled distance ``d`` is known.

    PackNet-SfM's scale-aware training (Guizilini et al., 2020): tying the pose net's translation to the
    metres the vehicle travelled (wheel or visual odometry, GNSS/INS) gives the whole model a metric scale.

    Args:
        translation: (B, N, 3) predicted translation of each pair's target -> source camera transform (its
            norm is the camera displacement).
        travel: (B, N) metres travelled between each pair's frames; NaN = unknown, such pairs get no term.

    Returns:
        Scalar loss; an exact 0 that still back-propagates (zero gradients) when no pair is known.
    """
    if translation.ndim != 3 or translation.shape[-1] != 3 or travel.shape != translation.shape[:2]:
        raise ValueError(
            f"translation must be (B, N, 3) and travel (B, N), got {tuple(translation.shape)} and "
            f"{tuple(travel.shape)}"
        )
    known = torch.isfinite(travel)
    # NaN never enters the graph: a masked-out NaN would still turn its (zero) gradient into NaN.
    distance = torch.where(known, travel, torch.zeros_like(travel)).to(translation.dtype)
    error = (torch.linalg.vector_norm(translation, dim=-1) - distance).abs()
    return (error * known).sum() / known.sum().clamp_min(1)
