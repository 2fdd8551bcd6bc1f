"""What a neuroscientist sees on a laptop's 1280×800 window, above the fold, without scrolling.

The plugin's docks are added as the Plugins menu does (``add_plugin_dock_widget``, tabbed on the right, as in
docs/TOUR.md), Analyze or Run is pressed, and what is drawn is measured: the Traces dock's time axis and its
label, the Experiments dock's readout names. (The colour bar's top tick: tests/test_napari_layers.py.)
"""

from __future__ import annotations


import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _plot, _session  # noqa: E402
from napari_retina._napari._layers import stimulus_layer_kwargs  # noqa: E402

LAPTOP = (1280, 800)
DESKTOP = (1600, 1000)
WIDGETS = ("Analyze", "Model", "Stimulus", "Experiments")


def _laptop_viewer(make_napari_viewer, tiny, plugin, qtbot):
    """A shown viewer at 1280×800 with the tiny model and the plugin's four docks tabbed on the right."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*LAPTOP)
    _session.session(viewer).set_model(tiny, "tiny test model")
    docks = {name: viewer.window.add_plugin_dock_widget(plugin, name, tabify=True) for name in WIDGETS}
    qtbot.wait(50)
    return viewer, docks


def _label_rows_in_viewport(plot) -> tuple[float, float]:
    """The time axis' label's top and bottom (px) in the Traces dock's scroll viewport (0 at the viewport's top).

    The label's vertical centre is read off vispy (its position mapped to the canvas), its height is that of the
    8-pt text at 96 dpi, generously; the canvas is placed in the viewport by Qt.
    """
    from qtpy.QtCore import QPoint

    label = plot.x_axis.axis._axis_label_vis
    centre = float(label.get_transform("visual", "canvas").map(label.pos)[0, 1])
    half = 0.5 * label.font_size * 96 / 72
    top = plot.canvas.native.mapTo(plot.scroll.viewport(), QPoint(0, 0)).y()
    return top + centre - half, top + centre + half


def _assert_time_axis_in_view(plot) -> None:
    viewport = plot.scroll.viewport().height()
    top, bottom = _label_rows_in_viewport(plot)
    assert plot.x_axis.axis.axis_label.startswith("time (ms) · slider at ")
    assert 0 <= top and bottom <= viewport, (top, bottom, viewport, plot.scroll.widget().height())


def test_the_time_axis_and_its_label_show_without_scrolling_on_a_laptop(make_napari_viewer, tiny, plugin, qtbot):
    """At 1280×800 the Traces dock's page (title and plot, 284 px) was 34 px taller than its viewport (250 px,
    the most napari's dock area gives it): the time axis and its label ("time (ms) · slider at ...") lay below
    the fold. Every row showed a third legend line's height (the first row's), and the axis had room to spare."""
    viewer, docks = _laptop_viewer(make_napari_viewer, tiny, plugin, qtbot)
    stim = nr.stimuli.white_noise(frames=60, size=20, seed=1)
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    w = docks["Analyze"][1]
    w.layer.value, w.steps.value, w.explain.value = layer, 2, 0.6   # 3 kept units
    assert w.run()
    w.task.wait(600_000)
    assert w.task.last_error is None
    plot = viewer.window.dock_widgets[_plot.DOCK_NAME]
    qtbot.waitUntil(lambda: plot._complete, timeout=60_000)
    qtbot.wait(200)   # Qt lays the window out again (the dock grows to its rows, where it can)
    assert len(plot.rows) == 4 and len(plot.rows[0].labels) == 3     # as in the tour: the cell, 3 kept units
    assert plot.scroll.verticalScrollBar().value() == 0
    _assert_time_axis_in_view(plot)
    viewer.window.resize(*DESKTOP)   # and on a desktop's window
    qtbot.waitUntil(lambda: viewer.window._qt_window.height() >= DESKTOP[1] - 50, timeout=5000)
    qtbot.wait(200)
    _assert_time_axis_in_view(plot)
    assert plot.scroll.verticalScrollBar().maximum() == 0   # every row shows whole there


def _drawn_name(table, row: int) -> tuple[str, object]:
    """The text the names' column draws in ``row`` and the style option it is drawn with (as the view does)."""
    from qtpy.QtWidgets import QStyleOptionViewItem

    option = QStyleOptionViewItem()
    table.itemDelegateForColumn(0).initStyleOption(option, table.model().index(row, 0))
    return option.text, option


def test_the_readout_names_are_read_whole_at_the_default_dock_width(make_napari_viewer, tiny, plugin, qtbot):
    """In the Experiments dock at its default width (a 1280×800 window), the 110-px name column cut the readout
    names: "burst_l…_per_px", "reversa…ions_px". Each name is now drawn whole: laid out as Qt lays out the cell's
    text (word wrap at the column's width less the text margins), it fits the cell's width and its row's height;
    and the value columns stay in sight (no horizontal scrolling)."""
    from qtpy.QtCore import QRect, Qt
    from qtpy.QtWidgets import QStyle, QStyleOptionViewItem

    viewer, docks = _laptop_viewer(make_napari_viewer, tiny, plugin, qtbot)
    dock, w = docks["Experiments"]
    dock.raise_()
    w.steps.value = 2
    assert w.run(["reversal"])
    w.task.wait(600_000)
    assert w.task.last_error is None
    qtbot.wait(100)
    table = w.table.native
    names = [table.item(row, 0).text() for row in range(table.rowCount())]
    assert {"burst_latency_slope_ms_per_px (ms/px)", "reversal_positions_px (px)"} <= set(names)   # the longest
    margin = table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, table) + 1
    width = table.columnWidth(0) - 2 * margin
    metrics = table.fontMetrics()
    for row, name in enumerate(names):
        text, option = _drawn_name(table, row)
        assert text.replace("\u200b", "") == name                       # the name, with break points only
        wraps = bool(option.features & QStyleOptionViewItem.ViewItemFeature.WrapText)
        box = metrics.boundingRect(QRect(0, 0, width, 10_000), int(Qt.TextFlag.TextWordWrap) if wraps else 0, text)
        assert box.width() <= width and box.height() <= table.rowHeight(row), (name, box, width,
                                                                               table.rowHeight(row))
    assert table.horizontalScrollBar().maximum() == 0
    assert all(table.columnWidth(col) >= metrics.horizontalAdvance("-0.0000") for col in range(1, table.columnCount()))
