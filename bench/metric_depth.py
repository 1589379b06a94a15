"""Metric depth without a hand-set factor, measured: velocity supervision, MS stereo, camera-height scale.

Trains the CPU recipe (``training/configs/synthetic_cpu.yaml``, its number of steps) per variant and seed on
synthetic stereo drives with odometry (seed 1, camera 02 targets of every drive), evaluates each on a held-out
drive of an unseen data seed (seed 2) through the serving estimator, without median scaling and with it, and
runs the camera-height ground-plane scale over the held-out frames. Variants:

- ``velocity``: the recipe (velocity supervision from the drives' odometry);
- ``ms``: temporal + stereo sources (Monodepth2's MS), no velocity term, the untrained net at 10 m
  (``model.initial_depth``: from the default ~0.2 m the stereo warp's disparities all leave the image and the
  baseline never pulls the scale);
- ``none``: photometric only, scale-less: the peer for the camera-height scale;
- ``ms_default_init``: ``ms`` from the default initial depth (about 0.2 m), which shows why ``ms`` needs
  ``model.initial_depth``;
- ``velocity_init10``: the recipe with the untrained net at 10 m (``model.initial_depth=10``), as
  ``make demo`` trains it;
- ``velocity_288x96``, ``ms_288x96``: ``velocity`` and ``ms`` trained at 288x96 instead of 192x64 (2.25x the
  pixels, the same steps): is the per-frame scale's spread a matter of the input's resolution?
- ``velocity_lr5e4``, ``ms_lr5e4``: ``velocity`` and ``ms`` at 2.5x the learning rate (5e-4), the same steps:
  the light network gained 0.02 AbsRel from it (bench/studies/light_cpu.yaml); does the better shape narrow
  the per-frame scale's spread?
- ``none_init10``: ``none`` from a 10 m start: would a scale-less model whose depths start near metres,
  instead of settling about 40x too near as ``none``'s do, give the camera-height fit a better shape? No:
  photometric training from 10 m collapses to the minimum depth (every pixel 0.1 m) on seeds 0 and 1.
- ``none_near``: ``none`` with ten times more room below: ``model.min_depth=0.01`` and the same start
  (``model.initial_depth=0.2``, where ``none`` starts by default). ``none`` settles about 40x too near, so
  everything within about 4 m of the camera, the nearest ground included, sits at its 0.1 m bound: does
  the camera-height fit miss because of that? No (docs/training.md).
- ``ms_lr5e4_zeros``, ``ms_lr5e4_smooth1e4``: ``ms_lr5e4`` with zero padding, and with a tenth of the
  smoothness weight (1e-4). Its obstacles within 5 m, all right of the image's centre on the held-out
  drive, read too far (median gt/pred 0.79-0.81, AbsRel 0.35-0.40 there, against 0.05-0.08 at 5-20 m),
  worst at the image's right border (0.67, seed 0), while the ground truth passed through the network's
  resolution reads them right (1.000, AbsRel 0.011): is it the border's padding, or the smoothness term's
  pull towards the background? Rule fixed before the runs: a variant removes the bias if its 0-5 m ratio
  is >= 0.9 on seeds 0 and 1 with metric AbsRel at most 0.005 above ``ms_lr5e4``'s mean (0.104).
  Neither does (0.866, 0.882 zero padding; 0.878, 0.865 smoothness 1e-4), though both cut the 0-5 m AbsRel
  from 0.35-0.40 to 0.22-0.25 and neither costs accuracy elsewhere.
- ``ms_lr5e4_zeros_smooth1e4``: both changes together, under the same rule.

Is the per-frame ratio of medians' spread the scale's or the depth map's shape? ``evaluate_model`` also
reports ``scale_shape_std``: the std of median(gt)/median(pred) once each frame is scaled by its own pixelwise
ratio median(gt/pred), the spread a model whose scale were exactly the same on every frame would still show;
``camera_height_errors`` reports ``ratio_gap_*``: |median(gt/pred) / (median(gt)/median(pred)) - 1| per frame,
the camera-height check's error for a scale exactly at each frame's pixelwise ratio. Rule fixed before
these were measured (velocity s0 and ms_lr5e4 s0 retrained, 2026-12-07): the std check's miss is the shape's,
not the scale's, if ``scale_shape_std`` > 0.05 on every measured velocity/MS model; the camera-height
check's miss is the reference's if on each scale-less model ``ratio_gap_median`` is at least the
camera-height error against the pixelwise ratio.
Both hold: ``scale_shape_std`` 0.051, 0.054 (``ms_lr5e4``), 0.055, 0.061 (``velocity``); ``ratio_gap_median``
3.4 % and 5.2 % against 3.4 % and 3.3 % (``none_near``), on all six drives of ``bench/metric_heldout.py`` too
(docs/training.md). Next question, fixed before its runs: does the most accurate variant so far,
``ms_lr5e4_smooth1e4`` (AbsRel in metres 0.095), bring the shape's part to 0.05 or below on both seeds?
No: reruns of seeds 0 and 1 give 0.040 and 0.056 (seed 0's rerun meets the spread check, 0.043, where the
same seed's record spreads 0.058).

Is the shape's part the training budget's? ``bench/shape_by_surface.py`` puts it on the boxes (facades,
trees, poles, cars): with their pixels exact it falls to 0.015-0.029, with the ground's exact only to
0.032-0.050. ``ms_lr5e4_smooth1e4_steps2x`` trains that variant for twice the recipe's steps (20 epochs, the
drop after 19: 4,900 steps), outside the issue's acceptance, which fixes the steps. Rule fixed before its
runs: the budget limits the shape's part if at twice the steps ``scale_shape_std`` on the held-out drive is
<= 0.05 on seeds 0 and 1 and the boxes' AbsRel is below the same seed's rerun at the recipe's steps (0.147
and 0.173, ``docs/studies/shape_by_surface.jsonl``). Not met, by a hair: the boxes' AbsRel falls (0.123,
0.128) but the shape's part is 0.044 and 0.0504 (the issue's spread 0.046 and 0.053).

The same bench finds the run's own photometric error on the box pixels read more than 1.25x off 3-4x lower
at the truth than at the prediction (0.013-0.019 against 0.050-0.059, eight runs): the objective prefers the
truth there, the training has not reached it; and auto-masking drops 24-28 % of those pixels at the
prediction against 6-11 % at the truth, so a box once read wrong partly stops getting a gradient.
``ms_lr5e4_smooth1e4_nomask`` trains that variant without auto-masking (the recipe's steps; the held-out
drive is static, so what auto-masking protects, objects moving with the camera, is not scored). Rule fixed
before its runs: auto-masking holds the boxes back if without it the boxes' AbsRel and the share of box
pixels off by more than 1.25x are both below the same seed's rerun with it (0.147 / 21.5 % and 0.173 /
28.9 %) on seeds 0 and 1; the spread check is reported beside it. Not met: seed 1 improves (0.152, 26.8 %),
seed 0 gets worse (0.166, 24.2 %); the issue's spread 0.0497 and 0.0516.

The camera-height scale runs twice over the held-out frames: with the ground plane's normal fitted (the
node's default) and with it fixed to the mounting's up (``ground_normal: mounting``).

One JSON record per (variant, seed) is appended to ``--results`` as soon as it is measured; a rerun skips the
records already there and resumes an interrupted training run from its last checkpoint.

    python bench/metric_depth.py --out runs/metric --seeds 0 1 \\
        --variants velocity ms none ms_default_init velocity_init10
    python bench/metric_depth.py --report     # the table of the records so far, training nothing

Prints a markdown table for docs/training.md (mean +- std over seeds) and the issue's acceptance checks.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import platform
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

from ssim_depth_core.apps.evaluate import evaluate_model
from ssim_depth_core.config import DataConfig, load_config
from ssim_depth_core.data import kitti_layout as kl
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.synthetic import CAMERA_HEIGHT, generate_dataset
from ssim_depth_core.evaluation import evaluate_depth_scalings
from ssim_depth_core.runtime.estimator import DepthEstimator
from ssim_depth_core.runtime.scale import GroundPlaneScale, GroundPlaneSettings
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
MS = ["data.stereo=true", "loss.weights.velocity=0", "model.initial_depth=10"]
AT_288X96 = ["data.width=288", "data.height=96"]
LR_5E4 = ["optim.learning_rate=5e-4"]
VARIANTS = {
    "velocity": [],
    "ms": MS,
    "none": ["loss.weights.velocity=0"],
    "ms_default_init": ["data.stereo=true", "loss.weights.velocity=0"],
    "velocity_init10": ["model.initial_depth=10"],
    "velocity_288x96": AT_288X96,
    "ms_288x96": [*MS, *AT_288X96],
    "velocity_lr5e4": LR_5E4,
    "ms_lr5e4": [*MS, *LR_5E4],
    "none_init10": ["loss.weights.velocity=0", "model.initial_depth=10"],
    "none_near": ["loss.weights.velocity=0", "model.min_depth=0.01", "model.initial_depth=0.2"],
    "ms_lr5e4_zeros": [*MS, *LR_5E4, "model.padding_mode=zeros"],
    "ms_lr5e4_smooth1e4": [*MS, *LR_5E4, "loss.weights.smoothness=1e-4"],
    "ms_lr5e4_zeros_smooth1e4": [*MS, *LR_5E4, "model.padding_mode=zeros", "loss.weights.smoothness=1e-4"],
    "ms_lr5e4_smooth1e4_steps2x": [
        *MS,
        *LR_5E4,
        "loss.weights.smoothness=1e-4",
        "optim.epochs=20",
        "optim.lr_step_epochs=19",
    ],
    "ms_lr5e4_smooth1e4_nomask": [*MS, *LR_5E4, "loss.weights.smoothness=1e-4", "loss.automask=false"],
}
TRAINING_DATA_SEED, HELDOUT_SEED = 1, 2  # data seeds of the training drives and of the held-out drive
# the acceptance applies to the velocity-supervised and MS models of the recipe's number of steps
ACCEPTANCE_VARIANTS = (
    "velocity",
    "ms",
    "velocity_288x96",
    "ms_288x96",
    "velocity_lr5e4",
    "ms_lr5e4",
    "ms_lr5e4_zeros",
    "ms_lr5e4_smooth1e4",
    "ms_lr5e4_zeros_smooth1e4",
)
# ... and its camera-height check to the scale-less ones
SCALE_LESS_VARIANTS = ("none", "none_init10", "none_near")
# camera_height_errors' key prefix per ground_normal of the camera-height scale
GROUND_SCALES = {"ground": "fitted", "ground_mounting": "mounting"}
log = logging.getLogger("metric_depth")


def prepare_data(out: Path, drives: int, frames: int) -> tuple[Path, Path, Path]:
    """Stereo training drives (seed 1) with a split of every drive's camera-02 frames, and a held-out drive
    (seed 2), rendered once. Returns (data, its split file, held-out root)."""
    data, heldout = out / "data", out / "heldout"
    split = data / "splits" / "all_left" / "train_files.txt"
    if not split.is_file():
        generate_dataset(  # overwrite: what is there is an interrupted render
            data,
            seed=TRAINING_DATA_SEED,
            drives=drives,
            frames=frames,
            bag="none",
            stereo=True,
            overwrite=True,
        )
        drive_dirs = sorted(p for p in data.glob("*/*_sync") if p.is_dir())
        entries = [(f"{d.parent.name}/{d.name}", i) for d in drive_dirs for i in range(1, frames - 1)]
        kl.write_split(split, entries)
    render_heldout(heldout, HELDOUT_SEED)
    return data, split, heldout


def render_heldout(folder: Path, seed: int) -> Path:
    """One 60-frame held-out drive of data seed ``seed`` in ``folder`` (rendered once)."""
    if not (folder / "splits").is_dir():
        generate_dataset(folder, seed=seed, drives=1, frames=60, bag="none", overwrite=True)  # or interrupted
    return folder


def train(
    variant: str, seed: int, data: Path, split: Path, run: Path, config_path: Path
) -> tuple[Path, float]:
    """Train one variant (resuming an interrupted run); returns best.pt and the training minutes."""
    overrides = [f"seed={seed}", f"data.train_split={split}", "data.val_split=none", *VARIANTS[variant]]
    config = load_config(config_path, overrides)
    resume = (run / "checkpoints" / "last.pt").is_file()
    tic = time.perf_counter()
    Trainer(config, data, run, resume=resume).fit()
    return run / "checkpoints" / "best.pt", (time.perf_counter() - tic) / 60


def camera_height_errors(checkpoint: Path, heldout: Path) -> dict[str, float]:
    """Camera-height scale vs median(gt) / median(pred) per frame, over the held-out drive in order: the
    smoothed scale the node applies (``ground_error_*``) and each frame's own fit (``ground_frame_error_*``);
    the same against the pixelwise ratio median(gt / pred) (``*_pixelwise_*``); all of it again with the
    plane's normal fixed to the mounting's up (``ground_mounting_*``). ``ground_fitted`` and
    ``ground_mounting_fitted`` count the frames with a plane. ``ratio_gap_*``: |median(gt / pred) /
    (median(gt) / median(pred)) - 1| per frame, the error a scale exactly at each frame's pixelwise ratio
    would show against the ratio of medians."""
    (sequence,) = open_sequences(heldout, DataConfig())
    estimator = DepthEstimator(checkpoint, backend="torch")
    scales = {
        prefix: GroundPlaneScale(GroundPlaneSettings(camera_height=CAMERA_HEIGHT, ground_normal=normal))
        for prefix, normal in GROUND_SCALES.items()
    }
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for index in range(len(sequence)):
        depth = estimator(sequence.image(index))
        scores = evaluate_depth_scalings(sequence.depth(index), depth, crop=None, unscaled=False)
        references = {"": scores.ratio, "_pixelwise": scores.pixel_ratio}
        errors["ratio_gap"].append(abs(scores.pixel_ratio / scores.ratio - 1))
        for prefix, ground in scales.items():
            state = ground.update(depth, sequence.intrinsics)
            for suffix, reference in references.items():
                if state.scale is not None:
                    errors[f"{prefix}_error{suffix}"].append(abs(state.scale / reference - 1))
                if state.frame_scale is not None:
                    errors[f"{prefix}_frame_error{suffix}"].append(abs(state.frame_scale / reference - 1))
    summary = {
        "ground_frames": len(sequence),
        "ratio_gap_median": float(np.median(errors["ratio_gap"])),
        "ratio_gap_p90": float(np.percentile(errors["ratio_gap"], 90)),
    }
    for prefix in scales:
        summary[f"{prefix}_fitted"] = len(errors[f"{prefix}_frame_error"])
        for name in ("error", "frame_error", "error_pixelwise", "frame_error_pixelwise"):
            values = errors[f"{prefix}_{name}"]
            summary[f"{prefix}_{name}_median"] = float(np.median(values)) if values else float("nan")
            summary[f"{prefix}_{name}_p90"] = float(np.percentile(values, 90)) if values else float("nan")
    return summary


def add_run_arguments(parser: argparse.ArgumentParser, results: str) -> None:
    """``--runs`` (finished training runs), ``--results`` (default docs/studies/``results``) and
    ``--report``, as the scripts that measure this bench's trained runs take them."""
    parser.add_argument(
        "--runs", nargs="+", type=Path, default=[], help="training run folders (checkpoints/)"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "studies" / results)
    parser.add_argument(
        "--report", action="store_true", help="print the tables of --results; measure nothing"
    )


def best_checkpoint(parser: argparse.ArgumentParser, run: Path) -> Path:
    """``run``'s checkpoints/best.pt; a usage error when the run has none."""
    checkpoint = run / "checkpoints" / "best.pt"
    if not checkpoint.is_file():
        parser.error(f"{run}: no checkpoints/best.pt (a finished bench/metric_depth.py run?)")
    return checkpoint


def record_runs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, key: dict, measure: Callable[[Path], dict]
) -> None:
    """Measure each run of ``args.runs`` (``measure(its best.pt)``) not yet in ``args.results`` with the same
    ``key`` fields, appending ``{"run": name, **key, date, machine, **measured}`` as soon as it is done."""
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        checkpoint = best_checkpoint(parser, run)
        record = {"run": run.name, **key}
        if any(all(r.get(k) == v for k, v in record.items()) for r in read_records(args.results)):
            log.info("%s (%s): already in %s", run.name, key, args.results)
            continue
        record.update({**provenance(), **measure(checkpoint)})
        with args.results.open("a") as stream:
            stream.write(json.dumps(record) + "\n")


def provenance() -> dict[str, str]:
    """When and where a record was measured."""
    return {"date": date.today().isoformat(), "machine": f"{platform.machine()} {platform.node()}"}


def read_records(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if not np.isnan(v)]  # nan: nothing measured (no ground plane was fitted)
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def _ground_errors(runs: list[dict], prefix: str) -> str:
    """Camera-height error medians of ``runs``, smoothed / per frame (mean +- std over seeds)."""
    smoothed, per_frame = (
        [r.get(f"{prefix}_{name}_median", np.nan) for r in runs] for name in ("error", "frame_error")
    )
    return f"{_mean_std(smoothed)} / {_mean_std(per_frame)}"


def report(records: list[dict]) -> str:
    """Markdown table per variant (mean +- std over seeds) and the issue's acceptance checks per record."""
    lines = [
        "| variant | seeds | AbsRel in metres | AbsRel median-scaled | a1 in metres | scale ratio mean | "
        "scale ratio std | camera-height error median (smoothed / per frame) | the same, mounting normal "
        "| minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = []
    for variant in VARIANTS:
        runs = [r for r in records if r["variant"] == variant]
        if not runs:
            continue
        metric = [r["metric"] for r in runs if "metric" in r]
        lines.append(
            f"| {variant} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {_mean_std([m['abs_rel'] for m in metric])} "
            f"| {_mean_std([r['median']['abs_rel'] for r in runs])} "
            f"| {_mean_std([m['a1'] for m in metric])} "
            f"| {_mean_std([r['scale_mean'] for r in runs])} "
            f"| {_mean_std([r['scale_std'] for r in runs])} "
            f"| {_ground_errors(runs, 'ground')} | {_ground_errors(runs, 'ground_mounting')} "
            f"| {min(r['train_minutes'] for r in runs):.1f}-{max(r['train_minutes'] for r in runs):.1f} |"
        )
        for r in runs:
            name = f"{variant} seed {r['seed']}"
            if variant in ACCEPTANCE_VARIANTS and "metric" in r:
                ratio = r["metric"]["abs_rel"] / r["median"]["abs_rel"]
                checks.append(f"{name}: metric/median AbsRel {ratio:.3f} (<= 1.1: {ratio <= 1.1})")
                checks.append(f"{name}: scale std {r['scale_std']:.3f} (<= 0.05: {r['scale_std'] <= 0.05})")
                if "scale_shape_std" in r:
                    shape = r["scale_shape_std"]
                    checks.append(f"{name}: its shape's part {shape:.3f} (> 0.05: {shape > 0.05})")
                ok = 0.95 <= r["scale_mean"] <= 1.05
                checks.append(f"{name}: scale mean {r['scale_mean']:.3f} (0.95-1.05: {ok})")
            if variant in SCALE_LESS_VARIANTS:
                for key in (
                    f"{prefix}_{name}_median" for prefix in GROUND_SCALES for name in ("error", "frame_error")
                ):
                    if key in r:
                        checks.append(f"{name}: {key} {r[key]:.3f} (<= 0.05: {r[key] <= 0.05})")
                if "ratio_gap_median" in r:
                    gap, pixelwise = r["ratio_gap_median"], r["ground_error_pixelwise_median"]
                    checks.append(
                        f"{name}: ratio gap median {gap:.3f}, camera-height error vs pixelwise "
                        f"{pixelwise:.3f} (gap >= error: {gap >= pixelwise})"
                    )
    return "\n".join([*lines, "", *checks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/metric"))
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "studies" / "metric_depth.jsonl")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "configs" / "synthetic_cpu.yaml")
    parser.add_argument("--variants", nargs="+", default=["velocity", "ms", "none"], choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--drives", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--report", action="store_true", help="print the table of --results; train nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.report:
        print(report(read_records(args.results)))
        return
    data, split, heldout = prepare_data(args.out, args.drives, args.frames)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in args.variants:
            if any((r["variant"], r["seed"]) == (variant, seed) for r in read_records(args.results)):
                log.info("%s seed %d: already in %s", variant, seed, args.results)
                continue
            checkpoint, minutes = train(
                variant, seed, data, split, args.out / f"{variant}_s{seed}", args.config
            )
            record = {
                "variant": variant,
                "seed": seed,
                "train_minutes": round(minutes, 2),
                **provenance(),
                **evaluate_model(checkpoint, heldout, "test", backend="torch", progress=False),
                **camera_height_errors(checkpoint, heldout),
            }
            with args.results.open("a") as stream:
                stream.write(json.dumps(record) + "\n")
            log.info("%s seed %d: %s", variant, seed, record)
    print(report(read_records(args.results)))


if __name__ == "__main__":
    main()
