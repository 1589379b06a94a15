"""rosbag2 recordings (MCAP or SQLite3; a bag directory or a single storage file) as frame sequences.

Indexing: the constructor reads the image topic once to learn each message's header stamp and keeps only
(receive time, rank among messages with that receive time) per frame -- a few int64 a frame, never pixels.
``image(i)`` fetches that one message again through the storage's time index (the SQLite timestamp index,
MCAP chunk indexes), so memory stays flat however long the bag is; ``stereo_image(i)`` does the same on the
stereo partner's topic. The open reader is per process: the sequence pickles without it and reopens lazily,
so DataLoader workers (fork or spawn) each get their own. An MCAP file without chunk indexes (e.g. a
recording that was killed) is scanned on every access: slow; re-index it with ``ros2 bag reindex`` or
``mcap recover``.

Damage: rosbags checks an MCAP chunk's CRC (when its writer stored one: ``ros2 bag record`` does, rosbags'
writer does not) as it reads the chunk. When reading the bag fails, each chunk is read alone to find the
damaged ones, which are then left out of every reader of this sequence (their frames skipped and counted, one
warning naming the bag and the chunks' byte offsets); a bag without intact chunks, an unindexed MCAP or a
damaged SQLite3 file (no checksums, no chunks) is a ValueError naming the bag. Header stamps repeated on the
topic keep their first frame only; frames received after a later-stamped one are reordered; both counted.

Odometry (for velocity supervision) comes from one topic: nav_msgs/Odometry or the dynamic transforms on
``/tf`` give positions, TwistStamped / TwistWithCovarianceStamped give speeds; either becomes an odometer
(:mod:`ssim_depth_core.data.odometry`) interpolated to the image stamps.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2.storage_mcap import ChunkInfo, McapReader
from rosbags.typesys import Stores, get_typestore

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.odometry import odometer_at, odometer_from_positions, odometer_from_speeds
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.errors import first_line, yaml_error_in, yaml_error_line
from ssim_depth_core.geometry import axis_angle_to_matrix
from ssim_depth_core.imaging import FrameError, check_pixel_count, decode_image

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
TWIST_TYPE = "geometry_msgs/msg/TwistStamped"
TWIST_COVARIANCE_TYPE = "geometry_msgs/msg/TwistWithCovarianceStamped"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_TOPIC = "/tf"  # the dynamic transforms; auto-detection ignores other TFMessage topics (/tf_static)
ODOMETRY_TYPES = (ODOMETRY_TYPE, TWIST_TYPE, TWIST_COVARIANCE_TYPE, TF_TYPE)
NO_ODOMETRY = "none"  # odometry_topic value: read no odometry
STORAGE_SUFFIXES = (".mcap", ".db3")
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}  # supported Image encodings
ODOMETRY_HINT = (
    "choose one with --odometry-topic TOPIC (config data.odometry_topic), or 'none' for no odometry"
)


# a recorder killed mid-write leaves an MCAP file without its footer, whose complete chunks are still good
TRUNCATED_MCAP_HINT = (
    " (an MCAP file cut short, e.g. by a recorder that was killed: `mcap recover FILE -o FIXED.mcap` "
    "rewrites its complete chunks into a readable file)"
)


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


# MCAP specification, Chunk record: opcode (uint8), record length (uint64), message_start_time,
# message_end_time, uncompressed_size (uint64 each), uncompressed_crc (uint32, CRC-32 of the uncompressed
# records; 0 = none), compression (uint32 length + name), records (uint64 length + bytes).
CHUNK_CRC_OFFSET = 1 + 8 + 3 * 8


class StorageError(ValueError):
    """A rosbag2 storage file cannot be read on (a damaged MCAP chunk or SQLite3 page); names the bag."""


@dataclass(frozen=True)
class DamagedChunk:
    """An MCAP chunk that rosbags cannot read: why, and how many messages of each topic it holds."""

    reason: str
    messages: dict[str, int]


ChunkKey = tuple[str, int]  # (storage file, offset of the chunk record)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def open_reader(path: Path, damaged: Mapping[ChunkKey, DamagedChunk] | None = None) -> AnyReader:
    """An open reader of the bag at ``path``, without the ``damaged`` MCAP chunks; ValueError naming the bag
    when it cannot be opened."""
    try:
        # Bags recorded before ROS 2 Iron (SQLite3) carry no message definitions: the stock types stand in.
        reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
        reader.open()
    except Exception as err:  # a damaged file fails in whichever parser meets it first
        yaml_error = yaml_error_in(err)
        if yaml_error is not None:
            reason = f"metadata.yaml is not YAML ({yaml_error_line(yaml_error)})"
        else:
            reason = f"{type(err).__name__}: {first_line(err)}"
        if "end magic" in reason.lower():
            reason += TRUNCATED_MCAP_HINT
        raise ValueError(f"{path}: cannot open rosbag2: {reason}") from None
    skip_chunks(reader, damaged or {})
    return reader


def skip_chunks(reader: AnyReader, damaged: Mapping[ChunkKey, DamagedChunk]) -> None:
    """Leave the ``damaged`` MCAP chunks out of the chunk index of an open reader: it never reads them.
    ValueError naming the file when all of its chunks are damaged."""
    for storage in _mcap_storages(reader):
        key = str(storage.path)
        intact = [c for c in storage.chunks if (key, c.chunk_start_offset) not in damaged]
        if storage.chunks and not intact:  # without chunks rosbags would scan the file, damage included
            first = damaged[key, storage.chunks[0].chunk_start_offset].reason
            raise ValueError(f"{key}: all {len(storage.chunks)} MCAP chunks are damaged (first: {first})")
        storage.chunks[:] = intact


def read_messages(
    reader: AnyReader, connections: Collection[Connection], bag: Path, **window: int
) -> Iterator[tuple[Connection, int, bytes]]:
    """``reader.messages(connections, **window)``, a failure to read the storage raised as
    :class:`StorageError` naming the bag."""
    try:
        yield from reader.messages(connections, **window)
    except Exception as err:  # decompression, CRC, record structure, SQLite pages: anything the storage hits
        raise StorageError(f"{bag}: damaged storage: {_describe(err)}") from None


def _mcap_storages(reader: AnyReader) -> list[McapReader]:
    """The MCAP storage files of an open reader (a bag directory's, or the file itself)."""
    storages = [getattr(bag.storage, "storages", [bag.storage]) for bag in reader.readers]
    return [storage for group in storages for storage in group if isinstance(storage, McapReader)]


def find_damaged_chunks(reader: AnyReader) -> dict[ChunkKey, DamagedChunk]:
    """The MCAP chunks of ``reader`` that rosbags cannot read (CRC or size mismatch, broken records), each
    read alone through rosbags; a storage without a chunk index (or SQLite3) has none to find."""
    damaged = {}
    for storage in _mcap_storages(reader):
        chunks, topics = list(storage.chunks), {c.id: c.topic for c in storage.connections}
        try:
            for chunk in chunks:
                storage.chunks[:] = [chunk]
                try:
                    for _ in storage.messages(storage.connections):
                        pass
                except Exception as err:  # as in read_messages(): whatever reading the chunk raises
                    counts = {topics.get(c, f"channel {c}"): n for c, n in chunk.channel_count.items()}
                    key = (str(storage.path), chunk.chunk_start_offset)
                    damaged[key] = DamagedChunk(_describe(err), counts)
        finally:
            storage.chunks[:] = chunks
    return damaged


def _chunk_crc(file: BinaryIO, chunk: ChunkInfo) -> int:
    """The uncompressed_crc field of ``chunk`` in the MCAP ``file`` (0: the writer computed none)."""
    file.seek(chunk.chunk_start_offset + CHUNK_CRC_OFFSET)
    return struct.unpack("<I", file.read(4))[0]


def log_chunks_without_crc(reader: AnyReader, bag: Path) -> None:
    """Warn when MCAP chunks of ``reader`` carry no CRC: damage inside them cannot be detected."""
    for storage in _mcap_storages(reader):
        with Path(storage.path).open("rb") as file:
            missing = sum(_chunk_crc(file, chunk) == 0 for chunk in storage.chunks)
        if missing:
            logger.warning(
                "%s: %d of %d MCAP chunks of %s carry no CRC (their writer computed none): damage inside "
                "them goes undetected",
                bag,
                missing,
                len(storage.chunks),
                Path(storage.path).name,
            )


def _topic_list(topics: dict[str, Any], msgtypes: Iterable[str]) -> str:
    msgtypes = set(msgtypes)
    found = [
        f"{name} ({info.msgtype}, {info.msgcount} msgs)"
        for name, info in topics.items()
        if info.msgtype in msgtypes
    ]
    return ", ".join(found) or "none"


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def first_camera_info(reader: AnyReader, topic: str, bag: Path) -> Any:
    """The first CameraInfo message of ``topic``, deserialized; ValueError naming the bag and topic."""
    for connection, _, raw in read_messages(reader, reader.topics[topic].connections, bag):
        try:
            return reader.deserialize(raw, connection.msgtype)
        except Exception as err:  # any failure to deserialize: a corrupt message
            raise ValueError(f"{bag}: CameraInfo on {topic}: cannot deserialize: {err}") from None
    raise ValueError(f"{bag}: CameraInfo topic {topic} has no messages")


def camera_info_intrinsics(msg: Any, topic: str, bag: Path) -> Intrinsics:
    """Intrinsics of a CameraInfo message (P when set, else K); ValueError naming the bag and topic."""
    try:
        return Intrinsics.from_camera_info(msg.k, int(msg.width), int(msg.height), msg.p)
    except ValueError as err:
        raise ValueError(f"{bag}: CameraInfo on {topic}: {err}") from None


def _reference_camera(reader: AnyReader, candidates: list[str], bag: Path) -> str | None:
    """Of two image topics, the one whose CameraInfo P has Tx = 0 while the other's has not (the reference,
    left camera of a rectified stereo pair); None when that does not decide."""
    topics = reader.topics
    if sum(info.msgtype == CAMERA_INFO_TYPE for info in topics.values()) < 2:
        return None
    try:
        infos = [select_camera_info_topic(topics, None, image, bag) for image in candidates]
        if None in infos or infos[0] == infos[1]:
            return None
        tx = [float(first_camera_info(reader, info, bag).p[3]) for info in infos]
    except ValueError:
        return None
    if (tx[0] == 0) == (tx[1] == 0):
        return None
    reference = candidates[0] if tx[0] == 0 else candidates[1]
    logger.info(
        "%s: two image topics; using %s, the stereo pair's reference camera (P Tx = 0)", bag, reference
    )
    return reference


def select_image_topic(
    topics: dict[str, Any], requested: str | None, bag: Path, reader: AnyReader | None = None
) -> str:
    """The requested image topic (checked), or the bag's only Image/CompressedImage topic.

    With ``reader`` given, a bag with exactly two image topics selects the reference camera of a stereo pair
    (:func:`_reference_camera`).
    """
    image_types = {IMAGE_TYPE, COMPRESSED_TYPE}
    if requested:
        return _checked_topic(topics, requested, image_types, "image", bag)
    candidates = [name for name, info in topics.items() if info.msgtype in image_types]
    if len(candidates) == 2 and reader is not None:
        reference = _reference_camera(reader, candidates, bag)
        if reference is not None:
            return reference
    if len(candidates) != 1:
        raise ValueError(
            f"{bag}: {len(candidates)} image topics ({_topic_list(topics, image_types)}); "
            "choose one with --image-topic TOPIC (in a training config: data.image_topic)"
        )
    return candidates[0]


def select_stereo_topic(topics: dict[str, Any], requested: str | None, image_topic: str, bag: Path) -> str:
    """The stereo partner's image topic: the requested one (checked), else the other of exactly two."""
    image_types = {IMAGE_TYPE, COMPRESSED_TYPE}
    if requested:
        if (
            requested not in topics
            or topics[requested].msgtype not in image_types
            or requested == image_topic
        ):
            raise ValueError(
                f"{bag}: stereo image topic '{requested}' not found, not an image or the camera itself "
                f"({image_topic}); image topics: {_topic_list(topics, image_types)}"
            )
        return requested
    others = [name for name, info in topics.items() if info.msgtype in image_types and name != image_topic]
    if len(others) != 1:
        raise ValueError(
            f"{bag}: cannot tell the stereo partner of {image_topic} among {len(others)} other image topics "
            f"({_topic_list({n: topics[n] for n in others}, image_types)}); choose one with "
            "--set data.stereo_image_topic=TOPIC"
        )
    return others[0]


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


def _checked_topic(topics: dict[str, Any], requested: str, types: Iterable[str], kind: str, bag: Path) -> str:
    """``requested`` if the bag has it with one of ``types``, else ValueError listing the bag's ``kind``
    topics."""
    if requested not in topics or topics[requested].msgtype not in types:
        raise ValueError(
            f"{bag}: {kind} topic '{requested}' not found or not of a type {', '.join(sorted(types))}; "
            f"{kind} topics: {_topic_list(topics, types)}"
        )
    return requested


def select_odometry_topic(topics: dict[str, Any], requested: str | None, bag: Path) -> str | None:
    """The odometry topic: none for ``"none"``, the requested one (checked), else the bag's only
    Odometry / TwistStamped / TwistWithCovarianceStamped topic or ``/tf`` (None when it has none)."""
    if requested == NO_ODOMETRY:
        return None
    if requested:
        return _checked_topic(topics, requested, ODOMETRY_TYPES, "odometry", bag)
    candidates = [
        name
        for name, info in topics.items()
        if info.msgtype in ODOMETRY_TYPES and (info.msgtype != TF_TYPE or name == TF_TOPIC)
    ]
    if len(candidates) > 1:
        listed = _topic_list({name: topics[name] for name in candidates}, ODOMETRY_TYPES)
        raise ValueError(f"{bag}: several odometry topics ({listed}); {ODOMETRY_HINT}")
    return candidates[0] if candidates else None


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


def _read_rows(
    reader: AnyReader, topic: str, bag: Path, extract: Callable[[Any], Iterable[tuple]]
) -> list[tuple]:
    """``extract(msg)`` rows of every message of ``topic``; undecodable messages are skipped and counted."""
    rows: list[tuple] = []
    skipped, first_error = 0, None
    for connection, _, raw in read_messages(reader, reader.topics[topic].connections, bag):
        try:
            msg = reader.deserialize(raw, connection.msgtype)
        except Exception as err:  # any failure to deserialize = one corrupt message, not a corrupt bag
            skipped, first_error = skipped + 1, first_error or err
            continue
        rows.extend(extract(msg))
    if skipped:
        logger.warning(
            "%s topic %s: skipped %d undecodable messages (first: %s)", bag, topic, skipped, first_error
        )
    return rows


def _clean_samples(stamps: np.ndarray, values: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Samples sorted by stamp, without non-finite values or repeated stamps (first kept), each counted."""
    finite = np.all(np.isfinite(values.reshape(len(values), -1)), axis=1)
    if not finite.all():
        logger.warning("%s: dropped %d samples with non-finite values", where, int((~finite).sum()))
    stamps, values = stamps[finite], values[finite]
    order = np.argsort(stamps, kind="stable")
    stamps, values = stamps[order], values[order]
    unique = np.concatenate([[True], np.diff(stamps) != 0])
    if not unique.all():
        logger.warning("%s: dropped %d samples with a repeated stamp", where, int((~unique).sum()))
    return stamps[unique], values[unique]


def rotation_matrices(quaternions: np.ndarray) -> np.ndarray:
    """(M, 4) quaternions (x, y, z, w; normalised here) -> (M, 3, 3), through their rotation vectors and
    :func:`ssim_depth_core.geometry.axis_angle_to_matrix`."""
    q = quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)
    sine, cosine = np.linalg.norm(q[:, :3], axis=1, keepdims=True), q[:, 3:]  # of half the angle
    small = sine < 1e-12  # then |cosine| is 1: angle / sine -> 2 / cosine
    scale = np.where(
        small, 2.0 / np.where(small, cosine, 1.0), 2.0 * np.arctan2(sine, cosine) / np.where(small, 1.0, sine)
    )
    return axis_angle_to_matrix(torch.from_numpy(q[:, :3] * scale)).numpy()


def _transform_rows(msg: Any) -> Iterable[tuple]:
    for t in msg.transforms:
        tr, rot = t.transform.translation, t.transform.rotation
        pair = (t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/"))
        yield pair, stamp_ns(t.header), (tr.x, tr.y, tr.z, rot.x, rot.y, rot.z, rot.w)


def _chain(pairs: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """``pairs`` ordered root -> ... -> leaf when they form one unbranched chain, else None."""
    children = dict(pairs)
    if len(children) != len(pairs) or len({child for _, child in pairs}) != len(pairs):
        return None
    roots = set(children) - {child for _, child in pairs}
    if len(roots) != 1:
        return None
    ordered, frame = [], roots.pop()
    while frame in children:
        ordered.append((frame, children[frame]))
        frame = children[frame]
    return ordered if len(ordered) == len(pairs) else None


def _tf_positions(rows: list[tuple], where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Stamps (ns) and positions of the moving frame on a TF topic: the only dynamic (parent, child) pair,
    or the composition of a chain of dynamic pairs sharing stamps; None when nothing moves."""
    by_pair: dict[tuple[str, str], list[tuple]] = {}
    for pair, stamp, values in rows:
        by_pair.setdefault(pair, []).append((stamp, values))
    links = {}
    for pair, samples in by_pair.items():
        stamps = np.array([s for s, _ in samples], dtype=np.int64)
        values = np.array([v for _, v in samples], dtype=np.float64)
        # cleaned first: one non-finite sample would make the range NaN and a moving link look static
        stamps, values = _clean_samples(stamps, values, f"{where} {pair[0]} -> {pair[1]}")
        if len(values) and np.ptp(values, axis=0).max() > 1e-9:  # the transform changes: dynamic
            links[pair] = stamps, values
    if not links:
        logger.warning("%s: no transform changes over the recording; no odometry", where)
        return None
    chain = _chain(list(links))
    listed = ", ".join(f"{parent} -> {child}" for parent, child in links)
    if chain is None:
        raise ValueError(
            f"{where}: {len(links)} moving transforms ({listed}) that do not form one chain; record the "
            f"vehicle's motion as nav_msgs/Odometry and {ODOMETRY_HINT}"
        )
    stamps = links[chain[0]][0]
    if any(not np.array_equal(links[pair][0], stamps) for pair in chain):
        raise ValueError(
            f"{where}: the moving transforms {listed} are stamped at different times and cannot be composed; "
            f"record the vehicle's motion as nav_msgs/Odometry and {ODOMETRY_HINT}"
        )
    pose = np.broadcast_to(np.eye(4), (len(stamps), 4, 4))
    for pair in chain:
        values = links[pair][1]
        link = np.tile(np.eye(4), (len(stamps), 1, 1))
        link[:, :3, :3], link[:, :3, 3] = rotation_matrices(values[:, 3:]), values[:, :3]
        pose = pose @ link
    if len(chain) > 1:
        logger.info("%s: composed the moving transforms %s", where, listed)
    return stamps, pose[:, :3, 3]


def _odometry_row(msg: Any) -> Iterable[tuple]:
    p = msg.pose.pose.position
    return [(stamp_ns(msg.header), p.x, p.y, p.z)]


def _twist_row(msg: Any) -> Iterable[tuple]:
    twist = msg.twist.twist if hasattr(msg.twist, "covariance") else msg.twist  # ...WithCovarianceStamped
    return [(stamp_ns(msg.header), float(np.linalg.norm([twist.linear.x, twist.linear.y, twist.linear.z])))]


def read_odometer(reader: AnyReader, topic: str, bag: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(int64 header stamps in ns, odometer in metres) of an odometry topic, in stamp order; None when it
    carries no usable motion. Odometry and /tf give positions (path length), twists speeds (integrated)."""
    msgtype, where = reader.topics[topic].msgtype, f"{bag} topic {topic}"
    if msgtype == TF_TYPE:
        found = _tf_positions(_read_rows(reader, topic, bag, _transform_rows), where)
        if found is None:
            return None
        stamps, values = found
    else:
        positions = msgtype == ODOMETRY_TYPE
        rows = _read_rows(reader, topic, bag, _odometry_row if positions else _twist_row)
        stamps = np.array([row[0] for row in rows], dtype=np.int64)  # int64: float64 would round the ns
        values = np.array([row[1:] for row in rows], dtype=np.float64).reshape(
            len(rows), 3 if positions else 1
        )
        stamps, values = _clean_samples(stamps, values, where)
    if len(stamps) == 0:
        logger.warning("%s: no usable odometry samples", where)
        return None
    if values.shape[1] == 3:
        return stamps, odometer_from_positions(values)
    return stamps, odometer_from_speeds((stamps - stamps[0]) / 1e9, values[:, 0])


@dataclass(frozen=True)
class TopicFrames:
    """The messages of one image topic in header-stamp order: what is needed to fetch each one again."""

    topic: str
    stamps_ns: np.ndarray  # (N,) int64 header stamps (receive times when every header stamp is zero)
    receive_ns: np.ndarray  # (N,) int64 receive times: the storage index key
    rank: np.ndarray  # (N,) int64 rank among the topic's messages with the same receive time
    position: np.ndarray  # (N,) int64 message number in the topic (for messages)
    size: tuple[int, int]  # (width, height) of the first frame


def pair_by_stamp(stamps_ns: np.ndarray, partner_ns: np.ndarray) -> np.ndarray:
    """For each of ``stamps_ns`` (sorted), the index of the ``partner_ns`` (sorted) stamp equal to it or
    nearest within a quarter of the median frame period of ``stamps_ns``; -1 where there is none."""
    if len(partner_ns) == 0:
        return np.full(len(stamps_ns), -1, dtype=np.int64)
    tolerance = np.median(np.diff(stamps_ns)) / 4 if len(stamps_ns) > 1 else 0
    after = np.searchsorted(partner_ns, stamps_ns).clip(0, len(partner_ns) - 1)
    before = (after - 1).clip(0)
    nearest = np.where(
        np.abs(partner_ns[before] - stamps_ns) <= np.abs(partner_ns[after] - stamps_ns), before, after
    )
    return np.where(np.abs(partner_ns[nearest] - stamps_ns) <= tolerance, nearest, -1)


def _rectified_offset(msg: Any, topic: str, bag: Path) -> np.ndarray:
    """(Tx / fx, Ty / fy) of a rectified CameraInfo's P: minus the camera's position in the stereo pair's
    reference camera frame (ROS: Tx = -fx * baseline for a right camera)."""
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    if not (p[0, 0] > 0 and p[1, 1] > 0):
        raise ValueError(
            f"{bag}: CameraInfo on {topic} has no rectified projection P (fx = {p[0, 0]}, fy = {p[1, 1]}); "
            "stereo needs the P of both cameras for the baseline"
        )
    return np.array([p[0, 3] / p[0, 0], p[1, 3] / p[1, 1]])


class RosbagSequence(FrameSequence):
    """The frames of one image topic of a rosbag2, ordered by header stamp.

    Intrinsics come from ``intrinsics`` when given (rescaled if it is for another size of the same aspect
    ratio), else from the first message of the CameraInfo topic. ``odometry_topic``: None or "" detects the
    odometry topic (:func:`select_odometry_topic`), "none" reads none. ``stereo``: also index the rectified
    stereo partner (``stereo_image_topic``, or the other of exactly two image topics), whose CameraInfo P
    gives :attr:`stereo_transform`; its frames are paired by header stamp.
    """

    def __init__(
        self,
        path: str | Path,
        image_topic: str | None = None,
        camera_info_topic: str | None = None,
        intrinsics: Intrinsics | None = None,
        *,
        odometry_topic: str | None = None,
        stereo: bool = False,
        stereo_image_topic: str | None = None,
        stereo_camera_info_topic: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._bag = reader_path(self.path)
        self._reader: AnyReader | None = None
        self._reader_pid = -1
        self._damaged: dict[ChunkKey, DamagedChunk] = {}
        reader = open_reader(self._bag)
        arguments = (
            image_topic,
            camera_info_topic,
            intrinsics,
            odometry_topic,
            stereo,
            stereo_image_topic,
            stereo_camera_info_topic,
        )
        try:
            log_chunks_without_crc(reader, self.path)
            try:
                intrinsics = self._load(reader, *arguments)
            except StorageError:
                # Find the damaged chunks by reading each alone, then read the bag again without them.
                self._damaged = find_damaged_chunks(reader)
                if not self._damaged:
                    raise  # SQLite3, or MCAP without a chunk index: nothing to skip
                self._log_damaged()
                skip_chunks(reader, self._damaged)
                intrinsics = self._load(reader, *arguments)
        finally:
            reader.close()
        self.intrinsics = intrinsics.fitted(*self._frames.size, source=self.name)

    def _load(
        self,
        reader: AnyReader,
        image_topic: str | None,
        camera_info_topic: str | None,
        intrinsics: Intrinsics | None,
        odometry_topic: str | None,
        stereo: bool,
        stereo_image_topic: str | None,
        stereo_camera_info_topic: str | None,
    ) -> Intrinsics:
        """Select the topics, index the frames, read the camera, stereo partner and odometry; returns the
        intrinsics before fitting them to the frame size."""
        self.stereo_image_topic: str | None = None
        self._stereo_frames: TopicFrames | None = None
        self._stereo_index: np.ndarray | None = None
        topics = reader.topics
        self.image_topic = select_image_topic(topics, image_topic, self.path, reader)
        self.name = f"{self.path}:{self.image_topic}"
        self._frames = self._index(reader, self.image_topic)
        self.timestamps = self._frames.stamps_ns / 1e9
        info_topic = None
        if intrinsics is None or stereo:
            info_topic = select_camera_info_topic(topics, camera_info_topic, self.image_topic, self.path)
        if intrinsics is None:
            if info_topic is None:
                raise ValueError(
                    f"{self.path}: no CameraInfo topic for {self.image_topic}; give the intrinsics as "
                    "data.intrinsics=[fx,fy,cx,cy,width,height] (e.g. --set data.intrinsics=[...]) "
                    "or name a CameraInfo topic with data.camera_info_topic"
                )
            info = first_camera_info(reader, info_topic, self.path)
            intrinsics = camera_info_intrinsics(info, info_topic, self.path)
        if stereo:
            self._index_stereo(reader, info_topic, stereo_image_topic, stereo_camera_info_topic)
        self._read_odometry(reader, select_odometry_topic(topics, odometry_topic, self.path))
        return intrinsics

    def _log_damaged(self) -> None:
        """One warning naming the damaged chunks that are skipped and the messages lost with them."""
        lost: dict[str, int] = {}
        for chunk in self._damaged.values():
            for topic, count in chunk.messages.items():
                lost[topic] = lost.get(topic, 0) + count
        logger.warning(
            "%s: skipping %d damaged MCAP chunks and their messages (%s): %s",
            self.path,
            len(self._damaged),
            ", ".join(f"{count} on {topic}" for topic, count in sorted(lost.items())),
            "; ".join(
                f"{Path(file).name} chunk at byte {offset}: {chunk.reason}"
                for (file, offset), chunk in self._damaged.items()
            ),
        )

    def _index(self, reader: AnyReader, topic: str) -> TopicFrames:
        """Header stamps and lookup keys of every image message of ``topic``."""
        stamps, receive, rank, position = [], [], [], []
        size, previous, same, skipped = None, None, 0, 0
        name = f"{self.path}:{topic}"
        for number, (connection, timestamp, raw) in enumerate(
            read_messages(reader, reader.topics[topic].connections, self.path)
        ):
            same = same + 1 if timestamp == previous else 0
            previous = timestamp
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as err:  # any failure to deserialize = one corrupt message, not a corrupt bag
                logger.warning("%s: skipping undecodable message: %s", self._where(topic, number), err)
                skipped += 1
                continue
            if size is None:
                size = self._first_size(msg, topic, number)
            stamps.append(stamp_ns(msg.header))
            receive.append(timestamp)
            rank.append(same)
            position.append(number)
        if size is None:
            raise ValueError(f"{self.path}: topic {topic} has no readable image messages")
        stamps_ns = np.asarray(stamps, dtype=np.int64)
        receive_ns = np.asarray(receive, dtype=np.int64)
        if not stamps_ns.any():
            logger.warning("%s: all header stamps are zero; ordering by receive time", name)
            stamps_ns = receive_ns
        late = int(np.sum(stamps_ns < np.maximum.accumulate(stamps_ns)))  # below an earlier message's stamp
        order = np.lexsort((receive_ns, stamps_ns))
        repeats = np.concatenate([[False], np.diff(stamps_ns[order]) == 0])  # the first received is kept
        order = order[~repeats]
        skips = {
            "undecodable": skipped,
            "in damaged chunks": sum(chunk.messages.get(topic, 0) for chunk in self._damaged.values()),
            "repeating an earlier frame's header stamp": int(repeats.sum()),
        }
        skipped_text = ", ".join(f"{count} {why}" for why, count in skips.items() if count)
        logger.log(
            logging.WARNING if skipped_text or late else logging.INFO,
            "%s: %d frames, ordered by header stamp%s%s",
            name,
            len(order),
            f"; skipped {skipped_text}" if skipped_text else "",
            f"; {late} arrived after a frame stamped later (reordered)" if late else "",
        )
        return TopicFrames(
            topic,
            stamps_ns[order],
            receive_ns[order],
            np.asarray(rank, dtype=np.int64)[order],
            np.asarray(position, dtype=np.int64)[order],
            size,
        )

    def _first_size(self, msg: Any, topic: str, number: int) -> tuple[int, int] | None:
        """(width, height) of an image message; rejects streams we cannot train on up front (else every frame
        would be skipped one by one). None when a compressed frame does not decode (the next one is tried)."""
        name = f"{self.path}:{topic}"
        if hasattr(msg, "format"):
            if "compresseddepth" in msg.format.lower():
                raise ValueError(f"{name}: a compressedDepth stream, not a colour image topic")
            try:
                height, width = image_from_message(msg).shape[:2]
            except FrameError as err:
                logger.warning("%s: %s", self._where(topic, number), err)
                return None
            return width, height
        if msg.encoding not in CHANNELS:
            raise ValueError(
                f"{name}: unsupported Image encoding '{msg.encoding}' (supported: {', '.join(CHANNELS)})"
            )
        return int(msg.width), int(msg.height)

    def _index_stereo(
        self, reader: AnyReader, info_topic: str | None, requested: str | None, requested_info: str | None
    ) -> None:
        """Find and index the stereo partner; set :attr:`stereo_transform` from both cameras' P."""
        topics, bag = reader.topics, self.path
        partner = select_stereo_topic(topics, requested, self.image_topic, bag)
        partner_info = select_camera_info_topic(topics, requested_info, partner, bag)
        if info_topic is None or partner_info is None or partner_info == info_topic:
            raise ValueError(
                f"{bag}: stereo needs a CameraInfo topic for each camera ({self.image_topic}: {info_topic}, "
                f"{partner}: {partner_info}); name them with data.camera_info_topic and "
                "data.stereo_camera_info_topic"
            )
        own_msg, partner_msg = (first_camera_info(reader, t, bag) for t in (info_topic, partner_info))
        own = camera_info_intrinsics(own_msg, info_topic, bag)
        other = camera_info_intrinsics(partner_msg, partner_info, bag)
        own_values = np.array([own.fx, own.fy, own.cx, own.cy, own.width, own.height])
        other_values = np.array([other.fx, other.fy, other.cx, other.cy, other.width, other.height])
        if not np.allclose(own_values, other_values, rtol=1e-6, atol=1e-6):
            raise ValueError(
                f"{bag}: {info_topic} and {partner_info} are not a rectified stereo pair: their intrinsics "
                f"differ ({own} vs {other}); stereo training needs identical rectified intrinsics"
            )
        offset = _rectified_offset(partner_msg, partner_info, bag) - _rectified_offset(
            own_msg, info_topic, bag
        )
        if not np.any(offset):
            raise ValueError(
                f"{bag}: {info_topic} and {partner_info} have the same P Tx/Ty: a zero baseline, so "
                f"{partner} is not a stereo partner of {self.image_topic}"
            )
        frames = self._index(reader, partner)
        if frames.size != self._frames.size:
            raise ValueError(
                f"{bag}: stereo partner {partner} has {frames.size[0]}x{frames.size[1]} images but "
                f"{self.image_topic} has {self._frames.size[0]}x{self._frames.size[1]}"
            )
        self.stereo_transform = np.eye(4)
        self.stereo_transform[:2, 3] = offset
        self.stereo_image_topic, self._stereo_frames = partner, frames
        self._stereo_index = pair_by_stamp(self._frames.stamps_ns, frames.stamps_ns)
        paired = int((self._stereo_index >= 0).sum())
        logger.info(
            "%s: stereo partner %s, baseline %.4f m; %d of %d frames paired",
            self.name,
            partner,
            float(np.linalg.norm(offset)),
            paired,
            len(self),
        )

    def _read_odometry(self, reader: AnyReader, topic: str | None) -> None:
        if topic is None:
            return
        samples = read_odometer(reader, topic, self.path)
        if samples is None:
            self.odometer = np.full(len(self), np.nan)
        else:  # seconds since the first frame: float seconds since 1970 would round to 0.24 us
            origin, (stamps, odometer) = self._frames.stamps_ns[0], samples
            seconds = (self._frames.stamps_ns - origin) / 1e9
            self.odometer = odometer_at(seconds, (stamps - origin) / 1e9, odometer)
        known = int(np.isfinite(self.odometer).sum())
        logger.info("%s: %d of %d frames have odometry (topic %s)", self.name, known, len(self), topic)

    def _where(self, topic: str, number: int) -> str:
        return f"{self.path} topic {topic} message #{number}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"], state["_reader_pid"] = None, -1
        return state

    def _open(self) -> AnyReader:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = open_reader(self._bag, self._damaged)
            self._reader_pid = os.getpid()
        return self._reader

    def close(self) -> None:
        """Close this process's reader (reopened on the next ``image`` call)."""
        if self._reader is not None and self._reader_pid == os.getpid():
            self._reader.close()
        self._reader = None

    def _fetch(self, frames: TopicFrames, index: int) -> np.ndarray:
        """Message ``index`` of ``frames`` read again and decoded; FrameError naming where it is."""
        stamp = frames.stamps_ns[index] / 1e9
        where = f"{self._where(frames.topic, int(frames.position[index]))} (stamp {stamp:.9f} s)"
        receive, rank = int(frames.receive_ns[index]), int(frames.rank[index])
        try:
            reader = self._open()
            connections = reader.topics[frames.topic].connections
            found = list(read_messages(reader, connections, self.path, start=receive, stop=receive + 1))
            if rank >= len(found):
                raise ValueError(f"message not found again at receive time {receive} ns")
            connection, _, raw = found[rank]
            return image_from_message(reader.deserialize(raw, connection.msgtype))
        except (AnyReaderError, ValueError) as err:  # FrameError from decoding included: add where it was
            raise FrameError(f"{where}: {err}") from None

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")

    def image(self, index: int) -> np.ndarray:
        self._check_index(index)
        return self._fetch(self._frames, index)

    def stereo_image(self, index: int) -> np.ndarray:
        if self._stereo_frames is None or self._stereo_index is None:
            return super().stereo_image(index)
        self._check_index(index)
        partner = int(self._stereo_index[index])
        if partner < 0:
            raise FrameError(
                f"{self.name}: frame {index} (stamp {self.timestamps[index]:.9f} s) has no frame on "
                f"{self.stereo_image_topic} within a quarter of the frame period"
            )
        return self._fetch(self._stereo_frames, partner)
