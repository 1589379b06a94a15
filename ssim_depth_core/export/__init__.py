"""Serving export: checkpoint -> validated ONNX -> cached TensorRT engine."""

from ssim_depth_core.accelerator import TensorRTUnavailableError, tensorrt_available
from ssim_depth_core.artifact import ExportMetadata, read_metadata

from .onnx import ExportValidationError, check_tensorrt_ops, export_onnx
from .tensorrt import EngineBuildError, build_engine, engine_cache_key

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
