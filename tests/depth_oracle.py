"""Model files whose "network" knows the answer: an ONNX graph that returns the sigmoid disparity of a given
depth map for any input image, with the export metadata of :mod:`ssim_depth_core.artifact`.

Served by the real onnxruntime backend, such a model puts exactly known depth through the whole serving path
(estimator, frame pipeline, node), so scale handling can be checked against ground truth. Used by
tests/test_frames.py and the ROS package's test_ros_node.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ssim_depth_core.artifact import INPUT_NAME, OUTPUT_NAME, ExportMetadata
from ssim_depth_core.camera import Intrinsics

MIN_DEPTH, MAX_DEPTH = 0.5, 80.0


def write_oracle_onnx(path: str | Path, depth: np.ndarray, metric: str = "none") -> Path:
    """An ONNX model at ``depth``'s (H, W) whose output is ``depth`` (invalid: 0, NaN -> MAX_DEPTH) as the
    training formula's disparity; the input only enters through ``0 * mean(image)``."""
    height, width = depth.shape
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, MAX_DEPTH).clip(MIN_DEPTH, MAX_DEPTH)
    disparity = (1.0 / depth - 1.0 / MAX_DEPTH) / (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME], ["mean"], keepdims=1),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "answer"], [OUTPUT_NAME]),
        ],
        "oracle",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 1, height, width])],
        [
            numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"),
            numpy_helper.from_array(disparity.astype(np.float32)[None, None], "answer"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    metadata = ExportMetadata(MIN_DEPTH, MAX_DEPTH, height, width, height, width, "oracle: {}\n", metric)
    helper.set_model_props(model, metadata.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return Path(path)


class Street(NamedTuple):
    """A rendered synthetic street frame and its ground truth."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 exact z-depth in metres, 0 = sky
    ground: np.ndarray  # (H, W) bool: the pixel sees the ground
    intrinsics: Intrinsics
    camera_height: float  # of the optical centre above the ground (up to the road's roughness)


def synthetic_street(width: int = 208, height: int = 64) -> Street:
    """The first frame of a synthetic drive with a lead car."""
    from ssim_depth_core.data.synthetic import CAMERA_HEIGHT, DriveSpec, SyntheticDrive

    drive = SyntheticDrive(DriveSpec(seed=3, index=0, frames=2, lead_vehicle=True), width, height)
    frame = drive.render(0)
    return Street(frame.rgb, frame.depth, frame.ids == 0, drive.intrinsics, CAMERA_HEIGHT)
