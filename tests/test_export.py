"""ONNX export: graph contract, metadata and metric source, parity with PyTorch, TensorRT op-set check."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from ssim_depth_core.artifact import ExportMetadata, metric_source, read_metadata
from ssim_depth_core.checkpoint import load_depth_net
from ssim_depth_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, to_dict
from ssim_depth_core.export import onnx as onnx_export
from ssim_depth_core.export.onnx import ExportValidationError, _validate, check_tensorrt_ops, export_onnx
from ssim_depth_core.models import MonodepthModel

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint):
    """The shared random 64x96 checkpoint and its training config."""
    return random_checkpoint, load_depth_net(random_checkpoint)[1]


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint[0], tmp_path_factory.mktemp("onnx") / "depth.onnx")


def _dims(value_info):
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_export_graph_contract(exported):
    model = onnx.load(exported)
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    (image,) = model.graph.input
    (disparity,) = model.graph.output
    assert image.name == "image" and _dims(image) == [1, 3, HEIGHT, WIDTH]
    assert image.type.tensor_type.elem_type == TensorProto.FLOAT
    assert disparity.name == "disparity" and _dims(disparity) == [1, 1, HEIGHT, WIDTH]


def test_export_metadata(exported, checkpoint):
    metadata = read_metadata(onnx.load(exported), exported)
    assert (metadata.min_depth, metadata.max_depth) == (0.5, 80.0)
    assert (metadata.train_height, metadata.train_width) == (HEIGHT, WIDTH)
    assert (metadata.height, metadata.width) == (HEIGHT, WIDTH)
    assert yaml.safe_load(metadata.config_yaml) == to_dict(checkpoint[1])
    assert metadata.metric == "none"  # photometric + smoothness only: scale-less


def test_export_records_the_metric_source(velocity_onnx):
    assert read_metadata(onnx.load(velocity_onnx), velocity_onnx).metric == "velocity"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "none"),  # a config without the keys
        ({"data": {"height": 64}, "loss": {"weights": {"photometric": 1.0}}}, "none"),
        (to_dict(TrainConfig()), "none"),  # the defaults
        ({"loss": {"weights": {"velocity": 0.05}}}, "velocity"),
        ({"data": {"stereo": True}, "loss": {"weights": {"velocity": 0.0}}}, "stereo"),
        ({"data": {"stereo": True}, "loss": {"weights": {"velocity": 0.05}}}, "stereo+velocity"),
        (
            to_dict(TrainConfig(data=DataConfig(stereo=True), loss=LossConfig(weights={"velocity": 1.0}))),
            "stereo+velocity",
        ),
    ],
)
def test_metric_source(config, expected):
    assert metric_source(config) == expected


PROPS = {
    "min_depth": "0.5",
    "max_depth": "80.0",
    "train_height": "64",
    "train_width": "96",
    "height": "128",
    "width": "192",
    "config": "seed: 0\n",
    "metric": "stereo+velocity",
    "output": "disparity",
    "precision": "fp32",
}


def test_metadata_round_trip_and_files_without_metric():
    metadata = ExportMetadata.from_props(PROPS, "model.onnx")
    assert metadata == ExportMetadata(0.5, 80.0, 64, 96, 128, 192, "seed: 0\n", "stereo+velocity")
    assert metadata.to_props() == PROPS
    old = {key: value for key, value in PROPS.items() if key not in ("metric", "output", "precision")}
    assert ExportMetadata.from_props(old, "old.onnx").metric == "none"
    assert ExportMetadata.from_props(old, "old.onnx").output == "disparity"


def test_metadata_rejects_unknown_choices_and_a_bad_depth_range():
    with pytest.raises(ValueError, match=r"bad\.onnx: malformed metadata.*'metric'.*got 'lidar'"):
        ExportMetadata.from_props({**PROPS, "metric": "lidar"}, "bad.onnx")
    with pytest.raises(ValueError, match=r"bad\.onnx: malformed metadata.*'output'.*got 'depth'"):
        ExportMetadata.from_props({**PROPS, "output": "depth"}, "bad.onnx")
    for min_depth, max_depth in (("50", "10"), ("0", "10"), ("nan", "10"), ("0.5", "inf")):
        with pytest.raises(
            ValueError, match=r"bad\.onnx: malformed metadata.*0 < min_depth < max_depth < inf"
        ):
            ExportMetadata.from_props({**PROPS, "min_depth": min_depth, "max_depth": max_depth}, "bad.onnx")


def test_onnxruntime_matches_torch(exported, checkpoint):
    net, _ = load_depth_net(checkpoint[0])
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(123))
    with torch.inference_mode():
        expected = net(image).numpy()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["disparity"], {"image": image.numpy()})
    assert actual.shape == (1, 1, HEIGHT, WIDTH)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    assert expected.std() > 0  # a constant output would make the comparison meaningless


def test_export_at_explicit_size(checkpoint, tmp_path):
    path = export_onnx(checkpoint[0], tmp_path / "wide.onnx", height=96, width=128)
    model = onnx.load(path)
    assert _dims(model.graph.input[0]) == [1, 3, 96, 128]
    assert _dims(model.graph.output[0]) == [1, 1, 96, 128]
    metadata = read_metadata(model, path)
    assert (metadata.height, metadata.width) == (96, 128)
    assert (metadata.train_height, metadata.train_width) == (HEIGHT, WIDTH)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 100}, "height.*100"),
        ({"width": 0}, "width.*0"),
        ({"width": 2**30}, "up to 8192"),
        ({"opset": 17}, "opset"),
    ],
)
def test_export_rejects_bad_arguments(checkpoint, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(checkpoint[0], tmp_path / "bad.onnx", **kwargs)
    assert not (tmp_path / "bad.onnx").exists()


def test_validation_catches_a_graph_that_differs_from_torch(exported):
    torch.manual_seed(1)
    other = MonodepthModel(ModelConfig(), [0, -1, 1]).depth_net.eval()
    with pytest.raises(ExportValidationError, match=r"^m\.pt -> m\.onnx: ONNX Runtime output differs from"):
        _validate(exported.read_bytes(), other, HEIGHT, WIDTH, "m.pt -> m.onnx")


def test_a_graph_onnxruntime_cannot_run_is_an_export_validation_error_naming_both_files(checkpoint):
    """onnxruntime's own exception types (here its ``Fail`` for an unregistered op) derive from Exception
    only: they become the export's error, which names the checkpoint and the output file."""
    graph = helper.make_graph(
        [helper.make_node("MyOp", ["image"], ["disparity"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("disparity", TensorProto.FLOAT, [1, 1, HEIGHT, WIDTH])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
    )
    onnx.checker.check_model(model)  # the checker lets it through: only ONNX Runtime refuses it
    net, _ = load_depth_net(checkpoint[0])
    with pytest.raises(
        ExportValidationError,
        match=r"^ck\.pt -> out\.onnx: ONNX Runtime cannot run the exported graph \(Fail: .*MyOp",
    ):
        _validate(model.SerializeToString(), net, HEIGHT, WIDTH, "ck.pt -> out.onnx")


def test_a_failed_validation_writes_nothing_and_keeps_an_earlier_file(checkpoint, tmp_path, monkeypatch):
    """A real export whose validation fails (the tolerance set below any difference, -1): the error names
    both files, nothing is written at a new path, an earlier file at the path keeps its bytes, and no
    temporary is left."""
    monkeypatch.setattr(onnx_export, "VALIDATION_TOLERANCE", -1.0)
    earlier, fresh = tmp_path / "earlier.onnx", tmp_path / "fresh.onnx"
    earlier.write_bytes(b"the model of an earlier export")
    for target in (earlier, fresh):
        with pytest.raises(ExportValidationError) as caught:
            export_onnx(checkpoint[0], target)
        assert str(caught.value).startswith(f"{checkpoint[0]} -> {target}: ONNX Runtime output differs")
        assert str(caught.value).endswith("> -1.0")
    assert earlier.read_bytes() == b"the model of an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.onnx"]


def test_our_export_passes_the_tensorrt_check(exported):
    model = onnx.load(exported)
    assert check_tensorrt_ops(model) == []
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert pads and {helper.get_attribute_value(a) for n in pads for a in n.attribute} == {b"reflect"}


def _model(nodes, opset=18, inputs=("x",), extra_initializers=()):
    graph = helper.make_graph(
        nodes,
        "hand_made",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 4, 4]) for name in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 12, 12])],
        initializer=[
            helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1]),
            helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
            *extra_initializers,
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_tensorrt_check_accepts_a_supported_hand_made_graph():
    model = _model(
        [
            helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
            helper.make_node(
                "Resize",
                ["p", "", "scales"],
                ["r"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
            ),
            helper.make_node("Sigmoid", ["r"], ["y"]),
        ]
    )
    onnx.checker.check_model(model)
    assert check_tensorrt_ops(model) == []


def test_tensorrt_check_accepts_the_transformer_ops():
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "n"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),  # any axis: the SQL head's plane-wise softmax
    ]
    assert check_tensorrt_ops(_model(nodes)) == []


@pytest.mark.parametrize(
    ("node", "opset", "expected"),
    [
        (helper.make_node("Unique", ["x"], ["y"]), 18, "op type Unique"),
        (helper.make_node("Pad", ["x", "pads"], ["y"], mode="symmetric"), 18, "Pad mode 'symmetric'"),
        (
            helper.make_node(
                "Resize", ["x", "", "scales"], ["y"], coordinate_transformation_mode="tf_crop_and_resize"
            ),
            18,
            "Resize coordinate_transformation_mode 'tf_crop_and_resize'",
        ),
        (helper.make_node("Resize", ["x", "", "scales"], ["y"], antialias=1), 18, "antialias"),
        (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), 18, "dilations"),
        (helper.make_node("Plugin", ["x"], ["y"], domain="com.example"), 18, "custom domain 'com.example'"),
        (
            helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv_std"], axis=-1),
            18,
            "LayerNormalization outputs Mean / InvStdDev",
        ),
        (helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,jk->ik"), 18, "op type Einsum"),
        (helper.make_node("Relu", ["x"], ["y"]), 8, "opset 8"),
        (helper.make_node("Relu", ["x"], ["y"]), 21, "opset 21"),
    ],
)
def test_tensorrt_check_reports_unsupported(node, opset, expected):
    problems = check_tensorrt_ops(_model([node], opset=opset))
    assert len(problems) == 1
    assert expected in problems[0]
