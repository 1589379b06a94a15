"""Writing synthetic drives to disk: the KITTI raw layout, split files and rosbag2, drives in parallel.

A stereo drive adds camera 03 (``image_03``, its ground truth and poses) and the right camera topic in the
bag; every bag carries the drive's ground-truth motion (the IMU pose) as odometry.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.kitti_raw import read_split
from ssim_depth_core.data.synthetic.drive import FRAME_RATE, STEREO_CAMERA, SyntheticDrive
from ssim_depth_core.data.synthetic.scene import CAMERA, DriveSpec
from ssim_depth_core.imaging import encode_depth_png, write_png
from ssim_depth_core.outputs import require_folder
from ssim_depth_core.progress import progress_bar

logger = logging.getLogger(__name__)

BAG_STORAGES = ("mcap", "sqlite3", "none")
SPLIT_FOLDER = Path("splits") / "synthetic"  # under a dataset root: {train,val,test}_files.txt


def write_calibration(root: Path, drive: SyntheticDrive) -> None:
    """The three calibration files of the drive's date folder."""
    date_dir = root / drive.date
    calib_time = datetime.strptime(drive.date, "%Y_%m_%d").replace(hour=9)
    date_dir.mkdir(parents=True, exist_ok=True)
    kl.write_calib_cam_to_cam(date_dir / "calib_cam_to_cam.txt", drive.intrinsics, drive.rig, calib_time)
    kl.write_calib_velo_to_cam(date_dir / "calib_velo_to_cam.txt", drive.rig, calib_time)
    kl.write_calib_imu_to_velo(date_dir / "calib_imu_to_velo.txt", drive.rig, calib_time)


def write_drive(
    drive: SyntheticDrive,
    root: Path,
    bag: str = "mcap",
    on_frame: Callable[[], object] | None = None,
    calibration: bool = True,
) -> Path:
    """Write ``drive`` under ``root`` in the KITTI raw layout (+ a rosbag2 under ``root/bags``).

    Camera 03 is written too when ``drive.stereo``. ``on_frame`` is called after each frame (progress);
    ``calibration=False`` leaves the date folder's calibration files to the caller (parallel writers of one
    date).
    """
    if bag not in BAG_STORAGES:
        raise ValueError(f"bag must be one of {BAG_STORAGES}, got '{bag}'")
    if calibration:
        write_calibration(root, drive)
    out = root / drive.date / drive.drive_folder
    if (
        out / f"poses_cam_{CAMERA}.txt"
    ).is_file():  # an earlier synthetic drive (real KITTI has no such file)
        logger.info("replacing existing synthetic drive %s", out)
        shutil.rmtree(out)
    offsets = drive.offsets_ns
    half_sweep = int(0.5e9 / FRAME_RATE)
    cameras = (CAMERA, STEREO_CAMERA) if drive.stereo else (CAMERA,)
    for camera in cameras:
        kl.write_timestamps(out / f"image_{camera}" / "timestamps.txt", drive.start, offsets)
        kl.write_poses(out / f"poses_cam_{camera}.txt", drive.camera_poses(camera))
    kl.write_timestamps(out / "oxts" / "timestamps.txt", drive.start, offsets)
    velo = out / "velodyne_points"
    kl.write_timestamps(velo / "timestamps.txt", drive.start, offsets)
    kl.write_timestamps(velo / "timestamps_start.txt", drive.start, offsets - half_sweep)
    kl.write_timestamps(velo / "timestamps_end.txt", drive.start, offsets + half_sweep)
    kl.write_oxts(out / "oxts", drive.oxts())

    with contextlib.ExitStack() as stack:
        bag_writer = None
        if bag != "none":
            from ssim_depth_core.data.bagio import CameraBagWriter  # noqa: PLC0415  (rosbags only when asked)

            bag_dir = root / "bags" / drive.drive_folder
            if bag_dir.exists():
                if not (bag_dir / "metadata.yaml").is_file():
                    raise FileExistsError(
                        f"{bag_dir}: exists and is not a rosbag2 directory; not overwriting it"
                    )
                logger.info("replacing existing bag %s", bag_dir)
                shutil.rmtree(bag_dir)
            bag_dir.parent.mkdir(parents=True, exist_ok=True)
            baseline = -float(drive.stereo_transform[0, 3]) if drive.stereo else None
            bag_writer = stack.enter_context(
                CameraBagWriter(bag_dir, drive.intrinsics, storage=bag, stereo_baseline=baseline)
            )
        for index in range(len(drive)):
            name = f"{index:010d}"
            frames = {camera: drive.render(index, camera) for camera in cameras}
            for camera, frame in frames.items():
                write_png(out / f"image_{camera}" / "data" / f"{name}.png", frame.rgb)
                depth_png = out / "proj_depth" / "groundtruth" / f"image_{camera}" / f"{name}.png"
                write_png(depth_png, encode_depth_png(frame.depth))
            kl.write_velodyne(velo / "data" / f"{name}.bin", drive.scan(index))
            if bag_writer is not None:
                right = frames.get(STEREO_CAMERA)
                bag_writer.write(
                    frames[CAMERA].rgb,
                    int(drive.stamps_ns[index]),
                    right_rgb=None if right is None else right.rgb,
                    odometry=drive.T_world_imu[index],
                )
            if on_frame is not None:
                on_frame()
    return out


def split_entries(drives: list[SyntheticDrive]) -> dict[str, list[tuple[str, int]]]:
    """Train/val/test split of a dataset's drives (frames 0 and last excluded: triplets need neighbours).

    The last drive is held out: it is the test split, and also the validation split unless there are at
    least three drives, when the second-to-last is validation. With a single drive every split is that drive.
    """

    def frames(drive: SyntheticDrive) -> list[tuple[str, int]]:
        return [(f"{drive.date}/{drive.drive_folder}", i) for i in range(1, len(drive) - 1)]

    test = frames(drives[-1])
    val = frames(drives[-2]) if len(drives) >= 3 else test
    train = [entry for drive in drives[: -2 if len(drives) >= 3 else -1] for entry in frames(drive)] or test
    return {"train": train, "val": val, "test": test}


def _write_drive_task(
    spec: DriveSpec, width: int, height: int, stereo: bool, root: Path, bag: str, ticks: Any
) -> None:
    """Worker process body: one drive, single-threaded torch (the processes share the cores)."""
    torch.set_num_threads(1)
    drive = SyntheticDrive(spec, width, height, stereo=stereo)
    write_drive(drive, root, bag, on_frame=lambda: ticks.put(1), calibration=False)


def generate_dataset(
    out_dir: str | Path,
    seed: int,
    drives: int = 2,
    frames: int = 60,
    width: int = 416,
    height: int = 128,
    bag: str = "mcap",
    progress: bool = True,
    workers: int | None = None,
    stereo: bool = False,
    overwrite: bool = False,
) -> Path:
    """Render ``drives`` synthetic drives of ``frames`` frames at ``width`` x ``height`` into ``out_dir``.

    Writes the KITTI raw layout under ``out_dir/<date>`` (date = 2001-01-01 + seed days), split files under
    ``out_dir/splits/synthetic/{train,val,test}_files.txt`` (keeping the entries of other seeds' drives in
    the folder: :func:`split_entries` per seed) and, unless ``bag == "none"``, one rosbag2
    (``mcap`` or ``sqlite3``) per drive under ``out_dir/bags/<drive folder>``, with the ground-truth motion
    on its odometry topic. ``stereo`` adds camera 03 (0.54 m right of camera 02) to the drives and the bags
    (twice the rendering time). Deterministic in ``seed`` (and independent of ``workers``: drives are
    rendered in parallel processes, one per CPU core by default). Returns ``out_dir``.

    A folder that already holds drives or bags of ``seed`` (its date) is refused unless ``overwrite``, which
    removes them (all of that seed's, so fewer drives leave none behind) before rendering.
    """
    if drives < 1:
        raise ValueError(f"drives must be >= 1, got {drives}")
    if frames < 3:
        raise ValueError(f"frames must be >= 3 (triplets need neighbours), got {frames}")
    if bag not in BAG_STORAGES:
        raise ValueError(f"bag must be one of {BAG_STORAGES}, got '{bag}'")
    root = Path(out_dir)
    specs = [DriveSpec.for_dataset(seed, index, drives, frames) for index in range(drives)]
    made = [SyntheticDrive(spec, width, height, stereo=stereo) for spec in specs]
    for folder in (root, root / made[0].date, root / "bags", root / SPLIT_FOLDER):  # where it writes
        require_folder(folder, "choose a folder for the synthetic drives")
    other_seeds = _other_seeds_splits(root, made[0].date)  # read (and checked) before any rendering
    earlier = _seed_outputs(root, made[0].date)
    if earlier and not overwrite:
        drive_count = sum(path.parent == root / made[0].date for path in earlier)
        raise ValueError(
            f"{root} already holds seed {seed}'s dataset ({drive_count} drive(s) and "
            f"{len(earlier) - drive_count} bag(s), e.g. {earlier[0]}): pass --overwrite to render them "
            "again, or choose another folder"
        )
    for path in earlier:
        shutil.rmtree(path)
    for drive in made:
        logger.info(
            "drive %s: %d frames at %dx%d, %.0f m, lead car %s, standstill %s, oncoming cars %s",
            drive.drive_folder, frames, width, height, drive.trajectory.distance[-1],
            drive.spec.lead_vehicle, drive.spec.standstill, drive.spec.oncoming,
        )  # fmt: skip
    workers = min(drives, os.cpu_count() or 1) if workers is None else max(1, min(workers, drives))
    with progress_bar(
        total=drives * frames, desc="synthetic frames", unit="frame", disable=not progress
    ) as bar:
        if workers == 1:
            with _single_threaded_torch():
                for drive in made:
                    write_drive(drive, root, bag, on_frame=bar.update)
        else:
            write_calibration(root, made[0])
            _write_in_parallel(specs, width, height, stereo, root, bag, workers, bar)
    if drives == 1:
        logger.warning("a single drive is used for training, validation and test alike")
    for split, entries in split_entries(made).items():
        kl.write_split(root / SPLIT_FOLDER / f"{split}_files.txt", sorted({*other_seeds[split], *entries}))
    logger.info("synthetic dataset (seed %d) written to %s", seed, root)
    return root


def _seed_outputs(root: Path, date: str) -> list[Path]:
    """The drive folders and bags of the dataset of date ``date`` (one seed's) in ``root``."""
    return sorted(
        [*(root / date).glob(f"{date}_drive_*_sync"), *(root / "bags").glob(f"{date}_drive_*_sync")]
    )


def _other_seeds_splits(root: Path, date: str) -> dict[str, list[tuple[str, int]]]:
    """The entries of ``root``'s synthetic split files whose drives are of another date (another seed's
    dataset in the same folder) and still there: a new dataset joins them instead of replacing them."""
    kept = {}
    for split in ("train", "val", "test"):
        path = root / SPLIT_FOLDER / f"{split}_files.txt"
        entries = read_split(path) if path.is_file() else []
        kept[split] = [
            (drive, index)
            for drive, index, _ in entries
            if drive.split("/")[0] != date and (root / drive).is_dir()
        ]
    return kept


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """Render with one torch thread: the renderer's tensors are small (~50k elements), so a second thread
    gains ~10 %, while on a busy machine oversubscribed threads can slow it down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _write_in_parallel(
    specs: list[DriveSpec],
    width: int,
    height: int,
    stereo: bool,
    root: Path,
    bag: str,
    workers: int,
    bar: tqdm,
) -> None:
    """One drive per task in ``workers`` spawned processes; frame ticks come back through a queue."""
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        ticks = manager.Queue()
        tasks = [
            pool.submit(_write_drive_task, spec, width, height, stereo, root, bag, ticks) for spec in specs
        ]
        while not all(task.done() for task in tasks) or not ticks.empty():
            try:
                ticks.get(timeout=0.2)
                bar.update()
            except queue.Empty:
                pass
        for task in tasks:
            task.result()  # re-raise a worker's error here
