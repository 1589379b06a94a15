"""KITTI raw drives (``<root>/<date>/<drive>/image_<cam>/data/%010d.png``) as frame sequences.

Works unchanged on the real KITTI raw release (drive folders ``<date>_drive_<NNNN>_sync``) and on the
synthetic drives written in the same layout. Optional extras inside a drive folder: ground-truth depth in
``proj_depth/groundtruth/image_<cam>/%010d.png`` (uint16, metres * 256, 0 = invalid, as the KITTI depth
benchmark ships it) or, where that map is absent, the frame's velodyne scan ``velodyne_points/data/%010d.bin``
projected into the camera (data/lidar.py, as the Eigen split's raw ground truth is made; ``depth_source``
chooses), camera-to-world poses in ``poses_cam_<cam>.txt`` (12 values of a 3x4 matrix per line),
the OXTS packets in ``oxts/`` (the odometer: speed integrated over time) and the stereo partner camera's
folder (``image_03`` for ``image_02`` and vice versa).
"""

from __future__ import annotations

import calendar
import logging
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from ssim_depth_core.camera import Intrinsics, read_kitti_calib
from ssim_depth_core.data.kitti_layout import OXTS_FIELDS
from ssim_depth_core.data.lidar import project_to_depth, read_velodyne, velodyne_projection
from ssim_depth_core.data.odometry import odometer_at, odometer_from_speeds
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.imaging import FrameError, read_depth_png, read_image

logger = logging.getLogger(__name__)

SIDE_TO_CAMERA = {"l": "02", "r": "03"}  # split-file side -> KITTI colour camera
STEREO_PARTNER = {"02": "03", "03": "02"}  # the rectified colour pair
DEFAULT_SPACING_S = 0.1  # KITTI cameras run at 10 Hz
IMAGE_SUFFIXES = (".png", ".jpg")
# Rectified cameras of one stereo pair share K (KITTI's P_rect_02 and P_rect_03 are equal but for column 4); a
# larger difference (pixels) is a wrong or edited calibration, under which the baseline warp is meaningless.
STEREO_K_TOLERANCE_PX = 0.01
# Ground-truth depth of a frame: "auto" = the annotated proj_depth map where there is one, else the projected
# velodyne scan; "annotated" = the map only; "velodyne" = the projected scan only.
DEPTH_SOURCES = ("auto", "annotated", "velodyne")
_SPEED_FIELDS = [OXTS_FIELDS.index(name) for name in ("vf", "vl", "vu")]
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?$")


def parse_kitti_timestamp(text: str) -> float:
    """``"2011-09-26 13:02:25.964389445"`` (UTC, up to nanoseconds) -> float seconds since the epoch."""
    match = _TIMESTAMP.match(text.strip())
    if match is None:
        raise ValueError(f"expected 'YYYY-MM-DD HH:MM:SS.fffffffff', got {text.strip()!r}")
    whole = calendar.timegm(datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timetuple())
    fraction = match.group(2) or "0"
    return whole + int(fraction) / 10 ** len(fraction)


def read_kitti_timestamps(path: str | Path) -> np.ndarray:
    """A KITTI ``timestamps.txt`` -> (N,) float64 seconds; ValueError naming file:line if malformed."""
    values = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(parse_kitti_timestamp(line))
        except ValueError as err:
            raise ValueError(f"{path}:{line_no}: {err}") from None
    return np.asarray(values, dtype=np.float64)


def read_poses(path: str | Path) -> np.ndarray:
    """A file of 3x4 row-major camera-to-world matrices, one per line -> (N, 4, 4) float64."""
    poses = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise ValueError(f"{path}:{line_no}: non-numeric pose value in {line.strip()!r}") from None
        if len(values) != 12:
            raise ValueError(f"{path}:{line_no}: expected 12 values (3x4 pose), got {len(values)}")
        pose = np.eye(4)
        pose[:3] = np.reshape(values, (3, 4))
        poses.append(pose)
    return np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)


def read_oxts_odometer(oxts_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A drive's ``oxts/`` folder -> (stamps, odometer) of its readable packets, or None without any.

    Speed is the norm of the velocity (vf, vl, vu) of each ``data/%010d.txt`` packet, integrated over
    ``timestamps.txt`` (:func:`odometer_from_speeds`). A missing or garbled packet, or one stamped no later
    than the packet before it, is dropped, with one warning naming the files; a missing or malformed
    ``timestamps.txt`` means no odometry (a warning, not an error: the images are still usable).
    """
    oxts_dir = Path(oxts_dir)
    try:
        stamps = read_kitti_timestamps(oxts_dir / "timestamps.txt")
    except (OSError, ValueError) as err:
        logger.warning("%s: no odometry for this drive (%s)", oxts_dir, err)
        return None
    kept_stamps, speeds, skipped = [], [], []
    for index, stamp in enumerate(stamps):
        path = oxts_dir / "data" / f"{index:010d}.txt"
        try:
            fields = np.array(path.read_text().split(), dtype=np.float64)
        except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not numbers
            fields = np.empty(0)
        if len(fields) != len(OXTS_FIELDS) or not np.all(np.isfinite(fields[_SPEED_FIELDS])):
            skipped.append(path.name)
        elif kept_stamps and stamp <= kept_stamps[-1]:
            skipped.append(f"{path.name} (stamp not after the previous packet's)")
        else:
            kept_stamps.append(stamp)
            speeds.append(np.linalg.norm(fields[_SPEED_FIELDS]))
    if skipped:
        logger.warning(
            "%s: skipped %d of %d OXTS packets (missing, not %d numbers, or out of order): %s",
            oxts_dir / "data",
            len(skipped),
            len(stamps),
            len(OXTS_FIELDS),
            ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else ""),
        )
    if not kept_stamps:
        return None
    return np.asarray(kept_stamps), odometer_from_speeds(np.asarray(kept_stamps), np.asarray(speeds))


def kitti_sequence_name(date_drive: str, camera: str) -> str:
    """Sequence name of one camera of a drive, e.g. ``2011_09_26/2011_09_26_drive_0001_sync/image_02``."""
    return f"{date_drive}/image_{camera}"


class KittiRawSequence(FrameSequence):
    """One camera of one KITTI raw drive; frame ``i`` is the file numbered ``i``; ground-truth depth from
    ``depth_source`` (one of :data:`DEPTH_SOURCES`). With ``stereo``, the partner camera's folder (when there
    is one) is the stereo partner and the calibration must make the two one rectified pair; without, the
    partner is neither read nor checked."""

    frames_by_stamp = False  # a missing file keeps its slot: neighbouring numbers are neighbouring frames

    def __init__(
        self,
        root: str | Path,
        date: str,
        drive: str,
        camera: str = "02",
        depth_source: str = "auto",
        *,
        stereo: bool = False,
    ) -> None:
        if depth_source not in DEPTH_SOURCES:
            raise ValueError(f"depth_source must be one of {DEPTH_SOURCES}, got {depth_source!r}")
        self.root, self.date, self.drive, self.camera = Path(root), date, drive, camera
        self.drive_dir = self.root / date / drive
        self.name = kitti_sequence_name(f"{date}/{drive}", camera)
        self.image_dir = self.drive_dir / f"image_{camera}" / "data"
        if not self.image_dir.is_dir():
            raise ValueError(
                f"{self.image_dir}: no such image folder (expected <date>/<drive>/image_<cam>/data)"
            )
        calib = self.root / date / "calib_cam_to_cam.txt"
        if not calib.is_file():
            raise ValueError(f"{calib}: missing KITTI calibration file for drive {drive}")
        self.intrinsics = Intrinsics.from_kitti_calib(calib, camera)

        numbers: set[int] = set()
        for suffix in IMAGE_SUFFIXES:
            numbers = {int(p.stem) for p in self.image_dir.glob(f"*{suffix}") if p.stem.isdigit()}
            if numbers:
                self.suffix = suffix
                break
        if not numbers:
            raise ValueError(f"{self.image_dir}: no %010d.png or %010d.jpg frames")

        stamps = self.image_dir.parent / "timestamps.txt"
        has_stamps = stamps.is_file()
        if has_stamps:
            self.timestamps = read_kitti_timestamps(stamps)
            if max(numbers) >= len(self.timestamps):
                raise ValueError(
                    f"{stamps}: {len(self.timestamps)} timestamps but {self.image_dir} "
                    f"has frame {max(numbers)}"
                )
        else:
            logger.warning("%s missing: assuming %.1f s between frames", stamps, DEFAULT_SPACING_S)
            self.timestamps = np.arange(max(numbers) + 1, dtype=np.float64) * DEFAULT_SPACING_S
        if len(numbers) < len(self.timestamps):
            logger.warning(
                "%s: %d of %d frames missing",
                self.image_dir,
                len(self.timestamps) - len(numbers),
                len(self.timestamps),
            )
        # A repeated or backwards stamp: which of its two frames is mistimed is unknown: neither has odometry.
        backwards = np.flatnonzero(np.diff(self.timestamps) <= 0)
        self._unordered = np.zeros(len(self.timestamps), dtype=bool)
        self._unordered[backwards] = self._unordered[backwards + 1] = True
        if len(backwards):
            logger.warning(
                "%s: frames stamped no later than the frame before them: %s (%d of %d); they and the frames "
                "before them get no odometry",
                stamps,
                ", ".join(map(str, backwards[:10] + 1)) + (", ..." if len(backwards) > 10 else ""),
                len(backwards),
                len(self.timestamps),
            )

        self.depth_dir = self.drive_dir / "proj_depth" / "groundtruth" / f"image_{camera}"
        self.velodyne_dir = self.drive_dir / "velodyne_points" / "data"
        self.depth_source = depth_source
        self._velodyne_projection: tuple[np.ndarray, int, int] | None = None
        pose_file = self.drive_dir / f"poses_cam_{camera}.txt"
        self._poses = read_poses(pose_file) if pose_file.is_file() else None
        if self._poses is not None and len(self._poses) != len(self):
            raise ValueError(f"{pose_file}: {len(self._poses)} poses for {len(self)} frames")
        self.odometer = self._read_odometer(has_stamps)
        self.partner_dir: Path | None = None
        partner = STEREO_PARTNER.get(camera)
        if stereo and partner is not None and (self.drive_dir / f"image_{partner}" / "data").is_dir():
            self.partner_dir = self.drive_dir / f"image_{partner}" / "data"
            self.stereo_transform = stereo_transform_from_calib(calib, camera, partner)

    def _read_odometer(self, has_stamps: bool) -> np.ndarray | None:
        """Odometer at each frame from ``oxts/`` (None without it); NaN where no packets bracket a frame."""
        oxts_dir = self.drive_dir / "oxts"
        if not oxts_dir.is_dir():
            return None
        if not has_stamps:
            logger.warning("%s: no image timestamps to align the OXTS odometry with: no odometry", self.name)
            return None
        samples = read_oxts_odometer(oxts_dir)
        if samples is None:
            return None
        odometer = odometer_at(self.timestamps, *samples)
        odometer[self._unordered] = np.nan
        logger.info("%s: odometry for %d of %d frames", self.name, np.isfinite(odometer).sum(), len(self))
        return odometer

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: frame {index} out of range [0, {len(self)})")

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{index:010d}{self.suffix}"

    def image(self, index: int) -> np.ndarray:
        self._check(index)
        path = self.image_path(index)
        return read_image(path)

    def depth(self, index: int) -> np.ndarray | None:
        """The annotated map and/or the projected velodyne scan, as ``depth_source`` says; None without."""
        self._check(index)
        path = self.depth_dir / f"{index:010d}.png"
        if self.depth_source != "velodyne" and path.is_file():
            return read_depth_png(path)
        scan = self.velodyne_dir / f"{index:010d}.bin"
        if self.depth_source == "annotated" or not scan.is_file():
            return None
        try:
            if self._velodyne_projection is None:
                self._velodyne_projection = velodyne_projection(self.root / self.date, self.camera)
            projection, width, height = self._velodyne_projection
            depth = project_to_depth(read_velodyne(scan), projection, width, height)
        except (OSError, ValueError) as error:
            raise FrameError(f"{scan}: no ground truth from this velodyne scan ({error})") from error
        if (width, height) != (self.intrinsics.width, self.intrinsics.height):
            raise FrameError(f"{scan}: projected {width}x{height}, but the camera is {self.intrinsics}")
        return depth

    def pose(self, index: int) -> np.ndarray | None:
        self._check(index)
        return None if self._poses is None else self._poses[index].copy()

    def stereo_image(self, index: int) -> np.ndarray:
        """The partner camera's same-numbered frame; FrameError if there is none, it is unreadable, or its
        size is not the calibrated one."""
        self._check(index)
        if self.partner_dir is None:
            return super().stereo_image(index)
        paths = [self.partner_dir / f"{index:010d}{suffix}" for suffix in IMAGE_SUFFIXES]
        path = next((p for p in paths if p.is_file()), paths[0])
        image = read_image(path)
        if image.shape[:2] != (self.intrinsics.height, self.intrinsics.width):
            raise FrameError(
                f"{path}: stereo partner frame is {image.shape[1]}x{image.shape[0]}, expected the calibrated "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        return image


def stereo_transform_from_calib(calib_cam_to_cam: str | Path, camera: str, partner: str) -> np.ndarray:
    """4x4 transform from rectified camera ``camera`` to ``partner`` out of ``P_rect_*``.

    Rectified KITTI cameras differ by an x translation only: ``P_rect_xx[0, 3] / P_rect_xx[0, 0]`` is camera
    xx's x offset from camera 00, so ``x_partner = x_camera + b_partner - b_camera`` (02 -> 03: -0.54 m).
    ValueError naming the file when the two rectified K differ by more than ``STEREO_K_TOLERANCE_PX``.
    """
    this = Intrinsics.from_kitti_calib(calib_cam_to_cam, camera)
    other = Intrinsics.from_kitti_calib(calib_cam_to_cam, partner)
    same_size = (this.width, this.height) == (other.width, other.height)
    if not same_size or np.abs(this.matrix - other.matrix).max() > STEREO_K_TOLERANCE_PX:
        raise ValueError(
            f"{calib_cam_to_cam}: P_rect_{camera}/S_rect_{camera} ({this}) and P_rect_{partner}/"
            f"S_rect_{partner} ({other}) are not one rectified stereo pair: expected equal sizes and K "
            f"within {STEREO_K_TOLERANCE_PX} px"
        )
    values = read_kitti_calib(calib_cam_to_cam)
    offset = {c: values[f"P_rect_{c}"][3] / values[f"P_rect_{c}"][0] for c in (camera, partner)}
    transform = np.eye(4)
    transform[0, 3] = offset[partner] - offset[camera]
    return transform


def read_split(path: str | Path) -> list[tuple[str, int, str]]:
    """Eigen/Zhou split file lines ``<date>/<drive> <frame_index> l|r`` -> [(date/drive, frame, side)]."""
    entries = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if (
            len(fields) != 3
            or "/" not in fields[0]
            or not fields[1].isdigit()
            or fields[2] not in SIDE_TO_CAMERA
        ):
            raise ValueError(
                f"{path}:{line_no}: expected '<date>/<drive> <frame_index> l|r', got {line.strip()!r}"
            )
        entries.append((fields[0], int(fields[1]), fields[2]))
    return entries


def is_kitti_root(path: str | Path) -> bool:
    """Whether ``path`` holds date folders with a ``calib_cam_to_cam.txt``."""
    path = Path(path)
    return path.is_dir() and any((d / "calib_cam_to_cam.txt").is_file() for d in path.iterdir() if d.is_dir())


def discover_kitti(
    root: str | Path,
    cameras: tuple[str, ...] = ("02", "03"),
    depth_source: str = "auto",
    *,
    stereo: bool = False,
) -> list[KittiRawSequence]:
    """Every drive x camera under ``root`` that has ``image_<cam>/data``, sorted by date, drive, camera;
    ground truth from ``depth_source`` (:data:`DEPTH_SOURCES`), stereo partners with ``stereo``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory (expected a KITTI raw root of <date>/<drive> folders)")
    sequences = []
    for date_dir in sorted(d for d in root.iterdir() if (d / "calib_cam_to_cam.txt").is_file()):
        for drive_dir in sorted(d for d in date_dir.iterdir() if d.is_dir()):
            for camera in cameras:
                if (drive_dir / f"image_{camera}" / "data").is_dir():
                    sequences.append(
                        KittiRawSequence(
                            root, date_dir.name, drive_dir.name, camera, depth_source, stereo=stereo
                        )
                    )
    return sequences
