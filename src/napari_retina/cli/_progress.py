"""The command line's one progress adapter: the core's ``progress(done, total)`` callbacks as a tqdm bar.

Every command module imports :func:`tqdm_progress` (and :func:`write_line` for
lines printed while a bar is open) from here; nothing here imports a command.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from .._progress import Progress


@contextlib.contextmanager
def tqdm_progress(desc: str, unit: str = "frame", disable: bool = False) -> Iterator[Progress]:
    """A ``progress(done, total)`` callback drawing a tqdm bar (on stderr), opened on its first call.

    ``desc`` labels the bar, ``unit`` names what ``done`` and ``total`` count
    (frames, batches, experiments); ``disable`` (``--quiet``) draws nothing.
    Opening the bar lazily keeps input errors (raised before any work) free of
    an empty bar on the terminal. The bar is closed when the block ends. It is
    drawn as a courtesy: a stderr that cannot be written (a log on a full disk,
    a closed stream) stops the drawing, not the work.

    Example
    -------
    >>> with tqdm_progress("predict", disable=True) as progress:   # doctest: +SKIP
    ...     rates = nr.predict(model, stim, progress=progress)
    """
    from tqdm import tqdm

    bar = None
    broken = disable   # nothing to draw: --quiet, or a stderr that failed

    def progress(done: int, total: int) -> None:
        nonlocal bar, broken
        if broken:
            return
        try:
            if bar is None:
                bar = tqdm(total=total, unit=unit, desc=desc)
            bar.total = total
            bar.n = done
            bar.refresh()
        except (OSError, ValueError, AttributeError):   # a full or closed stderr (ValueError: closed; None: no stream)
            broken = True

    try:
        yield progress
    finally:
        if bar is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                bar.close()


def write_line(text: str) -> None:
    """Print ``text`` as one line on stdout without breaking an open progress bar."""
    from tqdm import tqdm

    tqdm.write(text)
