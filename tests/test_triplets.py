"""Triplet dataset on tiny on-disk KITTI drives and in-memory sequences: contract, multi-scale K, flip,
jitter, bad data, filters, travelled distances, the stereo partner and its rig."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from test_kitti_raw import DATE, DRIVE, write_calib, write_drive

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.kitti_raw import KittiRawSequence, discover_kitti
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.data.triplets import (
    SkippedSample,
    TripletDataset,
    build_samples,
    collate_skipping,
    filter_static,
    flip_transform,
)
from ssim_depth_core.imaging import FrameError

NATIVE_H, NATIVE_W = 32, 64  # exactly twice the network input, so INTER_AREA is a 2x2 block mean
EVAL = {"height": 16, "width": 32}
# calib of test_kitti_raw: fx=40, fy=30, cx=23.5, cy=11.5 at 64x32, scaled by hand to 32x16 / 2**s with
# pixel centres at integers: f' = f * r, c' = (c + 0.5) * r - 0.5 for a size ratio r.
K_BY_SCALE = [
    (20.0, 15.0, 11.5, 5.5),
    (10.0, 7.5, 5.5, 2.5),
    (5.0, 3.75, 2.5, 1.0),
    (2.5, 1.875, 1.0, 0.25),
]
# Mirrored: u -> w - 1 - u at every scale (equal to mirroring at 64x32, cx = 39.5, then scaling).
FLIPPED_CX = [32 - 1 - 11.5, 16 - 1 - 5.5, 8 - 1 - 2.5, 4 - 1 - 1.0]


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (NATIVE_H, NATIVE_W, 3), dtype=np.uint8) for _ in range(count)]


def half(image: np.ndarray) -> torch.Tensor:
    """Reference 2x2 block mean of an H x W x 3 uint8 image -> (3, H/2, W/2) in [0, 1]."""
    blocks = image.astype(np.float64).reshape(NATIVE_H // 2, 2, NATIVE_W // 2, 2, 3).mean(axis=(1, 3))
    return torch.from_numpy(blocks / 255.0).permute(2, 0, 1).float()


def drive(tmp_path, images, **kwargs) -> KittiRawSequence:
    write_drive(tmp_path, images, **kwargs)
    return KittiRawSequence(tmp_path, DATE, kwargs.get("drive", DRIVE), kwargs.get("camera", "02"))


def test_sample_contract_and_frame_order(tmp_path):
    images = random_images(5)
    sequence = drive(tmp_path, images)
    config = DataConfig(**EVAL)
    dataset = TripletDataset([sequence], build_samples([sequence], config.frame_ids), config, train=False)
    assert len(dataset) == 3  # targets 1, 2, 3 have both neighbours
    sample = dataset[1]  # target frame 2
    assert set(sample) == {"images", "images_aug", "K", "inv_K", "travel", "index"}
    assert sample["travel"].shape == (2,) and sample["travel"].dtype == torch.float32
    assert sample["images"].shape == (3, 3, 16, 32) and sample["images"].dtype == torch.float32
    assert sample["K"].shape == (4, 3, 3) and sample["inv_K"].shape == (4, 3, 3)
    assert sample["index"] == 1
    for slot, frame in enumerate([2, 1, 3]):  # frame_ids [0, -1, 1]
        torch.testing.assert_close(sample["images"][slot], half(images[frame]), atol=0.51 / 255, rtol=0)
    assert torch.equal(sample["images_aug"], sample["images"])  # no augmentation in eval mode


def test_resize_is_area_average(tmp_path):
    """At a 4x reduction, area interpolation is the 4x4 block mean (bilinear would sample 2x2 centres)."""
    images = [np.random.default_rng(i).integers(0, 256, (64, 128, 3), dtype=np.uint8) for i in range(3)]
    sequence = drive(tmp_path, images)
    sample = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=False)[0]
    blocks = images[1].astype(np.float64).reshape(16, 4, 32, 4, 3).mean(axis=(1, 3)) / 255.0
    reference = torch.from_numpy(blocks).permute(2, 0, 1).float()
    torch.testing.assert_close(sample["images"][0], reference, atol=0.51 / 255, rtol=0)


def test_intrinsics_per_scale(tmp_path):
    sequence = drive(tmp_path, random_images(3))
    config = DataConfig(**EVAL)
    sample = TripletDataset([sequence], [(0, 1)], config, train=False)[0]
    for scale, (fx, fy, cx, cy) in enumerate(K_BY_SCALE):
        expected = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float32)
        torch.testing.assert_close(sample["K"][scale], expected)
        torch.testing.assert_close(
            sample["inv_K"][scale] @ sample["K"][scale], torch.eye(3), atol=1e-6, rtol=0
        )


def test_depth_gt_resized_nearest(tmp_path):
    depth = np.zeros((NATIVE_H, NATIVE_W), np.float32)
    depth[4, 10], depth[20, 62], depth[5, 11] = (
        12.5,
        80.0,
        3.0,
    )  # (5, 11) is not on the nearest-neighbour grid
    sequence = drive(tmp_path, random_images(4), depths={1: depth})
    config = DataConfig(**EVAL)
    dataset = TripletDataset([sequence], [(0, 1), (0, 2)], config, train=False)
    depth_gt = dataset[0]["depth_gt"]
    assert depth_gt.shape == (1, 16, 32) and depth_gt.dtype == torch.float32
    assert torch.equal(depth_gt[0], torch.from_numpy(depth[::2, ::2]))
    assert depth_gt[0, 2, 5] == 12.5 and depth_gt[0, 10, 31] == 80.0 and torch.count_nonzero(depth_gt) == 2
    assert "depth_gt" not in dataset[1]
    # In one batch, a frame without ground truth gets an all-invalid (zero) map.
    batch = collate_skipping([dataset[0], dataset[1]])
    assert batch["depth_gt"].shape == (2, 1, 16, 32)
    assert torch.equal(batch["depth_gt"][0], depth_gt) and not batch["depth_gt"][1].any()


def test_flip_mirrors_images_depth_and_cx(tmp_path):
    depth = np.zeros((NATIVE_H, NATIVE_W), np.float32)
    depth[6, 2] = 7.0
    sequence = drive(tmp_path, random_images(3), depths={1: depth})
    plain = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=False)[0]
    config = DataConfig(**EVAL, flip_probability=1.0, jitter_probability=0.0)
    flipped = TripletDataset([sequence], [(0, 1)], config, train=True)[0]
    assert torch.equal(flipped["images"], plain["images"].flip(-1))
    assert torch.equal(flipped["images_aug"], flipped["images"])
    assert flipped["depth_gt"][0, 3, 32 - 1 - 1] == 7.0
    assert torch.equal(flipped["depth_gt"], plain["depth_gt"].flip(-1))
    torch.testing.assert_close(flipped["K"][:, 0, 2], torch.tensor(FLIPPED_CX))
    others = torch.ones(3, 3, dtype=torch.bool)
    others[0, 2] = False
    assert torch.equal(flipped["K"][:, others], plain["K"][:, others])
    torch.testing.assert_close(
        flipped["inv_K"] @ flipped["K"], torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0
    )


def test_jitter_same_for_every_frame_and_only_on_network_inputs(tmp_path):
    image = random_images(1)[0]
    sequence = drive(tmp_path, [image] * 3)
    plain = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=False)[0]
    config = DataConfig(**EVAL, flip_probability=0.0, jitter_probability=1.0)
    sample = TripletDataset([sequence], [(0, 1)], config, train=True)[0]
    assert torch.equal(sample["images"], plain["images"])  # the loss targets are untouched
    aug = sample["images_aug"]
    assert (aug - sample["images"]).abs().max() > 0.02
    assert aug.min() >= 0 and aug.max() <= 1
    # Identical frames (contrast included, whose mean is per frame) stay identical after the jitter.
    assert torch.equal(aug[0], aug[1]) and torch.equal(aug[0], aug[2])


def test_jitter_maps_equal_pixels_equally_across_frames(tmp_path):
    """Frames are shifted views of one scene: after brightness/saturation/hue jitter (contrast, which depends
    on each frame's mean, off), the same scene pixel must have the same colour in every frame."""
    scene = np.random.default_rng(3).integers(0, 256, (NATIVE_H, NATIVE_W + 8), dtype=np.uint8)
    scene = np.stack([scene, np.roll(scene, 5, axis=1), scene[::-1]], axis=2)
    images = [np.ascontiguousarray(scene[:, 4 * k : 4 * k + NATIVE_W]) for k in range(3)]
    sequence = drive(tmp_path, images)
    config = DataConfig(**EVAL, contrast=0.0, flip_probability=0.0, jitter_probability=1.0)
    sample = TripletDataset([sequence], [(0, 1)], config, train=True)[0]
    images_in, aug = sample["images"], sample["images_aug"]
    # Frame k+1 is frame k shifted by 4 native = 2 network pixels; slots are frames 1, 0, 2.
    torch.testing.assert_close(images_in[2][..., :-2], images_in[0][..., 2:], atol=0, rtol=0)
    torch.testing.assert_close(aug[2][..., :-2], aug[0][..., 2:], atol=1e-6, rtol=0)
    torch.testing.assert_close(aug[0][..., :-2], aug[1][..., 2:], atol=1e-6, rtol=0)
    assert (aug - images_in).abs().max() > 0.02


def test_augmentation_reproducible_per_seed_epoch_index(tmp_path):
    sequence = drive(tmp_path, random_images(3))
    config = DataConfig(**EVAL, jitter_probability=1.0)

    def draw(seed: int, epoch: int) -> torch.Tensor:
        dataset = TripletDataset([sequence], [(0, 1)], config, train=True, seed=seed)
        dataset.set_epoch(epoch)
        return dataset[0]["images_aug"]

    assert torch.equal(draw(0, 0), draw(0, 0))
    assert not torch.equal(draw(0, 0), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(1, 0))


def test_augmentation_follows_the_epoch_in_persistent_dataloader_workers(tmp_path):
    """A worker holds its own copy of the dataset, which set_epoch in the main process never reaches: the
    trainer's sampler passes the epoch with each index, so epoch 1 is augmented as epoch 1, not as epoch 0."""
    from torch.utils.data import DataLoader

    from ssim_depth_core.trainer import ResumableSampler

    sequence = drive(tmp_path, random_images(4))
    config = DataConfig(**EVAL, jitter_probability=1.0)
    dataset = TripletDataset([sequence], [(0, 1), (0, 2)], config, train=True, seed=3)
    sampler = ResumableSampler(dataset, num_replicas=1, rank=0, shuffle=False, seed=3)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True)
    drawn = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        (batch,) = list(loader)
        drawn.append(batch["images_aug"])
    fresh = TripletDataset([sequence], [(0, 1), (0, 2)], config, train=True, seed=3)  # the main process's
    for epoch in (0, 1):
        fresh.set_epoch(epoch)
        expected = torch.stack([fresh[i]["images_aug"] for i in range(2)])
        torch.testing.assert_close(drawn[epoch], expected, atol=0, rtol=0)
    assert not torch.equal(drawn[0], drawn[1])


def test_collate_skipping_drops_unreadable_samples(tmp_path, caplog):
    image_dir = write_drive(tmp_path, random_images(5))
    broken = image_dir / "0000000003.png"
    broken.write_bytes(broken.read_bytes()[:100])
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    config = DataConfig(**EVAL)
    dataset = TripletDataset([sequence], build_samples([sequence], config.frame_ids), config, train=False)
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(len(dataset))]  # targets 1, 2, 3: 2 and 3 need frame 3
    assert isinstance(samples[0], dict)
    assert [(s.source, s.reason) for s in samples[1:]] == [(sequence.name, "unreadable frame")] * 2
    assert all("0000000003.png" in s.message for s in samples[1:])
    # the first skip of a source and reason is a warning naming the file, the next ones are only counted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0000000003.png" in warnings[0]
    batch = collate_skipping(samples)
    assert batch["skipped"] == samples[1:]
    assert batch["images"].shape == (1, 3, 3, 16, 32) and batch["index"].tolist() == [0]
    assert collate_skipping(samples[1:]) == {"skipped": samples[1:]}


def test_cached_frames_are_decoded_once_and_give_the_same_samples(tmp_path):
    images = random_images(5)
    image_dir = write_drive(tmp_path, images)
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    samples = build_samples([sequence], [0, -1, 1])
    plain = TripletDataset([sequence], samples, DataConfig(**EVAL), train=True, seed=3)
    cached = TripletDataset([sequence], samples, DataConfig(**EVAL, cache_frames=True), train=True, seed=3)
    expected = [plain[i] for i in range(len(plain))]
    first = [cached[i] for i in range(len(cached))]
    for path in image_dir.glob("*.png"):  # from here on only the cache has the frames
        path.unlink()
    second = [cached[i] for i in range(len(cached))]
    for reference, one, two in zip(expected, first, second, strict=True):
        for key in ("images", "images_aug", "K"):
            assert torch.equal(one[key], reference[key]) and torch.equal(two[key], reference[key])
    assert isinstance(plain[0], SkippedSample)  # without the cache the deleted files are missed


def test_image_size_must_match_intrinsics(tmp_path, caplog):
    sequence = drive(tmp_path, random_images(3))
    write_calib(tmp_path / DATE, 60, NATIVE_H)  # calibration for another resolution
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    with caplog.at_level(logging.WARNING):
        skipped = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=False)[0]
    assert skipped.reason == "frame size is not the calibrated one"
    assert "intrinsics are for 60x32" in skipped.message and "intrinsics are for 60x32" in caplog.text


def test_static_filter_drops_parked_triplets(tmp_path, caplog):
    still = random_images(1, seed=5)[0]
    images = [still, still, still] + random_images(3, seed=6)
    sequence = drive(tmp_path, images)
    samples = build_samples([sequence], [0, -1, 1])
    assert samples == [(0, 1), (0, 2), (0, 3), (0, 4)]
    with caplog.at_level(logging.INFO):
        kept = filter_static([sequence], samples, [0, -1, 1], threshold=0.01, size=(16, 8))
    assert kept == [(0, 2), (0, 3), (0, 4)]  # only target 1 has both neighbours identical to it
    assert "dropped 1 static" in caplog.text
    config = DataConfig(**EVAL, static_threshold=0.01)
    assert TripletDataset([sequence], samples, config).samples == kept
    assert len(TripletDataset([sequence], samples, DataConfig(**EVAL))) == 4


def test_build_samples_from_split(tmp_path, caplog):
    write_drive(tmp_path, random_images(4), camera="02")
    write_drive(tmp_path, random_images(4), camera="03")
    sequences = discover_kitti(tmp_path)
    split = tmp_path / "train_files.txt"
    split.write_text(f"{DATE}/{DRIVE} 2 l\n{DATE}/{DRIVE} 1 r\n{DATE}/{DRIVE} 3 l\n")
    with caplog.at_level(logging.WARNING):
        assert build_samples(sequences, [0, -1, 1], split) == [(0, 2), (1, 1)]
    assert "dropped 1 entries" in caplog.text  # frame 3 is the last one: no +1 neighbour
    split.write_text(f"{DATE}/{DATE}_drive_0099_sync 2 l\n")
    with pytest.raises(ValueError, match="drive_0099_sync camera 02"):
        build_samples(sequences, [0, -1, 1], split)


def test_config_validation(tmp_path):
    sequence = drive(tmp_path, random_images(3))
    with pytest.raises(ValueError, match="frame_ids must start with the target frame 0"):
        TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL, frame_ids=[-1, 0, 1]))
    with pytest.raises(ValueError, match="multiples of 8, got 20x32"):
        TripletDataset([sequence], [(0, 1)], DataConfig(height=20, width=32))


# KITTI's rectified rig: camera 02 -> camera 03 is 0.54 m to the right, so points move 0.54 m left (x < 0).
KITTI_STEREO_T = np.array([[1, 0, 0, -0.54], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


class MemorySequence(FrameSequence):
    """A sequence held in memory, with optional odometer and stereo partner frames (None: unreadable)."""

    def __init__(self, images, odometer=None, partner=None, stereo_transform=None, name="memory"):
        self.name = name
        self.intrinsics = Intrinsics(40.0, 30.0, 23.5, 11.5, NATIVE_W, NATIVE_H)
        self.timestamps = np.arange(len(images), dtype=np.float64) / 10
        self.images = images
        self.odometer = None if odometer is None else np.asarray(odometer, dtype=np.float64)
        self.partner = partner
        self.stereo_transform = stereo_transform

    def image(self, index: int) -> np.ndarray:
        return self.images[index]

    def stereo_image(self, index: int) -> np.ndarray:
        if self.partner is None or self.partner[index] is None:
            raise FrameError(f"{self.name}: no stereo partner frame {index}")
        return self.partner[index]


def test_travel_is_the_odometer_distance_to_each_source():
    sequence = MemorySequence(random_images(5), odometer=[10.0, 11.5, 14.0, 14.5, math.nan])
    config = DataConfig(**EVAL, frame_ids=[0, -1, 1])
    dataset = TripletDataset([sequence], [(0, 1), (0, 2), (0, 3)], config, train=False)
    # target 1: |10 - 11.5|, |14 - 11.5|; target 2: |11.5 - 14|, |14.5 - 14|; target 3: frame 4 is unknown
    assert dataset[0]["travel"].tolist() == [1.5, 2.5]
    assert dataset[1]["travel"].tolist() == [2.5, 0.5]
    assert dataset[2]["travel"][0] == 0.5 and math.isnan(dataset[2]["travel"][1])
    batch = collate_skipping([dataset[0], dataset[2]])
    assert batch["travel"].shape == (2, 2) and batch["travel"].dtype == torch.float32
    # Offsets further away; without an odometer every distance is unknown.
    far = TripletDataset([sequence], [(0, 2)], DataConfig(**EVAL, frame_ids=[0, -2, 1]), train=False)
    assert far[0]["travel"].tolist() == [4.0, 0.5]
    blind = TripletDataset([MemorySequence(random_images(3))], [(0, 1)], config, train=False)
    assert torch.isnan(blind[0]["travel"]).all()


def test_stereo_partner_is_the_last_image_with_the_rig_transform():
    images, partner = random_images(3, seed=1), random_images(3, seed=2)
    sequence = MemorySequence(images, partner=partner, stereo_transform=KITTI_STEREO_T)
    sample = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL, stereo=True), train=False)[0]
    assert sample["images"].shape == sample["images_aug"].shape == (4, 3, 16, 32)
    for slot, image in enumerate([images[1], images[0], images[2], partner[1]]):
        torch.testing.assert_close(sample["images"][slot], half(image), atol=0.51 / 255, rtol=0)
    assert sample["stereo_T"].dtype == torch.float32
    assert torch.equal(sample["stereo_T"], torch.from_numpy(KITTI_STEREO_T).float())

    # Stereo only (Monodepth2's S): the target and its partner, no temporal source, no distance.
    only = TripletDataset([sequence], [(0, 0)], DataConfig(**EVAL, frame_ids=[0], stereo=True), train=False)
    sample = only[0]
    assert sample["images"].shape == (2, 3, 16, 32) and sample["travel"].shape == (0,)
    torch.testing.assert_close(sample["images"][1], half(partner[0]), atol=0.51 / 255, rtol=0)
    with pytest.raises(ValueError, match="static_threshold.*no temporal source"):
        TripletDataset(
            [sequence], [(0, 0)], DataConfig(**EVAL, frame_ids=[0], stereo=True, static_threshold=0.1)
        )


def _project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) camera points -> (N, 2) pixels."""
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, written out here as an independent reference."""
    angle = np.linalg.norm(axis_angle)
    k = axis_angle / angle
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def test_a_flip_mirrors_the_stereo_rig():
    """Mirrored images need the mirrored rig: a scene point seen at pixel (u, v) in the target and at
    (u_s, v_s) in the partner appears at (W-1-u, v) and (W-1-u_s, v_s) in the flipped pair, and the flipped
    sample's K and stereo_T must take one to the other."""
    rig = np.eye(4)
    rig[:3, :3] = _rotation(np.array([0.02, -0.03, 0.01]))
    rig[:3, 3] = [-0.54, 0.03, -0.02]
    sequence = MemorySequence(random_images(3), partner=random_images(3, seed=4), stereo_transform=rig)
    plain = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL, stereo=True), train=False)[0]
    config = DataConfig(**EVAL, stereo=True, flip_probability=1.0, jitter_probability=0.0)
    flipped = TripletDataset([sequence], [(0, 1)], config, train=True)[0]
    assert torch.equal(flipped["images"], plain["images"].flip(-1))  # the partner's frame is mirrored too

    width = EVAL["width"]
    K, K_flip = plain["K"][0].double().numpy(), flipped["K"][0].double().numpy()
    T, T_flip = plain["stereo_T"].double().numpy(), flipped["stereo_T"].double().numpy()
    points = np.random.default_rng(0).uniform([-6, -2, 4], [6, 2, 30], (50, 3))
    target = _project(K, points)
    partner = _project(K, points @ T[:3, :3].T + T[:3, 3])
    # Back-project the mirrored target pixels at the points' depths, move them with the flipped rig.
    mirrored = np.stack([width - 1 - target[:, 0], target[:, 1], np.ones(len(points))], axis=1)
    rays = mirrored @ np.linalg.inv(K_flip).T
    seen = _project(K_flip, rays * points[:, 2:] @ T_flip[:3, :3].T + T_flip[:3, 3])
    expected = np.stack([width - 1 - partner[:, 0], partner[:, 1]], axis=1)
    np.testing.assert_allclose(seen, expected, atol=1e-4)
    # The partner moves to the other side: the x translation changes sign (0.54 m to the left of the target).
    assert T_flip[0, 3] == pytest.approx(0.54) and T_flip[1:3, 3] == pytest.approx(T[1:3, 3])
    np.testing.assert_allclose(flip_transform(flip_transform(rig)), rig, atol=1e-15)


def test_a_missing_partner_frame_skips_the_sample(caplog):
    partner = random_images(4, seed=3)
    partner[2] = None
    partner[1] = partner[1][:, :-2]  # a partner frame of another size than the intrinsics
    sequence = MemorySequence(random_images(4), partner=partner, stereo_transform=KITTI_STEREO_T, name="cam")
    dataset = TripletDataset([sequence], [(0, 1), (0, 2)], DataConfig(**EVAL, stereo=True), train=False)
    with caplog.at_level(logging.WARNING):
        skipped = [dataset[0], dataset[1]]
    assert [s.reason for s in skipped] == [
        "stereo partner frame size is not the calibrated one",
        "unreadable stereo partner frame",
    ]
    assert "cam stereo partner frame 1: image is 62x32" in caplog.text
    assert "no stereo partner frame 2" in caplog.text


def test_stereo_needs_a_partner_for_every_sequence_it_trains_on():
    paired = MemorySequence(random_images(3), partner=random_images(3), stereo_transform=KITTI_STEREO_T)
    lonely = MemorySequence(random_images(3), name="2011_09_26/drive_0001_sync/image_02")
    config = DataConfig(**EVAL, stereo=True)
    with pytest.raises(ValueError, match="drive_0001_sync/image_02 have no stereo partner camera"):
        TripletDataset([paired, lonely], [(0, 1), (1, 1)], config)
    assert len(TripletDataset([paired, lonely], [(0, 1)], config)) == 1  # only the sequences used count


class CountingSequence(MemorySequence):
    """A memory sequence with ground truth that counts its loads."""

    def __init__(self, images):
        super().__init__(images)
        self.loads = []

    def depth(self, index: int) -> np.ndarray:
        self.loads.append(index)
        return np.full((NATIVE_H, NATIVE_W), 5.0, np.float32)


def test_ground_truth_is_loaded_only_when_asked():
    sequence = CountingSequence(random_images(3))
    skipped = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=True, load_depth_gt=False)
    assert "depth_gt" not in skipped[0] and sequence.loads == []
    loaded = TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=True)  # loads by default
    assert torch.equal(loaded[0]["depth_gt"], torch.full((1, 16, 32), 5.0)) and sequence.loads == [1]
