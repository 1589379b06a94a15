"""Writers for the KITTI raw layout, so drives we make are read by the same tools as the real release.

Layout (per https://www.cvlibs.net/datasets/kitti/raw_data.php and the devkit's ``dataformat.txt``)::

    <root>/<YYYY_MM_DD>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <root>/<YYYY_MM_DD>/<YYYY_MM_DD>_drive_<NNNN>_sync/
        image_02/data/%010d.png, image_02/timestamps.txt (and image_03/, its stereo partner, when written)
        oxts/data/%010d.txt (30 fields), oxts/timestamps.txt
        velodyne_points/data/%010d.bin (float32 x y z reflectance), timestamps{,_start,_end}.txt
        proj_depth/groundtruth/image_0x/%010d.png (depth benchmark: uint16, metres * 256, 0 = invalid)
        poses_cam_0x.txt (KITTI odometry format: 3x4 camera-to-world per line, world = that camera at frame 0)

Frames: OXTS/IMU x forward, y left, z up; velodyne the same; cameras x right, y down, z forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.geometry import euler_zyx_to_matrix, matrix_to_axis_angle, matrix_to_euler_zyx

# P_rect_02 of the KITTI raw 2011_09_26 calibration, for 1242 x 375 rectified images.
KITTI_FX, KITTI_FY, KITTI_CX, KITTI_CY = 721.5377, 721.5377, 609.5593, 172.854
KITTI_WIDTH, KITTI_HEIGHT = 1242, 375
EARTH_RADIUS = 6378137.0  # the sphere KITTI's devkit (and pykitti) use for the Mercator projection
OXTS_FIELDS = (
    "lat lon alt roll pitch yaw vn ve vf vl vu ax ay az af al au wx wy wz wf wl wu "
    "pos_accuracy vel_accuracy navstat numsats posmode velmode orimode"
).split()
GRAVITY = 9.81


def kitti_intrinsics(width: int, height: int) -> Intrinsics:
    """The KITTI colour camera's rectified intrinsics resized to ``width`` x ``height`` (focal ~ 0.58 W)."""
    return Intrinsics(KITTI_FX, KITTI_FY, KITTI_CX, KITTI_CY, KITTI_WIDTH, KITTI_HEIGHT).scaled(width, height)


def rigid(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation."""
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = translation
    return transform


@dataclass(frozen=True)
class KittiRig:
    """Sensor extrinsics of a KITTI-like car, idealised (axis-aligned) but with the real lever arms.

    ``baselines`` are the x offsets (metres) of each rectified camera's coordinates relative to camera 00,
    i.e. ``P_rect_xx[0, 3] / fx``; camera 02 sits 6 cm left of camera 00, so its offset is +0.06.
    """

    baselines: dict[str, float] = field(
        default_factory=lambda: {"00": 0.0, "01": -0.54, "02": 0.06, "03": -0.48}
    )
    # velodyne -> camera 00: velo x forward, y left, z up -> camera x right, y down, z forward;
    # the velodyne sits 0.27 m behind and 0.08 m above the cameras.
    velo_to_cam_rotation: tuple[float, ...] = (0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0)
    velo_to_cam_translation: tuple[float, float, float] = (0.0, -0.08, -0.27)
    # IMU -> velodyne: the OXTS unit is 0.81 m behind, 0.32 m right of and 0.80 m below the velodyne.
    imu_to_velo_rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    imu_to_velo_translation: tuple[float, float, float] = (-0.81, 0.32, -0.80)

    @property
    def T_cam0_velo(self) -> np.ndarray:
        return rigid(np.reshape(self.velo_to_cam_rotation, (3, 3)), self.velo_to_cam_translation)

    @property
    def T_velo_imu(self) -> np.ndarray:
        return rigid(np.reshape(self.imu_to_velo_rotation, (3, 3)), self.imu_to_velo_translation)

    def T_cam_cam0(self, camera: str = "02") -> np.ndarray:
        """Rectified camera 00 -> rectified camera ``camera`` (R_rect_00 is the identity here)."""
        return rigid(np.eye(3), (self.baselines[camera], 0.0, 0.0))

    def T_cam_velo(self, camera: str = "02") -> np.ndarray:
        return self.T_cam_cam0(camera) @ self.T_cam0_velo

    def T_cam_imu(self, camera: str = "02") -> np.ndarray:
        return self.T_cam_velo(camera) @ self.T_velo_imu


def drive_folder_name(date: str, drive: int) -> str:
    """``2011_09_26``, 1 -> ``2011_09_26_drive_0001_sync``."""
    return f"{date}_drive_{drive:04d}_sync"


def format_timestamp(start: datetime, offset_ns: int) -> str:
    """KITTI timestamp text ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn`` of ``start + offset_ns``."""
    base_ns = start.microsecond * 1000 + int(offset_ns)
    moment = start.replace(microsecond=0) + timedelta(seconds=base_ns // 1_000_000_000)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{base_ns % 1_000_000_000:09d}"


def write_timestamps(path: Path, start: datetime, offsets_ns: Iterable[int]) -> None:
    """One KITTI timestamp per line; every line ends with a newline (pykitti strips 4 characters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_timestamp(start, t) + "\n" for t in offsets_ns))


def _values(values: Iterable[float]) -> str:
    return " ".join(f"{float(v):.9e}" for v in values)


def _calib_time(moment: datetime) -> str:
    return moment.strftime("%d-%b-%Y %H:%M:%S")


def write_calib_cam_to_cam(path: Path, intrinsics: Intrinsics, rig: KittiRig, calib_time: datetime) -> None:
    """``calib_cam_to_cam.txt`` for cameras 00..03: rectified, distortion-free, all ``intrinsics``."""
    K = intrinsics.matrix
    size = (intrinsics.width, intrinsics.height)
    lines = [f"calib_time: {_calib_time(calib_time)}", f"corner_dist: {_values([0.0995])}"]
    for camera, baseline in sorted(rig.baselines.items()):
        P = np.hstack([K, [[K[0, 0] * baseline], [0.0], [0.0]]])
        lines += [
            f"S_{camera}: {_values(size)}",
            f"K_{camera}: {_values(K.ravel())}",
            f"D_{camera}: {_values(np.zeros(5))}",
            f"R_{camera}: {_values(np.eye(3).ravel())}",
            f"T_{camera}: {_values([baseline, 0.0, 0.0])}",
            f"S_rect_{camera}: {_values(size)}",
            f"R_rect_{camera}: {_values(np.eye(3).ravel())}",
            f"P_rect_{camera}: {_values(P.ravel())}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_calib_velo_to_cam(path: Path, rig: KittiRig, calib_time: datetime) -> None:
    lines = [
        f"calib_time: {_calib_time(calib_time)}",
        f"R: {_values(rig.velo_to_cam_rotation)}",
        f"T: {_values(rig.velo_to_cam_translation)}",
        f"delta_f: {_values([0.0, 0.0])}",
        f"delta_c: {_values([0.0, 0.0])}",
    ]
    path.write_text("\n".join(lines) + "\n")


def write_calib_imu_to_velo(path: Path, rig: KittiRig, calib_time: datetime) -> None:
    lines = [
        f"calib_time: {_calib_time(calib_time)}",
        f"R: {_values(rig.imu_to_velo_rotation)}",
        f"T: {_values(rig.imu_to_velo_translation)}",
    ]
    path.write_text("\n".join(lines) + "\n")


def enu_to_latlon(
    east: np.ndarray, north: np.ndarray, lat0: float, lon0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude (degrees) whose KITTI-devkit Mercator coordinates, taken relative to those of
    (lat0, lon0) with the scale cos(lat0), are (east, north) metres.

    The devkit (and pykitti) map a packet to ``x = s * lon * pi * R / 180``,
    ``y = s * R * log(tan((90 + lat) * pi / 360))`` with ``s = cos(first packet's lat)``; this inverts it.
    """
    scale = np.cos(np.deg2rad(lat0))
    x0 = scale * lon0 * np.pi * EARTH_RADIUS / 180.0
    y0 = scale * EARTH_RADIUS * np.log(np.tan((90.0 + lat0) * np.pi / 360.0))
    lon = (x0 + east) * 180.0 / (scale * np.pi * EARTH_RADIUS)
    lat = np.arctan(np.exp((y0 + north) / (scale * EARTH_RADIUS))) * 360.0 / np.pi - 90.0
    return lat, lon


def oxts_packets(T_enu_imu: np.ndarray, dt: float, lat0: float, lon0: float, alt0: float) -> np.ndarray:
    """OXTS packets (N, 30) for IMU poses in a local East-North-Up frame sampled every ``dt`` seconds.

    Position 0 of the ENU frame is (lat0, lon0, alt0). Velocities, accelerations (specific force, so a car at
    rest reads +g up) and angular rates are central finite differences of the poses (one-sided at the ends);
    ``*f/l/u`` components are in the level, heading-aligned frame, ``x/y/z`` in the IMU's own frame.
    """
    n = len(T_enu_imu)
    if n < 2:
        raise ValueError(f"need at least 2 poses to derive OXTS velocities, got {n}")
    R, p = T_enu_imu[:, :3, :3], T_enu_imu[:, :3, 3]
    lat, lon = enu_to_latlon(p[:, 0], p[:, 1], lat0, lon0)
    yaw, pitch, roll = matrix_to_euler_zyx(R)

    velocity = np.gradient(p, dt, axis=0)
    acceleration = np.gradient(velocity, dt, axis=0)
    specific_force = acceleration + np.array([0.0, 0.0, GRAVITY])
    prev, nxt = np.maximum(np.arange(n) - 1, 0), np.minimum(np.arange(n) + 1, n - 1)
    steps = (nxt - prev)[:, None] * dt
    omega_body = matrix_to_axis_angle(np.swapaxes(R[prev], -1, -2) @ R[nxt]) / steps
    heading_T = np.swapaxes(euler_zyx_to_matrix(yaw), -1, -2)

    def level(v: np.ndarray) -> np.ndarray:
        return np.einsum("nij,nj->ni", heading_T, v)

    def body(v: np.ndarray) -> np.ndarray:
        return np.einsum("nji,nj->ni", R, v)

    omega_enu = np.einsum("nij,nj->ni", R, omega_body)
    packets = np.column_stack(
        [
            lat,
            lon,
            alt0 + p[:, 2],
            roll,
            pitch,
            yaw,
            velocity[:, 1],
            velocity[:, 0],
            level(velocity),
            body(specific_force),
            level(specific_force),
            omega_body,
            level(omega_enu),
            np.full(n, 0.35),
            np.full(n, 0.03),  # pos_accuracy (m), vel_accuracy (m/s)
            np.tile([4, 10, 4, 4, 0], (n, 1)),  # navstat, numsats, posmode, velmode, orimode
        ]
    )
    return packets


def write_oxts(directory: Path, packets: np.ndarray) -> None:
    """``oxts/data/%010d.txt``: one line of 30 space-separated fields per frame (25 floats, 5 integers)."""
    if packets.ndim != 2 or packets.shape[1] != len(OXTS_FIELDS):
        raise ValueError(f"OXTS packets must be (N, {len(OXTS_FIELDS)}), got {packets.shape}")
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    for index, packet in enumerate(packets):
        floats = [f"{v:.14g}" for v in packet[:3]] + [f"{v:.10g}" for v in packet[3:25]]
        ints = [str(int(v)) for v in packet[25:]]
        (data / f"{index:010d}.txt").write_text(" ".join(floats + ints) + "\n")


def write_velodyne(path: Path, points: np.ndarray) -> None:
    """``velodyne_points/data/%010d.bin``: (N, 4) float32 x, y, z, reflectance."""
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"velodyne points must be (N, 4), got {points.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(points, dtype=np.float32).tofile(path)


def write_poses(path: Path, poses: np.ndarray) -> None:
    """KITTI odometry pose file: the first 3 rows of each 4x4 camera-to-world matrix, row-major, per line."""
    path.write_text("".join(" ".join(f"{v:.9e}" for v in pose[:3].ravel()) + "\n" for pose in poses))


def write_split(path: Path, entries: Iterable[tuple[str, int]], side: str = "l") -> None:
    """Monodepth-style split file: ``<date>/<drive_folder> <frame_index> <side>`` per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{drive} {index} {side}\n" for drive, index in entries))
