"""A tiny progress bar on stderr: ``[#####.....] 5/10 2d ... k15 fft timed``.

On a terminal it redraws one line and erases it when done; otherwise (a log
file, CI) it writes one line per finished item and nothing for the rest.
"""
from __future__ import annotations

import sys


class Progress:
    """Count ``total`` items; use as a context manager.

    Parameters
    ----------
    total : int
    title : str
        Printed before the counter.
    width : int
        Characters of the bar.
    stream : file, optional
        Defaults to ``sys.stderr``.
    """

    def __init__(self, total: int, title: str = "", width: int = 20, stream=None):
        self.total, self.title, self.width = max(total, 1), title, width
        self.stream = stream or sys.stderr
        self.done = 0
        self._live = self.stream.isatty()
        self._shown = 0

    def _line(self, label: str) -> str:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.title} [{bar}] {self.done}/{self.total} {label}"

    def _write(self, line: str):
        pad = " " * max(self._shown - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._shown = len(line)

    def show(self, label: str):
        """Redraw with ``label`` describing the work in progress (terminal only)."""
        if self._live:
            self._write(self._line(label))

    def advance(self, label: str, items: int = 1):
        """``items`` more items done."""
        self.done = min(self.done + items, self.total)
        if self._live:
            self._write(self._line(label))
        else:
            self.stream.write(self._line(label) + "\n")
            self.stream.flush()

    def close(self):
        if self._live and self._shown:
            self._write("")
            self.stream.write("\r")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc):
        self.close()
