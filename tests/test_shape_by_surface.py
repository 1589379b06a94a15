"""bench/shape_by_surface.py: the split of the scale ratio's shape part by surface on hand-made frames, and a
run's record against ``ssim-depth evaluate`` and the renderer's labels on a rendered drive."""

from __future__ import annotations

import numpy as np
import pytest

from ssim_depth_core.apps.evaluate import evaluate_model
from ssim_depth_core.config import TrainConfig
from ssim_depth_core.data.synthetic import DriveSpec, SyntheticDrive
from ssim_depth_core.evaluation import garg_crop_mask

# two frames of five pixels: ground (id 0) at 10 m, a box (id 1) at 8 m; the first read exactly, the second
# with one box pixel at twice its depth
GT = np.array([[10.0, 10.0, 8.0, 8.0, 8.0]])
IDS = np.array([[0, 0, 1, 1, 1]])
EXACT, ONE_OFF = GT.copy(), np.array([[10.0, 10.0, 16.0, 8.0, 8.0]])


@pytest.fixture(scope="module")
def shape_by_surface(bench_script):
    return bench_script("shape_by_surface")


def test_the_shape_part_vanishes_when_the_surface_that_carries_it_is_exact(shape_by_surface):
    record = shape_by_surface.measure_frames([(GT, EXACT, IDS), (GT, ONE_OFF, IDS)], metric=True, crop=None)
    assert record["images"] == 2 and record["scaling"] == "metric"
    # the second frame: median(gt / pred) = median(1, 1, 0.5, 1, 1) = 1, but median(gt) / median(pred) =
    # 8 / 10: the one box pixel read far moves the prediction's median from a box pixel to a ground pixel
    assert record["shape_std"]["as_is"] == pytest.approx(np.std([1.0, 0.8]))
    assert record["shape_std"]["ground_exact"] == pytest.approx(np.std([1.0, 0.8]))  # the ground was exact
    assert record["shape_std"]["boxes_exact"] == pytest.approx(0.0)
    ground, boxes = record["surfaces"]["ground"], record["surfaces"]["boxes"]
    assert ground["pixel_share"] == pytest.approx(0.4) and boxes["pixel_share"] == pytest.approx(0.6)
    assert ground["abs_rel"] == pytest.approx(0.0)
    assert boxes["abs_rel"] == pytest.approx(1 / 6)  # one of six box pixels off by |8 - 16| / 8
    assert boxes["relative_ratio_median"] == pytest.approx(1.0)  # median(1, 1, 1), median(0.5, 1, 1)
    assert ground["relative_ratio_std"] == boxes["relative_ratio_std"] == pytest.approx(0.0)


def test_the_shape_part_does_not_depend_on_the_frames_scales(shape_by_surface):
    metric = shape_by_surface.measure_frames([(GT, EXACT, IDS), (GT, ONE_OFF, IDS)], metric=True, crop=None)
    scale_less = shape_by_surface.measure_frames(
        [(GT, EXACT / 3, IDS), (GT, ONE_OFF / 40, IDS)], metric=False, crop=None
    )
    assert scale_less["scaling"] == "median"
    for key, value in metric["shape_std"].items():
        assert scale_less["shape_std"][key] == pytest.approx(value)
    # median scaling multiplies the second frame by median(gt) / median(pred) = 8 / 0.25: its box pixels
    # read 12.8, 6.4 and 6.4 m (the first frame's exactly)
    boxes = scale_less["surfaces"]["boxes"]["abs_rel"]
    assert boxes == pytest.approx((3 * 0.0 + 4.8 / 8 + 2 * 1.6 / 8) / 6)
    with pytest.raises(ValueError, match="no frames"):
        shape_by_surface.measure_frames([], metric=True)


def test_a_runs_record_matches_evaluate_and_the_renderers_labels(
    shape_by_surface, velocity_checkpoint, tiny_drive
):
    drive = SyntheticDrive(DriveSpec.for_dataset(5, 0, 1, 10), width=128, height=64)  # tiny_drive's
    record = shape_by_surface.measure_run(velocity_checkpoint, tiny_drive, drive)
    evaluated = evaluate_model(velocity_checkpoint, tiny_drive, backend="torch", progress=False)
    assert record["scaling"] == "metric" and record["images"] == evaluated["images"]
    assert record["shape_std"]["as_is"] == pytest.approx(evaluated["scale_shape_std"])
    # the ground's share of the compared pixels, counted from the renders of the test frames (1-8)
    ground = compared = 0
    for index in range(1, 9):
        frame = drive.render(index)
        inside = garg_crop_mask(64, 128) & (frame.depth > 1e-3) & (frame.depth < 80)
        ground += np.count_nonzero(inside & (frame.ids == 0))
        compared += np.count_nonzero(inside & (frame.ids >= 0))
    assert record["surfaces"]["ground"]["pixel_share"] == pytest.approx(ground / compared, abs=1e-3)
    off = record["off_boxes"]
    assert 0 <= off["off_share"] <= 1 and 0 <= off["automasked_at_prediction"] <= 1
    text = shape_by_surface.report([{"run": "tiny", "drive_seed": 5, **record}])
    assert text.splitlines()[2].startswith(f"| tiny | 5 | {record['images']} |")
    other = SyntheticDrive(DriveSpec.for_dataset(6, 0, 1, 10), width=128, height=64)
    with pytest.raises(ValueError, match="not the image"):
        shape_by_surface.measure_run(velocity_checkpoint, tiny_drive, other)


@pytest.mark.parametrize("stereo", [False, True])
def test_the_objective_prefers_the_truth_on_boxes_read_off(shape_by_surface, stereo):
    """The exact depth with the drive's exact poses (and rig) warps each source onto the target: far lower
    error than the same boxes read 1.6x too far or 0.6x too near; within 1.25x they do not count as off."""
    drive = SyntheticDrive(DriveSpec.for_dataset(5, 0, 1, 10), width=128, height=64, stereo=stereo)
    config = TrainConfig()
    config.data.width, config.data.height, config.data.stereo = 64, 32, stereo
    summaries = {}
    for factor in (1.0, 1.2, 1.6, 0.6):
        objective = shape_by_surface.ObjectiveAtTruth(config, drive)
        for index in range(1, 9):
            frame = drive.render(index)
            pred = np.where(frame.ids > 0, frame.depth * factor, np.where(frame.depth > 0, frame.depth, 1e3))
            objective.add(index, frame.depth, pred, frame.ids)
        summaries[factor] = objective.summary()
    assert summaries[1.0]["off_share"] == summaries[1.2]["off_share"] == 0.0
    for factor in (1.6, 0.6):
        off = summaries[factor]
        assert off["off_share"] == 1.0
        assert off["error_at_truth"] < 0.5 * off["error_at_prediction"]
        assert off["automasked_at_truth"] < off["automasked_at_prediction"]
    # the truth's error is the same whichever way the prediction errs (same pixels, same depth)
    assert summaries[1.6]["error_at_truth"] == pytest.approx(summaries[0.6]["error_at_truth"])
