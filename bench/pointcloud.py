"""Depth -> PointCloud2 packing time: ours against Open3D's C++ back-projection and a per-point Python loop.

Peers, measured in the same process on the same depth map (uniform 1..80 m, 5 % zeros) and RGB image:

- Open3D ``PointCloud.create_from_depth_image`` (depth only) and ``RGBDImage.create_from_color_and_depth`` +
  ``PointCloud.create_from_rgbd_image`` (colour). The ``o3d.geometry.Image`` wrappers are built outside the
  timed region and the output stays an Open3D cloud (float64, not packed into message bytes), so every
  simplification favours Open3D. Open3D keeps only valid points, so it is compared with ours unorganised.
- A per-point Python loop as written in many ROS Python nodes: for each pixel compute x, y, z and
  ``struct.pack_into`` them with the packed colour into a bytearray (depth and image converted to lists
  first, which favours the loop). It runs on the whole image unless ``--loop-rows`` limits it to the first
  rows, in which case its time is extrapolated per pixel to the whole image (and the table says so).

    .venv/bin/python bench/pointcloud.py                # both resolutions, ~20 s on 2 CPU cores
    .venv/bin/python bench/pointcloud.py --repeats 20
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import struct
import time
from collections.abc import Callable

import numpy as np
import open3d as o3d

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.runtime.pointcloud import _cached_rays, depth_to_pointcloud

MAX_DEPTH = 80.0
RESOLUTIONS = ((640, 192), (1242, 375))


def median_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall time of each ``fn()`` in milliseconds, run round-robin so load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def python_loop_cloud(depth: np.ndarray, image: np.ndarray, k: Intrinsics, max_depth: float) -> bytes:
    """Peer: x, y, z, rgb per pixel in Python, struct-packed into PointCloud2 bytes (valid points only)."""
    rows, colours = depth.tolist(), image.tolist()
    buffer = bytearray(16 * depth.size)
    offset = 0
    for v, (depth_row, colour_row) in enumerate(zip(rows, colours, strict=True)):
        for u, (z, (r, g, b)) in enumerate(zip(depth_row, colour_row, strict=True)):
            if not 0.0 < z < max_depth:
                continue
            x = (u - k.cx) * z / k.fx
            y = (v - k.cy) * z / k.fy
            struct.pack_into("<fffI", buffer, offset, x, y, z, (r << 16) | (g << 8) | b)
            offset += 16
    return bytes(buffer[:offset])


def scene(width: int, height: int, seed: int) -> tuple[Intrinsics, np.ndarray, np.ndarray]:
    """KITTI-like normalised intrinsics (Monodepth2's K) at this size, a depth map and an RGB image."""
    rng = np.random.default_rng(seed)
    k = Intrinsics(0.58 * width, 1.92 * height, 0.5 * width, 0.5 * height, width, height)
    depth = rng.uniform(1.0, MAX_DEPTH, size=(height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.05] = 0.0
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return k, depth, image


def bench_resolution(width: int, height: int, args: argparse.Namespace) -> dict[str, float]:
    k, depth, image = scene(width, height, args.seed)
    o3d_k = o3d.camera.PinholeCameraIntrinsic(width, height, k.fx, k.fy, k.cx, k.cy)
    o3d_depth, o3d_colour = o3d.geometry.Image(depth), o3d.geometry.Image(image)

    def o3d_depth_only():
        return o3d.geometry.PointCloud.create_from_depth_image(
            o3d_depth, o3d_k, depth_scale=1.0, depth_trunc=MAX_DEPTH
        )

    def o3d_rgbd():
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d_colour, o3d_depth, depth_scale=1.0, depth_trunc=MAX_DEPTH, convert_rgb_to_intensity=False
        )
        return o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, o3d_k)

    def ours(colour: np.ndarray | None, organized: bool) -> Callable[[], bytes]:
        return lambda: depth_to_pointcloud(
            depth, k, colour, max_depth=MAX_DEPTH, organized=organized
        ).tobytes()

    # The comparison is void unless all three produce the same cloud.
    ours_points = np.frombuffer(ours(image, False)(), dtype="<f4").reshape(-1, 4)
    reference = np.asarray(o3d_depth_only().points)
    xyz = ours_points[:, :3]
    if xyz.shape != reference.shape or not np.allclose(xyz, reference, atol=1e-4):
        raise RuntimeError("our cloud and Open3D's differ; the comparison would be void")
    rows = height if args.loop_rows is None else min(args.loop_rows, height)
    loop_bytes = python_loop_cloud(depth[:rows], image[:rows], k, MAX_DEPTH)
    loop_points = np.frombuffer(loop_bytes, "<f4").reshape(-1, 4)
    prefix = ours_points[: loop_points.shape[0]]
    if not (
        np.allclose(loop_points[:, :3], prefix[:, :3], atol=1e-4)
        and np.array_equal(loop_points[:, 3].view("<u4"), prefix[:, 3].view("<u4"))
    ):
        raise RuntimeError("the Python loop's cloud and ours differ; the comparison would be void")

    _cached_rays.cache_clear()
    start = time.perf_counter()
    ours(image, False)()
    cold_ms = (time.perf_counter() - start) * 1e3

    times = median_ms(
        {
            "open3d depth": o3d_depth_only,
            "open3d rgbd": o3d_rgbd,
            "ours depth": ours(None, False),
            "ours rgb": ours(image, False),
            "ours rgb organised": ours(image, True),
        },
        args.repeats,
    )
    times["ours rgb cold"] = cold_ms
    loop = median_ms(
        {"loop": lambda: python_loop_cloud(depth[:rows], image[:rows], k, MAX_DEPTH)}, args.loop_repeats, 0
    )
    times["python loop"] = loop["loop"] * height / rows
    times["loop rows"] = rows
    return times


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions (median reported)")
    parser.add_argument("--loop-rows", type=int, default=None, help="time the Python loop on fewer rows")
    parser.add_argument("--loop-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(
        "# Point-cloud packing, float32 depth + uint8 RGB -> PointCloud2 bytes, CPU, "
        f"{os.cpu_count()} cores, "
        f"numpy {np.__version__}, open3d {o3d.__version__}, {platform.processor() or platform.machine()}, "
        f"{datetime.date.today().isoformat()}, median of {args.repeats} after 2 warm-up, run round-robin "
        f"(Python loop: median of {args.loop_repeats})"
    )
    print(
        "| size | Open3D depth ms | ours depth ms | ours/Open3D | Open3D RGBD ms | ours RGB ms | ours/Open3D "
        "| ours RGB organised ms | ours RGB first call ms | Python loop ms | loop/ours |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst_open3d, worst_loop = 0.0, float("inf")
    for width, height in RESOLUTIONS:
        t = bench_resolution(width, height, args)
        depth_ratio = t["ours depth"] / t["open3d depth"]
        rgb_ratio = t["ours rgb"] / t["open3d rgbd"]
        loop_speedup = t["python loop"] / t["ours rgb"]
        worst_open3d = max(worst_open3d, depth_ratio, rgb_ratio)
        worst_loop = min(worst_loop, loop_speedup)
        loop_note = "" if t["loop rows"] == height else f" (from {t['loop rows']} rows)"
        print(
            f"| {width}x{height} | {t['open3d depth']:.2f} | {t['ours depth']:.2f} | {depth_ratio:.2f} "
            f"| {t['open3d rgbd']:.2f} | {t['ours rgb']:.2f} | {rgb_ratio:.2f} "
            f"| {t['ours rgb organised']:.2f} | {t['ours rgb cold']:.2f} "
            f"| {t['python loop']:.0f}{loop_note} | {loop_speedup:.0f}x |"
        )
    print()
    print(f"worst ours/Open3D time: {worst_open3d:.2f} (goal <= 1.5)")
    print(f"worst speedup over the Python loop: {worst_loop:.0f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
