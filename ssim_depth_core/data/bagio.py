"""Writing camera streams into rosbag2 (MCAP or SQLite3) with ``rosbags``, no ROS installation needed.

Topic and frame names follow the common KITTI-to-bag converters (kitti2bag and its ROS 2 ports).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ssim_depth_core.camera import Intrinsics

KITTI_IMAGE_TOPIC = "/kitti/camera_color_left/image_raw"
KITTI_CAMERA_INFO_TOPIC = "/kitti/camera_color_left/camera_info"
KITTI_FRAME_ID = "camera_color_left"
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def default_typestore() -> Typestore:
    """Message definitions of ROS 2 Kilted (Image and CameraInfo are unchanged since Humble)."""
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


def camera_info_message(typestore: Typestore, intrinsics: Intrinsics, stamp_ns: int, frame_id: str) -> Any:
    """sensor_msgs/CameraInfo of a rectified, distortion-free monocular camera.

    ``d`` is five zeros (plumb_bob), ``r`` the identity and ``p = [K | 0]`` (Tx = Ty = 0, as ROS specifies
    for a monocular or left camera).
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
        p=np.hstack([K, np.zeros((3, 1))]).ravel(),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def storage_plugin(storage: str) -> StoragePlugin:
    """``"mcap"`` / ``"sqlite3"`` -> the rosbags storage plugin; ValueError naming the choices otherwise."""
    try:
        return STORAGE_PLUGINS[storage]
    except KeyError:
        raise ValueError(
            f"unknown rosbag2 storage '{storage}', expected one of {sorted(STORAGE_PLUGINS)}"
        ) from None


class CameraBagWriter:
    """Writes one camera's images and CameraInfo into a new rosbag2 directory, one pair per frame.

    Use as a context manager; ``path`` must not exist yet (rosbags creates the bag directory).
    Receive times equal header stamps.
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
    ) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists; rosbag2 writers need a new directory")
        self.intrinsics, self.frame_id = intrinsics, frame_id
        self.typestore = typestore or default_typestore()
        self._writer = Writer(
            self.path, version=Writer.VERSION_LATEST, storage_plugin=storage_plugin(storage)
        )
        self._topics = (image_topic, camera_info_topic)
        self._image = self._info = None

    def __enter__(self) -> CameraBagWriter:
        self._writer.open()
        image_topic, info_topic = self._topics
        self._image = self._writer.add_connection(image_topic, IMAGE_TYPE, typestore=self.typestore)
        self._info = self._writer.add_connection(info_topic, CAMERA_INFO_TYPE, typestore=self.typestore)
        return self

    def write(self, rgb: np.ndarray, stamp_ns: int) -> None:
        """Append one frame (H x W x 3 uint8 RGB) and its CameraInfo, both stamped ``stamp_ns``."""
        if self._image is None:
            raise RuntimeError("CameraBagWriter.write called outside its 'with' block")
        if rgb.shape[:2] != (self.intrinsics.height, self.intrinsics.width):
            raise ValueError(
                f"image is {rgb.shape[1]}x{rgb.shape[0]} but the camera is "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        serialize = self.typestore.serialize_cdr
        image = image_message(self.typestore, rgb, stamp_ns, self.frame_id)
        info = camera_info_message(self.typestore, self.intrinsics, stamp_ns, self.frame_id)
        self._writer.write(self._image, int(stamp_ns), serialize(image, IMAGE_TYPE))
        self._writer.write(self._info, int(stamp_ns), serialize(info, CAMERA_INFO_TYPE))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.close()
        self._image = self._info = None
