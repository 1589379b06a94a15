"""Geometry and camera model against independent references: scipy rotations, OpenCV projection and resize,
numpy inverses, and an analytically rendered textured plane seen from two poses."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ssim_depth_core.camera import Intrinsics, read_kitti_calib
from ssim_depth_core.geometry import (
    axis_angle_to_matrix,
    backproject,
    depth_to_disparity,
    disparity_to_depth,
    euler_zyx_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_zyx,
    pose_to_matrix,
    project_to_grid,
    ray_grid,
    warp,
)

# Excerpt of a real KITTI raw calib_cam_to_cam.txt (2011_09_26), camera 02 lines plus neighbours.
KITTI_CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_02: 1.392000e+03 5.120000e+02
K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0.000000e+00 \
0.000000e+00 1.000000e+00
S_rect_02: 1.242000e+03 3.750000e+02
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 \
2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
"""


def _pixels(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Invert the align_corners=True normalisation: (B, H, W, 2) grid -> pixel (u, v)."""
    size = torch.tensor([width - 1, height - 1], dtype=grid.dtype)
    return (grid + 1) * size / 2


def _generators() -> torch.Tensor:
    """so(3) generators E_k = skew(e_k), shape (3, 3, 3) indexed [row, col, k]."""
    e = torch.zeros(3, 3, 3, dtype=torch.float64)
    e[2, 1, 0], e[1, 2, 0] = 1, -1
    e[0, 2, 1], e[2, 0, 1] = 1, -1
    e[1, 0, 2], e[0, 1, 2] = 1, -1
    return e


# --- rotations and poses ---------------------------------------------------------------------------------


def test_axis_angle_matches_scipy_random_small_and_zero():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(8, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    norms = np.array([0.0, 1e-9, 1e-6, 5e-5, 9.9e-5, 1.01e-4, 1e-3, 3.1])
    vectors = np.concatenate(
        [rng.uniform(-2, 2, size=(64, 3)), directions * norms[:, None], np.zeros((1, 3))]
    )
    expected = Rotation.from_rotvec(vectors).as_matrix()
    actual = axis_angle_to_matrix(torch.from_numpy(vectors)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-12)
    actual32 = axis_angle_to_matrix(torch.from_numpy(vectors).float()).numpy()
    np.testing.assert_allclose(actual32, expected, atol=2e-6)


def test_axis_angle_batch_shape():
    vectors = torch.rand(2, 5, 3)
    assert axis_angle_to_matrix(vectors).shape == (2, 5, 3, 3)


def test_axis_angle_jacobian_at_zero_is_so3_generators():
    jacobian = torch.autograd.functional.jacobian(axis_angle_to_matrix, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(jacobian, _generators())


@pytest.mark.parametrize("scale", [0.0, 1e-5, 1e-3, 1.0])
def test_axis_angle_gradients_finite_and_correct(scale):
    vector = (scale * torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)).requires_grad_()
    axis_angle_to_matrix(vector).sum().backward()
    assert torch.isfinite(vector.grad).all()
    if scale > 0:
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (vector.detach().requires_grad_(),))


def test_matrix_to_axis_angle_matches_scipy_below_pi():
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(6, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    angles = np.array([0.0, 1e-9, 1e-5, 0.1, 1.5, 3.0])
    vectors = np.concatenate([rng.uniform(-1.5, 1.5, size=(64, 3)), directions * angles[:, None]])
    matrices = Rotation.from_rotvec(vectors).as_matrix()
    np.testing.assert_allclose(matrix_to_axis_angle(matrices), vectors, atol=1e-8)
    np.testing.assert_allclose(
        matrix_to_axis_angle(matrices.reshape(2, 35, 3, 3)), vectors.reshape(2, 35, 3), atol=1e-8
    )
    round_trip = axis_angle_to_matrix(torch.from_numpy(matrix_to_axis_angle(matrices))).numpy()
    np.testing.assert_allclose(round_trip, matrices, atol=1e-12)


def test_euler_zyx_matches_scipy_intrinsic_zyx_and_inverts():
    rng = np.random.default_rng(4)
    yaw = rng.uniform(-np.pi, np.pi, 50)
    pitch = rng.uniform(-1.5, 1.5, 50)
    roll = rng.uniform(-np.pi, np.pi, 50)
    expected = Rotation.from_euler("ZYX", np.stack([yaw, pitch, roll], -1)).as_matrix()  # Rz Ry Rx
    matrices = euler_zyx_to_matrix(yaw, pitch, roll)
    np.testing.assert_allclose(matrices, expected, atol=1e-12)
    for got, angle in zip(matrix_to_euler_zyx(matrices), (yaw, pitch, roll), strict=True):
        np.testing.assert_allclose(got, angle, atol=1e-9)
    # pitch and roll default to 0 and broadcast against the yaw
    np.testing.assert_allclose(
        euler_zyx_to_matrix(0.7), Rotation.from_euler("z", 0.7).as_matrix(), atol=1e-15
    )
    np.testing.assert_array_equal(euler_zyx_to_matrix(yaw), euler_zyx_to_matrix(yaw, np.zeros(50), 0.0))
    assert euler_zyx_to_matrix(yaw.reshape(5, 10), 0.1).shape == (5, 10, 3, 3)


def test_pose_to_matrix_matches_scipy_and_inverse():
    rng = np.random.default_rng(1)
    rotvecs, translations = rng.uniform(-1, 1, size=(6, 3)), rng.uniform(-3, 3, size=(6, 3))
    expected = np.tile(np.eye(4), (6, 1, 1))
    expected[:, :3, :3] = Rotation.from_rotvec(rotvecs).as_matrix()
    expected[:, :3, 3] = translations
    aa, t = torch.from_numpy(rotvecs), torch.from_numpy(translations)
    np.testing.assert_allclose(pose_to_matrix(aa, t).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(
        pose_to_matrix(aa, t, invert=True).numpy(), np.linalg.inv(expected), atol=1e-12
    )


# --- projection and warping ------------------------------------------------------------------------------


def _camera_tensors(camera: Intrinsics, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    K = camera.K(torch.float64)[None].expand(batch, 3, 3)
    inv_K = camera.inv_K(torch.float64)[None].expand(batch, 3, 3)
    return K, inv_K


CAMERA = Intrinsics(fx=100.0, fy=95.0, cx=63.5, cy=47.0, width=128, height=96)


@pytest.mark.parametrize("identity", [None, "eye"])
def test_project_of_backproject_is_pixel_grid(identity):
    K, inv_K = _camera_tensors(CAMERA, batch=2)
    depth = torch.rand(2, 1, 96, 128, dtype=torch.float64) * 50 + 0.5
    points = backproject(depth, ray_grid(inv_K, 96, 128))
    np.testing.assert_allclose(points[:, 2:].numpy(), depth.numpy())  # z-depth, not range
    transform = None if identity is None else torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    pixels = _pixels(project_to_grid(points, K, transform), 96, 128)
    v, u = np.meshgrid(np.arange(96), np.arange(128), indexing="ij")
    expected = np.broadcast_to(np.stack([u, v], axis=-1), (2, 96, 128, 2))
    # project_to_grid divides by z + 1e-7, a relative bias of 1e-7 / z.
    np.testing.assert_allclose(pixels.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_project_with_transform_matches_opencv():
    rng = np.random.default_rng(2)
    points = np.stack([rng.uniform(-2, 2, 48), rng.uniform(-1, 1, 48), rng.uniform(3, 20, 48)])  # (3, N)
    rotvec, translation = np.array([0.05, -0.1, 0.02]), np.array([0.3, -0.1, 0.5])
    expected, _ = cv2.projectPoints(points.T.copy(), rotvec, translation, CAMERA.matrix, None)
    transform = pose_to_matrix(torch.from_numpy(rotvec)[None], torch.from_numpy(translation)[None])
    grid = project_to_grid(
        torch.from_numpy(points).reshape(1, 3, 6, 8), _camera_tensors(CAMERA)[0], transform
    )
    np.testing.assert_allclose(_pixels(grid, 6, 8).reshape(-1, 2).numpy(), expected[:, 0], atol=1e-9)


def test_identity_pose_warps_image_onto_itself():
    K, inv_K = _camera_tensors(CAMERA)
    image = torch.rand(1, 3, 96, 128, dtype=torch.float64)
    depth = torch.rand(1, 1, 96, 128, dtype=torch.float64) * 20 + 1
    warped = warp(image, depth, torch.eye(4, dtype=torch.float64)[None], K, inv_K)
    torch.testing.assert_close(warped, image, rtol=0, atol=1e-4)  # 1e-7 / z bias of the projection


def _rays(camera: Intrinsics) -> np.ndarray:
    """(H, W, 3) viewing rays K^-1 (u, v, 1) in float64 numpy."""
    v, u = np.meshgrid(np.arange(camera.height), np.arange(camera.width), indexing="ij")
    return np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(camera.matrix).T


class TexturedPlane:
    """Plane n . X = offset (target camera frame) with a smooth random colour texture on it."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.normal = np.array([0.2, -0.4, 1.0]) / np.linalg.norm([0.2, -0.4, 1.0])
        self.offset = 5.0
        self.e1 = np.cross(self.normal, [0.0, 1.0, 0.0])
        self.e1 /= np.linalg.norm(self.e1)
        self.e2 = np.cross(self.normal, self.e1)
        # Two sinusoids per channel, 0.6-1.2 cycles per metre: 15-30 px wavelength at this distance.
        angle = rng.uniform(0, np.pi, size=(3, 2))
        frequency = rng.uniform(0.6, 1.2, size=(3, 2))
        self.wave = 2 * np.pi * frequency[..., None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        self.phase = rng.uniform(0, 2 * np.pi, size=(3, 2))

    def colour(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points on the plane -> (3, ...) colours in [0.2, 0.8]."""
        ab = np.stack([points @ self.e1, points @ self.e2], axis=-1)  # plane coordinates
        arg = np.einsum("cki,...i->c...k", self.wave, ab) + self.phase.reshape(3, *([1] * (ab.ndim - 1)), 2)
        return 0.5 + 0.15 * np.sin(arg).sum(-1)

    def render(self, camera: Intrinsics, rotation: np.ndarray, translation: np.ndarray):
        """Image and z-depth seen by a camera with X_cam = rotation X_target + translation."""
        origin, directions = -rotation.T @ translation, _rays(camera) @ rotation  # target frame
        distance = (self.offset - self.normal @ origin) / (directions @ self.normal)
        assert (distance > 0).all()
        points = origin + distance[..., None] * directions
        return self.colour(points), distance  # rays have z = 1, so the ray parameter is the z-depth


def test_warp_reproduces_textured_plane_with_true_depth_only():
    plane = TexturedPlane()
    rotvec, translation = np.array([0.02, -0.03, 0.01]), np.array([-0.4, 0.05, -0.3])
    rotation = Rotation.from_rotvec(rotvec).as_matrix()
    target, depth = plane.render(CAMERA, np.eye(3), np.zeros(3))
    source, _ = plane.render(CAMERA, rotation, translation)

    # Pixels whose point lands inside the source image, with a margin, and away from the target border.
    projected = ((depth[..., None] * _rays(CAMERA)) @ rotation.T + translation) @ CAMERA.matrix.T
    u, v = projected[..., 0] / projected[..., 2], projected[..., 1] / projected[..., 2]
    valid = (u > 2) & (u < 125) & (v > 2) & (v < 93)
    valid[:3], valid[-3:], valid[:, :3], valid[:, -3:] = False, False, False, False
    assert valid.mean() > 0.6

    K, inv_K = _camera_tensors(CAMERA)
    transform = torch.eye(4, dtype=torch.float64)[None]
    transform[0, :3, :3], transform[0, :3, 3] = torch.from_numpy(rotation), torch.from_numpy(translation)
    source_t = torch.from_numpy(source)[None]

    def error(depth_scale: float) -> float:
        depth_t = torch.from_numpy(depth * depth_scale)[None, None]
        warped = warp(source_t, depth_t, transform, K, inv_K)[0].numpy()
        return float(np.abs(warped - target)[:, valid].mean())

    true_error, wrong_error = error(1.0), error(1.3)
    assert true_error < 0.005  # bilinear resampling of the texture only (measured 0.0014)
    assert wrong_error > 10 * true_error  # measured 0.062


# --- intrinsics ------------------------------------------------------------------------------------------


@pytest.fixture
def kitti_calib(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(KITTI_CALIB)
    return path


def test_from_kitti_calib_reads_rectified_camera_02(kitti_calib):
    camera = Intrinsics.from_kitti_calib(kitti_calib)
    assert camera == Intrinsics(721.5377, 721.5377, 609.5593, 172.854, 1242, 375)
    assert read_kitti_calib(kitti_calib)["S_02"].tolist() == [1392.0, 512.0]


def test_from_kitti_calib_errors_name_file_and_key(kitti_calib, tmp_path):
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt.*'P_rect_03'"):
        Intrinsics.from_kitti_calib(kitti_calib, camera="03")
    broken = tmp_path / "broken.txt"
    broken.write_text("S_rect_02: 1242 375\nP_rect_02: 721.5 zero\n")
    with pytest.raises(ValueError, match=r"broken\.txt:2.*'P_rect_02'"):
        Intrinsics.from_kitti_calib(broken)


def test_scaled_to_training_resolution(kitti_calib):
    scaled = Intrinsics.from_kitti_calib(kitti_calib).scaled(640, 192)
    assert (scaled.width, scaled.height) == (640, 192)
    # Hand-computed: f * 640 / 1242, f * 192 / 375, (c + 0.5) * the same factors - 0.5.
    assert scaled.fx == pytest.approx(371.806866, abs=1e-5)
    assert scaled.fy == pytest.approx(369.427302, abs=1e-5)
    assert scaled.cx == pytest.approx(313.862280, abs=1e-5)
    assert scaled.cy == pytest.approx(88.257248, abs=1e-5)
    np.testing.assert_allclose(
        (scaled.K(torch.float64) @ scaled.inv_K(torch.float64)).numpy(), np.eye(3), atol=1e-12
    )


def test_scaled_principal_point_follows_image_resize(kitti_calib):
    camera = Intrinsics.from_kitti_calib(kitti_calib)
    scaled = camera.scaled(640, 192)
    # A ramp image whose value is the original pixel coordinate; OpenCV's resize uses pixel centres.
    columns = np.tile(np.arange(camera.width, dtype=np.float32), (camera.height, 1))
    rows = np.ascontiguousarray(np.tile(np.arange(camera.height, dtype=np.float32), (camera.width, 1)).T)
    small_columns = cv2.resize(columns, (640, 192), interpolation=cv2.INTER_LINEAR)
    small_rows = cv2.resize(rows, (640, 192), interpolation=cv2.INTER_LINEAR)
    # The optical axis must hit the same scene point: the resized image at (cx', cy') shows original (cx, cy).
    assert np.interp(scaled.cx, np.arange(640), small_columns[0]) == pytest.approx(camera.cx, abs=0.01)
    assert np.interp(scaled.cy, np.arange(192), small_rows[:, 0]) == pytest.approx(camera.cy, abs=0.01)


def test_from_camera_info_prefers_p_and_falls_back_to_k():
    k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    p = [480.0, 0.0, 318.0, 0.0, 0.0, 490.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert Intrinsics.from_camera_info(k, 640, 480, p=[0.0] * 12) == Intrinsics(500, 510, 320, 240, 640, 480)
    assert Intrinsics.from_camera_info(k, 640, 480) == Intrinsics(500, 510, 320, 240, 640, 480)
    assert Intrinsics.from_camera_info(k, 640, 480, p=p) == Intrinsics(480, 490, 318, 236, 640, 480)
    with pytest.raises(ValueError, match="uncalibrated"):
        Intrinsics.from_camera_info([0.0] * 9, 640, 480, p=[0.0] * 12)


def test_bad_intrinsics_raise():
    with pytest.raises(ValueError, match="9 or 12 values.*got 8"):
        Intrinsics.from_matrix([1.0] * 8, 640, 480)
    with pytest.raises(ValueError, match="image size.*0x480"):
        Intrinsics(500, 500, 320, 240, 0, 480)
    with pytest.raises(ValueError, match="fx=-500"):
        Intrinsics(-500, 500, 320, 240, 640, 480)


def test_implausible_intrinsics_raise_naming_the_value():
    nan, inf = float("nan"), float("inf")
    cases = [
        ((nan, 500, 320, 240), "finite.*fx=nan"),
        ((500, inf, 320, 240), "finite.*fy=inf"),
        ((500, 500, nan, 240), "finite.*cx=nan"),
        ((1e-30, 500, 320, 240), "fx=1e-30, fy=500 are implausible for a 640x480"),
        ((1e30, 1e30, 320, 240), "fx=1e\\+30.*implausible"),
        ((500, 500, -3.0, 240), "principal point cx=-3.0.*outside the 640x480"),
        ((500, 500, 320, 480), "principal point.*cy=480"),
    ]
    for (fx, fy, cx, cy), message in cases:
        with pytest.raises(ValueError, match=message):
            Intrinsics(fx, fy, cx, cy, 640, 480)
    # The edges of the image's pixel area are accepted, and a resize keeps a valid camera valid.
    edge = Intrinsics(500, 500, -0.5, 479.5, 640, 480)
    assert edge.scaled(96, 64).cx == pytest.approx(-0.5) and edge.scaled(96, 64).cy == pytest.approx(63.5)


def test_unusable_camera_info_and_calib_name_their_source(tmp_path):
    k = [float("nan"), 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="CameraInfo K: intrinsics must be finite.*fx=nan"):
        Intrinsics.from_camera_info(k, 640, 480)
    p = [500.0, 0.0, 320.0, 0.0, 0.0, float("inf"), 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="CameraInfo P: .*fy=inf"):
        Intrinsics.from_camera_info(k, 640, 480, p=p)
    p_valid = [480.0, 0.0, 318.0, 0.0, 0.0, 490.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="CameraInfo K: intrinsics must be finite"):  # P serves, K is broken
        Intrinsics.from_camera_info(k, 640, 480, p=p_valid)
    calib = tmp_path / "calib_cam_to_cam.txt"
    calib.write_text("S_rect_02: 1242 375\nP_rect_02: nan 0 609.5 0 0 721.5 172.8 0 0 0 1 0\n")
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt:2: 'P_rect_02' value 1 is 'nan'"):
        Intrinsics.from_kitti_calib(calib)
    calib.write_text("S_rect_02: inf 375\nP_rect_02: 721.5 0 609.5 0 0 721.5 172.8 0 0 0 1 0\n")
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt:1: 'S_rect_02' value 1 is 'inf'"):
        Intrinsics.from_kitti_calib(calib)


def test_fitted_rescales_the_same_aspect_ratio_and_refuses_another():
    camera = Intrinsics(200.0, 200.0, 119.5, 79.5, 240, 160)
    assert camera.fitted(120, 80, source="/cam/camera_info") == camera.scaled(120, 80)
    with pytest.raises(ValueError, match="/cam/camera_info: intrinsics are for 240x160 .* 120x120"):
        camera.fitted(120, 120, source="/cam/camera_info")


# --- disparity <-> depth ---------------------------------------------------------------------------------


def test_disparity_depth_bounds_and_round_trip():
    disparity = torch.cat([torch.tensor([0.0, 1.0]), torch.rand(100, dtype=torch.float64)])
    scaled, depth = disparity_to_depth(disparity, 0.1, 100.0)
    assert depth[0] == pytest.approx(100.0) and depth[1] == pytest.approx(0.1)
    assert ((depth >= 0.1 - 1e-12) & (depth <= 100.0 + 1e-12)).all()
    torch.testing.assert_close(scaled * depth, torch.ones_like(depth))
    torch.testing.assert_close(depth_to_disparity(depth, 0.1, 100.0), disparity)
    metres = torch.tensor([0.1, 1.0, 7.5, 100.0], dtype=torch.float64)
    torch.testing.assert_close(
        disparity_to_depth(depth_to_disparity(metres, 0.1, 100.0), 0.1, 100.0)[1], metres
    )
    # Hand-computed: depth 1 m -> (1 - 0.01) / (10 - 0.01).
    assert depth_to_disparity(torch.tensor(1.0), 0.1, 100.0).item() == pytest.approx(0.99 / 9.99)
