"""Outputs of the tools that write one run into a folder (``ssim-depth infer``, the ROS package's ``record``
and ``pipeline``) or to named files (``ssim-depth export``): an earlier run's are never overwritten unasked.

A run is known by the names it writes (files or folders directly in the output folder). A folder that holds
any of them is refused unless the caller overwrites, and then exactly those are removed; the user's other
files stay. Check early (:func:`earlier_outputs`, before anything slow), remove late (:func:`remove_outputs`,
once the new run has everything it needs), so that a run which cannot start loses nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ssim_depth_core.errors import broken_link


def occupied(path: str | Path) -> bool:
    """Whether anything is at ``path``, a link whose target is missing included."""
    path = Path(path)
    return path.exists() or path.is_symlink()


def require_folder(path: str | Path, advice: str) -> None:
    """Refuse a ``path`` that exists and is not a folder, or is a link that leads nowhere (a missing one is
    fine: the caller creates it).

    Raises:
        ValueError: "``path`` is not a folder: ``advice``" (or "is a symbolic link that loops: ...").
    """
    if link := broken_link(path):
        raise ValueError(f"{path} is {link}: {advice}")
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{path} is not a folder: {advice}")


def earlier_outputs(
    out_dir: str | Path,
    names: Iterable[str],
    overwrite: bool,
    run: str,
    inputs: Mapping[str, str | Path] | None = None,
) -> list[str]:
    """The ``names`` present in ``out_dir`` (an earlier ``run``'s outputs, e.g. "recording"), which the caller
    removes with ``overwrite``: none of the run's ``inputs`` (option -> path, e.g. {"--input": ...}) may be
    one of them or inside one.

    Raises:
        ValueError: ``out_dir`` exists and is not a folder; or it holds any of ``names`` and not ``overwrite``
            (the message names the folder, the outputs found and ``--overwrite``); or an input is in them.
    """
    out_dir = Path(out_dir)
    require_folder(out_dir, "choose a folder for the outputs")
    found = [name for name in names if occupied(out_dir / name)]
    if found and not overwrite:
        raise ValueError(
            f"{out_dir} holds an earlier {run} ({', '.join(found)}): pass --overwrite to replace it, or "
            "choose another folder"
        )
    for option, path in (inputs or {}).items():
        for name in found:
            output = (out_dir / name).resolve()
            if Path(path).resolve() == output or output in Path(path).resolve().parents:
                raise ValueError(
                    f"{option} {path} is in {out_dir / name}, an output of the earlier {run} that "
                    "--overwrite removes: copy it elsewhere first, or choose another output folder"
                )
    return found


def refuse_earlier_files(paths: Iterable[str | Path], overwrite: bool, run: str) -> None:
    """Refuse to write ``paths`` (files a ``run``, e.g. "export", writes whole) when any exists, unless
    ``overwrite``; the caller then replaces them, each in one step, and removes nothing else.

    Raises:
        ValueError: naming the files found and ``--overwrite``.
    """
    found = [str(path) for path in paths if occupied(path)]
    if found and not overwrite:
        raise ValueError(
            f"{', '.join(found)} already exist{'s' if len(found) == 1 else ''} (an earlier {run}?): pass "
            "--overwrite to replace, or choose other paths"
        )


def check_output_files(
    outputs: Sequence[str | Path], inputs: Mapping[str, str | Path], overwrite: bool, run: str
) -> None:
    """Refuse the files a ``run`` (e.g. "export") would write, before it does any work: one that is one of its
    ``inputs`` (name -> path, e.g. {"checkpoint": ...}; even with ``overwrite``), two outputs at one path, a
    folder, a path under something that is not a folder, or (unless ``overwrite``) an existing file.

    Raises:
        ValueError: naming the path and why.
    """
    resolved = [Path(path).resolve() for path in outputs]
    for name, path in inputs.items():
        if Path(path).resolve() in resolved:
            raise ValueError(f"{path} is the {name} of the {run}: write its outputs to other paths")
    for path, target in zip(outputs, resolved, strict=True):
        if resolved.count(target) > 1:
            raise ValueError(f"{path} is named for two outputs of the {run}: give each its own path")
        if Path(path).is_dir():
            raise ValueError(f"{path} is a folder: name a file")
        blocking = next((parent for parent in Path(path).parents if occupied(parent)), None)
        if blocking is not None and not blocking.is_dir():
            raise ValueError(f"{path}: {blocking} is not a folder")
    refuse_earlier_files(outputs, overwrite, run)


def remove_outputs(out_dir: str | Path, names: Iterable[str]) -> None:
    """Remove ``names`` (files or folders; a link itself, never what it points to) from ``out_dir``;
    missing ones are fine, everything else in the folder stays."""
    for name in names:
        path = Path(out_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class SetAside:
    """An earlier run's outputs (``names`` in ``out_dir``), moved into a hidden folder of ``out_dir`` while a
    new run starts, for a run whose start can only be proven by doing it (a node that must serve a frame):
    :meth:`discard` removes them once it has started, :meth:`restore` puts them back when it could not.
    A run killed outright (SIGKILL) does neither; :meth:`recover` puts its hidden folder back next time."""

    PREFIX = ".earlier-run-"

    def __init__(self, out_dir: str | Path, names: Iterable[str]) -> None:
        self.out_dir, self.names, self.folder = Path(out_dir), list(names), None
        if self.names:
            self.folder = Path(tempfile.mkdtemp(prefix=self.PREFIX, dir=self.out_dir))
            for name in self.names:
                os.replace(self.out_dir / name, self.folder / name)

    def discard(self) -> None:
        """Remove the earlier outputs for good (idempotent)."""
        if self.folder is not None:
            shutil.rmtree(self.folder)
            self.folder = None

    def restore(self) -> None:
        """Put the earlier outputs back in place of the new run's of the same names (idempotent; after
        :meth:`discard` nothing is left to restore)."""
        if self.folder is not None:
            remove_outputs(self.out_dir, self.names)
            for name in self.names:
                os.replace(self.folder / name, self.out_dir / name)
            self.folder.rmdir()
            self.folder = None

    @classmethod
    def recover(cls, out_dir: str | Path) -> list[str]:
        """Put back what a killed run left set aside in ``out_dir``; returns the names restored.

        A run killed before its start was proven has written at most empty folders of its own (a recorder's
        image folders), which give way; any other output of the same name means the folder is no longer
        as that run left it, and the choice is the user's.

        Raises:
            ValueError: naming the hidden folder, what it holds and what stands in its way.
        """
        out_dir = Path(out_dir)
        restored = []
        for folder in sorted(out_dir.glob(f"{cls.PREFIX}*")):
            if not folder.is_dir() or folder.is_symlink():
                continue
            names = sorted(entry.name for entry in folder.iterdir())
            blocking = [
                name for name in names if occupied(out_dir / name) and not _empty_folder(out_dir / name)
            ]
            if blocking:
                raise ValueError(
                    f"{folder} holds an earlier run's {', '.join(names)}, set aside by a run that was killed "
                    f"while starting, but {out_dir} has {', '.join(blocking)} again: move the ones to keep "
                    "into place and remove that folder"
                )
            remove_outputs(out_dir, names)
            for name in names:
                os.replace(folder / name, out_dir / name)
            folder.rmdir()
            restored += names
        return restored


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
