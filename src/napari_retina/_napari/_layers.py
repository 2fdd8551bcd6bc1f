"""Core results as napari layer data (plain functions: no viewer, no widgets).

Everything here returns layer keyword arguments or ``(data, kwargs, kind)``
layer-data tuples; :mod:`._viewer` adds them to a viewer.

Every layer is aligned to the stimulus layer by ``scale`` and ``translate``:
the stimulus has scale ``(FRAME_MS, PIXEL_UM, PIXEL_UM)`` = (10 ms, 55 µm,
55 µm); conv1 map pixel ``(i, j)`` sits over stimulus pixel
``(i + offset, j + offset)`` of the analysed window with ``offset =
attribution.offset``, so a map layer has the same scale and ``translate =
(0, offset·55, offset·55)`` µm (plus the stimulus layer's own translate and
the window's ``crop_origin``, see :func:`analysed_geometry`).

The traces (model response, each kept channel's ``A_c(t)``, the reduced
circuit's response) are drawn as path shapes in a plot panel to the right of
the stimulus, in the same canvas: time runs along x (one panel width for the
whole movie), one row per trace, a shared vertical scale, and a time cursor
(a vertical line) that :func:`._viewer.connect_time_cursor` moves with the
viewer's time slider.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from .._units import FRAME_MS, PIXEL_UM
from ..metrics import map_limit

SCALE = (FRAME_MS, PIXEL_UM, PIXEL_UM)
"""Physical scale of a stimulus layer: ms per frame, µm per pixel (y, x)."""
UNITS = ("ms", "um", "um")
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
REDUCED_COLOR = "#ff4fd8"
CURSOR_COLOR = "#ffff00"
AXIS_COLOR = "#8c8c8c"
MAX_TRACE_POINTS = 4000
"""Longer traces are drawn min/max-decimated to this many points per path."""


# ---------------------------------------------------------------- stimulus ---

def stimulus_layer_kwargs(stimulus: np.ndarray, name: str = "stimulus", metadata: Optional[dict] = None) -> dict:
    """Image-layer keyword arguments for a (T, H, W) stimulus stack.

    Physical scale (10 ms, 55 µm, 55 µm), units, axis labels, a grey colormap
    with contrast limits symmetric about 0 (mean luminance) for float stacks.
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
    arr = np.asarray(stimulus) if not hasattr(stimulus, "dask") else None
    if arr is not None and arr.size and np.issubdtype(arr.dtype, np.floating):
        lim = float(np.nanmax(np.abs(arr))) if np.isfinite(arr).any() else 1.0
        lim = lim if lim > 0 else 1.0
        kwargs["contrast_limits"] = (-lim, lim)
    return kwargs


def layer_geometry(layer=None, shape: Optional[Sequence[int]] = None) -> dict:
    """Scale, translate and shape (T, H, W) of a stimulus layer (or the defaults)."""
    if layer is None:
        return {"scale": np.array(SCALE, float), "translate": np.zeros(3), "shape": tuple(shape)}
    scale = np.asarray(layer.scale, float)[-3:]
    translate = np.asarray(layer.translate, float)[-3:]
    return {"scale": scale, "translate": translate, "shape": tuple(layer.data.shape[-3:])}


def analysed_geometry(geometry: dict, attribution) -> dict:
    """The geometry of the window ``attribution`` analysed inside a stimulus layer of ``geometry``.

    The layer's scale; its translate shifted by ``attribution.crop_origin``
    (y0, x0) pixels; the analysed stack's shape (T, size, size). Without a
    crop (origin (0, 0), same shape) it is the layer's own geometry.
    """
    scale = np.asarray(geometry["scale"], float)
    y0, x0 = attribution.crop_origin
    return {"scale": scale, "translate": np.asarray(geometry["translate"], float) + np.array([0, y0, x0]) * scale,
            "shape": tuple(np.shape(attribution.stimulus))}


# ------------------------------------------------------------------ colours ---

def _rgba(hex_color: str, alpha: float = 1.0) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [alpha], dtype=float)


def channel_color(c: int) -> np.ndarray:
    """RGBA colour of first-layer channel ``c`` (maps and traces share it)."""
    return _rgba(CHANNEL_COLORS[c % len(CHANNEL_COLORS)])


def channel_colormap(c: int):
    """Diverging colormap of channel ``c``: complement (−) → black (0) → channel colour (+).

    Black at zero makes additive blending transparent where the attribution is
    zero, so the stimulus shows through.
    """
    from napari.utils.colormaps import Colormap

    pos = channel_color(c)
    neg = np.r_[1.0 - pos[:3], 1.0]
    neg[:3] = 0.35 + 0.65 * neg[:3]  # keep the negative side bright enough to see
    return Colormap(
        colors=np.stack([neg, [0, 0, 0, 1], pos]),
        controls=[0.0, 0.5, 1.0],
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
        Shared contrast limit (default: :func:`napari_retina.metrics.map_limit` of the maps).

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
    (st, sy, sx), (tt, ty, tx) = geo["scale"], geo["translate"]
    off = attribution.offset
    h1 = attribution.model.config.map_sizes[0] if attribution.model is not None else max(maps.shape[2:])
    if limit is None:
        limit = map_limit(maps)
    lim = float(limit)
    kept = set(reduction.kept) if reduction is not None else None
    out = []
    for c in range(maps.shape[1]):
        scale = [st, sy, sx]
        translate = [tt, ty + off * sy, tx + off * sx]
        if maps.shape[2] == 1 and h1 > 1:  # summed over y: stretch one row over the map height
            scale[1] = h1 * sy
            translate[1] = ty + (off + (h1 - 1) / 2) * sy
        if maps.shape[3] == 1 and h1 > 1:
            scale[2] = h1 * sx
            translate[2] = tx + (off + (h1 - 1) / 2) * sx
        label = channel_label(c, reduction)
        kwargs = {
            "name": f"{prefix}{label}",
            "scale": scale,
            "translate": translate,
            "units": UNITS,
            "axis_labels": AXIS_LABELS,
            "colormap": channel_colormap(c),
            "contrast_limits": (-lim, lim),
            "blending": "additive",
            "opacity": 0.9,
            "visible": True if kept is None else c in kept,
            "metadata": {META: {"role": "map", "channel": c, "label": label,
                                "invariance": attribution.invariance, "offset": off,
                                "cells": list(attribution.cells)}},
        }
        out.append((maps[:, c], kwargs, "image"))
    return out


# ------------------------------------------------------------------- traces ---

def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def trace_series(attribution, reduction=None) -> list[dict]:
    """The traces drawn in the panel, one dict per row entry.

    Row 0: the model's response ``F(s_t) - F(0)`` (white) and, with a
    reduction, the reduced circuit's response (magenta). Then one row per
    kept channel (all channels without a reduction) with ``A_c(t)`` in the
    channel's colour.
    """
    series = [{"label": "model response", "kind": "response", "channel": -1, "row": 0,
               "values": np.asarray(attribution.response, np.float32), "color": _rgba(RESPONSE_COLOR)}]
    if reduction is not None:
        series.append({"label": f"reduced circuit (EV {reduction.explained_variance:.2f})", "kind": "reduced",
                       "channel": -1, "row": 0,
                       "values": np.asarray(reduction.reduced_response, np.float32),
                       "color": _rgba(REDUCED_COLOR)})
        chans = list(reduction.kept)
    else:
        chans = list(range(attribution.channels.shape[1]))
    for r, c in enumerate(chans, start=1):
        series.append({"label": channel_label(c, reduction), "kind": "channel", "channel": int(c), "row": r,
                       "values": np.asarray(attribution.channels[:, c], np.float32), "color": channel_color(c)})
    return series


def trace_panel_geometry(geometry: dict, n_rows: int, vmax: float) -> dict:
    """Where the trace panel sits (world units, y/x µm) and how values map to it.

    ``x(t) = x0 + t·dx`` for stimulus frame ``t``; ``y = yc[row] - value·gain``.
    """
    (st, sy, sx), (tt, ty, tx) = geometry["scale"], geometry["translate"]
    T, H, W = geometry["shape"]
    top, height = ty - sy / 2, H * sy
    left_stim, width_stim = tx - sx / 2, W * sx
    x0 = left_stim + width_stim * 1.12
    width = 2.0 * width_stim
    bottom_margin = 0.12 * height
    rh = (height - bottom_margin) / max(n_rows, 1)
    yc = [top + (r + 0.5) * rh for r in range(n_rows)]
    gain = 0.45 * rh / vmax if vmax > 0 else 0.0
    dx = width / max(T - 1, 1)
    return {"x0": x0, "dx": dx, "width": width, "top": top, "height": height, "row_height": rh,
            "yc": yc, "gain": gain, "vmax": vmax, "n_frames": T, "frame_ms": st, "t0_ms": tt,
            "axis_y": top + height - bottom_margin * 0.6, "line_width": max(width_stim * 0.004, 1e-9)}


def _segments(values: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive finite frames, as index arrays."""
    ok = np.isfinite(values)
    if not ok.any():
        return []
    idx = np.flatnonzero(ok)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    return np.split(idx, breaks + 1)


def _decimate(t: np.ndarray, v: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if len(t) <= max_points:
        return t, v
    nb = max_points // 2
    edges = np.linspace(0, len(t), nb + 1).astype(int)
    tt, vv = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = v[a:b]
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        for k in sorted((i, j)):
            tt.append(t[k])
            vv.append(v[k])
    return np.asarray(tt), np.asarray(vv)


def trace_layer_data(attribution, reduction=None, geometry: Optional[dict] = None, prefix: str = "",
                     max_points: int = MAX_TRACE_POINTS) -> list[tuple]:
    """Shapes/points layer-data tuples of the trace panel.

    Returns ``[traces, axes, labels, cursor]``:

    - ``traces`` (Shapes, paths): one path per trace and run of attributed
      frames; ``metadata["napari_retina"]`` holds the panel geometry and the
      plotted arrays (``series``: label → values (T,)), so values can be read
      back as ``(yc[row] - y) / gain`` at ``t = (x - x0) / dx``;
    - ``axes`` (Shapes): the time axis with ticks and a zero line per row;
    - ``labels`` (Points): a coloured legend dot with the trace name per row,
      tick labels in ms;
    - ``cursor`` (Shapes): the vertical time cursor (moved by
      :func:`._viewer.connect_time_cursor`).
    """
    geo = geometry or layer_geometry(shape=attribution.stimulus.shape)
    series = trace_series(attribution, reduction)
    n_rows = max(s["row"] for s in series) + 1
    vals = np.concatenate([s["values"][np.isfinite(s["values"])] for s in series] + [np.zeros(1)])
    vmax = float(np.abs(vals).max()) or 1.0
    p = trace_panel_geometry(geo, n_rows, vmax)
    lw = p["line_width"]

    paths, colors, feats = [], [], {"label": [], "kind": [], "channel": [], "row": []}
    for s in series:
        for seg in _segments(s["values"]):
            t, v = _decimate(seg.astype(float), s["values"][seg].astype(float), max_points)
            if len(t) == 1:  # a path needs two vertices
                t, v = np.r_[t, t + 0.5], np.r_[v, v]
            paths.append(np.column_stack([p["yc"][s["row"]] - v * p["gain"], p["x0"] + t * p["dx"]]))
            colors.append(s["color"])
            for k in feats:
                feats[k].append(s[k])
    meta = {META: {"role": "traces", "panel": p, "cells": list(attribution.cells),
                   "series": {s["label"]: s["values"] for s in series},
                   "rows": {s["label"]: s["row"] for s in series},
                   "channels": {s["label"]: s["channel"] for s in series}}}
    common = {"units": ("um", "um"), "axis_labels": ("y", "x")}
    traces = (paths, {**common, "name": f"{prefix}traces", "shape_type": "path", "edge_color": colors,
                      "edge_width": 2 * lw, "face_color": "transparent", "opacity": 1.0,
                      "features": feats, "metadata": meta}, "shapes")

    # axes: time axis with ticks (labelled in ms) and a zero line per row
    T, fms = p["n_frames"], p["frame_ms"]
    ax_paths, ax_text = [], []
    x_end = p["x0"] + (T - 1) * p["dx"]
    ax_paths.append(np.array([[p["axis_y"], p["x0"]], [p["axis_y"], x_end]]))
    ax_text.append("")
    step = _nice_step(max(T - 1, 1) * fms)
    tick_len = 0.02 * p["height"]
    for tick in np.arange(0, (T - 1) * fms + 1e-9, step):
        x = p["x0"] + tick / fms * p["dx"]
        ax_paths.append(np.array([[p["axis_y"], x], [p["axis_y"] + tick_len, x]]))
        ax_text.append(f"{tick:g}")
    for yc in p["yc"]:
        ax_paths.append(np.array([[yc, p["x0"]], [yc, x_end]]))
        ax_text.append("")
    axes = (ax_paths, {**common, "name": f"{prefix}trace axes", "shape_type": "path", "edge_color": AXIS_COLOR,
                       "edge_width": lw, "face_color": "transparent", "opacity": 0.8,
                       "features": {"text": ax_text},
                       "text": {"string": "{text}", "color": "#cccccc", "size": 9, "anchor": "center",
                                "translation": [3.5 * tick_len, 0]},
                       "metadata": {META: {"role": "trace_axes"}}}, "shapes")

    # legend: a coloured dot and the trace's name right of each row (two lines when a row holds two
    # traces), the time unit under the axis, and the shared vertical scale
    dot = 0.03 * p["height"]
    pts, texts, face = [], [], []
    seen: dict[int, int] = {}
    for s in series:
        k = seen.get(s["row"], 0)
        seen[s["row"]] = k + 1
        y = p["yc"][s["row"]] - 0.2 * p["row_height"] + k * 0.4 * p["row_height"]
        pts.append((y, x_end + 0.03 * p["width"]))
        texts.append(s["label"])
        face.append(s["color"])
    pts.append((p["axis_y"] + 3.5 * tick_len, x_end + 0.03 * p["width"]))
    texts.append("time (ms)")
    face.append([0, 0, 0, 0])
    pts.append((p["axis_y"] + 9 * tick_len, p["x0"]))
    texts.append(f"each row spans ±{vmax:.3g} spikes per 10 ms bin")
    face.append([0, 0, 0, 0])
    labels = (np.asarray(pts, float), {**common, "name": f"{prefix}trace labels", "features": {"text": texts},
                                       "text": {"string": "{text}", "color": "white", "size": 9,
                                                "anchor": "upper_left", "translation": [0.9 * dot, 0.8 * dot]},
                                       "face_color": np.asarray(face, float), "border_width": 0,
                                       "size": dot, "metadata": {META: {"role": "trace_labels"}}}, "points")
    cursor = ([cursor_line(p, 0)], {**common, "name": f"{prefix}time cursor", "shape_type": "path",
                                    "edge_color": CURSOR_COLOR, "edge_width": 1.5 * lw,
                                    "face_color": "transparent", "opacity": 0.9,
                                    "metadata": {META: {"role": "cursor", "panel": p, "frame": 0}}}, "shapes")
    return [traces, axes, labels, cursor]


def cursor_line(panel: dict, frame: float) -> np.ndarray:
    """The cursor's path (2 vertices, y/x µm) at stimulus ``frame``."""
    x = panel["x0"] + float(frame) * panel["dx"]
    return np.array([[panel["top"], x], [panel["axis_y"], x]])


def frame_at(panel: dict, world_t_ms: float) -> int:
    """Stimulus frame under world time ``world_t_ms`` (clipped to the movie)."""
    f = int(round((world_t_ms - panel["t0_ms"]) / panel["frame_ms"]))
    return int(min(max(f, 0), panel["n_frames"] - 1))


# ---------------------------------------------------------------- analysis ---

def analysis_layer_data(attribution, reduction=None, geometry: Optional[dict] = None, maps=None,
                        limit: Optional[float] = None, prefix: str = "") -> list[tuple]:
    """All layer-data tuples of one analysis: channel maps, then the trace panel."""
    geo = geometry or layer_geometry(shape=attribution.stimulus.shape)
    return (map_layer_data(attribution, reduction, geo, maps=maps, limit=limit, prefix=prefix)
            + trace_layer_data(attribution, reduction, geo, prefix=prefix))
