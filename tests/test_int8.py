"""INT8 export: the QDQ graph, its accuracy against FP32, validation and refusal, metadata, the TensorRT path
(cache key, op check; the engine itself on a GPU only) and the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssim_depth_core.accelerator import TensorRTUnavailableError, tensorrt_available
from ssim_depth_core.apps.cli import build_parser, main
from ssim_depth_core.artifact import ExportMetadata, engine_sidecar_path, read_metadata
from ssim_depth_core.config import DataConfig
from ssim_depth_core.data.sources import open_sequences
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.export import quantize
from ssim_depth_core.export.onnx import check_tensorrt_ops, is_quantized
from ssim_depth_core.export.quantize import Int8ValidationError, output_head_nodes, quantize_onnx
from ssim_depth_core.export.tensorrt import build_engine, engine_cache_key
from ssim_depth_core.runtime.backends import OnnxRuntimeBackend, auto_backend, create_backend
from ssim_depth_core.runtime.estimator import DepthEstimator, preprocess_image

HAS_TENSORRT_MODULE = importlib.util.find_spec("tensorrt") is not None
needs_tensorrt = pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT, pycuda and a CUDA GPU")
without_tensorrt = pytest.mark.skipif(HAS_TENSORRT_MODULE, reason="tensorrt is installed here")
SIZE = (64, 96)  # the shared random checkpoint's input


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    """Two 96x64 synthetic drives of 6 frames with ground truth and one rosbag2 each: the train split is drive
    1's frames 1-4, the test (and val) split drive 2's."""
    root = tmp_path_factory.mktemp("int8_drives")
    return generate_dataset(
        root, seed=3, drives=2, frames=6, width=96, height=64, bag="mcap", progress=False, workers=1
    )


@pytest.fixture(scope="module")
def bag(drives):
    """One drive as a rosbag2: no ground truth, no split files."""
    return sorted((drives / "bags").iterdir())[0]


@pytest.fixture(scope="module")
def int8_models(random_onnx, drives, tmp_path_factory):
    """The shared random model quantised for each target, with its report."""
    folder = tmp_path_factory.mktemp("int8")
    return {
        target: (
            folder / f"{target}.onnx",
            quantize_onnx(random_onnx, folder / f"{target}.onnx", drives, target=target, progress=False),
        )
        for target in ("cpu", "tensorrt")
    }


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- the quantised graph
@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_weights_are_int8_per_output_channel_within_half_a_step(int8_models, random_onnx, target):
    fp32 = onnx.load(random_onnx)
    weights = {init.name: numpy_helper.to_array(init) for init in fp32.graph.initializer}
    fp32_convs = {node.name: node for node in fp32.graph.node if node.op_type == "Conv"}
    model = onnx.load(int8_models[target][0])
    constants = {init.name: init for init in model.graph.initializer}
    dequantized = {node.output[0]: node for node in model.graph.node if node.op_type == "DequantizeLinear"}
    head = set(output_head_nodes(fp32))
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == sum(node.op_type == "Conv" for node in fp32.graph.node) > 20
    checked = 0
    for conv in convs:
        if conv.name in head:  # the disparity head stays float: its weight is the FP32 initializer itself
            assert conv.input[1] in weights and conv.input[1] not in dequantized
            continue
        node = dequantized[conv.input[1]]
        quantized, scale = (numpy_helper.to_array(constants[name]) for name in node.input[:2])
        assert constants[node.input[0]].data_type == TensorProto.INT8
        assert not numpy_helper.to_array(constants[node.input[2]]).any()  # symmetric: zero points 0
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert axis == 0 and scale.shape == (quantized.shape[0],)  # one scale per output channel
        original = weights[fp32_convs[conv.name].input[1]]  # the same conv (by name) in the FP32 graph
        restored = quantized.astype(np.float64) * scale.reshape(-1, 1, 1, 1)
        per_channel_step = scale.reshape(-1, 1, 1, 1)
        assert np.all(np.abs(restored - original) <= per_channel_step / 2 * (1 + 1e-5))
        # symmetric weights: the largest magnitude of each channel maps to +-127
        np.testing.assert_allclose(
            scale, np.abs(original).reshape(len(scale), -1).max(axis=1) / 127, rtol=1e-5
        )
        checked += 1
    assert checked == len(convs) - 1  # every conv but the head's
    assert {node.op_type for node in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert is_quantized(model) and not is_quantized(fp32)


def test_the_head_is_the_last_conv_and_the_sigmoid(random_onnx):
    model = onnx.load(random_onnx)
    by_name = {node.name: node for node in model.graph.node}
    head = output_head_nodes(model)
    assert sorted(by_name[name].op_type for name in head) == ["Conv", "Sigmoid"]
    assert by_name[head[0]].output[0] == "disparity"


def test_int8_disparity_is_close_to_fp32_on_calibration_like_frames(int8_models, random_onnx, drives):
    """Frames of the data through the serving pre-processing: INT8 within 10 % of the FP32 output's spread
    over the frame, everywhere (a constant map at the FP32 mean would be off by about half of it), and depths
    within 1 % on average (the validation's own measure, recomputed here from the estimator)."""
    sequences = open_sequences(drives, DataConfig())
    fp32 = ort.InferenceSession(str(random_onnx), providers=["CPUExecutionProvider"])
    fp32_depth = DepthEstimator(random_onnx, backend="onnxruntime", device="cpu")
    for target in ("cpu", "tensorrt"):
        path, report = int8_models[target]
        int8 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        int8_depth = DepthEstimator(path, backend="onnxruntime", device="cpu")  # the estimator, unchanged
        assert int8_depth.backend.input_size == SIZE
        differences = []
        for sequence in sequences:
            for frame in (1, 4):
                image = sequence.image(frame)
                batch = preprocess_image(image, SIZE)[None]
                (expected,), (actual,) = fp32.run(None, {"image": batch}), int8.run(None, {"image": batch})
                spread = float(expected.max() - expected.min())
                assert spread > 0
                assert np.abs(actual - expected).max() <= 0.1 * spread, target
                reference = fp32_depth(image)
                differences.append(np.mean(np.abs(int8_depth(image) - reference) / reference))
        assert np.mean(differences) < 0.01
        assert report.depth_difference < 0.01 and report.accepted


# ---------------------------------------------------------------- validation, refusal, metadata
def test_report_and_metadata_of_an_accepted_model(int8_models, random_onnx, drives):
    path, report = int8_models["cpu"]
    assert (report.calibration_frames, report.validation_frames, report.scored_frames) == (4, 4, 4)
    assert set(report.abs_rel) == {"median"} and report.headline == "median"  # a scale-less model
    fp32_abs_rel, int8_abs_rel = report.abs_rel["median"]
    assert 0 < fp32_abs_rel < 1 and abs(int8_abs_rel - fp32_abs_rel) <= report.tolerance == 0.01
    metadata = read_metadata(onnx.load(path), path)
    expected = read_metadata(onnx.load(random_onnx), random_onnx)
    assert expected.precision == "fp32" and expected.calibration_frames is None
    assert metadata.precision == "int8"
    assert (metadata.calibration_data, metadata.calibration_frames, metadata.validation_frames) == (
        drives.name,
        4,
        4,
    )
    assert (metadata.abs_rel_fp32, metadata.abs_rel_int8) == (fp32_abs_rel, int8_abs_rel)
    assert metadata.depth_difference == report.depth_difference
    # everything a runtime reads is the FP32 model's
    for field in ("min_depth", "max_depth", "height", "width", "config_yaml", "metric", "output"):
        assert getattr(metadata, field) == getattr(expected, field), field
    backend = OnnxRuntimeBackend(path, device="cpu")
    assert (backend.input_size, backend.min_depth, backend.max_depth) == (SIZE, 0.5, 80.0)


def test_a_negative_tolerance_is_refused_and_nothing_is_left_behind(
    random_onnx, int8_models, drives, tmp_path
):
    """An INT8 model of an earlier export at the path (its metadata says int8) is removed: it must not pass
    for the refused one."""
    target = tmp_path / "model.int8.onnx"
    shutil.copyfile(int8_models["cpu"][0], target)
    before = _sha256(random_onnx)
    with pytest.raises(
        Int8ValidationError,
        match=r"(?s)refused.*earlier INT8 model there was removed.*"
        r"FP32 model .* is kept.*AbsRel median-scaled.*tolerance \+-1",
    ):
        quantize_onnx(
            random_onnx,
            target,
            drives,
            calibration_frames=2,
            validation_frames=2,
            tolerance=-1.0,
            progress=False,
        )
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary either
    assert _sha256(random_onnx) == before


def test_a_file_that_is_not_an_int8_model_is_neither_removed_nor_overwritten(random_onnx, drives, tmp_path):
    """Any other file at the INT8 path (here a text file, then an FP32 model) is refused before calibration,
    named, and left byte for byte as it was: by a refused export (tolerance -1) and by one that would pass."""
    notes, fp32_copy = tmp_path / "notes.onnx", tmp_path / "fp32.onnx"
    notes.write_bytes(b"my notes, not a model")
    shutil.copyfile(random_onnx, fp32_copy)
    expected = {path: _sha256(path) for path in (notes, fp32_copy)}
    for target, reason in (
        (notes, "not a readable ONNX model with ssim_depth metadata"),
        (fp32_copy, "fp32"),
    ):
        for tolerance in (-1.0, 1.0):
            with pytest.raises(ValueError, match="is not an INT8 model of ssim_depth") as caught:
                quantize_onnx(
                    random_onnx, target, drives, validation_frames=1, tolerance=tolerance, progress=False
                )
            assert str(caught.value).startswith(f"{target} already exists and is not an INT8 model")
            assert reason in str(caught.value) and "neither overwritten nor removed" in str(caught.value)
    assert {path: _sha256(path) for path in (notes, fp32_copy)} == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "notes.onnx"]


def test_without_ground_truth_the_depth_difference_is_held_to_its_bound(
    random_onnx, bag, tmp_path, monkeypatch
):
    """A rosbag has no ground truth and no splits: frames kept back from calibration validate, and the mean
    depth difference decides. A calibration on frames 50 times too dark (ranges far too narrow for the real
    frames, which then saturate) is refused at a bound that the proper calibration passes."""
    good = quantize_onnx(random_onnx, tmp_path / "good.onnx", bag, max_difference=0.001, progress=False)
    assert good.abs_rel == {} and good.scored_frames == 0 and good.accepted
    assert (good.calibration_frames, good.validation_frames) == (5, 1)  # 6 frames, 20 % (1) held out
    assert read_metadata(onnx.load(tmp_path / "good.onnx"), "good").abs_rel_int8 is None

    serving = quantize.preprocess_image
    monkeypatch.setattr(quantize, "preprocess_image", lambda image, size: serving(image, size) * 0.02)
    with pytest.raises(
        Int8ValidationError, match=r"(?s)no ground truth: the mean depth difference is held to 0.001"
    ):
        quantize_onnx(random_onnx, tmp_path / "bad.onnx", bag, max_difference=0.001, progress=False)
    assert not (tmp_path / "bad.onnx").exists()


def _normalised_image_range(fp32_path, images):
    """(low, high) of the normalised image (the first conv's input) over ``images``, 0 included: the FP32
    graph run with that tensor as an extra output. The tensor's name is returned too."""
    fp32 = onnx.load(fp32_path)
    (div,) = [node.output[0] for node in fp32.graph.node if node.op_type == "Div"]
    fp32.graph.output.append(helper.make_empty_tensor_value_info(div))
    session = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    values = [session.run([div], {"image": preprocess_image(image, SIZE)[None]})[0] for image in images]
    return div, min(0.0, min(v.min() for v in values)), max(0.0, max(v.max() for v in values))


def _assert_calibrated_on(path, div, low, high):
    """The uint8 QuantizeLinear of ``div`` in the INT8 model at ``path`` has the scale and zero point of
    the range [low, high] (asymmetric: scale = (high - low) / 255, zero point = round(-low / scale))."""
    model = onnx.load(path)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    (node,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == div]
    scale, zero_point = constants[node.input[1]], constants[node.input[2]]
    expected_scale = (high - low) / 255
    assert scale == pytest.approx(expected_scale, rel=1e-5)
    assert int(zero_point) == round(-low / expected_scale)


def test_calibration_in_chunks_covers_every_frame(random_onnx, drives, tmp_path, monkeypatch):
    """The activation ranges are those of all calibration frames, whatever the chunking: the range of the
    normalised image (the first conv's input), recomputed here by running the FP32 graph with that tensor as
    an extra output, gives the scale and zero point of its QuantizeLinear (uint8, asymmetric, 0 inside)."""
    train = open_sequences(drives, DataConfig())[0]  # the train split: drive 1, frames 1-4
    div, low, high = _normalised_image_range(random_onnx, [train.image(f) for f in range(1, 5)])
    for chunk in (1, 3, 4):  # chunks of 1, 2 (the largest divisor of 4 up to 3) and 4 frames
        monkeypatch.setattr(quantize, "_CHUNK", chunk)
        path = tmp_path / f"chunk{chunk}.onnx"
        assert (
            quantize_onnx(random_onnx, path, drives, validation_frames=1, progress=False).calibration_frames
            == 4
        )
        _assert_calibrated_on(path, div, low, high)


def test_unreadable_calibration_frames_are_dropped_before_chunking(
    random_onnx, drives, tmp_path, monkeypatch, caplog
):
    """Drive 1's frame 1, the first of the 4 calibration frames, is garbage. In chunks of 1 frame (what a
    prime frame count above 16 gets) its chunk would hold no data, which ONNX Runtime refuses: it is
    dropped before chunking instead, named in the log, and the ranges are those of frames 2-4."""
    data = tmp_path / "data"
    shutil.copytree(drives, data)
    train = open_sequences(data, DataConfig())[0]
    div, low, high = _normalised_image_range(random_onnx, [train.image(f) for f in (2, 3, 4)])
    frames = sorted(data.glob("*/*_drive_0001_sync/image_02/data/*.png"))
    assert len(frames) == 6
    frames[1].write_bytes(b"not a PNG")
    monkeypatch.setattr(quantize, "_CHUNK", 1)
    path = tmp_path / "int8.onnx"
    with caplog.at_level(logging.WARNING, logger=quantize.__name__):
        report = quantize_onnx(random_onnx, path, data, validation_frames=1, progress=False)
    assert report.calibration_frames == 3
    assert read_metadata(onnx.load(path), path).calibration_frames == 3
    _assert_calibrated_on(path, div, low, high)
    assert f"skipping unreadable {train.name} frame 1" in caplog.text
    assert "1 of 4 frames" in caplog.text and "calibrating on the other 3" in caplog.text

    for frame in frames[2:5]:  # now all 4 calibration frames are unreadable
        frame.write_bytes(b"not a PNG")
    with pytest.raises(
        ValueError, match=r"data: none of the 4 calibration frames could be read \(4 unreadable of 4;"
    ):
        quantize_onnx(random_onnx, tmp_path / "none.onnx", data, validation_frames=1, progress=False)
    assert not (tmp_path / "none.onnx").exists()


def test_held_out_frames_are_never_calibration_frames(drives):
    """A model trained on every frame (``data.train_split: none``) still validates on frames it was not
    calibrated on: the test split's frames leave the calibration pool."""
    sequences = open_sequences(drives, DataConfig())
    test_frames = {(1, frame) for frame in range(1, 5)}  # drive 2, frames 1-4 (first and last: no neighbours)
    calibration, held_out, name = quantize._select_frames(drives, sequences, "none", 300, 200)
    assert name == "test split" and set(held_out) == test_frames
    assert set(calibration) == {(s, f) for s in (0, 1) for f in range(6)} - test_frames
    # the dataset's own train split (drive 1, frames 1-4), 3 of 4 and 2 of 4 spread evenly, ends included
    calibration, held_out, _ = quantize._select_frames(drives, sequences, "", 3, 2)
    assert calibration == [(0, 1), (0, 3), (0, 4)] and held_out == [(1, 1), (1, 4)]


def test_a_train_split_data_cannot_supply_gives_way_to_the_datas_own(drives, tmp_path, caplog):
    """The model's stored ``data.train_split``, which ``export`` cannot change, gives way to DATA's own train
    split (drive 1, frames 1-4) with a warning saying why, whenever it selects nothing of DATA: a path of its
    training run that is not here (``make demo``'s is relative), a name DATA has no file for, a malformed
    file, one of other drives, one beyond DATA's frames, an empty one. One that fits DATA is used."""
    (drive,) = {line.split()[0] for line in (drives / "splits" / "synthetic" / "train_files.txt").open()}
    files = {
        "foreign": f"{drive} 2 l\n1999_01_01/1999_01_01_drive_0001_sync 3 l\n",
        "malformed": f"{drive} two l\n",
        "beyond": f"{drive} 100 l\n",
        "empty": "",
        "own": f"{drive} 2 l\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.list").write_text(text)  # any file name: training takes any existing file
    cases = [
        ("runs/elsewhere/splits/synthetic/train_files.txt", "cannot be used (split file not found: runs/"),
        ("eigen_zhou", "cannot be used (split 'eigen_zhou' is not a file, and"),
        (tmp_path / "malformed.list", "cannot be used (" + str(tmp_path / "malformed.list") + ":1"),
        (tmp_path / "foreign.list", f"names 1 sequence(s) {drives} does not have (first: drive 1999_01_01/"),
        (tmp_path / "beyond.list", f"selects none of the frames of {drives}"),
        (tmp_path / "empty.list", f"selects none of the frames of {drives}"),
    ]
    for stored, why in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _, calibration, held_out, _ = quantize.select_calibration_frames(
                drives, DataConfig(train_split=str(stored)), 3, 2
            )
        assert calibration == [(0, 1), (0, 3), (0, 4)] and held_out == [(1, 1), (1, 4)], stored
        assert f"the model's train split {stored} {why}" in caplog.text, caplog.text
        assert f"calibrating on {drives}'s own train split" in caplog.text
    caplog.clear()
    own = DataConfig(train_split=str(tmp_path / "own.list"))
    _, calibration, _, _ = quantize.select_calibration_frames(drives, own, 3, 2)
    assert calibration == [(0, 2)] and "train split" not in caplog.text


def test_cli_refuses_unusable_calibration_data_before_writing_the_fp32_model(
    random_checkpoint, tmp_path, caplog
):
    (tmp_path / "empty").mkdir()
    argv = ["export", "--checkpoint", str(random_checkpoint), "--onnx", str(tmp_path / "m.onnx")]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--int8", "--calibration", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'}: neither a KITTI raw root" in caplog.text
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "gpu"}, "target must be one of"),
        ({"calibration_frames": 0}, "calibration_frames must be a whole number >= 1"),
        ({"validation_frames": 2.5}, "validation_frames must be a whole number >= 1"),
        ({"tolerance": float("nan")}, "tolerance must be a finite number"),
        ({"max_difference": "0.1"}, "max_difference must be a finite number"),
        ({"calibrate_method": "KL"}, "calibrate_method must be one of"),
    ],
)
def test_quantize_argument_errors(random_onnx, drives, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_onnx(random_onnx, tmp_path / "x.onnx", drives, progress=False, **kwargs)


def test_quantize_refuses_its_own_output_and_an_int8_input(random_onnx, int8_models, drives, tmp_path):
    with pytest.raises(ValueError, match="another file than the FP32 one"):
        quantize_onnx(random_onnx, random_onnx, drives, progress=False)
    with pytest.raises(ValueError, match="already int8: quantise the FP32 export"):
        quantize_onnx(int8_models["cpu"][0], tmp_path / "twice.onnx", drives, progress=False)


PROPS = {
    "min_depth": "0.5", "max_depth": "80.0", "train_height": "64", "train_width": "96", "height": "64",
    "width": "96", "config": "seed: 0\n", "metric": "velocity", "output": "disparity",
}  # fmt: skip


def test_metadata_round_trip_of_the_int8_record():
    metadata = ExportMetadata.from_props(
        {
            **PROPS,
            "precision": "int8",
            "calibration_data": "kitti_raw",
            "calibration_frames": "300",
            "validation_frames": "200",
            "abs_rel_fp32": "0.1234",
            "abs_rel_int8": "0.1256",
            "depth_difference": "0.0042",
        },
        "m.onnx",
    )
    assert (metadata.precision, metadata.calibration_data, metadata.calibration_frames) == (
        "int8",
        "kitti_raw",
        300,
    )
    assert (metadata.abs_rel_fp32, metadata.abs_rel_int8, metadata.depth_difference) == (
        0.1234,
        0.1256,
        0.0042,
    )
    assert ExportMetadata.from_props(metadata.to_props(), "again") == metadata
    # without ground truth the AbsRel keys are absent and read as None
    no_gt = {k: v for k, v in metadata.to_props().items() if not k.startswith("abs_rel")}
    assert ExportMetadata.from_props(no_gt, "bag").abs_rel_int8 is None


def test_files_without_precision_read_as_fp32_and_inconsistent_records_are_refused():
    old = ExportMetadata.from_props(PROPS, "old.onnx")
    assert old.precision == "fp32" and old.calibration_frames is None and old.abs_rel_int8 is None
    assert old.to_props()["precision"] == "fp32" and "calibration_frames" not in old.to_props()
    with pytest.raises(ValueError, match=r"bad\.onnx: malformed metadata.*'precision'.*got 'int4'"):
        ExportMetadata.from_props({**PROPS, "precision": "int4"}, "bad.onnx")
    with pytest.raises(ValueError, match="an int8 model needs calibration_frames >= 1"):
        ExportMetadata.from_props({**PROPS, "precision": "int8"}, "bad.onnx")
    with pytest.raises(ValueError, match="an fp32 model has no INT8 record"):
        ExportMetadata.from_props({**PROPS, "calibration_frames": "3"}, "bad.onnx")


# ---------------------------------------------------------------- TensorRT: key, op check, build errors
KEY = {"onnx_bytes": b"abc", "gpu_name": "NVIDIA H100", "compute_capability": (9, 0), "trt_version": "10.3.0"}


def test_engine_cache_key_differs_for_int8_and_for_another_calibration(random_onnx, drives, tmp_path):
    assert engine_cache_key(**KEY, precision="int8") != engine_cache_key(**KEY, precision="fp16")
    text = "onnx_sha256={}\ngpu=NVIDIA H100\ncompute_capability=9.0\ntensorrt=10.3.0\nprecision=int8\n"
    expected = hashlib.sha256(text.format(hashlib.sha256(b"abc").hexdigest()).encode()).hexdigest()
    assert engine_cache_key(**KEY, precision="int8") == expected
    # the same network calibrated on other frames: other scales, other bytes, another engine
    models = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for path, frames in zip(models, (2, 4), strict=True):
        quantize_onnx(
            random_onnx,
            path,
            drives,
            calibration_frames=frames,
            validation_frames=1,
            target="tensorrt",
            progress=False,
        )
    scales = [
        {
            i.name: numpy_helper.to_array(i)
            for i in onnx.load(p).graph.initializer
            if i.name.endswith("_scale")
        }
        for p in models
    ]
    assert scales[0].keys() == scales[1].keys()
    assert any(not np.array_equal(scales[0][k], scales[1][k]) for k in scales[0])  # activation ranges moved
    keys = [engine_cache_key(p.read_bytes(), "NVIDIA H100", (9, 0), "10.3.0", "int8") for p in models]
    assert keys[0] != keys[1]


def test_tensorrt_target_passes_the_op_check_and_the_cpu_target_does_not(int8_models):
    assert check_tensorrt_ops(onnx.load(int8_models["tensorrt"][0])) == []
    problems = check_tensorrt_ops(onnx.load(int8_models["cpu"][0]))
    assert problems and all("DequantizeLinear" in p or "QuantizeLinear" in p for p in problems)
    assert any("zero point of type UINT8" in p for p in problems)
    assert any("dequantises a constant of type INT32" in p for p in problems)  # the quantised biases


def test_auto_sends_a_graph_tensorrt_cannot_take_to_onnxruntime(int8_models, random_onnx, caplog):
    """The decision, from the file's op set, with TensorRT present (``tensorrt=True``) or not: the default
    ``cpu``-target INT8 model (uint8 zero points, INT32 biases) goes to ONNX Runtime with the first problem
    as the reason; the ``tensorrt``-target one and the FP32 export go to TensorRT."""
    cpu, trt = int8_models["cpu"][0], int8_models["tensorrt"][0]
    problems = check_tensorrt_ops(onnx.load(cpu))
    backend, reason = auto_backend(cpu, tensorrt=True)
    assert backend == "onnxruntime"
    assert reason == (
        f"TensorRT 10 cannot take this graph: {problems[0]} (and {len(problems) - 1} more); an INT8 model "
        "for TensorRT is exported with --int8 --int8-target tensorrt"
    )
    assert re.fullmatch(
        r"node \d+ \S+ \((QuantizeLinear|DequantizeLinear)\): "
        r"(zero point of type UINT8|dequantises a constant of type INT32).*",
        problems[0],
    )
    assert auto_backend(trt, tensorrt=True)[0] == "tensorrt"
    assert auto_backend(random_onnx, tensorrt=True)[0] == "tensorrt"
    for path in (cpu, trt, random_onnx):
        assert auto_backend(path, tensorrt=False)[0] == "onnxruntime"
        assert auto_backend(path, device="cpu", tensorrt=True) == ("onnxruntime", "device='cpu'")
    # through create_backend, on this machine: the model runs, and the log line says which and why
    with caplog.at_level(logging.INFO, logger="ssim_depth_core.runtime.backends"):
        opened = create_backend(cpu)
    assert isinstance(opened, OnnxRuntimeBackend)
    assert f"backend auto -> onnxruntime for {cpu} (" in caplog.text


def test_an_explicit_tensorrt_backend_refuses_the_cpu_target_naming_why(int8_models):
    with pytest.raises(
        ValueError, match=r"(?s)cpu\.onnx is not TensorRT 10 compatible.*zero point of type UINT8"
    ):
        create_backend(int8_models["cpu"][0], "tensorrt")


def _qdq_model(zero_point, dtype=TensorProto.INT8, weight_type=TensorProto.INT8):
    """image -> Q -> DQ -> Conv(DQ(weight)) -> disparity, hand-made (opset 18)."""
    zp = helper.make_tensor("zp", dtype, [], [zero_point])
    weight = helper.make_tensor("w", weight_type, [1, 3, 1, 1], [1, 2, 3])
    weight_zp = helper.make_tensor("w_zp", weight_type, [], [0])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "s", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq"),
        helper.make_node("DequantizeLinear", ["w", "s", "w_zp"], ["w_f"], name="dq_w"),
        helper.make_node("Conv", ["dq", "w_f"], ["disparity"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("disparity", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializer=[zp, weight, weight_zp, scale],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (_qdq_model(0), []),
        (
            _qdq_model(3),
            ["node 0 q (QuantizeLinear): non-zero zero point", "node 1 dq (DequantizeLinear): non-zero"],
        ),
        (
            _qdq_model(128, TensorProto.UINT8),
            [
                "node 0 q (QuantizeLinear): zero point of type UINT8",
                "node 1 dq (DequantizeLinear): zero point of type UINT8",
            ],
        ),
        (
            _qdq_model(0, weight_type=TensorProto.INT32),
            ["node 2 dq_w (DequantizeLinear): dequantises a constant of type INT32"],
        ),
    ],
)
def test_tensorrt_check_of_hand_made_qdq_graphs(model, expected):
    onnx.checker.check_model(model)
    problems = check_tensorrt_ops(model)
    assert len(problems) == len(expected), problems
    for prefix, problem in zip(expected, problems, strict=True):
        assert problem.startswith(prefix), (prefix, problem)


def test_build_engine_precision_must_match_the_model(random_onnx, int8_models, tmp_path):
    with pytest.raises(ValueError, match="precision 'int8' needs a quantised model with Q/DQ nodes"):
        build_engine(random_onnx, precision="int8", cache_dir=tmp_path)
    with pytest.raises(
        ValueError, match="precision 'fp16' for a model with Q/DQ nodes; it builds as 'int8' only"
    ):
        build_engine(int8_models["tensorrt"][0], precision="fp16", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"(?s)not TensorRT 10 compatible.*UINT8.*--int8-target tensorrt"):
        build_engine(int8_models["cpu"][0], cache_dir=tmp_path)  # None -> int8: then the op check
    with pytest.raises(ValueError, match="precision must be one of"):
        engine_cache_key(**KEY, precision="int4")


@without_tensorrt
def test_int8_build_without_tensorrt_raises_a_clear_error(int8_models, tmp_path):
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        build_engine(int8_models["tensorrt"][0], cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- CLI
def test_cli_exports_fp32_and_int8(random_checkpoint, drives, tmp_path, capsys, monkeypatch):
    out = tmp_path / "depth.onnx"
    opened = []  # the calibration data is opened once: checked before the FP32 export, then used
    monkeypatch.setattr(
        quantize, "open_sequences", lambda *args: opened.append(args[0]) or open_sequences(*args)
    )
    argv = [
        "export",
        "--checkpoint",
        str(random_checkpoint),
        "--onnx",
        str(out),
        "--int8",
        "--calibration",
        str(drives),
    ]
    assert main([*argv, "--calibration-frames", "3", "--validation-frames", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"INT8 ONNX model (cpu) written to {tmp_path / 'depth.int8.onnx'}" in printed
    assert "INT8 vs FP32 on 2 held-out frames (calibrated on 3)" in printed
    assert read_metadata(onnx.load(out), out).precision == "fp32"
    metadata = read_metadata(onnx.load(tmp_path / "depth.int8.onnx"), "int8")
    assert (metadata.precision, metadata.calibration_frames, metadata.validation_frames) == ("int8", 3, 2)
    assert opened == [drives]

    refused = tmp_path / "refused.int8.onnx"
    again = [*argv, "--int8-onnx", str(refused), "--int8-tolerance", "-1", "--calibration-frames", "2"]
    assert main([*again, "--overwrite"]) == 2
    assert out.is_file() and not refused.exists()


def test_cli_export_refuses_an_earlier_exports_files_unless_overwrite(
    random_checkpoint, drives, tmp_path, caplog
):
    """Each file an export would write (--onnx, the INT8 path, --tensorrt and its sidecar) is refused when it
    exists, before anything is written; --overwrite replaces them."""
    out, int8, other = tmp_path / "depth.onnx", tmp_path / "depth.int8.onnx", tmp_path / "other.onnx"
    engine = tmp_path / "depth.engine"
    int8_options = [
        "--int8",
        "--calibration",
        str(drives),
        "--calibration-frames",
        "2",
        "--validation-frames",
        "1",
    ]

    def export(onnx_path, *extra: str) -> int:
        return main(["export", "--checkpoint", str(random_checkpoint), "--onnx", str(onnx_path), *extra])

    assert export(out, *int8_options) == 0
    written = {path: _sha256(path) for path in (out, int8)}
    for existing, extra in (
        (out, []),
        (int8, [*int8_options, "--int8-onnx", str(int8)]),
        (engine, ["--tensorrt", str(engine)]),
        (engine_sidecar_path(engine), ["--tensorrt", str(engine)]),
    ):
        existing.touch()
        caplog.clear()
        assert export(out if existing == out else other, *extra) == 2
        assert f"{existing} already exists (an earlier export?): pass --overwrite" in caplog.text
        assert not other.exists()  # refused before anything was written
        if existing not in written:
            existing.unlink()
    assert {path: _sha256(path) for path in (out, int8)} == written

    assert export(out, *int8_options, "--overwrite") == 0
    assert read_metadata(onnx.load(int8), int8).precision == "int8"


def test_cli_export_refuses_a_foreign_int8_path_before_writing_the_fp32_model(
    random_checkpoint, drives, tmp_path, caplog
):
    """A file at --int8-onnx that is not an INT8 model stays, even with --overwrite; nothing is written."""
    notes, out = tmp_path / "notes.onnx", tmp_path / "depth.onnx"
    notes.write_bytes(b"my notes, not a model")
    argv = ["export", "--checkpoint", str(random_checkpoint), "--onnx", str(out), "--int8",
            "--calibration", str(drives), "--int8-onnx", str(notes), "--overwrite"]  # fmt: skip
    assert main(argv) == 2
    assert f"{notes} already exists and is not an INT8 model of ssim_depth" in caplog.text
    assert not out.exists() and notes.read_bytes() == b"my notes, not a model"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8"], "--int8 needs --calibration DATA"),
        (["--calibration", "data"], "only apply with --int8"),
        (["--precision", "int8"], "--precision int8 builds from a quantised model"),
        (["--int8", "--calibration", "d", "--tensorrt", "e.engine", "--precision", "fp16"], "conflicts"),
    ],
)
def test_cli_int8_argument_errors(random_checkpoint, tmp_path, caplog, extra, message):
    argv = ["export", "--checkpoint", str(random_checkpoint), "--onnx", str(tmp_path / "m.onnx"), *extra]
    assert main(argv) == 2
    assert message in caplog.text
    assert not (tmp_path / "m.onnx").exists()  # refused before anything was exported


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8", "--calibration", "DATA", "--int8-tolerance", "nan"], "tolerance must be a finite number"),
        (["--tensorrt", "m.onnx"], "m.onnx is named for two outputs of the export: give each its own path"),
        (
            ["--int8", "--calibration", "DATA", "--calibration-frames", "0"],
            "calibration_frames must be a whole",
        ),
        (
            ["--int8", "--calibration", "DATA", "--validation-frames", "-1"],
            "validation_frames must be a whole",
        ),
        (["--int8", "--calibration", "no_such_data"], "calibration data not found: no_such_data"),
        pytest.param(["--tensorrt", "m.engine"], "TensorRT is not installed", marks=without_tensorrt),
    ],
)
def test_cli_export_refuses_bad_options_before_writing_anything(
    random_checkpoint, drives, tmp_path, caplog, monkeypatch, extra, message
):
    """A refusal the corrected command would otherwise meet as "already exists": nothing is written first."""
    monkeypatch.chdir(tmp_path)
    extra = [str(drives) if item == "DATA" else item for item in extra]
    argv = ["export", "--checkpoint", str(random_checkpoint), "--onnx", "m.onnx", *extra]
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    assert message in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_cli_export_never_writes_over_its_checkpoint(random_checkpoint, tmp_path, caplog):
    checkpoint = tmp_path / "model.pt"
    shutil.copyfile(random_checkpoint, checkpoint)
    for target in (
        ["--onnx", str(checkpoint)],
        ["--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(checkpoint)],
    ):
        argv = ["export", "--checkpoint", str(checkpoint), *target, "--overwrite"]
        with caplog.at_level(logging.ERROR):
            assert main(argv) == 2
        assert f"{checkpoint} is the checkpoint of the export: write its outputs to other" in caplog.text
    assert _sha256(checkpoint) == _sha256(random_checkpoint) and not (tmp_path / "m.onnx").exists()


def test_cli_export_refuses_paths_it_cannot_write_before_exporting(random_checkpoint, tmp_path, caplog):
    (tmp_path / "a_folder.onnx").mkdir()
    (tmp_path / "a_file").write_text("")
    for path, message in (
        ("a_folder.onnx", "a_folder.onnx is a folder: name a file"),
        ("a_file/m.onnx", "a_file/m.onnx: " + str(tmp_path / "a_file") + " is not a folder"),
    ):
        argv = [
            "export",
            "--checkpoint",
            str(random_checkpoint),
            "--onnx",
            str(tmp_path / path),
            "--overwrite",
        ]
        with caplog.at_level(logging.ERROR):
            assert main(argv) == 2
        assert message in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder.onnx"]


def test_cli_int8_defaults_are_the_library_defaults():
    export = build_parser()._subparsers._group_actions[0].choices["export"]
    helps = {action.dest: action.help for action in export._actions}
    assert f"(default: {quantize.DEFAULT_CALIBRATION_FRAMES})" in helps["calibration_frames"]
    assert f"(default: {quantize.DEFAULT_VALIDATION_FRAMES})" in helps["validation_frames"]
    assert f"(default: {quantize.DEFAULT_TOLERANCE})" in helps["int8_tolerance"]
    assert f"(default: {quantize.DEFAULT_MAX_DIFFERENCE})" in helps["int8_max_difference"]


# ---------------------------------------------------------------- GPU: TensorRT 10 + pycuda + CUDA
@pytest.mark.gpu
@needs_tensorrt
def test_int8_engine_matches_the_int8_model_and_is_cached_apart(int8_models, random_onnx, tmp_path):
    path, _ = int8_models["tensorrt"]
    engine = build_engine(path, cache_dir=tmp_path)  # precision None -> int8
    assert "-int8-" in engine.name
    assert build_engine(path, cache_dir=tmp_path) == engine  # cache hit
    assert build_engine(random_onnx, cache_dir=tmp_path) != engine  # the FP32 model's FP16 engine
    image = np.random.default_rng(2).integers(0, 256, (120, 180, 3), dtype=np.uint8)
    on_gpu = DepthEstimator(path, backend="tensorrt", cache_dir=tmp_path)
    on_cpu = DepthEstimator(path, backend="onnxruntime", device="cpu")
    np.testing.assert_allclose(on_gpu(image), on_cpu(image), rtol=0.02)  # INT8 kernels differ in rounding
