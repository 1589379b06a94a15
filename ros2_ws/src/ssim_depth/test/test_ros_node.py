"""The depth node and the bag player on a real ROS 2 graph (rclpy from the pip wheels, DDS on localhost).

A randomly initialised 64x96 network is exported to ONNX and served with onnxruntime (scale source "fixed":
the network is scale-less); the published depth is compared with the bare DepthEstimator on the same frame,
the cloud with the pinhole back-projection formula written out here. The scale sources are checked with
"oracle" models (the repository's tests/depth_oracle.py) that predict a rendered street's exact depth / 3.
Every node runs in one rclpy context with its own namespace, so tests cannot hear each other; the domain id
is random and discovery is limited to localhost, so parallel runs cannot either. Waiting is bounded
(TIMEOUT) and fails with what was awaited.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Python packages (extra 'ros') are not installed")

import rclpy
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from skimage import data
from ssim_depth.codecs import image_msg_to_depth
from ssim_depth.node import DepthNode
from ssim_depth.tools.play import play
from std_msgs.msg import Float32

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data.bagio import CameraBagWriter
from ssim_depth_core.runtime import DepthEstimator

NET_HEIGHT, NET_WIDTH = 64, 96
HEIGHT, WIDTH = 80, 120  # camera resolution, deliberately not the network's
K = (100.0, 110.0, 61.5, 38.0)  # fx, fy, cx, cy at HEIGHT x WIDTH
K_MATRIX = [[K[0], 0.0, K[2]], [0.0, K[1], K[3]], [0.0, 0.0, 1.0]]
TIMEOUT = 20.0
OUTPUTS = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "depth/preview": Image}
_stamps = itertools.count(1)
_namespaces = itertools.count(1)
_ORACLE = Path(__file__).resolve().parents[4] / "tests" / "depth_oracle.py"
DDS_BENCH = Path(__file__).resolve().parents[4] / "bench" / "dds_large_frames.py"
_spec = importlib.util.spec_from_file_location("ssim_depth_test_depth_oracle", _ORACLE)
depth_oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(depth_oracle)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ros():
    """An initialised rclpy context on a random domain, localhost only, with an executor spinning."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ROS_DOMAIN_ID", str(random.randint(1, 100)))
        env.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        context = Context()
        rclpy.init(context=context)
        executor = SingleThreadedExecutor(context=context)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        yield context, executor
        executor.shutdown()
        rclpy.shutdown(context=context)
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def model(random_onnx):
    """The shared randomly initialised network, exported to ONNX at 64x96."""
    return random_onnx


@pytest.fixture(scope="module")
def estimator(model):
    return DepthEstimator(model, backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def photo():
    """A real photograph at the camera resolution (HEIGHT x WIDTH RGB uint8)."""
    return np.ascontiguousarray(data.astronaut()[0:320:4, 16:496:4])


class Graph:
    """One DepthNode plus a client node publishing its inputs and recording its outputs by stamp."""

    def __init__(self, ros, model: Path, **params) -> None:
        self.context, self.executor = ros
        namespace = f"/t{next(_namespaces)}"
        overrides = {
            "model_path": str(model),
            "backend": "onnxruntime",
            "stats_period": 0.0,
            "scale_source": "fixed",
            **params,
        }
        overrides = {name.replace("{namespace}", namespace): value for name, value in overrides.items()}
        self.node = DepthNode(
            context=self.context,
            namespace=namespace,
            parameter_overrides=[Parameter(name, value=value) for name, value in overrides.items()],
        )
        self.client = rclpy.create_node("client", namespace=namespace, context=self.context)
        self.received: dict[str, dict[tuple[int, int], object]] = {topic: {} for topic in OUTPUTS}
        for topic, kind in OUTPUTS.items():
            self.client.create_subscription(kind, topic, lambda msg, t=topic: self._store(t, msg), 10)
        self.scales: list[float] = []  # depth/scale in arrival order (Float32 has no header)
        self.client.create_subscription(Float32, "depth/scale", lambda msg: self.scales.append(msg.data), 10)
        self.image_pub = self.client.create_publisher(Image, "image", 10)
        self.compressed_pub = self.client.create_publisher(CompressedImage, "image/compressed", 10)
        self.info_pub = self.client.create_publisher(CameraInfo, "camera_info", 10)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)

    def _store(self, topic: str, msg) -> None:
        self.received[topic][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def request(self, msg, info: CameraInfo | None = None, outputs=("depth",)) -> dict[str, object]:
        """Publish ``msg`` (and ``info``) until every topic in ``outputs`` has answered with its stamp.

        Re-publishing covers discovery still in progress; the node only ever works on the newest frame.
        """
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        publisher = self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub
        deadline = time.monotonic() + TIMEOUT
        while True:
            if info is not None:
                self.info_pub.publish(info)
            publisher.publish(msg)
            retry = time.monotonic() + 0.5
            while time.monotonic() < retry:
                if all(key in self.received[topic] for topic in outputs):
                    return {
                        topic: self.received[topic][key] for topic in OUTPUTS if key in self.received[topic]
                    }
                time.sleep(0.005)
            if time.monotonic() > deadline:
                missing = [topic for topic in outputs if key not in self.received[topic]]
                pytest.fail(f"no {missing} for stamp {key} within {TIMEOUT} s; stats {vars(self.node.stats)}")

    def give_camera_info(self, info: CameraInfo, tag: str) -> None:
        """Publish ``info`` (its frame_id set to ``tag``) until it is the node's latest camera_info."""
        info.header.frame_id = tag
        deadline = time.monotonic() + TIMEOUT
        while getattr(self.node._camera_info, "header", None) is None or (
            self.node._camera_info.header.frame_id != tag
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"camera_info {tag!r} did not reach the node within {TIMEOUT} s")
            self.info_pub.publish(info)
            time.sleep(0.02)

    def close(self) -> None:
        for node in (self.node, self.client):
            self.executor.remove_node(node)
            node.destroy_node()


@pytest.fixture()
def graph(ros, model):
    graphs = []

    def make(**params) -> Graph:
        graphs.append(Graph(ros, model, **params))
        return graphs[-1]

    yield make
    for g in graphs:
        g.close()


def wait_until(condition, what: str):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {TIMEOUT} s waiting for {what}")
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------------ messages
def image_msg(pixels: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera_color_left") -> Image:
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.step = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1)
    msg.data = np.ascontiguousarray(pixels).tobytes()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = next(_stamps), 123_456_789
    return msg


def camera_info(width: int = WIDTH, height: int = HEIGHT) -> CameraInfo:
    fx, fy, cx, cy = K
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def cloud_arrays(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Fields of a PointCloud2 as (height, width) arrays, parsed from the message's own field table."""
    assert not msg.is_bigendian and msg.row_step == msg.point_step * msg.width
    dtype = np.dtype(
        {
            "names": [f.name for f in msg.fields],
            "formats": ["<f4"] * len(msg.fields),
            "offsets": [f.offset for f in msg.fields],
            "itemsize": msg.point_step,
        }
    )
    assert all(f.datatype == 7 and f.count == 1 for f in msg.fields)  # FLOAT32 scalars
    points = np.frombuffer(msg.data, dtype=dtype).reshape(msg.height, msg.width)
    return {name: points[name] for name in dtype.names}


def check_cloud(
    cloud: PointCloud2, depth: np.ndarray, k: np.ndarray, colour: np.ndarray, stride: int
) -> None:
    """The cloud is depth back-projected through k: z = depth, x = (u - cx) z / fx, y = (v - cy) z / fy."""
    fields = cloud_arrays(cloud)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    z = depth[::stride, ::stride]
    v, u = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride].astype(np.float64)
    fx, cx, fy, cy = k[0, 0], k[0, 2], k[1, 1], k[1, 2]
    assert (cloud.height, cloud.width) == z.shape
    np.testing.assert_allclose(fields["z"], z, rtol=1e-6)
    np.testing.assert_allclose(fields["x"], (u - cx) * z / fx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fields["y"], (v - cy) * z / fy, rtol=1e-5, atol=1e-5)
    bits = fields["rgb"].view("<u4")
    rgb = np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1)
    np.testing.assert_array_equal(rgb, colour[::stride, ::stride])
    assert cloud.is_dense == bool(np.isfinite(z).all())


# --------------------------------------------------------------------------------------------------- tests
def test_outputs_at_input_resolution(graph, estimator, photo):
    g = graph(point_stride=3)
    msg = image_msg(photo)
    out = g.request(msg, camera_info(), outputs=tuple(OUTPUTS))

    depth_msg = out["depth"]
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", HEIGHT, WIDTH)
    for topic in OUTPUTS:
        assert out[topic].header == msg.header, topic
    depth = image_msg_to_depth(depth_msg)
    expected = estimator(photo)
    np.testing.assert_allclose(depth, expected, rtol=1e-5)
    assert np.isfinite(depth).all()

    info = out["depth/camera_info"]
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(info.k, camera_info().k)
    check_cloud(out["points"], depth, np.asarray(info.k).reshape(3, 3), photo, stride=3)

    preview = out["depth/preview"]
    assert (preview.encoding, preview.height, preview.width) == ("bgr8", HEIGHT, WIDTH)


def test_network_resolution_scales_camera_info_and_cloud(graph, estimator, photo):
    g = graph(output_resolution="network", point_stride=2)
    out = g.request(image_msg(photo), camera_info(), outputs=("depth", "depth/camera_info", "points"))
    depth = image_msg_to_depth(out["depth"])
    assert depth.shape == (NET_HEIGHT, NET_WIDTH)
    reference = DepthEstimator(estimator.backend, output_size=(NET_HEIGHT, NET_WIDTH))
    np.testing.assert_allclose(depth, reference(photo), rtol=1e-5)

    info = out["depth/camera_info"]
    sx, sy = NET_WIDTH / WIDTH, NET_HEIGHT / HEIGHT
    fx, fy, cx, cy = K
    assert (info.width, info.height) == (NET_WIDTH, NET_HEIGHT)
    cx, cy = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5  # pixel centres at integer coordinates
    np.testing.assert_allclose(info.k, [fx * sx, 0, cx, 0, fy * sy, cy, 0, 0, 1])
    np.testing.assert_allclose(info.p, [fx * sx, 0, cx, 0, 0, fy * sy, cy, 0, 0, 0, 1, 0])
    colour = cv2.resize(photo, (NET_WIDTH, NET_HEIGHT), interpolation=cv2.INTER_AREA)
    check_cloud(out["points"], depth, np.asarray(info.k).reshape(3, 3), colour, stride=2)


def test_range_limit_publishes_nan_for_invalid_pixels(graph, estimator, photo):
    expected = estimator(photo)
    limit = float(np.median(expected))
    g = graph(range_max=limit, point_stride=1)
    out = g.request(image_msg(photo), camera_info(), outputs=("depth", "points"))
    depth = image_msg_to_depth(out["depth"])
    invalid = expected >= limit
    assert 0 < invalid.sum() < invalid.size
    np.testing.assert_array_equal(np.isnan(depth), invalid)
    np.testing.assert_allclose(depth[~invalid], expected[~invalid], rtol=1e-5)
    fields = cloud_arrays(out["points"])
    for axis in "xyz":
        np.testing.assert_array_equal(np.isnan(fields[axis]), invalid)
    assert not out["points"].is_dense


def test_fallback_intrinsics_from_parameters(graph, photo):
    fx, fy, cx, cy = K
    g = graph(fx=fx, fy=fy, cx=cx, cy=cy, point_stride=4)
    out = g.request(image_msg(photo), info=None, outputs=("depth", "depth/camera_info", "points"))
    info = out["depth/camera_info"]
    np.testing.assert_allclose(info.k, camera_info().k)
    check_cloud(out["points"], image_msg_to_depth(out["depth"]), np.asarray(info.k).reshape(3, 3), photo, 4)


def unusable_camera_infos() -> dict[str, CameraInfo]:
    """CameraInfo messages that must never reach a cloud, by what is wrong with them."""
    cases = {}
    for name, index, value in [
        ("NaN fx", 0, float("nan")),
        ("inf fx", 0, float("inf")),
        ("tiny fx", 0, 1e-30),
        ("NaN cx", 2, float("nan")),
        ("negative fy", 5, -110.0),
    ]:
        info = camera_info()
        info.k[index] = value
        info.p = [0.0] * 12  # K is used
        cases[name] = info
    implausible_k = camera_info()  # P is used, but depth/camera_info republishes K too
    implausible_k.k[0] = implausible_k.k[4] = 0.1
    cases["implausible K beside a valid P"] = implausible_k
    cases["1x1 size"] = camera_info(width=1, height=1)
    cases["other aspect ratio"] = camera_info(width=WIDTH, height=WIDTH)
    cases["K and P zero"] = CameraInfo(width=WIDTH, height=HEIGHT)
    return cases


@pytest.mark.parametrize("fallback", [{}, {"fx": K[0], "fy": K[1], "cx": 1000.0, "cy": K[3]}])
def test_unusable_camera_info_publishes_depth_but_no_cloud_nor_camera_info(graph, estimator, photo, fallback):
    """Without a usable fallback (none, or a principal point outside the image), depth only."""
    g = graph(point_stride=4, **fallback)
    unusable = []
    for name, info in unusable_camera_infos().items():
        g.give_camera_info(info, name)
        msg = image_msg(photo)
        out = g.request(msg, outputs=("depth", "depth/preview"))
        depth = image_msg_to_depth(out["depth"])
        np.testing.assert_allclose(depth, estimator(photo), rtol=1e-5, err_msg=name)
        unusable.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
    # A valid camera_info afterwards yields a cloud; the writers keep order, so any cloud or camera_info of
    # the earlier frames would have arrived before this one.
    out = g.request(image_msg(photo), camera_info(), outputs=("depth", "depth/camera_info", "points"))
    check_cloud(out["points"], image_msg_to_depth(out["depth"]), np.asarray(K_MATRIX), photo, 4)
    for topic in ("points", "depth/camera_info"):
        assert not set(unusable) & g.received[topic].keys(), topic
    assert g.node.stats.failed == 0


def test_unusable_camera_info_falls_back_to_the_parameters(graph, photo):
    fx, fy, cx, cy = K
    g = graph(fx=fx, fy=fy, cx=cx, cy=cy, point_stride=4)
    for name, info in unusable_camera_infos().items():
        g.give_camera_info(info, name)
        out = g.request(image_msg(photo), outputs=("depth", "depth/camera_info", "points"))
        published = out["depth/camera_info"]
        assert (published.width, published.height) == (WIDTH, HEIGHT), name
        np.testing.assert_allclose(published.k, camera_info().k, err_msg=name)
        check_cloud(out["points"], image_msg_to_depth(out["depth"]), np.asarray(K_MATRIX), photo, 4)


def test_camera_info_of_another_resolution_with_the_same_aspect_is_rescaled(graph, photo):
    fx, fy, cx, cy = K
    double = camera_info(width=2 * WIDTH, height=2 * HEIGHT)  # e.g. calibrated at full resolution, binned 2x2
    double.k = [2 * fx, 0.0, 2 * cx + 0.5, 0.0, 2 * fy, 2 * cy + 0.5, 0.0, 0.0, 1.0]
    double.p = [0.0] * 12
    g = graph(point_stride=4)
    out = g.request(image_msg(photo), double, outputs=("depth", "depth/camera_info", "points"))
    np.testing.assert_allclose(out["depth/camera_info"].k, camera_info().k)
    np.testing.assert_allclose(out["depth/camera_info"].p, camera_info().p)  # filled from K: no P was given
    check_cloud(out["points"], image_msg_to_depth(out["depth"]), np.asarray(K_MATRIX), photo, 4)


def test_encodings_padding_and_compressed_input(graph, estimator, photo):
    expected = estimator(photo)
    g = graph(publish_points=False, publish_preview=False)
    padded = np.concatenate([cv2.cvtColor(photo, cv2.COLOR_RGB2BGRA), np.zeros((HEIGHT, 3, 4), np.uint8)], 1)
    msg = image_msg(padded, "bgra8")
    msg.width = WIDTH  # the extra 3 pixels (12 bytes) per row are padding
    out = g.request(msg, camera_info())
    np.testing.assert_allclose(image_msg_to_depth(out["depth"]), expected, rtol=1e-5)

    compressed = graph(compressed=True, publish_points=False, publish_preview=False)
    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="png", data=png.tobytes())
    msg.header.stamp.sec = next(_stamps)
    out = compressed.request(msg, camera_info())
    np.testing.assert_allclose(image_msg_to_depth(out["depth"]), expected, rtol=1e-5)


def test_malformed_frames_are_dropped_and_the_node_keeps_serving(graph, estimator, photo):
    g = graph(publish_points=False)
    good = image_msg(photo)
    malformed = [
        Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=bytes(10)),  # length
        Image(height=HEIGHT, width=WIDTH, encoding="yuv422", step=WIDTH * 2, data=bytes(WIDTH * 2 * HEIGHT)),
        Image(height=0, width=0, encoding="rgb8", step=0, data=b""),  # empty
        Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH, data=bytes(WIDTH * HEIGHT)),  # step
    ]
    g.request(good, camera_info())  # discovery complete
    for msg in malformed:
        rejected = g.node.stats.rejected
        g.image_pub.publish(msg)
        wait_until(lambda r=rejected: g.node.stats.rejected > r, f"the node to reject {msg.encoding!r}")
    assert g.node.stats.failed == 0
    out = g.request(image_msg(photo), camera_info())
    np.testing.assert_allclose(image_msg_to_depth(out["depth"]), estimator(photo), rtol=1e-5)


def test_oversized_frames_are_dropped_before_decoding(graph, estimator, photo):
    g = graph(max_input_pixels=WIDTH * HEIGHT, publish_points=False, publish_preview=False)
    g.request(image_msg(photo), camera_info())  # discovery complete
    rejected = g.node.stats.rejected
    g.image_pub.publish(image_msg(np.tile(photo, (1, 2, 1))))  # WIDTH * HEIGHT * 2 pixels
    wait_until(lambda: g.node.stats.rejected > rejected, "the node to reject the oversized raw image")
    out = g.request(image_msg(photo))
    np.testing.assert_allclose(image_msg_to_depth(out["depth"]), estimator(photo), rtol=1e-5)

    compressed = graph(compressed=True, publish_points=False, publish_preview=False)  # default: 16 MP
    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    assert ok
    good = CompressedImage(format="png", data=png.tobytes())
    good.header.stamp.sec = next(_stamps)
    compressed.request(good)  # discovery complete
    # A PNG header declaring 20000 x 20000 (1.2 GB decoded): refused from its first 33 bytes.
    huge = bytearray(png.tobytes())
    huge[16:24] = (20000).to_bytes(4, "big") * 2
    rejected = compressed.node.stats.rejected
    compressed.compressed_pub.publish(CompressedImage(format="png", data=bytes(huge)))
    wait_until(lambda: compressed.node.stats.rejected > rejected, "the node to reject the 20000x20000 PNG")
    good.header.stamp.sec = next(_stamps)
    out = compressed.request(good)
    np.testing.assert_allclose(image_msg_to_depth(out["depth"]), estimator(photo), rtol=1e-5)
    assert g.node.stats.failed == compressed.node.stats.failed == 0


def test_full_hd_frames_from_another_process_arrive_with_a_reliable_subscription(graph, ros):
    """1920x1080 rgb8 at 10 Hz from a separate process (real transport, not in-process delivery), published by
    bench/dds_large_frames.py's publisher.

    The image subscription's reliability is overridden to reliable by parameter (the default best-effort
    sensor-data QoS loses most such frames: the same bench). Asserted: every frame arrives, each is processed
    or counted as dropped, none fails, and the newest is answered. How many are answered is the machine's
    speed: the bench's node row measures it.
    """
    import subprocess
    import sys

    frames = 30
    g = graph(
        **{"qos_overrides.{namespace}/image.subscription.reliability": "reliable"},
        output_resolution="network",
        publish_points=False,
        publish_preview=False,
    )
    topic = g.node._image_sub.topic_name
    assert g.node._image_sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    publisher = subprocess.run(
        [sys.executable, str(DDS_BENCH), "--role", "pub", "1920x1080", str(frames), "10", topic],
        timeout=TIMEOUT + frames,
        capture_output=True,
        text=True,
    )
    assert publisher.returncode == 0, publisher.stderr
    stats = g.node.stats
    wait_until(
        lambda: (
            stats.received == frames
            and stats.received == stats.processed + stats.dropped + stats.rejected + stats.failed
        ),
        f"all {frames} frames from {topic} received and processed or counted as dropped",
    )
    assert stats.failed == 0 and stats.rejected == 0
    wait_until(lambda: (frames, 0) in g.received["depth"], "the newest frame answered")
    print(f"received {stats.received}/{frames}, answered {stats.processed}")


def test_input_qos_overrides_include_durability(graph):
    """docs/ros.md's four overridable policies, e.g. a transient-local camera_info for a latched publisher."""
    g = graph(
        **{
            "qos_overrides.{namespace}/camera_info.subscription.durability": "transient_local",
            "qos_overrides.{namespace}/image.subscription.history": "keep_last",
            "qos_overrides.{namespace}/image.subscription.depth": 2,
        }
    )
    assert g.node._info_sub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert g.node._image_sub.qos_profile.depth == 2
    # one node's overrides are its own: rclpy writes them into the profile object it is given
    other = graph()
    assert other.node._info_sub.qos_profile.durability == DurabilityPolicy.VOLATILE
    assert other.node._image_sub.qos_profile.depth == 5


def test_burst_is_served_newest_first_without_backlog(graph, photo):
    g = graph(publish_points=False, publish_preview=False)
    g.request(image_msg(photo), camera_info())  # discovery complete
    base = vars(g.node.stats).copy()
    burst = [image_msg(photo) for _ in range(30)]
    for msg in burst:
        g.image_pub.publish(msg)
    g.request(burst[-1])  # the newest frame is always served (re-published only if it was lost)
    stats = g.node.stats
    wait_until(
        lambda: (
            stats.received - base["received"]
            == sum(getattr(stats, k) - base[k] for k in ("processed", "dropped", "rejected", "failed"))
        ),
        "every received frame to be processed or counted as dropped",
    )
    sent = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in burst}
    answered = [key for key in g.received["depth"] if key in sent]  # in order of arrival
    assert answered == sorted(answered), "frames were served out of order"
    assert answered[-1] == max(sent)


def test_parameter_validation(graph, model, ros, tmp_path):
    g = graph()
    cases = {
        "point_stride": (0, "out of range"),
        "backend": ("foo", "backend 'foo' is not one of"),
        "output_resolution": ("half", "output_resolution 'half'"),
        "model_path": (str(tmp_path / "missing.onnx"), "missing.onnx' is not a file"),
        "min_depth": (200.0, "min_depth 200.0 must be < max_depth"),
        "scale_source": ("lidar", "scale_source 'lidar' is not one of model, camera_height, fixed"),
        "camera_pitch": (2.0, "out of range"),
        "ground_normal": ("up", "ground_normal must be one of fitted, mounting, got 'up'"),
    }
    g.node.set_parameters([Parameter("max_depth", value=100.0)])
    for name, (value, reason) in cases.items():
        (result,) = g.node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and reason in result.reason, (name, result.reason)
    (result,) = g.node.set_parameters([Parameter("compressed", value=True)])
    assert not result.successful and "read-only" in result.reason
    assert g.node.params.point_stride == 2 and g.node.params.backend == "onnxruntime"

    context, _ = ros
    with pytest.raises(ValueError, match="model_path is empty"):
        DepthNode(context=context, namespace="/bad1", parameter_overrides=[Parameter("model_path", value="")])
    with pytest.raises(InvalidParameterValueException, match="point_stride"):
        DepthNode(
            context=context,
            namespace="/bad2",
            parameter_overrides=[
                Parameter("model_path", value=str(model)),
                Parameter("point_stride", value=0),
            ],
        )


def test_model_parameter_changes_apply_on_the_open_backend(graph, estimator, photo):
    g = graph(publish_points=False, publish_preview=False)
    np.testing.assert_allclose(
        image_msg_to_depth(g.request(image_msg(photo))["depth"]), estimator(photo), rtol=1e-5
    )
    backend = g.node._pipeline.estimator.backend
    (result,) = g.node.set_parameters([Parameter("depth_scale", value=2.5)])
    assert result.successful
    depth = image_msg_to_depth(g.request(image_msg(photo))["depth"])
    np.testing.assert_allclose(depth, 2.5 * estimator(photo), rtol=1e-5)
    assert g.node._pipeline.estimator.backend is backend  # only a new model file or backend reopens it


def test_model_parameters_are_exactly_those_the_model_settings_read():
    """The set-back after a failed switch covers every parameter the worker applies, and no other."""
    from dataclasses import fields, replace

    from ssim_depth.node import MODEL_PARAMETERS, DepthParams

    other = {"model_path": "b.onnx", "backend": "torch", "output_resolution": "network"}
    other |= {"scale_source": "fixed", "ground_normal": "mounting"}
    base = DepthParams(model_path="a.onnx", scale_source="camera_height", camera_height=1.5)
    read = set()
    for field in fields(DepthParams):
        value = getattr(base, field.name)
        if isinstance(value, bool):
            changed = not value
        elif isinstance(value, int | float):
            changed = value + 1 if isinstance(value, int) else value + 0.25
        else:
            changed = other[field.name]
        if replace(base, **{field.name: changed}).model_settings() != base.model_settings():
            read.add(field.name)
    assert read == set(MODEL_PARAMETERS)


def test_rclpy_parameters_can_be_set_at_runtime(graph, estimator, photo):
    """use_sim_time is every node's: setting it (ros2 param set) is not the depth node's to refuse."""
    g = graph(publish_points=False, publish_preview=False)
    (result,) = g.node.set_parameters([Parameter("use_sim_time", value=True)])
    assert result.successful, result.reason
    depth = image_msg_to_depth(g.request(image_msg(photo))["depth"])
    np.testing.assert_allclose(depth, estimator(photo), rtol=1e-5)


def test_changes_the_open_model_cannot_serve_are_rejected(graph, oracles, street):
    """Checked against the open model when ros2 param set runs, not only when the worker applies them."""
    g = graph(model_path=str(oracles["none"]), depth_scale=2.0)  # fixed; the oracle's range ends at 80 m
    (result,) = g.node.set_parameters([Parameter("min_depth", value=90.0)])  # max_depth 0: the model's
    assert not result.successful and "need 0 < min_depth < max_depth, got 90.0 and 80.0" in result.reason
    (result,) = g.node.set_parameters([Parameter("depth_scale", value=3.0)])
    assert result.successful, result.reason
    depth = image_msg_to_depth(street_request(g, street)["depth"])
    valid = street.depth > 0
    np.testing.assert_allclose(depth[valid], street.depth[valid], rtol=1e-4)  # 3 x depth / 3


def test_a_model_switch_that_fails_sets_the_parameters_back(graph, oracles, street):
    """A new model is opened by the worker; when it is refused the parameters return to the model that
    serves, so that they say what serves and a later change is applied on top of it."""
    g = graph(model_path=str(oracles["velocity"]), scale_source="model")
    street_request(g, street)
    (result,) = g.node.set_parameters([Parameter("model_path", value=str(oracles["none"]))])
    assert result.successful  # a new file: only opening it tells that it is scale-less
    street_request(g, street)  # the worker applies changes between frames
    wait_until(
        lambda: g.node.get_parameter("model_path").value == str(oracles["velocity"]),
        "model_path set back to the served model",
    )
    assert g.node.params.model_path == str(oracles["velocity"])
    (result,) = g.node.set_parameters([Parameter("max_depth", value=50.0)])
    assert result.successful, result.reason
    depth = image_msg_to_depth(street_request(g, street)["depth"])
    expected = DepthEstimator(oracles["velocity"], backend="onnxruntime", max_depth=50.0)(street.rgb)
    np.testing.assert_allclose(depth, expected, rtol=1e-5)


def test_a_failed_switch_does_not_set_back_a_change_made_since(graph, oracles, velocity_onnx):
    """While a new model opens (minutes for a TensorRT build) the user may change model_path again: when the
    first switch fails, that later value stays."""
    from dataclasses import replace

    g = graph(model_path=str(oracles["velocity"]), scale_source="model")
    failed = replace(g.node.params, model_path=str(oracles["none"]))  # the snapshot the worker failed on
    (result,) = g.node.set_parameters([Parameter("model_path", value=str(velocity_onnx))])  # changed since
    assert result.successful, result.reason
    g.node._set_back(failed)
    assert g.node.get_parameter("model_path").value == str(velocity_onnx)


def test_every_frame_is_tagged_with_the_model_and_options_that_made_it(graph, model, velocity_onnx, photo):
    """depth/model: one tag per frame, by stamp; a model switch raises the generation, options ride along."""
    import hashlib

    from rclpy.qos import QoSProfile
    from ssim_depth.codecs import parse_model_info
    from std_msgs.msg import String

    g = graph(publish_points=False, publish_preview=False)
    tags = {}
    g.client.create_subscription(
        String,
        "depth/model",
        lambda m: tags.update({(i := parse_model_info(m))["stamp"]["sec"]: i}),
        QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    first = image_msg(photo)
    g.request(first)
    wait_until(lambda: first.header.stamp.sec in tags, "the first frame's tag")
    tag = tags[first.header.stamp.sec]
    assert tag["frame_id"] == first.header.frame_id
    assert tag["model"]["generation"] == 1 and tag["model"]["model_path"] == str(model)
    assert tag["model"]["model_sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert tag["model"]["backend"] == "onnxruntime" and tag["options"]["range_max"] == 0.0
    assert tag["outputs"] == ["depth"]  # no points, no preview: what the node publishes for the frame

    results = g.node.set_parameters_atomically(
        [Parameter("model_path", value=str(velocity_onnx)), Parameter("range_max", value=50.0)]
    )
    assert results.successful, results.reason
    second = image_msg(photo)  # published after the change returned: made entirely with the new values
    g.request(second)
    wait_until(lambda: second.header.stamp.sec in tags, "the second frame's tag")
    tag = tags[second.header.stamp.sec]
    assert tag["model"]["generation"] == 2 and tag["model"]["model_path"] == str(velocity_onnx)
    assert tag["settings"]["model_path"] == str(velocity_onnx) and tag["options"]["range_max"] == 50.0


def test_player_publishes_the_recorded_messages(ros, tmp_path, photo):
    context, executor = ros
    intrinsics = Intrinsics(*K, WIDTH, HEIGHT)
    frames = [np.roll(photo, 7 * i, axis=1) for i in range(3)]
    stamps = [1_700_000_000_000_000_000 + i * 50_000_000 for i in range(3)]
    with CameraBagWriter(tmp_path / "bag", intrinsics) as writer:
        for frame, stamp in zip(frames, stamps, strict=True):
            writer.write(frame, stamp)

    listener = rclpy.create_node("listener", context=context)
    images, infos = {}, {}
    key = lambda m: m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec  # noqa: E731
    listener.create_subscription(
        Image, "/kitti/camera_color_left/image_raw", lambda m: images.update({key(m): m}), 10
    )
    listener.create_subscription(
        CameraInfo, "/kitti/camera_color_left/camera_info", lambda m: infos.update({key(m): m}), 10
    )
    player = rclpy.create_node("player", context=context)
    executor.add_node(listener)
    stop = threading.Event()
    thread = threading.Thread(
        target=play, args=(tmp_path / "bag", 4.0, True), kwargs={"node": player, "stop": stop}
    )
    thread.start()
    try:
        wait_until(lambda: set(stamps) <= images.keys() and set(stamps) <= infos.keys(), "all three frames")
    finally:
        stop.set()
        thread.join(TIMEOUT)
        executor.remove_node(listener)
        listener.destroy_node()
        player.destroy_node()
    assert not thread.is_alive()
    for frame, stamp in zip(frames, stamps, strict=True):
        msg = images[stamp]
        assert (msg.encoding, msg.header.frame_id) == ("rgb8", "camera_color_left")
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(HEIGHT, WIDTH, 3), frame)
        np.testing.assert_allclose(infos[stamp].k, intrinsics.matrix.ravel())
    with pytest.raises(ValueError, match="rate must be a finite number > 0, got 0.0"):
        play(tmp_path / "bag", rate=0.0, node=player)


def test_recorder_counts_the_frames_it_heard_and_waits_for_what_each_tag_announces(ros, tmp_path, photo):
    """A recorder started after the node (standalone ``record``) hears tags of frames whose images it never
    heard: those are not counted as processed (dropped stays published - processed >= 0). A tag that
    announces no depth makes its frame withheld, and once that tag arrives the frame counts as served."""
    from rclpy.qos import QoSProfile
    from ssim_depth.codecs import depth_to_image_msg, model_info_msg
    from ssim_depth.tools.record import DepthRecorder
    from std_msgs.msg import String

    from ssim_depth_core.runtime.frames import FrameOptions, ModelSettings

    context, executor = ros
    recorder = DepthRecorder(tmp_path / "recording", context=context, node_name="recorder_under_test")
    executor.add_node(recorder)
    node = rclpy.create_node("depth_node_stand_in", context=context)
    topics, reliable = {"image": Image, "depth": Image, "depth/model": String}, QoSProfile(depth=100)
    publishers = {name: node.create_publisher(kind, name, reliable) for name, kind in topics.items()}
    try:
        wait_until(lambda: all(p.get_subscription_count() for p in publishers.values()), "the recorder")
        depth = np.full((HEIGHT, WIDTH), 5.0, np.float32)
        settings = ModelSettings("model.onnx", "onnxruntime")

        def serve(frame: Image, outputs: tuple[str, ...], heard: bool) -> None:
            if heard:
                publishers["image"].publish(frame)
            tag = model_info_msg({"generation": 1}, settings, FrameOptions(), frame.header, outputs)
            publishers["depth/model"].publish(tag)
            if "depth" in outputs:
                publishers["depth"].publish(depth_to_image_msg(depth, frame.header))

        serve(image_msg(photo), ("depth",), heard=False)  # published before the recorder listened
        serve(image_msg(photo), ("depth",), heard=True)
        assert recorder.wait_until_served(1, TIMEOUT)
        serve(image_msg(photo), (), heard=True)  # withheld: no depth follows its tag
        assert recorder.wait_until_served(2, TIMEOUT)
        summary = recorder.finish()
    finally:
        executor.remove_node(recorder)
        recorder.destroy_node()
        node.destroy_node()
    assert (summary["frames_published"], summary["frames_processed"], summary["dropped"]) == (2, 2, 0)
    assert (summary["withheld"], summary["frames_received"]) == (1, 2)


# ------------------------------------------------------------------------------------------ scale sources
@pytest.fixture(scope="module")
def street():
    return depth_oracle.synthetic_street()


@pytest.fixture(scope="module")
def oracles(street, tmp_path_factory):
    """Models predicting the street's depth / 3: scale-less, and one whose metadata says velocity-trained."""
    folder = tmp_path_factory.mktemp("oracles")
    third = street.depth / 3.0
    return {
        metric: depth_oracle.write_oracle_onnx(folder / f"{metric}.onnx", third, metric)
        for metric in ("none", "velocity")
    }


def street_request(g: Graph, street, outputs=("depth",)) -> dict[str, object]:
    k = street.intrinsics
    info = CameraInfo(width=k.width, height=k.height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    return g.request(image_msg(street.rgb), info, outputs=outputs)


def latest_scale(g: Graph, condition, what: str) -> float:
    """The newest depth/scale once one satisfies ``condition`` (it is published just before the depth)."""
    wait_until(lambda: g.scales and condition(g.scales[-1]), f"depth/scale {what}")
    return g.scales[-1]


def test_scale_source_model_refuses_a_scale_less_model_at_start(ros, oracles):
    context, _ = ros
    with pytest.raises(ValueError) as error:
        DepthNode(
            context=context,
            namespace="/scale_less",
            parameter_overrides=[Parameter("model_path", value=str(oracles["none"]))],  # default: model
        )
    message = str(error.value)
    assert str(oracles["none"]) in message and "scale-less" in message
    assert "'camera_height'" in message and "'fixed'" in message


def test_scale_source_model_serves_a_metric_model_as_it_is(graph, oracles, street):
    g = graph(model_path=str(oracles["velocity"]), scale_source="model")
    depth = image_msg_to_depth(street_request(g, street)["depth"])
    valid = street.depth > 0
    np.testing.assert_allclose(depth[valid], street.depth[valid] / 3.0, rtol=1e-4)
    assert latest_scale(g, lambda s: True, "after the first frame") == 1.0


def test_scale_source_fixed_publishes_its_factor(graph, estimator, photo):
    g = graph(depth_scale=2.5, publish_preview=False)
    out = g.request(image_msg(photo), camera_info(), outputs=("depth", "points"))
    depth = image_msg_to_depth(out["depth"])
    np.testing.assert_allclose(depth, 2.5 * estimator(photo), rtol=1e-5)
    check_cloud(out["points"], depth, np.asarray(K_MATRIX), photo, stride=2)
    assert latest_scale(g, lambda s: True, "after the first frame") == 2.5


@pytest.mark.parametrize("ground_normal", ["fitted", "mounting"])
def test_scale_source_camera_height_makes_the_street_metric(graph, oracles, street, capfd, ground_normal):
    g = graph(
        model_path=str(oracles["none"]),
        scale_source="camera_height",
        camera_height=street.camera_height,
        ground_normal=ground_normal,
        stats_period=0.2,
    )
    assert g.node._pipeline.settings.scale.ground.ground_normal == ground_normal
    out = street_request(g, street, outputs=("depth", "depth/camera_info", "points"))
    depth = image_msg_to_depth(out["depth"])
    valid = street.depth > 0
    np.testing.assert_allclose(depth[valid], street.depth[valid], rtol=0.05)
    assert latest_scale(g, math.isfinite, "finite") == pytest.approx(3.0, rel=0.05)
    fields = cloud_arrays(out["points"])  # stride 2; up is -y in the level camera's optical frame
    ground = (street.ground & valid)[::2, ::2]
    assert np.median(-fields["y"][ground]) == pytest.approx(-street.camera_height, rel=0.05)
    pattern = re.compile(
        r"fps, .*; scale source camera_height: ground-plane scale ([0-9.]+) \(\d+/\d+ inliers\)"
    )
    logged = []
    wait_until(lambda: logged.extend(pattern.findall(capfd.readouterr().err)) or logged, "a statistics line")
    assert float(logged[-1]) == pytest.approx(3.0, rel=0.05)


def test_camera_height_without_a_plane_withholds_depth_and_publishes_nan(graph, oracles, street, capfd):
    """Configured as looking 20 degrees up, the ground is never below the horizon: no scale, no metres."""
    g = graph(
        model_path=str(oracles["none"]),
        scale_source="camera_height",
        camera_height=street.camera_height,
        camera_pitch=-0.35,
    )
    msg = street_request(g, street, outputs=("depth/preview",))  # the preview is scale-free: still published
    assert math.isnan(latest_scale(g, math.isnan, "NaN"))
    stamp = (msg["depth/preview"].header.stamp.sec, msg["depth/preview"].header.stamp.nanosec)
    time.sleep(0.5)  # what would have come with the preview has arrived by now
    for topic in ("depth", "depth/camera_info", "points"):
        assert stamp not in g.received[topic], topic
    assert g.node.stats.failed == 0
    warning = capfd.readouterr().err
    assert "no metric scale (0 points below the horizon" in warning
    assert "withholding depth, depth/camera_info and points" in warning


def test_switching_the_scale_source_at_runtime(graph, oracles, street):
    g = graph(model_path=str(oracles["none"]), depth_scale=2.0)  # fixed
    street_request(g, street)
    assert latest_scale(g, lambda s: s == 2.0, "2.0") == 2.0

    (result,) = g.node.set_parameters([Parameter("scale_source", value="camera_height")])
    assert not result.successful and "needs camera_height" in result.reason
    results = g.node.set_parameters_atomically(
        [
            Parameter("scale_source", value="camera_height"),
            Parameter("camera_height", value=street.camera_height),
        ]
    )
    assert results.successful, results.reason
    street_request(g, street)
    assert latest_scale(g, lambda s: s != 2.0, "from the ground") == pytest.approx(3.0, rel=0.05)

    (result,) = g.node.set_parameters([Parameter("scale_source", value="model")])
    assert not result.successful and "scale_source 'model' needs a metric model" in result.reason
    assert g.node.params.scale_source == "camera_height"

    (result,) = g.node.set_parameters([Parameter("scale_source", value="fixed")])
    assert result.successful
    depth = image_msg_to_depth(street_request(g, street)["depth"])
    valid = street.depth > 0
    np.testing.assert_allclose(depth[valid], 2.0 * street.depth[valid] / 3.0, rtol=1e-4)
