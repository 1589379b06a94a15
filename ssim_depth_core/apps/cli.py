"""Self-supervised monocular depth: synthetic drives, training, evaluation, export and inference.

The ssim-depth console script. Each verb parses its arguments and calls the library; python
training/train.py, evaluate.py and export.py run the same verbs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("ssim_depth")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default to show (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT``."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 416x128, got '{text}'") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return width, height


def _synth(args: argparse.Namespace) -> None:
    from ssim_depth_core.data.synthetic import generate_dataset

    width, height = args.size
    root = generate_dataset(
        args.out,
        seed=args.seed,
        drives=args.drives,
        frames=args.frames,
        width=width,
        height=height,
        bag=args.bag,
        stereo=args.stereo,
        overwrite=args.overwrite,
    )
    print(f"synthetic drives written to {root}")


def _train(args: argparse.Namespace) -> None:
    from ssim_depth_core.config import load_config
    from ssim_depth_core.trainer import Trainer

    overrides = list(args.set)
    if args.image_topic:
        overrides.append(f"data.image_topic={args.image_topic}")
    if args.camera_info_topic:
        overrides.append(f"data.camera_info_topic={args.camera_info_topic}")
    if args.odometry_topic:
        overrides.append(f"data.odometry_topic={args.odometry_topic}")
    config = load_config(args.config, overrides)
    init_from = args.init_from or ""
    trainer = Trainer(
        config, args.data, args.out, resume=args.resume, overwrite=args.overwrite, init_from=init_from
    )
    metrics = trainer.fit()
    if trainer.context.is_main:
        print(
            f"checkpoints in {trainer.checkpoint_dir}, TensorBoard logs in {Path(args.out) / 'tensorboard'}"
        )
        if metrics:
            print("final validation: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def _evaluate(args: argparse.Namespace) -> None:
    from ssim_depth_core.apps.evaluate import evaluate_model, format_report
    from ssim_depth_core.checkpoint import write_atomic
    from ssim_depth_core.outputs import check_output_files

    if args.json:  # before the evaluation: a path that cannot take the report fails at once
        check_output_files([args.json], {"model": args.checkpoint}, args.overwrite, "evaluation")
        args.json.parent.mkdir(parents=True, exist_ok=True)
    result = evaluate_model(
        args.checkpoint, args.data, args.split, scaling=args.scaling, backend=args.backend
    )
    print(format_report(result))
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=2).encode("utf-8"))
        print(f"metrics written to {args.json}")


def _export(args: argparse.Namespace) -> None:
    from ssim_depth_core.accelerator import cuda_device, import_tensorrt
    from ssim_depth_core.artifact import engine_sidecar_path
    from ssim_depth_core.checkpoint import load_checkpoint
    from ssim_depth_core.config import stored_config
    from ssim_depth_core.export.onnx import export_onnx
    from ssim_depth_core.export.quantize import (
        check_int8_output,
        check_quantize_options,
        quantize_onnx,
        select_calibration_frames,
    )
    from ssim_depth_core.outputs import check_output_files

    if args.int8 and args.calibration is None:
        raise ValueError("--int8 needs --calibration DATA: the training data to calibrate and validate on")
    int8_flags = (
        "calibration", "int8_onnx", "int8_target", "calibration_frames", "validation_frames",
        "int8_tolerance", "int8_max_difference",
    )  # fmt: skip
    if not args.int8 and any(getattr(args, name) is not None for name in int8_flags):
        raise ValueError(
            "--calibration, --int8-onnx, --int8-target, --calibration-frames, --validation-frames, "
            "--int8-tolerance and --int8-max-difference only apply with --int8"
        )
    if args.precision == "int8" and not args.int8:
        raise ValueError("--precision int8 builds from a quantised model: add --int8 --calibration DATA")
    if args.precision is not None and not args.tensorrt:
        raise ValueError(f"--precision {args.precision} applies to the TensorRT engine: add --tensorrt PATH")
    if args.int8 and args.tensorrt and args.precision not in (None, "int8"):
        raise ValueError(
            f"--int8 with --tensorrt builds an int8 engine; --precision {args.precision} conflicts"
        )
    int8_path = args.int8_onnx or args.onnx.with_name(f"{args.onnx.stem}.int8{args.onnx.suffix}")
    outputs = [args.onnx, *([int8_path] if args.int8 else [])]
    if args.tensorrt:
        outputs += [args.tensorrt, engine_sidecar_path(args.tensorrt)]
    check_output_files(outputs, {"checkpoint": args.checkpoint}, args.overwrite, "export")
    # everything that can be checked before the FP32 model is written, so a refusal leaves nothing behind
    target = args.int8_target or ("tensorrt" if args.tensorrt else "cpu")
    given = {  # unset options keep quantize_onnx's defaults
        "calibration_frames": args.calibration_frames,
        "validation_frames": args.validation_frames,
        "tolerance": args.int8_tolerance,
        "max_difference": args.int8_max_difference,
    }
    int8_options = {key: value for key, value in given.items() if value is not None}
    if args.int8:
        check_quantize_options(args.calibration, target, **int8_options)
        check_int8_output(args.onnx, int8_path)
        frame_counts = ("calibration_frames", "validation_frames")
        calibration = select_calibration_frames(
            args.calibration,
            stored_config(load_checkpoint(args.checkpoint)["config"], args.checkpoint).data,
            **{key: value for key, value in int8_options.items() if key in frame_counts},
        )
    if args.tensorrt:
        import_tensorrt()
        cuda_device()
    onnx_path = export_onnx(args.checkpoint, args.onnx, height=args.height, width=args.width)
    print(f"ONNX model written to {onnx_path}")
    if args.int8:
        report = quantize_onnx(
            onnx_path, int8_path, args.calibration, target=target, frames=calibration, **int8_options
        )
        print(report.summary())
        print(f"INT8 ONNX model ({target}) written to {int8_path}")
        onnx_path = int8_path
    if args.tensorrt:
        from ssim_depth_core.export.tensorrt import build_engine

        engine = build_engine(onnx_path, args.tensorrt, precision=args.precision)
        print(f"TensorRT engine written to {engine}")


def _infer(args: argparse.Namespace) -> None:
    from ssim_depth_core.apps.infer import run_inference
    from ssim_depth_core.runtime.frames import ScaleSettings

    for flag, given, source in (
        ("--depth-scale", args.depth_scale != 1.0, "fixed"),
        ("--camera-height", args.camera_height is not None, "camera_height"),
    ):
        if given and args.scale_source != source:
            raise ValueError(f"{flag} applies to --scale-source {source}, not {args.scale_source}")
    scale = ScaleSettings.from_mounting(
        args.scale_source,
        args.depth_scale,
        args.camera_height,
        args.camera_pitch,
        args.camera_roll,
        args.ground_normal,
    )
    summary = run_inference(
        args.model,
        args.input,
        args.out,
        backend=args.backend,
        pointcloud=args.pointcloud,
        stride=args.stride,
        intrinsics=args.intrinsics,
        image_topic=args.image_topic,
        progress=not args.no_progress,
        scale=scale,
        overwrite=args.overwrite,
    )
    latency = summary["latency_ms"]
    print(
        f"{summary['frames']} frames ({summary['skipped']} skipped) on {summary['backend']}; estimator "
        f"latency p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms, p99 {latency['p99']:.2f} ms, "
        f"mean {latency['mean']:.2f} ms"
    )
    print(f"outputs and summary.json in {args.out}")


def _verb(verbs, name: str, summary: str) -> argparse.ArgumentParser:
    return verbs.add_parser(name, help=summary, description=summary, formatter_class=_HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssim-depth",
        description=__doc__.splitlines()[0],
        epilog="ssim-depth VERB --help lists the options of a verb.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True)

    synth = _verb(verbs, "synth", "render synthetic drives in the KITTI raw layout (+ rosbag2)")
    synth.add_argument("--out", required=True, type=Path, help="output root")
    synth.add_argument("--seed", type=int, default=0, help="scene seed; every drive differs")
    synth.add_argument("--drives", type=int, default=2, help="number of drives")
    synth.add_argument("--frames", type=int, default=60, help="frames per drive")
    synth.add_argument("--size", type=_size, default="416x128", help="WIDTHxHEIGHT of the images")
    synth.add_argument("--bag", choices=["mcap", "sqlite3", "none"], default="mcap", help="rosbag2 storage")
    synth.add_argument(
        "--stereo",
        action="store_true",
        help="also render the right camera (image_03, KITTI baseline 0.54 m) and its bag topic",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="render again a seed whose drives are in OUT (they are removed first; refused otherwise)",
    )
    synth.set_defaults(run=_synth)

    train = _verb(verbs, "train", "self-supervised training")
    train.add_argument("--config", type=Path, required=True, help="YAML config (training/configs/*.yaml)")
    train.add_argument("--data", type=Path, required=True, help="KITTI-layout root or rosbag2 (dir or file)")
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run folder: config, checkpoints, TensorBoard (new or empty unless --resume or --overwrite)",
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    run_folder = train.add_mutually_exclusive_group()
    run_folder.add_argument(
        "--resume", action="store_true", help="continue the run in OUT from its checkpoints/last.pt"
    )
    run_folder.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a non-empty OUT: its checkpoints/ and tensorboard/ are removed first",
    )
    train.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT",
        help="start from this checkpoint's model weights only (e.g. a supervised fine-tune of a "
        "self-supervised model); ignored when --resume finds OUT/checkpoints/last.pt",
    )
    train.add_argument("--image-topic", help="rosbag2 image topic (when the bag has several)")
    train.add_argument("--camera-info-topic", help="rosbag2 CameraInfo topic (when ambiguous)")
    train.add_argument(
        "--odometry-topic",
        help="rosbag2 odometry topic for velocity supervision (when the bag has several; none: do not read)",
    )
    train.set_defaults(run=_train)

    evaluate = _verb(verbs, "evaluate", "Eigen-protocol depth metrics against ground truth")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="model: .pt, .onnx or .engine")
    evaluate.add_argument("--data", type=Path, required=True, help="KITTI-layout root with ground truth")
    evaluate.add_argument(
        "--split", default="test", help="split file, or a name resolved under DATA/splits/*/"
    )
    evaluate.add_argument("--json", type=Path, help="also write the metrics as JSON here")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an earlier --json file")
    evaluate.add_argument(
        "--scaling",
        choices=["auto", "median", "metric"],
        default="auto",
        help="median-scaled metrics always; metric ones (no scaling) beside them: auto = for a metric model "
        "(export metadata / training config), metric = for any model, median = never",
    )
    evaluate.add_argument(
        "--backend",
        default="auto",
        help="runtime backend: auto (chosen from the model file) | torch | onnxruntime | tensorrt",
    )
    evaluate.set_defaults(run=_evaluate)

    export = _verb(verbs, "export", "export a checkpoint to ONNX (and INT8, and a TensorRT engine)")
    export.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="trained checkpoint (.pt), e.g. OUT/checkpoints/best.pt",
    )
    export.add_argument("--onnx", type=Path, required=True, help="output .onnx path")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier export at --onnx, the INT8 path and --tensorrt (refused "
        "otherwise, before anything is written)",
    )
    export.add_argument("--height", type=int, help="network input height (default: the training height)")
    export.add_argument("--width", type=int, help="network input width (default: the training width)")
    export.add_argument("--tensorrt", type=Path, help="also build a TensorRT engine here (needs a GPU)")
    export.add_argument(
        "--precision",
        choices=["fp16", "fp32", "int8"],
        help="TensorRT engine precision (default: int8 with --int8, else fp16)",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="also write an INT8 (QDQ) model, calibrated and validated on --calibration DATA; refused, "
        "and not written, when it costs more than --int8-tolerance AbsRel (docs/serving.md)",
    )
    export.add_argument(
        "--calibration",
        type=Path,
        metavar="DATA",
        help="--int8: training data root (KITTI layout, synthetic drives or rosbag2): calibration frames "
        "from its train split, validation frames from its test (else val) split",
    )
    export.add_argument(
        "--int8-onnx", type=Path, metavar="PATH", help="--int8: output path (default: ONNX stem + .int8.onnx)"
    )
    export.add_argument(
        "--calibration-frames",
        type=int,
        metavar="N",
        help="--int8: frames to calibrate on, spread over the train split (default: 300)",
    )
    export.add_argument(
        "--validation-frames",
        type=int,
        metavar="N",
        help="--int8: held-out frames to compare INT8 with FP32 on (default: 200)",
    )
    export.add_argument(
        "--int8-tolerance",
        type=float,
        metavar="ABSREL",
        help="--int8: largest AbsRel increase INT8 vs FP32 accepted on held-out frames with ground truth "
        "(default: 0.01)",
    )
    export.add_argument(
        "--int8-max-difference",
        type=float,
        metavar="FRACTION",
        help="--int8, data without ground truth: largest mean relative depth difference |INT8 - FP32| / FP32 "
        "accepted (default: 0.05)",
    )
    export.add_argument(
        "--int8-target",
        choices=["cpu", "tensorrt"],
        help="--int8: cpu = uint8 activations (ONNX Runtime's fastest CPU kernels), tensorrt = symmetric "
        "int8 (what TensorRT parses; ONNX Runtime runs it too) (default: tensorrt with --tensorrt, else cpu)",
    )
    export.set_defaults(run=_export)

    infer = _verb(verbs, "infer", "depth maps (and point clouds) for images, a video or a rosbag2")
    infer.add_argument("--model", type=Path, required=True, help="model: .pt, .onnx or .engine")
    infer.add_argument(
        "--input", type=Path, required=True, help="image folder (.png/.jpg), image, video file or rosbag2"
    )
    infer.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: depth/, depth_raw/, clouds/, summary.json (refused if it holds any of these "
        "unless --overwrite)",
    )
    infer.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in OUT: its depth/, depth_raw/, clouds/ and summary.json are removed "
        "once the model has opened; other files stay",
    )
    infer.add_argument(
        "--pointcloud",
        choices=["ply"],
        help="also write one point cloud per frame: clouds/<name>.ply, the image's name, or the frame's "
        "number (%%06d) for a video or a bag",
    )
    infer.add_argument("--backend", default="auto", help="runtime backend: auto|torch|onnxruntime|tensorrt")
    infer.add_argument("--image-topic", help="rosbag2 image topic (when the bag has several)")
    infer.add_argument(
        "--stride", type=int, default=1, help="point clouds keep every N-th pixel in both axes"
    )
    infer.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        metavar=("FX", "FY", "CX", "CY"),
        help="camera of an image folder or video at its resolution (default: a KITTI-like guess)",
    )
    infer.add_argument(
        "--scale-source",
        default="model",
        help="where metres come from: model (a metric model) | camera_height (the ground plane) | fixed",
    )
    infer.add_argument("--depth-scale", type=float, default=1.0, help="scale source fixed: the factor")
    infer.add_argument(
        "--camera-height", type=float, help="scale source camera_height: the camera's height above ground (m)"
    )
    infer.add_argument("--camera-pitch", type=float, default=0.0, help="optical axis below horizontal (rad)")
    infer.add_argument("--camera-roll", type=float, default=0.0, help="roll about the optical axis (rad)")
    infer.add_argument(
        "--ground-normal",
        default="fitted",
        help="the ground plane's normal: fitted (follows pitching, slopes) | mounting (its up; rigid, flat)",
    )
    infer.add_argument("--no-progress", action="store_true", help="no progress bar")
    infer.set_defaults(run=_infer)

    return parser


def _train_interrupted(args: argparse.Namespace) -> str:
    """What an interrupted training run left: its last checkpoint to resume from, or none yet."""
    if (Path(args.out) / "checkpoints" / "last.pt").is_file():
        return "; the last checkpoint is kept: continue with --resume"
    return "; no checkpoint was written yet: start again with --overwrite"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:  # OSError: a missing file, a full disk, ...
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback
        log.error("interrupted%s", _train_interrupted(args) if args.run is _train else "")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
