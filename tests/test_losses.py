"""Photometric, smoothness, velocity and objective terms against hand-computed values."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from ssim_depth_core.config import LossConfig
from ssim_depth_core.geometry import pose_to_matrix
from ssim_depth_core.losses import objective as objective_module
from ssim_depth_core.losses.objective import Objective
from ssim_depth_core.losses.photometric import min_reprojection_loss, reprojection_error
from ssim_depth_core.losses.smoothness import edge_aware_smoothness
from ssim_depth_core.losses.ssim import SSIMLoss
from ssim_depth_core.losses.velocity import velocity_loss

C1, C2 = 0.01**2, 0.03**2


def test_reprojection_error_of_flat_images_by_hand():
    # Flat images: every window has variance 0, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1).
    target = torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 4, 5).clone()
    pred = torch.tensor([0.6, 0.2, 0.5], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 4, 5).clone()
    ssim_terms = []
    for a, b in ((0.6, 0.5), (0.2, 0.2), (0.5, 0.8)):
        ssim_terms.append((1 - (2 * a * b + C1) / (a * a + b * b + C1)) / 2)
    l1 = (0.1 + 0.0 + 0.3) / 3
    expected = 0.85 * sum(ssim_terms) / 3 + 0.15 * l1
    error = reprojection_error(pred, target, SSIMLoss("conventional"), alpha=0.85)
    assert error.shape == (1, 1, 4, 5)
    torch.testing.assert_close(
        error, torch.full((1, 1, 4, 5), expected, dtype=torch.float64), rtol=1e-10, atol=0
    )
    zero = reprojection_error(target, target, SSIMLoss("additive"))
    assert zero.abs().max() < 1e-6


def test_min_reprojection_picks_the_smaller_error_per_pixel():
    warped = torch.tensor([[0.3, 0.1, 0.5], [0.2, 0.4, 0.6]]).view(1, 2, 1, 3)
    loss, mask = min_reprojection_loss(warped)
    assert loss.item() == pytest.approx((0.2 + 0.1 + 0.5) / 3)
    assert torch.equal(mask, torch.ones(1, 1, 1, 3))
    mean_loss, _ = min_reprojection_loss(warped, min_reprojection=False)
    assert mean_loss.item() == pytest.approx((0.25 + 0.25 + 0.55) / 3)


def test_automask_drops_pixels_the_identity_explains_better():
    warped = torch.tensor([[0.3, 0.1, 0.5], [0.2, 0.4, 0.6]]).view(1, 2, 1, 3)
    identity = torch.tensor([[0.5, 0.05, 0.9], [0.7, 0.2, 0.9]]).view(1, 2, 1, 3)
    loss, mask = min_reprojection_loss(warped, identity, generator=torch.Generator().manual_seed(0))
    # warped minimum 0.2, 0.1, 0.5 vs identity minimum 0.5, 0.05, 0.9: the middle pixel is static.
    assert mask.flatten().tolist() == [1.0, 0.0, 1.0]
    assert loss.item() == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    # Mean mode compares mean warped errors (0.25, 0.25, 0.55) with mean identity errors (0.6, 0.125, 0.9).
    _, mean_mask = min_reprojection_loss(warped, identity, min_reprojection=False)
    assert mean_mask.flatten().tolist() == [1.0, 0.0, 1.0]


def test_tie_breaking_noise_is_deterministic_per_seed():
    errors = torch.full((2, 1, 50, 100), 0.3)  # one source, every pixel an exact tie with its identity

    def run(seed):
        return min_reprojection_loss(errors, errors.clone(), generator=torch.Generator().manual_seed(seed))

    loss_a, mask_a = run(7)
    loss_b, mask_b = run(7)
    _, mask_c = run(8)
    assert torch.equal(mask_a, mask_b) and loss_a.item() == loss_b.item()
    assert not torch.equal(mask_a, mask_c)
    # Ties are broken at random: about half of the 10000 pixels are kept.
    assert 0.45 < mask_a.mean().item() < 0.55


def test_smoothness_of_constant_disparity_is_zero():
    image = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    assert edge_aware_smoothness(torch.full((2, 1, 6, 7), 0.4), image).item() == 0.0


def test_smoothness_by_hand_and_edges_reduce_it():
    disparity = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]]).view(1, 1, 2, 3)
    mean = 10 / 6
    flat = torch.zeros(1, 3, 2, 3)
    # x differences 1, 2 | 0, 0; y differences 0, 1, 3; all divided by the mean disparity.
    expected_flat = ((1 + 2 + 0 + 0) / 4 + (0 + 1 + 3) / 3) / mean
    assert edge_aware_smoothness(disparity, flat).item() == pytest.approx(expected_flat, rel=1e-6)
    # A vertical image edge between columns 1 and 2 (0 -> 1 in every channel) weights that x step by e^-1.
    edge = torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 2, 3)
    expected_edge = ((1 + 2 * math.exp(-1) + 0 + 0) / 4 + (0 + 1 + 3) / 3) / mean
    assert edge_aware_smoothness(disparity, edge).item() == pytest.approx(expected_edge, rel=1e-6)
    assert expected_edge < expected_flat


def _batch_and_outputs(
    scales=(0, 1, 2, 3), frame_ids=(0, -1, 1), height=32, width=64, warped_offset=0.0, stereo=False
):
    """Random images (the stereo partner last) and warped sources near the target ("s": the partner)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, len(frame_ids) + stereo, 3, height, width, generator=generator)
    target = images[:, 0]
    sources = [*frame_ids[1:], "s"] if stereo else frame_ids[1:]
    outputs = {
        "disparities": [
            torch.rand(2, 1, height // 2**s, width // 2**s, generator=generator, requires_grad=True)
            for s in scales
        ],
        "warped": {
            (fid, i): (target + warped_offset * torch.rand(target.shape, generator=generator))
            .clamp(0, 1)
            .requires_grad_()
            for fid in sources
            for i in range(len(scales))
        },
    }
    return {"images": images}, outputs


def test_objective_is_zero_photometric_when_warping_is_perfect():
    config = LossConfig()
    batch, outputs = _batch_and_outputs()
    objective = Objective(config, frame_ids=[0, -1, 1], scales=[0, 1, 2, 3], seed=0)
    result = objective(batch, outputs)
    assert result.terms["photometric"].item() < 1e-6
    assert torch.equal(result.images["automask"], torch.ones(2, 1, 32, 64))
    target = batch["images"][:, 0]
    expected_smooth = (
        sum(
            edge_aware_smoothness(d, F.interpolate(target, size=d.shape[-2:], mode="area")) / 2**s
            for s, d in zip((0, 1, 2, 3), outputs["disparities"], strict=True)
        )
        / 4
    )
    torch.testing.assert_close(result.terms["smoothness"], expected_smooth.detach())
    torch.testing.assert_close(result.total, result.terms["photometric"] + 1e-3 * result.terms["smoothness"])
    result.total.backward()
    assert all(torch.isfinite(d.grad).all() for d in outputs["disparities"])


def test_objective_matches_the_photometric_definition():
    config = LossConfig(ssim_form="conventional", automask=False)
    batch, outputs = _batch_and_outputs(scales=(0, 1), warped_offset=0.2)
    result = Objective(config, frame_ids=[0, -1, 1], scales=[0, 1])(batch, outputs)
    target = batch["images"][:, 0]
    ssim = SSIMLoss("conventional")
    per_scale = [
        torch.minimum(
            reprojection_error(outputs["warped"][(-1, i)], target, ssim),
            reprojection_error(outputs["warped"][(1, i)], target, ssim),
        ).mean()
        for i in range(2)
    ]
    torch.testing.assert_close(result.terms["photometric"], (sum(per_scale) / 2).detach())
    assert "automask" not in result.images


def test_automask_starts_after_its_warmup_steps():
    batch, outputs = _batch_and_outputs(scales=(0,), warped_offset=0.2)
    images = batch["images"].clone()
    images[:, 1, :, :, :32] = images[:, 0, :, :, :32]  # source -1 is the target itself on the left half
    batch = {"images": images}
    masked = Objective(LossConfig(), [0, -1, 1], [0], seed=2)(batch, outputs)
    unmasked = Objective(LossConfig(automask=False), [0, -1, 1], [0])(batch, outputs)
    assert masked.images["automask"][..., :30].max() == 0 and masked.images["automask"][..., 34:].min() == 1
    warmup = Objective(LossConfig(automask_warmup_steps=5), [0, -1, 1], [0], seed=2)
    early = warmup(batch, outputs, step=4)
    assert early.terms["photometric"].item() == unmasked.terms["photometric"].item()
    assert "automask" not in early.images
    late = warmup(batch, outputs, step=5)
    assert late.terms["photometric"].item() == masked.terms["photometric"].item()
    assert torch.equal(late.images["automask"], masked.images["automask"])
    # Outside training (validation) the mask always applies.
    assert "automask" in warmup(batch, outputs).images
    with pytest.raises(ValueError, match="automask_warmup_steps"):
        Objective(LossConfig(automask_warmup_steps=-1), [0, -1, 1], [0])


def test_objective_honours_the_ssim_form_from_config():
    batch, outputs = _batch_and_outputs(scales=(0,), warped_offset=0.2)
    values = {}
    for form in ("conventional", "additive"):
        objective = Objective(LossConfig(ssim_form=form), frame_ids=[0, -1, 1], scales=[0], seed=3)
        assert objective.ssim.form == form
        values[form] = objective(batch, outputs).terms["photometric"].item()
    assert abs(values["conventional"] - values["additive"]) > 1e-4


def test_objective_noise_is_deterministic_per_seed():
    batch, outputs = _batch_and_outputs(scales=(0,), warped_offset=0.05)
    runs = [Objective(LossConfig(), [0, -1, 1], [0], seed=11)(batch, outputs) for _ in range(2)]
    assert torch.equal(runs[0].images["automask"], runs[1].images["automask"])
    assert runs[0].total.item() == runs[1].total.item()


def test_unknown_term_is_rejected_with_the_known_ones_listed():
    config = LossConfig(weights={"photometric": 1.0, "depth_structure": 0.1})
    known = r"known terms: .*photometric, photometric_bi, smoothness"
    with pytest.raises(ValueError, match=r"depth_structure.*" + known):
        Objective(config, frame_ids=[0, -1, 1], scales=[0])


@pytest.mark.parametrize("frame_ids", [[-1, 0, 1], [0], [0, 1, 1], [0, -1, 0]])
def test_objective_rejects_bad_frame_ids(frame_ids):
    expected = f"frame_ids must start with the target frame 0.*got {re.escape(str(frame_ids))}"
    with pytest.raises(ValueError, match=expected):
        Objective(LossConfig(), frame_ids=frame_ids, scales=[0])


def test_a_registered_term_plugs_in_without_other_changes(monkeypatch):
    def mean_disparity(batch, outputs, objective):
        return outputs["disparities"][0].mean(), {}

    monkeypatch.setitem(objective_module.TERMS, "mean_disparity", mean_disparity)
    batch, outputs = _batch_and_outputs(scales=(0,))
    config = LossConfig(weights={"photometric": 1.0, "mean_disparity": 0.5})
    result = Objective(config, frame_ids=[0, -1, 1], scales=[0])(batch, outputs)
    expected = result.terms["photometric"] + 0.5 * outputs["disparities"][0].mean().detach()
    torch.testing.assert_close(result.total.detach(), expected)


def test_missing_warped_image_names_the_key():
    batch, outputs = _batch_and_outputs(scales=(0,))
    del outputs["warped"][(1, 0)]
    with pytest.raises(KeyError, match=r"\(1, 0\)"):
        Objective(LossConfig(), frame_ids=[0, -1, 1], scales=[0])(batch, outputs)


def test_photometric_takes_the_stereo_partner_as_one_more_source():
    config = LossConfig(ssim_form="conventional", automask=False)
    batch, outputs = _batch_and_outputs(scales=(0,), warped_offset=0.3, stereo=True)
    target, ssim = batch["images"][:, 0], SSIMLoss("conventional")
    errors = [reprojection_error(outputs["warped"][(source, 0)], target, ssim) for source in (-1, 1, "s")]
    expected = torch.minimum(torch.minimum(errors[0], errors[1]), errors[2]).mean()
    result = Objective(config, [0, -1, 1], [0], stereo=True)(batch, outputs)
    torch.testing.assert_close(result.terms["photometric"], expected.detach())
    without = Objective(config, [0, -1, 1], [0])(batch, outputs)  # "s" ignored: the temporal minimum only
    torch.testing.assert_close(
        without.terms["photometric"], torch.minimum(errors[0], errors[1]).mean().detach()
    )
    # Stereo only (Monodepth2's S): the partner is the one source.
    only_batch, only_outputs = _batch_and_outputs(scales=(0,), frame_ids=(0,), warped_offset=0.3, stereo=True)
    only = Objective(config, [0], [0], stereo=True)(only_batch, only_outputs)
    warped = only_outputs["warped"][("s", 0)]
    expected = reprojection_error(warped, only_batch["images"][:, 0], ssim).mean()
    torch.testing.assert_close(only.terms["photometric"], expected.detach())


def test_automask_compares_with_the_unwarped_stereo_partner_too():
    batch, outputs = _batch_and_outputs(scales=(0,), frame_ids=(0,), warped_offset=0.2, stereo=True)
    images = batch["images"].clone()
    images[:, 1, :, :, :32] = images[:, 0, :, :, :32]  # the partner equals the target on the left half
    result = Objective(LossConfig(), [0], [0], seed=2, stereo=True)({"images": images}, outputs)
    mask = result.images["automask"]
    assert mask[..., :30].max() == 0 and mask[..., 34:].min() == 1


def test_velocity_loss_by_hand_with_unknown_distances_masked():
    translation = torch.tensor(
        [[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]], requires_grad=True
    )  # norms 5, 1 | 3, 0
    travel = torch.tensor([[4.5, math.nan], [3.5, 0.25]])
    loss = velocity_loss(translation, travel)
    assert loss.item() == pytest.approx((0.5 + 0.5 + 0.25) / 3)  # the NaN pair has no term
    loss.backward()
    # d|norm - d| / dt = sign(norm - d) t / norm over 3 known pairs; 0 for the unknown one and zero motion
    expected = (
        torch.tensor([[[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]], [[-1 / 3, -2 / 3, -2 / 3], [0.0, 0.0, 0.0]]]) / 3
    )
    torch.testing.assert_close(translation.grad, expected)


def test_velocity_loss_without_any_distance_is_an_exact_zero_that_backpropagates():
    translation = torch.tensor([[[0.1, 0.2, 0.3]]], requires_grad=True)
    loss = velocity_loss(translation, torch.tensor([[math.nan]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(translation.grad, torch.zeros_like(translation))
    with pytest.raises(ValueError, match=r"\(B, N, 3\).*\(1, 1, 3\) and \(1, 2\)"):
        velocity_loss(translation, torch.zeros(1, 2))


def test_velocity_term_reads_the_translation_of_each_temporal_transform():
    # Earlier sources are inverted pose-net outputs: [R^T | -R^T t], whose translation has the norm of t.
    rotation = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, 0.0]])
    backward = pose_to_matrix(rotation, torch.tensor([[0.0, 0.6, 0.8], [0.0, 0.0, 2.0]]), invert=True)
    forward = pose_to_matrix(rotation, torch.tensor([[1.2, 0.0, 0.5], [0.0, 0.0, 0.0]]))  # norms 1.3, 0
    outputs = {"transforms": {-1: backward, 1: forward, "s": torch.eye(4).expand(2, 4, 4) * 9}}
    batch = {"travel": torch.tensor([[1.5, 1.0], [math.nan, 0.5]])}
    config = LossConfig(weights={"velocity": 0.5})
    result = Objective(config, [0, -1, 1], [0], stereo=True)(batch, outputs)
    expected = (0.5 + 0.3 + 0.5) / 3  # |1 - 1.5|, |1.3 - 1|, |0 - 0.5|; the stereo rig is not supervised
    assert result.terms["velocity"].item() == pytest.approx(expected, rel=1e-6)
    assert result.total.item() == pytest.approx(0.5 * expected, rel=1e-6)
    with pytest.raises(ValueError, match="velocity.*frame_ids \\[0\\] have no temporal source"):
        Objective(config, [0], [0], stereo=True)


def test_missing_stereo_warp_names_the_key_among_mixed_keys():
    batch, outputs = _batch_and_outputs(scales=(0,), stereo=True)
    del outputs["warped"][("s", 0)]
    with pytest.raises(KeyError, match=r"\('s', 0\).*present: \[\(-1, 0\), \(1, 0\)\]"):
        Objective(LossConfig(), frame_ids=[0, -1, 1], scales=[0], stereo=True)(batch, outputs)
