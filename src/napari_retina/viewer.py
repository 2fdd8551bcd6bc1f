"""Show napari-retina results in a napari viewer, from a script, a notebook or a batch job.

``nr.show`` (this module's :func:`show`) puts any result the library returns
into a viewer exactly as the plugin's widgets do (they call it too): the
stimulus with its physical scale (10 ms, 55 µm, 55 µm), units and axis labels,
one map layer per first-layer channel aligned to it by ``translate``, colour
limits ±limit shared by the maps (spikes per 10 ms bin), and the traces in
the trace plot dock with a time cursor that follows the time slider.

=====================  ==================================================
function               what it does
=====================  ==================================================
:func:`show`           add a result's layers (replacing an earlier result of the same name)
:func:`clear`          remove the layers whose names start with a prefix
:func:`screenshot`     a PNG of the canvas at a given size, every shown result in view
:func:`traces`         the trace plot dock; plot the traces a shown result carries
:func:`set_time`       move the time slider (and the cursor) to a time in ms
:func:`current_time`   where the time slider is, in ms
:func:`use_model`      the model the plugin's docks run (a RetinaCNN or an ``nr.wrap``-ped module)
=====================  ==================================================

This module needs napari (``pip install 'napari-retina[qt]'``); ``import
napari_retina`` never imports it: ``nr.show`` and ``nr.viewer`` load it on
first use. It never calls ``napari.run()``: in a script call that yourself; in
Jupyter run ``%gui qt`` first and the viewer stays live beside the notebook.

Example
-------
>>> import napari, napari_retina as nr                                          # doctest: +SKIP
>>> model = nr.load_model(); stim = nr.stimuli.flash_train()                      # doctest: +SKIP
>>> attr = nr.attribute(model, stim, invariance="none")                           # doctest: +SKIP
>>> layers = nr.show(attr, reduction=nr.reduce(attr), name="flashes")             # doctest: +SKIP
>>> viewer = napari.current_viewer()                                              # doctest: +SKIP
>>> nr.viewer.screenshot(viewer, "flashes.png", size=(1200, 800))                 # doctest: +SKIP
>>> napari.run()                                                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

try:
    import napari
except ImportError as exc:  # pragma: no cover - the test environment has napari
    raise ImportError("napari_retina.viewer needs napari; install it with pip install 'napari-retina[qt]'") from exc

from napari.viewer import Viewer as _NapariViewer  # the class itself (napari.Viewer may be a test's stand-in)

from ._atomic import atomic_write
from ._types import AnyModel, ArrayLike, PathLike
from ._units import FRAME_MS, PIXEL_UM
from ._validate import check_positive, check_reduces, frame_text, grid_shape, grid_words, is_real, pixel_text
from ._napari._layers import (META, CellTraces, bar_limit, map_layers, on_window, plugin_metadata,
                              show_marked_colour_bar, stimulus_layer_kwargs)
from ._napari._plot import TRACES_KEY, TracePlot, show_stored_traces, trace_plot
from ._napari._session import SCRIPT_SOURCE, use_model as _use_model
from ._napari._framing import aim, frame_result, world_box
from ._napari._viewer import (UnitsWarningOnce, add_analysis, add_layer_data, follow_renames, process_events,
                              remove_layers)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ._napari._viewer import StagedAdd
    from .attribution import Attribution
    from .experiments import ExperimentResult
    from .reduction import Reduction

__all__ = ["show", "clear", "screenshot", "traces", "set_time", "current_time", "fit", "place_beside",
           "use_model"]

ACCEPTED = ("a stimulus array (T, H, W), an Attribution, a Reduction (with attribution=...), an Analysis "
            "(napari_retina.analysis.run_analysis), an ExperimentResult, a battery (nr.experiments.battery), "
            "batch results (nr.batch.load) or the path of a stimulus file, saved analysis or results store")
"""What :func:`show` accepts (its TypeError names these)."""
BESIDE_GAP = 0.1
"""Gap between results placed side by side (``show(..., beside=True)``), as a fraction of the new result's width."""
SCREENSHOT_MARGIN = 0.03
"""Blank margin around the shown results in a :func:`screenshot` (fraction of the image)."""
MAX_IMAGE_SIDE = 16384
"""Largest side of a :func:`screenshot`, pixels: OpenGL's usual framebuffer limit (Mesa's, and many GPUs'; a
larger one failed to draw and aborted the process)."""


# ------------------------------------------------------------------- show ---

def show(result: Any, viewer: Optional["napari.Viewer"] = None, *, name: Optional[str] = None,
         reduction: Optional["Reduction"] = None, attribution: Optional["Attribution"] = None,
         stimulus_layer: Optional["napari.layers.Image"] = None, maps: Optional[ArrayLike] = None,
         limit: Optional[float] = None, replace: bool = True, beside: bool = False, staged: bool = False,
         truth: Optional["ExperimentResult"] = None) -> Union[list, "StagedAdd"]:
    """Add a result's layers to ``viewer`` (a new viewer when None) and plot its traces; returns the layers added.

    Parameters
    ----------
    result
        What to show: a stimulus array (T, H, W) (one image layer); an
        ``Attribution`` (stimulus, one map layer per channel, traces); a
        ``Reduction`` (give its ``attribution=``); an ``Analysis``
        (``napari_retina.analysis.run_analysis``, lazy maps of long movies
        included); an ``ExperimentResult`` (stimulus named after the
        experiment, its readout and conditions in the layer's metadata, maps,
        traces); a battery (the dict ``nr.experiments.battery`` returns: every
        experiment, each beside the previous one); batch results
        (``nr.batch.load(out)`` or one of its results); or a path (``str`` or
        ``Path``) of a stimulus file, a saved analysis (``Analysis.save``, .h5)
        or a batch results store, read as napari's File ▸ Open reads it.
    viewer : napari.Viewer, optional
        Default: a new ``napari.Viewer()`` (``napari.current_viewer()`` returns it).
    name : str, optional
        Name of the stimulus layer; the maps are named ``"<name>: <channel label>"``
        (e.g. ``"cell 0: A3 ON fast +"``). Default: the experiment's name,
        the analysed layer's name, or ``"stimulus"``.
    reduction : Reduction, optional
        With an ``Attribution``: names the maps, shows only the kept channels,
        adds the reduced circuit's trace.
    attribution : Attribution, optional
        With a ``Reduction``: the attribution it reduces.
    stimulus_layer : napari Image layer, optional
        Show an analysis over this existing layer (the Analyze widget's way):
        the maps take its scale and translate and its name as prefix. A layer
        without physical units (napari's own reader: 1 per pixel) is given
        the stimulus scale first (10 ms, 55 µm, 55 µm), with a UserWarning.
    maps : array-like (T, C, h, w), optional
        Replaces ``attribution.maps`` (an ``Analysis`` brings its own).
    limit : float, optional
        Shared contrast limit of the maps (default :func:`napari_retina.metrics.map_limit`, rounded up by
        ``bar_limit`` so that the colour bar's ticks are labelled); a limit given is used as it is.
    replace : bool
        True (default): the layers of an earlier result of the same name are
        updated or replaced, so a loop of analyses does not pile up layers.
        False: napari gives the new layers fresh names ("name [1]").
    beside : bool
        Place the result to the right of the layers already shown (compare
        two models in one viewer; the time slider is shared).
    staged : bool
        An analysis over ``stimulus_layer``, as the Analyze widget adds it, or
        an ``ExperimentResult``, as the Experiments widget adds it (its
        stimulus layer at once): the maps and traces go in over the next
        event-loop passes (the window repaints between them) and a
        ``StagedAdd`` is returned instead of the layers; its
        ``on_done(layers)`` / ``on_error(exc)`` say when it ends, and its
        ``cancel()`` removes what it added so far (the experiment's stimulus
        layer too).
    truth : ExperimentResult, optional
        With an ``ExperimentResult``: the ground truth's run of the same
        experiment on the same stimulus (``nr.experiments.battery(...)["truth"][name]``,
        or ``nr.experiments.run_truth(name, retina, history=model.config.history,
        **result.params)``). Its response above its resting rate is drawn in
        the trace dock as a faint wide band under the model's response. A
        battery shows its own ground truth.

    Returns
    -------
    list of napari layers: the stimulus (when added or updated here), then the maps.

    Raises
    ------
    TypeError
        ``result`` is none of the above (the message lists what is accepted).
    ValueError, FileNotFoundError
        A bad stimulus array, a Reduction without its attribution, a missing
        file, a closed viewer; a ``stimulus_layer`` that is not an image of
        this viewer holding the analysed stimulus, ``maps`` of another shape
        than the attribution's, a ``limit`` that is not a positive finite
        number, a ``truth`` that is not a ground-truth run of the result's
        stimulus (all checked before any layer is added).
    """
    kind = "file" if isinstance(result, (str, Path)) else _kind(result)   # bad input fails before any viewer opens
    if kind == "reduction" and attribution is None:
        raise ValueError("show(reduction) needs the attribution it reduces: "
                         "show(reduction, attribution=attr); got attribution=None")
    if kind == "stimulus":
        result = _checked_stimulus(result)
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str (the stimulus layer's name), got {type(name).__name__} "
                        f"{name!r}")
    if reduction is not None:
        from .saved import SavedReduction
        from .reduction import Reduction

        if kind != "attribution":
            raise ValueError(f"reduction= goes with an Attribution only; the result shown is of kind {kind!r}")
        if not isinstance(reduction, (Reduction, SavedReduction)):
            raise TypeError(f"reduction must be the Attribution's Reduction (nr.reduce), got "
                            f"{type(reduction).__name__}")
        check_reduces(result, reduction)
    if staged and not (kind in ("attribution", "reduction", "analysis") and stimulus_layer is not None
                       or kind == "experiment" and result.attribution is not None and not beside):
        raise ValueError("show(..., staged=True) adds an analysis over an existing stimulus_layer, or an "
                         f"experiment's attributed result (not beside others); got a {kind} result with "
                         f"stimulus_layer={stimulus_layer!r}")
    _check_viewer(viewer, allow_none=True)
    maps, limit = _checked_analysis_options(kind, result, attribution, viewer, stimulus_layer, maps, limit)
    truth = _checked_truth(kind, result, truth)
    viewer = _viewer(viewer)
    if stimulus_layer is not None:
        shown = result.attribution if kind == "analysis" else result if kind == "attribution" else attribution
        _ensure_physical_scale(stimulus_layer, shown, viewer)
    with UnitsWarningOnce():  # napari's "Inconsistent units" warning once per show, not once per layer
        return _show(viewer, kind, result, name, reduction, attribution, stimulus_layer, maps, limit, replace,
                     beside, staged, truth)


def _show(viewer, kind: str, result, name, reduction, attribution, stimulus_layer, maps, limit, replace: bool,
          beside: bool, staged: bool, truth=None):
    """:func:`show` for a checked ``result`` of ``kind`` in ``viewer``."""
    if kind == "file":
        return _show_file(viewer, Path(result), replace)
    if kind in ("attribution", "reduction"):
        attr, red = (result, reduction) if kind == "attribution" else (attribution, result)
        if maps is None and attr.maps is None:
            _warn_no_maps(attr.invariance)
        return _show_analysis(viewer, attr, red, name, stimulus_layer, maps, limit, replace, beside, staged=staged)
    if kind == "analysis":
        name = name or (result.layer if stimulus_layer is None and result.layer else None)
        return _show_analysis(viewer, result.attribution, result.reduction, name, stimulus_layer,
                              result.maps if maps is None else maps,
                              (None if result.limit is None else bar_limit(result.limit)) if limit is None else limit,
                              replace, beside, staged=staged)
    if kind == "experiment":
        return _show_experiment(viewer, result, name, replace, beside, truth, staged)
    if kind == "battery":
        return _show_battery(viewer, result, replace)
    if kind == "batch":
        return _show_batch(viewer, result, name, replace)
    return _show_stimulus(viewer, result, name or "stimulus", replace, beside)


def _warn_no_maps(invariance: str) -> None:
    """Say (UserWarning) that an attribution shown has no maps, so only its stimulus and traces appear."""
    warnings.warn(f"the attribution has no maps (invariance {invariance!r}: its channels summed over the field, "
                  "as 'auto' does for a full-field stimulus), so only the stimulus and the traces are shown; "
                  "nr.attribute(..., invariance='none') keeps the maps (nr.analysis.run_analysis does by default)",
                  UserWarning, stacklevel=4)


def _ensure_physical_scale(layer, attribution=None, viewer=None) -> None:
    """Give a ``stimulus_layer`` without physical units (napari's own reader: 1 per pixel) the stimulus scale:
    the frame interval and pixel size ``attribution`` was resampled from (``input_frame_ms``,
    ``input_pixel_um``), the model's 10 ms and 55 µm otherwise.

    Its maps take its scale and the trace plot its time axis, drawn in ms:
    at 1 per frame the axis said ms and counted frames. The Analyze widget
    does the same (with a notification); a script gets a UserWarning.
    """
    import warnings

    from ._napari._widgets._common import has_physical_scale, set_physical_scale

    if has_physical_scale(layer) or getattr(layer, "ndim", 3) != 3:
        return
    frame = getattr(attribution, "input_frame_ms", None) or FRAME_MS
    pixel = getattr(attribution, "input_pixel_um", None) or (PIXEL_UM, PIXEL_UM)
    set_physical_scale(layer, pixel, frame, viewer)
    whose = "the model's" if (frame, tuple(pixel)) == (FRAME_MS, (PIXEL_UM, PIXEL_UM)) else \
        "those the attribution was resampled from"
    warnings.warn(f"layer {layer.name!r} had no physical scale (napari's default, 1 per pixel); it now has "
                  f"{frame:.6g} ms per frame and {pixel_text(tuple(pixel))} pixels ({whose}), so the maps and the "
                  "traces' time axis (ms) line up with it", UserWarning, stacklevel=3)


def _kind(result) -> str:
    """Which of the accepted result types ``result`` is, or a TypeError naming them."""
    from .analysis import Analysis
    from .attribution import Attribution
    from .batch import Results, TaskResult
    from .experiments import ExperimentResult
    from .reduction import Reduction
    from .saved import SavedAttribution

    for kind, types in (("analysis", Analysis), ("attribution", (Attribution, SavedAttribution)),
                        ("reduction", Reduction), ("experiment", ExperimentResult), ("batch", (Results, TaskResult))):
        if isinstance(result, types):
            return kind
    if isinstance(result, dict) and isinstance(result.get("results"), dict) and "rows" in result:
        return "battery"
    if isinstance(result, np.ndarray) or (hasattr(result, "dask") and hasattr(result, "ndim")):
        return "stimulus"
    raise TypeError(f"show() expects {ACCEPTED}; got {type(result).__name__}")


def _viewer(viewer):
    """``viewer`` (checked by :func:`_check_viewer`), or a new ``napari.Viewer()`` when None."""
    _check_viewer(viewer, allow_none=True)
    return napari.Viewer() if viewer is None else viewer


def _closed(viewer) -> bool:
    """Whether ``viewer`` was closed: napari's ``Window.close`` deletes the window's Qt main window, after which
    the window's public ``geometry()`` has nothing to ask (napari's public API has no flag for it)."""
    try:
        viewer.window.geometry()
    except (AttributeError, RuntimeError):  # the Qt window deleted (RuntimeError: its C++ object gone)
        return True
    return False


def _check_viewer(viewer, allow_none: bool = False) -> None:
    """A TypeError unless ``viewer`` is a napari.Viewer (or None with ``allow_none``); a ValueError if it was closed."""
    if viewer is None and allow_none:
        return
    if not isinstance(viewer, _NapariViewer):
        also = " (or None for a new one)" if allow_none else ""
        raise TypeError(f"viewer must be a napari.Viewer{also}, got {type(viewer).__name__}")
    if _closed(viewer):
        raise ValueError("viewer must be an open napari.Viewer, got one that was closed (viewer.close())")


def _checked_analysis_options(kind: str, result, attribution, viewer, stimulus_layer, maps, limit):
    """(maps, limit) of :func:`show`, checked against the attribution shown: a one-sentence error otherwise.

    ``stimulus_layer``, ``maps`` and ``limit`` go with an analysis only (an
    Attribution, a Reduction, an Analysis); checked here, before any viewer
    opens or any layer is added.
    """
    given = [n for n, v in (("stimulus_layer", stimulus_layer), ("maps", maps), ("limit", limit)) if v is not None]
    if kind not in ("attribution", "reduction", "analysis"):
        if given:
            raise ValueError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with an Attribution, a "
                             f"Reduction or an Analysis; got {' and '.join(given)} with a {kind} result")
        return maps, limit
    attr = {"attribution": result, "reduction": attribution, "analysis": getattr(result, "attribution", None)}[kind]
    if kind == "reduction":
        from .attribution import Attribution
        from .saved import SavedAttribution

        if not isinstance(attr, (Attribution, SavedAttribution)):
            raise TypeError(f"show(reduction, attribution=...) expects the Attribution it reduces, "
                            f"got {type(attr).__name__}")
        check_reduces(attr, result)
    if limit is not None:
        limit = check_positive(limit, "limit")
    if maps is not None:
        maps = _checked_maps(maps, attr)
    if stimulus_layer is not None:
        cropped = kind == "analysis" and result.parameters.get("crop", "none") != "none"
        _check_stimulus_layer(stimulus_layer, viewer, attr, cropped)
    return maps, limit


def _map_size(attr) -> int:
    """The side of the attribution's first-layer maps: the model's, else the stimulus less the kernel's border."""
    model = getattr(attr, "model", None)
    if model is not None:
        return int(model.config.map_sizes[0])
    return int(np.shape(attr.stimulus)[-1]) - 2 * int(attr.offset)


def _checked_maps(maps, attr):
    """``maps`` (T, C, h, w) as the attribution's (or summed over y or x), real numbers; else one ValueError."""
    if not hasattr(maps, "shape") or not hasattr(maps, "dtype"):
        maps = np.asarray(maps)
    T, C = np.shape(attr.channels)
    own = getattr(attr, "maps", None)
    n = _map_size(attr)
    spatial = [tuple(own.shape[2:])] if own is not None else [(n, n), (1, n), (n, 1)]
    shape = tuple(int(v) for v in maps.shape)
    if len(shape) != 4 or shape[:2] != (T, C) or shape[2:] not in spatial:
        want = " or ".join(f"({T}, {C}, {h}, {w})" for h, w in spatial)
        raise ValueError(f"maps must be the attribution's (T, C, h, w) = {want}, got shape {shape}")
    if np.dtype(maps.dtype).kind not in "fiu":
        raise TypeError(f"maps must hold real numbers, got dtype {maps.dtype}")
    return maps


def _check_stimulus_layer(layer, viewer, attr, cropped: bool = False) -> None:
    """One-sentence error unless ``layer`` is an image of ``viewer`` holding the stimulus ``attr`` analysed.

    Its data must be (T, H, W) with the attribution's T frames and its H × W
    pixels, or, for an attribution of a window cut out of a larger stack (a
    ``crop_origin`` other than (0, 0), or ``cropped``: an Analysis whose
    parameters name a crop, as the Analyze widget's), a stack that window fits in; for one resampled to the
    model's pixels (``input_pixel_um``), a stack whose frame on the model's grid the window fits in; for one
    resampled to the model's 10 ms bins (``input_frame_ms``), a stack of as many bins.
    """
    if not isinstance(layer, napari.layers.Image):
        raise TypeError(f"stimulus_layer must be a napari Image layer of the viewer, got {type(layer).__name__}")
    if viewer is None or layer not in viewer.layers:
        where = "viewer=None (a new viewer)" if viewer is None else "the viewer"
        raise ValueError(f"stimulus_layer must be a layer of the viewer the result is shown in, got layer "
                         f"{layer.name!r}, which is not in {where}")
    shape = tuple(int(v) for v in layer.data.shape)
    stim = tuple(int(v) for v in np.shape(attr.stimulus))
    if layer.rgb or len(shape) != 3:
        raise ValueError(f"stimulus_layer must be a (T, H, W) stack of the analysed stimulus {stim}, got layer "
                         f"{layer.name!r} of shape {shape}" + (" (RGB)" if layer.rgb else ""))
    if len(stim) != 3:
        return
    y0, x0 = (int(v) for v in attr.crop_origin)
    pixel, frame = getattr(attr, "input_pixel_um", None), getattr(attr, "input_frame_ms", None)
    grid = grid_shape(shape, pixel, frame)   # the layer on the model's grid (its own unless resampled)
    window = cropped or (y0, x0) != (0, 0) or pixel is not None
    fits = grid[0] == stim[0] and (y0 + stim[1] <= grid[1] and x0 + stim[2] <= grid[2] if window else
                                   shape[1:] == stim[1:])
    if not fits:
        where = (f" (or a larger stack{grid_words(pixel)} holding its window at (y0, x0) = ({y0}, {x0}))"
                 if window else "")
        bins = f" ({stim[0]} model frames of {FRAME_MS:g} ms: {frame_text(frame)} frames resampled)" if frame else ""
        raise ValueError(f"stimulus_layer must hold the analysed stimulus, (T, H, W) = {stim}{bins}{where}, got "
                         f"layer {layer.name!r} of shape {shape}")


def _belongs(layer, name: str) -> bool:
    """Whether ``layer`` is part of the result called ``name``: the stimulus ``name`` or a layer ``"name: ..."``."""
    return layer.name == name or layer.name.startswith(f"{name}: ")


def _stimulus_layer(viewer, stimulus, name: str, metadata: Optional[dict], replace: bool):
    """(layer, undo): the stimulus layer ``name``, updated in place when ``replace`` finds one, else added.

    ``undo()`` puts things back as they were (removes the layer, or restores
    the old data and metadata) for an all-or-nothing :func:`show`.
    """
    kwargs = stimulus_layer_kwargs(stimulus, name, metadata)
    old = viewer.layers[name] if replace and name in viewer.layers else None
    if isinstance(old, napari.layers.Image) and old.ndim == np.ndim(stimulus) and not old.rgb:
        before = (old.data, old.metadata, old.contrast_limits)
        old.data = stimulus
        old.metadata = kwargs["metadata"]
        if "contrast_limits" in kwargs:
            old.contrast_limits_range = kwargs["contrast_limits"]
            old.contrast_limits = kwargs["contrast_limits"]
        else:  # integer stacks: napari's own limits, as for a new layer
            old.reset_contrast_limits_range()
            old.reset_contrast_limits()

        def undo() -> None:
            old.data, old.metadata = before[0], before[1]
            old.contrast_limits_range = old.contrast_limits = before[2]

        return old, undo
    if replace:
        clear(viewer, name, exact=True)
    layer = add_layer_data(viewer, [(stimulus, kwargs, "image")])[0]
    return layer, lambda: viewer.layers.remove(layer) if layer in viewer.layers else None


def _drop_analysis(viewer, name: str) -> None:
    """The result ``name`` is now a stimulus without an analysis: remove the earlier analysis' maps and outline
    of its analysed window, and the trace plot's traces when they are that result's."""
    outline = [layer for layer in viewer.layers
               if plugin_metadata(layer).get("role") == "analysed_window" and plugin_metadata(layer).get("for") == name]
    remove_layers(viewer, map_layers(viewer.layers, f"{name}: ") + outline)
    plot = trace_plot(viewer, create=False)
    if plot is not None and plot.source == name:
        plot.clear()


def _checked_stimulus(stimulus):
    """A (T, H, W) stack of finite numbers (a dask array: its shape only), or a one-sentence error."""
    if not hasattr(stimulus, "dask"):
        from ._validate import as_stack

        return as_stack(stimulus, name="show() stimulus")
    if stimulus.ndim != 3:
        raise ValueError(f"show() stimulus must be a (T, H, W) stack, got shape {tuple(stimulus.shape)}")
    return stimulus


def _show_stimulus(viewer, stimulus, name: str, replace: bool, beside: "bool | list") -> list:
    """One stimulus array as an image layer (scale, units, axis labels, limits symmetric about 0)."""
    layer, _ = _stimulus_layer(viewer, stimulus, name, None, replace)
    if replace:
        _drop_analysis(viewer, layer.name)
    _put_beside(viewer, layer, beside)
    frame_result(viewer, [layer] if not beside else _visible(viewer))
    return [layer]


def _show_analysis(viewer, attribution, reduction, name, stimulus_layer, maps, limit, replace: bool,
                   beside: "bool | list", metadata: Optional[dict] = None, staged: bool = False,
                   cell: Optional[CellTraces] = None):
    """An attribution's stimulus (added, updated, or the given layer), its maps and traces, all-or-nothing.

    ``staged``: a ``StagedAdd`` of :func:`._napari._viewer.add_analysis` (without ``stimulus_layer``, the layer
    added here first is its ``before``, and removed or given back by its ``undo``).
    """
    undo = None
    if stimulus_layer is None:   # a layer of the analysed window: the maps lie on it as they are
        attribution = on_window(attribution)
        stimulus_layer, undo = _stimulus_layer(viewer, attribution.stimulus, name or "stimulus", metadata, replace)
        _put_beside(viewer, stimulus_layer, beside)
    if staged:
        try:
            adding = add_analysis(viewer, attribution, reduction, stimulus_layer, maps=maps, limit=limit,
                                  replace=replace, staged=True, cell=cell)
        except Exception:
            if undo is not None:
                undo()
            raise
        if undo is not None:
            adding.before, adding.undo = [stimulus_layer], undo
        return adding
    try:
        layers = add_analysis(viewer, attribution, reduction, stimulus_layer, maps=maps, limit=limit,
                              replace=replace, cell=cell)
    except Exception:
        if undo is not None:
            undo()
        raise
    if beside:
        frame_result(viewer, _visible(viewer))
    return layers if undo is None else [stimulus_layer] + layers


def _checked_truth(kind: str, result, truth) -> Optional[np.ndarray]:
    """``truth`` (show's argument) as the trace to draw, (T,) spikes per bin above rest, or None; one sentence
    when it is not a ground-truth run of ``result``'s stimulus."""
    if truth is None:
        return None
    from .experiments import ExperimentResult
    from .experiments.base import above_rest
    from .synthetic import HISTORY

    if kind != "experiment":
        raise ValueError(f"show(..., truth=...) goes with an ExperimentResult, whose ground truth it is; got a {kind}")
    if not isinstance(truth, ExperimentResult) or truth.attribution is not None:
        raise TypeError("truth must be the ground truth's run of the experiment (an ExperimentResult of "
                        f"nr.experiments.run_truth), got {type(truth).__name__}")
    if truth.name != result.name or np.shape(truth.stimulus) != np.shape(result.stimulus) \
            or not np.array_equal(truth.stimulus, result.stimulus):
        raise ValueError(f"truth is the ground truth's {truth.name!r} run on a stimulus of shape "
                         f"{np.shape(truth.stimulus)}, not on this {result.name!r} result's stimulus of shape "
                         f"{np.shape(result.stimulus)}; run it with run_truth(name, retina, "
                         "history=model.config.history, **result.params)")
    return above_rest(truth, HISTORY)   # the ground truth's filters span HISTORY frames


def _show_experiment(viewer, result, name: Optional[str], replace: bool, beside: "bool | list",
                     truth=None, staged: bool = False):
    """An ExperimentResult: the stimulus named after the experiment (readout, conditions in its metadata), maps;
    traces with the model's response at every frame and ``truth``, the ground truth's trace (:func:`_checked_truth`).
    ``staged``: the stimulus layer now, a ``StagedAdd`` of the rest."""
    meta = {"experiment": result.name, "readout": dict(result.readout), "conditions": list(result.conditions)}
    name = name or result.name
    if result.attribution is None:  # a ground-truth run: a stimulus and rates, nothing attributed
        layer, _ = _stimulus_layer(viewer, result.stimulus, name, meta, replace)
        if replace:
            _drop_analysis(viewer, layer.name)
        _put_beside(viewer, layer, beside)
        frame_result(viewer, [layer])
        return [layer]
    # the model's response at every frame from the experiment's rates (the attribution's: its attributed frames)
    cell = CellTraces.from_rates(result.rates, result.cells, result.attribution.baseline_rate, truth)
    return _show_analysis(viewer, result.attribution, result.reduction, name, None, None, None, replace, beside,
                          metadata=meta, cell=cell, staged=staged)


def _show_battery(viewer, battery: dict, replace: bool) -> list:
    """Every experiment of a battery, the first to the right of what the viewer showed (it was drawn over it),
    each next to the right of the previous one (it was placed beside every other layer, so a battery shown
    again moved right each time), with its ground truth's trace; the last one's traces plotted."""
    names = list(battery["results"])
    beside: list = [lay for lay in _visible(viewer) if not any(_belongs(lay, name) for name in names)]
    layers: list = []
    for name, result in battery["results"].items():
        truth = (battery.get("truth") or {}).get(name)
        shown = _show_experiment(viewer, result, name, replace, beside,
                                 truth=None if truth is None else _checked_truth("experiment", result, truth))
        layers += shown
        beside = shown
    return layers


def _show_file(viewer, path: Path, replace: bool) -> list:
    """A stimulus file, a saved analysis or a batch results store, read by the plugin's readers."""
    from ._napari._batch_reader import _store, read_batch_layers
    from ._napari._reader import napari_get_reader

    if not path.exists():
        raise FileNotFoundError(f"show() expects an existing stimulus file, saved analysis or results store; "
                                f"{str(path)!r} does not exist")
    if _store(str(path)) is not None:
        data = read_batch_layers(str(path))
    elif napari_get_reader(str(path)) is not None:
        data = napari_get_reader(str(path))(str(path))
    else:
        raise ValueError(f"show() reads stimulus files (.npy, .tif, .h5), saved analyses (.h5) and results "
                         f"stores (folders); got {path.name!r}")
    return _add_read_layers(viewer, data, replace)


def _add_read_layers(viewer, data: list, replace: bool) -> list:
    """Add a reader's layer-data tuples (replacing layers of the same names); plot the first stored traces."""
    if replace:
        names = {kwargs.get("name") for _, kwargs, _ in data}
        remove_layers(viewer, [lay for lay in viewer.layers if lay.name in names])
        for _, kwargs, _ in data:   # an earlier analysis under a stimulus' name goes with it
            if kwargs.get("metadata", {}).get(META, {}).get("role") == "stimulus":
                _drop_analysis(viewer, kwargs["name"])
    layers = add_layer_data(viewer, data)
    for layer in layers:
        show_marked_colour_bar(layer)
    carrier = next((lay for lay in layers if TRACES_KEY in lay.metadata.get(META, {}) and lay.visible), None)
    if carrier is not None:
        show_stored_traces(viewer, carrier)
    frame_result(viewer, [lay for lay in layers if lay.visible])
    return layers


def _show_batch(viewer, results, name: Optional[str], replace: bool) -> list:
    """Batch results (``nr.batch.load``) as the batch reader shows the store; one TaskResult: that result alone.

    One result shows its stimulus and what it computed (maps and traces, an
    experiment as an ``ExperimentResult`` is shown), never another task's
    layers (:func:`._napari._batch_reader.read_task_layers`).
    """
    from .batch import Results
    from ._napari._batch_reader import read_batch_layers, read_task_layers

    if not isinstance(results, Results):
        return _add_read_layers(viewer, read_task_layers(results, name), replace)
    first = next(iter(results.values()), None)
    if first is None:
        raise ValueError("show() got batch results with no complete task; nothing to show")
    root = first.path.parents[len(Path(first.key).parts) - 1]
    return _add_read_layers(viewer, read_batch_layers(str(root)), replace)


# ----------------------------------------------------------------- layout ---

def _visible(viewer) -> list:
    return [layer for layer in viewer.layers if layer.visible]


def place_beside(viewer: "napari.Viewer", layer: "napari.layers.Layer", name: str, gap: float = BESIDE_GAP) -> None:
    """Shift ``layer`` along x so it starts ``gap`` (fraction of its width) right of every other visible
    layer that is not part of the result ``name``; its maps follow when added after it."""
    _check_viewer(viewer)
    _right_of(layer, [lay for lay in _visible(viewer) if not _belongs(lay, name) and lay is not layer], gap)


def _put_beside(viewer, layer, beside: "bool | list") -> None:
    """``beside`` True: :func:`place_beside` the other results; a list of layers: right of those of them that
    are visible (a battery's previous experiment; [] for its first); False: leave ``layer`` where it is.
    Side by side, each result is titled with its name (:func:`_title`)."""
    if isinstance(beside, list):
        _right_of(layer, [lay for lay in beside if lay.visible and lay is not layer])
    elif beside:
        place_beside(viewer, layer, layer.name)
    else:
        return
    for other in [lay for lay in _visible(viewer) if plugin_metadata(lay).get("role") == "stimulus"]:
        if other is layer or not any(_is_title_of(t, other) for t in viewer.layers):
            _title(viewer, other)


TITLE_SIZE = 14
"""Font size of a result's title (screen points: the same at any zoom)."""
TITLE_GAP = 0.08
"""How far above its result a title sits, as a fraction of the result's height."""


def _is_title_of(layer, stimulus_layer) -> bool:
    return plugin_metadata(layer).get("role") == "title" and layer.name == f"{stimulus_layer.name}: title"


def _title(viewer, layer) -> None:
    """The name of the result whose stimulus is ``layer``, centred above it: a text-only Points layer
    ``"<name>: title"`` in the layer's plane (its placement), part of the result (``clear`` removes it). An
    earlier title of it is replaced; the selection is kept."""
    from ._napari._widgets._crop import plane_placement

    remove_layers(viewer, [t for t in viewer.layers if _is_title_of(t, layer)])
    h, w = (int(n) for n in layer.data.shape[-2:])
    active = viewer.layers.selection.active
    viewer.add_points([[-0.5 - TITLE_GAP * h, (w - 1) / 2]], name=f"{layer.name}: title", size=1,
                      face_color="transparent", border_color="transparent",
                      text={"string": [layer.name], "color": "white", "size": TITLE_SIZE, "anchor": "center"},
                      metadata={META: {"role": "title", "for": layer.name}}, **plane_placement(layer))
    follow_renames(viewer, layer)   # renamed, the result's title says the new name
    viewer.layers.selection.active = active


def _right_of(layer, others: list, gap: float = BESIDE_GAP) -> None:
    """Shift ``layer`` along x so it starts ``gap`` (fraction of its width) right of ``others``' right edge
    (world); no others: left where it is."""
    if not others:
        return
    right = max(float(np.asarray(lay.extent.world)[1, -1]) for lay in others)
    left, end = np.asarray(layer.extent.world, float)[:, -1]
    translate = np.array(layer.translate, float)
    translate[-1] += right + gap * (end - left) - left
    layer.translate = translate


def clear(viewer: "napari.Viewer", prefix: str, *, exact: bool = False) -> int:
    """Remove the layers whose names start with ``prefix`` (plain ``str.startswith``); returns how many.

    ``clear(viewer, "cell 0")`` removes ``"cell 0"``, ``"cell 0: A3 ON fast +"``
    and also ``"cell 01"``: end the prefix with ``": "`` to keep the latter.
    ``exact=True`` removes one result only: the layer ``prefix`` and the
    layers ``"prefix: ..."``. Other layers are untouched.
    """
    _check_viewer(viewer)
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"clear() expects a non-empty layer-name prefix (str), got {prefix!r}")
    gone = [lay for lay in viewer.layers if (_belongs(lay, prefix) if exact else lay.name.startswith(prefix))]
    remove_layers(viewer, gone)
    return len(gone)


# ------------------------------------------------------------- time, plot ---

def _time_axis(viewer) -> int:
    return max(viewer.dims.ndim - 3, 0)


def _check_time_viewer(viewer, what: str) -> int:
    """The time axis of an open ``viewer`` that shows a (T, H, W) stack, or a one-sentence error."""
    _check_viewer(viewer)
    if viewer.dims.ndim < 3:
        raise ValueError(f"{what} needs a viewer showing a (T, H, W) stack, got one with {viewer.dims.ndim} "
                         f"dimensions (no time axis)")
    return _time_axis(viewer)


def set_time(viewer: "napari.Viewer", time_ms: float) -> float:
    """Move the time slider (and the trace plot's cursor) to ``time_ms`` (world ms); returns the time set.

    The slider snaps to the nearest frame (10 ms per frame for the plugin's
    layers: 304 ms gives frame 30, 300 ms) and stops at the first and the
    last frame; the time returned is that frame's.
    """
    axis = _check_time_viewer(viewer, "set_time()")
    if not is_real(time_ms):
        raise TypeError(f"time_ms must be a finite number of ms, got {time_ms!r}")
    t = float(time_ms)
    if not np.isfinite(t):
        raise ValueError(f"time_ms must be a finite number of ms, got {time_ms!r}")
    rng, n = viewer.dims.range[axis], int(viewer.dims.nsteps[axis])
    frame = int(np.clip(round((t - rng.start) / (rng.step or 1)), 0, max(n - 1, 0)))
    viewer.dims.set_current_step(axis, frame)
    return current_time(viewer)


def current_time(viewer: "napari.Viewer") -> float:
    """The time slider's position in world ms (where the trace plot's cursor is drawn)."""
    axis = _check_time_viewer(viewer, "current_time()")
    return float(viewer.dims.point[axis])


def traces(viewer: "napari.Viewer", name: Optional[str] = None) -> TracePlot:
    """The viewer's trace plot dock; with ``name``, first plot the traces of the result ``name`` shown earlier.

    The plot's ``series`` (label, values (T,) in spikes per 10 ms bin,
    colour, row), ``times_ms`` (T,) and ``cursor_time_ms`` say what it draws.
    """
    _check_viewer(viewer)
    if name is not None:
        if name not in viewer.layers:
            raise ValueError(f"traces() expects the name of a shown result, got {name!r}; "
                             f"the layers are {[lay.name for lay in viewer.layers]}")
        if not show_stored_traces(viewer, viewer.layers[name]):
            raise ValueError(f"layer {name!r} carries no traces; show an analysis or experiment under that name")
    plot = trace_plot(viewer, create=False)
    if plot is None:
        raise ValueError("this viewer has no trace plot yet; show an analysis first")
    return plot


# ------------------------------------------------------------------ model ---

def use_model(viewer: "napari.Viewer", model: AnyModel, source: str = SCRIPT_SOURCE) -> None:
    """Make ``model`` the model of ``viewer``'s dock widgets (Model, Analyze, Experiments).

    ``model``: a RetinaCNN (``nr.load_model``) or a user's module adapted by
    ``nr.wrap``; ``source`` is what the Model widget's summary says it came
    from. Anything else, or a viewer that is not an open napari.Viewer, is
    refused with one sentence.

    Example
    -------
    >>> use_model(viewer, nr.wrap(net, input="NCTHW", history=30, size=20, first_layer="core.conv"))  # doctest: +SKIP
    """
    _check_viewer(viewer)
    _use_model(viewer, model, source)


# ------------------------------------------------------------- screenshot ---

def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
        ok = w > 0 and h > 0 and all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"size must be (width, height) in pixels, two positive integers, got {size!r}")
    return w, h


def fit(viewer: "napari.Viewer", canvas_size: Sequence[float], layers: Optional[list] = None,
        margin: float = SCREENSHOT_MARGIN) -> None:
    """Centre the camera on ``layers`` (default: the visible ones) and zoom so they fill a canvas of
    ``canvas_size`` (height, width) logical pixels, less ``margin`` on each side (grid mode: one grid cell),
    and clear of a map's colour bar while one shows (napari draws it at the top right over whatever is there).

    What is fitted is the axes the viewer displays (the time axis too, when the user has rolled it into view),
    each image pixel whole; where a displayed axis is one the layers lack, every layer is fitted."""
    _check_viewer(viewer)
    layers = _visible(viewer) if layers is None else layers
    if not layers:
        return
    box = world_box(viewer, layers) or world_box(viewer, list(viewer.layers))
    cell = np.asarray(canvas_size, float)
    if viewer.canvas.grid.enabled:
        cell = cell / np.asarray(viewer.canvas.grid.actual_shape(len(viewer.layers)), float)
    aim(viewer, *box, cell, 1 - 2 * margin)


def _device_pixel_ratio() -> float:
    from qtpy.QtGui import QGuiApplication

    app = QGuiApplication.instance()
    return float(app.devicePixelRatio()) if app is not None else 1.0


def screenshot(viewer: "napari.Viewer", path: PathLike, size: tuple = (1200, 800), *, scale: float = 1.0,
               margin: float = SCREENSHOT_MARGIN, window: bool = False) -> Path:
    """Write a PNG of the canvas, ``size`` = (width, height) pixels, every visible layer in view; returns the path.

    The window is resized (``viewer.window.resize``) so that its canvas has
    that size, the view fitted to the visible layers, and the image taken with
    napari's public ``viewer.screenshot(canvas_only=True)``; the window's
    geometry and the view are put back afterwards (a window that was smaller
    than its docks allow comes back at the smallest size they allow: Qt lays
    it out for the image). No window needs to be shown
    (``napari.Viewer(show=False)`` under Xvfb works). ``scale`` multiplies the
    resolution (2: a (2w, 2h) image for print). A canvas cannot be made
    smaller than the window's docks allow (about 460 pixels high): a smaller
    image is the centre of a larger canvas, which leaves out the maps' colour
    bar (drawn at the canvas' corner). A canvas the window cannot make as large
    as asked (a hidden window, the screen's size, a Traces dock below it: often
    ~460-650 pixels high) holds the layers whole, fitted to the canvas it has,
    centred in an image padded to ``size``. ``window=True`` takes the whole window
    instead (docks included), resized to ``size`` (then put back, with
    the view). Written atomically.
    """
    from napari.utils.io import imsave_png

    _check_viewer(viewer)
    w, h = _check_size(size)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a .png file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"screenshot() writes PNG files; give a path ending in .png, got {path.name!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"screenshot() writes into an existing folder; got {str(path)!r}, whose folder "
                                f"{str(path.parent)!r} does not exist")
    scale = check_positive(scale, "scale")
    side = max(w, h) * (1.0 if window else scale)
    if side > MAX_IMAGE_SIDE:   # beyond it the OpenGL framebuffer fails and vispy aborts the process
        raise ValueError(f"a screenshot is at most {MAX_IMAGE_SIDE} pixels a side (an OpenGL limit), got "
                         f"{side:.0f} (size {w}x{h}{'' if window else f', scale {scale:g}'})")
    if not is_real(margin) or not 0 <= float(margin) < 0.5:
        raise ValueError(f"margin must be a fraction of the image in [0, 0.5), got {margin!r}")
    image = _window_image(viewer, (w, h), margin) if window else \
        _canvas_image(viewer, (round(h * scale), round(w * scale)), margin)
    return atomic_write(path, lambda tmp: imsave_png(tmp, image))  # imsave_png writes PNG whatever the name


def _lay_out(viewer) -> None:
    """Let Qt lay the window out: a window that is not shown is laid out only when it is drawn (a grab)."""
    process_events()
    viewer.screenshot(canvas_only=False, flash=False)
    process_events()


def _canvas_image(viewer, shape: tuple, margin: float) -> np.ndarray:
    """The canvas, ``shape`` = (height, width) image pixels, fitted to the visible layers.

    napari's own ``screenshot(size=...)`` resizes only the canvas widget, which
    a hidden window draws stretched: the window is resized instead, so the
    canvas is laid out at that size, then put back.
    """
    camera = viewer.scene.camera
    before = (camera.center, camera.zoom, viewer.window.geometry())
    target = np.ceil(np.asarray(shape, float) / _device_pixel_ratio()).astype(int)   # canvas (logical) pixels
    try:
        _lay_out(viewer)
        _, _, width, height = before[2]
        ch, cw = viewer.canvas.size
        viewer.window.resize(width + int(target[1] - cw), height + int(target[0] - ch))
        _lay_out(viewer)
        # a window cannot grow past the screen (xvfb-run's is 640x480), and a hidden one may stay smaller: the
        # layers are fitted to the canvas it has (fitted for the size asked, their edges fell outside it), and
        # the image is padded to the size asked (napari's scaled screenshot of a hidden window is offset)
        fit(viewer, np.minimum(target, np.asarray(viewer.canvas.size, int)), margin=margin)
        image = viewer.screenshot(canvas_only=True, flash=False)
    finally:
        camera.center, camera.zoom = before[0], before[1]
        viewer.window.set_geometry(*before[2])
        process_events()
    return _centre(image, shape)


def _centre(image: np.ndarray, shape: tuple) -> np.ndarray:
    """The central ``shape`` (h, w) of ``image`` (h', w', 4); padded with its corner colour where it is smaller."""
    out = np.empty((*shape, image.shape[2]), image.dtype)
    out[...] = image[0, 0]
    h, w = min(shape[0], image.shape[0]), min(shape[1], image.shape[1])
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    out[top:top + h, left:left + w] = image[y0:y0 + h, x0:x0 + w]
    return out


def _window_image(viewer, size: tuple, margin: float) -> np.ndarray:
    """The whole window resized to ``size`` (width, height), view fitted to its canvas; both put back after."""
    camera = viewer.scene.camera
    before = (camera.center, camera.zoom, viewer.window.geometry())
    try:
        viewer.window.resize(*size)
        _lay_out(viewer)  # the canvas (viewer.canvas.size) gets its real size before the view is fitted to it
        _lay_out(viewer)  # and what that size set going settles (the trace plot's dock grows to its rows)
        fit(viewer, viewer.canvas.size, margin=margin)
        process_events(1)
        return viewer.screenshot(canvas_only=False, flash=False)
    finally:
        camera.center, camera.zoom = before[0], before[1]
        viewer.window.set_geometry(*before[2])
        process_events()

