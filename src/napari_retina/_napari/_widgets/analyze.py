"""The Analyze dock widget: attribute and reduce on a stimulus layer in a worker; add the result layers.

The computation is :func:`napari_retina.analysis.run_analysis` (lazy maps for
long movies, the out-of-memory retry); the widget gathers its parameters,
runs it through :class:`.._tasks.Task` and adds the layers with
:func:`napari_retina.viewer.show` (the scripting API's own path).
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Callable, Optional

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton

from ...analysis import Analysis, run_analysis
from ...attribution import DEFAULT_TOL, MAX_STEPS, MIN_TOL, attribute
from ...batch import check_stimulus_shape
from ...model import RetinaCNN
from ..._validate import (RESAMPLED_SMALL_REMEDY, UNZSCORED_REMEDY, ZSCORE_REMEDY, Normalize, StimulusUnitsWarning,
                          analysed_values, check_frame_ms, check_normalize, check_pixel_um, frame_text, grid_shape,
                          grid_words, input_mapping, pixel_text, warn_units)
from ...reduction import is_flat, reduce
from .._session import session
from .._tasks import Task, notify, one_sentence
from ..._units import FRAME_MS, PIXEL_UM
from .._layers import META, UNITS, layer_geometry, layer_pixels_per_model_pixel
from .._reader import SETTINGS_KEY
from .._framing import frame_result, keeping_frame
from .._plot import follow_stored_traces, trace_plot
from .._viewer import StimulusLayerRemoved, rescale_stimulus
from ... import viewer as nr_viewer
from ._common import (
    PARAMETER_HELP,
    file_choice_problem,
    has_physical_scale,
    layer_picker,
    offer_cells,
    parameter_widget,
    scroll_contents,
    set_physical_scale,
    steps_widget,
    tabify_when_docked,
    wrapping,
)
from ._crop import (crop_window, find_window, fit_window, model_grid, outline_window, remove_windows, window_origin,
                    window_rectangle)

#: decimals of the pixel size box
PIXEL_DECIMALS = 4
#: plugin-metadata key of a layer whose physical scale this dock set (it follows the pixel size box)
DOCK_SCALE = "scale_set_by_analyze"

def shows(box_value: float, exact: float) -> bool:
    """Whether a box of :data:`PIXEL_DECIMALS` decimals holding ``box_value`` shows ``exact`` (rounded):
    1000/60 ms as 16.6667, 55/3 µm as 18.3333."""
    return abs(exact - box_value) <= 0.5 * 10.0 ** -PIXEL_DECIMALS * (1 + 1e-9)


CROPS = ("none", "center", "window")
"""The crops offered (``nr.attribute(crop=...)``): the whole layer, its centre, or the window the user drags
(the crop-window rectangle, :mod:`._crop`; its corner is passed as ``crop=(y0, x0)``)."""


#: the invariance box's tooltip: Analyze's "auto" (run_analysis) gives a full-field stimulus maps, nr.attribute's not
INVARIANCE_TIP = ("How the maps are summed where the stimulus is uniform: 'auto' finds it (a full-field stimulus still "
                  "gets full maps here, each channel's spatial pattern, and the reduced circuit pools each kept "
                  "channel by them; nr.attribute's 'auto' sums them out), 'none' full maps (t, y, x), 'y' or 'x' "
                  "summed along that axis of a stimulus uniform along it, 'space' summed over space: no maps, "
                  "channel traces only, as nr.attribute(invariance='auto') on a full-field stimulus.")
#: the dock's advice for a layer larger than the model's frame with crop 'none' (the core says the rest)
CROP_ADVICE = "choose crop 'center', or 'window' and drag the rectangle"
#: the dock's label of ``pixel_um``
PIXEL_UM_LABEL = "pixel size (µm)"
#: the dock's label of ``frame_ms``
FRAME_MS_LABEL = "frame interval (ms)"
#: the dock's advice for a layer smaller than the model's frame (the core's SMALL_REMEDY, for this dock)
SMALL_ADVICE = (f"if its pixels are larger than the model's {PIXEL_UM:g} µm, set '{PIXEL_UM_LABEL}' to their size "
                "to resample it, else pad it to at least {size}x{size}")


def check_stimulus_layer(layer, model: RetinaCNN, crop: str, pixel_um=None, frame_ms=None) -> np.ndarray:
    """The layer's data as a (T, H, W) stack the model accepts, or a one-sentence ValueError.

    What a layer is (chosen, greyscale, one resolution, 3-D) is napari's question, asked here; whether its
    shape suits the model (frames, frame size with ``crop``, on the model's grid for a ``pixel_um`` other than
    its 55 µm, frames counted in its 10 ms bins for a ``frame_ms`` other than its own) is the core's
    (:func:`napari_retina.batch.check_stimulus_shape`, the check a batch makes on a file's header).
    """
    if layer is None:
        raise ValueError("Choose a stimulus layer first (open a stack or generate one in the Stimulus widget).")
    cfg = model.config
    if getattr(layer, "rgb", False):
        raise ValueError(f"Layer '{layer.name}' is RGB; the model needs a greyscale (T, y, x) stack.")
    if getattr(layer, "multiscale", False):   # its levels differ in size: which one would be analysed is unclear
        raise ValueError(f"Layer '{layer.name}' is multiscale (a pyramid of {len(layer.data)} levels); add its "
                         "full-resolution level as a layer of its own (viewer.add_image(layer.data[0])) and "
                         "analyse that.")
    if layer.ndim != 3:
        raise ValueError(f"Layer '{layer.name}' is {layer.ndim}-D; the model needs a (T, y, x) stack.")
    # 'window' needs what 'center' needs, a layer at least the model's size (where the window lies: crop_value)
    pixel = check_pixel_um(pixel_um)
    check_stimulus_shape(grid_shape(layer.data.shape, pixel), cfg.history, cfg.size,
                         None if crop == "none" else "center", f"Layer '{layer.name}'{grid_words(pixel)}", CROP_ADVICE,
                         SMALL_ADVICE if pixel is None else RESAMPLED_SMALL_REMEDY, check_frame_ms(frame_ms))
    return layer.data


def done_status(done: str, *notes: str) -> str:
    """The status line of a finished analysis: ``done``, then the notes that say something, "; "-separated."""
    said = [note for note in notes if note]
    return done + (f": {'; '.join(said)}" if said else "")


def summary_text(analysis: Analysis) -> str:
    """The result line: completeness error and, with a reduction, what the reduced circuit explains; a response
    that does not vary over the attributed frames (a grey stack, one frame past the history) has no variance to
    explain, and is said to be flat instead (its "100%" named a kept channel for a response that is not there).
    It starts with the analysed layer's name: the line stays when a later run is refused or fails."""
    attr, red = analysis.attribution, analysis.reduction
    text = (f"'{analysis.layer}': " if analysis.layer else "") + f"completeness error {attr.completeness_error:.2e}"
    response = np.asarray(attr.response, np.float64)
    response = response[np.isfinite(response)]
    if red is not None and is_flat(response):
        text += (f"; the response is flat over its {len(response)} attributed frame(s): no variance for a reduced "
                 "circuit to explain")
    elif red is not None:
        text += (f"; reduced circuit explains {red.explained_variance:.1%} of the variance with "
                 f"{', '.join(red.label(c) for c in red.kept)}")
    return text


def units_warnings(stimulus: np.ndarray, model: RetinaCNN, name: str, normalize: Normalize = False,
                   crop=None, pixel_um=None) -> list[str]:
    """The warnings for a float stack far from contrast units (without ``normalize``) and for a grey background
    that z-scoring moves off 0, worded for this dock; none when the stack looks like contrast. The core's rules
    and sentences on the values the core reads: those under the analysed window (``crop``, ``pixel_um``:
    :func:`napari_retina._validate.analysed_values`), whose own statistics it is z-scored by (the whole layer's
    warned of a grey the window does not hold, and missed one it does). Reads those values: any thread."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StimulusUnitsWarning)
        values, _ = analysed_values(stimulus, model.config.size, crop, check_pixel_um(pixel_um), f"layer '{name}'")
        warn_units(values, model.config.norm, check_normalize(normalize), f"the layer '{name}'")
    return [str(w.message).replace(ZSCORE_REMEDY, "tick 'normalize (z-score)'")
            .replace(UNZSCORED_REMEDY, "analyse it with 'normalize (z-score)' unticked")
            for w in caught if issubclass(w.category, StimulusUnitsWarning)]


def notify_units(stimulus: np.ndarray, model: RetinaCNN, name: str, normalize: Normalize = False,
                 crop=None, pixel_um=None) -> None:
    """:func:`units_warnings` as warning notifications (GUI thread)."""
    for message in units_warnings(stimulus, model, name, normalize, crop, pixel_um):
        notify("warning", message)


def scale_note(layer, pixel_um: float = PIXEL_UM, frame_ms: float = FRAME_MS) -> str:
    """The warning for a stimulus layer whose frame interval or pixel size, in ms and µm (converted from its
    units: :func:`.._layers.layer_geometry`), is not what it was analysed at (``frame_ms`` and ``pixel_um``: the
    dock's frame interval and pixel size, the model's 10 ms and 55 µm by default): the model saw the frames at
    ``frame_ms``, and the pixels at ``pixel_um``; "" when they match. An axis without a physical unit (napari's
    "pixel") counts when its scale is not napari's default 1: a scale set without units (``add_image(...,
    scale=(1000/60, 27.5, 27.5))``) is read as ms and µm, and the note says so."""
    geo = layer_geometry(layer)
    (layer_ms, y_um, x_um), units = geo["scale"], tuple(geo["units"])
    bare_t = units[0] != UNITS[0] and not np.isclose(layer_ms, 1.0)
    bare_yx = units[1:] != UNITS[1:] and not np.allclose((y_um, x_um), 1.0)
    have, want, advice = [], [], []
    if (units[0] == UNITS[0] or bare_t) and not np.isclose(layer_ms, frame_ms, rtol=1e-6):
        have.append(f"{layer_ms:.4g} ms per frame")
        want.append(f"{FRAME_MS:g} ms per frame" if np.isclose(frame_ms, FRAME_MS) else
                    f"{frame_ms:.6g} ms per frame ({FRAME_MS_LABEL}), resampled to its {FRAME_MS:g} ms bins")
        advice.append(f"set '{FRAME_MS_LABEL}' to {layer_ms:.6g} to resample it to the model's bins")
    if (units[1:] == UNITS[1:] or bare_yx) and not np.allclose((y_um, x_um), pixel_um, rtol=1e-6):
        have.append(f"{y_um:.4g} µm per pixel" if np.isclose(y_um, x_um) else f"{y_um:.4g} × {x_um:.4g} µm pixels")
        want.append(f"{PIXEL_UM:g} µm per pixel" if np.isclose(pixel_um, PIXEL_UM) else
                    f"{pixel_um:.6g} µm per pixel ({PIXEL_UM_LABEL}), resampled to its {PIXEL_UM:g}")
        if np.isclose(y_um, x_um):
            advice.append(f"set '{PIXEL_UM_LABEL}' to {y_um:.6g} to resample it to the model's pixels")
    if not have:
        return ""
    bare = " (its scale has no units: read as ms and µm)" if bare_t or bare_yx else ""
    return (f"Layer '{layer.name}' has {' and '.join(have)}{bare}: the model saw it at its own "
            f"{' and '.join(want)} (the maps and the traces keep the layer's scale)"
            + "".join(f"; {a}" for a in advice))


def resampled_note(pixel_um, frame_ms=None) -> str:
    """What the status line says of a layer resampled to the model's pixels or bins ("" when it was not)."""
    said = [] if pixel_um is None else [f"its {pixel_text(pixel_um)} pixels were resampled to the model's "
                                        f"{PIXEL_UM:g} µm (area-weighted means)"]
    if frame_ms is not None:
        said.append(f"its {frame_text(frame_ms)} frames were resampled to the model's {FRAME_MS:g} ms bins "
                    "(time-weighted means)")
    return "; ".join(said)


def deleted_sentence(layer) -> str:
    """The warning for a stimulus layer deleted before its result was in."""
    return f"The stimulus layer '{layer.name}' was deleted during the analysis; no layers were added."


def data_checksum(stimulus: np.ndarray) -> int:
    """CRC-32 of an in-memory stimulus's bytes, a frame at a time (a non-contiguous frame is copied alone):
    ~0.05 s per 100 MB on a 2-core CPU, against the analysis's seconds; it tells data edited in place during a run."""
    crc = 0
    for frame in stimulus if stimulus.ndim > 2 else [stimulus]:
        crc = zlib.crc32(np.ascontiguousarray(frame).view(np.uint8), crc)
    return crc


class AnalyzeWidget(Container):
    """Predict, attribute and reduce on a stimulus layer, in a worker; add the result layers.

    ``analysis`` holds the last :class:`~napari_retina.analysis.Analysis` (None before the first).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.layer = layer_picker(viewer)
        self.layer.tooltip = ("The stimulus stack (T, y, x) to analyse; 1 frame = 10 ms, 1 pixel = 55 µm (another "
                              "size: set 'pixel size (µm)'; another frame interval: 'frame interval (ms)').")
        self.cell = parameter_widget(attribute, "cell", annotation=int, min=0, max=999)
        self.tol = parameter_widget(attribute, "tol", value=DEFAULT_TOL, annotation=float, min=MIN_TOL, max=0.5,
                                    step=MIN_TOL)
        self.steps = steps_widget(attribute, MAX_STEPS)
        self.steps.changed.connect(lambda value: setattr(self.tol, "enabled", value == 0))
        self.invariance = parameter_widget(attribute, "invariance", tooltip=INVARIANCE_TIP)
        self.crop = ComboBox(label="crop", choices=list(CROPS), value="none", tooltip=PARAMETER_HELP["crop"][1])
        self.pixel = parameter_widget(attribute, "pixel_um", value=PIXEL_UM, annotation=float, label=PIXEL_UM_LABEL,
                                      min=0.5, max=10_000.0, step=0.5)
        self.pixel.native.setDecimals(PIXEL_DECIMALS)   # 55/3 µm as 18.3333, which the grid reads as 55/3
        self.frame = parameter_widget(attribute, "frame_ms", value=FRAME_MS, annotation=float, label=FRAME_MS_LABEL,
                                      min=0.1, max=10_000.0, step=1.0)
        self.frame.native.setDecimals(PIXEL_DECIMALS)   # 60 Hz as 16.6667 ms
        self.normalize = CheckBox(label="normalize (z-score)", value=False, tooltip=PARAMETER_HELP["normalize"][1])
        self.do_reduce = CheckBox(label="reduce", value=True, tooltip=PARAMETER_HELP["reduce"][1])
        self.explain = parameter_widget(reduce, "explain", min=0.01, max=1.0, step=0.05)
        self.settings_button = PushButton(text="Use the settings of the layer's analysis",
                                          tooltip="Set cell, tol or steps, invariance, crop, pixel size, frame "
                                                  "interval, normalize, "
                                                  "reduce and explain to those that produced the chosen layer (a "
                                                  "reopened .h5).")
        self.run_button = PushButton(text="Analyze", tooltip="Attribute (and reduce) on the chosen layer in the "
                                                             "background; Cancel stops it.")
        self.task = Task("analysis")
        self.task.close_with_dock(self)  # closing the dock cancels a run
        self.result_label = wrapping(Label(value=""))
        self.save_path = FileEdit(label="save to (.h5 / .csv)", mode="w", filter="*.h5 *.hdf5 *.csv",
                                  tooltip="Where Save writes: .h5 keeps everything (reopens in napari), "
                                          ".csv the traces.")
        self.save_button = PushButton(text="Save analysis (.h5) / traces (.csv)",
                                      tooltip="Write the last analysis to the file above: .h5 everything (File ▸ "
                                              "Open, nr.read_analysis), .csv the traces, one row per frame.")
        self.extend([self.layer, self.cell, self.tol, self.steps, self.invariance, self.crop, self.pixel,
                     self.frame, self.normalize,
                     self.do_reduce, self.explain, self.settings_button,
                     self.run_button, *self.task.widgets, self.result_label, self.save_path, self.save_button])
        self.run_button.changed.connect(lambda *_: self.run())
        self.save_button.changed.connect(lambda *_: self.save(Path(self.save_path.value)))
        self.session.model_changed.connect(self._model_changed)
        if self.session.has_model():  # set before this dock opened: its cells bound the cell box now
            self._model_changed(self.session.model)
        self.crop.changed.connect(self._crop_changed)
        self.layer.changed.connect(lambda *_: self._crop_changed(self.crop.value))
        self.pixel.changed.connect(lambda *_: self._pixel_changed())
        self.frame.changed.connect(lambda *_: self._frame_changed())
        self.settings_button.changed.connect(lambda *_: self.use_layer_settings())
        # a layer a reader made from a saved analysis or a batch store carries its traces: plot them
        follow_stored_traces(viewer)
        self.analysis: Optional[Analysis] = None
        self.added_layers: list = []
        self.scroll_area = scroll_contents(self)   # a dock a few lines tall on a laptop's screen
        tabify_when_docked(self)

    def _model_changed(self, model: RetinaCNN) -> None:
        offer_cells(self.cell, model.config.n_cells)
        layer = self.layer.value
        shapes = find_window(self.viewer, layer) if layer is not None and self.crop.value == "window" else None
        if shapes is not None:  # the rectangle shows the new model's field
            fit_window(shapes, layer, model.config.size, self.scale())

    def _crop_changed(self, value: str) -> None:
        """Show the crop window of the chosen layer while crop is 'window', and no other (it shows what will be
        analysed: a window left on another layer, or with another crop, would not be)."""
        layer = self.layer.value
        remove_windows(self.viewer, keep=layer if value == "window" else None)
        if value == "window" and layer is not None and layer.ndim == 3 and not getattr(layer, "rgb", False):
            size = self.session.model.config.size
            if min(model_grid(layer.data.shape, self.scale())) >= size:
                self._ensure_units(layer)  # the window takes the layer's scale: set it first
                crop_window(self.viewer, layer, size, self.scale())

    def _pixel_changed(self) -> None:
        """A layer this dock gave a physical scale takes the new pixel size; the crop window is redrawn for it."""
        value = float(self.pixel.value)
        self._rescale(lambda scale: (scale[0], value, value))
        self._crop_changed(self.crop.value)

    def _frame_changed(self) -> None:
        """A layer this dock gave a physical scale takes the new frame interval."""
        frame = self.frame_ms() or FRAME_MS
        self._rescale(lambda scale: (frame, *scale[1:]))

    def _rescale(self, new_scale: Callable[[tuple], tuple]) -> None:
        """Give the chosen layer, if this dock set its scale, ``new_scale(its (ms, µm, µm) scale)``; the result
        drawn over it moves with it (:func:`.._viewer.rescale_stimulus`) and the status line says it is of the
        earlier scale."""
        layer = self.layer.value
        if layer is None or not layer.metadata.get(META, {}).get(DOCK_SCALE):
            return
        now = tuple(float(v) for v in layer.scale[-3:])
        scale = tuple(float(v) for v in new_scale(now))
        if scale != now and rescale_stimulus(self.viewer, layer, scale):
            self.task.status.value = (f"'{layer.name}' now has {scale[0]:g} ms frames and {scale[-1]:g} µm pixels; "
                                      "the maps and traces shown still lie over the frames and pixels they were "
                                      "computed on, at the earlier scale: Analyze again for this one.")

    def frame_ms(self) -> Optional[float]:
        """``frame_ms`` for the core: the frame interval box's ms (the chosen layer's own when the box shows it
        rounded, :meth:`_exact`; else a whole-Hz monitor's 1000/N ms when the box shows that rounded: 8.3333 is
        1000/120, with which 1200 frames are 1000 bins, not 999), None for the model's own 10 ms."""
        value = self._exact(float(self.frame.value), (0,))
        hz = max(1, round(1000.0 / value))
        if shows(value, 1000.0 / hz):
            value = 1000.0 / hz
        return check_frame_ms(value)

    def pixel_um(self) -> Optional[float]:
        """``pixel_um`` for the core: the pixel size box's µm (the chosen layer's own when the box shows it
        rounded, :meth:`_exact`), None for the model's own 55 µm."""
        value = self._exact(float(self.pixel.value), (1, 2))
        return None if np.isclose(value, PIXEL_UM, rtol=1e-9, atol=0) else value

    def _exact(self, value: float, axes: tuple) -> float:
        """``value``, a box's number, or the chosen layer's scale along ``axes`` (0: time, in ms; 1, 2: y and x,
        in µm) where the box shows that scale to its :data:`PIXEL_DECIMALS` decimals: 60 Hz frames are 1000/60
        ms, which the box holds as 16.6667 (1000 frames would lose a bin, and the layer would seem to differ)."""
        layer = self.layer.value
        if layer is None or getattr(layer, "ndim", 0) != 3 or getattr(layer, "rgb", False):
            return value
        geo = layer_geometry(layer)
        scales = {float(geo["scale"][a]) for a in axes if geo["units"][a] == UNITS[a]}
        if len(scales) == 1 and shows(value, next(iter(scales))):
            return next(iter(scales))
        return value

    def scale(self) -> tuple:
        """(k_y, k_x): the chosen layer's pixels per model pixel, from the pixel size box (1, 1 at 55 µm)."""
        k = PIXEL_UM / float(self.pixel.value)
        return (k, k) if self.pixel_um() is not None else (1.0, 1.0)

    def crop_value(self, layer):
        """``crop`` for the core: None, "center", or the corner (y0, x0), model pixels, of the dragged crop
        window."""
        if self.crop.value == "none":
            return None
        if self.crop.value == "center":
            return "center"
        size = self.session.model.config.size
        return window_origin(crop_window(self.viewer, layer, size, self.scale()), layer, size, self.scale())

    def parameters(self) -> dict:
        """The parameters of :func:`~napari_retina.analysis.run_analysis` as shown in the widget."""
        steps = int(self.steps.value) or None  # 0: refined until tol
        return {"cell": int(self.cell.value), "steps": steps, "tol": None if steps else float(self.tol.value),
                "invariance": self.invariance.value,
                "crop": self.crop.value, "pixel_um": self.pixel_um(), "frame_ms": self.frame_ms(),
                "normalize": "zscore" if self.normalize.value else False,
                "reduce": bool(self.do_reduce.value), "explain": float(self.explain.value)}

    def set_parameters(self, params: dict) -> list[str]:
        """Show the settings ``params`` (an ``Analysis.parameters`` dict) in the widget.

        A crop corner (y0, x0) places the crop window there (crop 'window').
        A number outside its box's range (a cell the current model does not
        have) or a pixel size other along y than along x is left as it was;
        returns those, described for the user. A pixel size with which the
        chosen layer, of the model's size, would be too small is that of the
        stack its analysed window came from (a reopened analysis holds the
        window, on the model's grid): 55 µm is set, and said. So is 10 ms for a frame interval other than
        10 ms on a layer at 10 ms per frame (a reopened analysis: its frames are the model's bins already).
        """
        skipped: list[str] = []

        def put(widget, stored, whole: bool = False) -> None:
            try:   # a damaged file's "abc" is skipped and said, not a raw conversion error
                value = float(stored)
                if not np.isfinite(value) or (whole and not value.is_integer()):
                    raise ValueError
            except (TypeError, ValueError):
                skipped.append(f"{widget.name} {str(stored)[:30]!r}, which is not a{' whole' if whole else ''} "
                               "number")
                return
            value = int(value) if whole else value
            if widget.min <= value <= widget.max:
                widget.value = value
            elif widget is self.cell:
                skipped.append(f"cell {value}, which the current model does not have (cells 0–{widget.max})")
            else:
                skipped.append(f"{widget.label} {value:g}, outside {widget.min:g}–{widget.max:g}")

        if "cell" in params:
            put(self.cell, params["cell"], whole=True)
        if params.get("tol") is not None:       # refined by tol: steps then records the most any frame used
            put(self.tol, params["tol"])
            self.steps.value = 0
        elif params.get("steps") is not None:
            put(self.steps, params["steps"], whole=True)
        if params.get("invariance") in self.invariance.choices:
            self.invariance.value = params["invariance"]
        if "normalize" in params:
            self.normalize.value = bool(params["normalize"])
        if "reduce" in params:
            self.do_reduce.value = bool(params["reduce"])
        if "explain" in params:
            put(self.explain, params["explain"])
        if "pixel_um" in params:   # before the crop window: it is drawn at this size
            pixel = params["pixel_um"]
            sizes = [PIXEL_UM] if pixel is None else np.ravel(pixel).tolist()
            if self._holds_window(sizes[0]) and len(set(sizes)) == 1:
                self.pixel.value = PIXEL_UM
                skipped.append(f"pixel size {' × '.join(f'{v:g}' for v in dict.fromkeys(sizes))} µm, which "
                               f"this layer no longer has (it holds the analysed window, resampled to the model's "
                               f"{PIXEL_UM:g} µm pixels: {PIXEL_UM_LABEL} is {PIXEL_UM:g})")
            elif len(set(sizes)) == 1:
                put(self.pixel, float(sizes[0]))
            else:
                skipped.append(f"pixel size {' × '.join(f'{v:g}' for v in sizes)} µm (y × x), which the box "
                               "cannot show (one size for both)")
        if "frame_ms" in params:
            frame = float(params["frame_ms"] or FRAME_MS)
            if self._holds_bins(frame):
                self.frame.value = FRAME_MS
                skipped.append(f"frame interval {frame:g} ms, which this layer no longer has (it holds the analysed "
                               f"stimulus, resampled to the model's {FRAME_MS:g} ms bins: {FRAME_MS_LABEL} is "
                               f"{FRAME_MS:g})")
            else:
                put(self.frame, frame)
        crop = params.get("crop", "none")
        if isinstance(crop, (list, tuple, np.ndarray)) and len(crop) == 2:
            self._put_window(int(crop[0]), int(crop[1]), skipped)
        elif crop in CROPS:
            self.crop.value = crop
        return skipped

    def _holds_bins(self, frame_ms: float) -> bool:
        """Whether the chosen layer's frames are the model's 10 ms bins (its time axis in a unit of time, at
        10 ms) where ``frame_ms`` says they were resampled from other frames: an analysed window reopened."""
        layer = self.layer.value
        if layer is None or np.isclose(frame_ms, FRAME_MS):
            return False
        geo = layer_geometry(layer)
        return geo["units"][0] == UNITS[0] and bool(np.isclose(geo["scale"][0], FRAME_MS, rtol=1e-6))

    def _holds_window(self, pixel_um: float) -> bool:
        """Whether the chosen layer is a window of the model's size that ``pixel_um`` pixels would make too small:
        an analysed window, already resampled from them."""
        layer, size = self.layer.value, self.session.model.config.size
        if layer is None or np.isclose(pixel_um, PIXEL_UM) or tuple(layer.data.shape[-2:]) != (size, size):
            return False
        k = PIXEL_UM / float(pixel_um)
        return min(model_grid(layer.data.shape, (k, k))) < size

    def _put_window(self, y0: int, x0: int, skipped: list) -> None:
        """Crop 'window' at corner (y0, x0) of the chosen layer, if the window fits in it.

        A reopened analysis holds the window it analysed, already cut out: on a
        layer of the model's size the crop is "none" (the window is the layer);
        on another layer where the window does not fit, it is left as it was
        and said in ``skipped``.
        """
        layer, size, k = self.layer.value, self.session.model.config.size, self.scale()
        if layer is None:
            self.crop.value = "window"
            return
        H, W = model_grid(layer.data.shape, k)
        if 0 <= y0 <= H - size and 0 <= x0 <= W - size:
            self.crop.value = "window"
            crop_window(self.viewer, layer, size, k).data = [window_rectangle(y0, x0, size, k)]
        elif (H, W) == (size, size):
            self.crop.value = "none"
        else:
            skipped.append(f"crop window at ({y0}, {x0}), which does not fit in the {H}x{W} layer "
                           f"'{layer.name}' for a {size}x{size} model")

    def use_layer_settings(self) -> bool:
        """Apply the settings of the analysis the chosen layer came from (a reopened .h5); whether it had any."""
        layer = self.layer.value
        params = layer.metadata.get(META, {}).get(SETTINGS_KEY) if layer is not None else None
        if not params:
            notify("warning", "The chosen layer has no analysis settings; open a saved analysis (.h5) first.")
            return False
        skipped = self.set_parameters(params)
        self.task.status.value = f"settings of the analysis of '{layer.name}' applied"
        if skipped:
            self.task.status.value += f" except {'; '.join(skipped)}"
            notify("warning", f"The settings of the analysis of '{layer.name}' were applied except "
                              f"{'; '.join(skipped)}.")
        return True

    def _ensure_units(self, layer, say: bool = True) -> Optional[Callable[[], None]]:
        """Give a layer without physical units (napari's own reader: scale 1, pixels) the stimulus scale, once.

        A layer in other physical units (s, mm, …) is left as it is: its maps
        and traces take its scale converted to ms and µm
        (:func:`.._layers.layer_geometry`).

        Returns a function that gives the layer back what it had (None when it
        already had physical units). ``say``: tell the user now (else call
        :meth:`_said_units` once the change is kept).
        """
        if has_physical_scale(layer):
            return None
        before = (layer.scale, layer.units, layer.axis_labels)
        meta = dict(layer.metadata[META]) if META in layer.metadata else None
        set_physical_scale(layer, float(self.pixel.value), self.frame_ms() or FRAME_MS, self.viewer)
        layer.metadata[META][DOCK_SCALE] = True   # the pixel size box may change it again
        if say:
            self._said_units(layer)

        def undo() -> None:
            def back() -> None:   # units before the scale (set_physical_scale)
                layer.units, layer.axis_labels, layer.scale = before[1], before[2], before[0]
            keeping_frame(self.viewer, layer, back)
            if meta is None:
                layer.metadata.pop(META, None)
            else:
                layer.metadata[META] = meta
        return undo

    def _said_units(self, layer) -> None:
        frame, pixel = float(layer.scale[-3]), float(layer.scale[-1])
        own = np.isclose(pixel, PIXEL_UM) and np.isclose(frame, FRAME_MS)
        whose = "the model's units" if own else f"the {FRAME_MS_LABEL} and {PIXEL_UM_LABEL} set here"
        notify("info", f"Layer '{layer.name}' had no physical scale; it now has {frame:g} ms per frame and "
                       f"{pixel:g} µm per pixel ({whose}).")

    def run(self) -> bool:
        """Start an analysis of the chosen layer; returns whether it started."""
        if self.task.refuse_if_busy():  # before the model is loaded or the layer touched
            return False
        layer = self.layer.value
        try:
            model = self.session.model
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return False
        undo_units = None
        try:
            data = check_stimulus_layer(layer, model, self.crop.value, self.pixel_um(), self.frame_ms())
            params = self.parameters()
            if params["cell"] >= model.config.n_cells:
                raise ValueError(f"Cell {params['cell']} does not exist; the model has cells 0–"
                                 f"{model.config.n_cells - 1}.")
            # the result's layers take the layer's scale; a failed run gives the layer back what it had
            undo_units = self._ensure_units(layer, say=False)
            params["crop"] = self.crop_value(layer)
        except ValueError as exc:
            if undo_units is not None:
                undo_units()
            self.task.status.value = str(exc)
            notify("error", str(exc))
            return False
        source, lazy = self.session.source, not isinstance(data, np.ndarray)
        if not lazy:  # in memory: checked now, before the run
            notify_units(data, model, layer.name, params["normalize"], params["crop"], params["pixel_um"])
        late: list[str] = []  # a lazy layer's units warning, found in the worker and shown with the result
        edited: list[bool] = []  # the in-memory data were edited in place while they were analysed

        def job(task: Task) -> Analysis:
            stimulus = np.asarray(data)  # a lazy (dask) layer is read here, not in the GUI thread
            if lazy:
                late.extend(units_warnings(stimulus, model, layer.name, params["normalize"], params["crop"],
                                           params["pixel_um"]))
            before = None if lazy else data_checksum(stimulus)  # a lazy layer's data were read into a copy
            result = run_analysis(model, stimulus, **params, progress=task.progress_callback("attribute"),
                                  reduce_progress=task.progress_callback("reduce"), model_source=source,
                                  layer=layer.name)
            if before is not None and data_checksum(stimulus) != before:
                edited.append(True)
            return result

        def on_result(result: Analysis) -> None:
            dropped = self._why_dropped(layer, data, model, edited=bool(edited))
            if dropped:  # the result no longer fits the viewer: nothing is added, the layer gets back its scale
                if undo_units is not None and layer in self.viewer.layers:
                    undo_units()
                self._say_dropped(dropped)
                return
            if undo_units is not None:
                self._said_units(layer)
            for message in late:
                notify("warning", message)
            self._add(result, layer)

        started = self.task.start(job, on_result, on_failure=undo_units)
        if not started and undo_units is not None:
            undo_units()
        if started:
            note = scale_note(layer, self.pixel_um() or PIXEL_UM, self.frame_ms() or FRAME_MS)   # now and at the end
            if note:
                notify("warning", note + ".")
            plot = trace_plot(self.viewer, create=False)
            trace_plot(self.viewer)  # dock the (empty) plot now: its build and layout overlap the computation
            if plot is None or plot.parentWidget() is None:   # a new dock shrinks the canvas: frame the layer
                frame_result(self.viewer, [layer])             # again, or rows of it were off-screen until the end
        return started

    def _add(self, result: Analysis, layer) -> None:
        """Add the result's layers and traces over the next event-loop passes (:class:`.._viewer.StagedAdd`).

        The task stays running until they are all in, so the window never
        freezes for the whole build and a second run waits for this one; Cancel
        meanwhile removes what was added, as for a run cancelled before its result.
        """
        staged = nr_viewer.show(result, self.viewer, stimulus_layer=layer, staged=True)
        finish = self.task.defer(staged.stop, cancel=staged.cancel)

        def failed(exc: BaseException) -> None:
            if isinstance(exc, StimulusLayerRemoved):  # the staged add removed what it had put in
                self._say_dropped(deleted_sentence(layer))
                finish()
            else:
                finish(exc)

        staged.on_error = failed
        self.task.status.value = "adding the result layers..."

        def done(layers: list) -> None:
            try:
                self._show_result(result, layer, layers)
            except Exception as exc:  # noqa: BLE001 - reported like a failed analysis
                finish(exc)
                return
            finish()

        staged.on_done = done

    def _why_dropped(self, layer, data, model, edited: bool = False) -> Optional[str]:
        """Why a finished run's result must not be added (one sentence), or None when it fits the viewer.

        It was computed from ``data`` (the stimulus layer's data when the run
        started) with ``model``: drawn over a layer that is gone or holds
        other data (replaced, or ``edited`` in place during the run), or shown
        beside another model, it would be wrong without a sign of it.
        """
        if layer not in self.viewer.layers:
            return deleted_sentence(layer)
        if layer.data is not data or edited:
            return (f"The data of the stimulus layer '{layer.name}' changed during the analysis, so its result, "
                    "of the previous data, was dropped; no layers were added.")
        if self.session.model is not model:
            return ("The model changed during the analysis, so its result, of the previous model, was dropped; "
                    "no layers were added.")
        return None

    def _say_dropped(self, sentence: str) -> None:
        """Say why a result was dropped: the status line and a warning."""
        self.task.status.value = sentence
        notify("warning", sentence)

    def _show_result(self, result: Analysis, layer, layers: list) -> None:
        """The analysis is in the viewer: outline its window, keep the stimulus selected, say so."""
        self.added_layers = layers
        size = np.shape(result.attribution.stimulus)[-1]  # the model that ran (another may be loaded by now)
        outline = outline_window(self.viewer, layer, result.attribution.crop_origin, size,
                                 tuple(layer_pixels_per_model_pixel(result.attribution)))
        self.added_layers += [outline] if outline is not None else []
        self.viewer.layers.selection.active = layer
        self.analysis = result
        self.result_label.value = summary_text(result)
        norm = getattr(getattr(result.attribution.model, "config", None), "norm", None)
        mapping = input_mapping(layer.data.dtype, norm, result.parameters.get("normalize", False))
        # what was computed; how the stack was read; at what scale
        pixel, frame = result.attribution.input_pixel_um, result.attribution.input_frame_ms
        note = scale_note(layer, PIXEL_UM if pixel is None else pixel[0], frame or FRAME_MS)
        self.task.status.value = done_status("analysis done", result.maps_note, mapping, resampled_note(pixel, frame),
                                             note)

    def save(self, path: Path) -> Optional[Path]:
        """Write the last analysis to ``.h5``/``.hdf5`` (everything) or ``.csv`` (the traces)."""
        if self.analysis is None:
            notify("warning", "Run an analysis first; there is nothing to save yet.")
            return None
        problem = file_choice_problem(Path(path), "a file to save to (.h5 for everything, .csv for the traces)",
                                      must_exist=False)
        if problem:
            notify("error", problem)
            return None
        try:
            saved = self.analysis.save(path)
        except (ValueError, TypeError, OSError) as exc:
            notify("error", f"Could not save: {one_sentence(exc)}")
            return None
        what = "the traces" if saved.suffix.lower() == ".csv" else "the analysis"
        self.task.status.value = f"saved {what} to {saved}"
        notify("info", f"Saved {what} to {saved}.")
        return saved
