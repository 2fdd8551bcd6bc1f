"""Issue 14 ("the napari experience v2"), points 5, 6, 8-13, driven as a user would.

The plugin's docks are added through napari's own ``add_plugin_dock_widget``
(as the Plugins menu does), files opened with ``viewer.open``, buttons
clicked (``native.click()``); notifications are captured from napari's
notification manager.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_retina as nr

pytest.importorskip("napari")

from napari.utils.notifications import notification_manager  # noqa: E402

from napari_retina._napari import _plot, _session  # noqa: E402
from napari_retina._napari._layers import META, stimulus_layer_kwargs  # noqa: E402

PLUGIN = "napari-retina"
REPO = Path(__file__).resolve().parents[1]
WAIT_MS = 120_000


@pytest.fixture
def viewer(make_napari_viewer, tiny):
    v = make_napari_viewer()
    _session.session(v).set_model(tiny, "tiny test model")
    return v


@pytest.fixture
def messages():
    """Every napari notification shown during the test, as (severity, message)."""
    got: list = []

    def record(event):
        note = event if hasattr(event, "message") else getattr(event, "value", event)
        got.append((str(note.severity), str(note.message)))

    notification_manager.notification_ready.connect(record)
    yield got
    notification_manager.notification_ready.disconnect(record)


def _plugin_dock(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return dock, widget


def _click(button) -> None:
    button.native.click()


def _add_and_wait(widget) -> None:
    """Click the Experiments dock's 'Add layers' and wait for its maps and traces to be in (staged)."""
    _click(widget.add_button)
    widget.adding.wait()


def _run_and_wait(widget, qtbot, button=None) -> None:
    _click(button or widget.run_button)
    qtbot.waitUntil(lambda: not widget.task.running, timeout=WAIT_MS)


# ---------------------------------------------------------- 5. Experiments ---

def _run_experiment(w, name, qtbot):
    w.experiment.value = name
    _run_and_wait(w, qtbot)
    assert w.task.last_error is None


def test_experiment_results_survive_layer_changes_and_do_not_stack(viewer, qtbot):
    _, w = _plugin_dock(viewer, "Experiments")
    w.steps.value = 2
    _run_experiment(w, "osr", qtbot)
    _run_experiment(w, "reversal", qtbot)
    assert list(w.result_choice.choices) == ["osr", "reversal"]

    w.result_choice.value = "osr"
    table = w.table.to_dict("list")
    # one experiment's readouts, the model's and its reduced circuit's side by side, not columns mixed across
    # experiments (the tiny model has no ground truth to compare with)
    assert list(table) == ["readout", "model", "reduced"]
    keys = [row.split(" (")[0] for row in table["readout"]]   # "slope (ms/ms)": the key, then its unit
    assert keys[:4] == ["present", "unmet", "slope", "r2"]   # present and why not, then the key numbers
    assert table["readout"][2:4] == ["slope (ms/ms)", "r2 (dimensionless)"]
    assert table["model"][0] == ("yes" if w.results["osr"].readout["present"] else "no")
    unmet = w.results["osr"].readout["unmet"]
    assert table["model"][1] == ("; ".join(unmet) if unmet else "none")   # each clause with its value, in words
    # and above the table, in full: the tiny model shows no OSR, and the dock says which clauses it misses
    import html

    assert unmet and not w.unmet.native.isHidden()
    assert f"model</b> not present: {'; '.join(unmet)}" in html.unescape(w.unmet.value)
    assert table["reduced"][0] == ("yes" if w.results["osr"].readout["reduced"]["present"] else "no")
    assert set(keys) == set(w.results["osr"].readout) - {"reduced"}

    _add_and_wait(w)  # adds layers: the list must survive its own button
    first = list(viewer.layers)
    assert list(w.result_choice.choices) == ["osr", "reversal"]
    viewer.add_image(np.zeros((5, 4, 4), np.float32), name="unrelated")
    viewer.layers.remove("unrelated")
    assert list(w.result_choice.choices) == ["osr", "reversal"]

    w.result_choice.value = "reversal"
    _add_and_wait(w)
    second = [layer for layer in viewer.layers if layer not in first]
    assert viewer.layers["reversal"] in second

    def y_range(layers):
        ext = np.array([np.asarray(layer.extent.world)[:, -2] for layer in layers if layer.visible])
        return ext[:, 0].min(), ext[:, 1].max()

    (a0, a1), (b0, b1) = y_range(first), y_range(second)
    assert b0 >= a1 or b1 <= a0  # the new result sits beside the old one, not on it

    # each result added puts the time slider on its largest response: after the longer reversal result the
    # slider was past the OSR's end, and adding the OSR showed a black canvas; among the attributed frames (the
    # maps are blank between them)
    from napari_retina import viewer as nrv

    for name in ("osr", "reversal", "osr"):
        result = w.results[name]
        w.result_choice.value = name
        _add_and_wait(w)
        summed = np.asarray(result.rates, float)[:, result.cells].sum(axis=1)
        summed[~np.isfinite(result.attribution.channels).all(axis=1)] = np.nan
        assert nrv.current_time(viewer) == pytest.approx(np.nanargmax(summed) * nr.FRAME_MS)
        assert nrv.current_time(viewer) < len(result.stimulus) * nr.FRAME_MS


# ----------------------------------------------------- 6. Progress, cancel ---

@pytest.fixture(scope="module")
def wide_tiny():
    """A tiny model whose full maps of 20,000 frames exceed the lazy threshold (the long-movie path)."""
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=40, kernels=(5, 5), n_cells=2)).eval()


def test_long_movie_reports_progress_every_percent_with_time_left_and_cancels_at_once(
        make_napari_viewer, wide_tiny, qtbot):
    from napari_retina.analysis import LAZY_MAP_BYTES, map_bytes

    frames = 20_000
    assert map_bytes(wide_tiny, frames) > LAZY_MAP_BYTES
    viewer = make_napari_viewer()
    _session.session(viewer).set_model(wide_tiny, "tiny test model")
    stim = nr.stimuli.white_noise(frames=frames, size=40, seed=0)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "long noise"))
    _, w = _plugin_dock(viewer, "Analyze")
    w.layer.value = layer
    w.invariance.value = "none"
    seen: list = []
    w.task.progress.changed.connect(lambda value: seen.append((value, w.task.progress.max, w.task.status.value)))

    _click(w.run_button)
    qtbot.waitUntil(lambda: any(v > 0 for v, _, _ in seen), timeout=WAIT_MS)
    _click(w.task.cancel_button)
    reports_at_cancel = len(seen)
    qtbot.waitUntil(lambda: not w.task.running, timeout=WAIT_MS)

    value, total, status = next(s for s in seen if s[0] > 0)
    assert total == frames - wide_tiny.config.history + 1
    assert value <= total / 100  # the first step is at most 1% of the movie (was 2,048 frames)
    assert "left" in status and "%" in status
    assert len(seen) - reports_at_cancel <= 1  # cancel acts at the next report
    assert w.task.status.value == "analysis cancelled"
    assert [la.name for la in viewer.layers] == ["long noise"]


def test_the_status_line_gives_the_progress_bar_s_own_percent(qtbot):
    from napari_retina._napari._tasks import Task

    task = Task("analysis")
    for done, total in [(419, 1000), (999, 1000), (1, 3), (2, 3), (3, 3)]:
        task._on_progress("attributing", done, total)
        bar = task.progress.native.text()  # Qt's own text of the bar, e.g. "41%"
        assert bar.endswith("%")
        assert task.status.value.startswith(f"attributing: {bar} "), (task.status.value, bar)


# ---------------------------------------------------------------- 8. Units ---

def test_a_stack_from_napari_s_own_reader_gets_physical_units_without_warnings(viewer, tmp_path, qtbot,
                                                                             messages):
    path = tmp_path / "movie.npy"
    np.save(path, nr.stimuli.white_noise(frames=30, size=20, seed=1))
    [layer] = viewer.open(str(path), plugin="napari")  # napari's built-in reader: scale 1, pixels
    assert [str(u) for u in layer.units] == ["pixel"] * 3
    _, w = _plugin_dock(viewer, "Analyze")
    w.layer.value = layer
    w.steps.value = 2
    _run_and_wait(w, qtbot)
    assert w.task.last_error is None and w.analysis is not None
    viewer.screenshot(canvas_only=True, flash=False)  # draw: napari checks the units then
    qtbot.wait(50)
    assert not [m for _, m in messages if "Inconsistent units" in m]
    assert [str(u) for u in layer.units] == ["millisecond", "micrometer", "micrometer"]
    np.testing.assert_allclose(layer.scale, (10.0, 55.0, 55.0))
    told = [m for s, m in messages if "no physical scale" in m]
    assert len(told) == 1 and "10 ms per frame" in told[0]


def test_a_failed_run_leaves_a_stack_without_physical_units_as_it_was(viewer, tmp_path, qtbot, messages):
    # the run gave the layer the model's scale before it failed (a NaN in the stack), and kept it
    movie = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    movie[12, 3, 4] = np.nan
    np.save(tmp_path / "movie.npy", movie)
    [layer] = viewer.open(str(tmp_path / "movie.npy"), plugin="napari")
    before = (tuple(layer.scale), [str(u) for u in layer.units], tuple(layer.axis_labels), dict(layer.metadata))
    _, w = _plugin_dock(viewer, "Analyze")
    w.layer.value = layer
    w.steps.value = 2
    _run_and_wait(w, qtbot)
    assert w.analysis is None and "must be finite" in str(w.task.last_error)
    assert (tuple(layer.scale), [str(u) for u in layer.units], tuple(layer.axis_labels), dict(layer.metadata)) \
        == before
    assert not [m for _, m in messages if "no physical scale" in m]   # not told of a change it did not keep


# ------------------------------------------------------ 9. Oversized stacks ---

def test_oversized_stack_full_message_and_a_draggable_crop_window(viewer, tiny, qtbot, messages):
    stim = nr.stimuli.white_noise(frames=30, size=40, seed=2)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "big"))
    _, w = _plugin_dock(viewer, "Analyze")
    w.layer.value = layer
    w.steps.value = 2
    _click(w.run_button)
    error = [m for s, m in messages if s == "error"][-1]
    assert "40x40" in error and "'window'" in error
    assert w.task.status.value == error  # the whole sentence, word-wrapped in the dock

    w.crop.value = "window"
    windows = [la for la in viewer.layers if la.metadata.get(META, {}).get("role") == "crop_window"]
    assert len(windows) == 1 and windows[0].mode == "select"
    window = windows[0]
    # the user drags the rectangle 7 px down and 13 px right of its centred place (10, 10)
    window.data = [np.asarray(window.data[0]) + np.array([7, 13])]
    _run_and_wait(w, qtbot)
    assert w.task.last_error is None
    assert tuple(w.analysis.attribution.crop_origin) == (17, 20)
    assert w.analysis.parameters["crop"] == (17, 20)
    ref = nr.attribute(tiny, stim, cell=0, steps=2, crop=(17, 20))
    np.testing.assert_allclose(w.analysis.attribution.channels, ref.channels, rtol=1e-5, atol=1e-6)
    outline = [la for la in viewer.layers if la.metadata.get(META, {}).get("role") == "analysed_window"]
    assert len(outline) == 1
    corners = np.asarray(outline[0].data[0])
    np.testing.assert_allclose(corners.min(0), (16.5, 19.5))
    np.testing.assert_allclose(corners.max(0), (36.5, 39.5))


# --------------------------------------------------------------- 10. Layout ---

def test_plugin_docks_are_tabbed_and_the_model_summary_is_short(viewer, tiny, qtbot):
    docks = {name: _plugin_dock(viewer, name) for name in ("Stimulus", "Model", "Analyze", "Experiments")}
    main = docks["Stimulus"][0].parentWidget()
    qtbot.waitUntil(lambda: len(main.tabifiedDockWidgets(docks["Stimulus"][0])) == 3, timeout=5000)

    model_dock, mw = docks["Model"]
    big = nr.RetinaCNN(tiny.config)
    big.provenance = {"trained_by": "test", "data_attrs": {"retina": "x" * 5000},
                      "history": [{"epoch": i, "loss": 0.1} for i in range(50)]}
    big.scores = {"test_r_mean": 0.9, "test_r": [0.9, 0.8]}
    _session.session(viewer).set_model(big, "a checkpoint with a long history")
    lines = mw.summary.value.splitlines()
    assert 2 <= len(lines) <= 3 and all(len(line) <= 100 for line in lines)
    assert "xxxxxxxxxx" not in mw.summary.value and mw.details.native.isHidden()
    assert lines[-1].startswith("r with the recorded rates, test split 0.9;")   # words, not a key to decode
    _click(mw.show_details)
    assert not mw.details.native.isHidden()
    assert all(len(line) <= 100 for line in mw.details.value.splitlines())
    assert "r with the recorded rates, test split (test_r_mean): 0.9" in mw.details.value.splitlines()
    assert model_dock.sizeHint().height() < 1000


def test_status_and_result_sentences_span_the_dock_s_width(make_napari_viewer, tiny, qtbot):
    """At 1280×800 the Analyze dock's status and result sat in the value column alone (~190 px), lines of two
    words reaching below the fold: a label without a label of its own spans the row."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    _session.session(viewer).set_model(tiny, "tiny test model")
    _, w = _plugin_dock(viewer, "Analyze")
    w.task.status.value = w.result_label.value = "a sentence long enough to wrap over a few lines " * 4
    qtbot.wait(50)
    row = w.run_button.native.width()   # a button spans the dock's row
    for label in (w.task.status, w.result_label):
        assert label.native.width() >= 0.9 * row, (label.native.width(), row)
    assert w.cell.native.width() < 0.6 * row   # a labelled box keeps its label column


# ------------------------------------------------------ 11. Tooltips, units ---

def _value_widgets(container):
    from magicgui.widgets import Container, Label, ProgressBar, PushButton, Table

    for child in container:
        if isinstance(child, Container):
            yield from _value_widgets(child)
        elif not isinstance(child, (Label, ProgressBar, PushButton, Table)):
            yield child


def _check_words(widget) -> None:
    from magicgui.widgets.bases import RangedWidget

    for child in _value_widgets(widget):
        assert child.tooltip, f"{type(widget).__name__}: '{child.label}' has no tooltip"
        if isinstance(child, RangedWidget):
            assert "(" in child.label and child.label.endswith(")"), f"'{child.label}' has no unit"


def test_every_parameter_has_a_tooltip_and_a_unit(viewer):
    for name in ("Model", "Analyze", "Experiments"):
        _check_words(_plugin_dock(viewer, name)[1])
    _, stim = _plugin_dock(viewer, "Stimulus")
    for generator in stim.generator.choices:
        stim.generator.value = generator
        _check_words(stim)
    _, analyze = _plugin_dock(viewer, "Analyze")
    assert analyze.steps.label == "steps (α points; 0: adaptive)"
    assert analyze.explain.label == "explain (fraction of variance)"
    assert analyze.tol.label == "tol (relative error)"


def test_result_terms_link_to_their_definitions(viewer, qtbot):
    from napari_retina._napari._widgets._common import TERMS

    _, w = _plugin_dock(viewer, "Experiments")
    w.steps.value = 2
    _run_experiment(w, "osr", qtbot)
    assert 'EXPERIMENTS.md#present"' in w.overview.value
    assert w.overview.native.openExternalLinks()
    assert 'EXPERIMENTS.md#slope">slope</a>' in w.terms.value and 'EXPERIMENTS.md#r2">r2</a>' in w.terms.value
    assert 'EXPERIMENTS.md#omitted-share">omitted_share</a>' in w.terms.value
    doc = (REPO / "docs" / "EXPERIMENTS.md").read_text()
    for anchor in TERMS.values():
        assert f'<a id="{anchor}"></a>' in doc


def test_a_shortened_readout_shows_every_value_in_its_tooltip(viewer, qtbot):
    _, w = _plugin_dock(viewer, "Experiments")
    w.steps.value = 2
    _run_experiment(w, "osr", qtbot)
    readout = w.results["osr"].readout
    table = w.table.native
    rows = {table.item(r, 0).text().split(" (")[0]: r for r in range(table.rowCount())}   # the key, not its unit
    periods = readout["periods_ms"]
    assert len(periods) > 6
    item = table.item(rows["periods_ms"], 1)
    assert item.text().endswith(f"({len(periods)} values)]")  # the cell is shortened ...
    assert item.toolTip() == "[" + ", ".join(f"{float(p):.4g}" for p in periods) + "]"  # ... its tooltip is not
    reduced = readout["reduced"]   # the reduced circuit's readouts are a column of their own, shortened alike
    assert table.item(rows["periods_ms"], 2).toolTip() == "[" + ", ".join(f"{float(p):.4g}" for p in
                                                                         reduced["periods_ms"]) + "]"
    assert table.item(rows["slope"], 1).text() == f"{readout['slope']:.4g}"   # as rounded, not re-printed


def _contrast(a, b) -> float:
    """WCAG contrast ratio of two QColors (1 to 21)."""
    def lum(c):
        ch = [v / 255 for v in (c.red(), c.green(), c.blue())]
        ch = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _drawn_colours(widget):
    """The colours a widget draws, most frequent first: [(QColor, pixel count)]."""
    from qtpy.QtGui import QColor, QImage

    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    bgra = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3]
    colours, counts = np.unique(bgra.reshape(-1, 3), axis=0, return_counts=True)
    return [(QColor(int(c[2]), int(c[1]), int(c[0])), int(n)) for c, n in sorted(zip(colours, counts),
                                                                               key=lambda cn: -cn[1])]


def test_result_links_are_drawn_readable_in_the_dark_and_the_light_theme(viewer, qtbot):
    # a QLabel draws links in the application palette's #0000ff, whatever its own palette says: on napari's
    # dark dock background (#23242b) a contrast of ~1.8; checked on the pixels drawn, not on a palette
    _, w = _plugin_dock(viewer, "Experiments")
    w.overview.value = '<a href="https://example.org">present present present</a>'
    for theme in ("dark", "light", "dark"):
        viewer.theme = theme
        qtbot.wait(20)
        drawn = _drawn_colours(w.overview.native)
        background, text = drawn[0][0], drawn[1][0]       # the most frequent: the background, then the glyphs
        assert (text.red(), text.green(), text.blue()) != (0, 0, 255), theme
        assert _contrast(text, background) >= 4.5, (theme, text.name(), background.name())  # WCAG AA
    assert 'href="https://example.org"' in w.overview.value       # still a link


# ----------------------------------------------------------- 12. Round trip ---

def test_a_saved_analysis_reopens_with_maps_traces_and_settings(viewer, tiny, tmp_path, qtbot):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=3)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    _, w = _plugin_dock(viewer, "Analyze")
    w.layer.value = layer
    w.steps.value = 3
    w.invariance.value = "none"
    w.explain.value = 0.8
    w.cell.value = 1
    _run_and_wait(w, qtbot)
    path = tmp_path / "saved.h5"
    w.save_path.value = path
    _click(w.save_button)
    assert path.is_file()
    original = w.analysis
    plot = _plot.trace_plot(viewer, create=False)
    live_bar = [la.name for la in w.added_layers if la.colorbar.visible]
    live_legend = plot.title.text().split("<br>")[1]
    assert len(live_bar) == 1 and live_legend.startswith("Maps: attribution")

    layers = viewer.open(str(path), plugin=PLUGIN)
    qtbot.waitUntil(lambda: viewer.layers.selection.active is layers[0], timeout=2000)   # not its last, hidden map
    roles = [la.metadata.get(META, {}).get("role") for la in layers]
    assert roles[0] == "stimulus" and roles.count("map") == 8
    np.testing.assert_array_equal(np.asarray(layers[0].data), original.attribution.stimulus)
    maps = [la for la, r in zip(layers, roles) if r == "map"]
    np.testing.assert_array_equal(np.asarray(maps[2].data), original.attribution.maps[:, 2])
    # the traces come back into the plot dock, with the maps' legend line, and the colour bar on the same channel
    shown = {s["label"]: s["values"] for s in plot.series}
    np.testing.assert_array_equal(shown["model response"], original.attribution.response)
    assert any(label.startswith("reduced circuit") for label in shown)
    assert plot.title.text().split("<br>")[1] == live_legend           # was: no legend line (no unit, no limits)
    assert [la.name.split(": ")[1] for la in maps if la.colorbar.visible] == [live_bar[0].split(": ")[1]]

    # the settings come back into the Analyze widget
    w.steps.value, w.explain.value, w.cell.value, w.invariance.value = 8, 0.9, 0, "auto"
    w.layer.value = layers[0]
    _click(w.settings_button)
    assert (w.steps.value, w.explain.value, w.cell.value, w.invariance.value) == (3, 0.8, 1, "none")
    assert w.parameters() == {**original.parameters, "crop": "none"}
    reshown = nr.show(path, viewer)                                     # the same through the scripting API
    assert [la.name for la in reshown if la.colorbar.visible] == [f"saved: {live_bar[0].split(': ')[1]}"]
    assert plot.title.text().split("<br>")[1] == live_legend


# ------------------------------------------ the Traces dock's whole-cell row ---

LIGHTER_BY = 0.3
"""How much lighter (0-1, as drawn over the plot's background) the reduced circuit's line is than the ground
truth's band: at TRUTH_ALPHA 0.35 the two read as the same grey (0.64 and 0.39)."""


def _truth_plot(make_napari_viewer, T: int = 200):
    """A plot of a cell whose reduced circuit's response is exactly its ground truth's (the worst case, the
    OSR experiment's first flash train) and whose model's lies 0.6 above: (plot, the first row's series, the
    rendered canvas (H, W, 4) uint8, canvas pixels per plot pixel)."""
    from types import SimpleNamespace

    from napari_retina._napari import _layers

    truth = np.sin(np.arange(T) / 15).astype(np.float32)
    attr = SimpleNamespace(response=truth + 0.6, channels=np.zeros((T, 2), np.float32))
    red = SimpleNamespace(explained_variance=0.919, reduced_response=truth, kept=[0, 1])
    series = _layers.trace_series(attr, red, _layers.CellTraces(truth=truth))
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 900)
    plot = _plot.trace_plot(viewer)
    plot.set_traces(series, np.arange(T) * 10.0, "truth", "truth")
    image = plot.canvas.render()
    return plot, series, image, image.shape[1] / plot.canvas.size[0]


def _drawn(plot, rgba) -> np.ndarray:
    """An RGBA colour (4,) 0-1 as drawn over the plot's background: RGB (3,) 0-255."""
    rgba, bg = np.asarray(rgba, float), np.asarray(plot.canvas.bgcolor.rgba[:3], float)
    return 255 * (rgba[3] * rgba[:3] + (1 - rgba[3]) * bg)


def _pixel(image, node, scale, x, y) -> np.ndarray:
    """The rendered RGB (3,) of a vispy node's local point (x, y)."""
    cx, cy = node.node_transform(node.canvas.scene).map([x, y])[:2] * scale
    return image[int(round(cy)), int(round(cx)), :3].astype(float)


def test_the_reduced_circuit_s_line_shows_over_the_ground_truth_s_band_and_reads_lighter(make_napari_viewer):
    """Audit: the reduced circuit's thin grey line and the ground truth's band read as the same grey, and the band
    (drawn first, under the lines) hid the line where the two coincide (vispy's depth test let nothing at the
    same depth be drawn over it). Pixels read off the rendered plot, along the reduced circuit's line."""
    plot, series, image, scale = _truth_plot(make_napari_viewer)
    kind = {s["kind"]: s for s in series}
    reduced, band = _drawn(plot, kind["reduced"]["color"]), _drawn(plot, kind["truth"]["color"])
    assert reduced.mean() - band.mean() >= 255 * LIGHTER_BY, (reduced, band)
    values, row = kind["reduced"]["values"], plot.rows[0]
    frames = [k for k in range(15, len(values)) if abs(values[k]) > 0.9]   # flat stretches, off the zero line
    assert len(frames) >= 20
    for k in frames[::4]:
        x, y = row.view.scene.node_transform(plot.canvas.scene).map([k * 10.0 / plot.ms_per_unit, values[k]])[:2]
        x, y = int(round(x * scale)), int(round(y * scale))
        patch = image[y - 3:y + 4, x - 1:x + 2, :3].reshape(-1, 3).astype(float)
        # the line is drawn (its own grey, over the band), and the band around it
        assert np.abs(patch - reduced).max(axis=1).min() <= 3, (k, patch[:, 0])
        assert np.abs(patch - band).max(axis=1).min() <= 3, (k, patch[:, 0])


def test_each_legend_name_has_a_sample_of_its_line_in_its_colour(make_napari_viewer):
    """Audit: the legend was text only ("reduced circuit (EV 0.919)", "ground truth (band)", both in the same
    grey): a reader could not tell which curve is which. Each name has, left of it, a stretch of its trace's line
    drawn in its colour (the band's faint white included), read off the rendered legend."""
    plot, series, image, scale = _truth_plot(make_napari_viewer)
    drawn = {}
    for row in plot.rows:
        assert len(row.samples) == len(row.series) == len(row.labels) - 1   # the last name is the unit
        for s, sample, label in zip(row.series, row.samples, row.labels):
            w, h = sample.size
            got = _pixel(image, sample, scale, w / 2, h / 2)
            np.testing.assert_allclose(got, _drawn(plot, s["color"]), atol=3, err_msg=s["label"])
            left_of_name = label.node_transform(plot.canvas.scene).map([0, 0])[0]
            assert sample.node_transform(plot.canvas.scene).map([w, 0])[0] <= left_of_name + 0.5
            assert sample.line.width == s.get("width", _plot.LINE_WIDTH)
            drawn[s["kind"]] = got
    assert drawn["reduced"].mean() - drawn["truth"].mean() >= 255 * LIGHTER_BY


# ------------------------------------------------------------ 13. First run ---

def test_headless_demo_prints_a_short_summary(make_napari_viewer, tmp_path, capsys):
    import json

    from napari_retina.cli import main

    assert main(["demo", "--headless", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert 2 <= len(out) <= 6
    assert str(tmp_path / "napari-retina-demo.json") in out[-1]
    full = json.loads((tmp_path / "napari-retina-demo.json").read_text())
    assert "model" in full and f"{full['completeness_error']:.2e}" in "\n".join(out)


def _fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the setup script and the package configuration, and a fake python/dpkg-query that log calls."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/setup.sh", "setup.cfg", "pyproject.toml"):
        (repo / name).write_text((REPO / name).read_text())
    log = tmp_path / "calls.log"
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    python = f'#!/bin/sh\necho "python $*" >> {log}\nif [ "$1" = -m ] && [ "$2" = venv ]; then\n' \
             f'  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\nfi\nexit 0\n'
    tools = {"python3.11": python, "dpkg-query": "#!/bin/sh\necho 'install ok installed'\n"}
    for name, text in tools.items():
        (fakebin / name).write_text(text)
        (fakebin / name).chmod(stat.S_IRWXU)
    return repo, fakebin


def test_setup_script_run_again_reuses_the_environment(tmp_path):
    repo, fakebin = _fake_tools(tmp_path)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}  # the fake python3.11, whatever the caller set
    env["PATH"] = f"{fakebin}:{os.environ['PATH']}"

    def run(*args) -> list[str]:
        before = log.read_text().splitlines() if log.exists() else []
        done = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [c for c in log.read_text().splitlines()[len(before):] if "-m pip install" in c]

    assert any("-e .[qt]" in c for c in run())  # first run: installs
    assert run() == []  # the same command again: nothing is installed
    assert [c for c in run("testing") if "-e" in c] == ["python -m pip install -q -e .[testing]"]
    assert run("testing") == [] and run() == []  # testing covers the plain run too
