"""A result's layers, the Traces dock and the time slider follow what the user does to the viewer meanwhile.

- A stimulus layer renamed while its result is being added (the Analyze dock's staged add, over several
  event-loop passes): every layer of the result takes the new name, and the next Analyze replaces them.
- The stimulus layer of the result the Traces dock plots is removed: the dock plots the most recent result
  still in the viewer, with its colour bar, or nothing when none is left.
- A shorter stack analysed after a longer one: the time slider moves into the new result when it was past
  its end, and stays where it was when it was inside.
- A stimulus renamed onto the name of a removed stimulus whose maps were kept: the two sets of maps stay apart.
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _plot, _session, _viewer  # noqa: E402
from napari_retina._napari._layers import plugin_metadata, stimulus_layer_kwargs  # noqa: E402
from napari_retina._napari._plot import trace_plot  # noqa: E402


@pytest.fixture
def viewer(make_napari_viewer, tiny):
    """A shown viewer whose docks use the tiny model."""
    viewer = make_napari_viewer(show=True)
    _session.session(viewer).set_model(tiny, "tiny test model")
    return viewer


def _stimulus(viewer, name: str, frames: int = 30, seed: int = 1):
    stim = nr.stimuli.white_noise(frames=frames, size=20, seed=seed)
    return viewer.add_image(stim, **stimulus_layer_kwargs(stim, name))


def _analyze(viewer, plugin, qtbot, layer, **values):
    """Analyze ``layer`` with the Analyze dock (2 integration steps, ``values``), wait; returns the widget."""
    _, w = viewer.window.add_plugin_dock_widget(plugin, "Analyze")
    w.layer.value = layer
    w.steps.value = 2
    for name, value in values.items():
        getattr(w, name).value = value
    assert w.run()
    w.task.wait(600_000)
    assert w.task.last_error is None
    qtbot.wait(20)
    return w


def _maps(viewer, prefix=None) -> list:
    return [lay for lay in viewer.layers if plugin_metadata(lay).get("role") == "map"
            and (prefix is None or plugin_metadata(lay).get("prefix") == prefix)]


def _bars(viewer) -> list:
    return [lay for lay in _maps(viewer) if lay.colorbar.visible]


# --------------------------------------------------------- A: rename during a staged add ---

def test_a_stimulus_renamed_while_its_maps_come_in_takes_them_all_along(viewer, plugin, qtbot):
    layer = _stimulus(viewer, "noise")
    inserted = []

    def rename_at_the_second_map(event) -> None:
        if plugin_metadata(event.value).get("role") == "map":
            inserted.append(event.value)
            if len(inserted) == 2:   # the user renames the layer in the layer list, 6 maps still to come
                layer.name = "cell A"

    viewer.layers.events.inserted.connect(rename_at_the_second_map)
    _analyze(viewer, plugin, qtbot, layer)
    viewer.layers.events.inserted.disconnect(rename_at_the_second_map)
    assert len(inserted) == 8
    maps = _maps(viewer)
    assert len(maps) == 8 and all(lay.name.startswith("cell A: ") for lay in maps)
    assert {plugin_metadata(lay)["prefix"] for lay in maps} == {"cell A: "}
    plot = trace_plot(viewer, create=False)
    assert (plot.source, plot.maps_prefix) == ("cell A", "cell A: ")
    assert len(_bars(viewer)) == 1
    _analyze(viewer, plugin, qtbot, layer, cell=1)   # replaces all of them: no orphans of the old name
    assert len(_maps(viewer)) == 8 and len(_maps(viewer, "cell A: ")) == 8
    layer.name = "cell B"   # a finished result: the plot's title and the traces the layer keeps follow too
    assert plot.title.text().startswith("<b>cell B</b>")
    assert plugin_metadata(layer)[_plot.TRACES_KEY]["title"].startswith("<b>cell B</b>")


def test_a_run_that_fails_after_a_rename_gives_the_earlier_result_back_under_the_new_name(viewer, tiny,
                                                                                         monkeypatch):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none")
    red = nr.reduce(attr)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    nr.show(attr, viewer, reduction=red, stimulus_layer=layer)
    names = [lay.name for lay in _maps(viewer)]
    legend = _viewer.show_map_legend

    def renamed_then_legend(*args, **kwargs):
        layer.name = "cell A"   # renamed once the maps are updated in place
        return legend(*args, **kwargs)

    def fails(*args, **kwargs):
        raise RuntimeError("framing failed")

    monkeypatch.setattr(_viewer, "show_map_legend", renamed_then_legend)
    monkeypatch.setattr(_viewer, "frame_result", fails)
    staged = nr.show(attr, viewer, reduction=red, stimulus_layer=layer, staged=True)
    errors: list = []
    staged.on_error = errors.append
    staged.wait()
    assert [type(exc) for exc in errors] == [RuntimeError]
    assert [lay.name for lay in _maps(viewer)] == [name.replace("noise: ", "cell A: ", 1) for name in names]
    assert len(_maps(viewer, "cell A: ")) == 8
    plot = trace_plot(viewer, create=False)
    assert (plot.source, plot.maps_prefix) == ("cell A", "cell A: ")


# ------------------------------------------ B: the plotted result's stimulus is removed ---

def test_the_traces_dock_moves_to_the_latest_result_left_or_empties_when_its_stimulus_goes(viewer, plugin, qtbot):
    first = _stimulus(viewer, "first", seed=1)
    _analyze(viewer, plugin, qtbot, first)
    second = _stimulus(viewer, "second", seed=2)
    _analyze(viewer, plugin, qtbot, second)
    plot = trace_plot(viewer, create=False)
    assert plot.source == "second"
    viewer.layers.remove(second)   # its maps stay for now
    assert (plot.source, plot.maps_prefix) == ("first", "first: ")
    assert plot.title.text().startswith("<b>first</b>") and len(plot.rows) > 1
    assert [plugin_metadata(lay)["prefix"] for lay in _bars(viewer)] == ["first: "]   # the plotted result's bar
    for lay in _maps(viewer, "second: "):
        viewer.layers.remove(lay)
    assert [plugin_metadata(lay)["prefix"] for lay in _bars(viewer)] == ["first: "]
    channel = plot.rows[1].channel   # a click on a channel's name shows the first result's map alone
    plot.solo(channel)
    assert plot.solo_channel == channel
    assert [plugin_metadata(lay)["channel"] for lay in _maps(viewer) if lay.visible] == [channel]
    plot.solo(channel)
    viewer.layers.select_all()
    viewer.layers.remove_selected()
    assert (plot.source, plot.rows, plot.series) == ("", [], [])
    assert plot.title.text() == _plot.EMPTY_TITLE
    x, y = plot.canvas.size[0] / 2, plot.canvas.size[1] / 2   # a click in the empty plot sets nothing
    plot._on_press(type("Event", (), {"pos": (x, y), "button": 1})())
    plot._on_release(type("Event", (), {"pos": (x, y), "button": 1})())
    assert plot.source == ""


def test_a_stimulus_removed_while_its_traces_are_drawn_does_not_come_back_in_the_traces_dock(viewer, tiny,
                                                                                            monkeypatch):
    shown = {}
    for name, seed in (("first", 1), ("second", 2)):
        stim = nr.stimuli.white_noise(frames=30, size=20, seed=seed)
        attr = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none")
        shown[name] = (viewer.add_image(stim, **stimulus_layer_kwargs(stim, name)), attr, nr.reduce(attr))
        nr.show(attr, viewer, reduction=shown[name][2], stimulus_layer=shown[name][0])
    layer, attr, red = shown["second"]
    steps = _viewer.traces_steps

    def removed_while_drawn(viewer, *args, **kwargs):
        plot = yield from steps(viewer, *args, **kwargs)
        viewer.layers.remove(layer)   # the user deletes the stimulus layer once its new traces are drawn
        yield
        return plot

    monkeypatch.setattr(_viewer, "traces_steps", removed_while_drawn)
    staged = nr.show(attr, viewer, reduction=red, stimulus_layer=layer, staged=True)
    errors: list = []
    staged.on_error = errors.append
    staged.wait()
    assert [type(exc) for exc in errors] == [_viewer.StimulusLayerRemoved]
    plot = trace_plot(viewer, create=False)
    assert (plot.source, plot.maps_prefix) == ("first", "first: ")
    assert [plugin_metadata(lay)["prefix"] for lay in _bars(viewer)] == ["first: "]


def test_a_result_plotted_again_after_its_maps_were_removed_names_no_colour_bar(viewer, tiny):
    """A GUI audit: two results; the first one's maps removed, then the second one's stimulus. The Traces dock
    went back to the first result and its title still named the colour bar of its (removed) maps, while the bar
    on the canvas was the second result's, left behind: the title now drops its legend line."""
    for name, seed in (("first", 1), ("second", 2)):
        stim = nr.stimuli.white_noise(frames=30, size=20, seed=seed)
        attr = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none")
        nr.show(attr, viewer, reduction=nr.reduce(attr), stimulus_layer=viewer.add_image(
            stim, **stimulus_layer_kwargs(stim, name)))
    plot = trace_plot(viewer, create=False)
    assert "<br>" in plot.title.text() and "colour" in plot.title.text().split("<br>")[1]   # the legend line
    for layer in _maps(viewer, "first: "):
        viewer.layers.selection = {layer}
        viewer.layers.remove_selected()
    viewer.layers.selection = {viewer.layers["second"]}
    viewer.layers.remove_selected()
    assert plot.source == "first" and plot.rows
    assert "<br>" not in plot.title.text() and "first" in plot.title.text()


# ------------------------------------------------ C: a shorter stack after a longer one ---

def test_the_slider_moves_into_a_shorter_result_and_stays_inside_one_it_fits(viewer, plugin, qtbot):
    long = _stimulus(viewer, "long", frames=60)
    _analyze(viewer, plugin, qtbot, long)
    viewer.dims.set_current_step(0, 55)
    short = _stimulus(viewer, "short", frames=15, seed=5)
    _analyze(viewer, plugin, qtbot, short)
    assert viewer.dims.current_step[0] == 14   # its last frame, the nearest to where the slider was
    plot = trace_plot(viewer, create=False)
    assert plot.times_ms[0] <= plot.cursor_time_ms <= plot.times_ms[-1]
    viewer.dims.set_current_step(0, 7)   # a scientist scrubbing and analysing again keeps the frame
    _analyze(viewer, plugin, qtbot, short, cell=1)
    assert viewer.dims.current_step[0] == 7
    middle = _stimulus(viewer, "middle", frames=30, seed=6)
    _analyze(viewer, plugin, qtbot, middle)
    assert viewer.dims.current_step[0] == 7


# ------------------------------------------------ D: renamed onto a removed stimulus' name ---

def test_a_stimulus_renamed_onto_a_removed_ones_name_does_not_take_its_kept_maps(viewer, plugin, qtbot):
    a = _stimulus(viewer, "a", seed=1)
    _analyze(viewer, plugin, qtbot, a)
    b = _stimulus(viewer, "b", seed=4)
    _analyze(viewer, plugin, qtbot, b)
    kept = _maps(viewer, "a: ")
    data = [np.asarray(lay.data) for lay in kept]
    viewer.layers.remove(a)   # its maps stay
    b.name = "a"
    mine = _maps(viewer, "a: ")
    assert len(mine) == 8 and not any(lay in kept for lay in mine)
    assert all(lay.name.startswith("a: ") and not lay.name.endswith("]") for lay in mine)   # no "[1]" clash
    assert {plugin_metadata(lay)["prefix"] for lay in kept} == {"a (removed): "}
    assert all(lay.name.startswith("a (removed): ") for lay in kept)
    _analyze(viewer, plugin, qtbot, b, cell=1)
    assert all(lay in viewer.layers for lay in kept) and len(_maps(viewer)) == 16
    for lay, before in zip(kept, data):
        np.testing.assert_array_equal(np.asarray(lay.data), before)


@pytest.mark.parametrize("length_px", [40.0, 60.0, 200.0])
def test_no_y_tick_label_sits_at_a_row_s_top(length_px):
    """A GUI audit: with nine rows a row's "0" at its bottom edge overprinted the next row's "0.1" at its top (the
    labels are centred on their ticks). No tick lies within a label's half height of a row's top now, and the
    bottom one stays (mostly 0)."""
    from types import SimpleNamespace

    for lo, hi in ((-0.12, 1.12), (0.0, 0.5), (-0.112, 0.112), (-3.36, 31.4)):
        axis = SimpleNamespace(domain=(lo, hi), pos=np.array([[0.0, length_px], [0.0, 0.0]]))
        frac, _, labels = _plot._Ticker(axis, spacing=16, inset_px=_plot.Y_LABEL_HALF_PX)._get_tick_frac_labels()
        assert len(labels) >= 2 and np.all(frac * length_px <= length_px - _plot.Y_LABEL_HALF_PX + 1e-9)
        values = np.array([float(v) for v in labels])
        assert np.all((values >= lo) & (values <= hi)) and np.isclose(values.min(), _plot.nice_ticks(lo, hi, 3)[0])
