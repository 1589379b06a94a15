"""Checkpoint -> ONNX export, validated against PyTorch, with a TensorRT 10 op-set check.

The exported graph takes ``image`` (1, 3, H, W) float32 RGB in [0, 1] (ImageNet normalisation is inside the
graph) and returns ``disparity`` (1, 1, H, W), the normalised disparity that ``geometry.disparity_to_depth``
maps to metres (the U-Net's sigmoid output, or the SQL head's depth mapped by ``depth_to_disparity``). The
depth range, the training and export resolutions, the full training config and the source of the depth's
metric scale travel with the model as ONNX metadata props (:class:`ExportMetadata`), so a runtime needs
nothing but the file.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml

from ssim_depth_core.artifact import INPUT_NAME, OUTPUT_NAME, ExportMetadata, metric_source
from ssim_depth_core.checkpoint import load_depth_net, write_atomic
from ssim_depth_core.config import MAX_INPUT_SIDE, SIZE_MULTIPLE, to_dict

logger = logging.getLogger(__name__)

# The torch.export-based exporter emits opset 18 natively (Pad-18); it cannot down-convert Pad to 17.
MIN_OPSET = 18
VALIDATION_TOLERANCE = 1e-4  # max abs difference, ONNX Runtime vs PyTorch, on a random input

# ONNX op types the TensorRT 10 ONNX parser imports natively (onnx-tensorrt docs/operators.md), limited to
# what a convolutional depth network (and the SQL head's transformer) can plausibly contain. Anything else is
# reported before a build. LayerNormalization (ConvNeXt, the SQL transformer; opset 17+): only its first
# output Y, checked below. Softmax (opset 13+: along one axis, any axis) and MatMul carry no restriction
# there; Einsum, also supported, is never emitted (the SQL head multiplies with MatMul) and stays out.
# QuantizeLinear / DequantizeLinear: explicit quantisation (an INT8 model of export.quantize), INT8 with zero
# point 0 only (TensorRT quantises symmetrically; UINT8 is only a network I/O type there), checked below.
TENSORRT_OPS = frozenset(
    {
        "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
        "ConstantOfShape", "Conv", "ConvTranspose", "DequantizeLinear", "Div", "Elu", "Equal", "Erf", "Exp",
        "Expand", "Flatten",
        "Floor", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid",
        "HardSwish", "Identity", "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "Log",
        "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad", "Pow", "PRelu", "QuantizeLinear", "Range",
        "Reciprocal",
        "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Selu", "Shape",
        "Sigmoid", "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile",
        "Transpose", "Unsqueeze", "Where",
    }
)  # fmt: skip
# Opsets every TensorRT 10 release parses (TensorRT 9.2 already covered 9..19; later 10.x go further).
TENSORRT_OPSETS = range(9, 20)
# Pad: all four ONNX modes map to ISliceLayer sample modes (reflect -> kREFLECT) since TensorRT 8.5.
_PAD_MODES = {"constant", "reflect", "edge", "wrap"}
_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_COORDINATES = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


class ExportValidationError(RuntimeError):
    """The exported graph is malformed or does not reproduce the PyTorch network."""


def check_tensorrt_ops(model: onnx.ModelProto) -> list[str]:
    """List what in ``model`` the TensorRT 10 ONNX parser would reject; empty when the graph is fine.

    Checks the default-domain opset against :data:`TENSORRT_OPSETS`, every node's op type against
    :data:`TENSORRT_OPS` (custom domains are rejected) and the attributes TensorRT restricts: Pad ``mode``,
    Resize ``mode`` / ``coordinate_transformation_mode`` / ``nearest_mode`` / ``antialias`` /
    ``keep_aspect_ratio_policy``, pooling ``dilations``, LayerNormalization outputs (``Y`` only), and Q/DQ
    nodes: constant scales, INT8 zero points equal to 0, DequantizeLinear of INT8 constants only (TensorRT
    10 has no INT32 dequantisation, e.g. of a quantised bias).
    """
    problems = []
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset not in TENSORRT_OPSETS:
        problems.append(
            f"opset {opset}: TensorRT 10 parses opsets {TENSORRT_OPSETS.start}..{TENSORRT_OPSETS.stop - 1}"
        )
    for index, node in enumerate(model.graph.node):
        where = f"node {index} {node.name or '(unnamed)'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
            continue
        if node.op_type not in TENSORRT_OPS:
            problems.append(f"{where}: op type {node.op_type} is not in the TensorRT allow-list")
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if node.op_type == "Pad" and text.get("mode", "constant") not in _PAD_MODES:
            problems.append(f"{where}: Pad mode {text['mode']!r} (supported: {sorted(_PAD_MODES)})")
        elif node.op_type == "Resize":
            for name, allowed, default in (
                ("mode", _RESIZE_MODES, "nearest"),
                ("coordinate_transformation_mode", _RESIZE_COORDINATES, "half_pixel"),
                ("nearest_mode", _RESIZE_NEAREST, "round_prefer_floor"),
                ("keep_aspect_ratio_policy", {"stretch"}, "stretch"),
            ):
                if text.get(name, default) not in allowed:
                    problems.append(f"{where}: Resize {name} {text[name]!r} (supported: {sorted(allowed)})")
            if text.get("antialias", 0):
                problems.append(f"{where}: Resize antialias is not supported")
        elif node.op_type in ("MaxPool", "AveragePool") and any(d != 1 for d in text.get("dilations", [])):
            problems.append(f"{where}: pooling dilations {list(text['dilations'])} (only 1 is supported)")
        elif node.op_type == "LayerNormalization" and any(node.output[1:]):
            problems.append(f"{where}: LayerNormalization outputs Mean / InvStdDev (only Y is supported)")
        elif node.op_type in QDQ_OPS:
            problems.extend(f"{where}: {problem}" for problem in _qdq_problems(node, attrs, constants))
    return problems


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is a Q/DQ (explicitly quantised) graph."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def _qdq_problems(node: onnx.NodeProto, attrs: dict, constants: dict[str, onnx.TensorProto]) -> list[str]:
    """What TensorRT 10 rejects in one QuantizeLinear / DequantizeLinear node (INT8, symmetric)."""
    int8 = onnx.TensorProto.INT8
    problems = []
    if len(node.input) < 2 or node.input[1] not in constants:
        problems.append("the scale must be a constant")
    if node.op_type == "DequantizeLinear" and node.input[0] in constants:
        kind = constants[node.input[0]].data_type
        if kind != int8:  # e.g. an INT32 bias: its zero point is INT32 too, one problem
            name = onnx.TensorProto.DataType.Name(kind)
            return [*problems, f"dequantises a constant of type {name} (TensorRT 10 dequantises INT8 only)"]
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero_point is not None:
        tensor = constants.get(zero_point)
        if tensor is None:
            problems.append("the zero point must be a constant")
        elif tensor.data_type != int8:
            kind = onnx.TensorProto.DataType.Name(tensor.data_type)
            problems.append(f"zero point of type {kind} (TensorRT quantises to INT8 only)")
        elif onnx.numpy_helper.to_array(tensor).any():
            problems.append("non-zero zero point (TensorRT quantises symmetrically: zero point 0)")
    elif node.op_type == "QuantizeLinear" and attrs.get("output_dtype") != int8:
        problems.append(
            "no INT8 zero point or output_dtype: it quantises to UINT8 (TensorRT takes INT8 only)"
        )
    return problems


def export_onnx(
    checkpoint: str | Path,
    onnx_path: str | Path,
    height: int | None = None,
    width: int | None = None,
    opset: int = MIN_OPSET,
) -> Path:
    """Export the depth network of a training checkpoint to ONNX and validate it.

    Args:
        checkpoint: trainer checkpoint (``.pt``).
        onnx_path: output file; written atomically, only after validation passed.
        height, width: network input size; default the training resolution. Multiples of 32.
        opset: ONNX opset, >= 18.

    Returns:
        ``onnx_path`` as a Path.

    Raises:
        ValueError: bad size or opset.
        ExportValidationError: ``onnx.checker`` fails, ONNX Runtime cannot load or run the graph (its own
            exception types are converted), or it differs from PyTorch by more than
            :data:`VALIDATION_TOLERANCE`; the message names the checkpoint and ``onnx_path``. Nothing is
            written then: a file already at ``onnx_path`` is kept as it was.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the exporter's native opset), got {opset}")
    net, config = load_depth_net(checkpoint)
    height = config.data.height if height is None else height
    width = config.data.width if width is None else width
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or not 0 < value <= MAX_INPUT_SIDE or value % SIZE_MULTIPLE:
            raise ValueError(
                f"export {name} must be a positive multiple of {SIZE_MULTIPLE} up to {MAX_INPUT_SIDE}, got "
                f"{value!r}"
            )

    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    try:
        with _quiet_loggers("onnxscript", "onnx_ir"):  # their optimiser logs every rewrite at INFO
            program = torch.onnx.export(
                net,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnxscript (pip install onnxscript): {error}") from error
    model = program.model_proto
    config_dict = to_dict(config)
    metadata = ExportMetadata(
        min_depth=config.model.min_depth,
        max_depth=config.model.max_depth,
        train_height=config.data.height,
        train_width=config.data.width,
        height=height,
        width=width,
        config_yaml=yaml.safe_dump(config_dict, sort_keys=False),
        metric=metric_source(config_dict),
    )
    for node in model.graph.node:  # the exporter's per-node stack traces carry local paths
        del node.metadata_props[:]
    onnx.helper.set_model_props(model, metadata.to_props())
    model.doc_string = f"ssim_depth DepthNet exported from {Path(checkpoint).name}"

    data = model.SerializeToString()
    _validate(data, net, height, width, f"{checkpoint} -> {onnx_path}")
    for problem in check_tensorrt_ops(model):
        logger.warning("%s: TensorRT compatibility: %s", onnx_path, problem)
    write_atomic(onnx_path, data)
    logger.info(
        "exported %s (%dx%d, opset %d, %.1f MB, metric scale: %s)",
        onnx_path,
        height,
        width,
        opset,
        len(data) / 2**20,
        metadata.metric,
    )
    return Path(onnx_path)


def _validate(data: bytes, net: torch.nn.Module, height: int, width: int, source: str) -> None:
    """onnx.checker, then ONNX Runtime vs PyTorch on a random input not used for tracing; ``source`` (the
    checkpoint and the output file) prefixes every error."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(data)
    except onnx.checker.ValidationError as error:
        raise ExportValidationError(f"{source}: exported graph fails onnx.checker: {error}") from error
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = net(image).numpy()
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: image.numpy()})
    except Exception as error:  # onnxruntime's own types (Fail, InvalidGraph, ...) derive from Exception only
        raise ExportValidationError(
            f"{source}: ONNX Runtime cannot run the exported graph ({type(error).__name__}: {error})"
        ) from error
    if actual.shape != expected.shape:
        raise ExportValidationError(f"{source}: ONNX output shape {actual.shape} != PyTorch {expected.shape}")
    error = float(np.max(np.abs(actual - expected)))
    if not error <= VALIDATION_TOLERANCE:
        raise ExportValidationError(
            f"{source}: ONNX Runtime output differs from PyTorch by {error:.3g} (max abs) > "
            f"{VALIDATION_TOLERANCE}"
        )
    logger.info("ONNX Runtime matches PyTorch (max abs difference %.2e)", error)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Raise the given loggers to WARNING for the duration of the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
