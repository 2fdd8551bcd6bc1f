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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .. import io as nr_io
from ._layers import META, analysis_layer_data, stimulus_layer_kwargs

Paths = Union[str, list]
SETTINGS_KEY = "analysis_parameters"
"""Key, in the stimulus layer's plugin metadata, of the saved analysis' settings."""


def napari_get_reader(path: Paths) -> Optional[Callable]:
    """Return :func:`read_stimulus_layers` when ``path`` is a stimulus file or saved analysis we read, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(nr_io.STIMULUS_SUFFIXES) for p in paths):
        return None
    return read_stimulus_layers


def read_stimulus_layers(path: Paths) -> list[tuple]:
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
                return json.loads(value)
            except ValueError:
                return value
    return value


def _group(h5, name: str) -> dict:
    """Datasets (as arrays) and attributes (as Python values) of group ``name`` (empty when absent)."""
    if name not in h5:
        return {}
    g = h5[name]
    out = {k: _attr_value(v) for k, v in g.attrs.items()}
    out.update({k: g[k][()] for k in g.keys() if not hasattr(g[k], "keys")})
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
             channels: Optional[int] = None) -> np.ndarray:
    """Dataset ``name`` of a saved analysis as float32, or one ValueError naming the file and the dataset when it
    is missing, not numbers, or not of ``ndim`` dimensions with ``frames`` first and ``channels`` second."""
    where = f"{str(path)!r} is a damaged saved analysis"
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: it has no dataset {name!r} (expected {expected})")
    shape = value.shape
    if (value.dtype.kind not in "biuf" or value.ndim != ndim or 0 in shape
            or (frames is not None and shape[0] != frames) or (channels is not None and shape[1] != channels)):
        got = f"dtype {value.dtype}" if value.dtype.kind not in "biuf" else f"shape {shape}"
        raise ValueError(f"{where}: its dataset {name!r} has {got}, expected {expected}")
    return np.asarray(value, np.float32)


def read_analysis(path: Path) -> tuple[SavedAttribution, Optional[SavedReduction], dict, dict]:
    """(attribution, reduction or None, parameters, model info) of a saved analysis.

    The datasets the layers are built from are checked first: a missing or
    misshapen one (``stimulus`` (T, H, W), ``attribution/channels`` (T, C),
    ``attribution/response`` (T,), ``attribution/maps`` (T, C, h, w) when
    present, ``reduction/reduced_response`` (T,) and kept channels among the C
    when there is a reduction) is one ValueError naming the file and the dataset.
    """
    import h5py

    with h5py.File(path, "r") as h5:
        a, r = _group(h5, "attribution"), _group(h5, "reduction")
        params, model = _group(h5, "parameters"), _group(h5, "model")
        stim = h5["stimulus"][()] if isinstance(h5.get("stimulus"), h5py.Dataset) else None
    stim = _checked(path, "stimulus", stim, "the analysed stimulus, (T, H, W)", 3)
    T = len(stim)
    channels = _checked(path, "attribution/channels", a.get("channels"), f"the channels' attributions, ({T}, C)",
                        2, T)
    C = channels.shape[1]
    maps = a.get("maps")
    attr = SavedAttribution(stimulus=stim, channels=channels,
                            response=_checked(path, "attribution/response", a.get("response"),
                                              f"the model's response, ({T},)", 1, T),
                            maps=None if maps is None else _checked(path, "attribution/maps", maps,
                                                                    f"the channels' maps, ({T}, {C}, h, w)", 4, T, C),
                            cells=[int(c) for c in np.ravel(a.get("cells", [0]))],
                            invariance=str(a.get("invariance", "none")), offset=int(a.get("offset", 0)),
                            completeness_error=float(a.get("completeness_error", np.nan)),
                            crop_origin=tuple(int(v) for v in np.ravel(a.get("crop_origin", (0, 0)))))
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
                             explained_variance=float(r.get("explained_variance", np.nan)),
                             reduced_response=_checked(path, "reduction/reduced_response", r.get("reduced_response"),
                                                       f"the reduced circuit's response, ({T},)", 1, T))
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

    kwargs = stimulus_layer_kwargs(attr.stimulus, name=name)
    kwargs["metadata"][META].update(meta.pop(META))
    kwargs["metadata"][META][TRACES_KEY] = stored_traces(attr, red, name)   # plotted when the layer is added
    kwargs["metadata"].update(meta)
    prefix = f"{name}: "
    layers = [(attr.stimulus, kwargs, "image")]
    for data, kw, kind in analysis_layer_data(attr, red, prefix=prefix):
        role = kw["metadata"].get(META, {}).get("role")
        if role == "cursor":
            continue
        kw["metadata"].setdefault(META, {})["prefix"] = prefix
        layers.append((data, kw, kind))
    return layers
