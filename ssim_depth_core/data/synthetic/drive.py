"""One synthetic drive as a :class:`FrameSequence`: poses, timestamps, odometer, OXTS, frames rendered on
demand (camera 02, and camera 03 as its stereo partner)."""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.odometry import odometer_from_positions
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.data.synthetic.lidar import MAX_GT_DEPTH, render_lidar
from ssim_depth_core.data.synthetic.scene import CAMERA, DriveSpec, StreetScene, build_scene, make_trajectory
from ssim_depth_core.data.synthetic.shading import render_camera
from ssim_depth_core.geometry import euler_zyx_to_matrix

FRAME_RATE = 10.0
STEREO_CAMERA = "03"  # camera 02's rectified stereo partner on the KITTI rig, 0.54 m to its right
FIRST_DATE = datetime(2001, 1, 1)  # the date of seed 0
# Seeds in [0, SEED_LIMIT): one date each, 2001-01-01 to 2010-12-31, before the real KITTI release (2011).
SEED_LIMIT = (datetime(2011, 1, 1) - FIRST_DATE).days


def _date(seed: int) -> datetime:
    """Recording date of a dataset: 2001-01-01 + seed days, one per seed, so datasets of different seeds can
    share a root; never a date of the real KITTI release (2011), so synthetic drives never collide with it.
    ValueError for a seed outside [0, SEED_LIMIT)."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(
            f"synthetic data seed must be in [0, {SEED_LIMIT}) (one recording date per seed, 2001-01-01 to "
            f"2010-12-31), got {seed}"
        )
    return FIRST_DATE + timedelta(days=seed)


@dataclass
class RenderedFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid (sky, beyond MAX_GT_DEPTH)
    ids: np.ndarray  # (H, W) int64: -1 sky, 0 ground, b + 1 box b (see SyntheticDrive.dynamic_ids)


class SyntheticDrive(FrameSequence):
    """One synthetic drive, rendered on demand (deterministic in ``spec``).

    Poses, timestamps, the odometer (camera 02's path length) and OXTS are ready at construction; the scene
    (textures) is built on first render. With ``stereo``, camera 03 is the stereo partner (exact ground truth
    like camera 02); without, it is never rendered.

    Attributes:
        T_world_imu, T_world_cam, T_world_velo: (F, 4, 4) poses in the street frame (T_world_cam: camera 02).
        poses: (F, 4, 4) camera-02-to-world with world = camera 02 at frame 0 (the poses file).
    """

    def __init__(
        self,
        spec: DriveSpec,
        width: int = 416,
        height: int = 128,
        antialias: bool = True,
        stereo: bool = False,
    ) -> None:
        if spec.frames < 2:
            raise ValueError(f"a drive needs at least 2 frames, got {spec.frames}")
        self.spec, self.antialias, self.stereo = spec, antialias, stereo
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
        self.T_world_cam = self.T_world_camera(CAMERA)
        self.T_world_velo = self.T_world_imu @ np.linalg.inv(self.rig.T_velo_imu)
        self.poses = self.camera_poses(CAMERA)
        self.odometer = odometer_from_positions(self.T_world_cam[:, :3, 3])
        if stereo:
            cam0_to_partner, cam0_to_cam = (self.rig.T_cam_cam0(c) for c in (STEREO_CAMERA, CAMERA))
            self.stereo_transform = cam0_to_partner @ np.linalg.inv(cam0_to_cam)
        self._cache: dict[str, tuple[int, RenderedFrame]] = {}  # camera -> its last rendered frame

    def T_world_camera(self, camera: str) -> np.ndarray:
        """(F, 4, 4) poses of rectified camera ``camera`` (a :class:`KittiRig` camera) in the street frame."""
        return self.T_world_imu @ np.linalg.inv(self.rig.T_cam_imu(camera))

    def camera_poses(self, camera: str) -> np.ndarray:
        """(F, 4, 4) camera-to-world poses of ``camera``, world = that camera at frame 0 (its poses file)."""
        T_world_camera = self.T_world_camera(camera)
        return np.linalg.inv(T_world_camera[0]) @ T_world_camera

    @functools.cached_property
    def scene(self) -> StreetScene:
        return build_scene(self._scene_rng, self.spec, self.trajectory, self.road_half_width)

    @property
    def dynamic_ids(self) -> set[int]:
        """Hit ids (see :class:`RenderedFrame`) of the moving boxes."""
        first = len(self.scene.static) + 1
        return set(range(first, first + len(self.scene.dynamic)))

    def render(self, index: int, camera: str = CAMERA) -> RenderedFrame:
        """Image, ground-truth depth and hit ids of frame ``index`` seen by ``camera`` (02, or 03 with
        ``stereo``); each camera's last frame is cached."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")
        if camera not in (CAMERA, STEREO_CAMERA) or (camera == STEREO_CAMERA and not self.stereo):
            cameras = f"{CAMERA} or {STEREO_CAMERA}" if self.stereo else f"{CAMERA} (stereo is off)"
            raise ValueError(f"{self.name}: no camera '{camera}', expected {cameras}")
        cached = self._cache.get(camera)
        if cached is None or cached[0] != index:
            T_world_cam = self.T_world_camera(camera)[index]
            rgb, depth, ids = render_camera(self.scene, index, T_world_cam, self.intrinsics, self.antialias)
            depth = np.where(np.isfinite(depth) & (depth <= MAX_GT_DEPTH), depth, 0).astype(np.float32)
            frame = RenderedFrame((rgb * 255 + 0.5).astype(np.uint8), depth, ids)
            cached = self._cache[camera] = index, frame
        return cached[1]

    def image(self, index: int) -> np.ndarray:
        return self.render(index).rgb

    def depth(self, index: int) -> np.ndarray:
        return self.render(index).depth

    def pose(self, index: int) -> np.ndarray:
        return self.poses[index].copy()

    def stereo_image(self, index: int) -> np.ndarray:
        if not self.stereo:
            return super().stereo_image(index)
        return self.render(index, STEREO_CAMERA).rgb

    def scan(self, index: int) -> np.ndarray:
        """Velodyne scan of frame ``index``: (N, 4) float32 in the velodyne frame."""
        return render_lidar(self.scene, index, self.T_world_velo[index])

    def oxts(self) -> np.ndarray:
        """(F, 30) OXTS packets; the street runs along a random compass heading near Karlsruhe."""
        rng = np.random.default_rng([self.spec.seed, self.spec.index, 1])
        T_enu_world = kl.rigid(euler_zyx_to_matrix(rng.uniform(-np.pi, np.pi)), (0.0, 0.0, 0.0))
        lat0, lon0 = round(49.0 + rng.uniform(-0.02, 0.02), 10), round(8.4 + rng.uniform(-0.03, 0.03), 10)
        T_enu_imu = T_enu_world @ self.T_world_imu
        T_enu_imu[:, :3, 3] -= T_enu_imu[0, :3, 3]
        return kl.oxts_packets(T_enu_imu, 1.0 / FRAME_RATE, lat0, lon0, 115.0 + rng.uniform(-5, 5))
