"""Ground-plane scale (runtime/scale.py) against depth maps of known geometry.

The reference scenes are ray-cast here, independently of the library: a camera at a known height, pitch and
roll over a flat ground with boxes standing on it (a wall, a car, a low crate whose top is a horizontal
decoy), depth with 1 % multiplicative noise and 5 % gross outliers, then divided by an unknown factor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.runtime.scale import (
    GroundPlaneScale,
    GroundPlaneSettings,
    fit_ground_plane,
    ground_candidates,
    ground_up,
    sampling_stride,
)

HEIGHT, WIDTH = 192, 640
CAMERA = Intrinsics(370.0, 370.0, 319.5, 95.5, WIDTH, HEIGHT)
MOUNT_HEIGHT = 1.65
# axis-aligned boxes in the level frame (x forward, y left, z up, ground z = 0): (min corner, max corner)
BOXES = [
    ((12.0, -2.0, 0.0), (13.0, 6.0, 4.0)),  # a wall ahead and to the left
    ((6.0, -3.6, 0.0), (10.0, -1.8, 1.5)),  # a car on the right
    ((4.0, 0.5, 0.0), (5.0, 2.0, 0.5)),  # a crate: its top is a horizontal plane 1.15 m below the camera
]


def rotation_level_body(pitch: float, roll: float) -> np.ndarray:
    """Ry(pitch) Rx(roll), written out: body (x forward, y left, z up) -> level frame."""
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return ry @ rx


def level_directions(pitch: float, roll: float, camera: Intrinsics = CAMERA) -> np.ndarray:
    """(H, W, 3) pixel rays in the level frame, scaled so that their optical z-depth is 1."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    optical = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1)
    body = np.stack([optical[..., 2], -optical[..., 0], -optical[..., 1]], -1)  # optical (x, y, z) -> body
    return body @ rotation_level_body(pitch, roll).T


def render_depth(
    pitch: float, roll: float, boxes=BOXES, height: float = MOUNT_HEIGHT, camera: Intrinsics = CAMERA
) -> np.ndarray:
    """Exact z-depth of the ground and ``boxes`` seen by ``camera`` at ``height``; NaN = nothing hit."""
    direction = level_directions(pitch, roll, camera)  # z-depth t reaches origin + t * direction
    origin = np.array([0.0, 0.0, height])
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(direction[..., 2] < 0, -height / direction[..., 2], np.inf)
        for lower, upper in boxes:
            t1 = (np.array(lower) - origin) / direction
            t2 = (np.array(upper) - origin) / direction
            enter = np.nanmax(np.minimum(t1, t2), axis=-1)
            leave = np.nanmin(np.maximum(t1, t2), axis=-1)
            hit = (enter < leave) & (enter > 0)
            depth = np.where(hit, np.minimum(depth, enter), depth)
    return np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)


def corrupt(depth: np.ndarray, seed: int = 0, noise: float = 0.01, outliers: float = 0.05) -> np.ndarray:
    """1 % multiplicative Gaussian noise and a fraction of gross outliers (x 0.3 to 3)."""
    rng = np.random.default_rng(seed)
    noisy = depth * (1.0 + noise * rng.standard_normal(depth.shape))
    wild = rng.random(depth.shape) < outliers
    noisy[wild] *= rng.uniform(0.3, 3.0, wild.sum())
    return noisy.astype(np.float32)


def test_up_direction_in_the_optical_frame():
    np.testing.assert_allclose(ground_up(), [0.0, -1.0, 0.0], atol=1e-15)
    pitch = 0.3  # looking down: up leans backwards (-z) in the optical frame
    np.testing.assert_allclose(ground_up(pitch), [0.0, -math.cos(pitch), -math.sin(pitch)], atol=1e-15)
    roll = 0.2  # right side down: up leans to the image's left (-x)
    np.testing.assert_allclose(ground_up(0.0, roll), [-math.sin(roll), -math.cos(roll), 0.0], atol=1e-15)
    # against the independent rotation of the renderer: level z in the body frame, then body -> optical
    up_body = rotation_level_body(0.25, -0.1).T @ [0.0, 0.0, 1.0]
    np.testing.assert_allclose(ground_up(0.25, -0.1), [-up_body[1], -up_body[2], up_body[0]], atol=1e-15)


@pytest.mark.parametrize("ground_normal", ["fitted", "mounting"])
@pytest.mark.parametrize(("pitch", "roll"), [(-0.05, 0.0), (0.0, 0.0), (0.1, 0.05), (0.3, -0.08)])
def test_plane_height_of_a_noisy_scene_with_outliers_within_2_percent(pitch, roll, ground_normal):
    factor = 3.7  # the unknown scale of a scale-less network
    depth = corrupt(render_depth(pitch, roll)) / factor
    settings = GroundPlaneSettings(
        MOUNT_HEIGHT, camera_pitch=pitch, camera_roll=roll, ground_normal=ground_normal
    )
    stride = sampling_stride(HEIGHT, WIDTH, settings.sample_pixels)
    points = ground_candidates(depth, CAMERA, settings.up, settings.horizon_margin, stride)
    fit = fit_ground_plane(points, settings.up, settings, np.random.default_rng(0))
    assert fit.problem is None
    assert fit.height == pytest.approx(MOUNT_HEIGHT / factor, rel=0.02)
    assert math.degrees(math.acos(fit.normal @ settings.up)) < 1.0
    assert fit.inliers >= 0.5 * fit.candidates

    state = GroundPlaneScale(settings).update(depth, CAMERA)
    assert state.reason is None and state.lost_frames == 0
    assert state.frame_scale == pytest.approx(factor, rel=0.02)
    assert state.scale == pytest.approx(state.frame_scale, rel=1e-12)  # one frame: the median is itself


def test_a_tilted_ground_fitted_is_the_plane_and_mounting_the_mean_height_along_up():
    """Ground points on y = h0 + a z in the optical frame of a level camera (up = -y): a prediction whose
    ground tilts by atan(a), or a camera pitched by -atan(a) and configured level. The fitted plane's
    distance to the camera is h0 / sqrt(1 + a^2); the mounting normal reads each point's height along up,
    y, whose mean over the points is h0 + a mean(z)."""
    h0, a = 1.65, 0.004
    x, z = np.meshgrid(np.linspace(-4.0, 4.0, 9), np.linspace(5.0, 25.0, 21))
    points = np.stack([x.ravel(), h0 + a * z.ravel(), z.ravel()], -1)
    up = ground_up()
    fits = {
        normal: fit_ground_plane(
            points, up, GroundPlaneSettings(MOUNT_HEIGHT, ground_normal=normal), np.random.default_rng(0)
        )
        for normal in ("fitted", "mounting")
    }
    assert fits["fitted"].height == pytest.approx(h0 / math.sqrt(1 + a * a), rel=1e-9)
    np.testing.assert_allclose(fits["fitted"].normal, np.array([0.0, -1.0, a]) / math.sqrt(1 + a * a))
    assert fits["mounting"].height == pytest.approx(h0 + a * 15.0, rel=1e-9)  # mean z = 15 m
    np.testing.assert_array_equal(fits["mounting"].normal, up)
    assert fits["fitted"].inliers == fits["mounting"].inliers == len(points)


@pytest.mark.parametrize(("pitch", "roll"), [(0.0, 0.0), (0.1, 0.2)])
def test_candidates_are_the_ground_pixels_below_the_horizon_with_the_margin(pitch, roll):
    margin = 0.1
    points = ground_candidates(render_depth(pitch, roll, boxes=[]), CAMERA, ground_up(pitch, roll), margin)
    direction = level_directions(pitch, roll)
    below = -direction[..., 2] / np.linalg.norm(direction, axis=-1) > math.sin(margin)
    assert 1000 < len(points) and abs(len(points) - below.sum()) <= 2  # float32 depths at the boundary
    np.testing.assert_allclose(points @ ground_up(pitch, roll), -MOUNT_HEIGHT, rtol=1e-5)


def test_a_plane_outside_the_normal_prior_is_lost():
    """The camera looks 20 degrees down but is configured level: the true ground is outside max_tilt."""
    depth = render_depth(0.35, 0.0)
    state = GroundPlaneScale(GroundPlaneSettings(MOUNT_HEIGHT)).update(depth, CAMERA)
    assert state.scale is None and state.frame_scale is None
    assert "up direction" in state.reason


def test_no_ground_in_view_is_lost_with_the_reason():
    wall = [((2.0, -50.0, 0.0), (3.0, 50.0, 10.0))]  # a wall filling the view 2 m ahead: vertical points
    state = GroundPlaneScale(GroundPlaneSettings(MOUNT_HEIGHT)).update(render_depth(0.0, 0.0, wall), CAMERA)
    assert state.scale is None and state.candidates > 1000
    assert "within max_tilt 11.5 deg of the expected up direction" in state.reason
    nan = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    state = GroundPlaneScale(GroundPlaneSettings(MOUNT_HEIGHT)).update(nan, CAMERA)
    assert (state.scale, state.candidates) == (None, 0)
    assert "0 points below the horizon, fewer than min_inliers 100" in state.reason
    state = GroundPlaneScale(GroundPlaneSettings(MOUNT_HEIGHT)).update(render_depth(0.0, 0.0), None)
    assert state.scale is None and "no camera" in state.reason


def test_smoothing_holding_and_reset():
    ground = corrupt(render_depth(0.0, 0.0), seed=1)
    lost = np.full_like(ground, np.nan)
    estimator = GroundPlaneScale(GroundPlaneSettings(MOUNT_HEIGHT, window=3, max_hold=1))
    scales = []
    for factor in (2.0, 2.1, 4.0):  # a one-frame jump is voted down by the window's median
        state = estimator.update(ground / factor, CAMERA)
        assert state.frame_scale == pytest.approx(factor, rel=0.02)
        scales.append(state.scale)
    assert scales[0] == pytest.approx(2.0, rel=0.02)
    assert scales[1] == pytest.approx(math.sqrt(2.0 * 2.1), rel=0.02)  # median of two logs: geometric mean
    assert scales[2] == pytest.approx(2.1, rel=0.02)

    held = estimator.update(lost, CAMERA)  # lost: the last scale is held for max_hold frames
    assert (held.scale, held.frame_scale, held.lost_frames) == (scales[2], None, 1)
    assert held.reason and "plane lost for 1 frame(s)" in held.describe()
    gone = estimator.update(lost, CAMERA)
    assert (gone.scale, gone.lost_frames) == (None, 2)
    assert gone.describe().startswith("ground-plane scale none")

    back = estimator.update(ground / 5.0, CAMERA)  # the window restarted: no memory of the old scales
    assert back.frame_scale == pytest.approx(5.0, rel=0.02)
    assert back.scale == pytest.approx(back.frame_scale, rel=1e-12)
    assert back.lost_frames == 0 and back.reason is None


def test_deterministic_for_a_seed():
    depth = corrupt(render_depth(0.1, 0.0), seed=2) / 2.0
    settings = GroundPlaneSettings(MOUNT_HEIGHT, camera_pitch=0.1)
    first, second = GroundPlaneScale(settings), GroundPlaneScale(settings)
    for _ in range(3):
        assert first.update(depth, CAMERA) == second.update(depth, CAMERA)


def test_synthetic_drive_ground_truth_divided_by_three_gives_three():
    """A rendered street (exact depth, camera 02 at CAMERA_HEIGHT over the road, level up to the road's
    roughness) divided by 3: the estimator recovers 3 within 5 % on every frame."""
    from ssim_depth_core.data.synthetic import CAMERA_HEIGHT, DriveSpec, SyntheticDrive

    drive = SyntheticDrive(DriveSpec(seed=3, index=0, frames=20, lead_vehicle=True), 208, 64)
    estimator = GroundPlaneScale(GroundPlaneSettings(CAMERA_HEIGHT))
    for index in (0, 10, 19):
        depth = drive.depth(index)  # 0 = invalid (sky)
        state = estimator.update(depth / 3.0, drive.intrinsics)
        assert state.reason is None, state.describe()
        assert state.frame_scale == pytest.approx(3.0, rel=0.05)
        assert state.scale == pytest.approx(3.0, rel=0.05)


def test_sampling_stride_bounds_the_work():
    assert sampling_stride(192, 640, 20_000) == 3  # 64 x 214 = 13696 (stride 2: 96 x 320 = 30720)
    assert sampling_stride(64, 96, 20_000) == 1
    for height, width in [(375, 1242), (1080, 1920), (7, 5)]:
        stride = sampling_stride(height, width, 20_000)
        assert math.ceil(height / stride) * math.ceil(width / stride) <= 20_000
        if stride > 1:
            assert math.ceil(height / (stride - 1)) * math.ceil(width / (stride - 1)) > 20_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"camera_height": 0.0}, "camera_height must be the camera's height above the ground"),
        ({"camera_height": math.nan}, "camera_height must be"),
        ({"camera_height": 1.0, "camera_pitch": 2.0}, "camera_pitch must be an angle in radians"),
        ({"camera_height": 1.0, "camera_roll": math.inf}, "camera_roll must be"),
        ({"camera_height": 1.0, "ground_normal": "up"}, "ground_normal must be one of fitted, mounting"),
        ({"camera_height": 1.0, "max_tilt": 0.0}, "max_tilt must be within"),
        ({"camera_height": 1.0, "inlier_tolerance": 0.0}, "inlier_tolerance must be within"),
        ({"camera_height": 1.0, "window": 0}, "window must be an integer >= 1"),
        ({"camera_height": 1.0, "min_inliers": 2}, "min_inliers must be an integer >= 3"),
    ],
)
def test_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroundPlaneSettings(**kwargs)
