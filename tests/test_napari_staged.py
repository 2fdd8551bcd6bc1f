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


def _viewer_state(viewer) -> dict:
    """Everything an unfinished replace must give back: each layer (in order) with its data (by identity) and
    properties, the trace plot's traces, title, zoom and solo channel, the layer selection."""
    layers = [(layer, layer.name, id(layer.data), tuple(layer.contrast_limits), tuple(layer.contrast_limits_range),
               repr(layer.metadata), layer.visible, tuple(layer.scale), tuple(layer.translate),
               layer.colorbar.visible) for layer in viewer.layers]
    plot = _plot.trace_plot(viewer, create=False)
    traces = None if plot is None else (
        plot.source, plot.title.text(), plot.solo_channel,
        [[(s["label"], np.asarray(s["values"]).tobytes()) for s in row.series] for row in plot.rows],  # NaN-safe
        [tuple(np.round([*row.view.camera.rect.pos, *row.view.camera.rect.size], 9)) for row in plot.rows],
        [row.view.visible for row in plot.rows])
    return {"layers": layers, "traces": traces, "selected": set(viewer.layers.selection),
            "active": viewer.layers.selection.active}


def _cancel_between_steps(staged, condition, record, act=None) -> tuple:
    """Cancel ``staged`` (or call ``act()``) between two of its steps, the first time ``condition()`` holds
    (checked on every event-loop pass); returns the list that gets ``record()`` then, and the polling timer
    (keep it)."""
    fired: list = []
    timer = QTimer()
    timer.setInterval(0)

    def poll() -> None:
        if staged.done:
            timer.stop()
        elif condition():
            timer.stop()
            fired.append(record())
            (act or staged.cancel)()

    timer.timeout.connect(poll)
    timer.start()
    return fired, timer


@pytest.fixture(scope="module")
def four_channel_analysis():
    """An analysis of the same stimulus by a model of 4 channels (the 8 map layers of a tiny model's cannot
    take its maps in place: they are replaced)."""
    import torch

    torch.manual_seed(1)
    model = nr.RetinaCNN(nr.ModelConfig(history=10, size=20, channels=(4, 4), kernels=(5, 5), n_cells=2)).eval()
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(model, stim, cell=1, steps=4, invariance="none")
    return attr, nr.reduce(attr, explain=0.6)


@pytest.mark.parametrize("layers_are", ["updated in place", "replaced"])
@pytest.mark.parametrize("when", ["after the maps step", "while the traces are drawn"])
def test_cancel_gives_back_the_earlier_result_as_it_was(make_napari_viewer, noise_analysis, four_channel_analysis,
                                                        qtbot, layers_are, when):
    """Re-analysing a layer and cancelling while the new result goes in leaves the earlier result's layers and
    traces exactly as they were (audit item 1: they were removed and the plot emptied)."""
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    first = add_analysis(viewer, attr, red, stim_layer)
    plot = _plot.trace_plot(viewer, create=False)
    plot.solo(red.kept[0])                                    # the user shows one map alone
    plot.rows[0].view.camera.rect = (2.0, -1.0, 10.0, 3.0)    # and zooms the plot
    viewer.layers.selection.active = first[1]
    qtbot.wait(20)
    before = _viewer_state(viewer)
    # in place: the same model without a reduction (8 maps: the same layers, another plot layout); replaced: 4 maps
    second, second_red = (attr, None) if layers_are == "updated in place" else four_channel_analysis
    staged = add_analysis(viewer, second, second_red, stim_layer, staged=True)
    errors: list = []
    staged.on_error = errors.append
    old_rows = list(plot.rows)
    if when == "after the maps step":
        changed = (lambda: staged.passes >= 1) if layers_are == "updated in place" else \
            (lambda: len(_maps(viewer)) == 3)
    else:
        changed = lambda: bool(plot.rows) and plot.rows[0] is not old_rows[0]  # noqa: E731 - a new layout
    fired, _timer = _cancel_between_steps(staged, changed, lambda: (
        _viewer_state(viewer) != before,                            # the earlier result was being replaced
        layers_are == "replaced" or _maps(viewer) == first))       # in place: in the same layers
    qtbot.waitUntil(lambda: staged.done, timeout=30000)
    assert fired == [(True, True)] and [type(e) for e in errors] == [Cancelled]
    qtbot.wait(20)
    after = _viewer_state(viewer)
    assert after["layers"] == before["layers"]    # the same layers, in the same order, as they were
    assert after["traces"] == before["traces"]    # the same traces, zoom and map shown alone
    assert (after["selected"], after["active"]) == (before["selected"], before["active"])


def test_cancelling_another_result_gives_back_a_map_shown_alone_with_its_colour_bar(make_napari_viewer,
                                                                                    noise_analysis, qtbot):
    """A result of another layer, cancelled while its traces were drawn, gave back the map shown alone but put
    the colour bar on a hidden map of the first result (only a replaced result's layers keep their bars)."""
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    first = add_analysis(viewer, attr, red, viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise")))
    plot = _plot.trace_plot(viewer, create=False)
    plot.solo((red.kept[0] + 1) % len(red.importance))   # not the bar's channel: the bar moves to it
    viewer.layers.selection.active = first[1]
    qtbot.wait(20)
    before = _viewer_state(viewer)
    other = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "other"))
    before["layers"].append(_viewer_state(viewer)["layers"][-1])
    viewer.layers.selection.active = first[1]
    staged = add_analysis(viewer, attr, None, other, staged=True)   # another layout: its rows drawn in steps
    staged.on_error = lambda exc: None
    fired, _timer = _cancel_between_steps(staged, lambda: plot.source == "other", lambda: True)
    qtbot.waitUntil(lambda: staged.done, timeout=30000)
    qtbot.wait(20)
    after = _viewer_state(viewer)
    assert fired == [True]
    assert after["layers"] == before["layers"]    # the bar on the map shown alone, as before
    assert after["traces"] == before["traces"]


def test_a_failed_or_dropped_replace_gives_back_the_earlier_result_too(make_napari_viewer, noise_analysis, qtbot,
                                                                       monkeypatch):
    """A step that fails, and a stimulus layer deleted part-way, end like a cancel: the earlier maps (updated in
    place) and traces come back as they were; only the deleted stimulus layer is gone, and with it its traces
    (the Traces dock plots no result whose stimulus layer is gone, test_napari_follow)."""
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    add_analysis(viewer, attr, red, stim_layer)
    before = _viewer_state(viewer)
    real_legend = _viewer.show_map_legend

    def failing_legend(*args, **kwargs):
        raise ValueError("the colour bar could not be made")

    monkeypatch.setattr(_viewer, "show_map_legend", failing_legend)
    staged = add_analysis(viewer, attr, None, stim_layer, staged=True)
    errors: list = []
    staged.on_error = errors.append
    staged.wait()
    assert [str(e) for e in errors] == ["the colour bar could not be made"]
    assert _viewer_state(viewer) == before
    monkeypatch.setattr(_viewer, "show_map_legend", real_legend)

    staged = add_analysis(viewer, attr, None, stim_layer, staged=True)
    errors = []
    staged.on_error = errors.append
    fired, _timer = _cancel_between_steps(staged, lambda: staged.passes >= 1,  # the maps were updated in place
                                          lambda: id(_maps(viewer)[0].data) != before["layers"][1][2],  # new data
                                          act=lambda: viewer.layers.remove(stim_layer))
    staged.wait()
    assert fired == [True] and [type(e) for e in errors] == [_viewer.StimulusLayerRemoved]
    after = _viewer_state(viewer)
    assert after["layers"] == before["layers"][1:] and after["traces"][:4] == ("", _plot.EMPTY_TITLE, None, [])


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


def test_cancel_while_the_analyze_widget_replaces_a_result_keeps_the_earlier_one(make_napari_viewer, tiny, notes,
                                                                                 qtbot):
    """The audit's reproducer (item 1): analyse a layer, analyse it again for another cell, press Cancel once the
    earlier maps were updated in place: the earlier result's layers and traces stay, as the notice says."""
    viewer = make_napari_viewer()
    w = analyze_dock(viewer, tiny)
    assert w.run()
    w.task.wait()
    first, analysis = list(w.added_layers), w.analysis
    qtbot.wait(20)
    before = _viewer_state(viewer)
    updated: list = []

    def press_cancel_once_updated(event) -> None:   # the in-place update: Cancel on the next pass
        if not updated:
            updated.append(first[0].metadata[META]["cells"])
            QTimer.singleShot(0, w.task.cancel_button.native.click)

    first[-1].events.data.connect(press_cancel_once_updated)
    w.cell.value = 1
    assert w.run()
    w.task.wait()
    assert updated == [[1]]  # the earlier maps held the new cell's when Cancel was pressed
    assert isinstance(w.task.last_error, Cancelled) and w.task.status.value == "analysis cancelled"
    assert notes == [("info", "The analysis was cancelled; nothing was added.")]
    qtbot.wait(20)
    assert _viewer_state(viewer) == before
    assert w.added_layers == first and w.analysis is analysis  # the dock still describes what is shown


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



def test_closing_the_analyze_dock_while_it_replaces_a_result_keeps_the_earlier_one(make_napari_viewer, tiny, notes,
                                                                                   qtbot):
    """Closing the dock cancels its run (the Task's contract), but closed while the new layers went in, it
    left the maps holding the new cell's data under the earlier cell's traces, with no sign of it. The earlier
    result is now given back as Cancel gives it back (every stage of that: the tests above), quietly (no dock
    is left to report to)."""
    from napari_retina._napari._docking import dock_of

    viewer = make_napari_viewer()
    w = analyze_dock(viewer, tiny)
    assert w.run()
    w.task.wait()
    qtbot.wait(20)
    before = _viewer_state(viewer)
    fired: list = []
    timer = QTimer()
    timer.setInterval(0)

    def poll() -> None:
        deferred = w.task._deferred   # StagedAdd.stop, once the result is being added
        if deferred is not None and deferred.__self__.passes >= 1:   # the maps updated in place, not the plot
            timer.stop()
            fired.append(_viewer_state(viewer) != before)   # the earlier result was being replaced
            dock_of(w.native).destroyOnClose()             # the dock's close button ('x')

    timer.timeout.connect(poll)
    timer.start()
    w.cell.value = 1   # the same model, another cell: the earlier maps will take the new ones in place
    assert w.run()
    qtbot.waitUntil(lambda: not w.task.running, timeout=30000)
    timer.stop()
    qtbot.wait(20)
    assert fired == [True] and notes == []
    after = _viewer_state(viewer)
    assert after["layers"] == before["layers"]
    assert after["traces"] == before["traces"]
