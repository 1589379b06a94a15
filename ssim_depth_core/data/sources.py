"""Open whatever recording a path points at as frame sequences: a KITTI raw root or rosbag2 bag(s)."""

from __future__ import annotations

import logging
from pathlib import Path

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.kitti_raw import discover_kitti, is_kitti_root
from ssim_depth_core.data.rosbag import STORAGE_SUFFIXES, RosbagSequence, is_rosbag
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.errors import not_found

log = logging.getLogger(__name__)


def bag_paths(path: Path) -> list[Path]:
    """The rosbag2 recordings at ``path``: itself, each storage file of a metadata-less folder of several,
    or each bag directly inside it."""
    if is_rosbag(path):
        if path.is_dir() and not (path / "metadata.yaml").is_file():
            return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)
        return [path]
    if path.is_dir():
        return [child for child in sorted(path.iterdir()) if is_rosbag(child)]
    return []


def open_sequences(path: str | Path, data_config: DataConfig) -> list[FrameSequence]:
    """Frame sequences of a KITTI raw root (every drive and colour camera, ground truth from
    ``data_config.depth_source``, with ``data_config.stereo`` the partner camera) or of one or more rosbag2
    bags.

    Bags use ``data_config.image_topic`` / ``camera_info_topic`` (empty = auto-detect),
    ``data_config.intrinsics`` (overrides CameraInfo when set), ``odometry_topic`` (empty = auto-detect,
    "none" = no odometry) and, with ``data_config.stereo``, ``stereo_image_topic`` /
    ``stereo_camera_info_topic`` (empty = auto-detect).
    """
    path = Path(path)
    if not path.exists():
        raise not_found("data", path)
    if is_kitti_root(path):
        if data_config.intrinsics:
            log.warning(
                "data.intrinsics is not used: %s is a KITTI raw root, whose calib_cam_to_cam.txt gives the "
                "cameras (data.intrinsics stands in for a bag's missing CameraInfo)",
                path,
            )
        return discover_kitti(path, depth_source=data_config.depth_source, stereo=data_config.stereo)
    bags = bag_paths(path)
    if not bags:
        raise ValueError(
            f"{path}: neither a KITTI raw root (<date>/calib_cam_to_cam.txt, <date>/<drive>/image_02/data) "
            "nor a rosbag2 (a .mcap/.db3 file, a bag directory with metadata.yaml, or a directory of bags)"
        )
    intrinsics = Intrinsics.from_list(data_config.intrinsics) if data_config.intrinsics else None
    return [
        RosbagSequence(
            bag,
            image_topic=data_config.image_topic or None,
            camera_info_topic=data_config.camera_info_topic or None,
            intrinsics=intrinsics,
            odometry_topic=data_config.odometry_topic or None,
            stereo=data_config.stereo,
            stereo_image_topic=data_config.stereo_image_topic or None,
            stereo_camera_info_topic=data_config.stereo_camera_info_topic or None,
        )
        for bag in bags
    ]


NO_SPLIT = "none"  # data.train_split / val_split value: use no split file


def _dataset_splits(data_path: str | Path, name: str) -> list[Path]:
    """The dataset's own split files named ``name``: ``DATA/splits/*/<name>_files.txt``."""
    return sorted(Path(data_path).glob(f"splits/*/{name}_files.txt"))


def resolve_split(data_path: str | Path, split: str | Path) -> Path:
    """A split file path as given, or the name ``split`` resolved as ``DATA/splits/*/<split>_files.txt``."""
    if Path(split).is_file():
        return Path(split)
    if Path(split).suffix == ".txt":  # a file path (``.../train_files.txt``), not a name looked up in DATA
        raise not_found("split file", split)
    matches = _dataset_splits(data_path, str(split))
    if len(matches) != 1:
        found = ", ".join(str(m) for m in matches) or "none"
        raise ValueError(
            f"split '{split}' is not a file, and {data_path}/splits/*/{split}_files.txt matched {found}: "
            "pass a split file path"
        )
    return matches[0]


def select_split(data_path: str | Path, split: str, name: str) -> Path | None:
    """The split file that config value ``split`` (``data.train_split`` / ``val_split``) selects.

    "none": None (no split file); empty: the dataset's own ``DATA/splits/*/<name>_files.txt`` when it has
    one (None when it has none; an error when several match); else :func:`resolve_split`.
    """
    if split == NO_SPLIT:
        return None
    if split:
        return resolve_split(data_path, split)
    matches = _dataset_splits(data_path, name)
    if len(matches) > 1:
        raise ValueError(
            f"{data_path} has several {name} splits ({', '.join(map(str, matches))}): set "
            f"data.{name}_split to one of them, or to '{NO_SPLIT}' for no split"
        )
    return matches[0] if matches else None
