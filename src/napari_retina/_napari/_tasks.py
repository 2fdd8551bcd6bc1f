"""Background tasks with progress and cancel, and one-sentence notifications.

A :class:`Task` runs one core call at a time in napari's ``thread_worker``
with a progress bar and a cancel button: the core call receives
``progress=token.wrap(cb)`` (the package-wide progress/cancel pattern) and is
otherwise the exact call a script would make.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Signal as QtSignal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QSizePolicy

from .._progress import Cancelled, CancelToken
from .._validate import one_sentence
from ..analysis import is_out_of_memory, memory_sentence
from . import _exit
from ._viewer import process_events_until

STOP_WAIT_S = 10.0
"""The longest the exit hook waits, in all, for the plugin's cancelled workers to end (:func:`stop_running`)."""


def notify(level: str, message: str) -> None:
    """One-sentence napari notification (``level``: "error", "warning" or "info")."""
    {"error": show_error, "warning": show_warning, "info": show_info}[level](message)


def time_left(done0: int, t0: float, done: int, total: int, now: float) -> Optional[float]:
    """Seconds left at the rate measured since ``(done0, t0)`` (None before anything was measured)."""
    if done <= done0 or now <= t0:
        return None
    return (total - done) * (now - t0) / (done - done0)


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_text(stage: str, done: int, total: int, left_s: Optional[float] = None) -> str:
    """The status line of a running task: stage, percent, counts, and the time left when known.

    The percent is rounded down, as Qt's progress bar beside it rounds (41.9% reads 41% in both; rounded to
    nearest, the line said 42% beside the bar's 41%, and 100% before the last step).
    """
    pct = 100 * done // total if total > 0 else 0
    text = f"{stage}: {pct}% ({done:,}/{total:,})"
    return text + (f", about {format_seconds(left_s)} left" if left_s is not None else "")


class Partial:
    """What a cancelled job finished before the Cancel, returned as ``Partial(value)``: shown (``on_result(value)``)
    where another result of a cancelled run is dropped (Run all's finished experiments)."""

    def __init__(self, value) -> None:
        self.value = value


class _Failure:
    """An exception raised in a worker, carried back to the GUI thread as a value."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _guarded(work: list):
    """``job(task)`` for ``work == [job, task]``, emptied first; a failure is returned as a :class:`_Failure`.

    napari keeps every worker a window ever ran (its task-status list), with
    the worker's arguments: the list is emptied so that they do not keep the
    job, and all it holds (a stimulus layer, its data), for the window's life.
    """
    job, task = work
    work.clear()
    try:
        return job(task)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one notification
        return _Failure(exc)


_RUNNING: set = set()
"""The :class:`_TaskWorker` of every :class:`Task` run started and not ended (for :func:`stop_running`)."""


class _TaskWorker(FunctionWorker):
    """A worker that only its :class:`Task` stops (through the task's cancel token), never napari's ``quit()``.

    napari registers each worker it makes with its *current* viewer, which
    may be another window than the task's; closing that window calls
    ``quit()`` on the worker, and superqt then drops its result: the run in
    this window would end with no result, no message and its status frozen.
    The task cancels its own run (Cancel, or its widgets closing with their
    viewer or dock, :meth:`Task.close`), so a quit request is ignored.

    It is in :data:`_RUNNING` from :meth:`Task.start` until its thread is
    done with it (``ended``), so that the exit hook can cancel it (``token``)
    and wait for it (:func:`stop_running`).
    """

    token: Optional[CancelToken] = None
    began: Optional[threading.Event] = None  # set when its thread starts running it
    ended: Optional[threading.Event] = None  # set when its thread is done with it, signals included

    def quit(self) -> None:
        """Ignored: see the class docstring."""

    def run(self) -> None:
        """superqt's ``run`` (the job, then its signals), then out of :data:`_RUNNING` and ``ended`` set."""
        if self.began is not None:
            self.began.set()
        try:
            super().run()
        except RuntimeError:
            # its signals object was deleted at exit (the run outlasted stop_running's wait): there is nobody
            # left to tell, and raised from here the error would make PyQt abort the process
            pass
        finally:
            _RUNNING.discard(self)
            if self.ended is not None:
                self.ended.set()


def stop_running(timeout_s: float = STOP_WAIT_S) -> int:
    """Cancel every :class:`Task` run still in its worker thread, and wait for them to end; how many did not.

    The exit hook calls it before it deletes the windows
    (:func:`._exit.delete_windows`): a worker still running when PyQt deletes
    its signals object at exit raises in its thread ("wrapped C/C++ object of
    type WorkerBaseSignals has been deleted") and PyQt aborts the process
    (status 134), whether the script closed its viewer or left it open.
    Cancelled, a job stops at its next progress report; the wait, for those
    whose thread started, is at most ``timeout_s`` in all (the event loop is
    not run: their results are dropped, as for a closed viewer).
    """
    workers = list(_RUNNING)
    for worker in workers:
        if worker.token is not None:
            worker.token.cancel()
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        if worker.began is not None and worker.began.is_set() and worker.ended is not None:
            worker.ended.wait(max(0.0, deadline - time.monotonic()))
    return sum(1 for worker in workers if worker.ended is not None and not worker.ended.is_set())


_exit.stop_first(stop_running)


class _Relay(QObject):
    """Carries progress from a worker thread to the GUI thread (queued signal)."""

    progressed = QtSignal(str, int, int)


class _UndockWatch(QObject):
    """Closes a :class:`Task` when its dock widget is taken out of its dock, reopens it when docked again."""

    def __init__(self, native, task: "Task") -> None:
        super().__init__(native)  # lives as long as the widget it watches
        self._task = task
        native.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is None:
                self._task.close(undo=True)
            else:
                self._task.closed = False
        return False


class _SpanRow(QObject):
    """Hides the empty label column beside a label without a label of its own, once a labelled container has put
    it in a row: the label then spans the dock's whole width (a status sentence in the value column alone read as
    a narrow column of short lines, at a laptop's width mostly below the fold)."""

    def __init__(self, native) -> None:
        super().__init__(native)   # lives as long as the label it watches
        native.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        layout = obj.parent().layout() if event.type() == QEvent.Type.ParentChange and obj.parent() is not None \
            else None
        # a labelled row: its label, then this label (Qt reparents a widget before it enters the layout)
        if isinstance(layout, QHBoxLayout) and layout.count() in (1, 2):
            row_label = layout.itemAt(0).widget()
            if isinstance(row_label, QLabel) and row_label is not obj and not row_label.text():
                row_label.hide()
        return False


def wrapping(label: Label) -> Label:
    """``label`` word-wrapped across its row's whole width (returned, for chaining).

    magicgui fixes a label's size at its size hint: a wrapped one then sits, a
    narrow column of short lines, in the middle of its row. A label without a
    ``label`` of its own also takes the row's empty label column (:class:`_SpanRow`).
    """
    label.native.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)   # as many lines as the row's width needs
    label.native.setSizePolicy(policy)
    if not label.label:
        _SpanRow(label.native)
    return label


class Task:
    """One background computation at a time, with a progress bar, cancel button and status line (wrapped:
    a long message is read in full there, not cut as in a toast).

    ``task.widgets`` are the magicgui widgets to put in a container. When Qt
    destroys them (the viewer or the dock widget closes), the task closes:
    a running computation is cancelled and ends quietly (see :meth:`close`).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress",
                                    tooltip=f"The {what}'s progress; the line below says its stage and the time left.")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip=f"Stop the {what}; nothing of it is kept.")
        self.status = wrapping(Label(value=""))
        self.cancel_button.changed.connect(self.cancel)
        self.worker = None
        self._connections: list[tuple] = []  # (signal, slot) of the running worker
        self.token: Optional[CancelToken] = None
        self.last_error: Optional[BaseException] = None
        self.timings: dict = {}
        """perf_counter stamps of the last run: started, returned (result in the GUI thread), done."""
        self._deferred: Optional[Callable[[], None]] = None  # stop() of GUI work deferred by on_result
        self._deferred_cancel: Optional[Callable[[], None]] = None  # and its cancel(), if it has one
        self._returned = False  # whether the running worker's result (or failure) has come back
        self._on_failure: Optional[Callable[[], None]] = None  # the running start's on_failure
        self.closed = False
        """True once the widgets are gone: nothing is shown or added any more."""
        self._rate_from: Optional[tuple] = None  # (stage, done, perf_counter) of the stage's first report
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.progress.native.destroyed.connect(self.close)

    def close_with_dock(self, container) -> None:
        """Close the task (:meth:`close`) when ``container``, the dock widget holding its widgets, is closed.

        napari's dock close button takes the widget out of its dock without
        destroying it, so :meth:`close` is not called through the progress
        bar; a widget docked again gets its task back (new runs start).
        """
        self._undock_watch = _UndockWatch(container.native, self)

    @property
    def widgets(self) -> list:
        return [self.progress, self.cancel_button, self.status]

    @property
    def running(self) -> bool:
        """Whether a run is going: its worker, or work the result handler deferred (:meth:`defer`)."""
        return self.worker is not None or self._deferred is not None

    def defer(self, stop: Callable[[], None], cancel: Optional[Callable[[], None]] = None
              ) -> Callable[[Optional[BaseException]], None]:
        """Keep the run going after ``on_result`` returns, until the returned ``finish(exc=None)`` is called.

        For a result handler that hands its GUI work to the event loop (the
        Analyze widget adds its layers over several passes): the task stays
        ``running`` (a second start is refused, :meth:`wait` waits) and Cancel
        stays enabled until ``finish()``; ``finish(exc)`` reports a failure like
        one in the worker (a :class:`Cancelled` as a cancelled run). ``stop()``
        is called if the task closes first, ``cancel()`` when Cancel is pressed
        (it should undo the work and call ``finish(Cancelled(...))``).
        """
        self._deferred, self._deferred_cancel = stop, cancel

        def finish(exc: Optional[BaseException] = None) -> None:
            if self._deferred is not stop:
                return
            self._deferred = self._deferred_cancel = None
            if exc is not None:
                self._failed(exc)
            self.timings["done"] = time.perf_counter()
            if self.worker is None and not self.closed:
                self.cancel_button.enabled = False

        return finish

    def progress_callback(self, stage: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` for the core that updates the bar and raises on cancel."""
        relay, token = self._relay, self.token

        def emit(done: int, total: int) -> None:
            relay.progressed.emit(stage, int(done), int(total))

        return token.wrap(emit)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if self.closed:
            return
        now = time.perf_counter()
        if self._rate_from is None or self._rate_from[0] != stage or done < self._rate_from[1]:
            self._rate_from = (stage, done, now)  # a new stage: time left is measured from here
        _, done0, t0 = self._rate_from
        self.status.value = progress_text(stage, done, total, left_s=time_left(done0, t0, done, total, now))
        self.progress.max = max(int(total), 1)
        self.progress.value = min(int(done), self.progress.max)

    def cancel(self, *_) -> None:
        """Cancel the run: the worker stops at its next progress report; GUI work deferred after its result
        (:meth:`defer`) is cancelled at once."""
        if self.token is not None:
            self.token.cancel()
            if not self.closed:
                self.status.value = f"cancelling the {self.what}..."
        if self._deferred_cancel is not None:  # set only once the worker's result is in
            self._deferred_cancel()

    def close(self, *_, undo: bool = False) -> None:
        """Cancel a running computation and detach the task from its (closing) widgets.

        The computation stops at its next progress report; its end then
        touches no widget, adds no layer and raises no notification. Called
        when Qt destroys the progress bar (viewer or dock widget closed), and
        with ``undo`` when the dock is closed while the viewer stays: GUI work
        deferred after the result (:meth:`defer`) is then cancelled as Cancel
        cancels it (the Analyze dock gives back the result it was replacing),
        not just stopped where it was; quietly either way.
        """
        self.closed = True
        if self.token is not None:
            self.token.cancel()
        stop, cancel = self._deferred, self._deferred_cancel
        self._deferred = self._deferred_cancel = None   # the deferred work's finish() is now a no-op: no report
        if undo and cancel is not None:
            cancel()
        elif stop is not None:
            stop()

    def refuse_if_busy(self) -> bool:
        """Whether a run is going; if so, a warning says to wait for it or cancel it (or, after Cancel, that it
        is still stopping)."""
        if not self.running:
            return False
        if self.worker is not None and self.token.cancelled:  # Cancel was pressed: the worker is on its way out
            notify("warning", f"The cancelled {self.what} is still stopping; try again in a moment.")
            return True
        article = "An" if self.what[:1].lower() in "aeiou" else "A"
        notify("warning", f"{article} {self.what} is already running; wait for it to finish or cancel it first.")
        return True

    def start(self, job: Callable[["Task"], Any], on_result: Callable[[Any], None],
              on_failure: Optional[Callable[[], None]] = None) -> bool:
        """Run ``job(task)`` in a worker thread and pass its result to ``on_result`` (GUI thread).

        Refuses (warning) while another run of this task is going. Errors end up
        as one notification; a cancelled run only says so, and a result that
        arrives after Cancel was pressed is dropped; either way ``on_failure()``
        is called then (GUI thread), e.g. to undo what the run changed when it
        started. Returns whether it started.
        """
        if self.closed or self.refuse_if_busy():
            return False
        self.token = CancelToken()
        self._on_failure = on_failure
        self._returned = False
        self.last_error = None
        self.timings = {"started": time.perf_counter()}
        self._rate_from = None
        self.progress.value = 0
        self.status.value = f"{self.what} running..."
        self.cancel_button.enabled = True
        # exceptions are caught in the thread and handed back as a value: napari would otherwise
        # show them as traceback notifications (and re-raise them in the GUI thread)
        worker = create_worker(_guarded, [job, self], _start_thread=False, _ignore_errors=True,
                               _worker_class=_TaskWorker)

        def returned(result) -> None:
            self._returned = True
            self._finish(on_result, result)

        worker.returned.connect(returned)
        worker.finished.connect(self._cleanup)
        # disconnected when the worker finishes: napari keeps the worker, and with it what is connected
        self._connections = [(worker.returned, returned), (worker.finished, self._cleanup)]
        self.worker = worker
        # the exit hook cancels and waits for it (stop_running): a script may end, or close its viewer, mid-run
        worker.token, worker.began, worker.ended = self.token, threading.Event(), threading.Event()
        _exit.install()
        _RUNNING.add(worker)
        try:
            worker.start()
        except BaseException:
            _RUNNING.discard(worker)
            raise
        return True

    def _finish(self, on_result, result) -> None:
        self.timings["returned"] = time.perf_counter()
        if self.closed:  # the widgets (and perhaps the viewer) are gone
            self.last_error = result.exc if isinstance(result, _Failure) else Cancelled(
                f"the {self.what} finished after its widgets closed; its result was dropped")
            return
        if isinstance(result, _Failure):
            self._failed(result.exc)
            return
        if isinstance(result, Partial):   # cancelled, with what it finished before to show
            result = result.value
        elif self.token is not None and self.token.cancelled:  # Cancel pressed after the last progress report
            self._failed(Cancelled(f"the {self.what} was cancelled as it finished"))
            return
        try:
            on_result(result)
        except Exception as exc:  # turning results into layers must never crash the viewer
            self._deferred = self._deferred_cancel = None
            self._failed(exc)
        if self._deferred is None:
            self.timings["done"] = time.perf_counter()

    def _failed(self, exc: BaseException) -> None:
        self.last_error = exc
        undo, self._on_failure = self._on_failure, None
        if undo is not None:
            undo()
        if isinstance(exc, Cancelled):
            self.status.value = f"{self.what} cancelled"
            notify("info", f"The {self.what} was cancelled; nothing was added.")
        elif is_out_of_memory(exc):   # the reason stays on the status line; a toast fades
            self.status.value = (f"{self.what} ran out of memory even in small chunks ({memory_sentence(exc)}); use "
                                 "a shorter stimulus, or the CPU if it ran on a GPU")
            notify("error", f"The {self.status.value}.")
        else:
            self.status.value = f"{self.what} failed: {one_sentence(exc)}"
            notify("error", f"The {self.status.value}")

    def _cleanup(self, *_) -> None:
        """The worker finished: disconnect it; a worker that ended without handing back a result (aborted
        from outside the task) is reported as a cancelled run, so the status line never freezes."""
        if not self._returned and not self.closed:
            self._failed(Cancelled(f"the {self.what} was stopped before it finished"))
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):  # already gone with its worker
                pass
        self._connections = []
        self.worker = None
        if not self.closed and self._deferred is None:  # deferred GUI work can still be cancelled
            self.cancel_button.enabled = False

    def wait(self, timeout_ms: int = 60000) -> None:
        """Block (processing events) until the current run has finished; for scripts and tests."""
        process_events_until(lambda: not self.running, timeout_ms, f"the {self.what}")
