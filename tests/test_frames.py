"""The frame pipeline's scale sources: model (refuses scale-less models), fixed, camera_height.

camera_height runs on a rendered synthetic street served by an "oracle" ONNX model (tests/depth_oracle.py)
whose output is the exact depth divided by 3, through the real onnxruntime backend: the pipeline must give
the ground back its true height and the depth its true metres.
"""

from __future__ import annotations

import numpy as np
import pytest
from depth_oracle import synthetic_street, write_oracle_onnx
from skimage import data

from ssim_depth_core.runtime import DepthEstimator
from ssim_depth_core.runtime.frames import FrameOptions, FramePipeline, ModelSettings, ScaleSettings
from ssim_depth_core.runtime.scale import GroundPlaneSettings, ground_up

UNKNOWN_FACTOR = 3.0


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(data.astronaut()[0:320, 16:496])


@pytest.fixture(scope="module")
def street():
    return synthetic_street()


@pytest.fixture(scope="module")
def oracle(street, tmp_path_factory):
    """A scale-less model that predicts the street's depth divided by UNKNOWN_FACTOR."""
    path = tmp_path_factory.mktemp("oracle") / "street.onnx"
    return write_oracle_onnx(path, street.depth / UNKNOWN_FACTOR)  # sky: 0 stays 0 (invalid)


def test_model_source_refuses_a_scale_less_model(random_checkpoint, random_onnx):
    for model, backend in ((random_checkpoint, "torch"), (random_onnx, "onnxruntime")):
        with pytest.raises(ValueError) as error:
            FramePipeline(ModelSettings(model, backend))  # scale source "model" is the default
        message = str(error.value)
        assert str(model) in message and "scale-less" in message
        for advice in ("'camera_height'", "'fixed'", "velocity or stereo supervision"):
            assert advice in message, advice


def test_model_source_serves_a_metric_model_unscaled(velocity_checkpoint, astronaut):
    with FramePipeline(ModelSettings(velocity_checkpoint, "torch")) as pipeline:
        assert pipeline.estimator.backend.metric == "velocity"
        frame = pipeline(astronaut)
        assert (frame.scale, frame.scale_source, frame.ground) == (1.0, "model", None)
        reference = DepthEstimator(pipeline.estimator.backend)(astronaut)
        np.testing.assert_array_equal(frame.depth, reference)


def test_switching_to_model_on_a_scale_less_model_keeps_the_previous_settings(random_checkpoint, astronaut):
    fixed = ModelSettings(random_checkpoint, "torch", scale=ScaleSettings("fixed", 2.0))
    with FramePipeline(fixed) as pipeline:
        backend, before = pipeline.estimator.backend, pipeline(astronaut).depth
        with pytest.raises(ValueError, match="scale_source 'model' needs a metric model"):
            pipeline.configure(ModelSettings(random_checkpoint, "torch"))
        assert pipeline.settings == fixed and pipeline.estimator.backend is backend
        np.testing.assert_array_equal(pipeline(astronaut).depth, before)


def test_fixed_multiplies_depth_and_cloud(random_checkpoint, astronaut):
    with FramePipeline(ModelSettings(random_checkpoint, "torch", scale=ScaleSettings("fixed"))) as pipeline:
        unit = pipeline(astronaut).depth
        pipeline.configure(ModelSettings(random_checkpoint, "torch", scale=ScaleSettings("fixed", 2.5)))
        camera = (400.0, 420.0, 239.5, 159.5)
        frame = pipeline(astronaut, options=FrameOptions(fallback_camera=camera, points=True))
    assert (frame.scale, frame.scale_source) == (2.5, "fixed")
    np.testing.assert_allclose(frame.depth, 2.5 * unit, rtol=1e-5)
    np.testing.assert_allclose(frame.cloud.points["z"], frame.depth, rtol=1e-6)


def camera_height_settings(model, height: float, **ground) -> ModelSettings:
    scale = ScaleSettings("camera_height", ground=GroundPlaneSettings(height, **ground))
    return ModelSettings(model, "onnxruntime", scale=scale)


@pytest.mark.parametrize("ground_normal", ["fitted", "mounting"])
def test_camera_height_makes_a_rendered_street_metric(oracle, street, ground_normal):
    settings = camera_height_settings(oracle, street.camera_height, ground_normal=ground_normal)
    with FramePipeline(settings) as pipeline:
        assert pipeline.estimator.backend.metric == "none"
        frame = pipeline(street.rgb, street.intrinsics, FrameOptions(points=True, preview=True))
    assert frame.scale_source == "camera_height" and frame.ground.reason is None
    assert frame.scale == pytest.approx(UNKNOWN_FACTOR, rel=0.05)
    valid = street.depth > 0
    np.testing.assert_allclose(frame.depth[valid], street.depth[valid], rtol=0.05)
    # the cloud's ground points lie the camera height below the camera
    points = np.stack([frame.cloud.points[axis] for axis in "xyz"], -1)[street.ground & valid]
    assert np.median(-(points @ ground_up())) == pytest.approx(street.camera_height, rel=0.05)
    assert frame.preview is not None


def test_camera_height_withholds_depth_until_a_plane_is_found(oracle, street):
    """Configured as looking 20 degrees up (no ground below that horizon in view): no scale, so no depth,
    no cloud; the preview (normalised per frame) is still made. With the pitch corrected, depth comes back."""
    height, camera = street.camera_height, street.intrinsics
    with FramePipeline(camera_height_settings(oracle, height, camera_pitch=-0.35)) as pipeline:
        lost = pipeline(street.rgb, camera, FrameOptions(points=True, preview=True))
        assert (lost.depth, lost.cloud, lost.scale) == (None, None, None)
        assert lost.preview is not None and "0 points below the horizon" in lost.ground.reason
        pipeline.configure(camera_height_settings(oracle, height))  # the ground state restarts
        found = pipeline(street.rgb, camera, FrameOptions(points=True))
        assert found.scale == pytest.approx(UNKNOWN_FACTOR, rel=0.05) and found.cloud is not None
        without_camera = pipeline(street.rgb)  # a lost plane: the last scale is held for max_hold frames
        assert without_camera.scale == found.scale and "no camera" in without_camera.ground.reason


def test_camera_height_applies_before_the_range_limits(oracle, street):
    with FramePipeline(camera_height_settings(oracle, street.camera_height)) as pipeline:
        frame = pipeline(street.rgb, street.intrinsics, FrameOptions(range_max=20.0))
    truth = street.depth  # the limit is in metres: it applies to the scaled depth, not the network's
    assert not np.isnan(frame.depth[(truth > 0) & (truth < 19.0)]).any()
    assert np.isnan(frame.depth[truth > 21.0]).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScaleSettings("lidar"), "scale_source 'lidar' is not one of model, camera_height, fixed"),
        (lambda: ScaleSettings("fixed", 0.0), "depth_scale must be a finite number > 0"),
        (lambda: ScaleSettings("camera_height"), "needs camera_height"),
    ],
)
def test_scale_settings_reject_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_scale_settings_from_the_camera_mounting():
    mounted = ScaleSettings.from_mounting("camera_height", 1.0, 1.65, 0.05, -0.02, "mounting", max_hold=3)
    ground = GroundPlaneSettings(1.65, 0.05, -0.02, ground_normal="mounting", max_hold=3)
    assert mounted == ScaleSettings("camera_height", ground=ground)
    # no height: no ground plane, whatever the source; the mounting's other angles are then unused
    assert ScaleSettings.from_mounting("fixed", 2.0, None, 0.3) == ScaleSettings("fixed", 2.0)
    assert ScaleSettings.from_mounting() == ScaleSettings()
    with pytest.raises(ValueError, match="needs camera_height"):
        ScaleSettings.from_mounting("camera_height")
    with pytest.raises(ValueError, match="camera_height must be the camera's height"):
        ScaleSettings.from_mounting("model", camera_height=0.0)  # a given height is checked, any source
    with pytest.raises(ValueError, match="ground_normal must be one of fitted, mounting, got 'up'"):
        ScaleSettings.from_mounting("fixed", ground_normal="up")  # checked without a height too


def test_threads_set_the_onnxruntime_session_and_a_change_reopens_it(random_onnx):
    with FramePipeline(
        ModelSettings(random_onnx, "onnxruntime", scale=ScaleSettings("fixed"), threads=1)
    ) as pipe:
        first = pipe.estimator.backend
        assert first._session.get_session_options().intra_op_num_threads == 1
        assert pipe.configure(
            ModelSettings(random_onnx, "onnxruntime", scale=ScaleSettings("fixed"), threads=2)
        )
        second = pipe.estimator.backend
        assert second is not first
        assert second._session.get_session_options().intra_op_num_threads == 2
        # a change that is not the backend's keeps the open session
        assert pipe.configure(
            ModelSettings(random_onnx, "onnxruntime", scale=ScaleSettings("fixed", 2.0), threads=2)
        )
        assert pipe.estimator.backend is second
    with pytest.raises(ValueError, match="threads must be >= 0"):
        ModelSettings(random_onnx, "onnxruntime", threads=-1)
