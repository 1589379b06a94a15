"""Photometric reprojection error, per-pixel minimum over source frames and auto-masking."""

from __future__ import annotations

import torch

from ssim_depth_core.losses.ssim import SSIMLoss

# Scale of the noise added to the identity errors so that exact ties (e.g. a static, textureless region) are
# broken at random instead of always towards one side.
IDENTITY_NOISE = 1e-5


def reprojection_error(
    pred: torch.Tensor, target: torch.Tensor, ssim: SSIMLoss, alpha: float = 0.85
) -> torch.Tensor:
    """Per-pixel photometric error ``alpha * mean_c SSIM-term + (1 - alpha) * mean_c |pred - target|``.

    Args:
        pred: (B, C, H, W) image synthesised from a source frame (or the raw source for identity errors).
        target: (B, C, H, W) target image.
        ssim: the SSIM dissimilarity (its form is a config choice).
        alpha: weight of the SSIM term.

    Returns:
        (B, 1, H, W) error.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"reprojection_error: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return alpha * ssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def min_reprojection_loss(
    warped_errors: torch.Tensor,
    identity_errors: torch.Tensor | None = None,
    min_reprojection: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine the errors of several source frames into one loss, with optional auto-masking.

    Sources are combined per pixel by their minimum (``min_reprojection``; robust to occlusion) or their mean.
    With ``identity_errors`` (the errors of the un-warped sources), a pixel is kept only where the combined
    warped error is below the identically combined identity error plus ``1e-5 * N(0, 1)`` tie-breaking noise
    (drawn from ``generator``, so a seeded generator makes it deterministic): this drops pixels that do not
    move between frames (static camera, objects moving with it). The loss is the mean over all pixels of
    ``automask * combined warped error``.

    Args:
        warped_errors: (B, N, H, W) errors of the N warped sources.
        identity_errors: (B, N, H, W) errors of the raw sources, or None for no auto-masking.
        min_reprojection: per-pixel minimum over sources (else mean).
        generator: random generator on the errors' device for the tie-breaking noise (None: global RNG).

    Returns:
        ``(loss, automask)``: scalar loss and (B, 1, H, W) float mask, 1 where a warped source won.
    """
    if warped_errors.ndim != 4:
        raise ValueError(f"warped_errors must be (B, N, H, W), got {tuple(warped_errors.shape)}")
    if identity_errors is not None and identity_errors.shape != warped_errors.shape:
        raise ValueError(
            f"identity_errors {tuple(identity_errors.shape)} must match "
            f"warped_errors {tuple(warped_errors.shape)}"
        )

    def combine(errors: torch.Tensor) -> torch.Tensor:
        return errors.amin(1, keepdim=True) if min_reprojection else errors.mean(1, keepdim=True)

    warped = combine(warped_errors)
    if identity_errors is None:
        return warped.mean(), torch.ones_like(warped)
    noise = torch.randn(
        identity_errors.shape, generator=generator, device=identity_errors.device, dtype=identity_errors.dtype
    )
    identity = combine(identity_errors.detach() + IDENTITY_NOISE * noise)
    automask = (warped < identity).to(warped.dtype)
    return (automask * warped).mean(), automask
