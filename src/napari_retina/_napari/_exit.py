"""Delete the windows still open at interpreter exit before PyQt does, so that a script exits with status 0.

A workaround for a crash outside this package (PyQt6 6.11 / sip 13.13 with
napari 0.9; a plain magicgui dock of three or more widgets in one of two
viewers crashes the same way, without napari-retina): at exit, PyQt's
``cleanup_on_exit`` walks sip's table of wrappers
(``sip_api_visit_wrappers``) and deletes each Python-owned top-level QObject
still alive, among them the ``_QtMainWindow`` of every viewer a script left
open. Deleting a window runs Python (napari's and magicgui's event filters,
``destroyed`` slots), which wraps the events and objects it is handed: new
wrappers, and when they use up the table's free slots sip reallocates it,
while the walk goes on in the freed one (gdb: ``sip_api_get_address`` with a
garbage wrapper, the walk's entry millions of slots outside the current
table). Two viewers and a dock with a few widgets are enough: status 139 about
2 runs in 3.

:func:`install` registers an ``atexit`` hook that runs before PyQt's (atexit
runs the last registered first, and QtCore registered its handler when it was
imported): it stops each open napari window's worker threads, as napari's own
exit hook does, then deletes the Python-owned top-level widgets, those PyQt
would delete next, outside sip's walk. PyQt's handler then finds them deleted
and skips them. The same objects are deleted at the same point of the exit
(after the script's last line), only first.

Before any window is deleted, the hook cancels the plugin's background runs
still in their worker threads and waits for them (bounded,
:func:`._tasks.stop_running`, registered through :func:`stop_first`): PyQt
would otherwise delete a running worker's signals object, the worker would
raise in its thread and PyQt abort the process (status 134), when a script
ends, or closes its viewer, while a dock's analysis runs.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
from typing import Callable

_installed = False
_FIRST: list = []
"""What :func:`delete_windows` calls before it deletes any window (:func:`stop_first`)."""


def install() -> None:
    """Register the exit hook (once; after QtCore is imported, so that it runs before PyQt's own)."""
    global _installed
    if _installed:
        return
    importlib.import_module("qtpy.QtCore")  # QtCore's exit handler must be registered before this one

    atexit.register(delete_windows)
    _installed = True


def stop_first(stop: Callable[[], object]) -> None:
    """Have the exit hook call ``stop()`` before it deletes any window (once per function).

    ``._tasks`` registers its :func:`~._tasks.stop_running`: the plugin's
    worker threads are cancelled and waited for (bounded) while their
    signals and windows are still there.
    """
    if stop not in _FIRST:
        _FIRST.append(stop)


def _sip():
    """PyQt's sip module (None under PySide, which has no such exit walk)."""
    try:
        from qtpy import PYQT5, PYQT6
    except ImportError:
        return None
    try:
        if PYQT6:
            from PyQt6 import sip
        elif PYQT5:
            from PyQt5 import sip
        else:
            return None
    except ImportError:
        return None
    return sip


def delete_windows() -> int:
    """Delete the top-level widgets PyQt's exit handler would delete (Python-owned, no parent); how many.

    The plugin's running workers are cancelled and waited for first
    (:func:`stop_first`: a script that ends, or closes its viewer, while a
    dock's analysis runs), and an open napari window's status and
    dims-player threads are stopped (a QThread destroyed while running aborts
    the process).
    """
    for stop in list(_FIRST):
        with contextlib.suppress(Exception):  # the windows are still deleted
            stop()
    sip = _sip()
    if sip is None:
        return 0
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return 0
    deleted = 0
    for widget in list(app.topLevelWidgets()):
        with contextlib.suppress(RuntimeError):  # deleted meanwhile (with a widget deleted before it)
            if sip.isdeleted(widget) or widget.parent() is not None or not sip.ispyowned(widget):
                continue
            stop = getattr(widget, "_stop_worker_threads", None)  # napari's _QtMainWindow
            if callable(stop):
                with contextlib.suppress(Exception):  # still delete it (and the others)
                    stop()
            sip.delete(widget)
            deleted += 1
    return deleted
