"""What the dock widgets share: parameter widgets made from core signatures, the stimulus-layer picker,
units and tooltips of parameters, links from result terms to their definitions, tabbed docks.

A widget that gathers a core function's parameters takes each one's default
and type from the function itself (:func:`parameter_widget`), so the widget
and a script calling the function start from the same values.
"""

from __future__ import annotations

import html
import inspect
import re
import typing
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

import napari.layers
import numpy as np
from magicgui.widgets import Label, create_widget
from magicgui.widgets.bases import CategoricalWidget, ValueWidget

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from ...attribution import DEFAULT_TOL
from ..._units import FRAME_MS, PIXEL_UM
from .. import _exit
from .._docking import dock_of, docked_in, vertical_scroll
from .._framing import keeping_frame
from .._layers import AXIS_LABELS, META, SCALE, UNITS
from .._tasks import notify, wrapping

_FROM_SIGNATURE: Any = object()


def _type_hint(func: Callable, name: str, default: Any) -> Any:
    """The type hint of ``func``'s parameter ``name``, else the type of its default."""
    try:
        hint = typing.get_type_hints(func).get(name)
    except NameError:  # a hint of the function imported for type checkers only
        hint = None
    return type(default) if hint is None else hint


def parameter_widget(func: Callable, name: str, *, value: Any = _FROM_SIGNATURE,
                     annotation: Any = _FROM_SIGNATURE, label: Optional[str] = None, **options) -> ValueWidget:
    """A magicgui widget for the parameter ``name`` of the core function ``func``.

    Its value is the parameter's default and its type the parameter's type
    hint (a ``Literal`` becomes a combo box of its values), unless ``value``
    or ``annotation`` is given (for a default of None, or a hint wider than
    what the widget offers); ``options`` go to magicgui (``min``, ``max``,
    ``step``, ...). The widget's ``name`` is ``name``; its label carries the
    parameter's unit and its tooltip says what it does (:func:`parameter_help`).

    Example
    -------
    >>> parameter_widget(nr.attribute, "invariance").choices      # doctest: +SKIP
    ('auto', 'none', 'x', 'y', 'space')
    """
    param = inspect.signature(func).parameters[name]
    value = param.default if value is _FROM_SIGNATURE else value
    annotation = _type_hint(func, name, value) if annotation is _FROM_SIGNATURE else annotation
    unit, tooltip = parameter_help(func, name)
    label = label or (f"{name} ({unit})" if unit else name)
    return create_widget(value=value, annotation=annotation, name=name, label=label,
                         options={"tooltip": tooltip, **options})


def steps_widget(func: Callable, max_steps: int) -> ValueWidget:
    """The ``steps`` box of ``func`` (``nr.attribute``, ``experiments.run``): 0 to ``max_steps`` α points, 0
    (the default) for the adaptive rule refined to ``tol``, as its label says (a bare "0" read as no points)."""
    return parameter_widget(func, "steps", value=0, annotation=int, min=0, max=max_steps)


def offer_cells(cell: ValueWidget, n_cells: int) -> None:
    """Let the ``cell`` spin box offer a new model's cells, 0 to ``n_cells - 1``. A chosen cell the model lacks
    moves to its last cell with a warning (the box would move it silently, and the next run analyse another cell)."""
    chosen = cell.value
    cell.max = n_cells - 1
    if chosen > n_cells - 1:
        notify("warning", f"Cell {chosen} does not exist in the new model ({n_cells} cells, 0–{n_cells - 1}): "
                          f"cell {n_cells - 1} is chosen instead.")


def stimulus_layers(viewer) -> list:
    """Image layers of ``viewer`` that can be stimuli (not the plugin's own attribution maps)."""
    return [layer for layer in viewer.layers if isinstance(layer, napari.layers.Image)
            and layer.metadata.get(META, {}).get("role") != "map"]


def layer_picker(viewer, label: str = "stimulus layer") -> CategoricalWidget:
    """A ``napari.layers.Image`` picker listing the stimulus layers of ``viewer``.

    The choices are :func:`stimulus_layers` (the viewer's image layers without
    the attribution maps); napari refreshes them as layers come and go once
    the widget is docked, and the first one is chosen when none was.
    """
    picker = create_widget(annotation=napari.layers.Image, label=label)
    picker.choices = lambda _widget: [(layer.name, layer) for layer in stimulus_layers(viewer)]
    return picker


# ------------------------------------------------------------ words and units ---

PARAMETER_HELP: dict[str, tuple[Optional[str], str]] = {
    # name: (unit shown in the label, tooltip)
    "cell": ("index", "Which ganglion cell (model output) is analysed: 0 … number of cells − 1."),
    "steps": ("α points; 0: adaptive", "A fixed number of quadrature points along the integrated-gradients "
                                       "path from the grey baseline to the stimulus; more points, smaller "
                                       "completeness error, longer run. 0 (the default): refine each frame "
                                       f"until tol ({DEFAULT_TOL:g} in a dock without a tol box)."),
    "tol": ("relative error", "Accuracy asked of the attribution when steps is 0: each frame's quadrature is refined "
                              "until its completeness error is within tol of the largest |response| and the maps' "
                              f"estimated error within tol of the largest map ({DEFAULT_TOL:g} by default); "
                              "smaller is more accurate and slower."),
    "invariance": (None, "Which spatial axes are summed out of the maps: 'auto' picks the most specific the "
                         "stimulus allows (full field → 'space', bars → 'y'); 'none' keeps full (y, x) maps."),
    "crop": (None, "How a stack larger than the model's field is cut: 'none' (sizes must match), 'center', "
                   "or 'window' (drag the crop-window rectangle over the stimulus)."),
    "pixel_um": ("µm", "The stimulus stack's pixel size on the retina. 55 (the model's): its pixels are the "
                       "model's. Another size: the stack is resampled to the model's 55 µm pixels, each the "
                       "area-weighted mean of the stack under it, and the crop counts model pixels (27.5 analyses "
                       "a 100 × 100 stack as 50 × 50)."),
    "frame_ms": ("ms", "How long each frame of the stimulus stack was shown. 10 (the model's): its frames are the "
                       "model's. Another interval (16.6667 for a 60 Hz monitor): the stack is resampled to the "
                       "model's 10 ms bins, each the mean of the frames on screen during it, and the maps and "
                       "traces come every 10 ms."),
    "normalize": (None, "z-score a float stack by its own mean and std before the model sees it: for raw "
                        "intensities (0–255, say) that are not in contrast units. Integer stacks are "
                        "normalised anyway."),
    "reduce": (None, "Also reduce the network to the fewest first-layer channels that explain the response."),
    "explain": ("fraction of variance", "The reduced circuit keeps the smallest set of channels whose summed "
                                        "attribution explains at least this fraction of the response's variance."),
    "epochs": ("passes", "Passes over the training split of the dataset."),
    "experiment": (None, "The in-silico experiment (docs/EXPERIMENTS.md): osr, latency, anticipation, "
                         "reversal, doubling, ..."),
}
"""Unit (None: a choice, no unit) and tooltip of the analysis, experiment and training parameters."""

STIMULUS_UNITS = {
    "period": "frames", "duration": "frames", "pre": "frames", "post": "frames", "frames": "frames",
    "fixation": "frames", "reversal": "px", "size": "px", "width": "px", "bar_width": "px", "checker": "px",
    "start": "px", "stop": "px", "position": "px", "phase": "px", "speed": "px/frame", "jitter": "px/frame",
    "intensity": "contrast", "contrast": "contrast", "low_contrast": "contrast", "n_flashes": "count",
    "seed": "integer", "alpha": "exponent", "grey": "probability",
}
"""Units of the ``nr.stimuli`` generators' parameters (1 frame = 10 ms, 1 px = 55 µm, contrast units)."""
ON_THE_RETINA = {"frames": f"1 frame = {FRAME_MS:g} ms", "px": f"1 px = {PIXEL_UM:g} µm on the retina",
                 "px/frame": f"1 px/frame = {PIXEL_UM / FRAME_MS:g} mm/s on the retina"}
"""What a stimulus parameter's model unit is in time or on the retina, for its tooltip (the label keeps the unit the
generator takes)."""


def docstring_parameters(func: Callable) -> dict[str, str]:
    """Parameter descriptions from ``func``'s numpydoc "Parameters" section (``name : text`` entries).

    An entry naming several parameters (``start, stop : ...``) describes each of them.
    """
    doc = inspect.getdoc(func) or ""
    lines = doc.splitlines()
    try:
        i = next(k for k, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in lines[i:]:
        if line and not line[0].isspace() and " : " not in line and line.strip():
            break  # the next section
        if line and not line[0].isspace() and " : " in line:
            head, text = line.split(" : ", 1)
            names = [n.strip() for n in head.split(",")]
            for n in names:
                out[n] = text.strip()
        elif line.strip() and names:
            for n in names:
                out[n] += " " + line.strip()
    return {n: plain_text(text) for n, text in out.items()}


_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
"""A Sphinx role (``:func:`~a.b```, ``:data:`X```): its target, group 1."""


def plain_text(rst: str) -> str:
    """reStructuredText of a docstring as a tooltip reads it: roles as their last name, ````literals```` and
    `` `titles` `` without their backquotes."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], rst)
    return text.replace("``", "").replace("`", "")


def parameter_help(func: Callable, name: str) -> tuple[Optional[str], str]:
    """(unit, tooltip) of ``func``'s parameter ``name``: :data:`PARAMETER_HELP`, else the docstring."""
    if name in PARAMETER_HELP:
        return PARAMETER_HELP[name]
    text = docstring_parameters(func).get(name, "") or name.replace("_", " ")
    unit = STIMULUS_UNITS.get(name)
    return unit, f"{text} ({ON_THE_RETINA[unit]})" if unit in ON_THE_RETINA else text


# ------------------------------------------------------------- result terms ---

TERMS: dict[str, str] = {
    "completeness error": "completeness-error",
    "explained variance": "explained-variance",
    "kept channels": "kept-channels",
    "present": "present",
    "unmet": "unmet",
    "slope": "slope",
    "r2": "r2",
    "omitted_share": "omitted-share",
    "latency_ms": "latency-ms",
    "spearman": "spearman",
    "largest_rise_ms": "largest-rise-ms",
    "lead_um": "lead-um",
    "burst_ratio": "burst-ratio",
    "burst_latency_slope_ms_per_px": "burst-latency-slope",
    "f2_f1": "f2-f1",
    "invariance": "invariance",
    "ground truth": "ground-truth",
    "recovers": "recovers",
}
"""Result terms and their anchors in docs/EXPERIMENTS.md (section "Terms")."""
_DOCS = Path(__file__).resolve().parents[4] / "docs" / "EXPERIMENTS.md"


def doc_url(term: str) -> Optional[str]:
    """URL of ``term``'s definition in docs/EXPERIMENTS.md (None when the term has none or the docs are absent)."""
    anchor = TERMS.get(term)
    if anchor is None or not _DOCS.is_file():
        return None
    return f"{_DOCS.as_uri()}#{anchor}"


def term_link(term: str, text: Optional[str] = None) -> str:
    """Rich text of ``term`` (or ``text``) linked to its definition (plain text without one)."""
    url = doc_url(term)
    shown = html.escape(text or term)
    return f'<a href="{url}">{shown}</a>' if url else shown


LINK_ON_DARK = "#8ab4f8"
"""Link colour on a dark background (WCAG contrast 7.3 to napari's dark dock background #23242b)."""
LINK_ON_LIGHT = "#0645ad"
"""Link colour on a light background (contrast 6.9 to napari's light #ebe7e6, 8.5 to white)."""


def file_choice_problem(path: Path, what: str, must_exist: bool = True) -> Optional[str]:
    """Why the path of a file box is not a usable file (one sentence), or None.

    magicgui's FileEdit gives ``Path(".")`` for an empty box, and a folder
    for a box set to one: both are "choose a file" here, not a message about
    the working directory.
    """
    if str(path) in ("", "."):
        return f"Choose {what} first."
    if path.is_dir():
        return f"'{path}' is a folder; choose {what} in it."
    if must_exist and not path.is_file():
        return f"No file at '{path}'; choose {what}."
    return None


_ANCHOR = re.compile(r'<a (?:style="color:[^"]*" )?href=')


def link_colour(widget) -> str:
    """The link colour that reads on ``widget``'s background: :data:`LINK_ON_DARK` or :data:`LINK_ON_LIGHT`."""
    return LINK_ON_DARK if widget.palette().color(QPalette.ColorRole.Window).lightness() < 128 else LINK_ON_LIGHT


def coloured_links(text: str, colour: str) -> str:
    """``text`` (rich text) with every ``<a href=…>`` drawn in ``colour`` (an inline style, replaced if present).

    A QLabel draws its links in the application palette's link colour (#0000ff),
    whatever its own palette says; only an inline style reaches the drawing.
    """
    return _ANCHOR.sub(f'<a style="color:{colour}" href=', text)


def readable_links(widget) -> None:
    """Recolour the links of the QLabel ``widget`` for its background (on a theme change)."""
    text = widget.text()
    new = coloured_links(text, link_colour(widget))
    if new != text:
        widget.setText(new)


class _ReadableLinks(QObject):
    """Re-applies :func:`readable_links` whenever the label's style or palette changes (napari's theme)."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.PaletteChange):
            readable_links(obj)
        return False


class RichLabel(Label):
    """A magicgui Label of rich text whose links are drawn in a colour that reads on its background."""

    def _set_coloured(self, text: str) -> None:
        Label.value.fset(self, coloured_links(str(text), link_colour(self.native)))

    value = property(Label.value.fget, _set_coloured)


def rich_label(value: str = "") -> Label:
    """A word-wrapped :class:`RichLabel` whose links open in the browser, readable in any theme."""
    label = wrapping(RichLabel(value=""))
    label.native.setTextFormat(Qt.TextFormat.RichText)
    label.native.setOpenExternalLinks(True)
    label.native.installEventFilter(_ReadableLinks(label.native))  # owned by the label: freed with it
    label.value = value
    return label


# --------------------------------------------------------------------- docks ---

def scroll_within(parent, child) -> QScrollArea:
    """Show ``child``, a magicgui container already in ``parent``'s layout, in a vertical scroll area there.

    Text that grows with a result (word-wrapped lines, a table) then scrolls
    inside the dock instead of raising the dock's minimum height, which made
    napari's window taller than a 1000-pixel screen. (magicgui's own
    ``scrollable=True`` does not survive napari's docking or magicgui's
    nesting: both take the container's inner widget, not its scroll area.)
    """
    layout = parent.native.layout()
    row = child.native
    while row.parentWidget() is not parent.native:   # a labelled container wraps each child in a row widget
        row = row.parentWidget()
    index = layout.indexOf(row)
    layout.removeWidget(row)
    area = vertical_scroll(child.native, parent.native)   # without the row's (empty) label column
    layout.insertWidget(index, area, 1)   # in the row's place; it takes the dock's spare height
    row.hide()
    row.setParent(area)                   # kept alive with the area, as magicgui holds it
    return area


def _row_labels(page: QWidget) -> list:
    """The labels of a labelled magicgui form's rows on ``page``: each row's first widget when it is a shown
    QLabel (a row without a label of its own hides it: :func:`wrapping`)."""
    labels = []
    layout = page.layout()
    for i in range(layout.count() if layout is not None else 0):
        row = layout.itemAt(i).widget()
        inner = row.layout() if row is not None else None
        first = inner.itemAt(0).widget() if isinstance(inner, QHBoxLayout) and inner.count() else None
        if isinstance(first, QLabel) and not first.isHidden():
            labels.append(first)
    return labels


class _LabelColumn(QObject):
    """Keeps a labelled form's label column as wide as its widest label in the font the label is drawn in.

    magicgui sizes the column by measuring the labels in the application's font
    (9 pt), while napari's style sheet draws them at 10 pt: in a dock at its
    narrowest, the Stimulus dock's "intensity (contrast)" lost its last letters.
    Measured again whenever the form is laid out (a generator's parameters
    replaced, the style sheet applied when docked).
    """

    def __init__(self, page: QWidget) -> None:
        super().__init__(page)   # lives as long as the page it watches
        page.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show, QEvent.Type.Polish):
            labels = _row_labels(obj)
            widest = max((label.sizeHint().width() for label in labels), default=0)
            for label in labels:
                if label.minimumWidth() != widest:
                    label.setMinimumWidth(widest)
        return False


def scroll_contents(widget) -> QScrollArea:
    """Put everything in the magicgui container ``widget`` in one vertical scroll area; returns the area.

    A dock then asks napari's window for a few lines of height instead of its
    whole form (the Analyze dock's was 568 px, which with the trace plot made
    the window 963 px tall: past the bottom of a laptop's screen, status bar and
    time axis included); where the window has the room, it shows the form as
    before. The container's layout moves, with its widgets, into the area's
    page, so magicgui's own handle on it keeps working (``append``, ``clear``).
    The page keeps its label column as wide as its labels are drawn (:class:`_LabelColumn`).
    Call it last in ``__init__``, after :func:`scroll_within`.
    """
    native = widget.native
    page = QWidget()
    page.setLayout(native.layout())   # Qt moves a layout installed on another widget, children included
    _LabelColumn(page)
    area = vertical_scroll(page)
    outer = QVBoxLayout(native)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area


_OURS: "weakref.WeakSet" = weakref.WeakSet()


def tabify_when_docked(widget) -> None:
    """Put ``widget``'s dock in tabs with the plugin's other docks once napari has docked it.

    napari's Plugins menu docks widgets one under the other (four of them
    overflow a 1000-px screen); this tabs them instead, whatever way they
    were added (a Qt single-shot runs after napari made the dock).
    """
    _exit.install()  # a script that leaves viewers open must still exit with status 0 (see _exit)
    native = widget.native
    _OURS.add(native)
    QTimer.singleShot(0, lambda: _tabify(native))


def _tabify(native) -> None:
    try:
        dock, main = docked_in(native)
        if dock is None:
            return
        area = main.dockWidgetArea(dock)
    except RuntimeError:  # Qt deleted the widget meanwhile
        return
    others = []
    for other in list(_OURS):
        try:
            d = dock_of(other) if other is not native else None
            if d is not None and d is not dock and d.parentWidget() is main and not d.isFloating() \
                    and main.dockWidgetArea(d) == area:
                others.append(d)
        except RuntimeError:  # a widget of a closed viewer
            continue
    tabbed = main.tabifiedDockWidgets(dock)
    if not others or any(d in tabbed for d in others):
        return  # alone, or already in the plugin's tab group (tabifying again would split the group)
    group = next((d for d in others if main.tabifiedDockWidgets(d)), others[0])
    main.tabifyDockWidget(group, dock)
    dock.raise_()


# -------------------------------------------------------------------- units ---

def has_physical_scale(layer) -> bool:
    """Whether an image layer carries physical units or a scale someone set: anything but napari's default
    (scale 1, "pixel" units), which alone is given the stimulus scale. A scale set without units
    (``add_image(stack, scale=(1000/60, 27.5, 27.5))``) is the user's calibration: replacing it with 10 ms and
    55 µm analysed a 27.5 µm stack at 55 µm without a word (a helper's audit)."""
    units = [str(u) for u in getattr(layer, "units", ())]
    scale = np.asarray(getattr(layer, "scale", ()), float)
    return any(u not in ("pixel", "px", "") for u in units) or not np.allclose(scale, 1.0)


def set_physical_scale(layer, pixel_um=SCALE[1], frame_ms: float = SCALE[0], viewer=None) -> bool:
    """Give a (T, y, x) image layer the stimulus scale (``frame_ms`` ms, ``pixel_um`` µm along y and x, or a
    (y_um, x_um) pair: the model's 10 and 55 by default), units and axis labels; ``viewer``'s time slider stays
    on the frame it showed (:func:`keeping_frame`), and a result drawn over the layer moves with it
    (:func:`.._viewer.rescale_stimulus`: its maps were left at the earlier scale, off the spot they explain).
    Returns whether a result moved (it is still of the earlier scale)."""
    from .._viewer import rescale_stimulus

    y_um, x_um = (pixel_um, pixel_um) if np.ndim(pixel_um) == 0 else pixel_um

    def change() -> None:
        layer.units = UNITS   # before the scale: napari 0.9 set units after scale sliced the layer to (1, 1)
        layer.axis_labels = AXIS_LABELS
        if viewer is None:
            layer.scale = (frame_ms, y_um, x_um)

    keeping_frame(viewer, layer, change)
    scale = (float(frame_ms), float(y_um), float(x_um))
    changes = tuple(float(v) for v in layer.scale[-3:]) != scale   # the same scale again: nothing moved
    moved = viewer is not None and changes and rescale_stimulus(viewer, layer, scale)
    layer.metadata.setdefault(META, {})["role"] = "stimulus"
    return bool(moved)
