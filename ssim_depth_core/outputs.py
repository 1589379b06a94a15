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

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (see SetAside)
    fcntl = None


def occupied(path: str | Path) -> bool:
    """Whether anything is at ``path``, a link whose target is missing included."""
    path = Path(path)
    return path.exists() or path.is_symlink()


def require_folder(path: str | Path, advice: str) -> None:
    """Refuse a ``path`` whose nearest existing part (itself, else its parent, ...) is not a folder or is a
    link that leads nowhere: a missing folder is fine where the caller can create it.

    Raises:
        ValueError: "``path`` is not a folder: ``advice``", "``path``: PARENT is a symbolic link that loops:
            ``advice``", ...
    """
    path = Path(path)
    nearest = _nearest_existing(path)
    if nearest is None:
        return
    where = "" if nearest == path else f"{path}: "
    if link := broken_link(nearest):
        raise ValueError(f"{where}{nearest} is {link}: {advice}")
    if not nearest.is_dir():
        raise ValueError(f"{where}{nearest} is not a folder: {advice}")


def earlier_outputs(
    out_dir: str | Path,
    names: Iterable[str],
    overwrite: bool,
    run: str,
    inputs: Mapping[str, str | Path] | None = None,
) -> list[str]:
    """The ``names`` present in ``out_dir`` (an earlier ``run``'s outputs, e.g. "recording"), which the caller
    removes: with ``overwrite``, or when all are empty folders (which lose nothing). None of the run's
    ``inputs`` (option -> path, e.g. {"--input": ...}) may be one of them or inside one.

    Raises:
        ValueError: ``out_dir`` exists and is not a folder; or it holds any of ``names`` and not ``overwrite``
            (the message names the folder, the outputs found and ``--overwrite``); or an input is in them.
    """
    out_dir = Path(out_dir)
    require_folder(out_dir, "choose a folder for the outputs")
    found = [name for name in names if occupied(out_dir / name)]
    earlier = [name for name in found if not _empty_folder(out_dir / name)]  # an empty folder loses nothing
    if earlier and not overwrite:
        raise ValueError(
            f"{out_dir} holds an earlier {run} ({', '.join(earlier)}): pass --overwrite to replace it, or "
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
        blocking = _nearest_existing(Path(path).parent)
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

    A run killed outright (SIGKILL) does neither; :meth:`recover` puts its hidden folder back next time. The
    run holds an exclusive advisory lock (``flock``) on the folder while it lives; the kernel drops it when
    the process dies, which is how :meth:`recover` tells a killed run's folder from a running one's.
    """

    PREFIX = ".earlier-run-"

    def __init__(self, out_dir: str | Path, names: Iterable[str]) -> None:
        self.out_dir, self.names, self.folder, self._lock = Path(out_dir), list(names), None, None
        if self.names:
            self.folder = Path(tempfile.mkdtemp(prefix=self.PREFIX, dir=self.out_dir))
            self._lock = _try_lock(self.folder)
            for name in self.names:
                os.replace(self.out_dir / name, self.folder / name)

    def discard(self) -> None:
        """Remove the earlier outputs for good (idempotent)."""
        if self.folder is not None:
            shutil.rmtree(self.folder)
            self._release()

    def restore(self) -> None:
        """Put the earlier outputs back in place of the new run's of the same names (idempotent; after
        :meth:`discard` nothing is left to restore)."""
        if self.folder is not None:
            remove_outputs(self.out_dir, self.names)
            for name in self.names:
                os.replace(self.folder / name, self.out_dir / name)
            self.folder.rmdir()
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
        self.folder, self._lock = None, None

    @classmethod
    def recover(cls, out_dir: str | Path, names: Iterable[str]) -> list[str]:
        """Put back what killed runs left set aside in ``out_dir``; returns the names restored.

        Only hidden folders that no living run holds and that hold nothing but ``names`` (the run's outputs)
        are taken. A run killed before its start was proven has written at most empty folders of its own (a
        recorder's image folders), which give way; any other output of the same name, or two such folders
        holding the same name, leave the choice to the user, and nothing is moved.

        Raises:
            ValueError: naming the hidden folder(s), what they hold and what stands in the way.
        """
        out_dir, names = Path(out_dir), set(names)
        found: dict[Path, list[str]] = {}
        locks = []
        try:
            for folder in sorted(out_dir.glob(f"{cls.PREFIX}*")):
                if not folder.is_dir() or folder.is_symlink():
                    continue
                held = sorted(entry.name for entry in folder.iterdir())
                if not held or not set(held) <= names:
                    continue  # not a set-aside run of these outputs
                lock = _try_lock(folder)
                if lock is None and fcntl is not None:
                    continue  # a running run's
                locks.append(lock)
                found[folder] = held
            _check_recoverable(out_dir, found)
            for folder, held in found.items():
                remove_outputs(out_dir, held)  # empty folders, by _check_recoverable
                for name in held:
                    os.replace(folder / name, out_dir / name)
                folder.rmdir()
        finally:
            for lock in locks:
                if lock is not None:
                    os.close(lock)
        return sorted(name for held in found.values() for name in held)


def _check_recoverable(out_dir: Path, found: dict[Path, list[str]]) -> None:
    """Refuse to put back ``found`` (hidden folder -> names) over outputs with content or one name twice."""
    seen: dict[str, Path] = {}
    for folder, held in found.items():
        for name in held:
            if name in seen:
                raise ValueError(
                    f"{seen[name]} and {folder} both hold an earlier run's {name}, set aside by runs that "
                    f"were killed while starting: move the one to keep into {out_dir} and remove both folders"
                )
            seen[name] = folder
        blocking = [name for name in held if occupied(out_dir / name) and not _empty_folder(out_dir / name)]
        if blocking:
            raise ValueError(
                f"{folder} holds an earlier run's {', '.join(held)}, set aside by a run that was killed "
                f"while starting, but {out_dir} has {', '.join(blocking)} again: move the ones to keep into "
                "place and remove that folder"
            )


def _try_lock(folder: Path) -> int | None:
    """An exclusive, non-blocking ``flock`` on ``folder``: its descriptor, or None when another process
    holds it (or the platform has no ``flock``)."""
    if fcntl is None:
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _nearest_existing(path: Path) -> Path | None:
    """``path`` or the closest of its parents that is occupied (a broken link counts); None for none."""
    return next((part for part in (path, *path.parents) if occupied(part)), None)


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
