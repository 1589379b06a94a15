"""TensorRT builder: cache key, clear errors without TensorRT, and (GPU only) engine accuracy and caching."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ssim_depth_core.accelerator import TensorRTUnavailableError, tensorrt_available
from ssim_depth_core.artifact import engine_sidecar_path
from ssim_depth_core.export.tensorrt import build_engine, engine_cache_key
from ssim_depth_core.runtime.backends import (
    TensorRTBackend,
    TorchBackend,
    create_backend,
    read_engine_sidecar,
)
from ssim_depth_core.runtime.estimator import DepthEstimator

HAS_TENSORRT_MODULE = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT, pycuda and a CUDA GPU")
without_tensorrt = pytest.mark.skipif(HAS_TENSORRT_MODULE, reason="tensorrt is installed here")

# FIPS 180-2 test vector: sha256(b"abc")
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
KEY_ARGS = {
    "onnx_bytes": b"abc",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": (9, 0),
    "trt_version": "10.3.0",
    "precision": "fp16",
}


def test_engine_cache_key_is_the_documented_sha256():
    text = (
        f"onnx_sha256={SHA256_ABC}\ngpu=NVIDIA H100 80GB HBM3\ncompute_capability=9.0\n"
        "tensorrt=10.3.0\nprecision=fp16\n"
    )
    expected = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert engine_cache_key(**KEY_ARGS) == expected
    assert engine_cache_key(**KEY_ARGS) == engine_cache_key(**dict(KEY_ARGS))  # stable


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onnx_bytes", b"abd"),
        ("gpu_name", "NVIDIA GeForce RTX 4090"),
        ("compute_capability", (8, 9)),
        ("trt_version", "10.4.0"),
        ("precision", "fp32"),
    ],
)
def test_engine_cache_key_changes_with_every_component(field, value):
    assert engine_cache_key(**{**KEY_ARGS, field: value}) != engine_cache_key(**KEY_ARGS)


def test_engine_cache_key_rejects_unknown_precision():
    with pytest.raises(ValueError, match="bf16"):
        engine_cache_key(**{**KEY_ARGS, "precision": "bf16"})


def _write_model(path, op_type="Relu"):
    graph = helper.make_graph(
        [helper.make_node(op_type, ["image"], ["disparity"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("disparity", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@without_tensorrt
def test_build_engine_without_tensorrt_raises_a_clear_error(tmp_path):
    onnx_path = _write_model(tmp_path / "tiny.onnx")
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed.*tensorrt"):
        build_engine(onnx_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@without_tensorrt
def test_tensorrt_backend_without_tensorrt_raises_a_clear_error(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        TensorRTBackend(engine)
    with pytest.raises(TensorRTUnavailableError):
        create_backend(engine)  # auto picks tensorrt for engines: nothing else can read them
    assert not tensorrt_available()


PROPS = {
    "min_depth": "0.5", "max_depth": "80.0", "train_height": "64", "train_width": "96", "height": "64",
    "width": "96", "config": "seed: 0\n", "metric": "velocity", "output": "disparity", "precision": "fp32",
}  # fmt: skip


def test_engine_sidecar_metadata_is_read_back(tmp_path):
    """What build_engine writes ({"metadata": the ONNX props, ...}) reads back as the same metadata."""
    sidecar = tmp_path / "m.engine.json"
    sidecar.write_text(json.dumps({"metadata": PROPS, "precision": "fp16", "tensorrt": "10.3.0"}))
    metadata = read_engine_sidecar(sidecar)
    assert (metadata.min_depth, metadata.max_depth, metadata.height, metadata.width) == (0.5, 80.0, 64, 96)
    assert (metadata.metric, metadata.precision, metadata.config_yaml) == ("velocity", "fp32", "seed: 0\n")
    assert metadata.to_props() == PROPS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"engine metadata sidecar is not JSON \(Expecting property name"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"precision": "fp16"}', "field 'metadata' is missing"),
        ('{"metadata": [1]}', "field 'metadata' is a list"),
        (json.dumps({"metadata": {**PROPS, "height": 64}}), "field 'metadata' is an object with non-string"),
        (json.dumps({"metadata": {"min_depth": "0.5"}}), "missing metadata max_depth, train_height"),
        (json.dumps({"metadata": {**PROPS, "width": "wide"}}), r"malformed metadata \(invalid literal"),
    ],
)
def test_a_malformed_engine_sidecar_is_a_value_error_naming_it_and_the_field(tmp_path, content, message):
    """The sidecar is read before TensorRT is needed, so this runs on any machine: the error names the
    sidecar and what is wrong in it, instead of a KeyError / TypeError."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    sidecar = engine_sidecar_path(engine)
    sidecar.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        TensorRTBackend(engine)
    assert str(caught.value).startswith(f"{sidecar}: ")


def test_build_engine_rejects_unsupported_ops_before_building(tmp_path):
    onnx_path = _write_model(tmp_path / "unique.onnx", op_type="Unique")
    with pytest.raises(ValueError, match="(?s)not TensorRT 10 compatible.*op type Unique"):
        build_engine(onnx_path, cache_dir=tmp_path)


def test_build_engine_argument_errors(tmp_path):
    onnx_path = _write_model(tmp_path / "tiny.onnx")
    with pytest.raises(ValueError, match="precision must be one of.*bf16"):
        build_engine(onnx_path, precision="bf16")
    with pytest.raises(ValueError, match="precision .int8. needs a quantised model"):
        build_engine(onnx_path, precision="int8")
    with pytest.raises(ValueError, match="workspace_gb"):
        build_engine(onnx_path, workspace_gb=0)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        build_engine(tmp_path / "missing.onnx")


# ---------------------------------------------------------------- GPU: TensorRT 10 + pycuda + CUDA
@pytest.fixture(scope="module")
def exported(random_checkpoint, random_onnx):
    return random_checkpoint, random_onnx


@pytest.mark.gpu
@needs_tensorrt
def test_fp16_engine_matches_torch_and_is_cached(exported, tmp_path):
    checkpoint, onnx_path = exported
    engine_path = build_engine(onnx_path, precision="fp16", cache_dir=tmp_path)
    assert engine_path.parent == tmp_path and engine_path.suffix == ".engine"
    sidecar = json.loads(engine_sidecar_path(engine_path).read_text())
    assert sidecar["precision"] == "fp16"
    assert sidecar["metadata"] == {p.key: p.value for p in onnx.load(onnx_path).metadata_props}

    stamp = engine_path.stat().st_mtime_ns
    assert build_engine(onnx_path, precision="fp16", cache_dir=tmp_path) == engine_path
    assert engine_path.stat().st_mtime_ns == stamp  # cache hit, no rebuild
    assert build_engine(onnx_path, precision="fp32", cache_dir=tmp_path) != engine_path

    batch = np.random.default_rng(0).random((3, 3, 64, 96), dtype=np.float32)
    with TensorRTBackend(engine_path) as engine:
        assert engine.input_size == (64, 96)
        assert (engine.min_depth, engine.max_depth) == (0.5, 80.0)
        assert engine.metric == "none"  # from the sidecar
        actual = engine(batch)  # 3 frames through a batch-1 engine
        np.testing.assert_array_equal(actual[1:2], engine(batch[1:2]))
    expected = TorchBackend(checkpoint, device="cpu")(batch)  # exact FP32 reference (no TF32)
    assert actual.shape == expected.shape == (3, 1, 64, 96)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-2)  # FP16 kernels, sigmoid output


@pytest.mark.gpu
@needs_tensorrt
def test_estimator_on_a_tensorrt_engine_matches_onnxruntime(exported, tmp_path):
    _, onnx_path = exported
    image = np.random.default_rng(1).integers(0, 256, (120, 180, 3), dtype=np.uint8)
    trt_estimator = DepthEstimator(onnx_path, backend="tensorrt", precision="fp32", cache_dir=tmp_path)
    ort_estimator = DepthEstimator(onnx_path, backend="onnxruntime", device="cpu")
    assert trt_estimator.backend.name == "tensorrt"
    np.testing.assert_allclose(trt_estimator(image), ort_estimator(image), rtol=1e-3)
