"""Odometry from rosbag2 bags: the writer's nav_msgs/Odometry, hand-built Odometry, Twist and /tf topics, each
read back as an odometer at the image stamps and checked against hand-computed distances."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from ssim_depth_core.apps.infer import run_inference
from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.bagio import (
    KITTI_IMAGE_TOPIC,
    ODOMETRY_TOPIC,
    CameraBagWriter,
    camera_info_message,
    default_typestore,
    header,
    image_message,
    quaternion_xyzw,
)
from ssim_depth_core.data.rosbag import RosbagSequence, rotation_matrices
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.geometry import euler_zyx_to_matrix
from ssim_depth_core.runtime.frames import ScaleSettings

TYPESTORE = default_typestore()
T = TYPESTORE.types
HEIGHT, WIDTH = 4, 8
CAMERA = Intrinsics(8.0, 8.0, 3.5, 1.5, WIDTH, HEIGHT)
EPOCH_NS = 1_700_000_000 * 10**9  # real-looking stamps: float seconds must not lose the milliseconds
FRAME_NS = 100_000_000  # images at 10 Hz
FRAMES = 10
IMAGE_STAMPS = [EPOCH_NS + k * FRAME_NS for k in range(FRAMES)]
RGB = np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def pose(
    x: float = 0.0, y: float = 0.0, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0
) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = euler_zyx_to_matrix(yaw, pitch, roll)
    matrix[:2, 3] = x, y
    return matrix


def vector(x: float = 0.0, y: float = 0.0, z: float = 0.0):
    return T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def odometry_msg(stamp: int, x: float, y: float = 0.0):
    msg_pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
    )
    twist = T["geometry_msgs/msg/Twist"](linear=vector(), angular=vector())
    return T["nav_msgs/msg/Odometry"](
        header=header(TYPESTORE, stamp, "odom"),
        child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=msg_pose, covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def twist_msg(stamp: int, linear: tuple[float, float, float], covariance: bool = False):
    twist = T["geometry_msgs/msg/Twist"](linear=vector(*linear), angular=vector(z=0.3))
    if covariance:
        with_covariance = T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36))
        return T["geometry_msgs/msg/TwistWithCovarianceStamped"](
            header=header(TYPESTORE, stamp, "base_link"), twist=with_covariance
        )
    return T["geometry_msgs/msg/TwistStamped"](header=header(TYPESTORE, stamp, "base_link"), twist=twist)


def transform(stamp: int, parent: str, child: str, xyz=(0.0, 0.0, 0.0), yaw: float = 0.0):
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(TYPESTORE, stamp, parent),
        child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=vector(*xyz),
            rotation=T["geometry_msgs/msg/Quaternion"](
                x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)
            ),
        ),
    )


def tf_msg(*transforms):
    return T["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


def write_bag(path: Path, topics: dict[str, list[tuple[int, object]]]) -> Path:
    """A camera (images at IMAGE_STAMPS, CameraInfo) plus ``topics``: name -> [(stamp ns, message | bytes)];
    raw bytes are written as they are (a message that does not deserialize) on a connection of the type of
    the topic's first message."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection(KITTI_IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=TYPESTORE)
        info = writer.add_connection(
            "/kitti/camera_color_left/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TYPESTORE
        )
        records = []
        for stamp in IMAGE_STAMPS:
            records.append((stamp, image, image_message(TYPESTORE, RGB, stamp, "camera")))
            records.append((stamp, info, camera_info_message(TYPESTORE, CAMERA, stamp, "camera")))
        for name, messages in topics.items():
            msgtype = next(m for _, m in messages if not isinstance(m, bytes)).__msgtype__
            connection = writer.add_connection(name, msgtype, typestore=TYPESTORE)
            records += [(stamp, connection, msg) for stamp, msg in messages]
        for stamp, connection, msg in sorted(records, key=lambda r: r[0]):
            data = msg if isinstance(msg, bytes) else TYPESTORE.serialize_cdr(msg, connection.msgtype)
            writer.write(connection, stamp, data)
    return path


def relative(odometer: np.ndarray, start: int) -> np.ndarray:
    """Metres travelled since frame ``start``."""
    return odometer - odometer[start]


def test_writer_odometry_round_trip_and_message_fields(tmp_path):
    # Heading +y (yaw 90 deg) at 10 m/s: 1 m per 10 Hz frame, along the vehicle's own x axis.
    with CameraBagWriter(tmp_path / "bag", CAMERA) as writer:
        for k, stamp in enumerate(IMAGE_STAMPS):
            writer.write(RGB, stamp, odometry=pose(x=3.0, y=float(k), yaw=math.pi / 2))
    sequence = RosbagSequence(tmp_path / "bag")
    np.testing.assert_allclose(relative(sequence.odometer, 0), np.arange(FRAMES, dtype=float), atol=1e-9)
    assert sequence.travel(2, 7) == pytest.approx(5.0)
    with AnyReader([tmp_path / "bag"]) as reader:
        connections = [c for c in reader.connections if c.topic == ODOMETRY_TOPIC]
        messages = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections)]
    first, second = messages[0], messages[1]
    assert (first.header.frame_id, first.child_frame_id) == ("odom", "base_link")
    q = first.pose.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    p = second.pose.pose.position
    assert (p.x, p.y, p.z) == (3.0, 1.0, 0.0)
    # First message: no previous pose, so the twist is zero and marked unknown (covariance diagonal -1).
    assert first.twist.twist.linear.x == 0.0
    np.testing.assert_array_equal(np.diag(first.twist.covariance.reshape(6, 6)), -np.ones(6))
    linear = second.twist.twist.linear
    np.testing.assert_allclose([linear.x, linear.y, linear.z], [10.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_array_equal(second.twist.covariance, np.zeros(36))


def test_writer_twist_on_a_circle(tmp_path):
    # Radius 10 m, yaw rate 0.5 rad/s, 0.1 s apart: the chord in the previous base_link frame is
    # (r sin(w dt), r (1 - cos(w dt))), the rotation w dt about z.
    radius, rate, dt = 10.0, 0.5, 0.1
    poses = [
        pose(radius * math.sin(rate * t), radius * (1 - math.cos(rate * t)), yaw=rate * t) for t in (0.0, dt)
    ]
    with CameraBagWriter(tmp_path / "bag", CAMERA) as writer:
        for stamp, vehicle in zip(IMAGE_STAMPS, poses, strict=False):
            writer.write(RGB, stamp, odometry=vehicle)
    with AnyReader([tmp_path / "bag"]) as reader:
        connections = [c for c in reader.connections if c.topic == ODOMETRY_TOPIC]
        last = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections)][-1]
    twist = last.twist.twist
    expected = [radius * math.sin(rate * dt) / dt, radius * (1 - math.cos(rate * dt)) / dt, 0.0]
    np.testing.assert_allclose([twist.linear.x, twist.linear.y, twist.linear.z], expected, atol=1e-9)
    np.testing.assert_allclose([twist.angular.x, twist.angular.y, twist.angular.z], [0, 0, rate], atol=1e-9)


def test_writer_rejects_bad_odometry(tmp_path):
    with CameraBagWriter(tmp_path / "bag", CAMERA) as writer:
        with pytest.raises(ValueError, match="odometry: not a rigid transform"):
            writer.write(RGB, IMAGE_STAMPS[0], odometry=np.diag([2.0, 1.0, 1.0, 1.0]))
        with pytest.raises(ValueError, match="expected a finite 4x4 pose"):
            writer.write(RGB, IMAGE_STAMPS[0], odometry=np.eye(3))
        writer.write(RGB, IMAGE_STAMPS[1], odometry=pose())
        with pytest.raises(ValueError, match="odometry stamps must increase"):
            writer.write(RGB, IMAGE_STAMPS[0], odometry=pose(x=1.0))
    # A rejected frame wrote nothing: one image, one Odometry.
    with AnyReader([tmp_path / "bag"]) as reader:
        assert {c.topic: c.msgcount for c in reader.connections}[KITTI_IMAGE_TOPIC] == 1
        assert {c.topic: c.msgcount for c in reader.connections}[ODOMETRY_TOPIC] == 1


@pytest.mark.parametrize(
    ("angles", "expected"),
    [
        ((math.pi / 2, 0.0, 0.0), (0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))),
        ((math.pi, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)),
        ((0.0, 0.0, math.pi / 2), (math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))),
        ((0.0, -math.pi / 3, 0.0), (0.0, -0.5, 0.0, math.sqrt(0.75))),
    ],
)
def test_quaternions_hand_computed(angles, expected):
    rotation = euler_zyx_to_matrix(*angles)
    np.testing.assert_allclose(quaternion_xyzw(rotation), expected, atol=1e-12)
    np.testing.assert_allclose(rotation_matrices(np.array([expected]))[0], rotation, atol=1e-12)


def test_quaternion_round_trip_of_vehicle_attitudes():
    rng = np.random.default_rng(0)
    yaw, pitch, roll = rng.uniform(-math.pi, math.pi, 50), rng.uniform(-1.5, 1.5, 50), rng.uniform(-3, 3, 50)
    rotations = euler_zyx_to_matrix(yaw, pitch, roll)
    quaternions = np.array([quaternion_xyzw(r) for r in rotations])
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(rotation_matrices(quaternions), rotations, atol=1e-12)
    # Unnormalised input quaternions (as some bags carry) are normalised.
    np.testing.assert_allclose(rotation_matrices(3.0 * quaternions), rotations, atol=1e-12)


def test_odometry_at_100_hz_offset_from_the_images(tmp_path, caplog):
    # 10 m/s along x, samples every 10 ms from 23 ms after frame 0 to 723 ms: frames 1..7 inside.
    stamps = [EPOCH_NS + 23_000_000 + j * 10_000_000 for j in range(71)]
    odometry = [(s, odometry_msg(s, x=10.0 * (s - EPOCH_NS) / 1e9 - 4.0)) for s in stamps]
    bag = write_bag(tmp_path / "bag", {"/vehicle/odom": odometry})
    with caplog.at_level(logging.INFO):
        sequence = RosbagSequence(bag)
    assert "7 of 10 frames have odometry (topic /vehicle/odom)" in caplog.text
    assert np.isnan(sequence.odometer[[0, 8, 9]]).all()
    np.testing.assert_allclose(relative(sequence.odometer, 1)[1:8], np.arange(7, dtype=float), atol=1e-9)
    assert sequence.travel(1, 2) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(sequence.travel(0, 1))


def test_odometer_interpolates_path_length_between_samples(tmp_path):
    # Accelerating: positions 0, 1, 4 m at 0, 250, 500 ms. Frames at 100 and 200 ms lie 2/5 and 4/5 of the
    # way through the first step (0.4, 0.8 m), those at 300 and 400 ms 1/5 and 3/5 through the second
    # (1 + 0.6, 1 + 1.8 m).
    samples = [
        (EPOCH_NS + ms * 1_000_000, odometry_msg(EPOCH_NS + ms * 1_000_000, x))
        for ms, x in ((0, 0.0), (250, 1.0), (500, 4.0))
    ]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/odom": samples}))
    np.testing.assert_allclose(relative(sequence.odometer, 0)[:6], [0.0, 0.4, 0.8, 1.6, 2.8, 4.0], atol=1e-9)
    assert np.isnan(sequence.odometer[6:]).all()
    assert sequence.travel(1, 3) == pytest.approx(1.2, abs=1e-9)


def test_odometry_gap_leaves_frames_without_odometry(tmp_path):
    # Samples every 100 ms but none between 250 ms and 850 ms (a 600 ms dropout > the 0.5 s limit).
    ms = [0, 50, 150, 250, 850, 950]
    samples = [(EPOCH_NS + m * 1_000_000, odometry_msg(EPOCH_NS + m * 1_000_000, m / 100)) for m in ms]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/odom": samples}))
    known = np.isfinite(sequence.odometer)
    assert known.tolist() == [True, True, True, False, False, False, False, False, False, True]


def test_unsorted_duplicate_and_undecodable_samples(tmp_path, caplog):
    stamps = [EPOCH_NS + j * 50_000_000 for j in range(20)]  # 20 Hz over the 10 frames
    good = [(s, odometry_msg(s, x=(s - EPOCH_NS) / 1e8)) for s in stamps]  # 10 m/s
    # Header stamps out of receive order, one stamp repeated (with a wrong position: the first is kept),
    # and two messages that do not deserialize.
    messages = good[::-1] + [(stamps[-1] + 1, odometry_msg(stamps[4], x=99.0))]
    messages += [(stamps[3] + 1, b"\x00\x01\x00\x00broken"), (stamps[5] + 1, b"\x00\x01")]
    bag = write_bag(tmp_path / "bag", {"/odom": messages})
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(bag)
    assert "topic /odom: skipped 2 undecodable messages" in caplog.text
    assert "topic /odom: dropped 1 samples with a repeated stamp" in caplog.text
    assert str(bag) in caplog.text
    np.testing.assert_allclose(relative(sequence.odometer, 0), np.arange(FRAMES, dtype=float), atol=1e-9)


def test_twist_stamped_speed_is_integrated(tmp_path):
    # 10 m/s in a turning direction (speed = norm of the linear velocity), 100 Hz, 3 ms after the images.
    stamps = [EPOCH_NS + 3_000_000 + j * 10_000_000 for j in range(100)]
    twists = [
        (s, twist_msg(s, (6.0 * math.cos(j / 9), 6.0 * math.sin(j / 9), 8.0))) for j, s in enumerate(stamps)
    ]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/vel": twists}))
    assert np.isnan(sequence.odometer[0]) and np.isfinite(sequence.odometer[1:]).all()
    np.testing.assert_allclose(np.diff(sequence.odometer[1:]), np.ones(FRAMES - 2), atol=1e-9)


def test_twist_with_covariance_accelerating(tmp_path):
    # Speed 2 t m/s (t from frame 0), samples every 10 ms including the frame stamps: the trapezoidal rule
    # is exact for a linear speed, so the distance from frame i to frame j is t_j^2 - t_i^2.
    stamps = [EPOCH_NS + j * 10_000_000 for j in range(91)]
    twists = [(s, twist_msg(s, (2.0 * (s - EPOCH_NS) / 1e9, 0.0, 0.0), covariance=True)) for s in stamps]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/vel": twists}))
    t = np.arange(FRAMES) * 0.1
    np.testing.assert_allclose(relative(sequence.odometer, 0), t**2, atol=1e-9)
    assert sequence.travel(3, 5) == pytest.approx(0.25 - 0.09, abs=1e-9)


def test_tf_world_to_base_link_with_static_transforms(tmp_path):
    # kitti2bag style: /tf carries world -> base_link (moving 1 m a frame along a diagonal) and, in the same
    # messages, base_link -> velo_link, which never changes; /tf_static is not odometry.
    tf = [
        (
            s,
            tf_msg(
                transform(s, "world", "base_link", (0.6 * k, 0.8 * k, 0.1), yaw=0.2 * k),
                transform(s, "base_link", "velo_link", (0.8, 0.0, 1.7)),
            ),
        )
        for k, s in enumerate(IMAGE_STAMPS)
    ]
    static = [(IMAGE_STAMPS[0], tf_msg(transform(IMAGE_STAMPS[0], "base_link", "camera", (1.0, 2.0, 3.0))))]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/tf": tf, "/tf_static": static}))
    np.testing.assert_allclose(relative(sequence.odometer, 0), np.arange(FRAMES, dtype=float), atol=1e-9)


def test_tf_chain_is_composed(tmp_path):
    # map -> odom turns by 0.1 rad a frame, odom -> base_link advances 1 m a frame along odom's x: base_link
    # in map is x_k (cos yaw_k, sin yaw_k).
    x, yaw = np.arange(FRAMES, dtype=float), 0.1 * np.arange(FRAMES)
    tf = [
        (
            s,
            tf_msg(
                transform(s, "/map", "odom", yaw=yaw[k]), transform(s, "odom", "base_link", (x[k], 0.0, 0.0))
            ),
        )
        for k, s in enumerate(IMAGE_STAMPS)
    ]
    sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/tf": tf}))
    steps = np.hypot(np.diff(x * np.cos(yaw)), np.diff(x * np.sin(yaw)))
    np.testing.assert_allclose(np.diff(sequence.odometer), steps, atol=1e-9)


def test_tf_chain_with_different_stamps_or_branches_is_an_error(tmp_path):
    tf = [
        (
            s,
            tf_msg(
                transform(s, "map", "odom", (0.1 * k, 0.0, 0.0)),
                transform(s + 1000, "odom", "base_link", (k, 0.0, 0.0)),
            ),
        )
        for k, s in enumerate(IMAGE_STAMPS)
    ]
    with pytest.raises(ValueError, match="stamped at different times") as info:
        RosbagSequence(write_bag(tmp_path / "chain", {"/tf": tf}))
    assert "nav_msgs/Odometry" in str(info.value) and "--odometry-topic" in str(info.value)
    branches = [
        (
            s,
            tf_msg(
                transform(s, "world", "car", (k, 0.0, 0.0)), transform(s, "world", "truck", (0.0, k, 0.0))
            ),
        )
        for k, s in enumerate(IMAGE_STAMPS)
    ]
    with pytest.raises(
        ValueError, match=r"2 moving transforms \(world -> car, world -> truck\) that do not form one chain"
    ):
        RosbagSequence(write_bag(tmp_path / "branches", {"/tf": branches}))


def test_tf_that_never_moves_gives_no_odometry(tmp_path, caplog):
    tf = [(s, tf_msg(transform(s, "world", "base_link", (1.0, 2.0, 0.0)))) for s in IMAGE_STAMPS]
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/tf": tf}))
    assert "no transform changes over the recording" in caplog.text
    assert np.isnan(sequence.odometer).all() and math.isnan(sequence.travel(0, 1))


def test_non_finite_tf_samples_are_dropped_before_telling_moving_from_static_links(tmp_path, caplog):
    """One NaN among a moving link's samples made its range NaN, so the link passed for static and the bag
    lost all its odometry ("no transform changes"). Non-finite rows are dropped and counted first: the moving
    link still moves 1 m a frame (frame 3, between the samples of frames 2 and 4, interpolates to 3 m), and a
    static link with an inf in one sample stays static."""

    def sample(stamp: int, x: float, velo_z: float = 1.7):
        moving = transform(stamp, "odom", "base_link", (x, 0.0, 0.0))
        return stamp, tf_msg(moving, transform(stamp, "base_link", "velo_link", (0.8, 0.0, velo_z)))

    tf = [sample(s, float(k)) for k, s in enumerate(IMAGE_STAMPS)]
    tf[3] = sample(IMAGE_STAMPS[3], math.nan)
    tf[5] = sample(IMAGE_STAMPS[5], 5.0, velo_z=math.inf)
    with caplog.at_level(logging.WARNING):
        sequence = RosbagSequence(write_bag(tmp_path / "bag", {"/tf": tf}))
    assert "topic /tf odom -> base_link: dropped 1 samples with non-finite values" in caplog.text
    assert "topic /tf base_link -> velo_link: dropped 1 samples with non-finite values" in caplog.text
    assert "no transform changes" not in caplog.text
    np.testing.assert_allclose(relative(sequence.odometer, 0), np.arange(FRAMES, dtype=float), atol=1e-9)


def test_odometry_topic_selection(random_checkpoint, tmp_path):
    odometry = [(s, odometry_msg(s, x=0.5 * k)) for k, s in enumerate(IMAGE_STAMPS)]
    twists = [(s, twist_msg(s, (3.0, 4.0, 0.0))) for s in IMAGE_STAMPS]
    bag = write_bag(tmp_path / "bag", {"/odom": odometry, "/vel": twists})
    with pytest.raises(ValueError, match="several odometry topics") as info:
        RosbagSequence(bag)
    for text in (
        "/odom (nav_msgs/msg/Odometry, 10 msgs)",
        "/vel (geometry_msgs/msg/TwistStamped",
        "--odometry-topic",
        "data.odometry_topic",
    ):
        assert text in str(info.value)
    assert RosbagSequence(bag, odometry_topic="/odom").travel(0, 4) == pytest.approx(2.0)
    assert RosbagSequence(bag, odometry_topic="/vel").travel(0, 4) == pytest.approx(2.0)  # 5 m/s for 0.4 s
    assert RosbagSequence(bag, odometry_topic="none").odometer is None
    with pytest.raises(ValueError, match="odometry topic '/camera_info' not found or not of a type"):
        RosbagSequence(bag, odometry_topic="/camera_info")
    # Through the data configuration.
    (sequence,) = open_sequences(bag, DataConfig(odometry_topic="/vel"))
    assert sequence.travel(1, 2) == pytest.approx(0.5)
    assert open_sequences(bag, DataConfig(odometry_topic="none"))[0].odometer is None
    # Inference reads no odometry: the ambiguous bag still serves.
    out = tmp_path / "depth"
    summary = run_inference(random_checkpoint, bag, out, scale=ScaleSettings("fixed"), progress=False)
    assert (summary["frames"], summary["input_kind"]) == (len(IMAGE_STAMPS), "rosbag")


def test_no_odometry_topic(tmp_path):
    with CameraBagWriter(tmp_path / "bag", CAMERA) as writer:
        writer.write(RGB, IMAGE_STAMPS[0])
        writer.write(RGB, IMAGE_STAMPS[1])
    sequence = RosbagSequence(tmp_path / "bag")
    assert sequence.odometer is None and math.isnan(sequence.travel(0, 1))
