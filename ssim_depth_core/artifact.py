"""The model-file contract shared by export and runtime: tensor names and the metadata a model carries.

An exported depth network takes ``image`` (B, 3, H, W) float32 RGB in [0, 1] and returns ``disparity``
(B, 1, H, W), the normalised disparity in [0, 1] that ``geometry.disparity_to_depth`` maps to metres. Every
depth head gives it: the U-Net's sigmoid heads directly, the SQL head by mapping its bins' depth with
``geometry.depth_to_disparity`` inside the graph (models/sql.py); the metadata's ``output`` says so, and a
runtime refuses any other. What a runtime needs beyond the graph (depth range, training and export resolution,
the training config, whether its depth is metric and how, its numeric precision and, for an INT8 model, how
it was calibrated and what that cost in accuracy) travels as ONNX metadata props, and for a TensorRT engine,
which cannot carry them, in a JSON sidecar beside the engine.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from ssim_depth_core.config import MAX_INPUT_SIDE

INPUT_NAME = "image"
OUTPUT_NAME = "disparity"
# Where a model's metric scale comes from: "none" = scale-less (depth in metres only up to a factor).
_SCALE_SOURCES = ("stereo", "velocity", "supervised")  # in the order metric_source joins them
METRIC_SOURCES = (
    "none",
    *("+".join(c) for n in range(1, 4) for c in itertools.combinations(_SCALE_SOURCES, n)),
)
# What the output tensor holds: "disparity", the normalised disparity of geometry.disparity_to_depth (every
# DepthNet head exports it; a model file that says otherwise is refused rather than misread).
OUTPUT_KINDS = ("disparity",)
# Numeric precision of the model file's weights and activations: "fp32" (export_onnx), or "int8" (a QDQ graph
# from export.quantize: INT8 weights per output channel, INT8 activations, float input, output and head).
MODEL_PRECISIONS = ("fp32", "int8")


def metric_source(config: dict) -> str:
    """Where a model trained with ``config`` (a training config dict, as checkpoints store it) gets its scale.

    "stereo" when ``data.stereo`` (the known baseline), "velocity" when ``loss.weights.velocity`` > 0
    (odometry), "supervised" when ``loss.weights.supervised`` > 0 (ground-truth depth), several joined by
    "+" in that order (e.g. "stereo+velocity"), "none" otherwise, including configs without those keys.
    """
    stereo = bool(config.get("data", {}).get("stereo", False))
    weights = config.get("loss", {}).get("weights", {})
    used = (stereo, float(weights.get("velocity", 0.0)) > 0, float(weights.get("supervised", 0.0)) > 0)
    return "+".join(name for name, on in zip(_SCALE_SOURCES, used, strict=True) if on) or "none"


@dataclass(frozen=True)
class ExportMetadata:
    """What a runtime needs to know about an exported depth network (stored as ONNX metadata props)."""

    min_depth: float
    max_depth: float
    train_height: int
    train_width: int
    height: int  # export (network input) height
    width: int
    config_yaml: str  # the resolved training config
    metric: str  # one of METRIC_SOURCES: how the depth is metric ("none": scale-less)
    output: str = "disparity"  # one of OUTPUT_KINDS: what the output tensor holds
    precision: str = "fp32"  # one of MODEL_PRECISIONS
    # INT8 models only (None otherwise): the data root's name (not its local path) and the number of frames
    # the activation ranges were calibrated on; the held-out frames it was validated on; the AbsRel of the
    # FP32 model and of the INT8 one there (in metres for a metric model, median-scaled otherwise: the
    # AbsRel by which the trainer picks best.pt; None when those frames have no ground truth); the mean
    # relative depth difference |INT8 - FP32| / FP32 over their pixels.
    calibration_data: str | None = None
    calibration_frames: int | None = None
    validation_frames: int | None = None
    abs_rel_fp32: float | None = None
    abs_rel_int8: float | None = None
    depth_difference: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth < math.inf:  # also rejects NaN
            raise ValueError(
                f"metadata needs 0 < min_depth < max_depth < inf, got {self.min_depth} and {self.max_depth}"
            )
        for name in ("train_height", "train_width", "height", "width"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_INPUT_SIDE:
                raise ValueError(f"metadata '{name}' must be in 1..{MAX_INPUT_SIDE} pixels, got {value}")
        if self.metric not in METRIC_SOURCES:
            expected = ", ".join(repr(m) for m in METRIC_SOURCES)
            raise ValueError(f"metadata 'metric' must be one of {expected}, got {self.metric!r}")
        if self.output not in OUTPUT_KINDS:
            expected = ", ".join(repr(m) for m in OUTPUT_KINDS)
            raise ValueError(f"metadata 'output' must be one of {expected}, got {self.output!r}")
        if self.precision not in MODEL_PRECISIONS:
            expected = ", ".join(repr(m) for m in MODEL_PRECISIONS)
            raise ValueError(f"metadata 'precision' must be one of {expected}, got {self.precision!r}")
        if self.precision == "int8" and (self.calibration_frames is None or self.calibration_frames < 1):
            raise ValueError(f"an int8 model needs calibration_frames >= 1, got {self.calibration_frames!r}")
        if self.precision == "fp32" and any(getattr(self, key) is not None for key in _INT8_KEYS):
            raise ValueError(f"an fp32 model has no INT8 record ({', '.join(_INT8_KEYS)})")

    def to_props(self) -> dict[str, str]:
        props = {
            "min_depth": repr(self.min_depth),
            "max_depth": repr(self.max_depth),
            "train_height": str(self.train_height),
            "train_width": str(self.train_width),
            "height": str(self.height),
            "width": str(self.width),
            "config": self.config_yaml,
            "metric": self.metric,
            "output": self.output,
            "precision": self.precision,
        }
        for key in _INT8_KEYS:  # the INT8 record: only where it exists
            value = getattr(self, key)
            if value is not None:
                props[key] = repr(value) if isinstance(value, float) else str(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path) -> ExportMetadata:
        """Parse metadata props; ``source`` names the file in errors.

        ``metric``, ``output`` and ``precision`` are optional: files exported before they existed read as
        "none" (scale-less), "disparity" (the only output then) and "fp32" (the only precision then); so are
        the INT8 record's keys (:data:`_INT8_KEYS`), None when absent.
        """
        keys = ("min_depth", "max_depth", "train_height", "train_width", "height", "width", "config")
        missing = [k for k in keys if k not in props]
        if missing:
            raise ValueError(
                f"{source}: missing metadata {', '.join(missing)}; export it with ssim_depth_core.export"
            )
        try:
            return cls(
                min_depth=float(props["min_depth"]),
                max_depth=float(props["max_depth"]),
                train_height=int(props["train_height"]),
                train_width=int(props["train_width"]),
                height=int(props["height"]),
                width=int(props["width"]),
                config_yaml=props["config"],
                metric=props.get("metric", "none"),
                output=props.get("output", "disparity"),
                precision=props.get("precision", "fp32"),
                **{key: _parse(props.get(key), kind) for key, kind in _INT8_KEYS.items()},
            )
        except ValueError as error:
            raise ValueError(f"{source}: malformed metadata ({error})") from error


# The optional INT8 record of ExportMetadata: prop key (= field name) -> its type.
_INT8_KEYS = {
    "calibration_data": str,
    "calibration_frames": int,
    "validation_frames": int,
    "abs_rel_fp32": float,
    "abs_rel_int8": float,
    "depth_difference": float,
}


def _parse(text: str | None, kind: type):
    return None if text is None else kind(text)


def read_metadata(model: onnx.ModelProto, source: str | Path) -> ExportMetadata:
    """The :class:`ExportMetadata` of a loaded ONNX model."""
    return ExportMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)


def engine_sidecar_path(engine_path: str | Path) -> Path:
    """The JSON file beside an engine that holds its model metadata."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")
