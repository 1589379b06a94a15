"""Ground truth from raw LiDAR: velodyne scans projected through the KITTI calibration (data/lidar.py),
checked by hand, against pykitti's reading of the calibration, and against the synthetic drives' exact
depth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pykitti
import pytest
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data import synthetic as syn
from ssim_depth_core.data.kitti_layout import write_velodyne
from ssim_depth_core.data.kitti_raw import KittiRawSequence
from ssim_depth_core.data.lidar import project_to_depth, read_velodyne, velodyne_depth, velodyne_projection
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.triplets import TripletDataset, build_samples
from ssim_depth_core.imaging import FrameError

SEED, FRAMES, WIDTH, HEIGHT = 3, 3, 416, 128


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lidar")
    return syn.generate_dataset(
        root, SEED, drives=1, frames=FRAMES, width=WIDTH, height=HEIGHT, bag="none", progress=False
    )


@pytest.fixture(scope="module")
def drive() -> syn.SyntheticDrive:
    return syn.SyntheticDrive(syn.DriveSpec.for_dataset(SEED, 0, 1, FRAMES), WIDTH, HEIGHT)


def _drive_dir(dataset: Path, drive: syn.SyntheticDrive) -> Path:
    return dataset / drive.date / drive.drive_folder


def test_projection_keeps_the_nearest_point_and_drops_points_behind_or_outside():
    projection = np.array([[10.0, 0.0, 2.0, 0.0], [0.0, 10.0, 1.5, 0.0], [0.0, 0.0, 1.0, 0.0]])  # K [I | 0]
    points = np.array(
        [
            [0.0, 0.0, 4.0, 0.9],  # u = 2, v = 1.5 -> round half to even: (2, 2)
            [0.05, 0.0, 2.0, 0.1],  # u = 2.25 -> 2, v = 1.5 -> 2: the same pixel, nearer: kept
            [0.0, 0.0, 3.0, 0.5],  # (2, 2) again, farther than 2.0: dropped
            [0.2, -0.1, 1.0, 0.5],  # u = 4, v = 0.5 -> 0: (4, 0)
            [0.0, 0.0, -2.0, 0.5],  # behind the camera
            [1.0, 0.0, 1.0, 0.5],  # u = 12: outside the 5 x 4 image
        ]
    )
    depth = project_to_depth(points, projection, width=5, height=4)
    expected = np.zeros((4, 5), np.float32)
    expected[2, 2], expected[0, 4] = 2.0, 1.0
    np.testing.assert_array_equal(depth, expected)
    # the published Eigen ground truth's one-pixel shift: (4, 0) falls off the top, (2, 2) moves to (1, 1)
    shifted = project_to_depth(points, projection, width=5, height=4, matlab_offset=True)
    expected = np.zeros((4, 5), np.float32)
    expected[1, 1] = 2.0
    np.testing.assert_array_equal(shifted, expected)


def test_calibration_and_scans_read_as_pykitti_reads_them(dataset: Path, drive: syn.SyntheticDrive, tmp_path):
    """P_rect_02 R_rect_00 [R | T] against pykitti's matrices, with a non-identity rectifying rotation."""
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("image_*", "proj_depth"))
    calib = copy / drive.date / "calib_cam_to_cam.txt"
    rotation = Rotation.from_euler("xyz", [0.01, -0.02, 0.005]).as_matrix()
    rectify = "R_rect_00: " + " ".join(f"{v:.12e}" for v in rotation.ravel())
    lines = [rectify if line.startswith("R_rect_00:") else line for line in calib.read_text().splitlines()]
    calib.write_text("\n".join(lines) + "\n")
    kitti = pykitti.raw(str(copy), drive.date, drive.drive_folder.split("_")[-2])
    projection, width, height = velodyne_projection(copy / drive.date, "02")
    reference = kitti.calib.P_rect_20 @ kitti.calib.R_rect_00 @ kitti.calib.T_cam0_velo_unrect
    np.testing.assert_allclose(projection, reference, rtol=1e-9, atol=1e-9)
    assert (width, height) == (WIDTH, HEIGHT)
    scan = _drive_dir(copy, drive) / "velodyne_points" / "data" / "0000000001.bin"
    np.testing.assert_array_equal(read_velodyne(scan), kitti.get_velo(1))


def test_points_on_the_exact_depth_project_back_onto_it(dataset: Path, drive: syn.SyntheticDrive, tmp_path):
    """Pixel centres back-projected with the exact depth and moved into the velodyne frame (pykitti's
    transform), written as a scan and projected again: every pixel gets its depth back (float32 scan)."""
    kitti = pykitti.raw(str(dataset), drive.date, drive.drive_folder.split("_")[-2])
    depth = drive.depth(1).astype(np.float64)
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    camera = np.linalg.inv(kitti.calib.K_cam2) @ np.stack([u * z, v * z, z])
    velo = np.linalg.inv(kitti.calib.T_cam2_velo) @ np.vstack([camera, np.ones_like(z)])
    scan = tmp_path / "0000000001.bin"
    write_velodyne(scan, np.column_stack([velo[:3].T, np.zeros_like(z)]))
    projected = velodyne_depth(scan, dataset / drive.date, "02")
    np.testing.assert_array_equal(projected > 0, depth > 0)
    np.testing.assert_allclose(projected, depth, rtol=1e-5)


def test_the_rendered_scan_lands_on_the_exact_depth(dataset: Path, drive: syn.SyntheticDrive):
    """The synthetic velodyne scan projected into image_02 against the renderer's exact depth.

    A point lands within half a pixel of its pixel's centre, so on a surface its depth lies between the exact
    depths of the pixel's 3 x 3 neighbourhood: at least 97% of the LiDAR pixels do, within 1%. The others
    see, past an occluding edge, what the camera (0.27 m ahead of the LiDAR, 0.08 m below it) does not.
    At the pixel itself the median relative error is under 0.4%.
    """
    for index in range(FRAMES):
        scan = _drive_dir(dataset, drive) / "velodyne_points" / "data" / f"{index:010d}.bin"
        lidar = velodyne_depth(scan, dataset / drive.date)
        exact = drive.depth(index).astype(np.float64)
        hit = lidar > 0
        assert hit.sum() > 5000
        low = ndimage.minimum_filter(np.where(exact > 0, exact, np.inf), 3, mode="nearest")[hit]
        high = ndimage.maximum_filter(np.where(exact > 0, exact, -np.inf), 3, mode="nearest")[hit]
        between = (lidar[hit] >= 0.99 * low) & (lidar[hit] <= 1.01 * high)
        assert between.mean() >= 0.97, between.mean()
        both = hit & (exact > 0)
        relative = np.abs(lidar[both] - exact[both]) / exact[both]
        assert np.median(relative) < 0.004, np.median(relative)


def test_kitti_sequences_take_ground_truth_from_the_chosen_source(dataset: Path, drive: syn.SyntheticDrive):
    name = (drive.date, drive.drive_folder, "02")
    annotated = KittiRawSequence(dataset, *name).depth(1)
    np.testing.assert_allclose(annotated, drive.depth(1), atol=1 / 256)  # the 16-bit PNG
    velodyne = KittiRawSequence(dataset, *name, depth_source="velodyne").depth(1)
    scan = _drive_dir(dataset, drive) / "velodyne_points" / "data" / "0000000001.bin"
    np.testing.assert_array_equal(velodyne, velodyne_depth(scan, dataset / drive.date))
    # config -> sources -> triplets: the sparse ground truth reaches the batch, nearest-resized
    config = DataConfig(height=64, width=208, depth_source="velodyne", num_workers=0)
    sequences = open_sequences(dataset, config)
    samples = build_samples(sequences, config.frame_ids)
    sample = TripletDataset(sequences, samples, config, train=False)[0]
    assert sample["depth_gt"].shape == (1, 64, 208)
    torch.testing.assert_close(sample["depth_gt"][0], torch.from_numpy(velodyne[::2, ::2]))
    with pytest.raises(ValueError, match="depth_source"):
        KittiRawSequence(dataset, *name, depth_source="lidar")


def test_velodyne_is_the_fallback_where_no_annotated_map_exists(dataset: Path, drive, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    drive_dir = _drive_dir(copy, drive)
    (drive_dir / "proj_depth" / "groundtruth" / "image_02" / "0000000002.png").unlink()
    auto = KittiRawSequence(copy, drive.date, drive.drive_folder)
    scan = drive_dir / "velodyne_points" / "data" / "0000000002.bin"
    np.testing.assert_array_equal(auto.depth(2), velodyne_depth(scan, copy / drive.date))
    assert KittiRawSequence(copy, drive.date, drive.drive_folder, depth_source="annotated").depth(2) is None
    scan.write_bytes(scan.read_bytes()[:-4])  # a truncated scan names itself
    with pytest.raises(FrameError, match="0000000002.bin"):
        auto.depth(2)
    scan.unlink()
    assert auto.depth(2) is None
