"""Serving export: checkpoint -> validated ONNX -> cached TensorRT engine."""

from .onnx import (
    ExportMetadata,
    ExportValidationError,
    check_tensorrt_ops,
    export_onnx,
    read_metadata,
)
from .tensorrt import (
    EngineBuildError,
    TensorRTUnavailableError,
    build_engine,
    engine_cache_key,
    tensorrt_available,
)

__all__ = [
    "EngineBuildError",
    "ExportMetadata",
    "ExportValidationError",
    "TensorRTUnavailableError",
    "build_engine",
    "check_tensorrt_ops",
    "engine_cache_key",
    "export_onnx",
    "read_metadata",
    "tensorrt_available",
]
