"""Light depth nets against the R18 CPU recipe, in one run: training-step time and ONNX Runtime inference.

The peer is ``training/configs/synthetic_cpu.yaml`` as shipped (ResNet-18 depth and pose encoders, U-Net
decoder); each light variant is that config with its networks changed (``model.encoder`` /
``model.pose_encoder`` / ``model.decoder``, some also ``model.padding_mode`` / ``model.decoder_channels``),
nothing else. Two measurements, the variants taking turns within each round so that
all see the same machine load (this VM is often shared: compare ratios, not seconds):

- a training step as ``bench/train_step.py`` times it (forward, objective, backward, fused Adam step) on a
  random batch of the recipe's size (4 x 3 frames at 192x64); the ratio to the peer is how many steps of the
  variant fit in the time of one R18 step, hence the "steps in the R18 recipe's time" column (its 2,450);
- the exported depth net (``export_onnx``, random weights) at 640x192, batch 1, through ONNX Runtime's CPU
  provider with 1 and 2 intra-op threads (``OnnxRuntimeBackend``), ms per frame.

On a shared machine, two torch threads wait on each other whenever another process holds a core, and a net
of many small ops (the light ones) waits more often: ``--threads 1`` gives the per-core ratio, undistorted.

    .venv/bin/python bench/light_nets.py                 # 7 rounds after 1 warm-up (minutes on 2 cores)
    .venv/bin/python bench/light_nets.py --threads 1 --rounds 15
    .venv/bin/python bench/light_nets.py --rounds 3 --no-onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from train_step import make_step, random_batch  # bench/ is the script's folder

from ssim_depth_core.checkpoint import save_atomic
from ssim_depth_core.config import ModelConfig, TrainConfig, load_config, to_dict
from ssim_depth_core.export import export_onnx
from ssim_depth_core.models import MonodepthModel
from ssim_depth_core.models.decoder import DECODER_CHANNELS
from ssim_depth_core.runtime import OnnxRuntimeBackend

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic_cpu.yaml"
RECIPE_STEPS = 2450  # synthetic_cpu.yaml: 10 epochs of 245 steps
UNET_WIDTHS = list(DECODER_CHANNELS)
VARIANTS = {  # name: the model fields that differ from the peer's; the first is the peer
    "resnet18+unet, pose resnet18 (synthetic_cpu.yaml)": {},
    **{
        f"{encoder}+light, pose the same": {"encoder": encoder, "decoder": "light", "pose_encoder": encoder}
        for encoder in ("mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf")
    },
    "mobilenet_v3_large+light, pose resnet18": {"encoder": "mobilenet_v3_large", "decoder": "light"},
    # where the light net's accuracy is lost: its encoder with the U-Net decoder, the R18 with the light one
    "mobilenet_v3_large+unet, pose the same": {
        "encoder": "mobilenet_v3_large",
        "pose_encoder": "mobilenet_v3_large",
    },
    "resnet18+light, pose the same": {"decoder": "light"},
    # the light net's own settings for ONNX Runtime's CPU provider (docs/benchmarks.md, "Where the light
    # network's time goes"): zero padding (no Pad ops), the separable head, the U-Net's widths
    **{
        f"mobilenet_v3_large+light{label}, pose the same": {
            "encoder": "mobilenet_v3_large",
            "decoder": "light",
            "pose_encoder": "mobilenet_v3_large",
            **fields,
        }
        for label, fields in (
            (", zero padding", {"padding_mode": "zeros"}),
            (" at U-Net widths, zero padding", {"padding_mode": "zeros", "decoder_channels": UNET_WIDTHS}),
            (", separable head", {"disparity_head": "separable"}),
            (
                " at U-Net widths, separable head",
                {"decoder_channels": UNET_WIDTHS, "disparity_head": "separable"},
            ),
        )
    },
}
ONNX_SIZE = (192, 640)  # height, width: the KITTI serving size of issue 20
ONNX_THREADS = (1, 2)


def variant_config(config: TrainConfig, **model_fields) -> TrainConfig:
    """``config`` with the networks' ``model_fields`` replaced, nothing else."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **model_fields))


def onnx_backends(config: TrainConfig, folder: Path, name: str) -> dict[int, OnnxRuntimeBackend]:
    """The random-init depth net of ``config`` exported at :data:`ONNX_SIZE`, one session per thread count."""
    height, width = ONNX_SIZE
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, height=height, width=width))
    torch.manual_seed(0)
    network = MonodepthModel(config.model, config.data.frame_ids)
    checkpoint = folder / f"{name}.pt"
    save_atomic({"config": to_dict(config), "model": network.state_dict()}, checkpoint)
    exported = export_onnx(checkpoint, folder / f"{name}.onnx")
    return {threads: OnnxRuntimeBackend(exported, device="cpu", threads=threads) for threads in ONNX_THREADS}


def depth_net_key(model: ModelConfig) -> tuple:
    """What makes the served depth net: the model fields but the pose net's."""
    return tuple(
        (k, str(v)) for k, v in sorted(dataclasses.asdict(model).items()) if not k.startswith("pose")
    )


def timed(function, *args) -> float:
    tic = time.perf_counter()
    function(*args)
    return time.perf_counter() - tic


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--onnx-repeats", type=int, default=5, help="ONNX runs per variant and round")
    parser.add_argument("--no-onnx", action="store_true", help="time the training steps only")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(CONFIG, [])
    configs = {name: variant_config(base, **fields) for name, fields in VARIANTS.items()}
    frames, height, width = len(base.data.frame_ids), base.data.height, base.data.width
    batch = random_batch(base.optim.batch_size, frames, height, width)
    batch["travel"] = torch.ones(base.optim.batch_size, frames - 1)  # metres, for the recipe's velocity term
    steps = {
        name: make_step(
            config,
            config.model.pose_downsample,
            True,
            config.model.small_map_weight_grad,
            config.model.scales,
        )[0]
        for name, config in configs.items()
    }
    step_times: dict[str, list[float]] = {name: [] for name in steps}
    onnx_times: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        backends = {}
        if not args.no_onnx:
            depth_nets = {}  # variants differing only in the pose net share one depth net
            for name, config in configs.items():
                key = depth_net_key(config.model)
                if key not in depth_nets:
                    depth_nets[key] = onnx_backends(config, Path(folder), f"depth{len(depth_nets)}")
                backends[name] = depth_nets[key]
        image = np.random.default_rng(0).random((1, 3, *ONNX_SIZE), dtype=np.float32)
        for round_index in range(args.rounds + 1):
            for name, step in steps.items():
                seconds = timed(step, batch)
                if round_index:  # round 0 warms up allocators and kernels
                    step_times[name].append(seconds)
                for threads, backend in backends.get(name, {}).items():
                    for _ in range(args.onnx_repeats):
                        seconds = timed(backend, image)
                        if round_index:
                            onnx_times.setdefault((name, threads), []).append(seconds)

    onnx_note = "" if args.no_onnx else f"; ONNX Runtime at {ONNX_SIZE[1]}x{ONNX_SIZE[0]}, batch 1"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, training batch "
        f"{base.optim.batch_size} x {frames} frames at {height}x{width}{onnx_note}; {args.rounds} rounds "
        f"(medians)"
    )
    peer = next(iter(steps))
    step_medians = {name: statistics.median(times) for name, times in step_times.items()}
    onnx_columns = "".join(f" ORT {t} thread ms | vs peer |" for t in ONNX_THREADS) if backends else ""
    print(f"| variant | step s | steps per peer step | steps in the R18 recipe's time |{onnx_columns}")
    print("|---|---:|---:|---:|" + "---:|---:|" * (len(ONNX_THREADS) if backends else 0))
    for name in steps:
        ratio = step_medians[peer] / step_medians[name]
        row = f"| {name} | {step_medians[name]:.3f} | {ratio:.2f}x | {RECIPE_STEPS * ratio:,.0f} |"
        for threads in ONNX_THREADS if backends else ():
            ms = 1e3 * statistics.median(onnx_times[(name, threads)])
            peer_ms = 1e3 * statistics.median(onnx_times[(peer, threads)])
            row += f" {ms:.1f} | {peer_ms / ms:.2f}x |"
        print(row)


if __name__ == "__main__":
    main()
