"""TensorRT and CUDA availability: what the engine builder and the TensorRT runtime backend both need.

``tensorrt`` and ``pycuda`` are optional (extra ``tensorrt``) and imported only inside functions.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT, pycuda or a CUDA GPU is missing."""


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`TensorRTUnavailableError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailableError(
            "TensorRT is not installed: install the 'tensorrt' extra of ssim-depth-core (in a checkout: "
            "pip install -e '.[tensorrt]') or use the NVIDIA container / JetPack, or pick the onnxruntime or "
            "torch backend"
        ) from error
    return tensorrt


def cuda_device():
    """``(pycuda.driver, Device)`` for the current CUDA GPU (0; choose with CUDA_VISIBLE_DEVICES)."""
    try:
        import pycuda.driver as cuda
    except ImportError as error:
        raise TensorRTUnavailableError(
            f"pycuda cannot be imported ({error}): install the 'tensorrt' extra of ssim-depth-core "
            "(in a checkout: pip install -e '.[tensorrt]') and check the NVIDIA driver"
        ) from error
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as error:
        raise TensorRTUnavailableError(f"the CUDA driver is unavailable: {error}") from error
    if count == 0:
        raise TensorRTUnavailableError("no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)")
    return cuda, cuda.Device(0)


def tensorrt_available() -> bool:
    """Whether TensorRT, pycuda and a CUDA GPU are all present."""
    try:
        import_tensorrt()
        cuda_device()
    except TensorRTUnavailableError as error:
        logger.debug("TensorRT unavailable: %s", error)
        return False
    return True
