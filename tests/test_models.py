"""Networks: feature taps and normalisation against torchvision, output shapes, padding, pose scaling, and the
training model's output contract (pose ordering, inversion, warps, gradients, autocast, the stereo source)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms.functional import normalize

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import ModelConfig
from ssim_depth_core.geometry import depth_to_disparity, disparity_to_depth, pose_to_matrix, warp
from ssim_depth_core.models import DepthDecoder, DepthNet, MonodepthModel, PoseNet, ResnetEncoder
from ssim_depth_core.models.encoder import IMAGENET_MEAN, IMAGENET_STD, stack_input_conv
from ssim_depth_core.models.pose import POSE_SCALE

_TAPS = {"relu": "0", "layer1": "1", "layer2": "2", "layer3": "3", "layer4": "4"}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_encoder_matches_torchvision_on_normalised_input(name):
    torch.manual_seed(0)
    encoder = ResnetEncoder(name).eval()
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    taps = create_feature_extractor(reference, _TAPS)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = encoder(image)
        expected = taps(normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    assert len(features) == 5
    for level, feature in enumerate(features):
        assert feature.shape == (1, encoder.num_ch_enc[level], 64 // 2 ** (level + 1), 64 // 2 ** (level + 1))
        torch.testing.assert_close(feature, expected[str(level)])


def test_encoder_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"\['resnet18', 'resnet34', 'resnet50'\], got 'resnet101'"):
        ResnetEncoder("resnet101")


def test_stacked_input_conv_is_repeated_weight_over_frame_count():
    torch.manual_seed(3)
    single = torchvision.models.resnet18().conv1
    stacked = stack_input_conv(single, 2)
    assert stacked.in_channels == 6
    torch.testing.assert_close(stacked.weight, torch.cat([single.weight, single.weight], dim=1) / 2)
    # Identical frames -> the same stem response as one frame through the single-image conv.
    frame = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(stacked(torch.cat([frame, frame], dim=1)), single(frame))


def test_scratch_pose_encoder_has_independent_filters_per_frame():
    torch.manual_seed(3)
    weight = ResnetEncoder("resnet18", pretrained=False, num_input_images=2).conv1.weight
    assert weight.shape == (64, 6, 7, 7)
    first, second = weight[:, :3], weight[:, 3:]
    assert not torch.allclose(first, second)
    # He (fan-out) initialisation, as torchvision initialises every ResNet conv: std = sqrt(2 / (64 * 7 * 7)).
    assert weight.std().item() == pytest.approx((2 / (64 * 49)) ** 0.5, rel=0.05)
    # The filters see the frame difference: swapping the frames changes the response.
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        encoder = ResnetEncoder("resnet18", num_input_images=2).conv1
        assert not torch.allclose(encoder(torch.cat([a, b], 1)), encoder(torch.cat([b, a], 1)))


@pytest.mark.parametrize(("batch", "height", "width"), [(2, 192, 640), (1, 128, 416)])
def test_depth_net_shapes_at_every_scale(batch, height, width):
    torch.manual_seed(0)
    net = DepthNet("resnet18", pretrained=False).eval()
    image = torch.rand(batch, 3, height, width)
    with torch.no_grad():
        multiscale = net.forward_multiscale(image)
        full = net(image)
    assert [d.shape for d in multiscale] == [(batch, 1, height // 2**s, width // 2**s) for s in range(4)]
    for disparity in multiscale:
        assert torch.isfinite(disparity).all() and disparity.min() >= 0 and disparity.max() <= 1
    assert isinstance(full, torch.Tensor)
    torch.testing.assert_close(full, multiscale[0])


def test_depth_net_eval_is_deterministic():
    torch.manual_seed(0)
    net = DepthNet("resnet18").eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(net(image), net(image))


@pytest.mark.parametrize("size", [(100, 96), (64, 90)])
def test_depth_net_rejects_sizes_not_multiple_of_32(size):
    net = DepthNet("resnet18")
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}.*multiples of 32"):
        net(torch.rand(1, 3, *size))


def test_depth_net_requires_full_resolution_scale():
    with pytest.raises(ValueError, match="must include 0"):
        DepthNet("resnet18", scales=(1, 2, 3))


def test_decoder_padding_mode_is_used():
    torch.manual_seed(0)
    features = [torch.rand(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate((64, 64, 128, 256, 512), 1)]
    decoders = {
        mode: DepthDecoder((64, 64, 128, 256, 512), padding_mode=mode) for mode in ("reflection", "zeros")
    }
    decoders["zeros"].load_state_dict(decoders["reflection"].state_dict())  # same weights, different padding
    expected_mode = {"reflection": "reflect", "zeros": "zeros"}
    for mode, decoder in decoders.items():
        convs = [m for m in decoder.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(c.padding_mode == expected_mode[mode] for c in convs)
    with torch.no_grad():
        reflection, zeros = (decoders[m](features)[0] for m in ("reflection", "zeros"))
    # Same weights: only the padding differs, so the outputs must differ, most at the image border.
    difference = (reflection - zeros).abs()
    assert difference[..., 0, :].max() > 1e-4 and not torch.allclose(reflection, zeros)


def test_decoder_rejects_bad_settings():
    with pytest.raises(ValueError, match="padding_mode.*'replicate'"):
        DepthDecoder((64, 64, 128, 256, 512), padding_mode="replicate")
    with pytest.raises(ValueError, match="scales"):
        DepthDecoder((64, 64, 128, 256, 512), scales=(0, 4))


def test_pose_net_outputs_scaled_head_mean():
    torch.manual_seed(0)
    net = PoseNet("resnet18").eval()
    raw = {}
    net.head[-1].register_forward_hook(lambda module, args, output: raw.setdefault("out", output))
    frame_a, frame_b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        axis_angle, translation = net(frame_a, frame_b)
    assert axis_angle.shape == (2, 3) and translation.shape == (2, 3)
    assert torch.isfinite(axis_angle).all() and torch.isfinite(translation).all()
    assert raw["out"].shape == (2, 6, 2, 3)  # 1/32 of 64x96
    motion = raw["out"].mean(dim=(2, 3))
    torch.testing.assert_close(axis_angle, POSE_SCALE * motion[:, :3])
    torch.testing.assert_close(translation, POSE_SCALE * motion[:, 3:])
    assert POSE_SCALE == 0.01


def _tiny_batch(frame_count: int = 3, height: int = 64, width: int = 96) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    camera = Intrinsics(fx=70.0, fy=70.0, cx=47.5, cy=31.5, width=width, height=height)
    scaled = [camera.scaled(width // 2**s, height // 2**s) for s in range(4)]
    images = torch.rand(1, frame_count, 3, height, width, generator=generator)
    return {
        "images": images,
        "images_aug": (images * 0.9 + 0.05).contiguous(),
        "K": torch.stack([c.K() for c in scaled])[None],
        "inv_K": torch.stack([c.inv_K() for c in scaled])[None],
    }


@pytest.fixture(scope="module")
def model() -> MonodepthModel:
    torch.manual_seed(0)
    return MonodepthModel(ModelConfig(), frame_ids=[0, -1, 1])


def test_monodepth_outputs_follow_contract(model):
    batch = _tiny_batch()
    config = ModelConfig()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert set(out) == {"disparities", "depths", "transforms", "warped"}
    assert [d.shape for d in out["disparities"]] == [(1, 1, 64 // 2**s, 96 // 2**s) for s in range(4)]
    assert len(out["depths"]) == 4
    for disparity, depth in zip(out["disparities"], out["depths"], strict=True):
        assert depth.shape == (1, 1, 64, 96)
        assert depth.min() >= config.min_depth * (1 - 1e-5) and depth.max() <= config.max_depth * (1 + 1e-5)
        up = nn.functional.interpolate(disparity, size=(64, 96), mode="bilinear", align_corners=False)
        expected = 1 / (1 / config.max_depth + (1 / config.min_depth - 1 / config.max_depth) * up)
        torch.testing.assert_close(depth, expected)
    assert set(out["transforms"]) == {-1, 1}
    assert set(out["warped"]) == {(f, s) for f in (-1, 1) for s in range(4)}
    for transform in out["transforms"].values():
        assert transform.shape == (1, 4, 4)
        torch.testing.assert_close(transform[:, 3], torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
        rotation = transform[:, :3, :3]
        torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3)[None])
    for image in out["warped"].values():
        assert image.shape == (1, 3, 64, 96) and torch.isfinite(image).all()


def test_monodepth_poses_use_temporal_order_and_warp_clean_sources(model):
    batch = _tiny_batch()
    model.eval()
    with torch.no_grad():
        out = model(batch)
        aug = batch["images_aug"]
        # Earlier source: the net sees (source, target) and its motion is inverted.
        aa, t = model.pose_net(aug[:, 1], aug[:, 0])
        torch.testing.assert_close(out["transforms"][-1], torch.linalg.inv(pose_to_matrix(aa, t)))
        # Later source: (target, source), used as is.
        aa, t = model.pose_net(aug[:, 0], aug[:, 2])
        torch.testing.assert_close(out["transforms"][1], pose_to_matrix(aa, t))
        K, inv_K = batch["K"][:, 0], batch["inv_K"][:, 0]
        for (frame_id, scale_index), image in out["warped"].items():
            index = [0, -1, 1].index(frame_id)
            expected = warp(
                batch["images"][:, index], out["depths"][scale_index], out["transforms"][frame_id], K, inv_K
            )
            torch.testing.assert_close(image, expected)


def test_source_transforms_is_the_motion_forward_warps_with():
    class StandingStill(MonodepthModel):
        def source_transforms(self, batch):
            identity = torch.eye(4).expand(batch["images"].shape[0], 4, 4)
            return {frame_id: identity for frame_id in self.frame_ids[1:]}

    model = StandingStill(ModelConfig(), frame_ids=[0, -1, 1]).eval()
    batch = _tiny_batch()
    with torch.no_grad():
        out = model(batch)
    # No motion: every pixel samples itself, whatever the depth (float32 back-projection: ~1e-3 px off).
    for (frame_id, _), image in out["warped"].items():
        expected = batch["images"][:, [0, -1, 1].index(frame_id)]
        torch.testing.assert_close(image, expected, atol=1e-4, rtol=0)


def test_pose_downsample_feeds_area_averaged_frames():
    torch.manual_seed(0)
    model = MonodepthModel(ModelConfig(pose_downsample=2), frame_ids=[0, -1, 1]).eval()
    batch = _tiny_batch()
    with torch.no_grad():
        out = model(batch)
        aug = batch["images_aug"]
        # 2x2 block means, computed here by reshaping rather than pooling
        half = aug.unflatten(-1, (48, 2)).unflatten(-3, (32, 2)).mean(dim=(-1, -3))
        aa, t = model.pose_net(half[:, 0], half[:, 2])
        torch.testing.assert_close(out["transforms"][1], pose_to_matrix(aa, t))
    with pytest.raises(ValueError, match="pose_downsample"):
        MonodepthModel(ModelConfig(pose_downsample=0), frame_ids=[0, -1, 1])


def test_monodepth_gradients_reach_every_parameter(model):
    batch = _tiny_batch()
    model.train()
    model.zero_grad()
    out = model(batch)
    target = batch["images"][:, 0]
    loss = sum((image - target).abs().mean() for image in out["warped"].values())
    loss.backward()
    for net in (model.depth_net, model.pose_net):
        grads = {name: p.grad for name, p in net.named_parameters()}
        assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
            n for n, g in grads.items() if g is None
        ]
        assert sum(g.abs().sum() for g in grads.values()) > 0


def test_monodepth_geometry_stays_float32_under_autocast(model):
    batch = _tiny_batch()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    K, inv_K = batch["K"][:, 0], batch["inv_K"][:, 0]
    for (frame_id, scale_index), image in out["warped"].items():
        assert image.dtype == torch.float32
        transform, depth = out["transforms"][frame_id], out["depths"][scale_index]
        assert transform.dtype == depth.dtype == torch.float32
        index = [0, -1, 1].index(frame_id)
        expected = warp(batch["images"][:, index], depth, transform, K, inv_K)  # outside autocast: float32
        torch.testing.assert_close(image, expected)


def test_monodepth_rejects_bad_frames(model):
    with pytest.raises(ValueError, match="frame_ids"):
        MonodepthModel(ModelConfig(), frame_ids=[-1, 0, 1])
    with pytest.raises(ValueError, match=r"\(B, 3, 3, H, W\).*\(1, 2, 3, 64, 96\)"):
        model(_tiny_batch(frame_count=2))


def _stereo_rig(batch: dict[str, torch.Tensor], baseline: float) -> dict[str, torch.Tensor]:
    """``batch`` with a rectified rig whose partner sits ``baseline`` metres to the right (x > 0)."""
    stereo_T = torch.eye(4).expand(batch["images"].shape[0], 4, 4).clone()
    stereo_T[:, 0, 3] = -baseline
    return {**batch, "stereo_T": stereo_T}


def test_stereo_is_one_more_source_warped_with_the_known_rig():
    torch.manual_seed(0)
    model = MonodepthModel(ModelConfig(scales=[0, 1]), frame_ids=[0, -1, 1], stereo=True).eval()
    batch = _stereo_rig(_tiny_batch(frame_count=4), baseline=0.54)
    with torch.no_grad():
        out = model(batch)
        assert set(out["transforms"]) == {-1, 1, "s"}
        assert set(out["warped"]) == {(f, s) for f in (-1, 1, "s") for s in range(2)}
        assert torch.equal(out["transforms"]["s"], batch["stereo_T"])
        # The pose net sees the temporal frames only, as without stereo.
        aug = batch["images_aug"]
        torch.testing.assert_close(
            out["transforms"][1], pose_to_matrix(*model.pose_net(aug[:, 0], aug[:, 2]))
        )
        K, inv_K = batch["K"][:, 0], batch["inv_K"][:, 0]
        for scale_index in range(2):
            expected = warp(batch["images"][:, 3], out["depths"][scale_index], batch["stereo_T"], K, inv_K)
            torch.testing.assert_close(out["warped"][("s", scale_index)], expected)
    with pytest.raises(
        ValueError, match=r"\(B, 4, 3, H, W\) for frame_ids \[0, -1, 1\] \+ the stereo partner"
    ):
        model(_tiny_batch(frame_count=3))
    with pytest.raises(KeyError, match="stereo_T"):
        model(_tiny_batch(frame_count=4))


class _FlatDepth(nn.Module):
    """A depth net that sees a fronto-parallel wall: the same sigmoid disparity everywhere."""

    def __init__(self, disparity: float) -> None:
        super().__init__()
        self.disparity = disparity

    def forward_multiscale(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [torch.full((image.shape[0], 1, *image.shape[-2:]), self.disparity)]


@pytest.mark.parametrize("baseline", [0.5, -0.5])
def test_stereo_only_warps_the_partner_by_the_disparity_of_the_baseline(baseline):
    """A wall at Z = 7 m seen by fx = 70 px cameras 0.5 m apart: the partner sees every point fx b / Z = 5 px
    further left (right for a partner on the left, as after a flip), so warping it back gives the target."""
    model = MonodepthModel(ModelConfig(scales=[0]), frame_ids=[0], stereo=True).eval()
    assert model.pose_net is None and not any(k.startswith("pose_net.") for k in model.state_dict())
    config = ModelConfig()
    model.depth_net = _FlatDepth(
        depth_to_disparity(torch.tensor(7.0), config.min_depth, config.max_depth).item()
    )
    batch = _tiny_batch(frame_count=2)
    shift = 5 if baseline > 0 else -5
    partner = batch["images"][:, 0].roll(-shift, dims=-1)  # partner(u) = target(u + shift)
    batch["images"] = torch.stack([batch["images"][:, 0], partner], dim=1)
    with torch.no_grad():
        out = model(_stereo_rig(batch, baseline))
    assert set(out["transforms"]) == {"s"} and set(out["warped"]) == {("s", 0)}
    inside = slice(5, -5)  # columns whose source pixel lies in the image (and not in the rolled-over band)
    torch.testing.assert_close(
        out["warped"][("s", 0)][..., inside], batch["images"][:, 0][..., inside], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize(("initial_depth", "expected"), [(10.0, 10.0), (0.0, 2 * 0.1)])
def test_untrained_net_predicts_the_initial_depth(initial_depth, expected):
    torch.manual_seed(0)
    config = ModelConfig(initial_depth=initial_depth, min_depth=0.1, max_depth=100.0)
    net = MonodepthModel(config, [0, -1, 1]).depth_net.eval()
    with torch.no_grad():
        disparities = net.forward_multiscale(torch.rand(2, 3, 64, 96))
    for disparity in disparities:  # every scale's head; 0: the sigmoid's midpoint, 1 / (0.5 / 0.1) m
        depth = disparity_to_depth(disparity, 0.1, 100.0)[1]
        assert depth.median().item() == pytest.approx(expected, rel=0.3)


@pytest.mark.parametrize("initial_depth", [0.05, 100.0, -1.0])
def test_initial_depth_outside_the_depth_range_is_refused(initial_depth):
    config = ModelConfig(initial_depth=initial_depth, min_depth=0.1, max_depth=100.0)
    with pytest.raises(ValueError, match="model.initial_depth must lie strictly between"):
        MonodepthModel(config, [0, -1, 1])
