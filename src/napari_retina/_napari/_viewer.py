"""Adding core results to a napari viewer: analysis layers, experiment results, the trace plot.

The layer data come from :mod:`._layers` (plain functions); this module puts
them into a viewer all-or-nothing, plots the traces in the trace plot dock
(:mod:`._plot`, its cursor linked to the viewer's time slider), adds a colour
legend to the maps and frames the result in the canvas.

The implementation behind the public :func:`napari_retina.viewer.show` (``nr.show``), which
scripts and the widgets call; scripts should not need this module::

    import napari, napari_retina as nr
    viewer = napari.Viewer()
    attr = nr.attribute(nr.load_model(), nr.stimuli.flash_train(), invariance="none")
    nr.show(attr, viewer, reduction=nr.reduce(attr))   # stimulus, channel maps; traces in a dock
    napari.run()
"""

from __future__ import annotations

import time
import weakref
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .._progress import Cancelled
from ._layers import (META, CellTraces, analysed_geometry, analysis_layer_data, colour_bar_index, kept_over,
                      layer_frames_per_model_frame, layer_geometry, map_layers, map_legend, on_window, plugin_metadata,
                      show_alone, show_colour_bar, stimulus_layer_kwargs)
from ._framing import frame_result, keeping_frame
from ._plot import TRACES_KEY, drain, renamed_title, stored_plot, stored_traces, trace_plot, traces_steps

STEP_DELAY_MS = 1
"""Timer delay between two steps of a :class:`StagedAdd`. Not 0: a zero-delay single shot is a posted
event, handled before Qt's low-priority repaint requests, so steps would run back to back unpainted;
a timer fires after the posted events (repaints included) of its event-loop pass."""
UNITS_WARNING = "Inconsistent units across layers"
"""The start of napari's warning (``napari._vispy.canvas``) that a viewer whose layers disagree on
units (one without physical units: napari's default, "pixel") draws without them."""


_FOLLOWED: "weakref.WeakSet" = weakref.WeakSet()
_ABSENT = object()


class UnitsWarningOnce:
    """Let napari's units warning (:data:`UNITS_WARNING`) out once for one result: ``with once: <add layers>``.

    napari shows it (``show_warning``: a notification, to its toast and its
    console) from the canvas draw that follows each layer added while the
    viewer's layers disagree on units, synchronously within the addition:
    one analysis said it once per map layer. Its display listeners come
    before any plugin's on ``notification_ready``, so the repeats are stopped
    where napari hands them out: within ``with``, ``notification_manager.dispatch``
    is wrapped so that this message goes through the first time only (every
    other notification unchanged); on leaving, the manager's own ``dispatch``
    is back. Entering the same object around each step of a staged run keeps
    the count over the run; ``with`` blocks nest. Outside, nothing is filtered.
    """

    def __init__(self) -> None:
        self.seen = False
        self._saved: list = []

    def __enter__(self) -> "UnitsWarningOnce":
        from napari.utils.notifications import notification_manager as manager

        previous = manager.__dict__.get("dispatch")   # None: the class's own method
        self._saved.append(previous)
        inner = previous if previous is not None else manager.dispatch

        def dispatch(notification) -> None:
            if str(getattr(notification, "message", "")).startswith(UNITS_WARNING):
                if self.seen:
                    return
                self.seen = True
            inner(notification)

        manager.dispatch = dispatch
        return self

    def __exit__(self, *exc) -> None:
        from napari.utils.notifications import notification_manager as manager

        previous = self._saved.pop()
        if previous is None:
            manager.__dict__.pop("dispatch", None)
        else:
            manager.dispatch = previous


def follow_renames(viewer, stimulus_layer) -> None:
    """Rename ``stimulus_layer``'s result layers along with it (once per layer).

    A stimulus layer's maps are found by their name prefix ``"<name>: "``
    and its crop window and outline by ``metadata["for"] == name``: renamed
    without them, its next analysis would add a second set of maps drawn
    additively over the first. On a rename, the layers of the old name take
    the new one (and their metadata follows), and so do the trace plot
    showing its result and the traces the layer keeps (:func:`rename_result`).
    """
    if stimulus_layer in _FOLLOWED:
        return
    _FOLLOWED.add(stimulus_layer)
    state = {"name": stimulus_layer.name}
    viewer_ref = weakref.ref(viewer)

    def renamed(event=None) -> None:
        before, after = state["name"], stimulus_layer.name
        state["name"] = after
        viewer = viewer_ref()
        if viewer is None or before == after or stimulus_layer not in viewer.layers:
            return
        rename_result(viewer, before, after)
        stored = plugin_metadata(stimulus_layer).get(TRACES_KEY)
        if isinstance(stored, dict) and "title" in stored:
            stored["title"] = renamed_title(str(stored["title"]), before, after)

    stimulus_layer.events.name.connect(renamed)


def rename_result(viewer, before: str, after: str) -> None:
    """The result of the stimulus layer renamed ``before`` → ``after`` follows: its maps, crop window and outline
    (:func:`_move_result`) and the trace plot showing it (:meth:`._plot.TracePlot.follow_rename`).

    Layers that already bear ``after`` belong to no live stimulus (napari's
    layer names are unique: theirs was removed, its maps kept): they are set
    apart under ``"<after> (removed)"`` first, so that the two results stay
    two, and the next analysis replaces this one's maps only.
    """
    strays = _result_layers(viewer.layers, after)
    if strays:
        _move_result(strays, after, _free_name(viewer, f"{after} (removed)"))
    _move_result(_result_layers(viewer.layers, before), before, after)
    plot = trace_plot(viewer, create=False)
    if plot is not None:
        plot.follow_rename(before, after)


def rescale_stimulus(viewer, layer, scale: Sequence[float]) -> bool:
    """Give stimulus ``layer`` the ``scale`` (its last three axes, in its units) with its result: its maps, crop
    window and outline, and the traces plotted of it, stay over the frames and pixels they lay over.

    Returns whether it had maps that moved with it (they still show the result
    computed at the earlier scale).
    """
    before = layer_geometry(layer)
    keeping_frame(viewer, layer, lambda: setattr(layer, "scale", (*tuple(layer.scale)[:-3], *scale)))
    after = layer_geometry(layer)
    moved = False
    for other in _result_layers(viewer.layers, layer.name):
        if plugin_metadata(other).get("role") == "map":
            placed = kept_over(layer_geometry(other), before, after)
            other.scale, other.translate = placed["scale"], placed["translate"]
            moved = True
        elif plugin_metadata(other).get("role") in ("crop_window", "analysed_window"):   # a rectangle in the
            other.scale = tuple(layer.scale)[-2:]                                         # layer's pixels
    plot = trace_plot(viewer, create=False)
    stored = stored_plot(layer)
    if plot is not None and plot.source_layer is layer and stored is not None:
        plot.follow_time(stored[1])
    return moved


def _result_layers(layers, name: str) -> list:
    """The layers of the result of stimulus ``name``: maps with prefix ``"<name>: "``, layers ``"for"`` it."""
    return [layer for layer in layers
            if (plugin_metadata(layer).get("role") == "map" and plugin_metadata(layer).get("prefix") == f"{name}: ")
            or plugin_metadata(layer).get("for") == name]


def _move_result(layers: list, before: str, after: str) -> None:
    """``layers`` (:func:`_result_layers` of ``before``) take the name ``after``: prefix, ``"for"``, layer name."""
    old = f"{before}: "
    for layer in layers:
        meta = plugin_metadata(layer)
        if meta.get("role") == "map" and meta.get("prefix") == old:
            meta["prefix"] = f"{after}: "
        if meta.get("for") == before:
            meta["for"] = after
            if meta.get("role") == "title":   # a result's title on the canvas (viewer.show side by side)
                layer.text.string = [after]
        if layer.name.startswith(old):
            layer.name = f"{after}: {layer.name[len(old):]}"


def _free_name(viewer, name: str) -> str:
    """``name``, or ``"<name> 2"``, ``"<name> 3"``… the first that no layer nor any result's layers bear."""
    candidate, k = name, 1
    while candidate in viewer.layers or _result_layers(viewer.layers, candidate):
        k += 1
        candidate = f"{name} {k}"
    return candidate


def reuse_map_layers(viewer, prefix: str, data: list[tuple], saved: Optional[list] = None) -> Optional[list]:
    """Put new maps into the map layers an earlier :func:`add_analysis` with ``prefix`` added; None if it can't.

    Replacing an analysis of the same model (one layer per channel, as many
    as before) updates those layers' data, geometry, limits, names and
    visibility in place: napari runs a full garbage collection for every
    layer it removes (about 1 s each in a process holding torch), and new
    layers cost their build and first draw. Otherwise (or if an update
    fails: the layers are then given back what they had) it returns None and
    the layers are replaced. ``saved``: gets each updated layer's
    :class:`MapLayerState` from before the update, so that a run that does
    not complete can give the earlier result back (:meth:`MapLayerState.restore`).
    """
    old = map_layers(viewer.layers, prefix)
    if not _reusable(old, data):
        return None
    states = [MapLayerState(layer) for layer in old]
    try:
        for layer, item in zip(old, data):
            _update_map_layer(layer, item)
    except Exception:  # noqa: BLE001 - fall back to replacing the layers
        _restore_all(states)
        return None
    if saved is not None:
        saved += states
    return old


PLACEMENT = ("rotate", "shear", "affine", "units")
"""A map layer's properties that place it besides scale and translate: the stimulus layer's (_layers.layer_geometry)."""


def _placement(values: dict) -> dict:
    """A layer's (or a layer-data tuple's keywords') rotation, shear, affine and units in one comparable form:
    3×3 and 4×4 matrices, pint units (napari stores shear as coefficients and units as pint units)."""
    import pint
    from napari.utils.transforms import Affine

    registry = pint.get_application_registry()
    affine = values["affine"]
    return {"rotate": np.asarray(values["rotate"], float),
            "shear": Affine(shear=values["shear"], ndim=3).linear_matrix,
            "affine": np.asarray(getattr(affine, "affine_matrix", affine), float)[-4:, -4:],
            "units": tuple(registry.Unit(str(u)) for u in values["units"])}


def _place(layer, placement: dict) -> None:
    """Give ``layer`` the rotation, shear, affine and units of ``placement`` (:func:`_placement`) that it lacks:
    a re-run over a stimulus layer rotated or put in other units since moves its maps with it. Equal ones are
    not set again (each re-slices and redraws)."""
    now = _placement({key: getattr(layer, key) for key in placement})
    for key, value in placement.items():
        same = now[key] == value if key == "units" else np.allclose(now[key], value)
        if not same:
            setattr(layer, key, value)


class MapLayerState:
    """What replacing a result changes in one of its map layers, taken before the change, to give back.

    An in-place update (:func:`_update_map_layer`: data, scale, translate, :data:`PLACEMENT`,
    contrast limits and their range, metadata, name, visibility) and the
    colour bar (:func:`show_map_legend`: its visibility, size, font size and
    position). Taking it costs a few attribute reads (the data are kept by
    reference: an update replaces a layer's data, it never writes into them).
    """

    BAR = ("visible", "size", "font_size", "position")

    def __init__(self, layer) -> None:
        self.layer = layer
        self.data = layer.data
        self.scale, self.translate = np.array(layer.scale), np.array(layer.translate)
        self.placement = _placement({key: getattr(layer, key) for key in PLACEMENT})
        self.contrast_limits_range = tuple(layer.contrast_limits_range)
        self.contrast_limits = tuple(layer.contrast_limits)
        self.metadata = dict(layer.metadata)  # napari's setter empties and refills the layer's own dict
        self.name, self.visible = layer.name, layer.visible
        self.bar = {key: getattr(layer.colorbar, key) for key in self.BAR}

    def restore(self) -> None:
        """Give the layer back what it had; unchanged properties are not set again (each emits events)."""
        layer = self.layer
        if layer.data is not self.data:
            layer.data = self.data
        _place(layer, self.placement)
        if not np.array_equal(layer.scale, self.scale):
            layer.scale = self.scale
        if not np.array_equal(layer.translate, self.translate):
            layer.translate = self.translate
        if tuple(layer.contrast_limits_range) != self.contrast_limits_range:
            layer.contrast_limits_range = self.contrast_limits_range
        if tuple(layer.contrast_limits) != self.contrast_limits:
            layer.contrast_limits = self.contrast_limits
        if layer.metadata != self.metadata:
            layer.metadata = self.metadata
        if layer.name != self.name:
            layer.name = self.name
        if layer.visible != self.visible:
            layer.visible = self.visible
        for key, value in self.bar.items():
            if getattr(layer.colorbar, key) != value:
                setattr(layer.colorbar, key, value)


def _restore_all(states: list) -> None:
    """:meth:`MapLayerState.restore` for each of ``states``; one that fails does not stop the others."""
    for state in states:
        try:
            state.restore()
        except Exception:  # noqa: BLE001 - give back as much as can be given back
            pass


def _reusable(old: list, data: list[tuple]) -> bool:
    """Whether map layers ``old`` can take ``data`` in place (as many, all images)."""
    return bool(old) and len(old) == len(data) and all(kind == "image" for _, _, kind in data)


def _update_map_layer(layer, item: tuple) -> None:
    """One map layer takes a layer-data tuple's data and properties; unchanged ones are not set again.

    Each property napari is given emits events (a new scale or visibility
    re-slices and redraws), so equal values are skipped.
    """
    d, kw, _ = item
    layer.data = d
    if all(key in kw for key in PLACEMENT):
        _place(layer, _placement(kw))
    if not np.array_equal(layer.scale, kw["scale"]):
        layer.scale = kw["scale"]
    if not np.array_equal(layer.translate, kw["translate"]):
        layer.translate = kw["translate"]
    layer.contrast_limits_range = kw["contrast_limits"]
    layer.contrast_limits = kw["contrast_limits"]
    layer.metadata = kw["metadata"]
    if layer.name != kw["name"]:
        layer.name = kw["name"]
    if layer.visible != kw["visible"]:
        layer.visible = kw["visible"]


def add_layer_data(viewer, data: list[tuple]) -> list:
    """Add layer-data tuples to ``viewer`` all-or-nothing (removes what it added on failure)."""
    added = []
    try:
        for d, kwargs, kind in data:
            added.append(getattr(viewer, f"add_{kind}")(d, **kwargs))
    except Exception:
        remove_layers(viewer, added)
        raise
    return added


def add_analysis(viewer, attribution, reduction=None, stimulus_layer=None, *, maps=None,
                 limit: Optional[float] = None, prefix: Optional[str] = None, replace: bool = True,
                 staged: bool = False, cell: Optional[CellTraces] = None):
    """Add an analysis to a viewer in one call: channel maps, the trace plot, the colour bar.

    Parameters
    ----------
    viewer : napari.Viewer
    attribution : Attribution
        From ``nr.attribute``.
    reduction : Reduction, optional
        From ``nr.reduce(attribution)``: names the maps, shows only the kept
        channels, adds the reduced circuit's trace.
    stimulus_layer : napari Image layer, optional
        The layer the analysis belongs to: the new layers take its scale and
        translate, shifted to the analysed window (``attribution.crop_origin``),
        so they line up, and its name as prefix. Without one, a stimulus
        layer is added from ``attribution.stimulus``.
    maps : array-like (T, C, h, w), optional
        Replaces ``attribution.maps`` (e.g. the lazy dask array of a long
        movie, ``run_analysis(...).maps``, see :func:`napari_retina.analysis.lazy_maps`).
    limit : float, optional
        Shared contrast limit of the maps (default :func:`napari_retina.metrics.map_limit`).
    prefix : str, optional
        Layer-name prefix (default ``"<stimulus layer name>: "``).
    replace : bool
        Replace the layers of an earlier analysis with the same prefix (updated in place when they fit, else
        removed first); a run that fails or is cancelled gives them back as they were.
    staged : bool
        False (default): everything is added before the call returns. True:
        return a :class:`StagedAdd` at once and add the same things over
        the next event-loop passes, a few tens of ms each, so the window
        stays responsive (the Analyze widget does this); its ``layers``
        are the list below once ``done``.
    cell : CellTraces, optional
        An experiment's whole-cell traces for the trace plot's first row: the model's response at every
        frame, the ground truth's (:class:`._layers.CellTraces`).

    Returns
    -------
    list of the layers added (the stimulus when it was added here, then the maps).
    The traces go to the trace plot dock (:func:`._plot.show_traces`: axes in
    s or ms and spikes per bin, a cursor linked both ways to the time slider),
    the maps get colour bars and a legend of their unit and sign
    (:func:`show_map_legend`), and the view is fitted to the stimulus and its
    maps (:func:`frame_result`). napari's warning that the viewer's layers
    disagree on units comes at most once per call (:class:`UnitsWarningOnce`).

    Example
    -------
    >>> viewer = napari.Viewer()                                   # doctest: +SKIP
    >>> model = nr.load_model(); stim = nr.stimuli.flash_train()   # doctest: +SKIP
    >>> attr = nr.attribute(model, stim); red = nr.reduce(attr)    # doctest: +SKIP
    >>> layers = add_analysis(viewer, attr, red)                   # doctest: +SKIP
    """
    undo = _Undo(viewer, stimulus_layer)  # now: a caller may keep the traces in the layer before the steps run
    steps = _analysis_steps(viewer, attribution, reduction, stimulus_layer, maps, limit, prefix, replace, cell, undo)
    if stimulus_layer is not None:
        steps = _while_present(viewer, stimulus_layer, steps)
    once = UnitsWarningOnce()
    if staged:
        return StagedAdd(steps, once)
    with once:
        return drain(steps)


class StimulusLayerRemoved(LookupError):
    """The stimulus layer a staged :func:`add_analysis` was drawing over left the viewer before the result was in."""


def _while_present(viewer, layer, steps: Iterator[None]) -> Iterator[None]:
    """``steps``, each after the first run only while ``layer`` is still in ``viewer``; returns their value.

    When ``layer`` is gone by the time the next step is due (the user
    deleted it between two event-loop passes of a :class:`StagedAdd`),
    :class:`StimulusLayerRemoved` is thrown into ``steps`` instead, so their
    clean-up runs, and raised from here.
    """
    try:
        next(steps)
        while True:
            try:
                yield
            except Exception as exc:  # StagedAdd.cancel: ``steps`` clean up and raise it again
                steps.throw(exc)
                raise
            if layer in viewer.layers:
                next(steps)
            else:
                steps.throw(StimulusLayerRemoved(f"the stimulus layer '{layer.name}' was deleted while its "
                                                 "result was being added"))
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def _analysis_steps(viewer, attribution, reduction, stimulus_layer, maps, limit, prefix, replace,
                    cell: Optional[CellTraces] = None, undo: Optional["_Undo"] = None) -> Iterator[None]:
    """:func:`add_analysis` as a generator yielding between pieces of GUI work; returns the layers added.

    One step per map layer added (or updated in place), one for the colour
    bar, then the trace plot's steps (:meth:`._plot.TracePlot.traces_steps`);
    the last one frames the result. All-or-nothing: if a step fails, is
    cancelled (:meth:`StagedAdd.cancel` throws
    :class:`~napari_retina._progress.Cancelled` in) or finds the stimulus layer
    gone (:class:`StimulusLayerRemoved`), at any step, the layers this run
    added are removed, and the earlier result it was replacing is given back
    as it was (``undo``, an :class:`_Undo` made when :func:`add_analysis` was
    called): its map layers updated in place get their data and properties
    back, those it removed are put back where they were, the trace plot
    shows what it showed (traces, zoom, a map shown alone), the stimulus
    layer keeps the traces it kept and the layer selection is as it was. A
    successful replace is as fast as before: the in-place update, or one
    batched removal, and no copy of any data. Closed before the maps are all
    in (:meth:`StagedAdd.stop`, the viewer closing), the layers it added are
    removed. The stimulus layer renamed at any step (without ``prefix``), the
    whole result takes the new name: the maps still to come are added under it,
    those in follow the rename (:func:`follow_renames`), and so does an earlier
    result given back. Done, the time slider is moved into the result if it
    was outside it (:func:`slider_into`).
    """
    new_stim, added, layers, named = [], [], None, None
    undo = undo if undo is not None else _Undo(viewer, stimulus_layer)
    try:
        if stimulus_layer is None:   # a layer of the analysed window: the maps lie on it as they are
            attribution = on_window(attribution)
            stim_data = (attribution.stimulus, stimulus_layer_kwargs(attribution.stimulus, "stimulus"), "image")
            new_stim = add_layer_data(viewer, [stim_data])
            stimulus_layer = new_stim[0]
            yield
        if prefix is None:
            named = stimulus_layer.name
            prefix = f"{named}: "
            follow_renames(viewer, stimulus_layer)
        geo = analysed_geometry(layer_geometry(stimulus_layer), attribution)
        data = analysis_layer_data(attribution, reduction, geo, maps=maps, limit=limit, prefix=prefix)
        for _, kwargs, _ in data:
            kwargs["metadata"][META]["prefix"] = prefix
        layers = yield from _map_steps(viewer, prefix, data, replace, added, undo,
                                       stimulus_layer if named is not None else None)
        bar = show_map_legend(layers, reduction.kept[0] if reduction is not None and reduction.kept else None)
        yield
        legend = map_legend(layers[0].contrast_limits[1], bar.metadata[META]["label"] if bar is not None else None) \
            if layers else ""
        # kept with the stimulus layer, for nr.viewer.traces and for selecting it again: the series and title plotted
        stimulus_layer.metadata.setdefault(META, {})[TRACES_KEY] = stored_traces(
            attribution, reduction, stimulus_layer.name, cell, legend=legend,
            layer_frames_per_value=layer_frames_per_model_frame(attribution))
        undo.traces = _TracesState(viewer)  # the plot is left as it is until here
        yield from traces_steps(viewer, attribution, reduction, stimulus_layer, name=stimulus_layer.name,
                                legend=legend, cell=cell)
        frame_result(viewer, [stimulus_layer] + layers)
        slider_into(viewer, stimulus_layer)
        viewer.layers.selection.active = stimulus_layer  # keep the stimulus selected: its controls show
    except GeneratorExit:  # StagedAdd.stop: the viewer is closing
        if layers is None:
            remove_layers(viewer, added + new_stim)
        raise
    except Exception:
        remove_layers(viewer, added + new_stim)
        undo.run()
        if named is not None and stimulus_layer.name != named and stimulus_layer in viewer.layers:
            rename_result(viewer, named, stimulus_layer.name)   # given back under the name it was given since
        raise
    return new_stim + layers


def slider_into(viewer, layer) -> None:
    """Move the time slider to the nearest frame of ``layer`` (T, H, W) if it is outside its frames, else leave it.

    A result shorter than the one before, analysed with the slider past its
    end, showed nothing but its colour bar, and the trace plot's cursor was
    off its axis; inside, a scientist scrubbing and analysing again keeps
    the frame.
    """
    axis = viewer.dims.ndim - 3
    if axis < 0 or layer.ndim != 3:
        return
    geo = layer_geometry(layer)
    start, step = float(geo["translate"][0]), float(geo["scale"][0])
    lo, hi = sorted((start, start + (geo["shape"][0] - 1) * step))
    now = float(viewer.dims.point[axis])
    if not lo - abs(step) / 2 <= now <= hi + abs(step) / 2:
        viewer.dims.set_point(axis, float(np.clip(now, lo, hi)))


class _Undo:
    """What a staged :func:`add_analysis` changed of the viewer's earlier state, and how to give it back.

    Filled as the run goes: ``updated`` (the :class:`MapLayerState` of each
    earlier map layer updated in place), ``removed`` ((index, layer) of each
    earlier map layer removed to make room), ``traces`` (a
    :class:`_TracesState`, taken once the run is about to draw its traces);
    the layer selection, and the traces the stimulus layer keeps in its
    metadata (:data:`._plot.TRACES_KEY`: the run stores the new ones when it
    draws them), are taken at once. :meth:`run` gives it
    all back; the layers the run added must be gone first.
    """

    def __init__(self, viewer, stimulus_layer=None) -> None:
        self.viewer = viewer
        self.updated: list = []
        self.removed: list = []
        self.traces: Optional[_TracesState] = None
        self.selected = list(viewer.layers.selection)
        self.active = viewer.layers.selection.active
        self.stimulus_layer = stimulus_layer
        self.stored = plugin_metadata(stimulus_layer).get(TRACES_KEY, _ABSENT) if stimulus_layer is not None \
            else _ABSENT

    def run(self) -> None:
        """Give back the earlier map layers, then the trace plot, then the selection (each as far as it can)."""
        viewer = self.viewer
        _restore_all(self.updated)
        for index, layer in sorted(self.removed, key=lambda item: item[0]):
            if layer not in viewer.layers:
                try:
                    viewer.layers.insert(min(index, len(viewer.layers)), layer)
                except Exception:  # noqa: BLE001 - give back as much as can be given back
                    pass
        if self.traces is not None:
            self.traces.restore(viewer)
        meta = self.stimulus_layer.metadata.get(META) if self.stimulus_layer is not None else None
        if isinstance(meta, dict):
            if self.stored is _ABSENT:
                meta.pop(TRACES_KEY, None)
            else:
                meta[TRACES_KEY] = self.stored
        selection = viewer.layers.selection
        selected = [layer for layer in self.selected if layer in viewer.layers]
        if set(selection) != set(selected) or selection.active is not self.active:
            selection.clear()
            selection.update(selected)
            if self.active in selected and len(selected) == 1:
                selection.active = self.active


class _TracesState:
    """What a viewer's trace plot shows (traces, title, zoom, a map shown alone), to give back if a run that
    started to draw over it does not complete."""

    def __init__(self, viewer) -> None:
        plot = trace_plot(viewer, create=False)
        self.shown = None
        self.ranges: list = []
        self.solo = None
        self.layer = plot.source_layer if plot is not None else None
        if plot is not None and plot.source and len(plot.series):
            self.shown = (plot.series, plot.times_ms, plot.title.text(), plot.source, plot.maps_prefix)
            self.ranges = [(*row.view.camera.rect.pos, *row.view.camera.rect.size) for row in plot.rows]
            self.solo = (plot._solo, plot._unsolo_title) if plot._solo is not None else None

    def restore(self, viewer) -> None:
        """Plot what was plotted (an empty plot stays empty); the zoom and a map shown alone as they were. If the
        stimulus layer of what was plotted has left the viewer since, the most recent result left instead
        (:meth:`._plot.TracePlot.show_latest`)."""
        plot = trace_plot(viewer, create=False)
        if plot is None:
            return
        plot._solo = None  # the unfinished run's: its maps are gone or given back already
        if self.shown is None:
            plot.clear()
            return
        if self.layer is not None and self.layer not in viewer.layers:
            plot.show_latest()
            return
        plot.set_traces(*self.shown)
        if len(self.ranges) == len(plot.rows):
            for row, rect in zip(plot.rows, self.ranges):
                row.view.camera.rect = rect
        if self.solo is not None:
            (channel, before), plot._unsolo_title = self.solo
            layers = [ref() for ref, _, _ in before]
            layers = [layer for layer in layers if layer is not None and layer in viewer.layers]
            # the map shown alone again, with the result's bar given back (not on a hidden map)
            show_alone(layers, channel, any(layer.colorbar.visible for layer in layers))
            plot._solo = self.solo[0]
            for row in plot.rows:
                row.dim(row.channel is not None and row.channel != channel)
            plot.canvas.update()


def _map_steps(viewer, prefix: str, data: list[tuple], replace: bool, added: list,
               undo: _Undo, named=None) -> Iterator[None]:
    """Put the maps in: the earlier analysis' layers updated in place when they fit (one step), else new layers.

    An in-place update costs a few ms a layer, so all of them take one step
    (a pass per layer would add a repaint each); a new layer costs tens of
    ms to build and draw, so each is a step of its own. New layers are
    appended to ``added`` as they come; the earlier layers' states before an
    in-place update go to ``undo.updated``, the earlier layers removed (with
    their places) to ``undo.removed`` (for the caller's clean-up); returns
    the map layers. ``named``: the stimulus layer whose name the maps take
    (each new one is named after its name at the step that adds it).
    """
    reused = reuse_map_layers(viewer, prefix, data, saved=undo.updated) if replace else None
    if reused is not None:
        yield
        return reused
    if replace:
        earlier = map_layers(viewer.layers, prefix)
        undo.removed += [(viewer.layers.index(layer), layer) for layer in earlier]
        remove_layers(viewer, earlier)
    for item in data:
        if named is not None:
            _reprefix(item, f"{named.name}: ")
        added += add_layer_data(viewer, [item])
        yield
    return list(added)


def _reprefix(item: tuple, prefix: str) -> None:
    """A map's layer-data tuple takes ``prefix`` (its name and metadata) in place of the one it was made with."""
    _, kwargs, _ = item
    meta = kwargs["metadata"][META]
    old = meta["prefix"]
    if old != prefix:
        meta["prefix"] = prefix
        if kwargs["name"].startswith(old):
            kwargs["name"] = prefix + kwargs["name"][len(old):]


def remove_layers(viewer, layers: list) -> None:
    """Remove those of ``layers`` still in the viewer, in one batch of napari's layer list.

    napari's canvas runs a full garbage collection after each removal
    (~0.25 s in a fresh process holding torch and napari, BENCHMARKS.md;
    seconds in the test suite's); in a batch (``LayerList.batched_update``)
    it runs one for all of them.

    The layers are selected first, as napari's trash button selects what it
    removes: with Mesa's llvmpipe (software OpenGL, Xvfb) removing two layers
    that are not selected killed the process at the second repaint after (in
    ``glDrawArrays``; README, "Known issues"). The selection is given back
    to what of it remains.

    The selection's change events are held while the layers go: each
    removal announces one, and napari's layer controls rebuild their panel
    for all the selected layers left on each, which made removing n layers
    cost n² panels (7.8 s for 36 layers, 1.27 s for 8; held: 1.27 s and
    0.44 s). One event after the batch tells every listener.
    """
    live = [layer for layer in layers if layer in viewer.layers]
    if not live:
        return
    selection = viewer.layers.selection
    kept = [layer for layer in selection if layer not in live]
    active = selection.active if selection.active not in live else None
    selection.clear()
    selection.update(live)
    with selection.events.changed.blocker(), viewer.layers.batched_update():
        for layer in live:
            viewer.layers.remove(layer)
    selection.events.changed(added=set(), removed=set(live))
    selection.clear()
    selection.update(layer for layer in kept if layer in viewer.layers)
    if active is not None and active in viewer.layers:
        selection.active = active


class StagedAdd:
    """An :func:`add_analysis` spread over event-loop passes: one step per pass (a single-shot ``QTimer``).

    Between steps Qt paints and handles input, so the window never freezes
    for the whole build. Set ``on_done(layers)`` and ``on_error(exc)`` right
    after creating it (the first step runs on the next pass); exactly one
    of them is called, unless :meth:`stop` comes first. A failing step
    removes the layers this run added and gives back the earlier result it
    was replacing, then calls ``on_error``. Each step
    and the callback run within ``quiet`` (a :class:`UnitsWarningOnce`, so
    napari's units warning comes once for the run, layers the callback adds
    included).

    Attributes
    ----------
    layers : list or None
        The layers added (as :func:`add_analysis` returns them, after ``before``) once done.
    done : bool
    passes : int
        Steps run so far (one per event-loop pass).
    before : list
        Layers added before the steps (an experiment's stimulus layer, :func:`napari_retina.viewer.show`),
        put first in ``layers``.
    undo : callable or None
        Called when the steps fail or are cancelled, before ``on_error``: takes back what was done before them.
    """

    def __init__(self, steps: Iterator[None], quiet: Optional[UnitsWarningOnce] = None) -> None:
        from qtpy.QtCore import QTimer

        self._steps = steps
        self._quiet = quiet if quiet is not None else UnitsWarningOnce()
        self._timer = QTimer
        self.layers: Optional[list] = None
        self.done = False
        self.passes = 0
        self.on_done: Callable[[list], None] = lambda layers: None
        self.on_error: Callable[[BaseException], None] = lambda exc: None
        self.before: list = []
        self.undo: Optional[Callable[[], None]] = None
        QTimer.singleShot(STEP_DELAY_MS, self._step)

    def _failed(self, exc: BaseException) -> None:
        if self.undo is not None:
            self.undo()
        self.on_error(exc)

    def _step(self) -> None:
        with self._quiet:
            self._run_step()

    def _run_step(self) -> None:
        if self.done:
            return
        self.passes += 1
        try:
            next(self._steps)
        except StopIteration as stop:
            self.done, self.layers = True, list(self.before) + list(stop.value)
            self.on_done(self.layers)
            return
        except Exception as exc:  # noqa: BLE001 - handed to on_error, the layers already removed
            self.done = True
            self._failed(exc)
            return
        self._timer.singleShot(STEP_DELAY_MS, self._step)

    def cancel(self) -> None:
        """Cancel now (the user pressed Cancel): the layers added so far are removed, the earlier result this one
        was replacing is given back as it was (its map layers and the trace plot, see :func:`_analysis_steps`),
        and ``on_error`` gets the :class:`~napari_retina._progress.Cancelled`. Nothing once done."""
        if self.done:
            return
        self.done = True
        with self._quiet:
            try:
                self._steps.throw(Cancelled("the analysis was cancelled while its layers were being added"))
            except Exception as exc:  # noqa: BLE001 - the Cancelled, once the steps have cleaned up
                self._failed(exc)
            else:  # pragma: no cover - the steps always raise it again
                self._steps.close()

    def stop(self) -> None:
        """Run no more steps (the viewer is closing); layers of an unfinished map step are removed."""
        if not self.done:
            self.done = True
            with self._quiet:
                self._steps.close()

    def wait(self, timeout_ms: int = 60000) -> None:
        """Process events until done; for scripts and tests."""
        process_events_until(lambda: self.done, timeout_ms, "adding the analysis")


def process_events(times: int = 3) -> None:
    """Let Qt's event loop run ``times`` passes (pending layout, paints); for scripts and tests."""
    from qtpy.QtWidgets import QApplication

    for _ in range(times):
        QApplication.processEvents()


def process_events_until(done: Callable[[], bool], timeout_ms: int, what: str) -> None:
    """Run Qt's event loop until ``done()`` is true, or one TimeoutError naming ``what`` after ``timeout_ms``.

    Sleeps 2 ms between passes, so that a worker thread waited for gets the
    interpreter; for scripts and tests (the GUI itself never blocks).
    """
    from qtpy.QtCore import QCoreApplication, QElapsedTimer

    timer = QElapsedTimer()
    timer.start()
    while not done() and timer.elapsed() < timeout_ms:
        QCoreApplication.processEvents()
        time.sleep(0.002)
    if not done():
        raise TimeoutError(f"{what} did not finish within {timeout_ms} ms")


def show_map_legend(map_layers: list, first_channel: Optional[int] = None):
    """One colour bar (napari's colorbar overlay) on one visible map layer, with the maps' limits; that layer.

    The bar goes on channel ``first_channel`` (the reduction's most important
    kept channel) when its layer is visible, else on the first visible map.
    Every channel shares the contrast limits ±limit (spikes per 10 ms bin), so
    one bar gives the scale, but it shows that channel's colours, which the
    trace plot's title names, with the unit and the rule that a channel's
    colour means a positive attribution, its complement a negative one
    (:func:`._layers.map_legend`): read against another channel's bar, the
    main channel's colour could read as the wrong sign. One bar, not eight:
    they would cover the image, and each costs a fifth of a second to build.
    """
    index = colour_bar_index([layer.visible for layer in map_layers],
                             [plugin_metadata(layer).get("channel") for layer in map_layers], first_channel)
    shown = None if index is None else map_layers[index]
    for layer in map_layers:
        show_colour_bar(layer, layer is shown)
    return shown


