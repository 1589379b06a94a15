"""DepthEstimator: camera image in, metric depth map out, on any backend.

Pre-processing is the training pipeline's: ``imaging.resize_image`` to the network size (area
interpolation), channel order to RGB, /255, HWC -> CHW, written straight into the batch. Post-processing:
``geometry.disparity_to_depth`` (the training formula) at the network size, with the metric ``depth_scale``
folded into the range: ``s / (1/max + (1/min - 1/max) d) = 1 / (1/(s max) + (1/(s min) - 1/(s max)) d)``. For
another output size its inverse depth is resized (``cv2.INTER_LINEAR``) and inverted: interpolation happens in
inverse depth, the quantity the network predicts (linear interpolation commutes with the affine map from
disparity), and the result stays inside the depth range. The order keeps the full-size work to one resize and
one in-place reciprocal: with a GPU backend the CPU pre/post-processing is most of a frame's time.

Every depth head outputs that normalised disparity (``backend.output`` "disparity"): the SQL head converts its
bins' depth in the graph, and the conversion here gives that depth back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ssim_depth_core.errors import first_line
from ssim_depth_core.geometry import disparity_to_depth
from ssim_depth_core.imaging import resize_image
from ssim_depth_core.runtime.backends import Backend, create_backend

# encoding -> whether the channels must be reversed to get RGB (the ROS names are accepted as aliases)
ENCODINGS = {"rgb": False, "rgb8": False, "bgr": True, "bgr8": True}


class DepthEstimator:
    """Monocular depth in metres from uint8 colour images.

    Args:
        model_path: ``.engine``, ``.onnx`` or ``.pt`` file, or an already open :class:`Backend`.
        backend: backend name for :func:`create_backend` ("auto", "tensorrt", "onnxruntime", "torch").
        min_depth, max_depth: depth range in metres; default the model's training range.
        depth_scale: multiplies every depth (metric scale factor of a scale-ambiguous model).
        input_encoding: default channel order of the images, "rgb" or "bgr" ("rgb8"/"bgr8" also accepted).
        output_size: (H, W) of the returned depth maps; default each input image's own size.
        **backend_options: passed to :func:`create_backend` (device, precision, cache_dir, threads).
    """

    def __init__(
        self,
        model_path: str | Path | Backend,
        backend: str = "auto",
        min_depth: float | None = None,
        max_depth: float | None = None,
        depth_scale: float = 1.0,
        input_encoding: str = "rgb",
        output_size: tuple[int, int] | None = None,
        **backend_options,
    ) -> None:
        _check_encoding(input_encoding)
        if not (isinstance(depth_scale, int | float) and math.isfinite(depth_scale) and depth_scale > 0):
            raise ValueError(f"depth_scale must be a finite number > 0, got {depth_scale!r}")
        if output_size is not None and (len(output_size) != 2 or min(output_size) < 1):
            raise ValueError(f"output_size must be (height, width) >= 1, got {output_size!r}")
        if isinstance(model_path, Backend):
            if backend_options:
                raise ValueError(f"backend options {sorted(backend_options)} given with an open backend")
            self.backend = model_path
        else:
            self.backend = create_backend(model_path, backend, **backend_options)
        if self.backend.output != "disparity":
            raise ValueError(
                f"{model_path}: the model outputs {self.backend.output!r}; DepthEstimator converts a "
                "normalised 'disparity' (artifact.OUTPUT_KINDS)"
            )
        self.min_depth = self.backend.min_depth if min_depth is None else float(min_depth)
        self.max_depth = self.backend.max_depth if max_depth is None else float(max_depth)
        if self.min_depth is None or self.max_depth is None:
            raise ValueError(f"{model_path}: the model file has no depth range; pass min_depth and max_depth")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth} and {self.max_depth}")
        self.depth_scale = float(depth_scale)
        self.input_encoding = input_encoding
        self.output_size = None if output_size is None else (int(output_size[0]), int(output_size[1]))

    def check_runs(self, source: str | Path) -> None:
        """Run one blank frame of the network's size: a model that opens but cannot run (a graph that does not
        match its metadata, too little memory) or gives no finite depth fails here, before any output exists.

        Raises:
            ValueError: naming ``source`` and what went wrong.
        """
        try:
            depth = self(np.zeros((*self.input_size, 3), np.uint8))
        except Exception as error:  # each runtime raises its own types
            raise ValueError(
                f"{source}: the model opened but cannot run ({type(error).__name__}: {first_line(error)})"
            ) from error
        if not np.isfinite(depth).all():
            raise ValueError(f"{source}: the model gives non-finite depth (NaN weights or outputs?)")

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network runs at."""
        return self.backend.input_size

    def __call__(self, image: np.ndarray, encoding: str | None = None) -> np.ndarray:
        """Depth of one image.

        Args:
            image: (H, W, 3) uint8 colour image.
            encoding: its channel order, "rgb" or "bgr"; default ``input_encoding``.

        Returns:
            (H, W) float32 depth in metres, or ``output_size`` when set.
        """
        return self.predict_batch([image], encoding)[0]

    def predict_batch(self, images: Sequence[np.ndarray], encoding: str | None = None) -> list[np.ndarray]:
        """Depth of several images (sizes may differ) in one backend call; one (H, W) float32 map each."""
        if len(images) == 0:
            raise ValueError("predict_batch needs at least one image")
        encoding = self.input_encoding if encoding is None else encoding
        _check_encoding(encoding)
        batch = np.empty((len(images), 3, *self.backend.input_size), np.float32)
        for index, image in enumerate(images):
            preprocess_image(
                image, self.backend.input_size, ENCODINGS[encoding], out=batch[index], index=index
            )
        disparities = self.backend(batch)[:, 0]
        return [
            self._to_depth(disparity, self.output_size or image.shape[:2])
            for disparity, image in zip(disparities, images, strict=True)
        ]

    def _to_depth(self, disparity: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(h, w) sigmoid disparity -> (H, W) float32 metric depth."""
        scale = self.depth_scale
        inverse_depth, depth = disparity_to_depth(disparity, scale * self.min_depth, scale * self.max_depth)
        if disparity.shape == tuple(size):
            return depth.astype(np.float32, copy=False)
        inverse_depth = cv2.resize(
            inverse_depth.astype(np.float32, copy=False), (size[1], size[0]), interpolation=cv2.INTER_LINEAR
        )
        return np.reciprocal(inverse_depth, out=inverse_depth)


def preprocess_image(
    image: np.ndarray,
    size: tuple[int, int],
    swap_channels: bool = False,
    out: np.ndarray | None = None,
    index: int = 0,
) -> np.ndarray:
    """The serving pre-processing of one frame: (H, W, 3) uint8 -> (3, h, w) float32 RGB in [0, 1].

    ``imaging.resize_image`` to ``size`` = (h, w) (area interpolation, as in training), the channels reversed
    when ``swap_channels`` (BGR input), /255, written into ``out`` (a (3, h, w) float32 view, e.g. one frame
    of a batch) or a new array; returned. ``index`` names the image in errors. INT8 calibration
    (``export.quantize``) feeds its frames through this function too, so the activation ranges it measures
    are those of serving.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected an (H, W, 3) uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected an (H, W, 3) uint8 array, got {image.dtype} of shape {image.shape}"
        )
    height, width = size
    if out is None:
        out = np.empty((3, height, width), np.float32)
    planes = cv2.split(resize_image(image, width, height))  # contiguous planes: a fast HWC -> CHW
    if swap_channels:
        planes = planes[::-1]
    for channel, plane in enumerate(planes):
        np.divide(plane, np.float32(255), out=out[channel])
    return out


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown image encoding {encoding!r}; expected one of {sorted(ENCODINGS)}")
