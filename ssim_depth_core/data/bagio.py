"""Writing camera streams into rosbag2 (MCAP or SQLite3) with ``rosbags``, no ROS installation needed.

Topic and frame names follow the common KITTI-to-bag converters (kitti2bag and its ROS 2 ports): the left
colour camera, optionally its rectified right partner, and optionally the vehicle's odometry on ``/odom``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapReader, decompress
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.rosbag import CAMERA_INFO_TYPE, CHUNK_CRC_OFFSET, IMAGE_TYPE, ODOMETRY_TYPE
from ssim_depth_core.geometry import matrix_to_axis_angle, matrix_to_euler_zyx

KITTI_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
KITTI_CAMERA_INFO_TOPIC = "/kitti/camera_color_left/camera_info"
KITTI_FRAME_ID = "camera_color_left"
KITTI_RIGHT_IMAGE_TOPIC = "/kitti/camera_color_right/image_raw"
KITTI_RIGHT_CAMERA_INFO_TOPIC = "/kitti/camera_color_right/camera_info"
KITTI_RIGHT_FRAME_ID = "camera_color_right"
ODOMETRY_TOPIC = "/odom"
ODOM_FRAME_ID = "odom"  # REP 105: the continuous odometry frame ...
BASE_FRAME_ID = "base_link"  # ... and the vehicle body frame
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
UNKNOWN_COVARIANCE = -1.0  # on a covariance diagonal: no estimate (the convention of sensor_msgs/Imu)


def default_typestore() -> Typestore:
    """Message definitions of ROS 2 Kilted (Image, CameraInfo and Odometry are unchanged since Humble)."""
    return get_typestore(Stores.ROS2_KILTED)


def header(typestore: Typestore, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header with the stamp split into seconds and nanoseconds."""
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    seconds, nanoseconds = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=seconds, nanosec=nanoseconds), frame_id=frame_id)


def image_message(typestore: Typestore, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """sensor_msgs/Image (``rgb8``) of an H x W x 3 uint8 RGB array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    return typestore.types[IMAGE_TYPE](
        header=header(typestore, stamp_ns, frame_id),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


def camera_info_message(
    typestore: Typestore, intrinsics: Intrinsics, stamp_ns: int, frame_id: str, baseline: float = 0.0
) -> Any:
    """sensor_msgs/CameraInfo of a rectified, distortion-free camera.

    ``d`` is five zeros (plumb_bob), ``r`` the identity and ``p = [K | (-fx * baseline, 0, 0)]``: Tx = 0 for
    a monocular or left camera, and for a right camera ``baseline`` metres to the right of the left one, as
    ROS specifies for a rectified stereo pair.
    """
    K = intrinsics.matrix
    RegionOfInterest = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    return typestore.types[CAMERA_INFO_TYPE](
        header=header(typestore, stamp_ns, frame_id),
        height=intrinsics.height,
        width=intrinsics.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.ravel().copy(),
        r=np.eye(3).ravel(),
        p=np.hstack([K, [[-intrinsics.fx * baseline], [0.0], [0.0]]]).ravel(),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def check_pose(pose: np.ndarray, what: str) -> np.ndarray:
    """``pose`` as a float64 4x4 rigid transform; ValueError naming ``what`` when it is not one."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(f"{what}: expected a finite 4x4 pose matrix, got shape {pose.shape}")
    rotation = pose[:3, :3]
    rigid = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6) and np.linalg.det(rotation) > 0
    if not rigid or not np.array_equal(pose[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{what}: not a rigid transform (rotation must be orthonormal, last row 0 0 0 1)")
    return pose


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """A rotation matrix as a unit quaternion (x, y, z, w) with w >= 0, via its z-y-x Euler angles (exact for
    any yaw and roll, pitch strictly between -90 and 90 degrees: every vehicle attitude)."""
    yaw, pitch, roll = (0.5 * float(angle) for angle in matrix_to_euler_zyx(rotation))
    cy, sy, cp, sp, cr, sr = (
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(roll),
        np.sin(roll),
    )
    q = np.array(  # q_z(yaw) * q_y(pitch) * q_x(roll)
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ]
    )
    return q if q[3] >= 0 else -q


def odometry_message(
    typestore: Typestore, pose: np.ndarray, stamp_ns: int, previous: tuple[np.ndarray, int] | None = None
) -> Any:
    """nav_msgs/Odometry of the vehicle pose ``pose`` (4x4, base_link -> odom) at ``stamp_ns``.

    The pose is exact (covariance zero). The twist is the mean velocity since ``previous`` (pose, stamp):
    the relative motion ``previous^-1 @ pose`` divided by the elapsed time, in base_link at the previous stamp
    (a backward difference, as wheel odometry reports it). Without ``previous`` the twist is zero with
    covariance diagonal -1 (unknown).
    """
    pose = check_pose(pose, "odometry")
    T = typestore.types
    linear, angular = np.zeros(3), np.zeros(3)
    twist_covariance = np.diag(np.full(6, UNKNOWN_COVARIANCE)).ravel()
    if previous is not None:
        previous_pose, previous_ns = previous
        elapsed = (int(stamp_ns) - int(previous_ns)) / 1e9
        if elapsed <= 0:
            raise ValueError(
                f"odometry stamps must increase: {int(stamp_ns)} ns follows {int(previous_ns)} ns"
            )
        motion = np.linalg.solve(previous_pose, pose)
        linear, angular = motion[:3, 3] / elapsed, matrix_to_axis_angle(motion[:3, :3]) / elapsed
        twist_covariance = np.zeros(36)
    Vector3 = T["geometry_msgs/msg/Vector3"]
    return T[ODOMETRY_TYPE](
        header=header(typestore, stamp_ns, ODOM_FRAME_ID),
        child_frame_id=BASE_FRAME_ID,
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](*pose[:3, 3].tolist()),
                orientation=T["geometry_msgs/msg/Quaternion"](*quaternion_xyzw(pose[:3, :3]).tolist()),
            ),
            covariance=np.zeros(36),
        ),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](
                linear=Vector3(*linear.tolist()), angular=Vector3(*angular.tolist())
            ),
            covariance=twist_covariance,
        ),
    )


def write_chunk_crcs(path: Path) -> None:
    """Fill in the CRC-32 of every chunk's uncompressed records in the MCAP file ``path``, as ``ros2 bag
    record`` does; rosbags writes 0 (none), so damage inside a chunk would go undetected."""
    storage = McapReader(path)
    storage.open()
    chunks = list(storage.chunks)
    storage.close()
    with path.open("r+b") as file:
        for chunk in chunks:
            # after the CRC: the compression name (uint32 length + bytes), the records' length (uint64)
            file.seek(chunk.chunk_start_offset + CHUNK_CRC_OFFSET + 4 + 4 + len(chunk.compression) + 8)
            data = file.read(chunk.compressed_size)
            records = decompress(data, chunk.compression, chunk.uncompressed_size, 0)
            file.seek(chunk.chunk_start_offset + CHUNK_CRC_OFFSET)
            file.write(struct.pack("<I", zlib.crc32(records)))


def storage_plugin(storage: str) -> StoragePlugin:
    """``"mcap"`` / ``"sqlite3"`` -> the rosbags storage plugin; ValueError naming the choices otherwise."""
    try:
        return STORAGE_PLUGINS[storage]
    except KeyError:
        raise ValueError(
            f"unknown rosbag2 storage '{storage}', expected one of {sorted(STORAGE_PLUGINS)}"
        ) from None


class CameraBagWriter:
    """Writes a camera's images and CameraInfo into a new rosbag2 directory, one pair per frame, optionally
    with the right camera of a rectified stereo pair and the vehicle's odometry.

    Use as a context manager; ``path`` must not exist yet (rosbags creates the bag directory). Receive times
    equal header stamps. MCAP chunks get their CRCs (:func:`write_chunk_crcs`); SQLite3 has none. A topic's
    connection is created when its first message is written, so the bag holds only the topics that were
    used. ``stereo_baseline`` (metres, > 0) enables ``write(..., right_rgb=...)``:
    the right camera (same intrinsics) goes to :data:`KITTI_RIGHT_IMAGE_TOPIC` and
    :data:`KITTI_RIGHT_CAMERA_INFO_TOPIC` with ``P = [K | (-fx * baseline, 0, 0)]``.
    """

    def __init__(
        self,
        path: str | Path,
        intrinsics: Intrinsics,
        storage: str = "mcap",
        image_topic: str = KITTI_IMAGE_TOPIC,
        camera_info_topic: str = KITTI_CAMERA_INFO_TOPIC,
        frame_id: str = KITTI_FRAME_ID,
        typestore: Typestore | None = None,
        stereo_baseline: float | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists; rosbag2 writers need a new directory")
        if stereo_baseline is not None and not (np.isfinite(stereo_baseline) and stereo_baseline > 0):
            raise ValueError(f"stereo_baseline must be a positive number of metres, got {stereo_baseline}")
        self.intrinsics, self.stereo_baseline = intrinsics, stereo_baseline
        self.typestore = typestore or default_typestore()
        self._writer = Writer(
            self.path, version=Writer.VERSION_LATEST, storage_plugin=storage_plugin(storage)
        )
        self._left = (image_topic, camera_info_topic, frame_id)
        self._connections: dict[str, Connection] = {}
        self._previous_odometry: tuple[np.ndarray, int] | None = None
        self._open = False

    def __enter__(self) -> CameraBagWriter:
        self._writer.open()
        self._open = True
        return self

    def _camera_messages(
        self, rgb: np.ndarray, stamp_ns: int, topics: tuple[str, str, str], baseline: float, side: str
    ) -> list[tuple[str, str, Any]]:
        if rgb.shape[:2] != (self.intrinsics.height, self.intrinsics.width):
            raise ValueError(
                f"{side} image is {rgb.shape[1]}x{rgb.shape[0]} but the camera is "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        image_topic, info_topic, frame_id = topics
        return [
            (image_topic, IMAGE_TYPE, image_message(self.typestore, rgb, stamp_ns, frame_id)),
            (
                info_topic,
                CAMERA_INFO_TYPE,
                camera_info_message(self.typestore, self.intrinsics, stamp_ns, frame_id, baseline),
            ),
        ]

    def write(
        self,
        rgb: np.ndarray,
        stamp_ns: int,
        *,
        right_rgb: np.ndarray | None = None,
        odometry: np.ndarray | None = None,
    ) -> None:
        """Append one frame stamped ``stamp_ns``: the image (H x W x 3 uint8 RGB) and its CameraInfo;
        optionally the right camera's image taken at the same time (needs ``stereo_baseline``) and the pose
        of the vehicle (base_link) in the odom frame as a 4x4 matrix (nav_msgs/Odometry on
        :data:`ODOMETRY_TOPIC`, twist as :func:`odometry_message` describes). Every input is checked before
        anything is written."""
        if not self._open:
            raise RuntimeError("CameraBagWriter.write called outside its 'with' block")
        messages = self._camera_messages(rgb, stamp_ns, self._left, 0.0, "left")
        if right_rgb is not None:
            if self.stereo_baseline is None:
                raise ValueError(
                    "right_rgb given but the CameraBagWriter has no stereo_baseline: pass "
                    "stereo_baseline=<metres> to write a stereo pair"
                )
            right = (KITTI_RIGHT_IMAGE_TOPIC, KITTI_RIGHT_CAMERA_INFO_TOPIC, KITTI_RIGHT_FRAME_ID)
            messages += self._camera_messages(right_rgb, stamp_ns, right, self.stereo_baseline, "right")
        if odometry is not None:
            pose = check_pose(odometry, "odometry")
            message = odometry_message(self.typestore, pose, stamp_ns, self._previous_odometry)
            messages.append((ODOMETRY_TOPIC, ODOMETRY_TYPE, message))
            self._previous_odometry = (pose, int(stamp_ns))
        for topic, msgtype, message in messages:
            if topic not in self._connections:
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, typestore=self.typestore
                )
            data = self.typestore.serialize_cdr(message, msgtype)
            self._writer.write(self._connections[topic], int(stamp_ns), data)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.close()
        self._open = False
        for mcap in sorted(self.path.glob("*.mcap")):
            write_chunk_crcs(mcap)
