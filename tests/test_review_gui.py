"""Defects found by the review of the napari layer: each test failed before its fix.

Headless (Xvfb via pytest-xvfb); notifications are captured by the ``notes``
fixture (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_retina as nr

pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_retina._napari import _layers, _plot, _session, _widgets  # noqa: E402
from napari_retina._napari._layers import stimulus_layer_kwargs  # noqa: E402
from napari_retina._napari._reader import SETTINGS_KEY  # noqa: E402
from test_napari_widgets import _dock, _stimulus, viewer  # noqa: E402,F401  (the widget tests' fixture, helpers)

META = _layers.META


@pytest.fixture(scope="module")
def analysed(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(tiny, stim, steps=2, invariance="none")
    return attr, nr.reduce(attr)


def _hold_analysis(monkeypatch):
    """Analyze's computation, held once done: ``(computed, release)`` events; it sets ``computed`` when its
    result is ready (every progress report made) and returns it when the test sets ``release``."""
    import threading

    from napari_retina._napari._widgets import analyze as analyze_module

    real = analyze_module.run_analysis
    computed, release = threading.Event(), threading.Event()

    def held(*args, **kwargs):
        result = real(*args, **kwargs)
        computed.set()
        release.wait(30)
        return result

    monkeypatch.setattr(analyze_module, "run_analysis", held)
    return computed, release


def _held_run(viewer, monkeypatch, qtbot):
    """An Analyze run of a noise stimulus (2 steps) held once computed (:func:`_hold_analysis`): ``(widget,
    stimulus layer, release)``; setting ``release`` lets the result go to the dock."""
    computed, release = _hold_analysis(monkeypatch)
    _, layer = _stimulus(viewer)
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value = layer, 2
    assert w.run()
    qtbot.waitUntil(computed.is_set, timeout=30000)
    return w, layer, release


def _close_dock(viewer, name: str) -> None:
    """Press the dock's close button ('x' in its title bar): napari removes the dock, the widget is unparented."""
    viewer.window.dock_widgets[name].parent().destroyOnClose()


# ------------------------------------------------------------ trace plot ---

def test_closing_the_traces_dock_then_showing_a_new_result_brings_the_traces_back(viewer, analysed, qtbot):
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="first")
    _close_dock(viewer, _plot.DOCK_NAME)
    qtbot.wait(10)
    assert _plot.DOCK_NAME not in viewer.window.dock_widgets
    nr.show(attr, viewer, name="second")   # no reduction: a row per channel
    assert _plot.DOCK_NAME in viewer.window.dock_widgets    # docked again, not plotted out of sight
    plot = viewer.window.dock_widgets[_plot.DOCK_NAME]
    assert plot is nr.viewer.traces(viewer) and plot.isVisibleTo(viewer.window._qt_window)
    assert len(plot.series) == 1 + attr.channels.shape[1]
    assert "second" in plot.title.text()
    viewer.dims.set_current_step(0, 7)
    np.testing.assert_allclose(plot.rows[0].cursor.pos, 7 * nr.FRAME_MS)


def test_file_open_of_a_saved_analysis_plots_its_traces_without_any_plugin_dock(make_napari_viewer, tiny,
                                                                                 tmp_path):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=3)
    res = nr.analysis.run_analysis(tiny, stim, cell=1, steps=2, invariance="none")
    res.save(tmp_path / "saved.h5")
    viewer = make_napari_viewer()    # no Analyze dock: File ▸ Open straight away
    layers = viewer.open(str(tmp_path / "saved.h5"), plugin="napari-retina")
    assert layers[0].name == "saved"
    plot = _plot.trace_plot(viewer, create=False)
    assert plot is not None and _plot.DOCK_NAME in viewer.window.dock_widgets
    shown = {s["label"]: s["values"] for s in plot.series}
    np.testing.assert_array_equal(shown["model response"], res.attribution.response)
    assert "cell 1" in plot.title.text()


@pytest.mark.parametrize("analyze_dock", [False, True], ids=["no dock", "Analyze docked"])
def test_file_open_of_a_batch_store_plots_the_visible_result_s_traces(make_napari_viewer, tiny, tmp_path,
                                                                      analyze_dock):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    nr.save_model(tiny, tmp_path / "tiny.pt")
    np.save(tmp_path / "a.npy", nr.stimuli.white_noise(frames=24, size=20, seed=0))
    spec = {"model": str(tmp_path / "tiny.pt"), "stimuli": [str(tmp_path / "a.npy")], "cells": [0, 1],
            "analyses": ["attribute"], "out": str(tmp_path / "results"), "steps": 2}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        nr.batch.run(spec, client)
    viewer = make_napari_viewer()
    if analyze_dock:
        _session.session(viewer).set_model(tiny, "tiny test model")
        _dock(viewer, _widgets.AnalyzeWidget)
    layers = viewer.open(str(tmp_path / "results"), plugin="napari-retina")
    plot = _plot.trace_plot(viewer, create=False)
    assert plot is not None
    carriers = [lay for lay in layers if _plot.TRACES_KEY in lay.metadata.get(META, {})]
    assert len(carriers) == 2 and [lay.visible for lay in carriers] == [True, False]   # cell 0 shown, cell 1 hidden
    visible = carriers[0]
    assert plot.series[0]["label"] == "model response"
    np.testing.assert_array_equal(plot.series[0]["values"],
                                  visible.metadata[META][_plot.TRACES_KEY]["series"][0]["values"])


def _maps_of(viewer, prefix: str) -> list:
    return [lay for lay in viewer.layers if lay.metadata.get(META, {}).get("role") == "map"
            and lay.metadata[META].get("prefix") == prefix]


def test_a_saved_analysis_opened_twice_gives_each_copy_its_own_maps(viewer, tiny, tmp_path, notes):
    """The second copy 'twice [1]' got maps 'twice: A0 [1]' belonging to 'twice': analysing 'twice' deleted
    them, and analysing 'twice [1]' kept them and drew a second set over it."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=3)
    nr.analysis.run_analysis(tiny, stim, cell=0, steps=2, invariance="none").save(tmp_path / "twice.h5")
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.steps.value, w.invariance.value = 2, "none"
    viewer.open(str(tmp_path / "twice.h5"), plugin="napari-retina")
    viewer.open(str(tmp_path / "twice.h5"), plugin="napari-retina")
    first, second = _maps_of(viewer, "twice: "), _maps_of(viewer, "twice [1]: ")
    assert len(first) == len(second) == 8 and len(viewer.layers) == 18
    assert all(lay.name.startswith("twice [1]: ") and not lay.name.endswith("]") for lay in second)
    w.layer.value = viewer.layers["twice"]
    assert w.run()
    w.task.wait()
    assert all(lay in viewer.layers for lay in second) and len(viewer.layers) == 18   # the other copy's stay
    w.layer.value = viewer.layers["twice [1]"]
    assert w.run()
    w.task.wait()
    assert _maps_of(viewer, "twice [1]: ") == second and len(viewer.layers) == 18     # its own, updated in place
    assert all(level == "info" for level, _ in notes), notes


# ------------------------------------------------------- model and docks ---

def test_the_shipped_model_loaded_on_first_use_is_shown_by_every_dock(make_napari_viewer):
    # the cell boxes allowed 0-999 and the Model dock said "no model loaded yet" after a run used the default
    viewer = make_napari_viewer()
    model_dock = _dock(viewer, _widgets.ModelWidget)
    analyze = _dock(viewer, _widgets.AnalyzeWidget)
    experiments = _dock(viewer, _widgets.ExperimentsWidget)
    assert "no model loaded" in model_dock.summary.value
    model = _session.session(viewer).model            # what a first Analyze or Run does
    n = model.config.n_cells
    assert analyze.cell.max == experiments.cell.max == n - 1
    assert "no model loaded" not in model_dock.summary.value and "shipped default" in model_dock.summary.value


def test_docks_opened_after_a_script_set_the_model_show_that_model(make_napari_viewer, tiny):
    viewer = make_napari_viewer()
    nr.viewer.use_model(viewer, tiny)    # a script hands its model over, then the user opens the docks
    model_dock = _dock(viewer, _widgets.ModelWidget)
    analyze = _dock(viewer, _widgets.AnalyzeWidget)
    experiments = _dock(viewer, _widgets.ExperimentsWidget)
    assert "set by a script" in model_dock.summary.value and "2 cells" in model_dock.summary.value
    assert "no model loaded" not in model_dock.summary.value
    assert analyze.cell.max == 1 and experiments.cell.max == 1
    torch.manual_seed(1)
    three = nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=3)).eval()
    nr.viewer.use_model(viewer, three)
    assert analyze.cell.max == 2 and experiments.cell.max == 2   # both follow a model change


# ----------------------------------------------------------------- cancel ---

def test_cancel_pressed_after_the_last_progress_report_adds_nothing(viewer, notes, monkeypatch, qtbot):
    """Cancel pressed once the computation has made its last progress report (its result on the way):
    the status said 'cancelling', so the result must not be added as if nothing was pressed."""
    w, layer, release = _held_run(viewer, monkeypatch, qtbot)  # every progress report made: nothing checks the cancel any more
    w.task.cancel_button.native.click()
    assert "cancelling" in w.task.status.value
    release.set()
    w.task.wait()
    assert [lay.name for lay in viewer.layers] == ["noise"]
    assert w.analysis is None
    assert notes and notes[-1][0] == "info" and "cancelled" in notes[-1][1]
    assert w.task.status.value == "analysis cancelled"


def test_closing_another_viewer_does_not_stop_a_run_in_this_one(make_napari_viewer, tiny, notes, monkeypatch,
                                                                qtbot):
    """napari registered the worker with its current viewer, the one made last: closing that other window
    aborted this window's run, which then ended with no layers, no message and its status frozen."""
    viewer = make_napari_viewer()
    _session.session(viewer).set_model(tiny, "tiny test model")
    _, layer = _stimulus(viewer)
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value = layer, 2
    other = make_napari_viewer()                 # napari's current viewer from now on
    computed, release = _hold_analysis(monkeypatch)
    assert w.run()
    qtbot.waitUntil(computed.is_set, timeout=30000)
    qtbot.wait(10)                                # the worker's 'started' (napari's task status) is in
    other.close()
    release.set()
    w.task.wait()
    assert notes == [] and w.task.last_error is None
    assert w.analysis is not None and w.task.status.value.startswith("analysis done")
    assert len(w.added_layers) == 8 and all(lay in viewer.layers for lay in w.added_layers)


def test_a_worker_aborted_from_outside_its_task_ends_the_run_as_cancelled(viewer, notes, monkeypatch, qtbot):
    """Whatever stops the worker without a result (superqt drops it after an abort request), the run ends
    with a message and the Cancel button off, not a frozen status line."""
    from napari.qt.threading import FunctionWorker

    w, layer, release = _held_run(viewer, monkeypatch, qtbot)
    FunctionWorker.quit(w.task.worker)            # superqt's own abort request: the result will be dropped
    release.set()
    w.task.wait()
    assert notes == [("info", "The analysis was cancelled; nothing was added.")]
    assert w.task.status.value == "analysis cancelled" and not w.task.cancel_button.enabled
    assert [lay.name for lay in viewer.layers] == ["noise"]


def test_closing_the_analyze_dock_mid_run_cancels_the_run_quietly(viewer, notes, monkeypatch, qtbot):
    """napari's dock close button only takes the widget out of its dock: the run went on and its layers were
    added after the dock was gone (the Task docstring says closing the dock cancels it)."""
    w, layer, release = _held_run(viewer, monkeypatch, qtbot)
    from napari_retina._napari._docking import dock_of

    dock_of(w.native).destroyOnClose()              # the dock's close button ('x')
    release.set()
    w.task.wait()
    qtbot.wait(20)
    assert [lay.name for lay in viewer.layers] == ["noise"] and notes == []
    assert w.task.token.cancelled and w.analysis is None
    viewer.window.add_dock_widget(w, name="AnalyzeWidget")    # docked again: it runs again
    monkeypatch.undo()
    assert w.run()
    w.task.wait()
    assert w.analysis is not None and len(w.added_layers) == 8


def test_analyze_pressed_right_after_cancel_says_the_run_is_still_stopping(viewer, notes, monkeypatch, qtbot):
    """It said 'An analysis is already running; wait for it to finish or cancel it first' to a user who had
    just cancelled it."""
    w, layer, release = _held_run(viewer, monkeypatch, qtbot)
    w.task.cancel_button.native.click()
    w.run_button.native.click()
    assert notes == [("warning", "The cancelled analysis is still stopping; try again in a moment.")]
    release.set()
    w.task.wait()
    monkeypatch.undo()
    assert w.run()                                # once stopped, it runs
    w.task.wait()
    assert w.analysis is not None


# ------------------------------------------------------------ crop window ---

def _small(size=16, seed=2):
    torch.manual_seed(seed)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=size, kernels=(5, 5), n_cells=2)).eval()


def _rectangle_size(shapes) -> float:
    corners = np.asarray(shapes.data[0], float)[:, -2:]
    return float(corners[:, 0].max() - corners[:, 0].min())


def test_the_crop_window_takes_the_size_of_a_model_loaded_after_it_was_drawn(viewer, notes):
    _, layer = _stimulus(viewer, size=30, name="big")
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value = layer, 2
    w.crop.value = "window"
    shapes = viewer.layers["big: crop window (drag me)"]
    assert _rectangle_size(shapes) == 20
    nr.viewer.use_model(viewer, _small(16))      # a model with a 16-px field
    assert _rectangle_size(shapes) == 16         # the rectangle shows what will be analysed
    assert w.run()
    w.task.wait()
    assert notes == []
    y0, x0 = w.analysis.attribution.crop_origin
    assert (y0, x0) == (7, 7)                    # centred, as the rectangle was
    outline = viewer.layers["big: analysed window"]
    np.testing.assert_allclose(outline.data[0], nr._napari._widgets._crop.window_rectangle(7, 7, 16))



@pytest.mark.parametrize("dock", ["AnalyzeWidget", "ExperimentsWidget"])
def test_a_chosen_cell_the_new_model_lacks_moves_with_a_warning(viewer, notes, dock):
    """Cell 3 of a 4-cell model became cell 1 of a 2-cell one without a word (the spin box clamps), and the next
    run analysed cell 1."""
    torch.manual_seed(0)
    nr.viewer.use_model(viewer, nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=4)).eval())
    w = _dock(viewer, getattr(_widgets, dock))
    w.cell.value = 3
    nr.viewer.use_model(viewer, _small(20))      # 2 cells
    assert w.cell.value == 1 and w.cell.max == 1
    assert notes == [("warning", "Cell 3 does not exist in the new model (2 cells, 0–1): cell 1 is chosen instead.")]
    notes.clear()
    nr.viewer.use_model(viewer, _small(20, seed=3))   # a cell the new model has: nothing to say
    assert notes == [] and w.cell.value == 1


def test_only_the_chosen_layer_s_crop_window_is_shown_and_only_with_crop_window(viewer, notes):
    """Crop windows piled up: one left on each layer chosen before, and one left after crop went back to
    'none'."""
    _, big = _stimulus(viewer, size=30, name="big")
    _, other = _stimulus(viewer, size=30, name="other", seed=2)
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.crop.value = big, "window"

    def windows() -> list:
        return [lay.name for lay in viewer.layers if lay.metadata.get(META, {}).get("role") == "crop_window"]

    assert windows() == ["big: crop window (drag me)"]
    w.layer.value = other
    assert windows() == ["other: crop window (drag me)"]
    w.crop.value = "none"
    assert windows() == []
    w.crop.value = "center"
    assert windows() == [] and notes == []


def test_the_analysed_window_outline_has_the_size_of_the_model_that_ran(viewer, notes, qtbot):
    """A model loaded while the result layers go in: the outline shows the window that run analysed.
    (Loaded while the analysis computes, the result is dropped: see the model-changed test below.)"""
    _, layer = _stimulus(viewer, size=30, name="big")
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value, w.crop.value = layer, 2, "center"
    timer = _when(lambda: w.task.status.value.startswith("adding"),
                  lambda: nr.viewer.use_model(viewer, _small(16)))   # the user loads another model meanwhile
    assert w.run()
    w.task.wait()
    timer.stop()
    assert _session.session(viewer).model.config.size == 16 and notes == []
    assert w.analysis.attribution.crop_origin == (5, 5)
    outline = viewer.layers["big: analysed window"]
    np.testing.assert_allclose(outline.data[0], nr._napari._widgets._crop.window_rectangle(5, 5, 20))


# ------------------------------------------------------------ batch store ---

@pytest.fixture
def moved_store(tiny, tmp_path):
    """A results store of two stimuli (a.npy, b.npy) whose first stimulus file was moved away after the run."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    nr.save_model(tiny, tmp_path / "tiny.pt")
    for i, name in enumerate("ab"):
        np.save(tmp_path / f"{name}.npy", nr.stimuli.white_noise(frames=24, size=20, seed=i))
    spec = {"model": str(tmp_path / "tiny.pt"), "stimuli": [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
            "cells": [0], "analyses": ["attribute"], "out": str(tmp_path / "results"), "steps": 2}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        nr.batch.run(spec, client)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a.npy").rename(tmp_path / "elsewhere" / "a.npy")
    return tmp_path


def test_a_store_whose_stimulus_moved_shows_the_rest_visibly_and_says_what_is_missing(make_napari_viewer,
                                                                                     moved_store, monkeypatch):
    import napari.utils.notifications as notifications

    warned: list = []
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    viewer = make_napari_viewer()
    layers = viewer.open(str(moved_store / "results"), plugin="napari-retina")
    assert [lay.name for lay in layers][:2] == ["b", "b tiny cell0 A0"]
    assert layers[0].visible and layers[1].visible       # the first stimulus that could be read is shown
    assert len(warned) == 1 and "a.npy" in warned[0] and "cannot be read" in warned[0]


def test_a_store_whose_stimuli_all_moved_is_one_sentence_naming_them(make_napari_viewer, moved_store):
    (moved_store / "b.npy").rename(moved_store / "elsewhere" / "b.npy")
    viewer = make_napari_viewer()
    with pytest.raises(FileNotFoundError, match=r"a\.npy, b\.npy: moved or deleted"):
        nr.show(nr.batch.load(moved_store / "results"), viewer)
    with pytest.raises(Exception, match=r"a\.npy, b\.npy: moved or deleted"):   # File ▸ Open: napari's wrapper
        viewer.open(str(moved_store / "results"), plugin="napari-retina")
    assert len(viewer.layers) == 0


# --------------------------------------------------------------- Stimulus ---

def test_a_stimulus_too_large_for_memory_is_one_notification(viewer, notes, monkeypatch):
    def out_of_memory(frames=1000, **kwargs):   # what numpy raises for 10 million frames (not allocated here)
        raise MemoryError(f"Unable to allocate 186. GiB for an array with shape ({frames}, 50, 50) and data "
                          "type float64")

    monkeypatch.setattr(nr.stimuli, "white_noise", out_of_memory)
    w = _dock(viewer, _widgets.StimulusWidget)
    w.generator.value = "white_noise"
    next(p for p in w.params if p.name == "frames").value = 10**7     # a typo: 10 million frames (> 100 GiB)
    assert w.generate() is not None
    w.task.wait()
    assert notes == [("error", "The stimulus generation failed: there is not enough free memory for white_noise "
                               "with these parameters; close other programs or choose fewer frames or a smaller "
                               "size")]
    assert len(viewer.layers) == 0


# ------------------------------------------------------- renamed stimulus ---

def test_renaming_the_analysed_layer_takes_its_result_layers_along(viewer, notes):
    _, layer = _stimulus(viewer, size=26, name="noise")
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value, w.crop.value = layer, 2, "center"
    assert w.run()
    w.task.wait()
    first = [lay for lay in viewer.layers if lay is not layer]
    layer.name = "cell 3 recording"          # the user renames the stimulus layer (double-click its name)
    assert [lay.name.split(": ")[0] for lay in first] == ["cell 3 recording"] * len(first)
    w.cell.value = 1
    assert w.run()                            # and analyses it again
    w.task.wait()
    assert notes == []
    maps = [lay for lay in viewer.layers if lay.metadata.get(META, {}).get("role") == "map"]
    assert len(maps) == 8                     # replaced, not a second set drawn additively over the first
    assert all(lay.name.startswith("cell 3 recording: ") for lay in viewer.layers if lay is not layer)
    assert len([lay for lay in viewer.layers if lay.name.endswith("analysed window")]) == 1


# ------------------------------------------------- settings of a layer ---

def test_settings_of_an_analysis_of_a_cell_the_current_model_lacks_apply_the_rest_and_say_so(viewer, notes,
                                                                                            tmp_path):
    torch.manual_seed(0)
    six_cells = nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=6)).eval()
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=3)
    nr.analysis.run_analysis(six_cells, stim, cell=5, steps=3, invariance="none", explain=0.7).save(
        tmp_path / "saved.h5")
    w = _dock(viewer, _widgets.AnalyzeWidget)            # the current model has 2 cells
    layers = viewer.open(str(tmp_path / "saved.h5"), plugin="napari-retina")
    w.layer.value = layers[0]
    w.settings_button.native.click()                     # no traceback (it raised 'value 5 is outside ...')
    assert (w.steps.value, w.invariance.value, w.explain.value) == (3, "none", 0.7)
    assert w.cell.value == 0
    assert len(notes) == 1 and notes[0][0] == "warning"
    assert "cell 5" in notes[0][1] and "0–1" in notes[0][1] and "\n" not in notes[0][1]


def test_settings_of_a_reopened_window_cropped_analysis_put_no_window_off_the_stimulus(viewer, notes, tmp_path):
    # the .h5 holds the analysed 20x20 window and its corner in the 32x40 stack it came from: applying the
    # settings drew a window at that corner, off the reopened 20x20 stimulus (and the run then clipped it)
    stim = nr.stimuli.white_noise(frames=30, size=40, seed=3)[:, :32]
    tiny = _session.session(viewer).model
    nr.analysis.run_analysis(tiny, stim, cell=0, steps=3, crop=(5, 17)).save(tmp_path / "win.h5")
    w = _dock(viewer, _widgets.AnalyzeWidget)
    reopened = viewer.open(str(tmp_path / "win.h5"), plugin="napari-retina")[0]
    assert reopened.data.shape[1:] == (20, 20)
    w.layer.value = reopened
    w.crop.value = "center"
    w.settings_button.native.click()
    assert w.crop.value == "none" and notes == []            # the window is the layer itself
    assert not [la for la in viewer.layers if la.metadata.get(META, {}).get("role") == "crop_window"]
    # on the stack the analysis came from, the window goes back where it was
    layer = viewer.add_image(stim, **_layers.stimulus_layer_kwargs(stim, "stack"))
    layer.metadata[META][SETTINGS_KEY] = dict(reopened.metadata[META][SETTINGS_KEY])
    w.layer.value = layer
    w.settings_button.native.click()
    assert w.crop.value == "window" and w.crop_value(layer) == (5, 17)
    # and on a layer it does not fit (neither the stack nor the window), the rest applies and it says so
    small = viewer.add_image(stim[:, :25, :25], **_layers.stimulus_layer_kwargs(stim[:, :25, :25], "small"))
    small.metadata[META][SETTINGS_KEY] = dict(reopened.metadata[META][SETTINGS_KEY])
    w.layer.value = small
    w.settings_button.native.click()
    assert notes[-1][0] == "warning" and "crop window at (5, 17), which does not fit in the 25x25 layer" in notes[-1][1]


# ------------------------------------------------------------------- demo ---

def test_the_demo_s_docks_hold_the_model_its_analysis_was_made_with(make_napari_viewer, tmp_path, monkeypatch):
    from napari_retina._napari import demo

    seen: dict = {}
    real = demo.screenshot

    def spy(viewer, path, **kwargs):   # the viewer as the user finds it (headless: just before it closes)
        seen["session"] = _session.session(viewer)
        seen["summaries"] = [w.summary.value for w in viewer.window.dock_widgets.values()
                             if isinstance(w, _widgets.ModelWidget)]
        seen["analyze"] = [(w.task.progress.value, w.task.progress.max, w.task.status.value)
                           for w in viewer.window.dock_widgets.values() if isinstance(w, _widgets.AnalyzeWidget)]
        return real(viewer, path, **kwargs)

    monkeypatch.setattr(demo, "screenshot", spy)
    demo.run_demo(headless=True, out_dir=tmp_path, widgets=("Model", "Analyze"))
    assert seen["session"].has_model()       # Analyze pressed again runs the model shown, not a second load
    (text,) = seen["summaries"]
    assert "no model loaded" not in text and "shipped default" in text and "cells" in text
    # its analysis is the Analyze widget's, finished: a full progress bar and a status that says so
    ((value, maximum, status),) = seen["analyze"]
    assert value == maximum and "analysis done" in status


# ------------------------------------------------------------ experiments ---

def test_the_experiments_overview_says_which_cell_each_result_is_of():
    from types import SimpleNamespace

    from napari_retina._napari._widgets.experiments import overview_text

    results = {"osr": SimpleNamespace(readout={"present": True, "explained_variance": 0.9}, cells=[1]),
               "reversal": SimpleNamespace(readout={"present": False}, cells=[0, 2])}
    lines = overview_text(results).split("<br>")
    assert lines[0].startswith("<b>osr</b> (cell 1): ") and lines[1].startswith("<b>reversal</b> (cells 0, 2): ")


def test_a_stimulus_deleted_during_the_run_leaves_a_status_that_says_so(viewer, notes, monkeypatch, qtbot):
    w, layer, release = _held_run(viewer, monkeypatch, qtbot)
    viewer.layers.remove(layer)
    release.set()
    w.task.wait()
    assert notes[-1][0] == "warning" and "deleted" in notes[-1][1]
    assert "deleted" in w.task.status.value and "%" not in w.task.status.value   # not the last progress line


def _change_mid_run(viewer, monkeypatch, qtbot, change) -> "_widgets.AnalyzeWidget":
    """An Analyze run of layer 'noise' (crop 'none'), with ``change(layer)`` made once its result is computed;
    the dock, once the run has ended."""
    w, layer, release = _held_run(viewer, monkeypatch, qtbot)
    change(layer)
    release.set()
    w.task.wait()
    return w


def test_stimulus_data_swapped_for_data_of_the_same_shape_mid_run_drops_the_result(viewer, notes, monkeypatch,
                                                                                    qtbot):
    """The result of the old data was drawn over the new data, with 'analysis done' and no notice."""
    other = nr.stimuli.white_noise(frames=30, size=20, seed=9)
    w = _change_mid_run(viewer, monkeypatch, qtbot, lambda layer: setattr(layer, "data", other))
    message = ("The data of the stimulus layer 'noise' changed during the analysis, so its result, of the previous "
               "data, was dropped; no layers were added.")
    assert notes == [("warning", message)] and w.task.status.value == message
    assert [lay.name for lay in viewer.layers] == ["noise"] and w.analysis is None and not w.task.running


def test_stimulus_data_edited_in_place_mid_run_drops_the_result(viewer, notes, monkeypatch, qtbot):
    """The same array, edited in place (and redrawn) while it was analysed: the result mixed old and new frames
    and was drawn over the new data, with 'analysis done'."""
    def edit(layer) -> None:
        layer.data[5:10] = 0.0
        layer.refresh()

    w = _change_mid_run(viewer, monkeypatch, qtbot, edit)
    message = ("The data of the stimulus layer 'noise' changed during the analysis, so its result, of the previous "
               "data, was dropped; no layers were added.")
    assert notes == [("warning", message)] and w.task.status.value == message
    assert [lay.name for lay in viewer.layers] == ["noise"] and w.analysis is None and not w.task.running


def test_an_unchanged_stimulus_is_analysed_as_before_with_its_checksum_taken_twice(viewer, notes, monkeypatch,
                                                                                    qtbot):
    from napari_retina._napari._widgets import analyze as analyze_module

    sums: list = []
    real = analyze_module.data_checksum
    monkeypatch.setattr(analyze_module, "data_checksum", lambda x: sums.append(real(x)) or sums[-1])
    w = _change_mid_run(viewer, monkeypatch, qtbot, lambda layer: layer.refresh())   # redrawn, not changed
    assert len(sums) == 2 and sums[0] == sums[1]
    assert notes == [] and w.analysis is not None and w.task.status.value.startswith("analysis done")


def test_a_model_changed_mid_run_drops_the_result_as_the_experiments_dock_does(viewer, notes, monkeypatch, qtbot):
    """Analyze added the previous model's result, with no notice, beside a dock that shows the new model."""
    w = _change_mid_run(viewer, monkeypatch, qtbot, lambda layer: nr.viewer.use_model(viewer, _small(20)))
    assert notes == [("warning", "The model changed during the analysis, so its result, of the previous model, "
                                 "was dropped; no layers were added.")]
    assert [lay.name for lay in viewer.layers] == ["noise"] and w.analysis is None and not w.task.running


def _when(condition, action) -> QTimer:
    """A timer that checks ``condition()`` on every event-loop pass and runs ``action()`` the first time it holds
    (between two steps of a staged add, as a user's click would come)."""
    timer = QTimer()
    timer.setInterval(0)

    def check() -> None:
        if condition():
            timer.stop()
            action()

    timer.timeout.connect(check)
    timer.start()
    return timer


@pytest.mark.parametrize("when", ["maps going in", "traces being drawn", "maps updated in place"])
def test_a_stimulus_deleted_while_its_result_layers_are_added_leaves_none_of_them(viewer, notes, qtbot, when):
    """Deleted during the staged add ('adding the result layers...'): the run ended with an internal error
    ('Cannot select item that is not in list') and left every map behind, its traces still plotted. A second
    run, whose maps go into the first run's layers, gives those back as they were: the user deleted the
    stimulus layer only, and the first result's maps stay, as when no run is going; its traces leave the Traces
    dock with their stimulus layer, as then too (test_napari_follow)."""
    _, layer = _stimulus(viewer)
    w = _dock(viewer, _widgets.AnalyzeWidget)
    w.layer.value, w.steps.value = layer, 2
    earlier: list = []
    if when == "maps updated in place":     # a second run puts its maps into the first run's layers
        assert w.run()
        w.task.wait()
        notes.clear()
        earlier = [(lay, lay.data, lay.name, lay.visible) for lay in w.added_layers]
    plot = _plot.trace_plot(viewer)
    condition = {"maps going in": lambda: len([lay for lay in viewer.layers if ": " in lay.name]) >= 3,
                 "traces being drawn": lambda: plot.source == "noise" and not plot._complete,
                 "maps updated in place": lambda: w.task.status.value.startswith("adding")}[when]
    timer = _when(condition, lambda: viewer.layers.remove(layer))
    assert w.run()
    w.task.wait()
    qtbot.wait(20)                           # passes where a still-scheduled step would run
    timer.stop()
    assert [(level, text) for level, text in notes] == [
        ("warning", "The stimulus layer 'noise' was deleted during the analysis; no layers were added.")]
    assert w.task.last_error is None and not w.task.running
    assert [(lay, lay.data, lay.name, lay.visible) for lay in viewer.layers] == earlier
    assert "deleted" in w.task.status.value
    assert (plot.source, [s["label"] for s in plot.series]) == ("", [])   # its stimulus layer is gone


# -------------------------------------------------------------- scripting ---

def test_showing_an_analysis_over_a_layer_without_physical_units_puts_the_traces_in_ms(viewer, analysed):
    """A script shows an analysis over a stack napari's own reader opened (scale 1 per frame, 'pixel' units):
    the trace plot's axis says ms, so its times must be ms, in step with the slider and the maps."""
    attr, red = analysed
    layer = viewer.add_image(attr.stimulus, name="raw")          # napari's defaults: scale 1, units 'pixel'
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nr.show(attr, viewer, reduction=red, stimulus_layer=layer)
    plot = nr.viewer.traces(viewer)
    np.testing.assert_allclose(plot.times_ms[:3], [0, nr.FRAME_MS, 2 * nr.FRAME_MS])   # it counted frames
    assert any(issubclass(w.category, UserWarning) and "no physical scale" in str(w.message) for w in caught)
    np.testing.assert_allclose(layer.scale, (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM))
    np.testing.assert_allclose(viewer.layers["raw: " + red.label(0)].scale, layer.scale)
    nr.viewer.set_time(viewer, 70)
    np.testing.assert_allclose(plot.rows[0].cursor.pos, 70)
    assert viewer.dims.current_step[0] == 7


def test_a_lazy_stimulus_layer_is_read_in_the_worker_not_the_gui_thread(viewer, notes):
    """Analyze turned the layer's data into one array (and computed its units statistics) in the GUI thread:
    a dask stimulus (a batch store's, a large file opened lazily) froze the window for the whole read."""
    import threading

    da = pytest.importorskip("dask.array")
    import dask

    stim = 100 * nr.stimuli.white_noise(frames=30, size=20, seed=1)  # far from contrast units: warns
    gui, reads = threading.get_ident(), []

    def frame(block):
        reads.append(threading.get_ident())
        return block

    lazy = da.from_array(stim, chunks=(1, 20, 20)).map_blocks(frame, dtype=stim.dtype)
    with dask.config.set(scheduler="synchronous"):  # blocks are computed in the thread that asks for them
        layer = viewer.add_image(lazy, **stimulus_layer_kwargs(stim, "lazy"))
        w = _dock(viewer, _widgets.AnalyzeWidget)
        w.layer.value, w.steps.value = layer, 2
        shown = len(reads)                           # napari reads the frame it displays
        assert w.run()
        w.task.wait()
    in_gui = sum(t == gui for t in reads[shown:])
    assert len(reads) - shown >= 30 and in_gui <= 2, (len(reads) - shown, in_gui)
    assert w.analysis is not None
    assert any(level == "warning" and "does not look like contrast units" in text for level, text in notes)
