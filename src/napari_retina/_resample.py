"""Area-weighted resampling of a stack to the model's pixels and frames, for a stimulus drawn at another pixel size
or shown at another frame interval.

The model's pixel is :data:`~napari_retina._units.PIXEL_UM` (55 µm) on the
retina. A stack whose pixels are ``pixel_um`` µm (y, x) is laid on the model's
grid from its top-left edge: model pixel ``j`` covers ``[j·55, (j+1)·55)`` µm,
stack pixel ``i`` covers ``[i·p, (i+1)·p)`` µm, and the model pixel's value is
the mean of the stack over its area (each stack pixel weighted by the length
of their overlap, along y and along x). That is what a photoreceptor mosaic
does with light, and it is linear: a grey stack stays grey, contrast stays
contrast, and a pixel size of 27.5 µm averages 2 × 2 blocks exactly. Only
whole model pixels inside the stack are kept (``floor(H·p/55)`` rows, a thousandth of a pixel short counting
as whole: :data:`WHOLE_PIXEL_SLACK`).

Time is resampled the same way for a stimulus shown at another frame interval
than the model's :data:`~napari_retina._units.FRAME_MS` (10 ms): a monitor holds
frame ``i`` over ``[i·Δ, (i+1)·Δ)`` ms, and the model's bin ``k``, ``[k·10,
(k+1)·10)`` ms, is the mean of the frames shown during it, each weighted by the
time it was on (what photoreceptors integrate). A 5 ms stack averages frame
pairs exactly, a 20 ms one repeats each frame twice. Only whole bins are kept
(``floor(T·Δ/10)``, with the same slack).

Pure numpy; the checks of what a caller passes are
:func:`napari_retina._validate.check_pixel_um`'s and :func:`~napari_retina._validate.check_frame_ms`'s.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ._progress import Progress, report
from ._units import FRAME_MS, PIXEL_UM

#: a stack size within this fraction of a whole model pixel counts as that pixel: 27.5 µm × 100 is 50 pixels
#: whatever the float rounding of 27.5·100/55, and 150 pixels of 18.3333 µm (55/3 written to 4 decimals, as a
#: dock's box holds it) are 50, not 49 (the last model pixel then averages the stack it covers, 99.9% of it)
WHOLE_PIXEL_SLACK = 1e-3
#: float rounding of a pixel edge, in stack pixels (an edge this close to a whole pixel lies on it)
EDGE_ROUNDING = 1e-9


def model_frame_shape(frame_shape: Sequence[int], pixel_um: Optional[tuple[float, float]]) -> tuple[int, int]:
    """(H', W'): how many whole model pixels a (H, W) frame of ``pixel_um`` (y, x) µm pixels covers.

    ``pixel_um`` None: the frame's own shape (its pixels are the model's).

    >>> model_frame_shape((100, 120), (27.5, 27.5))
    (50, 60)
    """
    h, w = int(frame_shape[0]), int(frame_shape[1])
    if pixel_um is None:
        return h, w
    return tuple(int(np.floor(n * p / PIXEL_UM + WHOLE_PIXEL_SLACK)) for n, p in zip((h, w), pixel_um))


def model_frame_count(n_frames: int, frame_ms: Optional[float]) -> int:
    """How many whole 10 ms model frames ``n_frames`` frames of ``frame_ms`` ms span (``n_frames`` for None).

    >>> model_frame_count(120, 1000 / 60)
    200
    """
    if frame_ms is None:
        return int(n_frames)
    return int(np.floor(int(n_frames) * float(frame_ms) / FRAME_MS + WHOLE_PIXEL_SLACK))


def area_weights(pixel: float, first: int, n_out: int, n_in: int,
                 unit: float = PIXEL_UM) -> tuple[slice, np.ndarray]:
    """The stack pixels under model pixels ``first … first + n_out − 1`` along one axis, and their weights.

    Returns ``(rows, weights)``: ``rows`` a slice of the stack's axis (of
    length ``n_in``), ``weights`` float64 (n_out, len(rows)), each row the
    overlap of a model pixel with each stack pixel as a fraction of the model
    pixel (rows sum to 1). The model pixels must lie inside the stack (the last may pass its edge by
    ``WHOLE_PIXEL_SLACK``: its row then averages the part inside). ``pixel`` is the stack's pixel and
    ``unit`` the model's, in the same unit: µm (default, the model's 55 µm) or, along time, the stack's frame
    interval and the model's :data:`~napari_retina._units.FRAME_MS`.
    """
    scale = float(unit) / float(pixel)                 # stack pixels per model pixel
    edges = (first + np.arange(n_out + 1)) * scale     # model pixel edges, in stack pixels
    lo = int(np.floor(edges[0] + EDGE_ROUNDING))
    hi = min(n_in, int(np.ceil(edges[-1] - EDGE_ROUNDING)))
    cells = np.arange(lo, hi, dtype=np.float64)        # each stack pixel's left edge
    overlap = (np.minimum(edges[1:, None], cells[None, :] + 1) - np.maximum(edges[:-1, None], cells[None, :]))
    weights = np.clip(overlap, 0.0, None)
    return slice(lo, hi), weights / weights.sum(axis=1, keepdims=True)


def resample_window(arr: np.ndarray, pixel_um: Optional[tuple[float, float]], origin: tuple[int, int],
                    size: Optional[int], mean: float = 0.0, std: float = 1.0, chunk_values: int = 1 << 22,
                    frame_ms: Optional[float] = None, bins: Optional[tuple[int, int]] = None,
                    first_frame: int = 0, progress: Optional[Progress] = None) -> np.ndarray:
    """The ``size × size`` window at model pixel ``origin`` (y0, x0) of a (T, H, W) stack of ``pixel_um`` (y, x)
    µm pixels shown at ``frame_ms`` ms per frame, on the model's 55 µm, 10 ms grid, standardised: float32
    (T', size, size), ``(resampled − mean) / std``, ``T'`` = :func:`model_frame_count`.

    ``pixel_um`` None: the stack's pixels are the model's (the window is cut,
    ``size`` None keeps the whole frame); ``frame_ms`` None: its frames are.
    Each model frame is ``Σ_i w_ti · Wy · frame_i · Wxᵀ`` (:func:`area_weights`
    along time, y and x) in float64, a chunk of about ``chunk_values`` stack
    values at a time: no float64 copy of a long movie. The weights sum to 1,
    so standardising after resampling is standardising before it. ``bins``
    (with ``frame_ms``): the model frames ``(start, stop)`` wanted (default
    all), of a movie whose frame ``first_frame`` is ``arr[0]`` (a part of a
    longer movie, read from a file: ``arr`` must hold the frames those bins
    cover, :func:`area_weights`' rows). ``progress`` is called as ``progress(0, T')`` before each chunk, so
    that a Cancel acts during a long resampling (13.8 s for 50,000 frames of 100×100 px at 60 Hz): the work it
    precedes reports its own progress from 0.
    """
    y0, x0 = origin
    if pixel_um is None:
        rows, cols = (slice(None), slice(None)) if size is None else source_window(arr.shape[1:], None, origin, size)
        wy = wx = None
    else:
        rows, wy = area_weights(pixel_um[0], y0, size, arr.shape[1])
        cols, wx = area_weights(pixel_um[1], x0, size, arr.shape[2])
    src = arr[:, rows, cols]                           # a view: nothing outside the window is read
    start, stop = (0, model_frame_count(len(arr), frame_ms)) if bins is None else bins
    n_out = stop - start
    out_frame = src.shape[1:] if wy is None else (size, size)
    out = np.empty((n_out, *out_frame), dtype=np.float32)
    per_model_frame = 1.0 if frame_ms is None else max(1.0, FRAME_MS / float(frame_ms))   # stack frames read
    step = max(1, int(chunk_values / (max(1, src.shape[1] * src.shape[2]) * per_model_frame)))
    for k in range(0, n_out, step):
        report(progress, 0, n_out)
        n = min(step, n_out - k)
        if frame_ms is None:
            block = src[k:k + n].astype(np.float64)
        else:
            frames, wt = area_weights(frame_ms, start + k, n, first_frame + len(arr), unit=FRAME_MS)
            block = band_sum(src[frames.start - first_frame:frames.stop - first_frame], wt)
        if wy is not None:
            block = wy @ block @ wx.T
        out[k:k + n] = (block - mean) / std
    return out


def band_sum(frames: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ frames`` along the first axis, float64 (n, *frame): ``weights`` (n, len(frames)), each row
    a run of positive weights among zeros (:func:`area_weights`' rows), of which only the run is read.

    A bin overlaps one to ``ceil(10 / frame_ms) + 1`` frames: reading the run
    costs ``n · run · H · W``, where the dense product would cost ``n ·
    len(frames) · H · W`` (33,333 bins of 50 × 50 from 20,000 frames at 60 Hz:
    ×3.2 faster, BENCHMARKS.md "Resampling").
    """
    positive = weights > 0
    first = positive.argmax(axis=1)                    # each row's run starts here
    run = int(positive.sum(axis=1).max())
    cols = first[:, None] + np.arange(run)
    inside = cols < weights.shape[1]
    cols = np.minimum(cols, weights.shape[1] - 1)
    w = np.where(inside, np.take_along_axis(weights, cols, axis=1), 0.0)
    out = np.zeros((len(weights), *frames.shape[1:]))
    for j in range(run):
        out += w[:, j].reshape((-1,) + (1,) * (frames.ndim - 1)) * frames[cols[:, j]]
    return out


def source_window(frame_shape: Sequence[int], pixel_um: Optional[tuple[float, float]], origin: tuple[int, int],
                  size: int) -> tuple[slice, slice]:
    """The (rows, cols) of a (H, W) stack of ``pixel_um`` pixels (None: the model's) that the ``size``-pixel model
    window at ``origin`` covers (the stack values :func:`resample_window` reads)."""
    if pixel_um is None:
        return slice(origin[0], origin[0] + size), slice(origin[1], origin[1] + size)
    rows, _ = area_weights(pixel_um[0], origin[0], size, int(frame_shape[0]))
    cols, _ = area_weights(pixel_um[1], origin[1], size, int(frame_shape[1]))
    return rows, cols
