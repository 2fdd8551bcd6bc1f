"""Adding core results to a napari viewer: analysis layers, experiment results, the time cursor.

The layer data come from :mod:`._layers` (plain functions); this module puts
them into a viewer all-or-nothing and keeps the trace panel's time cursor on
the viewer's time slider.

Scripting a viewer::

    import napari, napari_retina as nr
    from napari_retina._napari import add_analysis
    viewer = napari.Viewer()
    attr = nr.attribute(nr.load_model(), nr.stimuli.flash_train(), invariance="none")
    add_analysis(viewer, attr, nr.reduce(attr))   # stimulus, channel maps, traces, time cursor
    napari.run()
"""

from __future__ import annotations

from typing import Optional

from ._layers import (
    META,
    analysed_geometry,
    analysis_layer_data,
    cursor_line,
    frame_at,
    layer_geometry,
    stimulus_layer_kwargs,
)


def connect_time_cursor(viewer, cursor_layer) -> None:
    """Move ``cursor_layer`` with the viewer's time slider (dims axis 0).

    The connection removes itself once the layer has left the viewer.
    """
    panel = cursor_layer.metadata[META]["panel"]

    def update(event=None) -> None:
        if cursor_layer not in viewer.layers:
            viewer.dims.events.current_step.disconnect(update)
            return
        if viewer.dims.ndim < 3:
            return
        frame = frame_at(panel, viewer.dims.point[viewer.dims.ndim - 3])
        if cursor_layer.metadata[META].get("frame") == frame:
            return
        cursor_layer.metadata[META]["frame"] = frame
        cursor_layer.data = [cursor_line(panel, frame)]
        cursor_layer.shape_type = "path"

    viewer.dims.events.current_step.connect(update)
    update()

def remove_analysis_layers(viewer, prefix: str) -> None:
    """Remove the layers an earlier :func:`add_analysis` with the same prefix added."""
    for layer in list(viewer.layers):
        meta = layer.metadata.get(META, {}) if isinstance(layer.metadata, dict) else {}
        if meta.get("role") in ("map", "traces", "trace_axes", "trace_labels", "cursor") \
                and meta.get("prefix") == prefix:
            viewer.layers.remove(layer)


def add_layer_data(viewer, data: list[tuple]) -> list:
    """Add layer-data tuples to ``viewer`` all-or-nothing (removes what it added on failure)."""
    added = []
    try:
        for d, kwargs, kind in data:
            added.append(getattr(viewer, f"add_{kind}")(d, **kwargs))
    except Exception:
        for layer in added:
            if layer in viewer.layers:
                viewer.layers.remove(layer)
        raise
    return added


def add_analysis(viewer, attribution, reduction=None, stimulus_layer=None, *, maps=None,
                 limit: Optional[float] = None, prefix: Optional[str] = None, replace: bool = True) -> list:
    """Add an analysis to a viewer in one call: channel maps, traces, time cursor.

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
        Remove the layers of an earlier analysis with the same prefix first.

    Returns
    -------
    list of the layers added (maps, traces, trace axes, trace labels, time cursor).

    Example
    -------
    >>> viewer = napari.Viewer()                                   # doctest: +SKIP
    >>> model = nr.load_model(); stim = nr.stimuli.flash_train()   # doctest: +SKIP
    >>> attr = nr.attribute(model, stim); red = nr.reduce(attr)    # doctest: +SKIP
    >>> layers = add_analysis(viewer, attr, red)                   # doctest: +SKIP
    """
    new_stim = []
    if stimulus_layer is None:
        stim_data = (attribution.stimulus, stimulus_layer_kwargs(attribution.stimulus, "stimulus"), "image")
        new_stim = add_layer_data(viewer, [stim_data])
        stimulus_layer = new_stim[0]
    if prefix is None:
        prefix = f"{stimulus_layer.name}: "
    geo = analysed_geometry(layer_geometry(stimulus_layer), attribution)
    try:
        data = analysis_layer_data(attribution, reduction, geo, maps=maps, limit=limit, prefix=prefix)
        for _, kwargs, _ in data:
            kwargs["metadata"][META]["prefix"] = prefix
        if replace:
            remove_analysis_layers(viewer, prefix)
        layers = add_layer_data(viewer, data)
    except Exception:
        for layer in new_stim:
            if layer in viewer.layers:
                viewer.layers.remove(layer)
        raise
    connect_time_cursor(viewer, layers[-1])
    viewer.layers.selection.active = stimulus_layer  # keep the stimulus selected: its controls show
    return new_stim + layers


def add_result_layers(viewer, result, prefix: Optional[str] = None) -> list:
    """Add an ``ExperimentResult``'s stimulus and analysis layers in one call.

    The stimulus layer is named after the experiment and carries its
    conditions and readout in ``metadata``; returns every layer added.
    """
    meta = {"experiment": result.name, "readout": dict(result.readout),
            "conditions": list(result.conditions)}
    stim_layer = add_layer_data(viewer, [(result.stimulus, stimulus_layer_kwargs(
        result.stimulus, name=result.name, metadata=meta), "image")])[0]
    try:
        layers = add_analysis(viewer, result.attribution, result.reduction, stim_layer, prefix=prefix)
    except Exception:
        viewer.layers.remove(stim_layer)
        raise
    return [stim_layer] + layers
