"""A 64-beam spinning LiDAR (HDL-64E-like) scanning the synthetic street: points and reflectance."""

from __future__ import annotations

import math

import numpy as np
import torch

from ssim_depth_core.data.synthetic.raycast import azimuth_windows, cast_rays, take
from ssim_depth_core.data.synthetic.scene import StreetScene
from ssim_depth_core.data.synthetic.shading import shade_hits

MAX_GT_DEPTH = 120.0  # ground truth (and LiDAR returns) beyond this are invalid, like a velodyne's range
LIDAR_ELEVATIONS_DEG = (2.0, -24.8)  # HDL-64E vertical field of view, 64 beams
LIDAR_BEAMS = 64
LIDAR_AZIMUTHS = 1024
LIDAR_BEAM_ANGLE = 0.003  # radians; footprint for the reflectance texture lookup


def lidar_directions(beams: int = LIDAR_BEAMS, azimuths: int = LIDAR_AZIMUTHS) -> torch.Tensor:
    """(3, beams, azimuths) unit rays of a 64-beam spinning LiDAR (velodyne frame: x fwd, y left, z up)."""
    elevation = torch.deg2rad(torch.linspace(*LIDAR_ELEVATIONS_DEG, beams, dtype=torch.float64))[:, None]
    azimuth = (-math.pi + 2 * math.pi * (torch.arange(azimuths, dtype=torch.float64) + 0.5) / azimuths)[None]
    cos = elevation.cos()
    rays = torch.stack([cos * azimuth.cos(), cos * azimuth.sin(), elevation.sin().expand(beams, azimuths)])
    return rays.float()


def render_lidar(
    scene: StreetScene, frame: int, T_world_velo: np.ndarray, max_range: float = MAX_GT_DEPTH
) -> np.ndarray:
    """One instantaneous 360-degree scan: (N, 4) float32 x, y, z (velodyne frame), reflectance in [0, 1]."""
    boxes = scene.frame_boxes(frame)
    pose = torch.as_tensor(T_world_velo, dtype=torch.float32)
    pose_inv = torch.as_tensor(np.linalg.inv(T_world_velo), dtype=torch.float32)
    rays = lidar_directions()
    windows = azimuth_windows(boxes, pose_inv, rays.shape[2], max_range)
    t, ids = cast_rays(pose[:3, 3], pose[:3, :3], rays, boxes, windows, far=max_range)
    t, rays = t.flatten(), rays.flatten(1)
    ids = torch.where(t <= max_range, ids.flatten(), -1)
    surface = shade_hits(scene, boxes, pose[:3, 3], pose[:3, :3] @ rays, t, ids, LIDAR_BEAM_ANGLE)
    reflectance = torch.tensor([0.299, 0.587, 0.114]) @ surface.albedo
    points = take(rays, surface.index) * take(t, surface.index)
    return torch.cat([points, reflectance[None]]).T.numpy()
