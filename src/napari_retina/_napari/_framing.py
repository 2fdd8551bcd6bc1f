"""Framing a result in napari's canvas: the view fitted to its layers, with room left for the colour bar.

napari frames the first layer added to an empty viewer, and draws a map's
colour bar at the canvas' top right, over whatever reaches there. Every way a
result reaches a viewer (the docks, ``nr.show``, File ▸ Open of a saved
analysis or results store) frames it with :func:`frame_result`, which keeps
:data:`BAR_RESERVE_PX` free at the right while a colour bar shows.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable

import numpy as np

VIEW_MARGIN = 0.05
"""Blank margin around the layers (fraction of the canvas) when a result is framed."""
BAR_RESERVE_PX = 90
"""Canvas pixels kept free at the right of a fitted result while a map's colour bar shows (napari draws it at
the top right: 14 px of bar, its tick labels and margins, ~80 px), so that it does not cover the stimulus; at
most 40% of a narrow canvas' width."""


def frame_result(viewer, layers: list) -> None:
    """Fit ``layers`` to the canvas (:func:`fit_view`), now and once more after Qt has laid out new docks.

    A dock added in the same call (the trace plot, the first time) shrinks
    the canvas only when Qt next lays out the window, so the view is fitted
    again then. It is the last, cosmetic step of showing a result that is
    already complete: if fitting fails, the view stays as it was and a
    warning says so (napari shows it as a notification); it never raises,
    so a run is never reported failed with its layers and traces in.
    """
    layers = [layer for layer in layers if layer in viewer.layers]
    _fit_or_warn(viewer, layers)
    try:
        from qtpy.QtCore import QTimer
    except ImportError:  # pragma: no cover - napari always brings Qt
        return

    # Qt holds ``again`` until the timer fires, which a script that never runs the event loop never
    # lets happen: it holds the viewer and layers weakly, or a closed viewer would stay alive with them
    viewer_ref, layer_refs = weakref.ref(viewer), [weakref.ref(layer) for layer in layers]

    def again() -> None:
        viewer = viewer_ref()
        if viewer is None:
            return
        live = [layer for layer in (ref() for ref in layer_refs) if layer is not None and layer in viewer.layers]
        if live:
            _fit_or_warn(viewer, live)

    QTimer.singleShot(0, again)


def _fit_or_warn(viewer, layers: list) -> None:
    """:func:`fit_view`; a failure leaves the view as it was, with a RuntimeWarning instead of an exception."""
    try:
        fit_view(viewer, layers)
    except Exception as exc:  # noqa: BLE001 - framing is cosmetic: the result is in the viewer
        warnings.warn(f"the result was added, but the view could not be fitted to it ({type(exc).__name__}: "
                      f"{exc}); napari's Reset view (Ctrl+R) shows every layer", RuntimeWarning, stacklevel=3)


def fit_view(viewer, layers: list, margin: float = VIEW_MARGIN) -> None:
    """Centre and zoom the view on ``layers`` (layers of ``viewer``), as napari's ``reset_view(layers=...)``.

    napari's own fit indexes the world extent of the given layers (as many
    axes as the layers have) with the viewer's displayed axes: a layer of
    more dimensions elsewhere in the viewer (a 4-D segmentation beside a
    (T, H, W) stimulus) makes it fail with an IndexError. So it is used only
    when the layers span the viewer's dimensions; otherwise the same fit is
    computed here from their box (:func:`world_box`). Where a displayed axis
    is one the layers lack (the user put the 4-D layer's first axis in view),
    every layer is fitted (plain ``reset_view``). While a map's colour bar
    shows, :data:`BAR_RESERVE_PX` are kept free at the right, for it.
    """
    if not layers:
        return
    box = world_box(viewer, layers)
    if box is None:
        viewer.reset_view(margin=margin)
        return
    room = np.asarray(viewer.canvas.viewbox_size(viewer.layers), float)   # (height, width) px
    if max(layer.ndim for layer in layers) == viewer.dims.ndim:
        viewer.reset_view(layers=layers, margin=margin)
        lo, hi = box
        clear_of_bar(viewer, room, _span(lo, hi), (lo[-1] + hi[-1]) / 2, 1 - margin)
        return
    if viewer.dims.ndisplay == 3:
        viewer.scene.camera.angles = (0, 0, 0)  # as reset_view: looking down the first displayed axis
    aim(viewer, *box, room, 1 - margin)


def world_box(viewer, layers: list) -> "tuple[np.ndarray, np.ndarray] | None":
    """World corners (lo, hi) of ``layers`` (non-empty) along the viewer's displayed axes (2 or 3), each image pixel
    drawn half a pixel either side of its centre; None where a displayed axis is one the layers lack.

    From napari's public ``LayerList.get_extent``: as many axes as the layers
    have, right-aligned to the viewer's axes as napari aligns layers, and
    indexed with the displayed axes (the user may have rolled the time axis
    into view: the box is then (t, x) or (y, t), not the last two axes).
    """
    own = max(layer.ndim for layer in layers)
    axes = np.asarray(viewer.dims.displayed) - (viewer.dims.ndim - own)
    if (axes < 0).any():
        return None
    extent = viewer.layers.get_extent(layers)
    half = np.asarray(extent.step, float)[axes] / 2
    return (np.asarray(extent.world, float)[0, axes] - half, np.asarray(extent.world, float)[1, axes] + half)


def _span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """What the canvas shows of the box (lo, hi): its last two axes' sizes (3-D: at angles 0), none zero."""
    size = (hi - lo)[-2:]
    size[np.isclose(size, 0)] = 1
    return size


def aim(viewer, lo: np.ndarray, hi: np.ndarray, room, fill: float) -> None:
    """Centre the camera on the box (lo, hi) (:func:`world_box`) and zoom so that it takes ``fill`` of ``room``
    (canvas (height, width) px), clear of a map's colour bar (:func:`clear_of_bar`). The angles are left as
    they are."""
    size = _span(lo, hi)
    camera = viewer.scene.camera
    camera.center = tuple(float(v) for v in (lo + hi) / 2)
    camera.zoom = float(fill * np.min(np.asarray(room, float) / size))
    clear_of_bar(viewer, room, size, (lo[-1] + hi[-1]) / 2, fill)


def clear_of_bar(viewer, room, span, x_middle: float, fill: float) -> None:
    """While a map's colour bar shows (napari draws it at the canvas' top right), keep :data:`BAR_RESERVE_PX` of
    the canvas free at the right: zoom out if need be so that ``span`` (world (height, width) of what is fitted)
    takes at most ``fill`` of ``room`` (canvas (height, width) px) less that, and centre it (its middle along x
    is ``x_middle``, world) in what is left. Nothing while no visible layer shows its colour bar."""
    if not any(layer.visible and getattr(layer, "colorbar", None) is not None and layer.colorbar.visible
               for layer in viewer.layers):
        return
    camera = viewer.scene.camera
    room = np.array(room, float)
    reserve = min(BAR_RESERVE_PX, 0.4 * room[-1])
    room[-1] -= reserve
    camera.zoom = float(min(camera.zoom, fill * np.min(room / np.asarray(span, float))))
    centre = np.asarray(camera.center, float)
    centre[-1] = x_middle + reserve / 2 / camera.zoom
    camera.center = tuple(float(v) for v in centre)


def keeping_frame(viewer, layer, change: Callable[[], None]) -> None:
    """Run ``change`` (of a (T, y, x) ``layer``'s scale or units) with ``viewer``'s time slider kept on the layer
    frame it showed: napari keeps the slider's world value, which a new time scale puts on another frame (44
    pixel units were frame 44, then 40 ms, frame 4). Without a viewer, or a layer of one frame, just ``change``."""
    axis = viewer.dims.ndim - 3 if viewer is not None and layer in viewer.layers else None
    before = np.asarray(layer.extent.world, float)[:, -3] if axis is not None else None
    point = float(viewer.dims.point[axis]) if axis is not None else 0.0
    change()
    T = layer.data.shape[-3]
    if before is None or T < 2 or before[1] == before[0]:
        return
    frame = float(np.clip(round((point - before[0]) / (before[1] - before[0]) * (T - 1)), 0, T - 1))
    after = np.asarray(layer.extent.world, float)[:, -3]
    viewer.dims.set_point(viewer.dims.ndim - 3, after[0] + frame / (T - 1) * (after[1] - after[0]))


__all__ = ["BAR_RESERVE_PX", "VIEW_MARGIN", "aim", "clear_of_bar", "fit_view", "frame_result", "keeping_frame",
           "world_box"]
