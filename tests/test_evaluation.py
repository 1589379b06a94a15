import json
import logging
import math
import shutil

import numpy as np
import pytest

from ssim_depth_core.apps.cli import main
from ssim_depth_core.apps.evaluate import evaluate_model, format_report, format_table
from ssim_depth_core.checkpoint import load_checkpoint
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.evaluation import (
    METRIC_NAMES,
    MetricsAccumulator,
    RangeAccumulator,
    compute_depth_metrics,
    evaluate_depth,
    evaluate_depth_scalings,
    garg_crop_mask,
    scale_ratio,
)
from ssim_depth_core.imaging import read_depth_png, write_png
from ssim_depth_core.runtime.estimator import DepthEstimator


def test_metrics_hand_computed():
    # gt = [1, 2, 4], pred = [2, 2, 2]  ->  gt - pred = [-1, 0, 2]
    #   abs_rel  = mean(1/1, 0/2, 2/4)                 = 1.5 / 3 = 0.5
    #   sq_rel   = mean(1/1, 0/2, 4/4)                 = 2 / 3
    #   rmse     = sqrt(mean(1, 0, 4))                 = sqrt(5/3)
    #   rmse_log = sqrt(mean(ln(1/2)^2, 0, ln(4/2)^2)) = ln 2 * sqrt(2/3)
    #   max(gt/pred, pred/gt) = [2, 1, 2]: only the middle pixel is under 1.25, 1.5625 and 1.953125
    m = compute_depth_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]))
    assert set(m) == set(METRIC_NAMES)
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["sq_rel"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["rmse_log"] == pytest.approx(math.log(2) * math.sqrt(2 / 3))
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_delta_thresholds_are_distinct():
    # ratios 1.2 < 1.25;  1.5 < 1.25^2 = 1.5625;  1.9 < 1.25^3 = 1.953125;  2.5 above all three.
    m = compute_depth_metrics(np.ones(4), np.array([1.2, 1.5, 1.9, 2.5]))
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((0.25, 0.5, 0.75))
    # the ratio is symmetric: under-prediction by the same factor counts the same
    m_inv = compute_depth_metrics(np.array([1.2, 1.5, 1.9, 2.5]), np.ones(4))
    assert (m_inv["a1"], m_inv["a2"], m_inv["a3"]) == pytest.approx((0.25, 0.5, 0.75))


def test_median_scaling_makes_scaled_prediction_perfect():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.0, 60.0, size=(24, 40))
    metrics, ratio = evaluate_depth(gt, gt / 3.7, crop=None)
    assert ratio == pytest.approx(3.7)
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["a1"] == 1.0

    unscaled, ratio = evaluate_depth(gt, gt / 3.7, crop=None, median_scaling=False)
    assert ratio == pytest.approx(3.7)  # measured, not applied
    assert unscaled["abs_rel"] == pytest.approx(1 - 1 / 3.7)


def test_scale_ratio_without_median_scaling_hand_computed():
    # Valid pixels gt = [2, 4, 8, 10], pred = gt / 2 = [1, 2, 4, 5]: medians 6 and 3, ratio 2.
    #   abs_rel = mean(|gt - gt/2| / gt) = 0.5; rmse = sqrt(mean(1, 4, 16, 25)) = sqrt(11.5);
    #   every pixel is off by 2 > 1.25^3 = 1.953125, so a1 = a2 = a3 = 0.
    # The invalid gt pixels (0, 100 > max_depth) hold predictions that would move both medians if counted.
    gt = np.array([[2.0, 4.0, 0.0], [8.0, 10.0, 100.0]])
    pred = np.array([[1.0, 2.0, 70.0], [4.0, 5.0, 90.0]])
    metrics, ratio = evaluate_depth(gt, pred, crop=None, median_scaling=False)
    assert ratio == pytest.approx(2.0)
    assert metrics["abs_rel"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(11.5))
    assert (metrics["a1"], metrics["a2"], metrics["a3"]) == (0.0, 0.0, 0.0)
    scaled, scaled_ratio = evaluate_depth(gt, pred, crop=None)
    assert scaled_ratio == pytest.approx(2.0) and scaled["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_invalid_gt_pixels_ignored():
    # Only the gt values 1, 2, 4 are inside (1e-3, 80): the rest (0, NaN, 100) must not count, whatever
    # the prediction there, so the metrics equal the hand-computed [1, 2, 4] vs [2, 2, 2] case.
    gt = np.array([[1.0, 0.0], [2.0, np.nan], [4.0, 100.0]])
    pred = np.array([[2.0, 50.0], [2.0, np.nan], [2.0, 0.5]])
    metrics, _ = evaluate_depth(gt, pred, crop=None, median_scaling=False)
    assert metrics["abs_rel"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(5 / 3))


def test_prediction_clamped_to_depth_range():
    # pred 200 is clamped to max_depth 80 before comparison with gt 50: abs_rel = 30 / 50.
    metrics, _ = evaluate_depth(np.array([[50.0]]), np.array([[200.0]]), crop=None, median_scaling=False)
    assert metrics["abs_rel"] == pytest.approx(0.6)


def test_garg_crop_kitti_bounds():
    # 0.40810811 * 375 = 153.04, 0.99189189 * 375 = 371.96,
    # 0.03594771 * 1242 = 44.6, 0.96405229 * 1242 = 1197.3
    mask = garg_crop_mask(375, 1242)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1) == (153, 371)
    assert (cols.min(), cols.max() + 1) == (44, 1197)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_garg_crop_applied_in_evaluation():
    # A wrong prediction in the rows above the crop must not change the metrics.
    gt = np.full((375, 1242), 10.0)
    pred = gt.copy()
    pred[:153] = 1000.0
    metrics, _ = evaluate_depth(gt, pred, median_scaling=False)
    assert metrics["abs_rel"] == 0.0
    uncropped, _ = evaluate_depth(gt, pred, crop=None, median_scaling=False)
    assert uncropped["abs_rel"] > 0.0


def test_no_valid_pixels_raises():
    with pytest.raises(ValueError, match="no valid ground-truth pixels"):
        evaluate_depth(np.zeros((4, 5)), np.ones((4, 5)), crop=None)
    with pytest.raises(ValueError, match="no valid"):
        # valid only outside the crop
        gt = np.zeros((375, 1242))
        gt[0, 0] = 5.0
        evaluate_depth(gt, np.ones_like(gt))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"pred_depth shape \(4, 5\) != gt_depth shape \(5, 4\)"):
        evaluate_depth(np.ones((5, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="unknown crop 'eigen'"):
        evaluate_depth(np.ones((5, 4)), np.ones((5, 4)), crop="eigen")
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_depth(np.ones((2, 2)), np.full((2, 2), np.inf), crop=None)


def test_accumulator_averages_per_image():
    acc = MetricsAccumulator()
    # image A: one pixel, abs_rel 0.5 (gt 2, pred 1); image B: three perfect pixels.
    m_a, _ = evaluate_depth(np.array([[2.0]]), np.array([[1.0]]), crop=None, median_scaling=False)
    m_b, _ = evaluate_depth(np.full((1, 3), 5.0), np.full((1, 3), 5.0), crop=None, median_scaling=False)
    acc.add(m_a, scale_ratio=2.0)
    acc.add(m_b, scale_ratio=4.0)
    assert len(acc) == 2
    # per-image mean (0.5 + 0) / 2, not the pooled-pixel mean 0.5 / 4
    assert acc.mean()["abs_rel"] == pytest.approx(0.25)
    assert acc.mean()["a1"] == pytest.approx(0.5)
    assert acc.scale_stats() == pytest.approx({"mean": 3.0, "std": 1.0, "median": 3.0})
    with pytest.raises(ValueError, match="no pixelwise scale ratios"):
        acc.scale_stats(pixelwise=True)
    acc.add(m_b, scale_ratio=6.0, pixel_scale_ratio=0.5)
    assert acc.scale_stats(pixelwise=True) == pytest.approx({"mean": 0.5, "std": 0.0, "median": 0.5})


def test_scale_shape_std_is_the_ratio_of_medians_at_each_images_own_pixelwise_scale():
    # image A: pred exact up to 2x (both ratios 2: its shape is perfect); image B: two of five pixels read
    # 1.5x too far, so median(gt/pred) = 1 (three pixels exact) while median(gt)/median(pred) = 3 / 4
    gt_a, pred_a = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5, 1.0, 1.5]])
    gt_b, pred_b = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), np.array([[1.0, 2.0, 4.5, 4.0, 7.5]])
    acc = MetricsAccumulator()
    shaped = []
    for gt, pred in ((gt_a, pred_a), (gt_b, pred_b)):
        scores = evaluate_depth_scalings(gt, pred, crop=None, unscaled=False)
        acc.add(scores.median, scores.ratio, scores.pixel_ratio)
        # the definition: scale the image by its own pixelwise ratio, then take the ratio of medians
        shaped.append(np.median(gt) / np.median(pred * scores.pixel_ratio))
    assert shaped == pytest.approx([1.0, 0.75])
    assert acc.scale_shape_std() == pytest.approx(0.125)  # population std of (1, 0.75)
    acc.add(scores.median, scale_ratio=1.0)  # a third image without its pixelwise ratio
    with pytest.raises(ValueError, match="both scale ratios"):
        acc.scale_shape_std()


def test_accumulator_empty_raises():
    with pytest.raises(ValueError, match="no images"):
        MetricsAccumulator().mean()
    with pytest.raises(ValueError, match="missing"):
        MetricsAccumulator().add({"abs_rel": 0.1})


def test_errors_by_range_hand_computed():
    # gt 2, 4 | 6 | 12 | 30 m in the default bins 0-5 | 5-10 | 10-20 | 20-40 (none in 40-80); 90 m is beyond
    # max_depth 80 and ignored
    gt = np.array([[2.0, 4.0, 6.0, 12.0, 30.0, 90.0]])
    pred = np.array([[4.0, 4.0, 6.0, 6.0, 30.0, 1.0]])
    ranges = RangeAccumulator(min_pixels=1)
    ranges.add(gt, pred, median_scaling=False, crop=None)
    bins = ranges.summary()
    assert [b["range_m"] for b in bins] == [[0, 5], [5, 10], [10, 20], [20, 40], [40, 80]]
    assert [b["pixel_share"] for b in bins] == pytest.approx([0.4, 0.2, 0.2, 0.2, 0.0])
    assert [b["abs_rel"] for b in bins[:4]] == pytest.approx([0.5, 0.0, 0.5, 0.0])  # 0-5: (1 + 0) / 2
    assert [b["ratio"] for b in bins[:4]] == pytest.approx([0.75, 1.0, 2.0, 1.0])  # 0-5: median of 0.5, 1
    assert [b["pixels"] for b in bins] == [2, 1, 1, 1, 0]
    assert bins[4] == {
        "range_m": [40, 80],
        "pixels": 0,
        "pixel_share": 0.0,
        "abs_rel": None,
        "ratio": None,
        "images": 0,
    }
    # a second image with one 0-5 m pixel (gt 3, pred 1): pooled AbsRel (1 + 0 + 2/3) / 3; the ratio is the
    # median over images of each image's median; with min_pixels 2 that image no longer counts for it
    for min_pixels, ratio, images in ((1, (0.75 + 3.0) / 2, 2), (2, 0.75, 1)):
        ranges = RangeAccumulator(min_pixels=min_pixels)
        ranges.add(gt, pred, median_scaling=False, crop=None)
        ranges.add(np.array([[3.0, 8.0]]), np.array([[1.0, 8.0]]), median_scaling=False, crop=None)
        near = ranges.summary()[0]
        assert near["abs_rel"] == pytest.approx(5 / 9) and near["ratio"] == pytest.approx(ratio)
        assert near["images"] == images and near["pixel_share"] == pytest.approx(3 / 7)
    # median scaling first multiplies by median(gt) / median(pred), here 6 / 12, as evaluate_depth does
    scaled = RangeAccumulator(min_pixels=1)
    scaled.add(gt[:, :5], 2 * pred[:, :5], median_scaling=True, crop=None)
    assert [b["abs_rel"] for b in scaled.summary()[:4]] == pytest.approx([0.5, 0.0, 0.5, 0.0])
    # the same image from its matched valid pixels; a prediction past max_depth is clamped to 80 there too
    matched = RangeAccumulator(min_pixels=1)
    matched.add_pixels(gt[0, :5], pred[0, :5])
    assert matched.summary() == bins
    clamped = RangeAccumulator(min_pixels=1)
    clamped.add_pixels(np.array([40.0]), np.array([120.0]))
    assert clamped.summary()[4]["abs_rel"] == pytest.approx(1.0)  # |40 - 80| / 40
    with pytest.raises(ValueError, match=r"matched \(N,\) pixels"):
        matched.add_pixels(gt[0, :5], pred[0, :4])


def test_errors_by_range_reject_bad_bins_and_report_empty_ones():
    for edges in ((5.0,), (0.0, 10.0, 10.0), (-1.0, 5.0)):
        with pytest.raises(ValueError, match="range edges must be >= 0 and increasing"):
            RangeAccumulator(edges)
    with pytest.raises(ValueError, match="min_pixels must be >= 1"):
        RangeAccumulator(min_pixels=0)
    beyond = RangeAccumulator((0.0, 5.0))  # pixels, none of them in a bin: every bin empty
    beyond.add(np.full((1, 3), 20.0), np.full((1, 3), 20.0), median_scaling=False, crop=None)
    assert beyond.summary() == [
        {"range_m": [0, 5], "pixels": 0, "pixel_share": 0.0, "abs_rel": None, "ratio": None, "images": 0}
    ]


def test_format_table():
    metrics = dict(zip(METRIC_NAMES, [0.1156, 0.9, 4.87, 0.1934, 0.871, 0.959, 0.98149], strict=True))
    header, values = format_table(metrics).splitlines()
    assert header.split(" | ") == [f"{n:>8}" for n in METRIC_NAMES]
    assert [float(v) for v in values.split("|")] == [0.116, 0.9, 4.87, 0.193, 0.871, 0.959, 0.981]


@pytest.fixture(scope="module")
def tiny_drive(tmp_path_factory):
    """One 96x64 synthetic drive of 4 frames: its test split holds frames 1 and 2."""
    root = tmp_path_factory.mktemp("tiny_drive")
    return generate_dataset(root, seed=3, drives=1, frames=4, width=96, height=64, bag="none", progress=False)


def _reference(model, data):
    """The protocol written out independently on the estimator's depths: per frame the scale ratio and the
    unscaled and median-scaled abs_rel over gt in (1e-3, 80) m inside the Garg crop, pred clipped to it."""
    sequences = open_sequences(data, DataConfig())
    estimator = DepthEstimator(model, backend="torch", device="cpu")
    ratios, pixel_ratios, metric, median, pooled = [], [], [], [], []
    for sequence_index, frame in build_samples(sequences, [0], resolve_split(data, "test")):
        sequence = sequences[sequence_index]
        gt, pred = sequence.depth(frame), estimator(sequence.image(frame)).astype(np.float64)
        valid = (gt > 1e-3) & (gt < 80) & garg_crop_mask(*gt.shape)
        gt, pred = gt[valid], pred[valid]
        ratios.append(np.median(gt) / np.median(pred))
        pixel_ratios.append(np.median(gt / pred))
        metric.append(np.mean(np.abs(gt - np.clip(pred, 1e-3, 80)) / gt))
        median.append(np.mean(np.abs(gt - np.clip(pred * ratios[-1], 1e-3, 80)) / gt))
        pooled.append(np.abs(gt - np.clip(pred, 1e-3, 80)) / gt)
    pooled_abs_rel = np.mean(np.concatenate(pooled))  # over all pixels of all frames, not per frame
    return np.array(ratios), np.array(pixel_ratios), np.mean(metric), np.mean(median), pooled_abs_rel


def test_evaluate_model_reports_metric_and_median_scaled_tables(
    random_checkpoint, velocity_checkpoint, tiny_drive
):
    metric_model = evaluate_model(velocity_checkpoint, tiny_drive, backend="torch", progress=False)
    scale_keys = {"scale_mean", "scale_std", "pixel_scale_mean", "pixel_scale_std", "scale_shape_std"}
    assert set(metric_model) == {
        "metric_source",
        "images",
        "skipped_frames",
        "median",
        "metric",
        "by_range",
        *scale_keys,
    }
    assert metric_model["skipped_frames"] == 0
    assert (metric_model["metric_source"], metric_model["images"]) == ("velocity", 2)
    assert set(metric_model["median"]) == set(metric_model["metric"]) == set(METRIC_NAMES)

    ratios, pixel_ratios, metric_abs_rel, median_abs_rel, pooled = _reference(velocity_checkpoint, tiny_drive)
    assert metric_model["scale_mean"] == pytest.approx(ratios.mean(), rel=1e-5)
    assert metric_model["scale_std"] == pytest.approx(ratios.std(), rel=1e-4)
    assert metric_model["pixel_scale_mean"] == pytest.approx(pixel_ratios.mean(), rel=1e-5)
    assert metric_model["pixel_scale_std"] == pytest.approx(pixel_ratios.std(), rel=1e-4)
    assert metric_model["scale_shape_std"] == pytest.approx((ratios / pixel_ratios).std(), rel=1e-4)
    assert metric_model["metric"]["abs_rel"] == pytest.approx(metric_abs_rel, rel=1e-5)
    assert metric_model["median"]["abs_rel"] == pytest.approx(median_abs_rel, rel=1e-5)
    assert metric_model["scale_mean"] > 1.5  # an untrained net: far from metres, so the tables differ
    assert metric_model["metric"]["abs_rel"] > metric_model["median"]["abs_rel"]
    # by range, of the metric table: the bins cover every valid pixel, so their pixel-weighted AbsRel is the
    # pooled AbsRel of all pixels
    by_range = metric_model["by_range"]
    assert by_range["scaling"] == "metric"
    shares = [b["pixel_share"] for b in by_range["bins"]]
    assert sum(shares) == pytest.approx(1.0)
    weighted = sum(b["pixel_share"] * b["abs_rel"] for b in by_range["bins"] if b["abs_rel"] is not None)
    assert weighted == pytest.approx(pooled, rel=1e-5)

    # the same weights, scale-less: median-scaled only unless the metric table is asked for
    scale_less = evaluate_model(random_checkpoint, tiny_drive, backend="torch", progress=False)
    assert scale_less["metric_source"] == "none" and "metric" not in scale_less
    assert scale_less["by_range"]["scaling"] == "median"
    assert scale_less["median"] == metric_model["median"]
    assert scale_less["scale_mean"] == metric_model["scale_mean"]
    asked = evaluate_model(random_checkpoint, tiny_drive, scaling="metric", backend="torch", progress=False)
    assert asked["metric"] == metric_model["metric"]
    median_only = evaluate_model(velocity_checkpoint, tiny_drive, scaling="median", progress=False)
    assert "metric" not in median_only and median_only["metric_source"] == "velocity"
    with pytest.raises(ValueError, match="scaling must be one of.*'none'"):
        evaluate_model(velocity_checkpoint, tiny_drive, scaling="none")


def test_evaluate_chooses_the_backend_from_the_model_file(
    random_checkpoint, random_onnx, tiny_drive, tmp_path, caplog
):
    results = {}
    for model in (random_checkpoint, random_onnx):
        out = tmp_path / f"{model.suffix[1:]}.json"
        with caplog.at_level(logging.INFO, logger="ssim_depth_core.runtime.backends"):
            assert (
                main(["evaluate", "--checkpoint", str(model), "--data", str(tiny_drive), "--json", str(out)])
                == 0
            )
        results[model.suffix] = json.loads(out.read_text())
    assert f"backend auto -> torch for {random_checkpoint}" in caplog.text
    assert f"backend auto -> onnxruntime for {random_onnx}" in caplog.text
    assert results[".onnx"]["images"] == results[".pt"]["images"] == 2  # frames 1 and 2 of the test split
    for result in results.values():
        assert result["metric_source"] == "none" and "metric" not in result
    for name in METRIC_NAMES:  # one network, two runtimes
        assert results[".onnx"]["median"][name] == pytest.approx(
            results[".pt"]["median"][name], rel=1e-3, abs=1e-4
        ), name
    assert results[".onnx"]["scale_mean"] == pytest.approx(results[".pt"]["scale_mean"], rel=1e-3)


def test_evaluate_cli_prints_labelled_tables(velocity_checkpoint, random_checkpoint, tiny_drive, capsys):
    assert main(["evaluate", "--checkpoint", str(velocity_checkpoint), "--data", str(tiny_drive)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 images, metric source: velocity; per-image scale ratio")
    assert lines[1] == "metric (no scaling):" and lines[4] == "median-scaled:"
    assert [name.strip() for name in lines[2].split("|")] == list(METRIC_NAMES)
    assert [name.strip() for name in lines[5].split("|")] == list(METRIC_NAMES)
    assert lines[7].startswith("by ground-truth range (metric; ratio = median over images of median(gt/pred)")
    assert [line.split("|")[0].strip() for line in lines[9:14]] == ["0-5", "5-10", "10-20", "20-40", "40-80"]

    argv = ["evaluate", "--checkpoint", str(random_checkpoint), "--data", str(tiny_drive)]
    assert main([*argv, "--scaling", "median"]) == 0
    assert "metric (no scaling):" not in capsys.readouterr().out
    assert main([*argv, "--scaling", "metric"]) == 0
    assert "metric (no scaling):" in capsys.readouterr().out


def test_both_scalings_in_one_call_equal_the_two_separate_calls():
    # Valid pixels gt = [2, 4, 8, 50], pred = [1, 2, 4, 60]: medians 6 and 3, ratio 2; scaled, the 60 becomes
    # 120, clamped to 80 as the unscaled 60 is not. The 0 and 100 (> max_depth) gt pixels are left out.
    gt = np.array([[2.0, 4.0, 0.0], [8.0, 50.0, 100.0]])
    pred = np.array([[1.0, 2.0, 70.0], [4.0, 60.0, 90.0]])
    scaled, ratio = evaluate_depth(gt, pred, crop=None)
    unscaled, unscaled_ratio = evaluate_depth(gt, pred, crop=None, median_scaling=False)
    scores = evaluate_depth_scalings(gt, pred, crop=None)
    assert scores.median == scaled and scores.metric == unscaled and scores.ratio == ratio == unscaled_ratio
    assert scores.pixel_ratio == 2.0  # gt / pred = [2, 2, 2, 0.833]
    assert ratio == 2.0 and scaled["abs_rel"] == pytest.approx(30 / 50 / 4)  # only the clamped pixel is off
    assert unscaled["abs_rel"] == pytest.approx((0.5 * 3 + 10 / 50) / 4)
    median_only = evaluate_depth_scalings(gt, pred, crop=None, unscaled=False)
    assert median_only[:4] == (scaled, None, ratio, 2.0)
    # the matched pixels it kept, for RangeAccumulator.add_pixels: the four valid ones, unscaled and unclamped
    np.testing.assert_array_equal(median_only.gt, [2.0, 4.0, 8.0, 50.0])
    np.testing.assert_array_equal(median_only.pred, [1.0, 2.0, 4.0, 60.0])
    assert scale_ratio(gt, pred, crop=None) == ratio
    # The Garg crop and the errors are evaluate_depth's.
    kitti = np.full((375, 1242), 10.0)
    guess = np.full_like(kitti, 4.0)
    guess[:153] = 1000.0
    cropped = evaluate_depth_scalings(kitti, guess)
    assert cropped[:4] == (
        evaluate_depth(kitti, guess)[0],
        evaluate_depth(kitti, guess, median_scaling=False)[0],
        2.5,
        2.5,
    )
    with pytest.raises(ValueError, match="no valid ground-truth pixels"):
        evaluate_depth_scalings(np.zeros((4, 5)), np.ones((4, 5)), crop=None)


def test_pixelwise_scale_ratio_ignores_pixel_noise_that_moves_the_ratio_of_medians():
    # gt 10 m for 3 pixels, 50 m for 2: its median 10 sits at the edge of a gap. The prediction is right in
    # scale, its noise symmetric (x0.5 and x2 on two of the 10 m pixels), yet its median is the 20 m pixel.
    gt = np.array([[10.0, 10.0, 10.0, 50.0, 50.0]])
    pred = np.array([[5.0, 10.0, 20.0, 50.0, 50.0]])
    scores = evaluate_depth_scalings(gt, pred, crop=None)
    assert scores.ratio == 0.5  # median(gt) / median(pred) = 10 / 20
    assert scores.pixel_ratio == 1.0  # median of [2, 1, 0.5, 1, 1]
    zero = evaluate_depth_scalings(np.full((1, 3), 4.0), np.array([[0.0, 2.0, 2.0]]), crop=None)
    assert zero.pixel_ratio == 2.0  # the pixel predicted at 0 m (an infinite ratio) is outvoted


def _without_ground_truth(data, tmp_path, frames):
    """A copy of ``data`` whose ground-truth maps of ``frames`` hold no valid pixel (all 0)."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    for frame in frames:
        for path in copy.glob(f"*/*/proj_depth/groundtruth/image_02/{frame:010d}.png"):
            write_png(path, np.zeros_like(read_depth_png(path), dtype=np.uint16))
    return copy


def test_evaluate_skips_a_frame_without_valid_ground_truth_and_counts_it(
    velocity_checkpoint, tiny_drive, tmp_path, caplog
):
    data = _without_ground_truth(tiny_drive, tmp_path, frames=[2])
    with caplog.at_level(logging.WARNING, logger="ssim_depth_core.apps.evaluate"):
        result = evaluate_model(velocity_checkpoint, data, backend="torch", progress=False)
    (sequence,) = open_sequences(data, DataConfig())
    assert f"{sequence.name} frame 2: no valid ground-truth pixels" in caplog.text
    assert (result["images"], result["skipped_frames"]) == (1, 1)
    # the same as a split of the one frame left
    split = tmp_path / "frame1_files.txt"
    split.write_text(resolve_split(tiny_drive, "test").read_text().splitlines()[0] + "\n")
    alone = evaluate_model(velocity_checkpoint, tiny_drive, split, backend="torch", progress=False)
    assert alone["skipped_frames"] == 0
    assert {k: v for k, v in result.items() if k != "skipped_frames"} == {
        k: v for k, v in alone.items() if k != "skipped_frames"
    }
    assert format_report(result).startswith("1 images (1 skipped: no valid ground truth), metric source")

    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--checkpoint", str(velocity_checkpoint), "--data", str(data), "--json", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["skipped_frames"] == 1
    # an earlier report is kept unless --overwrite; a path that cannot take one fails before evaluating
    out.write_text("the earlier report")
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    assert f"{out} already exists (an earlier evaluation?): pass --overwrite" in caplog.text
    assert out.read_text() == "the earlier report"
    assert main([*argv, "--overwrite"]) == 0 and json.loads(out.read_text())["skipped_frames"] == 1
    with caplog.at_level(logging.ERROR):
        assert main([*argv[:-1], str(out / "under_a_file.json")]) == 2
        assert main([*argv[:-1], str(tmp_path), "--overwrite"]) == 2
        assert main([*argv[:-1], str(velocity_checkpoint), "--overwrite"]) == 2  # never over the model
    assert f"{out / 'under_a_file.json'}: {out} is not a folder" in caplog.text
    assert f"{tmp_path} is a folder: name a file" in caplog.text
    assert f"{velocity_checkpoint} is the model of the evaluation: write its outputs" in caplog.text
    assert load_checkpoint(velocity_checkpoint)["model"]


def test_evaluate_fails_naming_the_split_when_no_frame_has_valid_ground_truth(
    velocity_checkpoint, tiny_drive, tmp_path
):
    data = _without_ground_truth(tiny_drive, tmp_path, frames=[1, 2])
    with pytest.raises(ValueError, match=r"split 'test' of .*data: none of its 2 frames has valid ground"):
        evaluate_model(velocity_checkpoint, data, backend="torch", progress=False)
