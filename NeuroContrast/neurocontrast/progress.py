"""Progress reporting shared by the core, the command line and the Slicer modules.

Long-running core functions take ``progress: ProgressCallback | None``; they call it with a fraction in
[0, 1] and a short message. The command line turns it into a tqdm bar (:func:`tqdm_progress`), the Slicer
logic into a progress dialog or a status line.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

ProgressCallback = Callable[[float, str], None]


def report(progress: Optional[ProgressCallback], fraction: float, message: str = "") -> None:
    """Call ``progress(fraction, message)`` if a callback was given; clamp the fraction to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def scaled(progress: Optional[ProgressCallback], start: float, stop: float) -> Optional[ProgressCallback]:
    """A callback that maps a sub-task's [0, 1] onto [start, stop] of ``progress`` (None stays None)."""
    if progress is None:
        return None

    def _sub(fraction: float, message: str = "") -> None:
        report(progress, start + (stop - start) * fraction, message)

    return _sub


@contextlib.contextmanager
def tqdm_progress(description: str, disable: bool = False) -> Iterator[ProgressCallback]:
    """Context manager yielding a :data:`ProgressCallback` drawn as a tqdm bar on stderr (0-100 %)."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=description, unit="%", disable=disable, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def _update(fraction: float, message: str = "") -> None:
        bar.n = round(100 * fraction, 1)
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield _update
    finally:
        bar.close()


@contextlib.contextmanager
def progress_lines(stream=None) -> Iterator[ProgressCallback]:
    """Context manager yielding a :data:`ProgressCallback` that prints ``PROGRESS <fraction> <message>`` lines
    (stdout by default, flushed): what ``NeuroContrastLib.runner.CommandRunner`` reads from a subprocess."""
    out = sys.stdout if stream is None else stream

    def _line(fraction: float, message: str = "") -> None:
        print(f"PROGRESS {fraction:.4f} {message}", file=out, flush=True)

    yield _line
