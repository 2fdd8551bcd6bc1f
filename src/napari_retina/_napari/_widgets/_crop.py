"""The crop window (a rectangle the user drags over an oversized stimulus) and the analysed-window outline.

Both are napari Shapes layers over the stimulus layer, in its pixel grid
(the Shapes layer takes the stimulus layer's y/x ``scale`` and ``translate``):
stimulus pixel ``(i, j)`` is the unit square centred on ``(i, j)``, so a
window of ``size`` pixels with corner ``(y0, x0)`` is the rectangle from
``(y0 - 0.5, x0 - 0.5)`` to ``(y0 + size - 0.5, x0 + size - 0.5)``.
The window's corner is what ``nr.attribute(crop=(y0, x0))`` takes. A layer
resampled to the model's pixels (``pixel_um``) has ``k = 55 / pixel_um``
(y, x) of its pixels to a model pixel: the window's corner counts model
pixels, and its rectangle runs from ``y0·k − 0.5`` to ``(y0 + size)·k − 0.5``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..._resample import model_frame_shape
from ..._units import PIXEL_UM
from .._layers import META, last_axes
from .._viewer import follow_renames, remove_layers

WINDOW_COLOR = "#ffd700"
OUTLINE_COLOR = "#00e5ff"


Scale = tuple
"""(k_y, k_x): stimulus-layer pixels per model pixel along y and x (1, 1 unless the layer is resampled)."""
SAME = (1.0, 1.0)


def window_rectangle(y0: int, x0: int, size: int, k: Scale = SAME) -> np.ndarray:
    """The (4, 2) corners (y, x, stimulus pixels) of the ``size``-model-pixel window with corner ``(y0, x0)``
    (model pixels), ``k`` layer pixels to a model pixel."""
    top, bottom = y0 * k[0] - 0.5, (y0 + size) * k[0] - 0.5
    left, right = x0 * k[1] - 0.5, (x0 + size) * k[1] - 0.5
    return np.array([[top, left], [top, right], [bottom, right], [bottom, left]], float)


def model_grid(shape: tuple, k: Scale = SAME) -> tuple[int, int]:
    """(H', W'): the model pixels over a (…, H, W) layer of ``k`` layer pixels to a model pixel
    (:func:`napari_retina._resample.model_frame_shape`)."""
    return model_frame_shape(shape[-2:], None if tuple(k) == SAME else (PIXEL_UM / k[0], PIXEL_UM / k[1]))


def centre_origin(shape: tuple, size: int, k: Scale = SAME) -> tuple[int, int]:
    """Corner (y0, x0), model pixels, of the centred ``size``-pixel window in a (T, H, W) stack (as
    ``crop="center"``)."""
    h, w = model_grid(shape, k)
    return (h - size) // 2, (w - size) // 2


def _find(viewer, role: str, layer) -> Optional[object]:
    for other in viewer.layers:
        meta = other.metadata.get(META, {}) if isinstance(other.metadata, dict) else {}
        if meta.get("role") == role and meta.get("for") == layer.name:
            return other
    return None


def plane_placement(layer) -> dict:
    """The y/x part of ``layer``'s placement (scale, translate, rotate, shear, affine, units, axis labels),
    as keywords of a 2-D layer that is to lie over its pixel grid.

    Exact when the layer's rotation, shear and affine keep its y/x plane
    apart from time (napari's ``rotate=30`` on a (T, H, W) layer does).
    """
    from napari.utils.transforms import Affine

    return {"scale": np.asarray(layer.scale, float)[-2:], "translate": np.asarray(layer.translate, float)[-2:],
            "rotate": last_axes(layer.rotate, 2),
            "shear": last_axes(Affine(shear=layer.shear, ndim=layer.ndim).linear_matrix, 2),
            "affine": last_axes(layer.affine.affine_matrix, 2, affine=True),
            "units": tuple(layer.units)[-2:], "axis_labels": tuple(layer.axis_labels)[-2:]}


def _shapes_kwargs(layer, name: str, role: str, color: str) -> dict:
    return {"name": name, "shape_type": "rectangle", "edge_color": color, "face_color": "transparent",
            "edge_width": 0.04 * max(layer.data.shape[-2:]), **plane_placement(layer),
            "metadata": {META: {"role": role, "for": layer.name}}}


def crop_window(viewer, layer, size: int, k: Scale = SAME):
    """The crop-window Shapes layer of stimulus ``layer`` (added, centred, when there is none).

    The user moves the rectangle (select tool, drag); :func:`window_origin`
    reads where it is. The new layer is left active in select mode so a drag
    moves it at once.
    """
    shapes = _find(viewer, "crop_window", layer)
    if shapes is None:
        y0, x0 = centre_origin(layer.data.shape, size, k)
        kwargs = _shapes_kwargs(layer, f"{layer.name}: crop window (drag me)", "crop_window", WINDOW_COLOR)
        shapes = viewer.add_shapes([window_rectangle(y0, x0, size, k)], **kwargs)
        shapes.metadata[META]["size"] = (size, tuple(k))
        follow_renames(viewer, layer)
    else:
        fit_window(shapes, layer, size, k)
    shapes.mode = "select"
    viewer.layers.selection.active = shapes
    return shapes


def remove_windows(viewer, keep=None) -> None:
    """Remove the crop-window layers of every stimulus layer but ``keep`` (all of them when ``keep`` is None)."""
    def other(shapes) -> bool:
        meta = shapes.metadata.get(META, {}) if isinstance(shapes.metadata, dict) else {}
        return meta.get("role") == "crop_window" and (keep is None or meta.get("for") != keep.name)

    remove_layers(viewer, [shapes for shapes in viewer.layers if other(shapes)])


def find_window(viewer, layer):
    """The crop-window Shapes layer of stimulus ``layer``, or None when it has none."""
    return _find(viewer, "crop_window", layer)


def fit_window(shapes, layer, size: int, k: Scale = SAME) -> None:
    """Redraw the crop rectangle as a ``size``-pixel window around where it is, if it was drawn for another size
    or another pixel size ``k``.

    A model with another field size loaded after the window was drawn, or
    another pixel size set: the rectangle then shows the window that will be
    analysed. A layer smaller than ``size`` is left alone (the analysis
    refuses it in one sentence).
    """
    meta = shapes.metadata.setdefault(META, {})
    drawn = meta.get("size")
    if (isinstance(drawn, tuple) and drawn == (size, tuple(k))) or min(model_grid(layer.data.shape, k)) < size:
        return
    old_size, old_k = drawn if isinstance(drawn, tuple) else (drawn or size, SAME)
    if len(shapes.data):   # the same centre, in the layer's pixels
        y0, x0 = window_origin(shapes, layer, old_size, old_k)
        centre = (np.array([y0, x0]) + old_size / 2) * np.asarray(old_k, float)
        H, W = model_grid(layer.data.shape, k)
        y0, x0 = (int(np.clip(round(c / kk - size / 2), 0, n - size)) for c, kk, n in zip(centre, k, (H, W)))
    else:
        y0, x0 = centre_origin(layer.data.shape, size, k)
    shapes.data = [window_rectangle(y0, x0, size, k)]
    meta["size"] = (size, tuple(k))


def window_origin(shapes, layer, size: int, k: Scale = SAME) -> tuple[int, int]:
    """Corner (y0, x0) (model pixels: stimulus pixels unless ``k`` says the layer is resampled) of the window
    the crop rectangle marks, inside the stack.

    The rectangle's centre counts (a rectangle resized by mistake still
    names one ``size``-pixel window); the corner is clipped into the stack.
    Raises ValueError when the layer holds no rectangle.
    """
    if len(shapes.data) == 0:
        raise ValueError(f"The crop-window layer '{shapes.name}' holds no rectangle; choose crop 'window' "
                         "again to get one.")
    corners = np.asarray(shapes.data[0], float)[:, -2:]
    t = [0.0] * (layer.ndim - 2)   # the plane's own place (plane_placement keeps time apart)
    pixels = [np.asarray(layer.world_to_data([*t, *shapes.data_to_world(c)]), float)[-2:] for c in corners]
    centre = (np.mean(pixels, axis=0) + 0.5) / np.asarray(k, float)   # in model pixels from the layer's edge
    H, W = model_grid(layer.data.shape, k)
    y0 = int(np.clip(round(centre[0] - size / 2), 0, H - size))
    x0 = int(np.clip(round(centre[1] - size / 2), 0, W - size))
    return y0, x0


def outline_window(viewer, layer, origin: tuple, size: int, k: Scale = SAME):
    """Outline the analysed window of stimulus ``layer`` (replacing an earlier outline); returns the layer.

    None when the window is the whole layer (nothing to outline).
    """
    old = _find(viewer, "analysed_window", layer)
    if old is not None:
        viewer.layers.remove(old)
    if tuple(layer.data.shape[-2:]) == (size, size) and tuple(k) == SAME:
        return None
    kwargs = _shapes_kwargs(layer, f"{layer.name}: analysed window", "analysed_window", OUTLINE_COLOR)
    outline = viewer.add_shapes([window_rectangle(*origin, size, k)], **kwargs)
    follow_renames(viewer, layer)
    return outline
