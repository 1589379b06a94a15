"""bench/readme_figure.py: the virtual camera and the z-buffered splat renderer, on planes placed by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ssim_depth_core.camera import Intrinsics

_spec = importlib.util.spec_from_file_location(
    "readme_figure", Path(__file__).resolve().parents[1] / "bench" / "readme_figure.py"
)
figure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figure)

CAMERA = Intrinsics(100.0, 100.0, 50.0, 50.0, 100, 100)  # 100 x 100 pixels, f = 100
WHITE = np.array(figure.BACKGROUND)


def plane(z: float, half: float = 2.0, step: float = 0.2) -> np.ndarray:
    """(n, n, 3) grid of the fronto-parallel square |x|, |y| <= half at depth z."""
    values = np.arange(-half, half + step / 2, step)
    x, y = np.meshgrid(values, values)
    return np.stack([x, y, np.full_like(x, z)], axis=-1)


def painted(image: np.ndarray) -> np.ndarray:
    return (image != WHITE).any(axis=-1)


def test_orbit_view_from_straight_behind_is_the_identity():
    np.testing.assert_allclose(
        figure.orbit_view(np.array([0, 0, 10.0]), 10.0, 0.0, 0.0), np.eye(4), atol=1e-12
    )


def test_orbit_view_places_the_eye_above_and_looks_at_the_target():
    view = figure.orbit_view(np.array([0, 0, 10.0]), 5.0, 0.0, 30.0)
    eye = -view[:3, :3].T @ view[:3, 3]
    np.testing.assert_allclose(eye, [0, -2.5, 10 - 5 * np.cos(np.radians(30))], atol=1e-12)  # y down: above
    np.testing.assert_allclose(view[:3, :3] @ [0, 0, 10.0] + view[:3, 3], [0, 0, 5.0], atol=1e-12)
    with pytest.raises(ValueError, match="elevation"):
        figure.orbit_view(np.zeros(3), 1.0, 0.0, 90.0)


def test_a_plane_seen_face_on_fills_its_projection_without_holes():
    # Columns u = 100 x / 10 + 50 = 30, 32, ..., 70; 2 pixels apart, so each splat reaches 1 pixel each way.
    image = figure.render_grid(plane(10.0), np.zeros((21, 21, 3), np.uint8), np.eye(4), CAMERA)
    expected = np.zeros((100, 100), bool)
    expected[29:72, 29:72] = True
    np.testing.assert_array_equal(painted(image), expected)


def test_a_plane_seen_edge_on_is_one_column():
    # From the right (azimuth 90) the plane z = 10 lies along the view direction, through the image centre.
    view = figure.orbit_view(np.array([0, 0, 10.0]), 10.0, 90.0, 0.0)
    image = figure.render_grid(plane(10.0), np.zeros((21, 21, 3), np.uint8), view, CAMERA)
    rows, cols = np.nonzero(painted(image))
    assert set(cols) == {50}
    # The nearest edge (x = 2, 8 m away) spans y = +-2 -> v = 50 +- 25, its rows 2.5 pixels apart: 1 more.
    assert rows.min() == 24 and rows.max() == 76


def test_the_nearest_point_wins_each_pixel_and_invalid_points_are_skipped():
    # The near square projects to u, v in 40..60 one pixel apart (one pixel each), the far one to 29..71.
    near, far = plane(5.0, half=0.5, step=0.05), plane(10.0)
    near[0, 0] = np.nan  # pixel (40, 40): the far plane shows through
    gap = np.full((1, 21, 3), np.nan)  # no neighbours across the seam
    blue, red = np.zeros((21, 21, 3), np.uint8), np.zeros((21, 21, 3), np.uint8)
    blue[..., 0], red[..., 2] = 255, 255
    black = np.zeros((1, 21, 3), np.uint8)
    for points, colors in (
        ((far, gap, near), (red, black, blue)),
        ((near, gap, far), (blue, black, red)),  # the drawing order does not matter
    ):
        image = figure.render_grid(np.concatenate(points), np.concatenate(colors), np.eye(4), CAMERA)
        np.testing.assert_array_equal(image[50, 50], [255, 0, 0])
        np.testing.assert_array_equal(image[60, 60], [255, 0, 0])
        np.testing.assert_array_equal(image[40, 40], [0, 0, 255])
        np.testing.assert_array_equal(image[50, 35], [0, 0, 255])
        np.testing.assert_array_equal(
            painted(image), painted(figure.render_grid(far, red, np.eye(4), CAMERA))
        )
