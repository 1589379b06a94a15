"""View-synthesis geometry shared by training (warping) and serving (point clouds).

Conventions: camera optical frame (REP 103: x right, y down, z forward); pixel (u, v) integer coordinates
at pixel centres, so pixel 0 maps to -1 and pixel W-1 to +1 in ``grid_sample`` with ``align_corners=True``.
Poses are 4x4 homogeneous transforms acting on column vectors. The rotation maths of training (axis-angle,
torch) and of the data writers (z-y-x Euler angles and rotation logs, float64 NumPy) live here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_SMALL_ANGLE = 1e-4


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, stable (finite value and gradient) at and near zero rotation.

    Args:
        axis_angle: (..., 3) rotation vectors; direction is the axis, norm the angle in radians.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    theta_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta_sq < _SMALL_ANGLE**2
    # Evaluate the exact expressions only where the angle is large enough, so their gradients never see 0/0.
    safe_theta_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    safe_theta = safe_theta_sq.sqrt()
    sin_term = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(safe_theta) / safe_theta)
    cos_term = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(safe_theta)) / safe_theta_sq)

    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + sin_term[..., None] * skew + cos_term[..., None] * (skew @ skew)


def matrix_to_axis_angle(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`axis_angle_to_matrix` (NumPy) for angles below pi: (..., 3, 3) -> (..., 3)."""
    cos = np.clip((np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        -1,
    )
    sinc = np.where(angle < 1e-8, 1.0, np.sin(angle) / np.maximum(angle, 1e-300))
    return axis / (2.0 * sinc[..., None])


def euler_zyx_to_matrix(
    yaw: np.ndarray | float, pitch: np.ndarray | float = 0.0, roll: np.ndarray | float = 0.0
) -> np.ndarray:
    """Rz(yaw) Ry(pitch) Rx(roll) (the OXTS/vehicle convention) of broadcastable angles -> (..., 3, 3)."""
    yaw, pitch, roll = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (yaw, pitch, roll)))
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    return np.stack(
        [
            np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
            np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
            np.stack([-sp, cp * sr, cp * cr], -1),
        ],
        -2,
    )


def matrix_to_euler_zyx(rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`euler_zyx_to_matrix` for pitch in (-pi/2, pi/2): (..., 3, 3) -> yaw, pitch, roll."""
    yaw = np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    pitch = -np.arcsin(np.clip(rotation[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(rotation[..., 2, 1], rotation[..., 2, 2])
    return yaw, pitch, roll


def pose_to_matrix(axis_angle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Build 4x4 transforms [R | t] from rotation vectors and translations.

    Args:
        axis_angle: (B, 3) rotation vectors.
        translation: (B, 3) translations.
        invert: return the inverse transform [R^T | -R^T t] instead.

    Returns:
        (B, 4, 4) homogeneous transforms.
    """
    rotation = axis_angle_to_matrix(axis_angle)
    t = translation.unsqueeze(-1)
    if invert:
        rotation = rotation.transpose(-1, -2)
        t = -rotation @ t
    top = torch.cat([rotation, t], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def pixel_grid(
    height: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Homogeneous pixel coordinates (u, v, 1) of every pixel, shape (3, H, W)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)])


def ray_grid(inv_K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Viewing rays K^-1 (u, v, 1) of every pixel, scaled so that z = 1.

    Args:
        inv_K: (B, 3, 3) or (3, 3) inverse intrinsics.

    Returns:
        (B, 3, H, W) or (3, H, W) rays; ``depth * rays`` are the camera-frame points.
    """
    pixels = pixel_grid(height, width, inv_K.dtype, inv_K.device).reshape(3, -1)
    return (inv_K @ pixels).unflatten(-1, (height, width))


def backproject(depth: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """Lift a depth map to camera-frame points.

    Args:
        depth: (B, 1, H, W) z-depth.
        rays: (B, 3, H, W) or (3, H, W) from :func:`ray_grid`.

    Returns:
        (B, 3, H, W) points (x right, y down, z forward).
    """
    return depth * rays


def project_to_grid(
    points: torch.Tensor, K: torch.Tensor, transform: torch.Tensor | None = None, eps: float = 1e-7
) -> torch.Tensor:
    """Project camera points, optionally moved by ``transform``, to a ``grid_sample`` grid.

    Args:
        points: (B, 3, H, W) points in the source camera frame.
        K: (B, 3, 3) intrinsics of the camera that sees them.
        transform: (B, 4, 4) transform applied to the points first (target camera -> source camera).

    Returns:
        (B, H, W, 2) normalised (x, y) sample positions for ``grid_sample(..., align_corners=True)``.
    """
    batch, _, height, width = points.shape
    flat = points.reshape(batch, 3, -1)
    if transform is not None:
        flat = transform[:, :3, :3] @ flat + transform[:, :3, 3:]
    pixels = K @ flat
    uv = pixels[:, :2] / (pixels[:, 2:3] + eps)
    scale = torch.tensor([2.0 / (width - 1), 2.0 / (height - 1)], dtype=uv.dtype, device=uv.device)
    grid = uv * scale.view(1, 2, 1) - 1.0
    return grid.reshape(batch, 2, height, width).permute(0, 2, 3, 1)


def warp(
    source: torch.Tensor,
    depth: torch.Tensor,
    transform: torch.Tensor,
    K: torch.Tensor,
    inv_K: torch.Tensor,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Synthesise the target view by sampling ``source`` where the target's points land in it.

    Args:
        source: (B, C, H, W) source image.
        depth: (B, 1, H, W) target depth.
        transform: (B, 4, 4) target camera -> source camera.
        K, inv_K: (B, 3, 3) intrinsics at this resolution.

    Returns:
        (B, C, H, W) source resampled into the target view.
    """
    height, width = depth.shape[-2:]
    points = backproject(depth, ray_grid(inv_K, height, width))
    grid = project_to_grid(points, K, transform)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def disparity_to_depth(
    disparity: torch.Tensor, min_depth: float, max_depth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a sigmoid output in [0, 1] to (scaled disparity, depth) with depth in [min_depth, max_depth]."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disparity
    return scaled, 1.0 / scaled


def depth_to_disparity(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Inverse of :func:`disparity_to_depth`: the sigmoid-space disparity in [0, 1] of a depth."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)
