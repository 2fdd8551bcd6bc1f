"""Input checks shared by every public entry point (DESIGN.md, bad input policy).

Each check fails with one sentence that says what was expected and what came
in, as a ValueError or TypeError, before any torch code runs.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from ._progress import Progress
from ._resample import model_frame_count, model_frame_shape, resample_window, source_window
from ._units import FRAME_MS, PIXEL_UM

Crop = Union[None, str, Sequence[int]]
Normalize = Union[bool, str]

#: the largest magnitude a stimulus value may have: the model computes in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: a float stack warns (:class:`StimulusUnitsWarning`) when its |mean| exceeds
#: ``UNITS_MEAN_LIMIT`` or its std exceeds ``UNITS_STD_LIMIT`` times the std of
#: the contrast stimulus the model was trained on (:func:`training_contrast_std`)
UNITS_MEAN_LIMIT = 3.0
UNITS_STD_LIMIT = 10.0
#: a float stack also warns when it has no value below 0 (mean luminance), fewer than ``UNITS_GREY_SHARE`` of
#: its values grey (:func:`grey_count`: 0 across a whole row or column of a frame) and a mean above
#: ``UNITS_POSITIVE_MEAN`` times the training std: intensities (0–1, say), not contrast, which puts half its
#: values below 0 and a stimulus of bright flashes or bars on grey many values at grey (a uniform stack, std 0,
#: does not warn: a full-field step in contrast and one grey level look the same; binary noise stored as 0/1,
#: whose zeros are scattered, does)
UNITS_GREY_SHARE = 0.01
UNITS_POSITIVE_MEAN = 0.1
#: a stack z-scored by its own statistics warns when one value, held by at least ``GREY_SHARE`` of its values and
#: ``GREY_LEAD`` times as many as any other (a grey background: flashes or bars on grey; binary noise's two
#: levels, half the values each, are not), lands more than ``GREY_SHIFT_LIMIT`` contrast units from 0
GREY_SHARE = 0.5
GREY_LEAD = 2.0
GREY_SHIFT_LIMIT = 0.05


class StimulusUnitsWarning(UserWarning):
    """A float stimulus whose statistics are far from the contrast units the model was trained on, or a stack
    z-scored by its own statistics whose grey background does not land at 0."""


def as_real_array(value, not_array: str, not_real: str) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (integers or floats; not bools), or a TypeError.

    ``not_array``: the sentence (without "got ...") for what is no array of
    numbers (None, text, a ragged list); ``not_real``: for an array of another
    dtype (bool, complex, object, strings). A torch tensor is read as its values
    (detached, on the CPU; bfloat16 as float32, which NumPy lacks); a masked array
    with masked entries is a ValueError (NumPy would hand over the values beneath
    the mask, which its maker meant not to be used).
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{not_array}, got {type(value).__name__}")
    torch = sys.modules.get("torch")   # a tensor can only come from a loaded torch
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, np.ma.MaskedArray) and np.ma.getmaskarray(value).any():
        what = not_array.split(" must ")[0]
        raise ValueError(f"{what} is a masked array with {int(np.ma.getmaskarray(value).sum())} masked value(s), "
                         "which would be used as the values beneath the mask; fill them first (e.g. .filled(0.0), "
                         "grey for a stimulus) or pass .data")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{not_array}, got {type(value).__name__}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{not_real}, got dtype {arr.dtype}")
    return arr


def as_stack(stimulus, name: str = "stimulus", colour: bool = False) -> np.ndarray:
    """Check that ``stimulus`` is a finite, non-empty numeric (T, H, W) stack.

    ``colour=True`` says the source knows its pixels hold colour samples (an
    RGB TIFF's metadata): refused whatever the shape, even a single (H, W, 3)
    image that would pass for H frames. Returns a NumPy array of its own dtype
    (no copy when possible).
    """
    if isinstance(stimulus, (str, os.PathLike)):
        raise TypeError(f"{name} must be a (T, H, W) array of numbers, got the path {str(stimulus)!r}; read the "
                        "file first: nr.io.read_stimulus(path)")
    arr = as_real_array(stimulus, f"{name} must be a (T, H, W) array of numbers",
                        f"{name} must hold real numbers (integers or floats)")
    if colour or (arr.ndim == 4 and arr.shape[-1] in (3, 4)):
        kind = "stack" if arr.ndim == 4 else "image"
        raise ValueError(
            f"{name} must be a greyscale (T, H, W) stack, got an RGB(A) {kind} of shape {arr.shape}; "
            "convert it to luminance first"
        )
    if arr.ndim != 3:
        # the hint only for what could be an image: (4 cells, 400 bins) of rates is not a frame
        image_like = arr.ndim == 2 and min(arr.shape) >= 8 and max(arr.shape) <= 4 * min(arr.shape)
        hint = " (a single frame: add a time axis)" if image_like else ""
        raise ValueError(f"{name} must be a (T, H, W) stack, got {arr.ndim} dimension(s) with shape {arr.shape}{hint}")
    check_not_empty(arr.shape, name)
    # chunk by chunk: no (T, H, W) boolean temporary (250 MB for 100,000 frames of 50×50)
    if np.issubdtype(arr.dtype, np.floating) and not all(np.isfinite(x).all() for x in frame_chunks(arr)):
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s)")
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 4:
        peak = max(float(arr.max()), -float(arr.min()))  # no |arr| copy of a long movie
        if peak > FLOAT32_MAX:
            raise ValueError(
                f"{name} must fit in float32 (|value| <= {FLOAT32_MAX:.3g}), the precision the model computes in, "
                f"got a value of magnitude {peak:.3g}"
            )
    return arr


CROP_FORMS = "None, 'none', 'center', (y0, x0) integers or the text 'y0,x0'"


def parse_crop(crop) -> Union[None, str, tuple[int, int]]:
    """The one reading of ``crop``, for the API and the command line alike.

    ``None`` or ``"none"`` → None (no crop); ``"center"`` or ``"centre"`` →
    ``"center"``; ``(y0, x0)`` (two ints) or the text ``"y0,x0"`` → ``(y0, x0)``,
    the top-left stimulus pixel of the window. Text is read case-insensitively
    with surrounding blanks ignored. Floats and bools are refused, not truncated.

    Example
    -------
    >>> parse_crop("2, 3"), parse_crop("Centre"), parse_crop("none")
    ((2, 3), 'center', None)
    """
    if crop is None:
        return None
    if isinstance(crop, str):
        text = crop.strip().lower()
        if text == "none":
            return None
        if text in ("center", "centre"):
            return "center"
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 2 and all(re.fullmatch(r"[+-]?[0-9]+", p) for p in parts):
            return int(parts[0]), int(parts[1])
        raise ValueError(f"crop must be {CROP_FORMS}, got {crop!r}")
    if isinstance(crop, (bytes, dict, set)) or not hasattr(crop, "__len__") or len(crop) != 2:
        raise ValueError(f"crop must be {CROP_FORMS}, got {crop!r}")
    if not all(is_int(c) for c in crop):
        raise ValueError(f"crop must be {CROP_FORMS}, got {crop!r} (whole pixel indices, not fractions or bools)")
    return int(crop[0]), int(crop[1])


def crop_origin(frame_shape: Sequence[int], size: int, crop: Crop) -> tuple[int, int]:
    """(y0, x0): the stimulus pixel at the corner of the ``size × size`` window that ``crop`` cuts.

    ``frame_shape`` is the stack's (H, W); ``crop`` is read by :func:`parse_crop`:
    None gives (0, 0) (nothing is cut), ``"center"`` the centred window's
    corner, ``(y0, x0)`` itself. Whether the window fits is :func:`crop_to`'s check.

    >>> crop_origin((60, 70), 50, "center")
    (5, 10)
    """
    crop = parse_crop(crop)
    if crop is None:
        return 0, 0
    if crop == "center":
        return (int(frame_shape[0]) - size) // 2, (int(frame_shape[1]) - size) // 2
    return crop


#: what to do about a stack larger than the model's frame, said by :func:`crop_to` (API and command line)
CROP_REMEDY = ("pass crop='center' or crop=(y0, x0) (command line: --crop center or --crop y0,x0) "
               "to cut a window out of a larger stack")


def crop_to(arr: np.ndarray, size: int, crop: Crop, name: str = "stimulus", remedy: str = CROP_REMEDY,
            small: Optional[str] = None) -> np.ndarray:
    """Crop a (T, H, W) stack to ``size × size``.

    ``crop`` is read by :func:`parse_crop`: None refuses a stack of another
    size; ``"center"`` takes the centre; ``(y0, x0)`` takes
    ``[y0:y0+size, x0:x0+size]``. A stack smaller than ``size`` is refused
    whatever the crop. ``remedy`` ends the sentence that refuses a larger stack
    without a crop: how the caller's user asks for one (default: the API's
    and the command line's :data:`CROP_REMEDY`; a batch spec, the Analyze dock say theirs);
    ``small`` the advice for a smaller stack (default :data:`SMALL_REMEDY`).
    """
    crop = parse_crop(crop)
    if tuple(arr.shape[1:]) == (size, size) and crop in (None, "center"):
        return arr
    # (size, size, T): frames of the model's size with time last, which a crop would cut into "frames" of rows
    time_last = (" (if time is its last axis, put it first: np.moveaxis(stack, -1, 0))"
                 if arr.shape[0] == arr.shape[1] == size and crop is None else "")
    y0, x0 = checked_origin(arr.shape[1:], size, crop, name, remedy, time_last, small or SMALL_REMEDY)
    return arr[:, y0 : y0 + size, x0 : x0 + size]


#: what to do about a stack smaller than the model's frame, said by :func:`checked_origin` (the command line
#: writes pixel_um as --pixel-um, a batch spec reads it as its key)
SMALL_REMEDY = ("if its pixels are larger than the model's {um:g} µm, pass their size in µm as pixel_um to resample "
                "it, else pad it to at least {size}x{size}")
#: the same advice when the stack was resampled already
RESAMPLED_SMALL_REMEDY = "pad it to at least {size}x{size} model pixels"


def checked_origin(frame_shape: Sequence[int], size: int, crop: Crop, name: str = "stimulus",
                   remedy: str = CROP_REMEDY, hint: str = "", small: str = SMALL_REMEDY) -> tuple[int, int]:
    """(y0, x0) of the ``size × size`` window ``crop`` cuts from frames of ``frame_shape`` (H, W), or the
    ValueError that says why none fits (:func:`crop_to`'s sentences; ``hint`` ends the first two, ``small``
    says what to do about a frame smaller than the window)."""
    crop = parse_crop(crop)
    h, w = int(frame_shape[0]), int(frame_shape[1])
    if h < size or w < size:  # no crop can help
        raise ValueError(
            f"{name} is {h}x{w} pixels, smaller than the {size}x{size} the model expects, and a crop cannot make "
            f"it larger; {small.format(um=PIXEL_UM, size=size)}{hint}"
        )
    if crop is None and (h, w) != (size, size):
        raise ValueError(f"{name} is {h}x{w} pixels but the model expects {size}x{size}{hint}; {remedy}")
    y0, x0 = crop_origin((h, w), size, crop)
    if y0 < 0 or x0 < 0 or y0 + size > h or x0 + size > w:
        raise ValueError(
            f"a {size}x{size} crop at (y0={y0}, x0={x0}) does not fit inside the {h}x{w} {name}"
        )
    return y0, x0


#: the pixel sizes :func:`check_pixel_um` takes, in words
PIXEL_UM_FORMS = "None, a positive number of µm, (y_um, x_um), or the text '27.5' or '20,25'"
#: the largest pixel size taken, µm (a metre: anything larger is a mistake, and overflows the grid's arithmetic)
MAX_PIXEL_UM = 1e6


def check_pixel_um(pixel_um, forms: str = PIXEL_UM_FORMS) -> Optional[tuple[float, float]]:
    """The one reading of ``pixel_um``, a stack's pixel size on the retina: ``(y_um, x_um)``, or None when the
    stack is used on the model's own grid (None, or the model's :data:`~napari_retina._units.PIXEL_UM`).

    A number is both sides; text (the command line's, a batch spec's) is one
    number or two separated by a comma. Bools, zero, negative, non-finite
    sizes and sizes above :data:`MAX_PIXEL_UM` are refused; ``forms`` says
    what is taken, in the caller's words (the command line's).

    >>> check_pixel_um("27.5"), check_pixel_um((55, 55)), check_pixel_um([20, 25])
    ((27.5, 27.5), None, (20.0, 25.0))
    """
    if pixel_um is None:
        return None
    value = pixel_um
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            value = [float(p) for p in parts] if len(parts) in (1, 2) else None
        except ValueError:
            value = None
    elif is_real(value) or (isinstance(value, np.ndarray) and value.ndim == 0 and is_real(value.item())):
        value = [float(value)]
    elif isinstance(value, (bytes, dict, set)) or not hasattr(value, "__len__") or not all(is_real(v) for v in value):
        value = None
    if value is None or len(value) not in (1, 2) or not all(math.isfinite(float(v)) and v > 0 for v in value):
        raise ValueError(f"pixel_um must be {forms}, got {pixel_um!r}")
    if max(float(v) for v in value) > MAX_PIXEL_UM:
        raise ValueError(f"pixel_um must be at most {MAX_PIXEL_UM:g} µm (a metre), got {pixel_um!r}")
    y_um, x_um = (float(value[0]), float(value[-1]))
    return None if np.allclose((y_um, x_um), PIXEL_UM, rtol=1e-9, atol=0) else (y_um, x_um)


#: the frame intervals :func:`check_frame_ms` takes, in words
FRAME_MS_FORMS = "None, a positive number of ms per frame, or its text ('16.5', or '1000/60' for a 60 Hz monitor)"
#: the longest frame interval taken, ms (10 s: each frame is repeated as that many 10 ms bins, a thousand here;
#: a longer one is most likely µs taken for ms, and a movie held that long is better stored as its bins)
MAX_FRAME_MS = 1e4


def check_frame_ms(frame_ms, forms: str = FRAME_MS_FORMS) -> Optional[float]:
    """The one reading of ``frame_ms``, the time a stack's frame was shown for (ms): a float, or None when the
    stack is used on the model's own time grid (None, or the model's :data:`~napari_retina._units.FRAME_MS`).

    Text (the command line's) is one number or a ratio of two ("1000/60": a
    60 Hz monitor's frames exactly, which no decimal is). Bools, zero, negative, non-finite
    intervals and intervals above :data:`MAX_FRAME_MS` are refused; ``forms``
    says what is taken, in the caller's words.

    >>> check_frame_ms(1000 / 60), check_frame_ms("1000/60"), check_frame_ms("10"), check_frame_ms(None)
    (16.666666666666668, 16.666666666666668, None, None)
    """
    if frame_ms is None:
        return None
    value = frame_ms
    if isinstance(value, str):
        parts = value.split("/")
        try:
            numbers = [float(part.strip()) for part in parts] if len(parts) in (1, 2) else None
            value = None if numbers is None else numbers[0] if len(numbers) == 1 else numbers[0] / numbers[1]
        except (ValueError, ZeroDivisionError):
            value = None
    elif is_real(value) or (isinstance(value, np.ndarray) and value.ndim == 0 and is_real(value.item())):
        value = float(value)
    else:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"frame_ms must be {forms}, got {frame_ms!r}")
    if value > MAX_FRAME_MS:
        raise ValueError(f"frame_ms must be at most {MAX_FRAME_MS:g} ms (10 s; µs taken for ms?), got {frame_ms!r}")
    return None if np.isclose(value, FRAME_MS, rtol=1e-9, atol=0) else value


def stored_frame_ms(stored) -> Optional[float]:
    """A frame interval read back from a file (a saved analysis, a batch store), as :func:`check_frame_ms` reads a
    caller's: None for none stored or the model's 10 ms; a ValueError for anything but a number (files hold
    numbers, not text) or a number it refuses. Each reader says which file is damaged."""
    if stored is None:
        return None
    if not is_real(stored):
        raise ValueError(f"a stored frame interval must be a number, got {stored!r}")
    return check_frame_ms(float(stored))


def analysed_origin(frame_shape: Sequence[int], size: int, crop: Crop, pixel_um=None) -> tuple[int, int]:
    """(y0, x0), in model pixels, of the window :func:`as_stimulus` analyses in a stack of ``frame_shape``
    (H, W) stack pixels of ``pixel_um``: :func:`crop_origin` on the model's grid
    (:func:`napari_retina._resample.model_frame_shape`)."""
    return crop_origin(model_frame_shape(frame_shape, check_pixel_um(pixel_um)), size, crop)


def check_normalize(normalize) -> bool:
    """``normalize`` read as "z-score by the stack's own statistics?" (True for True or "zscore").

    False (the default) uses float stacks as contrast units and integer stacks
    as described in :func:`normalise`.
    """
    if isinstance(normalize, (bool, np.bool_)):
        return bool(normalize)
    if isinstance(normalize, str) and normalize == "zscore":
        return True
    raise ValueError(f"normalize must be False, True or 'zscore', got {normalize!r}")


def zscore(arr: np.ndarray) -> np.ndarray:
    """``(x − mean) / std`` over the whole stack, float32 (a constant stack maps to zeros): :func:`normalise`
    with ``normalize=True``."""
    return _standardised(arr, *standardisation(arr, None, True))


def _standardised(arr: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x − mean) / std`` in float64, stored as float32, chunk by chunk: no float64 copy of the stack."""
    out = np.empty(arr.shape, dtype=np.float32)
    step = frames_per_chunk(arr.shape[1:], 1 << 22)
    for i in range(0, len(arr), step):
        out[i:i + step] = (arr[i:i + step].astype(np.float64) - mean) / std
    return out


def contrast_mapping(dtype, norm: Optional[dict], normalize: Normalize) -> str:
    """Which of the four ways to contrast a stack of ``dtype`` takes (the one decision of :func:`normalise` and
    :func:`input_mapping`): "zscore" (``normalize``), "contrast" (a float stack, taken as it is), "raw" (an
    integer stack, mapped with a raw-unit checkpoint's statistics) or "own" (an integer stack, z-scored by its
    own statistics)."""
    if check_normalize(normalize):
        return "zscore"
    if np.issubdtype(np.dtype(dtype), np.floating):
        return "contrast"
    return "raw" if norm is not None and norm.get("units") == "raw" else "own"


def normalise(arr: np.ndarray, norm: Optional[dict] = None, normalize: Normalize = False) -> np.ndarray:
    """Map a stack to float32 contrast units.

    With ``normalize`` True or ``"zscore"`` any stack is z-scored by its own
    mean and standard deviation (:func:`zscore`). Otherwise float stacks are
    taken to be in contrast units already (0 = mean luminance) and are only
    cast. Integer stacks (uint8 TIFFs, say) are raw intensities: with a
    checkpoint whose ``norm["units"] == "raw"`` they are mapped as
    ``(x - mean) / std`` with its stored statistics; otherwise they are z-scored
    by their own mean and standard deviation (contrast about their own mean
    luminance; a constant stack maps to zeros).
    """
    stats = standardisation(arr, norm, normalize)
    if stats is None:
        return np.ascontiguousarray(arr, dtype=np.float32)
    return _standardised(arr, *stats)


def standardisation(arr: np.ndarray, norm: Optional[dict] = None, normalize: Normalize = False,
                    own: Optional[Callable[[], tuple[float, float]]] = None) -> Optional[tuple[float, float]]:
    """The ``(mean, std)`` :func:`normalise` maps ``arr`` with, ``(x − mean) / std``, or None for a float stack
    taken as contrast: the checkpoint's statistics for "raw", the stack's own (a constant stack's std read as 1)
    for "own" and "zscore" (:func:`contrast_mapping`). ``own``: where the stack's own statistics come from when
    ``arr`` is only part of it (a batch block of a whole file); default ``mean_std(arr)``."""
    how = contrast_mapping(arr.dtype, norm, normalize)
    if how == "contrast":
        return None
    if how == "raw":
        return float(norm["mean"]), float(norm["std"])
    mean, std = mean_std(arr) if own is None else own()
    return mean, (std if std > 0 else 1.0)


def input_mapping(dtype, norm: Optional[dict] = None, normalize: Normalize = False) -> str:
    """How :func:`normalise` maps a stack of ``dtype`` to contrast, in words ("" for a float stack taken as
    contrast): a scientist reading a result should know that a uint8 movie was rescaled, and how."""
    how, dtype = contrast_mapping(dtype, norm, normalize), np.dtype(dtype)
    if how == "zscore":
        return "the stack was z-scored by its own mean and std (normalize)"
    if how == "contrast":
        return ""
    if how == "raw":
        return (f"the {dtype} stack was read as raw intensities and mapped to contrast with the model's training "
                f"statistics (mean {float(norm['mean']):.4g}, std {float(norm['std']):.4g})")
    return (f"the {dtype} stack was read as raw intensities and z-scored by its own mean and std (contrast "
            "about its own mean luminance)")


def training_contrast_std(norm: Optional[dict]) -> float:
    """Std of the model's training stimulus in contrast units.

    ``norm["std"]`` for a checkpoint trained on contrast (float) stimuli; 1 for
    one trained on raw stacks (they are z-scored) or without stored statistics.
    """
    if norm is not None and norm.get("units", "contrast") == "contrast":
        std = float(norm.get("std", 1.0))
        return std if np.isfinite(std) and std > 0 else 1.0
    return 1.0


def frames_per_chunk(frame_shape: Sequence[int], chunk_values: int = 1 << 20) -> int:
    """How many whole frames of ``frame_shape`` make about ``chunk_values`` values (at least one)."""
    return max(1, chunk_values // max(1, int(np.prod(frame_shape, dtype=np.int64))))


def frame_chunks(a: np.ndarray, chunk_values: int = 1 << 20) -> Iterator[np.ndarray]:
    """Consecutive blocks of whole frames of ``a`` (T, …), each about ``chunk_values`` values (at least one frame)."""
    step = frames_per_chunk(a.shape[1:], chunk_values)
    return (a[i:i + step] for i in range(0, len(a), step))


def chunked_mean_std(chunks: Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation in float64 of all the values of ``chunks`` (arrays of any shape), in one pass.

    Each chunk is cast to float64 minus a shift (the first chunk's mean) into
    one reused buffer, and its sum and sum of squares (squared in place) are
    accumulated: memory follows the chunk, not the data. Shifted by a value
    near the mean, the one-pass variance loses nothing measurable against the
    two-pass one (tests: 1e-12 relative on a 0–255 stack). Read as the same
    chunks, split data give the same numbers as the whole (batch blocks).
    """
    total = squares = 0.0
    count, shift, buf = 0, 0.0, np.empty(0)
    for x in chunks:
        if x.size == 0:
            continue
        if count == 0:
            shift = float(x.sum(dtype=np.float64)) / x.size
        if buf.size < x.size:
            buf = np.empty(x.size, dtype=np.float64)
        b = buf[: x.size]
        np.subtract(x, shift, out=b.reshape(x.shape), dtype=np.float64)  # a cropped view is read in place
        total += float(b.sum())
        squares += float(np.square(b, out=b).sum())  # not np.dot: BLAS threads stall on a busy machine
        count += x.size
    if count == 0:
        raise ValueError("no values to take the mean and standard deviation of")
    mean = total / count
    return shift + mean, float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def mean_std(arr: np.ndarray, chunk_values: int = 1 << 20) -> tuple[float, float]:
    """Mean and standard deviation of an array in float64, by :func:`chunked_mean_std` over chunks of whole
    frames of about ``chunk_values`` values (no float64 copy of the whole stack)."""
    return chunked_mean_std(frame_chunks(np.asarray(arr), chunk_values))


def grey_count(frames: np.ndarray) -> int:
    """How many values of ``frames`` (n, H, W) are grey: 0 across a whole row or column of their frame, as flashes
    and bars on a grey screen leave it (binary 0/1 noise's scattered zeros are not). Other shapes: every 0."""
    zero = np.asarray(frames) == 0
    if zero.ndim != 3:
        return int(np.count_nonzero(zero))
    whole = zero.all(axis=2, keepdims=True) | zero.all(axis=1, keepdims=True)
    return int(np.count_nonzero(zero & whole))


def units_finding(arr: np.ndarray, norm: Optional[dict] = None) -> Optional[tuple[str, float, float, float]]:
    """Whether a float stack is far from contrast units, by the one rule :func:`warn_if_not_contrast` documents.

    Returns None when the stack passes (or is not float), else ``(kind, mean,
    std, grey)``: ``kind`` is ``"scale"`` (its mean or std is far from the
    contrast of std ``s`` = :func:`training_contrast_std` ``(norm)``) or
    ``"intensities"`` (no value below 0, ``grey`` (the share of grey values: :func:`grey_count`)
    under ``UNITS_GREY_SHARE``). Callers word it: a warning before predicting,
    a refusal before training (:func:`napari_retina.training.train`).
    """
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    mean, std = mean_std(arr)
    s = training_contrast_std(norm)
    if abs(mean) > UNITS_MEAN_LIMIT * s or std > UNITS_STD_LIMIT * s:
        return "scale", mean, std, float("nan")
    if std > 0 and mean > UNITS_POSITIVE_MEAN * s and min(float(c.min()) for c in frame_chunks(arr)) >= 0:
        grey = sum(grey_count(c) for c in frame_chunks(arr)) / arr.size
        if grey < UNITS_GREY_SHARE:  # grey with bright flashes or bars (many values at grey) is contrast
            return "intensities", mean, std, grey
    return None


#: how a units warning says to z-score (the Analyze dock words it for its checkbox)
ZSCORE_REMEDY = "pass normalize='zscore' (command line: --normalize; batch spec: \"normalize\": \"zscore\")"
#: how the grey-background warning says not to (the Analyze dock words it for its checkbox too)
UNZSCORED_REMEDY = "pass it without z-scoring"


def warn_if_not_contrast(arr: np.ndarray, norm: Optional[dict] = None, name: str = "stimulus",
                         stacklevel: int = 2) -> None:
    """Warn (:class:`StimulusUnitsWarning`) when a float stack is far from contrast units.

    With ``s`` = :func:`training_contrast_std`, the rule is ``|mean| >
    UNITS_MEAN_LIMIT·s`` or ``std > UNITS_STD_LIMIT·s`` (3 and 10): a raw
    0–255 stack (mean ~128, std ~70) warns, contrast stimuli (mean ~0, std ~s)
    do not. A stack with no value below 0, fewer than ``UNITS_GREY_SHARE`` (1%)
    of its values grey (:func:`grey_count`: 0 across a whole row or column of
    a frame) and a mean above ``UNITS_POSITIVE_MEAN·s`` (0.1·s) warns too: 0–1
    intensities (mean ~0.5; binary noise stored as 0/1 too) are not contrast,
    while an all-grey stack and bright flashes or bars on grey are; a uniform stack
    (std 0: a full-field step, or one grey level) cannot be told. Integer stacks
    are normalised anyway and never warn here (their grey background may:
    :func:`warn_if_grey_moves`). Reads the stack chunk by chunk
    (the rule itself: :func:`units_finding`).
    """
    finding = units_finding(arr, norm)
    if finding is None:
        return
    kind, mean, std, grey = finding
    if kind == "scale":
        found = (f"{name} does not look like contrast units (mean {mean:.3g}, std {std:.3g}; the model was trained "
                 f"on contrast with mean 0 and std {training_contrast_std(norm):.3g})")
        yourself = "map it to contrast yourself (0 = mean luminance)"
    else:
        found = (f"{name} looks like intensities (0–1, say), not contrast units (0 = mean luminance): no value is "
                 f"below 0 and {grey:.2%} are grey (0 across a whole row or column of a frame) (mean {mean:.3g}, "
                 f"std {std:.3g})")
        yourself = "map it to contrast yourself ((x - mean) / mean), or pass the integer stack (it is normalised)"
    warnings.warn(
        f"{found}, so rates may be meaningless; {ZSCORE_REMEDY} to z-score it by its own statistics, or {yourself}",
        StimulusUnitsWarning,
        stacklevel=stacklevel + 1,
    )


def grey_shift(arr: np.ndarray, norm: Optional[dict] = None,
               normalize: Normalize = False) -> Optional[tuple[float, float, float]]:
    """Where z-scoring by its own statistics puts a stack's grey background: ``(grey, share, contrast)``.

    ``grey`` is the stack's most common value, ``share`` the fraction of its
    values at it, ``contrast`` what it becomes, ``(grey − mean) / std``. None
    when :func:`normalise` does not z-score the stack by its own mean and std
    (:func:`contrast_mapping` neither "own" nor "zscore"), when no value holds
    ``GREY_SHARE`` of the values and ``GREY_LEAD`` times any other's (white
    noise, binary noise), or when the grey lands within
    ``GREY_SHIFT_LIMIT`` of 0. A uint8 flash train (grey 128, dark flashes)
    has its mean below its grey: z-scored, the grey becomes brighter than mean
    luminance. The candidate is the first chunk's most common value; the stack
    is read chunk by chunk (:func:`chunked_grey_shift`).
    """
    if contrast_mapping(arr.dtype, norm, normalize) not in ("own", "zscore") or arr.size == 0:
        return None
    return chunked_grey_shift(lambda: frame_chunks(arr), lambda: mean_std(arr))


def chunked_grey_shift(chunks: Callable[[], Iterable[np.ndarray]],
                       stats: Callable[[], tuple[float, float]]) -> Optional[tuple[float, float, float]]:
    """:func:`grey_shift`'s rule on a stack read as ``chunks()`` (a fresh iterator of its chunks of frames at each
    call: a file read window by window, a batch's) with ``stats()`` its mean and std, for a stack that is z-scored
    by its own statistics."""
    first = next(iter(chunks()), None)
    if first is None or first.size == 0:
        return None
    values, counts = np.unique(first, return_counts=True)
    top = np.sort(counts)[::-1]
    if top[0] < GREY_SHARE * first.size or (len(top) > 1 and top[0] < GREY_LEAD * top[1]):
        return None
    grey = values[int(np.argmax(counts))]
    at, total = 0, 0
    for c in chunks():
        at, total = at + int(np.count_nonzero(c == grey)), total + c.size
    share = at / total
    if share < GREY_SHARE:
        return None
    mean, std = stats()
    if not std > 0:
        return None
    contrast = (float(grey) - mean) / std
    return (float(grey), share, contrast) if abs(contrast) > GREY_SHIFT_LIMIT else None


def grey_shift_warning(found: tuple[float, float, float], name: str = "stimulus") -> str:
    """The sentence of :func:`warn_if_grey_moves` for :func:`grey_shift`'s ``(grey, share, contrast)``."""
    grey, share, contrast = found
    # "the layer 'u8''s" read badly: a name that ends in a quote takes "of"
    value = f"the most common value of {name}" if name.endswith("'") else f"{name}'s most common value"
    return (f"{value}, {grey:.6g} ({share:.0%} of its values: a grey background?), becomes "
            f"{contrast:+.2f} in contrast units, not 0 (mean luminance), because the stack is z-scored by its own mean "
            f"and std: the model sees a {'brighter' if contrast > 0 else 'darker'} background than grey; to keep it at "
            f"0, map the stack to contrast yourself ((x - {grey:.6g}) / s as float32, s the intensity of one contrast "
            f"unit) and {UNZSCORED_REMEDY}")


def warn_if_grey_moves(arr: np.ndarray, norm: Optional[dict] = None, normalize: Normalize = False,
                       name: str = "stimulus", stacklevel: int = 2) -> None:
    """Warn (:class:`StimulusUnitsWarning`) when z-scoring a stack by its own statistics moves its grey
    background off 0 (:func:`grey_shift`): the model then sees a background brighter or darker than mean
    luminance, and answers to it."""
    found = grey_shift(arr, norm, normalize)
    if found is not None:
        warnings.warn(grey_shift_warning(found, name), StimulusUnitsWarning, stacklevel=stacklevel + 1)


#: a cell whose mean rate is above this many spikes per 10 ms bin makes rates look like Hz (:func:`hz_like_rates`).
#: Real retinal ganglion cells rarely exceed a mean of ~100 Hz, 1 spike per bin; 5 spikes per bin is a sustained
#: 500 Hz, which no ganglion cell fires, while rates in Hz pass 5 for any cell firing above 5 Hz. Whole numbers
#: clear nothing: Hz computed from counts in 10 ms bins are the counts × 100. The synthetic retina's default
#: datasets average 1–3 spikes per bin per cell (docs/MODEL.md); driven with binary white noise of ±3 or more
#: it passes 5 (version 1) and warns, as it should: no recorded cell would.
HZ_MEAN_LIMIT = 5.0


def hz_like_rates(rates: np.ndarray) -> Optional[str]:
    """Why rates of shape (T, n_cells), meant as spikes per 10 ms bin, look like Hz (the end of a sentence:
    "3 of 6 cells average more than 5 spikes per 10 ms bin (up to 84.9)"), or None: no cell's mean above
    :data:`HZ_MEAN_LIMIT`.

    >>> hz_like_rates(np.full((10, 2), 0.8)) is None, hz_like_rates(np.full((10, 2), 80.0))
    (True, '2 of 2 cells average more than 5 spikes per 10 ms bin (up to 80)')
    """
    means = np.asarray(rates, dtype=np.float64).reshape(len(rates), -1).mean(axis=0)
    high = int((means > HZ_MEAN_LIMIT).sum())
    if not high:
        return None
    return (f"{high} of {means.size} cell{'s' if means.size > 1 else ''} average{'s' if means.size == 1 else ''} "
            f"more than {HZ_MEAN_LIMIT:g} spikes per {FRAME_MS:g} ms bin (up to {means.max():.3g})")


def hz_warning(subject: str, why: str) -> str:
    """The warning for rates that look like Hz: ``subject`` ("the rates in data.h5") and ``why``
    (:func:`hz_like_rates`'s reason)."""
    return (f"{subject} look like Hz, not spikes per {FRAME_MS:g} ms bin: {why}, beyond any ganglion cell (rates "
            f"in Hz fit badly and come out 100× too large as spikes per bin: divide them by 100)")


def check_rate_values(values: np.ndarray, name: str) -> None:
    """A one-sentence ValueError naming ``name`` unless every rate is finite and >= 0."""
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite rates")
    if (values < 0).any():
        raise ValueError(f"{name} holds negative rates (min {values.min():g}); rates must be >= 0")


def as_rates(rates, n_frames: int, name: str) -> np.ndarray:
    """Rates given as an array, (T, n_cells) or (T,) for one cell, as float64 (T, n_cells); one sentence
    naming ``name`` otherwise: a TypeError unless numbers (integers or floats: not bools, not text parsed as
    numbers), a ValueError unless 2-D with one time bin per stimulus frame (``n_frames``), finite and >= 0."""
    arr = as_real_array(rates, f"{name} must be a (T, n_cells) array of numbers",
                        f"{name} must hold numbers (spikes per {FRAME_MS:g} ms bin, integers or floats)")
    return rate_table(arr[:, None] if arr.ndim == 1 else arr, n_frames, name, "(T, n_cells)", time_axis=0)


def rate_table(values: np.ndarray, n_frames: int, name: str, shape: str, time_axis: int,
               what: str = "rates") -> np.ndarray:
    """Numeric ``values`` as float64 rates, or one ValueError naming ``name``: 2-D (``shape`` in the message),
    ``n_frames`` time bins along ``time_axis`` (one per stimulus frame), finite and >= 0. What arrays given in
    memory (:func:`as_rates`) and a file's rates and repeats (``napari_retina.io``) are checked by."""
    if values.ndim != 2:
        raise ValueError(f"{name} must be {shape}, got shape {values.shape}")
    if values.shape[time_axis] != n_frames:
        raise ValueError(f"{name}: the stimulus has {n_frames} frames but the {what} have "
                         f"{values.shape[time_axis]} time bins")
    values = values.astype(np.float64)
    check_rate_values(values, name)
    return values


def check_not_empty(shape: Sequence[int], name: str = "stimulus") -> None:
    """A ValueError unless an array of ``shape`` holds at least one value (what :func:`as_stack` refuses as empty);
    for a stack known by its shape alone (a file's header)."""
    if 0 in tuple(shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(shape)}")


def check_history_frames(n_frames: int, history: int, name: str = "stimulus",
                         frame_ms: Optional[float] = None) -> None:
    """A ValueError unless a movie of ``n_frames`` frames (of ``frame_ms`` ms, :func:`check_frame_ms`'s; None: the
    model's) holds at least one full ``history`` (model frames)."""
    count = model_frame_count(n_frames, frame_ms)
    if count < history:
        frames = (f"{n_frames} frame(s)" if frame_ms is None else
                  f"{n_frames} frame(s) of {frame_ms:.6g} ms ({count} of the model's {FRAME_MS:g} ms)")
        raise ValueError(f"{name} has {frames} but the model needs at least its history of "
                         f"{history} frames ({history * FRAME_MS:g} ms)")


def bins_words(n_frames: int, frame_ms: Optional[float]) -> str:
    """What follows a count of model frames in a sentence when they are the 10 ms bins of ``n_frames`` frames of
    ``frame_ms`` ms: " (the model's 10 ms bins of its 30 frames of 13.3333 ms)"; "" for None."""
    return "" if frame_ms is None else (f" (the model's {FRAME_MS:g} ms bins of its {n_frames} frames of "
                                        f"{frame_text(frame_ms)})")


def frame_text(frame_ms: Optional[float]) -> str:
    """A stack's frame interval in words: "16.6667 ms" (the model's own for None)."""
    return f"{FRAME_MS if frame_ms is None else frame_ms:.6g} ms"


def as_stimulus(
    stimulus,
    *,
    history: Optional[int] = None,
    size: Optional[int] = None,
    crop: Crop = None,
    norm: Optional[dict] = None,
    normalize: Normalize = False,
    name: str = "stimulus",
    stacklevel: int = 3,
    pixel_um=None,
    frame_ms=None,
    progress: Optional[Progress] = None,
) -> np.ndarray:
    """Validate, crop, resample and normalise a stimulus for a model.

    Returns float32 (T', size, size) in contrast units. Fails when the stack is
    not (T, H, W), is empty, RGB, non-numeric, non-finite or beyond float32,
    has fewer than ``history`` model frames, or is not ``size × size`` (unless
    ``crop`` is given; see :func:`parse_crop`). ``pixel_um`` (the stack's
    pixel size, :func:`check_pixel_um`; None: the model's 55 µm) other than
    the model's resamples the stack to the model's grid
    (:mod:`napari_retina._resample`, area-weighted), and ``crop`` cuts the
    window on that grid (:func:`analysed_origin`); ``frame_ms`` (the time each
    frame was shown, :func:`check_frame_ms`; None: the model's 10 ms) other
    than the model's resamples time to its 10 ms bins (each bin the mean of the
    frames shown during it, ``T'`` = ``floor(T·frame_ms/10)`` bins, a thousandth of a bin short counting
    as whole; ``T`` without it).
    The units checks and the statistics a stack is z-scored by are the stack's own values under the
    window, at its own pixels and frames (averaging shrinks a fine stack's std, which
    z-scoring afterwards would undo). ``normalize``: see
    :func:`normalise`; without it a float stack far from contrast units warns
    (:func:`warn_if_not_contrast`); a stack z-scored by its own statistics
    whose grey background lands off 0 warns too (:func:`warn_if_grey_moves`),
    ``stacklevel`` counting from this function's caller. ``progress``: called as ``progress(0, T')`` while the
    stack is resampled (:func:`~napari_retina._resample.resample_window`), so that a Cancel acts there.
    """
    zscored = check_normalize(normalize)
    pixel = check_pixel_um(pixel_um)
    frame = check_frame_ms(frame_ms)
    arr = as_stack(stimulus, name)
    if history is not None:
        check_history_frames(arr.shape[0], history, name, frame)
    window, origin = analysed_values(arr, size, crop, pixel, name)
    if frame is not None:   # the output: T' bins of size × size (or of the whole frame without a size)
        check_movie_fits(model_frame_count(len(arr), frame), size if size is not None else max(arr.shape[1:]),
                         f"{name}'s {len(arr):,} frames of {frame_text(frame)} on the model's {FRAME_MS:g} ms bins")
    warn_units(window, norm, zscored, name, stacklevel=stacklevel)
    if pixel is None and frame is None:
        return normalise(window, norm, zscored)
    stats = standardisation(window, norm, zscored) or (0.0, 1.0)
    if pixel is None:   # time only: the window already cut
        return resample_window(window, None, origin, None, *stats, frame_ms=frame, progress=progress)
    return resample_window(arr, pixel, origin, size, *stats, frame_ms=frame, progress=progress)


def analysed_values(arr: np.ndarray, size: Optional[int], crop: Crop, pixel_um: Optional[tuple[float, float]],
                    name: str = "stimulus") -> tuple[np.ndarray, tuple[int, int]]:
    """The values of a (T, H, W) stack under the window :func:`as_stimulus` analyses, at the stack's own pixels and
    frames (a view), and the window's corner (y0, x0) in model pixels (``pixel_um``: :func:`check_pixel_um`'s
    pair or None; without a ``size``, the whole stack at (0, 0)). The units checks and the z-scoring statistics
    read these values. Raises :func:`crop_to`'s ValueErrors."""
    if pixel_um is None:
        return (arr if size is None else crop_to(arr, size, crop, name)), (0, 0)
    origin = checked_origin(model_frame_shape(arr.shape[1:], pixel_um), size, crop, name + grid_words(pixel_um),
                            small=RESAMPLED_SMALL_REMEDY)
    return arr[(slice(None),) + source_window(arr.shape[1:], pixel_um, origin, size)], origin


def warn_units(values: np.ndarray, norm: Optional[dict] = None, zscored: bool = False, name: str = "stimulus",
               stacklevel: int = 2) -> None:
    """The units warnings of :func:`as_stimulus` for the values it reads (:func:`analysed_values`): a float stack
    far from contrast units unless ``zscored`` (:func:`warn_if_not_contrast`), a grey background that z-scoring
    by its own statistics moves off 0 (:func:`warn_if_grey_moves`); ``stacklevel`` counts from the caller."""
    if not zscored:
        warn_if_not_contrast(values, norm, name, stacklevel=stacklevel + 1)
    warn_if_grey_moves(values, norm, zscored, name, stacklevel=stacklevel + 1)


def grid_words(pixel_um: Optional[tuple[float, float]]) -> str:
    """What follows a stack's name in a sentence about its shape when it is resampled (:func:`check_pixel_um`'s
    pair): " on the model's 55 µm grid (27.5 µm pixels)"; "" for None."""
    return "" if pixel_um is None else f" on the model's {PIXEL_UM:g} µm grid ({pixel_text(pixel_um)} pixels)"


def grid_shape(shape: Sequence[int], pixel_um: Optional[tuple[float, float]],
               frame_ms: Optional[float] = None) -> tuple:
    """A (T, H, W) stack's shape on the model's grid, (T', H', W') (:func:`napari_retina._resample.model_frame_shape`,
    :func:`~napari_retina._resample.model_frame_count`): what the shape checks of a header or a napari layer
    compare with the model's."""
    return (model_frame_count(shape[0], frame_ms), *model_frame_shape(shape[1:], pixel_um))


def pixel_text(pixel_um: Optional[tuple[float, float]]) -> str:
    """A stack's pixel size in words: "27.5 µm", "20 × 25 µm" (y × x), the model's own for None."""
    y_um, x_um = pixel_um if pixel_um is not None else (PIXEL_UM, PIXEL_UM)
    return f"{y_um:.6g} µm" if np.isclose(y_um, x_um, rtol=1e-9, atol=0) else f"{y_um:.6g} × {x_um:.6g} µm"


def stimulus_tensor(stim: np.ndarray):
    """A checked float32 stimulus as a torch tensor sharing its memory (no copy of a long movie).

    Only read, never written: so a read-only array, e.g. ``np.load(path,
    mmap_mode="r")``, is used as it is, without torch's warning about
    non-writable arrays.
    """
    import torch  # not at import time: reading a stimulus stays torch-free

    if stim.flags.writeable:
        return torch.from_numpy(stim)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(stim)


class NonFiniteOutputError(ValueError):
    """A result that came out NaN or infinite; ``finding`` is the sentence without its remedy."""

    def __init__(self, finding: str, remedy: str) -> None:
        super().__init__(f"{finding}; {remedy}")
        self.finding = finding


#: what :func:`check_finite_output` advises by default
FINITE_REMEDY = "map it to contrast units (0 = mean luminance, std about 1) or pass normalize='zscore'"
#: a stimulus with no |value| above this is not blamed for a NaN result (the experiments' strongest flashes are -10)
IN_RANGE_CONTRAST = 100.0
#: what to do about a NaN result on a stimulus in contrast units
IN_RANGE_REMEDY = "check the model on this stimulus, e.g. nr.predict on its first frames"


def consecutive(idx) -> bool:
    """Whether the indices ``idx`` (1-D, not empty) are ``i0, i0 + 1, …``: a slice can stand for them."""
    idx = np.asarray(idx)
    return bool(len(idx)) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))


def check_finite_output(values: np.ndarray, frames: np.ndarray, what: str,
                        stimulus: Optional[np.ndarray] = None, remedy: str = FINITE_REMEDY) -> None:
    """Refuse a result that is NaN or infinite on frames that have a full history.

    ``values`` is an array over time (T, ...); ``frames`` the frames that must
    be finite (NaN on the first history−1 frames is the convention and is not
    checked). ``what`` names the result, e.g. "the model's rates"; with
    ``stimulus`` the sentence says how large it is; ``remedy`` ends the
    sentence with what to do.
    """
    frames = np.asarray(frames, dtype=np.int64)
    if frames.size == 0:
        return
    v = np.asarray(values)
    v = (v[frames[0] : frames[-1] + 1] if consecutive(frames) else v[frames]).reshape(len(frames), -1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow or inf − inf only sends us to the exact path
        fast = np.isfinite(v.sum())
    if fast:  # a finite sum has no NaN or infinite term
        return
    bad = ~np.isfinite(v).all(axis=1)
    if not bad.any():
        return
    message = (f"{what} are NaN or infinite on {int(bad.sum())} of {len(frames)} frames with a full history "
               f"(first at frame {int(frames[np.argmax(bad)])})")
    if stimulus is not None and np.size(stimulus):
        largest = float(np.abs(stimulus).max())
        if largest <= IN_RANGE_CONTRAST:
            message += (f": the stimulus is in contrast units (largest |value| {largest:.3g}), so the model "
                        "itself computes them (a wrapped module's forward pass, or NaN in its weights)")
            remedy = IN_RANGE_REMEDY
        else:
            message += (f": the stimulus (largest |value| {largest:.3g}) is probably far outside the contrast "
                        "range the model works in")
    raise NonFiniteOutputError(message, remedy)


def unusable_weights(tensors, variances: Iterable[str] = ()) -> Optional[str]:
    """Why a model's tensors give NaN rates, or None: NaN/inf values, or negative batch-norm variances.

    ``tensors``: a mapping {name: torch.Tensor} (a state dict, or a foreign
    file's tensors under their own names); the variances are the tensors named
    in ``variances`` and those whose name ends with ``running_var``. Said as
    the end of a sentence, e.g. "conv1.weight holds 3 NaN or infinite values
    of 1600 (expected all finite)".
    """
    import torch

    variances = set(variances)
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return (f"{name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} of {tensor.numel()} "
                    "(expected all finite)")
        negative = int((tensor < 0).sum()) if name in variances or name.endswith("running_var") else 0
        if negative:
            return f"{name} holds {negative} negative variance{'s' if negative > 1 else ''} (expected all >= 0)"
    return None


def is_int(value) -> bool:
    """Whether ``value`` is an integer, Python's or NumPy's, and not a bool (True is no count or index): the one
    type test of every integer check (:func:`check_int`, and checks with their own errors, e.g. a batch spec's)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether ``value`` is a real number (an int or a float, Python's or NumPy's), not a bool: the one type test
    of every real-number check (:func:`check_real`, and checks with their own errors)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool (Python's or NumPy's), or a TypeError naming ``name``: "no" or 0 is no answer."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_int(value, name: str, low: int = 0, high: Optional[int] = None) -> int:
    """An int in ``[low, high)`` (``high=None``: no upper bound), or a clear error."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value >= high):
        rng = f">= {low}" if high is None else f"in [{low}, {high - 1}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def check_cells(cell, n_cells: int, holder: str = "the model has") -> list[int]:
    """Normalise ``cell`` (an int, a sequence of ints such as a list or ``range``, or ``"all"``) to a list of
    indices in [0, n_cells); ``holder`` says whose cells they are, with its verb ("the ground truth has")."""
    if isinstance(cell, np.ndarray) and cell.ndim == 0:  # np.array(1): the one index it holds
        cell = cell[()]
    if isinstance(cell, (str, bytes)):
        if cell != "all":
            raise ValueError(f"cell must be an index, a list of indices or 'all', got {cell!r}")
        return list(range(n_cells))
    if isinstance(cell, (Sequence, np.ndarray)):
        if len(cell) == 0:
            raise ValueError("cell must name at least one cell, got an empty list")
        cells = [check_int(c, "cell", 0, n_cells) for c in cell]
        if len(set(cells)) != len(cells):
            raise ValueError(f"cell lists each cell once, got {list(cell)}")
        return cells
    return [check_int(cell, f"cell ({holder} {n_cells} cells)", 0, n_cells)]


def check_cell_subset(cells, n_cells: int, holder: str) -> list[int]:
    """``cells`` of a dataset (a list of indices, or one index) as a list of ints in [0, n_cells), or a clear
    error; ``holder`` says where the cells are, with its verb ("the file has", "the data have")."""
    if isinstance(cells, np.ndarray) and cells.ndim == 0:
        cells = cells[()]
    if is_int(cells):
        cells = [cells]
    if isinstance(cells, (str, bytes)) or not isinstance(cells, (Sequence, np.ndarray, range)):
        raise TypeError(f"cells must be a list of cell indices, got {type(cells).__name__} {cells!r}")
    if len(cells) == 0:
        raise ValueError(f"cells must name at least one cell, got an empty list ({holder} {n_cells} cells, "
                         f"0..{n_cells - 1}); leave cells out to use them all")
    wrong = [c for c in cells if not is_int(c)]
    if wrong:   # 1.0 or True is no cell index, not a cell that is missing
        got = wrong[0].item() if isinstance(wrong[0], np.generic) else wrong[0]
        raise TypeError(f"cells must be whole cell indices (ints), got {type(wrong[0]).__name__} {got!r}")
    bad = [c for c in cells if not 0 <= c < n_cells]
    if bad:
        raise ValueError(f"cells {bad} do not exist: {holder} {n_cells} cells (0..{n_cells - 1})")
    cells = [int(c) for c in cells]
    if len(set(cells)) != len(cells):   # a model with two outputs for one cell: names and scores collide
        raise ValueError(f"cells must list each cell once, got {cells}")
    return cells


class FolderError(IsADirectoryError, ValueError):
    """A folder where a file was expected: bad input (a ValueError, DESIGN.md), and what the system would say
    (an IsADirectoryError, which callers already catch)."""


def check_reduces(attr, red) -> None:
    """One sentence (a ValueError) unless ``red`` is a reduction of the attribution ``attr``: its reduced
    response spans the attribution's T frames and its kept channels' traces (``red.traces``, where it has them)
    are the attribution's ``channels``. Paired by mistake, a traces CSV or plot showed one analysis' response
    beside another's reduced circuit."""
    again = "reduce this attribution (nr.reduce(attr))"
    if not hasattr(red, "reduced_response"):
        raise TypeError(f"red must be a Reduction of this attribution (nr.reduce(attr)), got {type(red).__name__}")
    T, n = len(attr.response), len(red.reduced_response)
    if n != T:
        raise ValueError(f"the reduction is not of this attribution: its reduced response has {n} frames, the "
                         f"attribution {T}; {again}")
    traces = getattr(red, "traces", None)
    if traces is None:
        return
    kept = [int(c) for c in red.kept]
    channels = np.asarray(attr.channels, dtype=np.float32)
    if (kept and max(kept) >= channels.shape[1]) or not np.array_equal(
            np.asarray(traces, dtype=np.float32), channels[:, kept], equal_nan=True):
        raise ValueError(f"the reduction is not of this attribution: its kept channels' traces are not the "
                         f"attribution's; {again}")


class NotAFileError(FileExistsError, ValueError):
    """A device, pipe or socket where a file is to be written (saved over, it would be replaced by a plain file):
    bad input (a ValueError), and an OSError as the system would have it."""


def write_target(path: Path) -> Path:
    """The file that writing ``path`` replaces: ``path``, or the target of the symbolic link at ``path`` (written
    through, as ``open(path, "w")`` does). One sentence instead when that is a folder (:class:`FolderError`) or
    exists as anything but a regular file (:class:`NotAFileError`: /dev/null, a pipe)."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.is_dir():
        raise FolderError(f"cannot write {str(path)!r}: it is a folder; give a file name inside it")
    if target.exists() and not target.is_file():
        raise NotAFileError(f"cannot write {str(path)!r}: it is not a regular file (a device, pipe or socket), "
                            "which a saved file would replace; give a file name")
    return target


def file_path(path, name: str = "path", or_none: bool = False, writing: bool = False) -> Path:
    """``path`` as a Path to a file, or one sentence: a TypeError unless a str or os.PathLike (``or_none``: the
    caller takes None too, and says so), a :class:`FolderError` when a folder is there; ``writing`` (a file
    about to be written): the sentences of :func:`write_target`. Whether a file is there is the caller's
    question."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike{' or None' if or_none else ''}, "
                        f"got {type(path).__name__}")
    path = Path(path)
    if writing:
        write_target(path)
    elif path.is_dir():
        raise FolderError(f"{str(path)!r} is a folder, not a file")
    return path


def check_real(value, name: str, low: Optional[float] = None, strict: bool = False, float32: bool = False) -> float:
    """``value`` as a float: a real number (:func:`is_real`) that is finite, at least ``low`` (``strict``: above
    it; None: any sign) and, with ``float32``, within float32 (|value| <= :data:`FLOAT32_MAX`, the precision
    stimuli and the synthetic circuit are computed in). Else one sentence naming ``name``, what is allowed and
    the value: a TypeError for what is no number, a ValueError for a number out of range.

    >>> check_real(2, "width", low=0, strict=True), check_real(-1.5, "intensity", float32=True)
    (2.0, -1.5)
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond any float
        finite = False
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    if not finite or (low is not None and (value <= low if strict else value < low)):
        raise ValueError(f"{name} must be a finite number{bound}, got {value}")
    if float32 and abs(value) > FLOAT32_MAX:
        limit = f"{'' if low is not None and low >= 0 else '|value| '}<= {FLOAT32_MAX:.3g}"
        raise ValueError(f"{name} must be {f'a finite number{bound} ' if bound else ''}within float32 ({limit}), "
                         f"got {value}")
    return float(value)


def check_positive(value, name: str) -> float:
    """A finite number > 0 (:func:`check_real` with ``low=0, strict=True``), or a clear error."""
    return check_real(value, name, low=0, strict=True)


def one_sentence(exc: BaseException) -> str:
    """A user-facing sentence for an exception: its message's first line (no traceback), or its type's name
    when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: the binary units a byte count is written in (:func:`size_text`), largest first
BYTE_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def size_text(n_bytes: float, unit: Optional[str] = None, spec: str = ".3g") -> str:
    """A byte count for people: "512 bytes", "3.5 MiB", "2.79 GiB", "3.64 TiB" (the largest of
    :data:`BYTE_UNITS` it reaches), the number formatted by ``spec``.

    ``unit`` (one of :data:`BYTE_UNITS`' names, e.g. "GiB") writes it in that unit whatever its size, so that the
    sizes one sentence compares read alike: "takes 1.96e+04 GiB, more than this machine's memory (15.5 GiB)".
    ``n_bytes`` may be a float (inf when a size overflowed).

    >>> size_text(512), size_text(3.5 * 2**20), size_text(2**30, "GiB", ".1f")
    ('512 bytes', '3.5 MiB', '1.0 GiB')
    """
    if unit is not None:
        return f"{n_bytes / dict(BYTE_UNITS)[unit]:{spec}} {unit}"
    for name, scale in BYTE_UNITS:
        if n_bytes >= scale:
            return f"{n_bytes / scale:{spec}} {name}"
    return f"{n_bytes} bytes"


def physical_memory_bytes() -> Optional[int]:
    """This machine's physical memory in bytes, or None where the system does not say (e.g. Windows)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def beyond_memory(values: float) -> Optional[tuple[float, float]]:
    """(bytes needed, bytes of physical memory) when ``values`` float32 values cannot fit in this machine's
    memory, else None (also where the system does not say how much it has). ``values`` may be a float: inf when
    a division overflowed."""
    need, have = 4.0 * float(values), physical_memory_bytes()
    return (need, float(have)) if have is not None and not need <= have else None


def check_maps_fit(frames: int, frame_shape: Sequence[int]) -> None:
    """A MemoryError in one sentence when an attribution's float32 maps (``frames``, *``frame_shape``) cannot fit
    in this machine's memory, before they are allocated: ``nr.attribute`` keeps the maps of every frame of the
    movie (NaN where not attributed), so 3 frames of a 100,000-frame movie still take 4 GiB."""
    beyond = beyond_memory(frames * float(np.prod(frame_shape)))
    if beyond is not None:
        (need, have), shape = beyond, " × ".join(str(int(n)) for n in frame_shape)
        raise MemoryError(f"the maps of the movie's {frames:,} frames ({shape} float32 a frame, NaN where not "
                          f"attributed) take {size_text(need, 'GiB')}, more than this machine's memory "
                          f"({size_text(have, 'GiB')}); pass invariance='space' for the channels' traces alone, or "
                          "attribute a shorter part of the movie (the frames wanted and the history before them)")


def check_movie_fits(frames: float, size: int, what: str) -> None:
    """A MemoryError in one sentence when a float32 (frames, size, size) movie cannot fit in memory.

    ``what`` names the parameters that set the length (e.g. "a bar moving 50 px
    at speed 1e-09 px/frame"); ``frames`` may be a float (inf when a division
    overflowed). Called before anything is allocated, against the machine's
    physical memory, so an absurd parameter gets a sentence that names it
    instead of numpy's "Unable to allocate … for an array with shape …" (or an
    OverflowError) deep inside the generator. Smaller movies are not refused here.
    """
    beyond = beyond_memory(float(frames) * float(size) ** 2)
    if beyond is not None:
        (need, have), count = beyond, f"{float(frames):,.0f}" if frames < 1e15 else f"{float(frames):.3g}"
        raise MemoryError(f"{what} takes {count} frames of {size}×{size} px, {size_text(need, 'GiB')} as float32, "
                          f"more than this machine's memory ({size_text(have, 'GiB')})")
