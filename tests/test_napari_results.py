"""What a user sees after Analyze (issue 14, points 1–4), driven through the plugin's public contributions.

The plugin's manifest is registered with npe2 when the package is not
installed (``PYTHONPATH=src``), then the tests do what a user does: open a
sample (``viewer.open_sample``), dock Analyze (``add_plugin_dock_widget``),
press Analyze, wait, and look at the layers, the canvas and the trace plot.
"""

from __future__ import annotations


import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _layers, _plot, _session  # noqa: E402
from napari_retina._napari._layers import stimulus_layer_kwargs  # noqa: E402

META = _layers.META
SAMPLES = ["omitted_flash_train", "moving_bar", "reversing_bar", "white_noise"]
WINDOW = (1600, 1000)


def _window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*WINDOW)
    qtbot.wait(50)
    return viewer


def _analyze(viewer, plugin, qtbot, **values):
    """Dock Analyze, set ``values`` on its widgets, press Analyze, wait; returns the widget."""
    _, w = viewer.window.add_plugin_dock_widget(plugin, "Analyze")
    for name, value in values.items():
        getattr(w, name).value = value
    assert w.run()
    w.task.wait(600_000)
    assert w.task.last_error is None
    qtbot.wait(100)  # Qt lays out the new docks; the view is framed again after that
    return w


def _map_layers(viewer):
    return [lay for lay in viewer.layers if lay.metadata.get(META, {}).get("role") == "map"]


def _analyze_result_baseline(viewer) -> float:
    """F(0), the rate at mean grey, of the model the Analyze dock ran, computed here on a grey stimulus."""
    model = _session.session(viewer).model
    size, history = model.config.size, model.config.history
    return float(nr.predict(model, np.zeros((history, size, size), np.float32))[-1, 0])


def _canvas_box(viewer, layer):
    """The layer's displayed (y, x) extent in canvas pixels: (top-left, bottom-right)."""
    ext = np.asarray(layer.extent.world, float)[:, -2:]  # world (min, max) of y, x
    centre = np.asarray(viewer.scene.camera.center, float)[-2:]
    size = np.asarray(viewer.canvas.size, float)  # (height, width)
    return (ext - centre) * viewer.scene.camera.zoom + size / 2


# ------------------------------------------------------------- point 1: maps ---

@pytest.mark.parametrize("key", SAMPLES)
def test_default_analyze_on_every_sample_shows_maps_in_view_and_says_what_was_computed(
        make_napari_viewer, qtbot, plugin, key):
    """Default settings, shipped model: channel maps over the stimulus, all of it inside the canvas.

    Before: the omitted-flash sample (full field: invariance auto → "space") got
    traces and no maps, silently; and the in-canvas trace panel sat outside the view.
    """
    viewer = _window(make_napari_viewer, qtbot)
    viewer.open_sample(plugin, key)
    w = _analyze(viewer, plugin, qtbot)
    maps = _map_layers(viewer)
    assert len(maps) == w.analysis.attribution.channels.shape[1] == 8
    shown = [lay for lay in maps if lay.visible]
    assert shown and all(np.isfinite(np.asarray(lay.data[-1])).all() for lay in shown)
    assert "map" in w.task.status.value  # which maps and why, in the status line
    if key == "omitted_flash_train":
        assert w.analysis.attribution.maps.shape[2:] == (36, 36)
        assert "full-field" in w.task.status.value
    # point 2: every visible layer inside the canvas at the default window size, without touching the camera
    size = np.asarray(viewer.canvas.size, float)
    for lay in viewer.layers:
        if lay.visible:
            box = _canvas_box(viewer, lay)
            assert (box >= -0.5).all() and (box <= size + 0.5).all(), (lay.name, box, size)
    # no shape-editing layer left active; the stimulus stays selected
    assert viewer.layers.selection.active is viewer.layers[0]
    assert not any(type(lay).__name__ == "Shapes" for lay in viewer.layers)


def test_an_explicit_space_invariance_has_no_maps_and_the_status_says_so(make_napari_viewer, qtbot, plugin):
    viewer = _window(make_napari_viewer, qtbot)
    viewer.open_sample(plugin, "omitted_flash_train")
    w = _analyze(viewer, plugin, qtbot, invariance="space", do_reduce=False)
    assert _map_layers(viewer) == []
    assert "no maps" in w.task.status.value and "'space'" in w.task.status.value


def test_a_200_pixel_stimulus_is_framed_with_its_maps_and_nothing_drawn_over_it(make_napari_viewer, qtbot, plugin):
    """A 200×200 stack (centre crop): the maps sit on its centre, everything in view, no panel over the image."""
    viewer = _window(make_napari_viewer, qtbot)
    stim = nr.stimuli.white_noise(frames=60, size=200, seed=2)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "big noise"))
    _analyze(viewer, plugin, qtbot, crop="center", steps=2, do_reduce=False)
    size = np.asarray(viewer.canvas.size, float)
    img = _canvas_box(viewer, layer)
    assert (img >= -0.5).all() and (img <= size + 0.5).all()
    # the stimulus, 8 maps and the outline of the analysed (cropped) window: nothing drawn over the image
    assert [type(lay).__name__ for lay in viewer.layers] == ["Image"] * 9 + ["Shapes"]
    outline = viewer.layers[-1]
    assert outline.name == "big noise: analysed window" and outline.face_color[:, 3].max() == 0
    # the framed stimulus fills the canvas along one axis (zoomed to fit, not left tiny)
    assert (img[1] - img[0]).max() >= 0.85 * size[np.argmax(img[1] - img[0])]


def test_the_stimulus_stays_in_view_while_analyze_runs(make_napari_viewer, qtbot, plugin, monkeypatch):
    """Analyze docks the (empty) trace plot when it starts: the canvas shrank under the stimulus, and about 4.5 rows
    of a 50-pixel stimulus stayed off-screen at the top and bottom until the result was framed (a visual audit)."""
    import threading

    from napari_retina._napari._widgets import analyze

    viewer = _window(make_napari_viewer, qtbot)
    stim = nr.stimuli.white_noise(frames=60, size=50, seed=2)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    qtbot.wait(50)
    size = np.asarray(viewer.canvas.size, float)
    release, real = threading.Event(), analyze.run_analysis

    def held(*args, **kwargs):
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze, "run_analysis", held)
    _, w = viewer.window.add_plugin_dock_widget(plugin, "Analyze")
    w.steps.value, w.do_reduce.value = 2, False
    try:
        assert w.run()
        qtbot.wait(200)   # Qt lays out the new trace plot dock; the computation is held
        assert w.task.running and _plot.trace_plot(viewer, create=False) is not None
        assert not np.allclose(np.asarray(viewer.canvas.size, float), size)   # the canvas did shrink
        size = np.asarray(viewer.canvas.size, float)
        img = _canvas_box(viewer, layer)
        assert (img >= -0.5).all() and (img <= size + 0.5).all(), (img, size)
    finally:
        release.set()
        w.task.wait(600_000)


# ------------------------------------------------------------ point 4: legend ---

def test_maps_have_a_colour_bar_and_a_legend_with_sign_and_unit(make_napari_viewer, qtbot, plugin):
    viewer = _window(make_napari_viewer, qtbot)
    viewer.open_sample(plugin, "omitted_flash_train")
    _analyze(viewer, plugin, qtbot)
    maps = _map_layers(viewer)
    bars = [lay for lay in maps if lay.colorbar.visible]
    assert len(bars) == 1 and bars[0].visible  # one bar, on a shown map: the limits are shared
    lim = bars[0].contrast_limits[1]
    assert all(lay.contrast_limits == [-lim, lim] or tuple(lay.contrast_limits) == (-lim, lim) for lay in maps)
    title = viewer.window.dock_widgets[_plot.DOCK_NAME].title.text()
    assert "spikes per 10 ms bin" in title and f"±{lim:.3g}" in title
    assert "raises the cell's rate" in title and "lowers it" in title
    assert "near 0 a map is transparent (the bar's black)" in title   # the bar's 0 is black, the map's see-through
    # the plotted response is F(s) − F(0), negative below the rate at grey: the title says so, with F(0)
    base = _analyze_result_baseline(viewer)
    assert f"response = rate − rate at mean grey ({base:.3g})" in title
    assert "click a channel's name" in viewer.window.dock_widgets[_plot.DOCK_NAME].title.toolTip()
    # the bar shows one channel's colours: the main kept channel's, named in the legend (read against another
    # channel's bar, the main channel's own colour read as the wrong sign)
    # (the most important kept channel: the largest Σ_t |A_c(t)|, A_c(t) its map summed over space)
    first = max(maps, key=lambda lay: float(np.nansum(np.abs(np.nansum(np.asarray(lay.data), axis=(1, 2)))))
                if lay.visible else -1.0)
    assert bars[0] is first, (bars[0].name, first.name)
    label = bars[0].metadata["napari_retina"]["label"]
    assert f"in {label}'s colours" in title


@pytest.mark.parametrize("width", [1600, 1100])
def test_the_colour_bar_is_not_drawn_over_the_stimulus(make_napari_viewer, qtbot, plugin, width):
    """napari draws the bar at the canvas' top right, where a fitted white-noise stimulus reached: the bar hid
    its top-right pixels (at 1280×720, about 8×12 of them). The framed result now leaves the bar its width."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(width, WINDOW[1])
    qtbot.wait(50)
    viewer.open_sample(plugin, "white_noise")
    _analyze(viewer, plugin, qtbot, steps=2)
    qtbot.wait(50)
    (bar,) = [lay for lay in _map_layers(viewer) if lay.colorbar.visible]
    overlay = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[bar][bar.colorbar]   # no public API
    right = _canvas_box(viewer, viewer.layers[0])[1, 1]   # the stimulus' right edge, canvas px
    assert right <= viewer.canvas.size[1] - overlay.x_size, (right, viewer.canvas.size, overlay.x_size)


def test_a_saved_analysis_opened_in_an_empty_viewer_is_framed_clear_of_its_colour_bar(make_napari_viewer, qtbot,
                                                                                      plugin, tmp_path):
    """File ▸ Open of a saved analysis: napari framed its first layer, the stimulus, to the canvas' right edge,
    and the reopened map's colour bar hid the stimulus' top-right pixels. It is framed as the live result is."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1100, WINDOW[1])
    qtbot.wait(50)
    viewer.open_sample(plugin, "white_noise")
    path = _analyze(viewer, plugin, qtbot, steps=2).analysis.save(tmp_path / "saved.h5")
    other = make_napari_viewer(show=True)
    other.window.resize(1100, WINDOW[1])
    qtbot.wait(50)
    layers = other.open(str(path), plugin=plugin)
    qtbot.waitUntil(lambda: other.layers.selection.active is layers[0], timeout=2000)
    qtbot.wait(50)   # the trace dock laid out, the view framed again
    (bar,) = [lay for lay in _map_layers(other) if lay.colorbar.visible]
    overlay = other.window._qt_viewer.canvas._layer_overlay_to_visual[bar][bar.colorbar]   # no public API
    box = _canvas_box(other, layers[0])
    assert box[1, 1] <= other.canvas.size[1] - overlay.x_size, (box, other.canvas.size, overlay.x_size)
    assert (box[0] >= 0).all() and (box[1] <= np.asarray(other.canvas.size)).all()   # all of it in the canvas


# -------------------------------------------------------------- point 3: plot ---

@pytest.fixture
def tiny_viewer(make_napari_viewer, qtbot, tiny):
    viewer = _window(make_napari_viewer, qtbot)
    _session.session(viewer).set_model(tiny, "tiny test model")
    return viewer


def _plot_of(viewer) -> _plot.TracePlot:
    return viewer.window.dock_widgets[_plot.DOCK_NAME]


def _analyze_noise(viewer, plugin, qtbot, **values):
    """A 60-frame white-noise stimulus layer "noise", analysed by the Analyze dock with ``values``; its widget."""
    stim = nr.stimuli.white_noise(frames=60, size=20, seed=1)
    viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    return _analyze(viewer, plugin, qtbot, **values)


def test_trace_plot_rows_have_their_own_scale_units_and_the_data(tiny_viewer, qtbot, plugin):
    viewer = tiny_viewer
    w = _analyze_noise(viewer, plugin, qtbot, steps=4, explain=0.6)
    attr, red = w.analysis.attribution, w.analysis.reduction
    plot = _plot_of(viewer)
    assert len(plot.rows) == 1 + len(red.kept)
    assert [s["label"] for s in plot.rows[0].series] == [
        "model response", f"reduced circuit (EV {red.explained_variance:.3f})"]
    assert plot.unit == "ms"  # 600 ms: ms
    # the axis says where the slider is in ms and as the slider counts it (frames)
    nr.viewer.set_time(viewer, 250)
    assert plot.x_axis.axis.axis_label == "time (ms) · slider at 250 ms, frame 25"
    for row in plot.rows:
        assert row.labels[-1].text == "spikes/bin"  # each row says its unit
    # however small the dock is dragged or laid out (the demo's window left ~20 px a row, labels overlapping),
    # every row keeps room for its name and unit
    assert plot.canvas.native.minimumHeight() >= _plot.ROW_MIN_PX * len(plot.rows) >= 60
    # each row's vertical range fits its own traces (not one scale shared by all rows): their extremes rounded
    # out to a round number (at most 1.43×, so that the axis labels a value), and 8% either side
    for k, c in enumerate(red.kept, start=1):
        v = attr.channels[:, c][np.isfinite(attr.channels[:, c])]
        lo, hi = plot.rows[k].y_range
        assert lo <= min(v.min(), 0) and hi >= max(v.max(), 0)
        assert hi - lo <= 1.16 * 1.43 * (max(v.max(), 0) - min(v.min(), 0)) + 1e-12
        # the line is the trace itself at every attributed frame (short trace: no decimation)
        pos = plot.rows[k].lines[0].pos
        np.testing.assert_allclose(pos[:, 0], attr.frames * nr.FRAME_MS)
        np.testing.assert_allclose(pos[:, 1], attr.channels[attr.frames, c], rtol=1e-6)


def test_time_axis_label_stays_in_the_canvas_at_its_smallest(tiny_viewer, qtbot, plugin):
    # the demo's window gives the plot its minimum height: the time axis' label was drawn below the canvas
    viewer = tiny_viewer
    _analyze_noise(viewer, plugin, qtbot, steps=2, explain=0.9)
    plot = _plot_of(viewer)
    native = plot.canvas.native
    native.resize(native.width(), native.minimumHeight())
    qtbot.waitUntil(lambda: plot.canvas.size[1] == native.minimumHeight(), timeout=5000)
    label = plot.x_axis.axis._axis_label_vis
    assert label.text.startswith("time (ms) · slider at ")
    y = label.get_transform("visual", "canvas").map(label.pos)[0, 1]
    half_height = 0.5 * label.font_size * 96 / 72  # pt -> px at 96 dpi, generous
    assert y + half_height <= plot.canvas.size[1]
    # the rows keep their minimum too, and room for every line of their legend (the first row has three)
    assert len(plot.rows[0].labels) == 3
    assert all(row.view.size[1] >= max(_plot.ROW_MIN_PX, _plot.LEGEND_LINE_PX * len(row.labels)) - 0.5
               for row in plot.rows)


def test_plot_page_holds_its_wrapped_title_and_canvas_so_the_time_axis_label_stays_in_reach(tiny_viewer, qtbot,
                                                                                            plugin):
    # Qt reckoned the minimum for a title wrapped at another width, a line short, and the time axis' label
    # fell below the dock's edge (an experiment with the ground truth: taller rows); the page that scrolls
    # must hold the whole wrapped title and the canvas at its minimum
    viewer = tiny_viewer
    _analyze_noise(viewer, plugin, qtbot, steps=2, explain=0.9)
    plot = _plot_of(viewer)
    plot.set_traces(plot.series, plot.times_ms, title=" ".join(["a long title that wraps"] * 40), source=plot.source)
    qtbot.waitUntil(lambda: plot.title.height() >= plot.title.heightForWidth(plot.title.width()), timeout=5000)
    wrapped = plot.title.heightForWidth(plot.title.width())
    assert wrapped > 2 * plot.title.fontMetrics().height()                      # it wraps: several lines
    page = plot.scroll.widget()
    assert page.minimumSizeHint().height() >= wrapped + plot.canvas.native.minimumHeight()
    qtbot.waitUntil(lambda: page.height() >= wrapped + plot.canvas.native.minimumHeight(), timeout=5000)


def test_the_window_fits_a_laptop_screen_with_every_dock_and_the_traces(tiny_viewer, qtbot, plugin):
    """The Analyze dock's form (568 px) over the trace plot (320 px) held the window at least 963 px tall, past
    the bottom of a 900-px laptop screen (status bar and time axis off-screen). The docks scroll instead; where
    the window has room, the traces show whole."""
    viewer = tiny_viewer
    main = viewer.window._qt_window
    docks = {name: viewer.window.add_plugin_dock_widget(plugin, name, tabify=True)
             for name in ("Model", "Stimulus", "Experiments")}
    w = _analyze_noise(viewer, plugin, qtbot, steps=2, explain=0.9)
    plot = _plot_of(viewer)
    page, bar = plot.scroll.widget(), plot.scroll.verticalScrollBar()
    # in the tests' 1600×1000 window: every row and the time axis without scrolling
    qtbot.waitUntil(lambda: page.height() >= page.minimumSizeHint().height(), timeout=5000)
    assert bar.maximum() == 0 and plot.canvas.native.height() >= plot.canvas.native.minimumHeight()
    assert main.minimumSizeHint().height() <= 700                          # 963 before; a 768-px screen's room
    viewer.window.resize(1600, 660)
    qtbot.waitUntil(lambda: main.height() <= 700, timeout=5000)
    # squeezed: the rows keep their legible height and scroll; so do the forms of the docks
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=5000)
    assert plot.canvas.native.height() >= plot.canvas.native.minimumHeight()
    analyze_bar = w.scroll_area.verticalScrollBar()
    qtbot.waitUntil(lambda: analyze_bar.maximum() > 0, timeout=5000)
    w.scroll_area.ensureWidgetVisible(w.run_button.native)                 # every control can be reached
    qtbot.wait(50)
    top_left = w.run_button.native.mapTo(w.scroll_area.viewport(), w.run_button.native.rect().topLeft())
    assert 0 <= top_left.y() and top_left.y() + w.run_button.native.height() <= w.scroll_area.viewport().height()
    for dock, widget in docks.values():
        assert widget.scroll_area.widget().isAncestorOf(widget[0].native)   # the whole form is in the area
    # the window made tall again (a script sizing it after the traces were drawn): the rows show whole again
    viewer.window.resize(*WINDOW)
    qtbot.waitUntil(lambda: bar.maximum() == 0, timeout=5000)


def test_time_cursor_and_slider_are_linked_both_ways(tiny_viewer, qtbot, plugin):
    from qtpy.QtCore import QPoint, Qt

    viewer = tiny_viewer
    _analyze_noise(viewer, plugin, qtbot, steps=2, do_reduce=False)
    plot = _plot_of(viewer)
    viewer.dims.set_current_step(0, 17)
    for row in plot.rows:
        assert row.cursor.pos == pytest.approx(170.0)
    # a click in the plot (press and release in place) moves the slider there
    x, y = plot.canvas_pos_of(420.0, row=1)
    qtbot.mouseClick(plot.canvas.native, Qt.LeftButton, pos=QPoint(round(x), round(y)))
    assert viewer.dims.current_step[0] == pytest.approx(42, abs=1)
    assert plot.rows[0].cursor.pos == pytest.approx(viewer.dims.point[0])


def test_clicking_a_channels_name_shows_its_map_alone_and_again_shows_them_as_they_were(tiny_viewer, qtbot, plugin):
    # kept channels' maps overlap under translucent blending (the top one hides the others): a legend click shows
    # one alone; clicking it again, or the first row's names, restores what was visible
    from qtpy.QtCore import QPoint, Qt

    viewer = tiny_viewer
    _analyze_noise(viewer, plugin, qtbot, steps=2, explain=0.9)
    plot = _plot_of(viewer)
    maps = {lay.metadata[META]["channel"]: lay for lay in _map_layers(viewer)}
    before = {c: lay.visible for c, lay in maps.items()}
    kept = [row.channel for row in plot.rows[1:]]
    assert len(kept) >= 2 and all(before[c] for c in kept)
    maps[kept[0]].visible = False                          # the user's own choice is what comes back
    before[kept[0]] = False

    def click_legend(row: int) -> None:
        x, y = plot.legend_pos_of(row)
        qtbot.mouseClick(plot.canvas.native, Qt.LeftButton, pos=QPoint(round(x), round(y)))

    step = viewer.dims.current_step[0]
    click_legend(2)
    assert plot.solo_channel == kept[1]
    assert [c for c, lay in maps.items() if lay.visible] == [kept[1]]
    assert viewer.dims.current_step[0] == step             # a legend click is not a time click
    alpha = [row.labels[0]._text_visual.color.alpha for row in plot.rows]
    assert alpha[2] == 1.0 and alpha[0] == 1.0 and alpha[1] == pytest.approx(_plot.DIMMED_ALPHA)
    click_legend(2)
    assert plot.solo_channel is None and {c: lay.visible for c, lay in maps.items()} == before
    assert all(row.labels[0]._text_visual.color.alpha == 1.0 for row in plot.rows)
    click_legend(1)
    click_legend(2)                                        # from one channel to another
    assert [c for c, lay in maps.items() if lay.visible] == [kept[1]]
    click_legend(0)
    assert plot.solo_channel is None and {c: lay.visible for c, lay in maps.items()} == before
    plot.solo(kept[1])
    plot.clear()                                           # the result is gone: its maps as they were
    assert {c: lay.visible for c, lay in maps.items()} == before


def test_sparse_experiment_traces_are_drawn_as_lines(tiny_viewer, qtbot, tiny):
    """Experiments attribute a thinned set of frames; the plot joins them into one line per trace.

    Before: every isolated attributed frame was a path of its own (scattered dots).
    """
    from napari_retina._napari import add_analysis

    stim = nr.stimuli.white_noise(frames=80, size=20, seed=3)
    frames = list(range(9, 80, 3))
    attr = nr.attribute(tiny, stim, cell=0, steps=2, frames=frames)
    add_analysis(tiny_viewer, attr)
    plot = _plot_of(tiny_viewer)
    resp = plot.rows[0].lines[0].pos
    assert len(plot.rows[0].lines) == 1 and len(resp) == len(frames)
    np.testing.assert_allclose(resp[:, 0], np.asarray(frames) * nr.FRAME_MS)


def test_long_traces_are_decimated_for_display_and_refined_on_zoom(tiny_viewer, qtbot):
    """100,000 frames: a few thousand points on screen, every extreme kept; zoomed in, every frame."""
    viewer = tiny_viewer
    T = 100_000
    rng = np.random.default_rng(0)
    values = rng.standard_normal(T).astype(np.float32)
    values[:9] = np.nan
    series = [{"label": "model response", "kind": "response", "channel": -1, "row": 0, "values": values,
               "color": _layers.channel_color(0)}]
    plot = _plot.trace_plot(viewer)
    plot.set_traces(series, np.arange(T) * nr.FRAME_MS, "long")
    qtbot.wait(50)
    pos = plot.rows[0].lines[0].pos
    width = int(plot.rows[0].view.size[0])
    assert plot.unit == "s" and len(pos) <= width * _plot.POINTS_PER_PIXEL + 2
    assert pos[:, 1].max() == np.nanmax(values) and pos[:, 1].min() == np.nanmin(values)
    plot.rows[0].view.camera.set_range(x=(100.0, 100.5), margin=0)  # 50 frames, seconds
    qtbot.wait(50)
    pos = plot.rows[0].lines[0].pos
    inside = (pos[:, 0] >= 100.0) & (pos[:, 0] <= 100.5)
    np.testing.assert_allclose(pos[inside, 1], values[10_000:10_051], rtol=1e-6)


def test_decimate_keeps_real_samples_in_order_and_every_bin_extreme():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(10_001)
    t = np.arange(v.size, dtype=float)
    td, vd = _plot.decimate(t, v, 100)
    assert len(td) <= 200 and np.all(np.diff(td) > 0)
    np.testing.assert_array_equal(vd, v[td.astype(int)])
    edges = np.linspace(0, v.size, 101).astype(int)
    for a, b in zip(edges[:-1], edges[1:]):
        assert v[a:b].max() in vd and v[a:b].min() in vd
    short_t, short_v = _plot.decimate(t[:150], v[:150], 100)
    np.testing.assert_array_equal(short_v, v[:150])
