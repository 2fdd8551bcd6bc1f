"""A script with two viewers, one with a plugin dock, exits with status 0 (no segfault at exit).

The crash this guards against (about 2 runs in 3 before the fix, status 139):
PyQt's exit handler walks sip's table of wrappers and deletes each Python-owned
top-level QObject still alive, napari's main windows among them. Deleting a
window runs Python (napari's and magicgui's event filters, ``destroyed``
slots) that creates wrappers; when that makes sip reallocate the table, the
walk goes on in the freed one. :mod:`napari_retina._napari._exit` deletes the
windows first, outside that walk.

A script that ends, or closes its viewer, while a dock's analysis is still
running in its worker thread must exit with status 0 too (audit item 4: PyQt
deleted the worker's signals object at exit, the worker raised "wrapped C/C++
object of type WorkerBaseSignals has been deleted" in its thread, and PyQt
aborted the process, status 134): the exit hook cancels the plugin's running
workers and waits for them before it deletes the windows.

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


MID_RUN_SCRIPT = """
import sys, time
import torch, napari
import napari_retina as nr
from qtpy.QtWidgets import QApplication
from napari_retina._napari import _session
from napari_retina._napari._layers import stimulus_layer_kwargs
from napari_retina._napari._widgets import AnalyzeWidget
torch.manual_seed(0)
model = nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()
v = napari.Viewer(show=False)
_session.session(v).set_model(model, "tiny test model")
w = AnalyzeWidget(v)
v.window.add_dock_widget(w, name="Analyze")
stim = nr.stimuli.white_noise(frames=2000, size=20, seed=1)   # about a minute of work on a CPU
w.layer.value = v.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
assert w.run()
while w.task.progress.value == 0:   # the worker is attributing
    QApplication.processEvents(); time.sleep(0.002)
if sys.argv[1] == "close":
    v.close()
print("running at the end:", w.task.worker is not None)
"""


@pytest.mark.skipif(not os.environ.get("DISPLAY") and sys.platform.startswith("linux"),
                    reason="needs an X server (pytest-xvfb)")
@pytest.mark.parametrize("viewer_is", ["closed", "left open"])
def test_a_script_that_ends_while_a_docks_analysis_runs_exits_cleanly(viewer_is):
    """The Analyze dock's run still in its worker thread when the script ends (its viewer closed, or left open):
    status 0 and no traceback (the run is cancelled, and waited for before the windows are deleted)."""
    proc = subprocess.run([sys.executable, "-c", MID_RUN_SCRIPT, "close" if viewer_is == "closed" else "open"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert "running at the end: True" in proc.stdout, proc.stderr[-2000:]  # the case under test
    assert proc.returncode == 0, f"exit status {proc.returncode} (-6 or 134: aborted); stderr:\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_the_exit_hook_cancels_the_plugins_running_workers_and_waits_for_them(qtbot, notes, monkeypatch):
    """In process: the exit hook's first act (before any window is deleted) cancels each running Task's worker
    and returns only once its thread is done with it; the run then ends as a cancelled one."""
    import time

    from napari_retina._napari import _exit, _tasks
    from napari_retina._progress import Cancelled

    task = _tasks.Task("analysis")

    def job(task):   # about 100 s unless cancelled: reports progress every ms
        progress = task.progress_callback("attribute")
        for i in range(100_000):
            progress(i, 100_000)
            time.sleep(0.001)
        return "finished"

    results: list = []
    assert task.start(job, results.append)
    worker = task.worker
    qtbot.waitUntil(lambda: task.progress.value > 0)
    assert worker in _tasks._RUNNING and _tasks.stop_running in _exit._FIRST
    monkeypatch.setattr(_exit, "_sip", lambda: None)  # no window of this test session is deleted
    assert _exit.delete_windows() == 0
    assert worker.ended.is_set() and worker not in _tasks._RUNNING  # waited for, not left running
    qtbot.waitUntil(lambda: not task.running)
    assert results == [] and isinstance(task.last_error, Cancelled)
    assert notes == [("info", "The analysis was cancelled; nothing was added.")]


REMOVE_SCRIPT = """
import time
import numpy as np, napari
from qtpy.QtWidgets import QApplication
from napari_retina._napari._viewer import remove_layers

def pump(seconds):
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents(); time.sleep(0.01)

v = napari.Viewer(show=True)
stimulus = v.add_image(np.random.rand(30, 20, 20).astype(np.float32), name="stimulus")
maps = [v.add_image(np.random.rand(30, 16, 16).astype(np.float32), name=f"map {i}") for i in range(6)]
v.layers.selection = {stimulus}
pump(0.5)
changes = []
v.layers.selection.events.changed.connect(changes.append)
remove_layers(v, maps)
assert [layer.name for layer in v.layers] == ["stimulus"] and v.layers.selection.active is stimulus
# one announcement for the removal, not one per layer (each rebuilt napari's layer controls for all left)
assert len(changes) <= 4, len(changes)
controls = v.window._qt_viewer.controls
assert controls.currentWidget() is controls.widgets[stimulus]  # the stimulus's controls show, no stale panel
pump(0.5)
v.camera.zoom = v.camera.zoom * 1.3
pump(1.0)
print("done")
"""


@pytest.mark.skipif(not os.environ.get("DISPLAY") and sys.platform.startswith("linux"),
                    reason="needs an X server (pytest-xvfb)")
def test_removing_two_maps_and_repainting_twice_does_not_kill_the_process():
    """Under Mesa's llvmpipe (Xvfb), removing two image layers that are not selected, then two repaints, killed
    the process (SIGSEGV in glDrawArrays; plain napari does it too): the Analyze dock did it when a result with
    maps was replaced by one without. remove_layers selects what it removes, as napari's trash button does, and
    gives the selection back, announcing the change once (not once per layer: napari's layer controls rebuilt a
    panel of every selected layer left at each). A subprocess, so that a crash fails this test alone."""
    proc = subprocess.run([sys.executable, "-c", REMOVE_SCRIPT], env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "done" in proc.stdout, \
        f"exit status {proc.returncode} (-11/139: segfault); stderr:\n{proc.stderr[-2000:]}"
