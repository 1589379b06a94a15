"""The training loop on a tiny synthetic drive: logs, checkpoints, SIGKILL + resume, DDP, bad frames, default
splits, run folders, config choices, progress output in a log, model-file modes, metric training (velocity
supervision, stereo)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssim_depth_core import outputs
from ssim_depth_core.apps.cli import main as cli_main
from ssim_depth_core.checkpoint import load_checkpoint, load_depth_net, write_atomic
from ssim_depth_core.config import OptimConfig, load_config
from ssim_depth_core.data.synthetic import generate_dataset
from ssim_depth_core.progress import progress_bar
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
def stereo_drive(tmp_path_factory) -> Path:
    """A tiny drive with camera 03 (the stereo partner) and OXTS odometry, in the KITTI raw layout."""
    return generate_dataset(
        tmp_path_factory.mktemp("stereo"),
        seed=6,
        drives=1,
        frames=10,
        width=128,
        height=64,
        bag="none",
        stereo=True,
        progress=False,
    )


def _train_command(
    data: Path, out: Path, *overrides: str, resume: bool = False, overwrite: bool = False
) -> list[str]:
    command = [sys.executable, str(ROOT / "training" / "train.py"), "--config", str(CONFIG)]
    command += ["--data", str(data), "--out", str(out)]
    for item in [*TINY, *overrides]:
        command += ["--set", item]
    return command + (["--resume"] if resume else []) + (["--overwrite"] if overwrite else [])


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_training_on_the_cpu_flushes_subnormal_floats(tiny_drive, tmp_path):
    torch.set_flush_denormal(False)  # an earlier Trainer in this process may have set it
    subnormal = torch.tensor([1e-39])  # below float32's smallest normal, 1.18e-38
    assert subnormal.item() > 0 and (subnormal * 1.0).item() > 0
    try:
        Trainer(load_config(CONFIG, [*TINY, "device=cpu"]), tiny_drive, tmp_path / "run")
        assert (subnormal * 1.0).item() == 0.0 and (torch.tensor([1e-30]) * 1e-9).item() == 0.0
        normal = (torch.tensor([1e-30]) * 1e-7).item()  # 1e-37: a normal float, kept as before
        assert normal == pytest.approx(1e-37, rel=1e-6, abs=0)
    finally:
        torch.set_flush_denormal(False)


def test_training_writes_config_checkpoints_and_tensorboard(tiny_drive, tmp_path):
    config = load_config(
        CONFIG, [*TINY, "optim.max_steps=3", "data.val_split=" + str(_split(tiny_drive, "val"))]
    )
    trainer = Trainer(config, tiny_drive, tmp_path)
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


def test_training_follows_the_cosine_schedule_step_by_step(tiny_drive, tmp_path):
    # 8 training samples, batch 2: 4 steps per epoch, 2 epochs
    overrides = ["optim.epochs=2", "optim.lr_schedule=cosine", "checkpoint_every=100"]
    config = load_config(CONFIG, [*TINY, *overrides])
    Trainer(config, tiny_drive, tmp_path).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = [event.value for event in events.Scalars("lr")]
    lr = config.optim.learning_rate
    expected = _torch_scheduler_rates(torch.optim.lr_scheduler.CosineAnnealingLR, lr, 1, 8, T_max=8)
    assert logged == pytest.approx(expected, rel=1e-6)


def _split(root: Path, name: str) -> Path:
    (path,) = root.glob(f"splits/*/{name}_files.txt")
    return path


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_drive, tmp_path):
    steps = ["optim.max_steps=8", "checkpoint_every=2"]
    reference = tmp_path / "reference"
    subprocess.run(
        _train_command(tiny_drive, reference, *steps), check=True, capture_output=True, timeout=600
    )

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _train_command(tiny_drive, interrupted, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
        _train_command(tiny_drive, interrupted, *steps, resume=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {killed_at}" in resumed.stderr
    final = load_checkpoint(checkpoint)
    assert final["step"] == 8
    expected = _parameters(reference / "checkpoints" / "last.pt")
    for name, value in final["model"].items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_corrupt_frame_is_skipped_and_counted(tiny_drive, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_drive, data)
    (frame,) = data.glob("*/*_sync/image_02/data/0000000004.png")
    frame.write_bytes(frame.read_bytes()[:100])  # truncated PNG

    config = load_config(CONFIG, [*TINY, "optim.max_steps=4", "optim.batch_size=1"])
    trainer = Trainer(config, data, tmp_path / "run")
    trainer.fit()
    # frame 4 is the target or a source of three triplets (targets 3, 4, 5)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["skipped_samples"] >= 1


@pytest.mark.parametrize("encoder", ["resnet18", "convnext_tiny"])
def test_torchrun_two_processes_keep_identical_weights_and_generators(tiny_drive, tmp_path, encoder):
    """DDP keeps the ranks' weights equal. Every rank seeds torch's global generator alike and draws from it
    alike (ConvNeXt's stochastic depth draws every step), so the one state a checkpoint saves, rank 0's,
    resumes every rank exactly."""
    torchrun = Path(sys.executable).parent / "torchrun"
    worker = ROOT / "tests" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tiny_drive),
            str(tmp_path),
            *TINY,
            f"model.encoder={encoder}",
        ],
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
    assert torch.equal(torch.load(tmp_path / "rng0.pt"), torch.load(tmp_path / "rng1.pt"))
    if encoder == "convnext_tiny":  # drew from it: not the freshly seeded state
        assert not torch.equal(torch.load(tmp_path / "rng0.pt"), torch.Generator().manual_seed(0).get_state())


def _with_splits(drive: Path, root: Path, **splits: list[int]) -> Path:
    """A copy of ``drive`` whose own split files (splits/synthetic/<name>_files.txt) hold the given frames."""
    data = shutil.copytree(drive, root / "data")
    date_drive = _split(drive, "train").read_text().split()[0]
    for name, frames in splits.items():
        (data / "splits" / "synthetic" / f"{name}_files.txt").write_text(
            "".join(f"{date_drive} {frame} l\n" for frame in frames)
        )
    return data


def test_the_datasets_own_splits_are_used_by_default(tiny_drive, tmp_path, caplog):
    data = _with_splits(tiny_drive, tmp_path, train=[1, 2, 3, 4], val=[7, 8])
    train_file, val_file = _split(data, "train"), _split(data, "val")
    with caplog.at_level(logging.INFO, logger="ssim_depth_core.trainer"):
        trainer = Trainer(load_config(CONFIG, TINY), data, tmp_path / "run")
    assert sorted(trainer.train_set.samples) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert sorted(trainer.val_set.samples) == [(0, 7), (0, 8)]
    assert f"training on 4 samples of {train_file}" in caplog.text
    assert f"validating on 2 samples of {val_file}" in caplog.text

    # "none": no split file, every usable frame trains and nothing validates
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ssim_depth_core.trainer"):
        trainer = Trainer(
            load_config(CONFIG, [*TINY, "data.train_split=none", "data.val_split=none"]),
            data,
            tmp_path / "all",
        )
    assert len(trainer.train_set) == 8 and trainer.val_set is None
    assert "no train split (data.train_split=none): training on every usable frame" in caplog.text
    assert "no validation split (data.val_split=none)" in caplog.text

    # explicit split names win over the defaults
    trainer = Trainer(
        load_config(CONFIG, [*TINY, "data.train_split=val", "data.val_split=train"]), data, tmp_path / "named"
    )
    assert sorted(trainer.train_set.samples) == [(0, 7), (0, 8)] and len(trainer.val_set) == 4

    # two train splits: the default is ambiguous, and the error names both files
    other = data / "splits" / "other" / "train_files.txt"
    other.parent.mkdir()
    shutil.copy(train_file, other)
    with pytest.raises(ValueError, match=f"several train splits.*{other}.*data.train_split.*'none'"):
        Trainer(load_config(CONFIG, TINY), data, tmp_path / "ambiguous")


def test_without_validation_best_pt_holds_the_last_weights(tiny_drive, tmp_path, caplog):
    data = shutil.copytree(tiny_drive, tmp_path / "data")
    shutil.rmtree(data / "splits")
    with caplog.at_level(logging.INFO, logger="ssim_depth_core.trainer"):
        trainer = Trainer(load_config(CONFIG, [*TINY, "optim.max_steps=2"]), data, tmp_path / "run")
        trainer.fit()
    assert len(trainer.train_set) == 8 and trainer.val_set is None
    assert f"no train split (no {data / 'splits'}/*/train_files.txt)" in caplog.text
    assert f"no validation split (no {data / 'splits'}/*/val_files.txt)" in caplog.text
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert best["step"] == last["step"] == 2
    for name, value in last["model"].items():
        assert torch.equal(best["model"][name], value), name
    assert "best.pt holds the last weights (step 2)" in caplog.text


def _logged_steps(run: Path) -> list[int]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars("loss/total")]


def test_a_run_folder_is_refused_unless_resumed_or_overwritten(tiny_drive, tmp_path):
    run = tmp_path / "run"
    Trainer(load_config(CONFIG, [*TINY, "optim.max_steps=1", "data.val_split=none"]), tiny_drive, run).fit()
    before = (run / "checkpoints" / "last.pt").stat().st_mtime_ns

    refused = subprocess.run(_train_command(tiny_drive, run), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert f"{run} is not empty" in refused.stderr
    assert "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    both = subprocess.run(
        _train_command(tiny_drive, run, resume=True, overwrite=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr

    # --overwrite: a new run from step 0 whose TensorBoard events are its own only. Its stderr is a pipe,
    # so the progress bar writes plain lines: one at the start and one per step of the 4-step epoch.
    replaced = subprocess.run(
        _train_command(tiny_drive, run, "optim.epochs=1", "data.val_split=none", overwrite=True),
        capture_output=True,
        timeout=600,
    )
    assert replaced.returncode == 0, replaced.stderr.decode()[-4000:]
    assert b"--overwrite: removed the earlier checkpoints and TensorBoard events" in replaced.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert _logged_steps(run) == [1, 2, 3, 4]
    assert b"\r" not in replaced.stderr
    bar_lines = [line for line in replaced.stderr.decode().splitlines() if line.startswith("epoch ")]
    assert [line.split("|")[0] for line in bar_lines] == [f"epoch 1/1: {p:3d}%" for p in (0, 25, 50, 75, 100)]

    # --resume continues that run
    resumed = Trainer(
        load_config(CONFIG, [*TINY, "optim.epochs=2", "data.val_split=none"]), tiny_drive, run, resume=True
    )
    assert resumed.step == 4
    resumed.fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8
    assert _logged_steps(run) == list(range(1, 9))


ONE_STEP = [*TINY, "optim.max_steps=1", "data.val_split=none"]


def _one_step_run(data: Path, run: Path) -> tuple[Path, Path]:
    """Train one step into ``run``; its (last.pt, best.pt)."""
    Trainer(load_config(CONFIG, ONE_STEP), data, run).fit()
    return run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"


def test_resume_without_last_pt_beside_other_checkpoints_is_refused_and_keeps_them(tiny_drive, tmp_path):
    run, settings = tmp_path / "run", ONE_STEP
    last, best = _one_step_run(tiny_drive, run)
    kept = best.read_bytes()
    last.unlink()
    for stand_in in (None, "folder", "broken link"):  # what a resume cannot read
        if stand_in == "folder":
            last.mkdir()
        elif stand_in == "broken link":
            last.rmdir()
            last.symlink_to(tmp_path / "gone.pt")
        with pytest.raises(ValueError, match=r"not a checkpoint file .* has checkpoints \(best\.pt\): put"):
            Trainer(load_config(CONFIG, settings), tiny_drive, run, resume=True)
        assert best.read_bytes() == kept
    last.unlink()
    best.unlink()  # a run interrupted before its first checkpoint: --resume starts it from scratch
    assert Trainer(load_config(CONFIG, settings), tiny_drive, run, resume=True).step == 0


def test_an_interrupted_training_says_whether_it_can_be_resumed(tmp_path):
    from ssim_depth_core.apps.cli import _train_interrupted

    args = argparse.Namespace(out=tmp_path / "run")
    assert _train_interrupted(args) == "; no checkpoint was written yet: start again with --overwrite"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    assert _train_interrupted(args) == "; the last checkpoint is kept: continue with --resume"


def test_overwrite_removes_the_earlier_run_only_once_the_new_one_has_loaded(tiny_drive, tmp_path):
    run, settings = tmp_path / "run", ONE_STEP
    last, best = _one_step_run(tiny_drive, run)
    before = last.read_bytes()
    with pytest.raises((ValueError, OSError), match="missing"):  # a run that cannot start loses nothing
        Trainer(load_config(CONFIG, settings), tmp_path / "missing", run, overwrite=True)
    assert last.read_bytes() == before and best.is_file()

    # a fine-tune in place starts from the weights it replaces
    weights = load_checkpoint(best)["model"]
    tuned = Trainer(load_config(CONFIG, settings), tiny_drive, run, overwrite=True, init_from=best)
    assert tuned.step == 0 and not last.exists()
    for name, value in tuned.model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)


def test_overwrite_stops_when_the_earlier_run_cannot_be_removed(tiny_drive, tmp_path, monkeypatch):
    """Two runs never mix: a removal that fails (injected: as root nothing here refuses one) stops the new run
    before it writes anything."""
    run = tmp_path / "run"
    settings = [*TINY, "optim.max_steps=1", "data.val_split=none"]
    Trainer(load_config(CONFIG, settings), tiny_drive, run).fit()
    before = (run / "checkpoints" / "last.pt").read_bytes()

    def refuse(path, ignore_errors=False, **kwargs):  # as rmtree does when the file system refuses
        if not ignore_errors:
            raise PermissionError(f"cannot remove {path}")

    monkeypatch.setattr(outputs.shutil, "rmtree", refuse)
    with pytest.raises(PermissionError, match="cannot remove"):
        Trainer(load_config(CONFIG, settings), tiny_drive, run, overwrite=True)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_model_and_objective_settings_are_checked_before_the_data_is_read(tmp_path):
    """A setting only the objective or the network can judge fails at once, not after indexing the data
    (here there is none to index)."""
    for override, message in (("loss.ssim_window=4", "SSIM window"), ("model.scales=[1]", "scales must")):
        with pytest.raises(ValueError, match=message):
            Trainer(load_config(CONFIG, [override]), tmp_path / "no_data", tmp_path / "run")


def test_resume_refuses_a_changed_config_naming_what_changed(tiny_drive, tmp_path):
    settings = [*TINY, "optim.max_steps=1", "data.val_split=none"]
    Trainer(load_config(CONFIG, settings), tiny_drive, tmp_path).fit()
    changed = load_config(CONFIG, [*settings, "optim.batch_size=4", "seed=5"])
    with pytest.raises(
        ValueError, match=r"optim.batch_size: 2 -> 4; seed: 0 -> 5.*may change only .*max_steps"
    ):
        Trainer(changed, tiny_drive, tmp_path, resume=True)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["batch_size"] == 2
    longer = Trainer(
        load_config(CONFIG, [*TINY, "optim.max_steps=2", "data.val_split=none"]),
        tiny_drive,
        tmp_path,
        resume=True,
    )
    assert longer.step == 1


def test_resume_restores_the_random_state_that_stochastic_depth_draws_from(tiny_drive, tmp_path):
    """ConvNeXt keeps torchvision's stochastic depth, which draws from torch's global generator: a resumed
    run matches an uninterrupted one only if the checkpoint carries that generator's state."""
    convnext = [*TINY, "model.encoder=convnext_tiny", "data.val_split=none"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(load_config(CONFIG, [*convnext, "optim.max_steps=3"]), tiny_drive, straight).fit()
    Trainer(load_config(CONFIG, [*convnext, "optim.max_steps=1"]), tiny_drive, interrupted).fit()
    resumed = Trainer(
        load_config(CONFIG, [*convnext, "optim.max_steps=3"]), tiny_drive, interrupted, resume=True
    )
    assert resumed.step == 1
    resumed.fit()
    expected = _parameters(straight / "checkpoints" / "last.pt")
    for name, value in _parameters(interrupted / "checkpoints" / "last.pt").items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_resumes_on_cuda_with_fp16_loss_scaling_switched_on(tiny_drive, tmp_path):
    """The checkpoint's tensors load onto the GPU (map_location) while generator states must be CPU byte
    tensors (the device's generator is restored); a run without loss scaling (amp none) resumes with it
    (fp16) from an empty scaler state."""
    settings = [*TINY, "device=cuda", "data.val_split=none"]
    Trainer(load_config(CONFIG, [*settings, "amp=none", "optim.max_steps=1"]), tiny_drive, tmp_path).fit()
    resumed = Trainer(
        load_config(CONFIG, [*settings, "amp=fp16", "optim.max_steps=2"]), tiny_drive, tmp_path, resume=True
    )
    assert resumed.step == 1 and resumed.scaler.is_enabled()
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["cuda_rng"]
    assert torch.equal(torch.cuda.get_rng_state(resumed.device), saved)
    resumed.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


def test_progress_in_a_log_is_a_few_plain_lines(tmp_path):
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:  # a file, like a pipe, is not a terminal
        with progress_bar(range(1000), file=log, desc="epoch 1/1") as bar:
            for step in bar:
                bar.set_postfix(loss=f"{1 / (step + 1):.4f}")  # no line of its own
        for _ in progress_bar(range(50), file=log, desc="validate", leave=False):
            pass  # a transient bar leaves nothing in a log
        with progress_bar(file=log, total=7, desc="frames", unit="frame") as frames:
            frames.update(7)
    text = log_path.read_bytes().decode()
    assert "\r" not in text and "validate" not in text
    lines = text.splitlines()
    assert [line[: len("epoch 1/1:  10%")] for line in lines[:11]] == [
        f"epoch 1/1: {percent:3d}%" for percent in range(0, 101, 10)
    ]
    assert lines[10].startswith("epoch 1/1: 100%|##########| 1000/1000") and "loss=0.0010" in lines[10]
    assert [line.split("|")[0] for line in lines[11:]] == ["frames:   0%", "frames: 100%"]


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("loss.ssim_form=ssim", "'conventional', 'exponent', 'additive'"),
        ("amp=fp32", "'auto', 'none', 'bf16', 'fp16'"),
        ("optim.lr_schedule=linear", "'step', 'cosine'"),
        ("model.padding_mode=replicate", "'reflection', 'zeros'"),
    ],
)
def test_string_choices_are_checked_at_load_time(override, allowed):
    key, value = override.split("=")
    with pytest.raises(ValueError, match=f"config '{key}' must be one of {allowed}, got '{value}'"):
        load_config(CONFIG, [override])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_model_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "model.onnx", b"weights")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "model.onnx").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "plain"]  # no temporary file left


class _WritesAMarker:
    """Unpickling this object calls Path.touch(marker): what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"config": {}, "model": {}, "payload": _WritesAMarker(marker)}, hostile)
    with pytest.raises(ValueError, match=r"hostile\.pt: refused: this file needs arbitrary unpickling"):
        load_checkpoint(hostile)
    with pytest.raises(ValueError, match="refused"):
        load_depth_net(hostile)
    assert not marker.exists()
    # The reference: plain pickle-based loading of the same file does run the payload.
    torch.load(hostile, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": torch.zeros(3)}, "its model is not a mapping of names to tensors"),
        ({"config": None}, "its config is a NoneType"),
        ({"config": "hello"}, "its config is a str"),
        (
            {"model": {"depth_net.x": torch.zeros(1)}},
            r"its weights do not fit this network: \d+ missing \(first",
        ),
    ],
)
def test_a_malformed_checkpoint_is_one_clear_error_in_every_verb(
    random_checkpoint, tiny_drive, tmp_path, caplog, change, message
):
    """export, evaluate, infer and train --init-from each exit with 2 and one error line naming the file."""
    bad = tmp_path / "bad.pt"
    torch.save({**load_checkpoint(random_checkpoint), **change}, bad)
    image = next(tiny_drive.glob("*/*_sync/image_02/data/*.png"))
    for argv in (
        ["export", "--checkpoint", str(bad), "--onnx", str(tmp_path / "m.onnx")],
        ["evaluate", "--checkpoint", str(bad), "--data", str(tiny_drive)],
        ["infer", "--model", str(bad), "--input", str(image), "--out", str(tmp_path / "infer")],
        ["train", "--config", str(CONFIG), "--data", str(tiny_drive), "--out", str(tmp_path / "run"),
         "--init-from", str(bad), *[f"--set={item}" for item in TINY]],
    ):  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert cli_main(argv) == 2, argv[0]
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert re.search(message, record.getMessage()) and str(bad) in record.getMessage(), argv[0]
        assert "\n" not in record.getMessage()


def test_an_invalid_stored_config_is_named_with_its_checkpoint(
    random_checkpoint, tiny_drive, tmp_path, caplog
):
    state = load_checkpoint(random_checkpoint)
    bad = tmp_path / "bad.pt"
    torch.save(
        {**state, "config": {**state["config"], "data": {**state["config"]["data"], "height": -5}}}, bad
    )
    image = next(tiny_drive.glob("*/*_sync/image_02/data/*.png"))
    for argv in (
        ["evaluate", "--checkpoint", str(bad), "--data", str(tiny_drive)],
        ["infer", "--model", str(bad), "--input", str(image), "--out", str(tmp_path / "infer")],
    ):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert cli_main(argv) == 2, argv[0]
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert f"{bad}: its stored training config is invalid" in record.getMessage(), argv[0]
        assert "'data.height' must be >= 1, got -5" in record.getMessage(), argv[0]


def test_a_file_that_is_not_a_torch_save_is_named_for_what_it_is(random_checkpoint, random_onnx, tmp_path):
    state = load_checkpoint(random_checkpoint)
    with zipfile.ZipFile(tmp_path / "archive.pt", "w") as archive:
        archive.writestr("weights/a.npy", b"not torch")
    (tmp_path / "damaged.pt").write_bytes(random_checkpoint.read_bytes()[:1000])
    (tmp_path / "model.pt").write_bytes(random_onnx.read_bytes())
    (tmp_path / "notes.pt").write_text("epoch 3: loss 0.12\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"config": {}, "model": {}}, protocol=4))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    kinds = {
        "model.pt": "an ONNX model",
        "notes.pt": "a file of another kind",
        "empty.pt": "an empty file",
        "archive.pt": "a zip archive that torch.save did not write",
        "damaged.pt": "a damaged zip archive",
        "plain.pt": "a pickle that torch.save did not write",
        "scripted.pt": "a TorchScript model",
    }
    for name, kind in kinds.items():
        with pytest.raises(
            ValueError, match=f"^{re.escape(str(tmp_path / name))}: not a PyTorch checkpoint but {kind}"
        ):
            load_checkpoint(tmp_path / name)
    legacy = tmp_path / "legacy.pt"  # torch.save's format before PyTorch 1.6 still loads
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(legacy)["config"] == state["config"]


def test_resume_from_a_weights_only_checkpoint_names_what_is_missing(random_checkpoint, tiny_drive, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    state = load_checkpoint(random_checkpoint)
    torch.save({"config": state["config"], "model": state["model"]}, run / "checkpoints" / "last.pt")
    with pytest.raises(
        ValueError, match=r"last\.pt: not an ssim_depth checkpoint \(missing best_metric, epoch"
    ):
        Trainer(load_config(CONFIG, TINY), tiny_drive, run, resume=True)


def _scalars(run: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_cpu_recipe_trains_a_metric_model_with_velocity_supervision(stereo_drive, tmp_path, caplog):
    config = load_config(CONFIG, [*TINY, "optim.max_steps=2"])  # the shipped recipe's weights
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config, stereo_drive, tmp_path)
        metrics = trainer.fit()
    # The drive's OXTS covers every frame: all 8 training samples are supervised.
    assert "velocity supervision: 8 of 8 samples have odometry; the rest get no velocity term" in caplog.text
    scalars = _scalars(tmp_path)
    assert len(scalars["loss/velocity"]) == 2
    assert all(math.isfinite(v) for tag in ("loss/total", "loss/velocity") for v in scalars[tag])
    # A metric model: validated with and without median scaling, best.pt chosen by the metric AbsRel.
    assert {"abs_rel", "metric_abs_rel", "metric_a1", "scale_ratio"} <= set(metrics)
    assert {"val/abs_rel", "val/metric_abs_rel"} <= set(scalars)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["best_metric"] == pytest.approx(metrics["metric_abs_rel"])
    assert best["best_metric"] != pytest.approx(metrics["abs_rel"])


def test_velocity_supervision_without_odometry_is_refused(stereo_drive, tmp_path):
    data = shutil.copytree(stereo_drive, tmp_path / "data")
    for oxts in data.glob("*/*_sync/oxts"):
        shutil.rmtree(oxts)
    config = load_config(CONFIG, TINY)
    with pytest.raises(
        ValueError, match=f"{data}: loss.weights.velocity > 0 but none of the 8 training samples"
    ):
        Trainer(config, data, tmp_path / "run")


@pytest.mark.parametrize(("mode", "frame_ids"), [("MS", "[0, -1, 1]"), ("S", "[0]")])
def test_stereo_training_runs_and_resumes(stereo_drive, tmp_path, caplog, mode, frame_ids):
    overrides = [*TINY, "data.stereo=true", f"data.frame_ids={frame_ids}", "loss.weights.velocity=0"]
    with caplog.at_level(logging.WARNING, logger="ssim_depth_core.trainer"):
        Trainer(load_config(CONFIG, [*overrides, "optim.max_steps=2"]), stereo_drive, tmp_path).fit()
    assert "stereo training from the default initial depth (about 0.2 m)" in caplog.text
    scalars = _scalars(tmp_path)
    assert len(scalars["loss/photometric"]) == 2 and "loss/velocity" not in scalars
    assert all(math.isfinite(v) for v in scalars["loss/total"])
    assert "val/metric_abs_rel" in scalars  # the known baseline makes the model metric
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    # Stereo only (S) trains no pose net; MS does.
    assert any(name.startswith("pose_net.") for name in state["model"]) == (mode == "MS")
    resumed = Trainer(
        load_config(CONFIG, [*overrides, "optim.max_steps=3"]), stereo_drive, tmp_path, resume=True
    )
    assert resumed.step == 2
    resumed.fit()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3


def test_an_output_folder_that_is_a_broken_link_is_named_in_every_verb(
    random_checkpoint, tiny_drive, tmp_path, caplog
):
    loop, dangling = tmp_path / "loop", tmp_path / "dangling"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "gone")
    image = next(tiny_drive.glob("*/*_sync/image_02/data/*.png"))
    for out, link in (
        (loop, "a symbolic link that loops"),
        (dangling, f"a symbolic link to {tmp_path / 'gone'}"),
    ):
        for argv in (
            ["synth", "--out", str(out), "--drives", "1", "--frames", "3"],
            ["infer", "--model", str(random_checkpoint), "--input", str(image), "--out", str(out)],
            ["train", "--config", str(CONFIG), "--data", str(tiny_drive), "--out", str(out),
             *[f"--set={item}" for item in TINY]],
        ):  # fmt: skip
            caplog.clear()
            with caplog.at_level(logging.ERROR):
                assert cli_main(argv) == 2, argv[0]
            (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert record.getMessage().startswith(f"{out} is {link}"), (argv[0], record.getMessage())
    assert not (tmp_path / "gone").exists()


def test_an_output_path_that_is_a_file_is_refused(tiny_drive, tmp_path):
    out = tmp_path / "a_file"
    out.write_text("the user's file")
    with pytest.raises(ValueError, match=f"^{out} is not a folder: choose a folder for the run$"):
        Trainer(load_config(CONFIG, TINY), tiny_drive, out, overwrite=True)
    assert out.read_text() == "the user's file"
