"""Writing files atomically: a crash, kill or cancel never leaves a half-written file.

Every writer of the package goes through :func:`atomic_write`: the data go to a
temporary file beside the destination, which is renamed over the destination
only once complete (``os.replace``, atomic within one folder). Whoever reads the
destination sees the old file or the complete new one, never a part.

Temporary files are named ``.<name>.<host>-<pid>.<random>.partial`` (``host``:
8 hex digits of the machine's name; ``pid``: the writer's process id): hidden,
and not ending in the destination's suffix, so no reader or glob (``*.h5``)
takes one for a result.

A writer killed mid-write (SIGKILL, a crash) cannot remove its temporary file.
The next save of the same destination does (:func:`remove_stale`), under a rule
that never touches a live writer's file:

- only regular files (no links, no folders) whose name matches the pattern above
  for exactly that destination;
- and either written on this machine by a process that no longer runs, or not
  modified for :data:`STALE_AFTER_S` seconds (a writer on another machine that
  shares the folder, or a dead writer whose process id was reused; a live writer
  touches its file as it writes). Elsewhere than on POSIX only the age counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Optional, Sequence

from ._types import PathLike
from ._validate import write_target


#: the suffix of every temporary file (never a result's suffix)
PARTIAL_SUFFIX = ".partial"
#: a temporary file not modified for this long (s) is stale whoever wrote it
STALE_AFTER_S = 3600.0


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux's /proc/self/status):
    setting it to 0 to read it would, for that moment, let another thread create files anyone may write."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)   # elsewhere: the only portable way to read it
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_pattern(path: PathLike) -> re.Pattern:
    """The regular expression a temporary file of ``path`` fully matches (groups: host tag, pid)."""
    name = re.escape(Path(path).name)
    return re.compile(rf"\.{name}\.([0-9a-f]{{8}})-([0-9]+)\.[A-Za-z0-9_]+{re.escape(PARTIAL_SUFFIX)}")


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it runs, as another user
        return True
    return True


def is_stale(host: str, pid: int, mtime: float, after_s: float = STALE_AFTER_S) -> bool:
    """Whether a temporary file or folder left by process ``pid`` of the machine tagged ``host`` may be removed:
    written on this machine by a process that no longer runs, or not modified for ``after_s`` seconds."""
    return (host == _host_tag() and not _running(pid)) or time.time() - mtime > after_s


def remove_stale(path: PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left for ``path``; return them.

    The rule (module docstring): a regular file named after exactly this
    destination, whose writer ran on this machine and is gone, or that was not
    modified for :data:`STALE_AFTER_S` seconds.
    """
    path = Path(path)
    pattern, removed = temp_pattern(path), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        try:
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            if is_stale(match[1], int(match[2]), entry.stat(follow_symlinks=False).st_mtime):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # removed meanwhile by another save, or not ours to remove
            continue
    return removed


class WriteError(OSError):
    """Writing a destination failed once the work was done (a full disk, a read-only or vanished folder):
    one sentence naming the destination, never the temporary file. The original error is its ``__cause__``."""

    def __init__(self, path: PathLike, exc: OSError, tmp: Optional[str] = None) -> None:
        detail = exc.strerror or str(exc) or type(exc).__name__
        if tmp:
            detail = detail.replace(tmp, str(path))
        super().__init__(f"cannot write {str(path)!r}: {detail}")
        self.path = Path(path)


def same_file(path: PathLike, other) -> bool:
    """Whether ``path`` and ``other`` (a path; anything else is never the same) name one existing file,
    links and spellings included: writing ``path`` would replace ``other``."""
    return (isinstance(other, (str, os.PathLike)) and os.path.exists(path) and os.path.exists(other)
            and os.path.samefile(path, other))


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    ``tmp_path`` does not end in ``path``'s suffix: ``write`` must not infer the
    format from the name (give numpy an open file, matplotlib ``format=``).
    Stale temporary files of ``path`` are removed first (:func:`remove_stale`).
    The file gets the usual permissions (0666 less the umask) and is flushed to
    disk before the rename. On any error the temporary file is removed and
    ``path`` is left as it was. A missing folder (FileNotFoundError), a folder
    at ``path`` itself (an IsADirectoryError) or anything else there that is not
    a regular file (a device such as /dev/null, a pipe, a socket: a
    FileExistsError; renamed over, it would be replaced by a plain file) is
    refused before ``write`` is called (:func:`._validate.write_target`). A
    symbolic link at ``path`` is written through: its target is replaced and
    the link kept, as ``open(path, "w")`` does. An
    OSError while writing (a full disk, a folder that cannot be written) is
    raised as a :class:`WriteError` naming ``path``, not the temporary file.
    """
    path = Path(path)
    target = write_target(path)   # a folder: os.replace would fail only after the whole write
    if not target.parent.exists():
        raise FileNotFoundError(f"cannot write {path.name!r}: folder {str(target.parent)!r} does not exist")
    remove_stale(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_host_tag()}-{os.getpid()}.", suffix=PARTIAL_SUFFIX,
                                   dir=target.parent)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except WriteError:  # a nested atomic write names its own destination
        raise
    except OSError as exc:
        raise WriteError(path, exc, tmp) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_in_memory(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """:func:`atomic_write` of what ``write(buffer)`` writes into an in-memory binary file, in one plain write.

    For libraries that fail badly on a full disk when they write a file themselves: HDF5 failed while
    closing its datasets and h5py then crashed the process (a segfault), torch.save raised a RuntimeError
    from its zip writer. Written from memory, a full disk is an OSError of one write, a :class:`WriteError`
    naming ``path``. The price is the file's size in memory while it is written.
    """
    def from_memory(tmp: str) -> None:
        image = BytesIO()
        write(image)
        with open(tmp, "wb") as f:
            f.write(image.getbuffer())

    return atomic_write(path, from_memory)


def _fsync(tmp: str) -> None:
    fd = os.open(tmp, os.O_RDWR)  # Windows flushes only files opened for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


STAGING = re.compile(r"\.staging\.([0-9a-f]{8})-([0-9]+)\.[A-Za-z0-9_]+" + re.escape(PARTIAL_SUFFIX))
"""The name of a staging folder of :func:`atomic_write_set` (groups: host tag, pid)."""


def atomic_write_set(folder: PathLike, writers: Mapping[str, Callable[[Path], Any]],
                     remove: Sequence[str] = ()) -> list[Path]:
    """Write a set of files into ``folder`` so that it never holds some files of this run and some of an older one.

    ``writers[name](path)`` writes the file ``name`` at ``path`` (any writer, e.g. :func:`atomic_write`), in a
    hidden staging folder inside ``folder``. Once every file is written, the files named in ``remove`` are
    deleted and the new ones renamed into ``folder``, with Ctrl-C held back until the last rename. An error or a
    Ctrl-C while writing leaves ``folder`` as it was. A staging folder that a killed writer left is removed by the
    next set written to ``folder`` (the rule of :func:`is_stale`). Returns the paths written.
    """
    folder = Path(folder)
    _remove_stale_staging(folder)
    stage = Path(tempfile.mkdtemp(prefix=f".staging.{_host_tag()}-{os.getpid()}.", suffix=PARTIAL_SUFFIX,
                                  dir=folder))
    try:
        for name, write in writers.items():
            try:
                write(stage / name)
            except OSError as exc:   # named after its destination in ``folder``, never the staging folder
                cause = exc.__cause__ if isinstance(exc, WriteError) and isinstance(exc.__cause__, OSError) else exc
                raise WriteError(folder / name, cause, str(stage / name)) from cause
        with _ctrl_c_held():
            try:
                for name in remove:
                    (folder / name).unlink(missing_ok=True)
                for name in writers:
                    os.replace(stage / name, folder / name)
            except OSError as exc:
                raise WriteError(folder, exc, str(stage)) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [folder / name for name in writers]


def _remove_stale_staging(folder: Path) -> None:
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = STAGING.fullmatch(entry.name)
        try:
            if match and entry.is_dir() and is_stale(match[1], int(match[2]), entry.stat().st_mtime):
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


@contextlib.contextmanager
def sigint_handled(handler: Any) -> Iterator[None]:
    """SIGINT (Ctrl-C) handled by ``handler`` (a function, or ``signal.SIG_IGN``) while the block runs, then as
    before; in the main thread only (Python sets handlers there), elsewhere no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold a SIGINT (Ctrl-C) back until the block ends, then raise it."""
    caught: list = []
    with sigint_handled(lambda *_: caught.append(True)):
        yield
    if caught:
        raise KeyboardInterrupt
