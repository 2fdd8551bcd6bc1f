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

import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ._types import PathLike


#: the suffix of every temporary file (never a result's suffix)
PARTIAL_SUFFIX = ".partial"
#: a temporary file not modified for this long (s) is stale whoever wrote it
STALE_AFTER_S = 3600.0


def _umask() -> int:
    mask = os.umask(0)
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


def remove_stale(path: PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left for ``path``; return them.

    The rule (module docstring): a regular file named after exactly this
    destination, whose writer ran on this machine and is gone, or that was not
    modified for :data:`STALE_AFTER_S` seconds.
    """
    path = Path(path)
    pattern, host, removed = temp_pattern(path), _host_tag(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        try:
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            if (match[1] == host and not _running(int(match[2]))) or age > STALE_AFTER_S:
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
    ``path`` is left as it was. A missing folder (FileNotFoundError) or a folder
    at ``path`` itself (IsADirectoryError) is refused before ``write`` is called;
    an OSError while writing (a full disk, a folder that cannot be written) is
    raised as a :class:`WriteError` naming ``path``, not the temporary file.
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path.name!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():  # os.replace would fail only after the whole write, naming the temporary file
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a folder; give a file name inside it")
    remove_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=PARTIAL_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except WriteError:  # a nested atomic write names its own destination
        raise
    except OSError as exc:
        raise WriteError(path, exc, tmp) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _fsync(tmp: str) -> None:
    fd = os.open(tmp, os.O_RDWR)  # Windows flushes only files opened for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
