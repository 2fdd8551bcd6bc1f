"""The Analyze result added over event-loop passes (issue 14 point 7): the GUI repaints between pieces.

Behaviour, not timing: a 1 ms QTimer counts event-loop passes, and the tests
check that it ticks between two map layers' insertions and between the
trace plot's pieces, that the staged result equals the one-call result, and
that a failure or a stop part-way leaves no partial layers.
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr
from napari_retina._progress import Cancelled

pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_retina._napari import _plot, _session, _tasks, _viewer, _widgets  # noqa: E402
from napari_retina._napari import add_analysis, stimulus_layer_kwargs  # noqa: E402
from napari_retina._napari._layers import META  # noqa: E402


@pytest.fixture(scope="module")
def noise_analysis(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(tiny, stim, cell=0, steps=4, invariance="none")
    return stim, attr, nr.reduce(attr, explain=0.6)


class PassCounter:
    """Ticks of a 1 ms QTimer: how many event-loop passes have run."""

    def __init__(self) -> None:
        self.ticks = 0
        self.timer = QTimer()
        self.timer.setInterval(1)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        self.ticks += 1


def _maps(viewer) -> list:
    return [layer for layer in viewer.layers if layer.metadata.get(META, {}).get("role") == "map"]


def _ticks_at_map_inserts(viewer, counter) -> list:
    """Record the pass counter each time a map layer is inserted."""
    seen: list = []

    def on_insert(event) -> None:
        if event.value.metadata.get(META, {}).get("role") == "map":
            seen.append(counter.ticks)

    viewer.layers.events.inserted.connect(on_insert)
    return seen


def test_staged_add_yields_to_the_event_loop_between_layers_and_ends_like_one_call(make_napari_viewer,
                                                                                  noise_analysis):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    counter = PassCounter()
    seen = _ticks_at_map_inserts(viewer, counter)
    staged = add_analysis(viewer, attr, red, stim_layer, staged=True)
    assert isinstance(staged, _viewer.StagedAdd) and _maps(viewer) == []  # nothing yet: it runs on later passes
    staged.wait()
    assert len(seen) == 8
    assert all(b > a for a, b in zip(seen, seen[1:]))  # the timer ticked between every two insertions
    plot = _plot.trace_plot(viewer, create=False)
    assert staged.passes > 8 + len(plot.rows)  # the plot was built over passes of its own too
    # the same layers and plot as the one-call add_analysis
    reference = make_napari_viewer()
    ref_stim = reference.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    ref_layers = add_analysis(reference, attr, red, ref_stim)
    assert [lay.name for lay in staged.layers] == [lay.name for lay in ref_layers]
    assert [lay.visible for lay in staged.layers] == [lay.visible for lay in ref_layers]
    for got, want in zip(staged.layers, ref_layers):
        np.testing.assert_array_equal(np.asarray(got.data), np.asarray(want.data))
    ref_plot = _plot.trace_plot(reference, create=False)
    assert [[s["label"] for s in row.series] for row in plot.rows] == \
        [[s["label"] for s in row.series] for row in ref_plot.rows]
    assert all(node.visible for row in plot.rows for node in row.nodes()) and plot.x_axis.visible
    assert viewer.layers.selection.active is stim_layer
    counter.timer.stop()


def test_a_failing_step_removes_the_layers_it_added_and_reports_once(make_napari_viewer, noise_analysis,
                                                                     monkeypatch):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    real_add, calls = type(viewer).add_image, []

    def add_image(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise ValueError("the fourth map could not be added")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(type(viewer), "add_image", add_image)
    staged = add_analysis(viewer, attr, red, stim_layer, staged=True)
    errors, done = [], []
    staged.on_error, staged.on_done = errors.append, done.append
    staged.wait()
    assert [str(e) for e in errors] == ["the fourth map could not be added"] and done == []
    assert list(viewer.layers) == [stim_layer]  # the three maps added before the failure are gone


def test_stopping_part_way_through_the_maps_leaves_no_partial_layers(make_napari_viewer, noise_analysis, qtbot):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    staged = add_analysis(viewer, attr, red, stim_layer, staged=True)
    stopped_at: list = []

    def stop_after_third(event) -> None:
        if len(_maps(viewer)) == 3 and not stopped_at:
            stopped_at.append(3)
            QTimer.singleShot(0, staged.stop)  # before the next step (a 1 ms timer)

    viewer.layers.events.inserted.connect(stop_after_third)
    qtbot.waitUntil(lambda: staged.done)
    qtbot.wait(20)  # passes where a still-scheduled step would run
    assert stopped_at == [3] and list(viewer.layers) == [stim_layer]


def test_a_plot_build_stopped_part_way_is_rebuilt_in_full(make_napari_viewer, noise_analysis):
    _, attr, red = noise_analysis
    viewer = make_napari_viewer()
    plot = _plot.trace_plot(viewer)
    series = _plot.trace_series(attr, red)
    times = np.arange(len(attr.response)) * nr.FRAME_MS
    steps = plot.traces_steps(series, times, "stopped")
    n_rows = 1 + len(red.kept)
    for _ in range(n_rows + 1):  # every row built, none of it shown yet
        next(steps)
    steps.close()
    assert len(plot.rows) == n_rows and not any(row.view.visible for row in plot.rows)
    plot.set_traces(series, times, "again")  # same layout as the stopped build: it must not be taken as done
    assert all(node.visible for row in plot.rows for node in row.nodes()) and plot.x_axis.visible


def test_reused_map_layers_are_not_given_an_unchanged_scale_again(make_napari_viewer, noise_analysis):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    first = add_analysis(viewer, attr, red, stim_layer)
    emitted: list = []
    for layer in first:
        layer.events.scale.connect(lambda event: emitted.append("scale"))
        layer.events.translate.connect(lambda event: emitted.append("translate"))
    again = add_analysis(viewer, attr, red, stim_layer)
    assert again == first and emitted == []  # same layers, nothing re-sliced for an unchanged geometry


def analyze_dock(viewer, model):
    """The Analyze dock on a 30-frame white-noise layer "noise", with ``model`` and 4 fixed steps."""
    _session.session(viewer).set_model(model, "tiny test model")
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value, w.steps.value = layer, 4
    return w


def test_analyze_widget_adds_its_layers_over_passes_and_stays_busy_until_they_are_in(make_napari_viewer, tiny,
                                                                                     notes):
    viewer = make_napari_viewer()
    w = analyze_dock(viewer, tiny)
    counter = PassCounter()
    seen = _ticks_at_map_inserts(viewer, counter)
    busy_at_insert: list = []
    viewer.layers.events.inserted.connect(lambda event: busy_at_insert.append(w.task.running))
    assert w.run()
    w.task.wait()
    assert notes == [] and w.task.last_error is None and not w.task.running
    assert len(seen) == 8 and all(b > a for a, b in zip(seen, seen[1:]))
    assert all(busy_at_insert)  # a second Analyze is refused until the layers are all in
    assert w.analysis is not None and w.added_layers == _maps(viewer)
    assert w.task.status.value.startswith("analysis done")
    counter.timer.stop()


def test_a_deferred_failure_is_one_notification_and_ends_the_run(qtbot, notes):
    task = _tasks.Task("analysis")
    stopped: list = []
    finish = task.defer(lambda: stopped.append(True))
    assert task.running
    finish(ValueError("a layer could not be added"))
    assert not task.running and stopped == []
    assert notes == [("error", "The analysis failed: a layer could not be added")]
    finish = task.defer(lambda: stopped.append(True))
    task.close()  # the widgets went away: the deferred work is stopped
    assert stopped == [True] and not task.running


def test_analyze_docks_the_trace_plot_when_it_starts_so_its_build_overlaps_the_computation(make_napari_viewer, tiny,
                                                                                           notes):
    viewer = make_napari_viewer()
    w = analyze_dock(viewer, tiny)
    assert _plot.trace_plot(viewer, create=False) is None
    assert w.run()
    # the result comes back through the event loop, which has not run yet: no layer, but the plot is docked
    assert w.task.running and _maps(viewer) == []
    plot = _plot.trace_plot(viewer, create=False)
    assert plot is not None and viewer.window.dock_widgets[_plot.DOCK_NAME] is plot
    w.task.wait()
    assert notes == [] and len(plot.rows) >= 2


def test_a_staged_plot_shows_lines_four_a_pass_and_text_two_a_pass():
    from vispy import scene

    line, label, axis = object(), scene.Label("x"), scene.AxisWidget()
    nodes = [line, line, line, line, line, axis, label, label, line, label]
    batches = _plot.reveal_batches(nodes)
    assert [len(b) for b in batches] == [4, 3, 3]  # 4 lines; line, axis, label; label, line, label
    assert [n for b in batches for n in b] == nodes  # every node once, in order


def test_waiting_for_work_that_never_ends_is_one_timeout_error_naming_it(qtbot):
    """Scripts and tests wait on Task.wait / StagedAdd.wait; work that never finishes must not hang them."""
    flag = []
    QTimer.singleShot(5, lambda: flag.append(1))
    _viewer.process_events_until(lambda: bool(flag), 10_000, "the flag")  # events run: the timer fires
    assert flag == [1]
    with pytest.raises(TimeoutError, match="the never-ending job did not finish within 50 ms"):
        _viewer.process_events_until(lambda: False, 50, "the never-ending job")


def _cancel_when(viewer, staged, condition) -> list:
    """Cancel ``staged`` (on the next pass) the first time ``condition()`` holds after a layer is inserted or a
    pass runs; returns the list that records it."""
    fired: list = []

    def check(*_) -> None:
        if not fired and condition():
            fired.append(True)
            QTimer.singleShot(0, staged.cancel)

    viewer.layers.events.inserted.connect(check)
    return fired


def _staged_over_noise(viewer, noise_analysis, analysed_before: bool = False):
    """A staged add of ``noise_analysis`` over a "noise" stimulus layer (after a one-call add of the same when
    ``analysed_before``); returns (stimulus layer, the StagedAdd, the errors it reports, the earlier layers)."""
    stim, attr, red = noise_analysis
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    first = add_analysis(viewer, attr, red, stim_layer) if analysed_before else []
    staged = add_analysis(viewer, attr, red, stim_layer, staged=True)
    errors: list = []
    staged.on_error = errors.append
    return stim_layer, staged, errors, first


def test_cancel_part_way_through_the_maps_removes_them_and_reports_cancelled(make_napari_viewer, noise_analysis,
                                                                             qtbot):
    viewer = make_napari_viewer()
    stim_layer, staged, errors, _ = _staged_over_noise(viewer, noise_analysis)
    done: list = []
    staged.on_done = done.append
    fired = _cancel_when(viewer, staged, lambda: len(_maps(viewer)) == 3)
    qtbot.waitUntil(lambda: staged.done)
    qtbot.wait(20)  # passes where a still-scheduled step would run
    assert fired and done == [] and [type(e) for e in errors] == [Cancelled]
    assert list(viewer.layers) == [stim_layer]
    staged.cancel()  # once done, nothing more
    assert len(errors) == 1


def test_cancel_while_the_traces_are_drawn_removes_the_maps_and_clears_the_plot(make_napari_viewer, noise_analysis,
                                                                               qtbot):
    viewer = make_napari_viewer()
    stim_layer, staged, errors, _ = _staged_over_noise(viewer, noise_analysis)
    plot = _plot.trace_plot(viewer)
    qtbot.waitUntil(lambda: len(plot.rows) >= 1)  # the maps are in and the plot's rows are being built
    assert len(_maps(viewer)) == 8 and not staged.done
    staged.cancel()
    assert staged.done and [type(e) for e in errors] == [Cancelled]
    assert list(viewer.layers) == [stim_layer] and plot.rows == [] and plot.source == ""


def test_cancel_removes_map_layers_updated_in_place_too(make_napari_viewer, noise_analysis, qtbot):
    """A second analysis of the same layer updates the first one's map layers in one step; cancelled after
    it, they hold the cancelled result and must go (the first analysis' maps were replaced either way)."""
    viewer = make_napari_viewer()
    stim_layer, staged, errors, first = _staged_over_noise(viewer, noise_analysis, analysed_before=True)
    updated: list = []

    def on_update(event) -> None:   # the in-place update: cancel on the next pass, before the traces are in
        if not updated:
            updated.append(staged.passes)
            QTimer.singleShot(0, staged.cancel)

    first[-1].events.data.connect(on_update)
    qtbot.waitUntil(lambda: staged.done)
    assert updated == [1] and [type(e) for e in errors] == [Cancelled]
    assert list(viewer.layers) == [stim_layer]


def test_cancel_during_the_analyze_widgets_layer_add_ends_the_run_as_cancelled(make_napari_viewer, tiny, notes,
                                                                               qtbot):
    viewer = make_napari_viewer()
    w = analyze_dock(viewer, tiny)
    stim_layer = w.layer.value
    states: list = []

    def press_cancel_at_the_third_map(event) -> None:
        if len(_maps(viewer)) == 3 and not states:
            states.append((w.task.worker is None, w.task.cancel_button.enabled))
            QTimer.singleShot(0, w.task.cancel_button.native.click)

    viewer.layers.events.inserted.connect(press_cancel_at_the_third_map)
    assert w.run()
    w.task.wait()
    assert states == [(True, True)]  # the computation was over, and Cancel could still be pressed
    assert isinstance(w.task.last_error, Cancelled) and not w.task.running
    assert w.task.status.value == "analysis cancelled" and not w.task.cancel_button.enabled
    assert notes == [("info", "The analysis was cancelled; nothing was added.")]
    assert list(viewer.layers) == [stim_layer] and w.analysis is None and w.added_layers == []
    assert w.run()  # the next run starts and ends normally
    w.task.wait()
    assert w.task.last_error is None and len(_maps(viewer)) == 8


def test_a_deferred_cancel_is_called_by_cancel_and_the_button_stays_enabled_until_finish(qtbot, notes):
    task = _tasks.Task("analysis")
    cancelled: list = []
    finish = task.defer(lambda: None, cancel=lambda: cancelled.append(True) or finish(Cancelled("stopped")))
    task.cancel_button.enabled, task._returned = True, True   # as a started run whose result came back has it
    task._cleanup()                                            # the worker finished; the deferred work goes on
    assert task.running and task.cancel_button.enabled
    task.cancel()
    assert cancelled == [True] and not task.running and not task.cancel_button.enabled
    assert task.status.value == "analysis cancelled"
    assert notes == [("info", "The analysis was cancelled; nothing was added.")]
