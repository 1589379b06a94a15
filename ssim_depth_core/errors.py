"""Errors in one line, for a log or a refusal: the libraries underneath spread theirs over several."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none)."""
    return next(iter(str(error).strip().splitlines()), type(error).__name__)


def yaml_error_line(error: BaseException) -> str:
    """A YAML parse error (PyYAML's or ruamel's) as its problem and where, e.g. "expected ',' or ']', but
    got '<stream end>' at line 2, column 1"; any other error as its first line."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return first_line(error)


def yaml_error_in(error: BaseException) -> BaseException | None:
    """The YAML parse error that ``error`` was raised from (itself included), if any."""
    while error is not None:
        if getattr(error, "problem_mark", None) is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


def not_found(what: str, path: str | Path) -> FileNotFoundError:
    """The error for a missing ``what`` (e.g. "checkpoint") at ``path``; it says when ``path`` is a folder
    (where a file was wanted), or a link that loops or whose target is missing (``Path.exists`` is False)."""
    message = f"{what} not found: {path}"
    if Path(path).is_dir():
        message += " (a folder, not a file)"
    elif link := broken_link(path):
        message += f" ({link})"
    return FileNotFoundError(message)


def broken_link(path: str | Path) -> str | None:
    """What is wrong with ``path`` when it is a symbolic link that leads nowhere ("a symbolic link that
    loops", "a symbolic link to TARGET, which does not exist"); None for anything else."""
    if not Path(path).is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link that loops"
        return f"a symbolic link to {os.path.realpath(path)}, which does not exist"  # a chain's last target
    return None
