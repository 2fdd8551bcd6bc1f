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

import uuid
import weakref
from pathlib import Path
from typing import Callable, Optional

from .. import io as nr_io
from .._types import ReaderPaths
from ..saved import is_saved_analysis, read_analysis
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
    saved = read_analysis(path)
    attr, red, params, model = saved.attribution, saved.reduction, saved.parameters, saved.model
    name = path.stem
    settings = {k: v for k, v in params.items() if k != "stimulus_layer"}   # pixel_um, frame_ms: the analysed
    # stack's pixel size and frame interval (the Analyze dock's "Use the settings..." says the layer has the model's)
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
