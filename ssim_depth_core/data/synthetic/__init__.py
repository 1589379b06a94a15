"""Synthetic KITTI-like street drives with exact depth, poses and LiDAR, written in the KITTI raw layout.

A drive is a straight street (world frame: x along the street, y left, z up, ground at z = 0) with a
textured road (lane markings), sidewalks, building facades at varying set-backs on both sides (a second,
taller row behind them), trees, poles and parked cars, all boxes. Every surface carries a texture with
natural-image statistics (seamless crops of scikit-image's bundled photos mixed with 1/f spectral noise,
windows on facades), mapped in world/object coordinates and mip-mapped (trilinear), modulated by
long-wavelength waves so nothing repeats. The sky is a direction-only environment (at infinity): its
ground-truth depth is 0 (invalid), like KITTI, which has no sky depth either.

The car (an OXTS/IMU frame carrying camera 02, optionally its stereo partner camera 03, and a velodyne with
KITTI's lever arms, :class:`KittiRig`) drives forward 0.5-1.5 m/frame at 10 Hz with a gentle lane weave
(yaw) and road-roughness pitch/roll, all functions of travelled distance, so a stop is a true standstill.
Training drives may contain a lead car moving rigidly with the ego car (static in the image, until it pulls
away), a standstill and oncoming cars; the last drive of a dataset (the held-out one) is static apart from
the ego car.

Rendering is analytic ray casting (ray/ground-plane and ray/oriented-box slab tests, nearest hit) in torch
float32 on the rays of :func:`ssim_depth_core.geometry.ray_grid`; only the pixels inside each box's projected
bounding rectangle are tested. Every pixel gets its pixel-centre ray, so depth is exact z-depth (REP 103
optical frame) for every pixel, dense; textures are mip-mapped and pixels on silhouettes or material edges
are re-rendered with 3 more subpixel rays and averaged (anti-aliasing).

Modules, each using only those above it: ``textures`` (materials, mip atlas, lookups), ``scene`` (ego
trajectory, boxes, lighting), ``raycast`` (ground and box hits), ``shading`` (surfaces, sky, anti-aliasing,
camera frames), ``lidar`` (velodyne scans), ``drive`` (:class:`SyntheticDrive`, a frame sequence) and
``writers`` (KITTI layout, splits, rosbag2, :func:`generate_dataset`).
"""

from ssim_depth_core.data.synthetic.drive import FRAME_RATE, STEREO_CAMERA, RenderedFrame, SyntheticDrive
from ssim_depth_core.data.synthetic.lidar import MAX_GT_DEPTH, render_lidar
from ssim_depth_core.data.synthetic.raycast import GROUND_FAR, cast_rays
from ssim_depth_core.data.synthetic.scene import (
    CAMERA,
    CAMERA_HEIGHT,
    DriveSpec,
    StreetScene,
    Trajectory,
    build_scene,
    make_trajectory,
)
from ssim_depth_core.data.synthetic.shading import render_camera
from ssim_depth_core.data.synthetic.textures import MipAtlas, build_mip_atlas, build_textures, sample_texture
from ssim_depth_core.data.synthetic.writers import (
    BAG_STORAGES,
    generate_dataset,
    split_entries,
    write_calibration,
    write_drive,
)

__all__ = [
    "BAG_STORAGES",
    "CAMERA",
    "CAMERA_HEIGHT",
    "FRAME_RATE",
    "GROUND_FAR",
    "MAX_GT_DEPTH",
    "STEREO_CAMERA",
    "DriveSpec",
    "MipAtlas",
    "RenderedFrame",
    "StreetScene",
    "SyntheticDrive",
    "Trajectory",
    "build_mip_atlas",
    "build_scene",
    "build_textures",
    "cast_rays",
    "generate_dataset",
    "make_trajectory",
    "render_camera",
    "render_lidar",
    "sample_texture",
    "split_entries",
    "write_calibration",
    "write_drive",
]
