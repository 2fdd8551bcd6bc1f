"""Saved analyses read back: what ``Analysis.save("x.h5")`` (or the Analyze dock's "Save") wrote, as arrays.

:func:`read_analysis` returns a :class:`SavedAnalysis`: the analysed stimulus, the channels' attributions,
the model's response, the maps when saved, the reduced circuit when there was one, the settings that
produced them and the model's source. Every dataset is read as untrusted (``nr.io``'s one HDF5 reader:
nothing from outside the file, its size checked before it is read) and checked (shape, finite numbers)
before it is returned; a damaged file is one ValueError naming the file and the entry. Neither torch nor
napari is imported: the napari reader (File ▸ Open) builds its layers from this, and a script or notebook
can plot a saved analysis with matplotlib alone.

>>> saved = nr.read_analysis("noise-analysis.h5")          # doctest: +SKIP
>>> saved.attribution.channels.shape, saved.parameters["cell"]   # doctest: +SKIP
((1000, 8), 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from . import io as nr_io
from ._json import parse_json
from ._types import PathLike
from ._units import FRAME_MS
from ._validate import check_pixel_um, is_int, is_real, one_sentence, stored_frame_ms

__all__ = [
    "is_saved_analysis", "SavedAttribution", "SavedReduction", "SavedAnalysis", "blank_frames", "read_analysis",
    "MAX_INDEX"
]


def is_saved_analysis(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file written by ``Analysis.save`` (groups attribution and parameters)."""
    if path.suffix.lower() not in nr_io.HDF5_SUFFIXES or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return {"attribution", "parameters", "stimulus"} <= set(h5.keys())
    except OSError:
        return False


def _attr_value(value):
    """An HDF5 attribute as Python: numbers as numbers, "None" as None, JSON lists back as lists."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        if value == "None":
            return None
        if value[:1] in "[{":
            try:
                return parse_json(value, "an attribute")
            except ValueError:
                return value
    return value


def _damaged(path: Path) -> str:
    """The start of every sentence refusing a saved analysis: it names the file."""
    return f"{str(path)!r} is a damaged saved analysis"


def _read_dataset(h5, path: Path, name: str) -> Optional[np.ndarray]:
    """Dataset ``name`` of the open saved analysis as an array (None when absent or not a dataset), read by
    ``nr.io``'s one reader of untrusted HDF5 (nothing from outside the file, its size checked first), whose
    ValueError names the file and the dataset h5py cannot read (corrupt chunks, a filter that fails)."""
    if nr_io._h5_dataset_path(h5, name, path) is None:
        return None
    return nr_io._read_h5_dataset(h5, name, path)


def _group(h5, path: Path, name: str, datasets: tuple = ()) -> dict:
    """Attributes (as Python values) and the datasets named in ``datasets`` (as arrays) of group ``name`` of the
    open saved analysis (empty when absent). Other datasets are not read: the layers need none of them."""
    group = nr_io._h5_group(h5, name, path)   # a link out of the file is refused, not followed
    if group is None:
        return {}
    try:
        out = {k: _attr_value(v) for k, v in group.attrs.items()}
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(f"{_damaged(path)}: the attributes of its group {name!r} cannot be read "
                         f"({one_sentence(exc)})") from None
    for k in datasets:
        value = _read_dataset(h5, path, f"{name}/{k}")
        if value is not None:
            out[k] = value
    return out


@dataclass
class SavedAttribution:
    """An ``Attribution`` read back from a saved analysis, as arrays (no model: ``model`` is None).

    Shapes: T frames, C first-layer channels, (h, w) the maps' pixels; float32, NaN over the frames without
    a full history (or not attributed). ``stimulus`` (T, H, W): the analysed window, contrast units;
    ``channels`` (T, C): A_c(t), spikes per 10 ms bin; ``response`` (T,): F(s_t) − F(0), the same unit;
    ``maps`` (T, C, h, w) (summed over y or x: h or w is 1) or None when the maps were not saved;
    ``cells``: the analysed cells' indices; ``invariance``: "none", "y", "x" or "space"; ``offset`` (px): the
    stimulus pixel under map pixel 0; ``completeness_error``: a fraction; ``crop_origin`` (y0, x0) model px: the
    window's corner in the stimulus layer; ``input_pixel_um`` (y_um, x_um): the layer's pixel size when it was
    resampled to the model's 55 µm pixels, else None (files saved before resampling existed have none);
    ``input_frame_ms``: the layer's frame interval (ms) when its time was resampled to the model's 10 ms bins
    (T then counts those bins), else None; ``baseline_rate``: F(0), the rate at mean grey (spikes per 10 ms bin),
    NaN in files that do not hold it.
    """

    stimulus: np.ndarray
    channels: np.ndarray
    response: np.ndarray
    maps: Optional[np.ndarray] = None
    cells: list = field(default_factory=list)
    invariance: str = "none"
    offset: int = 0
    completeness_error: float = float("nan")
    crop_origin: tuple = (0, 0)
    input_pixel_um: Optional[tuple] = None
    input_frame_ms: Optional[float] = None
    baseline_rate: float = float("nan")
    model = None


@dataclass
class SavedReduction:
    """A ``Reduction`` read back from a saved analysis: ``kept`` (channel indices, most important first),
    ``labels`` (one per channel, e.g. "A3 ON fast +"), ``explained_variance`` (a fraction of the response's
    variance, NaN when not defined) and ``reduced_response`` (T,) float32, spikes per 10 ms bin."""

    kept: list
    labels: list
    explained_variance: float
    reduced_response: np.ndarray

    def label(self, c: int) -> str:
        """The label of channel ``c``."""
        return str(self.labels[int(c)])


@dataclass
class SavedAnalysis:
    """What :func:`read_analysis` reads: ``attribution`` (:class:`SavedAttribution`), ``reduction``
    (:class:`SavedReduction`, None when the analysis did not reduce), ``parameters`` (the settings that
    produced it: cell, steps or tol, invariance, crop, normalize, reduce, explain, ...) and ``model`` (what
    was saved about the model, e.g. its ``source``)."""

    attribution: SavedAttribution
    reduction: Optional[SavedReduction]
    parameters: dict
    model: dict


def _checked(path: Path, name: str, value, expected: str, ndim: int, frames: Optional[int] = None,
             channels: Optional[int] = None, blank: Union[bool, np.ndarray] = True) -> np.ndarray:
    """Dataset ``name`` of a saved analysis as float32, or one ValueError naming the file and the dataset when it
    is missing, not numbers, not of ``ndim`` dimensions with ``frames`` first and ``channels`` second, or holds
    values that are not finite where ``blank`` does not allow NaN (:func:`_check_finite`)."""
    where = _damaged(path)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: it has no dataset {name!r} (expected {expected})")
    shape = value.shape
    if (value.dtype.kind not in "biuf" or value.ndim != ndim or 0 in shape
            or (frames is not None and shape[0] != frames) or (channels is not None and shape[1] != channels)):
        got = f"dtype {value.dtype}" if value.dtype.kind not in "biuf" else f"shape {shape}"
        raise ValueError(f"{where}: its dataset {name!r} has {got}, expected {expected}")
    with np.errstate(over="ignore"):   # float64 beyond float32's range becomes inf: refused just below
        values = np.asarray(value, np.float32)
    _check_finite(path, name, values, blank)
    return values


def blank_frames(values: np.ndarray) -> np.ndarray:
    """Which frames of ``values`` (T, ...) are NaN throughout: bool (T,)."""
    return np.isnan(values).reshape(len(values), -1).all(axis=1)


def _check_finite(path: Path, name: str, values: np.ndarray, blank: Union[bool, np.ndarray]) -> None:
    """A ValueError naming the file and dataset ``name`` unless ``values`` (float32, frames first, (T, ...)) are
    finite, except over whole frames of NaN (the frames without a full history, or not attributed, which
    ``nr.attribute`` leaves NaN): ``blank`` False allows none, True any as long as one frame is not NaN, a bool
    mask (T,) exactly those frames (the NaN frames of ``attribution/channels``). A value beyond float32's range
    (±3.4e38) is inf here."""
    finite = np.isfinite(values).reshape(len(values), -1)
    if blank is False and finite.all():
        return
    empty, whole = blank_frames(values), finite.all(axis=1)
    what = "finite numbers" + ("" if blank is False else ", NaN only over whole frames without a full history")
    partial = ~(whole | (empty if blank is not False else False))
    if partial.any():
        t = int(np.flatnonzero(partial)[0])
        raise ValueError(f"{_damaged(path)}: its dataset {name!r} holds {int((~finite[t]).sum())} NaN, infinite or "
                         f"out-of-float32-range value(s) in frame {t}, expected {what}")
    if whole.any() and (isinstance(blank, bool) or np.array_equal(empty, blank)):
        return
    if not whole.any():
        raise ValueError(f"{_damaged(path)}: its dataset {name!r} is NaN in every frame, expected {what}")
    t = int(np.flatnonzero(empty != blank)[0])
    raise ValueError(f"{_damaged(path)}: its dataset {name!r} is {'NaN' if empty[t] else 'not NaN'} in frame {t} "
                     f"but 'attribution/channels' is {'NaN' if blank[t] else 'not'}, expected NaN in the same "
                     "frames (those not attributed)")


def _saved_number(path: Path, name: str, value, expected: str, integer: bool = False, low: float = -np.inf,
                  high: float = np.inf, nan: bool = False):
    """An attribute or one value of a saved analysis as an int (``integer``) or a float in ``[low, high]`` (NaN
    allowed with ``nan``), or one ValueError naming the file, the entry and what it should be."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if integer and isinstance(value, float) and value.is_integer():   # a whole number stored as a float
        value = int(value)
    ok = is_int(value) if integer else is_real(value)
    if ok and not integer:
        value = float(value)
        ok = (nan and np.isnan(value)) or low <= value <= high
    elif ok:
        value = int(value)
        ok = low <= value <= high
    if not ok:
        raise ValueError(f"{_damaged(path)}: its {name!r} is {str(value)[:60]!r}, expected {expected}")
    return value


def _flat(value) -> np.ndarray:
    """An array or (JSON) list as a flat array, anything else (or a ragged list) as an empty one."""
    try:
        return np.ravel(np.asarray(value)) if isinstance(value, (np.ndarray, list)) else np.array([])
    except ValueError:   # a ragged list
        return np.array([])


MAX_INDEX = 2**31 - 1
"""The largest pixel offset, crop origin or cell index a saved analysis may hold (anything larger is damage)."""


MAX_LABEL_CHARS = 100
"""The longest channel label a saved analysis may hold ("A3 ON fast +" is 12 characters): labels name layers and
the trace plot's legend, and 5,000-character ones made napari abort on an OpenGL texture."""


def _check_offset(path: Path, attr: SavedAttribution) -> None:
    """The maps' offset puts them inside the stimulus (map pixel (0, 0) over stimulus pixel (offset, offset), a
    map of h × w over ``offset + h`` × ``offset + w`` pixels; an axis summed out (1 wide) over at least one), or
    one ValueError: an offset of 100 drew the maps beside a 50-pixel stimulus, one of 1e9 broke napari's slider."""
    H, W = np.shape(attr.stimulus)[1:]
    h, w = np.shape(attr.maps)[2:] if attr.maps is not None else (1, 1)
    if attr.offset + h > H or attr.offset + w > W:
        raise ValueError(f"{_damaged(path)}: its 'attribution/offset' is {attr.offset}, which puts the {h}x{w} "
                         f"maps outside the {H}x{W} stimulus")


def _attribution_scalars(path: Path, a: dict) -> dict:
    """The checked small entries of a saved analysis' ``attribution`` group, as :class:`SavedAttribution` takes
    them: ``cells`` (cell indices), ``invariance`` (one of "none", "x", "y", "space"), ``offset`` (map pixel
    (0, 0)'s stimulus pixel, px), ``completeness_error`` (a fraction ≥ 0, or NaN), ``baseline_rate`` (spikes per
    bin ≥ 0, or NaN) and ``crop_origin`` ((y0, x0)
    px of the analysed window in its layer). ``cells`` and ``crop_origin`` (every saved analysis has them: without
    them a cell or a cropped window would be shown as another) missing, or a wrong one, is one ValueError; the
    others missing take their defaults."""
    from ._invariance import INVARIANCES

    for name, expected in (("cells", "the indices of the analysed cells"),
                           ("crop_origin", "the (y0, x0) pixel of the analysed window")):
        if name not in a:
            raise ValueError(f"{_damaged(path)}: it has no dataset 'attribution/{name}' (expected {expected})")
    stored = a["cells"]
    cells = _flat(stored)
    if len(cells) == 0:
        raise ValueError(f"{_damaged(path)}: its 'attribution/cells' is {str(stored)[:60]!r}, expected the "
                         "indices of the analysed cells")
    invariance = a.get("invariance", "none")
    if invariance not in INVARIANCES:
        raise ValueError(f"{_damaged(path)}: its 'attribution/invariance' is {str(invariance)[:60]!r}, expected "
                         f"one of {', '.join(INVARIANCES)}")
    stored = a["crop_origin"]
    origin = _flat(stored)
    if len(origin) != 2:
        raise ValueError(f"{_damaged(path)}: its 'attribution/crop_origin' is {str(stored)[:60]!r},"
                         " expected the (y0, x0) pixel of the analysed window")
    index = f"an index in [0, {MAX_INDEX}]"
    return {"cells": [_saved_number(path, "attribution/cells", c, f"cell indices ({index})", True, 0, MAX_INDEX)
                      for c in cells],
            "invariance": str(invariance),
            "offset": _saved_number(path, "attribution/offset", a.get("offset", 0), f"a pixel offset ({index})",
                                    True, 0, MAX_INDEX),
            "completeness_error": _saved_number(path, "attribution/completeness_error",
                                                a.get("completeness_error", np.nan), "a number >= 0, or NaN",
                                                low=0.0, nan=True),
            "crop_origin": tuple(_saved_number(path, "attribution/crop_origin", v,
                                               f"(y0, x0) pixels ({index} each)", True, 0, MAX_INDEX)
                                 for v in origin),
            "baseline_rate": _saved_number(path, "attribution/baseline_rate", a.get("baseline_rate", np.nan),
                                           "a rate >= 0 (spikes per bin), or NaN", low=0.0, nan=True),
            "input_pixel_um": _input_pixel_um(path, a.get("input_pixel_um")),
            "input_frame_ms": _input_frame_ms(path, a.get("input_frame_ms"))}


def _input_pixel_um(path: Path, stored) -> Optional[tuple]:
    """A saved ``attribution/input_pixel_um``, (y_um, x_um), read as :func:`~._validate.check_pixel_um` reads a
    caller's (None for the model's own 55 µm, or for none saved), or the ValueError of a damaged file."""
    if stored is None:
        return None
    values = _flat(stored)
    try:
        if len(values) != 2:
            raise ValueError
        return check_pixel_um([float(v) for v in values])
    except (ValueError, TypeError):
        raise ValueError(f"{_damaged(path)}: its 'attribution/input_pixel_um' is {str(stored)[:60]!r}, expected "
                         "the (y, x) pixel size of the analysed layer in µm, two positive numbers") from None


def _input_frame_ms(path: Path, stored, name: str = "attribution/input_frame_ms") -> Optional[float]:
    """A saved ``attribution/input_frame_ms`` (or the attribute ``name``; ms) read by
    :func:`~._validate.stored_frame_ms` (None for the model's own 10 ms, or for none saved), or the ValueError
    of a damaged file."""
    try:
        return stored_frame_ms(stored)
    except ValueError:
        raise ValueError(f"{_damaged(path)}: its '{name}' is {str(stored)[:60]!r}, expected "
                         "the frame interval of the analysed layer in ms, a positive number") from None


def read_analysis(path: PathLike) -> SavedAnalysis:
    """A saved analysis (``Analysis.save("x.h5")``) read back: attribution, reduction, parameters, model info.

    Parameters
    ----------
    path : str or Path
        An ``.h5``/``.hdf5`` file that :meth:`napari_retina.analysis.Analysis.save` wrote.

    Returns
    -------
    SavedAnalysis
        ``attribution`` (:class:`SavedAttribution`: stimulus, channels ``A_c(t)``,
        response, maps or None, ...), ``reduction`` (:class:`SavedReduction`, None when
        the analysis did not reduce), ``parameters`` (the settings that produced it)
        and ``model`` (what was saved about the model). Arrays only: no napari, no torch.

    Raises
    ------
    OSError
        A missing file, or a folder (``FileNotFoundError``, ``IsADirectoryError``).
    ValueError
        The datasets the layers are built from are checked first: a missing or
        misshapen one (``stimulus`` (T, H, W), ``attribution/channels`` (T, C),
        ``attribution/response`` (T,), ``attribution/maps`` (T, C, h, w) when
        present, ``reduction/reduced_response`` (T,) and kept channels among the C
        when there is a reduction), one holding NaN or ±inf (the stimulus none;
        the others NaN only over whole frames), an attribute of the wrong kind
        (:func:`_attribution_scalars`) or a dataset h5py cannot read is one
        ValueError naming the file and the entry. Only the datasets the layers
        need are read. A file that is no saved analysis (not HDF5, or without an
        ``attribution`` group) is a ValueError too.

    Example
    -------
    >>> saved = nr.read_analysis("noise-analysis.h5")                # doctest: +SKIP
    >>> saved.attribution.channels.shape, saved.reduction.kept       # doctest: +SKIP
    ((1000, 8), [3, 5])
    """
    import h5py

    path = nr_io._existing(path)   # a missing file or a folder: one sentence
    not_one = f"{str(path)!r} is not a saved analysis (an .h5/.hdf5 file Analysis.save wrote)"
    if path.suffix.lower() not in nr_io.HDF5_SUFFIXES:
        raise ValueError(not_one)
    if not h5py.is_hdf5(path):
        raise ValueError(f"{not_one}: it is not an HDF5 file")

    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("attribution", "stimulus") if k not in h5]
            if missing:   # a write_results file of an attribution or an experiment, say: not damaged, another kind
                raise ValueError(f"{not_one}: it has no {' and no '.join(repr(k) for k in missing)}")
            a = _group(h5, path, "attribution", ("channels", "response", "maps", "cells", "crop_origin",
                                                 "input_pixel_um"))
            r = _group(h5, path, "reduction", ("kept", "reduced_response"))
            params, model = _group(h5, path, "parameters", ("crop", "pixel_um")), _group(h5, path, "model")
            # crop and pixel_um: lists, written as datasets
            stim = _read_dataset(h5, path, "stimulus")
    except (OSError, RuntimeError, KeyError) as exc:   # the file itself (its structure) cannot be read
        why = nr_io._h5_problem(exc) if isinstance(exc, OSError) else one_sentence(exc)
        if nr_io._h5_locked(exc):   # in use, not damaged: a user told "damaged" might delete a good result
            raise ValueError(f"{str(path)!r} cannot be read now: {why}") from None
        raise ValueError(f"{_damaged(path)}: it cannot be read ({why})") from None
    stim = _checked(path, "stimulus", stim, "the analysed stimulus, (T, H, W)", 3, blank=False)
    T = len(stim)
    channels = _checked(path, "attribution/channels", a.get("channels"), f"the channels' attributions, ({T}, C)",
                        2, T)
    C, blank = channels.shape[1], blank_frames(channels)
    maps = a.get("maps")
    attr = SavedAttribution(stimulus=stim, channels=channels,
                            response=_checked(path, "attribution/response", a.get("response"),
                                              f"the model's response, ({T},)", 1, T, blank=blank),
                            maps=None if maps is None else _checked(path, "attribution/maps", maps,
                                                                    f"the channels' maps, ({T}, {C}, h, w)", 4, T, C,
                                                                    blank=blank),
                            **_attribution_scalars(path, a))
    _check_offset(path, attr)
    red = None
    if r or params.get("reduce") is True:   # a reduction was saved: all of what shows it, or one sentence
        for kind, name, expected in (("dataset", "kept", "the reduction's kept channels"),
                                     ("attribute", "labels", "the channels' labels")):
            if r.get(name) is None:
                raise ValueError(f"{_damaged(path)}: it has no {kind} 'reduction/{name}' (expected {expected})")
        kept, labels = np.ravel(r["kept"]), r["labels"]
        if kept.dtype.kind not in "iu" or not all(0 <= k < C for k in kept) or len(set(kept.tolist())) < len(kept):
            raise ValueError(f"{str(path)!r} is a damaged saved analysis: its dataset 'reduction/kept' holds "
                             f"{str(kept.tolist())[:60]}, expected distinct indices of the {C} channels of "
                             "attribution/channels")
        if (not isinstance(labels, list) or len(labels) != C
                or not all(isinstance(x, str) and len(x) <= MAX_LABEL_CHARS for x in labels)):
            raise ValueError(f"{str(path)!r} is a damaged saved analysis: its attribute 'reduction/labels' is "
                             f"{str(labels)[:60]!r}, expected a JSON list of {C} channel labels (text of at most "
                             f"{MAX_LABEL_CHARS} characters each)")
        red = SavedReduction(kept=[int(c) for c in kept], labels=labels,
                             explained_variance=_saved_number(path, "reduction/explained_variance",
                                                              r.get("explained_variance", np.nan),
                                                              "a fraction of at most 1, or NaN", high=1.0 + 1e-9,
                                                              nan=True),
                             reduced_response=_checked(path, "reduction/reduced_response", r.get("reduced_response"),
                                                       f"the reduced circuit's response, ({T},)", 1, T,
                                                       blank=blank))
    if "frame_ms" in params:   # the settings the Analyze dock may apply: a number it can show
        params["frame_ms"] = _input_frame_ms(path, params["frame_ms"], "parameters/frame_ms") or FRAME_MS
    return SavedAnalysis(attr, red, params, model)


