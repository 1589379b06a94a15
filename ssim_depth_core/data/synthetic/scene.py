"""The street of a drive: the ego trajectory, static and moving boxes, lighting, per-frame box tables.

World frame: x along the street, y left, z up, ground at z = 0. Every object is a textured box standing on its
base, rotated about the vertical; the ego car's IMU follows :func:`make_trajectory`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.synthetic.textures import (
    BARK,
    FACADES,
    FOLIAGE,
    TEXELS,
    TEXTURE_SIZE,
    VEHICLES,
    MipAtlas,
    build_mip_atlas,
    build_textures,
)
from ssim_depth_core.geometry import euler_zyx_to_matrix

CAMERA = "02"
CAMERA_HEIGHT = 1.65


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
    T[:, :3, :3] = euler_zyx_to_matrix(yaw, pitch, roll)
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
        rotation = euler_zyx_to_matrix(np.concatenate([self.static.yaw, self.dynamic_yaw[frame]]))
        table = np.concatenate(
            [
                np.concatenate([self.static.centre, self.dynamic_centre[frame]]),
                rotation[:, :2, 0],  # cos yaw, sin yaw
                attrs.half,
                attrs.texel[:, None],
                attrs.offset,
                attrs.tint,
                attrs.texture[:, None],
            ],
            1,
        )
        return FrameBoxes(
            torch.as_tensor(table, dtype=torch.float32), torch.as_tensor(rotation, dtype=torch.float32)
        )


@dataclass
class FrameBoxes:
    """The boxes of one frame: a float32 table, so a per-hit lookup is a single gather, and their rotations.

    Table columns: centre (3), cos yaw, sin yaw, half extents (3), texel (1), texture offset (2), tint (3),
    texture slot (1).
    """

    table: torch.Tensor  # (B, 15)
    rotation: torch.Tensor  # (B, 3, 3) world_from_box

    def __post_init__(self) -> None:
        self.columns = self.table.T.contiguous()  # (15, B): per-hit lookups give contiguous rows

    def __len__(self) -> int:
        return self.table.shape[0]

    @property
    def centre(self) -> torch.Tensor:
        return self.table[:, 0:3]

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
                    boxes.add(ground + euler_zyx_to_matrix(yaw) @ offset, half, yaw, tex)
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
        R = euler_zyx_to_matrix(yaw)
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
