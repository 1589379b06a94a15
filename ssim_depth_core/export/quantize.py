"""INT8 post-training quantisation of an exported depth network, validated against FP32 before it is written.

ONNX Runtime static quantisation (``quantize_static``) turns the FP32 model of :func:`export.onnx.export_onnx`
into a QDQ graph: every weighted layer's weights as INT8 with one scale per output channel (``per_channel``;
``DequantizeLinear`` with ``axis`` 0), and 8-bit activations whose ranges are calibrated on training frames
passed through exactly the serving pre-processing (:func:`runtime.estimator.preprocess_image`). The input,
the output and the disparity head (the last weighted layer and what follows it: the sigmoid, or the SQL
head's depth-to-disparity mapping) stay float, so that the disparity itself is never rounded to 8 bits; it
costs one small convolution in float and measured about 10 % less depth difference (docs/serving.md).

Two encodings of the same scheme (:data:`TARGETS`): ``cpu`` (the default) quantises activations to uint8
with a zero point (ONNX Runtime's U8S8, its fastest CPU kernels: 1.6x faster than S8S8 on an AVX-512 VNNI
x86 core, docs/benchmarks.md); ``tensorrt`` to int8 with zero point 0 and float biases, the only Q/DQ form
TensorRT 10 parses (symmetric INT8; no INT32 ``DequantizeLinear``), which ONNX Runtime runs as well.

Calibration: the min-max range of every activation (:data:`CALIBRATE_METHOD`; measured against the
alternatives in docs/serving.md) over ``calibration_frames`` frames spread evenly over the model's train
split of the data (every frame without one; never a held-out frame), collected in chunks of at most
:data:`_CHUNK` frames whose ranges merge exactly; unreadable frames are dropped (named in the log) before
the chunks are formed, and the export fails only when none is left. The quantised model is then compared
with the FP32 model on held-out frames (the test split, else the val split, else frames kept back from
calibration), both run through :class:`DepthEstimator` on ONNX Runtime as serving runs them: the AbsRel of
each against ground truth where the data has it (median-scaled, and in metres for a metric model) and the
mean relative depth difference |INT8 - FP32| / FP32. The model is refused, and nothing written, when an
AbsRel rises by more than ``tolerance``; without ground truth, when the depth difference exceeds
``max_difference`` (it bounds the AbsRel change, ``|AbsRel_int8 - AbsRel_fp32| <= mean(|d_int8 - d_fp32| /
gt)``, but loosely: quantisation noise does not line up with the FP32 errors).

The INT8 file is built in a temporary folder and moved to its path (``checkpoint.write_atomic``) only once it
passed. A file already at that path is replaced or removed only when it is an INT8 model of this code (its
metadata says ``precision: int8``); any other file there is refused up front, before calibration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import yaml

from ssim_depth_core.artifact import INPUT_NAME, read_metadata
from ssim_depth_core.checkpoint import write_atomic
from ssim_depth_core.config import DataConfig, stored_config
from ssim_depth_core.data.sequence import FrameSequence
from ssim_depth_core.data.sources import NO_SPLIT, open_sequences, resolve_split, select_split
from ssim_depth_core.data.triplets import build_samples, missing_split_sequences
from ssim_depth_core.errors import first_line, not_found
from ssim_depth_core.evaluation import MetricsAccumulator, evaluate_depth_scalings
from ssim_depth_core.export.onnx import check_tensorrt_ops
from ssim_depth_core.imaging import FrameError
from ssim_depth_core.outputs import occupied
from ssim_depth_core.progress import progress_bar
from ssim_depth_core.runtime.estimator import DepthEstimator, preprocess_image

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_FRAMES = 300
DEFAULT_VALIDATION_FRAMES = 200
# Largest AbsRel increase INT8 may cost: the accuracy budget for a CPU model (+0.01 AbsRel over the
# R18 FP32 model); a model that loses more than that to quantisation alone cannot meet it.
DEFAULT_TOLERANCE = 0.01
# Without ground truth (a rosbag): the largest mean relative depth difference |INT8 - FP32| / FP32 accepted.
# It bounds the AbsRel change from above, loosely: on synthetic drives (docs/serving.md) calibrations that
# cost <= 0.0061 AbsRel differed by 0.012-0.025, broken ones (+0.05 and +0.30 AbsRel) by 0.20 and 0.50.
DEFAULT_MAX_DIFFERENCE = 0.05
# Calibration: min-max. Deterministic, exact when merged chunk by chunk (the histogram methods are not: their
# bins depend on the first chunk), never clips a rare large activation, and measured no worse than
# "Percentile" or "Entropy" (docs/serving.md); one of onnxruntime.quantization.CalibrationMethod's names.
CALIBRATE_METHOD = "MinMax"
CALIBRATE_METHODS = ("MinMax", "Percentile", "Entropy")
# At most this many frames' activations are held at once. Chunks go through quantize_static's
# "CalibStridedMinMax" (a chunked collection for every method); not "CalibMaxIntermediateOutputs", which in
# onnxruntime 1.32 drops the chunks it clears instead of merging them (only the last count % N frames count).
_CHUNK = 16
# The layers whose weights carry the disparity; the head is everything from the last of them to the output.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Held out for validation without a test or val split: at most this fraction of the frames.
_HELD_OUT_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Target:
    """How a target's Q/DQ graph encodes INT8 activations (ONNX Runtime ``quantize_static`` settings)."""

    activation_type: str  # onnxruntime.quantization.QuantType member name
    symmetric: bool  # activations with zero point 0
    quantize_bias: bool  # biases as INT32 DequantizeLinear (TensorRT has no INT32 dequantisation)


TARGETS = {
    "cpu": Target("QUInt8", symmetric=False, quantize_bias=True),
    "tensorrt": Target("QInt8", symmetric=True, quantize_bias=False),
}


class Int8ValidationError(RuntimeError):
    """The INT8 model loses more accuracy against the FP32 one than the tolerance allows."""


@dataclasses.dataclass(frozen=True)
class Int8Report:
    """What the validation of an INT8 model measured on the held-out frames.

    Attributes:
        calibration_frames: frames the activation ranges were calibrated on.
        validation_frames: held-out frames both models ran on.
        scored_frames: those of them with valid ground truth (0: the data has none).
        abs_rel: per scaling ("median", and "metric" for a metric model) the mean AbsRel of (FP32, INT8).
        depth_difference: mean over the frames' pixels of |INT8 - FP32| / FP32 depth.
        depth_difference_p95: its 95th percentile over pixels.
        tolerance: the largest AbsRel increase accepted (with ground truth).
        max_difference: the largest mean depth difference accepted (without ground truth).
        headline: the scaling whose AbsRel the metadata records ("metric" for a metric model).
    """

    calibration_frames: int
    validation_frames: int
    scored_frames: int
    abs_rel: dict[str, tuple[float, float]]
    depth_difference: float
    depth_difference_p95: float
    tolerance: float
    max_difference: float
    headline: str

    @property
    def increase(self) -> float:
        """The largest AbsRel increase INT8 vs FP32 over the scalings (nan without ground truth)."""
        return max((int8 - fp32 for fp32, int8 in self.abs_rel.values()), default=float("nan"))

    @property
    def accepted(self) -> bool:
        if self.abs_rel:
            return bool(self.increase <= self.tolerance)
        return bool(self.depth_difference <= self.max_difference)

    def summary(self) -> str:
        lines = [
            f"INT8 vs FP32 on {self.validation_frames} held-out frames (calibrated on "
            f"{self.calibration_frames}): depth difference |INT8 - FP32| / FP32 mean "
            f"{self.depth_difference:.4f}, p95 {self.depth_difference_p95:.4f}"
        ]
        for scaling, (fp32, int8) in self.abs_rel.items():
            label = "in metres" if scaling == "metric" else "median-scaled"
            lines.append(
                f"AbsRel {label} on {self.scored_frames} frames with ground truth: FP32 {fp32:.4f}, "
                f"INT8 {int8:.4f} ({int8 - fp32:+.4f}; tolerance +{self.tolerance:g})"
            )
        if not self.abs_rel:
            lines.append(
                f"no ground truth: the mean depth difference is held to {self.max_difference:g} instead"
            )
        return "\n".join(lines)


def output_head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from the last weighted layer(s) to the graph outputs (kept float by quantisation).

    Walks back from each output through every non-constant input, stopping at (and including) the first
    node of :data:`_WEIGHTED_OPS` on each path.
    """
    producers = {tensor: node for node in model.graph.node for tensor in node.output}
    constants = {init.name for init in model.graph.initializer}
    head, seen, stack = [], set(), [output.name for output in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if not node.name:
            raise ValueError(f"the graph's output head has an unnamed {node.op_type} node: cannot exclude it")
        head.append(node.name)
        if node.op_type not in _WEIGHTED_OPS:
            stack.extend(name for name in node.input if name and name not in constants)
    return head


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    data: str | Path,
    calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
    validation_frames: int = DEFAULT_VALIDATION_FRAMES,
    tolerance: float = DEFAULT_TOLERANCE,
    max_difference: float = DEFAULT_MAX_DIFFERENCE,
    target: str = "cpu",
    calibrate_method: str = CALIBRATE_METHOD,
    keep_head_float: bool = True,
    progress: bool = True,
    frames: CalibrationFrames | None = None,
) -> Int8Report:
    """Quantise an exported FP32 model to INT8, validate it against the FP32 one, and write it if it passes.

    Args:
        fp32_path: model from :func:`export.onnx.export_onnx` (its metadata names the data config).
        int8_path: where the INT8 model goes (written atomically, only when it passes validation). A file
            already there must be an INT8 model of an earlier export (its metadata says so): anything else
            is refused before calibration, neither overwritten nor removed.
        data: a training data root (KITTI layout, synthetic drives, or rosbag2), opened with the model's
            training data config (topics, intrinsics, ground-truth source).
        calibration_frames: frames spread evenly over the train split (fewer when the split has fewer).
        validation_frames: held-out frames the two models are compared on (fewer when there are fewer).
        tolerance: the largest AbsRel increase accepted (held-out frames with ground truth).
        max_difference: without ground truth, the largest mean relative depth difference accepted.
        target: "cpu" or "tensorrt" (:data:`TARGETS`).
        calibrate_method: one of :data:`CALIBRATE_METHODS`.
        keep_head_float: leave :func:`output_head_nodes` unquantised (False: for comparisons only).
        progress: progress bars on stderr.
        frames: the frames :func:`select_calibration_frames` chose from ``data`` with these frame counts
            (for a caller that checks the data before it writes the FP32 model); None: chosen here.

    Returns:
        The :class:`Int8Report` of the written model.

    Raises:
        ValueError: bad arguments, an FP32 path that is not an FP32 export, a file at ``int8_path`` that
            is not an INT8 model, or data without (readable) frames.
        Int8ValidationError: the INT8 model fails the tolerance; nothing is written, and an INT8 model
            already at ``int8_path`` (of an earlier export) is removed so it cannot pass for this one.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    check_quantize_options(
        data, target, calibrate_method, calibration_frames, validation_frames, tolerance, max_difference
    )
    check_int8_output(fp32_path, int8_path)
    if not fp32_path.is_file():
        raise not_found("ONNX model", fp32_path)
    fp32_model = onnx.load(fp32_path)
    metadata = read_metadata(fp32_model, fp32_path)
    if metadata.precision != "fp32":
        raise ValueError(f"{fp32_path} is already {metadata.precision}: quantise the FP32 export")
    data_config = stored_config(yaml.safe_load(metadata.config_yaml), fp32_path).data
    if frames is None:
        frames = select_calibration_frames(data, data_config, calibration_frames, validation_frames)
    sequences, calibration, held_out, held_out_name = frames
    calibration = _readable_frames(data, sequences, calibration, progress)
    logger.info(
        "INT8 (%s): calibrating (%s) on %d frames of %s, validating on %d %s frames",
        target,
        calibrate_method,
        len(calibration),
        data,
        len(held_out),
        held_out_name,
    )
    settings = TARGETS[target]
    reader = _CalibrationReader(sequences, calibration, (metadata.height, metadata.width), progress)
    with tempfile.TemporaryDirectory(prefix="ssim_depth_int8_") as tmp:
        quantized = Path(tmp) / "int8.onnx"
        with _quiet_quantizer():
            quantize_static(
                str(fp32_path),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType[settings.activation_type],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=output_head_nodes(fp32_model) if keep_head_float else [],
                calibrate_method=CalibrationMethod[calibrate_method],
                extra_options={
                    "ActivationSymmetric": settings.symmetric,
                    "WeightSymmetric": True,
                    "QuantizeBias": settings.quantize_bias,
                    # despite its name, the chunked collection of every calibration method
                    "CalibStridedMinMax": reader.chunk,
                },
            )
        model = onnx.load(quantized)
        onnx.checker.check_model(model)
        int8_metadata = dataclasses.replace(
            metadata,
            precision="int8",
            calibration_data=Path(data).name,  # the name only: model files carry no local paths
            calibration_frames=len(calibration),
        )
        _set_metadata(model, int8_metadata)
        onnx.save(model, quantized)
        report = _validate(fp32_path, quantized, sequences, held_out, len(calibration), progress)
        report = dataclasses.replace(report, tolerance=float(tolerance), max_difference=float(max_difference))
        if not report.accepted:
            raise Int8ValidationError(
                f"INT8 model refused, not written to {int8_path}{_remove_stale_int8(int8_path)}; the FP32 "
                f"model {fp32_path} is kept.\n{report.summary()}"
            )
        headline = report.abs_rel.get(report.headline)
        _set_metadata(
            model,
            dataclasses.replace(
                int8_metadata,
                validation_frames=report.validation_frames,
                abs_rel_fp32=None if headline is None else headline[0],
                abs_rel_int8=None if headline is None else headline[1],
                depth_difference=report.depth_difference,
            ),
        )
    if target == "tensorrt":
        for problem in check_tensorrt_ops(model):
            logger.warning("%s: TensorRT compatibility: %s", int8_path, problem)
    data_bytes = model.SerializeToString()
    write_atomic(int8_path, data_bytes)
    logger.info("INT8 model written to %s (%.1f MB)", int8_path, len(data_bytes) / 2**20)
    return report


def check_quantize_options(
    data: str | Path,
    target: str = "cpu",
    calibrate_method: str = CALIBRATE_METHOD,
    calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
    validation_frames: int = DEFAULT_VALIDATION_FRAMES,
    tolerance: float = DEFAULT_TOLERANCE,
    max_difference: float = DEFAULT_MAX_DIFFERENCE,
) -> None:
    """Refuse :func:`quantize_onnx` arguments out of range (callers that write the FP32 model first check
    them before). ValueError names the argument; FileNotFoundError a missing ``data``."""
    if target not in TARGETS:
        raise ValueError(f"INT8 target must be one of {sorted(TARGETS)}, got {target!r}")
    if calibrate_method not in CALIBRATE_METHODS:
        raise ValueError(f"calibrate_method must be one of {CALIBRATE_METHODS}, got {calibrate_method!r}")
    for name, value in (("calibration_frames", calibration_frames), ("validation_frames", validation_frames)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    for name, value in (("tolerance", tolerance), ("max_difference", max_difference)):
        if not isinstance(value, int | float) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not Path(data).exists():
        raise not_found("calibration data", data)


def check_int8_output(fp32_path: str | Path, int8_path: str | Path) -> None:
    """Refuse ``int8_path`` as :func:`quantize_onnx`'s output: the FP32 model's own path, or a file there that
    is not an INT8 model of an earlier export (neither overwritten nor removed). Callers that write the FP32
    model first check this before writing it.

    Raises:
        ValueError: naming the path and why.
    """
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if int8_path.resolve() == fp32_path.resolve():
        raise ValueError(f"the INT8 model must go to another file than the FP32 one ({fp32_path})")
    foreign = _not_an_int8_model(int8_path)
    if foreign:
        raise ValueError(
            f"{int8_path} already exists and is not an INT8 model of ssim_depth ({foreign}): it is neither "
            "overwritten nor removed; move it away or choose another INT8 output path"
        )


def _not_an_int8_model(path: Path) -> str | None:
    """Why the file at ``path`` is not an INT8 model written by :func:`quantize_onnx`; None when it is one
    (its metadata says ``precision: int8``) or when nothing is there."""
    if not occupied(path):
        return None
    try:
        precision = read_metadata(onnx.load(path, load_external_data=False), path).precision
    except Exception as error:  # protobuf and the file system raise their own types for a foreign file
        return f"not a readable ONNX model with ssim_depth metadata: {type(error).__name__}: {error}"
    return None if precision == "int8" else f"its metadata says precision {precision}"


def _remove_stale_int8(path: Path) -> str:
    """Remove an INT8 model of an earlier export from ``path`` (so it cannot pass for a refused one), and
    say what happened to ``path`` in the refusal's words."""
    if not occupied(path):
        return ""
    foreign = _not_an_int8_model(path)
    if foreign:  # it appeared during the export: not ours to remove
        return f" (the file there is kept: it is not an INT8 model, {foreign})"
    path.unlink()
    return " (the earlier INT8 model there was removed: it belongs to another export)"


class CalibrationFrames(NamedTuple):
    """The frames of a data root that INT8 calibration and validation use, samples as (sequence index,
    frame) of ``sequences``."""

    sequences: list[FrameSequence]
    calibration: list[tuple[int, int]]
    held_out: list[tuple[int, int]]
    held_out_name: str  # "test split", "val split" or "kept-back"


def select_calibration_frames(
    data: str | Path,
    data_config: DataConfig,
    calibration_frames: int = DEFAULT_CALIBRATION_FRAMES,
    validation_frames: int = DEFAULT_VALIDATION_FRAMES,
) -> CalibrationFrames:
    """Open DATA as the model's ``data_config`` reads it and choose its frames. Callers that write the FP32
    model first run it before (and pass the result to :func:`quantize_onnx`), so that unusable data is
    refused while nothing is written.

    The model's train split (``data_config.train_split``) selects the calibration frames. One that DATA
    cannot supply gives way to DATA's own train split, with a warning: a split file of the training run that
    is not here (a relative path from another folder, another machine), a split name DATA has no file for, a
    malformed split file, or one that names sequences DATA does not have or selects none of its frames (the
    model trained on other data).

    Raises:
        ValueError: DATA cannot be opened, or has too few frames for both sets (see :func:`quantize_onnx`).
    """
    sequences = open_sequences(data, data_config)
    train_split = data_config.train_split
    problem = _split_problem(data, sequences, train_split)
    if problem:
        logger.warning(
            "INT8: the model's train split %s %s: calibrating on %s's own train split",
            train_split,
            problem,
            data,
        )
        train_split = ""
    return CalibrationFrames(
        sequences, *_select_frames(data, sequences, train_split, calibration_frames, validation_frames)
    )


def _split_problem(data: str | Path, sequences: list[FrameSequence], split: str) -> str:
    """Why split value ``split`` (a file or a name; empty and "none" need nothing) cannot select frames of
    ``sequences`` of ``data``, or "" when it can."""
    if split in ("", NO_SPLIT):
        return ""
    try:
        split_file = resolve_split(data, split)
        missing = missing_split_sequences(sequences, split_file)
        if missing:
            return f"names {len(missing)} sequence(s) {data} does not have (first: {missing[0]})"
        if not build_samples(sequences, [0], split_file):
            return f"selects none of the frames of {data}"
    except (FileNotFoundError, ValueError) as error:  # not here, no such name, a malformed line
        return f"cannot be used ({first_line(error)})"
    return ""


def _readable_frames(
    data: str | Path, sequences: list[FrameSequence], samples: list[tuple[int, int]], progress: bool
) -> list[tuple[int, int]]:
    """``samples`` without the frames that cannot be read (each one logged by name, then counted).

    The calibration needs every frame of every chunk: ONNX Runtime fails on a chunk without data, so the
    unreadable ones leave before the chunks are formed. Each frame is decoded here once more than in
    calibration (cheap next to running the network on it).
    """
    readable = []
    for sequence_index, frame in progress_bar(samples, desc="INT8 calibration frames", disable=not progress):
        sequence = sequences[sequence_index]
        try:
            sequence.image(frame)
        except FrameError as error:
            logger.warning("calibration: skipping unreadable %s frame %d: %s", sequence.name, frame, error)
            continue
        readable.append((sequence_index, frame))
    unreadable = len(samples) - len(readable)
    if not readable:
        raise ValueError(
            f"{data}: none of the {len(samples)} calibration frames could be read ({unreadable} "
            f"unreadable of {len(samples)}; each is named in the log above)"
        )
    if unreadable:
        logger.warning(
            "calibration: %d of %d frames of %s are unreadable and skipped; calibrating on the other %d",
            unreadable,
            len(samples),
            data,
            len(readable),
        )
    return readable


def _set_metadata(model: onnx.ModelProto, metadata) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())


def _spread(samples: Sequence, count: int) -> list:
    """``count`` items spread evenly over ``samples`` (all of them when there are fewer), in order."""
    if count >= len(samples):
        return list(samples)
    return [samples[i] for i in np.unique(np.linspace(0, len(samples) - 1, count).round().astype(int))]


def _select_frames(
    data: str | Path,
    sequences: list[FrameSequence],
    train_split: str,
    calibration_frames: int,
    validation_frames: int,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str]:
    """(calibration samples, held-out samples, the held-out set's name) as (sequence index, frame).

    Calibration frames come from the model's train split (``train_split``, its config's ``data.train_split``:
    empty = DATA's own ``train_files.txt``, else every frame), held-out ones from DATA's test split, else its
    val split, else from frames kept back; a held-out frame is never a calibration frame.
    """
    pool = build_samples(sequences, [0], select_split(data, train_split, "train"))
    held_out, name = [], ""
    for split in ("test", "val"):
        split_file = select_split(data, "", split)
        if split_file is not None:
            held_out, name = build_samples(sequences, [0], split_file), f"{split} split"
            break
    if not held_out:  # no held-out split: keep some frames back from calibration
        count = min(validation_frames, int(len(pool) * _HELD_OUT_FRACTION))
        held_out, name = _spread(pool, count), "kept-back"
    held_out = _spread(held_out, validation_frames)
    chosen = set(held_out)
    pool = [sample for sample in pool if sample not in chosen]
    if not pool or not held_out:
        raise ValueError(
            f"{data}: {len(pool)} calibration and {len(held_out)} held-out frames; INT8 needs both (a "
            "dataset with a train and a test split, or a recording of at least 5 frames)"
        )
    return _spread(pool, calibration_frames), held_out, name


class _CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader``: one pre-processed frame per ``get_next``, of frames that
    :func:`_readable_frames` read (one that stops being readable meanwhile is an error naming it).
    ``set_range`` limits it to a chunk of ``chunk`` frames (the largest divisor of the frame count up to
    :data:`_CHUNK`: ONNX Runtime's chunked calibration needs one that divides it)."""

    def __init__(
        self,
        sequences: list[FrameSequence],
        samples: list[tuple[int, int]],
        size: tuple[int, int],
        progress: bool,
    ) -> None:
        self._sequences, self._samples, self._size = sequences, samples, size
        self._next, self._end = 0, len(samples)
        self.chunk = max(n for n in range(1, _CHUNK + 1) if len(samples) % n == 0)
        self._bar = progress_bar(total=len(samples), desc="INT8 calibration", disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next < self._end:
            sequence_index, frame = self._samples[self._next]
            self._next += 1
            self._bar.update()
            sequence = self._sequences[sequence_index]
            try:
                image = sequence.image(frame)
            except FrameError as error:
                raise ValueError(
                    f"calibration: {sequence.name} frame {frame} was readable a moment ago and is not now "
                    f"(changed during the export?): {error}"
                ) from error
            return {INPUT_NAME: preprocess_image(image, self._size)[None]}
        if self._end == len(self._samples):
            self._bar.close()
        return None

    def __len__(self) -> int:
        return len(self._samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self._samples))


def _validate(
    fp32_path: Path,
    int8_path: Path,
    sequences: list[FrameSequence],
    samples: list[tuple[int, int]],
    calibration_frames: int,
    progress: bool,
) -> Int8Report:
    """Run both models through DepthEstimator (ONNX Runtime, CPU) on ``samples`` and compare them (the
    report's tolerances are left at the defaults for the caller to set)."""
    fp32 = DepthEstimator(fp32_path, backend="onnxruntime", device="cpu")
    int8 = DepthEstimator(int8_path, backend="onnxruntime", device="cpu")
    metric = fp32.backend.metric != "none"
    # per model: (median-scaled, in metres) accumulators
    scores = {name: (MetricsAccumulator(), MetricsAccumulator()) for name in ("fp32", "int8")}
    differences, frames = [], 0
    for sequence_index, frame in progress_bar(samples, desc="INT8 validation", disable=not progress):
        sequence = sequences[sequence_index]
        try:
            image = sequence.image(frame)
        except FrameError as error:
            logger.warning("validation: skipping %s frame %d: %s", sequence.name, frame, error)
            continue
        depths = {"fp32": fp32(image), "int8": int8(image)}
        frames += 1
        differences.append((np.abs(depths["int8"] - depths["fp32"]) / depths["fp32"]).ravel())
        gt = sequence.depth(frame)
        if gt is None:
            continue
        try:
            result = {
                name: evaluate_depth_scalings(gt, depth, unscaled=metric) for name, depth in depths.items()
            }
        except ValueError:  # no valid ground truth inside the crop
            continue
        for name, (median, unscaled) in scores.items():
            median.add(result[name].median)
            if metric:
                unscaled.add(result[name].metric)
    if frames == 0:
        raise ValueError(f"none of the {len(samples)} held-out frames could be read")
    difference = np.concatenate(differences)
    scored = len(scores["fp32"][0])
    abs_rel = {}
    if scored:
        for scaling, index in (("median", 0), ("metric", 1)) if metric else (("median", 0),):
            abs_rel[scaling] = tuple(
                float(scores[name][index].mean()["abs_rel"]) for name in ("fp32", "int8")
            )
    return Int8Report(
        calibration_frames=calibration_frames,
        validation_frames=frames,
        scored_frames=scored,
        abs_rel=abs_rel,
        depth_difference=float(difference.mean()),
        depth_difference_p95=float(np.percentile(difference, 95)),
        tolerance=DEFAULT_TOLERANCE,
        max_difference=DEFAULT_MAX_DIFFERENCE,
        headline="metric" if metric else "median",
    )


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer():
    """Silence ONNX Runtime's advice to run ``quant_pre_process`` (the exported graph gains nothing from it:
    the exporter already folds batch norms and infers shapes; measured: same ops, bit-identical outputs) and
    move the histogram calibrators' ``print`` output (tensor counts, bins) to the debug log."""
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        logging.getLogger().removeFilter(hint)
        if printed.getvalue().strip():
            logger.debug("onnxruntime.quantization: %s", printed.getvalue().strip())
