"""Inference latency at 640x192, batch 1: torch eager vs ONNX Runtime vs TensorRT; DepthEstimator overhead.

One row per backend for each depth-net configuration asked for with ``--model ENCODER+DECODER`` (repeatable;
``model.encoder`` + ``model.decoder``, default ``resnet18+unet``; docs/models.md lists them) or ``--model
CONFIG.yaml`` (a training config's ``model`` section), each a randomly initialised network, or for the
network of ``--checkpoint``.

Peers, measured in one process on the same network and the same frames:

- torch eager: ``TorchBackend`` (``torch.inference_mode``, CUDA when available), the reference row;
- onnxruntime: ``OnnxRuntimeBackend`` on the exported ONNX (CUDA execution provider when available, else CPU);
- tensorrt: ``TensorRTBackend`` on an FP16 engine built from that ONNX (only with TensorRT + pycuda + GPU).

For each backend, ``DepthEstimator`` end to end (uint8 1242x375 KITTI-size RGB frame -> resize -> backend ->
disparity resize -> metric depth) is timed against the bare backend call on the already pre-processed batch of
the same frame, the two calls alternating so that both see the same machine load; their ratio is the
estimator's overhead (goal <= 1.15). Outputs are cross-checked first (ONNX Runtime vs torch within 1e-4,
TensorRT FP16 within 1e-2): a mismatch voids the comparison.

With a GPU backend the frame's CPU pre/post-processing is a large part of its time, so it is also timed
alone: ``DepthEstimator`` on a backend that replays a fixed disparity, against a straightforward NumPy
pipeline written here from the same steps (area resize, ``astype`` + /255 + transpose, ``np.stack``, disparity
resized, then the depth formula on the full-size map), the two alternating; their depth maps are checked
equal (rtol 1e-5) first. It runs first, before any CPU inference. With glibc's default malloc its ratio
depends on page faults as much as on the code: full-size arrays are fresh mappings or reused heap depending on
the order of earlier allocations and frees, so an unrelated change to either pipeline can move it by 1.5x.
Fixed malloc thresholds (second command) keep freed memory mapped and time the computation alone.

With ``--int8`` a last table times INT8 on the CPU: each configuration's FP32 ONNX model and its INT8
models from ``export.quantize`` (``cpu`` target: uint8 activations; ``tensorrt`` target: symmetric int8, the
form TensorRT takes), each on ONNX Runtime's CPU provider with ``--int8-threads`` intra-op threads (default 1
and 2), the bare backend call on one pre-processed frame, all models of one thread count alternating call by
call. The peer is the first configuration's FP32 model at the same thread count (with the default, R18 FP32:
today's baseline). The INT8 models are calibrated and validated on ``--calibration DATA``, by default two
small synthetic drives rendered at the network size (timing does not depend on the weights' accuracy; a
random-init network is fine).

    .venv/bin/python bench/inference.py                       # random-init ResNet-18 network
    .venv/bin/python bench/inference.py --model resnet18+unet --model resnet18+sql --model convnext_tiny+sql
    MALLOC_MMAP_THRESHOLD_=2000000000 MALLOC_TRIM_THRESHOLD_=2000000000 .venv/bin/python bench/inference.py
    .venv/bin/python bench/inference.py --checkpoint runs/x/last.pt --repeats 100
    .venv/bin/python bench/inference.py --threads 1 --int8    # + R18 FP32 vs INT8, 1 and 2 threads
    .venv/bin/python bench/inference.py --threads 1 --int8 --model resnet18+unet --model ENCODER+DECODER
    .venv/bin/python bench/inference.py --threads 1 --int8 --model resnet18+unet \
        --model training/configs/synthetic_cpu_light.yaml
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from skimage import data

from ssim_depth_core.checkpoint import save_atomic
from ssim_depth_core.config import ModelConfig, TrainConfig, load_config, to_dict
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.export import build_engine, export_onnx, tensorrt_available
from ssim_depth_core.export.quantize import quantize_onnx
from ssim_depth_core.geometry import disparity_to_depth
from ssim_depth_core.imaging import resize_image
from ssim_depth_core.models import MonodepthModel
from ssim_depth_core.models.depth import DECODERS
from ssim_depth_core.models.encoder import ENCODER_NAMES
from ssim_depth_core.runtime import DepthEstimator, OnnxRuntimeBackend, TensorRTBackend, TorchBackend
from ssim_depth_core.runtime.backends import Backend

FRAME_SIZE = (375, 1242)  # (H, W) of a KITTI camera frame
TOLERANCE = {"torch": 1e-5, "onnxruntime": 1e-4, "tensorrt": 1e-2}
DEFAULT_MODEL = "resnet18+unet"


def alternating_median_ms(*functions: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Median wall times (ms) of functions timed in turn, so that all see the same machine load."""
    for _ in range(warmup):
        for fn in functions:
            fn()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for fn, bucket in zip(functions, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) * 1e3 for bucket in times]


class ReplayBackend(Backend):
    """Returns a fixed disparity: isolates the estimator's CPU work from inference."""

    name = "replay"

    def __init__(self, disparity: np.ndarray, min_depth: float, max_depth: float) -> None:
        self._disparity = disparity
        self.input_size = disparity.shape[2:]
        self.min_depth, self.max_depth = min_depth, max_depth

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._disparity.copy()


def straightforward_batch(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(1, 3, height, width) float32 network input of an RGB frame, written the direct NumPy way."""
    small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    chw = np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
    return np.stack([chw])


def straightforward_depth(frame: np.ndarray, backend: Backend) -> np.ndarray:
    """The peer: the estimator's steps written the direct NumPy way, one new full-size array per step."""
    disparity = backend(straightforward_batch(frame, *backend.input_size))[0, 0]
    disparity = cv2.resize(disparity, frame.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return disparity_to_depth(disparity, backend.min_depth, backend.max_depth)[1]


def parse_model(spec: str) -> ModelConfig:
    """``ENCODER+DECODER`` (e.g. "convnext_tiny+sql"; the sql head at scale 0 only) or a training config's
    path (its ``model`` section, e.g. ``training/configs/synthetic_cpu_light.yaml``) as a model config."""
    if spec.endswith((".yaml", ".yml")):
        try:
            return load_config(spec, []).model
        except (OSError, ValueError) as error:
            raise argparse.ArgumentTypeError(f"--model {spec!r}: {error}") from error
    encoder, _, decoder = spec.partition("+")
    if encoder not in ENCODER_NAMES or decoder not in DECODERS:
        raise argparse.ArgumentTypeError(
            f"--model {spec!r}: expected ENCODER+DECODER with ENCODER one of {', '.join(ENCODER_NAMES)} and "
            f"DECODER one of {', '.join(DECODERS)}, or a training config (.yaml)"
        )
    return ModelConfig(encoder=encoder, decoder=decoder, scales=[0] if decoder == "sql" else [0, 1, 2, 3])


def model_name(model: ModelConfig) -> str:
    """``ENCODER+DECODER``, with the decoder's widths, head and padding where they are not the defaults."""
    default = ModelConfig()
    name = f"{model.encoder}+{model.decoder}"
    if model.decoder_channels:
        name += f" widths {'-'.join(str(c) for c in model.decoder_channels)}"
    if model.disparity_head != default.disparity_head:
        name += f" {model.disparity_head} head"
    if model.padding_mode != default.padding_mode:
        name += f" {model.padding_mode} padding"
    return name


def random_checkpoint(folder: Path, height: int, width: int, model: ModelConfig | None = None) -> Path:
    """A randomly initialised checkpoint of ``model`` (default ResNet-18 + U-Net; timing does not depend on
    the weights)."""
    config = TrainConfig(model=model or ModelConfig())
    config.data.height, config.data.width = height, width
    torch.manual_seed(0)
    network = MonodepthModel(config.model, config.data.frame_ids)
    path = folder / f"random_{config.model.encoder}_{config.model.decoder}.pt"
    save_atomic({"config": to_dict(config), "model": network.state_dict()}, path)
    return path


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: random init)")
    parser.add_argument(
        "--model",
        action="append",
        type=parse_model,
        metavar="ENCODER+DECODER|CONFIG.yaml",
        help=f"a random-init configuration to time, repeatable (default {DEFAULT_MODEL}): ENCODER one of "
        f"{', '.join(ENCODER_NAMES)}; DECODER one of {', '.join(DECODERS)}; or a training config's model",
    )
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: all)")
    parser.add_argument("--int8", action="store_true", help="also time INT8 models on the CPU (last table)")
    parser.add_argument(
        "--int8-threads", type=int, nargs="+", default=[1, 2], help="onnxruntime threads of the INT8 table"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DATA",
        help="--int8: data to calibrate and validate on (default: two small synthetic drives rendered here)",
    )
    args = parser.parse_args(argv)
    if args.checkpoint and args.model:
        parser.error("--model times a random-init network; --checkpoint brings its own: give one of them")
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = cv2.resize(data.astronaut(), FRAME_SIZE[::-1], interpolation=cv2.INTER_AREA)

    disparity = np.random.default_rng(0).random((1, 1, args.height, args.width), dtype=np.float32)
    replay = ReplayBackend(disparity, min_depth=0.1, max_depth=100.0)
    estimator = DepthEstimator(replay)
    np.testing.assert_allclose(estimator(frame), straightforward_depth(frame, replay), rtol=1e-5)
    peer_ms, ours_ms, resize_ms = alternating_median_ms(
        lambda: straightforward_depth(frame, replay),
        lambda: estimator(frame),
        lambda: resize_image(frame, args.width, args.height),
        repeats=args.repeats,
        warmup=args.warmup,
    )

    models = [None] if args.checkpoint else (args.model or [parse_model(DEFAULT_MODEL)])
    names = [f"checkpoint {args.checkpoint.name}" if model is None else model_name(model) for model in models]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(
        f"# Depth inference {args.width}x{args.height}, batch 1, "
        f"{', '.join(names) if args.checkpoint else 'random init ' + ', '.join(names)}; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"{torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}, {gpu}, {datetime.date.today().isoformat()}, "
        f"load average {os.getloadavg()[0]:.2f}, median of {args.repeats} after {args.warmup} warm-up"
    )
    print("| model | backend | device | backend ms/frame | vs torch eager | estimator ms/frame | overhead |")
    print("|---|---|---|---:|---:|---:|---:|")
    worst_overhead, measured_tensorrt = 0.0, False
    batch = straightforward_batch(frame, args.height, args.width)
    int8_models: dict[str, dict[str, Path]] = {}  # configuration -> {"FP32" | "INT8 ...": ONNX file}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in zip(names, models, strict=True):
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            checkpoint = args.checkpoint or random_checkpoint(folder, args.height, args.width, model)
            onnx_path = export_onnx(checkpoint, folder / "model.onnx", args.height, args.width)
            backends = {
                "torch eager": TorchBackend(checkpoint, height=args.height, width=args.width),
                "onnxruntime": OnnxRuntimeBackend(onnx_path, threads=args.threads),
            }
            if tensorrt_available():
                engine = build_engine(onnx_path, precision="fp16", cache_dir=folder)
                backends["tensorrt fp16"] = TensorRTBackend(engine)
                measured_tensorrt = True

            reference = backends["torch eager"](batch)
            for backend_name, backend in backends.items():
                error = float(np.abs(backend(batch) - reference).max())
                if error > TOLERANCE[backend.name]:
                    raise RuntimeError(
                        f"{name}: {backend_name} differs from torch by {error:.2e}: the comparison is void"
                    )

            devices = {
                "torch eager": str(backends["torch eager"].device),
                "onnxruntime": backends["onnxruntime"].providers[0].replace("ExecutionProvider", ""),
                "tensorrt fp16": "cuda",
            }
            torch_ms = None
            for backend_name, backend in backends.items():
                estimator = DepthEstimator(backend)
                bare_ms, full_ms = alternating_median_ms(
                    lambda backend=backend: backend(batch),
                    lambda estimator=estimator: estimator(frame),
                    repeats=args.repeats,
                    warmup=args.warmup,
                )
                torch_ms = torch_ms or bare_ms
                overhead = full_ms / bare_ms
                worst_overhead = max(worst_overhead, overhead)
                print(
                    f"| {name} | {backend_name} | {devices[backend_name]} | {bare_ms:.2f} | "
                    f"{torch_ms / bare_ms:.2f}x | {full_ms:.2f} | {overhead:.3f} |"
                )
                backend.close()
            if args.int8:
                int8_models[name] = quantized_models(onnx_path, folder, args, tmp)
        print()
        print(f"worst DepthEstimator / bare backend time: {worst_overhead:.3f} (goal <= 1.15)")
        if not measured_tensorrt:
            print("tensorrt: not measured (needs TensorRT 10, pycuda and a CUDA GPU)")
        if args.int8:
            print_int8_table(int8_models, batch, args)

    print()
    frame_size = f"{frame.shape[1]}x{frame.shape[0]}"
    print(f"pre/post-processing alone, {frame_size} frame, {cv2.getNumThreads()} OpenCV threads:")
    print("| pipeline | ms/frame | vs straightforward |")
    print("|---|---:|---:|")
    print(f"| straightforward NumPy | {peer_ms:.2f} | 1.00x |")
    print(f"| DepthEstimator | {ours_ms:.2f} | {peer_ms / ours_ms:.2f}x |")
    print(f"| (part of both: the area resize to {args.width}x{args.height} alone) | {resize_ms:.2f} | |")


def calibration_data(data: Path | None, tmp: str, width: int, height: int) -> Path:
    """``data``, or (without it) two small synthetic drives rendered once into ``tmp`` at the network size:
    24 frames, enough to calibrate a model that is only timed."""
    if data is not None:
        return data
    data = Path(tmp) / "calibration"
    if not data.exists():
        generate_dataset(
            data, seed=0, drives=2, frames=12, width=width, height=height, bag="none", progress=False
        )
    return data


def quantized_models(onnx_path: Path, folder: Path, args: argparse.Namespace, tmp: str) -> dict[str, Path]:
    """The FP32 model and its INT8 models for both targets (calibrated on ``args.calibration``)."""
    data = calibration_data(args.calibration, tmp, args.width, args.height)
    models = {"FP32": onnx_path}
    for target, label in (
        ("cpu", "INT8 (cpu: uint8 activations)"),
        ("tensorrt", "INT8 (tensorrt: int8, symmetric)"),
    ):
        path = folder / f"model.int8-{target}.onnx"
        report = quantize_onnx(onnx_path, path, data, target=target, progress=False)
        print(f"{path.name}: {report.summary().splitlines()[0]}")
        models[label] = path
    return models


def print_int8_table(
    int8_models: dict[str, dict[str, Path]], batch: np.ndarray, args: argparse.Namespace
) -> None:
    """ms/frame of every model on ONNX Runtime's CPU provider at each thread count, against the first
    configuration's FP32 model at the same count; the models of one count alternate call by call."""
    baseline_name = next(iter(int8_models))
    print()
    print(
        f"INT8 on the CPU: onnxruntime {ort.__version__} CPUExecutionProvider, {args.width}x{args.height}, "
        f"batch 1, bare backend call, median of {args.repeats} after {args.warmup} warm-up, load average "
        f"{os.getloadavg()[0]:.2f}; peer: {baseline_name} FP32 at the same thread count"
    )
    print(f"| model | precision | threads | ms/frame | vs {baseline_name} FP32 |")
    print("|---|---|---:|---:|---:|")
    for threads in args.int8_threads:
        rows = [(name, label, path) for name, files in int8_models.items() for label, path in files.items()]
        backends = [OnnxRuntimeBackend(path, device="cpu", threads=threads) for _, _, path in rows]
        times = alternating_median_ms(
            *(lambda backend=backend: backend(batch) for backend in backends),
            repeats=args.repeats,
            warmup=args.warmup,
        )
        baseline_ms = times[0]
        for (name, label, _), ms in zip(rows, times, strict=True):
            print(f"| {name} | {label} | {threads} | {ms:.2f} | {baseline_ms / ms:.2f}x |")
        for backend in backends:
            backend.close()


if __name__ == "__main__":
    main()
