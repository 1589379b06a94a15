"""bench/metric_depth.py: the gap between the two per-frame scale ratios, against NumPy on the estimator's
depths."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.runtime.estimator import DepthEstimator


def test_ratio_gap_is_the_pixelwise_ratio_against_the_ratio_of_medians(
    bench_script, random_checkpoint, tiny_drive
):
    metric_depth = bench_script("metric_depth")
    summary = metric_depth.camera_height_errors(random_checkpoint, tiny_drive)

    (sequence,) = open_sequences(tiny_drive, DataConfig())
    estimator = DepthEstimator(random_checkpoint, backend="torch", device="cpu")
    gaps = []
    for index in range(len(sequence)):
        gt = sequence.depth(index)
        pred = estimator(sequence.image(index)).astype(np.float64)
        valid = (gt > 1e-3) & (gt < 80)  # the protocol's depth range, no crop (as the ground errors)
        gt, pred = gt[valid], pred[valid]
        gaps.append(abs(np.median(gt / pred) / (np.median(gt) / np.median(pred)) - 1))
    assert summary["ground_frames"] == len(sequence) == 10
    assert summary["ratio_gap_median"] == pytest.approx(np.median(gaps), rel=1e-5)
    assert summary["ratio_gap_p90"] == pytest.approx(np.percentile(gaps, 90), rel=1e-5)
    # an untrained net's depth is nearly flat (for a flat one both ratios are the same), yet not quite
    assert 1e-4 < summary["ratio_gap_median"] < 0.01


def test_report_puts_the_shapes_part_beside_each_check(bench_script):
    metric_depth = bench_script("metric_depth")
    scores = {"abs_rel": 0.1, "a1": 0.9}
    records = [
        {"variant": "ms", "seed": 0, "train_minutes": 20.0, "scale_mean": 1.0, "scale_std": 0.06,
         "scale_shape_std": 0.055, "median": scores, "metric": scores},
        {"variant": "none", "seed": 0, "train_minutes": 20.0, "scale_mean": 40.0, "scale_std": 2.0,
         "median": scores, "ground_error_median": 0.06, "ground_frame_error_median": 0.07,
         "ground_error_pixelwise_median": 0.02, "ratio_gap_median": 0.045},
        {"variant": "none", "seed": 1, "train_minutes": 20.0, "scale_mean": 40.0, "scale_std": 2.0,
         "median": scores, "ground_error_pixelwise_median": 0.05, "ratio_gap_median": 0.03},
    ]  # fmt: skip
    lines = metric_depth.report(records).splitlines()
    assert "ms seed 0: scale std 0.060 (<= 0.05: False)" in lines
    assert "ms seed 0: its shape's part 0.055 (> 0.05: True)" in lines
    assert (
        "none seed 0: ratio gap median 0.045, camera-height error vs pixelwise 0.020 (gap >= error: True)"
        in lines
    )
    assert (
        "none seed 1: ratio gap median 0.030, camera-height error vs pixelwise 0.050 (gap >= error: False)"
        in lines
    )


def test_record_runs_measures_each_run_once_per_key_and_appends_at_once(bench_script, tmp_path):
    metric_depth = bench_script("metric_depth")
    parser = argparse.ArgumentParser()
    metric_depth.add_run_arguments(parser, "unused.jsonl")
    runs = [tmp_path / name for name in ("a_s0", "b_s0")]
    for run in runs:
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.pt").write_bytes(b"")
    results = tmp_path / "studies" / "records.jsonl"
    args = parser.parse_args(["--runs", *map(str, runs), "--results", str(results)])
    measured = []

    def measure(checkpoint):
        measured.append(checkpoint)
        return {"abs_rel": 0.1 * len(measured)}

    metric_depth.record_runs(parser, args, {"data": "heldout"}, measure)
    metric_depth.record_runs(parser, args, {"data": "heldout"}, measure)  # both recorded: nothing measured
    metric_depth.record_runs(parser, args, {"data": "other"}, measure)  # another key: measured again
    assert measured == [run / "checkpoints" / "best.pt" for run in runs * 2]
    records = metric_depth.read_records(results)
    assert [(r["run"], r["data"]) for r in records] == [
        ("a_s0", "heldout"),
        ("b_s0", "heldout"),
        ("a_s0", "other"),
        ("b_s0", "other"),
    ]
    assert [r["abs_rel"] for r in records] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert {"date", "machine"} <= set(records[0])
    with pytest.raises(SystemExit):  # a run without best.pt is a usage error
        metric_depth.record_runs(parser, parser.parse_args(["--runs", str(tmp_path)]), {}, measure)
