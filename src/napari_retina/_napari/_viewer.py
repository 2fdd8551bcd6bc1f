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

from typing import Optional

from ._layers import META, analysed_geometry, analysis_layer_data, layer_geometry, map_legend, stimulus_layer_kwargs
from ._plot import show_traces

VIEW_MARGIN = 0.05
"""Blank margin around the layers (fraction of the canvas) when a result is framed."""


def remove_analysis_layers(viewer, prefix: str) -> None:
    """Remove the layers an earlier :func:`add_analysis` with the same prefix added."""
    for layer in list(viewer.layers):
        meta = layer.metadata.get(META, {}) if isinstance(layer.metadata, dict) else {}
        if meta.get("role") == "map" and meta.get("prefix") == prefix:
            viewer.layers.remove(layer)


def reuse_map_layers(viewer, prefix: str, data: list[tuple]) -> Optional[list]:
    """Put new maps into the map layers an earlier :func:`add_analysis` with ``prefix`` added; None if it can't.

    Replacing an analysis of the same model (one layer per channel, as many
    as before) updates those layers' data, geometry, limits, names and
    visibility in place: napari runs a full garbage collection for every
    layer it removes (about 1 s each in a process holding torch), and new
    layers cost their build and first draw. Otherwise (or if an update
    fails) it returns None and the layers are replaced.
    """
    old = sorted((layer for layer in viewer.layers if layer.metadata.get(META, {}).get("role") == "map"
                  and layer.metadata[META].get("prefix") == prefix), key=lambda lay: lay.metadata[META]["channel"])
    if not old or len(old) != len(data) or any(kind != "image" for _, _, kind in data):
        return None
    try:
        for layer, (d, kw, _) in zip(old, data):
            layer.data = d
            layer.scale, layer.translate = kw["scale"], kw["translate"]
            layer.contrast_limits_range = kw["contrast_limits"]
            layer.contrast_limits = kw["contrast_limits"]
            layer.metadata = kw["metadata"]
            layer.name, layer.visible = kw["name"], kw["visible"]
    except Exception:  # noqa: BLE001 - fall back to replacing the layers
        return None
    return old


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
        Remove the layers of an earlier analysis with the same prefix first.

    Returns
    -------
    list of the layers added (the stimulus when it was added here, then the maps).
    The traces go to the trace plot dock (:func:`._plot.show_traces`: axes in
    s or ms and spikes per bin, a cursor linked both ways to the time slider),
    the maps get colour bars and a legend of their unit and sign
    (:func:`show_map_legend`), and the view is fitted to the stimulus and its
    maps (:func:`frame_result`).

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
        layers = reuse_map_layers(viewer, prefix, data) if replace else None
        if layers is None:
            if replace:
                remove_analysis_layers(viewer, prefix)
            layers = add_layer_data(viewer, data)
    except Exception:
        for layer in new_stim:
            if layer in viewer.layers:
                viewer.layers.remove(layer)
        raise
    show_map_legend(viewer, layers)
    legend = map_legend(layers[0].contrast_limits[1]) if layers else ""
    show_traces(viewer, attribution, reduction, stimulus_layer, name=stimulus_layer.name, legend=legend)
    frame_result(viewer, [stimulus_layer] + layers)
    viewer.layers.selection.active = stimulus_layer  # keep the stimulus selected: its controls show
    return new_stim + layers


def show_map_legend(viewer, map_layers: list) -> None:
    """One colour bar (napari's colorbar overlay) on the first visible map layer, with the maps' limits.

    Every channel shares the contrast limits ±limit (spikes per 10 ms bin), so
    one bar gives the scale; the trace plot's title says the unit and that a
    channel's colour means a positive attribution, its complement a negative
    one (:func:`._layers.map_legend`). One bar, not eight: they would cover
    the image, and each costs a fifth of a second to build.
    """
    shown = next((layer for layer in map_layers if layer.visible), None)
    for layer in map_layers:
        if layer is shown:
            layer.colorbar.size = (14, 110)
            layer.colorbar.font_size = 8
            layer.colorbar.position = "top_right"
        layer.colorbar.visible = layer is shown


def frame_result(viewer, layers: list) -> None:
    """Fit ``layers`` to the canvas (public ``reset_view``), now and once more after Qt has laid out new docks.

    A dock added in the same call (the trace plot, the first time) shrinks
    the canvas only when Qt next lays out the window, so the view is fitted
    again then.
    """
    layers = [layer for layer in layers if layer in viewer.layers]
    viewer.reset_view(layers=layers, margin=VIEW_MARGIN)
    try:
        from qtpy.QtCore import QTimer
    except ImportError:  # pragma: no cover - napari always brings Qt
        return

    def again() -> None:
        live = [layer for layer in layers if layer in viewer.layers]
        if live:
            viewer.reset_view(layers=live, margin=VIEW_MARGIN)

    QTimer.singleShot(0, again)


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
