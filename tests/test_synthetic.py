"""Synthetic KITTI-like drives: read back by real-KITTI tools (pykitti, rosbags), self-consistent geometry,
odometry and the stereo partner camera."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import cv2
import numpy as np
import pykitti
import pytest
import torch
from rosbags.highlevel import AnyReader
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data import synthetic as syn
from ssim_depth_core.data.bagio import (
    KITTI_CAMERA_INFO_TOPIC,
    KITTI_IMAGE_TOPIC,
    KITTI_RIGHT_CAMERA_INFO_TOPIC,
    KITTI_RIGHT_IMAGE_TOPIC,
    ODOMETRY_TOPIC,
    CameraBagWriter,
)
from ssim_depth_core.data.kitti_raw import KittiRawSequence, read_split
from ssim_depth_core.data.synthetic.textures import _periodic_component, _photo
from ssim_depth_core.geometry import ray_grid, warp
from ssim_depth_core.imaging import FrameError

SEED, FRAMES, WIDTH, HEIGHT = 7, 8, 208, 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return syn.generate_dataset(
        root, SEED, drives=1, frames=FRAMES, width=WIDTH, height=HEIGHT, progress=False, stereo=True
    )


@pytest.fixture(scope="module")
def drive() -> syn.SyntheticDrive:
    """The same drive the dataset fixture wrote (single drive = held out = static apart from the ego car)."""
    return syn.SyntheticDrive(syn.DriveSpec.for_dataset(SEED, 0, 1, FRAMES), WIDTH, HEIGHT, stereo=True)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def warp_check(
    intrinsics: Intrinsics,
    target: np.ndarray,
    depth: np.ndarray,
    source: np.ndarray,
    source_depth: np.ndarray,
    transform: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``source`` into the target view with the target's GT ``depth`` and ``transform`` (target camera
    -> source camera): the per-pixel mean absolute colour error (1, 1, H, W), and the pixels to judge it on
    (valid depth, landing inside the source, and visible there: the source's own depth at the landing point
    agrees with the moved point's z within 1 %)."""
    K, inv_K = intrinsics.K()[None], intrinsics.inv_K()[None]
    height, width = depth.shape
    depth_t = torch.from_numpy(depth)[None, None]
    T = torch.from_numpy(transform).float()[None]
    warped = warp(as_tensor(source), depth_t, T, K, inv_K)
    points = depth_t * ray_grid(inv_K, height, width)
    moved = T[:, :3, :3] @ points.flatten(2) + T[:, :3, 3:]
    landed = warp(torch.from_numpy(source_depth)[None, None], depth_t, T, K, inv_K)
    visible = (depth_t > 0) & ((landed - moved[:, 2:].view_as(depth_t)).abs() < 0.01 * depth_t)
    pixels = (K @ moved)[:, :2] / moved[:, 2:]
    inside = (
        (pixels[:, 0] > 1) & (pixels[:, 0] < width - 2) & (pixels[:, 1] > 1) & (pixels[:, 1] < height - 2)
    )
    error = (warped - as_tensor(target)).abs().mean(1, keepdim=True)
    return error, visible & inside.view_as(depth_t)


@pytest.fixture(scope="module")
def kitti(dataset: Path, drive: syn.SyntheticDrive) -> pykitti.raw:
    return pykitti.raw(str(dataset), drive.date, "0001")


def test_pykitti_reads_calibration_and_sensors(kitti: pykitti.raw, drive: syn.SyntheticDrive) -> None:
    assert len(kitti) == FRAMES
    # KITTI's P_rect_02 (1242 x 375) resized: focal lengths scale, pixel centres map c -> (c + 0.5) s - 0.5
    sx, sy = WIDTH / 1242, HEIGHT / 375
    expected = Intrinsics(
        721.5377 * sx, 721.5377 * sy, 610.0593 * sx - 0.5, 173.354 * sy - 0.5, WIDTH, HEIGHT
    )
    assert drive.intrinsics == pytest.approx(expected)
    np.testing.assert_allclose(kitti.calib.K_cam2, expected.matrix, rtol=1e-6)
    np.testing.assert_allclose(kitti.calib.P_rect_20[:, :3], expected.matrix, rtol=1e-6)
    assert kitti.calib.P_rect_20[0, 3] / kitti.calib.P_rect_20[0, 0] == pytest.approx(0.06, rel=1e-5)
    assert kitti.get_cam2(0).size == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(np.asarray(kitti.get_cam2(3)), drive.image(3))
    scan = kitti.get_velo(0)
    assert scan.ndim == 2 and scan.shape[1] == 4 and scan.shape[0] > 10_000
    # ground returns next to the car lie 1.73 m below the velodyne (KITTI's mounting height)
    near = np.hypot(scan[:, 0], scan[:, 1]) < 12
    assert np.percentile(scan[near, 2], 5) == pytest.approx(-(syn.CAMERA_HEIGHT + 0.08), abs=0.03)


def test_pykitti_oxts_poses_reproduce_the_trajectory(kitti: pykitti.raw, dataset: Path) -> None:
    """pykitti's Mercator OXTS poses, moved to camera 02 with pykitti's own extrinsics, are our poses file."""
    T_imu_cam = np.linalg.inv(kitti.calib.T_cam2_imu)
    cams = np.stack([o.T_w_imu @ T_imu_cam for o in kitti.oxts])
    relative = np.linalg.inv(cams[0]) @ cams
    drive_dir = dataset / kitti.drive.split("_drive")[0] / kitti.drive
    written = np.loadtxt(drive_dir / "poses_cam_02.txt").reshape(-1, 3, 4)
    np.testing.assert_allclose(relative[:, :3, :3], written[:, :, :3], atol=1e-6)
    np.testing.assert_allclose(relative[:, :3, 3], written[:, :, 3], atol=1e-4)
    steps = np.linalg.norm(np.diff(written[:, :, 3], axis=0), axis=1)
    assert np.all((steps > 0.45) & (steps < 1.6))  # ~0.5-1.5 m per frame
    # OXTS velocities agree with pykitti's positions (central differences at 10 Hz)
    positions = np.stack([o.T_w_imu[:3, 3] for o in kitti.oxts])
    velocity = (positions[2:] - positions[:-2]) / 0.2
    packets = [o.packet for o in kitti.oxts[1:-1]]
    np.testing.assert_allclose([[p.ve, p.vn, p.vu] for p in packets], velocity, atol=1e-3)
    np.testing.assert_allclose(
        [np.hypot(p.vf, p.vl) for p in packets], np.hypot(*velocity[:, :2].T), atol=1e-3
    )
    assert all(p.au == pytest.approx(9.81, abs=1.0) for p in packets)  # specific force: gravity reaction
    stamps = [t.timestamp() for t in kitti.timestamps]
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-5)


def test_ground_truth_png_encodes_renderer_depth(dataset: Path, drive: syn.SyntheticDrive) -> None:
    drive_dir = dataset / drive.date / drive.drive_folder
    for index in (0, FRAMES - 1):
        path = drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{index:010d}.png"
        png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == (HEIGHT, WIDTH)
        depth = drive.depth(index)
        np.testing.assert_array_equal(png == 0, depth == 0)
        assert np.abs(png / 256.0 - depth).max() <= 0.5 / 256 + 1e-6
        sky = drive.render(index).ids == -1
        assert sky.any() and np.all(depth[sky] == 0)  # sky is invalid, like KITTI
        assert (depth > 0).mean() > 0.5


def test_renderer_depth_matches_open3d_raycasting(drive: syn.SyntheticDrive) -> None:
    """Independent reference: Open3D's BVH ray caster on the same boxes (as meshes) and ground."""
    o3d = pytest.importorskip("open3d")
    frame = 2
    boxes = drive.scene.frame_boxes(frame)
    scene = o3d.t.geometry.RaycastingScene()
    for centre, rotation, half in zip(
        boxes.centre.numpy(), boxes.rotation.numpy(), boxes.half.numpy(), strict=True
    ):
        mesh = o3d.geometry.TriangleMesh.create_box(*(2 * half)).translate(-half)
        mesh.rotate(rotation.astype(np.float64), center=(0, 0, 0)).translate(centre.astype(np.float64))
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    ground = o3d.geometry.TriangleMesh()
    ground.vertices = o3d.utility.Vector3dVector(
        [[-1e3, -1e3, 0], [1e3, -1e3, 0], [1e3, 1e3, 0], [-1e3, 1e3, 0]]
    )
    ground.triangles = o3d.utility.Vector3iVector([[0, 1, 2], [0, 2, 3]])
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(ground))

    pose = drive.T_world_cam[frame]
    rays = ray_grid(drive.intrinsics.inv_K(torch.float64), HEIGHT, WIDTH).reshape(3, -1).numpy()
    directions = (pose[:3, :3] @ rays).T
    query = np.hstack([np.broadcast_to(pose[:3, 3], directions.shape), directions]).astype(np.float32)
    t_o3d = scene.cast_rays(o3d.core.Tensor(query))["t_hit"].numpy().reshape(HEIGHT, WIDTH)
    _, depth, _ = syn.render_camera(drive.scene, frame, pose, drive.intrinsics, antialias=False)
    both = np.isfinite(t_o3d) & np.isfinite(depth) & (t_o3d < syn.GROUND_FAR)
    assert both.mean() > 0.8
    assert np.array_equal(np.isfinite(t_o3d) & (t_o3d < 300), np.isfinite(depth) & (depth < 300))
    relative = np.abs(depth[both] - t_o3d[both]) / t_o3d[both]
    assert np.median(relative) < 1e-5 and np.mean(relative < 1e-3) > 0.995


def test_consecutive_frames_agree_through_depth_and_poses(drive: syn.SyntheticDrive) -> None:
    """Warp frame t+1 into frame t with t's GT depth and the GT poses: small photometric error."""
    errors, errors_wrong_depth = [], []
    for t in range(0, FRAMES - 1, 2):
        target, source, depth = drive.image(t), drive.image(t + 1), drive.depth(t)
        transform = np.linalg.inv(drive.pose(t + 1)) @ drive.pose(t)
        error, valid = warp_check(drive.intrinsics, target, depth, source, drive.depth(t + 1), transform)
        assert valid.float().mean() > 0.5
        errors.append(error[valid].mean())
        wrong, _ = warp_check(drive.intrinsics, target, depth * 1.3, source, drive.depth(t + 1), transform)
        errors_wrong_depth.append(wrong[valid].mean())
    error, wrong_error = float(torch.stack(errors).mean()), float(torch.stack(errors_wrong_depth).mean())
    assert error < 0.03, error
    assert error < 0.6 * wrong_error, (error, wrong_error)


def test_odometer_from_oxts_matches_the_camera_path(dataset: Path, drive: syn.SyntheticDrive) -> None:
    """The KITTI reader's odometer (the OXTS speed integrated over time) against the ground-truth camera
    displacement of every step, within 1 %: the OXTS speed is the IMU's, and camera 02 sits 1.08 m ahead of,
    0.26 m right of and 0.72 m above the IMU, so the car's pitch and yaw changes move it slightly more or
    less than the IMU (up to 0.4 % per step on the drives we measured); the OXTS velocities are central
    differences of the poses, one-sided at the ends (< 0.3 %)."""
    sequence = KittiRawSequence(dataset, drive.date, drive.drive_folder, "02")
    steps = np.linalg.norm(np.diff(drive.T_world_cam[:, :3, 3], axis=0), axis=1)
    assert np.all(steps > 0.4)  # the held-out drive never stops
    travel = [sequence.travel(i, i + 1) for i in range(FRAMES - 1)]
    np.testing.assert_allclose(travel, steps, rtol=0.01)
    # the drive's own odometer is the camera's path length, exactly
    np.testing.assert_allclose([drive.travel(i, i + 1) for i in range(FRAMES - 1)], steps, rtol=1e-12)
    assert drive.travel(FRAMES - 1, 0) == pytest.approx(steps.sum(), rel=1e-12)


def test_stereo_calibration_has_the_kitti_baseline(
    kitti: pykitti.raw, dataset: Path, drive: syn.SyntheticDrive
) -> None:
    # pykitti's own reading of P_rect_02 / P_rect_03: the distance between the colour cameras' centres
    assert kitti.calib.b_rgb == pytest.approx(0.54, abs=1e-6)
    expected = np.eye(4)
    expected[0, 3] = -0.54  # camera 03 is 0.54 m right of camera 02: x_03 = x_02 - 0.54
    np.testing.assert_allclose(drive.stereo_transform, expected, rtol=0, atol=1e-12)
    for camera, sign in (("02", 1.0), ("03", -1.0)):
        sequence = KittiRawSequence(dataset, drive.date, drive.drive_folder, camera, stereo=True)
        np.testing.assert_allclose(sequence.stereo_transform[0, 3], sign * -0.54, rtol=0, atol=1e-6)
    # the rendered partner camera is where the transform says: T_world_03 = T_world_02 @ inv(T_03<-02)
    np.testing.assert_allclose(
        drive.T_world_camera(syn.STEREO_CAMERA),
        drive.T_world_cam @ np.linalg.inv(drive.stereo_transform),
        rtol=0,
        atol=1e-12,
    )


def test_stereo_partner_files_are_the_rendered_camera_03(dataset: Path, drive: syn.SyntheticDrive) -> None:
    left = KittiRawSequence(dataset, drive.date, drive.drive_folder, "02", stereo=True)
    right = KittiRawSequence(dataset, drive.date, drive.drive_folder, "03", stereo=True)
    np.testing.assert_array_equal(right.timestamps, left.timestamps)
    for index in (0, FRAMES - 1):
        rendered = drive.render(index, syn.STEREO_CAMERA)
        assert np.array_equal(drive.stereo_image(index), rendered.rgb)
        assert np.array_equal(left.stereo_image(index), rendered.rgb)
        assert np.array_equal(right.image(index), rendered.rgb)
        assert np.array_equal(right.stereo_image(index), drive.image(index))
        depth = right.depth(index)
        np.testing.assert_array_equal(depth == 0, rendered.depth == 0)
        assert np.abs(depth - rendered.depth).max() <= 0.5 / 256 + 1e-6
    assert np.abs(drive.stereo_image(3).astype(int) - drive.image(3).astype(int)).mean() > 5
    # each poses file's world is its own camera at frame 0, so poses_03 = S poses_02 S^-1 (S: 02 -> 03)
    S = drive.stereo_transform
    for index in range(FRAMES):
        np.testing.assert_allclose(right.pose(index), S @ left.pose(index) @ np.linalg.inv(S), atol=1e-6)


def test_camera_03_warped_into_camera_02_reproduces_it(drive: syn.SyntheticDrive) -> None:
    """Camera 03's image, sampled where camera 02's GT-depth points land after the stereo transform, is
    camera 02's image wherever the point is visible to both; the mirrored rig (partner on the left) is not."""
    mirrored = drive.stereo_transform.copy()
    mirrored[0, 3] *= -1
    for index in (0, FRAMES // 2, FRAMES - 1):
        target, depth = drive.image(index), drive.depth(index)
        partner = drive.render(index, syn.STEREO_CAMERA)
        error, valid = warp_check(
            drive.intrinsics, target, depth, partner.rgb, partner.depth, drive.stereo_transform
        )
        assert valid.float().mean() > 0.75
        assert (error[valid] < 0.05).float().mean() > 0.95
        wrong, _ = warp_check(drive.intrinsics, target, depth, partner.rgb, partner.depth, mirrored)
        assert error[valid].mean() < 0.2 * wrong[valid].mean()


def test_stereo_off_has_no_partner_camera(tmp_path: Path) -> None:
    drive = syn.SyntheticDrive(syn.DriveSpec.for_dataset(SEED, 0, 1, 4), 32, 16)
    assert drive.stereo_transform is None and drive.odometer is not None
    with pytest.raises(FrameError, match="no stereo partner camera"):
        drive.stereo_image(0)
    with pytest.raises(ValueError, match=r"no camera '03', expected 02 \(stereo is off\)"):
        drive.render(0, syn.STEREO_CAMERA)


def test_lidar_lands_on_ground_truth_depth(kitti: pykitti.raw, drive: syn.SyntheticDrive) -> None:
    """Velodyne points projected with the calib files hit pixels whose GT depth agrees (KITTI's own check)."""
    for index in (0, FRAMES // 2):
        scan = kitti.get_velo(index)
        points = kitti.calib.T_cam2_velo @ np.hstack([scan[:, :3], np.ones((len(scan), 1))]).T
        # pykitti's T_cam2_velo already includes camera 02's 6 cm offset, so project with K alone
        projected = kitti.calib.K_cam2 @ points[:3]
        z = projected[2]
        front = z > 1.0
        u, v = projected[0, front] / z[front], projected[1, front] / z[front]
        inside = (u >= 0) & (u <= WIDTH - 1) & (v >= 0) & (v <= HEIGHT - 1)
        depth = drive.depth(index)
        sampled = ndimage.map_coordinates(depth, [v[inside], u[inside]], order=1)
        nearest = depth[np.round(v[inside]).astype(int), np.round(u[inside]).astype(int)]
        ok = (sampled > 0) & (nearest > 0)
        assert ok.sum() > 500
        relative = np.abs(sampled[ok] - z[front][inside][ok]) / z[front][inside][ok]
        assert np.median(relative) < 0.002, np.median(relative)


def test_same_seed_same_bytes_other_seed_differs(
    dataset: Path, drive: syn.SyntheticDrive, tmp_path: Path
) -> None:
    again = syn.generate_dataset(
        tmp_path, SEED, drives=1, frames=FRAMES, width=WIDTH, height=HEIGHT, bag="none", progress=False
    )
    first = dataset / drive.date / drive.drive_folder
    second = again / drive.date / drive.drive_folder
    for relative in (
        "image_02/data/0000000005.png",
        "proj_depth/groundtruth/image_02/0000000005.png",
        "velodyne_points/data/0000000005.bin",
        "oxts/data/0000000005.txt",
        "poses_cam_02.txt",
    ):
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert (first / "image_03").is_dir() and not (second / "image_03").exists()  # stereo only when asked
    assert not (second / "poses_cam_03.txt").exists()
    other = syn.SyntheticDrive(syn.DriveSpec.for_dataset(SEED + 1, 0, 1, FRAMES), WIDTH, HEIGHT)
    assert other.date != drive.date
    assert np.abs(other.image(5).astype(int) - drive.image(5).astype(int)).mean() > 10


def test_each_seed_has_its_own_date_and_other_seeds_are_refused(tmp_path: Path) -> None:
    """Seeds 0 and 3650 used to share 2001-01-01 (seed % 3650): the same drive folders, one dataset replacing
    the other's in a shared root. Dates by hand: 2001-01-01 + seed days (2004 and 2008 are leap years, so
    2011-01-01 is day 3652); seeds 0..3649 keep the dates they always had."""

    def date(seed: int) -> str:
        return syn.SyntheticDrive(syn.DriveSpec.for_dataset(seed, 0, 1, 3), 32, 16).date

    expected = {0: "2001_01_01", 1: "2001_01_02", 365: "2002_01_01", 3649: "2010_12_29", 3650: "2010_12_30"}
    assert {seed: date(seed) for seed in expected} == expected
    assert date(3651) == "2010_12_31"  # the last day before the real KITTI release's year
    for seed in (-1, 3652, 7300):
        with pytest.raises(ValueError, match=rf"synthetic data seed must be in \[0, 3652\).*, got {seed}$"):
            date(seed)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 3652\)"):
        syn.generate_dataset(tmp_path, 3652, drives=1, frames=3, width=32, height=16, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_bag_holds_the_images_and_camera_info(dataset: Path, drive: syn.SyntheticDrive) -> None:
    stamps = (
        (dataset / drive.date / drive.drive_folder / "image_02" / "timestamps.txt").read_text().split("\n")
    )
    expected_ns = []
    for line in stamps[:-1]:
        whole, fraction = line.split(".")
        moment = dt.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
        expected_ns.append(int(moment.timestamp()) * 10**9 + int(fraction))
    with AnyReader([dataset / "bags" / drive.drive_folder]) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert topics[KITTI_IMAGE_TOPIC].msgcount == FRAMES
        assert topics[KITTI_CAMERA_INFO_TOPIC].msgcount == FRAMES
        images = [
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([topics[KITTI_IMAGE_TOPIC]])
        ]
        info = reader.deserialize(
            next(reader.messages([topics[KITTI_CAMERA_INFO_TOPIC]]))[2], "sensor_msgs/msg/CameraInfo"
        )
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images] == expected_ns
    first = images[3]
    assert (first.encoding, first.width, first.height, first.step) == ("rgb8", WIDTH, HEIGHT, 3 * WIDTH)
    assert first.header.frame_id == "camera_color_left"
    np.testing.assert_array_equal(first.data.reshape(HEIGHT, WIDTH, 3), drive.image(3))
    np.testing.assert_allclose(info.k.reshape(3, 3), drive.intrinsics.matrix)
    np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], drive.intrinsics.matrix)
    assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (WIDTH, HEIGHT)


def test_bag_holds_the_right_camera_and_the_ground_truth_motion(
    dataset: Path, drive: syn.SyntheticDrive
) -> None:
    with AnyReader([dataset / "bags" / drive.drive_folder]) as reader:
        topics = {c.topic: c for c in reader.connections}

        def read(topic: str) -> list:
            return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([topics[topic]])]

        right, right_info, odometry = (
            read(t) for t in (KITTI_RIGHT_IMAGE_TOPIC, KITTI_RIGHT_CAMERA_INFO_TOPIC, ODOMETRY_TOPIC)
        )
        left = read(KITTI_IMAGE_TOPIC)
    assert len(right) == len(right_info) == len(odometry) == FRAMES
    np.testing.assert_array_equal(right[3].data.reshape(HEIGHT, WIDTH, 3), drive.stereo_image(3))
    # ROS CameraInfo of the right camera of a rectified pair: P = [K | (-fx * baseline, 0, 0)]
    P = right_info[0].p.reshape(3, 4)
    np.testing.assert_allclose(P[:, :3], drive.intrinsics.matrix)
    assert P[0, 3] == pytest.approx(-drive.intrinsics.fx * 0.54, rel=1e-9)

    def stamp(message: object) -> int:
        return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec

    assert [stamp(m) for m in odometry] == [stamp(m) for m in left] == [stamp(m) for m in right]
    # the odometry pose is the ground-truth IMU pose (quaternion read back by scipy, independently)
    positions = [[m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z] for m in odometry]
    np.testing.assert_allclose(positions, drive.T_world_imu[:, :3, 3], rtol=0, atol=1e-9)
    quaternions = [
        [
            m.pose.pose.orientation.x,
            m.pose.pose.orientation.y,
            m.pose.pose.orientation.z,
            m.pose.pose.orientation.w,
        ]
        for m in odometry
    ]
    rotations = Rotation.from_quat(quaternions).as_matrix()
    np.testing.assert_allclose(rotations, drive.T_world_imu[:, :3, :3], rtol=0, atol=1e-9)


def test_sqlite3_bag_round_trip(tmp_path: Path) -> None:
    intrinsics = kl.kitti_intrinsics(8, 4)
    frames = [np.full((4, 8, 3), i * 40, dtype=np.uint8) for i in range(3)]
    with CameraBagWriter(tmp_path / "bag", intrinsics, storage="sqlite3") as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, 1_000_000_000 + i * 100_000_000)
    assert list((tmp_path / "bag").glob("*.db3"))
    with AnyReader([tmp_path / "bag"]) as reader:
        image_conn = [c for c in reader.connections if c.topic == KITTI_IMAGE_TOPIC]
        got = [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(image_conn)]
    assert [t for t, _ in got] == [1_000_000_000, 1_100_000_000, 1_200_000_000]
    np.testing.assert_array_equal(got[2][1].data.reshape(4, 8, 3), frames[2])
    with pytest.raises(ValueError, match="unknown rosbag2 storage 'zip'"):
        CameraBagWriter(tmp_path / "other", intrinsics, storage="zip")


def test_split_files(dataset: Path, drive: syn.SyntheticDrive) -> None:
    splits = dataset / "splits" / "synthetic"
    expected = [f"{drive.date}/{drive.drive_folder} {i} l" for i in range(1, FRAMES - 1)]
    for name in ("train", "val", "test"):  # one drive: every split is that drive
        assert (splits / f"{name}_files.txt").read_text().splitlines() == expected


def test_standstill_and_lead_vehicle() -> None:
    """The auto-masking cases: a stop (identical frames), a car moving with the camera (static in image)."""
    drive = syn.SyntheticDrive(syn.DriveSpec(11, 0, 24, lead_vehicle=True, standstill=True), 104, 32)
    steps = np.linalg.norm(np.diff(drive.poses[:, :3, 3], axis=0), axis=1)
    still = np.flatnonzero(steps == 0)
    assert len(still) >= 3
    assert np.array_equal(drive.image(int(still[0])), drive.image(int(still[0]) + 1))
    packets = drive.oxts()
    assert np.abs(packets[still[1], 6:11]).max() < 1e-9  # velocities vn ve vf vl vu are zero while stopped
    moving = np.flatnonzero(steps > 0.4)
    a, b = int(moving[0]), int(moving[0]) + 1
    lead = [np.isin(drive.render(i).ids, list(drive.dynamic_ids)) for i in (a, b)]
    assert lead[0].sum() > 20
    iou = (lead[0] & lead[1]).sum() / (lead[0] | lead[1]).sum()
    assert iou > 0.8  # the lead car hardly moves in the image while the street does
    static = ~(lead[0] | lead[1])
    assert np.mean(drive.depth(a)[static] != drive.depth(b)[static]) > 0.5


def test_texture_lookup_matches_scipy_bilinear_with_wrap() -> None:
    """Level 0 and 1 lookups equal scipy's wrapped bilinear interpolation of the (downsampled) texture."""
    rng = np.random.default_rng(0)
    textures = rng.random((2, 16, 16, 3)).astype(np.float32)
    atlas = syn.build_mip_atlas(textures)
    u = torch.tensor(rng.uniform(-40, 40, 200), dtype=torch.float32)
    v = torch.tensor(rng.uniform(-40, 40, 200), dtype=torch.float32)
    texture = torch.ones(200, dtype=torch.long)
    for level in (0, 1):
        got = syn.sample_texture(atlas, texture, u, v, torch.full((200,), float(level))).numpy()
        image = textures[1].reshape(16 >> level, 2**level, 16 >> level, 2**level, 3).mean(axis=(1, 3))
        coords = [v.numpy() / 2**level - 0.5, u.numpy() / 2**level - 0.5]
        for channel in range(3):
            expected = ndimage.map_coordinates(image[..., channel], coords, order=1, mode="grid-wrap")
            np.testing.assert_allclose(got[channel], expected, atol=2e-5)
    halfway = syn.sample_texture(atlas, texture, u, v, torch.full((200,), 0.25)).numpy()
    lower = syn.sample_texture(atlas, texture, u, v, torch.zeros(200)).numpy()
    upper = syn.sample_texture(atlas, texture, u, v, torch.ones(200)).numpy()
    np.testing.assert_allclose(halfway, 0.75 * lower + 0.25 * upper, atol=1e-6)


def test_periodic_component_tiles_seamlessly() -> None:
    image = _photo("camera")[:128, :128]
    periodic = _periodic_component(image)

    def seam(x: np.ndarray) -> float:  # jump across the wrap-around border vs. a typical neighbour step
        return np.abs(x[:, 0] - x[:, -1]).mean() / np.abs(np.diff(x, axis=1)).mean()

    assert seam(periodic) < 0.25 * seam(image)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bag must be one of"):
        syn.generate_dataset(tmp_path, 0, drives=1, frames=3, width=32, height=16, bag="zip")
    with pytest.raises(ValueError, match="frames must be >= 3"):
        syn.generate_dataset(tmp_path, 0, drives=1, frames=2)
    with pytest.raises(ValueError, match="drives must be >= 1"):
        syn.generate_dataset(tmp_path, 0, drives=0)


def test_the_rendering_bench_renders_on_every_call(drive: syn.SyntheticDrive, bench_script) -> None:
    """bench/synthetic.py times ``render`` with its per-camera cache emptied before each call: the same frame
    twice is rendered twice (a new, equal frame), not served from the cache."""
    work = bench_script("synthetic").uncached_render(drive)
    first, second = work(1), work(1)
    assert first is not second
    np.testing.assert_array_equal(first.rgb, second.rgb)
    assert drive.render(1) is second  # the cache holds the last rendering, as render() keeps it


def test_datasets_of_two_seeds_in_one_folder_share_the_split_files(tmp_path: Path) -> None:
    """Each seed's drives join the split files (sorted, no repeats when a seed is written again); another
    seed's entries whose drive folder is gone are dropped."""
    for seed, again in ((8, False), (7, False), (8, True)):
        syn.generate_dataset(tmp_path, seed=seed, drives=1, frames=3, width=64, height=32, bag="none",
                             progress=False, overwrite=again)  # fmt: skip
    expected = [
        ("2001_01_08/2001_01_08_drive_0001_sync", 1, "l"),
        ("2001_01_09/2001_01_09_drive_0001_sync", 1, "l"),
    ]
    for split in ("train", "val", "test"):
        assert read_split(tmp_path / "splits" / "synthetic" / f"{split}_files.txt") == expected
    shutil.rmtree(tmp_path / "2001_01_08")
    syn.generate_dataset(
        tmp_path, seed=8, drives=1, frames=3, width=64, height=32, bag="none", progress=False, overwrite=True
    )
    assert read_split(tmp_path / "splits" / "synthetic" / "test_files.txt") == expected[1:]


def test_a_broken_link_where_synth_writes_is_refused_before_rendering(tmp_path: Path):
    (tmp_path / "bags").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"bags is a symbolic link to .*elsewhere, which does not exist"):
        syn.generate_dataset(tmp_path, seed=3, drives=1, frames=3, width=64, height=32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["bags"]  # no half-made drive folder


def test_rendering_a_seed_again_into_its_folder_needs_overwrite_and_replaces_all_its_drives(tmp_path: Path):
    """Refused before anything changes; with --overwrite, one drive in place of two leaves no second one."""
    options = {"seed": 9, "frames": 3, "width": 64, "height": 32, "progress": False}
    syn.generate_dataset(tmp_path, drives=2, **options)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(
        ValueError,
        match=r"already holds seed 9's dataset \(2 drive\(s\) and 2 bag\(s\), e\.g\. .*: pass --overwrite",
    ):
        syn.generate_dataset(tmp_path, drives=1, **options)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    syn.generate_dataset(tmp_path, drives=1, overwrite=True, **options)
    assert [p.name for p in (tmp_path / "2001_01_10").glob("*_sync")] == ["2001_01_10_drive_0001_sync"]
    assert [p.name for p in (tmp_path / "bags").iterdir()] == ["2001_01_10_drive_0001_sync"]
