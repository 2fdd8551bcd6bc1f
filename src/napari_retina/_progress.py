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

import math
import threading
import time
from typing import Callable, Iterator, Optional

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


#: the time a paced piece of work aims at (s): progress and Cancel act at least this often
PACE_S = 0.25


class Pacer:
    """Sizes of consecutive pieces of work so that each takes about ``target_s`` seconds.

    For a slow model (a user's big module on a CPU) a fixed batch can take
    tens of seconds, and progress and Cancel act only between batches. The
    pacer measures the rate of the last piece (units of work per second) and
    sizes the next one to take ``target_s``, between 1 and ``most`` units; it
    starts at ``first``. The pieces' sizes change nothing but the batching.

    >>> pacer = Pacer(most=64)
    >>> [len(range(n)[piece]) for piece in pacer.pieces(10)]   # doctest: +SKIP
    [1, 9]
    """

    def __init__(self, most: int, target_s: float = PACE_S, first: int = 1) -> None:
        self.most, self.target_s = max(int(most), 1), float(target_s)
        self.size = min(max(int(first), 1), self.most)

    @classmethod
    def fixed(cls, size: int) -> "Pacer":
        """Pieces of ``size`` units whatever they take (a batch size the caller chose)."""
        return cls(most=size, target_s=math.inf, first=size)

    def pieces(self, n: int, cost: int = 1) -> Iterator[slice]:
        """Consecutive slices of ``range(n)``, each timed while the caller works on it; ``cost``: units of
        work per item (e.g. the path points per window), so that the rate learnt carries over."""
        start = 0
        while start < n:
            stop = min(n, start + max(1, self.size // cost))
            began = time.perf_counter()
            yield slice(start, stop)
            seconds = time.perf_counter() - began
            rate = (stop - start) * cost / max(seconds, 1e-6)
            self.size = int(min(max(rate * self.target_s, 1), self.most))
            start = stop


class CancelToken:
    """A thread-safe cancel flag that turns into a progress callback.

    ``token.wrap(cb)`` returns a callback that raises :class:`Cancelled` once
    ``token.cancel()`` has been called (from any thread) and otherwise forwards
    to ``cb``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")

    def wrap(self, progress: Optional[Progress] = None) -> Progress:
        def callback(done: int, total: int) -> None:
            self.check()
            report(progress, done, total)

        return callback
