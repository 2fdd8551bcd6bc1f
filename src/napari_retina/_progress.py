"""Progress reporting and cancellation, shared by every long computation.

One pattern everywhere: a long core function takes ``progress``, a callable
``progress(done, total)`` called after each unit of work (frames, batches,
epochs: the docstring of the function says which). To cancel, the callable
raises :class:`Cancelled`; the core function lets it propagate and leaves no
half-written output behind. The core never imports Qt: the napari widgets wrap
a :class:`CancelToken` around their progress bar.

Example
-------
>>> token = CancelToken()
>>> def show(done, total): print(f"{done}/{total}")
>>> cb = token.wrap(show)
>>> token.cancel(); cb(1, 10)
Traceback (most recent call last):
...
napari_retina._progress.Cancelled: cancelled by the user
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised (by a progress callback) to stop a long computation."""


def report(progress: Optional[Progress], done: int, total: int) -> None:
    """Call ``progress(done, total)`` when a callback was given; anything else not callable is a TypeError."""
    if progress is not None:
        if not callable(progress):
            raise TypeError(f"progress must be a callable progress(done, total) or None, "
                            f"got {type(progress).__name__} {progress!r}")
        progress(int(done), int(total))


def within(progress: Optional[Progress], start: int, stop: int, total: int) -> Optional[Progress]:
    """A ``progress(done, n)`` for one part of a longer computation, reported as ``start..stop`` of ``total``.

    For a computation made of stages, each with its own progress: the
    stage's ``done/n`` is scaled into ``[start, stop]`` and passed on to
    ``progress(·, total)`` (None when ``progress`` is None). Reports never go
    back, even when the stage calls several functions that each count from
    0, so a bar only moves forward; a :class:`Cancelled` raised by
    ``progress`` propagates from the stage's report.

    >>> sub = within(lambda d, t: print(f"{d}/{t}"), 100, 200, 300)
    >>> sub(1, 2)
    150/300
    """
    if progress is None:
        return None
    last = [start]

    def sub(done: int, n: int) -> None:
        last[0] = max(last[0], start + (stop - start) * min(max(int(done), 0), max(int(n), 1)) // max(int(n), 1))
        report(progress, last[0], total)

    return sub


class LastReport:
    """``progress`` that remembers its last report: :meth:`again` reports it once more, so that a stage with no
    progress of its own (an analysis' reduction when no ``reduce_progress`` is given) gives a Cancel raised in
    ``progress`` a chance to act, without moving a bar back."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.last: Optional[tuple[int, int]] = None

    def __call__(self, done: int, total: int) -> None:
        self.last = (int(done), int(total))
        report(self.progress, done, total)

    def again(self, *_: int) -> None:
        """Report the last ``(done, total)`` again (nothing before the first report); any arguments are ignored."""
        if self.last is not None:
            report(self.progress, *self.last)


class CancelToken:
    """A thread-safe cancel flag that turns into a progress callback.

    ``token.wrap(cb)`` returns a callback that raises :class:`Cancelled` once
    ``token.cancel()`` has been called (from any thread) and otherwise forwards
    to ``cb``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop (from any thread): the next :meth:`check`, or the next call of a
        :meth:`wrap` callback, raises :class:`Cancelled`. Cannot be undone: a new run takes a new token."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` ("cancelled by the user") if :meth:`cancel` has been called, else nothing."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")

    def wrap(self, progress: Optional[Progress] = None) -> Progress:
        """A progress callback ``(done, total)`` that first calls :meth:`check`, then forwards to
        ``progress`` (None: nothing to forward); pass it as a computation's ``progress=`` to make it
        cancellable."""
        def callback(done: int, total: int) -> None:
            self.check()
            report(progress, done, total)

        return callback
