"""Metric scale of a scale-less depth map from a fixed-mounted camera's height above the ground.

A monocular self-supervised network predicts depth up to an unknown factor; a camera bolted to a robot knows
how high its optical centre sits above the ground. Fitting the ground plane in the predicted cloud and
dividing the known height by the fitted one gives the factor: ``scale = camera_height / fitted_height``.

Geometry (REP 103 camera optical frame: x right, y down, z forward): ``camera_pitch`` and ``camera_roll``
(radians) orient the camera to the ground as REP 103 body angles: 0, 0 = optical axis parallel to the ground
and image rows level; pitch > 0 tilts the optical axis down towards the ground, roll > 0 lowers the image's
right side. They give the expected "up" direction in the optical frame (:func:`ground_up`).

The fit (:func:`fit_ground_plane`), on points back-projected by the serving point cloud
(:func:`~ssim_depth_core.runtime.pointcloud.depth_to_pointcloud`):

- candidates (:func:`ground_candidates`): points seen at least ``horizon_margin`` below the horizon implied by
  pitch and roll (the lower image region when level);
- RANSAC over 3-point planes whose normal lies within ``max_tilt`` of "up" and below which the camera sits;
  a point is an inlier when its distance to the plane is below ``inlier_tolerance`` x the plane's height
  (scale-free, and the right unit for relative depth noise: a depth error of e % moves a ground point's
  height by e % of the camera height whatever its distance);
- a least-squares (total) refit on the inliers, repeated with the refit's inliers;
- with ``ground_normal="mounting"`` the normal is not fitted but taken as "up" itself, and only the height is
  (RANSAC over the candidates' heights along "up", refits as the mean height of the inliers). A fitted normal
  follows a pitching robot or a sloping road; on a rigid mounting over flat ground the known normal keeps a
  prediction whose ground is slightly tilted from extrapolating that tilt back to the camera: a ground tilted
  by t radians, seen around a distance z, moves the fitted plane's height by about t z (docs/training.md
  measures both on trained models);
- the plane is lost (no scale) with a reason when there are too few candidates or inliers, when no plane
  lies within the normal prior, or when the result is not finite.

:class:`GroundPlaneScale` runs the fit per frame, smooths the scale (median of the log scales of the last
``window`` good fits) and resets when the plane is lost: the window is cleared, the last smoothed scale is
held for at most ``max_hold`` lost frames, then the scale is None until the plane is found again. Random
sampling uses one seeded generator per instance, so a sequence of frames always gives the same scales.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.geometry import euler_zyx_to_matrix
from ssim_depth_core.runtime.pointcloud import depth_to_pointcloud

REFITS = 2  # least-squares refits on the inliers after RANSAC
GroundNormal = Literal["fitted", "mounting"]  # the plane's normal: fitted near "up", or "up" itself
GROUND_NORMALS: tuple[str, ...] = get_args(GroundNormal)


def check_ground_normal(ground_normal: str) -> None:
    """Raise ValueError naming the choices unless ``ground_normal`` is one of :data:`GROUND_NORMALS`."""
    if ground_normal not in GROUND_NORMALS:
        raise ValueError(f"ground_normal must be one of {', '.join(GROUND_NORMALS)}, got {ground_normal!r}")


@dataclass(frozen=True)
class GroundPlaneSettings:
    """The mounting and the ground-plane fit.

    Attributes:
        camera_height: height of the optical centre above the ground in metres.
        camera_pitch, camera_roll: the camera's orientation to the ground in radians (module docstring).
        ground_normal: ``fitted`` (the plane's normal is fitted within ``max_tilt`` of the expected up
            direction) or ``mounting`` (the normal is that direction; only the height is fitted).
        max_tilt: the ground's normal must lie within this angle (radians) of the expected up direction.
        horizon_margin: candidates are seen at least this angle (radians) below the horizon.
        inlier_tolerance: inlier distance to the plane as a fraction of the plane's height.
        iterations: RANSAC hypotheses per frame.
        min_inliers: fewer inliers (at the sampling stride) = plane lost.
        min_inlier_fraction: fewer inliers than this fraction of the candidates = plane lost.
        sample_pixels: the depth map is sampled with the smallest stride that keeps at most this many pixels.
        max_points: RANSAC scores hypotheses on at most this many candidates (the refit uses them all).
        window: number of good per-frame scales whose median is the smoothed scale.
        max_hold: lost frames during which the last smoothed scale is still reported.
        seed: of the random sampling.
    """

    camera_height: float
    camera_pitch: float = 0.0
    camera_roll: float = 0.0
    ground_normal: GroundNormal = "fitted"
    max_tilt: float = 0.2
    horizon_margin: float = 0.1
    inlier_tolerance: float = 0.05
    iterations: int = 200
    min_inliers: int = 100
    min_inlier_fraction: float = 0.2
    sample_pixels: int = 20_000
    max_points: int = 2_000
    window: int = 5
    max_hold: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.camera_height) and self.camera_height > 0):
            raise ValueError(
                "camera_height must be the camera's height above the ground in metres (> 0), got "
                f"{self.camera_height!r}"
            )
        for name in ("camera_pitch", "camera_roll"):
            value = getattr(self, name)
            if not (math.isfinite(value) and abs(value) < math.pi / 2):
                raise ValueError(f"{name} must be an angle in radians within (-pi/2, pi/2), got {value!r}")
        check_ground_normal(self.ground_normal)
        if not 0 < self.max_tilt < math.pi / 2:
            raise ValueError(f"max_tilt must be within (0, pi/2) radians, got {self.max_tilt!r}")
        if not 0 <= self.horizon_margin < math.pi / 2:
            raise ValueError(f"horizon_margin must be within [0, pi/2) radians, got {self.horizon_margin!r}")
        if not 0 < self.inlier_tolerance < 1:
            raise ValueError(f"inlier_tolerance must be within (0, 1), got {self.inlier_tolerance!r}")
        if not 0 < self.min_inlier_fraction <= 1:
            raise ValueError(f"min_inlier_fraction must be within (0, 1], got {self.min_inlier_fraction!r}")
        for name, least in (
            ("iterations", 1),
            ("min_inliers", 3),
            ("sample_pixels", 3),
            ("max_points", 3),
            ("window", 1),
            ("max_hold", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")

    @property
    def up(self) -> np.ndarray:
        """The expected up direction in the camera optical frame (:func:`ground_up`)."""
        return ground_up(self.camera_pitch, self.camera_roll)


@dataclass(frozen=True)
class PlaneFit:
    """One frame's ground plane ``normal . p = -height`` in the camera optical frame, in the depth's unit.

    Attributes:
        normal: (3,) unit normal pointing up (away from the ground), or None when the plane is lost.
        height: distance of the camera centre to the plane, or None when lost.
        inliers: points within the inlier tolerance of the plane (of the best hypothesis when lost).
        candidates: points below the horizon the plane was fitted to.
        problem: why the plane is lost, else None.
    """

    normal: np.ndarray | None
    height: float | None
    inliers: int
    candidates: int
    problem: str | None = None


@dataclass(frozen=True)
class ScaleState:
    """The scale after one frame.

    Attributes:
        scale: the smoothed scale to apply (metres per depth unit); the last one while the plane has been
            lost for at most ``max_hold`` frames; None before the first fit and after longer losses.
        frame_scale: this frame's own ``camera_height / fitted height``, None when its plane is lost.
        inliers, candidates: of this frame's fit.
        lost_frames: consecutive frames without a plane, this one included (0 = this frame's fit is good).
        reason: why this frame's plane is lost, else None.
    """

    scale: float | None
    frame_scale: float | None
    inliers: int
    candidates: int
    lost_frames: int
    reason: str | None

    def describe(self) -> str:
        """One line for a log: the scale and the fit, or why there is none."""
        scale = "none" if self.scale is None else f"{self.scale:.4g}"
        line = f"ground-plane scale {scale} ({self.inliers}/{self.candidates} inliers"
        if self.reason is None:
            return f"{line})"
        return f"{line}; plane lost for {self.lost_frames} frame(s): {self.reason})"


def ground_up(pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(3,) unit up direction (against gravity) in the optical frame of a camera at ``pitch``, ``roll``.

    The camera body frame (REP 103: x forward, y left, z up) is Ry(pitch) Rx(roll) from a level frame, so up
    in the body frame is the last row of that rotation; optical = (-y, -z, x) of body.
    """
    up_body = euler_zyx_to_matrix(0.0, pitch, roll)[2]
    return np.array([-up_body[1], -up_body[2], up_body[0]])


def ground_candidates(
    depth: np.ndarray, intrinsics: Intrinsics, up: np.ndarray, horizon_margin: float, stride: int = 1
) -> np.ndarray:
    """(N, 3) float64 points of ``depth`` (every ``stride``-th pixel) seen at least ``horizon_margin``
    radians below the horizon of ``up``; invalid depths (NaN, inf, <= 0) are left out."""
    points = depth_to_pointcloud(depth, intrinsics, stride=stride, organized=False).points[0]
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=-1).astype(np.float64)
    below = xyz @ up < -math.sin(horizon_margin) * np.linalg.norm(xyz, axis=-1)
    return xyz[below]


def fit_ground_plane(
    points: np.ndarray, up: np.ndarray, settings: GroundPlaneSettings, rng: np.random.Generator
) -> PlaneFit:
    """RANSAC + least-squares ground plane of (N, 3) ``points``, normal near ``up`` (module docstring)."""
    count = len(points)
    if count < settings.min_inliers:
        problem = (
            f"{count} points below the horizon, fewer than min_inliers {settings.min_inliers} (is the "
            "ground in view? are camera_pitch and camera_roll right?)"
        )
        return PlaneFit(None, None, 0, count, problem)
    sample = points if count <= settings.max_points else points[rng.choice(count, settings.max_points, False)]
    mounting = settings.ground_normal == "mounting"
    if mounting:  # one point per hypothesis: the normal is known
        normals = np.tile(up, (settings.iterations, 1))
        heights = -(sample[rng.integers(0, len(sample), settings.iterations)] @ up)
    else:
        triples = sample[rng.integers(0, len(sample), (settings.iterations, 3))]
        normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # repeated or collinear samples: no plane
            normals /= lengths
        normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]
        heights = -np.einsum("ij,ij->i", normals, triples[:, 0])
    plausible = (normals @ up >= math.cos(settings.max_tilt)) & (heights > 0)  # NaN fails both
    if not plausible.any():
        problem = (
            f"none of {settings.iterations} sampled planes has its normal within max_tilt "
            f"{math.degrees(settings.max_tilt):.1f} deg of the expected up direction and the camera above it"
        )
        return PlaneFit(None, None, 0, count, problem)
    normals, heights = normals[plausible], heights[plausible]
    scores = (np.abs(sample @ normals.T + heights) < settings.inlier_tolerance * heights).sum(axis=0)
    normal, height = normals[np.argmax(scores)], float(heights[np.argmax(scores)])
    for _ in range(REFITS):
        inliers = np.abs(points @ normal + height) < settings.inlier_tolerance * height
        if inliers.sum() < 3:
            break
        if mounting:  # least squares with the normal fixed: the mean height
            height = float(-np.mean(points[inliers] @ up))
        else:
            normal, height = _least_squares_plane(points[inliers], up)
    inliers = int((np.abs(points @ normal + height) < settings.inlier_tolerance * height).sum())
    tilt = math.degrees(math.acos(min(1.0, float(normal @ up))))
    problem = None
    if not (math.isfinite(height) and height > 0 and np.isfinite(normal).all()):
        problem = f"the fitted plane is degenerate (height {height})"
    elif tilt > math.degrees(settings.max_tilt):
        problem = (
            f"the fitted plane's normal is {tilt:.1f} deg from the expected up direction "
            f"(max_tilt {math.degrees(settings.max_tilt):.1f} deg)"
        )
    elif inliers < max(settings.min_inliers, settings.min_inlier_fraction * count):
        problem = (
            f"{inliers} of {count} points on the best plane, need {settings.min_inliers} and "
            f"{settings.min_inlier_fraction:.0%}"
        )
    if problem:
        return PlaneFit(None, None, inliers, count, problem)
    return PlaneFit(normal, height, inliers, count)


def _least_squares_plane(points: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, float]:
    """Total least-squares plane of (N, 3) points: unit normal oriented along ``up`` and the height."""
    centroid = points.mean(axis=0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    if normal @ up < 0:
        normal = -normal
    return normal, float(-normal @ centroid)


def sampling_stride(height: int, width: int, sample_pixels: int) -> int:
    """The smallest stride that samples at most ``sample_pixels`` of a ``height`` x ``width`` map."""
    stride = max(1, math.isqrt(height * width // sample_pixels))
    while math.ceil(height / stride) * math.ceil(width / stride) > sample_pixels:
        stride += 1
    return stride


class GroundPlaneScale:
    """Per-frame ground-plane scale, smoothed over time, reset when the plane is lost (module docstring).

    Not thread-safe: feed frames from one thread, in order.
    """

    def __init__(self, settings: GroundPlaneSettings) -> None:
        self.settings = settings
        self._up = settings.up
        self.reset()

    def reset(self) -> None:
        """Forget every frame: no scale until the next fit; the random sampling starts again from the seed."""
        self._rng = np.random.default_rng(self.settings.seed)
        self._log_scales: deque[float] = deque(maxlen=self.settings.window)
        self._scale: float | None = None
        self._lost = 0
        self.state: ScaleState | None = None  # after the latest frame

    def update(self, depth: np.ndarray, intrinsics: Intrinsics | None) -> ScaleState:
        """Fit the ground in ``depth`` (depth units, (H, W) at the resolution of ``intrinsics``; None = no
        camera for this frame, which loses the plane) and return the new state."""
        if intrinsics is None:
            fit = PlaneFit(None, None, 0, 0, "no camera intrinsics for this frame")
        else:
            stride = sampling_stride(*depth.shape, self.settings.sample_pixels)
            points = ground_candidates(depth, intrinsics, self._up, self.settings.horizon_margin, stride)
            fit = fit_ground_plane(points, self._up, self.settings, self._rng)
        frame_scale = None if fit.height is None else self.settings.camera_height / fit.height
        if frame_scale is not None:
            self._lost = 0
            self._log_scales.append(math.log(frame_scale))
            self._scale = math.exp(float(np.median(self._log_scales)))
        else:
            self._lost += 1
            self._log_scales.clear()
            if self._lost > self.settings.max_hold:
                self._scale = None
        self.state = ScaleState(
            self._scale, frame_scale, fit.inliers, fit.candidates, self._lost, fit.problem
        )
        return self.state
