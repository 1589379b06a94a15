"""Seed 001's supervised depth loss: each part against hand-computed values, the masked SSIM against
scikit-image, sparse ground truth, the registered "supervised" term, its config, the metric source, the
semi-supervised recipe and the fine-tune from a checkpoint (--init-from)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from skimage.metrics import structural_similarity
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssim_depth_core.apps.cli import build_parser
from ssim_depth_core.artifact import METRIC_SOURCES, metric_source
from ssim_depth_core.checkpoint import load_checkpoint
from ssim_depth_core.config import LossConfig, load_config
from ssim_depth_core.data.kitti_raw import KittiRawSequence
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.losses import TERMS, Objective, SSIMLoss
from ssim_depth_core.losses.objective import required_inputs
from ssim_depth_core.losses.supervised import (
    depth_targets,
    masked_gradient_loss,
    masked_l1,
    masked_ssim_loss,
    supervised_depth_loss,
    window_valid,
)
from ssim_depth_core.trainer import Trainer

CONVENTIONAL = SSIMLoss(form="conventional", window=3)


def _map(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]


def test_l1_by_hand():
    pred = _map([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = _map([[1.5, 0.0, 2.0], [4.0, 9.0, 0.0]])
    mask = target > 0
    # valid: |1 - 1.5| + |3 - 2| + |4 - 4| + |5 - 9| = 0.5 + 1 + 0 + 4 over 4 pixels
    assert masked_l1(pred, target, mask).item() == pytest.approx(5.5 / 4)


def test_gradient_term_by_hand():
    pred = _map([[1.0, 2.0, 4.0], [0.0, 3.0, 3.0], [2.0, 2.0, 5.0]])
    target = _map([[1.0, 3.0, 3.0], [0.0, 1.0, 2.0], [1.0, 4.0, 4.0]])
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 0, 1, 0] = False  # the pixel (row 1, column 0) has no ground truth
    error = [[0.0, -1.0, 1.0], [0.0, 2.0, 1.0], [1.0, -2.0, 1.0]]  # pred - target
    # x pairs valid at both ends: row 0 (0,1), (1,2); row 1 only (1,2); row 2 (0,1), (1,2)
    dx = [abs(-1.0 - 0.0), abs(1.0 + 1.0), abs(1.0 - 2.0), abs(-2.0 - 1.0), abs(1.0 + 2.0)]
    # y pairs: column 0 has none (its middle pixel is invalid); columns 1 and 2 both pairs
    dy = [abs(2.0 + 1.0), abs(-2.0 - 2.0), abs(1.0 - 1.0), abs(1.0 - 1.0)]
    assert error[1][1] - error[0][1] == 3.0  # the first y pair as listed
    expected = sum(dx) / len(dx) + sum(dy) / len(dy)
    assert masked_gradient_loss(pred, target, mask).item() == pytest.approx(expected)


def test_window_valid_erodes_the_mask_by_the_window():
    mask = torch.ones(1, 1, 6, 7, dtype=torch.bool)
    mask[0, 0, 3, 4] = False
    eroded = window_valid(mask, 3)
    expected = torch.ones_like(mask)
    expected[0, 0, 2:5, 3:6] = False
    assert torch.equal(eroded, expected)
    # at the border the reflected neighbours count: an invalid pixel next to the edge invalidates the edge
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 1, 2] = False
    assert not window_valid(mask, 3)[0, 0, 0, 2]


def test_masked_ssim_matches_scikit_image_on_dense_maps():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 1, 12, 14, generator=generator, dtype=torch.float64)
    target = (pred + 0.3 * torch.rand(1, 1, 12, 14, generator=generator, dtype=torch.float64)).clamp(0, 1)
    _, reference = structural_similarity(
        pred[0, 0].numpy(),
        target[0, 0].numpy(),
        win_size=3,
        data_range=1.0,
        gaussian_weights=False,
        use_sample_covariance=False,
        full=True,
    )
    # scikit-image pads by edge-inclusive reflection, torch's SSIM by edge-exclusive: compare the interior
    dissimilarity = ((1 - torch.from_numpy(reference)) / 2).clamp(0, 1)
    ours = CONVENTIONAL(pred, target)[0, 0]
    torch.testing.assert_close(ours[1:-1, 1:-1], dissimilarity[1:-1, 1:-1], rtol=1e-6, atol=1e-9)
    # a mask invalid on the outer ring leaves the windows of the pixels two or more from the border
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[..., 1:-1, 1:-1] = True
    expected = dissimilarity[2:-2, 2:-2].mean().item()
    assert masked_ssim_loss(pred, target, mask, CONVENTIONAL).item() == pytest.approx(expected, rel=1e-6)
    # the data range: maps in metres with L = 80 are the unit maps scaled by 80
    scaled = masked_ssim_loss(80 * pred, 80 * target, mask, CONVENTIONAL, value_range=80.0)
    assert scaled.item() == pytest.approx(expected, rel=1e-6)


def test_invalid_pixels_do_not_reach_the_ssim_part():
    generator = torch.Generator().manual_seed(1)
    pred = torch.rand(1, 1, 9, 9, generator=generator, dtype=torch.float64)
    target = pred.clone()
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[..., 4, 4] = False
    target[..., 4, 4] = 0.0  # what marks missing ground truth: every window around it is dropped
    assert masked_ssim_loss(pred, target, mask, CONVENTIONAL).item() == pytest.approx(0.0, abs=1e-12)
    assert CONVENTIONAL(pred, target)[..., 4, 4].item() > 0.01  # without the mask it would count


def test_total_is_l1_weight_times_l1_plus_ssim_plus_gradient():
    generator = torch.Generator().manual_seed(2)
    pred = 1 + 10 * torch.rand(2, 1, 8, 10, generator=generator, dtype=torch.float64)
    target = 1 + 10 * torch.rand(2, 1, 8, 10, generator=generator, dtype=torch.float64)
    mask = torch.rand(2, 1, 8, 10, generator=generator) < 0.8
    total, parts = supervised_depth_loss(pred, target, mask, CONVENTIONAL, l1_weight=0.1, value_range=11.0)
    assert parts["l1"].item() == pytest.approx(masked_l1(pred, target, mask).item())
    assert parts["grad"].item() == pytest.approx(masked_gradient_loss(pred, target, mask).item())
    ssim = masked_ssim_loss(pred, target, mask, CONVENTIONAL, 11.0)
    assert parts["ssim"].item() == pytest.approx(ssim.item())
    by_hand = 0.1 * parts["l1"].item() + parts["ssim"].item() + parts["grad"].item()
    assert total.item() == pytest.approx(by_hand)
    same, parts = supervised_depth_loss(target, target, mask, CONVENTIONAL, value_range=11.0)
    assert same.item() == pytest.approx(0.0, abs=1e-9)


def test_sparse_ground_truth_keeps_l1_only_where_no_window_or_pair_is_whole():
    pred = torch.full((1, 1, 8, 8), 5.0, dtype=torch.float64)
    target = torch.zeros_like(pred)
    target[..., ::2, ::2] = 7.0  # isolated points, as a LiDAR far sparser than the image
    total, parts = supervised_depth_loss(pred, target, target > 0, CONVENTIONAL, l1_weight=0.1)
    assert parts["l1"].item() == pytest.approx(2.0)
    assert parts["ssim"].item() == 0.0 and parts["grad"].item() == 0.0
    assert total.item() == pytest.approx(0.2)
    none_valid = torch.zeros_like(pred, dtype=torch.bool)
    pred.requires_grad_()
    nothing, _ = supervised_depth_loss(pred, torch.zeros_like(pred), none_valid, CONVENTIONAL)
    nothing.backward()
    assert nothing.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_depth_targets_in_depth_and_inverse_depth():
    depth = torch.tensor([2.0, 4.0, 5.0, 8.0]).reshape(1, 1, 2, 2)
    gt = torch.tensor([4.0, 0.0, 200.0, 10.0]).reshape(1, 1, 2, 2)  # 0: missing; 200 m: beyond max_depth
    pred, target, mask, value_range = depth_targets(depth, gt, 0.1, 100.0, "depth")
    assert mask.flatten().tolist() == [True, False, False, True]
    assert torch.equal(pred, depth) and target.flatten().tolist() == [4.0, 0.0, 0.0, 10.0]
    assert value_range == pytest.approx(99.9)
    pred, target, mask, value_range = depth_targets(depth, gt, 0.1, 100.0, "inverse_depth")
    torch.testing.assert_close(pred.flatten(), torch.tensor([0.5, 0.25, 0.2, 0.125]))
    torch.testing.assert_close(target.flatten(), torch.tensor([0.25, 0.0, 0.0, 0.1]))
    assert value_range == pytest.approx(10.0 - 0.01)
    with pytest.raises(ValueError, match="supervised space"):
        depth_targets(depth, gt, 0.1, 100.0, "log_depth")


def _batch_and_outputs(generator: torch.Generator, size=(8, 12), scales=2):
    gt = 2 + 20 * torch.rand(2, 1, *size, generator=generator)
    gt[gt > 18] = 0.0  # holes
    depths = [(2 + 20 * torch.rand(2, 1, *size, generator=generator)).requires_grad_() for _ in range(scales)]
    return {"depth_gt": gt}, {"depths": depths}


@pytest.mark.parametrize("space", ["depth", "inverse_depth"])
def test_the_registered_term_averages_the_loss_over_scales(space):
    assert "supervised" in TERMS
    batch, outputs = _batch_and_outputs(torch.Generator().manual_seed(3))
    config = LossConfig(weights={"supervised": 2.0}, supervised_space=space, supervised_l1_weight=0.5)
    objective = Objective(config, [0, -1, 1], scales=[0, 1], depth_range=(0.5, 50.0))
    result = objective(batch, outputs)
    expected = 0.0
    for depth in outputs["depths"]:
        pred, target, mask, value_range = depth_targets(depth, batch["depth_gt"], 0.5, 50.0, space)
        expected += supervised_depth_loss(pred, target, mask, CONVENTIONAL, 0.5, value_range)[0].item() / 2
    assert result.terms["supervised"].item() == pytest.approx(expected, rel=1e-5)
    assert result.total.item() == pytest.approx(2 * expected, rel=1e-5)
    result.total.backward()  # zeros (missing ground truth) in inverse depth leave no NaN or inf behind
    assert all(torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0 for depth in outputs["depths"])


def test_ground_truth_of_another_size_is_resampled_by_nearest_neighbour():
    batch, outputs = _batch_and_outputs(torch.Generator().manual_seed(4), size=(8, 12), scales=1)
    objective = Objective(LossConfig(weights={"supervised": 1.0}), [0, -1, 1], scales=[0])
    small = objective(batch, outputs).total
    doubled = {"depth_gt": batch["depth_gt"].repeat_interleave(2, -1).repeat_interleave(2, -2)}
    assert objective(doubled, outputs).total.item() == pytest.approx(small.item())


def test_the_term_needs_ground_truth_and_a_valid_configuration():
    objective = Objective(LossConfig(weights={"supervised": 1.0}), [0, -1, 1], scales=[0])
    _, outputs = _batch_and_outputs(torch.Generator().manual_seed(5), scales=1)
    with pytest.raises(KeyError, match="depth_gt"):
        objective({}, outputs)
    with pytest.raises(ValueError, match="supervised_l1_weight"):
        Objective(LossConfig(weights={"supervised": 1.0}, supervised_l1_weight=-1.0), [0, -1, 1], [0])(
            {"depth_gt": torch.ones(2, 1, 8, 12)}, outputs
        )
    with pytest.raises(ValueError, match="depth_range"):
        Objective(LossConfig(), [0, -1, 1], [0], depth_range=(10.0, 1.0))
    with pytest.raises(ValueError, match="supervised_space"):
        load_config(None, ["loss.supervised_space=log"])


def test_off_by_default_and_in_the_semi_supervised_recipe_only():
    assert "supervised" not in LossConfig().weights
    for recipe in ("synthetic_cpu", "kitti_monodepth2"):
        assert "supervised" not in load_config(f"training/configs/{recipe}.yaml").loss.weights
    semisup = load_config("training/configs/synthetic_cpu_semisup.yaml")
    assert semisup.loss.weights["supervised"] > 0 and semisup.data.depth_source == "velodyne"


def test_a_supervised_model_is_metric():
    assert metric_source({"loss": {"weights": {"supervised": 1.0}}}) == "supervised"
    config = {"data": {"stereo": True}, "loss": {"weights": {"velocity": 0.05, "supervised": 0.1}}}
    assert metric_source(config) == "stereo+velocity+supervised"
    assert metric_source({"loss": {"weights": {"supervised": 0.0}}}) == "none"
    assert {"stereo+velocity", "velocity+supervised", "stereo+velocity+supervised"} <= set(METRIC_SOURCES)


ROOT = Path(__file__).resolve().parents[1]
SEMISUP = ROOT / "training" / "configs" / "synthetic_cpu_semisup.yaml"
SELF_SUPERVISED = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
TINY = [
    "data.height=64",
    "data.width=128",
    "data.num_workers=0",
    "optim.batch_size=2",
    "optim.max_steps=2",
    "log_every=1",
    "data.val_split=none",
]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_dataset(
        root, seed=5, drives=1, frames=6, width=128, height=64, bag="none", progress=False
    )


def _scalars(run: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_semi_supervised_recipe_trains_on_projected_lidar(drive, tmp_path):
    Trainer(load_config(SEMISUP, TINY), drive, tmp_path).fit()
    scalars = _scalars(tmp_path)
    assert len(scalars["loss/supervised"]) == 2 and all(v > 0 for v in scalars["loss/supervised"])
    assert all(math.isfinite(v) for v in scalars["loss/total"])


def test_a_fine_tune_starts_from_the_checkpoints_weights_only(drive, tmp_path):
    Trainer(load_config(SELF_SUPERVISED, TINY), drive, tmp_path / "ssl").fit()
    checkpoint = tmp_path / "ssl" / "checkpoints" / "last.pt"
    weights = load_checkpoint(checkpoint)["model"]
    tune = Trainer(load_config(SEMISUP, TINY), drive, tmp_path / "tune", init_from=checkpoint)
    assert tune.step == 0 and not tune.optimizer.state
    for name, value in tune.model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0, msg=name)
    tune.fit()
    assert tune.step == 2
    # a resumed fine-tune continues from its own last.pt, not from the initial weights
    resumed = Trainer(load_config(SEMISUP, TINY), drive, tmp_path / "tune", resume=True, init_from=checkpoint)
    assert resumed.step == 2
    with pytest.raises(ValueError, match="its weights do not fit this network"):
        other = load_config(SEMISUP, [*TINY, "model.encoder=resnet34"])
        Trainer(other, drive, tmp_path / "x", init_from=checkpoint)
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(SEMISUP),
            "--data",
            str(drive),
            "--out",
            "o",
            "--init-from",
            str(checkpoint),
        ]
    )
    assert args.init_from == checkpoint
    assert (
        build_parser().parse_args(["train", "--config", "c", "--data", "d", "--out", "o"]).init_from is None
    )


def test_only_a_weighted_supervised_term_asks_for_ground_truth():
    assert required_inputs(LossConfig()) == ()
    assert required_inputs(LossConfig(weights={"photometric": 1.0, "supervised": 0.0})) == ()
    assert required_inputs(LossConfig(weights={"photometric": 1.0, "supervised": 0.1})) == ("depth_gt",)


def test_training_samples_load_ground_truth_only_for_the_supervised_term(drive, tmp_path, monkeypatch):
    loads = []
    depth = KittiRawSequence.depth
    monkeypatch.setattr(
        KittiRawSequence, "depth", lambda self, index: loads.append(index) or depth(self, index)
    )
    plain = Trainer(load_config(SELF_SUPERVISED, TINY), drive, tmp_path / "ssl")
    samples = [plain.train_set[i] for i in range(len(plain.train_set))]
    assert all("depth_gt" not in sample for sample in samples) and loads == []
    semisup = Trainer(load_config(SEMISUP, TINY), drive, tmp_path / "semisup")
    sample = semisup.train_set[0]
    assert sample["depth_gt"].shape == (1, 64, 128) and sample["depth_gt"].any()
    assert loads == [semisup.train_set.samples[0][1]]
