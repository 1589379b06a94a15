"""Evaluate a trained model file on a split with ground truth: the ``ssim-depth evaluate`` application."""

from __future__ import annotations

from pathlib import Path

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.evaluation import METRIC_NAMES, MetricsAccumulator, evaluate_depth
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.estimator import DepthEstimator


def format_table(metrics: dict[str, float]) -> str:
    """Two-line table (names, values with 3 decimals) in the order abs_rel .. a3."""
    missing = [name for name in METRIC_NAMES if name not in metrics]
    if missing:
        raise ValueError(f"metrics dict is missing {missing}, expected keys {list(METRIC_NAMES)}")
    header = " | ".join(f"{name:>8}" for name in METRIC_NAMES)
    values = " | ".join(f"{metrics[name]:8.3f}" for name in METRIC_NAMES)
    return f"{header}\n{values}"


def evaluate_model(
    model_path: str | Path,
    data_path: str | Path,
    split: str | Path = "test",
    median_scaling: bool = True,
    backend: str = "auto",
    progress: bool = True,
) -> dict[str, float]:
    """Eigen-protocol metrics of a model (.pt, .onnx or .engine) over a split with ground-truth depth.

    Each image goes through :class:`DepthEstimator`, exactly as in serving, at the image's own resolution,
    on ``backend`` ("auto": the one that fits the model file).
    Returns the per-image mean of every metric plus ``images`` and, with median scaling, ``scale_mean`` and
    ``scale_std`` (the spread of per-image ratios shows how consistent the model's scale is).
    """
    sequences = open_sequences(data_path, DataConfig())
    samples = build_samples(sequences, [0], resolve_split(data_path, split))
    estimator = DepthEstimator(model_path, backend=backend)
    accumulator = MetricsAccumulator()
    for sequence_index, frame in progress_bar(samples, desc="evaluate", disable=not progress):
        sequence = sequences[sequence_index]
        gt = sequence.depth(frame)
        if gt is None:
            raise ValueError(f"{sequence.name} frame {frame}: no ground-truth depth to evaluate against")
        metrics, ratio = evaluate_depth(gt, estimator(sequence.image(frame)), median_scaling=median_scaling)
        accumulator.add(metrics, ratio if median_scaling else None)
    if not len(accumulator):
        raise ValueError(f"split '{split}' selected no frames of {data_path}")
    result = accumulator.mean()
    result["images"] = len(accumulator)
    if median_scaling:
        stats = accumulator.scale_stats()
        result["scale_mean"], result["scale_std"] = stats["mean"], stats["std"]
    return result
