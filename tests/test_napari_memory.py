"""What the napari layer keeps alive: nothing a user can no longer reach.

A viewer that showed an analysis, once closed, is freed with its layers, canvas
and maps, whether or not the event loop ran after it was shown (a script). A
finished Analyze run keeps no stimulus layer alive: napari keeps every worker
a window ever ran (its task-status list, with the worker's arguments and
signal connections), so whatever a run's worker holds stays for the window's
life unless the run lets go of it.
"""

from __future__ import annotations

import gc
import weakref

import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina import viewer as nrv  # noqa: E402
from napari_retina._napari import _plot, _session  # noqa: E402
from test_napari_results import _analyze  # noqa: E402  (issue 14's helper; plugin: conftest)


@pytest.fixture(scope="module")
def analysed(tiny):
    return nr.attribute(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=3), cell=0)


def _alive(refs) -> list:
    gc.collect()
    return [obj for obj in (ref() for ref in refs) if obj is not None]


def _show_and_close(viewer, analysed, qtbot, events: bool) -> list:
    """Show ``analysed`` in ``viewer``, close it; weak references to the viewer and its layers.

    (In a helper so that no frame of the test holds them: pytest's assertion
    rewriting keeps a snapshot of the test's locals.)
    """
    layers = nr.show(analysed, viewer)
    assert _plot.trace_plot(viewer, create=False) is not None  # the traces dock is part of what must go
    if events:
        qtbot.wait(50)
    refs = [weakref.ref(viewer)] + [weakref.ref(layer) for layer in layers]
    viewer.close()
    return refs


@pytest.mark.parametrize("events", [True, False], ids=["event loop ran", "no event loop (a script)"])
def test_a_closed_viewer_that_showed_an_analysis_is_freed_with_its_layers(make_napari_viewer, analysed, qtbot,
                                                                          events):
    refs = _show_and_close(make_napari_viewer(), analysed, qtbot, events)
    assert not _alive(refs)
    qtbot.wait(50)  # a view fit still queued for the closed viewer does nothing
    assert not _alive(refs)


def _dock_all_and_close(viewer, plugin, tiny, qtbot) -> weakref.ref:
    """Open every dock of the plugin, analyse a stimulus, close; a weak reference to the viewer."""
    for name in ("Stimulus", "Model", "Experiments"):
        viewer.window.add_plugin_dock_widget(plugin, name)
    _session.session(viewer).set_model(tiny, "tiny test model")
    nr.show(nr.stimuli.white_noise(frames=30, size=20, seed=6), viewer, name="noise")
    _analyze(viewer, plugin, qtbot, steps=2)
    viewer.close()
    return weakref.ref(viewer)


def test_a_closed_viewer_with_every_plugin_dock_open_and_an_analysis_run_is_freed(make_napari_viewer, tiny, plugin, qtbot):
    ref = _dock_all_and_close(make_napari_viewer(), plugin, tiny, qtbot)
    qtbot.wait(50)  # Qt deletes the closed window's widgets
    assert not _alive([ref])


def _analyze_two_layers(viewer, plugin, qtbot) -> weakref.ref:
    """Analyze layer "first", then layer "second"; a weak reference to "first" (see :func:`_show_and_close`)."""
    first = nr.show(nr.stimuli.white_noise(frames=30, size=20, seed=4), viewer, name="first")[0]
    widget = _analyze(viewer, plugin, qtbot, steps=2)
    nr.show(nr.stimuli.white_noise(frames=30, size=20, seed=5), viewer, name="second")
    widget.layer.value = viewer.layers["second"]
    assert widget.run()
    widget.task.wait(600_000)
    assert widget.task.last_error is None
    qtbot.wait(50)
    return weakref.ref(first)


def test_a_finished_analyze_run_keeps_no_stimulus_layer_alive(make_napari_viewer, tiny, plugin, qtbot):
    viewer = make_napari_viewer()
    _session.session(viewer).set_model(tiny, "tiny test model")
    ref = _analyze_two_layers(viewer, plugin, qtbot)
    assert nrv.clear(viewer, "first") > 1  # the stimulus and its result layers
    qtbot.wait(50)
    assert not _alive([ref])
