"""Near obstacles: a model's depth errors by ground-truth range, beside what the network's resolution allows.

For each trained run, over the frames of a held-out drive with exact ground truth, through the serving
estimator (``DepthEstimator``, the one ``ssim-depth evaluate`` uses):

- errors by ground-truth range (``evaluation.RangeAccumulator``: per bin of 0-5, 5-10, 10-20, 20-40, 40-80 m
  the pixels, AbsRel and the median over images of median(gt/pred); metric depth for a metric model, else
  median-scaled per frame);
- the peer: the ground truth itself passed through the network's resolution (inverse depth area-resized to
  the network's input size, then resized back bilinearly as the estimator resizes its output), the error a
  perfect network of that resolution would make; each bin's AbsRel is printed as a multiple of it;
- where the obstacles within 5 m are and how they read: the 0-5 m bin per eighth of the image's columns.

One JSON record per run is appended to ``--results`` as soon as it is measured; a rerun skips the runs
already there.

    python bench/metric_depth.py --out runs/metric --seeds 0 1 --variants ms_lr5e4
    python bench/near_range.py --runs runs/metric/ms_lr5e4_s0 runs/metric/ms_lr5e4_s1 \
        --data runs/metric/heldout
    python bench/near_range.py --report     # the tables of the records so far
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from metric_depth import (  # bench/ is the script's folder
    add_run_arguments,
    read_records,
    record_runs,
)

from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.evaluation import RangeAccumulator, scale_ratio
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.estimator import DepthEstimator

NEAR = 5.0  # metres: the range whose pixels are located by image column
COLUMN_BANDS = 8


def through_resolution(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) depth (0 = none) as a perfect network of input ``size`` (h, w) would give it back: its inverse
    area-resized to ``size`` and bilinearly back (holes count as inverse depth 0, i.e. far)."""
    back = cv2.resize(
        inverse_at(depth, size), (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_LINEAR
    )
    return 1.0 / np.maximum(back, 1e-6)


def inverse_at(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) depth (0 = none) -> its inverse area-resized to ``size`` (h, w), float32; none counts as 0."""
    inverse = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0).astype(np.float32)
    return cv2.resize(inverse, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def measure_run(checkpoint: Path, data: Path, split: str = "test") -> dict:
    """The record of one trained model on the drive(s) of ``data``'s ``split`` (module docstring)."""
    sequences = open_sequences(data, DataConfig())
    samples = build_samples(sequences, [0], resolve_split(data, split))
    estimator = DepthEstimator(checkpoint, backend="torch")
    metric = estimator.backend.metric != "none"
    model, peer = RangeAccumulator(), RangeAccumulator()
    bands = [RangeAccumulator((0.0, NEAR)) for _ in range(COLUMN_BANDS)]
    for sequence_index, frame in progress_bar(samples, desc=checkpoint.parent.parent.name):
        sequence = sequences[sequence_index]
        gt = sequence.depth(frame)
        pred = estimator(sequence.image(frame))
        pred = pred if metric else pred * scale_ratio(gt, pred)  # scale-less: the frame's median scale
        model.add(gt, pred, median_scaling=False)
        peer.add(gt, through_resolution(gt, estimator.input_size), median_scaling=False)
        for band, columns in zip(bands, np.array_split(np.arange(gt.shape[1]), COLUMN_BANDS), strict=True):
            in_band = np.zeros_like(gt)
            in_band[:, columns] = gt[:, columns]
            band.add(in_band, pred, median_scaling=False)
    near = [band.summary()[0] for band in bands]
    return {
        "images": len(samples),
        "scaling": "metric" if metric else "median",
        "by_range": model.summary(),
        "network_resolution": peer.summary(),
        "near_by_column": [
            {key: row[key] for key in ("pixels", "abs_rel", "ratio", "images")} for row in near
        ],
    }


def _value(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(records: list[dict]) -> str:
    """Markdown: per record its errors by range beside the peer's, then its near pixels by image column."""
    lines = []
    for r in records:
        lines += [
            f"{r['run']} on {r['data']} ({r['images']} images, {r['scaling']})",
            "",
            "| range m | pixels | AbsRel | median(gt/pred) | AbsRel at the network's resolution "
            "| AbsRel x that | its median(gt/pred) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row, peer in zip(r["by_range"], r["network_resolution"], strict=True):
            low, high = row["range_m"]
            times = (
                "-"
                if row["abs_rel"] is None or not peer["abs_rel"]
                else f"{row['abs_rel'] / peer['abs_rel']:.1f}x"
            )
            lines.append(
                f"| {low:g}-{high:g} | {row['pixel_share']:.1%} | {_value(row['abs_rel'])} "
                f"| {_value(row['ratio'])} | {_value(peer['abs_rel'])} | {times} | {_value(peer['ratio'])} |"
            )
        total = sum(band["pixels"] for band in r["near_by_column"]) or 1
        shares = " / ".join(f"{band['pixels'] / total:.0%}" for band in r["near_by_column"])
        ratios = " / ".join(_value(band["ratio"], 2) for band in r["near_by_column"])
        lines += [
            "",
            f"within {NEAR:g} m, by eighth of the image's columns (left to right): pixels {shares}; "
            f"median(gt/pred) {ratios}",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "near_range.jsonl")
    parser.add_argument("--data", type=Path, default=Path("runs/metric/heldout"), help="held-out drive root")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.report:
        key = {"data": args.data.name}
        record_runs(parser, args, key, lambda checkpoint: measure_run(checkpoint, args.data, args.split))
    print(report(read_records(args.results)))


if __name__ == "__main__":
    main()
