"""Synthetic KITTI-like street drives with exact depth, poses and LiDAR, written in the KITTI raw layout.

A drive is a straight street (world frame: x along the street, y left, z up, ground at z = 0) with a
textured road (lane markings), sidewalks, building facades at varying set-backs on both sides (a second,
taller row behind them), trees, poles and parked cars, all boxes. Every surface carries a texture with
natural-image statistics (seamless crops of scikit-image's bundled photos mixed with 1/f spectral noise,
windows on facades), mapped in world/object coordinates and mip-mapped (trilinear), modulated by
long-wavelength waves so nothing repeats. The sky is a direction-only environment (at infinity): its
ground-truth depth is 0 (invalid), like KITTI, which has no sky depth either.

The car (an OXTS/IMU frame carrying camera 02 and a velodyne with KITTI's lever arms, :class:`KittiRig`)
drives forward 0.5-1.5 m/frame at 10 Hz with a gentle lane weave (yaw) and road-roughness pitch/roll, all
functions of travelled distance, so a stop is a true standstill. Training drives may contain a lead car
moving rigidly with the ego car (static in the image, until it pulls away), a standstill and oncoming cars;
the last drive of a dataset (the held-out one) is static apart from the ego car.

Rendering is analytic ray casting (ray/ground-plane and ray/oriented-box slab tests, nearest hit) in torch
float32 on the rays of :func:`ssim_depth_core.geometry.ray_grid`; only the pixels inside each box's projected
bounding rectangle are tested. Every pixel gets its pixel-centre ray, so depth is exact z-depth (REP 103
optical frame) for every pixel, dense; textures are mip-mapped and pixels on silhouettes or material edges
are re-rendered with 3 more subpixel rays and averaged (anti-aliasing).
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import queue
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.geometry import ray_grid
from ssim_depth_core.imaging import encode_depth_png, write_png

logger = logging.getLogger(__name__)

FRAME_RATE = 10.0
TEXTURE_SIZE = 512
MIN_MIP_SIZE = 4
MAX_GT_DEPTH = 120.0  # ground truth (and LiDAR returns) beyond this are invalid, like a velodyne's range
GROUND_FAR = 400.0  # ground hits beyond this many metres render as sky (they are sub-pixel anyway)
NEAR = 0.05
CAMERA = "02"
CAMERA_HEIGHT = 1.65
LIDAR_ELEVATIONS_DEG = (2.0, -24.8)  # HDL-64E vertical field of view, 64 beams
LIDAR_BEAMS = 64
LIDAR_AZIMUTHS = 1024
LIDAR_BEAM_ANGLE = 0.003  # radians; footprint for the reflectance texture lookup
BAG_STORAGES = ("mcap", "sqlite3", "none")

# texture slots
ROAD, SIDEWALK, FACADES, VEHICLES, FOLIAGE, BARK, SKY = 0, 1, range(2, 7), range(7, 11), 11, 12, 13
NUM_TEXTURES = 14
TEXELS = {  # metres per level-0 texel of each slot
    ROAD: 0.02,
    SIDEWALK: 0.012,
    FOLIAGE: 0.012,
    BARK: 0.006,
    **dict.fromkeys(FACADES, 0.04),
    **dict.fromkeys(VEHICLES, 0.009),
}
GRAY_PHOTOS = ("brick", "gravel", "grass", "camera", "moon", "coins", "clock", "cell")
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


# --------------------------------------------------------------------------------------------- textures


def _spectral_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Periodic noise with power spectrum 1/f^beta (natural images: beta ~ 2), zero mean, unit std."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = np.fft.rfft2(rng.standard_normal((size, size))) / radius ** (beta / 2)
    spectrum[0, 0] = 0.0
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return noise / noise.std()


def _periodic_component(image: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition: the periodic part tiles without seams. (H, W[, C])."""
    u = image.astype(np.float64)
    v = np.zeros_like(u)
    v[0] += u[-1] - u[0]
    v[-1] += u[0] - u[-1]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    h, w = u.shape[:2]
    denom = 2 * np.cos(2 * np.pi * np.arange(h) / h)[:, None] + 2 * np.cos(2 * np.pi * np.arange(w) / w) - 4
    denom[0, 0] = 1.0
    if u.ndim == 3:
        denom = denom[..., None]
    smooth_hat = np.fft.fft2(v, axes=(0, 1)) / denom
    smooth_hat[0, 0] = 0.0
    return u - np.real(np.fft.ifft2(smooth_hat, axes=(0, 1)))


@functools.cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image bundled photo as float32 in [0, 1] (H x W or H x W x 3)."""
    import skimage.data  # noqa: PLC0415  (only the generator needs scikit-image)

    image = getattr(skimage.data, name)()
    return image.astype(np.float32) / 255.0


def _photo_crop(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A random, randomly rotated/flipped, seamless square crop of a photo, resized to size x size."""
    photo = _photo(name)
    h, w = photo.shape[:2]
    crop = int(rng.uniform(0.45, 1.0) * min(h, w))
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    patch = photo[y : y + crop, x : x + crop]
    interpolation = cv2.INTER_AREA if crop > size else cv2.INTER_CUBIC
    patch = cv2.resize(patch, (size, size), interpolation=interpolation)
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return _periodic_component(patch)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def _gray_material(
    rng: np.random.Generator, name: str, size: int, base: float, contrast: float
) -> np.ndarray:
    """Gray photo detail + spectral noise (fine grain, 1/f, blotches), tinted: (size, size, 3)."""
    detail = _normalise(_photo_crop(rng, name, size))
    grain = _spectral_noise(rng, size, 1.0)
    noise = _spectral_noise(rng, size, 2.0)
    blotches = _spectral_noise(rng, size, 3.5)
    gray = base * (1 + contrast * (0.6 * detail + 0.3 * grain + 0.3 * noise + 0.25 * blotches))
    tint = 1 + rng.uniform(-0.12, 0.12, 3)
    return gray[..., None] * tint


def _colour_material(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    crop = _photo_crop(rng, name, size)
    noise = _spectral_noise(rng, size, 2.0)[..., None]
    return crop * (1 + 0.15 * noise) * rng.uniform(0.8, 1.2, 3)


def _add_windows(rng: np.random.Generator, wall: np.ndarray) -> np.ndarray:
    """Bake a grid of framed windows (glass with reflections, random per-window shade) into a facade."""
    size = wall.shape[0]
    columns, rows = int(rng.integers(5, 9)), int(rng.integers(5, 8))
    width, height, sill = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.62), rng.uniform(0.45, 0.55)
    frame = rng.uniform(0.04, 0.08)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (xx * columns / size) % 1.0 - 0.5, (yy * rows / size) % 1.0 - sill
    window_id = (xx * columns // size).astype(int) + columns * (yy * rows // size).astype(int)
    outer = (np.abs(cx) < width / 2 + frame) & (np.abs(cy) < height / 2 + frame)
    inner = (np.abs(cx) < width / 2) & (np.abs(cy) < height / 2)
    reflection = 0.5 + 0.2 * _spectral_noise(rng, size, 2.5)
    shade = rng.uniform(0.3, 1.1, columns * rows)[window_id]
    glass = (0.12 + 0.22 * reflection * shade)[..., None] * rng.uniform([0.8, 0.85, 0.95], [0.95, 1.0, 1.25])
    frame_colour = rng.uniform(0.2, 0.9) * rng.uniform(0.9, 1.1, 3)
    out = np.where(outer[..., None], frame_colour, wall)
    return np.where(inner[..., None], glass, out)


def build_textures(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """The texture set of one drive: (NUM_TEXTURES, size, size, 3) float32 albedo in [0, 1], seamless."""
    textures = np.zeros((NUM_TEXTURES, size, size, 3), dtype=np.float64)
    asphalt = _gray_material(rng, "gravel", size, rng.uniform(0.25, 0.34), 0.45)
    textures[ROAD] = asphalt + 0.05 * _spectral_noise(rng, size, 1.2)[..., None]
    textures[SIDEWALK] = _gray_material(rng, str(rng.choice(["brick", "gravel", "cell"])), size, 0.5, 0.45)
    for slot in FACADES:
        wall = _gray_material(rng, str(rng.choice(GRAY_PHOTOS)), size, rng.uniform(0.35, 0.75), 0.5)
        textures[slot] = _add_windows(rng, wall * rng.uniform(0.75, 1.25, 3))
    for slot, name in zip(VEHICLES, rng.choice(COLOUR_PHOTOS, len(VEHICLES), replace=False), strict=True):
        textures[slot] = _colour_material(rng, str(name), size)
    textures[FOLIAGE] = _gray_material(rng, "grass", size, 0.3, 0.5) * [0.6, 1.1, 0.45]
    textures[BARK] = _gray_material(rng, "gravel", size, 0.22, 0.4) * [1.1, 0.9, 0.7]
    clouds = _spectral_noise(rng, size, 3.2)
    textures[SKY] = np.clip(0.5 + 0.25 * clouds, 0, 1)[..., None]
    return np.clip(textures, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class MipAtlas:
    """All mip levels of all textures packed into one image for ``grid_sample``.

    Level 0 tiles sit side by side in the top band, levels >= 1 one after another in a lower band; every tile
    has one extra (wrapped) column and row, so bilinear lookups of a tiling texture stay inside the tile.

    Attributes:
        image: (1, 3, H_atlas, W_atlas) float32.
        origins: (2, levels * textures) float32 atlas pixel (x, y) of texel (0, 0) of level l, texture t in
            column ``l * textures + t``.
    """

    image: torch.Tensor
    origins: torch.Tensor
    size: int
    levels: int
    textures: int


def build_mip_atlas(textures: np.ndarray) -> MipAtlas:
    """(T, S, S, 3) float textures (S a power of two) -> :class:`MipAtlas` with levels down to 4 x 4."""
    count, size = textures.shape[:2]
    if size & (size - 1) or textures.shape[2] != size:
        raise ValueError(f"textures must be square with a power-of-two side, got {textures.shape[1:3]}")
    pyramid = [textures]
    while pyramid[-1].shape[1] > MIN_MIP_SIZE:
        t = pyramid[-1]
        pyramid.append(t.reshape(count, t.shape[1] // 2, 2, t.shape[2] // 2, 2, 3).mean(axis=(2, 4)))
    band_width = count * sum(level.shape[1] + 1 for level in pyramid[1:])
    width = max(count * (size + 1), band_width)
    atlas = np.zeros((size + 1 + pyramid[1].shape[1] + 1, width, 3), dtype=np.float32)
    origins = np.zeros((len(pyramid), count, 2), dtype=np.float32)
    x_cursor = 0
    for level, tiles in enumerate(pyramid):
        s = tiles.shape[1]
        y0 = 0 if level == 0 else size + 1
        for index in range(count):
            x0 = index * (size + 1) if level == 0 else x_cursor
            padded = np.pad(tiles[index], ((0, 1), (0, 1), (0, 0)), mode="wrap")
            atlas[y0 : y0 + s + 1, x0 : x0 + s + 1] = padded
            origins[level, index] = (x0, y0)
            if level > 0:
                x_cursor += s + 1
    # channels-last: the three channels of a texel share a cache line (halves the cost of scattered lookups)
    image = (
        torch.from_numpy(atlas).permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    )
    return MipAtlas(image, torch.from_numpy(origins.reshape(-1, 2).T.copy()), size, len(pyramid), count)


def sample_texture(
    atlas: MipAtlas, texture: torch.Tensor, u: torch.Tensor, v: torch.Tensor, level: torch.Tensor
) -> torch.Tensor:
    """Trilinear, wrapping texture lookup.

    Args:
        texture: (N,) int64 texture index.
        u, v: (N,) float texel coordinates at level 0 (texel k covers [k, k + 1)); any real value, wraps.
        level: (N,) float mip level (log2 of the footprint in level-0 texels), clamped to the pyramid.

    Returns:
        (3, N) colours.
    """
    n = u.shape[0]
    level = level.clamp(0, atlas.levels - 1)
    lower = level.floor()
    frac = level - lower
    levels = torch.cat([lower, (lower + 1).clamp(max=atlas.levels - 1)])
    scale = torch.exp2(-levels)
    side = atlas.size * scale
    x = torch.remainder(u.repeat(2) * scale - 0.5, side)
    y = torch.remainder(v.repeat(2) * scale - 0.5, side)
    origin = torch.index_select(atlas.origins, 1, levels.long() * atlas.textures + texture.repeat(2))
    height, width = atlas.image.shape[-2:]
    gx = (x + origin[0] + 0.5) * (2.0 / width) - 1.0
    gy = (y + origin[1] + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack([gx, gy], -1).view(1, 1, 2 * n, 2)
    colours = F.grid_sample(atlas.image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    colours = colours.reshape(3, 2 * n)
    return torch.lerp(colours[:, :n], colours[:, n:], frac)


# ------------------------------------------------------------------------------------------------ scene


@dataclass
class Boxes:
    """Boxes standing on their base, rotated by ``yaw`` about the vertical (numpy, float64), with texture
    attributes."""

    centre: np.ndarray  # (B, 3)
    half: np.ndarray  # (B, 3) half extents along the box axes
    yaw: np.ndarray  # (B,) box x axis = world (cos yaw, sin yaw, 0)
    texture: np.ndarray  # (B,) int texture slot
    texel: np.ndarray  # (B,) metres per level-0 texel
    offset: np.ndarray  # (B, 2) texture offset in metres
    tint: np.ndarray  # (B, 3)

    @staticmethod
    def concat(parts: list[Boxes]) -> Boxes:
        return Boxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Boxes.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.centre)


def _yaw_matrix(yaw: np.ndarray | float) -> np.ndarray:
    zero = np.zeros_like(np.asarray(yaw, dtype=np.float64))
    return kl.rotation_zyx(np.asarray(yaw, dtype=np.float64), zero, zero)


class _BoxList:
    """Accumulates boxes while a scene is laid out."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.rows = rng, []

    def add(
        self,
        centre: Sequence[float] | np.ndarray,
        half: Sequence[float] | np.ndarray,
        yaw: float,
        texture: int,
        tint: Sequence[float] | None = None,
    ) -> None:
        texel = TEXELS[texture]
        tint = self.rng.uniform(0.85, 1.15, 3) if tint is None else np.asarray(tint)
        offset = self.rng.uniform(0, TEXTURE_SIZE * texel, 2)
        self.rows.append(
            (np.asarray(centre, float), np.asarray(half, float), yaw, texture, texel, offset, tint)
        )

    def boxes(self) -> Boxes:
        if not self.rows:
            return Boxes(
                np.zeros((0, 3)),
                np.ones((0, 3)),
                np.zeros(0),
                np.zeros(0, int),
                np.ones(0),
                np.zeros((0, 2)),
                np.ones((0, 3)),
            )
        c, h, yaw, tex, texel, off, tint = zip(*self.rows, strict=True)
        return Boxes(
            np.stack(c),
            np.stack(h),
            np.array(yaw, dtype=np.float64),
            np.array(tex),
            np.array(texel),
            np.stack(off),
            np.stack(tint),
        )


def _car_parts(length: float, width: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Body and cabin of a car as (centre offset in the car frame, half extents), car frame on the ground."""
    body = (np.array([0.0, 0.0, 0.575]), np.array([length / 2, width / 2, 0.425]))
    cabin = (np.array([-0.08 * length, 0.0, 1.225]), np.array([0.27 * length, width / 2 - 0.08, 0.225]))
    return [body, cabin]


@dataclass
class DriveSpec:
    """What one synthetic drive contains; everything else follows from ``seed`` and ``index``."""

    seed: int
    index: int
    frames: int = 60
    lead_vehicle: bool = False
    standstill: bool = False
    oncoming: bool = False

    @staticmethod
    def for_dataset(seed: int, index: int, drives: int, frames: int) -> DriveSpec:
        """Even training drives get a lead car and a standstill, odd ones oncoming traffic; the last drive
        of the dataset (held out for validation/test) is static apart from the ego car."""
        held_out = index == drives - 1
        return DriveSpec(
            seed,
            index,
            frames,
            lead_vehicle=not held_out and index % 2 == 0,
            standstill=not held_out and index % 2 == 0 and frames >= 20,
            oncoming=not held_out and index % 2 == 1,
        )


def _waves(
    rng: np.random.Generator, x: np.ndarray, std: float, wavelengths: tuple[float, float]
) -> np.ndarray:
    """A smooth random function of ``x``: a sum of 4 sinusoids with random wavelengths and phases."""
    lam = rng.uniform(*wavelengths, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    return std * np.sqrt(0.5) * np.sin(2 * np.pi * x[:, None] / lam + phase).sum(1)


@dataclass
class Trajectory:
    T_scene_imu: np.ndarray  # (F, 4, 4)
    distance: np.ndarray  # (F,) travelled metres
    yaw: np.ndarray  # (F,)


def make_trajectory(rng: np.random.Generator, frames: int, lane_y: float, standstill: bool) -> Trajectory:
    """IMU poses of the ego car: forward 0.5-1.5 m/frame, lane weave, pitch/roll/bounce from the road.

    Orientation and lateral offset are functions of travelled distance, so a stop freezes the pose.
    """
    k = np.arange(frames, dtype=np.float64)
    speed = np.clip(rng.uniform(0.65, 1.25) + _waves(rng, k, 0.06, (30, 100)), 0.5, 1.5)
    if standstill:
        start = int(rng.integers(frames // 4, frames // 2))
        hold = ramp = max(4, frames // 6)
        down = np.clip((start - k) / ramp, 0, 1)
        up = np.clip((k - (start + hold) + 1) / ramp, 0, 1)
        envelope = np.where(k < start + hold, down, up)
        speed = speed * (0.5 - 0.5 * np.cos(np.pi * envelope))
    distance = np.concatenate([[0.0], np.cumsum(speed[:-1])])
    amplitude, wavelength, phase = rng.uniform(0.15, 0.5), rng.uniform(60, 150), rng.uniform(0, 2 * np.pi)
    lateral = lane_y + amplitude * np.sin(2 * np.pi * distance / wavelength + phase)
    yaw = np.arctan(amplitude * 2 * np.pi / wavelength * np.cos(2 * np.pi * distance / wavelength + phase))
    pitch = np.deg2rad(_waves(rng, distance, 0.25, (6, 40)))
    roll = np.deg2rad(_waves(rng, distance, 0.25, (6, 40)))
    bounce = _waves(rng, distance, 0.005, (8, 30))
    rig = kl.KittiRig()
    imu_height = CAMERA_HEIGHT - np.linalg.inv(rig.T_cam_imu(CAMERA))[2, 3]
    T = np.tile(np.eye(4), (frames, 1, 1))
    T[:, :3, :3] = kl.rotation_zyx(yaw, pitch, roll)
    T[:, :3, 3] = np.stack([distance, lateral, imu_height + bounce], -1)
    return Trajectory(T, distance, yaw)


@dataclass
class StreetScene:
    """Everything needed to render any frame of one drive."""

    atlas: MipAtlas
    static: Boxes
    dynamic: Boxes  # attributes; poses per frame below
    dynamic_centre: np.ndarray  # (F, Bd, 3)
    dynamic_yaw: np.ndarray  # (F, Bd)
    road_half_width: float
    dash: tuple[float, float, float]  # period, length, phase (m)
    sun: torch.Tensor  # (3,) unit vector towards the sun
    ambient: float
    sky_horizon: torch.Tensor  # (3, 1) colour
    sky_zenith: torch.Tensor  # (3, 1)
    wave_vectors: torch.Tensor  # (K, 3) rad/m
    wave_phases: torch.Tensor  # (K, 1)

    def frame_boxes(self, frame: int) -> FrameBoxes:
        attrs = Boxes.concat([self.static, self.dynamic])
        yaw = np.concatenate([self.static.yaw, self.dynamic_yaw[frame]])
        table = np.concatenate(
            [
                np.concatenate([self.static.centre, self.dynamic_centre[frame]]),
                np.cos(yaw)[:, None],
                np.sin(yaw)[:, None],
                attrs.half,
                attrs.texel[:, None],
                attrs.offset,
                attrs.tint,
                attrs.texture[:, None],
            ],
            1,
        )
        return FrameBoxes(torch.as_tensor(table, dtype=torch.float32))


@dataclass
class FrameBoxes:
    """The boxes of one frame packed in one float32 table, so a per-hit lookup is a single gather.

    Columns: centre (3), cos yaw, sin yaw, half extents (3), texel (1), texture offset (2), tint (3),
    texture slot (1).
    """

    table: torch.Tensor  # (B, 15)

    def __post_init__(self) -> None:
        self.columns = self.table.T.contiguous()  # (15, B): per-hit lookups give contiguous rows

    def __len__(self) -> int:
        return self.table.shape[0]

    @property
    def centre(self) -> torch.Tensor:
        return self.table[:, 0:3]

    @property
    def rotation(self) -> torch.Tensor:
        """(B, 3, 3) world_from_box."""
        cos, sin = self.table[:, 3], self.table[:, 4]
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).reshape(-1, 3, 3)

    @property
    def half(self) -> torch.Tensor:
        return self.table[:, 5:8]

    def corners(self) -> torch.Tensor:
        """(B, 8, 3) world corners."""
        signs = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32) * 2 - 1
        local = signs[None] * self.half[:, None]
        return self.centre[:, None] + local @ self.rotation.transpose(1, 2)


def build_scene(
    rng: np.random.Generator, spec: DriveSpec, trajectory: Trajectory, road_half: float
) -> StreetScene:
    """Lay out the street around the ego trajectory; dynamic objects follow their own motions."""
    textures = build_textures(rng)
    sidewalk = rng.uniform(2.4, 4.0)
    x_min, x_max = -40.0, trajectory.distance[-1] + 200.0
    boxes = _BoxList(rng)
    for side in (-1.0, 1.0):
        # front row of buildings, with varying set-backs, gaps (alleys) and a few slightly rotated ones
        x = x_min + rng.uniform(0, 10)
        while x < x_max:
            length, depth, height = rng.uniform(6, 28), rng.uniform(8, 16), rng.uniform(6, 22)
            yaw = rng.normal(0, np.deg2rad(2.0)) if rng.random() < 0.3 else 0.0
            front = road_half + sidewalk + rng.uniform(0, 6) + abs(np.sin(yaw)) * length / 2
            centre = (x + length / 2, side * (front + depth / 2), height / 2)
            boxes.add(centre, (length / 2, depth / 2, height / 2), yaw, int(rng.choice(FACADES)))
            x += length + (rng.uniform(3, 12) if rng.random() < 0.3 else 0.0)
        # a taller back row, seen through gaps and above low buildings
        x = x_min
        while x < x_max + 100:
            length, height = rng.uniform(15, 40), rng.uniform(15, 35)
            centre = (x + length / 2, side * (road_half + sidewalk + rng.uniform(28, 45)), height / 2)
            boxes.add(centre, (length / 2, 6.0, height / 2), 0.0, int(rng.choice(FACADES)))
            x += length + rng.uniform(0, 8)
        # trees (trunk + crown) and poles at the kerb
        x, kerb = x_min + rng.uniform(0, 15), []
        while x < x_max:
            y = side * (road_half + rng.uniform(0.5, 0.9))
            if rng.random() < 0.6:
                trunk_h, crown = rng.uniform(2.8, 4.0), rng.uniform(2.2, 4.0)
                boxes.add((x, y, trunk_h / 2), (0.15, 0.15, trunk_h / 2), rng.uniform(0, 1.5), BARK)
                centre = (x, y + side * 0.3, trunk_h + crown / 2 - 0.3)
                boxes.add(centre, (crown / 2, crown / 2, crown / 2), rng.uniform(0, 1.5), FOLIAGE)
            else:
                pole_h = rng.uniform(4, 7)
                boxes.add((x, y, pole_h / 2), (0.08, 0.08, pole_h / 2), 0.0, BARK, tint=(0.8, 0.8, 0.85))
            kerb.append(x)
            x += rng.uniform(12, 30)
        # parked cars in the parking strip just outside the road edge line, between the trees
        x = x_min + rng.uniform(0, 8)
        while x < x_max:
            length, width = rng.uniform(3.8, 4.8), rng.uniform(1.65, 1.9)
            if rng.random() < 0.6 and all(abs(x + length / 2 - k) > length / 2 + 0.6 for k in kerb):
                ground = np.array([x + length / 2, side * (road_half + 0.15 + width / 2), 0.0])
                yaw, tex = rng.normal(0, np.deg2rad(2)), int(rng.choice(VEHICLES))
                for offset, half in _car_parts(length, width):
                    boxes.add(ground + _yaw_matrix(yaw) @ offset, half, yaw, tex)
                x += length + rng.uniform(1.0, 3.0)
            else:
                x += rng.uniform(2, 8)

    dynamic_parts, centres, yaws = _dynamic_objects(rng, spec, trajectory, road_half)
    dynamic = _BoxList(rng)
    for half, tex in dynamic_parts:
        dynamic.add(np.zeros(3), half, 0.0, tex)
    sun_azimuth, sun_elevation = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(25, 60))
    sun = np.array(
        [
            np.cos(sun_elevation) * np.cos(sun_azimuth),
            np.cos(sun_elevation) * np.sin(sun_azimuth),
            np.sin(sun_elevation),
        ]
    )
    tensor = functools.partial(torch.tensor, dtype=torch.float32)
    directions = rng.standard_normal((3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return StreetScene(
        atlas=build_mip_atlas(textures),
        static=boxes.boxes(),
        dynamic=dynamic.boxes(),
        dynamic_centre=centres,
        dynamic_yaw=yaws,
        road_half_width=road_half,
        dash=(rng.uniform(8, 12), rng.uniform(3, 4.5), rng.uniform(0, 10)),
        sun=tensor(sun),
        ambient=rng.uniform(0.45, 0.6),
        sky_horizon=tensor(np.array([0.78, 0.84, 0.92]) + rng.uniform(-0.05, 0.05, 3))[:, None],
        sky_zenith=tensor(np.array([0.35, 0.55, 0.85]) + rng.uniform(-0.08, 0.08, 3))[:, None],
        wave_vectors=tensor(directions * (2 * np.pi / rng.uniform(4, 17, 3))[:, None]),
        wave_phases=tensor(rng.uniform(0, 2 * np.pi, 3))[:, None],
    )


def _dynamic_objects(
    rng: np.random.Generator, spec: DriveSpec, trajectory: Trajectory, road_half: float
) -> tuple[list[tuple[np.ndarray, int]], np.ndarray, np.ndarray]:
    """Moving cars: (half extents, texture) per box and their per-frame centres (F, B, 3) and yaws (F, B)."""
    frames = spec.frames
    parts, centres, yaws = [], [], []

    def add_car(ground: np.ndarray, yaw: np.ndarray) -> None:  # ground (F, 3) car origin, yaw (F,)
        length, width, tex = rng.uniform(3.8, 4.8), rng.uniform(1.65, 1.9), int(rng.choice(VEHICLES))
        R = _yaw_matrix(yaw)
        for offset, half in _car_parts(length, width):
            parts.append((half, tex))
            centres.append(ground + R @ offset)
            yaws.append(yaw)

    position = trajectory.T_scene_imu[:, :3, 3] * [1, 1, 0]
    heading = np.stack([np.cos(trajectory.yaw), np.sin(trajectory.yaw), np.zeros(frames)], -1)
    if spec.lead_vehicle:
        # rigid with the ego car (same velocity: static in the image) until it pulls away, after any stop
        release = int(rng.integers(3 * frames // 4, 9 * frames // 10 + 1))
        ahead = rng.uniform(10, 15) + 0.06 * np.maximum(np.arange(frames) - release, 0) ** 2
        add_car(position + heading * ahead[:, None], trajectory.yaw)
    if spec.oncoming:
        for _ in range(int(rng.integers(1, 3))):
            speed, meet = rng.uniform(0.6, 1.4), rng.uniform(0.3, 0.9) * frames
            k = np.arange(frames)
            x = np.interp(meet, k, trajectory.distance) + 2.0 + speed * (meet - k)
            y = np.full(frames, road_half / 2 + rng.uniform(-0.3, 0.3))
            add_car(np.stack([x, y, np.zeros(frames)], -1), np.full(frames, np.pi))
    if not parts:
        return [], np.zeros((frames, 0, 3)), np.zeros((frames, 0))
    return parts, np.stack(centres, 1), np.stack(yaws, 1)


# --------------------------------------------------------------------------------------------- rendering

# torch's advanced indexing, norm and argmax over a short leading dimension are several times slower on
# CPU than these equivalents on contiguous rows; the renderer keeps (3, N) layouts and uses them throughout.


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[..., index]`` along the last dimension."""
    return torch.index_select(x, x.dim() - 1, index)


def _length(v: torch.Tensor) -> torch.Tensor:
    """(3, N) -> (N,) Euclidean norms."""
    return torch.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _argmax3(v: torch.Tensor) -> torch.Tensor:
    """(3, N) -> (N,) index of the largest row entry per column (first one on ties)."""
    x, y, z = v
    return torch.where((x >= y) & (x >= z), 0, torch.where(y >= z, 1, 2))


Window = tuple[int, slice, slice, float]  # box index, rows, columns, lower bound of t over the box
SMALL_WINDOW = 1024  # windows up to this many rays are tested in one batch instead of one by one


def _slab_entry(lower: torch.Tensor, upper: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Ray parameter where rays from the origin enter boxes [lower, upper] (slab method), inf on a miss.

    Args:
        lower, upper: (3, ...) box bounds relative to the ray origin, in the box frame (broadcastable).
        directions: (3, ...) ray directions in the box frame.
    """
    t0, t1 = lower / directions, upper / directions
    t_near = torch.minimum(t0, t1).amax(0)
    t_far = torch.maximum(t0, t1).amin(0)
    return torch.where((t_near <= t_far) & (t_near > NEAR), t_near, math.inf)


def _box_frames(
    origin: torch.Tensor, rotation: torch.Tensor, boxes: FrameBoxes
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per box: sensor->box rotation (B, 3, 3) and the box bounds relative to the sensor (B, 3) each."""
    to_box = boxes.rotation.transpose(1, 2) @ rotation
    local_origin = ((origin - boxes.centre)[:, None, :] @ boxes.rotation).squeeze(1)
    return to_box, -boxes.half - local_origin, boxes.half - local_origin


def cast_pairs(
    origin: torch.Tensor,
    rotation: torch.Tensor,
    directions: torch.Tensor,
    boxes: FrameBoxes,
    box: torch.Tensor,
) -> torch.Tensor:
    """Entry parameter of ray i into box ``box[i]`` for M (ray, box) pairs at once.

    Args:
        directions: (3, M) sensor-frame directions; box: (M,) int64 box indices.

    Returns:
        (M,) t, inf on a miss.
    """
    _, lower, upper = _box_frames(origin, rotation, boxes)
    world = rotation @ directions
    cos, sin = _take(boxes.columns[3:5], box)
    local = torch.stack([cos * world[0] + sin * world[1], cos * world[1] - sin * world[0], world[2]])
    return _slab_entry(_take(lower.T.contiguous(), box), _take(upper.T.contiguous(), box), local)


def _ground(
    origin: torch.Tensor, rotation: torch.Tensor, directions: torch.Tensor, far: float
) -> torch.Tensor:
    """Ray parameter of the hit with the ground z = 0 (directions (3, ...)), inf where none within ``far``."""
    dz = torch.tensordot(rotation[2], directions, 1)
    t = -origin[2] / dz
    return torch.where((dz < 0) & (t < far), t, math.inf)


def cast_rays(
    origin: torch.Tensor,
    rotation: torch.Tensor,
    directions: torch.Tensor,
    boxes: FrameBoxes,
    windows: list[Window],
    far: float = GROUND_FAR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of each ray with the ground plane z = 0 and the boxes.

    Args:
        origin: (3,) sensor position in the world.
        rotation: (3, 3) world_from_sensor.
        directions: (3, H, W) ray directions in the sensor frame; the returned ``t`` is in their units
            (z = 1 rays give z-depth, unit rays give range).
        windows: the only rays tested against each box, with a lower bound of ``t`` over the box. Large
            windows go one by one, near to far, skipping a box behind everything already hit in its window;
            small ones go in one batch.

    Returns:
        t: (H, W) ray parameter of the nearest hit, inf where nothing is hit (sky).
        ids: (H, W) int64: -1 nothing, 0 ground, b + 1 box b.
    """
    t = _ground(origin, rotation, directions, far)
    ids = torch.isfinite(t).long() - 1
    if not windows:
        return t, ids
    large = sorted((w for w in windows if _area(w, directions) > SMALL_WINDOW), key=lambda w: w[3])
    small = [w for w in windows if _area(w, directions) <= SMALL_WINDOW]
    to_box, lower, upper = _box_frames(origin, rotation, boxes)
    for box, rows, cols, t_min in large:
        t_win = t[rows, cols]
        if t_min >= float(t_win.max()):
            continue  # occluded by what is already hit
        local = torch.einsum("ij,jhw->ihw", to_box[box], directions[:, rows, cols])
        t_box = _slab_entry(lower[box, :, None, None], upper[box, :, None, None], local)
        ids[rows, cols] = torch.where(t_box < t_win, box + 1, ids[rows, cols])
        t[rows, cols] = torch.minimum(t_box, t_win)
    if small:
        box, pixel = _window_pairs(small, directions.shape[1:])
        t_pair = cast_pairs(origin, rotation, _take(directions.flatten(1), pixel), boxes, box)
        t_flat, ids_flat = t.view(-1), ids.view(-1)
        t_flat.scatter_reduce_(0, pixel, t_pair, reduce="amin")
        won = torch.isfinite(t_pair) & (t_pair == t_flat[pixel])
        ids_flat[pixel[won]] = box[won] + 1
    return t, ids


def _area(window: Window, directions: torch.Tensor) -> int:
    rows = range(directions.shape[1])[window[1]]
    cols = range(directions.shape[2])[window[2]]
    return len(rows) * len(cols)


def _window_pairs(windows: list[Window], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (box, flat pixel index) pair covered by the windows."""
    height, width = shape
    spans = torch.tensor(
        [[w[0], *w[1].indices(height)[:2], *w[2].indices(width)[:2]] for w in windows], dtype=torch.long
    )
    box, r0, r1, c0, c1 = spans.unbind(1)
    widths = c1 - c0
    counts = (r1 - r0) * widths
    owner = torch.repeat_interleave(torch.arange(len(windows)), counts)
    offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[owner]
    pixel = (r0[owner] + offset // widths[owner]) * width + c0[owner] + offset % widths[owner]
    return box[owner], pixel


def pinhole_windows(
    boxes: FrameBoxes, T_cam_world: torch.Tensor, intrinsics: Intrinsics, max_depth: float = GROUND_FAR
) -> list[Window]:
    """Image rectangle covered by each box's projection, clipped to z >= NEAR (exact for convex boxes: the
    clipped box's vertices are its corners in front plus its edges' crossings of the near plane); the lower
    bound of z-depth over the box comes with it."""
    corners = boxes.corners() @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]  # (B, 8, 3)
    # the 12 edges join corners whose indices differ in exactly one bit
    edges = torch.tensor([(i, i | b) for i in range(8) for b in (1, 2, 4) if not i & b])
    a, b = corners[:, edges[:, 0]], corners[:, edges[:, 1]]
    s = (NEAR - a[..., 2]) / (b[..., 2] - a[..., 2])
    crossing = a + s.unsqueeze(-1) * (b - a)
    points = torch.cat([corners, crossing], 1)
    valid = torch.cat([corners[..., 2] >= NEAR, (s >= 0) & (s <= 1)], 1)
    z = torch.where(valid, points[..., 2], 1.0)
    u = intrinsics.fx * points[..., 0] / z + intrinsics.cx
    v = intrinsics.fy * points[..., 1] / z + intrinsics.cy
    big = 1e9
    u0 = torch.where(valid, u, big).amin(1).floor() - 1
    u1 = torch.where(valid, u, -big).amax(1).ceil() + 2
    v0 = torch.where(valid, v, big).amin(1).floor() - 1
    v1 = torch.where(valid, v, -big).amax(1).ceil() + 2
    near_z = torch.where(valid, points[..., 2], big).amin(1)
    visible = valid.any(1) & (u1 > 0) & (u0 < intrinsics.width) & (v1 > 0) & (v0 < intrinsics.height)
    visible &= near_z < max_depth
    width, height = intrinsics.width, intrinsics.height
    rect = torch.stack([u0.clamp(0, width), u1.clamp(0, width), v0.clamp(0, height), v1.clamp(0, height)], 1)
    index = torch.nonzero(visible).flatten()
    return [
        (i, slice(r[2], r[3]), slice(r[0], r[1]), z)
        for i, r, z in zip(index.tolist(), rect[index].long().tolist(), near_z[index].tolist(), strict=True)
    ]


def azimuth_windows(
    boxes: FrameBoxes, T_sensor_world: torch.Tensor, azimuths: int, max_range: float
) -> list[Window]:
    """Columns of a 360-degree scan (column j at azimuth -pi + 2 pi (j + 0.5) / azimuths) that can see each
    box: the azimuth span of its corners (exact: azimuth is monotonic along a segment), wrapped."""
    corners = boxes.corners() @ T_sensor_world[:3, :3].T + T_sensor_world[:3, 3]
    centre = corners.mean(1)
    radius = (corners - centre[:, None]).norm(dim=-1).amax(1)
    nearest = (centre.norm(dim=-1) - radius).clamp(min=0)
    base = torch.atan2(centre[:, 1], centre[:, 0])
    relative = torch.atan2(corners[..., 1], corners[..., 0]) - base[:, None]
    relative = torch.remainder(relative + math.pi, 2 * math.pi) - math.pi
    inside = centre[:, :2].norm(dim=-1) <= radius  # the sensor may be above the footprint: every column
    step = 2 * math.pi / azimuths
    first = torch.floor((base + relative.amin(1) + math.pi) / step - 0.5).long() - 1
    last = torch.ceil((base + relative.amax(1) + math.pi) / step - 0.5).long() + 2
    windows = []
    rows = slice(None)
    for box in torch.nonzero(nearest < max_range).flatten().tolist():
        lo, hi, t_min = int(first[box]), int(last[box]), float(nearest[box])
        if inside[box] or hi - lo >= azimuths:
            windows.append((box, rows, slice(0, azimuths), t_min))
            continue
        lo, hi = lo % azimuths, hi % azimuths
        if lo < hi:
            windows.append((box, rows, slice(lo, hi), t_min))
        else:
            windows += [(box, rows, slice(lo, azimuths), t_min), (box, rows, slice(0, hi), t_min)]
    return windows


@dataclass
class Surface:
    """Material where rays hit something."""

    index: torch.Tensor  # (M,) which rays hit
    albedo: torch.Tensor  # (3, M)
    normal: torch.Tensor  # (3, M) outward world normal
    key: torch.Tensor  # (M,) int64 surface id: 0 sidewalk, 1 road, 8 (b + 1) + face for box b


def shade_hits(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    directions: torch.Tensor,
    t: torch.Tensor,
    ids: torch.Tensor,
    pixel_angle: float,
) -> Surface:
    """Albedo and normal where rays hit; the mip level follows the ray footprint.

    Args:
        directions: (3, N) world ray directions (any length; ``t`` is in their units).
        t, ids: (N,) as returned by :func:`cast_rays`, flattened.
        pixel_angle: angle (radians) between neighbouring rays.
    """
    on_box = torch.nonzero(ids > 0).flatten()
    on_ground = torch.nonzero(ids == 0).flatten()
    index = torch.cat([on_box, on_ground])
    d, t_hit = _take(directions, index), _take(t, index)
    length = _length(d)
    points = origin[:, None] + t_hit * d
    nb = len(on_box)

    box_ids = _take(ids, on_box)
    row = _take(boxes.columns, box_ids - 1)
    cos, sin, half = row[3], row[4], row[5:8]
    q = points[:, :nb] - row[0:3]
    local = torch.stack([cos * q[0] + sin * q[1], cos * q[1] - sin * q[0], q[2]])
    axis = _argmax3(local.abs() / half)
    positive = local.gather(0, axis[None])[0] > 0
    sign = torch.where(positive, 1.0, -1.0)
    x_face, y_face = axis == 0, axis == 1
    box_normal = torch.stack(
        [
            torch.where(x_face, cos, torch.where(y_face, -sin, 0.0)) * sign,
            torch.where(x_face, sin, torch.where(y_face, cos, 0.0)) * sign,
            (axis == 2) * sign,
        ]
    )
    # texture u runs along box y on x faces and along box x otherwise; v along height, or along y on top
    corner = local + half
    u_box = corner.gather(0, x_face.long()[None])[0] + row[9]
    v_box = row[10] - corner.gather(0, (2 - (axis == 2).long())[None])[0]

    ground = points[:, nb:]
    road = ground[1].abs() < scene.road_half_width
    texel = torch.cat([row[8], torch.where(road, TEXELS[ROAD], TEXELS[SIDEWALK])])
    texture = torch.cat([row[14].long(), torch.where(road, ROAD, SIDEWALK)])
    u = torch.cat([u_box, ground[0]]) / texel
    v = torch.cat([v_box, ground[1]]) / texel
    normal = torch.cat([box_normal, torch.tensor([[0.0], [0.0], [1.0]]).expand(3, len(on_ground))], 1)
    cosine = ((d * normal).sum(0).abs() / length).clamp(min=0.02)
    footprint = t_hit * length * pixel_angle / cosine.sqrt()  # geometric mean of the two axes
    colour = sample_texture(scene.atlas, texture, u, v, torch.log2(footprint / texel))

    # long-wavelength modulation in object (box) or world (ground) coordinates: nothing repeats
    phase = scene.wave_vectors @ torch.cat([local, ground], 1) + scene.wave_phases
    tint = torch.cat([row[11:14], torch.ones(3, len(on_ground))], 1)
    colour = colour * tint * (1 + 0.12 * torch.sin(phase).sum(0))
    paint = _lane_paint(scene, ground[0], ground[1], footprint[nb:].clamp(min=1e-3))
    colour[:, nb:] += paint * (0.7 - 0.7 * colour[:, nb:])
    key = torch.cat([box_ids * 8 + axis * 2 + positive, road.long()])
    return Surface(index, colour.clamp(0, 1), normal, key)


def _lane_paint(
    scene: StreetScene, x: torch.Tensor, y: torch.Tensor, footprint: torch.Tensor
) -> torch.Tensor:
    """Coverage in [0, 1] of a dashed centre line and two solid edge lines, box-filtered by the footprint."""
    period, dash, phase = scene.dash
    along = torch.remainder(x - phase, period)
    inside = torch.where(
        along < dash, torch.minimum(along, dash - along), -torch.minimum(along - dash, period - along)
    )
    dashes = (inside / footprint + 0.5).clamp(0, 1)
    centre = ((0.07 - y.abs()) / footprint + 0.5).clamp(0, 1) * dashes
    edge = ((0.08 - (y.abs() - (scene.road_half_width - 0.25)).abs()) / footprint + 0.5).clamp(0, 1)
    return torch.maximum(centre, edge)


def sky_colour(scene: StreetScene, directions: torch.Tensor, pixel_angle: float) -> torch.Tensor:
    """Sky at infinity (a function of direction only): gradient plus clouds. (3, N) directions -> (3, N)."""
    unit = directions / _length(directions)
    azimuth = torch.atan2(unit[1], unit[0])
    elevation = torch.asin(unit[2].clamp(-1, 1))
    texels_per_radian = 2 * TEXTURE_SIZE / (2 * math.pi)  # the cloud texture wraps twice around the horizon
    level = torch.full_like(azimuth, math.log2(pixel_angle * texels_per_radian))
    texture = torch.full_like(azimuth, SKY, dtype=torch.long)
    u, v = azimuth * texels_per_radian, -elevation * texels_per_radian
    clouds = sample_texture(scene.atlas, texture, u, v, level)[:1]
    blend = (elevation.clamp(min=0) / 0.5).clamp(max=1)
    gradient = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * blend
    cover = ((clouds - 0.45) * 3).clamp(0, 1)
    return gradient * (1 - cover) + cover * (0.75 + 0.3 * clouds)


def _shade_rays(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    rotation: torch.Tensor,
    rays: torch.Tensor,
    t: torch.Tensor,
    ids: torch.Tensor,
    pixel_angle: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lit colour (3, N) and surface key (N,; -1 for sky) of camera rays (3, N) with their hits."""
    directions = rotation @ rays
    surface = shade_hits(scene, boxes, origin, directions, t, ids, pixel_angle)
    light = scene.ambient + (1 - scene.ambient) * (scene.sun @ surface.normal).clamp(min=0)
    colour = torch.empty(3, t.shape[0])
    colour.index_copy_(1, surface.index, surface.albedo * light)
    sky = torch.nonzero(ids < 0).flatten()
    colour.index_copy_(1, sky, sky_colour(scene, _take(directions, sky), pixel_angle))
    key = torch.full_like(ids, -1).index_copy_(0, surface.index, surface.key)
    return colour, key


# anti-aliasing of silhouettes and face/material edges: the pixel centre plus 3 subpixel offsets (x, y),
# centred, with 4 distinct x and 4 distinct y positions
SUBPIXELS = torch.tensor([[0.386, 0.104], [-0.283, 0.283], [-0.104, -0.386]])


def _edges(key: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels whose surface key differs from a 4-neighbour's."""
    edge = torch.zeros_like(key, dtype=torch.bool)
    horizontal = key[:, 1:] != key[:, :-1]
    vertical = key[1:] != key[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def _antialias_edges(
    scene: StreetScene,
    boxes: FrameBoxes,
    origin: torch.Tensor,
    rotation: torch.Tensor,
    intrinsics: Intrinsics,
    rays: torch.Tensor,
    ids: torch.Tensor,
    colour: torch.Tensor,
    key: torch.Tensor,
) -> None:
    """Replace the colour of edge pixels by the mean of the centre and 3 subpixel samples, in place.

    A subpixel ray is tested against the ground and the boxes hit by the centre rays of the pixel's 3x3
    neighbourhood (anything else would be thinner than a pixel and is missed by the centre rays too).
    """
    height, width = ids.shape
    edge = torch.nonzero(_edges(key.view(height, width)).flatten()).flatten()
    if edge.numel() == 0:
        return
    row, col = edge // width, edge % width
    offsets = torch.tensor([-1, 0, 1])
    rows = (row[:, None, None] + offsets[:, None]).clamp(0, height - 1)
    cols = (col[:, None, None] + offsets).clamp(0, width - 1)
    candidates = ids[rows, cols].reshape(-1, 9).sort(1).values
    fresh = torch.ones_like(candidates, dtype=torch.bool)
    fresh[:, 1:] = candidates[:, 1:] != candidates[:, :-1]
    pixel, slot = torch.nonzero(fresh & (candidates > 0), as_tuple=True)

    samples = len(SUBPIXELS)
    step = SUBPIXELS / torch.tensor([intrinsics.fx, intrinsics.fy])
    sub = _take(rays, edge)[:, :, None].repeat(1, 1, samples)  # (3, E, samples)
    sub[:2] += step.T[:, None, :]
    sub = sub.reshape(3, -1)
    t = _ground(origin, rotation, sub, GROUND_FAR)
    sub_ids = torch.isfinite(t).long() - 1
    if pixel.numel():
        ray = (pixel[:, None] * samples + torch.arange(samples)).reshape(-1)
        box = candidates[pixel, slot].repeat_interleave(samples) - 1
        t_pair = cast_pairs(origin, rotation, _take(sub, ray), boxes, box)
        t.scatter_reduce_(0, ray, t_pair, reduce="amin")
        won = torch.isfinite(t_pair) & (t_pair == t[ray])
        sub_ids[ray[won]] = box[won] + 1
    sub_colour, _ = _shade_rays(scene, boxes, origin, rotation, sub, t, sub_ids, 0.5 / intrinsics.fx)
    total = sub_colour.reshape(3, -1, samples).sum(2) + _take(colour, edge)
    colour.index_copy_(1, edge, total / (samples + 1))


def render_camera(
    scene: StreetScene, frame: int, T_world_cam: np.ndarray, intrinsics: Intrinsics, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame through the pixel-centre rays of ``intrinsics``.

    Returns:
        rgb: (H, W, 3) float32 in [0, 1]; textures mip-mapped, edge pixels averaged over 4 rays if
            ``antialias``.
        depth: (H, W) float32 z-depth through pixel centres, inf for sky.
        ids: (H, W) int64 hit ids through pixel centres (-1 sky, 0 ground, b + 1 box b; dynamic boxes last).
    """
    boxes = scene.frame_boxes(frame)
    pose = torch.as_tensor(T_world_cam, dtype=torch.float32)
    pose_inv = torch.as_tensor(np.linalg.inv(T_world_cam), dtype=torch.float32)
    origin, rotation = pose[:3, 3], pose[:3, :3]
    rays = ray_grid(intrinsics.inv_K(), intrinsics.height, intrinsics.width)
    t, ids = cast_rays(origin, rotation, rays, boxes, pinhole_windows(boxes, pose_inv, intrinsics))
    flat_rays = rays.flatten(1)
    colour, key = _shade_rays(
        scene, boxes, origin, rotation, flat_rays, t.flatten(), ids.flatten(), 1 / intrinsics.fx
    )
    if antialias:
        _antialias_edges(scene, boxes, origin, rotation, intrinsics, flat_rays, ids, colour, key)
    rgb = colour.clamp(0, 1).T.reshape(intrinsics.height, intrinsics.width, 3)
    return rgb.numpy(), t.numpy(), ids.numpy()


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
    points = _take(rays, surface.index) * _take(t, surface.index)
    return torch.cat([points, reflectance[None]]).T.numpy()


# ------------------------------------------------------------------------------------------------ drives


def _date(seed: int) -> datetime:
    """Recording date of a dataset: one per seed (2001-01-01 + seed days), so datasets of different seeds can
    share a root; never a date of the real KITTI release (2011), so synthetic drives never collide with it."""
    return datetime(2001, 1, 1) + timedelta(days=seed % 3650)


@dataclass
class RenderedFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid (sky, beyond MAX_GT_DEPTH)
    ids: np.ndarray  # (H, W) int64: -1 sky, 0 ground, b + 1 box b (see SyntheticDrive.dynamic_ids)


class SyntheticDrive(FrameSequence):
    """One synthetic drive, rendered on demand (deterministic in ``spec``).

    Poses, timestamps and OXTS are ready at construction; the scene (textures) is built on first render.

    Attributes:
        T_world_imu, T_world_cam, T_world_velo: (F, 4, 4) poses in the street frame.
        poses: (F, 4, 4) camera-02-to-world with world = camera 02 at frame 0 (the poses file).
    """

    def __init__(self, spec: DriveSpec, width: int = 416, height: int = 128, antialias: bool = True) -> None:
        if spec.frames < 2:
            raise ValueError(f"a drive needs at least 2 frames, got {spec.frames}")
        self.spec, self.antialias = spec, antialias
        self.rig = kl.KittiRig()
        self.date = _date(spec.seed).strftime("%Y_%m_%d")
        self.drive_folder = kl.drive_folder_name(self.date, spec.index + 1)
        self.name = f"{self.date}/{self.drive_folder}/image_{CAMERA}"
        self.intrinsics = kl.kitti_intrinsics(width, height)
        rng = np.random.default_rng([spec.seed, spec.index])
        self.road_half_width = rng.uniform(3.2, 4.5)
        self.trajectory = make_trajectory(rng, spec.frames, -self.road_half_width / 2, spec.standstill)
        self.start = _date(spec.seed).replace(
            hour=12,
            minute=spec.index * 7 % 60,
            second=int(rng.integers(60)),
            microsecond=int(rng.integers(10**6)),
        )
        self._scene_rng = rng  # the rest of the stream lays out the scene, on first use
        self.offsets_ns = np.arange(spec.frames, dtype=np.int64) * int(1e9 / FRAME_RATE)
        start_ns = calendar.timegm(self.start.timetuple()) * 1_000_000_000 + self.start.microsecond * 1000
        self.stamps_ns = start_ns + self.offsets_ns  # UTC, as KITTI timestamps are read
        self.timestamps = self.stamps_ns / 1e9
        self.T_world_imu = self.trajectory.T_scene_imu
        self.T_world_cam = self.T_world_imu @ np.linalg.inv(self.rig.T_cam_imu(CAMERA))
        self.T_world_velo = self.T_world_imu @ np.linalg.inv(self.rig.T_velo_imu)
        self.poses = np.linalg.inv(self.T_world_cam[0]) @ self.T_world_cam
        self._cache: tuple[int, RenderedFrame] | None = None

    @functools.cached_property
    def scene(self) -> StreetScene:
        return build_scene(self._scene_rng, self.spec, self.trajectory, self.road_half_width)

    @property
    def dynamic_ids(self) -> set[int]:
        """Hit ids (see :class:`RenderedFrame`) of the moving boxes."""
        first = len(self.scene.static) + 1
        return set(range(first, first + len(self.scene.dynamic)))

    def render(self, index: int) -> RenderedFrame:
        """Image, ground-truth depth and hit ids of frame ``index`` (the last frame is cached)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")
        if self._cache is None or self._cache[0] != index:
            rgb, depth, ids = render_camera(
                self.scene, index, self.T_world_cam[index], self.intrinsics, self.antialias
            )
            depth = np.where(np.isfinite(depth) & (depth <= MAX_GT_DEPTH), depth, 0).astype(np.float32)
            self._cache = index, RenderedFrame((rgb * 255 + 0.5).astype(np.uint8), depth, ids)
        return self._cache[1]

    def image(self, index: int) -> np.ndarray:
        return self.render(index).rgb

    def depth(self, index: int) -> np.ndarray:
        return self.render(index).depth

    def pose(self, index: int) -> np.ndarray:
        return self.poses[index].copy()

    def scan(self, index: int) -> np.ndarray:
        """Velodyne scan of frame ``index``: (N, 4) float32 in the velodyne frame."""
        return render_lidar(self.scene, index, self.T_world_velo[index])

    def oxts(self) -> np.ndarray:
        """(F, 30) OXTS packets; the street runs along a random compass heading near Karlsruhe."""
        rng = np.random.default_rng([self.spec.seed, self.spec.index, 1])
        T_enu_world = kl.rigid(_yaw_matrix(rng.uniform(-np.pi, np.pi)), (0.0, 0.0, 0.0))
        lat0, lon0 = round(49.0 + rng.uniform(-0.02, 0.02), 10), round(8.4 + rng.uniform(-0.03, 0.03), 10)
        T_enu_imu = T_enu_world @ self.T_world_imu
        T_enu_imu[:, :3, 3] -= T_enu_imu[0, :3, 3]
        return kl.oxts_packets(T_enu_imu, 1.0 / FRAME_RATE, lat0, lon0, 115.0 + rng.uniform(-5, 5))


def write_calibration(root: Path, drive: SyntheticDrive) -> None:
    """The three calibration files of the drive's date folder."""
    date_dir = root / drive.date
    calib_time = datetime.strptime(drive.date, "%Y_%m_%d").replace(hour=9)
    date_dir.mkdir(parents=True, exist_ok=True)
    kl.write_calib_cam_to_cam(date_dir / "calib_cam_to_cam.txt", drive.intrinsics, drive.rig, calib_time)
    kl.write_calib_velo_to_cam(date_dir / "calib_velo_to_cam.txt", drive.rig, calib_time)
    kl.write_calib_imu_to_velo(date_dir / "calib_imu_to_velo.txt", drive.rig, calib_time)


def write_drive(
    drive: SyntheticDrive,
    root: Path,
    bag: str = "mcap",
    on_frame: Callable[[], object] | None = None,
    calibration: bool = True,
) -> Path:
    """Write ``drive`` under ``root`` in the KITTI raw layout (+ a rosbag2 under ``root/bags``).

    ``on_frame`` is called after each frame (progress); ``calibration=False`` leaves the date folder's
    calibration files to the caller (parallel writers of one date).
    """
    if bag not in BAG_STORAGES:
        raise ValueError(f"bag must be one of {BAG_STORAGES}, got '{bag}'")
    if calibration:
        write_calibration(root, drive)
    out = root / drive.date / drive.drive_folder
    if (
        out / f"poses_cam_{CAMERA}.txt"
    ).is_file():  # an earlier synthetic drive (real KITTI has no such file)
        logger.info("replacing existing synthetic drive %s", out)
        shutil.rmtree(out)
    offsets = drive.offsets_ns
    half_sweep = int(0.5e9 / FRAME_RATE)
    kl.write_timestamps(out / f"image_{CAMERA}" / "timestamps.txt", drive.start, offsets)
    kl.write_timestamps(out / "oxts" / "timestamps.txt", drive.start, offsets)
    velo = out / "velodyne_points"
    kl.write_timestamps(velo / "timestamps.txt", drive.start, offsets)
    kl.write_timestamps(velo / "timestamps_start.txt", drive.start, offsets - half_sweep)
    kl.write_timestamps(velo / "timestamps_end.txt", drive.start, offsets + half_sweep)
    kl.write_oxts(out / "oxts", drive.oxts())
    kl.write_poses(out / f"poses_cam_{CAMERA}.txt", drive.poses)

    with contextlib.ExitStack() as stack:
        bag_writer = None
        if bag != "none":
            from ssim_depth_core.data.bagio import CameraBagWriter  # noqa: PLC0415  (rosbags only when asked)

            bag_dir = root / "bags" / drive.drive_folder
            if bag_dir.exists():
                if not (bag_dir / "metadata.yaml").is_file():
                    raise FileExistsError(
                        f"{bag_dir}: exists and is not a rosbag2 directory; not overwriting it"
                    )
                logger.info("replacing existing bag %s", bag_dir)
                shutil.rmtree(bag_dir)
            bag_dir.parent.mkdir(parents=True, exist_ok=True)
            bag_writer = stack.enter_context(CameraBagWriter(bag_dir, drive.intrinsics, storage=bag))
        for index in range(len(drive)):
            frame = drive.render(index)
            name = f"{index:010d}"
            write_png(out / f"image_{CAMERA}" / "data" / f"{name}.png", frame.rgb)
            depth_png = out / "proj_depth" / "groundtruth" / f"image_{CAMERA}" / f"{name}.png"
            write_png(depth_png, encode_depth_png(frame.depth))
            kl.write_velodyne(velo / "data" / f"{name}.bin", drive.scan(index))
            if bag_writer is not None:
                bag_writer.write(frame.rgb, int(drive.stamps_ns[index]))
            if on_frame is not None:
                on_frame()
    return out


def split_entries(drives: list[SyntheticDrive]) -> dict[str, list[tuple[str, int]]]:
    """Train/val/test split of a dataset's drives (frames 0 and last excluded: triplets need neighbours).

    The last drive is held out: it is the test split, and also the validation split unless there are at
    least three drives, when the second-to-last is validation. With a single drive every split is that drive.
    """

    def frames(drive: SyntheticDrive) -> list[tuple[str, int]]:
        return [(f"{drive.date}/{drive.drive_folder}", i) for i in range(1, len(drive) - 1)]

    test = frames(drives[-1])
    val = frames(drives[-2]) if len(drives) >= 3 else test
    train = [entry for drive in drives[: -2 if len(drives) >= 3 else -1] for entry in frames(drive)] or test
    return {"train": train, "val": val, "test": test}


def _write_drive_task(spec: DriveSpec, width: int, height: int, root: Path, bag: str, ticks: Any) -> None:
    """Worker process body: one drive, single-threaded torch (the processes share the cores)."""
    torch.set_num_threads(1)
    write_drive(
        SyntheticDrive(spec, width, height), root, bag, on_frame=lambda: ticks.put(1), calibration=False
    )


def generate_dataset(
    out_dir: str | Path,
    seed: int,
    drives: int = 2,
    frames: int = 60,
    width: int = 416,
    height: int = 128,
    bag: str = "mcap",
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Render ``drives`` synthetic drives of ``frames`` frames at ``width`` x ``height`` into ``out_dir``.

    Writes the KITTI raw layout under ``out_dir/<date>`` (date = 2001-01-01 + seed days), split files under
    ``out_dir/splits/synthetic/{train,val,test}_files.txt`` and, unless ``bag == "none"``, one rosbag2
    (``mcap`` or ``sqlite3``) per drive under ``out_dir/bags/<drive folder>``. Deterministic in ``seed``
    (and independent of ``workers``: drives are rendered in parallel processes, one per CPU core by default).
    Returns ``out_dir``.
    """
    if drives < 1:
        raise ValueError(f"drives must be >= 1, got {drives}")
    if frames < 3:
        raise ValueError(f"frames must be >= 3 (triplets need neighbours), got {frames}")
    if bag not in BAG_STORAGES:
        raise ValueError(f"bag must be one of {BAG_STORAGES}, got '{bag}'")
    root = Path(out_dir)
    specs = [DriveSpec.for_dataset(seed, index, drives, frames) for index in range(drives)]
    made = [SyntheticDrive(spec, width, height) for spec in specs]
    for drive in made:
        logger.info(
            "drive %s: %d frames at %dx%d, %.0f m, lead car %s, standstill %s, oncoming cars %s",
            drive.drive_folder, frames, width, height, drive.trajectory.distance[-1],
            drive.spec.lead_vehicle, drive.spec.standstill, drive.spec.oncoming,
        )  # fmt: skip
    workers = min(drives, os.cpu_count() or 1) if workers is None else max(1, min(workers, drives))
    with tqdm(total=drives * frames, desc="synthetic frames", unit="frame", disable=not progress) as bar:
        if workers == 1:
            with _single_threaded_torch():
                for drive in made:
                    write_drive(drive, root, bag, on_frame=bar.update)
        else:
            write_calibration(root, made[0])
            _write_in_parallel(specs, width, height, root, bag, workers, bar)
    if drives == 1:
        logger.warning("a single drive is used for training, validation and test alike")
    for split, entries in split_entries(made).items():
        kl.write_split(root / "splits" / "synthetic" / f"{split}_files.txt", entries)
    logger.info("synthetic dataset (seed %d) written to %s", seed, root)
    return root


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """Render with one torch thread: the renderer's tensors are small (~50k elements), so a second thread
    gains ~10 %, while on a busy machine oversubscribed threads can slow it down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _write_in_parallel(
    specs: list[DriveSpec], width: int, height: int, root: Path, bag: str, workers: int, bar: tqdm
) -> None:
    """One drive per task in ``workers`` spawned processes; frame ticks come back through a queue."""
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        ticks = manager.Queue()
        tasks = [pool.submit(_write_drive_task, spec, width, height, root, bag, ticks) for spec in specs]
        while not all(task.done() for task in tasks) or not ticks.empty():
            try:
                ticks.get(timeout=0.2)
                bar.update()
            except queue.Empty:
                pass
        for task in tasks:
            task.result()  # re-raise a worker's error here
