"""KITTI raw reader on a tiny on-disk drive in the real KITTI layout."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.kitti_raw import (
    KittiRawSequence,
    discover_kitti,
    parse_kitti_timestamp,
    read_split,
)
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.imaging import FrameError

DATE = "2011_09_26"
DRIVE = "2011_09_26_drive_0001_sync"
STAMPS = [
    "2011-09-26 13:02:25.964389445",
    "2011-09-26 13:02:26.068001000",
    "2011-09-26 13:02:26.171000001",
    "2011-09-26 13:02:26.274999999",
]


def write_calib(date_dir: Path, width: int, height: int) -> None:
    """calib_cam_to_cam.txt with P_rect_02 (fx=40, fy=30, cx=23.5, cy=11.5) and a distinct P_rect_03."""
    date_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        f"S_rect_02: {width:.6e} {height:.6e}\n"
        "P_rect_02: 4.0e+01 0.0 2.35e+01 4.5e+01 0.0 3.0e+01 1.15e+01 -0.3 0.0 0.0 1.0 2.7e-03\n"
        f"S_rect_03: {width:.6e} {height:.6e}\n"
        "P_rect_03: 4.2e+01 0.0 2.25e+01 -3.3e+02 0.0 3.2e+01 1.05e+01 2.3 0.0 0.0 1.0 2.9e-03\n"
    )


def write_drive(
    root: Path,
    images_rgb: list[np.ndarray],
    drive: str = DRIVE,
    camera: str = "02",
    depths: dict[int, np.ndarray] | None = None,
    stamps: list[str] | None = None,
) -> Path:
    """Write ``images_rgb`` as ``root/DATE/drive/image_<camera>/data/%010d.png`` (+ calib, timestamps, GT)."""
    height, width = images_rgb[0].shape[:2]
    write_calib(root / DATE, width, height)
    image_dir = root / DATE / drive / f"image_{camera}" / "data"
    image_dir.mkdir(parents=True)
    for i, image in enumerate(images_rgb):
        assert cv2.imwrite(str(image_dir / f"{i:010d}.png"), image[..., ::-1])
    if stamps is None:
        stamps = [f"2011-09-26 13:02:{25 + i // 10:02d}.{i % 10}00000000" for i in range(len(images_rgb))]
    if stamps:
        (image_dir.parent / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    for i, depth in (depths or {}).items():
        depth_dir = root / DATE / drive / "proj_depth" / "groundtruth" / f"image_{camera}"
        depth_dir.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(depth_dir / f"{i:010d}.png"), np.round(depth * 256).astype(np.uint16))
    return image_dir


def random_images(count: int, height: int = 24, width: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_intrinsics_from_calib_per_camera(tmp_path):
    write_drive(tmp_path, random_images(2), camera="02")
    write_drive(tmp_path, random_images(2), camera="03", stamps=STAMPS[:2])
    left = KittiRawSequence(tmp_path, DATE, DRIVE, "02")
    right = KittiRawSequence(tmp_path, DATE, DRIVE, "03")
    assert left.intrinsics == Intrinsics(40.0, 30.0, 23.5, 11.5, 48, 24)
    assert right.intrinsics == Intrinsics(42.0, 32.0, 22.5, 10.5, 48, 24)
    assert left.name == f"{DATE}/{DRIVE}/image_02"


def test_timestamps_keep_nanoseconds(tmp_path):
    write_drive(tmp_path, random_images(4), stamps=STAMPS)
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    # numpy's datetime64[ns] parses the same text independently (as UTC), exact to the nanosecond.
    reference = np.array([np.datetime64(s.replace(" ", "T"), "ns").astype(np.int64) for s in STAMPS])
    assert sequence.timestamps.dtype == np.float64
    np.testing.assert_allclose(sequence.timestamps, reference / 1e9, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.diff(sequence.timestamps), np.diff(reference) / 1e9, rtol=0, atol=1e-6)
    # datetime's %f stops at microseconds; the 9-digit fraction must not be truncated or rejected.
    assert parse_kitti_timestamp("2011-09-26 13:02:26.274999999") % 1 == pytest.approx(0.274999999, abs=1e-6)
    assert len(sequence) == 4


def test_missing_timestamps_fall_back_to_10hz(tmp_path, caplog):
    write_drive(tmp_path, random_images(3), stamps=[])
    with caplog.at_level(logging.WARNING):
        sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    np.testing.assert_allclose(sequence.timestamps, [0.0, 0.1, 0.2])
    assert "timestamps.txt" in caplog.text


def test_malformed_timestamp_names_file_and_line(tmp_path):
    write_drive(tmp_path, random_images(2), stamps=[STAMPS[0], "2011-09-26 13:02:26,068"])
    with pytest.raises(ValueError, match=r"timestamps\.txt:2"):
        KittiRawSequence(tmp_path, DATE, DRIVE)


def test_image_is_rgb_in_file_number_order(tmp_path):
    images = random_images(3)
    image_dir = write_drive(tmp_path, images)
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    bgr_on_disk = cv2.imread(str(image_dir / "0000000001.png"))
    assert np.array_equal(sequence.image(1), bgr_on_disk[..., ::-1])
    for i, image in enumerate(images):
        out = sequence.image(i)
        assert out.dtype == np.uint8 and out.shape == (24, 48, 3)
        assert np.array_equal(out, image)


def test_jpeg_frames(tmp_path):
    image = np.zeros((24, 48, 3), np.uint8)
    image[:, :24] = (200, 30, 10)  # red on the left half, in RGB
    image_dir = write_drive(tmp_path, [image, image])
    for png in image_dir.glob("*.png"):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 100])
        png.unlink()
    out = KittiRawSequence(tmp_path, DATE, DRIVE).image(0)
    assert out.shape == (24, 48, 3)
    # Away from the colour edge (JPEG subsamples chroma), the decoded pixels are the RGB originals.
    assert np.abs(out[:, :16].astype(int) - (200, 30, 10)).max() <= 8
    assert out[:, 32:].max() <= 8


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_or_missing_file_is_frame_error_naming_it(tmp_path, suffix):
    image_dir = write_drive(tmp_path, random_images(3))
    if suffix == ".jpg":
        for png in image_dir.glob("*.png"):
            cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)))
            png.unlink()
    path = image_dir / f"0000000001{suffix}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    with pytest.raises(FrameError, match=str(path)):
        sequence.image(1)
    (image_dir / f"0000000002{suffix}").unlink()
    with pytest.raises(FrameError, match=f"0000000002{suffix}"):
        sequence.image(2)
    assert sequence.image(0).shape == (24, 48, 3)


def test_ground_truth_depth_is_uint16_over_256(tmp_path):
    depth = np.zeros((24, 48), np.float32)
    depth[3, 4], depth[10, 40] = 10.5, 80.0 + 1 / 256
    image_dir = write_drive(tmp_path, random_images(3), depths={1: depth})
    raw = cv2.imread(str(image_dir.parents[1] / "proj_depth/groundtruth/image_02/0000000001.png"), -1)
    assert raw.dtype == np.uint16 and raw[3, 4] == 2688 and raw[10, 40] == 20481
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    out = sequence.depth(1)
    assert out.dtype == np.float32
    assert out[3, 4] == 10.5 and out[10, 40] == pytest.approx(80.00390625)
    assert np.count_nonzero(out) == 2
    assert sequence.depth(0) is None


def test_poses(tmp_path):
    write_drive(tmp_path, random_images(2))
    pose_file = tmp_path / DATE / DRIVE / "poses_cam_02.txt"
    pose_file.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n0 -1 0 1.5 1 0 0 2 0 0 1 -3\n")
    pose = KittiRawSequence(tmp_path, DATE, DRIVE).pose(1)
    np.testing.assert_array_equal(pose, [[0, -1, 0, 1.5], [1, 0, 0, 2], [0, 0, 1, -3], [0, 0, 0, 1]])
    pose_file.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n")
    with pytest.raises(ValueError, match=r"poses_cam_02\.txt:2: expected 12 values"):
        KittiRawSequence(tmp_path, DATE, DRIVE)


def test_read_split(tmp_path):
    split = tmp_path / "train_files.txt"
    split.write_text(f"{DATE}/{DRIVE} 473 r\n\n{DATE}/{DRIVE} 5 l\n")
    assert read_split(split) == [(f"{DATE}/{DRIVE}", 473, "r"), (f"{DATE}/{DRIVE}", 5, "l")]
    for bad in [f"{DATE}/{DRIVE} 5 x", f"{DATE}/{DRIVE} five l", f"{DATE}/{DRIVE} 5", f"{DRIVE} 5 l"]:
        split.write_text(f"{DATE}/{DRIVE} 1 l\n{bad}\n")
        with pytest.raises(ValueError, match=r"train_files\.txt:2"):
            read_split(split)


def test_discover_and_open_sequences(tmp_path):
    write_drive(tmp_path, random_images(2), drive="2011_09_26_drive_0002_sync")
    write_drive(tmp_path, random_images(2), drive="2011_09_26_drive_0001_sync", camera="03")
    write_drive(tmp_path, random_images(2), drive="2011_09_26_drive_0001_sync", camera="02", stamps=[])
    (tmp_path / "README").write_text("not a date folder")
    names = [s.name for s in discover_kitti(tmp_path)]
    assert names == [
        f"{DATE}/2011_09_26_drive_0001_sync/image_02",
        f"{DATE}/2011_09_26_drive_0001_sync/image_03",
        f"{DATE}/2011_09_26_drive_0002_sync/image_02",
    ]
    assert [s.name for s in open_sequences(tmp_path, DataConfig())] == names
    with pytest.raises(ValueError, match="neither a KITTI raw root"):
        open_sequences(tmp_path / DATE / "2011_09_26_drive_0002_sync", DataConfig())
