"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch

from ssim_depth_core.checkpoint import save_atomic
from ssim_depth_core.config import DataConfig, ModelConfig, TrainConfig, to_dict
from ssim_depth_core.models import MonodepthModel


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """Path of a randomly initialised (seed 0) trainer checkpoint: 64x96 input, depth range 0.5..80 m."""
    config = TrainConfig(
        model=ModelConfig(min_depth=0.5, max_depth=80.0), data=DataConfig(height=64, width=96)
    )
    torch.manual_seed(0)
    model = MonodepthModel(config.model, config.data.frame_ids)
    path = tmp_path_factory.mktemp("random_checkpoint") / "model.pt"
    save_atomic({"config": to_dict(config), "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def random_onnx(random_checkpoint, tmp_path_factory):
    """:func:`random_checkpoint` exported to ONNX (validated against PyTorch by the exporter)."""
    from ssim_depth_core.export.onnx import export_onnx

    return export_onnx(random_checkpoint, tmp_path_factory.mktemp("random_onnx") / "model.onnx")
