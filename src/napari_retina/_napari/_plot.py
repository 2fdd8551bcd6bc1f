"""The trace plot dock: an analysis' traces on real axes, with a time cursor linked to the slider.

One row per trace group, each with its own vertical scale and axis in spikes
per 10 ms bin: row 0 the model's response ``F(s_t) − F(0)`` (and the reduced
circuit's response), then one row per kept channel's ``A_c(t)``
(:func:`._layers.trace_series`). A shared time axis in s (ms for movies
shorter than :data:`MS_BELOW_MS`), pan with the left mouse button and zoom
with the wheel (x is linked across rows), and a time cursor that follows the
viewer's time slider; a click (press and release without dragging) in a
row moves the slider to that time, and a click on a channel's name in the
legend column shows that channel's map alone (:meth:`TracePlot.solo`: maps
that overlap hide each other under translucent blending); a second click,
or a click on the first row's names, shows the maps as they were.

Drawn with vispy (napari's own renderer). Long traces are min/max-decimated
to about :data:`POINTS_PER_PIXEL` points per horizontal pixel of the visible
time range (:func:`decimate`), recomputed as the view zooms, so 100,000-frame
traces stay fast; the full arrays stay in ``plot.series``.

Example
-------
>>> plot = show_traces(viewer, attr, red, stimulus_layer)   # doctest: +SKIP
>>> plot.cursor_time_ms                                     # doctest: +SKIP
0.0
"""

from __future__ import annotations

import weakref
from typing import Iterator, Optional

import numpy as np
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from vispy import scene
from vispy.scene.visuals import InfiniteLine, Line
from vispy.visuals.axis import Ticker
from vispy.visuals.text.text import FontManager

from . import _exit
from ._docking import docked_in, vertical_scroll
from ._framing import frame_result
from ._layers import (CURSOR_COLOR, META, CellTraces, _rgba, analysed_geometry, bar_in, layer_geometry, map_layers,
                      plugin_metadata, round_up, show_alone, show_colour_bar, show_marked_colour_bar, trace_series,
                      unit_factor)

DOCK_NAME = "Traces (napari-retina)"
"""Title of the trace plot's dock widget."""
MS_BELOW_MS = 2000.0
"""Movies shorter than this (ms) get a time axis in ms, longer ones in s."""
POINTS_PER_PIXEL = 2
"""Decimated points per horizontal pixel (a min and a max per pixel column)."""
CLICK_PIXELS = 4
"""A press and release closer than this (pixels) is a click (moves the slider), not a pan."""
LINE_WIDTH = 1.5
"""Width of a trace's line (px) unless its series says another (``width``)."""
UNIT = "spikes/bin"
"""Unit of every trace: spikes per 10 ms bin (the model's rate units)."""
LEGEND_WIDTH_PX = 190
"""Width of the legend column (each row's trace names in their colours)."""
SAMPLE_PX = 18
"""Width of the short stretch of each trace's line drawn before its name in the legend (:class:`_Sample`)."""
DIMMED_ALPHA = 0.35
"""Opacity of the other channels' names while one channel's map is shown alone."""
ROW_HEIGHT_PX = 60
"""The plot asks for this many pixels per row (up to :data:`MAX_HEIGHT_PX` in all)."""
MAX_HEIGHT_PX = 380
"""The most height the plot asks for (it can be made smaller)."""
DOCK_SHARE = 0.45
"""New traces grow the plot's dock to show every row, up to this share of the window's height (beyond it,
and whenever the dock is made smaller, the title and the rows scroll)."""
ROW_MIN_PX = 32
"""No row is shorter than this many pixels (:func:`row_min_px`): below it its y axis' labels overlap,
and a bottom dock otherwise keeps whatever height it was first given."""
LEGEND_LINE_PX = 13
"""Height of one legend line (8-pt text, 11 px): a row is at least this times its legend's lines tall (the
first row has three: the model's response, the reduced circuit's, the unit; the other rows two)."""
X_AXIS_PX = 34
"""Height of the time axis: its ticks, their labels and, below them, its label ("time (ms)"). Fixed, so
that a plot squeezed to its minimum height takes the room from the rows, not from the axis' label."""
PAGE_SPACING_PX = 2
"""Space between the title and the plot (Qt's default, 6 px, took room from the rows on a laptop's screen)."""
X_TICK_PX = 6
"""Length of the time axis' ticks (vispy's default, 10 px, took room from the rows on a laptop's screen)."""
REVEAL_PER_PASS = 4
"""Most nodes a new plot shows per event-loop pass when it is built in steps (:meth:`TracePlot.traces_steps`)."""
TEXT_PER_PASS = 2
"""Most nodes with text among them (:func:`reveal_batches`)."""

BAR_WAS_KEY = "colour_bar_hidden"
"""Plugin-metadata key of a map layer whose colour bar was hidden because another result was plotted
(:meth:`TracePlot._colour_bar_follows`): its bar comes back when its result is plotted again."""
EMPTY_TITLE = "The traces of an analysis (Analyze) or of an experiment's result appear here."
"""The title of a plot with no traces."""
PLOT_HELP = ("Drag to pan, wheel to zoom, click to move the time slider; click a channel's name to see its map "
             "alone (again: all maps).")
"""How to use the plot: the tooltip of its title and rows (the title says what the traces are)."""

_PLOTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def decimate(t: np.ndarray, v: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation of a trace for display: at most ``2·n_bins`` of its real samples, in time order.

    ``t`` (N,) increasing, ``v`` (N,) finite. The samples are cut into
    ``n_bins`` equal runs and each run keeps its minimum and its maximum, so
    every peak and trough survives; traces of at most ``2·n_bins`` samples
    come back unchanged. Vectorised (``np.minimum.reduceat``): a few ms for
    100,000 samples.
    """
    idx = decimated_indices(v, n_bins)
    return t[idx], v[idx]


def decimated_indices(v: np.ndarray, n_bins: int) -> np.ndarray:
    """The indices of the samples :func:`decimate` keeps (int64, increasing)."""
    n = len(v)
    if n <= 2 * max(n_bins, 1):
        return np.arange(n)
    starts = np.linspace(0, n, n_bins + 1).astype(np.int64)[:-1]
    starts = np.unique(starts)
    edges = np.r_[starts, n]
    # index of the min and the max in each run: argmin per run via a sort-free trick
    run = np.repeat(np.arange(len(starts)), np.diff(edges))
    vmin = np.minimum.reduceat(v, starts)
    vmax = np.maximum.reduceat(v, starts)
    is_min = v == vmin[run]
    is_max = v == vmax[run]
    first_min = _first_per_run(is_min, run, len(starts))
    first_max = _first_per_run(is_max, run, len(starts))
    return np.unique(np.r_[first_min, first_max])  # sorted: time order


def trace_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finite samples of a trace and which unbroken run each belongs to: (index (n,), run id (n,)).

    An experiment's traces are finite on its attributed frames only: the
    conditions' windows, each thinned to every k-th frame. A gap between two
    finite samples wider than the usual spacing (the median one) is where
    nothing was computed, so the line is broken there rather than drawn
    straight across frames no one looked at.
    """
    index = np.flatnonzero(np.isfinite(values))
    if len(index) < 2:
        return index, np.zeros(len(index), np.int64)
    step = np.diff(index)
    return index, np.r_[0, np.cumsum(step > np.median(step))]


def _first_per_run(flag: np.ndarray, run: np.ndarray, n_runs: int) -> np.ndarray:
    """Index of the first True of ``flag`` in each run (every run has one)."""
    hits = np.flatnonzero(flag)
    first = np.full(n_runs, -1, np.int64)
    # reversed assignment: the first hit of a run is written last and wins
    first[run[hits[::-1]]] = hits[::-1]
    return first


def drain(steps: Iterator[None]):
    """Run a generator of GUI steps (e.g. :meth:`TracePlot.traces_steps`) to its end at once; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def reveal_batches(nodes: list) -> list[list]:
    """``nodes`` cut, in order, into the groups a staged build shows per pass.

    A group has at most :data:`REVEAL_PER_PASS` nodes, of which at most
    :data:`TEXT_PER_PASS` have text (an axis, a label): a text node's
    first paint (its glyphs and shaders) costs several times a line's.
    """
    batches, batch, texts = [], [], 0
    for node in nodes:
        batch.append(node)
        texts += isinstance(node, (scene.AxisWidget, scene.Label))
        if texts == TEXT_PER_PASS or len(batch) == REVEAL_PER_PASS:
            batches.append(batch)
            batch, texts = [], 0
    return batches + ([batch] if batch else [])


def row_min_px(lines: int) -> int:
    """The least height (px) of a row whose legend has ``lines`` lines: a line of text each, and room for its y
    axis' labels (:data:`ROW_MIN_PX`). Each row asks for its own: the first row's three lines made every row
    as tall, and pushed the time axis below the fold of a 1280×800 window."""
    return max(ROW_MIN_PX, LEGEND_LINE_PX * lines)


def time_unit(duration_ms: float) -> tuple[str, float]:
    """("ms", 1) for movies shorter than :data:`MS_BELOW_MS`, else ("s", 1000): the axis unit and ms per unit."""
    return ("ms", 1.0) if duration_ms < MS_BELOW_MS else ("s", 1000.0)


def _share_font(text_visuals, manager) -> None:
    """Let vispy text visuals share one font manager: each glyph is rasterised once per plot, not once per
    visual (vispy gives every text visual a manager of its own, and rasterising glyphs is most of a plot's
    build time)."""
    for text in text_visuals:
        text._font_manager = manager
        text._update_font()


def nice_ticks(lo: float, hi: float, max_ticks: int) -> np.ndarray:
    """About ``max_ticks`` (at most one more) round values (1, 2 or 5 × 10^k steps) inside [lo, hi]."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return np.array([lo])
    raw = span / max(max_ticks, 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    ticks = np.arange(np.ceil(lo / step) * step, hi + 1e-9 * span, step)
    return np.round(ticks / step) * step + 0.0  # + 0.0: no '-0' labels


#: the relative margin of a row's camera range: none (vispy takes 0 for 0.1 absolute)
NO_MARGIN = 1e-9
#: half the height (px) of a y tick label (7 pt), with a pixel to spare: no tick that near a row's top
Y_LABEL_HALF_PX = 6


class _Ticker(Ticker):
    """vispy's ticker with room for its labels: one major tick per ``spacing`` pixels, no minor ticks, none
    within ``inset_px`` of the axis' high end (a y axis' top).

    vispy's own picks ticks per inch and crowds the labels of a short axis. A
    row's y labels are centred on their ticks: a "0" at a row's bottom spilt
    half a label over the row below, whose "0.1" at its top it overprinted.
    With no label near a row's top, each edge between rows has one label at
    most, and the bottom one (mostly 0) stays.
    """

    def __init__(self, axis, spacing: float, inset_px: float = 0.0) -> None:
        super().__init__(axis)
        self.spacing = spacing
        self.inset_px = inset_px

    def _get_tick_frac_labels(self):
        a, b = self.axis.domain
        lo, hi = min(a, b), max(a, b)
        length = float(np.hypot(*(np.asarray(self.axis.pos[1]) - np.asarray(self.axis.pos[0]))))
        inset = min(self.inset_px / length, 0.25) * (hi - lo) if length > 0 else 0.0
        wanted = max(3, int(length // self.spacing))
        major = nice_ticks(lo, hi - inset, wanted)
        while len(major) < 2 and wanted < 12:   # a step too coarse for the room left: "0" alone, no scale
            wanted += 1
            major = nice_ticks(lo, hi - inset, wanted)
        frac = (major - lo) / (hi - lo) if hi > lo else np.zeros(len(major))
        if b < a:
            frac = 1 - frac
        return frac, np.zeros(0), [f"{m:g}" for m in major]


class _Axis(scene.AxisWidget):
    """vispy's AxisWidget whose ticks also follow where it and its view sit in the layout.

    vispy updates an axis' domain when the view's camera moves only; a row or
    the legend column appearing moves the widgets without that.
    """

    def link_view(self, view) -> None:
        super().link_view(view)
        self.transform.changed.connect(self._relink)
        view.transform.changed.connect(self._relink)

    def on_resize(self, event) -> None:
        super().on_resize(event)
        self._relink()

    def _relink(self, event=None) -> None:
        if self._linked_view is not None:
            self._view_changed()


def _axis(orientation: str, label: Optional[str], **kwargs) -> _Axis:
    axis = _Axis(orientation=orientation, axis_label=label, text_color="#cccccc", axis_color="#888888",
                 tick_color="#888888", **kwargs)
    vertical = orientation in ("left", "right")
    axis.axis.ticker = _Ticker(axis.axis, spacing=16 if vertical else 80, inset_px=Y_LABEL_HALF_PX if vertical else 0)
    return axis


def _stretch_to(widget, height_px: float) -> None:
    """Let ``widget`` take a share of the plot's height in proportion to ``height_px``, in units of the time
    axis' height (whose row, empty cells included, has stretch 1): at the canvas' minimum height every row
    then gets exactly its minimum (:func:`row_min_px`), and a taller canvas grows them all alike."""
    widget.stretch = (widget.stretch[0], height_px / X_AXIS_PX)


class _Sample(scene.Widget):
    """A legend entry's line sample: a short stretch of its trace's line, in its colour and width, before its name
    (the reduced circuit's grey line and the ground truth's faint band, both achromatic, told apart at a glance)."""

    def __init__(self, series: dict) -> None:
        self.line = Line(np.zeros((2, 2), np.float32), antialias=False)   # before vispy freezes the attributes
        super().__init__()
        self.width_min = self.width_max = SAMPLE_PX
        self.line.parent = self
        self.set_series(series)

    def set_series(self, series: dict, alpha: float = 1.0) -> None:
        """Draw ``series``' colour (its alpha times ``alpha``) and width (px)."""
        color = np.array(series["color"], float)
        color[3] *= alpha
        self.line.set_data(color=color, width=series.get("width", LINE_WIDTH))

    def on_resize(self, event) -> None:
        w, h = self.rect.size
        self.line.set_data(pos=np.array([[2, h / 2], [w - 2, h / 2]], np.float32))


class _Row:
    """One row of the plot: a view box with its own y axis, its traces, label and cursor line."""

    def __init__(self, grid, r: int, series: list[dict], cursor_x: float, font_manager) -> None:
        self.series = series
        self.view = grid.add_view(row=r, col=1, camera="panzoom", border_color="#444444")
        # the unit is in the legend column and the title: a rotated label per row collides in short rows
        self.axis = _axis("left", None, tick_label_margin=4, tick_font_size=7)
        self.axis.width_max = 44
        grid.add_widget(self.axis, row=r, col=0)
        self.axis.link_view(self.view)
        self.lines = []
        for s in series:
            line = Line(np.zeros((2, 2), np.float32), color=s["color"], width=s.get("width", LINE_WIDTH),
                        parent=self.view.scene, antialias=False)
            # no depth test (as the zero and cursor lines): the draw order (``order``) decides what is on top.
            # vispy's default, with every trace at depth 0, let the band drawn first hide the lines drawn after
            line.set_gl_state("translucent", depth_test=False)
            self.lines.append(line)
        legend = self.legend = grid.add_grid(row=r, col=2)
        legend.width_max = LEGEND_WIDTH_PX
        names = [(s["label"], s.get("label_color", s["color"])) for s in series] + [(UNIT, (0.6, 0.6, 0.6, 1.0))]
        self.samples = [legend.add_widget(_Sample(s), row=k, col=0) for k, s in enumerate(series)]
        self.labels = [legend.add_widget(scene.Label(text, color=color, font_size=8, font_manager=font_manager),
                                         row=k, col=1)
                       for k, (text, color) in enumerate(names)]
        _share_font([self.axis.axis._text, self.axis.axis._axis_label_vis], font_manager)
        self.min_px = row_min_px(len(self.labels))
        for widget in (self.axis, self.view, legend):
            _stretch_to(widget, self.min_px)
        self.zero = InfiniteLine(0.0, color=(0.5, 0.5, 0.5, 0.6), vertical=False, parent=self.view.scene)
        self.cursor = InfiniteLine(cursor_x, color=_rgba(CURSOR_COLOR), vertical=True, parent=self.view.scene)
        self.set_series(series)

    def nodes(self) -> list:
        """The row's drawn nodes in the order they are shown: frame, traces, zero and cursor lines, axis, legend
        (line samples, names).

        Hiding a node skips it when the canvas draws, shader compilation
        included (most of a first paint under software GL), so a plot
        shown a few nodes per paint never stalls on one long paint.
        """
        return [self.view, *self.lines, self.zero, self.cursor, self.axis, *self.samples, *self.labels]

    def show(self) -> None:
        """Show every node of the row."""
        for node in self.nodes():
            node.visible = True

    @property
    def channel(self) -> Optional[int]:
        """The first-layer channel this row plots (None for the whole cell's row)."""
        c = self.series[0].get("channel", -1) if self.series else -1
        return int(c) if c is not None and c >= 0 else None

    def set_series(self, series: list[dict]) -> None:
        """Show ``series`` (as many as this row has lines): names, colours, vertical range."""
        self.series = series
        for s, line, label in zip(series, self.lines, self.labels):
            line.set_data(color=s["color"], width=s.get("width", LINE_WIDTH))
            line.order = s.get("order", 0)   # lower draws first: the ground truth's band under the lines
            label.text = s["label"]
        self.dim(False)
        vals = np.concatenate([s["values"][np.isfinite(s["values"])] for s in series] + [np.zeros(1, np.float32)])
        lo, hi = float(vals.min()), float(vals.max())
        # the range reaches a round number past each extreme: a row whose top was 0.43 had its next tick, 0.5,
        # outside it and read "0" alone, no scale at all
        lo, hi = (-round_up(-lo) if lo < 0 else lo), (round_up(hi) if hi > 0 else hi)
        pad = 0.12 * (hi - lo) if hi > lo else 1.0   # room for a tick label at each end (Y_LABEL_HALF_PX)
        self.y_range = (lo - pad, hi + pad)

    def dim(self, dimmed: bool) -> None:
        """Draw the row's trace names and line samples faint (another channel's map is shown alone) or in their
        colours."""
        for s, label, sample in zip(self.series, self.labels, self.samples):
            color = np.array(s.get("label_color", s["color"]), float)
            color[3] *= DIMMED_ALPHA if dimmed else 1.0
            label._text_visual.color = color
            sample.set_series(s, DIMMED_ALPHA if dimmed else 1.0)

    def legend_contains(self, canvas, canvas_pos) -> bool:
        """Whether the canvas pixel (x, y) falls on this row's legend column."""
        local = canvas.scene.node_transform(self.legend).map(canvas_pos)[:2]
        w, h = self.legend.size
        return bool(0 <= local[0] <= w and 0 <= local[1] <= h)


class _RefitOnResize(QObject):
    """Event filter on the main window: when it is resized, the plot's dock grows again to show its rows
    (:meth:`TracePlot.fit_dock`; a script sizes the window after the traces were drawn)."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Resize:
            plot = self.parent()
            QTimer.singleShot(0, lambda: _refit(plot))   # after Qt has laid the window out at its new size
        return False


def _refit(plot) -> None:
    try:
        plot.fit_dock()
    except RuntimeError:   # Qt deleted the plot meanwhile
        pass


class _AtLeast(QWidget):
    """Holds one widget and asks for no more than its minimum: in the trace plot's scroll area the canvas
    then fills the viewport when that is taller, and scrolls only below the rows' legible minimum (the
    scroll area sizes a word-wrapped page by its items' size hints)."""

    def __init__(self, child: QWidget) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(child)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.minimumSizeHint()


class TracePlot(QWidget):
    """The trace plot of one viewer (dock widget); :func:`show_traces` fills it.

    Attributes
    ----------
    series : list of dict
        What is plotted (:func:`._layers.trace_series`): label, values (T,)
        in spikes per bin, colour, row.
    times_ms : float array (T,)
        World time of each stimulus frame (ms): the stimulus layer's
        ``translate[0] + frame·scale[0]``.
    unit, ms_per_unit : the time axis' unit ("ms" or "s") and its size in ms.
    source : str
        Name of the layer whose result the traces are ("" when empty): a
        result replaced by something without traces clears them (:meth:`clear`);
        when that layer leaves the viewer, the plot shows the most recent
        result left, or nothing (:meth:`show_latest`).
    """

    def __init__(self, viewer) -> None:
        super().__init__()
        _exit.install()  # a script that leaves viewers open must still exit with status 0 (see _exit)
        # weakly: the plot is the value of ``_PLOTS[viewer]``, a strong reference would keep every
        # closed viewer (its canvas, layers and maps) alive for the rest of the session
        self._viewer = weakref.ref(viewer)
        self.series: list[dict] = []
        self.times_ms = np.zeros(0)
        self.source, self.maps_prefix = "", ""
        self._source_ref: Optional[weakref.ref] = None   # the layer named ``source`` when it was plotted
        self._history: list = []   # weak references to the layers whose results were plotted, the last last
        self.unit, self.ms_per_unit = "ms", 1.0
        self.title = QLabel(EMPTY_TITLE)
        self.title.setWordWrap(True)
        self.title.setToolTip(PLOT_HELP)
        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#0e0e0e", size=(700, 300))
        self.canvas.native.setToolTip(PLOT_HELP)
        self.canvas.native.setMinimumHeight(100)
        self._preferred_height = 200
        # the title and the rows scroll in a dock shorter than they need (a laptop's screen, a dock dragged
        # small): the window never grows past the screen, and no row is squeezed below its legible minimum
        page = QWidget()
        page_layout = QVBoxLayout(page)
        page_layout.setContentsMargins(0, 0, 0, 0)
        page_layout.setSpacing(PAGE_SPACING_PX)
        page_layout.addWidget(self.title)
        page_layout.addWidget(_AtLeast(self.canvas.native), 1)
        self.scroll = vertical_scroll(page)
        self._refit = _RefitOnResize(self)
        self._watched: Optional[weakref.ref] = None   # the main window whose resizing refits the dock
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.scroll)
        self.grid = None
        self.x_axis = None
        self.rows: list[_Row] = []
        self._complete = False  # whether the rows were built and shown in full (a stopped build was not)
        self._fonts = FontManager(method="cpu")
        self._press = None
        # (channel shown alone, [(layer ref, visible before, colour bar before)]) and the title before
        self._solo: Optional[tuple[int, list]] = None
        self._unsolo_title = ""
        self.canvas.events.mouse_press.connect(self._on_press)
        self.canvas.events.mouse_release.connect(self._on_release)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.layers.events.removed.connect(self._on_removed)
        self.destroyed.connect(lambda *_: self._disconnect())

    @property
    def viewer(self):
        """The napari viewer this plot belongs to (None once that viewer is gone)."""
        return self._viewer()

    # ----------------------------------------------------------------- data ---

    def set_traces(self, series: list[dict], times_ms: np.ndarray, title: str = "", source: str = "",
                   maps_prefix: Optional[str] = None) -> None:
        """Plot ``series`` (one row per ``row`` value) against ``times_ms`` (T,) world ms; ``source``: whose;
        ``maps_prefix``: the ``prefix`` in its map layers' metadata (default ``"<source>: "``)."""
        drain(self.traces_steps(series, times_ms, title, source, maps_prefix))

    def clear(self) -> None:
        """Plot nothing (the result whose traces these were is gone); the next :meth:`set_traces` builds anew."""
        self._end_solo("")
        if self.grid is not None:
            self.grid.parent = None
        self.grid, self.rows, self._complete = None, [], False
        self.series, self.times_ms, self.source, self.maps_prefix = [], np.zeros(0), "", ""
        self._source_ref = None
        self._set_title(EMPTY_TITLE)
        self.canvas.update()

    def traces_steps(self, series: list[dict], times_ms: np.ndarray, title: str = "",
                     source: str = "", maps_prefix: Optional[str] = None) -> Iterator[None]:
        """:meth:`set_traces` as a generator that yields between pieces of work of a few tens of ms.

        Driven by the event loop (one step per pass, :class:`._viewer.StagedAdd`),
        the canvas paints between steps: a new layout builds one row per
        step, then shows a few nodes per step (:func:`reveal_batches`), so each
        paint compiles the shaders of only those (a whole plot's first paint
        is seconds of software GL). Same layout as before: one step, the
        data go into the same visuals. Exhausted, the plot is what
        :meth:`set_traces` makes.
        """
        self._end_solo(source)
        self.series, self.source = series, source
        self._set_times(times_ms)
        self.maps_prefix = f"{source}: " if maps_prefix is None else maps_prefix
        self._note_source(source)
        self._colour_bar_follows()
        self._set_title(title)
        n_rows = max(s["row"] for s in series) + 1
        per_row = [[s for s in series if s["row"] == r] for r in range(n_rows)]
        if self._complete and [len(r.series) for r in self.rows] == [len(r) for r in per_row]:
            self._update_rows(per_row)  # same layout: new data in the same visuals (a rebuild costs ~1 s)
            return
        self._complete = False
        if self.grid is not None:
            self.grid.parent = None
            self.rows = []
            yield
        self.grid = self.canvas.central_widget.add_grid(spacing=0)
        cursor_x = self._cursor_x()
        for r in range(n_rows):
            row = _Row(self.grid, r, per_row[r], cursor_x, self._fonts)
            for node in row.nodes():
                node.visible = False
            self.rows.append(row)
            yield
        # short ticks, their labels close under them, the axis' label close under those: the rows keep the room
        self.x_axis = _axis("bottom", self.time_label(), axis_font_size=8, major_tick_length=X_TICK_PX,
                            minor_tick_length=X_TICK_PX / 2, tick_label_margin=12, axis_label_margin=20)
        self.x_axis.height_min = self.x_axis.height_max = X_AXIS_PX
        self.x_axis.visible = False
        _share_font([self.x_axis.axis._text, self.x_axis.axis._axis_label_vis], self._fonts)
        self.grid.add_widget(self.x_axis, row=n_rows, col=1)
        self.x_axis.link_view(self.rows[-1].view)
        first = self.rows[0].view.camera
        for row in self.rows[1:]:
            row.view.camera.link(first, axis="x")
        self.rows[0].view.scene.transform.changed.connect(self._on_view_changed)
        self._preferred_height = min(90 + ROW_HEIGHT_PX * n_rows, MAX_HEIGHT_PX)
        self.canvas.native.setMinimumHeight(min(X_AXIS_PX + sum(row.min_px for row in self.rows), MAX_HEIGHT_PX))
        self.updateGeometry()
        self.fit_dock()
        self._reset_ranges()
        hidden = [node for row in self.rows for node in row.nodes()] + [self.x_axis]
        for batch in reveal_batches(hidden):
            yield
            for node in batch:
                node.visible = True
        self._complete = True

    def _note_source(self, source: str) -> None:
        """Remember the layer named ``source`` (if there is one) as the plotted result's, the most recent."""
        viewer = self.viewer
        layer = viewer.layers[source] if viewer is not None and source and source in viewer.layers else None
        self._source_ref = None if layer is None else weakref.ref(layer)
        if layer is not None:
            self._history = [ref for ref in self._history if ref() is not None and ref() is not layer]
            self._history.append(self._source_ref)

    @property
    def source_layer(self):
        """The layer whose result is plotted (None: nothing plotted, no layer of that name, or gone)."""
        return None if self._source_ref is None else self._source_ref()

    def source_left(self) -> bool:
        """Whether the layer whose result is plotted has left the viewer (or been deleted)."""
        viewer = self.viewer
        return self._source_ref is not None and viewer is not None and self.source_layer not in viewer.layers

    def show_latest(self) -> None:
        """Plot the most recent result still in the viewer, with its colour bar: of the layers whose results were
        plotted the last one left, else the topmost layer that carries traces (:data:`TRACES_KEY`); or nothing
        (the empty plot's title) when no layer carries any. A result whose maps were removed is plotted without
        its title's legend line (the colour bar it names is gone; one still shown is another result's)."""
        viewer = self.viewer
        if viewer is None:
            return
        plotted = [ref() for ref in reversed(self._history)]
        layers = [layer for layer in plotted if layer is not None and layer in viewer.layers]
        layers += [layer for layer in reversed(list(viewer.layers)) if layer not in layers]
        stored = next((args for args in map(stored_plot, layers) if args is not None), None)
        if stored is None:
            self.clear()
            return
        series, times, title, source, prefix = stored
        if not map_layers(viewer.layers, f"{source}: " if prefix is None else prefix):
            title = title.split("<br>")[0]   # its maps are gone: the legend of their colour bar would describe
        self.set_traces(series, times, title, source, prefix)   # another result's bar (a GUI audit)

    def follow_rename(self, before: str, after: str) -> None:
        """The plotted result's stimulus layer was renamed ``before`` → ``after`` (its maps' prefix with it)."""
        if self.source != before:
            return
        self.source = after
        self._note_source(after)
        if self.maps_prefix == f"{before}: ":
            self.maps_prefix = f"{after}: "
        self._unsolo_title = renamed_title(self._unsolo_title, before, after)
        title = self.title.text()
        if renamed_title(title, before, after) != title:
            self._set_title(renamed_title(title, before, after))

    def follow_time(self, times_ms: np.ndarray) -> None:
        """The plotted result's stimulus layer took another frame interval: the same traces at ``times_ms`` (T,)
        world ms."""
        if len(times_ms) != len(self.times_ms):
            return
        self._set_times(times_ms)
        if self.rows:
            self._on_step()
            self._reset_ranges()

    def _set_times(self, times_ms) -> None:
        """The plotted values' world times (ms) and the axis unit their span is read in (ms or s)."""
        self.times_ms = np.asarray(times_ms, float)
        duration = float(self.times_ms[-1] - self.times_ms[0]) if len(self.times_ms) > 1 else 0.0
        self.unit, self.ms_per_unit = time_unit(duration)

    def _update_rows(self, per_row: list[list[dict]]) -> None:
        """New traces in the existing rows (same number of rows and of traces per row)."""
        for row, series in zip(self.rows, per_row):
            row.set_series(series)
            row.show()
        self._on_step()
        self._reset_ranges()

    def _reset_ranges(self) -> None:
        """Show the whole movie, each row on its own vertical range, and draw the traces."""
        t_unit = self.times_ms / self.ms_per_unit
        self._drawn_range = None
        x_range = (t_unit[0], t_unit[-1]) if len(t_unit) > 1 else (t_unit[0] - 1, t_unit[0] + 1)
        for row in self.rows:
            # vispy reads margin=0 as 0.1 absolute ("r * margin or 0.1"): a row of 0.01 spikes/bin spanned
            # -0.1 to 0.11, its trace squashed into a twentieth of the row; a relative 1e-9 is none
            row.view.camera.set_range(x=x_range, y=row.y_range, margin=NO_MARGIN)
        self._redraw()

    def _set_title(self, text: str) -> None:
        self.title.setText(text)
        self._fit_title()

    def _fit_title(self) -> None:
        """Reserve the wrapped title's height at the plot's width: a dock asks only for its minimum height,
        which Qt otherwise reckons for a title wrapped at some other width (a line short, the time axis'
        label was pushed below the dock's edge)."""
        width = self.title.width() if self.title.width() > 0 else self.width()
        if width > 0:   # not laid out yet: the first resize sets it
            self.title.setMinimumHeight(self.title.heightForWidth(width))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit_title()

    def fit_dock(self) -> None:
        """Grow the plot's dock so the title and every row show without scrolling, where the window has room.

        At most :data:`DOCK_SHARE` of the main window's height (the rest stays the
        viewer's canvas); never shrinks a dock the user made taller; nothing
        for a floating dock or a plot not in a dock.
        """
        dock, main = docked_in(self)
        if dock is None:
            return
        if self._watched is None or self._watched() is not main:
            main.installEventFilter(self._refit)   # removed by Qt with the filter, a child of the plot
            self._watched = weakref.ref(main)        # weakly: napari's window holds the viewer
        page = self.scroll.widget()
        width = self.scroll.viewport().width()
        # the page's own minimum, reckoned here: a canvas minimum set just now is not in Qt's cached hints yet
        rows = self.title.heightForWidth(width) + page.layout().spacing() + self.canvas.native.minimumHeight()
        need = max(rows, self._preferred_height) + dock.height() - self.scroll.viewport().height()
        wanted = min(need, int(DOCK_SHARE * main.height()))
        if wanted > dock.height():
            main.resizeDocks([dock], [wanted], Qt.Orientation.Vertical)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        """About :data:`ROW_HEIGHT_PX` per row (at most :data:`MAX_HEIGHT_PX`); in a smaller dock the rows scroll."""
        return QSize(700, self._preferred_height)

    def visible_range(self) -> tuple[float, float]:
        """The visible time range (axis units)."""
        rect = self.rows[0].view.camera.rect
        return float(rect.left), float(rect.right)

    def _on_view_changed(self, event=None) -> None:
        span = self.visible_range()
        if span != getattr(self, "_drawn_range", None):
            self._redraw()

    def _redraw(self) -> None:
        """Decimate every trace to the visible range at :data:`POINTS_PER_PIXEL` per pixel column."""
        if not self.rows:
            return
        lo, hi = self._drawn_range = self.visible_range()
        width = max(int(self.rows[0].view.size[0]), 100)
        t_all = self.times_ms / self.ms_per_unit
        a = max(int(np.searchsorted(t_all, lo)) - 1, 0)
        b = min(int(np.searchsorted(t_all, hi)) + 1, len(t_all))
        for row in self.rows:
            for s, line in zip(row.series, row.lines):
                v = s["values"][a:b]
                finite, runs = trace_runs(v)
                keep = decimated_indices(v[finite].astype(np.float64), width * POINTS_PER_PIXEL // 2)
                t, vv, runs = t_all[a:b][finite][keep], v[finite][keep], runs[keep]
                if len(t) > 1:
                    pos = np.column_stack([t, vv]).astype(np.float32)
                    connect = np.r_[runs[1:] == runs[:-1], False]   # no line across a gap in the trace
                else:
                    pos, connect = np.array([[lo, np.nan], [hi, np.nan]], np.float32), "strip"
                line.set_data(pos=pos, connect=connect)

    # --------------------------------------------------------------- cursor ---

    @property
    def time_axis(self) -> int:
        """The viewer's dims axis of time (the first of the last three)."""
        return max(self.viewer.dims.ndim - 3, 0)

    @property
    def cursor_time_ms(self) -> float:
        """World time (ms) of the time slider, where the cursor is drawn."""
        return float(self.viewer.dims.point[self.time_axis]) * self._world_ms()

    def _world_ms(self) -> float:
        """ms per unit of the viewer's world time: napari draws in its layers' smallest unit (s while only a layer
        in seconds is in, :func:`._layers.unit_factor`); 1 when the time axis has no time unit."""
        units = self.viewer.dims.units
        unit = units[self.time_axis] if units is not None and len(units) > self.time_axis else None
        return (unit_factor(unit, "ms") if unit is not None else None) or 1.0

    def _cursor_x(self) -> float:
        return self.cursor_time_ms / self.ms_per_unit

    def _on_step(self, event=None) -> None:
        x = self._cursor_x()
        for row in self.rows:
            row.cursor.set_data(pos=x)
        if self.x_axis is not None:
            self.x_axis.axis.axis_label = self.time_label()

    def time_label(self) -> str:
        """The time axis' label, with where the slider is in the axis' unit and as napari's slider counts it:
        "time (ms) · slider at 990 ms, frame 99" (the slider shows frames, the axis ms or s); where the plotted
        stimulus' own frames are not the slider's steps (a 60 Hz stack beside 10 ms maps), its frame too:
        "step 53, frame 31 of 'stack'" (a user counting the stack's frames read the step as its frame)."""
        viewer = self.viewer
        if viewer is None:
            return f"time ({self.unit})"
        step = int(viewer.dims.current_step[self.time_axis])
        at = self.cursor_time_ms / self.ms_per_unit
        own = self._source_frame()
        where = (f"frame {step}" if own is None or own == step
                 else f"step {step}, frame {own} of '{self.source_layer.name}'")
        return f"time ({self.unit}) · slider at {at:.4g} {self.unit}, {where}"

    def _source_frame(self) -> Optional[int]:
        """The plotted stimulus layer's own frame at the slider's time (its time scale and start read in ms; a
        scale without units as ms), None without that layer in the viewer."""
        layer, viewer = self.source_layer, self.viewer
        if layer is None or viewer is None or layer not in viewer.layers or layer.ndim < 3:
            return None
        to_ms = unit_factor(layer.units[-3], "ms") or 1.0
        frame_ms, start_ms = float(layer.scale[-3]) * to_ms, float(layer.translate[-3]) * to_ms
        if not frame_ms > 0:
            return None
        frame = int(np.floor((self.cursor_time_ms - start_ms) / frame_ms + 0.5))
        return min(max(frame, 0), int(layer.data.shape[-3]) - 1)

    def time_at(self, canvas_pos) -> Optional[float]:
        """World time (ms) under a canvas pixel position (x, y), or None outside every row."""
        for row in self.rows:
            local = self.canvas.scene.node_transform(row.view).map(canvas_pos)[:2]
            w, h = row.view.size
            if 0 <= local[0] <= w and 0 <= local[1] <= h:
                x = self.canvas.scene.node_transform(row.view.scene).map(canvas_pos)[0]
                return float(x) * self.ms_per_unit
        return None

    def canvas_pos_of(self, time_ms: float, row: int = 0) -> tuple[float, float]:
        """The canvas pixel (x, y) of ``time_ms`` at the middle of ``row``'s height (for clicks and tests)."""
        view = self.rows[row].view
        x = view.scene.node_transform(self.canvas.scene).map([time_ms / self.ms_per_unit, 0])[0]
        y = view.node_transform(self.canvas.scene).map([0, view.size[1] / 2])[1]
        return float(x), float(y)

    def _colour_bar_follows(self) -> None:
        """One colour bar in the viewer: the plotted result's. napari's bars have no title, so two results' bars
        side by side (an analysis, then an experiment's layers) could not be told apart; the title of this plot
        says whose bar it is (its legend line). Another result's bar is hidden, and shown again (on the same
        map, :data:`BAR_WAS_KEY`) when that result is plotted again; a result whose bar is not shown yet (a live
        result gets its own from :func:`._viewer.show_map_legend`) is left to it."""
        viewer = self.viewer
        if viewer is None:
            return
        for layer in viewer.layers:
            meta = plugin_metadata(layer)
            if meta.get("role") != "map":
                continue
            if meta.get("prefix") != self.maps_prefix and layer.colorbar.visible:
                show_colour_bar(layer, False)
                meta[BAR_WAS_KEY] = True
            elif meta.get("prefix") == self.maps_prefix and meta.pop(BAR_WAS_KEY, False):
                show_colour_bar(layer)

    def _on_removed(self, event=None) -> None:
        """A layer left the viewer: if it was the plotted result's stimulus layer, plot the most recent result left
        (or nothing, :meth:`show_latest`); then a colour bar comes back if none is shown (:meth:`_bar_back`)."""
        if self.source_left():
            self.show_latest()
        self._bar_back()

    def _bar_back(self, event=None) -> None:
        """When the maps of the result whose bar is shown leave the viewer (removed, or the plotted result
        cleared) and no map shows a bar any more, the bar :meth:`_colour_bar_follows` hid last comes back: the
        maps still shown keep a scale."""
        viewer = self.viewer
        if viewer is None:
            return
        maps = [layer for layer in viewer.layers if plugin_metadata(layer).get("role") == "map"]
        if any(layer.colorbar.visible for layer in maps):
            return
        hidden = [layer for layer in maps if plugin_metadata(layer).get(BAR_WAS_KEY)]
        if hidden:
            plugin_metadata(hidden[-1]).pop(BAR_WAS_KEY)
            show_colour_bar(hidden[-1])

    # ------------------------------------------------------- one map alone ---

    def solo(self, channel: Optional[int]) -> None:
        """Show only ``channel``'s map among the plotted result's map layers and dim the other channels' names;
        ``None``, or the channel already shown alone, shows every map as it was before.

        Maps of channels that overlap hide each other under translucent blending
        (the top layer's colour covers the one below), so one channel's map is
        seen whole only alone. The colour bar goes with it (the map shown alone
        would otherwise have no scale), and the title's legend names its
        channel; both go back with the maps. A result without a map of
        ``channel`` (invariance "space") changes nothing.
        """
        before, self._solo = self._solo, None
        viewer = self.viewer
        if before is not None:
            for ref, visible, bar in before[1]:
                layer = ref()
                if layer is not None and viewer is not None and layer in viewer.layers:
                    layer.visible = visible
                    show_colour_bar(layer, bar)
        layers = map_layers(viewer.layers, self.maps_prefix) if viewer is not None and self.source else []
        alone = [layer for layer in layers if layer.metadata[META]["channel"] == channel]
        if channel is None or (before is not None and before[0] == channel) or not alone:
            for row in self.rows:
                row.dim(False)
            if before is not None:
                self._set_title(self._unsolo_title)
        else:
            bar = next((layer for layer in layers if layer.colorbar.visible), None)
            had_bar = bar is not None
            self._solo = (channel, [(weakref.ref(layer), bool(layer.visible), bool(layer.colorbar.visible))
                                    for layer in layers])
            show_alone(layers, channel, had_bar)
            for row in self.rows:
                row.dim(row.channel is not None and row.channel != channel)
            if before is None:
                self._unsolo_title = self.title.text()
            if had_bar:   # the legend's "in <label>'s colours" (._layers.map_legend) names the bar's channel
                self._set_title(self._unsolo_title.replace(bar_in(plugin_metadata(bar).get("label")),
                                                           bar_in(plugin_metadata(alone[0]).get("label"))))
        self.canvas.update()

    @property
    def solo_channel(self) -> Optional[int]:
        """The channel whose map is shown alone (:meth:`solo`), or None."""
        return None if self._solo is None else self._solo[0]

    def _end_solo(self, source: str) -> None:
        """Traces of ``source`` replace the plotted ones: the old result's maps as they were, unless it is the
        same result (its map layers then take the new result's visibility)."""
        if self._solo is not None and source != self.source:
            self.solo(None)
        self._solo = None

    def legend_channel_at(self, canvas_pos) -> Optional[int]:
        """The channel whose name is in the legend column under a canvas pixel (x, y): -1 for the whole cell's
        row, None outside the legend column."""
        for row in self.rows:
            if row.legend_contains(self.canvas, canvas_pos):
                return -1 if row.channel is None else row.channel
        return None

    def legend_pos_of(self, row: int) -> tuple[float, float]:
        """The canvas pixel (x, y) of the middle of ``row``'s legend column (for clicks and tests)."""
        legend = self.rows[row].legend
        x, y = legend.node_transform(self.canvas.scene).map([legend.size[0] / 2, legend.size[1] / 2])[:2]
        return float(x), float(y)

    # ---------------------------------------------------------------- mouse ---

    def _on_press(self, event) -> None:
        self._press = np.asarray(event.pos[:2], float) if event.button == 1 else None

    def _on_release(self, event) -> None:
        press, self._press = self._press, None
        if press is None or np.hypot(*(np.asarray(event.pos[:2], float) - press)) > CLICK_PIXELS:
            return
        channel = self.legend_channel_at(event.pos[:2])
        if channel is not None:
            self.solo(None if channel < 0 else channel)
            return
        t = self.time_at(event.pos[:2])
        if t is None or not len(self.times_ms):
            return
        t_ms = float(np.clip(t, self.times_ms[0], self.times_ms[-1]))
        self.viewer.dims.set_point(self.time_axis, t_ms / self._world_ms())

    def _disconnect(self) -> None:
        try:
            self.viewer.dims.events.current_step.disconnect(self._on_step)
            self.viewer.layers.events.removed.disconnect(self._on_removed)
        except (AttributeError, RuntimeError, TypeError, ValueError):  # AttributeError: the viewer is gone
            pass


def trace_plot(viewer, create: bool = True) -> Optional[TracePlot]:
    """The viewer's trace plot dock widget, created (docked at the bottom) on first use when ``create``.

    With ``create``, a plot whose dock the user closed (napari then unparents
    the widget, it is not deleted) is docked again: new traces are never
    drawn into a widget nobody sees.
    """
    plot = _PLOTS.get(viewer)
    if plot is None and create:
        plot = TracePlot(viewer)
        viewer.window.add_dock_widget(plot, name=DOCK_NAME, area="bottom")
        _PLOTS[viewer] = plot
    elif plot is not None and create and plot.parentWidget() is None:  # its dock was closed
        viewer.window.add_dock_widget(plot, name=DOCK_NAME, area="bottom")
    return plot


def plot_title(attribution, reduction, name: str, legend: str = "") -> str:
    """The plot's title: which layer and cell, what the traces are (the response is the rate above the rate at
    mean grey, F(s) − F(0), and each channel's trace its share of it), their unit, what the reduced circuit
    explains; ``legend``, the maps' colours, on a line of its own. How to use the plot: :data:`PLOT_HELP`."""
    cells = ", ".join(str(c) for c in attribution.cells)
    base = getattr(attribution, "baseline_rate", None)
    at_grey = f" ({float(base):.3g})" if base is not None and np.isfinite(base) else ""
    text = (f"<b>{name}</b> — cell {cells}: response = rate − rate at mean grey{at_grey}, and each channel's "
            f"share of it, in {UNIT} (spikes per 10 ms bin), each row on its own scale")
    if reduction is not None:
        text += f"; the reduced circuit explains {reduction.explained_variance:.1%} of the variance"
    return text + "." + (f"<br>{legend}" if legend else "")


def show_traces(viewer, attribution, reduction=None, stimulus_layer=None, name: str = "",
                legend: str = "") -> TracePlot:
    """Plot an analysis' traces in the viewer's trace plot dock (created on first use); returns the plot.

    ``stimulus_layer`` gives the time axis (its ``scale[0]`` ms per frame and
    ``translate[0]``; the model's 10 ms bins over it when its time was resampled,
    :func:`._layers.analysed_geometry`); without one, 10 ms per frame from 0. ``legend``: a
    line for the title (the maps' colour legend).
    """
    return drain(traces_steps(viewer, attribution, reduction, stimulus_layer, name, legend))


def traces_steps(viewer, attribution, reduction=None, stimulus_layer=None, name: str = "",
                 legend: str = "", cell: Optional[CellTraces] = None) -> Iterator[None]:
    """:func:`show_traces` in steps (:meth:`TracePlot.traces_steps`); returns the plot when exhausted. ``cell``:
    an experiment's whole-cell traces (:class:`._layers.CellTraces`)."""
    geo = layer_geometry(stimulus_layer, shape=np.shape(attribution.stimulus))
    geo = analysed_geometry(geo, attribution) if stimulus_layer is not None else geo   # its frames are the model's
    T = len(attribution.response)
    times = geo["translate"][0] + np.arange(T) * geo["scale"][0]
    plot = trace_plot(viewer)
    series = trace_series(attribution, reduction, cell)
    yield from plot.traces_steps(series, times, plot_title(attribution, reduction, name, legend),
                                 stimulus_layer.name if stimulus_layer is not None else name)
    return plot


TRACES_KEY = "traces"
"""Plugin-metadata key of a layer that carries an analysis' traces (a reader's layer: a reopened
.h5 or a batch store): ``{"series": trace_series(...), "title": str}``, and ``"layer_frames_per_value"``
when each value spans several of the layer's frames (a batch task of a stimulus resampled to the model's
10 ms bins: 10 / its frame interval; value ``t`` then lies at the centre of the frames it averages)."""


def stored_traces(attribution, reduction=None, name: str = "", cell: Optional[CellTraces] = None,
                  legend: str = "", layer_frames_per_value: float = 1.0) -> dict:
    """What a reader puts under :data:`TRACES_KEY` for :func:`show_stored_traces` to plot later (``cell``:
    see :func:`._layers.trace_series`; ``legend``: the maps' legend line, :func:`._layers.colour_bar_legend`;
    ``layer_frames_per_value``: how many frames of the layer that keeps them each value spans,
    :func:`._layers.layer_frames_per_model_frame` for a layer whose time was resampled)."""
    stored = {"series": trace_series(attribution, reduction, cell),
              "title": plot_title(attribution, reduction, name, legend)}
    if layer_frames_per_value != 1.0:
        stored["layer_frames_per_value"] = float(layer_frames_per_value)
    return stored


def renamed_title(title: str, before: str, after: str) -> str:
    """A plot title (:func:`plot_title`, which opens with the stimulus layer's name in bold) after that layer was
    renamed ``before`` → ``after``; any other title as it is."""
    bold = f"<b>{before}</b>"
    return f"<b>{after}</b>{title[len(bold):]}" if title.startswith(bold) else title


def stored_plot(layer) -> Optional[tuple]:
    """The arguments of :meth:`TracePlot.set_traces` that plot the traces ``layer`` carries (:data:`TRACES_KEY`)
    on its time axis, or None if it carries none."""
    stored = (getattr(layer, "metadata", None) or {}).get(META, {}).get(TRACES_KEY)
    if not stored or not stored.get("series"):
        return None
    geo = layer_geometry(layer)
    T = len(stored["series"][0]["values"])
    k = float(stored.get("layer_frames_per_value", 1.0))   # traces on the model's 10 ms bins of resampled frames
    times = geo["translate"][0] + ((0.5 * k - 0.5) + np.arange(T) * k) * geo["scale"][0]
    return stored["series"], times, stored.get("title", ""), layer.name, plugin_metadata(layer).get("prefix")


def show_stored_traces(viewer, layer) -> bool:
    """Plot the traces ``layer`` carries (:data:`TRACES_KEY`), on its time axis; whether it had any."""
    stored = stored_plot(layer)
    if stored is None:
        return False
    trace_plot(viewer).set_traces(*stored)
    return True


_FOLLOWED: "weakref.WeakSet" = weakref.WeakSet()


def follow_stored_traces(viewer) -> None:
    """From now on, plot the traces of each visible layer added to ``viewer`` that carries some, and show the
    colour bar of the map marked for it (:data:`._layers.COLOUR_BAR_KEY`) (once per viewer).

    A reader's layers (a saved analysis, a batch store) carry their traces
    (:data:`TRACES_KEY`) but a reader has no viewer to plot them in, nor can
    its layer data turn a colour bar on: the readers call this for the viewer
    that opens the file (the Analyze widget too), so File ▸ Open shows the
    traces and the maps' scale whether or not a plugin dock is open.
    """
    if viewer in _FOLLOWED:
        return
    _FOLLOWED.add(viewer)

    def added(event) -> None:
        show_marked_colour_bar(event.value)
        if getattr(event.value, "visible", False) and show_stored_traces(viewer, event.value):
            fresh = _read_into_empty(viewer, event.value)
            if fresh and viewer.dims.ndim >= 3:   # napari put the slider mid-movie (often a dark flash: black)
                viewer.dims.set_current_step(viewer.dims.ndim - 3, 0)
            _select_when_added(viewer, event.value, frame=fresh)

    viewer.layers.events.inserted.connect(added)


def _read_into_empty(viewer, layer) -> bool:
    """Whether every layer of ``viewer`` came from the file ``layer`` was read from: the reading went into an
    empty viewer (a saved analysis carries its traces on its first layer, a batch store on its second: counting
    layers framed the one and not the other)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return path is not None and all(getattr(getattr(other, "source", None), "path", None) == path
                                    for other in viewer.layers)


def _select_when_added(viewer, layer, frame: bool = False) -> None:
    """Select ``layer`` on the next event-loop pass, once the rest of its reading is in: napari selects the last
    layer a reader added, a saved analysis' last map, often hidden, whose controls then showed instead of the
    stimulus'. With ``frame`` (the reading went into an empty viewer, which napari framed on its first layer,
    under the colour bar), the visible layers are framed as a live result is (:func:`._framing.frame_result`).
    (Held weakly: a script that never runs the event loop leaves nothing alive.)"""
    viewer_ref, layer_ref = weakref.ref(viewer), weakref.ref(layer)

    def select() -> None:
        viewer, layer = viewer_ref(), layer_ref()
        if viewer is not None and layer is not None and layer in viewer.layers:
            viewer.layers.selection.active = layer
            if frame:
                frame_result(viewer, [lay for lay in viewer.layers if lay.visible])

    QTimer.singleShot(0, select)


def follow_current_viewer() -> None:
    """:func:`follow_stored_traces` for napari's current viewer (the one a reader is opening a file in), if any."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        follow_stored_traces(viewer)


__all__ = ["TRACES_KEY", "follow_stored_traces", "TracePlot", "decimate", "plot_title", "show_stored_traces",
           "show_traces", "traces_steps",
           "stored_traces", "time_unit", "trace_plot"]
