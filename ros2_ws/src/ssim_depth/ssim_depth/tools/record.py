"""``record``: write a depth node's outputs to a folder, with end-to-end latency statistics.

Output folder:
    depth/%06d.png      colourised inverse depth by :func:`ssim_depth_core.imaging.colorize_depth`,
                        as the node's ``depth/preview`` (so the files equal the preview; it is not subscribed)
    depth_raw/%06d.png  uint16 depth in metres * 256, 0 = invalid or beyond 255.99 m (KITTI benchmark PNG);
                        both written by :func:`ssim_depth_core.imaging.write_depth_pngs`
    points.ply          the last point cloud received, finite points only (binary PLY)
    frames.csv          per depth frame: index (the PNG number), header stamp (ns), latency (ms, empty if
                        its input frame was not heard)
    latency.json        latency statistics and frame counts

Latency of a frame = time the recorder's middleware received the depth image - time the camera image with
the same header stamp was published, both DDS sample timestamps from the message info (the publisher's
source timestamp, the reader's reception timestamp), so the recorder's own callback queueing is not in it.
It covers transport to the node, the node's queueing, decoding, inference and publishing, i.e. what any
subscriber of ``depth`` sees. The two timestamps come from the publishing and the recording host's system
clocks: the numbers are meaningful when the camera publisher (e.g. ``play``) runs on the recorder's host.
With a middleware that gives no such timestamps, the recorder's callback times stand in for both.

Frames published = camera images heard on the input topic; processed = those of them the node tagged on
``depth/model`` (the depth frames received, for a node without tags); dropped = published - processed (the
node serves the newest frame and skips any that arrived while it was busy); withheld = processed frames whose
tag lists no depth among its outputs (scale source ``camera_height`` before the ground plane fits).
Messages whose header (for ``depth/model``, the tag's) ``frame_id`` is the ``warmup_frame_id`` are not
recorded, only counted in :attr:`DepthRecorder.warmup`.

Topics (relative, remappable): image (or image/compressed with ``--compressed``) in, to time the inputs;
depth (32FC1), points (PointCloud2) and depth/model (the per-frame tags) from the node.

    ros2 run ssim_depth record OUT_DIR [--compressed] [--overwrite] --ros-args -r image:=/camera/image_raw
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import queue
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from ssim_depth.codecs import image_msg_to_depth, parse_model_info, pointcloud2_msg_to_cloud, stamp_ns
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.imaging import write_depth_pngs
from ssim_depth_core.outputs import earlier_outputs, remove_outputs
from ssim_depth_core.runtime.latency import latency_stats
from ssim_depth_core.runtime.pointcloud import write_ply

# Best effort with a deep queue is compatible with reliable and best-effort camera publishers alike.
INPUT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
OUTPUT_QOS = QoSProfile(depth=100)  # reliable, like the node's publishers
LATENCY_METHOD = (
    "publish time of the camera image (DDS source timestamp) -> reception of the depth image with the same "
    "header stamp at the recorder (DDS reception timestamp); one host clock"
)
_STOP = object()
RECORDING = ("depth", "depth_raw", "points.ply", "frames.csv", "latency.json")  # what a recording writes


def claim_output(out_dir: Path, overwrite: bool, names: tuple[str, ...] = RECORDING) -> None:
    """Make ``out_dir`` ready for a new recording: created if missing; if it holds any of ``names`` (an
    earlier recording), those are removed with ``overwrite``, else ValueError names them (a new recording
    would mix with the old one's frames)."""
    remove_outputs(out_dir, earlier_outputs(out_dir, names, overwrite, "recording"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a path under a regular file
        raise ValueError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None


class DepthRecorder(Node):
    """Writes ``depth`` and ``points`` into ``out_dir`` (layout in the module docstring).

    Callbacks only queue messages with their middleware timestamps; a writer thread decodes and writes them,
    so a slow disk never makes the recorder lose frames. Call :meth:`finish` to write the point cloud and the
    statistics.

    Args:
        out_dir: output folder (created); one holding an earlier recording is refused (ValueError) unless
            ``overwrite``, which removes that recording's files first (:func:`claim_output`).
        overwrite: replace an earlier recording in ``out_dir``.
        compressed: time the inputs on ``image/compressed`` (CompressedImage) instead of ``image``.
        warmup_frame_id: header frame_id of warm-up frames, which are counted but not recorded.
        node_name, **kwargs: passed to :class:`rclpy.node.Node` (context, namespace, cli_args, ...).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        compressed: bool = False,
        overwrite: bool = False,
        warmup_frame_id: str | None = None,
        node_name: str = "depth_recorder",
        **kwargs,
    ) -> None:
        self.out_dir = Path(out_dir)
        claim_output(self.out_dir, overwrite)
        super().__init__(node_name, **kwargs)
        for folder in ("depth", "depth_raw"):
            (self.out_dir / folder).mkdir()
        self._queue: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        # written by the writer thread only, read under _cond
        self._published_ns: dict[int, int] = {}  # image header stamp -> publish time
        self._newest_image: int | None = None
        self._newest_depth: int | None = None
        self._frames: list[tuple[int, int, float | None]] = []  # index, stamp, latency ms
        self._last_cloud: PointCloud2 | None = None
        self._heard: set[int] = set()  # header stamps of the camera images heard
        self._tags: dict[int, list[str]] = {}  # header stamp -> the outputs its depth/model tag announces
        self.images = self.failed = 0
        self._warmup_frame_id = warmup_frame_id
        self.warmup = {"image": 0, "depth": 0, "points": 0, "model": 0}  # warm-up messages heard, by kind
        self._summary: dict | None = None

        image_type, image_topic = (CompressedImage, "image/compressed") if compressed else (Image, "image")
        subscriptions = [
            ("image", image_type, image_topic, INPUT_QOS),
            ("depth", Image, "depth", OUTPUT_QOS),
            ("points", PointCloud2, "points", OUTPUT_QOS),
            ("model", String, "depth/model", OUTPUT_QOS),
        ]
        self.topics = {}
        for kind, msg_type, topic, qos in subscriptions:
            subscription = self.create_subscription(
                msg_type, topic, lambda msg, info, k=kind: self._on_message(k, msg, info), qos
            )
            self.topics[kind] = subscription.topic_name
        self._writer = threading.Thread(target=self._write_loop, name="depth_recorder_writer", daemon=True)
        self._writer.start()

    def _on_message(self, kind: str, msg, info: dict) -> None:
        if self._warmup_frame_id is not None and _frame_id(kind, msg) == self._warmup_frame_id:
            with self._cond:
                self.warmup[kind] += 1
                self._cond.notify_all()
        else:
            self._queue.put((kind, msg, info, time.time_ns()))

    # --------------------------------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            kind, msg, info, heard_ns = item
            try:
                getattr(self, f"_write_{kind}")(
                    msg, info["source_timestamp"], info["received_timestamp"] or heard_ns
                )
            except Exception as error:  # one bad message must not end the recording
                self.failed += 1
                self.get_logger().error(f"cannot record a message on {self.topics[kind]}: {error}")
            with self._cond:
                self._cond.notify_all()

    def _write_image(self, msg: Image | CompressedImage, published_ns: int, received_ns: int) -> None:
        stamp = stamp_ns(msg)
        with self._cond:
            self._published_ns[stamp] = published_ns or received_ns
            self._newest_image = stamp
            self._heard.add(stamp)
            self.images += 1

    def _write_depth(self, msg: Image, published_ns: int, received_ns: int) -> None:
        depth = image_msg_to_depth(msg)
        stamp, index = stamp_ns(msg), len(self._frames)
        write_depth_pngs(self.out_dir, f"{index:06d}.png", depth)
        with self._cond:
            published = self._published_ns.pop(stamp, None)
            latency = None if published is None else (received_ns - published) * 1e-6
            if published is not None:  # the node serves the newest frame: older ones are dropped for good
                for older in [s for s, t in self._published_ns.items() if t <= published]:
                    del self._published_ns[older]
            self._frames.append((index, stamp, latency))
            self._newest_depth = stamp

    def _write_points(self, msg: PointCloud2, published_ns: int, received_ns: int) -> None:
        with self._cond:
            self._last_cloud = msg  # decoded once, in finish()

    def _write_model(self, msg: String, published_ns: int, received_ns: int) -> None:
        tag = parse_model_info(msg)  # a malformed tag is counted as failed
        stamp = tag["stamp"]["sec"] * 1_000_000_000 + tag["stamp"]["nanosec"]
        with self._cond:
            self._tags[stamp] = tag["outputs"]

    # ----------------------------------------------------------------------------------------------- API
    def wait_until_served(self, images: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``images`` camera images were heard and the newest of them has
        its tag and the outputs the tag announces recorded (for a node without tags: its depth, and its cloud
        once any cloud arrived). True when that happened."""

        def served() -> bool:
            newest, cloud = self._newest_image, self._last_cloud
            if self.images < images:
                return False
            cloud_newest = cloud is not None and stamp_ns(cloud) == newest
            if not self._tags:
                return newest == self._newest_depth and (cloud is None or cloud_newest)
            outputs = self._tags.get(newest)
            return (
                outputs is not None
                and ("depth" not in outputs or newest == self._newest_depth)
                and ("points" not in outputs or cloud_newest)
            )

        with self._cond:
            return self._cond.wait_for(served, timeout)

    def wait_for_warmup(self, kinds: tuple[str, ...], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until a warm-up message of every kind in ``kinds`` was heard."""
        with self._cond:
            return self._cond.wait_for(lambda: all(self.warmup[kind] for kind in kinds), timeout)

    def finish(self) -> dict:
        """Write whatever is queued, ``points.ply``, ``frames.csv`` and ``latency.json``; return the latter's
        content plus the output paths and the point count. Idempotent."""
        if self._summary is not None:
            return self._summary
        self._queue.put(_STOP)
        self._writer.join()
        out = self.out_dir
        paths = {
            "depth": out / "depth",
            "depth_raw": out / "depth_raw",
            "points": out / "points.ply",
            "frames": out / "frames.csv",
            "latency": out / "latency.json",
        }
        points = None
        if self._last_cloud is not None:
            count = write_ply(paths["points"], pointcloud2_msg_to_cloud(self._last_cloud))
            points = {"count": count, "stamp_ns": stamp_ns(self._last_cloud)}
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["index", "stamp_ns", "latency_ms"])
        writer.writerows((i, s, "" if lat is None else f"{lat:.3f}") for i, s, lat in self._frames)
        write_atomic(paths["frames"], table.getvalue().encode("utf-8"))
        latency = latency_stats([lat for _, _, lat in self._frames if lat is not None])
        tagged = [outputs for stamp, outputs in self._tags.items() if stamp in self._heard]
        processed = len(tagged) if self._tags else len(self._frames)
        stats = {
            "count": latency.count,
            "mean_ms": latency.mean,
            "p50_ms": latency.percentiles[50],
            "p95_ms": latency.percentiles[95],
            "max_ms": latency.max,
        }
        stats.update(
            method=LATENCY_METHOD,
            frames_published=self.images,
            frames_received=len(self._frames),
            frames_processed=processed,
            dropped=self.images - processed,
            withheld=sum("depth" not in outputs for outputs in tagged),
            failed=self.failed,
        )
        write_atomic(paths["latency"], (json.dumps(stats, indent=2) + "\n").encode("utf-8"))
        if points is None:
            paths.pop("points")
        self._summary = {**stats, "points": points, "outputs": {k: str(p) for k, p in paths.items()}}
        return self._summary

    def destroy_node(self) -> None:
        if self._writer.is_alive():
            self._queue.put(_STOP)
            self._writer.join()
        super().destroy_node()


def _frame_id(kind: str, msg) -> str | None:
    """The header frame_id of a recorded message; a depth/model tag's own (None when it is malformed)."""
    if kind != "model":
        return msg.header.frame_id
    try:
        return parse_model_info(msg)["frame_id"]
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    """``ros2 run ssim_depth record OUT_DIR``: record until Ctrl-C, then write the statistics."""
    parser = argparse.ArgumentParser(prog="record", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="output folder")
    parser.add_argument("--compressed", action="store_true", help="inputs on image/compressed")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier recording in OUT_DIR")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:] if argv is None else argv)
    rclpy.init()
    try:
        recorder = DepthRecorder(args.out_dir, compressed=args.compressed, overwrite=args.overwrite)
    except ValueError as error:  # an earlier recording there (claim_output), before any ROS entity exists
        rclpy.try_shutdown()
        parser.exit(2, f"record: {error}\n")
    try:
        rclpy.spin(recorder)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        summary = recorder.finish()
        recorder.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
