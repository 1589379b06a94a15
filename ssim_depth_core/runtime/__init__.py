"""Serving runtime: inference backends, the DepthEstimator and point-cloud packing."""

from .backends import Backend, OnnxRuntimeBackend, TensorRTBackend, TorchBackend, create_backend
from .estimator import DepthEstimator

__all__ = [
    "Backend",
    "DepthEstimator",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "create_backend",
]
