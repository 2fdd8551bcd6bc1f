"""napari reader: stimulus stacks (.npy, .tif/.tiff, .h5/.hdf5) and saved analyses (.h5) as layers.

A stimulus layer carries the physical scale of the stimulus (10 ms per frame,
55 µm per pixel), its units and axis labels, so every result layer built
later lines up with it.

A saved analysis (``Analysis.save("x.h5")``, the Analyze widget's "Save")
reopens as what was shown when it was saved: the analysed stimulus, the
channel maps, the trace panel, and the settings that produced them (in the
stimulus layer's metadata, ``metadata["napari_retina"]["analysis_parameters"]``,
which the Analyze widget's "Use the settings of the layer's analysis" applies).
Neither path imports torch.
"""

from __future__ import annotations

import numbers
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .. import io as nr_io
from .._json import parse_json
from .._validate import one_sentence
from .._types import ReaderPaths
from ._layers import META, analysis_layer_data, colour_bar_legend, plugin_metadata, stimulus_layer_kwargs

SETTINGS_KEY = "analysis_parameters"
"""Key, in the stimulus layer's plugin metadata, of the saved analysis' settings."""


def napari_get_reader(path: ReaderPaths) -> Optional[Callable]:
    """Return :func:`read_stimulus_layers` when ``path`` is a stimulus file or saved analysis we read, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(nr_io.STIMULUS_SUFFIXES) for p in paths):
        return None
    return read_stimulus_layers


def read_stimulus_layers(path: ReaderPaths) -> list[tuple]:
    """Read stimulus files and saved analyses into napari layer-data tuples.

    A stimulus file becomes an image layer ``(T, H, W)`` with scale
    ``(FRAME_MS, PIXEL_UM, PIXEL_UM)``, units ``("ms", "um", "um")`` and axis
    labels ``("t", "y", "x")``, named after the file. A saved analysis
    (:func:`is_saved_analysis`) becomes the layers of :func:`read_analysis_layers`.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out = []
    for p in paths:
        p = Path(p)
        if is_saved_analysis(p):
            out.extend(read_analysis_layers(p))
            continue
        stim = nr_io.read_stimulus(p)
        kwargs = stimulus_layer_kwargs(stim, name=p.stem, metadata={"source": str(p)})
        out.append((stim, kwargs, "image"))
    return out


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


# ----------------------------------------------------------- saved analysis ---

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
    """The parts of an ``Attribution`` the layers need, read back from a saved analysis (no model)."""

    stimulus: np.ndarray
    channels: np.ndarray
    response: np.ndarray
    maps: Optional[np.ndarray] = None
    cells: list = field(default_factory=list)
    invariance: str = "none"
    offset: int = 0
    completeness_error: float = float("nan")
    crop_origin: tuple = (0, 0)
    model = None


@dataclass
class SavedReduction:
    """The parts of a ``Reduction`` the layers need, read back from a saved analysis."""

    kept: list
    labels: list
    explained_variance: float
    reduced_response: np.ndarray

    def label(self, c: int) -> str:
        return str(self.labels[int(c)])


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
    kinds = (numbers.Integral,) if integer else (numbers.Real,)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
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


def _attribution_scalars(path: Path, a: dict) -> dict:
    """The checked small entries of a saved analysis' ``attribution`` group, as :class:`SavedAttribution` takes
    them: ``cells`` (cell indices), ``invariance`` (one of "none", "x", "y", "space"), ``offset`` (map pixel
    (0, 0)'s stimulus pixel, px), ``completeness_error`` (a fraction ≥ 0, or NaN) and ``crop_origin`` ((y0, x0)
    px of the analysed window in its layer). Missing ones take their defaults; a wrong one is one ValueError."""
    from .._invariance import INVARIANCES

    stored = a.get("cells", np.array([0]))
    cells = _flat(stored)
    if len(cells) == 0:
        raise ValueError(f"{_damaged(path)}: its 'attribution/cells' is {str(stored)[:60]!r}, expected the "
                         "indices of the analysed cells")
    invariance = a.get("invariance", "none")
    if invariance not in INVARIANCES:
        raise ValueError(f"{_damaged(path)}: its 'attribution/invariance' is {str(invariance)[:60]!r}, expected "
                         f"one of {', '.join(INVARIANCES)}")
    stored = a.get("crop_origin", np.zeros(2, np.int64))
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
                                 for v in origin)}


def read_analysis(path: Path) -> tuple[SavedAttribution, Optional[SavedReduction], dict, dict]:
    """(attribution, reduction or None, parameters, model info) of a saved analysis.

    The datasets the layers are built from are checked first: a missing or
    misshapen one (``stimulus`` (T, H, W), ``attribution/channels`` (T, C),
    ``attribution/response`` (T,), ``attribution/maps`` (T, C, h, w) when
    present, ``reduction/reduced_response`` (T,) and kept channels among the C
    when there is a reduction), one holding NaN or ±inf (the stimulus none;
    the others NaN only over whole frames), an attribute of the wrong kind
    (:func:`_attribution_scalars`) or a dataset h5py cannot read is one
    ValueError naming the file and the entry. Only the datasets the layers
    need are read.
    """
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            a = _group(h5, path, "attribution", ("channels", "response", "maps", "cells", "crop_origin"))
            r = _group(h5, path, "reduction", ("kept", "reduced_response"))
            params, model = _group(h5, path, "parameters", ("crop",)), _group(h5, path, "model")   # crop: a list
            stim = _read_dataset(h5, path, "stimulus")
    except (OSError, RuntimeError, KeyError) as exc:   # the file itself (its structure) cannot be read
        raise ValueError(f"{_damaged(path)}: it cannot be read ({one_sentence(exc)})") from None
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
    red = None
    if r.get("kept") is not None and r.get("labels") is not None:
        kept, labels = np.ravel(r["kept"]), r["labels"]
        if kept.dtype.kind not in "iu" or not all(0 <= k < C for k in kept):
            raise ValueError(f"{str(path)!r} is a damaged saved analysis: its dataset 'reduction/kept' holds "
                             f"{kept.tolist()}, expected indices of the {C} channels of attribution/channels")
        if not isinstance(labels, list) or len(labels) != C:
            raise ValueError(f"{str(path)!r} is a damaged saved analysis: its attribute 'reduction/labels' is "
                             f"{str(labels)[:60]!r}, expected a JSON list of {C} channel labels")
        red = SavedReduction(kept=[int(c) for c in kept], labels=labels,
                             explained_variance=_saved_number(path, "reduction/explained_variance",
                                                              r.get("explained_variance", np.nan), "a number, or NaN",
                                                              nan=True),
                             reduced_response=_checked(path, "reduction/reduced_response", r.get("reduced_response"),
                                                       f"the reduced circuit's response, ({T},)", 1, T,
                                                       blank=blank))
    return attr, red, params, model


def read_analysis_layers(path: Path) -> list[tuple]:
    """A saved analysis as layer-data tuples: the analysed stimulus (carrying its traces, which the
    plugin's trace plot dock shows when the layer is added, :func:`._plot.show_stored_traces`) and
    the channel maps.

    The stimulus layer (named after the file) holds in its plugin metadata the
    settings that produced the analysis (:data:`SETTINGS_KEY`: cell, steps,
    invariance, crop, normalize, reduce, explain), the model's source, the
    completeness error and the explained variance. The time cursor is not
    restored (it follows the slider only when added by the plugin's widgets).
    """
    path = Path(path)
    attr, red, params, model = read_analysis(path)
    name = path.stem
    settings = {k: v for k, v in params.items() if k not in ("frame_ms", "pixel_um", "stimulus_layer")}
    meta = {"source": str(path), META: {"role": "stimulus", SETTINGS_KEY: settings,
                                        "model_source": model.get("source", ""),
                                        "completeness_error": attr.completeness_error,
                                        "explained_variance": None if red is None else red.explained_variance,
                                        "stimulus_layer": params.get("stimulus_layer", "")}}
    from ._plot import TRACES_KEY, follow_current_viewer, stored_traces   # vispy: only when a saved analysis is opened

    follow_current_viewer()   # the viewer opening it plots the traces its stimulus layer carries
    _follow_copies_in_current_viewer()   # ... and gives a second copy's maps that copy's name

    kwargs = stimulus_layer_kwargs(attr.stimulus, name=name)
    kwargs["metadata"][META].update(meta.pop(META))
    kwargs["metadata"].update(meta)
    read = uuid.uuid4().hex   # ties this reading's maps to its stimulus layer, whatever napari names them
    kwargs["metadata"][META][READ_KEY] = read
    prefix = f"{name}: "
    maps = analysis_layer_data(attr, red, prefix=prefix)
    for _, kw, _ in maps:
        kw["metadata"].setdefault(META, {}).update({"prefix": prefix, READ_KEY: read})
    # plotted when the layer is added, with the maps' legend line as the live result has it
    kwargs["metadata"][META][TRACES_KEY] = stored_traces(attr, red, name, legend=colour_bar_legend(maps))
    return [(attr.stimulus, kwargs, "image")] + maps


READ_KEY = "read"
"""Plugin-metadata key of the layers one reading of a saved analysis made: a token shared by its stimulus
layer and its maps (:func:`follow_copies`)."""

_FOLLOWED: "weakref.WeakSet" = weakref.WeakSet()


def follow_copies(viewer) -> None:
    """From now on, a reopened analysis' maps take the name napari gives their stimulus layer (once per viewer).

    Opened twice, the second stimulus layer becomes "x [1]" (napari keeps
    layer names unique), and its maps "x: A0 [1]" with the first copy's
    prefix "x: ": they would belong to the first copy, whose next analysis
    would replace them. As each map of a reading is added, it takes its
    own stimulus layer's prefix and name ("x [1]: A0"), as the layers of a
    result added twice from the Experiments dock do.
    """
    if viewer in _FOLLOWED:
        return
    _FOLLOWED.add(viewer)

    def inserted(event) -> None:
        claim_map(viewer, event.value)

    viewer.layers.events.inserted.connect(inserted)


def claim_map(viewer, layer) -> None:
    """Give a reopened map layer the prefix and name of the stimulus layer of the same reading, if they differ."""
    meta = plugin_metadata(layer)
    if meta.get("role") != "map" or READ_KEY not in meta:
        return
    stimulus = next((lay for lay in viewer.layers if lay.metadata.get(META, {}).get("role") == "stimulus"
                     and lay.metadata[META].get(READ_KEY) == meta[READ_KEY]), None)
    if stimulus is None or meta.get("prefix") == f"{stimulus.name}: ":
        return
    meta["prefix"] = f"{stimulus.name}: "
    layer.name = f"{meta['prefix']}{meta['label']}"


def _follow_copies_in_current_viewer() -> None:
    """:func:`follow_copies` for napari's current viewer (the one the reader is opening a file in), if any."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        follow_copies(viewer)
