"""Where a model's shape error lives: the ground plane against the boxes (facades, trees, poles, cars).

``ssim-depth evaluate``'s ``scale_shape_std`` is the spread over frames of the scale ratio median(gt) /
median(pred) that remains once every frame is scaled by its own pixelwise ratio median(gt / pred): the part
of issue 16's spread that no scale can remove. This script splits it by surface on a synthetic held-out
drive, whose renderer labels every pixel (hit id 0: the ground plane, road and sidewalks; above 0: a box).
For each trained run, over the drive's test frames, through the serving estimator and with
``evaluate_depth``'s pixels (Garg crop, 1e-3-80 m):

- per surface: its share of the pixels, AbsRel (in metres for a metric model, else median-scaled per frame)
  and the spread over frames of the surface's median(gt / pred) relative to the frame's pixelwise ratio (how
  much that surface's scale moves against the frame's);
- the shape's part as it is, with the ground's pixels replaced by the truth (at the frame's pixelwise
  scale) and with the boxes' replaced: how much of it each surface carries;
- on the box pixels that read more than ``OFF`` x off (``ObjectiveAtTruth``): the run's own photometric
  error with the truth as depth and with its prediction, and how many auto-masking drops: does the
  objective prefer the truth there (then the training has not reached it), or is it ambiguous?

The frames are the held-out folder's (``bench/metric_depth.py`` renders it, data seed ``--drive-seed``); the
hit ids come from rendering the same drive again, which must give the folder's images. One JSON record per
run is appended to ``--results``; a rerun skips the runs already there.

    python bench/metric_depth.py --out runs/metric --seeds 0 1 --variants ms_lr5e4
    python bench/shape_by_surface.py --runs runs/metric/ms_lr5e4_s0 runs/metric/ms_lr5e4_s1 \\
        --data runs/metric/heldout
    python bench/shape_by_surface.py --report     # the table of the records so far
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from metric_depth import (  # bench/ is the script's folder
    HELDOUT_SEED,
    add_run_arguments,
    read_records,
    record_runs,
)
from near_range import inverse_at

from ssim_depth_core.checkpoint import load_checkpoint
from ssim_depth_core.config import STEREO, DataConfig, TrainConfig, source_slots, stored_config
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.synthetic import CAMERA, STEREO_CAMERA, DriveSpec, SyntheticDrive
from ssim_depth_core.data.triplets import build_samples
from ssim_depth_core.evaluation import RangeAccumulator, evaluate_depth_scalings, scale_ratio, valid_mask
from ssim_depth_core.geometry import warp
from ssim_depth_core.imaging import resize_image
from ssim_depth_core.losses.photometric import reprojection_error
from ssim_depth_core.losses.ssim import SSIMLoss
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.estimator import DepthEstimator

SURFACES = ("ground", "boxes")
OFF = 1.25  # a box pixel reads off when its prediction is more than this factor from the truth, either way


def surface_masks(ids: np.ndarray) -> dict[str, np.ndarray]:
    """(H, W) hit ids of a synthetic frame (-1 sky, 0 ground plane, b + 1 box b) -> a mask per surface."""
    return {"ground": ids == 0, "boxes": ids > 0}


def measure_frames(
    frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: bool, crop: str | None = "garg"
) -> dict:
    """The record's figures (module docstring) from (gt depth, predicted depth, hit ids) per frame, each
    (H, W); ``metric``: compare the prediction as it is, else median-scaled per frame; ``crop`` as
    ``evaluate_depth``'s."""
    errors = {name: RangeAccumulator((0.0, 80.0), min_pixels=1) for name in SURFACES}
    relative: dict[str, list[float]] = {name: [] for name in SURFACES}
    shape = {"as_is": [], **{f"{name}_exact": [] for name in SURFACES}}
    images = 0
    for gt, pred, ids in frames:
        scores = evaluate_depth_scalings(gt, pred, crop=crop, unscaled=False)
        compared = pred if metric else pred * scores.ratio
        shaped = pred * scores.pixel_ratio  # every frame at exactly its own pixelwise scale
        valid = valid_mask(gt, crop=crop)
        shape["as_is"].append(scores.ratio / scores.pixel_ratio)
        for name, surface in surface_masks(ids).items():
            inside = valid & surface
            errors[name].add_pixels(gt[inside], compared[inside])
            if inside.any():
                relative[name].append(float(np.median(gt[inside] / shaped[inside])))
            shape[f"{name}_exact"].append(scale_ratio(gt, np.where(surface, gt, shaped), crop=crop))
        images += 1
    if not images:
        raise ValueError("no frames to measure")
    total = sum(errors[name].summary()[0]["pixels"] for name in SURFACES)
    surfaces = {}
    for name in SURFACES:
        (summary,) = errors[name].summary()
        surfaces[name] = {
            "pixel_share": summary["pixels"] / total,
            "abs_rel": summary["abs_rel"],
            "relative_ratio_median": float(np.median(relative[name])) if relative[name] else None,
            "relative_ratio_std": float(np.std(relative[name])) if relative[name] else None,
        }
    return {
        "images": images,
        "scaling": "metric" if metric else "median",
        "surfaces": surfaces,
        "shape_std": {key: float(np.std(ratios)) for key, ratios in shape.items()},
    }


class ObjectiveAtTruth:
    """Is a box pixel that reads off by more than :data:`OFF` x (either way) the objective's doing, or the
    training's? Per frame, at the run's training resolution and with its photometric error (SSIM form,
    window, alpha), the per-pixel minimum over its sources (temporal neighbours from the drive's exact
    poses, and the stereo partner if it trained with one) with the ground truth as depth and with the
    prediction; and how many of those pixels auto-masking drops (a raw source's error below the warped one).
    The drive must render the partner camera (``stereo``) for a stereo-trained run."""

    def __init__(self, config: TrainConfig, drive: SyntheticDrive) -> None:
        self.drive, self.alpha = drive, config.loss.alpha
        self.size = (config.data.height, config.data.width)
        self.sources = source_slots(config.data.frame_ids, config.data.stereo)
        self.ssim = SSIMLoss(
            config.loss.ssim_form,
            config.loss.ssim_weights,
            config.loss.ssim_exponents,
            config.loss.ssim_window,
        )
        intrinsics = drive.intrinsics.scaled(config.data.width, config.data.height)
        self.K, self.inv_K = intrinsics.K()[None], intrinsics.inv_K()[None]
        self.off_pixels = self.box_pixels = 0
        self.sums = {"error_at_truth": 0.0, "error_at_prediction": 0.0}
        self.masked = {"automasked_at_truth": 0, "automasked_at_prediction": 0}

    def _view(self, index: int, camera: str = CAMERA) -> torch.Tensor:
        image = resize_image(self.drive.render(index, camera).rgb, self.size[1], self.size[0])
        return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]

    def _sources(self, index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each source of frame ``index``: its image at the training resolution and the transform from
        frame ``index``'s camera to its camera (rendered once per frame: the drive caches one frame per
        camera)."""
        views = []
        for source in self.sources:
            camera, frame = (STEREO_CAMERA, index) if source == STEREO else (CAMERA, index + source)
            to_source = (
                np.linalg.inv(self.drive.T_world_camera(camera)[frame]) @ self.drive.T_world_cam[index]
            )
            views.append((self._view(frame, camera), torch.from_numpy(to_source.astype(np.float32))[None]))
        return views

    def _errors(
        self, target: torch.Tensor, sources: list[tuple[torch.Tensor, torch.Tensor]], depth: np.ndarray | None
    ) -> np.ndarray:
        """(h, w) minimum over ``sources`` (:meth:`_sources`) of the error of each one warped into
        ``target`` with ``depth`` (h, w); with None, of the sources as they are (auto-masking's reference)."""
        errors = []
        for image, transform in sources:
            if depth is not None:
                depth_map = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
                image = warp(image, depth_map, transform, self.K, self.inv_K)
            errors.append(reprojection_error(image, target, self.ssim, self.alpha))
        return torch.cat(errors, 1).amin(1)[0].numpy()

    def add(self, index: int, gt: np.ndarray, pred: np.ndarray, ids: np.ndarray) -> None:
        """Frame ``index``'s (H, W) ground truth, prediction in metres (a scale-less one median-scaled) and
        hit ids."""
        compared = valid_mask(gt, crop=None) & (ids > 0)
        whole = (
            cv2.resize(compared.astype(np.float32), self.size[::-1], interpolation=cv2.INTER_AREA) > 1 - 1e-6
        )
        truth, predicted = (1.0 / np.maximum(inverse_at(d, self.size), 1e-6) for d in (gt, pred))
        off = whole & (np.abs(np.log(predicted / truth)) > np.log(OFF))
        self.box_pixels += int(np.count_nonzero(whole))
        self.off_pixels += int(np.count_nonzero(off))
        if not off.any():
            return
        target, sources = self._view(index), self._sources(index)
        raw = self._errors(target, sources, None)[off]
        for name, depth in (("truth", truth), ("prediction", predicted)):
            warped = self._errors(target, sources, depth)[off]
            self.sums[f"error_at_{name}"] += float(warped.sum())
            self.masked[f"automasked_at_{name}"] += int(np.count_nonzero(raw < warped))

    def summary(self) -> dict:
        """``off_share`` of the box pixels, then over those the mean errors and the auto-masked shares."""
        count = max(self.off_pixels, 1)
        return {
            "off_share": self.off_pixels / max(self.box_pixels, 1),
            **{name: total / count for name, total in self.sums.items()},
            **{name: masked / count for name, masked in self.masked.items()},
        }


def measure_run(checkpoint: Path, heldout: Path, drive: SyntheticDrive, split: str = "test") -> dict:
    """The record of one trained model on the drive folder ``heldout``, which ``drive`` rendered:
    :func:`measure_frames`' figures and :class:`ObjectiveAtTruth`'s under ``off_boxes``."""
    (sequence,) = open_sequences(heldout, DataConfig())
    samples = build_samples([sequence], [0], resolve_split(heldout, split))
    estimator = DepthEstimator(checkpoint, backend="torch")
    objective = ObjectiveAtTruth(stored_config(load_checkpoint(checkpoint)["config"], checkpoint), drive)
    metric = estimator.backend.metric != "none"
    frames = []
    for _, index in progress_bar(samples, desc=checkpoint.parent.parent.name):
        image = sequence.image(index)
        rendered = drive.render(index)
        if not np.array_equal(image, rendered.rgb):
            raise ValueError(f"{heldout} frame {index}: not the image {drive.name} renders (seed?)")
        gt, pred = sequence.depth(index), estimator(image)
        frames.append((gt, pred, rendered.ids))
        objective.add(index, gt, pred if metric else pred * scale_ratio(gt, pred), rendered.ids)
    record = measure_frames(frames, metric)
    return {**record, "off_boxes": objective.summary()}


def heldout_drive(seed: int, frames: int = 60) -> SyntheticDrive:
    """The held-out drive ``metric_depth.render_heldout`` writes for data seed ``seed``, with its stereo
    partner camera (which does not change camera 02's frames)."""
    return SyntheticDrive(DriveSpec.for_dataset(seed, 0, 1, frames), stereo=True)


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(records: list[dict]) -> str:
    """Markdown: one row per record."""
    lines = [
        "| run | drive seed | images | ground's pixel share | AbsRel ground / boxes | each surface's median"
        "(gt/pred) against the frame's, std over frames: ground / boxes | shape's part of the ratio's std: "
        f"as is / ground exact / boxes exact | box pixels off > {OFF}x | their photometric error at the "
        "truth / at the prediction | of them auto-masked at the truth / at the prediction |",
        "|---|---:|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in records:
        ground, boxes = r["surfaces"]["ground"], r["surfaces"]["boxes"]
        shape, off = r["shape_std"], r["off_boxes"]
        cells = [
            r["run"],
            r["drive_seed"],
            r["images"],
            f"{ground['pixel_share']:.1%}",
            " / ".join(_value(surface["abs_rel"]) for surface in (ground, boxes)),
            " / ".join(_value(surface["relative_ratio_std"]) for surface in (ground, boxes)),
            " / ".join(f"{shape[key]:.3f}" for key in ("as_is", "ground_exact", "boxes_exact")),
            f"{off['off_share']:.1%}",
            f"{off['error_at_truth']:.4f} / {off['error_at_prediction']:.4f}",
            f"{off['automasked_at_truth']:.1%} / {off['automasked_at_prediction']:.1%}",
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, "shape_by_surface.jsonl")
    parser.add_argument("--data", type=Path, default=Path("runs/metric/heldout"), help="held-out drive root")
    parser.add_argument("--drive-seed", type=int, default=HELDOUT_SEED, help="data seed that rendered --data")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.report:
        drive = heldout_drive(args.drive_seed)
        record_runs(
            parser,
            args,
            {"drive_seed": args.drive_seed},
            lambda checkpoint: measure_run(checkpoint, args.data, drive, args.split),
        )
    print(report(read_records(args.results)))


if __name__ == "__main__":
    main()
