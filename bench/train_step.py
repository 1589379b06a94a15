"""Time of one training step of the CPU recipe against the published settings, in the same process.

A step is what the trainer does per batch: model forward, objective, backward, optimizer step, on a random
batch of ``training/configs/synthetic_cpu.yaml``'s size. The peer is that config with the published pose
input (``model.pose_downsample: 1``), PyTorch's default (unfused) Adam, oneDNN's weight gradients
everywhere (``model.small_map_weight_grad: false``) and the photometric loss at all four decoder scales
(``model.scales: [0, 1, 2, 3]``); the variants take turns within each round, and the
script prints medians and ratios, plus the optimizer step alone:

    .venv/bin/python bench/train_step.py                # 7 rounds after 1 warm-up (a few minutes on 2 cores)
    .venv/bin/python bench/train_step.py --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import load_config
from ssim_depth_core.losses.objective import Objective
from ssim_depth_core.models import MonodepthModel

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic_cpu.yaml"
ALL_SCALES = (0, 1, 2, 3)
VARIANTS = {  # name: (pose_downsample, fused Adam, small-map weight gradients, loss scales)
    "published (pose 1x, default Adam, 4 scales)": (1, False, False, ALL_SCALES),
    "pose 2x, default Adam": (2, False, False, ALL_SCALES),
    "pose 2x, fused Adam": (2, True, False, ALL_SCALES),
    "pose 2x, fused Adam, small-map weight grad": (2, True, True, ALL_SCALES),
    "the same, loss on scale 0 only (shipped)": (2, True, True, (0,)),
}


def random_batch(batch_size: int, frames: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """Images in [0,1] and per-scale intrinsics shaped like a `TripletDataset` batch."""
    camera = Intrinsics(0.58 * width, 1.92 * height, width / 2, height / 2, width=width, height=height)
    scaled = [camera.scaled(width // 2**s, height // 2**s) for s in range(4)]
    images = torch.rand(batch_size, frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    repeat = (batch_size, 1, 1, 1)
    return {
        "images": images,
        "images_aug": images.clone(),
        "K": torch.stack([c.K() for c in scaled])[None].repeat(repeat),
        "inv_K": torch.stack([c.inv_K() for c in scaled])[None].repeat(repeat),
    }


def make_step(config, pose_downsample: int, fused: bool, small_map_weight_grad: bool, scales):
    """A closure running one training step; also returns the optimizer (to time its step alone)."""
    torch.manual_seed(config.seed)
    model_config = dataclasses.replace(
        config.model,
        pose_downsample=pose_downsample,
        small_map_weight_grad=small_map_weight_grad,
        scales=list(scales),
    )
    model = MonodepthModel(model_config, config.data.frame_ids).train()
    objective = Objective(config.loss, config.data.frame_ids, scales, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.learning_rate, fused=fused)

    def step(batch):
        loss = objective(batch, model(batch), step=10**6)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    return step, optimizer


def timed(function, *args) -> float:
    tic = time.perf_counter()
    function(*args)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    config = load_config(CONFIG, [])
    frames, height, width = len(config.data.frame_ids), config.data.height, config.data.width
    batch = random_batch(config.optim.batch_size, frames, height, width)
    steps = {name: make_step(config, *variant) for name, variant in VARIANTS.items()}
    step_times = {name: [] for name in steps}
    optimizer_times = {name: [] for name in steps}
    for round_index in range(args.rounds + 1):
        for name, (step, optimizer) in steps.items():
            step_seconds = timed(step, batch)
            optimizer_seconds = timed(optimizer.step)
            if round_index:  # round 0 warms up allocators and kernels
                step_times[name].append(step_seconds)
                optimizer_times[name].append(optimizer_seconds)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {config.optim.batch_size} x {frames} frames at {height}x{width}, {args.rounds} rounds"
    )
    print("| variant | step s | step vs published | optimizer step s | optimizer vs published |")
    print("|---|---:|---:|---:|---:|")
    peer = next(iter(steps))
    step_medians = {name: statistics.median(times) for name, times in step_times.items()}
    optimizer_medians = {name: statistics.median(times) for name, times in optimizer_times.items()}
    for name in steps:
        step, optimizer = step_medians[name], optimizer_medians[name]
        print(
            f"| {name} | {step:.3f} | {step_medians[peer] / step:.2f}x | {optimizer:.4f} | "
            f"{optimizer_medians[peer] / optimizer:.2f}x |"
        )


if __name__ == "__main__":
    main()
