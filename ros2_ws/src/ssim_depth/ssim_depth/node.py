"""``depth_node``: sensor_msgs/Image in; metric depth, its CameraInfo, a point cloud and a preview out.

A message adapter: everything per frame (inference, range masking, camera choice, point cloud, preview) is
:class:`ssim_depth_core.runtime.frames.FramePipeline`, every conversion is in :mod:`ssim_depth.codecs`; this
module holds the parameters, subscriptions and publishers.

Threading: the image subscription callback only stores the newest message (replacing an unprocessed one
counts as a dropped frame) and wakes a worker thread, which decodes, infers and publishes. The executor is
never blocked by inference, and the node never builds a backlog: it always works on the latest frame.

Metres: parameter ``scale_source`` (:class:`~ssim_depth_core.runtime.frames.ScaleSettings`): ``model`` (the
default; the model must be metric, velocity- or stereo-supervised, or the node refuses to start), ``fixed``
(``depth_scale``) or ``camera_height`` (the ground plane fitted per frame with ``camera_height``,
``camera_pitch``, ``camera_roll``, ``ground_normal``). With ``camera_height`` nothing metric is guessed: until
the first plane fit, and once the plane has been lost for more than a few frames, depth, depth/camera_info and
points are withheld (a throttled warning says why; the preview, normalised per frame, is still published).

Topics (all relative, remappable; outputs carry the input header):
    image (sensor_msgs/Image) or image/compressed (sensor_msgs/CompressedImage, parameter ``compressed``),
    camera_info (sensor_msgs/CameraInfo) in, sensor-data QoS unless overridden by the parameters
    ``qos_overrides.<topic>.subscription.<policy>`` (reliability, depth, history, durability); images larger
    than ``max_input_pixels`` are dropped before decoding; an unusable camera_info (implausible intrinsics,
    another aspect ratio) is ignored for the fx/fy/cx/cy parameters or, without them, depth only;
    depth (32FC1, metres, NaN = invalid), depth/camera_info, points (PointCloud2 x y z rgb),
    depth/preview (bgr8) out; depth/scale (std_msgs/Float32: the scale applied to the frame, NaN when its
    depth is withheld) out once per processed frame, just before that frame's depth: Float32 has no header,
    so a subscriber pairs it with the depth by arrival order, not by stamp; depth/model (std_msgs/String,
    JSON: the frame's stamp and frame_id, the model file, its sha256, the backend, the estimator's generation,
    the settings and frame options that made it, the outputs published for it; transient local) out once
    per processed frame, before its depth (docs/ros.md). Parameter changes reach the worker as one snapshot
    between frames: no frame mixes values from before and after a change.
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSPolicyKind, QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32, Header, String

from ssim_depth.codecs import (
    ImageDecodeError,
    camera_info_from_intrinsics,
    cloud_to_pointcloud2_msg,
    depth_to_image_msg,
    image_msg_to_rgb,
    intrinsics_from_camera_info,
    model_info_msg,
    preview_image_msg,
    scaled_camera_info,
)
from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.runtime.backends import BACKENDS
from ssim_depth_core.runtime.frames import (
    DepthFrame,
    FrameOptions,
    FramePipeline,
    ModelSettings,
    ScaleSettings,
)
from ssim_depth_core.runtime.latency import FrameStats

WARN_PERIOD_S = 5.0  # throttle of the per-frame warnings
OUTPUT_QOS = QoSProfile(depth=5)  # reliable: RViz and rosbag2 defaults can subscribe
# depth/model: reliable, transient local: a subscriber that joins late still gets the latest frames' tags
MODEL_QOS = QoSProfile(depth=5, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# the input QoS policies a params file or --ros-args may override (qos_overrides.<topic>.subscription.*)
INPUT_QOS_OVERRIDES = QoSOverridingOptions(
    policy_kinds=(
        QoSPolicyKind.HISTORY,
        QoSPolicyKind.DEPTH,
        QoSPolicyKind.RELIABILITY,
        QoSPolicyKind.DURABILITY,
    )
)


@dataclass(frozen=True)
class DepthParams:
    """The node's parameters; defaults equal config/depth.yaml."""

    model_path: str = ""
    backend: str = "auto"
    min_depth: float = 0.0
    max_depth: float = 0.0
    scale_source: str = "model"
    depth_scale: float = 1.0
    camera_height: float = 0.0
    camera_pitch: float = 0.0
    camera_roll: float = 0.0
    ground_normal: str = "fitted"
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
    max_input_pixels: int = 16_000_000
    threads: int = 0

    def model_settings(self) -> ModelSettings:
        """The frame pipeline's model settings (0 depth limits = the model's range, camera_height 0 = unset);
        raises ValueError."""
        scale = ScaleSettings.from_mounting(
            self.scale_source,
            self.depth_scale,
            self.camera_height if self.camera_height > 0 else None,
            self.camera_pitch,
            self.camera_roll,
            self.ground_normal,
        )
        return ModelSettings(
            self.model_path,
            self.backend,
            min_depth=self.min_depth or None,
            max_depth=self.max_depth or None,
            output_resolution=self.output_resolution,
            scale=scale,
            threads=self.threads,
        )

    def frame_options(self) -> FrameOptions:
        """The frame pipeline's per-frame options; raises ValueError."""
        return FrameOptions(
            range_min=self.range_min,
            range_max=self.range_max,
            fallback_camera=(self.fx, self.fy, self.cx, self.cy) if self.fx > 0 else None,
            points=self.publish_points,
            point_stride=self.point_stride,
            preview=self.publish_preview,
        )


# the DepthParams that DepthParams.model_settings reads (the scale's go to ScaleSettings.from_mounting):
# applied by the worker, set back if that fails
SCALE_PARAMETERS = (
    "scale_source",
    "depth_scale",
    "camera_height",
    "camera_pitch",
    "camera_roll",
    "ground_normal",
)
MODEL_PARAMETERS = (
    "model_path",
    "backend",
    "threads",
    "min_depth",
    "max_depth",
    "output_resolution",
    *SCALE_PARAMETERS,
)


def _float_range(low: float, high: float) -> dict:
    return {"floating_point_range": [FloatingPointRange(from_value=low, to_value=high, step=0.0)]}


_PIXELS = _float_range(0, 1e6)
# name -> (description, extra ParameterDescriptor fields); types come from DepthParams' defaults
_DESCRIPTORS = {
    "model_path": ("model file: .engine (TensorRT), .onnx or .pt; required", {}),
    "backend": (f"inference backend: {' | '.join(BACKENDS)}", {}),
    "threads": (
        "onnxruntime backend: intra-op CPU threads; 0 = one per core",
        {"integer_range": [IntegerRange(from_value=0, to_value=256, step=1)]},
    ),
    "min_depth": (
        "network depth range minimum in metres; 0 = the model's training range",
        _float_range(0, 1e5),
    ),
    "max_depth": (
        "network depth range maximum in metres; 0 = the model's training range",
        _float_range(0, 1e5),
    ),
    "scale_source": (
        "where metres come from: model (the model is metric: velocity or stereo supervision) | camera_height "
        "(the ground plane fitted per frame, with camera_height) | fixed (depth_scale)",
        {},
    ),
    "depth_scale": ("scale_source fixed: the factor multiplying every depth", _float_range(1e-6, 1e6)),
    "camera_height": (
        "scale_source camera_height: height of the camera's optical centre above the ground in metres; "
        "0 = unset",
        _float_range(0, 100),
    ),
    "camera_pitch": (
        "scale_source camera_height: angle of the optical axis below the horizontal in radians (REP 103 "
        "pitch: > 0 looks down)",
        _float_range(-1.5, 1.5),
    ),
    "camera_roll": (
        "scale_source camera_height: roll about the optical axis in radians (REP 103: > 0 lowers the "
        "image's right side)",
        _float_range(-1.5, 1.5),
    ),
    "ground_normal": (
        "scale_source camera_height: fitted (the ground plane's normal is fitted near the mounting's up; "
        "follows pitching and slopes) | mounting (the normal is the mounting's up, only the height is "
        "fitted; for a rigid mount over flat ground)",
        {},
    ),
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
    "max_input_pixels": (
        "larger images (raw by width x height, compressed by the size their header declares, checked before "
        "decoding) are dropped with a warning",
        {"integer_range": [IntegerRange(from_value=1, to_value=1_000_000_000, step=1)]},
    ),
}


def validate_params(params: DepthParams) -> str | None:
    """The first problem with a parameter set (cross-field rules the descriptors cannot express), or None."""
    if not params.model_path:
        return "model_path is empty: set it to a .engine, .onnx or .pt file (launch argument model:=...)"
    if not Path(params.model_path).is_file():
        return f"model_path '{params.model_path}' is not a file"
    if (params.fx > 0) != (params.fy > 0):
        return f"set both fx and fy (> 0) or neither, got fx={params.fx}, fy={params.fy}"
    try:
        params.model_settings()
        params.frame_options()
    except ValueError as error:
        return str(error)
    return None


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
            self._pipeline = FramePipeline(self.params.model_settings())
            self._served = self.params  # the parameters the pipeline's model settings come from
        except BaseException:
            Node.destroy_node(self)  # nothing of ours to stop yet
            raise
        self._reload = False
        self._model = _served_model(self._pipeline, generation=1)
        self._scale_line = f"scale source {self.params.scale_source}: no frame yet"

        self.stats = FrameStats()
        self._cond = threading.Condition()
        self._pending: tuple[Image | CompressedImage, float] | None = None
        self._stopping = False
        self._camera_info: CameraInfo | None = None

        self._depth_pub = self.create_publisher(Image, "depth", OUTPUT_QOS)
        self._info_pub = self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS)
        self._points_pub = self.create_publisher(PointCloud2, "points", OUTPUT_QOS)
        self._preview_pub = self.create_publisher(Image, "depth/preview", OUTPUT_QOS)
        self._scale_pub = self.create_publisher(Float32, "depth/scale", OUTPUT_QOS)
        self._model_pub = self.create_publisher(String, "depth/model", MODEL_QOS)
        image_type, image_topic = (
            (CompressedImage, "image/compressed") if self.params.compressed else (Image, "image")
        )
        # Sensor-data QoS by default; qos_overrides.<topic>.subscription.<policy> parameters override it
        # (e.g. reliability: reliable, for large frames: see docs/ros.md).
        self._image_sub = self.create_subscription(
            image_type,
            image_topic,
            self._on_image,
            copy.copy(qos_profile_sensor_data),  # rclpy writes the overrides into the profile it is given
            qos_overriding_options=INPUT_QOS_OVERRIDES,
        )
        self._info_sub = self.create_subscription(
            CameraInfo,
            "camera_info",
            self._on_camera_info,
            copy.copy(qos_profile_sensor_data),  # rclpy writes the overrides into the profile it is given
            qos_overriding_options=INPUT_QOS_OVERRIDES,
        )
        self._image_topic = self._image_sub.topic_name
        self._stats_timer = None
        self._start_stats_timer(self.params.stats_period)

        self.add_on_set_parameters_callback(self._check_new_params)
        self.add_post_set_parameters_callback(self._apply_new_params)
        self._worker = threading.Thread(target=self._work, name="depth_worker", daemon=True)
        self._worker.start()
        estimator = self._pipeline.estimator
        self.get_logger().info(
            f"serving {self.params.model_path} on {estimator.backend.name} at {estimator.input_size[1]}x"
            f"{estimator.input_size[0]}, depth range [{estimator.min_depth}, {estimator.max_depth}] m, "
            f"metric: {estimator.backend.metric}, scale source {self.params.scale_source}; "
            f"input {self._image_topic}"
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
        # rclpy's own parameters (use_sim_time, qos_overrides.*) are not the node's to check
        own = {p.name: p.value for p in parameters if p.name in _DESCRIPTORS}
        if not own:
            return SetParametersResult(successful=True)
        params = self._read_params(own)
        # the open model decides now; a new model is checked when the worker opens it
        problem = validate_params(params) or self._pipeline.refusal(params.model_settings())
        return SetParametersResult(successful=problem is None, reason=problem or "")

    def _apply_new_params(self, parameters: list[Parameter]) -> None:
        with self._cond:  # the worker takes params and the reload flag together, between frames
            previous, self.params = self.params, self._read_params({})
            if self.params.model_settings() != previous.model_settings():
                self._reload = True  # applied by the worker, between frames
        if self.params.stats_period != previous.stats_period:
            self._start_stats_timer(self.params.stats_period)

    def _reconfigure(self, params: DepthParams) -> None:
        """Apply changed model parameters (worker thread); the backend is reopened only for a new model."""
        settings = params.model_settings()
        try:
            rebuilt = self._pipeline.configure(settings)
        except (ValueError, RuntimeError, OSError) as error:
            self.get_logger().error(
                f"cannot apply the new model parameters, keeping the previous model: {error}"
            )
            self._set_back(params)
            return
        self._served = params
        if rebuilt:
            backend = self._pipeline.estimator.backend
            self._model = _served_model(self._pipeline, self._model["generation"] + 1, self._model)
            self.get_logger().info(
                f"estimator rebuilt (generation {self._model['generation']}): {settings.model_path} on "
                f"{backend.name}"
            )

    def _set_back(self, failed: DepthParams) -> None:
        """Set the model parameters of the ``failed`` snapshot back to the served ones, so that they say what
        serves and a later change does not carry the failed one; all at once (each is checked with the others'
        served values), and only those nobody has changed again since."""
        served = self._served
        restored = [
            Parameter(name, value=getattr(served, name))
            for name in MODEL_PARAMETERS
            if getattr(failed, name) != getattr(served, name)
            and self.get_parameter(name).value == getattr(failed, name)
        ]
        if not restored:
            return
        names = ", ".join(p.name for p in restored)
        result = self.set_parameters_atomically(restored)
        if result.successful:
            self.get_logger().warning(f"set {names} back to the served model's")
        else:
            self.get_logger().error(f"could not set {names} back to the served model's: {result.reason}")

    def _start_stats_timer(self, period: float) -> None:
        if self._stats_timer is not None:
            self.destroy_timer(self._stats_timer)
            self._stats_timer = None
        if period > 0:
            self._stats_timer = self.create_timer(period, self._log_stats)

    def _log_stats(self) -> None:
        self.get_logger().info(f"{self.stats.take_window()}; {self._scale_line}")

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
                # one consistent parameter set per frame: a change applied meanwhile waits for the next
                params, reload, self._reload = self.params, self._reload, False
            try:
                self._process(msg, received, params, reload)
            except Exception as error:  # a bad frame or a backend hiccup must not kill the node
                if not self.context.ok():  # shutting down while the last frame was being published
                    return
                self.stats.add(failed=1)
                self.get_logger().error(
                    f"frame on {self._image_topic} failed: {type(error).__name__}: {error}",
                    throttle_duration_sec=WARN_PERIOD_S,
                )

    # ------------------------------------------------------------------------------------------ per frame
    def _process(
        self, msg: Image | CompressedImage, received: float, params: DepthParams, reload: bool
    ) -> None:
        if reload:  # before decoding: a rejected frame must not postpone the switch
            self._reconfigure(params)
        try:
            rgb = image_msg_to_rgb(msg, params.max_input_pixels)
        except ImageDecodeError as error:
            self.stats.add(rejected=1)
            self.get_logger().warning(
                f"dropping a frame on {self._image_topic}: {error}", throttle_duration_sec=WARN_PERIOD_S
            )
            return
        header, options = msg.header, params.frame_options()
        camera, info, problem = self._camera(rgb.shape[1], rgb.shape[0])
        frame = self._pipeline(rgb, camera, options)
        self._scale_line = _describe_scale(frame, self._pipeline.estimator.backend.metric)
        made = {"depth": frame.depth, "points": frame.cloud, "preview": frame.preview}
        outputs = [name for name, output in made.items() if output is not None]
        tag = model_info_msg(self._model, self._pipeline.settings, options, header, outputs)
        self._model_pub.publish(tag)
        self._scale_pub.publish(Float32(data=math.nan if frame.scale is None else frame.scale))
        if frame.depth is None:
            reasons = [r for r in (problem, frame.camera_problem, frame.ground.reason) if r]
            self.get_logger().warning(
                f"no metric scale ({'; '.join(reasons)}): withholding depth, depth/camera_info and points",
                throttle_duration_sec=WARN_PERIOD_S,
            )
        else:
            self._depth_pub.publish(depth_to_image_msg(frame.depth, header))
            self._publish_camera_info(frame, info, problem, header)
        if frame.cloud is not None:
            self._points_pub.publish(cloud_to_pointcloud2_msg(frame.cloud, header))
        if frame.preview is not None:
            self._preview_pub.publish(preview_image_msg(frame.preview, header))
        self.stats.frame_done(time.monotonic() - received)

    def _publish_camera_info(
        self, frame: DepthFrame, info: CameraInfo | None, problem: str | None, header: Header
    ) -> None:
        """depth/camera_info of a published depth, or a throttled warning why there is none."""
        if frame.intrinsics is None:
            reasons = [r for r in (problem, frame.camera_problem) if r] or [
                "no camera_info yet and fx/fy/cx/cy unset"
            ]
            self.get_logger().warning(
                f"{'; '.join(reasons)}: publishing depth only (no points, no depth/camera_info)",
                throttle_duration_sec=WARN_PERIOD_S,
            )
            return
        if problem:
            self.get_logger().warning(
                f"{problem}: using the fx/fy/cx/cy parameters", throttle_duration_sec=WARN_PERIOD_S
            )
        height, width = frame.depth.shape
        self._info_pub.publish(
            scaled_camera_info(info, width, height, header)
            if info is not None
            else camera_info_from_intrinsics(frame.intrinsics, header)
        )

    def _camera(self, width: int, height: int) -> tuple[Intrinsics | None, CameraInfo | None, str | None]:
        """The latest camera_info as intrinsics of the ``width`` x ``height`` image; the message itself when
        it can be rescaled for depth/camera_info (it states its image size), else None; and why it was
        ignored, else None.

        Unusable (None, None, reason): uncalibrated, implausible (:class:`Intrinsics` checks: non-finite,
        focal length or principal point out of range) or for another aspect ratio than the image (a
        different size of the same aspect ratio is rescaled: binning, a lower driver resolution). A
        CameraInfo of size 0x0 is for the image's size.
        """
        info = self._camera_info
        if info is None:
            return None, None, None
        topic = self._info_sub.topic_name
        try:
            camera = intrinsics_from_camera_info(info, width, height).fitted(width, height, "CameraInfo")
        except ValueError as error:
            return None, None, f"ignoring camera_info on {topic}: {error}"
        return camera, info if info.width > 0 and info.height > 0 else None, None

    def destroy_node(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join()
        self._pipeline.close()
        super().destroy_node()


def _served_model(pipeline: FramePipeline, generation: int, previous: dict | None = None) -> dict:
    """What depth/model says about the open estimator: ``generation`` (1 at start, + 1 per rebuild), the model
    file and its sha256 (hashed again only when the file or backend changed), the backend opened, the
    network's input size and metric source."""
    settings, backend = pipeline.settings, pipeline.estimator.backend
    same = previous is not None and (previous["model_path"], previous["backend"]) == (
        settings.model_path,
        backend.name,
    )
    digest = previous["model_sha256"] if same else _sha256(settings.model_path)
    return {
        "generation": generation,
        "model_path": settings.model_path,
        "model_sha256": digest,
        "backend": backend.name,
        "input_size": list(pipeline.estimator.input_size),
        "metric": backend.metric,
    }


def _sha256(path: str) -> str | None:
    """The file's hex sha256; None when it cannot be read any more (the open model keeps serving)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _describe_scale(frame: DepthFrame, metric: str) -> str:
    """The scale part of the statistics line."""
    if frame.ground is not None:
        return f"scale source camera_height: {frame.ground.describe()}"
    if frame.scale_source == "model":
        return f"scale 1 (source model, metric by {metric})"
    return f"scale {frame.scale:g} (source fixed: depth_scale)"


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run ssim_depth depth_node``."""
    rclpy.init(args=args)
    try:
        node = DepthNode()
    except (ValueError, RuntimeError, OSError, ParameterException) as error:
        # one line (a launch file's shutdown reason, log scrapers); rcutils colours it only on a terminal
        reason = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        rclpy.logging.get_logger("depth_node").fatal(f"cannot start: {reason}")
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
