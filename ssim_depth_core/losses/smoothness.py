"""Edge-aware disparity smoothness."""

from __future__ import annotations

import torch


def edge_aware_smoothness(disparity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """First-order disparity smoothness, down-weighted across image edges.

    The disparity is divided by its per-image mean (so the penalty does not favour shrinking the depth
    scale), then ``mean |d_x disp| * exp(-mean_c |d_x I|) + mean |d_y disp| * exp(-mean_c |d_y I|)`` with
    forward differences between neighbouring pixels.

    Args:
        disparity: (B, 1, h, w) disparity.
        image: (B, C, h, w) image at the same resolution.

    Returns:
        Scalar penalty.
    """
    if disparity.ndim != 4 or disparity.shape[1] != 1 or min(disparity.shape[-2:]) < 2:
        raise ValueError(f"disparity must be (B, 1, h, w) with h, w >= 2, got {tuple(disparity.shape)}")
    if image.ndim != 4 or image.shape[0] != disparity.shape[0] or image.shape[-2:] != disparity.shape[-2:]:
        raise ValueError(
            f"image {tuple(image.shape)} must be (B, C, h, w) with the batch and size of disparity "
            f"{tuple(disparity.shape)}"
        )
    disp = disparity / (disparity.mean((2, 3), keepdim=True) + 1e-7)
    disp_dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    disp_dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    image_dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    image_dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (disp_dx * torch.exp(-image_dx)).mean() + (disp_dy * torch.exp(-image_dy)).mean()
