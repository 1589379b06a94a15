"""README figure from a demo run: an input frame, its depth preview and its point cloud seen from above.

The model (``.onnx`` or ``.pt``) runs through :class:`DepthEstimator` on one frame of a dataset (KITTI-layout
root or rosbag2), at the frame's own resolution, with the dataset's intrinsics. A self-supervised model's
depth has no scale of its own: unless ``--depth-scale`` is given, a frame with ground truth is median-scaled
to it as the evaluation does (:func:`evaluate_depth`), and one without (a rosbag2) is taken as metric. The
depth preview is
:func:`colorize_depth`; the cloud is :func:`depth_to_pointcloud` coloured by the image, rendered by
:func:`render_grid` (z-buffered splats, NumPy only: no GUI or OpenGL) from a virtual camera that looks at a
point ahead of the real one from behind, above and to one side of it (:func:`orbit_view`).

    make demo
    .venv/bin/python bench/readme_figure.py --model demo/run/depth.onnx --data demo/heldout \\
        --out docs/images/demo.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.evaluation import evaluate_depth
from ssim_depth_core.imaging import colorize_depth
from ssim_depth_core.runtime.estimator import DepthEstimator
from ssim_depth_core.runtime.pointcloud import depth_to_pointcloud, unpack_rgb

BACKGROUND = (255, 255, 255)  # BGR
LABEL_HEIGHT = 28  # pixels of the caption strip above each panel
MAX_SPLAT_RADIUS = 8  # pixels
PANEL_SCALE = 2  # panels are this many times the frame's size


def orbit_view(target: np.ndarray, distance: float, azimuth: float, elevation: float) -> np.ndarray:
    """4x4 transform from the real camera's optical frame (x right, y down, z forward) to a virtual camera's.

    The virtual camera sits ``distance`` metres from ``target``, ``azimuth`` degrees to the right of straight
    behind it and ``elevation`` degrees above it (below 90), and looks at ``target`` with the real camera's
    down (+y) as its down: ``orbit_view(t, t[2], 0, 0)`` for ``t = (0, 0, z)`` is the identity.
    """
    if not 0 <= elevation < 90:
        raise ValueError(f"elevation must be in [0, 90) degrees, got {elevation}")
    a, e = math.radians(azimuth), math.radians(elevation)
    target = np.asarray(target, dtype=np.float64)
    eye = target + distance * np.array([math.sin(a) * math.cos(e), -math.sin(e), -math.cos(a) * math.cos(e)])
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    view = np.eye(4)
    view[:3, :3] = np.stack([right, np.cross(forward, right), forward])
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def render_grid(
    points: np.ndarray,
    colors: np.ndarray,
    view: np.ndarray,
    camera: Intrinsics,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
    """Render an organised cloud as rectangular splats, the nearest one winning each pixel (a z-buffer).

    Each point's splat reaches halfway to its grid neighbours as the virtual camera sees them (so a surface
    renders without holes however obliquely the real camera saw it), at most ``MAX_SPLAT_RADIUS`` pixels
    each way (so a depth edge does not smear); a point without neighbours covers one pixel.

    Args:
        points: (H, W, 3) positions, NaN where invalid; ``view`` (4x4) maps them into the virtual camera's
            optical frame.
        colors: (H, W, 3) uint8 colours, in the channel order of the returned image.
        camera: the virtual camera's pinhole model (its size is the image's).
        background: colour of pixels no point covers.

    Returns:
        (camera.height, camera.width, 3) uint8 image.
    """
    seen = np.asarray(points, dtype=np.float64) @ view[:3, :3].T + view[:3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        projected = seen @ camera.matrix.T
        pixels = projected[..., :2] / projected[..., 2:]
    # The distance (u, v) to the farthest of the four grid neighbours; NaN neighbours are ignored.
    reach = np.zeros_like(pixels)
    across, down = np.abs(np.diff(pixels, axis=1)), np.abs(np.diff(pixels, axis=0))
    for part, gap in ((reach[:, :-1], across), (reach[:, 1:], across), (reach[:-1], down), (reach[1:], down)):
        np.fmax(part, gap, out=part)
    visible = (seen[..., 2] > 1e-6) & np.isfinite(pixels).all(axis=-1)
    radii = np.clip(np.ceil(reach[visible] / 2 - 0.5), 0, MAX_SPLAT_RADIUS).astype(np.int64)
    centres = np.rint(pixels[visible]).astype(np.int64)
    depths, palette = seen[visible][:, 2], np.asarray(colors, dtype=np.uint8)[visible]

    index, depth, source = [], [], []
    for radius_u, radius_v in np.unique(radii, axis=0):
        members = np.flatnonzero((radii[:, 0] == radius_u) & (radii[:, 1] == radius_v))
        du, dv = (
            d.ravel()
            for d in np.meshgrid(np.arange(-radius_u, radius_u + 1), np.arange(-radius_v, radius_v + 1))
        )
        u = (centres[members, 0, None] + du).ravel()
        v = (centres[members, 1, None] + dv).ravel()
        inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
        index.append((v * camera.width + u)[inside])
        depth.append(np.repeat(depths[members], du.size)[inside])
        source.append(np.repeat(members, du.size)[inside])
    image = np.empty((camera.height * camera.width, 3), np.uint8)
    image[:] = background
    if index:
        index, depth, source = np.concatenate(index), np.concatenate(depth), np.concatenate(source)
        order = np.lexsort((depth, index))  # by pixel, nearest first
        _, first = np.unique(index[order], return_index=True)
        nearest = order[first]
        image[index[nearest]] = palette[source[nearest]]
    return image.reshape(camera.height, camera.width, 3)


def _captioned(panel: np.ndarray, caption: str) -> np.ndarray:
    """``panel`` under a white strip carrying ``caption``."""
    strip = np.full((LABEL_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(
        strip, caption, (6, LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.vstack([strip, panel])


def make_figure(
    model: Path,
    data: Path,
    frame: int | None = None,
    max_depth: float = 40.0,
    azimuth: float = -20.0,
    elevation: float = 25.0,
    depth_scale: float | None = None,
) -> np.ndarray:
    """The figure as a BGR image: input and depth preview stacked on the left, the rendered cloud right.

    ``frame`` indexes the dataset's first sequence (default its middle frame); points farther than
    ``max_depth`` metres (the sky, the horizon) are left out of the cloud; ``azimuth`` and ``elevation``
    place the virtual camera as :func:`orbit_view` does; ``depth_scale`` multiplies the model's depth
    (default: median scaling to the frame's ground truth, or none without).
    """
    sequence = open_sequences(data, DataConfig())[0]
    index = len(sequence) // 2 if frame is None else frame
    rgb = sequence.image(index)
    depth = DepthEstimator(model, depth_scale=depth_scale or 1.0)(rgb)
    gt = sequence.depth(index)
    scaling = "" if depth_scale is None else f", scaled x{depth_scale:g}"
    if depth_scale is None and gt is not None:
        depth *= evaluate_depth(gt, depth)[1]
        scaling = ", median-scaled to ground truth"
    cloud = depth_to_pointcloud(depth, sequence.intrinsics, rgb, max_depth=max_depth).points
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    colors = unpack_rgb(cloud["rgb"])[..., ::-1]  # RGB -> BGR

    height, width = (PANEL_SCALE * n for n in rgb.shape[:2])
    left = np.vstack(
        [
            _captioned(cv2.resize(rgb[..., ::-1], (width, height), interpolation=cv2.INTER_AREA), "input"),
            _captioned(
                cv2.resize(colorize_depth(depth), (width, height), interpolation=cv2.INTER_NEAREST),
                f"depth {depth.min():.1f}-{depth.max():.0f} m{scaling}, brighter = nearer",
            ),
        ]
    )
    render_height = left.shape[0] - LABEL_HEIGHT
    camera = Intrinsics(width, width, width / 2, render_height / 2, width, render_height)
    target = np.array([0.0, 0.0, max_depth / 2])
    view = orbit_view(target, 0.9 * max_depth, azimuth, elevation)
    render = render_grid(xyz, colors, view, camera)
    caption = f"point cloud to {max_depth:.0f} m, seen from above and behind"
    return np.hstack([left, _captioned(render, caption)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model file: .onnx or .pt")
    parser.add_argument("--data", type=Path, required=True, help="KITTI-layout root or rosbag2")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--frame", type=int, help="frame of the first sequence (default: the middle one)")
    parser.add_argument("--max-depth", type=float, default=40.0, help="cloud range in metres")
    parser.add_argument("--azimuth", type=float, default=-20.0, help="view: degrees right of behind")
    parser.add_argument("--elevation", type=float, default=25.0, help="view: degrees above")
    parser.add_argument(
        "--depth-scale", type=float, help="multiply depth by this (default: median scaling to ground truth)"
    )
    args = parser.parse_args(argv)
    figure = make_figure(
        args.model,
        args.data,
        args.frame,
        args.max_depth,
        azimuth=args.azimuth,
        elevation=args.elevation,
        depth_scale=args.depth_scale,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), figure, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"{args.out}: could not write the PNG")
    print(f"figure ({figure.shape[1]}x{figure.shape[0]}) written to {args.out}")


if __name__ == "__main__":
    main()
