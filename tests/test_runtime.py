"""Runtime backends and DepthEstimator on CPU (torch and onnxruntime); ORT-CUDA parity on a GPU."""

from __future__ import annotations

from dataclasses import astuple

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from skimage import data

from ssim_depth_core.accelerator import tensorrt_available
from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.imaging import colorize_depth
from ssim_depth_core.runtime import DepthEstimator, OnnxRuntimeBackend, TorchBackend, create_backend
from ssim_depth_core.runtime.frames import FrameOptions, FramePipeline, ModelSettings, ScaleSettings
from ssim_depth_core.runtime.latency import FrameStats, latency_stats

HEIGHT, WIDTH = 64, 96
MIN_DEPTH, MAX_DEPTH = 0.5, 80.0
FIXED = ScaleSettings("fixed")  # the fixture models are scale-less: scale source "model" refuses them


@pytest.fixture(scope="module")
def models(random_checkpoint, random_onnx):
    """(checkpoint, exported onnx) of the shared randomly initialised 64x96 network."""
    return random_checkpoint, random_onnx


@pytest.fixture(scope="module")
def torch_estimator(models):
    return DepthEstimator(models[0], backend="torch", device="cpu")


@pytest.fixture(scope="module")
def ort_estimator(models):
    return DepthEstimator(models[1], backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def astronaut():
    """A real photograph cropped to the network's 2:3 aspect ratio (320x480 RGB uint8)."""
    return np.ascontiguousarray(data.astronaut()[0:320, 16:496])


def test_auto_backend_follows_the_file_suffix(models):
    checkpoint, onnx_path = models
    assert isinstance(create_backend(checkpoint), TorchBackend)
    if tensorrt_available():
        pytest.skip("with TensorRT present .onnx files go to TensorRT (tested in test_tensorrt.py)")
    backend = create_backend(onnx_path)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert "CPUExecutionProvider" in backend.providers


@pytest.mark.parametrize(
    ("name", "backend", "message"),
    [
        ("model.tflite", "auto", "suffix '.tflite'"),
        ("model.onnx", "openvino", "backend 'openvino'"),
        ("model.onnx", "torch", "torch backend cannot read .onnx"),
        ("model.pt", "onnxruntime", "onnxruntime backend cannot read .pt"),
        ("model.engine", "onnxruntime", "onnxruntime backend cannot read .engine"),
    ],
)
def test_create_backend_rejects_what_it_cannot_run(tmp_path, name, backend, message):
    with pytest.raises(ValueError, match=message):
        create_backend(tmp_path / name, backend)
    with pytest.raises(ValueError, match="device 'tpu'"):
        create_backend(tmp_path / "model.onnx", device="tpu")


def test_onnxruntime_backend_reads_metadata_and_matches_torch(models):
    checkpoint, onnx_path = models
    onnx_backend = OnnxRuntimeBackend(onnx_path, device="cpu")
    torch_backend = TorchBackend(checkpoint, device="cpu")
    assert onnx_backend.input_size == torch_backend.input_size == (HEIGHT, WIDTH)
    assert (onnx_backend.min_depth, onnx_backend.max_depth) == (MIN_DEPTH, MAX_DEPTH)
    assert (torch_backend.min_depth, torch_backend.max_depth) == (MIN_DEPTH, MAX_DEPTH)
    assert onnx_backend.max_batch == 1

    batch = np.random.default_rng(0).random((3, 3, HEIGHT, WIDTH), dtype=np.float32)
    disparity = onnx_backend(batch)  # three frames through a batch-1 graph
    assert disparity.shape == (3, 1, HEIGHT, WIDTH) and disparity.dtype == np.float32
    np.testing.assert_array_equal(disparity[2:], onnx_backend(batch[2:]))
    np.testing.assert_allclose(disparity, torch_backend(batch), rtol=0, atol=1e-4)


def test_backends_report_the_metric_source(models, velocity_checkpoint, velocity_onnx):
    checkpoint, onnx_path = models
    assert TorchBackend(checkpoint, device="cpu").metric == "none"  # from the checkpoint's config
    assert OnnxRuntimeBackend(onnx_path, device="cpu").metric == "none"  # from the metadata props
    assert TorchBackend(velocity_checkpoint, device="cpu").metric == "velocity"
    assert OnnxRuntimeBackend(velocity_onnx, device="cpu").metric == "velocity"


def _with_metric_prop(source, target, value):
    """A copy of ONNX file ``source`` at ``target``, its "metric" prop set to ``value`` (None: removed)."""
    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props if p.key != "metric"}
    if value is not None:
        props["metric"] = value
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, target)
    return target


def test_onnx_files_without_metric_read_as_scale_less_and_bad_values_are_refused(velocity_onnx, tmp_path):
    old = _with_metric_prop(velocity_onnx, tmp_path / "old.onnx", None)  # exported before "metric" existed
    assert OnnxRuntimeBackend(old, device="cpu").metric == "none"
    bad = _with_metric_prop(velocity_onnx, tmp_path / "bad.onnx", "lidar")
    with pytest.raises(ValueError, match=r"bad\.onnx: malformed metadata.*'metric'.*'lidar'"):
        OnnxRuntimeBackend(bad, device="cpu")


def test_backend_rejects_bad_batches(models):
    backend = TorchBackend(models[0], device="cpu")
    with pytest.raises(ValueError, match="float32.*float64"):
        backend(np.zeros((1, 3, HEIGHT, WIDTH)))
    with pytest.raises(ValueError, match=r"\(B>=1, 3, 64, 96\).*\(1, 3, 32, 96\)"):
        backend(np.zeros((1, 3, 32, WIDTH), np.float32))
    with pytest.raises(ValueError, match=r"\(0, 3, 64, 96\)"):
        backend(np.zeros((0, 3, HEIGHT, WIDTH), np.float32))


def test_depth_matches_the_hand_written_formula(torch_estimator, astronaut):
    """At the network size there is no resizing: depth = 1 / (1/max + (1/min - 1/max) * disparity)."""
    image = astronaut[:HEIGHT, :WIDTH].copy()
    batch = (image.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    disparity = torch_estimator.backend(batch)[0, 0].astype(np.float64)
    expected = 1.0 / (1.0 / MAX_DEPTH + (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH) * disparity)
    depth = torch_estimator(image)
    assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, rtol=1e-5)


def test_torch_and_onnxruntime_estimators_agree(torch_estimator, ort_estimator, astronaut):
    expected = torch_estimator(astronaut)
    actual = ort_estimator(astronaut)
    assert actual.shape == expected.shape == astronaut.shape[:2]
    np.testing.assert_allclose(actual, expected, rtol=1e-3)
    assert expected.std() > 0


def test_rgb_and_bgr_encodings(models, torch_estimator, astronaut):
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    rgb_depth = torch_estimator(astronaut)
    np.testing.assert_array_equal(torch_estimator(bgr, encoding="bgr"), rgb_depth)
    np.testing.assert_array_equal(torch_estimator(bgr, encoding="bgr8"), rgb_depth)
    bgr_estimator = DepthEstimator(torch_estimator.backend, input_encoding="bgr")
    np.testing.assert_array_equal(bgr_estimator(bgr), rgb_depth)
    # the channel order matters to the network, so a mix-up would be caught
    assert np.abs(torch_estimator(bgr) - rgb_depth).max() > 1e-4


def test_depth_range_scale_and_output_size(torch_estimator, astronaut):
    depth = torch_estimator(astronaut)
    assert MIN_DEPTH <= depth.min() and depth.max() <= MAX_DEPTH
    scaled = DepthEstimator(torch_estimator.backend, depth_scale=2.5)(astronaut)
    np.testing.assert_allclose(scaled, 2.5 * depth, rtol=1e-5)
    assert 2.5 * MIN_DEPTH <= scaled.min() and scaled.max() <= 2.5 * MAX_DEPTH
    narrow = DepthEstimator(torch_estimator.backend, min_depth=1.0, max_depth=10.0)(astronaut)
    assert 1.0 <= narrow.min() and narrow.max() <= 10.0
    small = DepthEstimator(torch_estimator.backend, output_size=(30, 50))(astronaut)
    assert small.shape == (30, 50) and small.dtype == np.float32


def test_resized_depth_interpolates_the_disparity(torch_estimator, astronaut):
    """Depth at the image size = the hand formula on the network's disparity resized bilinearly (float64)."""
    height, width = astronaut.shape[:2]
    small = cv2.resize(astronaut, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    batch = (small.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    disparity = torch_estimator.backend(batch)[0, 0].astype(np.float64)
    upsampled = cv2.resize(disparity, (width, height), interpolation=cv2.INTER_LINEAR)
    expected = 1.0 / (1.0 / MAX_DEPTH + (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH) * upsampled)
    depth = torch_estimator(astronaut)
    assert depth.shape == (height, width) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, expected, rtol=1e-5)
    # the tolerance tells the two: interpolating depth instead of disparity would fail
    depth_at_network_size = 1.0 / (1.0 / MAX_DEPTH + (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH) * disparity)
    resized_depth = cv2.resize(depth_at_network_size, (width, height), interpolation=cv2.INTER_LINEAR)
    assert not np.allclose(resized_depth, expected, rtol=1e-5, atol=0)


def test_predict_batch_equals_single_calls(torch_estimator, astronaut):
    images = [astronaut, np.ascontiguousarray(astronaut[:200, :150])]
    depths = torch_estimator.predict_batch(images)
    assert [d.shape for d in depths] == [(320, 480), (200, 150)]
    for depth, image in zip(depths, images, strict=True):
        np.testing.assert_allclose(depth, torch_estimator(image), rtol=1e-5)


def test_estimator_rejects_bad_input(torch_estimator, astronaut):
    with pytest.raises(ValueError, match="uint8.*float32"):
        torch_estimator(astronaut.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*shape \(320, 480\)"):
        torch_estimator(astronaut[..., 0])
    with pytest.raises(ValueError, match=r"shape \(320, 480, 4\)"):
        torch_estimator(np.dstack([astronaut, astronaut[..., :1]]))
    with pytest.raises(ValueError, match="image 1"):
        torch_estimator.predict_batch([astronaut, astronaut[..., :2]])
    with pytest.raises(ValueError, match="encoding 'mono8'"):
        torch_estimator(astronaut, encoding="mono8")
    with pytest.raises(ValueError, match="depth_scale"):
        DepthEstimator(torch_estimator.backend, depth_scale=0.0)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        DepthEstimator(torch_estimator.backend, min_depth=10.0, max_depth=1.0)


# ------------------------------------------------------------------------------------------ frame pipeline
@pytest.fixture(scope="module")
def pipeline(models):
    """A frame pipeline on the checkpoint with the torch backend at the input resolution."""
    return FramePipeline(ModelSettings(models[0], "torch", scale=FIXED))


def test_range_masking_sets_nan_exactly_outside_the_open_interval(pipeline, torch_estimator, astronaut):
    reference = torch_estimator(astronaut)
    low, high = np.quantile(reference, [0.2, 0.7])
    low, high = float(reference.flat[np.abs(reference - low).argmin()]), float(high)  # low is a depth value
    depth = pipeline(astronaut, options=FrameOptions(range_min=low, range_max=high)).depth
    outside = (reference <= low) | (reference >= high)
    assert (reference == low).any() and 0 < outside.mean() < 1  # the boundary itself is invalid
    np.testing.assert_array_equal(np.isnan(depth), outside)
    np.testing.assert_array_equal(depth[~outside], reference[~outside])
    only_min = pipeline(astronaut, options=FrameOptions(range_min=low)).depth  # range_max 0: no upper limit
    np.testing.assert_array_equal(np.isnan(only_min), reference <= low)
    assert not np.isnan(pipeline(astronaut).depth).any()


def test_camera_choice_scaled_to_the_output(models, astronaut):
    """Output at the network's 96x64 from a 480x320 frame: every camera is scaled by 0.2 (hand-computed)."""
    network = FramePipeline(ModelSettings(models[0], "torch", output_resolution="network", scale=FIXED))
    camera = Intrinsics(400.0, 420.0, 239.5, 159.5, 480, 320)
    # (c + 0.5) * 0.2 - 0.5: pixel centres at integer coordinates
    expected = Intrinsics(80.0, 84.0, 47.5, 31.5, 96, 64)
    fallback = FrameOptions(fallback_camera=(400.0, 420.0, 239.5, 159.5), points=True)

    given = network(astronaut, camera, FrameOptions(points=True))
    assert given.depth.shape == (64, 96) and astuple(given.intrinsics) == pytest.approx(astuple(expected))
    from_fallback = network(astronaut, None, fallback)  # fallback values are at the frame's 480x320
    assert astuple(from_fallback.intrinsics) == pytest.approx(astuple(expected))
    half = Intrinsics(200.0, 210.0, 119.5, 79.5, 240, 160)  # the same camera at half the size
    # a frame's own camera beats the fallback
    preferred = network(astronaut, half, FrameOptions(fallback_camera=(1.0, 1.0, 0.0, 0.0)))
    assert astuple(preferred.intrinsics) == pytest.approx(astuple(expected))
    without = network(astronaut, options=FrameOptions(points=True))
    assert without.intrinsics is None and without.cloud is None

    # the cloud is the output-size depth through the scaled camera, coloured by the frame resized with
    # INTER_AREA to the output size
    cloud = given.cloud.points
    v, u = np.mgrid[0:64, 0:96]
    z = given.depth
    np.testing.assert_allclose(cloud["z"], z, rtol=1e-6)
    np.testing.assert_allclose(cloud["x"], (u - 47.5) * z / 80.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cloud["y"], (v - 31.5) * z / 84.0, rtol=1e-5, atol=1e-6)
    bits = cloud["rgb"].view("<u4")
    rgb = np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1)
    np.testing.assert_array_equal(rgb, cv2.resize(astronaut, (96, 64), interpolation=cv2.INTER_AREA))
    assert given.preview is None


def test_cloud_options_and_preview(pipeline, torch_estimator, astronaut):
    camera = Intrinsics(400.0, 420.0, 239.5, 159.5, 480, 320)
    reference = torch_estimator(astronaut)
    limit = float(np.median(reference))
    options = FrameOptions(range_max=limit, points=True, point_stride=4, organized_points=False, preview=True)
    frame = pipeline(astronaut, camera, options)
    assert frame.intrinsics is camera  # already at the output size: not rescaled
    kept = reference[::4, ::4] < limit
    assert frame.cloud.points.shape == (1, int(kept.sum())) and frame.cloud.is_dense
    np.testing.assert_allclose(frame.cloud.points["z"][0], reference[::4, ::4][kept], rtol=1e-6)
    np.testing.assert_array_equal(frame.preview, colorize_depth(frame.depth))
    assert not frame.preview[~(reference < limit)].any()  # NaN (masked) pixels are black


def test_configure_rebuilds_on_the_open_backend_unless_the_model_changes(models, astronaut):
    checkpoint, onnx_path = models
    settings = ModelSettings(checkpoint, "torch", scale=FIXED)
    pipeline = FramePipeline(settings)
    backend, depth = pipeline.estimator.backend, pipeline(astronaut).depth

    # equal settings: nothing to do
    assert not pipeline.configure(ModelSettings(str(checkpoint), "torch", scale=FIXED))
    assert pipeline.configure(ModelSettings(checkpoint, "torch", scale=ScaleSettings("fixed", 2.0)))
    assert pipeline.estimator.backend is backend
    np.testing.assert_allclose(pipeline(astronaut).depth, 2.0 * depth, rtol=1e-5)
    assert pipeline.configure(ModelSettings(checkpoint, "torch", output_resolution="network", scale=FIXED))
    assert pipeline.estimator.backend is backend and pipeline(astronaut).depth.shape == (HEIGHT, WIDTH)

    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        pipeline.configure(ModelSettings(checkpoint.parent / "missing.onnx", "onnxruntime", scale=FIXED))
    assert pipeline.estimator.backend is backend  # a failed switch keeps the previous model
    assert pipeline.settings.output_resolution == "network"

    assert pipeline.configure(ModelSettings(onnx_path, "onnxruntime", scale=FIXED))
    assert isinstance(pipeline.estimator.backend, OnnxRuntimeBackend)
    np.testing.assert_allclose(pipeline(astronaut).depth, depth, rtol=1e-3)
    pipeline.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelSettings("m.onnx", "openvino"), "backend 'openvino' is not one of"),
        (lambda: ModelSettings("m.onnx", output_resolution="half"), "output_resolution 'half'"),
        (lambda: ModelSettings("m.onnx", min_depth=20.0, max_depth=10.0), "min_depth 20.0 must be <"),
        (lambda: FrameOptions(range_min=5.0, range_max=5.0), "range_min 5.0 must be < range_max 5.0"),
        (lambda: FrameOptions(range_min=-1.0), "must be >= 0"),
        (lambda: FrameOptions(point_stride=0), "point_stride must be a positive integer, got 0"),
        (lambda: FrameOptions(fallback_camera=(0.0, 1.0, 2.0, 3.0)), "fx, fy > 0"),
    ],
)
def test_settings_reject_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------------------ latency
def test_latency_stats_hand_computed():
    # linear interpolation: p50 of 1..4 = 2.5; p95 at rank 0.95 * 3 = 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    stats = latency_stats([4.0, 1.0, 3.0, 2.0], (50, 95))
    assert (stats.count, stats.mean, stats.max) == (4, 2.5, 4.0)
    assert stats.percentiles == pytest.approx({50: 2.5, 95: 3.85})
    empty = latency_stats([], (50, 90, 99))
    assert (empty.count, empty.mean, empty.max) == (0, None, None)
    assert empty.percentiles == {50: None, 90: None, 99: None}


def test_frame_stats_window_line():
    stats = FrameStats()
    stats.add(received=5, dropped=2, rejected=1)
    for latency_s in (0.010, 0.020, 0.030):
        stats.frame_done(latency_s)
    line = stats.take_window()
    # mean 20 ms, p50 20 ms, p95 = 20 + 0.9 * 10 = 29 ms
    assert "latency mean 20.0 ms, p50 20.0 ms, p95 29.0 ms, 2 dropped in the last" in line
    assert line.endswith("totals: processed 3, dropped 2, rejected 1")
    assert (stats.received, stats.processed, stats.dropped, stats.rejected, stats.failed) == (5, 3, 2, 1, 0)
    idle = stats.take_window()
    assert idle.startswith("no frames processed in the last") and "(0 dropped)" in idle


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and CUDA"
)
def test_onnxruntime_cuda_matches_torch(models):
    checkpoint, onnx_path = models
    batch = np.random.default_rng(2).random((2, 3, HEIGHT, WIDTH), dtype=np.float32)
    cuda_backend = OnnxRuntimeBackend(onnx_path, device="cuda")
    assert cuda_backend.providers[0] == "CUDAExecutionProvider"
    expected = TorchBackend(checkpoint, device="cpu")(batch)  # exact FP32 reference
    np.testing.assert_allclose(cuda_backend(batch), expected, rtol=0, atol=2e-3)  # ORT CUDA may use TF32
