"""Core results as napari layer data (plain functions: no viewer, no widgets).

Everything here returns layer keyword arguments or ``(data, kwargs, kind)``
layer-data tuples; :mod:`._viewer` adds them to a viewer.

Every layer is aligned to the stimulus layer by ``scale`` and ``translate``:
the stimulus has scale ``(FRAME_MS, PIXEL_UM, PIXEL_UM)`` = (10 ms, 55 µm,
55 µm); conv1 map pixel ``(i, j)`` sits over stimulus pixel
``(i + offset, j + offset)`` of the analysed window with ``offset =
attribution.offset``, so a map layer has the same scale and ``translate =
(0, offset·55, offset·55)`` µm (plus the stimulus layer's own translate and
the window's ``crop_origin``, see :func:`analysed_geometry`). A stimulus layer
in other units (s, mm, …) has its scale and translate converted to ms and µm
(:func:`layer_geometry`; napari draws layers in different units of one
quantity in common units), and a rotated, sheared or affine-transformed layer
gives its maps the same rotation, shear and affine, so each map pixel lies
over the stimulus pixel it explains.

The traces (model response, each kept channel's ``A_c(t)``, the reduced
circuit's response) are not layers: :func:`trace_series` lists them and the
trace plot dock (:mod:`._plot`) draws them on real axes.

Map colours: each channel has a diverging colormap, the complement of its
colour (negative) → transparent (0) → its colour (positive), drawn with
translucent blending over the stimulus, contrast limits ±limit
shared by all channels, in spikes per 10 ms bin (:data:`MAP_UNIT`); a positive
attribution is a unit that raises the cell's rate at that time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

from .._units import FRAME_MS, PIXEL_UM, RATE_UNIT
from ..metrics import map_limit

SCALE = (FRAME_MS, PIXEL_UM, PIXEL_UM)
"""Physical scale of a stimulus layer: ms per frame, µm per pixel (y, x)."""
UNITS = ("ms", "um", "um")
"""Units of :data:`SCALE` and of the maps: a stimulus layer's scale in other units is converted to these."""
AXIS_LABELS = ("t", "y", "x")
META = "napari_retina"
"""Key of the plugin's entry in a layer's metadata."""

#: one colour per first-layer channel (Okabe–Ito and friends, legible on black)
CHANNEL_COLORS = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442",
    "#d55e00", "#cc79a7", "#0072b2", "#ff6e6e",
    "#a6d854", "#8da0cb", "#ffd92f", "#e5c494",
)
RESPONSE_COLOR = "#ffffff"
REDUCED_COLOR = "#a3a3a3"   # grey: chromatic colours are the channels
TRUTH_COLOR = "#ffffff"
TRUTH_ALPHA = 0.25
TRUTH_WIDTH = 5.0
"""The ground truth's trace: a wide, faint white band drawn under the model's response (a white line) and the
reduced circuit's (a grey line), so their lines run inside it where they follow the truth. Faint enough (about
29 % lightness over the plot's background, 6 %) to read as darker than the reduced circuit's grey (64 %): at
0.35 both read as the same grey."""
CURSOR_COLOR = "#ffff00"
MAP_UNIT = RATE_UNIT
"""Unit of the maps (and traces): the model's rate units."""
MAP_LEGEND = ("Maps: attribution per first-layer unit in {unit}, colour bar ±{limit:.3g}{bar}, the same for "
              "every channel: a channel's colour raises the cell's rate, its complementary colour lowers it; "
              "near 0 a map is transparent (the bar's black).")
"""What the maps' colours mean (filled by :func:`map_legend`), shown with the traces."""


# ---------------------------------------------------------------- stimulus ---

def stimulus_layer_kwargs(stimulus: np.ndarray, name: str = "stimulus", metadata: Optional[dict] = None) -> dict:
    """Image-layer keyword arguments for a (T, H, W) stimulus stack.

    Physical scale (10 ms, 55 µm, 55 µm), units, axis labels, a grey colormap
    with contrast limits symmetric about 0 (mean luminance) for float stacks; a
    lazy (dask) stack's from frames of three of its blocks (:func:`_spread_frames`; napari
    took (0, 1) for a batch store's stimulus: its grey and its dark bar both black).
    """
    meta = {META: {"role": "stimulus", "frame_ms": FRAME_MS, "pixel_um": PIXEL_UM}}
    if metadata:
        meta.update(metadata)
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": SCALE,
        "units": UNITS,
        "axis_labels": AXIS_LABELS,
        "colormap": "gray",
        "metadata": meta,
    }
    arr = np.asarray(stimulus) if not hasattr(stimulus, "dask") else _spread_frames(stimulus)
    if arr.size and np.issubdtype(arr.dtype, np.floating):
        lim = float(np.nanmax(np.abs(arr))) if np.isfinite(arr).any() else 1.0
        lim = lim if lim > 0 else 1.0
        kwargs["contrast_limits"] = (-lim, lim)
    return kwargs


#: frames of a lazy stack read for its contrast limits, from each of its first, middle and last blocks
LAZY_LIMIT_FRAMES = 8


def _spread_frames(stack) -> np.ndarray:
    """A float lazy (T, H, W) stack's frames its contrast limits are read from: up to :data:`LAZY_LIMIT_FRAMES`
    of each of its first, middle and last blocks of frames (a block is read whole: frames spread over the movie
    read every block of it, all 50,000 frames of a store's stimulus, on the GUI thread); none of another dtype,
    which gets no limits."""
    n = int(stack.shape[0]) if stack.ndim else 0
    if n == 0 or not np.issubdtype(stack.dtype, np.floating):
        return np.zeros((0,), stack.dtype)
    sizes = stack.chunks[0] if getattr(stack, "chunks", None) else (n,)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picked = sorted({0, len(sizes) // 2, len(sizes) - 1})
    frames = np.unique(np.concatenate([np.linspace(starts[b], starts[b + 1] - 1, min(int(sizes[b]), LAZY_LIMIT_FRAMES))
                                       for b in picked]).astype(int))
    return np.asarray(stack[frames])


def unit_factor(unit, target: str) -> Optional[float]:
    """How many ``target`` units (e.g. "ms", "um") one ``unit`` is (a pint unit or its name, as in napari's
    ``layer.units``): 1000.0 for "s" to "ms"; None when ``unit`` is no such quantity (napari's "pixel")."""
    import pint

    try:
        return float(pint.get_application_registry().Quantity(1.0, unit).to(target).magnitude)
    except (pint.errors.PintError, TypeError, ValueError, AttributeError):
        return None


def last_axes(matrix: np.ndarray, k: int = 3, affine: bool = False) -> np.ndarray:
    """The block of an (n, n) linear or (n+1, n+1) affine ``matrix`` acting on the last ``k`` axes ((t, y, x) for
    3, (y, x) for 2): (k, k), or (k+1, k+1) with its translation."""
    m = np.asarray(matrix, float)
    if not affine:
        return m[-k:, -k:].copy()
    out = np.eye(k + 1)
    out[:k, :k], out[:k, k] = m[-k - 1 : -1, -k - 1 : -1], m[-k - 1 : -1, -1]
    return out


def layer_geometry(layer=None, shape: Optional[Sequence[int]] = None, scale: Sequence[float] = SCALE) -> dict:
    """Where a stimulus layer's pixels lie, in the maps' units (:data:`UNITS`: ms, µm, µm), or the defaults.

    Keys: ``scale`` (ms per frame, µm per pixel along y and x) and
    ``translate`` (ms, µm, µm): the layer's, converted from its own units
    (e.g. 0.01 s → 10 ms, 0.055 mm → 55 µm; an axis whose unit is no time or
    length, napari's "pixel", keeps its numbers and unit); ``units`` (str per
    axis); ``rotate``, ``shear`` (3×3) and ``affine`` (4×4, translation in the
    units above): the layer's, for its last three axes, so that a map layer
    given them lies over the layer; ``shape`` (T, H, W). Without a layer: a layer of ``shape`` at ``scale``
    (default :data:`SCALE`) from the origin.
    """
    if layer is None:
        return {"scale": np.array(scale, float), "translate": np.zeros(3), "shape": tuple(shape), "units": UNITS,
                "rotate": np.eye(3), "shear": np.eye(3), "affine": np.eye(4)}
    from napari.utils.transforms import Affine

    factors = [unit_factor(u, t) for u, t in zip(tuple(layer.units)[-3:], UNITS)]
    units = tuple(t if f is not None else str(u) for u, t, f in zip(tuple(layer.units)[-3:], UNITS, factors))
    f = np.array([1.0 if x is None else x for x in factors])
    # napari draws a layer at U·(affine(translate + rotate·shear·scale·pixel)), U its units → the world's: the
    # converted layer keeps its place with scale, translate and affine translation U·…, matrices U·M·U⁻¹
    conj = f[:, None] / f[None, :]
    shear = Affine(shear=layer.shear, ndim=layer.ndim).linear_matrix
    affine = last_axes(layer.affine.affine_matrix, affine=True)
    affine[:3, :3] *= conj
    affine[:3, 3] *= f
    return {"scale": np.asarray(layer.scale, float)[-3:] * f, "translate": np.asarray(layer.translate, float)[-3:] * f,
            "shape": tuple(layer.data.shape[-3:]), "units": units,
            "rotate": last_axes(layer.rotate) * conj, "shear": last_axes(shear) * conj, "affine": affine}


def geometry_offset(geometry: dict, pixels: Sequence[float]) -> np.ndarray:
    """Where, relative to a layer's pixel (0, 0, 0), its pixel ``pixels`` (t, y, x) lies before its affine
    (ms, µm, µm): rotated and sheared as the layer is."""
    linear = np.asarray(geometry.get("rotate", np.eye(3))) @ np.asarray(geometry.get("shear", np.eye(3)))
    return linear @ (np.asarray(geometry["scale"], float) * np.asarray(pixels, float))


def kept_over(geometry: dict, before: dict, after: dict) -> dict:
    """``scale`` and ``translate`` (ms, µm, µm) that keep a layer of ``geometry``, lying over a stimulus layer's
    pixels (a map: its rotation and shear), over the same pixels when that layer's scale changes, its geometry
    going from ``before`` to ``after`` (:func:`layer_geometry` dicts).

    The layer's pixel ``q`` lies over stimulus pixel ``centre + k·q``; ``k`` and ``centre`` are read from
    ``geometry`` against ``before`` and placed again on ``after``.
    """
    k = np.asarray(geometry["scale"], float) / np.asarray(before["scale"], float)
    linear = np.asarray(before.get("rotate", np.eye(3))) @ np.asarray(before.get("shear", np.eye(3)))
    shift = np.asarray(geometry["translate"], float) - np.asarray(before["translate"], float)
    centre = np.linalg.solve(linear, shift) / np.asarray(before["scale"], float)
    return {"scale": np.asarray(after["scale"], float) * k,
            "translate": np.asarray(after["translate"], float) + geometry_offset(after, centre)}


def layer_pixels_per_model_pixel(attribution) -> np.ndarray:
    """(k_y, k_x): how many of its stimulus layer's pixels one model pixel of ``attribution`` spans (1, 1 unless
    the layer was resampled to the model's 55 µm pixels: ``input_pixel_um``, e.g. 2 for 27.5 µm)."""
    pixel = getattr(attribution, "input_pixel_um", None)
    return np.ones(2) if pixel is None else PIXEL_UM / np.asarray(pixel, float)


def layer_frames_per_model_frame(attribution) -> float:
    """How many of its stimulus layer's frames one 10 ms model frame of ``attribution`` spans (1 unless the
    layer's time was resampled to the model's bins: ``input_frame_ms``, e.g. 0.6 for 60 Hz frames)."""
    frame = getattr(attribution, "input_frame_ms", None)
    return 1.0 if frame is None else FRAME_MS / float(frame)


def on_window(attribution):
    """``attribution`` placed on a layer that holds its analysed window (``attribution.stimulus``) rather than the
    stack it was cut from: no crop origin, no resampling (that layer's pixels and frames are the model's)."""
    if (tuple(attribution.crop_origin) == (0, 0) and getattr(attribution, "input_pixel_um", None) is None
            and getattr(attribution, "input_frame_ms", None) is None):
        return attribution
    return replace(attribution, crop_origin=(0, 0), input_pixel_um=None, input_frame_ms=None)


def analysed_geometry(geometry: dict, attribution) -> dict:
    """The geometry of the window ``attribution`` analysed inside a stimulus layer of ``geometry``.

    The layer's scale, units, rotation, shear and affine; its translate
    shifted by ``attribution.crop_origin`` (y0, x0) pixels (along the layer's
    rotated axes); the analysed stack's shape (T, size, size). Without a crop
    (origin (0, 0), same shape) it is the layer's own geometry. A layer
    resampled to the model's pixels (``input_pixel_um``) gives a pixel
    ``k`` = :func:`layer_pixels_per_model_pixel` of its pixels, centred on
    layer pixel ``(y0 + ½)·k − ½``: the model's pixel (0, 0) covers layer
    pixels ``y0·k − ½`` to ``(y0 + 1)·k − ½`` (pixel centres are whole numbers).
    Time likewise: a layer resampled to the model's 10 ms bins (``input_frame_ms``) gives a frame
    ``k_t`` = :func:`layer_frames_per_model_frame` of its frames, bin 0 centred on layer frame ``½·k_t − ½``.
    """
    k = np.r_[layer_frames_per_model_frame(attribution), layer_pixels_per_model_pixel(attribution)]
    centre = (np.r_[0.0, np.asarray(attribution.crop_origin, float)] + 0.5) * k - 0.5
    return {**geometry, "scale": np.asarray(geometry["scale"], float) * k,
            "translate": np.asarray(geometry["translate"], float) + geometry_offset(geometry, centre),
            "shape": tuple(np.shape(attribution.stimulus))}


# ------------------------------------------------------------------ colours ---

def _rgba(hex_color: str, alpha: float = 1.0) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [alpha], dtype=float)


def channel_color(c: int) -> np.ndarray:
    """RGBA colour of first-layer channel ``c`` (maps and traces share it)."""
    return _rgba(CHANNEL_COLORS[c % len(CHANNEL_COLORS)])


def channel_colormap(c: int):
    """Diverging colormap of channel ``c``: complement (−), transparent (0), channel colour (+).

    Each side keeps its hue and fades in opacity towards zero, so a map drawn
    with translucent blending shows the stimulus where the attribution is ~0
    and the channel's own colour where it is large. (Additive blending over a
    black-centred map, the earlier design, added the colour to the stimulus:
    over a grey or bright stimulus a strong attribution saturated to white and
    lost the channel's identity.)
    """
    from napari.utils.colormaps import Colormap

    pos = channel_color(c)
    neg = np.r_[1.0 - pos[:3], 1.0]
    neg[:3] = 0.35 + 0.65 * neg[:3]  # keep the negative side bright enough to see
    gap = 1e-3  # the two sides meet, transparent, at 0 (0.5 of the range), each with its own hue
    return Colormap(
        colors=np.stack([neg, np.r_[neg[:3], 0.0], np.r_[pos[:3], 0.0], pos]),
        controls=[0.0, 0.5 - gap, 0.5 + gap, 1.0],
        name=f"napari-retina channel {c}",
    )


# --------------------------------------------------------------------- maps ---

def channel_label(c: int, reduction=None) -> str:
    """``reduction.label(c)`` (e.g. "A3 ON fast +") or ``"A{c}"`` without a reduction."""
    if reduction is not None:
        try:
            return str(reduction.label(c))
        except Exception:  # a reduction without a label for c: fall back
            pass
    return f"A{c}"


def map_layer_data(
    attribution,
    reduction=None,
    geometry: Optional[dict] = None,
    maps=None,
    limit: Optional[float] = None,
    prefix: str = "",
) -> list[tuple]:
    """One image-layer data tuple per first-layer channel: ``A_c(t, y, x)``.

    Parameters
    ----------
    attribution : Attribution
        ``maps`` (T, C, h, w), (T, C, 1, w) for invariance "y", (T, C, h, 1)
        for "x"; invariance "space" has no maps and gives no layers.
    reduction : Reduction, optional
        Names the layers (``reduction.label(c)``) and makes only its kept
        channels visible.
    geometry : dict, optional
        The stimulus layer's ``scale``/``translate`` (see :func:`layer_geometry`);
        default (10 ms, 55 µm, 55 µm) at the origin.
    maps : array-like (T, C, h, w), optional
        Overrides ``attribution.maps`` (e.g. a lazy dask array for long movies).
    limit : float, optional
        Shared contrast limit (default: :func:`napari_retina.metrics.map_limit` of the maps, rounded up by
        :func:`bar_limit`).

    Returns
    -------
    list of ``(data (T, h, w), kwargs, "image")``. A map reduced along y
    (shape (T, 1, w)) is stretched over the map's full height (scale
    ``h1·55`` µm along y), likewise along x.
    """
    maps = attribution.maps if maps is None else maps
    if maps is None:
        return []
    geo = geometry or layer_geometry(shape=attribution.stimulus.shape)
    layer_scale, layer_translate = np.asarray(geo["scale"], float), np.asarray(geo["translate"], float)
    off = attribution.offset
    h1 = attribution.model.config.map_sizes[0] if attribution.model is not None else max(maps.shape[2:])
    if limit is None:
        limit = bar_limit(map_limit(maps))
    lim = float(limit)
    kept = set(reduction.kept) if reduction is not None else None
    out = []
    # map pixel (t, i, j) lies over stimulus pixel stretch·(t, i, j) + pixel
    stretch, pixel = np.ones(3), np.array([0.0, off, off])
    for axis in (1, 2):
        if maps.shape[axis + 1] == 1 and h1 > 1:  # summed over y (x): stretch one row over the map height
            stretch[axis], pixel[axis] = h1, off + (h1 - 1) / 2
    scale = [float(v) for v in layer_scale * stretch]
    translate = [float(v) for v in layer_translate + geometry_offset(geo, pixel)]
    for c in range(maps.shape[1]):
        label = channel_label(c, reduction)
        kwargs = {
            "name": f"{prefix}{label}",
            "scale": list(scale),
            "translate": list(translate),
            "rotate": np.array(geo.get("rotate", np.eye(3))),
            "shear": np.array(geo.get("shear", np.eye(3))),
            "affine": np.array(geo.get("affine", np.eye(4))),
            "units": tuple(geo.get("units", UNITS)),
            "axis_labels": AXIS_LABELS,
            "colormap": channel_colormap(c),
            "contrast_limits": (-lim, lim),
            "blending": "translucent",
            "opacity": 0.9,
            "visible": True if kept is None else c in kept,
            "metadata": {META: {"role": "map", "channel": c, "label": label,
                                "invariance": attribution.invariance, "offset": off,
                                "cells": list(attribution.cells)}},
        }
        out.append((maps[:, c], kwargs, "image"))
    first = reduction.kept[0] if reduction is not None and reduction.kept else None
    bar = colour_bar_index([kw["visible"] for _, kw, _ in out], [kw["metadata"][META]["channel"] for _, kw, _ in out],
                           first)
    if bar is not None:
        out[bar][1]["metadata"][META][COLOUR_BAR_KEY] = True
    return out


ROUND_MANTISSAS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0)
"""Round numbers (times a power of ten) that :func:`round_up` reaches: at most 1.43× past a value."""
BAR_MANTISSAS = (1.0, 2.0, 4.0, 5.0, 10.0)
"""Limits (times a power of ten) of a colour bar whose top tick is the limit itself (:func:`bar_limit`).

napari's colour bar (``layer.colorbar``) offers no control over its ticks: its tick labels are those of vispy's
``Axis`` with vispy's default ``Ticker``, the algorithm of Talbot, Lin and Hanrahan (2010) over the contrast
limits, for an axis 1 unit long in the bar's own coordinates (1/dpi inch to vispy) raised to vispy's floor of 2
inches, so the ticks depend on the limits alone, not on the bar's size. For limits ±L it puts the end ticks at ±L for
L = 1, 2, 4, 5 × 10^k; for 1.2 and 1.5 at ±1, 2.5 at ±2, 3 at ±3 or ±2.5 (floating point decides), 6 and
7 at ±5, and 8 has the tick "0" alone. At ±0.0497 or ±17 the bar read "0" alone too (its ticks ±0.05, ±20
outside it); at each of these, three or more labels."""


def round_up(value: float, mantissas: Sequence[float] = ROUND_MANTISSAS) -> float:
    """``value`` rounded up to the next of ``mantissas`` × 10^k (``mantissas`` from 1 to 10, increasing); a value
    that is not positive and finite is returned as it is."""
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        return value
    power = 10.0 ** np.floor(np.log10(value))
    mantissa = value / power
    return float(f"{next(m for m in mantissas if m >= mantissa * (1 - 1e-12)) * power:.12g}")


def bar_limit(limit: float) -> float:
    """``limit`` rounded up to the next of :data:`BAR_MANTISSAS` × 10^k: a computed map limit (a percentile,
    :func:`~napari_retina.metrics.map_limit`) becomes the top tick of napari's colour bar (whose ticks napari does
    not let one choose), which a scientist reads as the maps' limit; at most 2× larger. A limit that is not
    positive and finite is returned as it is."""
    return round_up(limit, BAR_MANTISSAS)


COLOUR_BAR_KEY = "colour_bar"
"""Plugin-metadata key of the one map layer of a result that shows the colour bar (:func:`show_colour_bar`):
set in its layer data, so a reader's layers (a reopened analysis, a batch store) show it as the live ones do."""


def colour_bar_index(visible: Sequence[bool], channels: Sequence[int], first_channel: Optional[int]) -> Optional[int]:
    """Which of a result's maps shows the colour bar: channel ``first_channel``'s (the reduction's most important
    kept channel) when its map is visible, else the first visible map; None when none is visible."""
    shown = [i for i, v in enumerate(visible) if v]
    return next((i for i in shown if channels[i] == first_channel), shown[0] if shown else None)


def show_colour_bar(layer, shown: bool = True) -> None:
    """Show (or hide) napari's colour bar overlay on map ``layer``: small, at the canvas' top right, one for all
    maps (they share their limits; see :func:`._viewer.show_map_legend`)."""
    if shown:
        layer.colorbar.size = (14, 110)
        layer.colorbar.font_size = 8
        layer.colorbar.position = "top_right"
    layer.colorbar.visible = shown


def show_alone(map_layers: list, channel: int, bar: bool) -> None:
    """Show channel ``channel``'s map alone among one result's ``map_layers``, with the colour bar on it when
    ``bar`` (the result showed one): the maps of the other channels hidden, and no bar on a hidden map."""
    alone = [layer for layer in map_layers if plugin_metadata(layer).get("channel") == channel]
    for layer in map_layers:
        layer.visible = layer in alone
        show_colour_bar(layer, bar and layer is next(iter(alone), None))


def show_marked_colour_bar(layer) -> None:
    """Show the colour bar of ``layer`` if its layer data marked it for one (:data:`COLOUR_BAR_KEY`): what adds
    a reader's layers calls this, a reader cannot turn a bar on."""
    if plugin_metadata(layer).get(COLOUR_BAR_KEY):
        show_colour_bar(layer)


def colour_bar_legend(data: list[tuple]) -> str:
    """The maps' legend line (:func:`map_legend`) for the map of layer-data tuples ``data`` marked to show the
    colour bar (:data:`COLOUR_BAR_KEY`); "" when none is."""
    for _, kwargs, _ in data:
        meta = kwargs.get("metadata", {}).get(META, {})
        if meta.get(COLOUR_BAR_KEY):
            return map_legend(kwargs["contrast_limits"][1], meta.get("label"))
    return ""


def plugin_metadata(layer) -> dict:
    """The plugin's entry (:data:`META`) in a napari layer's metadata; ``{}`` when it has none."""
    meta = layer.metadata.get(META, {}) if isinstance(layer.metadata, dict) else {}
    return meta if isinstance(meta, dict) else {}


def map_layers(layers, prefix: str) -> list:
    """The map layers among ``layers`` (napari layers) of the analysis whose layer names start with ``prefix``
    (its stimulus layer's name and ": "; kept in their metadata), in channel order."""
    mine = [layer for layer in layers
            if plugin_metadata(layer).get("role") == "map" and plugin_metadata(layer).get("prefix") == prefix]
    return sorted(mine, key=lambda layer: plugin_metadata(layer)["channel"])


# ------------------------------------------------------------------- traces ---

def map_legend(limit: float, bar_label: Optional[str] = None) -> str:
    """The maps' colour legend: the unit of attribution and the sign convention (see :data:`MAP_LEGEND`);
    ``bar_label``: the channel whose colours the colour bar shows (each channel has its own)."""
    return MAP_LEGEND.format(unit=MAP_UNIT, limit=float(limit), bar=bar_in(bar_label))


def bar_in(bar_label: Optional[str]) -> str:
    """The words of :func:`map_legend` naming the channel whose colours the colour bar shows ("" for none)."""
    return f" in {bar_label}'s colours" if bar_label else ""


@dataclass(frozen=True)
class CellTraces:
    """Whole-cell traces an experiment adds to the trace plot's first row, float (T,) spikes per bin each.

    ``response``: the model's response F(s_t) − F(0) at every frame, from the
    experiment's rates (an attribution has it on its attributed frames only:
    an experiment's windows, thinned); ``truth``: the ground truth's response
    above its resting rate (:func:`napari_retina.experiments.base.above_rest`).
    """

    response: Optional[np.ndarray] = None
    truth: Optional[np.ndarray] = None

    @classmethod
    def from_rates(cls, rates, cells, baseline_rate: float, truth: Optional[np.ndarray] = None) -> "CellTraces":
        """The model's response at every frame from its rates (T, n_cells): the analysed ``cells`` summed,
        minus ``baseline_rate`` F(0), as the attribution's response is on its frames."""
        summed = np.asarray(rates, np.float64)[:, list(cells)].sum(axis=1)
        return cls(response=summed - float(baseline_rate), truth=truth)


def _per_frame(values, like: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if values.shape != like.shape:
        raise ValueError(f"{what} must have one value per stimulus frame, shape {like.shape}; got shape {values.shape}")
    return values


def trace_series(attribution, reduction=None, cell: Optional[CellTraces] = None) -> list[dict]:
    """The traces the plot dock draws (:mod:`._plot`), one dict per trace.

    Row 0: the model's response ``F(s_t) - F(0)`` (white; ``cell.response``
    when given, else the attribution's, on its attributed frames) and, with a
    reduction, the reduced circuit's response (grey); with ``cell.truth``, the
    ground truth's as a faint wide band under them, darker than the grey
    (``width``, ``order`` and ``label_color`` keys). Then one row per kept
    channel (all channels without a reduction) with ``A_c(t)`` in the
    channel's colour.
    """
    cell = cell or CellTraces()
    response = np.asarray(attribution.response, np.float32)
    if cell.response is not None:
        response = _per_frame(cell.response, response, "the model's response")
    series = [{"label": "model response", "kind": "response", "channel": -1, "row": 0,
               "values": response, "color": _rgba(RESPONSE_COLOR)}]
    if reduction is not None:
        series.append({"label": f"reduced circuit (EV {reduction.explained_variance:.3f})", "kind": "reduced",
                       "channel": -1, "row": 0,
                       "values": np.asarray(reduction.reduced_response, np.float32),
                       "color": _rgba(REDUCED_COLOR)})
    chans = list(reduction.kept) if reduction is not None else list(range(attribution.channels.shape[1]))
    if cell.truth is not None:
        series.append({"label": "ground truth (band)", "kind": "truth", "channel": -1, "row": 0,
                       "values": _per_frame(cell.truth, response, "the ground truth's trace"),
                       "color": _rgba(TRUTH_COLOR, TRUTH_ALPHA), "width": TRUTH_WIDTH, "order": -1,
                       "label_color": _rgba(REDUCED_COLOR)})
    for r, c in enumerate(chans, start=1):
        series.append({"label": channel_label(c, reduction), "kind": "channel", "channel": int(c), "row": r,
                       "values": np.asarray(attribution.channels[:, c], np.float32), "color": channel_color(c)})
    return series


# ---------------------------------------------------------------- analysis ---

def analysis_layer_data(attribution, reduction=None, geometry: Optional[dict] = None, maps=None,
                        limit: Optional[float] = None, prefix: str = "") -> list[tuple]:
    """All layer-data tuples of one analysis: its channel maps (the traces go to the plot dock, :mod:`._plot`)."""
    geo = geometry or layer_geometry(shape=attribution.stimulus.shape)
    return map_layer_data(attribution, reduction, geo, maps=maps, limit=limit, prefix=prefix)
