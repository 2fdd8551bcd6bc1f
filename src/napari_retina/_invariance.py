"""Is a stimulus uniform over space, or along one axis? (the cheap exact conv1 paths)

A (T, H, W) stimulus that is uniform along y (every column constant: bars that
vary along x), along x, or over space (full-field) lets the first layer be
computed as a 1-D convolution or a product with the kernels' spatial sums
(:class:`napari_retina.first_layer.FirstLayer`, ``nr.attribute``'s
``invariance``). This module decides which, in one place for the whole package.

An axis counts as uniform when every value lies within
``UNIFORM_RTOL·max(1, max|s|)`` of its mean along that axis (float32 rounding
level), the means and differences taken in float64; ``max|s|`` is over the whole
stimulus, so the answer does not depend on how it is cut into chunks.

The check streams over chunks of frames: two passes (``max|s|``, then the
deviations, stopping as soon as neither axis can be uniform) that each hold
one chunk's float64 temporary (about ``8·CHUNK_ELEMENTS`` bytes), so memory
stays bounded whatever the movie's length. Array-likes that slice lazily
(``np.memmap``, dask) are read one chunk at a time.

>>> stimulus_invariance(np.ones((100, 50, 50), np.float32))   # full field
'space'
>>> resolve_invariance(np.random.default_rng(0).random((10, 8, 8)), "auto")
'none'
"""

from __future__ import annotations

from typing import Iterator, Literal, Optional, get_args

import numpy as np

from ._types import ArrayLike
from ._validate import check_int

InvarianceArg = Literal["auto", "none", "x", "y", "space"]
"""What an ``invariance`` argument accepts: "auto" picks the most specific that holds."""
Invariance = Literal["none", "x", "y", "space"]
"""A resolved invariance: "none", uniform along "x" or "y", or over "space"."""
INVARIANCES: tuple[str, ...] = get_args(InvarianceArg)
"""Values of ``invariance``: "auto" picks the most specific that holds."""
UNIFORM_RTOL = 1e-6
"""An axis is uniform when every value is within ``UNIFORM_RTOL·max(1, max|s|)`` of its mean."""
CHUNK_ELEMENTS = 2**20
"""Stimulus values per chunk (8 MiB of float64 temporaries)."""


def _check_stack(stimulus):
    """``stimulus`` itself when it is a non-empty real (T, H, W) array-like, else a clear error."""
    if not hasattr(stimulus, "shape") or not hasattr(stimulus, "dtype"):
        stimulus = np.asarray(stimulus)
    shape, dtype = tuple(stimulus.shape), np.dtype(stimulus.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == bool):
        raise TypeError(f"stimulus must hold real numbers, got dtype {dtype}")
    if len(shape) != 3:
        raise ValueError(f"stimulus must be a (T, H, W) stack, got {len(shape)} dimension(s) with shape {shape}")
    if 0 in shape:
        raise ValueError(f"stimulus must not be empty, got shape {shape}")
    return stimulus


def _chunks(stimulus, chunk_frames: Optional[int]) -> Iterator[np.ndarray]:
    """Consecutive (n, H, W) NumPy blocks of ``stimulus``, n = ``chunk_frames`` (default: CHUNK_ELEMENTS values)."""
    T, H, W = stimulus.shape
    n = max(1, CHUNK_ELEMENTS // (H * W)) if chunk_frames is None else check_int(chunk_frames, "chunk_frames", 1)
    for a in range(0, T, n):
        yield np.asarray(stimulus[a : a + n])


def _max_abs(stimulus, chunk_frames: Optional[int]) -> float:
    """max|s| over the stack (NaN values are skipped; they make every axis non-uniform anyway)."""
    m = 0.0
    for block in _chunks(stimulus, chunk_frames):
        m = max(m, float(block.max()), -float(block.min()))  # float() first: -uint8 wraps
    return m


def _deviation(block: np.ndarray, axis: int) -> float:
    """max |s − mean_axis(s)| of one (n, H, W) block, in float64 (NaN if the block holds NaN/inf)."""
    dev = block - block.mean(axis=axis, keepdims=True, dtype=np.float64)
    return float(np.abs(dev, out=dev).max())


def uniform_axes(stimulus, chunk_frames: Optional[int] = None) -> tuple[bool, bool]:
    """(uniform along y, uniform along x) of a (T, H, W) stimulus, streamed over chunks of frames.

    Parameters
    ----------
    stimulus : array-like (T, H, W), any real dtype; sliced ``chunk_frames``
        frames at a time, never copied whole.
    chunk_frames : int, optional
        Frames per chunk (default: ``CHUNK_ELEMENTS // (H·W)``); the answer
        does not depend on it.

    Returns
    -------
    (uy, ux) : bools. "Uniform along y" means rows are identical (the stimulus
        varies along x only), within ``UNIFORM_RTOL·max(1, max|s|)``.
    """
    stimulus = _check_stack(stimulus)
    tol = UNIFORM_RTOL * max(1.0, _max_abs(stimulus, chunk_frames))
    uy = ux = True
    for block in _chunks(stimulus, chunk_frames):
        uy = uy and _deviation(block, 1) <= tol  # NaN compares False: not uniform
        ux = ux and _deviation(block, 2) <= tol
        if not (uy or ux):
            break
    return uy, ux


def stimulus_invariance(stimulus, chunk_frames: Optional[int] = None) -> Invariance:
    """The most specific of "space", "y", "x", "none" that a (T, H, W) stimulus satisfies.

    "space": uniform over space (full field); "y": uniform along y (bars
    varying along x); "x": uniform along x; "none": neither. See
    :func:`uniform_axes` for the tolerance and ``chunk_frames``.

    >>> bars = np.repeat(np.arange(5.0)[None, None, :], 4, axis=1)[[0, 0]]  # (2, 4, 5)
    >>> stimulus_invariance(bars)
    'y'
    """
    return _most_specific(*uniform_axes(stimulus, chunk_frames))


def _most_specific(uy: bool, ux: bool) -> Invariance:
    return "space" if (uy and ux) else "y" if uy else "x" if ux else "none"


def check_invariance(invariance) -> InvarianceArg:
    """``invariance`` if it is one of :data:`INVARIANCES`, else a ValueError naming them."""
    if not isinstance(invariance, str) or invariance not in INVARIANCES:
        raise ValueError(
            f"invariance must be one of {', '.join(repr(i) for i in INVARIANCES)}, got {invariance!r}"
        )
    return invariance


def resolve_invariance(block: ArrayLike, invariance: InvarianceArg, chunk_frames: Optional[int] = None) -> Invariance:
    """Check/choose the invariance on the (frames, H, W) block that the windows use.

    ``invariance="auto"`` returns :func:`stimulus_invariance` of ``block``;
    "none" is always allowed; "space", "y" or "x" are returned when ``block``
    satisfies them and otherwise raise a ValueError naming the axis along which
    it varies (a weaker one than detected is allowed: "y" on a full field).
    ``block``: any real (frames, H, W) array-like that slices (NumPy, ``np.memmap``,
    dask), read ``chunk_frames`` frames at a time as in :func:`uniform_axes`.
    """
    check_invariance(invariance)
    if invariance == "none":
        _check_stack(block)
        return invariance
    uy, ux = uniform_axes(block, chunk_frames)
    if invariance == "auto":
        return _most_specific(uy, ux)
    if invariance == "space" and not (uy and ux):
        varies = " and ".join(a for a, u in (("y", uy), ("x", ux)) if not u)
        raise ValueError(
            f"invariance 'space' needs a spatially uniform stimulus, but it varies along {varies}; "
            "use invariance='auto' or 'none'"
        )
    if invariance == "y" and not uy:
        raise ValueError(
            "invariance 'y' needs a stimulus uniform along y (rows identical), but it varies along y; "
            "use invariance='auto' or 'none'"
        )
    if invariance == "x" and not ux:
        raise ValueError(
            "invariance 'x' needs a stimulus uniform along x (columns identical), but it varies along x; "
            "use invariance='auto' or 'none'"
        )
    return invariance
