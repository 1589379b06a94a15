"""Evaluate a trained model file on a split with ground truth: the ``ssim-depth evaluate`` application."""

from __future__ import annotations

import logging
from pathlib import Path

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.evaluation import (
    METRIC_NAMES,
    MetricsAccumulator,
    RangeAccumulator,
    evaluate_depth_scalings,
    valid_mask,
)
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.estimator import DepthEstimator

logger = logging.getLogger(__name__)

# Which tables evaluate_model reports beside the median-scaled one (always there): "auto" adds the metric
# (unscaled) table for a metric model, "metric" adds it for any model, "median" never.
SCALINGS = ("auto", "median", "metric")


def format_table(metrics: dict[str, float]) -> str:
    """Two-line table (names, values with 3 decimals) in the order abs_rel .. a3."""
    missing = [name for name in METRIC_NAMES if name not in metrics]
    if missing:
        raise ValueError(f"metrics dict is missing {missing}, expected keys {list(METRIC_NAMES)}")
    header = " | ".join(f"{name:>8}" for name in METRIC_NAMES)
    values = " | ".join(f"{metrics[name]:8.3f}" for name in METRIC_NAMES)
    return f"{header}\n{values}"


def format_report(result: dict) -> str:
    """The result of :func:`evaluate_model` as text: its scale statistics, then each table under a label."""
    skipped = result["skipped_frames"]
    images = f"{result['images']} images" + (
        f" ({skipped} skipped: no valid ground truth)" if skipped else ""
    )
    lines = [
        f"{images}, metric source: {result['metric_source']}; per-image scale ratio "
        f"median(gt)/median(pred): mean {result['scale_mean']:.3f}, std {result['scale_std']:.3f}; "
        f"median(gt/pred): mean {result['pixel_scale_mean']:.3f}, std {result['pixel_scale_std']:.3f}; "
        f"median(gt)/median(pred) at each image's own median(gt/pred) scale (the depth's shape alone): "
        f"std {result['scale_shape_std']:.3f}"
    ]
    if "metric" in result:
        lines += ["metric (no scaling):", format_table(result["metric"])]
    lines += ["median-scaled:", format_table(result["median"])]
    by_range = result["by_range"]
    lines += [
        f"by ground-truth range ({by_range['scaling']}; ratio = median over images of median(gt/pred), "
        "< 1: read too far):",
        f"{'range m':>9} | {'pixels':>6} | {'abs_rel':>7} | {'ratio':>6} | images",
    ]
    for row in by_range["bins"]:
        low, high = row["range_m"]
        abs_rel, ratio = (f"{row[k]:.3f}" if row[k] is not None else "-" for k in ("abs_rel", "ratio"))
        bounds = f"{low:g}-{high:g}"
        lines.append(f"{bounds:>9} | {row['pixel_share']:6.1%} | {abs_rel:>7} | {ratio:>6} | {row['images']}")
    return "\n".join(lines)


def evaluate_model(
    model_path: str | Path,
    data_path: str | Path,
    split: str | Path = "test",
    scaling: str = "auto",
    backend: str = "auto",
    progress: bool = True,
) -> dict:
    """Eigen-protocol metrics of a model (.pt, .onnx or .engine) over a split with ground-truth depth.

    Each image goes through :class:`DepthEstimator`, exactly as in serving, at the image's own resolution,
    on ``backend`` ("auto": the one that fits the model file). ``scaling`` is one of :data:`SCALINGS`. A
    frame without valid ground truth (none, or no pixel in range inside the crop) is skipped with a warning
    naming it; ValueError naming the split when no frame is left.

    Returns:
        ``{"metric_source": the model's (see artifact.METRIC_SOURCES), "images": N scored,
        "skipped_frames": M without valid ground truth, "scale_mean": ...,
        "scale_std": ..., "pixel_scale_mean": ..., "pixel_scale_std": ..., "median": {abs_rel: ..., ...,
        a3: ...}, "metric": {...}}``: the per-image means of the metrics with median scaling (``median``) and
        without (``metric``, present for a metric model under "auto", for any under "metric"), and the mean
        and standard deviation of the per-image scale ratio median(gt) / median(pred) (1 and 0 for a model
        whose depth is in metres) and of the pixelwise one, median(gt / pred); ``scale_shape_std``, the std
        of the first once each image is scaled by the second (``MetricsAccumulator.scale_shape_std``: what a
        scale exactly the same on every image would still show); ``by_range``: ``{"scaling":
        "metric" or "median", "bins": RangeAccumulator.summary()}``, the errors by ground-truth range of the
        first table reported (metric when there is one).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    sequences = open_sequences(data_path, DataConfig())
    samples = build_samples(sequences, [0], resolve_split(data_path, split))
    estimator = DepthEstimator(model_path, backend=backend)
    source = estimator.backend.metric
    unscaled = scaling == "metric" or (scaling == "auto" and source != "none")
    logger.info(
        "%s: metric source %s; reporting median-scaled metrics%s",
        model_path,
        source,
        " and metric ones (no scaling)" if unscaled else "",
    )
    median, metric, by_range = MetricsAccumulator(), MetricsAccumulator(), RangeAccumulator()
    skipped = 0
    for sequence_index, frame in progress_bar(samples, desc="evaluate", disable=not progress):
        sequence = sequences[sequence_index]
        gt = sequence.depth(frame)
        if gt is None or not valid_mask(gt).any():  # the pixels evaluate_depth_scalings compares
            why = "no ground-truth depth" if gt is None else "no valid ground-truth pixels (range, crop)"
            logger.warning("%s frame %d: %s: skipped", sequence.name, frame, why)
            skipped += 1
            continue
        pred = estimator(sequence.image(frame))
        scores = evaluate_depth_scalings(gt, pred, unscaled=unscaled)
        median.add(scores.median, scores.ratio, scores.pixel_ratio)
        if scores.metric is not None:
            metric.add(scores.metric)
        by_range.add_pixels(scores.gt, scores.pred if unscaled else scores.pred * scores.ratio)
    if not samples:
        raise ValueError(f"split '{split}' selected no frames of {data_path}")
    if not len(median):
        raise ValueError(
            f"split '{split}' of {data_path}: none of its {skipped} frames has valid ground-truth depth "
            "(see the warnings above)"
        )
    stats, pixelwise = median.scale_stats(), median.scale_stats(pixelwise=True)
    result = {
        "metric_source": source,
        "images": len(median),
        "skipped_frames": skipped,
        "scale_mean": stats["mean"],
        "scale_std": stats["std"],
        "pixel_scale_mean": pixelwise["mean"],
        "pixel_scale_std": pixelwise["std"],
        "scale_shape_std": median.scale_shape_std(),
        "median": median.mean(),
        "by_range": {"scaling": "metric" if unscaled else "median", "bins": by_range.summary()},
    }
    if unscaled:
        result["metric"] = metric.mean()
    return result
