"""The training loop on a tiny synthetic drive: logs, checkpoints, SIGKILL + resume, DDP, bad frames."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssim_depth_core.checkpoint import load_checkpoint, load_depth_net
from ssim_depth_core.config import OptimConfig, load_config
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.trainer import Trainer, learning_rate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
TINY = [
    "data.height=64",
    "data.width=128",
    "data.num_workers=0",
    "optim.batch_size=2",
    "log_every=1",
    "preview_every=2",
    "loss.automask_warmup_steps=1",  # the mask starts at the second step, so the step-2 preview shows it
]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("synth"), seed=5, drives=1, frames=10, width=128, height=64, bag="none"
    )


def _train_command(data: Path, out: Path, *overrides: str, resume: bool = False) -> list[str]:
    command = [sys.executable, str(ROOT / "training" / "train.py"), "--config", str(CONFIG)]
    command += ["--data", str(data), "--out", str(out)]
    for item in [*TINY, *overrides]:
        command += ["--set", item]
    return command + (["--resume"] if resume else [])


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_training_writes_config_checkpoints_and_tensorboard(drive, tmp_path):
    config = load_config(CONFIG, [*TINY, "optim.max_steps=3", "data.val_split=" + str(_split(drive, "val"))])
    trainer = Trainer(config, drive, tmp_path)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = trainer.fit()

    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["height"] == 64
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 3
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    changed = [
        k for k, v in state["model"].items() if v.is_floating_point() and not torch.equal(v, initial[k])
    ]
    assert any(k.startswith("depth_net.") for k in changed) and any(
        k.startswith("pose_net.") for k in changed
    )
    # validation against the drive's exact ground truth ran and produced Eigen metrics
    assert set(metrics) >= {"loss", "abs_rel", "a1"} and 0 < metrics["abs_rel"] < 10

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/total", "loss/photometric", "loss/smoothness", "lr", "it_per_s", "val/abs_rel"} <= scalars
    assert {"input", "disparity", "automask"} <= set(events.Tags()["images"])

    net, loaded_config = load_depth_net(tmp_path / "checkpoints" / "last.pt")
    assert loaded_config.data.height == 64
    assert net(torch.rand(1, 3, 64, 128)).shape == (1, 1, 64, 128)


def _torch_scheduler_rates(scheduler_type, lr: float, per_step: int, steps: int, **kwargs) -> list[float]:
    """Learning rates of torch's own scheduler, stepped every ``per_step`` batches, for ``steps`` batches."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_type(optimizer, **kwargs)
    rates = []
    for batch in range(1, steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: only keeps torch's step order
        if batch % per_step == 0:
            scheduler.step()
    return rates


def test_learning_rate_schedules_match_torch_schedulers():
    per_epoch, epochs = 5, 4
    step = OptimConfig(learning_rate=2e-4, epochs=epochs, lr_schedule="step", lr_step_epochs=1, lr_gamma=0.5)
    cosine = OptimConfig(learning_rate=2e-4, epochs=epochs, lr_schedule="cosine")
    positions = [batch / per_epoch for batch in range(epochs * per_epoch)]
    step_lr = _torch_scheduler_rates(
        torch.optim.lr_scheduler.StepLR, 2e-4, per_epoch, epochs * per_epoch, step_size=1, gamma=0.5
    )
    cosine_lr = _torch_scheduler_rates(
        torch.optim.lr_scheduler.CosineAnnealingLR, 2e-4, 1, epochs * per_epoch, T_max=epochs * per_epoch
    )
    assert [learning_rate(step, p) for p in positions] == pytest.approx(step_lr, rel=1e-12)
    assert [learning_rate(cosine, p) for p in positions] == pytest.approx(cosine_lr, rel=1e-9)
    assert learning_rate(cosine, epochs / 2) == pytest.approx(1e-4)  # half way: half the rate
    assert learning_rate(cosine, epochs + 1) == 0.0
    with pytest.raises(ValueError, match="optim.lr_schedule.*linear"):
        learning_rate(OptimConfig(lr_schedule="linear"), 0.0)


def test_training_follows_the_cosine_schedule_step_by_step(drive, tmp_path):
    # 8 training samples, batch 2: 4 steps per epoch, 2 epochs
    overrides = ["optim.epochs=2", "optim.lr_schedule=cosine", "checkpoint_every=100"]
    config = load_config(CONFIG, [*TINY, *overrides])
    Trainer(config, drive, tmp_path).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = [event.value for event in events.Scalars("lr")]
    lr = config.optim.learning_rate
    expected = _torch_scheduler_rates(torch.optim.lr_scheduler.CosineAnnealingLR, lr, 1, 8, T_max=8)
    assert logged == pytest.approx(expected, rel=1e-6)


def _split(root: Path, name: str) -> Path:
    (path,) = root.glob(f"splits/*/{name}_files.txt")
    return path


def test_sigkill_then_resume_matches_an_uninterrupted_run(drive, tmp_path):
    steps = ["optim.max_steps=8", "checkpoint_every=2"]
    reference = tmp_path / "reference"
    subprocess.run(_train_command(drive, reference, *steps), check=True, capture_output=True, timeout=600)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _train_command(drive, interrupted, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = interrupted / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 2 <= killed_at < 8

    resumed = subprocess.run(
        _train_command(drive, interrupted, *steps, resume=True), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {killed_at}" in resumed.stderr
    final = load_checkpoint(checkpoint)
    assert final["step"] == 8
    expected = _parameters(reference / "checkpoints" / "last.pt")
    for name, value in final["model"].items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_corrupt_frame_is_skipped_and_counted(drive, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(drive, data)
    (frame,) = data.glob("*/*_sync/image_02/data/0000000004.png")
    frame.write_bytes(frame.read_bytes()[:100])  # truncated PNG

    config = load_config(CONFIG, [*TINY, "optim.max_steps=4", "optim.batch_size=1"])
    trainer = Trainer(config, data, tmp_path / "run")
    trainer.fit()
    # frame 4 is the target or a source of three triplets (targets 3, 4, 5)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["skipped_samples"] >= 1


def test_torchrun_two_processes_keep_identical_weights(drive, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    worker = ROOT / "tests" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(worker), str(drive), str(tmp_path), *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    initial = torch.load(tmp_path / "initial.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0), "no step changed the weights"
