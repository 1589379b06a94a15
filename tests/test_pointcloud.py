import numpy as np
import pytest

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.runtime.pointcloud import (
    FLOAT32,
    PointCloudData,
    _cached_rays,
    depth_to_pointcloud,
    unpack_rgb,
    write_ply,
)

# Deliberately awkward: fx != fy, fractional principal point, sizes not divisible by the strides.
INTRINSICS = Intrinsics(fx=52.3, fy=47.9, cx=30.4, cy=11.7, width=61, height=23)
MAX_DEPTH = 40.0


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Depth with every kind of invalid value, and a random RGB image."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 50.0, size=(INTRINSICS.height, INTRINSICS.width)).astype(np.float32)
    flat = depth.reshape(-1)
    picks = rng.choice(flat.size, size=5 * 20, replace=False).reshape(5, 20)
    flat[picks[0]] = 0.0
    flat[picks[1]] = np.nan
    flat[picks[2]] = np.inf
    flat[picks[3]] = -1.0
    flat[picks[4]] = MAX_DEPTH  # exactly at the truncation distance: invalid in Open3D and here
    image = rng.integers(0, 256, size=(INTRINSICS.height, INTRINSICS.width, 3), dtype=np.uint8)
    return depth, image


@pytest.fixture(scope="module")
def o3d():
    """Open3D, the reference implementation; only the tests that compare against it need it."""
    return pytest.importorskip("open3d")


def _o3d_intrinsic(o3d, k: Intrinsics):
    return o3d.camera.PinholeCameraIntrinsic(k.width, k.height, k.fx, k.fy, k.cx, k.cy)


def _xyz(cloud: PointCloudData) -> np.ndarray:
    return np.stack([cloud.points[axis] for axis in ("x", "y", "z")], axis=-1).reshape(-1, 3)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_matches_open3d_create_from_depth_image(stride, o3d):
    # Open3D: pixel (u, v) at integer coordinates, rows/cols 0, stride, 2 stride, ..., drops depth <= 0,
    # NaN, inf and depth >= depth_trunc; valid points in row-major order. Same conventions as ours.
    depth, _ = _scene()
    reference = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth),
        _o3d_intrinsic(o3d, INTRINSICS),
        depth_scale=1.0,
        depth_trunc=MAX_DEPTH,
        stride=stride,
    )
    expected = np.asarray(reference.points)
    cloud = depth_to_pointcloud(depth, INTRINSICS, stride=stride, max_depth=MAX_DEPTH, organized=False)
    assert cloud.height == 1 and cloud.width == len(expected) > 0
    np.testing.assert_allclose(_xyz(cloud), expected, rtol=1e-6, atol=1e-6)


def test_organized_matches_open3d_with_nan_for_invalid(o3d):
    # Open3D's organised mode (project_valid_depth_only=False) is only checked at stride 1: with a stride
    # that does not divide the image it sizes its buffer with floor division and overruns it.
    depth, _ = _scene(1)
    reference = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth),
        _o3d_intrinsic(o3d, INTRINSICS),
        depth_scale=1.0,
        depth_trunc=MAX_DEPTH,
        project_valid_depth_only=False,
    )
    cloud = depth_to_pointcloud(depth, INTRINSICS, max_depth=MAX_DEPTH)
    assert (cloud.height, cloud.width) == (INTRINSICS.height, INTRINSICS.width)
    assert not cloud.is_dense
    np.testing.assert_allclose(_xyz(cloud), np.asarray(reference.points), rtol=1e-6, atol=1e-6)  # NaN == NaN


def test_colour_matches_open3d_rgbd(o3d):
    depth, image = _scene(2)
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(image),
        o3d.geometry.Image(depth),
        depth_scale=1.0,
        depth_trunc=MAX_DEPTH,
        convert_rgb_to_intensity=False,
    )
    reference = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, _o3d_intrinsic(o3d, INTRINSICS))
    cloud = depth_to_pointcloud(depth, INTRINSICS, image, max_depth=MAX_DEPTH, organized=False)
    np.testing.assert_allclose(_xyz(cloud), np.asarray(reference.points), rtol=1e-6, atol=1e-6)
    colours = unpack_rgb(cloud.points["rgb"].reshape(-1))
    np.testing.assert_array_equal(colours, np.round(np.asarray(reference.colors) * 255).astype(np.uint8))


def test_hand_checked_pixels():
    k = Intrinsics(fx=2.0, fy=4.0, cx=1.0, cy=1.0, width=5, height=6)
    depth = np.full((6, 5), np.nan, dtype=np.float32)
    depth[1, 1] = 2.0  # the principal point (u = cx, v = cy) -> on the optical axis
    depth[1, 3] = 1.0  # u = cx + fx -> x = (3 - 1) / 2 * 1 = 1
    depth[5, 1] = 0.5  # v = cy + 4  -> y = (5 - 1) / 4 * 0.5 = 0.5 (y down)
    cloud = depth_to_pointcloud(depth, k)
    xyz = _xyz(cloud).reshape(6, 5, 3)
    np.testing.assert_allclose(xyz[1, 1], [0.0, 0.0, 2.0])
    np.testing.assert_allclose(xyz[1, 3], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(xyz[5, 1], [0.0, 0.5, 0.5])
    assert np.isnan(xyz).any(axis=-1).sum() == 6 * 5 - 3


def test_invalid_points_nan_when_organized_dropped_when_not():
    k = Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=3, height=2)
    depth = np.array([[1.0, 0.0, np.nan], [np.inf, 2.0, -3.0]], dtype=np.float32)
    organized = depth_to_pointcloud(depth, k)
    assert (organized.height, organized.width) == (2, 3) and not organized.is_dense
    invalid = np.isnan(_xyz(organized)).reshape(2, 3, 3)
    assert invalid.all(axis=-1).tolist() == [[False, True, True], [True, False, True]]
    assert not invalid[[0, 1], [0, 1]].any()

    dropped = depth_to_pointcloud(depth, k, organized=False)
    assert (dropped.height, dropped.width) == (1, 2) and dropped.is_dense
    np.testing.assert_allclose(_xyz(dropped), [[0.0, 0.0, 1.0], [2.0, 2.0, 2.0]])

    assert depth_to_pointcloud(np.ones((2, 3), np.float32), k).is_dense


def test_depth_range_is_open_interval():
    k = Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=4, height=1)
    depth = np.array([[0.5, 1.0, 5.0, 10.0]], dtype=np.float32)
    cloud = depth_to_pointcloud(depth, k, min_depth=1.0, max_depth=10.0, organized=False)
    np.testing.assert_array_equal(cloud.points["z"].reshape(-1), [5.0])


def test_stride_samples_every_stride_th_pixel():
    depth, _ = _scene(3)
    full = _xyz(depth_to_pointcloud(depth, INTRINSICS)).reshape(INTRINSICS.height, INTRINSICS.width, 3)
    strided = depth_to_pointcloud(depth, INTRINSICS, stride=4)
    assert (strided.height, strided.width) == (6, 16)  # ceil(23 / 4), ceil(61 / 4)
    np.testing.assert_array_equal(_xyz(strided).reshape(6, 16, 3), full[::4, ::4])


def test_byte_layout_decodes_to_input():
    depth, image = _scene(4)
    for colour in (None, image):
        cloud = depth_to_pointcloud(depth, INTRINSICS, colour)
        names = [f.name for f in cloud.fields]
        assert names == (["x", "y", "z"] if colour is None else ["x", "y", "z", "rgb"])
        assert all(f.datatype == FLOAT32 == 7 and f.count == 1 for f in cloud.fields)
        assert cloud.point_step == (12 if colour is None else 16)
        assert cloud.row_step == cloud.point_step * INTRINSICS.width

        data = cloud.tobytes()
        assert len(data) == cloud.row_step * cloud.height
        layout = np.dtype(
            {
                "names": names,
                "formats": ["<f4"] * (len(names) - 1) + (["<f4"] if colour is None else ["<u4"]),
                "offsets": [f.offset for f in cloud.fields],
                "itemsize": cloud.point_step,
            }
        )
        decoded = np.frombuffer(data, dtype=layout).reshape(cloud.height, cloud.width)
        v, u = np.mgrid[0 : INTRINSICS.height, 0 : INTRINSICS.width]
        valid = (depth > 0) & (depth < np.inf)
        np.testing.assert_allclose(decoded["z"][valid], depth[valid])
        np.testing.assert_allclose(
            decoded["x"][valid], ((u - INTRINSICS.cx) / INTRINSICS.fx * depth)[valid], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            decoded["y"][valid], ((v - INTRINSICS.cy) / INTRINSICS.fy * depth)[valid], rtol=1e-5, atol=1e-5
        )
        if colour is not None:
            r, g, b = (colour[..., c].astype(np.int64) for c in range(3))
            np.testing.assert_array_equal(decoded["rgb"], r * 65536 + g * 256 + b)


def test_rgb_packing_hand_checked():
    k = Intrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, width=2, height=1)
    image = np.array([[[255, 0, 0], [0x12, 0x34, 0x56]]], dtype=np.uint8)
    cloud = depth_to_pointcloud(np.ones((1, 2), np.float32), k, image)
    bits = cloud.points["rgb"].reshape(-1).view("<u4")
    assert bits.tolist() == [0xFF0000, 0x123456]
    # the top (alpha) byte stays 0, so the float32 is never a NaN
    assert np.isfinite(cloud.points["rgb"]).all()
    np.testing.assert_array_equal(unpack_rgb(cloud.points["rgb"]), image)


def test_ray_grid_cached_per_intrinsics_and_stride():
    depth, _ = _scene(5)
    k = Intrinsics(fx=11.0, fy=13.0, cx=2.5, cy=3.5, width=INTRINSICS.width, height=INTRINSICS.height)
    depth_to_pointcloud(depth, k, stride=2)
    hits = _cached_rays.cache_info().hits
    depth_to_pointcloud(depth, k, stride=2)
    assert _cached_rays.cache_info().hits == hits + 1
    assert _cached_rays(k, 2) is _cached_rays(k, 2)


@pytest.mark.parametrize("with_colour", [False, True])
def test_ply_round_trip_open3d(tmp_path, with_colour, o3d):
    depth, image = _scene(6)
    cloud = depth_to_pointcloud(depth, INTRINSICS, image if with_colour else None)
    path = tmp_path / "cloud.ply"
    finite = np.isfinite(_xyz(cloud)).all(axis=1)
    assert write_ply(path, cloud) == finite.sum()

    read = o3d.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(np.asarray(read.points).astype(np.float32), _xyz(cloud)[finite])
    assert read.has_colors() == with_colour
    if with_colour:
        colours = np.round(np.asarray(read.colors) * 255).astype(np.uint8)
        np.testing.assert_array_equal(colours, image.reshape(-1, 3)[finite])


def test_bad_inputs_raise():
    depth, image = _scene()
    with pytest.raises(ValueError, match=r"depth shape \(22, 61\) != the intrinsics' \(height, width\)"):
        depth_to_pointcloud(depth[1:], INTRINSICS)
    with pytest.raises(ValueError, match="float array in metres, got dtype uint16"):
        depth_to_pointcloud(np.ones(depth.shape, np.uint16), INTRINSICS)
    with pytest.raises(ValueError, match="uint8 RGB"):
        depth_to_pointcloud(depth, INTRINSICS, image.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        depth_to_pointcloud(depth, INTRINSICS, image[..., :2])
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        depth_to_pointcloud(depth, INTRINSICS, stride=0)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        depth_to_pointcloud(depth, INTRINSICS, min_depth=5.0, max_depth=5.0)
