"""An earlier run set aside while a new one starts: put back after a kill, never over newer outputs, never
from under a run that is still starting."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssim_depth_core.outputs import SetAside, earlier_outputs, require_folder

NAMES = ("depth", "frames.csv", "summary.json")


def _earlier_run(out: Path) -> None:
    (out / "depth").mkdir(parents=True)
    (out / "depth" / "000000.png").write_bytes(b"frame 0")
    (out / "frames.csv").write_text("index,stamp_ns,latency_ms\n0,1,2.5\n")
    (out / "notes.txt").write_text("the user's own file")


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _set_aside_and_die(out: Path, names: list[str]) -> None:
    """A process that sets ``names`` aside, makes the recorder's empty folder and is SIGKILLed."""
    code = (
        "import os, signal, sys; from pathlib import Path; from ssim_depth_core.outputs import SetAside; "
        "SetAside(sys.argv[1], sys.argv[2:]); (Path(sys.argv[1]) / 'depth').mkdir(exist_ok=True); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out), *names], check=False)
    assert result.returncode == -9


def test_what_a_killed_run_set_aside_is_put_back_over_its_empty_folders(tmp_path):
    _earlier_run(tmp_path)
    before = _tree(tmp_path)
    _set_aside_and_die(tmp_path, ["depth", "frames.csv"])
    assert "depth/000000.png" not in _tree(tmp_path) and list(tmp_path.glob(".earlier-run-*"))
    assert SetAside.recover(tmp_path, NAMES) == ["depth", "frames.csv"]
    assert _tree(tmp_path) == before and list(tmp_path.glob(".earlier-run-*")) == []
    assert SetAside.recover(tmp_path, NAMES) == []  # nothing left to put back


def test_a_running_runs_set_aside_is_left_alone(tmp_path):
    _earlier_run(tmp_path)
    running = SetAside(tmp_path, ["depth", "frames.csv"])
    assert SetAside.recover(tmp_path, NAMES) == []
    assert running.folder.is_dir() and not (tmp_path / "frames.csv").exists()
    running.restore()
    assert (tmp_path / "frames.csv").is_file() and list(tmp_path.glob(".earlier-run-*")) == []


def test_a_set_aside_run_is_not_put_back_over_newer_outputs_or_twice(tmp_path):
    _earlier_run(tmp_path)
    _set_aside_and_die(tmp_path, ["depth", "frames.csv"])
    (tmp_path / "depth" / "000000.png").write_bytes(b"a newer frame")
    after_kill = _tree(tmp_path)
    with pytest.raises(
        ValueError, match=r"\.earlier-run-\w+ holds an earlier run's depth, frames.csv, .* has depth"
    ):
        SetAside.recover(tmp_path, NAMES)
    assert _tree(tmp_path) == after_kill  # nothing moved either way

    (tmp_path / "depth" / "000000.png").unlink()
    (tmp_path / "frames.csv").write_text("a second killed run's earlier frames.csv")
    _set_aside_and_die(tmp_path, ["frames.csv"])
    after_kills = _tree(tmp_path)
    with pytest.raises(
        ValueError, match=r"\.earlier-run-\w+ and .*\.earlier-run-\w+ both hold .* frames.csv"
    ):
        SetAside.recover(tmp_path, NAMES)
    assert _tree(tmp_path) == after_kills


def test_a_folder_that_only_looks_set_aside_is_left_alone(tmp_path):
    (tmp_path / ".earlier-run-notes").mkdir()
    (tmp_path / ".earlier-run-notes" / "todo.txt").write_text("mine")
    (tmp_path / ".earlier-run-empty").mkdir()
    assert SetAside.recover(tmp_path, NAMES) == []
    assert (tmp_path / ".earlier-run-notes" / "todo.txt").read_text() == "mine"
    assert (tmp_path / ".earlier-run-empty").is_dir()


def test_empty_output_folders_are_no_earlier_run(tmp_path):
    (tmp_path / "depth").mkdir()
    assert earlier_outputs(tmp_path, NAMES, False, "recording") == ["depth"]  # removed, nothing refused
    (tmp_path / "frames.csv").write_text("")
    with pytest.raises(ValueError, match=r"holds an earlier recording \(frames.csv\)"):
        earlier_outputs(tmp_path, NAMES, False, "recording")


def test_an_output_folder_that_is_a_broken_link_is_refused(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"loop is a symbolic link that loops: choose a folder$"):
        require_folder(tmp_path / "loop", "choose a folder")
    with pytest.raises(
        ValueError, match=r"dangling is a symbolic link to .*gone, which does not exist: choose"
    ):
        require_folder(tmp_path / "dangling", "choose a folder")
    require_folder(tmp_path / "missing", "choose a folder")  # the caller creates it
    (tmp_path / "chain").symlink_to(tmp_path / "dangling")
    with pytest.raises(ValueError, match=r"chain is a symbolic link to .*gone, which does not exist"):
        require_folder(tmp_path / "chain", "choose a folder")  # the chain's end, not its next link
    (tmp_path / "a_file").write_text("")
    for parent, what in (
        ("loop", "a symbolic link that loops"),
        ("dangling", "a symbolic link to"),
        ("a_file", "not a folder"),
    ):
        out = tmp_path / parent / "run" / "1"
        with pytest.raises(ValueError, match=f"^{out}: {tmp_path / parent} is {what}"):
            require_folder(out, "choose a folder")
    require_folder(tmp_path / "missing" / "run", "choose a folder")
