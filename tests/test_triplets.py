"""Triplet dataset on tiny on-disk KITTI drives: contract, multi-scale K, flip, jitter, bad data, filters."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_kitti_raw import DATE, DRIVE, write_calib, write_drive

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.kitti_raw import KittiRawSequence, discover_kitti
from ssim_depth_core.data.triplets import TripletDataset, build_samples, collate_skipping, filter_static

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
    assert set(sample) == {"images", "images_aug", "K", "inv_K", "index"}
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


def test_collate_skipping_drops_unreadable_samples(tmp_path, caplog):
    image_dir = write_drive(tmp_path, random_images(5))
    broken = image_dir / "0000000003.png"
    broken.write_bytes(broken.read_bytes()[:100])
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    config = DataConfig(**EVAL)
    dataset = TripletDataset([sequence], build_samples([sequence], config.frame_ids), config, train=False)
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(len(dataset))]  # targets 1, 2, 3: 2 and 3 need frame 3
    assert samples[0] is not None and samples[1] is None and samples[2] is None
    assert "0000000003.png" in caplog.text
    batch = collate_skipping(samples)
    assert batch["skipped"] == 2
    assert batch["images"].shape == (1, 3, 3, 16, 32) and batch["index"].tolist() == [0]
    assert collate_skipping([None, None]) == {"skipped": 2}


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
    assert plain[0] is None  # without the cache the deleted files are missed


def test_image_size_must_match_intrinsics(tmp_path, caplog):
    sequence = drive(tmp_path, random_images(3))
    write_calib(tmp_path / DATE, 60, NATIVE_H)  # calibration for another resolution
    sequence = KittiRawSequence(tmp_path, DATE, DRIVE)
    with caplog.at_level(logging.WARNING):
        assert TripletDataset([sequence], [(0, 1)], DataConfig(**EVAL), train=False)[0] is None
    assert "intrinsics are for 60x32" in caplog.text


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
