"""An earlier run set aside while a new one starts: put back after a kill, never over newer outputs."""

from pathlib import Path

import pytest

from ssim_depth_core.outputs import SetAside, require_folder


def _earlier_run(out: Path) -> None:
    (out / "depth").mkdir(parents=True)
    (out / "depth" / "000000.png").write_bytes(b"frame 0")
    (out / "frames.csv").write_text("index,stamp_ns,latency_ms\n0,1,2.5\n")
    (out / "notes.txt").write_text("the user's own file")


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_what_a_killed_run_set_aside_is_put_back_over_its_empty_folders(tmp_path):
    _earlier_run(tmp_path)
    before = _tree(tmp_path)
    SetAside(tmp_path, ["depth", "frames.csv"])  # then the run is killed: neither discard nor restore
    (tmp_path / "depth").mkdir()  # the killed run's recorder had made its folders
    assert "depth/000000.png" not in _tree(tmp_path)
    assert SetAside.recover(tmp_path) == ["depth", "frames.csv"]
    assert _tree(tmp_path) == before and list(tmp_path.glob(".earlier-run-*")) == []
    assert SetAside.recover(tmp_path) == []  # nothing left to put back


def test_a_set_aside_run_is_not_put_back_over_newer_outputs(tmp_path):
    _earlier_run(tmp_path)
    SetAside(tmp_path, ["depth", "frames.csv"])
    (tmp_path / "depth").mkdir()
    (tmp_path / "depth" / "000000.png").write_bytes(b"a newer frame")
    after_kill = _tree(tmp_path)
    with pytest.raises(
        ValueError, match=r"\.earlier-run-\w+ holds an earlier run's depth, frames.csv, .* has depth"
    ):
        SetAside.recover(tmp_path)
    assert _tree(tmp_path) == after_kill  # nothing moved either way


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
