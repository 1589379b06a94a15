"""Synthetic-drive rendering speed at 416x128 vs reading the same frames back from PNG with cv2.

Rows, all in one process on the same drive and frames (torch single-threaded unless --threads):

- render, anti-aliased: ``SyntheticDrive.render`` (ray cast + mip-mapped shading + edge supersampling);
- render, no anti-aliasing: the same without the edge pass;
- render, anti-aliased, one process per core: both cores rendering at once (how ``generate_dataset`` uses the
  machine: one drive per worker process), frames/s summed over the processes;
- LiDAR scan: ``SyntheticDrive.scan`` (64 x 1024 rays, 360 degrees);
- peer, PNG read: ``cv2.imread`` + BGR->RGB of the frames the renderer just wrote, i.e. what loading an
  existing recording of the same frames costs.

Frames/s are given by wall clock and by process CPU time (the latter is robust to other jobs sharing the
machine). The last line times ``generate_dataset`` end to end (images, depth PNGs, LiDAR, OXTS, bag) with one
worker process per core.

    .venv/bin/python bench/synthetic.py
    .venv/bin/python bench/synthetic.py --frames 60 --width 640 --height 192
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import torch

from ssim_depth_core.data.synthetic import DriveSpec, SyntheticDrive, generate_dataset
from ssim_depth_core.imaging import write_png


def rate(work: Callable[[int], object], count: int) -> tuple[float, float]:
    """(per second by wall clock, per second by process CPU time) of ``work(i)`` for i < count."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        work(i)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def uncached_render(drive: SyntheticDrive) -> Callable[[int], object]:
    """``drive.render`` without its one-frame cache, so every call renders."""

    def work(i: int) -> object:
        drive._cache.clear()  # noqa: SLF001
        return drive.render(i)

    return work


def _render_worker(spec: DriveSpec, width: int, height: int, start: float) -> tuple[float, float]:
    """Render every frame of ``spec`` in this process once the shared start time has come."""
    torch.set_num_threads(1)
    drive = SyntheticDrive(spec, width, height)
    drive.render(0)
    time.sleep(max(0.0, start - time.time()))
    return rate(uncached_render(drive), len(drive))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the single-process rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    spec = DriveSpec(args.seed, 0, args.frames, lead_vehicle=True, standstill=False, oncoming=True)
    drives = {aa: SyntheticDrive(spec, args.width, args.height, antialias=aa) for aa in (True, False)}
    for drive in drives.values():
        drive.render(0)  # build the scene (textures) outside the timing

    # all processes start rendering at the same moment, after each has built its scene
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(cores, mp_context=context) as pool:
        start = time.time() + 10.0
        specs = [DriveSpec(args.seed + k, 0, args.frames) for k in range(cores)]
        rates = list(
            pool.map(_render_worker, specs, [args.width] * cores, [args.height] * cores, [start] * cores)
        )
    parallel = (sum(r[0] for r in rates), sum(r[1] for r in rates))

    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i:010d}.png" for i in range(args.frames)]
        for i, path in enumerate(paths):
            write_png(path, drives[True].image(i))
        rows = {
            "render, anti-aliased": rate(uncached_render(drives[True]), args.frames),
            "render, no anti-aliasing": rate(uncached_render(drives[False]), args.frames),
            "LiDAR scan (64 x 1024 rays)": rate(drives[True].scan, args.frames),
            f"render, anti-aliased, {cores} processes (sum)": parallel,
            "peer: cv2 PNG read": rate(lambda i: cv2.cvtColor(cv2.imread(str(paths[i])), cv2.COLOR_BGR2RGB),
                                       args.frames),
        }  # fmt: skip

        print(
            f"# synthetic rendering, {args.width}x{args.height}, {args.frames} frames, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.machine()}, "
            f"{os.cpu_count()} cores, "
            f"load {os.getloadavg()[0]:.1f}, {datetime.date.today().isoformat()}"
        )
        print("| work | frames/s (wall) | frames/s (CPU time) | CPU time vs PNG read |")
        print("|---|---:|---:|---:|")
        peer_cpu = rows["peer: cv2 PNG read"][1]
        for name, (wall, cpu) in rows.items():
            print(f"| {name} | {wall:.1f} | {cpu:.1f} | {peer_cpu / cpu:.1f}x slower |")

        start = time.perf_counter()
        generate_dataset(Path(tmp) / "dataset", args.seed, drives=2, frames=args.frames, width=args.width,
                         height=args.height, progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        print(
            f"\ngenerate_dataset, 2 drives x {args.frames} frames with LiDAR, depth, OXTS and MCAP bag, "
            f"{min(2, os.cpu_count() or 1)} worker processes: {2 * args.frames / seconds:.1f} frames/s "
            f"({seconds:.1f} s including process start and texture synthesis)"
        )


if __name__ == "__main__":
    main()
