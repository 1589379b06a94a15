"""The frame pipeline: an RGB frame (+ its camera) -> metric depth, the camera at the depth's resolution, a
point cloud and a preview.

Everything a depth server does beyond converting messages, shared by the ROS node and offline inference:

- the estimator's lifecycle: built from :class:`ModelSettings`, rebuilt by :meth:`FramePipeline.configure`
  (reusing the open backend unless the model file or the backend changed), closed by
  :meth:`FramePipeline.close`;
- the metric scale (:class:`ScaleSettings`): "model" = the network's own metric depth (scale 1; a model whose
  metadata says it is scale-less, ``metric == "none"``, is refused), "fixed" = ``depth_scale``,
  "camera_height" = the ground plane fitted in each frame's depth (:mod:`~ssim_depth_core.runtime.scale`),
  smoothed over time. With "camera_height" nothing metric is made up: until the first plane fit, and after the
  plane has been lost for more than ``max_hold`` frames, the frame's depth is withheld (``depth``, ``cloud``
  None, ``scale`` None, the reason in ``ground``); while the plane is lost for fewer frames, depth is scaled
  by the last smoothed scale (``ground.reason`` says so);
- range masking: depths outside the open interval (range_min, range_max) become NaN (REP 117), after scaling;
- the camera: the frame's own intrinsics (any resolution), else the fallback (fx, fy, cx, cy) at the frame's
  resolution (none, with the reason in :attr:`DepthFrame.camera_problem`, when implausible for that size:
  :class:`Intrinsics` checks), else none; scaled to the depth's resolution (a plain resize,
  :meth:`Intrinsics.scaled`);
- the point cloud (:func:`~ssim_depth_core.runtime.pointcloud.depth_to_pointcloud`), coloured by the frame
  area-resized (``imaging.resize_image``) to the depth's resolution, and the preview
  (:func:`~ssim_depth_core.imaging.colorize_depth`, normalised per frame, so it is made from the unscaled
  depth of a frame whose depth is withheld as well).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.imaging import colorize_depth, resize_image
from ssim_depth_core.runtime.backends import BACKENDS, Backend, create_backend
from ssim_depth_core.runtime.estimator import DepthEstimator
from ssim_depth_core.runtime.pointcloud import PointCloudData, depth_to_pointcloud
from ssim_depth_core.runtime.scale import (
    GroundNormal,
    GroundPlaneScale,
    GroundPlaneSettings,
    ScaleState,
    check_ground_normal,
)

OutputResolution = Literal["input", "network"]
ScaleSource = Literal["model", "camera_height", "fixed"]
SCALE_SOURCES: tuple[str, ...] = get_args(ScaleSource)


@dataclass(frozen=True)
class ScaleSettings:
    """Where the depth's metric scale comes from.

    Attributes:
        source: "model" (the network is metric: velocity or stereo supervision; scale 1), "fixed"
            (``depth_scale``) or "camera_height" (the ground plane, ``ground``).
        depth_scale: the "fixed" scale, multiplying every depth; unused by the other sources.
        ground: the camera's mounting and the plane fit; required by "camera_height", unused by the others.
    """

    source: ScaleSource = "model"
    depth_scale: float = 1.0
    ground: GroundPlaneSettings | None = None

    def __post_init__(self) -> None:
        if self.source not in SCALE_SOURCES:
            raise ValueError(f"scale_source '{self.source}' is not one of {', '.join(SCALE_SOURCES)}")
        if not (isinstance(self.depth_scale, int | float) and 0 < self.depth_scale < math.inf):
            raise ValueError(f"depth_scale must be a finite number > 0, got {self.depth_scale!r}")
        if self.source == "camera_height" and self.ground is None:
            raise ValueError(
                "scale_source 'camera_height' needs camera_height: the height of the camera's optical centre "
                "above the ground in metres (> 0)"
            )

    @classmethod
    def from_mounting(
        cls,
        source: str = "model",
        depth_scale: float = 1.0,
        camera_height: float | None = None,
        camera_pitch: float = 0.0,
        camera_roll: float = 0.0,
        ground_normal: GroundNormal = "fitted",
        **ground: object,
    ) -> ScaleSettings:
        """The settings of scale ``source`` from the camera's mounting, as the CLI and the ROS node give it.

        ``camera_height`` None = unset (no ground plane; "camera_height" then refuses); otherwise the ground
        plane is :class:`GroundPlaneSettings` of (``camera_height``, ``camera_pitch``, ``camera_roll``,
        ``ground_normal``) and any further fit options in ``ground``, checked whatever the source
        (``ground_normal`` even without a height). Raises ValueError.
        """
        check_ground_normal(ground_normal)
        plane = None
        if camera_height is not None:
            plane = GroundPlaneSettings(camera_height, camera_pitch, camera_roll, ground_normal, **ground)
        return cls(source, depth_scale, plane)


def scale_problem(scale: ScaleSettings, metric: str, model_path: str | Path) -> str | None:
    """Why ``scale`` cannot serve a model whose backend reports ``metric``, else None."""
    if scale.source == "model" and metric == "none":
        return (
            f"{model_path}: scale_source 'model' needs a metric model, and this one is scale-less (its "
            "metadata says metric: none, i.e. trained without velocity or stereo supervision): set "
            "scale_source to 'camera_height' (with camera_height, the camera's height above the ground in "
            "metres) or 'fixed' (with depth_scale), or train the model with velocity or stereo supervision"
        )
    return None


@dataclass(frozen=True)
class ModelSettings:
    """What the estimator is built from.

    Attributes:
        model_path: ``.engine``, ``.onnx`` or ``.pt`` file (stored as a string).
        backend: "auto", "tensorrt", "onnxruntime" or "torch".
        min_depth, max_depth: network depth range in metres; None = the model's training range.
        output_resolution: "input" (depth at each frame's size) or "network" (at the network's size).
        scale: where the metric scale comes from; the default ("model") needs a metric model.
        threads: intra-op CPU threads of the onnxruntime backend; 0 = its default (one per core).
    """

    model_path: str | Path
    backend: str = "auto"
    min_depth: float | None = None
    max_depth: float | None = None
    output_resolution: OutputResolution = "input"
    scale: ScaleSettings = ScaleSettings()
    threads: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "model_path", str(self.model_path)
        )  # "m.onnx" and Path("m.onnx") are one model
        if self.backend not in BACKENDS:
            raise ValueError(f"backend '{self.backend}' is not one of {', '.join(BACKENDS)}")
        choices = get_args(OutputResolution)
        if self.output_resolution not in choices:
            raise ValueError(
                f"output_resolution '{self.output_resolution}' is not one of {', '.join(choices)}"
            )
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = one per core), got {self.threads}")
        if self.min_depth is not None and self.max_depth is not None and self.min_depth >= self.max_depth:
            raise ValueError(f"min_depth {self.min_depth} must be < max_depth {self.max_depth}")


@dataclass(frozen=True)
class FrameOptions:
    """What a frame yields besides its depth.

    Attributes:
        range_min, range_max: depths <= range_min or >= range_max become NaN; 0 = no limit.
        fallback_camera: (fx, fy, cx, cy) in pixels at the input frame's resolution, used for frames that come
            without intrinsics; None = such frames have no camera (no point cloud).
        points: compute the point cloud (only with a camera).
        point_stride: the cloud keeps every n-th pixel in both axes.
        organized_points: the cloud keeps the pixel grid with NaN for invalid pixels (True) or holds only the
            valid points (False).
        preview: colourise the depth.
    """

    range_min: float = 0.0
    range_max: float = 0.0
    fallback_camera: tuple[float, float, float, float] | None = None
    points: bool = False
    point_stride: int = 1
    organized_points: bool = True
    preview: bool = False

    def __post_init__(self) -> None:
        if self.range_min < 0 or self.range_max < 0:
            raise ValueError(f"range_min and range_max must be >= 0, got {self.range_min}, {self.range_max}")
        if self.range_max and self.range_min >= self.range_max:
            raise ValueError(f"range_min {self.range_min} must be < range_max {self.range_max}")
        if not isinstance(self.point_stride, int) or self.point_stride < 1:
            raise ValueError(f"point_stride must be a positive integer, got {self.point_stride!r}")
        if self.fallback_camera is not None:
            if len(self.fallback_camera) != 4:
                raise ValueError(f"fallback_camera must be (fx, fy, cx, cy), got {self.fallback_camera}")
            try:
                Intrinsics.check_values(*self.fallback_camera)
            except ValueError as error:
                raise ValueError(f"fallback_camera must be finite with fx, fy > 0: {error}") from None


@dataclass(frozen=True)
class DepthFrame:
    """One processed frame of (h, w) pixels: the input frame's size, or the network's ("network" output).

    Attributes:
        depth: (h, w) float32 depth in metres, NaN = invalid; None when withheld for want of a scale
            ("camera_height" before a plane fit, or after a long loss: ``ground.reason`` says why).
        intrinsics: the camera of the depth map (width w, height h), or None when the frame had none.
        cloud: the point cloud of ``depth`` when requested, a camera is known and depth not withheld.
        preview: (h, w, 3) uint8 BGR colourised inverse depth when requested, else None.
        scale: the metric scale applied (1 for "model"), None when depth is withheld.
        scale_source: the :class:`ScaleSettings` source in use.
        camera_problem: why the fallback camera was not used for this frame (implausible at its size), else
            None.
        ground: the ground-plane fit and smoothing state ("camera_height"), else None.
    """

    depth: np.ndarray | None
    intrinsics: Intrinsics | None
    cloud: PointCloudData | None
    preview: np.ndarray | None
    scale: float | None
    scale_source: ScaleSource
    camera_problem: str | None = None
    ground: ScaleState | None = None


class FramePipeline:
    """RGB frames -> :class:`DepthFrame` through one :class:`DepthEstimator` (see the module docstring).

    Configure and process frames from one thread; :meth:`refusal` may be asked from another (it reads the
    served settings and estimator as one pair).

    Attributes:
        ground: the ground-plane scale estimator of "camera_height", else None.

    Raises:
        ValueError, RuntimeError, OSError: the model cannot be opened (from :func:`create_backend`);
            ValueError also for scale source "model" with a scale-less model (:func:`scale_problem`).
    """

    def __init__(self, settings: ModelSettings) -> None:
        self._served = (settings, _build_estimator(settings, None))
        self.ground = _ground_scale(settings.scale)

    @property
    def settings(self) -> ModelSettings:
        """The settings being served."""
        return self._served[0]

    @property
    def estimator(self) -> DepthEstimator:
        """The estimator being served."""
        return self._served[1]

    def configure(self, settings: ModelSettings) -> bool:
        """Switch to ``settings``; returns whether the estimator was rebuilt (any setting changed).

        The open backend is reused unless ``model_path``, ``backend`` or ``threads`` changed; then the new
        model is opened first and the old backend closed after. If that raises (or the scale source refuses
        the model), the pipeline keeps its previous model and settings. The ground-plane state restarts when
        the model or the scale settings change.
        """
        if settings == self.settings:
            return False
        previous, old = self._served
        same_model = _backend_key(settings) == _backend_key(previous)
        self._served = (settings, _build_estimator(settings, old.backend if same_model else None))
        if not same_model:
            old.backend.close()
        if not same_model or settings.scale != previous.scale:
            self.ground = _ground_scale(settings.scale)
        return True

    def refusal(self, settings: ModelSettings) -> str | None:
        """Why ``settings`` cannot be served, as far as the open backend tells (its model's metadata and depth
        range), else None; settings for another model or backend are only known once :meth:`configure`
        opens it."""
        served, estimator = self._served
        if _backend_key(settings) != _backend_key(served):
            return None
        try:
            _build_estimator(settings, estimator.backend)
        except ValueError as error:
            return str(error)
        return None

    def __call__(
        self, rgb: np.ndarray, camera: Intrinsics | None = None, options: FrameOptions = FrameOptions()
    ) -> DepthFrame:
        """Process one frame.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            camera: intrinsics of ``rgb`` at any resolution (rescaled to the depth's); None = use
                ``options.fallback_camera`` at (W, H), if set.
            options: range limits, fallback camera, which of cloud and preview to make.
        """
        depth = self.estimator(rgb)  # metres for "model" and "fixed", depth units for "camera_height"
        height, width = depth.shape
        problem = None
        if camera is None and options.fallback_camera is not None:
            try:
                camera = Intrinsics(*options.fallback_camera, rgb.shape[1], rgb.shape[0])
            except ValueError as error:
                problem = f"fallback camera {options.fallback_camera}: {error}"
        if camera is not None and (camera.width, camera.height) != (width, height):
            camera = camera.scaled(width, height)
        source, ground = self.settings.scale.source, None
        if self.ground is None:
            scale = self.settings.scale.depth_scale if source == "fixed" else 1.0
        else:
            ground = self.ground.update(depth, camera)
            scale = ground.scale
            if scale is None:
                preview = colorize_depth(depth) if options.preview else None
                return DepthFrame(None, camera, None, preview, None, source, problem, ground)
            depth *= np.float32(scale)
        if options.range_min or options.range_max:
            upper = options.range_max or math.inf
            depth[~((depth > options.range_min) & (depth < upper))] = np.nan
        cloud = None
        if options.points and camera is not None:
            cloud = depth_to_pointcloud(
                depth,
                camera,
                resize_image(rgb, width, height),
                stride=options.point_stride,
                organized=options.organized_points,
            )
        preview = colorize_depth(depth) if options.preview else None
        return DepthFrame(depth, camera, cloud, preview, scale, source, problem, ground)

    def close(self) -> None:
        """Close the backend."""
        self.estimator.backend.close()

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _backend_key(settings: ModelSettings) -> tuple:
    """What the open backend depends on: a change reopens it."""
    return settings.model_path, settings.backend, settings.threads


def _build_estimator(settings: ModelSettings, backend: Backend | None) -> DepthEstimator:
    """A DepthEstimator for ``settings`` on ``backend``, or on a newly opened one when None, checked to run
    (:meth:`DepthEstimator.check_runs`; closed again when the estimator cannot be built or run, or the scale
    source refuses the model)."""
    opened = backend is None
    backend = backend or create_backend(
        settings.model_path, settings.backend, threads=settings.threads or None
    )
    try:
        problem = scale_problem(settings.scale, backend.metric, settings.model_path)
        if problem:
            raise ValueError(problem)
        estimator = DepthEstimator(
            backend,
            min_depth=settings.min_depth,
            max_depth=settings.max_depth,
            depth_scale=settings.scale.depth_scale if settings.scale.source == "fixed" else 1.0,
            output_size=backend.input_size if settings.output_resolution == "network" else None,
        )
        if opened:  # a model that opens but cannot run is refused like one that does not open
            estimator.check_runs(settings.model_path)
        return estimator
    except BaseException:
        if opened:
            backend.close()
        raise


def _ground_scale(scale: ScaleSettings) -> GroundPlaneScale | None:
    return GroundPlaneScale(scale.ground) if scale.source == "camera_height" else None
