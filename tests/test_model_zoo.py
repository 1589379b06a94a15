"""Model choices (issue 19): encoder / pose encoder by torchvision name, the U-Net or SQL decoder. Config keys
and the upgrade of older ones, shapes of every configuration, ConvNeXt taps against torchvision, gradients to
every parameter, and serving: ONNX parity, the TensorRT op check and DepthEstimator on the new depth nets."""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
import yaml
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms.functional import normalize

from ssim_depth_core.artifact import read_metadata
from ssim_depth_core.checkpoint import load_depth_net, save_atomic
from ssim_depth_core.config import (
    DataConfig,
    EncoderName,
    ModelConfig,
    SQLConfig,
    TrainConfig,
    load_config,
    stored_config,
    to_dict,
    upgrade_stored_config,
)
from ssim_depth_core.export.onnx import check_tensorrt_ops, export_onnx
from ssim_depth_core.models import ConvNextEncoder, DepthNet, MonodepthModel, PoseNet
from ssim_depth_core.models.depth import DECODERS
from ssim_depth_core.models.encoder import ENCODER_NAMES, HALF_SCALE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD
from ssim_depth_core.runtime import DepthEstimator, OnnxRuntimeBackend, TorchBackend

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.yaml"))


def _model_config(encoder: str = "resnet18", decoder: str = "unet", **fields) -> ModelConfig:
    scales = [0] if decoder == "sql" else [0, 1, 2, 3]
    return ModelConfig(encoder=encoder, decoder=decoder, scales=scales, **fields)


# ---------------------------------------------------------------------------------------------- config


def test_encoder_choices_are_the_registry():
    assert typing.get_args(EncoderName) == ENCODER_NAMES


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_with_named_encoders(path):
    config = load_config(path)
    assert config.model.encoder in ENCODER_NAMES and config.model.pose_encoder in ENCODER_NAMES
    assert "num_layers" not in path.read_text()


def test_spidepth_recipe_is_convnext_with_the_sql_head():
    model = load_config(ROOT / "training" / "configs" / "kitti_spidepth.yaml").model
    assert model.encoder.startswith("convnext") and model.decoder == "sql" and model.scales == [0]
    assert model.pretrained


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            "model:\n  num_layers: 34\n",
            [],
            r"'model.num_layers' was replaced by 'model.encoder'.*encoder: resnet34",
        ),
        (
            "seed: 1\n",
            ["model.pose_num_layers=50"],
            r"'model.pose_num_layers'.*'model.pose_encoder'.*resnet50",
        ),
    ],
)
def test_old_model_keys_in_a_user_config_name_the_new_keys(tmp_path, text, overrides, message):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(path, overrides)
    assert "convnext_tiny" in str(error.value)  # the choices are listed


def test_stored_configs_with_old_keys_upgrade_in_one_place():
    old = {"seed": 3, "model": {"num_layers": 50, "pose_num_layers": 18, "min_depth": 0.5}}
    snapshot = copy.deepcopy(old)
    upgraded = upgrade_stored_config(old)
    assert upgraded == {
        "seed": 3,
        "model": {"min_depth": 0.5, "encoder": "resnet50", "pose_encoder": "resnet18"},
    }
    assert old == snapshot  # not modified
    config = stored_config(old, "old.pt")
    assert (config.model.encoder, config.model.pose_encoder, config.model.decoder) == (
        "resnet50",
        "resnet18",
        "unet",
    )
    new = to_dict(TrainConfig())
    assert upgrade_stored_config(new) is new
    with pytest.raises(ValueError, match=r"model.num_layers.*101 is not a ResNet depth"):
        upgrade_stored_config({"model": {"num_layers": 101}})
    with pytest.raises(ValueError, match="both model.num_layers: 18 and model.encoder: 'convnext_tiny'"):
        upgrade_stored_config({"model": {"num_layers": 18, "encoder": "convnext_tiny"}})


def _legacy(config: dict, depth: int = 18) -> dict:
    """``config`` as a checkpoint written before issue 19 stores it: ResNet depths, no decoder keys."""
    old = copy.deepcopy(config)
    model = old["model"]
    for key in ("encoder", "pose_encoder", "decoder", "sql"):
        del model[key]
    model["num_layers"], model["pose_num_layers"] = depth, 18
    return old


@pytest.mark.parametrize("depth", [18, 50])
def test_a_checkpoint_with_the_old_keys_loads_and_runs(tmp_path, depth):
    config = TrainConfig(
        model=ModelConfig(encoder=f"resnet{depth}", min_depth=0.5, max_depth=80.0),
        data=DataConfig(height=64, width=64),
    )
    torch.manual_seed(0)
    model = MonodepthModel(config.model, config.data.frame_ids)
    path = tmp_path / "old.pt"
    save_atomic({"config": _legacy(to_dict(config), depth), "model": model.state_dict()}, path)
    net, loaded = load_depth_net(path)
    assert loaded.model.encoder == f"resnet{depth}" and loaded.model.decoder == "unet"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(image), model.depth_net.eval()(image))
    depth_map = DepthEstimator(TorchBackend(path, device="cpu"))(np.zeros((40, 50, 3), np.uint8))
    assert depth_map.shape == (40, 50) and np.all((depth_map >= 0.5) & (depth_map <= 80.0))


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", ENCODER_NAMES)
def test_depth_net_shapes_for_every_configuration(encoder, decoder):
    """Every encoder x decoder on the meta device (shapes only, no memory or arithmetic)."""
    with torch.device("meta"):
        net = DepthNet.from_config(_model_config(encoder, decoder)).eval()
        image = torch.empty(2, 3, 64, 96)
        features = net.encoder(image)
        full = net(image)
        multiscale = net.forward_multiscale(image)
    assert [f.shape[1] for f in features] == list(net.encoder.num_ch_enc)
    assert [f.shape[-2:] for f in features] == [(64 // 2**s, 96 // 2**s) for s in range(1, 6)]
    assert full.shape == (2, 1, 64, 96)
    scales = [0] if decoder == "sql" else [0, 1, 2, 3]
    assert [d.shape for d in multiscale] == [(2, 1, 64 // 2**s, 96 // 2**s) for s in scales]


@pytest.mark.parametrize("encoder", ENCODER_NAMES)
def test_pose_net_shapes_for_every_encoder(encoder):
    with torch.device("meta"):
        net = PoseNet(encoder)
        frame = torch.empty(2, 3, 64, 96)
        axis_angle, translation = net(frame, frame)
    assert axis_angle.shape == translation.shape == (2, 3)
    assert net.encoder.num_input_images == 2


@pytest.mark.parametrize(("encoder", "decoder"), [("resnet50", "sql"), ("convnext_tiny", "unet")])
def test_new_depth_nets_give_disparities_in_range(encoder, decoder):
    torch.manual_seed(0)
    net = DepthNet.from_config(_model_config(encoder, decoder)).eval()
    with torch.no_grad():
        disparity = net(torch.rand(1, 3, 64, 96))
    assert disparity.shape == (1, 1, 64, 96)
    assert torch.isfinite(disparity).all() and disparity.min() >= 0 and disparity.max() <= 1


def test_sql_decoder_refuses_scales_and_initial_depth_it_cannot_honour():
    with pytest.raises(ValueError, match=r"model.scales must be \[0\], got \[0, 1, 2, 3\]"):
        DepthNet.from_config(ModelConfig(decoder="sql"))
    with pytest.raises(ValueError, match="leave model.initial_depth at 0"):
        DepthNet.from_config(_model_config(decoder="sql", initial_depth=10.0))
    with pytest.raises(ValueError, match=r"patch_size must divide 32 \(inputs are multiples of it\), got 12"):
        DepthNet("resnet18", decoder="sql", scales=(0,), sql={"patch_size": 12})
    with pytest.raises(ValueError, match="decoder must be one of"):
        DepthNet("resnet18", decoder="dpt")


def test_convnext_encoder_matches_torchvision_stages_on_normalised_input():
    torch.manual_seed(0)
    encoder = ConvNextEncoder("convnext_tiny").eval()
    torch.manual_seed(0)
    reference = torchvision.models.convnext_tiny().eval()
    taps = create_feature_extractor(reference, {f"features.{i}": str(i) for i in (1, 3, 5, 7)})
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = encoder(image)
        expected = taps(normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    assert encoder.num_ch_enc == (HALF_SCALE_CHANNELS, 96, 192, 384, 768)
    assert features[0].shape == (1, HALF_SCALE_CHANNELS, 32, 32)
    for feature, index in zip(features[1:], (1, 3, 5, 7), strict=True):
        torch.testing.assert_close(feature, expected[str(index)])


def test_convnext_pose_encoder_takes_six_channels_with_independent_scratch_filters():
    torch.manual_seed(0)
    encoder = ConvNextEncoder("convnext_tiny", num_input_images=2, half_scale_map=False)
    weight = encoder.features[0][0].weight
    assert weight.shape == (96, 6, 4, 4) and encoder.half_scale is None and len(encoder.num_ch_enc) == 4
    assert not torch.allclose(weight[:, :3], weight[:, 3:])
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)  # ConvNeXt's trunc-normal init


def test_every_parameter_gets_a_gradient_with_convnext_nets_and_the_sql_head():
    """DDP without find_unused_parameters needs every parameter used: ConvNeXt depth + pose nets, SQL head."""
    torch.manual_seed(0)
    config = _model_config("convnext_tiny", "sql", pose_encoder="convnext_tiny", small_map_weight_grad=False)
    model = MonodepthModel(config, [0, -1, 1])
    images = torch.rand(1, 3, 3, 64, 64)
    K = torch.tensor([[40.0, 0.0, 32.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]]).expand(1, 1, 3, 3)
    batch = {"images": images, "images_aug": images, "K": K, "inv_K": torch.linalg.inv(K)}
    outputs = model(batch)
    loss = sum(w.mean() for w in outputs["warped"].values()) + outputs["depths"][0].mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


# --------------------------------------------------------------------------------------------- serving

# (encoder, decoder, the SQL head's bins): both bin spaces of the SQL head are served
SERVED = [
    ("resnet18", "sql", "depth"),
    ("resnet18", "sql", "disparity"),
    ("convnext_tiny", "unet", "depth"),
    ("convnext_tiny", "sql", "depth"),
]
SIZE = 64


@pytest.fixture(scope="module", params=SERVED, ids=lambda p: "+".join(p[:2]) + f"-{p[2]}-bins")
def served(request, tmp_path_factory):
    """A random checkpoint of a new depth net (64x64; the SQL head sharpened so that its depths spread over
    the range) and its ONNX export (validated against PyTorch by the exporter)."""
    encoder, decoder, bins = request.param
    config = TrainConfig(
        model=_model_config(encoder, decoder, min_depth=0.5, max_depth=80.0, sql=SQLConfig(bins=bins)),
        data=DataConfig(height=SIZE, width=SIZE),
    )
    torch.manual_seed(0)
    model = MonodepthModel(config.model, config.data.frame_ids)
    if decoder == "sql":
        torch.nn.init.normal_(model.depth_net.decoder.pixels.weight, std=2.0)
        torch.nn.init.normal_(model.depth_net.decoder.to_queries.weight, std=3.0)
    folder = tmp_path_factory.mktemp("served")
    checkpoint = folder / "model.pt"
    save_atomic({"config": to_dict(config), "model": model.state_dict()}, checkpoint)
    return request.param[:2], checkpoint, export_onnx(checkpoint, folder / "model.onnx")


def test_new_depth_nets_export_with_parity_and_pass_the_tensorrt_check(served):
    (encoder, decoder), checkpoint, exported = served
    model = onnx.load(exported)
    assert check_tensorrt_ops(model) == []
    ops = {node.op_type for node in model.graph.node}
    if encoder.startswith("convnext"):
        assert "LayerNormalization" in ops
    if decoder == "sql":
        assert {"MatMul", "Softmax", "LayerNormalization", "InstanceNormalization"} <= ops
    metadata = read_metadata(model, exported)
    assert metadata.output == "disparity"
    assert yaml.safe_load(metadata.config_yaml)["model"]["decoder"] == decoder
    net, _ = load_depth_net(checkpoint)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = net(image).numpy()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["disparity"], {"image": image.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    assert expected.std() > 1e-3  # a near-constant output would make the comparison meaningless


def test_new_depth_nets_run_through_the_depth_estimator(served):
    (_, decoder), checkpoint, exported = served
    frame = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    from_onnx = DepthEstimator(OnnxRuntimeBackend(exported, device="cpu"))(frame)
    from_torch = DepthEstimator(TorchBackend(checkpoint, device="cpu"))(frame)
    assert from_onnx.shape == (SIZE, SIZE) and np.all((from_onnx >= 0.5) & (from_onnx <= 80.0))
    np.testing.assert_allclose(from_onnx, from_torch, rtol=1e-3)
    if decoder == "sql":  # the estimator's metres are the SQL head's own depth (converted in, back out)
        net, _ = load_depth_net(checkpoint)
        batch = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            depth = net.decoder.depth(net.encoder(batch))[0, 0].numpy()
        np.testing.assert_allclose(from_torch, depth, rtol=1e-4)


def test_record_format_is_json_serialisable_for_new_configs():
    """Study records store train_config as JSON: the nested model.sql block must round-trip."""
    config = to_dict(TrainConfig(model=_model_config("convnext_tiny", "sql")))
    assert stored_config(json.loads(json.dumps(config)), "record") == stored_config(config, "record")


def test_model_sizes_script_lists_every_configuration(capsys, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("model_sizes", ROOT / "bench" / "model_sizes.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "model_sizes", module)  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    module.main(["--size", "96x64"])
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| depth") or line.startswith("| pose")
    ]
    assert len(rows) == len(ENCODER_NAMES) * (len(DECODERS) + 1)
    assert "| depth | resnet18 | unet | 64, 64, 128, 256, 512 | 14.33 |" in rows[0]
