"""rosbag2 reader on small MCAP and SQLite3 bags written with rosbags' Writer."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.bagio import (
    STORAGE_PLUGINS,
    CameraBagWriter,
    camera_info_message,
    default_typestore,
    header,
)
from ssim_depth_core.data.rosbag import RosbagSequence, is_rosbag
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.triplets import TripletDataset, build_samples, collate_skipping
from ssim_depth_core.imaging import FrameError

TYPESTORE = default_typestore()
T = TYPESTORE.types
IMAGE, COMPRESSED, CAMERA_INFO = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
)
HEIGHT, WIDTH = 8, 16
K = [20.0, 0.0, 4.5, 0.0, 21.0, 2.5, 0.0, 0.0, 1.0]
P = [19.0, 0.0, 4.25, 0.0, 0.0, 19.5, 2.75, 0.0, 0.0, 0.0, 1.0, 0.0]


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int, padding: int = 0, truncate: int = 0):
    """sensor_msgs/Image of ``rgb`` in ``encoding`` with ``padding`` extra bytes per row."""
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
        "mono8": rgb[..., :1],
        "yuv422": rgb[..., :2],
    }[encoding]
    height, width, channels = pixels.shape
    rows = np.concatenate([pixels.reshape(height, -1), np.full((height, padding), 255, np.uint8)], axis=1)
    data = rows.ravel()[: rows.size - truncate]
    return T[IMAGE](
        header=header(TYPESTORE, stamp_ns, "camera"),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels + padding,
        data=np.ascontiguousarray(data),
    )


def compressed_msg(rgb: np.ndarray, stamp_ns: int):
    ok, data = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return T[COMPRESSED](
        header=header(TYPESTORE, stamp_ns, "camera"), format="rgb8; png compressed bgr8", data=data.ravel()
    )


def camera_info_msg(stamp_ns: int, k=K, p=P):
    """CameraInfo whose P differs from K, so the tests can tell which one was used."""
    msg = camera_info_message(TYPESTORE, Intrinsics(1.0, 1.0, 0.0, 0.0, WIDTH, HEIGHT), stamp_ns, "camera")
    return dataclasses.replace(msg, k=np.array(k, dtype=np.float64), p=np.array(p, dtype=np.float64))


def write_bag(path: Path, topics: dict[str, list[tuple[int, object]]], storage: str = "mcap") -> Path:
    """``topics``: name -> [(receive time ns, message)], written in the given order per topic."""
    with Writer(path, version=9, storage_plugin=STORAGE_PLUGINS[storage]) as writer:
        connections = {
            name: writer.add_connection(name, messages[0][1].__msgtype__, typestore=TYPESTORE)
            for name, messages in topics.items()
        }
        records = sorted((t, name, msg) for name, messages in topics.items() for t, msg in messages)
        for t, name, msg in records:
            writer.write(connections[name], t, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    return path


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


# Header stamps deliberately out of receive order: the reader must order by header stamp. 10 Hz (one stamp
# 123 ns late), so the frames make triplets (a gap in the stamps would drop those across it).
STAMPS_NS = [
    1_700_000_000_300_000_000,
    1_700_000_000_100_000_000,
    1_700_000_000_200_000_123,
    1_700_000_000_000_000_000,
]
ORDER = np.argsort(STAMPS_NS)


def camera_bag(path: Path, encoding: str, storage: str, images: list[np.ndarray], padding: int = 0) -> Path:
    if encoding == "compressed":
        messages = [compressed_msg(im, s) for im, s in zip(images, STAMPS_NS, strict=True)]
    else:
        messages = [image_msg(im, encoding, s, padding) for im, s in zip(images, STAMPS_NS, strict=True)]
    receive = [10**9 * (i + 1) for i in range(len(messages))]
    return write_bag(
        path,
        {
            "/camera/image_raw": list(zip(receive, messages, strict=True)),
            "/camera/camera_info": [(receive[0], camera_info_msg(STAMPS_NS[0]))],
        },
        storage,
    )


def expected(image: np.ndarray, encoding: str) -> np.ndarray:
    return np.repeat(image[..., :1], 3, axis=2) if encoding == "mono8" else image


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize(
    ("encoding", "padding"),
    [("rgb8", 0), ("bgr8", 3), ("rgba8", 0), ("bgra8", 2), ("mono8", 5), ("compressed", 0)],
)
def test_pixels_exact_and_ordered_by_header_stamp(tmp_path, storage, encoding, padding):
    images = frames(len(STAMPS_NS))
    bag = camera_bag(tmp_path / "bag", encoding, storage, images, padding)
    sequence = RosbagSequence(bag)
    assert sequence.image_topic == "/camera/image_raw"
    assert len(sequence) == len(images)
    np.testing.assert_array_equal(sequence.timestamps, np.sort(STAMPS_NS) / 1e9)
    for index, source in enumerate(ORDER):
        out = sequence.image(index)
        assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3) and out.flags.c_contiguous
        assert np.array_equal(out, expected(images[source], encoding)), (index, source)
    # P wins over K for a rectified stream.
    assert sequence.intrinsics == Intrinsics(19.0, 19.5, 4.25, 2.75, WIDTH, HEIGHT)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_single_storage_file_and_bag_detection(tmp_path, storage):
    images = frames(len(STAMPS_NS))
    bag = camera_bag(tmp_path / "bag", "rgb8", storage, images)
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    sequence = RosbagSequence(storage_file)
    assert np.array_equal(sequence.image(0), images[ORDER[0]])
    assert is_rosbag(bag) and is_rosbag(storage_file)
    assert not is_rosbag(tmp_path / "nothing") and not is_rosbag(bag / "metadata.yaml")
    # A folder holding only the storage file (metadata.yaml lost) opens that file.
    (bag / "metadata.yaml").unlink()
    assert np.array_equal(RosbagSequence(bag).image(3), images[ORDER[3]])


def test_ambiguous_image_topics_are_listed(tmp_path):
    left, right = frames(2, seed=1), frames(2, seed=2)
    bag = write_bag(
        tmp_path / "bag",
        {
            "/left/image_raw": [(1, image_msg(left[0], "rgb8", 1)), (2, image_msg(left[1], "rgb8", 2))],
            "/right/image_raw": [(1, image_msg(right[0], "rgb8", 1)), (2, image_msg(right[1], "rgb8", 2))],
            "/right/image_raw/compressed": [(1, compressed_msg(right[0], 1))],
            "/left/camera_info": [(1, camera_info_msg(1))],
            "/right/camera_info": [(1, camera_info_msg(1, p=[0.0] * 12))],
        },
    )
    with pytest.raises(ValueError, match="image topics") as info:
        RosbagSequence(bag)
    for topic in ("/left/image_raw", "/right/image_raw", "/right/image_raw/compressed", "data.image_topic"):
        assert topic in str(info.value)
    with pytest.raises(ValueError, match="image topic '/nope' not found.*/left/image_raw"):
        RosbagSequence(bag, image_topic="/nope")
    with pytest.raises(ValueError, match="CameraInfo topic '/nope' not found.*/right/camera_info"):
        RosbagSequence(bag, image_topic="/left/image_raw", camera_info_topic="/nope")
    # Each image topic takes the CameraInfo of its own namespace (right has K only, so K is used).
    right_sequence = RosbagSequence(bag, image_topic="/right/image_raw")
    assert right_sequence.intrinsics == Intrinsics(20.0, 21.0, 4.5, 2.5, WIDTH, HEIGHT)
    assert np.array_equal(right_sequence.image(1), right[1])
    assert RosbagSequence(bag, image_topic="/right/image_raw/compressed").intrinsics.fx == 20.0
    assert RosbagSequence(bag, image_topic="/left/image_raw").intrinsics.fx == 19.0
    explicit = RosbagSequence(bag, image_topic="/left/image_raw", camera_info_topic="/right/camera_info")
    assert explicit.intrinsics.fx == 20.0


def test_intrinsics_without_camera_info(tmp_path):
    images = frames(2)
    bag = write_bag(tmp_path / "bag", {"/cam/image": [(1, image_msg(images[0], "rgb8", 5))]})
    with pytest.raises(ValueError, match=r"data\.intrinsics"):
        RosbagSequence(bag)
    given = Intrinsics(10.0, 11.0, 4.0, 3.0, WIDTH, HEIGHT)
    assert RosbagSequence(bag, intrinsics=given).intrinsics == given
    # Intrinsics for twice the resolution are rescaled to the images (pixel centres at integers:
    # c' = (c + 0.5) / 2 - 0.5); another aspect ratio is an error.
    double = Intrinsics(20.0, 22.0, 8.0, 6.0, 2 * WIDTH, 2 * HEIGHT)
    rescaled = Intrinsics(10.0, 11.0, 3.75, 2.75, WIDTH, HEIGHT)
    assert RosbagSequence(bag, intrinsics=double).intrinsics == rescaled
    with pytest.raises(ValueError, match="aspect ratio"):
        RosbagSequence(bag, intrinsics=Intrinsics(10.0, 11.0, 4.0, 3.0, WIDTH, WIDTH))
    config = DataConfig(intrinsics=[10.0, 11.0, 4.0, 3.0, WIDTH, HEIGHT])
    assert open_sequences(bag, config)[0].intrinsics == given
    with pytest.raises(ValueError, match=r"config 'data\.intrinsics': expected \[fx, fy, cx, cy"):
        DataConfig(intrinsics=[10.0, 11.0, 4.0])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_message_is_frame_error_with_topic_and_index(tmp_path, storage):
    images = frames(4)
    messages = [
        (1, image_msg(images[0], "rgb8", 10)),
        (2, image_msg(images[1], "rgb8", 20, truncate=1)),  # data one byte short of step * height
        (3, image_msg(images[2], "yuv422", 30)),  # an encoding we cannot convert
        (4, image_msg(images[3], "rgb8", 40)),
    ]
    bag = write_bag(
        tmp_path / "bag", {"/cam/image": messages, "/cam/camera_info": [(1, camera_info_msg(1))]}, storage
    )
    sequence = RosbagSequence(bag)
    with pytest.raises(FrameError, match=r"topic /cam/image message #1 .*expected step \* height") as info:
        sequence.image(1)
    assert str(bag) in str(info.value)
    with pytest.raises(FrameError, match=r"message #2 .*unsupported encoding 'yuv422'"):
        sequence.image(2)
    assert np.array_equal(sequence.image(3), images[3])


def test_unsupported_first_encoding_rejected_up_front(tmp_path):
    bag = write_bag(tmp_path / "bag", {"/cam/image": [(1, image_msg(frames(1)[0], "yuv422", 1))]})
    with pytest.raises(ValueError, match="unsupported Image encoding 'yuv422'"):
        RosbagSequence(bag, intrinsics=Intrinsics(10.0, 10.0, 5.0, 3.0, WIDTH, HEIGHT))


def test_pickles_and_reads_in_dataloader_workers(tmp_path):
    images = frames(len(STAMPS_NS))
    bag = camera_bag(tmp_path / "bag", "rgb8", "mcap", images)
    sequence = RosbagSequence(bag)
    assert np.array_equal(sequence.image(2), images[ORDER[2]])  # opens a reader in this process
    clone = pickle.loads(pickle.dumps(sequence))
    assert np.array_equal(clone.image(1), images[ORDER[1]])
    config = DataConfig(height=HEIGHT, width=WIDTH)
    dataset = TripletDataset([sequence], build_samples([sequence], config.frame_ids), config, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_skipping)
    (batch,) = list(loader)
    assert batch["skipped"] == [] and batch["images"].shape == (2, 3, 3, HEIGHT, WIDTH)
    assert batch["index"].tolist() == [0, 1]
    for slot, offset in enumerate(config.frame_ids):  # sample 1 is target frame 2 and its neighbours
        pixels = batch["images"][1, slot].permute(1, 2, 0).mul(255).round().byte().numpy()
        assert np.array_equal(pixels, images[ORDER[2 + offset]])


def test_directory_of_bags(tmp_path):
    for name, seed in (("b_drive", 1), ("a_drive", 2)):
        camera_bag(tmp_path / "bags" / name, "rgb8", "mcap", frames(len(STAMPS_NS), seed))
    sequences = open_sequences(tmp_path / "bags", DataConfig())
    assert [Path(s.path).name for s in sequences] == ["a_drive", "b_drive"]
    assert np.array_equal(sequences[1].image(0), frames(len(STAMPS_NS), 1)[ORDER[0]])


def test_sqlite_bag_without_message_definitions(tmp_path):
    """Bags recorded before ROS 2 Iron store no message definitions; the stock types must be used."""
    images = frames(len(STAMPS_NS))
    bag = camera_bag(tmp_path / "bag", "bgr8", "sqlite3", images)
    db = sqlite3.connect(next(bag.glob("*.db3")))
    db.execute("DELETE FROM message_definitions")
    db.commit()
    db.close()
    sequence = RosbagSequence(bag)
    assert np.array_equal(sequence.image(0), images[ORDER[0]])
    assert sequence.intrinsics.fx == 19.0


def test_undeserializable_message_is_skipped_when_indexing(tmp_path, caplog):
    images = frames(3)
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/cam/image", IMAGE, typestore=TYPESTORE)
        writer.write(connection, 1, TYPESTORE.serialize_cdr(image_msg(images[0], "rgb8", 10), IMAGE))
        writer.write(connection, 2, b"\x00\x01\x00\x00garbage")
        writer.write(connection, 3, TYPESTORE.serialize_cdr(image_msg(images[2], "rgb8", 30), IMAGE))
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(tmp_path / "bag", intrinsics=Intrinsics(9.0, 9.0, 8.0, 4.0, WIDTH, HEIGHT))
    assert "topic /cam/image message #1" in caplog.text
    assert len(sequence) == 2
    assert np.array_equal(sequence.image(1), images[2])


def _bag_losing_one_frame(path, stamps_ms: list[int], lost_ms: int):
    """A camera bag with a frame at each of ``stamps_ms`` (after 1.7e9 s), the one at ``lost_ms`` undecodable;
    (every frame written, its RosbagSequence)."""
    start_ns = 1_700_000_000 * 10**9
    images = frames(len(stamps_ms))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/cam/image", IMAGE, typestore=TYPESTORE)
        for ms, image in zip(stamps_ms, images, strict=True):
            stamp = start_ns + ms * 10**6
            message = TYPESTORE.serialize_cdr(image_msg(image, "rgb8", stamp), IMAGE)
            writer.write(connection, stamp, b"\x00\x01\x00\x00garbage" if ms == lost_ms else message)
    return images, RosbagSequence(path, intrinsics=Intrinsics(9.0, 9.0, 8.0, 4.0, WIDTH, HEIGHT))


def test_triplets_across_lost_frames_or_a_pause_are_dropped_and_counted(tmp_path, caplog):
    """A frame lost while indexing leaves no index, so its neighbours become adjacent: a target used to be
    paired, silently, with a source two periods away. Header stamps (ms): 0, 100, [200 undecodable], 300,
    400, 500, [a 400 ms pause], 900, 1000, 1100 -> indices 0..7, median period 100 ms. By hand, each source
    must lie within 50 ms of target -/+ 100 ms: targets 3 (400: 300, 500) and 6 (1000: 900, 1100) do;
    1 (100: 0, 300), 2 (300: 100, 400), 4 (500: 400, 900) and 5 (900: 500, 1000) span a gap."""
    stamps_ms = [0, 100, 200, 300, 400, 500, 900, 1000, 1100]
    images, sequence = _bag_losing_one_frame(tmp_path / "bag", stamps_ms, 200)
    assert len(sequence) == 8
    with caplog.at_level(logging.WARNING):
        samples = build_samples([sequence], [0, -1, 1])
    assert samples == [(0, 3), (0, 6)]
    assert f"{sequence.name}: dropped 4 of 6 samples spanning a gap in the stamps" in caplog.text
    assert "first: target frame 1 at 1700000000.100000 s, period there 100.0 ms" in caplog.text
    assert build_samples([sequence], [0]) == [(0, index) for index in range(8)]  # no sources: no gaps
    config = DataConfig(height=HEIGHT, width=WIDTH)
    sample = TripletDataset([sequence], samples, config, train=False)[1]  # index 6: recorded frame 7
    for slot, recorded in enumerate([7, 6, 8]):  # frame_ids [0, -1, 1]
        pixels = sample["images"][slot].permute(1, 2, 0).mul(255).round().byte().numpy()
        assert np.array_equal(pixels, images[recorded])


def test_a_camera_that_changes_its_frame_rate_keeps_both_stretches(tmp_path, caplog):
    """20 frames at 10 Hz, then 30 at 5 Hz with the one at 3900 ms undecodable. The period is the median
    around each target, so both stretches keep their triplets (a median over the whole bag, 200 ms, dropped
    the 10 Hz ones); the lost frame still drops the two targets beside it (3700, 4100 ms: indices 28, 29)."""
    stamps_ms = [*range(0, 2000, 100), *range(2100, 8000, 200)]
    _, sequence = _bag_losing_one_frame(tmp_path / "bag", stamps_ms, 3900)
    assert len(sequence) == 49
    with caplog.at_level(logging.WARNING):
        targets = [frame for _, frame in build_samples([sequence], [0, -1, 1])]
    assert {28, 29}.isdisjoint(targets)
    assert set(range(1, 48)) - set(targets) <= {19, 28, 29}  # 19 (1900 ms) sits between the two rates
    assert "first: target frame 28 at 1700000003.700000 s, period there 200.0 ms" in caplog.text


def test_corrupt_compressed_frame_names_bag_topic_and_index(tmp_path):
    images = frames(3)
    broken = compressed_msg(images[1], 20)
    broken = dataclasses.replace(broken, data=broken.data[: len(broken.data) // 2])
    messages = [(1, compressed_msg(images[0], 10)), (2, broken), (3, compressed_msg(images[2], 30))]
    bag = write_bag(tmp_path / "bag", {"/cam/image/compressed": messages})
    sequence = RosbagSequence(bag, intrinsics=Intrinsics(9.0, 9.0, 8.0, 4.0, WIDTH, HEIGHT))
    with pytest.raises(FrameError, match=r"bag topic /cam/image/compressed message #1 .*cannot decode"):
        sequence.image(1)
    assert np.array_equal(sequence.image(2), images[2])


STEREO_CAMERA = Intrinsics(10.0, 10.0, 7.5, 3.5, WIDTH, HEIGHT)
LEFT_TOPIC, RIGHT_TOPIC = "/kitti/camera_color_left/image_raw", "/kitti/camera_color_right/image_raw"


def stereo_bag(path: Path, left: list[np.ndarray], right: list[np.ndarray], baseline: float = 0.54) -> Path:
    with CameraBagWriter(path, STEREO_CAMERA, stereo_baseline=baseline) as writer:
        for index, (image, partner) in enumerate(zip(left, right, strict=True)):
            writer.write(image, 10**9 + index * 10**8, right_rgb=partner)
    return path


def test_stereo_pair_written_and_read(tmp_path):
    left, right = frames(4, seed=3), frames(4, seed=4)
    bag = stereo_bag(tmp_path / "bag", left, right)
    # The right CameraInfo's P holds Tx = -fx * baseline (ROS convention for a right camera).
    with AnyReader([bag]) as reader:
        infos = {
            c.topic: reader.deserialize(raw, c.msgtype)
            for c, _, raw in reader.messages([c for c in reader.connections if c.msgtype == CAMERA_INFO])
        }
    assert infos["/kitti/camera_color_right/camera_info"].p[3] == pytest.approx(-10.0 * 0.54)
    assert infos["/kitti/camera_color_right/camera_info"].header.frame_id == "camera_color_right"
    assert infos["/kitti/camera_color_left/camera_info"].p[3] == 0.0
    # Two image topics: the reference camera (P Tx = 0) is selected, with or without stereo.
    assert RosbagSequence(bag).image_topic == LEFT_TOPIC
    assert RosbagSequence(bag).stereo_transform is None
    sequence = RosbagSequence(bag, stereo=True)
    assert (sequence.image_topic, sequence.stereo_image_topic) == (LEFT_TOPIC, RIGHT_TOPIC)
    expected = np.eye(4)
    expected[0, 3] = -0.54
    np.testing.assert_allclose(sequence.stereo_transform, expected, atol=1e-12)
    for index in range(4):
        assert np.array_equal(sequence.image(index), left[index])
        assert np.array_equal(sequence.stereo_image(index), right[index])
    # The right camera as the target: its partner is the left one, 0.54 m to its left.
    mirrored = RosbagSequence(bag, image_topic=RIGHT_TOPIC, stereo=True)
    assert mirrored.stereo_image_topic == LEFT_TOPIC and mirrored.stereo_transform[0, 3] == pytest.approx(
        0.54
    )
    assert np.array_equal(mirrored.stereo_image(2), left[2])
    # Pickled (DataLoader workers) the partner still reads, reopening the bag.
    clone = pickle.loads(pickle.dumps(sequence))
    assert np.array_equal(clone.stereo_image(3), right[3])
    # Through the data configuration.
    (configured,) = open_sequences(bag, DataConfig(stereo=True, stereo_image_topic=RIGHT_TOPIC))
    assert configured.stereo_transform[0, 3] == pytest.approx(-0.54)


def test_stereo_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="stereo_baseline must be a positive number"):
        CameraBagWriter(tmp_path / "negative", STEREO_CAMERA, stereo_baseline=-0.5)
    with CameraBagWriter(tmp_path / "mono", STEREO_CAMERA) as writer:
        with pytest.raises(
            ValueError, match="right_rgb given but the CameraBagWriter has no stereo_baseline"
        ):
            writer.write(frames(1)[0], 1, right_rgb=frames(1)[0])
    with CameraBagWriter(tmp_path / "stereo", STEREO_CAMERA, stereo_baseline=0.5) as writer:
        with pytest.raises(ValueError, match="right image is 4x2 but the camera is 16x8"):
            writer.write(frames(1)[0], 1, right_rgb=np.zeros((2, 4, 3), np.uint8))


def stereo_info(stamp_ns: int, tx: float, fx: float = 19.0):
    """A rectified CameraInfo with P = [[fx, 0, 4.25, tx], [0, 19.5, 2.75, 0], [0, 0, 1, 0]]."""
    return camera_info_msg(stamp_ns, p=[fx, 0.0, 4.25, tx, 0.0, 19.5, 2.75, 0.0, 0.0, 0.0, 1.0, 0.0])


def test_stereo_frames_paired_by_nearest_stamp(tmp_path):
    left, right = frames(4, seed=5), frames(4, seed=6)
    ms = 1_000_000
    # Left every 100 ms. Right: exact, 20 ms late (within a quarter period: 25 ms), 40 ms late (too far),
    # 1 ms early.
    left_stamps, right_stamps = [0, 100 * ms, 200 * ms, 300 * ms], [0, 120 * ms, 240 * ms, 299 * ms]
    bag = write_bag(
        tmp_path / "bag",
        {
            "/left/image_raw": [
                (s + 1, image_msg(im, "rgb8", s)) for im, s in zip(left, left_stamps, strict=True)
            ],
            "/right/image_raw": [
                (s + 1, image_msg(im, "bgr8", s)) for im, s in zip(right, right_stamps, strict=True)
            ],
            "/left/camera_info": [(1, stereo_info(0, tx=0.0))],
            "/right/camera_info": [(1, stereo_info(0, tx=-19.0 * 0.3))],
        },
    )
    sequence = RosbagSequence(bag, stereo=True)
    assert sequence.image_topic == "/left/image_raw" and sequence.stereo_transform[0, 3] == pytest.approx(
        -0.3
    )
    assert np.array_equal(sequence.stereo_image(0), right[0])
    assert np.array_equal(sequence.stereo_image(1), right[1])
    assert np.array_equal(sequence.stereo_image(3), right[3])
    with pytest.raises(FrameError, match=r"frame 2 \(stamp 0.200000000 s\) has no frame on /right/image_raw"):
        sequence.stereo_image(2)
    with pytest.raises(IndexError):
        sequence.stereo_image(4)


def test_stereo_baseline_from_both_projections(tmp_path):
    """KITTI-style P_rect: both Tx != 0 (relative to camera 0); the baseline is their difference."""
    images = frames(2)
    bag = write_bag(
        tmp_path / "bag",
        {
            "/cam2/image_raw": [(1, image_msg(images[0], "rgb8", 5))],
            "/cam3/image_raw": [(1, image_msg(images[1], "rgb8", 5))],
            "/cam2/camera_info": [(1, stereo_info(5, tx=19.0 * 0.06))],
            "/cam3/camera_info": [(1, stereo_info(5, tx=-19.0 * 0.47))],
        },
    )
    # Neither has Tx = 0: the image topic cannot be decided automatically.
    with pytest.raises(ValueError, match="2 image topics"):
        RosbagSequence(bag)
    sequence = RosbagSequence(bag, image_topic="/cam2/image_raw", stereo=True)
    assert sequence.stereo_transform[0, 3] == pytest.approx(-0.53)
    assert np.array_equal(sequence.stereo_image(0), images[1])


def test_stereo_errors_name_the_topics(tmp_path):
    images = frames(2)

    def bag_with(name: str, left_info, right_info) -> Path:
        return write_bag(
            tmp_path / name,
            {
                "/left/image_raw": [(1, image_msg(images[0], "rgb8", 5))],
                "/right/image_raw": [(1, image_msg(images[1], "rgb8", 5))],
                "/left/camera_info": [(1, left_info)],
                "/right/camera_info": [(1, right_info)],
            },
        )

    mismatched = bag_with("mismatched", stereo_info(5, 0.0), stereo_info(5, -19.0 * 0.5, fx=18.0))
    with pytest.raises(
        ValueError, match="/left/camera_info and /right/camera_info are not a rectified stereo"
    ):
        RosbagSequence(mismatched, stereo=True)
    assert RosbagSequence(mismatched).image_topic == "/left/image_raw"  # mono training is unaffected
    no_baseline = bag_with("zero", stereo_info(5, 0.0), stereo_info(5, 0.0))
    with pytest.raises(ValueError, match="2 image topics"):  # both Tx = 0: which is the left camera?
        RosbagSequence(no_baseline)
    with pytest.raises(ValueError, match="zero baseline"):
        RosbagSequence(no_baseline, image_topic="/left/image_raw", stereo=True)
    with pytest.raises(
        ValueError, match="stereo image topic '/left/image_raw' not found, not an image or the"
    ):
        RosbagSequence(
            mismatched, image_topic="/left/image_raw", stereo=True, stereo_image_topic="/left/image_raw"
        )
    mono = camera_bag(tmp_path / "mono", "rgb8", "mcap", frames(len(STAMPS_NS)))
    with pytest.raises(
        ValueError,
        match=r"stereo partner of /camera/image_raw among 0 other.*--set data.stereo_image_topic=TOPIC",
    ):
        RosbagSequence(mono, stereo=True)
    with pytest.raises(FrameError, match="no stereo partner camera"):
        RosbagSequence(mono).stereo_image(0)


def test_an_mcap_cut_short_is_named_with_the_way_to_recover_it(tmp_path):
    bag = camera_bag(tmp_path / "bag", "rgb8", "mcap", frames(len(STAMPS_NS)))
    (storage,) = bag.glob("*.mcap")
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size * 2 // 3])  # no footer
    with pytest.raises(
        ValueError, match=r"cannot open rosbag2: .*end magic.*mcap recover FILE -o FIXED\.mcap"
    ):
        RosbagSequence(bag)


def test_a_metadata_yaml_that_is_not_yaml_is_named_in_one_line_with_where(tmp_path):
    bag = camera_bag(tmp_path / "bag", "rgb8", "mcap", frames(len(STAMPS_NS)))
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [version\n")
    with pytest.raises(ValueError) as raised:
        RosbagSequence(bag)
    assert str(raised.value) == (
        f"{bag}: cannot open rosbag2: metadata.yaml is not YAML (expected ',' or ']', but got "
        "'<stream end>' at line 2, column 1)"
    )
