"""``depth_node``: sensor_msgs/Image in; metric depth, its CameraInfo, a point cloud and a preview out.

A thin adapter: inference is :class:`ssim_depth_core.runtime.estimator.DepthEstimator`, the point cloud is
:func:`ssim_depth_core.runtime.pointcloud.depth_to_pointcloud`; this module only converts messages.

Threading: the image subscription callback only stores the newest message (replacing an unprocessed one
counts as a dropped frame) and wakes a worker thread, which decodes, infers and publishes. The executor is
never blocked by inference, and the node never builds a backlog: it always works on the latest frame.

Topics (all relative, remappable; outputs carry the input header):
    image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage, parameter ``compressed``),
    camera_info (sensor_msgs/CameraInfo) in, sensor-data QoS;
    depth (32FC1, metres, NaN = invalid), depth/camera_info, points (PointCloud2 x y z rgb),
    depth/preview (bgr8) out.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from sensor_msgs.msg import PointField as PointFieldMsg

from ssim_depth.codecs import (
    ImageDecodeError,
    camera_info_from_intrinsics,
    depth_to_image_msg,
    image_msg_to_rgb,
    preview_image_msg,
    scaled_camera_info,
)
from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.runtime.backends import BACKENDS, create_backend
from ssim_depth_core.runtime.estimator import DepthEstimator
from ssim_depth_core.runtime.pointcloud import depth_to_pointcloud

OUTPUT_RESOLUTIONS = ("input", "network")
WARN_PERIOD_S = 5.0  # throttle of the per-frame warnings
OUTPUT_QOS = QoSProfile(depth=5)  # reliable: RViz and rosbag2 defaults can subscribe


@dataclass(frozen=True)
class DepthParams:
    """The node's parameters; defaults equal config/depth.yaml."""

    model_path: str = ""
    backend: str = "auto"
    min_depth: float = 0.0
    max_depth: float = 0.0
    depth_scale: float = 1.0
    range_min: float = 0.0
    range_max: float = 0.0
    output_resolution: str = "input"
    compressed: bool = False
    publish_points: bool = True
    point_stride: int = 2
    publish_preview: bool = True
    fx: float = 0.0
    fy: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    stats_period: float = 5.0


def _float_range(low: float, high: float) -> dict:
    return {"floating_point_range": [FloatingPointRange(from_value=low, to_value=high, step=0.0)]}


_PIXELS = _float_range(0, 1e6)
# name -> (description, extra ParameterDescriptor fields); types come from DepthParams' defaults
_DESCRIPTORS = {
    "model_path": ("model file: .engine (TensorRT), .onnx or .pt; required", {}),
    "backend": (f"inference backend: {' | '.join(BACKENDS)}", {}),
    "min_depth": (
        "network depth range minimum in metres; 0 = the model's training range",
        _float_range(0, 1e5),
    ),
    "max_depth": (
        "network depth range maximum in metres; 0 = the model's training range",
        _float_range(0, 1e5),
    ),
    "depth_scale": ("metric scale factor multiplying every depth", _float_range(1e-6, 1e6)),
    "range_min": ("published depths <= range_min become NaN (0 = no limit)", _float_range(0, 1e5)),
    "range_max": ("published depths >= range_max become NaN (0 = no limit)", _float_range(0, 1e5)),
    "output_resolution": ("resolution of depth, depth/camera_info and points: input | network", {}),
    "compressed": ("subscribe image/compressed (CompressedImage) instead of image", {"read_only": True}),
    "publish_points": ("publish the point cloud on points", {}),
    "point_stride": (
        "keep every n-th pixel in both axes in the point cloud",
        {"integer_range": [IntegerRange(from_value=1, to_value=64, step=1)]},
    ),
    "publish_preview": ("publish colourised inverse depth on depth/preview", {}),
    "fx": (
        "fallback focal length x (pixels, input resolution) until camera_info arrives; 0 = unset",
        _PIXELS,
    ),
    "fy": ("fallback focal length y (pixels, input resolution); 0 = unset", _PIXELS),
    "cx": ("fallback principal point x (pixels, input resolution)", _PIXELS),
    "cy": ("fallback principal point y (pixels, input resolution)", _PIXELS),
    "stats_period": ("seconds between latency/throughput log lines; 0 = off", _float_range(0, 3600)),
}

# Changing any of these rebuilds the estimator (the backend is reopened only for the first two).
_ESTIMATOR_PARAMS = {"model_path", "backend", "min_depth", "max_depth", "depth_scale", "output_resolution"}


def validate_params(params: DepthParams) -> str | None:
    """The first problem with a parameter set (cross-field rules the descriptors cannot express), or None."""
    if not params.model_path:
        return "model_path is empty: set it to a .engine, .onnx or .pt file (launch argument model:=...)"
    if not Path(params.model_path).is_file():
        return f"model_path '{params.model_path}' is not a file"
    if params.backend not in BACKENDS:
        return f"backend '{params.backend}' is not one of {', '.join(BACKENDS)}"
    if params.output_resolution not in OUTPUT_RESOLUTIONS:
        return f"output_resolution '{params.output_resolution}' is not one of {', '.join(OUTPUT_RESOLUTIONS)}"
    if params.min_depth and params.max_depth and params.min_depth >= params.max_depth:
        return f"min_depth {params.min_depth} must be < max_depth {params.max_depth}"
    if params.range_max and params.range_min >= params.range_max:
        return f"range_min {params.range_min} must be < range_max {params.range_max}"
    if (params.fx > 0) != (params.fy > 0):
        return f"set both fx and fy (> 0) or neither, got fx={params.fx}, fy={params.fy}"
    return None


class _Stats:
    """Latency and throughput over one logging period, plus totals; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.failed = 0
        self._latencies: list[float] = []
        self._window_start = time.monotonic()
        self._window_dropped = 0

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
            self._window_dropped += counts.get("dropped", 0)

    def frame_done(self, latency_s: float) -> None:
        with self._lock:
            self.processed += 1
            self._latencies.append(latency_s)

    def take_window(self) -> str:
        """A log line for the period since the last call, then a fresh period."""
        with self._lock:
            latencies, self._latencies = np.asarray(self._latencies) * 1e3, []
            dropped, self._window_dropped = self._window_dropped, 0
            now, elapsed = time.monotonic(), time.monotonic() - self._window_start
            self._window_start = now
            totals = f"totals: processed {self.processed}, dropped {self.dropped}, rejected {self.rejected}"
        if latencies.size == 0:
            return f"no frames processed in the last {elapsed:.1f} s ({dropped} dropped); {totals}"
        p50, p95 = np.percentile(latencies, [50, 95])
        return (
            f"{latencies.size / elapsed:.1f} fps, latency mean {latencies.mean():.1f} ms, p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, {dropped} dropped in the last {elapsed:.1f} s; {totals}"
        )


class DepthNode(Node):
    """Monocular depth node; see the module docstring for topics and threading, DepthParams for parameters.

    Raises ValueError (or an rclpy ParameterException for out-of-range values) from the constructor when the
    parameters are invalid or the model cannot be loaded.
    """

    def __init__(self, node_name: str = "depth_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        try:
            self._declare_parameters()
            self.params = self._read_params({})
            problem = validate_params(self.params)
            if problem:
                raise ValueError(f"{self.get_fully_qualified_name()}: {problem}")
            self._estimator = self._build_estimator(self.params, backend=None)
        except BaseException:
            Node.destroy_node(self)  # nothing of ours to stop yet
            raise
        self._reload = False

        self.stats = _Stats()
        self._cond = threading.Condition()
        self._pending: tuple[Image | CompressedImage, float] | None = None
        self._stopping = False
        self._camera_info: CameraInfo | None = None

        self._depth_pub = self.create_publisher(Image, "depth", OUTPUT_QOS)
        self._info_pub = self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS)
        self._points_pub = self.create_publisher(PointCloud2, "points", OUTPUT_QOS)
        self._preview_pub = self.create_publisher(Image, "depth/preview", OUTPUT_QOS)
        image_type, image_topic = (
            (CompressedImage, "image/compressed") if self.params.compressed else (Image, "image")
        )
        self._image_sub = self.create_subscription(
            image_type, image_topic, self._on_image, qos_profile_sensor_data
        )
        self._info_sub = self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data
        )
        self._image_topic = self._image_sub.topic_name
        self._stats_timer = None
        self._start_stats_timer(self.params.stats_period)

        self.add_on_set_parameters_callback(self._check_new_params)
        self.add_post_set_parameters_callback(self._apply_new_params)
        self._worker = threading.Thread(target=self._work, name="depth_worker", daemon=True)
        self._worker.start()
        backend = self._estimator.backend
        self.get_logger().info(
            f"serving {self.params.model_path} on {backend.name} at {backend.input_size[1]}x"
            f"{backend.input_size[0]}, depth range [{self._estimator.min_depth}, "
            f"{self._estimator.max_depth}] m; input {self._image_topic}"
        )

    # ----------------------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        defaults = DepthParams()
        for name, (description, extra) in _DESCRIPTORS.items():
            default = getattr(defaults, name)
            kind = Parameter.Type.from_parameter_value(default).value
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, type=kind, **extra)
            )

    def _read_params(self, changes: dict) -> DepthParams:
        values = {f.name: self.get_parameter(f.name).value for f in fields(DepthParams)}
        values.update(changes)
        return DepthParams(**values)

    def _check_new_params(self, parameters: list[Parameter]) -> SetParametersResult:
        problem = validate_params(self._read_params({p.name: p.value for p in parameters}))
        return SetParametersResult(successful=problem is None, reason=problem or "")

    def _apply_new_params(self, parameters: list[Parameter]) -> None:
        names = {p.name for p in parameters}
        previous, self.params = self.params, self._read_params({})
        if names & _ESTIMATOR_PARAMS:
            self._reload = True
        if self.params.stats_period != previous.stats_period:
            self._start_stats_timer(self.params.stats_period)

    def _build_estimator(self, params: DepthParams, backend) -> DepthEstimator:
        """A DepthEstimator for ``params``, reusing an open backend when given."""
        backend = backend or create_backend(params.model_path, params.backend)
        self._model_key = (params.model_path, params.backend)
        return DepthEstimator(
            backend,
            min_depth=params.min_depth or None,
            max_depth=params.max_depth or None,
            depth_scale=params.depth_scale,
            output_size=backend.input_size if params.output_resolution == "network" else None,
        )

    def _reload_estimator(self) -> None:
        """Apply changed model parameters (worker thread); the backend is reopened only for a new model."""
        self._reload = False
        params, old = self.params, self._estimator
        same_model = (params.model_path, params.backend) == self._model_key
        try:
            self._estimator = self._build_estimator(params, old.backend if same_model else None)
        except (ValueError, RuntimeError, OSError) as error:
            self.get_logger().error(
                f"cannot apply the new model parameters, keeping the previous model: {error}"
            )
            return
        if not same_model:
            old.backend.close()
        self.get_logger().info(f"estimator rebuilt: {params.model_path} on {self._estimator.backend.name}")

    def _start_stats_timer(self, period: float) -> None:
        if self._stats_timer is not None:
            self.destroy_timer(self._stats_timer)
            self._stats_timer = None
        if period > 0:
            self._stats_timer = self.create_timer(period, self._log_stats)

    def _log_stats(self) -> None:
        self.get_logger().info(self.stats.take_window())

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image(self, msg: Image | CompressedImage) -> None:
        with self._cond:
            self.stats.add(received=1, dropped=int(self._pending is not None))
            self._pending = (msg, time.monotonic())
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                (msg, received), self._pending = self._pending, None
            try:
                self._process(msg, received)
            except Exception as error:  # a bad frame or a backend hiccup must not kill the node
                if not self.context.ok():  # shutting down while the last frame was being published
                    return
                self.stats.add(failed=1)
                self.get_logger().error(
                    f"frame on {self._image_topic} failed: {type(error).__name__}: {error}",
                    throttle_duration_sec=WARN_PERIOD_S,
                )

    # ------------------------------------------------------------------------------------------ per frame
    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageDecodeError as error:
            self.stats.add(rejected=1)
            self.get_logger().warning(
                f"dropping a frame on {self._image_topic}: {error}", throttle_duration_sec=WARN_PERIOD_S
            )
            return
        if self._reload:
            self._reload_estimator()
        params, header = self.params, msg.header
        depth = self._estimator(rgb)
        if params.range_min or params.range_max:
            upper = params.range_max or math.inf
            depth[~((depth > params.range_min) & (depth < upper))] = np.nan
        self._depth_pub.publish(depth_to_image_msg(depth, header))

        height, width = depth.shape
        intrinsics, info = self._intrinsics(rgb.shape[1], rgb.shape[0])
        if intrinsics is not None:
            intrinsics = intrinsics.scaled(width, height)
            self._info_pub.publish(
                scaled_camera_info(info, width, height, header)
                if info is not None
                else camera_info_from_intrinsics(intrinsics, header)
            )
        if params.publish_points and intrinsics is not None:
            colour = (
                rgb
                if rgb.shape[:2] == depth.shape
                else cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            )
            cloud = depth_to_pointcloud(depth, intrinsics, colour, stride=params.point_stride)
            self._points_pub.publish(
                PointCloud2(
                    header=header,
                    height=cloud.height,
                    width=cloud.width,
                    fields=[
                        PointFieldMsg(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                        for f in cloud.fields
                    ],
                    is_bigendian=False,
                    point_step=cloud.point_step,
                    row_step=cloud.row_step,
                    data=cloud.tobytes(),
                    is_dense=cloud.is_dense,
                )
            )
        if params.publish_preview:
            self._preview_pub.publish(preview_image_msg(depth, header))
        self.stats.frame_done(time.monotonic() - received)

    def _intrinsics(self, width: int, height: int) -> tuple[Intrinsics | None, CameraInfo | None]:
        """Camera of the input image: latest camera_info, else the fx/fy/cx/cy parameters, else None.

        Returns the intrinsics at (width, height) and the CameraInfo they came from (None for parameters).
        """
        info = self._camera_info
        if info is not None:
            sized = info.width > 0 and info.height > 0  # some drivers leave the size 0: assume the image's
            try:
                intrinsics = Intrinsics.from_camera_info(
                    info.k, info.width if sized else width, info.height if sized else height, info.p
                )
            except ValueError as error:
                self.get_logger().warning(
                    f"ignoring camera_info: {error}", throttle_duration_sec=WARN_PERIOD_S
                )
            else:
                return intrinsics.scaled(width, height), info if sized else None
        params = self.params
        if params.fx > 0:
            return Intrinsics(params.fx, params.fy, params.cx, params.cy, width, height), None
        self.get_logger().warning(
            "no camera_info yet and fx/fy/cx/cy unset: publishing depth only (no points, no camera_info)",
            throttle_duration_sec=WARN_PERIOD_S,
        )
        return None, None

    def destroy_node(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join()
        self._estimator.backend.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run ssim_depth depth_node``."""
    rclpy.init(args=args)
    try:
        node = DepthNode()
    except (ValueError, RuntimeError, OSError, ParameterException) as error:
        rclpy.logging.get_logger("depth_node").fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
