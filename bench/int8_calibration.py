"""INT8 calibration choices, measured: calibration method, target, head, and broken calibrations.

Quantises one trained model's FP32 export (``export.quantize.quantize_onnx``) once per variant on the same
calibration frames (``--calibration-frames`` of DATA's train split) and validates each against FP32 on the
same held-out frames (DATA's test split), as ``training/export.py --int8`` does, but with the tolerances out
of the way so that every variant is measured. Variants:

- ``cpu`` / ``tensorrt`` targets with each calibration method ("MinMax", "Percentile", "Entropy"; chunked as
  the export chunks them);
- ``cpu`` min-max with the disparity head quantised too (``keep_head_float=False``);
- broken calibrations, to see what the validation must catch: the calibration frames (only those) in BGR
  order, 50x too dark, or in [0, 255] instead of [0, 1]. They replace the export's pre-processing of the
  calibration frames; the validation still runs the serving pre-processing.

Prints a markdown table (docs/serving.md, "INT8"): the AbsRel of FP32 and INT8 (median-scaled; in metres too
for a metric model), the mean and 95th percentile relative depth difference, whether the default tolerances
accept it, and the calibration time.

    python bench/int8_calibration.py --checkpoint runs/int8/checkpoints/last.pt --data data/synth6
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from ssim_depth_core.export import quantize
from ssim_depth_core.export.onnx import export_onnx

# name -> (target, calibrate_method, keep_head_float, transform of the calibration frames or None)
VARIANTS = {
    "cpu, min-max (default)": ("cpu", "MinMax", True, None),
    "cpu, percentile": ("cpu", "Percentile", True, None),
    "cpu, entropy": ("cpu", "Entropy", True, None),
    "cpu, min-max, head quantised too": ("cpu", "MinMax", False, None),
    "tensorrt, min-max (default)": ("tensorrt", "MinMax", True, None),
    "tensorrt, percentile": ("tensorrt", "Percentile", True, None),
    "tensorrt, entropy": ("tensorrt", "Entropy", True, None),
    "cpu, calibrated on BGR frames": ("cpu", "MinMax", True, lambda x: x[::-1].copy()),
    "cpu, calibrated on frames x 0.02": ("cpu", "MinMax", True, lambda x: x * 0.02),
    "cpu, calibrated on [0, 255] frames": ("cpu", "MinMax", True, lambda x: x * 255),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint (.pt)")
    parser.add_argument("--data", type=Path, required=True, help="data root with train and test splits")
    parser.add_argument("--calibration-frames", type=int, default=quantize.DEFAULT_CALIBRATION_FRAMES)
    parser.add_argument("--validation-frames", type=int, default=quantize.DEFAULT_VALIDATION_FRAMES)
    parser.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        metavar="NAME",
        help="a row of the table, quoted (e.g. 'cpu, entropy'); repeatable; default: all: "
        + "; ".join(VARIANTS),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    serving = quantize.preprocess_image
    print(
        f"# INT8 calibration variants: {args.checkpoint}, data {args.data}, onnxruntime {ort.__version__}; "
        f"tolerances: AbsRel +{quantize.DEFAULT_TOLERANCE}, "
        f"depth difference {quantize.DEFAULT_MAX_DIFFERENCE}"
    )
    print(
        "| variant | AbsRel median-scaled FP32 -> INT8 | in metres | "
        "depth difference mean / p95 | accepted | s |"
    )
    print("|---|---|---|---|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(args.checkpoint, Path(tmp) / "fp32.onnx")
        for name in args.variant or VARIANTS:
            target, method, keep_head, transform = VARIANTS[name]
            quantize.preprocess_image = (
                serving if transform is None else lambda image, size, t=transform: t(serving(image, size))
            )
            start = time.perf_counter()
            try:
                report = quantize.quantize_onnx(
                    fp32,
                    Path(tmp) / "int8.onnx",
                    args.data,
                    calibration_frames=args.calibration_frames,
                    validation_frames=args.validation_frames,
                    tolerance=1e9,  # measure every variant: none is refused here
                    max_difference=1e9,
                    target=target,
                    calibrate_method=method,
                    keep_head_float=keep_head,
                    progress=False,
                )
            finally:
                quantize.preprocess_image = serving
            seconds = time.perf_counter() - start
            cells = []
            for scaling in ("median", "metric"):
                if scaling in report.abs_rel:
                    fp32_abs_rel, int8_abs_rel = report.abs_rel[scaling]
                    cells.append(
                        f"{fp32_abs_rel:.4f} -> {int8_abs_rel:.4f} ({int8_abs_rel - fp32_abs_rel:+.4f})"
                    )
                else:
                    cells.append("-")
            accepted = (
                (report.increase <= quantize.DEFAULT_TOLERANCE)
                if report.abs_rel
                else (report.depth_difference <= quantize.DEFAULT_MAX_DIFFERENCE)
            )
            print(
                f"| {name} | {cells[0]} | {cells[1]} | {report.depth_difference:.4f} / "
                f"{report.depth_difference_p95:.4f} | {'yes' if accepted else 'refused'} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
