"""Fixtures shared by several test modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ssim_depth_core.checkpoint import save_atomic
from ssim_depth_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, to_dict
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.models import MonodepthModel


def _save_random_checkpoint(config: TrainConfig, path):
    """Save a randomly initialised (seed 0) model with ``config`` as a trainer checkpoint at ``path``."""
    torch.manual_seed(0)
    model = MonodepthModel(config.model, config.data.frame_ids)
    save_atomic({"config": to_dict(config), "model": model.state_dict()}, path)
    return path


def _small_config(**fields) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(min_depth=0.5, max_depth=80.0), data=DataConfig(height=64, width=96), **fields
    )


@pytest.fixture(scope="session")
def bench_script():
    """``name -> module``: load ``bench/<name>.py``, with bench/ importable while it loads and after (the
    scripts import their shared helpers from ``metric_depth`` by name)."""
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    sys.path.insert(0, bench)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(bench) / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    sys.path.remove(bench)


@pytest.fixture(scope="session")
def save_random_checkpoint():
    """``(config, path) -> path``: save a randomly initialised (seed 0) model of ``config`` as a trainer
    checkpoint (a fixture, as ``conftest`` is not importable by name beside the ROS package's tests)."""
    return _save_random_checkpoint


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """Path of a randomly initialised (seed 0) trainer checkpoint: 64x96 input, depth range 0.5..80 m,
    scale-less (metric source "none")."""
    return _save_random_checkpoint(_small_config(), tmp_path_factory.mktemp("random_checkpoint") / "model.pt")


@pytest.fixture(scope="session")
def random_onnx(random_checkpoint, tmp_path_factory):
    """:func:`random_checkpoint` exported to ONNX (validated against PyTorch by the exporter)."""
    from ssim_depth_core.export.onnx import export_onnx

    return export_onnx(random_checkpoint, tmp_path_factory.mktemp("random_onnx") / "model.onnx")


@pytest.fixture(scope="session")
def velocity_checkpoint(tmp_path_factory):
    """:func:`random_checkpoint`'s network (same seed) in a checkpoint whose config trained it with velocity
    supervision (``loss.weights.velocity`` 0.05): metric source "velocity"."""
    loss = LossConfig(weights={"photometric": 1.0, "smoothness": 1e-3, "velocity": 0.05})
    path = tmp_path_factory.mktemp("velocity_checkpoint") / "model.pt"
    return _save_random_checkpoint(_small_config(loss=loss), path)


@pytest.fixture(scope="session")
def velocity_onnx(velocity_checkpoint, tmp_path_factory):
    """:func:`velocity_checkpoint` exported to ONNX."""
    from ssim_depth_core.export.onnx import export_onnx

    return export_onnx(velocity_checkpoint, tmp_path_factory.mktemp("velocity_onnx") / "model.onnx")


@pytest.fixture(scope="session")
def tiny_drive(tmp_path_factory) -> Path:
    """A synthetic dataset of one 10-frame drive at 128x64 (data seed 5), no bag: for short training runs.
    Tests that change it work on a copy."""
    return generate_dataset(
        tmp_path_factory.mktemp("synth"), seed=5, drives=1, frames=10, width=128, height=64, bag="none"
    )
