"""Metric models on several held-out drives: how much issue 16's one-drive checks depend on the drive.

``bench/metric_depth.py`` measures each trained model on one held-out drive (data seed 2, 58 evaluated
frames). This script evaluates the same trained runs on one 60-frame drive per data seed of ``--drive-seeds``
(default 2-7, none of them a training seed; seed 2 is that drive, so its rows reproduce the bench's records),
rendered once into ``--out``, through the same evaluation (``apps.evaluate.evaluate_model``, no median
scaling for a metric model), and prints per run each drive's per-frame scale ratio median(gt)/median(pred)
(mean, std), the pixelwise one median(gt/pred), AbsRel and the camera-height scale's error against each
(``metric_depth.camera_height_errors``: the ground's normal fitted, and fixed to the mounting's up), and
both ratios over all frames pooled. One JSON record per (run, drive) is appended to ``--results`` as soon as
it is measured; a rerun skips the records already there.

    python bench/metric_depth.py --out runs/metric --seeds 0 --variants ms_lr5e4 velocity_lr5e4
    python bench/metric_heldout.py --runs runs/metric/ms_lr5e4_s0 runs/metric/velocity_lr5e4_s0
    python bench/metric_heldout.py --report     # the table of the records so far
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from metric_depth import (
    TRAINING_DATA_SEED,
    add_run_arguments,
    best_checkpoint,
    camera_height_errors,
    provenance,
    read_records,
    render_heldout,
)  # bench/ is the script's folder

from ssim_depth_core.apps.evaluate import evaluate_model

log = logging.getLogger("metric_heldout")


# the two per-frame scale ratios of evaluate_model's records: their key prefix and their formula
RATIOS = {"scale": "median(gt)/median(pred)", "pixel_scale": "median(gt/pred)"}


def pooled_scale(records: list[dict], ratio: str = "scale") -> tuple[float, float]:
    """Mean and (population) standard deviation of the per-frame scale ratios (``ratio``: a key of
    :data:`RATIOS`) of all ``records`` together, exactly, from each record's frame count, mean and population
    std."""
    counts = np.array([r["images"] for r in records], dtype=float)
    means = np.array([r[f"{ratio}_mean"] for r in records])
    stds = np.array([r[f"{ratio}_std"] for r in records])
    mean = float(counts @ means / counts.sum())
    second_moment = counts @ (stds**2 + means**2) / counts.sum()
    return mean, float(np.sqrt(max(second_moment - mean**2, 0.0)))


def _optional(record: dict, key: str) -> str:
    return f"{record[key]:.4f}" if key in record else "-"


def report(records: list[dict]) -> str:
    """Markdown: one row per (run, drive), then per scale ratio one row per run over its drives."""
    lines = [
        "| run | drive seed | frames | scale ratio mean | scale ratio std | pixelwise ratio mean "
        "| pixelwise ratio std | AbsRel in metres | AbsRel median-scaled | camera-height error median "
        "(vs ratio / vs pixelwise) | the same, mounting normal | scale ratio std at pixelwise scale "
        "| ratio gap median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    runs = list(dict.fromkeys(r["run"] for r in records))
    for run in runs:
        for r in sorted((r for r in records if r["run"] == run), key=lambda r: r["drive_seed"]):
            metric = f"{r['metric']['abs_rel']:.4f}" if "metric" in r else "-"
            lines.append(
                f"| {run} | {r['drive_seed']} | {r['images']} | {r['scale_mean']:.4f} | {r['scale_std']:.4f} "
                f"| {_optional(r, 'pixel_scale_mean')} | {_optional(r, 'pixel_scale_std')} "
                f"| {metric} | {r['median']['abs_rel']:.4f} "
                f"| {_optional(r, 'ground_error_median')} / {_optional(r, 'ground_error_pixelwise_median')} "
                f"| {_optional(r, 'ground_mounting_error_median')} "
                f"/ {_optional(r, 'ground_mounting_error_pixelwise_median')} "
                f"| {_optional(r, 'scale_shape_std')} | {_optional(r, 'ratio_gap_median')} |"
            )
    for ratio, formula in RATIOS.items():
        lines += [
            "",
            f"| run, per-frame {formula} | drives | per-drive std: mean (range) | drives with std <= 0.05 "
            "| per-drive mean: range | pooled mean | pooled std |",
            "|---|---:|---|---:|---|---:|---:|",
        ]
        for run in runs:
            own = [r for r in records if r["run"] == run and f"{ratio}_std" in r]
            if not own:
                continue
            stds = [r[f"{ratio}_std"] for r in own]
            means = [r[f"{ratio}_mean"] for r in own]
            mean, std = pooled_scale(own, ratio)
            lines.append(
                f"| {run} | {len(own)} | {np.mean(stds):.4f} ({min(stds):.4f}-{max(stds):.4f}) "
                f"| {sum(s <= 0.05 for s in stds)} of {len(own)} | {min(means):.3f}-{max(means):.3f} "
                f"| {mean:.4f} | {std:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "metric_heldout.jsonl")
    parser.add_argument("--drive-seeds", nargs="+", type=int, default=[2, 3, 4, 5, 6, 7])
    parser.add_argument("--out", type=Path, default=Path("runs/metric_heldout"), help="rendered drives")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.report:
        if TRAINING_DATA_SEED in args.drive_seeds:
            parser.error(f"data seed {TRAINING_DATA_SEED} renders bench/metric_depth.py's training drives")
        args.results.parent.mkdir(parents=True, exist_ok=True)
        done = {(r["run"], r["drive_seed"]) for r in read_records(args.results)}
        for run in args.runs:
            checkpoint = best_checkpoint(parser, run)
            for seed in args.drive_seeds:
                if (run.name, seed) in done:
                    continue
                drive = render_heldout(args.out / f"seed{seed}", seed)
                record = {
                    "run": run.name,
                    "drive_seed": seed,
                    **provenance(),
                    **evaluate_model(checkpoint, drive, "test", backend="torch", progress=False),
                    **camera_height_errors(checkpoint, drive),
                }
                with args.results.open("a") as stream:
                    stream.write(json.dumps(record) + "\n")
                done.add((run.name, seed))
                log.info(
                    "%s on drive seed %d: scale std %.4f, pixelwise %.4f",
                    run.name,
                    seed,
                    record["scale_std"],
                    record["pixel_scale_std"],
                )
    print(report(read_records(args.results)))


if __name__ == "__main__":
    main()
