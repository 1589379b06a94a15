"""Progress bars that read well both on a terminal and in a log (CI, ``make demo | tee log``)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_LINES = 10  # a bar written to a log prints a line per tenth of its total
LOG_INTERVAL_S = 60.0  # ... or, without a known total, at most one line a minute


class _LogBar(tqdm):
    """tqdm that writes a plain line whenever it shows new progress, and a last one at close: no carriage
    return, no redraw, no blank line."""

    _shown: int | None = None  # the count of the last line written

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        closing = self.disable  # close() disables the bar, then displays it a last time and ends the line
        finished = self.total and self.n >= self.total  # close() writes that line, with the overall rate
        if msg == "" or (not closing and (finished or self.n == self._shown)):
            return False  # a log keeps its lines; a new postfix or description waits for the next line
        self._shown = self.n
        self.fp.write(str(self) if msg is None else msg)
        if not closing:
            self.fp.write("\n")
        self.fp.flush()
        return False  # nothing on screen to erase

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear in a log (tqdm.write and logging_redirect_tqdm call this)."""


def progress_bar(iterable: Iterable | None = None, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm progress bar (``kwargs`` as tqdm's) on ``file`` (default stderr).

    On a terminal, the usual redrawn bar. Elsewhere (a pipe, a file) plain lines: one at the start, one per
    tenth of the total (per minute when the total is unknown) and one at the end, without carriage returns;
    a transient bar (``leave=False``) writes nothing there.
    """
    file = sys.stderr if file is None else file
    if file.isatty():
        return tqdm(iterable, file=file, dynamic_ncols=True, **kwargs)
    total = kwargs.pop("total", None)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    disable = kwargs.pop("disable", False) or kwargs.get("leave") is False
    return _LogBar(
        iterable,
        file=file,
        total=total,
        disable=disable,
        ascii=True,
        miniters=math.ceil(total / LOG_LINES) if total else 1,
        mininterval=0.0 if total else LOG_INTERVAL_S,
        maxinterval=math.inf,  # tqdm's monitor would otherwise drop miniters to 1 after 10 s without a line
        **kwargs,
    )
