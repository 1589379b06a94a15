"""bench/near_range.py: the network-resolution peer on hand-made depth maps, and a run's record against
``ssim-depth evaluate``'s errors by range."""

from __future__ import annotations

import numpy as np
import pytest

from ssim_depth_core.apps.evaluate import evaluate_model


@pytest.fixture(scope="module")
def near_range(bench_script):
    return bench_script("near_range")


def test_through_resolution_keeps_what_the_resolution_can_hold(near_range):
    flat = np.full((128, 416), 12.5, dtype=np.float32)
    np.testing.assert_allclose(near_range.through_resolution(flat, (64, 192)), 12.5, rtol=1e-5)
    # a 5 m wall on the left half, 20 m on the right: far from the edge each stays; at the edge the inverse
    # depths blend, so every value lies between the two; a hole (0) reads farther than anything near it
    step = np.where(np.arange(416) < 208, 5.0, 20.0)[None].repeat(128, 0).astype(np.float32)
    step[60:68, 300:310] = 0.0
    back = near_range.through_resolution(step, (64, 192))
    np.testing.assert_allclose(back[:, :190], 5.0, rtol=1e-5)
    np.testing.assert_allclose(back[:, 226:290], 20.0, rtol=1e-5)
    assert back[:, 190:226].min() >= 5.0 - 1e-4 and back[:, 190:226].max() <= 20.0 + 1e-3
    assert back[64, 305] > 100.0


def test_a_runs_record_matches_evaluate_and_its_column_bands_split_the_near_pixels(
    near_range, velocity_checkpoint, tiny_drive
):
    record = near_range.measure_run(velocity_checkpoint, tiny_drive)
    evaluated = evaluate_model(velocity_checkpoint, tiny_drive, backend="torch", progress=False)
    assert record["scaling"] == evaluated["by_range"]["scaling"] == "metric"
    assert record["images"] == evaluated["images"]
    assert record["by_range"] == evaluated["by_range"]["bins"]
    near_pixels = record["by_range"][0]["pixels"]
    assert near_pixels > 0  # the drive has ground truth within 5 m
    assert sum(band["pixels"] for band in record["near_by_column"]) == near_pixels
    assert len(record["near_by_column"]) == near_range.COLUMN_BANDS
    for peer in record["network_resolution"]:  # the ground truth at the network's resolution keeps its scale
        if peer["ratio"] is not None:
            assert peer["ratio"] == pytest.approx(1.0, abs=0.02)
    text = near_range.report([{"run": "tiny", "data": "drive", **record}])
    assert text.startswith(f"tiny on drive ({record['images']} images, metric)")
    assert "within 5 m, by eighth of the image's columns" in text
