"""Where the CPU recipe's accuracy is limited: reference points on the data of ``bench/accuracy.py``.

- **Position prior**: one fixed depth map (per pixel, the median of the training drives' ground truth) for
  every held-out frame, evaluated like a model: what a network scores without reading the image.
- **True motion vs pose net**: the same depth network and loss trained twice for the same steps, once with
  the pose net (the shipped recipe, the peer) and once with the drives' true camera motion in its place: how
  much a perfect pose net would buy. Both are evaluated after every chunk on the held-out drive and on a
  drive they trained on (the gap between the two is generalisation, the rest is fitting).

    python bench/accuracy_limits.py --out runs/limits --steps 1200 --eval-every 400

Both runs use no horizontal flips (a flip would mirror the true motion too); colour jitter stays on.
Writes OUT/limits.json and prints markdown tables for docs/training.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from accuracy import add_data_arguments, prepare_drives  # the sibling script bench/accuracy.py
from torch.utils.data import DataLoader

from ssim_depth_core.apps.evaluate import evaluate_model
from ssim_depth_core.checkpoint import save_atomic
from ssim_depth_core.config import DataConfig, load_config, to_dict
from ssim_depth_core.data.sources import open_sequences, resolve_split
from ssim_depth_core.data.triplets import SkippedSample, TripletDataset, build_samples, collate_skipping
from ssim_depth_core.evaluation import MetricsAccumulator, evaluate_depth
from ssim_depth_core.losses.objective import Objective
from ssim_depth_core.models.monodepth import MonodepthModel
from ssim_depth_core.progress import progress_bar

log = logging.getLogger("accuracy_limits")


class TrueMotionDataset(TripletDataset):
    """Triplets plus ``true_transforms`` (F-1, 4, 4): target camera -> each source camera, from the poses."""

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        if not isinstance(sample, SkippedSample):
            s, frame = self.samples[index]
            sequence = self.sequences[s]
            target = sequence.pose(frame)
            transforms = [np.linalg.inv(sequence.pose(frame + f)) @ target for f in self.frame_ids[1:]]
            sample["true_transforms"] = torch.from_numpy(np.stack(transforms)).float()
        return sample


class TrueMotionModel(MonodepthModel):
    """The depth net warping with the true camera motion instead of the pose net's estimate.

    Translations are multiplied by ``translation_scale``: self-supervised depth has no metric scale, and this
    keeps the depths in the range a pose-net run settles in, so both runs start from the same place.
    """

    def __init__(self, model_config, frame_ids, translation_scale: float) -> None:
        super().__init__(model_config, frame_ids)
        self.translation_scale = translation_scale

    def source_transforms(self, batch):
        transforms = batch["true_transforms"].clone()
        transforms[..., :3, 3] *= self.translation_scale
        return {frame_id: transforms[:, i] for i, frame_id in enumerate(self.frame_ids[1:])}


def geometric_median_prior(sequences, samples) -> np.ndarray:
    """Per pixel, exp(median(log depth)) of the valid ground truth over ``samples``; (H, W) float32."""
    depths = np.stack([sequences[s].depth(frame) for s, frame in samples]).astype(np.float64)
    depths[depths <= 0] = np.nan  # 0 = no ground truth
    prior = np.exp(np.nanmedian(np.log(depths), axis=0))
    return np.where(np.isfinite(prior), prior, np.nanmedian(prior)).astype(np.float32)


def evaluate_fixed(depth: np.ndarray, data: Path, split: str) -> dict[str, float]:
    """Median-scaled Eigen metrics of predicting ``depth`` for every frame of ``split``."""
    sequences = open_sequences(data, DataConfig())
    accumulator = MetricsAccumulator()
    for s, frame in build_samples(sequences, [0], resolve_split(data, split)):
        accumulator.add(*evaluate_depth(sequences[s].depth(frame), depth))
    return accumulator.mean()


def train_curve(model, config, data, heldout, out: Path, steps: int, eval_every: int) -> list[dict]:
    """Train ``model`` with the config's objective and optimiser; evaluate every ``eval_every`` steps."""
    torch.manual_seed(config.seed)
    sequences = open_sequences(data, config.data)
    samples = build_samples(sequences, config.data.frame_ids)
    dataset = TrueMotionDataset(sequences, samples, config.data, train=True, seed=config.seed)
    loader = DataLoader(
        dataset, batch_size=config.optim.batch_size, shuffle=True, drop_last=True, collate_fn=collate_skipping
    )
    objective = Objective(config.loss, config.data.frame_ids, config.model.scales, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.learning_rate, fused=True)
    checkpoint = out / "checkpoint.pt"
    curve, step, epoch, seconds = [], 0, 0, 0.0
    bar = progress_bar(total=steps, desc=out.name)
    model.train()
    tic = time.perf_counter()
    while step < steps:
        dataset.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            if len(batch.pop("skipped")) == config.optim.batch_size:
                continue
            loss = objective(batch, model(batch), step=step)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.total.item():.4f}")
            if step % eval_every == 0 or step == steps:
                seconds += time.perf_counter() - tic  # evaluation is not counted
                save_atomic({"config": to_dict(config), "model": model.state_dict()}, checkpoint)
                point = {"step": step, "minutes": seconds / 60}
                for name, root in (("heldout", heldout), ("trained", data)):
                    point[name] = evaluate_model(checkpoint, root, "test", backend="torch", progress=False)
                log.info(
                    "%s step %d: held-out abs_rel %.3f, trained-drive abs_rel %.3f (median-scaled)",
                    out.name,
                    step,
                    point["heldout"]["median"]["abs_rel"],
                    point["trained"]["median"]["abs_rel"],
                )
                curve.append(point)
                model.train()
                tic = time.perf_counter()
            if step == steps:
                break
    bar.close()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/limits"))
    parser.add_argument("--steps", type=int, default=1200, help="training steps of each run")
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument(
        "--translation-scale",
        type=float,
        default=0.02,
        help="true translations (metres) are multiplied by this (pose-net runs settle near 1/50); "
        "see TrueMotionModel",
    )
    add_data_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data, heldout = prepare_drives(args.out, args.drives, args.frames)
    config = load_config(args.config, [*args.set, "data.flip_probability=0"])

    sequences = open_sequences(data, DataConfig())
    prior = geometric_median_prior(sequences, build_samples(sequences, [0]))
    result = {
        "prior": {
            name: evaluate_fixed(prior, root, "test")
            for name, root in (("heldout", heldout), ("trained", data))
        }
    }
    frame_ids = config.data.frame_ids
    runs = {
        "pose net": MonodepthModel(config.model, frame_ids),
        "true motion": TrueMotionModel(config.model, frame_ids, args.translation_scale),
    }
    initial = copy.deepcopy(runs["pose net"].state_dict())
    for name, model in runs.items():
        model.load_state_dict(initial)  # both runs start from the same weights
        out = args.out / name.replace(" ", "_")
        result[name] = train_curve(model, config, data, heldout, out, args.steps, args.eval_every)
    (args.out / "limits.json").write_text(json.dumps(result, indent=2))

    print("\n| reference | held-out AbsRel | trained-drive AbsRel |")
    print("|---|---:|---:|")
    print(
        f"| position prior | {result['prior']['heldout']['abs_rel']:.3f} | "
        f"{result['prior']['trained']['abs_rel']:.3f} |"
    )
    print("\nMedian-scaled AbsRel:\n")
    print("| step | held-out: pose net | true motion | ratio | trained drive: pose net | true motion |")
    print("|---:|---:|---:|---:|---:|---:|")
    for pose, true in zip(result["pose net"], result["true motion"], strict=True):
        ph, th = pose["heldout"]["median"]["abs_rel"], true["heldout"]["median"]["abs_rel"]
        print(
            f"| {pose['step']} | {ph:.3f} | {th:.3f} | {ph / th:.2f}x | "
            f"{pose['trained']['median']['abs_rel']:.3f} | {true['trained']['median']['abs_rel']:.3f} |"
        )
    for name in runs:
        minutes = result[name][-1]["minutes"]
        print(f"{name}: {args.steps} steps in {minutes:.1f} min of training")


if __name__ == "__main__":
    main()
