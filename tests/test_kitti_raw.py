"""KITTI raw reader on a tiny on-disk drive in the real KITTI layout: frames, stamps, ground truth, poses,
the OXTS odometer and the stereo partner camera."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.kitti_layout import OXTS_FIELDS
from ssim_depth_core.data.kitti_raw import (
    KittiRawSequence,
    discover_kitti,
    parse_kitti_timestamp,
    read_split,
    stereo_transform_from_calib,
)
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.imaging import FrameError

DATE = "2011_09_26"
DRIVE = "2011_09_26_drive_0001_sync"
STAMPS = [
    "2011-09-26 13:02:25.964389445",
    "2011-09-26 13:02:26.068001000",
    "2011-09-26 13:02:26.171000001",
    "2011-09-26 13:02:26.274999999",
]


def write_calib(
    date_dir: Path, width: int, height: int, right_k: tuple[float, float, float, float] = (40, 30, 23.5, 11.5)
) -> None:
    """calib_cam_to_cam.txt with P_rect_02 (fx=40, fy=30, cx=23.5, cy=11.5; x offset +0.06 m from camera 00)
    and P_rect_03 (K = ``right_k``; x offset -0.48 m), y/z entries of column 4 non-zero as in KITTI's."""
    fx, fy, cx, cy = right_k
    date_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        f"S_rect_02: {width:.6e} {height:.6e}\n"
        "P_rect_02: 4.0e+01 0.0 2.35e+01 2.4 0.0 3.0e+01 1.15e+01 -0.3 0.0 0.0 1.0 2.7e-03\n"
        f"S_rect_03: {width:.6e} {height:.6e}\n"
        f"P_rect_03: {fx} 0.0 {cx} {-0.48 * fx} 0.0 {fy} {cy} 2.3 0.0 0.0 1.0 2.9e-03\n"
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
    other_drive = "2011_09_26_drive_0002_sync"  # camera 03 alone: no stereo pair to check against camera 02
    write_drive(tmp_path, random_images(2), camera="02")
    write_drive(tmp_path, random_images(2), drive=other_drive, camera="03", stamps=STAMPS[:2])
    write_calib(tmp_path / DATE, 48, 24, right_k=(42.0, 32.0, 22.5, 10.5))
    left = KittiRawSequence(tmp_path, DATE, DRIVE, "02")
    right = KittiRawSequence(tmp_path, DATE, other_drive, "03")
    assert left.intrinsics == Intrinsics(40.0, 30.0, 23.5, 11.5, 48, 24)
    assert right.intrinsics == Intrinsics(42.0, 32.0, 22.5, 10.5, 48, 24)
    assert left.name == f"{DATE}/{DRIVE}/image_02"
    assert left.stereo_transform is None and right.stereo_transform is None


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


def test_discover_and_open_sequences(tmp_path, caplog):
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
    assert "data.intrinsics" not in caplog.text
    given = DataConfig(intrinsics=[10.0, 10.0, 4.0, 3.0, 9, 7])
    with caplog.at_level(logging.WARNING):
        sequences = open_sequences(tmp_path, given)
    assert "data.intrinsics is not used" in caplog.text and str(tmp_path) in caplog.text
    assert sequences[0].intrinsics != Intrinsics.from_list(given.intrinsics)  # the calibration's, as said
    with pytest.raises(ValueError, match="neither a KITTI raw root"):
        open_sequences(tmp_path / DATE / "2011_09_26_drive_0002_sync", DataConfig())


def write_oxts(drive_dir: Path, stamps_s: list[float], velocities: list[tuple[float, float, float]]) -> Path:
    """``oxts/timestamps.txt`` (seconds after 13:02:25 on DATE) and one 30-field packet per stamp whose
    (vf, vl, vu) are ``velocities``; returns the packet folder."""
    data = drive_dir / "oxts" / "data"
    data.mkdir(parents=True)
    lines = []
    for stamp in stamps_s:
        nanoseconds = round(stamp * 1e9)
        lines.append(f"2011-09-26 13:02:{25 + nanoseconds // 10**9:02d}.{nanoseconds % 10**9:09d}\n")
    (drive_dir / "oxts" / "timestamps.txt").write_text("".join(lines))
    for index, velocity in enumerate(velocities):
        fields = [49.0, 8.4, 115.0] + [0.0] * 22 + [4, 10, 4, 4, 0]
        fields[OXTS_FIELDS.index("vf") : OXTS_FIELDS.index("vu") + 1] = velocity
        (data / f"{index:010d}.txt").write_text(" ".join(str(v) for v in fields) + "\n")
    return data


def ramp_velocities(count: int) -> list[tuple[float, float, float]]:
    """Speed i m/s at packet i (10 m/s^2 at 10 Hz), split differently over (vf, vl, vu) each time (a 3-4-5
    triangle, one component negative), so only the norm of all three gives the speed."""
    splits = [(0.6, 0.8, 0.0), (0.0, -0.6, 0.8), (0.8, 0.0, 0.6)]
    return [tuple(i * c for c in splits[i % 3]) for i in range(count)]


def test_odometer_integrates_the_oxts_speed(tmp_path, caplog):
    # Speed v = 10 t (m/s) at t = 0, 0.1, ...: the distance is 5 t^2 exactly, and trapezoids are exact for a
    # linear speed, so every frame's reading is known in closed form.
    write_drive(tmp_path, random_images(6))
    write_oxts(tmp_path / DATE / DRIVE, [0.1 * i for i in range(6)], ramp_velocities(6))
    with caplog.at_level(logging.INFO):
        sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    t = 0.1 * np.arange(6)
    np.testing.assert_allclose(sequence.odometer, 5 * t**2, rtol=0, atol=1e-5)
    assert sequence.travel(1, 4) == pytest.approx(0.8 - 0.05, abs=1e-5)
    assert sequence.travel(4, 1) == sequence.travel(1, 4)
    assert "odometry for 6 of 6 frames" in caplog.text


def test_odometer_is_interpolated_to_the_image_stamps(tmp_path):
    # Packets 50 ms after each image at a constant 2 m/s: the odometer reads 2 (t - 0.05) at image time t,
    # and frame 0 comes before the first packet (no odometry).
    write_drive(tmp_path, random_images(6))
    write_oxts(tmp_path / DATE / DRIVE, [0.1 * i + 0.05 for i in range(6)], [(2.0, 0.0, 0.0)] * 6)
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    np.testing.assert_allclose(sequence.odometer, [np.nan, 0.1, 0.3, 0.5, 0.7, 0.9], rtol=0, atol=1e-5)
    assert np.isnan(sequence.travel(0, 1))


def test_missing_and_garbled_oxts_packets_are_skipped(tmp_path, caplog):
    write_drive(tmp_path, random_images(14))
    data = write_oxts(tmp_path / DATE / DRIVE, [0.1 * i for i in range(14)], ramp_velocities(14))
    (data / "0000000003.txt").unlink()
    (data / "0000000004.txt").write_text(" ".join(["nan"] * 30) + "\n")
    for name in ("0000000007.txt", "0000000008.txt"):
        (data / name).unlink()
    (data / "0000000009.txt").write_bytes(b"\xff\xfe\x00garbage")
    (data / "0000000010.txt").write_text(" ".join(["1.0"] * 29) + "\n")  # a field short
    (data / "0000000011.txt").write_text("49.0 8.4 not-a-number\n")
    with caplog.at_level(logging.INFO):
        sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    # 5 t^2 where a packet remains; frames 3 and 4 interpolated between t = 0.2 (0.2 m) and t = 0.5
    # (1.25 m) across the 0.3 s gap; frames 7-11 lie in a 0.6 s gap (> 0.5 s): no odometry.
    expected = [0.0, 0.05, 0.2, 0.55, 0.9, 1.25, 1.8] + [np.nan] * 5 + [7.2, 8.45]
    np.testing.assert_allclose(sequence.odometer, expected, rtol=0, atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 7 of 14 OXTS packets" in warnings[0]
    for number in (3, 4, 7, 8, 9, 10, 11):
        assert f"{number:010d}.txt" in warnings[0]
    assert "odometry for 9 of 14 frames" in caplog.text


def test_no_odometry_without_oxts_or_timestamps(tmp_path, caplog):
    write_drive(tmp_path, random_images(3))
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    assert sequence.odometer is None and np.isnan(sequence.travel(0, 1))
    write_oxts(tmp_path / DATE / DRIVE, [0.0, 0.1, 0.2], [(1.0, 0.0, 0.0)] * 3)
    (tmp_path / DATE / DRIVE / "oxts" / "timestamps.txt").unlink()
    with caplog.at_level(logging.WARNING):
        assert KittiRawSequence(tmp_path, DATE, DRIVE).odometer is None
    assert "oxts/timestamps.txt" in caplog.text


def test_missing_files_and_mistimed_stamps_keep_their_slots_in_the_samples(tmp_path):
    """Frame i of a KITTI drive is file i whatever the stamps say: a missing file keeps its slot (its samples
    are skipped when read, and counted) and a repeated stamp moves no frame, so, unlike a bag's triplets
    across a gap in the stamps, every target with both neighbours stays a sample."""
    stamps = [f"2011-09-26 13:02:25.{i}00000000" for i in range(6)]
    stamps[3] = stamps[2]
    image_dir = write_drive(tmp_path, random_images(6), stamps=stamps)
    (image_dir / "0000000004.png").unlink()
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    assert len(sequence) == 6
    assert build_samples([sequence], [0, -1, 1]) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    with pytest.raises(FrameError, match=r"0000000004\.png"):
        sequence.image(4)


def test_stereo_pair_reads_the_partner_frame_with_the_calibrated_baseline(tmp_path):
    left_images, right_images = random_images(3, seed=1), random_images(3, seed=2)
    write_drive(tmp_path, left_images, camera="02")
    write_drive(tmp_path, right_images, camera="03")
    left = KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True)
    right = KittiRawSequence(tmp_path, DATE, DRIVE, "03", stereo=True)
    # P_rect_02[0, 3] / fx = 2.4 / 40 = +0.06 m, P_rect_03: -0.48 m -> x_03 = x_02 - 0.54 m
    expected = np.eye(4)
    expected[0, 3] = -0.54
    np.testing.assert_allclose(left.stereo_transform, expected, rtol=0, atol=1e-12)
    expected[0, 3] = 0.54
    np.testing.assert_allclose(right.stereo_transform, expected, rtol=0, atol=1e-12)
    for i in range(3):
        assert np.array_equal(left.stereo_image(i), right_images[i])
        assert np.array_equal(right.stereo_image(i), left_images[i])


def test_stereo_transform_of_the_real_kitti_calibration(tmp_path):
    """The published 2011_09_26 P_rect_02/03: (-339.5242 - 44.85728) / 721.5377 = -0.532725 m (KITTI's
    nominal 0.54 m baseline)."""
    calib = tmp_path / "calib_cam_to_cam.txt"
    calib.write_text(
        "S_rect_02: 1.242000e+03 3.750000e+02\n"
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
        "1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03\n"
        "S_rect_03: 1.242000e+03 3.750000e+02\n"
        "P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 "
        "1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03\n"
    )
    transform = stereo_transform_from_calib(calib, "02", "03")
    assert transform[0, 3] == pytest.approx(-0.532725, abs=1e-6)
    np.testing.assert_array_equal(np.delete(transform, 3, axis=1), np.eye(4)[:, :3])
    np.testing.assert_array_equal(transform[1:, 3], [0, 0, 1])


def test_stereo_pair_with_different_intrinsics_is_an_error_naming_the_calibration(tmp_path):
    write_drive(tmp_path, random_images(2), camera="02")
    write_drive(tmp_path, random_images(2), camera="03")
    write_calib(tmp_path / DATE, 48, 24, right_k=(40.0, 30.0, 23.6, 11.5))  # cx 0.1 px off
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt: P_rect_02.*P_rect_03.*not one rectified"):
        KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True)
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt: P_rect_02.*P_rect_03.*not one rectified"):
        open_sequences(tmp_path, DataConfig(stereo=True))


def test_monocular_training_neither_reads_nor_checks_the_partner_camera(tmp_path):
    """With data.stereo false, a partner calibration that is no rectified pair (cx 0.5 px off) or missing
    does not stop monocular training: the partner is not used."""
    write_drive(tmp_path, random_images(2), camera="02")
    write_drive(tmp_path, random_images(2), camera="03")
    write_calib(tmp_path / DATE, 48, 24, right_k=(40.0, 30.0, 24.0, 11.5))
    sequences = open_sequences(tmp_path, DataConfig(stereo=False))
    assert [s.name for s in sequences] == [f"{DATE}/{DRIVE}/image_02", f"{DATE}/{DRIVE}/image_03"]
    assert sequences[0].intrinsics == Intrinsics(40.0, 30.0, 23.5, 11.5, 48, 24)
    assert sequences[1].intrinsics == Intrinsics(40.0, 30.0, 24.0, 11.5, 48, 24)
    assert all(s.stereo_transform is None for s in sequences)
    with pytest.raises(FrameError, match="no stereo partner camera"):
        sequences[0].stereo_image(0)
    calib = tmp_path / DATE / "calib_cam_to_cam.txt"
    calib.write_text("".join(line for line in calib.read_text().splitlines(True) if "_03" not in line))
    assert KittiRawSequence(tmp_path, DATE, DRIVE, "02").stereo_transform is None
    with pytest.raises(ValueError, match=r"calib_cam_to_cam\.txt.*P_rect_03"):
        KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True)


def test_unreadable_or_missing_stereo_partner_frames_are_frame_errors(tmp_path):
    write_drive(tmp_path, random_images(4), camera="02")
    right_dir = write_drive(tmp_path, random_images(4), camera="03")
    (right_dir / "0000000001.png").unlink()
    truncated = right_dir / "0000000002.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    assert cv2.imwrite(str(right_dir / "0000000003.png"), np.zeros((24, 40, 3), np.uint8))
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True)
    with pytest.raises(FrameError, match=r"image_03/data/0000000001\.png"):
        sequence.stereo_image(1)
    with pytest.raises(FrameError, match=str(truncated)):
        sequence.stereo_image(2)
    with pytest.raises(
        FrameError, match=r"0000000003\.png: stereo partner frame is 40x24, expected .* 48x24"
    ):
        sequence.stereo_image(3)
    assert sequence.stereo_image(0).shape == (24, 48, 3)


def test_no_partner_folder_no_stereo(tmp_path):
    write_drive(tmp_path, random_images(2), camera="02")
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True)
    assert sequence.stereo_transform is None
    with pytest.raises(FrameError, match="no stereo partner camera"):
        sequence.stereo_image(0)


def test_partner_frames_may_be_jpeg(tmp_path):
    image = np.zeros((24, 48, 3), np.uint8)
    image[:, 24:] = (20, 200, 60)
    write_drive(tmp_path, [image, image], camera="02")
    right_dir = write_drive(tmp_path, [image, image], camera="03")
    for png in right_dir.glob("*.png"):
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 100])
        png.unlink()
    out = KittiRawSequence(tmp_path, DATE, DRIVE, "02", stereo=True).stereo_image(1)
    assert np.abs(out[:, 32:].astype(int) - (20, 200, 60)).max() <= 8 and out[:, :16].max() <= 8


def test_oxts_packet_stamped_out_of_order_is_skipped(tmp_path, caplog):
    # packet 2 repeats packet 1's stamp: dropped, the rest integrate 2 m/s over 0, 0.1 and 0.3 s
    write_drive(tmp_path, random_images(4))
    write_oxts(tmp_path / DATE / DRIVE, [0.0, 0.1, 0.1, 0.3], [(2.0, 0.0, 0.0)] * 4)
    with caplog.at_level(logging.WARNING):
        sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    np.testing.assert_allclose(sequence.odometer, [0.0, 0.2, 0.4, 0.6], rtol=0, atol=1e-5)
    assert "skipped 1 of 4 OXTS packets" in caplog.text
    assert "0000000002.txt (stamp not after the previous packet's)" in caplog.text
