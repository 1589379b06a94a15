"""Light depth networks (issue 20): MobileNetV3-Large / EfficientNet-B0 / RegNetY-400MF encoders and the
depthwise-separable decoder. Config choices and their errors, feature taps and parameter counts against
torchvision's own models, shapes of every new configuration (pose net on two stacked frames included), the
decoder's padding and initial disparity, ONNX export (parity, TensorRT op check), gradients to every
parameter, and a few training steps of the light CPU recipe."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms.functional import normalize

from ssim_depth_core.checkpoint import load_checkpoint, load_depth_net, save_atomic
from ssim_depth_core.config import DataConfig, EncoderName, ModelConfig, TrainConfig, load_config, to_dict
from ssim_depth_core.export.onnx import check_tensorrt_ops, export_onnx
from ssim_depth_core.geometry import disparity_to_depth
from ssim_depth_core.models import DepthNet, MonodepthModel, PoseNet
from ssim_depth_core.models.decoder import DECODER_CHANNELS, DISPARITY_HEADS, DepthDecoder, disparity_head
from ssim_depth_core.models.depth import DECODERS
from ssim_depth_core.models.encoder import IMAGENET_MEAN, IMAGENET_STD, LightEncoder, build_encoder
from ssim_depth_core.models.light_decoder import LIGHT_DECODER_CHANNELS, LightDecoder
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
LIGHT = ("mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf")
# torchvision's model, its ImageNet weights enum (whose metadata gives the published parameter count, no
# download needed) and the name of its classifier, which the encoders drop.
TORCHVISION = {
    "mobilenet_v3_large": (torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V2, "classifier"),
    "efficientnet_b0": (torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier"),
    "regnet_y_400mf": (torchvision.models.RegNet_Y_400MF_Weights.IMAGENET1K_V2, "fc"),
}
HEIGHT, WIDTH = 64, 96


def _model_config(encoder: str, decoder: str = "light", **fields) -> ModelConfig:
    scales = [0] if decoder == "sql" else [0, 1, 2, 3]
    return ModelConfig(encoder=encoder, decoder=decoder, scales=scales, **fields)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------- config


def test_light_names_are_config_choices():
    assert set(LIGHT) <= set(typing.get_args(EncoderName))
    decoder_choices = typing.get_args(typing.get_type_hints(ModelConfig)["decoder"])
    assert decoder_choices == DECODERS and "light" in DECODERS
    config = load_config(
        None, [f"model.encoder={LIGHT[0]}", f"model.pose_encoder={LIGHT[1]}", "model.decoder=light"]
    )
    assert (config.model.encoder, config.model.pose_encoder, config.model.decoder) == (*LIGHT[:2], "light")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.encoder=mobilenet_v3_small", ("'mobilenet_v3_large'", "'efficientnet_b0'", "'resnet18'")),
        ("model.pose_encoder=efficientnet_b7", ("'efficientnet_b0'", "'regnet_y_400mf'")),
        ("model.decoder=lite", ("'unet'", "'sql'", "'light'")),
    ],
)
def test_a_wrong_name_is_refused_naming_the_valid_ones(override, named):
    key, _, value = override.partition("=")
    with pytest.raises(ValueError, match=rf"config '{key}' must be one of .*got '{value}'") as error:
        load_config(None, [override])
    assert all(name in str(error.value) for name in named)


def test_build_encoder_names_the_light_encoders_for_a_wrong_name():
    with pytest.raises(ValueError, match="unknown encoder 'mobilenet_v2'; known: .*mobilenet_v3_large"):
        build_encoder("mobilenet_v2")
    with pytest.raises(ValueError, match=r"light encoder must be one of \['mobilenet_v3_large'"):
        LightEncoder("resnet18")


def test_the_light_recipe_differs_from_the_r18_recipe_in_nets_steps_start_rate_and_padding():
    r18 = to_dict(load_config(CONFIGS / "synthetic_cpu.yaml"))
    light = to_dict(load_config(CONFIGS / "synthetic_cpu_light.yaml"))
    changed = {
        (section, key)
        for section, values in light.items()
        if isinstance(values, dict)
        for key in values
        if values[key] != r18[section][key]
    } | {(key,) for key, value in light.items() if not isinstance(value, dict) and value != r18[key]}
    assert changed == {
        ("model", "encoder"),
        ("model", "pose_encoder"),
        ("model", "decoder"),
        ("model", "initial_depth"),
        ("model", "padding_mode"),
        ("optim", "epochs"),
        ("optim", "lr_step_epochs"),
        ("optim", "learning_rate"),
    }
    assert light["model"]["encoder"] in LIGHT and light["model"]["decoder"] == "light"
    assert light["model"]["initial_depth"] == 10.0
    assert (r18["model"]["padding_mode"], light["model"]["padding_mode"]) == ("reflection", "zeros")
    assert light["optim"]["learning_rate"] == pytest.approx(2.5 * r18["optim"]["learning_rate"])
    assert light["optim"]["epochs"] > r18["optim"]["epochs"]
    # the learning-rate drop at the same fraction of the schedule (R18: after 9 of 10 epochs)
    r18_fraction = r18["optim"]["lr_step_epochs"] / r18["optim"]["epochs"]
    assert light["optim"]["lr_step_epochs"] / light["optim"]["epochs"] == pytest.approx(
        r18_fraction, abs=0.05
    )


# -------------------------------------------------------------------------------------------- encoders


def _stride_ends(reference: nn.Module, trunk: list[tuple[str, nn.Module]], image: torch.Tensor) -> dict:
    """Names of the last layer of ``trunk`` (torchvision's children, in order) at each output resolution."""
    last = {}
    x = image
    with torch.no_grad():
        for name, layer in trunk:
            x = layer(x)
            last[tuple(x.shape[-2:])] = name
    return last


def _trunk(name: str, reference: nn.Module) -> list[tuple[str, nn.Module]]:
    if name == "regnet_y_400mf":
        return [("stem", reference.stem)] + [
            (f"trunk_output.{n}", m) for n, m in reference.trunk_output.named_children()
        ]
    return [(f"features.{n}", m) for n, m in reference.features.named_children()]


@pytest.mark.parametrize("name", LIGHT)
def test_light_encoder_is_torchvisions_trunk_tapped_at_the_end_of_each_stride(name):
    """The five maps equal torchvision's own layers' outputs (same seed, normalised input): for each
    resolution 1/2 .. 1/32, the output of the last layer of the trunk at that resolution."""
    torch.manual_seed(0)
    encoder = LightEncoder(name).eval()
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    image = torch.rand(1, 3, HEIGHT, WIDTH)
    normalised = normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))
    ends = _stride_ends(reference, _trunk(name, reference), normalised)
    resolutions = [(HEIGHT // 2**s, WIDTH // 2**s) for s in range(1, 6)]
    assert list(ends) == resolutions
    taps = create_feature_extractor(reference, {ends[r]: str(i) for i, r in enumerate(resolutions)})
    with torch.no_grad():
        features = encoder(image)
        expected = taps(normalised)
    assert len(features) == 5
    for level, feature in enumerate(features):
        assert feature.shape == (1, encoder.num_ch_enc[level], *resolutions[level])
        torch.testing.assert_close(feature, expected[str(level)])


@pytest.mark.parametrize("name", LIGHT)
def test_light_encoder_parameters_are_torchvisions_model_less_its_classifier(name):
    weights, classifier = TORCHVISION[name]
    reference = getattr(torchvision.models, name)()
    assert _count(reference) == weights.meta["num_params"]  # the published size of the model
    expected = weights.meta["num_params"] - _count(getattr(reference, classifier))
    assert _count(LightEncoder(name)) == expected
    # Two stacked frames: only the stem's 3x3 conv grows, by 3 input channels.
    stem_out = next(m for m in reference.modules() if isinstance(m, nn.Conv2d)).out_channels
    assert _count(LightEncoder(name, num_input_images=2)) == expected + stem_out * 3 * 3 * 3


@pytest.mark.parametrize("name", LIGHT)
def test_pretrained_light_encoders_load_torchvisions_weights(name, monkeypatch):
    """``pretrained=True`` through torchvision's own weights enum and builder, offline: the enum's download is
    replaced by a seeded torchvision model's state dict, which the encoder must then compute with (and its
    pose variant start from, the stem filter repeated over the two frames and halved)."""
    weights, _ = TORCHVISION[name]
    torch.manual_seed(1)
    reference = getattr(torchvision.models, name)().eval()
    asked = []

    def get_state_dict(self, *args, **kwargs):
        asked.append(self)
        return reference.state_dict()

    monkeypatch.setattr(type(weights), "get_state_dict", get_state_dict)
    torch.manual_seed(2)  # a different init, which the loaded weights must replace
    encoder = LightEncoder(name, pretrained=True).eval()
    pose = LightEncoder(name, pretrained=True, num_input_images=2)
    assert asked == [weights, weights]
    image = torch.rand(1, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        deepest = encoder(image)[-1]
        trunk = _trunk(name, reference)
        expected = normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD))
        for _, layer in trunk:
            expected = layer(expected)
    torch.testing.assert_close(deepest, expected)
    stem = next(m for m in reference.modules() if isinstance(m, nn.Conv2d)).weight
    torch.testing.assert_close(pose.features[0][0].weight, torch.cat([stem, stem], dim=1) / 2)


@pytest.mark.parametrize("name", LIGHT)
def test_light_pose_encoder_takes_two_frames_with_independent_scratch_filters(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, num_input_images=2, half_scale_map=False)
    stem = encoder.features[0][0]
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 6 and stem.stride == (2, 2)
    assert not torch.allclose(stem.weight[:, :3], stem.weight[:, 3:])
    fan_out = stem.out_channels * 9
    assert stem.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.2)  # He, fan-out
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the frame order matters: the filters see the frames' difference
        assert not torch.allclose(stem(torch.cat([a, b], 1)), stem(torch.cat([b, a], 1)))


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", LIGHT)
def test_every_light_encoder_with_every_decoder_gives_disparities_at_its_scales(encoder, decoder):
    torch.manual_seed(0)
    net = DepthNet.from_config(_model_config(encoder, decoder)).eval()
    image = torch.rand(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        full = net(image)
        multiscale = net.forward_multiscale(image)
    scales = [0] if decoder == "sql" else [0, 1, 2, 3]
    assert [d.shape for d in multiscale] == [(2, 1, HEIGHT // 2**s, WIDTH // 2**s) for s in scales]
    assert full.shape == (2, 1, HEIGHT, WIDTH)
    torch.testing.assert_close(full, multiscale[0])
    assert torch.isfinite(full).all() and full.min() >= 0 and full.max() <= 1


@pytest.mark.parametrize("encoder", [*LIGHT, "resnet18", "convnext_tiny"])
def test_the_light_decoder_takes_any_encoder(encoder):
    with torch.device("meta"):
        net = DepthNet(encoder, decoder="light")
        disparities = net.forward_multiscale(torch.empty(1, 3, HEIGHT, WIDTH))
    assert [d.shape for d in disparities] == [(1, 1, HEIGHT // 2**s, WIDTH // 2**s) for s in range(4)]


@pytest.mark.parametrize("encoder", LIGHT)
def test_light_pose_net_on_two_stacked_frames(encoder):
    torch.manual_seed(0)
    net = PoseNet(encoder).train()  # as it runs (training only); see _calibrate_batchnorm for eval mode
    a, b = torch.rand(2, 3, HEIGHT, WIDTH), torch.rand(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        axis_angle, translation = net(a, b)
        swapped, _ = net(b, a)
    assert axis_angle.shape == translation.shape == (2, 3)
    assert net.encoder.num_input_images == 2
    assert torch.isfinite(axis_angle).all() and not torch.allclose(axis_angle, swapped)


# --------------------------------------------------------------------------------------------- decoder

_ENCODER_CHANNELS = (16, 24, 40, 112, 960)  # mobilenet_v3_large's maps


def _features(batch: int = 1) -> list[torch.Tensor]:
    return [
        torch.rand(batch, c, HEIGHT // 2**s, WIDTH // 2**s) for s, c in enumerate(_ENCODER_CHANNELS, start=1)
    ]


def test_light_decoder_is_depthwise_separable_and_narrower_than_the_unet():
    decoder = LightDecoder(_ENCODER_CHANNELS)
    convs = [m for name, m in decoder.named_modules() if isinstance(m, nn.Conv2d) and "heads" not in name]
    spatial = [c for c in convs if c.kernel_size != (1, 1)]
    assert spatial and all(
        c.kernel_size == (3, 3) and c.groups == c.in_channels == c.out_channels for c in spatial
    )
    assert all(c.kernel_size == (1, 1) for c in convs if c.groups == 1)
    assert all(light <= unet for light, unet in zip(LIGHT_DECODER_CHANNELS, DECODER_CHANNELS, strict=True))
    assert _count(decoder) < _count(DepthDecoder(_ENCODER_CHANNELS)) / 4


def test_light_decoder_padding_mode_is_used():
    torch.manual_seed(0)
    decoders = {mode: LightDecoder(_ENCODER_CHANNELS, padding_mode=mode) for mode in ("reflection", "zeros")}
    decoders["zeros"].load_state_dict(decoders["reflection"].state_dict())  # same weights, other padding
    expected_mode = {"reflection": "reflect", "zeros": "zeros"}
    for mode, decoder in decoders.items():
        spatial = [m for m in decoder.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert spatial and all(c.padding_mode == expected_mode[mode] for c in spatial)
    features = _features()
    with torch.no_grad():
        reflection, zeros = (decoders[m](features)[0] for m in ("reflection", "zeros"))
    assert (reflection - zeros).abs()[..., 0, :].max() > 1e-4


@pytest.mark.parametrize("decoder", ["unet", "light"])
def test_decoder_channels_set_each_levels_width(decoder):
    widths = [8, 16, 48, 96, 200]
    net = DepthNet.from_config(_model_config("mobilenet_v3_large", decoder, decoder_channels=widths))
    default = DepthNet.from_config(_model_config("mobilenet_v3_large", decoder))
    with torch.no_grad():
        levels = dict(net.decoder.levels(_features()))
        default_levels = dict(default.decoder.levels(_features()))
    assert {level: x.shape[1] for level, x in levels.items()} == dict(enumerate(widths))
    expected_default = LIGHT_DECODER_CHANNELS if decoder == "light" else DECODER_CHANNELS
    assert {level: x.shape[1] for level, x in default_levels.items()} == dict(enumerate(expected_default))
    assert all(levels[level].shape[-2:] == default_levels[level].shape[-2:] for level in levels)


@pytest.mark.parametrize(
    ("decoder", "widths", "message"),
    [
        ("light", [16, 32, 64, 128], "five positive integer widths"),
        ("unet", [16, 32, 0, 128, 256], "five positive integer widths"),
        ("sql", [16, 32, 64, 128, 256], "not sql"),
    ],
)
def test_decoder_channels_are_checked(decoder, widths, message):
    with pytest.raises(ValueError, match=message):
        DepthNet.from_config(_model_config("mobilenet_v3_large", decoder, decoder_channels=widths))


def test_the_sql_decoder_refuses_a_separable_disparity_head():
    with pytest.raises(ValueError, match="model.disparity_head set the unet and light decoders, not sql"):
        DepthNet.from_config(_model_config("resnet18", "sql", disparity_head="separable"))


def test_light_decoder_rejects_bad_settings():
    with pytest.raises(ValueError, match="padding_mode.*'replicate'"):
        LightDecoder(_ENCODER_CHANNELS, padding_mode="replicate")
    with pytest.raises(ValueError, match="scales"):
        LightDecoder(_ENCODER_CHANNELS, scales=(0, 4))
    with pytest.raises(ValueError, match="expected 5 encoder channel counts"):
        LightDecoder(_ENCODER_CHANNELS[1:])
    with pytest.raises(ValueError, match=r"scales \[2\] have no output head"):
        LightDecoder(_ENCODER_CHANNELS, scales=(0, 1))(_features(), scales=(2,))
    with pytest.raises(ValueError, match="initial_disparity must be within"):
        LightDecoder(_ENCODER_CHANNELS, initial_disparity=1.5)


def test_separable_disparity_head_computes_any_3x3_conv_head():
    """The depthwise filters set to a 3x3 conv head's and the 1x1 weights to one: the same output."""
    torch.manual_seed(0)
    conv, separable = disparity_head(16, "reflection", "conv"), disparity_head(16, "reflection", "separable")
    with torch.no_grad():
        separable[0].weight.copy_(conv.weight.transpose(0, 1))  # (1, 16, 3, 3) -> one filter per channel
        nn.init.ones_(separable[1].weight)
        separable[1].bias.copy_(conv.bias)
        features = torch.rand(2, 16, 12, 20)
        torch.testing.assert_close(separable(features), conv(features))
    assert sum(p.numel() for p in separable.parameters()) == 16 * 9 + 16 + 1
    with pytest.raises(ValueError, match="disparity head must be one of"):
        disparity_head(16, "zeros", "dense")


@pytest.mark.parametrize("head", DISPARITY_HEADS)
def test_light_decoder_heads_start_at_the_initial_disparity(head):
    """With the heads' weights zeroed, each head outputs sigmoid(bias): exactly the initial disparity."""
    torch.manual_seed(0)
    decoder = LightDecoder(_ENCODER_CHANNELS, initial_disparity=0.03, head=head)
    for module in decoder.heads.values():
        for conv in [module] if head == "conv" else module:
            nn.init.zeros_(conv.weight)
    with torch.no_grad():
        disparities = decoder(_features(batch=2))
    for disparity in disparities:
        torch.testing.assert_close(disparity, torch.full_like(disparity, 0.03))


def test_the_light_depth_net_predicts_the_initial_depth():
    torch.manual_seed(0)
    config = _model_config("mobilenet_v3_large", initial_depth=10.0, min_depth=0.1, max_depth=100.0)
    net = DepthNet.from_config(config).eval()
    with torch.no_grad():
        disparity = net(torch.rand(1, 3, HEIGHT, WIDTH))
    assert disparity_to_depth(disparity, 0.1, 100.0)[1].median().item() == pytest.approx(10.0, rel=0.3)


# ---------------------------------------------------------------------------------------------- training


def test_every_parameter_gets_a_gradient_with_light_nets():
    """DDP without find_unused_parameters needs every parameter used, in the depth and the pose net."""
    torch.manual_seed(0)
    for encoder in LIGHT:
        config = _model_config(encoder, pose_encoder=encoder)
        model = MonodepthModel(config, [0, -1, 1])
        images = torch.rand(2, 3, 3, 64, 64)
        K = torch.tensor([[40.0, 0.0, 32.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]]).expand(2, 1, 3, 3)
        batch = {"images": images, "images_aug": images, "K": K, "inv_K": torch.linalg.inv(K)}
        outputs = model(batch)
        loss = sum(w.mean() for w in outputs["warped"].values()) + sum(d.mean() for d in outputs["depths"])
        loss.backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None]
        assert missing == [], encoder


def test_the_light_cpu_recipe_trains(tiny_drive, tmp_path):
    tiny = [
        "data.height=64",
        "data.width=128",
        "optim.batch_size=2",
        "optim.max_steps=3",
        "data.val_split=none",
    ]
    config = load_config(CONFIGS / "synthetic_cpu_light.yaml", tiny)
    trainer = Trainer(config, tiny_drive, tmp_path)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 3
    floats = {k: v for k, v in state["model"].items() if v.is_floating_point()}
    assert all(torch.isfinite(v).all() for v in floats.values())
    changed = {k.split(".")[0] for k, v in floats.items() if not torch.equal(v, initial[k])}
    assert changed == {"depth_net", "pose_net"}
    net, loaded = load_depth_net(tmp_path / "checkpoints" / "last.pt")
    assert isinstance(net.encoder, LightEncoder) and isinstance(net.decoder, LightDecoder)
    assert loaded.model.encoder == config.model.encoder
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 128)).shape == (1, 1, 64, 128)


# --------------------------------------------------------------------------------------------- serving


def _calibrate_batchnorm(net: nn.Module, batches: int = 4) -> None:
    """Set every BatchNorm's running statistics to those of ``net`` on random images (train-mode passes).

    Randomly initialised, MobileNetV3 and EfficientNet give vanishing maps in eval mode (1/32 map std 5e-9 and
    6e-14 at 64x96): torchvision initialises their depthwise convs He by fan-out (9 C), which shrinks the
    signal about C/2 times per conv; train-mode BatchNorm undoes that, the untouched running statistics (mean
    0, variance 1) do not. A near-constant disparity would make an export parity check meaningless.
    """
    generator = torch.Generator().manual_seed(3)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the passes
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(torch.rand(4, 3, HEIGHT, WIDTH, generator=generator))
    net.eval()


@pytest.fixture(scope="module", params=[*LIGHT, "synthetic_cpu_light.yaml"])
def exported(request, tmp_path_factory, save_random_checkpoint):
    """A random checkpoint of ``ENCODER + light`` (or of the light recipe's network) at 64x96 (batch
    statistics calibrated, sharpened heads) and its ONNX export (through ``export_onnx``, which itself refuses
    a graph more than 1e-4 off PyTorch)."""
    if request.param in LIGHT:
        model = _model_config(request.param, min_depth=0.5, max_depth=80.0)
    else:
        model = load_config(CONFIGS / request.param).model
    config = TrainConfig(model=model, data=DataConfig(height=HEIGHT, width=WIDTH))
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = save_random_checkpoint(config, folder / "model.pt")
    state = load_checkpoint(checkpoint)
    net, _ = load_depth_net(checkpoint)
    _calibrate_batchnorm(net)
    for head in net.decoder.heads.values():  # spread the disparities over (0, 1), as a trained net's
        output_conv = head if isinstance(head, nn.Conv2d) else head[-1]
        nn.init.normal_(output_conv.weight, std=3.0, generator=torch.Generator().manual_seed(4))
        nn.init.zeros_(output_conv.bias)  # the recipe's starts at 10 m: every disparity near 0.01
    depth_state = {f"depth_net.{k}": v for k, v in net.state_dict().items()}
    save_atomic({**state, "model": {**state["model"], **depth_state}}, checkpoint)
    return model.encoder, checkpoint, export_onnx(checkpoint, folder / "model.onnx")


def test_light_depth_nets_export_with_parity_and_pass_the_tensorrt_check(exported):
    encoder, checkpoint, path = exported
    model = onnx.load(path)
    assert check_tensorrt_ops(model) == []
    ops = {node.op_type for node in model.graph.node}
    if encoder == "mobilenet_v3_large":
        assert {"HardSwish", "HardSigmoid"} <= ops  # in the allow-list: onnx-tensorrt's operators.md
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 5  # the decoder's five 2x upsamplings, all nearest
    for node in resizes:
        assert (
            onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "mode")) == b"nearest"
        )
    depthwise = [
        n
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert len(depthwise) >= 10  # the decoder's ten depthwise 3x3 convs (and the encoder's own)
    net, _ = load_depth_net(checkpoint)
    image = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = net(image).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["disparity"], {"image": image.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    assert expected.std() > 1e-2  # a near-constant output would make the comparison meaningless
