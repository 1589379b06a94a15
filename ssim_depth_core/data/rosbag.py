"""rosbag2 recordings (MCAP or SQLite3; a bag directory or a single storage file) as frame sequences.

Indexing: the constructor reads the image topic once to learn each message's header stamp and keeps only
(receive time, rank among messages with that receive time) per frame -- a few int64 a frame, never pixels.
``image(i)`` fetches that one message again through the storage's time index (the SQLite timestamp index,
MCAP chunk indexes), so memory stays flat however long the bag is. The open
reader is per process: the sequence pickles without it and reopens lazily, so DataLoader workers (fork or
spawn) each get their own. An MCAP file without chunk indexes (e.g. a recording that was killed) is scanned
on every access: slow; re-index it with ``ros2 bag reindex`` or ``mcap recover``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.imaging import FrameError, check_pixel_count, decode_image

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
STORAGE_SUFFIXES = (".mcap", ".db3")
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}  # supported Image encodings


def _storage_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


def is_rosbag(path: str | Path) -> bool:
    """A ``.mcap``/``.db3`` file, or a directory with ``metadata.yaml`` or storage files in it."""
    path = Path(path)
    if path.is_file():
        return path.suffix in STORAGE_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(_storage_files(path)))


def reader_path(path: Path) -> Path:
    """What rosbags opens: the bag directory when it has metadata.yaml, else the single storage file."""
    if not is_rosbag(path):
        raise ValueError(f"{path}: not a rosbag2 (expected a .mcap/.db3 file or a bag directory)")
    if path.is_file() or (path / "metadata.yaml").is_file():
        return path
    files = _storage_files(path)
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise ValueError(
            f"{path}: several storage files ({names}) and no metadata.yaml; open them one by one"
        )
    return files[0]


def open_reader(path: Path) -> AnyReader:
    # Bags recorded before ROS 2 Iron (SQLite3) carry no message definitions: fall back to the stock types.
    reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
    try:
        reader.open()
    except AnyReaderError as err:
        raise ValueError(f"{path}: cannot open rosbag2: {err}") from None
    return reader


def _topic_list(topics: dict[str, Any], msgtypes: set[str]) -> str:
    found = [
        f"{name} ({info.msgtype}, {info.msgcount} msgs)"
        for name, info in topics.items()
        if info.msgtype in msgtypes
    ]
    return ", ".join(found) or "none"


def select_image_topic(topics: dict[str, Any], requested: str | None, bag: Path) -> str:
    """The requested image topic (checked), or the bag's only Image/CompressedImage topic."""
    image_types = {IMAGE_TYPE, COMPRESSED_TYPE}
    if requested:
        if requested not in topics or topics[requested].msgtype not in image_types:
            raise ValueError(
                f"{bag}: image topic '{requested}' not found or not an image; image topics: "
                f"{_topic_list(topics, image_types)}"
            )
        return requested
    candidates = [name for name, info in topics.items() if info.msgtype in image_types]
    if len(candidates) != 1:
        raise ValueError(
            f"{bag}: {len(candidates)} image topics ({_topic_list(topics, image_types)}); "
            "choose one with --image-topic TOPIC (config data.image_topic)"
        )
    return candidates[0]


def select_camera_info_topic(
    topics: dict[str, Any], requested: str | None, image_topic: str, bag: Path
) -> str | None:
    """The requested CameraInfo topic (checked), else the one in the image's namespace or the only one."""
    if requested:
        if requested not in topics or topics[requested].msgtype != CAMERA_INFO_TYPE:
            raise ValueError(
                f"{bag}: CameraInfo topic '{requested}' not found; CameraInfo topics: "
                f"{_topic_list(topics, {CAMERA_INFO_TYPE})}"
            )
        return requested
    candidates = [name for name, info in topics.items() if info.msgtype == CAMERA_INFO_TYPE]
    namespaces = {name: name.rsplit("/", 1)[0] for name in candidates}
    # /cam/camera_info serves /cam/image_raw and /cam/image_raw/compressed: the innermost namespace wins.
    enclosing = sorted(
        (c for c in candidates if image_topic.startswith(namespaces[c] + "/")),
        key=lambda c: len(namespaces[c]),
        reverse=True,
    )
    if enclosing and (len(enclosing) == 1 or len(namespaces[enclosing[0]]) > len(namespaces[enclosing[1]])):
        return enclosing[0]
    if len(candidates) == 1:
        logger.warning(
            "%s: using CameraInfo topic %s for %s (different namespace)", bag, candidates[0], image_topic
        )
        return candidates[0]
    if len(candidates) > 1:
        raise ValueError(
            f"{bag}: cannot tell which CameraInfo topic belongs to {image_topic} "
            f"({_topic_list(topics, {CAMERA_INFO_TYPE})}); choose one with --camera-info-topic "
            "(config data.camera_info_topic)"
        )
    return None


def image_from_message(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """A deserialized sensor_msgs/Image or CompressedImage -> H x W x 3 uint8 RGB; ValueError if malformed.

    ``max_pixels`` bounds the size: an Image by its width x height, a CompressedImage by the size its
    PNG/JPEG header declares, checked before decoding (:func:`ssim_depth_core.imaging.decode_image`).
    """
    if hasattr(msg, "format"):
        return decode_image(msg.data, f"CompressedImage ({msg.format or 'no format'})", max_pixels)
    if max_pixels is not None:
        check_pixel_count(msg.width, msg.height, max_pixels, "size")
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"unsupported encoding '{msg.encoding}' (supported: {', '.join(CHANNELS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * channels
    if step < row:
        raise ValueError(f"step {step} is shorter than width * channels = {row}")
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ValueError(f"data has {data.size} bytes, expected step * height = {step} * {height}")
    pixels = data.reshape(height, step)[:, :row].reshape(height, width, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(pixels[..., :3])


class RosbagSequence(FrameSequence):
    """The frames of one image topic of a rosbag2, ordered by header stamp.

    Intrinsics come from ``intrinsics`` when given (rescaled if it is for another size of the same aspect
    ratio), else from the first message of the CameraInfo topic.
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str | None = None,
        camera_info_topic: str | None = None,
        intrinsics: Intrinsics | None = None,
    ) -> None:
        self.path = Path(path)
        self._bag = reader_path(self.path)
        self._reader: AnyReader | None = None
        self._reader_pid = -1
        reader = open_reader(self._bag)
        try:
            topics = reader.topics
            self.image_topic = select_image_topic(topics, image_topic, self.path)
            self.name = f"{self.path}:{self.image_topic}"
            size = self._index(reader, topics[self.image_topic].connections)
            if intrinsics is None:
                info_topic = select_camera_info_topic(topics, camera_info_topic, self.image_topic, self.path)
                if info_topic is None:
                    raise ValueError(
                        f"{self.path}: no CameraInfo topic for {self.image_topic}; give the intrinsics as "
                        "data.intrinsics=[fx,fy,cx,cy,width,height] (e.g. --set data.intrinsics=[...]) "
                        "or name a CameraInfo topic with data.camera_info_topic"
                    )
                intrinsics = self._camera_info(reader, topics[info_topic].connections, info_topic)
        finally:
            reader.close()
        self.intrinsics = intrinsics.fitted(*size, source=self.name)

    def _index(self, reader: AnyReader, connections: list[Any]) -> tuple[int, int]:
        """Header stamps and lookup keys of every image message; returns the (width, height) of the first."""
        stamps, receive, rank, position = [], [], [], []
        size, previous, same, skipped = None, None, 0, 0
        for number, (connection, timestamp, raw) in enumerate(reader.messages(connections)):
            same = same + 1 if timestamp == previous else 0
            previous = timestamp
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as err:  # any failure to deserialize = one corrupt message, not a corrupt bag
                logger.warning("%s: skipping undecodable message: %s", self._where(number), err)
                skipped += 1
                continue
            if size is None:
                size = self._first_size(msg, number)
            stamps.append(int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec))
            receive.append(timestamp)
            rank.append(same)
            position.append(number)
        if size is None:
            raise ValueError(f"{self.path}: topic {self.image_topic} has no readable image messages")
        stamps_ns = np.asarray(stamps, dtype=np.int64)
        receive_ns = np.asarray(receive, dtype=np.int64)
        if not stamps_ns.any():
            logger.warning("%s: all header stamps are zero; ordering by receive time", self.name)
            stamps_ns = receive_ns
        order = np.lexsort((receive_ns, stamps_ns))
        self.timestamps = stamps_ns[order] / 1e9
        self._receive = receive_ns[order]
        self._rank = np.asarray(rank, dtype=np.int64)[order]
        self._position = np.asarray(position, dtype=np.int64)[order]
        logger.info("%s: %d frames (%d undecodable skipped)", self.name, len(self.timestamps), skipped)
        return size

    def _first_size(self, msg: Any, number: int) -> tuple[int, int] | None:
        """(width, height) of an image message; rejects streams we cannot train on up front (else every frame
        would be skipped one by one). None when a compressed frame does not decode (the next one is tried)."""
        if hasattr(msg, "format"):
            if "compresseddepth" in msg.format.lower():
                raise ValueError(f"{self.name}: a compressedDepth stream, not a colour image topic")
            try:
                height, width = image_from_message(msg).shape[:2]
            except FrameError as err:
                logger.warning("%s: %s", self._where(number), err)
                return None
            return width, height
        if msg.encoding not in CHANNELS:
            raise ValueError(
                f"{self.name}: unsupported Image encoding '{msg.encoding}' (supported: {', '.join(CHANNELS)})"
            )
        return int(msg.width), int(msg.height)

    def _camera_info(self, reader: AnyReader, connections: list[Any], topic: str) -> Intrinsics:
        for connection, _, raw in reader.messages(connections):
            try:
                msg = reader.deserialize(raw, connection.msgtype)
                return Intrinsics.from_camera_info(msg.k, int(msg.width), int(msg.height), msg.p)
            except (AnyReaderError, ValueError) as err:
                raise ValueError(f"{self.path}: CameraInfo on {topic}: {err}") from None
        raise ValueError(f"{self.path}: CameraInfo topic {topic} has no messages")

    def _where(self, number: int) -> str:
        return f"{self.path} topic {self.image_topic} message #{number}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"], state["_reader_pid"] = None, -1
        return state

    def _open(self) -> tuple[AnyReader, list[Any]]:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = open_reader(self._bag)
            self._reader_pid = os.getpid()
        return self._reader, self._reader.topics[self.image_topic].connections

    def close(self) -> None:
        """Close this process's reader (reopened on the next ``image`` call)."""
        if self._reader is not None and self._reader_pid == os.getpid():
            self._reader.close()
        self._reader = None

    def image(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")
        where = f"{self._where(int(self._position[index]))} (stamp {self.timestamps[index]:.9f} s)"
        receive, rank = int(self._receive[index]), int(self._rank[index])
        try:
            reader, connections = self._open()
            found = list(reader.messages(connections, start=receive, stop=receive + 1))
            if rank >= len(found):
                raise ValueError(f"message not found again at receive time {receive} ns")
            connection, _, raw = found[rank]
            return image_from_message(reader.deserialize(raw, connection.msgtype))
        except (AnyReaderError, ValueError) as err:  # FrameError from decoding included: add where it was
            raise FrameError(f"{where}: {err}") from None
