"""A script with two viewers, one with a plugin dock, exits with status 0 (no segfault at exit).

The crash this guards against (about 2 runs in 3 before the fix, status 139):
PyQt's exit handler walks sip's table of wrappers and deletes each Python-owned
top-level QObject still alive, napari's main windows among them. Deleting a
window runs Python (napari's and magicgui's event filters, ``destroyed``
slots) that creates wrappers; when that makes sip reallocate the table, the
walk goes on in the freed one. :mod:`napari_retina._napari._exit` deletes the
windows first, outside that walk.

Each run is a fresh interpreter (the crash is at its exit), so the runs are
subprocesses, under the X server pytest-xvfb gives this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import napari_retina as nr

pytest.importorskip("napari")

RUNS = 5

SCRIPT = """
import napari
import napari_retina
print(napari_retina.__file__)
v = napari.Viewer(show=False); v.window.add_plugin_dock_widget("napari-retina", "Analyze")
v2 = napari.Viewer(show=False); print("done")
"""


def _env() -> dict:
    """This process' environment, with this checkout of napari_retina first on the path."""
    env = dict(os.environ)
    src = str(Path(nr.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.skipif(not os.environ.get("DISPLAY") and sys.platform.startswith("linux"),
                    reason="needs an X server (pytest-xvfb)")
def test_two_viewers_with_a_plugin_dock_exit_cleanly():
    """SCRIPTING.md's two viewers side by side, one with the Analyze dock: every run exits with status 0."""
    env = _env()
    results = []
    for _ in range(RUNS):
        proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        results.append(proc)
    codes = [proc.returncode for proc in results]
    for proc in results:
        assert str(Path(nr.__file__).resolve().parent) in proc.stdout, proc.stdout  # this checkout ran
        assert "done" in proc.stdout, proc.stderr[-2000:]
    assert codes == [0] * RUNS, f"exit statuses {codes} (-11/139: segfault at exit); last stderr:\n" \
                                f"{results[-1].stderr[-2000:]}"
