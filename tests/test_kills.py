"""Kills and full disks (issue 18): a training run SIGKILLed at random moments, many inside checkpoint writes,
resumes from a loadable ``last.pt`` every time and leaves no temporary behind; a checkpoint write that hits a
file-size limit (a full disk) fails with one clear line, keeps the previous ``last.pt`` and leaves no
temporary. The figures of docs/reliability.md ("Kills and full disks") come from
``OMP_NUM_THREADS=1 .venv/bin/python -m pytest -s tests/test_kills.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssim_depth_core.checkpoint import TEMP_PATTERN, load_checkpoint, remove_stale_temporaries, write_atomic
from ssim_depth_core.data.synthetic import generate_dataset

fcntl = pytest.importorskip("fcntl", reason="the stale-temporary check uses POSIX advisory locks")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "synthetic_cpu.yaml"
# A small run: stereo only (no pose net), so a checkpoint with the optimiser is 172 MB (322 MB with the pose
# net); 64x128 frames, batches of 2, no validation pass, no preview images; last.pt after every step.
TINY = [
    "data.height=64",
    "data.width=128",
    "data.num_workers=0",
    "data.stereo=true",
    "data.frame_ids=[0]",
    "data.val_split=none",
    "loss.weights.velocity=0",
    "model.initial_depth=10",
    "optim.batch_size=2",
    "log_every=1000",
    "preview_every=1000",
    "checkpoint_every=1",
]
KILLS = 32
SEED = int(os.environ.get("SSIM_DEPTH_KILL_SEED", "18"))
RESUMED = re.compile(r"resumed from \S+ at step (\d+)")
REMOVED = re.compile(r"removed (\S+) \([\d.]+ MB\): the temporary of an interrupted")

# A parent that has imported torch and the trainer once and forks one training process per request
# (cli.main, exactly what training/train.py runs), so that 30+ restarts do not each pay Python's and torch's
# start-up (about 3 s on a small machine). It forks before any thread exists (checked), and reaps a child
# only when the test says so: until then its pid cannot be reused, so a SIGKILL reaches that child only.
ZYGOTE = r"""
import json, os, sys, threading
from ssim_depth_core.apps import cli
import ssim_depth_core.trainer
from torch.utils.tensorboard import SummaryWriter  # the trainer imports it lazily
threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
print(f"ready {threads}", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        code = 70
        try:
            code = cli.main(request["argv"])
        finally:
            print(f"EXIT {code}", flush=True)  # a killed child never gets here
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    sys.stdin.readline()  # "reap"
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("synth"), seed=5, drives=1, frames=10, width=128, height=64, bag="none",
        stereo=True, progress=False,
    )  # fmt: skip


def _arguments(data: Path, out: Path, *overrides: str, resume: bool = False) -> list[str]:
    arguments = ["train", "--config", str(CONFIG), "--data", str(data), "--out", str(out)]
    for item in [*TINY, *overrides]:
        arguments += ["--set", item]
    return arguments + (["--resume"] if resume else [])


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*.tmp") if TEMP_PATTERN.match(p.name)) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------------ units
def test_only_abandoned_temporaries_of_the_writers_pattern_are_removed(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    abandoned = tmp_path / ".last.pt.0123abcd.tmp"
    abandoned.write_bytes(b"x" * 1000)
    busy = tmp_path / ".best.pt.89abcdef.tmp"
    busy.write_bytes(b"y")
    others = [
        tmp_path / name for name in ("last.pt", ".last.pt.zz.tmp", "notes.tmp", ".last.pt.0123abcd.tmp~")
    ]
    for path in others:
        path.write_bytes(b"z")
    # a live writer's lock (flock locks belong to an open file, so this process's own second open conflicts)
    with open(busy, "rb+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        removed = remove_stale_temporaries(tmp_path)
        assert removed == [abandoned]
        assert busy.exists() and all(p.exists() for p in others) and not abandoned.exists()
    assert "temporary of an interrupted last.pt write" in caplog.text and "live process" in caplog.text
    assert remove_stale_temporaries(tmp_path) == [busy]  # its writer is gone
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_failed_atomic_write_names_the_file_keeps_the_old_one_and_leaves_no_temporary(
    tmp_path, monkeypatch, code
):
    path = tmp_path / "last.pt"
    write_atomic(path, b"old")

    def fail(_fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError) as raised:
        write_atomic(path, b"new")
    message = str(raised.value)
    assert raised.value.errno == code and message.startswith(f"cannot write {path}: {os.strerror(code)}")
    assert "the previous last.pt is kept" in message and "\n" not in message
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(OSError, match="no other.pt was written"):
        write_atomic(tmp_path / "other.pt", b"new")
    assert sorted(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------------------------------- kills, full disk
class Zygote:
    """The forking parent (:data:`ZYGOTE`): ``start`` a training process, ``reap`` it for its exit code."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=ROOT, env=env,
        )  # fmt: skip
        ready = self.process.stdout.readline().split()
        assert ready[:1] == ["ready"], "the forking parent did not start"
        assert ready[1] == "1", f"the forking parent has {ready[1]} threads: forking it would not be safe"
        self.child: int | None = None

    def start(self, arguments: list[str], log: Path) -> int:
        log.write_text("")  # the child may be killed before it opens its log
        self.process.stdin.write(json.dumps({"argv": arguments, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        self.child = int(self.process.stdout.readline())
        return self.child

    def reap(self) -> int:
        """The child's exit code (negative: killed by that signal)."""
        self.process.stdin.write("reap\n")
        self.process.stdin.flush()
        self.child = None
        return int(self.process.stdout.readline())

    def close(self) -> None:
        if self.child is not None:  # not reaped yet, so the pid is still this child's
            os.kill(self.child, signal.SIGKILL)
            self.reap()
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_for(condition, what: str, log: Path, timeout: float = 120.0) -> None:
    """Poll ``condition`` while the training process writing ``log`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()}")
        if "EXIT " in log.read_text()[-20:]:
            raise AssertionError(f"the run ended while the test waited for {what}:\n{log.read_text()}")
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_at_random_moments_and_inside_checkpoint_writes_loses_nothing(drive, tmp_path):
    """``KILLS`` SIGKILLs of one run: half at a random moment after the start (start-up, loading, steps,
    writes), half right after a checkpoint temporary appears (plus 0-0.3 s: inside the write). After each,
    ``last.pt`` loads with the weights-only loader and its step never goes back; the next run resumes from
    exactly that step (or, killed before it got that far, wrote nothing); a last run completes, with no
    temporary left."""
    rng = random.Random(SEED)
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.pt"
    zygote = Zygote()
    started = time.monotonic()
    step = None  # last.pt's step after the latest kill
    after_temporary, resumed, left_by_kills, removed = 0, 0, set(), set()
    try:
        for kill in range(KILLS):
            log = tmp_path / f"run{kill:02d}.log"
            zygote.start(_arguments(drive, out, "optim.epochs=1000", resume=kill > 0), log)
            if kill == 0:  # the first kill comes once there is a checkpoint to resume from
                _wait_for(last.exists, "the first last.pt", log)
                time.sleep(rng.uniform(0.0, 1.0))
            elif rng.random() < 0.5:  # inside the first or the second checkpoint write of this run
                after_temporary += 1
                writes, seen = rng.randint(1, 2), set()

                def written(seen=seen, writes=writes) -> bool:
                    seen.update(p.name for p in _temporaries(checkpoints))
                    return len(seen) >= writes

                _wait_for(written, f"checkpoint temporary {writes}", log)
                time.sleep(rng.uniform(0.0, 0.2))
            else:
                time.sleep(rng.uniform(0.0, 4.0))
            os.kill(zygote.child, signal.SIGKILL)
            code = zygote.reap()
            text = log.read_text()
            assert code == -signal.SIGKILL, f"run {kill} ended with {code} before the kill:\n{text}"
            left_by_kills.update(p.name for p in _temporaries(checkpoints))
            removed.update(Path(name).name for name in REMOVED.findall(text))
            now = load_checkpoint(last)["step"]  # weights-only; raises on a torn or foreign file
            match = RESUMED.search(text)
            if kill > 0 and match:
                resumed += 1
                assert int(match[1]) == step, f"run {kill} resumed at step {match[1]}, last.pt had {step}"
            elif kill > 0:  # killed before it resumed: it cannot have written anything
                assert now == step, f"run {kill} wrote step {now} without resuming from {step}:\n{text}"
            assert step is None or now >= step
            step = now

        log = tmp_path / "final.log"
        final = step + 3
        zygote.start(
            _arguments(drive, out, "optim.epochs=1000", f"optim.max_steps={final}", resume=True), log
        )
        code = zygote.reap()  # waits for the run to end
        text = log.read_text()
        assert code == 0, text
    finally:
        zygote.close()
    removed.update(Path(name).name for name in REMOVED.findall(text))
    assert RESUMED.search(text)[1] == str(step)
    assert (
        load_checkpoint(last)["step"] == final and load_checkpoint(checkpoints / "best.pt")["step"] == final
    )
    left = _temporaries(checkpoints)
    assert left == [], f"temporaries left: {left}"
    assert left_by_kills, "no kill landed inside a checkpoint write"
    # every temporary a kill left was removed by a later start, which logged it (unless killed in between)
    assert removed <= left_by_kills, removed - left_by_kills
    print(
        f"\n{KILLS} SIGKILLs (seed {SEED}; {after_temporary} right after a checkpoint temporary appeared, "
        f"the others at random moments): {len(left_by_kills)} left a temporary (killed inside a write); "
        f"last.pt loaded after every kill; {resumed} of {KILLS - 1} restarts resumed from it at exactly its "
        f"step (the others were killed before resuming and wrote nothing); {len(left_by_kills)} stale "
        f"temporaries removed by later starts ({len(removed)} logged); a last run resumed at step {step} and "
        f"completed at step {final}; temporaries left: {len(left)}; {time.monotonic() - started:.0f} s"
    )


@pytest.mark.slow
def test_a_checkpoint_write_past_a_file_size_limit_fails_with_one_line_and_keeps_the_last_checkpoint(
    drive, tmp_path
):
    """A disk that fills during a checkpoint write, made portable: RLIMIT_FSIZE (no tmpfs, no root) below
    a checkpoint's size, with SIGXFSZ ignored so that the write fails with EFBIG instead of killing the
    process. Every checkpoint has the same size, so the limit applies to a resumed run: the first run's
    checkpoints fit, the resumed run's next one does not."""
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.pt"
    command = [sys.executable, str(ROOT / "training" / "train.py")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run(
        command + _arguments(drive, out, "optim.max_steps=2")[1:], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert load_checkpoint(last)["step"] == 2
    limit = last.stat().st_size // 2

    def file_size_limit() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    second = subprocess.run(
        command + _arguments(drive, out, "optim.max_steps=4", resume=True)[1:], capture_output=True,
        text=True, env=env, timeout=600, preexec_fn=file_size_limit,
    )  # fmt: skip
    output = second.stdout + second.stderr
    assert second.returncode == 2, output
    errors = [line for line in second.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    error = errors[0]
    assert f"cannot write {last}: File too large" in error and "the previous last.pt is kept" in error, error
    assert "Traceback" not in output
    assert load_checkpoint(last)["step"] == 2
    assert _temporaries(last.parent) == []
    print(f"\nfull disk (RLIMIT_FSIZE {limit / 1e6:.0f} MB): exit {second.returncode}; {error}")


def test_ctrl_c_ends_training_with_one_line_saying_how_to_resume(drive, tmp_path):
    """SIGINT (Ctrl-C in a terminal) once the first checkpoint exists: exit 130, one error line, no
    traceback, and --resume continues from that checkpoint."""
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.pt"
    command = [sys.executable, str(ROOT / "training" / "train.py")]
    arguments = _arguments(drive, out, "optim.max_steps=200", "checkpoint_every=1")[1:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with subprocess.Popen(command + arguments, stderr=subprocess.PIPE, text=True, env=env) as process:
        deadline = time.monotonic() + 300
        while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(
        "interrupted; the last checkpoint is kept: continue with --resume"
    )
    assert "Traceback" not in stderr
    step = load_checkpoint(last)["step"]
    again = _arguments(drive, out, f"optim.max_steps={step + 1}", "checkpoint_every=1", resume=True)[1:]
    resumed = subprocess.run(command + again, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(last)["step"] == step + 1


def test_a_path_under_a_regular_file_is_named_by_the_atomic_write(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError, match=r"cannot write .*a_file/model\.onnx: .*; no model\.onnx was written"):
        write_atomic(tmp_path / "a_file" / "model.onnx", b"data")
