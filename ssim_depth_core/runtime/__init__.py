"""Serving runtime: inference backends, the DepthEstimator, the frame pipeline (depth, camera, point cloud,
preview per RGB frame), point-cloud packing and latency statistics."""

from .backends import Backend, OnnxRuntimeBackend, TensorRTBackend, TorchBackend, create_backend
from .estimator import DepthEstimator
from .frames import DepthFrame, FrameOptions, FramePipeline, ModelSettings

__all__ = [
    "Backend",
    "DepthEstimator",
    "DepthFrame",
    "FrameOptions",
    "FramePipeline",
    "ModelSettings",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "create_backend",
]
