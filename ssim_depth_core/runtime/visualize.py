"""Depth maps as pictures: the one colouriser behind the node's ``depth/preview`` and ``ssim-depth infer``."""

from __future__ import annotations

import cv2
import numpy as np


def colorize_depth(
    depth: np.ndarray,
    colormap: int = cv2.COLORMAP_MAGMA,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Colour a depth map through a perceptual colormap of its normalised inverse depth.

    Inverse depth is what a monocular network predicts and what the eye reads as structure: near objects get
    the bright end of the colormap, the far ones the dark end. Each valid pixel maps to colormap level
    ``floor(255 * (1/d - 1/far) / (1/near - 1/far))``.

    Args:
        depth: (H, W) float depth in metres; NaN, inf and values <= 0 are invalid.
        colormap: an OpenCV colormap (``cv2.COLORMAP_*``); the default, magma, is perceptually uniform.
        vmin, vmax: depths in metres shown as the brightest / darkest colour (depths outside are clipped);
            each defaults to the nearest / farthest valid depth of this map. Fix both to compare frames.

    Returns:
        (H, W, 3) uint8 BGR (OpenCV order); invalid pixels are black, an all-invalid map is all black.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an (H, W) array, got shape {depth.shape}")
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite depth > 0 in metres, got {value!r}")
    if vmin is not None and vmax is not None and vmin >= vmax:
        raise ValueError(f"need vmin < vmax, got vmin={vmin}, vmax={vmax}")

    valid = np.isfinite(depth) & (depth > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / depth.astype(np.float64)
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    lo = float(inverse[valid].min()) if vmax is None else 1.0 / vmax
    hi = float(inverse[valid].max()) if vmin is None else 1.0 / vmin
    scaled = np.clip(np.where(valid, (inverse - lo) / max(hi - lo, 1e-12), 0.0), 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255.0).astype(np.uint8), colormap)
    bgr[~valid] = 0
    return bgr
