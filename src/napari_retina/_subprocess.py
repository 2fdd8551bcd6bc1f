"""Run a core call in a fresh Python process, with the package's progress/cancel pattern.

Why a process: training needs a torch optimiser, and constructing one imports
``torch._dynamo``, which imports triton on every CUDA build of torch.
triton's ``libtriton.so`` carries its own LLVM; loading it into a process in
which a napari viewer has drawn with Mesa (which loaded the system's
``libLLVM``) crashes that process (SIGSEGV while LLVM registers its
options). A child process that never opens a GL context is unaffected, so
the napari Model widget trains in one.

Protocol (private to this module): the parent starts ``python -c`` calling
:func:`_serve` and writes one request frame
(module, function, args, kwargs) to the child's stdin; the child answers on
its stdout with ``("progress", done, total)`` frames, ``("warning", category name,
message)`` frames for the warnings the call raises, and one final
``("result", value)`` or ``("error", type name, message, pickled exception)``
frame. Closing the child's stdin asks it to cancel: its progress callback
then raises :class:`~napari_retina._progress.Cancelled`. Anything else the
call prints goes to stderr. A frame is an 8-byte big-endian length and a
pickle; both ends are this package, never a file.

Example
-------
>>> from napari_retina import training
>>> model = call_in_subprocess(training.train, "wn.h5", epochs=1, progress=print)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Optional

from ._progress import Cancelled, Progress

_HEADER = struct.Struct(">Q")
POLL_S = 0.05
"""How often (s) the parent re-checks ``progress`` for a cancel while the child is quiet."""
STOP_GRACE_S = 15.0
"""How long (s) a cancelled child may take to reach its next progress report before it is killed."""


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _write(stream: IO[bytes], frame: bytes) -> None:
    stream.write(frame)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    """The next frame, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    return pickle.loads(data) if len(data) == n else None


# ------------------------------------------------------------------ parent ---

def _child_command() -> list:
    """The child's command line: this interpreter, this package importable (appended: no shadowing)."""
    root = str(Path(__file__).resolve().parents[1])
    boot = f"import sys; sys.path.append({root!r}); from napari_retina._subprocess import _serve; _serve()"
    return [sys.executable, "-c", boot]


def _pump(stream: IO[bytes], frames: "queue.Queue") -> None:
    """Move the child's frames into ``frames``; None at its end."""
    try:
        while (frame := _read(stream)) is not None:
            frames.put(frame)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError):
        pass
    frames.put(None)


def _exception(name: str, message: str, blob: Optional[bytes]) -> BaseException:
    """The child's exception as raised there, or a RuntimeError naming it when it cannot be rebuilt."""
    if blob is not None:
        try:
            exc = pickle.loads(blob)
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # noqa: BLE001 - an exception class that does not unpickle
            pass
    return RuntimeError(f"{name}: {message}" if message else name)


def _stop(proc: subprocess.Popen) -> None:
    """Ask the child to cancel (close its stdin), wait for it, kill it after STOP_GRACE_S."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def call_in_subprocess(fn: Callable, /, *args, progress: Optional[Progress] = None, warned: Optional[list] = None,
                       **kwargs) -> Any:
    """``fn(*args, progress=..., **kwargs)`` computed in a fresh Python process; its return value.

    The warnings ``fn`` raises in the child come back as ``(category name,
    message)`` pairs appended to ``warned``; without a list they are raised
    here again (as UserWarnings). Before, they went to the child's stderr
    alone: the Model dock said "Training finished" over a training that made
    the model worse.

    ``fn`` must be a module-level function of an importable module; the
    arguments and the return value are pickled. ``progress(done, total)`` is
    called in this process for every report of the child (and again every
    ``POLL_S`` while the child is quiet, with ``(0, 0)`` before its first report), so a progress callback that raises
    :class:`Cancelled` cancels the child: it stops at its next report and the
    exception propagates here. An exception raised by ``fn`` in the child is
    raised here (same type and message); a child that dies without an answer
    raises RuntimeError with its exit code.
    """
    proc = subprocess.Popen(_child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    frames: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, frames), daemon=True).start()
    try:
        try:
            _write(proc.stdin, _frame((fn.__module__, fn.__qualname__, args, kwargs)))
        except BrokenPipeError:
            pass  # the child is gone already: reported below from its end of stream
        last = None
        while True:
            try:
                frame = frames.get(timeout=POLL_S)
            except queue.Empty:
                if progress is not None:  # a cancel acts even while the child starts up (no report yet)
                    progress(*(last or (0, 0)))
                continue
            if frame is None:
                code = proc.wait()
                raise RuntimeError(f"the {fn.__name__} process ended without an answer (exit code {code})")
            if frame[0] == "progress":
                last = frame[1:]
                if progress is not None:
                    progress(*last)
            elif frame[0] == "warning":
                if warned is not None:
                    warned.append((frame[1], frame[2]))
                else:
                    warnings.warn(f"{frame[1]}: {frame[2]}", UserWarning, stacklevel=2)
            elif frame[0] == "result":
                return frame[1]
            else:
                raise _exception(*frame[1:])
    finally:
        _stop(proc)


# ------------------------------------------------------------------- child ---

def _serve() -> None:
    """The child's side: read one request from stdin, answer on (the original) stdout."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the frames
    module, name, args, kwargs = _read(sys.stdin.buffer)
    cancelled = threading.Event()

    def watch() -> None:  # the parent closes our stdin to cancel (or dies)
        # the raw descriptor, not sys.stdin: a daemon thread blocked holding sys.stdin's
        # lock aborts the interpreter's shutdown
        while os.read(sys.stdin.fileno(), 4096):
            pass
        cancelled.set()

    threading.Thread(target=watch, daemon=True).start()

    def progress(done: int, total: int) -> None:
        if cancelled.is_set():
            raise Cancelled("cancelled by the user")
        _write(answers, _frame(("progress", int(done), int(total))))

    def relay(message, category, filename, lineno, file=None, line=None) -> None:   # to the parent, as a frame
        _write(answers, _frame(("warning", category.__name__, str(message))))

    warnings.showwarning = relay   # under the child's own filters (Python's defaults, as the parent's)

    try:
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        answer = _frame(("result", fn(*args, progress=progress, **kwargs)))
    except BaseException as exc:  # noqa: BLE001 - every failure (or an unpicklable result) is reported
        try:
            blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001
            blob = None
        answer = _frame(("error", type(exc).__name__, str(exc), blob))
    _write(answers, answer)
    answers.close()
