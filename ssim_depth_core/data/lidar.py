"""Ground-truth depth from raw LiDAR: velodyne scans projected into a rectified KITTI camera.

The same construction as the Eigen split's raw ground truth: each point goes through
``P_rect_<cam> @ R_rect_00 @ T_velo_to_cam`` (``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt``), points
behind the camera or outside the ``S_rect_<cam>`` image are dropped, and a pixel hit by several points keeps
the nearest. The depth stored is the projected point's z in the rectified camera (plus ``P[2, 3]``, zero for
KITTI's rectified cameras up to a few millimetres), in metres; 0 marks pixels without a return.

Pixel centres sit at integer coordinates (camera.py), so a point lands on pixel ``round(u), round(v)``. The
published Eigen ground truth (Monodepth2's ``export_gt_depth.py``) uses ``round(u) - 1``, a shift inherited
from a MATLAB original: ``matlab_offset=True`` reproduces it, for figures comparable with published ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssim_depth_core.camera import read_kitti_calib


def read_velodyne(path: str | Path) -> np.ndarray:
    """A ``velodyne_points/data/%010d.bin`` scan -> (N, 4) float32 x, y, z (metres, velodyne frame),
    reflectance; ValueError naming the file when its size is not a whole number of 16-byte points."""
    path = Path(path)
    size = path.stat().st_size
    if size % 16:
        raise ValueError(f"{path}: {size} bytes is not a whole number of (x, y, z, r) float32 points")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def velodyne_projection(calib_dir: str | Path, camera: str = "02") -> tuple[np.ndarray, int, int]:
    """The 3x4 matrix taking homogeneous velodyne points to pixels of rectified camera ``camera``, and the
    camera's rectified image size.

    ``P_velo_to_image = P_rect_<cam> @ R_rect_00 @ [R | T]`` from ``calib_dir/calib_cam_to_cam.txt`` and
    ``calib_dir/calib_velo_to_cam.txt`` (a KITTI raw date folder).

    Returns:
        ``(P, width, height)``: (3, 4) float64, and ``S_rect_<cam>``.
    """
    calib_dir = Path(calib_dir)
    cam_file, velo_file = calib_dir / "calib_cam_to_cam.txt", calib_dir / "calib_velo_to_cam.txt"
    for path in (cam_file, velo_file):
        if not path.is_file():
            raise ValueError(f"{path}: missing KITTI calibration file (needed to project velodyne scans)")
    cam, velo = read_kitti_calib(cam_file), read_kitti_calib(velo_file)
    expected = {cam_file: (("R_rect_00", 9), (f"P_rect_{camera}", 12), (f"S_rect_{camera}", 2))}
    expected[velo_file] = (("R", 9), ("T", 3))
    for path, keys in expected.items():
        values = cam if path == cam_file else velo
        for key, size in keys:
            if key not in values or values[key].size != size:
                found = "missing" if key not in values else f"{values[key].size} values"
                raise ValueError(f"{path}: '{key}' must hold {size} numbers ({found})")
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :3] = velo["R"].reshape(3, 3)
    velo_to_cam[:3, 3] = velo["T"]
    rectify = np.eye(4)
    rectify[:3, :3] = cam["R_rect_00"].reshape(3, 3)
    projection = cam[f"P_rect_{camera}"].reshape(3, 4) @ rectify @ velo_to_cam
    width, height = (int(round(v)) for v in cam[f"S_rect_{camera}"])
    return projection, width, height


def project_to_depth(
    points: np.ndarray, projection: np.ndarray, width: int, height: int, matlab_offset: bool = False
) -> np.ndarray:
    """Sparse depth image of 3-D points: the nearest point's depth at each pixel hit, 0 elsewhere.

    Args:
        points: (N, 3+) points (x, y, z first; reflectance and further columns ignored).
        projection: (3, 4) matrix to homogeneous pixels ``(u z, v z, z)``.
        width, height: image size.
        matlab_offset: place points at ``round(u) - 1, round(v) - 1`` as the published Eigen ground truth
            does (module docstring), instead of ``round(u), round(v)``.

    Returns:
        (height, width) float32 depth (the third homogeneous coordinate z), 0 where no point lands. Points
        with z <= 0 (behind the camera) or landing outside the image are dropped.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, 3+) x, y, z[, ...], got shape {points.shape}")
    projection = np.asarray(projection, dtype=np.float64)
    if projection.shape != (3, 4):
        raise ValueError(f"projection must be a (3, 4) matrix, got shape {projection.shape}")
    pixels = points[:, :3] @ projection[:, :3].T + projection[:, 3]
    depth = pixels[:, 2]
    ahead = depth > 0
    pixels, depth = pixels[ahead], depth[ahead]
    shift = 1 if matlab_offset else 0
    u = np.round(pixels[:, 0] / depth) - shift
    v = np.round(pixels[:, 1] / depth) - shift
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat = v[inside].astype(np.int64) * width + u[inside].astype(np.int64)
    depth = depth[inside]
    # Nearest point per pixel: sorted by pixel, then depth, the first of each pixel's run wins.
    order = np.lexsort((depth, flat))
    flat, depth = flat[order], depth[order]
    first = np.ones(len(flat), dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    image = np.zeros(height * width, dtype=np.float32)
    image[flat[first]] = depth[first]
    return image.reshape(height, width)


def velodyne_depth(
    velodyne_bin: str | Path, calib_dir: str | Path, camera: str = "02", matlab_offset: bool = False
) -> np.ndarray:
    """Ground-truth depth of one KITTI raw frame from its velodyne scan: (S_rect height, width) float32
    metres, 0 = no return (:func:`project_to_depth` of :func:`read_velodyne` through
    :func:`velodyne_projection`)."""
    projection, width, height = velodyne_projection(calib_dir, camera)
    return project_to_depth(read_velodyne(velodyne_bin), projection, width, height, matlab_offset)
