"""Depth map -> point cloud in the camera optical frame, packed byte-for-byte as a sensor_msgs/PointCloud2.

Points use the same rays as training's view synthesis (:func:`ssim_depth_core.geometry.ray_grid`): pixel
(u, v) at integer coordinates, point = depth * K^-1 (u, v, 1), REP 103 optical frame (x right, y down,
z forward). The rays are computed once per (intrinsics, stride) and cached, so a frame costs one multiply
per coordinate plus the packing. Colour is packed the RViz way: uint32 0x00RRGGBB reinterpreted as float32.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.geometry import ray_grid

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32

XYZ_DTYPE = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": 12})
XYZRGB_DTYPE = np.dtype(
    {"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12], "itemsize": 16}
)


class PointField(NamedTuple):
    """One sensor_msgs/PointField: byte offset in the point, datatype code, element count."""

    name: str
    offset: int
    datatype: int
    count: int


@dataclass(frozen=True)
class PointCloudData:
    """A cloud laid out exactly as PointCloud2 ``data`` (little-endian, ``is_bigendian`` false).

    ``points`` is a (height, width) structured array with float32 fields x, y, z (and rgb when coloured).
    Organised clouds keep the image grid with NaN for invalid pixels; unorganised ones are 1 x N.
    """

    points: np.ndarray
    is_dense: bool

    @property
    def height(self) -> int:
        return self.points.shape[0]

    @property
    def width(self) -> int:
        return self.points.shape[1]

    @property
    def point_step(self) -> int:
        return self.points.dtype.itemsize

    @property
    def row_step(self) -> int:
        return self.point_step * self.width

    @property
    def has_rgb(self) -> bool:
        return "rgb" in self.points.dtype.names

    @property
    def fields(self) -> list[PointField]:
        dtype = self.points.dtype
        return [PointField(name, dtype.fields[name][1], FLOAT32, 1) for name in dtype.names]

    def tobytes(self) -> bytes:
        """The PointCloud2 ``data`` payload (height * row_step bytes)."""
        return self.points.tobytes()


@functools.lru_cache(maxsize=8)
def _cached_rays(intrinsics: Intrinsics, stride: int) -> np.ndarray:
    """(3, H', W') float32 rays with z = 1 at every stride-th pixel; read-only, shared between calls.

    Planar (not (H', W', 3)) so that each coordinate is one contiguous multiply.
    """
    rays = ray_grid(intrinsics.inv_K(torch.float64), intrinsics.height, intrinsics.width)
    rays = np.ascontiguousarray(rays[:, ::stride, ::stride].numpy(), dtype=np.float32)
    rays.flags.writeable = False
    return rays


def depth_to_pointcloud(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    image: np.ndarray | None = None,
    *,
    stride: int = 1,
    min_depth: float = 0.0,
    max_depth: float = math.inf,
    organized: bool = True,
) -> PointCloudData:
    """Back-project a depth map into a PointCloud2-ready cloud.

    Args:
        depth: (H, W) float z-depth in metres at the resolution of ``intrinsics``; NaN, inf and values
            outside the open interval (min_depth, max_depth) are invalid (so 0 is invalid by default).
        intrinsics: camera of ``depth``.
        image: optional (H, W, 3) uint8 RGB colour, same resolution; adds the packed ``rgb`` field.
        stride: keep every stride-th pixel in both axes, starting at pixel (0, 0); rays are those of the
            kept pixels (the intrinsics are not rescaled).
        organized: True -> (H', W') grid with NaN x, y, z for invalid pixels (``is_dense`` false unless
            every pixel is valid); False -> 1 x N cloud of the valid points in row-major pixel order.

    Returns:
        :class:`PointCloudData`.
    """
    depth = np.asarray(depth)
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be a float array in metres, got dtype {depth.dtype}")
    expected = (intrinsics.height, intrinsics.width)
    if depth.shape != expected:
        raise ValueError(f"depth shape {depth.shape} != the intrinsics' (height, width) {expected}")
    if image is not None and (image.shape != (*expected, 3) or image.dtype != np.uint8):
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB of shape {(*expected, 3)}, got {image.shape} {image.dtype}"
        )
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")

    rays = _cached_rays(intrinsics, stride)
    depth = depth[::stride, ::stride]
    # NaN fails both comparisons and inf fails the upper one, so this is the whole validity test.
    valid = depth > min_depth
    valid &= depth < max_depth
    if organized:
        depth = np.where(valid, depth, np.float32(np.nan))
    # Contiguous per-coordinate planes, interleaved by one cv2.merge: much faster than numpy broadcasting
    # into a strided (H, W, 4) buffer.
    with np.errstate(invalid="ignore"):  # inf * 0 on the principal ray: dropped below when unorganised
        planes = [np.multiply(depth, ray, dtype=np.float32) for ray in rays]
    if image is not None:
        planes.append(_pack_rgb(np.ascontiguousarray(image[::stride, ::stride])))
    dtype = XYZ_DTYPE if image is None else XYZRGB_DTYPE
    interleaved = cv2.merge(planes)

    if organized:
        points = interleaved.view(dtype)[..., 0]
        return PointCloudData(points=points, is_dense=bool(valid.all()))
    # Select whole points as opaque records: far faster than boolean indexing of a structured array.
    records = interleaved.reshape(-1).view(np.dtype((np.void, dtype.itemsize)))
    points = records[valid.reshape(-1)].view(dtype)[None]
    return PointCloudData(points=points, is_dense=True)


def _pack_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 carrying the bits of little-endian uint32 0x00RRGGBB."""
    # BGRA bytes read as little-endian uint32 are 0xAARRGGBB; the alpha byte is cleared because 0xFF......
    # would be a float32 NaN, which some consumers treat as an invalid colour.
    packed = cv2.cvtColor(image, cv2.COLOR_RGB2BGRA).view("<u4")[..., 0]
    np.bitwise_and(packed, np.uint32(0x00FFFFFF), out=packed)
    return packed.view("<f4")


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB from ``rgb`` field values (float32 carrying the bits of uint32 0x00RRGGBB)."""
    bits = np.ascontiguousarray(rgb, dtype="<f4").view("<u4")
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def write_ply(path: str | Path, cloud: PointCloudData) -> int:
    """Write the finite points of ``cloud`` as binary little-endian PLY (x y z float, red green blue uchar),
    atomically (:func:`checkpoint.write_atomic`: a failed write leaves no partial file).

    Returns:
        Number of points written.
    """
    points = cloud.points.reshape(-1)
    points = points[np.isfinite(points["x"]) & np.isfinite(points["y"]) & np.isfinite(points["z"])]
    formats = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.has_rgb:
        formats += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(points.size, dtype=np.dtype(formats))
    for axis in ("x", "y", "z"):
        vertices[axis] = points[axis]
    if cloud.has_rgb:
        rgb = unpack_rgb(points["rgb"])
        vertices["red"], vertices["green"], vertices["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]

    header = ["ply", "format binary_little_endian 1.0", f"element vertex {points.size}"]
    header += [f"property float {axis}" for axis in ("x", "y", "z")]
    if cloud.has_rgb:
        header += [f"property uchar {channel}" for channel in ("red", "green", "blue")]
    header.append("end_header")
    write_atomic(path, ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes())
    return int(points.size)
