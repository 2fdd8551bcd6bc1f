"""Input checks shared by every public entry point (DESIGN.md, bad input policy).

Each check fails with one sentence that says what was expected and what came
in, as a ValueError or TypeError, before any torch code runs.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import numpy as np

Crop = Union[None, str, Sequence[int]]


def _describe(arr: np.ndarray) -> str:
    return f"an array of shape {tuple(arr.shape)} and dtype {arr.dtype}"


def as_stack(stimulus, name: str = "stimulus", colour: bool = False) -> np.ndarray:
    """Check that ``stimulus`` is a finite, non-empty numeric (T, H, W) stack.

    ``colour=True`` says the source knows its pixels hold colour samples (an
    RGB TIFF's metadata): refused whatever the shape, even a single (H, W, 3)
    image that would pass for H frames. Returns a NumPy array of its own dtype
    (no copy when possible).
    """
    if isinstance(stimulus, (str, bytes)) or stimulus is None:
        raise TypeError(f"{name} must be a (T, H, W) array of numbers, got {type(stimulus).__name__}")
    try:
        arr = np.asarray(stimulus)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a (T, H, W) array of numbers, got {type(stimulus).__name__}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers (integers or floats), got dtype {arr.dtype}")
    if colour or (arr.ndim == 4 and arr.shape[-1] in (3, 4)):
        kind = "stack" if arr.ndim == 4 else "image"
        raise ValueError(
            f"{name} must be a greyscale (T, H, W) stack, got an RGB(A) {kind} of shape {arr.shape}; "
            "convert it to luminance first"
        )
    if arr.ndim != 3:
        hint = " (a single frame: add a time axis)" if arr.ndim == 2 else ""
        raise ValueError(f"{name} must be a (T, H, W) stack, got {arr.ndim} dimension(s) with shape {arr.shape}{hint}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")
    return arr


def crop_to(arr: np.ndarray, size: int, crop: Crop, name: str = "stimulus") -> np.ndarray:
    """Crop a (T, H, W) stack to ``size × size``.

    ``crop=None`` refuses a stack of another size; ``"center"`` takes the centre;
    ``(y0, x0)`` takes ``[y0:y0+size, x0:x0+size]``.
    """
    h, w = arr.shape[1:]
    if (h, w) == (size, size) and crop in (None, "center", "centre"):
        return arr
    if crop is None:
        raise ValueError(
            f"{name} is {h}x{w} pixels but the model expects {size}x{size}; "
            "pass crop='center' or crop=(y0, x0) to cut a window out of a larger stack"
        )
    if isinstance(crop, str):
        if crop not in ("center", "centre"):
            raise ValueError(f"crop must be None, 'center' or (y0, x0), got {crop!r}")
        y0, x0 = (h - size) // 2, (w - size) // 2
    else:
        try:
            y0, x0 = (int(c) for c in crop)
        except Exception as exc:
            raise ValueError(f"crop must be None, 'center' or (y0, x0), got {crop!r}") from exc
    if y0 < 0 or x0 < 0 or y0 + size > h or x0 + size > w:
        raise ValueError(
            f"a {size}x{size} crop at (y0={y0}, x0={x0}) does not fit inside the {h}x{w} {name}"
        )
    return arr[:, y0 : y0 + size, x0 : x0 + size]


def normalise(arr: np.ndarray, norm: Optional[dict] = None) -> np.ndarray:
    """Map a stack to float32 contrast units.

    Float stacks are taken to be in contrast units already (0 = mean luminance)
    and are only cast. Integer stacks (uint8 TIFFs, say) are raw intensities:
    with a checkpoint whose ``norm["units"] == "raw"`` they are mapped as
    ``(x - mean) / std`` with its stored statistics; otherwise they are z-scored
    by their own mean and standard deviation (contrast about their own mean
    luminance; a constant stack maps to zeros).
    """
    if np.issubdtype(arr.dtype, np.floating):
        return np.ascontiguousarray(arr, dtype=np.float32)
    x = arr.astype(np.float64)
    if norm is not None and norm.get("units") == "raw":
        mean, std = float(norm["mean"]), float(norm["std"])
    else:
        mean, std = float(x.mean()), float(x.std())
        std = std if std > 0 else 1.0
    return ((x - mean) / std).astype(np.float32)


def as_stimulus(
    stimulus,
    *,
    history: Optional[int] = None,
    size: Optional[int] = None,
    crop: Crop = None,
    norm: Optional[dict] = None,
    name: str = "stimulus",
) -> np.ndarray:
    """Validate, crop and normalise a stimulus for a model.

    Returns float32 (T, size, size) in contrast units. Fails when the stack is
    not (T, H, W), is empty, RGB, non-numeric, non-finite, has fewer than
    ``history`` frames, or is not ``size × size`` (unless ``crop`` is given).
    """
    arr = as_stack(stimulus, name)
    if history is not None and arr.shape[0] < history:
        raise ValueError(
            f"{name} has {arr.shape[0]} frame(s) but the model needs at least its history of "
            f"{history} frames ({history * 10} ms)"
        )
    if size is not None:
        arr = crop_to(arr, size, crop, name)
    return normalise(arr, norm)


def check_int(value, name: str, low: int = 0, high: Optional[int] = None) -> int:
    """An int in ``[low, high)`` (``high=None``: no upper bound), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value >= high):
        rng = f">= {low}" if high is None else f"in [{low}, {high - 1}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def check_cells(cell, n_cells: int) -> list[int]:
    """Normalise ``cell`` (an int, a list of ints or ``"all"``) to a list of indices."""
    if isinstance(cell, str):
        if cell != "all":
            raise ValueError(f"cell must be an index, a list of indices or 'all', got {cell!r}")
        return list(range(n_cells))
    if isinstance(cell, (list, tuple, np.ndarray)):
        if len(cell) == 0:
            raise ValueError("cell must name at least one cell, got an empty list")
        cells = [check_int(c, "cell", 0, n_cells) for c in cell]
        if len(set(cells)) != len(cells):
            raise ValueError(f"cell lists each cell once, got {list(cell)}")
        return cells
    return [check_int(cell, f"cell (the model has {n_cells} cells)", 0, n_cells)]


def check_positive(value, name: str) -> float:
    """A finite number > 0, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)
