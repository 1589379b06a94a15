"""Seed 002 terms (losses/bidirectional.py) against hand-computed values on small tensors, the model's
optional source-depth pass, and a two-step training smoke run with every term on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssim_depth_core.camera import Intrinsics
from ssim_depth_core.config import LossConfig, ModelConfig, load_config
from ssim_depth_core.geometry import pose_to_matrix
from ssim_depth_core.losses.bidirectional import (
    camera_flow,
    depth_difference,
    feature_perception_loss,
    in_view,
    masked_mean,
    occlusion_mask,
    occlusion_masks,
    project_into,
    rigid_inverse,
    sample,
    weighted_min_reprojection,
)
from ssim_depth_core.losses.objective import Objective, required_outputs
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error
from ssim_depth_core.losses.ssim import SSIMLoss
from ssim_depth_core.models.monodepth import MonodepthModel
from ssim_depth_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
DTYPE = torch.float64


def _K(fx: float, fy: float, cx: float, cy: float, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=DTYPE)
    return K.expand(batch, 3, 3), torch.linalg.inv(K).expand(batch, 3, 3)


def _translation(x: float = 0.0, y: float = 0.0, z: float = 0.0, batch: int = 1) -> torch.Tensor:
    transform = torch.eye(4, dtype=DTYPE).repeat(batch, 1, 1)
    transform[:, :3, 3] = torch.tensor([x, y, z], dtype=DTYPE)
    return transform


# A 2x3 image with fx = 2 and depth 2: a 1 m sideways translation moves every pixel by exactly fx * 1 / 2 = 1.
K23, INV_K23 = _K(2.0, 2.0, 1.0, 0.5)


def test_rigid_inverse_undoes_the_transform():
    transform = pose_to_matrix(
        torch.tensor([[0.1, -0.2, 0.3]], dtype=DTYPE), torch.tensor([[1.0, 2.0, -0.5]])
    )
    torch.testing.assert_close(rigid_inverse(transform) @ transform, torch.eye(4, dtype=DTYPE)[None])
    torch.testing.assert_close(rigid_inverse(transform), torch.linalg.inv(transform))


def test_identity_pose_gives_zero_flow_and_the_same_depth():
    depth = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]], dtype=DTYPE)  # 1x1x2x3
    grid, z = project_into(depth, _translation(), K23, INV_K23)
    torch.testing.assert_close(camera_flow(grid), torch.zeros(1, 2, 2, 3, dtype=DTYPE))
    torch.testing.assert_close(z, depth)
    image = torch.arange(6, dtype=DTYPE).view(1, 1, 2, 3)
    torch.testing.assert_close(sample(image, grid), image)


def test_sideways_translation_shifts_by_one_pixel_in_both_directions():
    depth = torch.full((1, 1, 2, 3), 2.0, dtype=DTYPE)
    transform = _translation(x=1.0)  # target -> source: a target pixel u lands at u + 1 in the source
    grid_ts, z_ts = project_into(depth, transform, K23, INV_K23)
    flow = camera_flow(grid_ts)
    torch.testing.assert_close(flow[:, 0], torch.ones(1, 2, 3, dtype=DTYPE))
    torch.testing.assert_close(flow[:, 1], torch.zeros(1, 2, 3, dtype=DTYPE))
    torch.testing.assert_close(z_ts, depth)
    # The last column lands outside the source image.
    assert in_view(grid_ts, z_ts).int().flatten().tolist() == [1, 1, 0, 1, 1, 0]
    # Backward: the target warped into the source's view with the source's depth and the inverse pose; source
    # pixel q shows target pixel q - 1 (the border repeats column 0).
    target = torch.tensor([[[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]], dtype=DTYPE)
    grid_st, _ = project_into(depth, rigid_inverse(transform), K23, INV_K23)
    expected = torch.tensor([[[[0.0, 0.0, 1.0], [3.0, 3.0, 4.0]]]], dtype=DTYPE)
    torch.testing.assert_close(sample(target, grid_st), expected)


def test_occlusion_check_by_hand():
    forward = torch.tensor([1.0, 0.0], dtype=DTYPE).view(1, 2, 1, 1)
    consistent = -forward
    nearly = torch.tensor([-0.5, 0.0], dtype=DTYPE).view(1, 2, 1, 1)
    inconsistent = forward.clone()
    # |u_f + u_b|^2 = 0 < 0.01 * 2 + 0.5
    assert occlusion_mask(forward, consistent).item() == 0.0
    # 0.25 < 0.01 * (1 + 0.25) + 0.5 = 0.5125
    assert occlusion_mask(forward, nearly).item() == 0.0
    # 4 >= 0.01 * 2 + 0.5: the flow back does not return the pixel home
    assert occlusion_mask(forward, inconsistent).item() == 1.0
    # the bound itself counts as occluded: 4 >= 0 * 2 + 4
    assert occlusion_mask(forward, inconsistent, alpha1=0.0, alpha2=4.0).item() == 1.0
    assert occlusion_mask(forward, inconsistent, alpha1=0.0, alpha2=4.001).item() == 0.0


def test_occlusion_masks_of_a_consistent_and_an_inconsistent_depth_pair():
    transform = _translation(x=1.0)
    depth_t = torch.full((1, 1, 2, 3), 2.0, dtype=DTYPE)
    grid_ts, _ = project_into(depth_t, transform, K23, INV_K23)
    # Source depth 2: its pixels move back by 1 pixel, u_f + u_b = 0 everywhere.
    grid_st, _ = project_into(depth_t, rigid_inverse(transform), K23, INV_K23)
    occluded_t, occluded_s = occlusion_masks(grid_ts, grid_st, 0.01, 0.5)
    assert occluded_t.sum() == 0 and occluded_s.sum() == 0
    # Source depth 1: its pixels move back by 2 pixels, |1 - 2|^2 = 1 >= 0.01 * (1 + 4) + 0.5.
    grid_st, _ = project_into(torch.ones_like(depth_t), rigid_inverse(transform), K23, INV_K23)
    occluded_t, occluded_s = occlusion_masks(grid_ts, grid_st, 0.01, 0.5)
    assert occluded_t.min() == 1 and occluded_s.min() == 1


def test_depth_difference_and_masked_mean_by_hand():
    a = torch.tensor([3.0, 2.0, 1.0], dtype=DTYPE).view(1, 1, 1, 3)
    b = torch.tensor([1.0, 2.0, 4.0], dtype=DTYPE).view(1, 1, 1, 3)
    torch.testing.assert_close(depth_difference(a, b).flatten(), torch.tensor([0.5, 0.0, 0.6], dtype=DTYPE))
    mask = torch.tensor([True, False, True]).view(1, 1, 1, 3)
    assert masked_mean(depth_difference(a, b), mask).item() == pytest.approx(0.55)
    assert masked_mean(a, torch.zeros_like(mask)).item() == 0.0


def test_weighted_min_reprojection_by_hand():
    errors = torch.tensor([[0.3, 0.1, 0.5], [0.2, 0.4, 0.6]]).view(1, 2, 1, 3)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]]).view(1, 2, 1, 3)
    assert weighted_min_reprojection(errors, None) == min_reprojection_loss(errors)[0]
    # sources chosen by the raw errors (1, 0, 0), then weighted: 0.2 * 0.5, 0.1 * 0, 0.5 * 1
    assert weighted_min_reprojection(errors, weights).item() == pytest.approx((0.1 + 0.0 + 0.5) / 3)
    mean = weighted_min_reprojection(errors, weights, min_reprojection=False)
    assert mean.item() == pytest.approx((0.2 + 0.2 + 0.25) / 3)


def test_feature_perception_of_shifted_ramps_by_hand():
    depth = torch.full((1, 1, 2, 3), 2.0, dtype=DTYPE)
    columns = torch.arange(3, dtype=DTYPE).expand(1, 1, 2, 3)
    features_t, features_s = columns, columns - 1  # the source sees the target's pattern one pixel on
    loss = feature_perception_loss(features_t, features_s, depth, depth, _translation(x=1.0), K23, INV_K23)
    # Forward: f_t(u) - f_s(min(u + 1, 2)) = 0, 0, 1; backward: f_s(q) - f_t(max(q - 1, 0)) = -1, 0, 0.
    assert loss.item() == pytest.approx(1 / 3 + 1 / 3)
    zero = feature_perception_loss(features_t, features_t, depth, depth, _translation(), K23, INV_K23)
    assert zero.item() == pytest.approx(0.0, abs=1e-6)  # project_to_grid's eps: u = x / (z + 1e-7)


def _objective_inputs(
    depth_t: float, depth_s: float, transform: torch.Tensor, height: int = 8, width: int = 12
):
    """Batch and model outputs for frame_ids [0, 1], one scale, constant depths and a given pose."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, height, width, generator=generator)
    camera = Intrinsics(fx=10.0, fy=10.0, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)
    scaled = [camera.scaled(width // 2**s, height // 2**s) for s in range(4)]
    batch = {
        "images": images,
        "K": torch.stack([c.K() for c in scaled])[None].expand(2, 4, 3, 3).float(),
        "inv_K": torch.stack([c.inv_K() for c in scaled])[None].expand(2, 4, 3, 3).float(),
    }
    depth = torch.full((2, 1, height, width), depth_t)
    source_depth = torch.full((2, 1, height, width), depth_s)
    warped = (images[:, 0] + 0.2 * torch.rand(images[:, 0].shape, generator=generator)).clamp(0, 1)
    outputs = {
        "disparities": [1 / depth],
        "depths": [depth],
        "transforms": {1: transform.float().expand(2, 4, 4)},
        "warped": {(1, 0): warped},
        "source_depths": {1: [source_depth]},
    }
    return batch, outputs


def test_depth_structure_consistency_of_a_forward_translation():
    # Target points at depth 2 are at depth 2.5 in a source 0.5 m behind; the source predicts 3 there:
    # |2.5 - 3| / 5.5. The source's points (depth 3) are at 2.5 in the target, which predicts 2: 0.5 / 4.5.
    batch, outputs = _objective_inputs(2.0, 3.0, _translation(z=0.5))
    config = LossConfig(weights={"dsc_bi": 1.0})
    result = Objective(config, frame_ids=[0, 1], scales=[0])(batch, outputs)
    assert result.terms["dsc_bi"].item() == pytest.approx(1 / 11 + 1 / 9, rel=1e-5)
    consistent = _objective_inputs(2.0, 2.5, _translation(z=0.5))
    assert Objective(config, frame_ids=[0, 1], scales=[0])(*consistent).terms["dsc_bi"].item() < 1e-6


def test_bidirectional_photometric_is_the_photometric_term_plus_the_backward_direction():
    batch, outputs = _objective_inputs(2.0, 2.0, _translation())  # identity pose: the target warps to itself
    config = LossConfig(
        ssim_form="conventional", automask=False, weights={"photometric": 1, "photometric_bi": 1}
    )
    result = Objective(config, frame_ids=[0, 1], scales=[0])(batch, outputs)
    images = batch["images"]
    backward = reprojection_error(images[:, 0], images[:, 1], SSIMLoss("conventional")).mean()
    torch.testing.assert_close(result.terms["photometric_bi"], result.terms["photometric"] + backward)


def test_occlusion_and_adaptive_weights_on_the_bidirectional_photometric_term():
    batch, outputs = _objective_inputs(2.0, 2.0, _translation())
    plain = LossConfig(automask=False, weights={"photometric_bi": 1})
    reference = Objective(plain, frame_ids=[0, 1], scales=[0])(batch, outputs).terms["photometric_bi"]
    # Identity pose: zero flows, nothing occluded, the mask changes nothing.
    masked = LossConfig(automask=False, occlusion_mask=True, weights={"photometric_bi": 1})
    result = Objective(masked, frame_ids=[0, 1], scales=[0])(batch, outputs)
    torch.testing.assert_close(result.terms["photometric_bi"], reference)
    assert result.images["occlusion"].sum() == 0
    # Depths 2 and 1 under the identity pose: depth_diff 1/3 in both directions, every error weighted 2/3.
    batch, outputs = _objective_inputs(2.0, 1.0, _translation())
    adaptive = LossConfig(automask=False, adaptive_weights=True, weights={"photometric_bi": 1})
    result = Objective(adaptive, frame_ids=[0, 1], scales=[0])(batch, outputs)
    torch.testing.assert_close(result.terms["photometric_bi"], reference * 2 / 3)
    torch.testing.assert_close(result.images["adaptive_weight"], torch.full((2, 1, 8, 12), 2 / 3))
    # lambda_occ = 1 with every pixel occluded drops the whole term (1 m sideways, inconsistent depths).
    batch, outputs = _objective_inputs(2.0, 0.5, _translation(x=1.0))
    occluding = LossConfig(automask=False, occlusion_mask=True, weights={"photometric_bi": 1})
    result = Objective(occluding, frame_ids=[0, 1], scales=[0])(batch, outputs)
    assert result.images["occlusion"].min() == 1 and result.terms["photometric_bi"].item() == 0.0


def test_options_and_levels_are_checked_at_construction():
    with pytest.raises(ValueError, match="photometric_bi"):
        Objective(LossConfig(occlusion_mask=True), frame_ids=[0, -1, 1], scales=[0])
    with pytest.raises(ValueError, match="occlusion_lambda"):
        Objective(LossConfig(occlusion_lambda=2.0), frame_ids=[0, -1, 1], scales=[0])
    with pytest.raises(ValueError, match="feature_levels"):
        Objective(LossConfig(feature_levels=[3], weights={"feat_bi": 1}), frame_ids=[0, -1, 1], scales=[0])


def test_required_outputs_follow_the_weighted_terms():
    assert required_outputs(LossConfig()) == ()
    assert required_outputs(LossConfig(weights={"photometric_bi": 0, "photometric": 1})) == ()
    assert required_outputs(LossConfig(weights={"dsc_bi": 0.1})) == ("source_depths",)
    assert required_outputs(LossConfig(weights={"feat_bi": 0.1})) == ("features", "source_depths")


def test_missing_source_depths_names_the_model_option():
    batch, outputs = _objective_inputs(2.0, 2.0, _translation())
    del outputs["source_depths"]
    with pytest.raises(KeyError, match="extra_outputs"):
        Objective(LossConfig(weights={"dsc_bi": 1}), frame_ids=[0, 1], scales=[0])(batch, outputs)


def _model_batch(height: int = 64, width: int = 96) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    camera = Intrinsics(fx=70.0, fy=70.0, cx=47.5, cy=31.5, width=width, height=height)
    scaled = [camera.scaled(width // 2**s, height // 2**s) for s in range(4)]
    images = torch.rand(2, 3, 3, height, width, generator=generator)
    return {
        "images": images,
        "images_aug": images * 0.9 + 0.05,
        "K": torch.stack([c.K() for c in scaled])[None].expand(2, 4, 3, 3),
        "inv_K": torch.stack([c.inv_K() for c in scaled])[None].expand(2, 4, 3, 3),
    }


def _encoder_batch_sizes(model: MonodepthModel, batch: dict[str, torch.Tensor]) -> tuple[list[int], dict]:
    sizes: list[int] = []
    handle = model.depth_net.encoder.register_forward_hook(
        lambda m, args, out: sizes.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            outputs = model(batch)
    finally:
        handle.remove()
    return sizes, outputs


def test_the_depth_net_runs_on_the_sources_only_when_asked():
    torch.manual_seed(0)
    config = ModelConfig(scales=[0, 1])
    plain = MonodepthModel(config, frame_ids=[0, -1, 1]).eval()
    batch = _model_batch()
    sizes, outputs = _encoder_batch_sizes(plain, batch)
    assert sizes == [2]  # the target only
    assert "source_depths" not in outputs and "features" not in outputs

    extra = MonodepthModel(config, frame_ids=[0, -1, 1], extra_outputs=("source_depths", "features")).eval()
    extra.load_state_dict(plain.state_dict())
    sizes, out = _encoder_batch_sizes(extra, batch)
    assert sizes == [6]  # target and both sources in one pass
    assert set(out["source_depths"]) == {-1, 1} and set(out["features"]) == {0, -1, 1}
    assert [d.shape for d in out["source_depths"][1]] == [(2, 1, 64, 96)] * 2
    assert [f.shape[-2:] for f in out["features"][0]] == [(64 // 2**k, 96 // 2**k) for k in range(1, 6)]
    # eval mode (no batch statistics): the target's outputs do not change, each source gets its own depth
    for key in ("disparities", "depths"):
        for a, b in zip(outputs[key], out[key], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        alone = plain(dict(batch, images_aug=batch["images_aug"][:, [2, 0, 1]]))["depths"][0]
    torch.testing.assert_close(out["source_depths"][1][0], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="extra_outputs"):
        MonodepthModel(config, frame_ids=[0, -1, 1], extra_outputs=("flows",))


def test_two_training_steps_with_every_seed_002_term(tiny_drive, tmp_path):
    overrides = [
        "data.height=64",
        "data.width=128",
        "data.num_workers=0",
        "data.val_split=none",
        "optim.batch_size=2",
        "optim.max_steps=2",
        "log_every=1",
        "preview_every=2",
        "loss.automask_warmup_steps=1",
        "loss.weights.photometric=0",
        "loss.weights.photometric_bi=1",
        "loss.weights.dsc_bi=0.1",
        "loss.weights.feat_bi=0.05",
        "loss.occlusion_mask=true",
        "loss.adaptive_weights=true",
        "loss.feature_levels=[0, 1]",
    ]
    trainer = Trainer(load_config(CONFIG, overrides), tiny_drive, tmp_path)
    assert trainer.model.extra_outputs == {"features", "source_depths"}
    trainer.fit()
    assert trainer.step == 2
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss/photometric_bi", "loss/dsc_bi", "loss/feat_bi"} <= set(events.Tags()["scalars"])
    assert {"occlusion", "adaptive_weight"} <= set(events.Tags()["images"])
    for tag in ("loss/total", "loss/photometric_bi", "loss/dsc_bi", "loss/feat_bi"):
        assert all(math.isfinite(event.value) for event in events.Scalars(tag))


def test_the_stereo_partner_gets_its_own_depth_too():
    torch.manual_seed(0)
    model = MonodepthModel(
        ModelConfig(scales=[0]), frame_ids=[0], stereo=True, extra_outputs=("source_depths",)
    )
    batch = _model_batch()
    batch = dict(batch, images=batch["images"][:, :2], images_aug=batch["images_aug"][:, :2])
    batch["stereo_T"] = _translation(x=-0.5, batch=2).float()
    with torch.no_grad():
        outputs = model.eval()(batch)
    assert set(outputs["source_depths"]) == {"s"}
    objective = Objective(LossConfig(weights={"photometric_bi": 1, "dsc_bi": 1}), [0], [0], stereo=True)
    result = objective(batch, outputs)
    assert all(math.isfinite(value.item()) for value in result.terms.values())
