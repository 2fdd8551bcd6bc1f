"""napari reader for a batch results store (a folder written by ``napari-retina batch``).

Per stimulus of the store: the stimulus, and for each ``attribute`` result its
maps (one image layer per first-layer channel), the first of which carries the
result's traces (the plugin's trace plot dock shows them when the layer is added). The
stimulus and the maps are dask arrays over the files and the Zarr chunks:
nothing is read until a frame is viewed (the traces, (T, C), are read).
Only the first stimulus and its first result are visible; the others are hidden (they
share the stimulus's place in the world). A stimulus file moved or deleted since the run is
left out with a warning naming it; when none can be read, one FileNotFoundError says so.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np

from .._json import parse_json
from .._types import ReaderPaths
from .._units import FRAME_MS
from ._layers import (COLOUR_BAR_KEY, META, RESPONSE_COLOR, SCALE, CellTraces, _rgba, analysed_geometry, bar_limit,
                      channel_color, colour_bar_legend, layer_geometry, map_layer_data, stimulus_layer_kwargs)


def _store(path: ReaderPaths) -> Optional[Path]:
    """The results store ``path`` names (a folder holding the batch manifest), else None."""
    from ..batch import MANIFEST

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) != 1:
        return None
    p = Path(paths[0])
    if p.name == MANIFEST:
        p = p.parent
    return p if (p / MANIFEST).is_file() else None


def napari_get_reader(path: ReaderPaths) -> Optional[Callable]:
    """Return :func:`read_batch_layers` when ``path`` is a batch results store, else None."""
    return read_batch_layers if _store(path) is not None else None


def _attribute_layers(res, stim_shape: tuple, prefix: str, visible: bool) -> list[tuple]:
    """Maps (lazy) of one ``attribute`` result; the first carries its traces for the plot dock."""
    import zarr

    from ..batch import _block_name
    from ._plot import TRACES_KEY, stored_traces

    block0 = zarr.open_group(str(res.path / _block_name(0)), mode="r").attrs
    limit = res.attrs.get("summary", {}).get("map_limit")   # the whole task's (batch.task_summary)
    if limit is None:   # a store written before the summary was recorded: the largest block's, a bound
        limit = max(_number(zarr.open_group(str(res.path / _block_name(i)), mode="r").attrs.get("map_limit"))
                    for i in range(len(res.attrs["blocks"])))
    offset, (y0, x0) = _block_geometry(res, block0)   # y0, x0: the window the spec's crop cut out of the stimulus
    pixel = _input_pixel_um(res, block0)               # the stimulus's pixel size when it was resampled
    frame = _task_frame_ms(res)                        # its frame interval when time was resampled
    channels = res.arrays["channels"].compute()
    attr = SimpleNamespace(maps=None, model=None, offset=offset, cells=[res.attrs["cell"]],
                           invariance=res.attrs["params"].get("invariance", "none"),
                           channels=channels, response=res.arrays["response"].compute())
    _check_fits(res, stim_shape, offset, (y0, x0), pixel, frame)
    size = 2 * offset + (max(res.arrays["maps"].shape[2:]) if "maps" in res.arrays else 0)   # the window's side
    window = SimpleNamespace(crop_origin=(y0, x0), input_pixel_um=pixel, input_frame_ms=frame,
                             stimulus=np.broadcast_to(np.float32(0), (len(channels), size, size)))
    geo = analysed_geometry(layer_geometry(shape=stim_shape, scale=stimulus_scale(res)), window)
    out = []
    if "maps" in res.arrays:
        limit = bar_limit(limit) if np.isfinite(_number(limit)) and _number(limit) > 0 else 1.0   # no maps: any
        out += map_layer_data(attr, geometry=geo, maps=res.arrays["maps"], limit=limit, prefix=prefix)
    if out:
        out[0][1].setdefault("metadata", {}).setdefault(META, {})[TRACES_KEY] = stored_traces(
            attr, None, prefix, legend=colour_bar_legend(out) if visible else "")
    for _, kwargs, _ in out:
        if not visible:   # a task shown hidden among many: no colour bar of its own over the visible one's
            kwargs["metadata"][META].pop(COLOUR_BAR_KEY, None)
        kwargs["visible"] = kwargs.get("visible", True) and visible
        kwargs.setdefault("metadata", {})["batch_key"] = res.key
        kwargs["metadata"][META]["prefix"] = prefix   # the trace plot finds its maps by it (one map alone)
    return out


def _number(value) -> float:
    """A stored float attribute as a float (NaN when it is none: null, a string, a list)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _block_geometry(res, block0) -> tuple[int, tuple[int, int]]:
    """(offset, (y0, x0)) of an ``attribute`` result's block 0, pixels: where map pixel (0, 0) sits in the
    analysed window, and where the window sits in the stimulus; a ValueError naming the store entry when they
    are not non-negative whole numbers."""
    offset, origin = block0.get("offset", 0), block0.get("crop_origin", [0, 0])
    whole = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31)
    if not whole(offset) or not (isinstance(origin, list) and len(origin) == 2 and all(map(whole, origin))):
        raise ValueError(f"the batch result {res.key!r} in {str(res.path)!r} is damaged: its block b00000 holds "
                         f"offset {str(offset)[:30]} and crop_origin {str(origin)[:30]}, expected a pixel "
                         "offset and a [y0, x0] pixel")
    return offset, (origin[0], origin[1])


def _input_pixel_um(res, block0) -> Optional[tuple]:
    """An ``attribute`` result's stimulus pixel size (y_um, x_um) when it was resampled to the model's pixels
    (block 0's ``input_pixel_um``), else None; a ValueError naming the store entry when it is no pair of
    positive numbers."""
    from .._validate import check_pixel_um

    stored = block0.get("input_pixel_um")
    if stored is None:
        return None
    try:
        if not isinstance(stored, list) or len(stored) != 2:
            raise ValueError
        return check_pixel_um(stored)
    except ValueError:
        raise ValueError(f"the batch result {res.key!r} in {str(res.path)!r} is damaged: its block b00000 holds "
                         f"input_pixel_um {str(stored)[:30]}, expected [y_um, x_um], two positive numbers") from None


def _task_frame_ms(res) -> Optional[float]:
    """A result's stimulus frame interval (ms) when the spec resampled it to the model's 10 ms bins
    (``params["frame_ms"]``), else None; a ValueError naming the store entry when it is no positive number."""
    from .._validate import stored_frame_ms

    stored = res.attrs.get("params", {}).get("frame_ms")
    try:
        return stored_frame_ms(stored)
    except ValueError:
        raise ValueError(f"the batch result {res.key!r} in {str(res.path)!r} is damaged: its parameters hold "
                         f"frame_ms {str(stored)[:30]}, expected a positive number of ms") from None


def stimulus_scale(res) -> tuple:
    """(ms, µm, µm) per pixel of a batch result's stimulus file: the model's, or the spec's ``frame_ms`` and
    ``pixel_um``."""
    pixel, frame = res.attrs.get("params", {}).get("pixel_um"), _task_frame_ms(res)
    return (SCALE[0] if frame is None else frame,
            *((SCALE[1], SCALE[2]) if pixel is None else (float(pixel[0]), float(pixel[1]))))


def _check_fits(res, stim_shape: tuple, offset: int, origin: tuple, pixel: Optional[tuple] = None,
               frame: Optional[float] = None) -> None:
    """A ValueError naming the store entry and the stimulus file unless the stimulus (T, H, W) has the frames
    the result was computed on (its last block's end; the model's 10 ms bins of ``frame`` ms frames when time
    was resampled) and room for its maps ((T, C, h, w), ``offset`` pixels
    in from the window at ``origin`` (y0, x0), on the model's grid for a stimulus resampled from ``pixel``):
    the file was replaced since the run, or the store was edited."""
    from .._validate import grid_shape

    frames = res.attrs["blocks"][-1][1]
    h, w = res.arrays["maps"].shape[2:] if "maps" in res.arrays else (0, 0)
    grid = grid_shape(stim_shape, pixel, frame)
    if grid[0] != frames or origin[0] + offset + h > grid[1] or origin[1] + offset + w > grid[2]:
        raise ValueError(f"the stimulus file {res.attrs['stimulus']!r} of the batch result {res.key!r} has shape "
                         f"{tuple(stim_shape)}, not that of the stimulus the result was computed on ({frames} frames, "
                         f"maps {h}x{w} at pixel {tuple(origin)} + {offset}); was it replaced since the run?")


def unique_names(paths) -> dict:
    """A short layer name per file path: its stem, with as many parent folders as tell it from the others.

    ``dup/d1/x.npy`` and ``dup/d2/x.npy`` are ``d1/x`` and ``d2/x``; a stem no
    other path has stays as it is; paths that differ only in their suffix keep
    their whole path. Names must be unique: napari renames a duplicate
    (``x [1]``), and showing the store again would then add layers instead of
    replacing them.
    """
    paths = list(dict.fromkeys(str(p) for p in paths))
    parts = {p: [q for q in Path(p).with_suffix("").parts if q != Path(p).anchor] for p in paths}
    depth = dict.fromkeys(paths, 1)
    while True:
        names = {p: "/".join(parts[p][-depth[p]:]) if depth[p] <= len(parts[p]) else p for p in paths}
        seen: dict = {}
        for p, n in names.items():
            seen.setdefault(n, []).append(p)
        clashes = [p for group in seen.values() if len(group) > 1 for p in group if depth[p] <= len(parts[p])]
        if not clashes:
            return names
        for p in clashes:
            depth[p] += 1


def store_names(results) -> tuple[dict, dict]:
    """Layer names in a store: ({stimulus file: name}, {model: name}) by :func:`unique_names`, over the
    results (``TaskResult``) that have a stimulus; the store reader and one result shown alone both use them."""
    with_stimulus = [res for res in results if res.attrs.get("stimulus")]
    return (unique_names(res.attrs["stimulus"] for res in with_stimulus),
            unique_names(res.attrs["model"] for res in with_stimulus))


def read_batch_layers(path: ReaderPaths) -> list[tuple]:
    """Layer-data tuples for a results store: per stimulus, the stimulus and each attribution's maps and traces."""
    from ..batch import StoreError, lazy_stimulus, load

    from ._plot import follow_current_viewer

    follow_current_viewer()   # the viewer opening the store plots the traces its first maps carry
    store = _store(path)
    results = load(store, damaged="skip")   # the intact results shown, the damaged ones said (below)
    by_stimulus: dict = {}
    for key, res in sorted(results.items()):
        if res.attrs.get("stimulus"):
            by_stimulus.setdefault(res.attrs["stimulus"], []).append(res)
    out, shown, unreadable = [], 0, []
    stim_names, model_names = store_names(results.values())
    for stim_path, group in by_stimulus.items():
        stem = stim_names[stim_path]
        try:
            stim = lazy_stimulus(stim_path)
        except (ValueError, TypeError, FileNotFoundError, OSError):
            unreadable.append(Path(stim_path).name)   # moved or deleted since the run: said below
            continue
        kwargs = stimulus_layer_kwargs(stim, name=stem, metadata={"source": stim_path})
        kwargs["scale"] = stimulus_scale(group[0])   # its pixel size, when the spec resampled it
        first = shown == 0   # the first stimulus shown (not the first listed, which may be unreadable) is visible
        out.append((stim, {**kwargs, "visible": first}, "image"))
        shown += 1
        for res in group:
            if res.attrs["kind"] != "attribute":
                continue
            model = model_names[res.attrs["model"]]
            out += _attribute_layers(res, tuple(stim.shape), f"{stem} {model} cell{res.attrs['cell']} ", first)
            first = False
    if unreadable:
        _report_unreadable(store, unreadable, any_shown=shown > 0)
    if results.damaged:
        from napari.utils.notifications import show_warning

        key, why = next(iter(results.damaged.items()))
        show_warning(f"{len(results.damaged)} result(s) of the results store '{store.name}' are damaged and not "
                     f"shown (the first, {key}: {why})")
    changed = [stim_names[p] for p, group in by_stimulus.items() if Path(p).name not in unreadable
               and _changed_since(p, group)]
    if changed:
        from napari.utils.notifications import show_warning

        show_warning(f"{len(changed)} stimulus file(s) of the results store '{store.name}' changed since the run "
                     f"({', '.join(changed[:5])}{' and more' if len(changed) > 5 else ''}: another size or time); "
                     "their results are drawn over the files as they are now, which they were not computed on")
    if not out:   # napari would say only that the reader "returned no data"
        if results.damaged:   # all there was to draw is damaged: say so, not "no complete result yet"
            raise StoreError(next(iter(results.damaged.values())))
        raise ValueError(_nothing_to_draw(store, results))
    undrawn = _undrawn(results)
    if undrawn:
        from napari.utils.notifications import show_info

        show_info(f"The results store '{store.name}' also holds {undrawn}, not drawn here (its layers are the "
                  "attribution maps); nr.show(nr.batch.load(path)[key]) shows one, with its traces")
    return out


def _changed_since(path: str, group: list) -> bool:
    """Whether stimulus file ``path`` has another size or modification time than when ``group``'s results (a
    store's, of that file) were computed (their ``stimulus_file`` stamp); False where none was recorded."""
    from ..batch import _file_stamp

    stamps = [res.attrs.get("params", {}).get("stimulus_file") for res in group]
    try:
        now = _file_stamp(path)
    except OSError:
        return False
    return any(stamp is not None and list(stamp) != now for stamp in stamps)


def _undrawn(results) -> str:
    """The results the store reader draws no layer for (every kind but "attribute", and an attribute result
    without maps: invariance "space"), counted by kind in words ("2 predict and 1 experiment result(s)"), or ""
    when there are none: they were dropped without a word."""
    counts: dict = {}
    for res in results.values():
        kind = res.attrs.get("kind")
        if kind == "attribute" and "maps" not in res.arrays:
            kind = "attribute (no maps: invariance 'space')"
        if kind != "attribute":
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return ""
    parts = [f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: TASK_KINDS.index(kv[0].split()[0])
                                                  if kv[0].split()[0] in TASK_KINDS else len(TASK_KINDS))]
    return (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + " result(s)"


def _nothing_to_draw(store: Path, results) -> str:
    """Why a results store gives no layers: no complete result yet, or only results without a stimulus."""
    if not results:
        return (f"the results store '{store.name}' holds no complete result yet (a run still going, or every "
                "task failed); napari-retina batch on its spec computes them")
    return (f"the results store '{store.name}' holds only results without a stimulus file to draw over "
            f"({len(results)} experiment result(s)); nr.show(nr.batch.load(path)[key]) shows one")


def _report_unreadable(store: Path, names: list, any_shown: bool) -> None:
    """Say which stimulus files of ``store`` could not be read: a warning, or a FileNotFoundError when none could."""
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if not any_shown:
        raise FileNotFoundError(f"none of the stimulus files the results store '{store}' was computed on can be "
                                f"read any more ({listed}: moved or deleted since the run), and its layers are "
                                "drawn over them; nr.batch.load still reads its results")
    from napari.utils.notifications import show_warning

    show_warning(f"{len(names)} stimulus file(s) of the results store '{store.name}' cannot be read any more "
                 f"({listed}: moved or deleted since the run); their results are not shown")


# ------------------------------------------------------------- one task ---

TASK_KINDS = ("predict", "attribute", "reduce", "experiment")
"""The kinds of batch result :func:`read_task_layers` shows."""


def read_task_layers(res, name: Optional[str] = None) -> list[tuple]:
    """Layer-data tuples of one batch result (a ``TaskResult``): its stimulus and what it computed, nothing else.

    ``attribute``: the stimulus and the maps, named as the store reader names
    them (:func:`read_batch_layers`), the first map carrying the traces;
    ``reduce``: the stimulus carrying the model's response, the reduced
    circuit's and the kept channels' traces; ``predict``: the stimulus carrying
    every cell's predicted rate; ``experiment``: what ``nr.show`` shows for an
    ``ExperimentResult`` (the stimulus named after the experiment, its readout
    and conditions in the layer's metadata, its maps if it has any, the
    traces on the stimulus). ``name`` renames the stimulus (the maps become
    ``"<name>: <label>"``). Another kind, or a stimulus file that is gone, is a
    one-sentence error.
    """
    from ._plot import TRACES_KEY

    kind = res.attrs.get("kind")
    if kind not in TASK_KINDS:
        raise ValueError(f"show() shows batch results of kind {', '.join(TASK_KINDS)}; "
                         f"got {kind!r} ({res.key})")
    if kind == "experiment":
        return _experiment_task_layers(res, name)
    stim_path = res.attrs["stimulus"]
    stim = _task_stimulus(res, stim_path)
    stem, model = _names_in_store(res)
    title = name or stem
    kwargs = stimulus_layer_kwargs(stim, name=title, metadata={"source": stim_path})
    kwargs["scale"] = stimulus_scale(res)
    kwargs["visible"] = True
    if kind == "attribute":
        prefix = f"{name}: " if name else f"{stem} {model} cell{res.attrs['cell']} "
        return [(stim, kwargs, "image")] + _attribute_layers(res, tuple(stim.shape), prefix, True)
    traces = _rate_traces(res, title) if kind == "predict" else _reduce_traces(res, title)
    frame = _task_frame_ms(res)
    if frame is not None:   # the traces count the model's 10 ms bins, not the layer's frames
        traces["layer_frames_per_value"] = FRAME_MS / frame
    kwargs["metadata"][META][TRACES_KEY] = traces
    kwargs["metadata"]["batch_key"] = res.key
    return [(stim, kwargs, "image")]


def _names_in_store(res) -> tuple[str, str]:
    """(stimulus name, model name) of one result as :func:`read_batch_layers` names them in its store."""
    from ..batch import load

    try:
        results = list(load(res.path.parents[len(Path(res.key).parts) - 1]).values())
    except Exception:  # noqa: BLE001 - a result moved out of its store: named on its own
        results = []
    stimuli, models = store_names(results + [res])
    return stimuli[res.attrs["stimulus"]], models[res.attrs["model"]]


def _task_stimulus(res, stim_path: str):
    """The stimulus file ``res`` was computed on, lazily, or a FileNotFoundError saying it is gone."""
    from ..batch import lazy_stimulus

    try:
        return lazy_stimulus(stim_path)
    except (ValueError, TypeError, FileNotFoundError, OSError):
        raise FileNotFoundError(f"the stimulus file {stim_path!r} the batch result {res.key!r} was computed on "
                                "cannot be read any more (moved or deleted since the run); nr.batch.load still "
                                "reads its results") from None


def _stored_attribution(res, prefix: str = "") -> Optional[SimpleNamespace]:
    """What the trace plot and the maps need of a stored attribution (``<prefix>response``...), or None."""
    arrays = res.arrays
    if f"{prefix}response" not in arrays:
        return None
    scalars = res.scalars()
    cells = arrays.get(f"{prefix}cells")
    crop = arrays.get(f"{prefix}crop_origin")
    return SimpleNamespace(response=arrays[f"{prefix}response"].compute(),
                           channels=arrays[f"{prefix}channels"].compute(),
                           cells=[int(c) for c in cells.compute()] if cells is not None else [res.attrs["cell"]],
                           offset=int(scalars.get(f"{prefix}offset", 0)), model=None, maps=None,
                           invariance=scalars.get(f"{prefix}invariance", "none"),
                           crop_origin=tuple(int(v) for v in crop.compute()) if crop is not None else (0, 0))


class _StoredReduction(SimpleNamespace):
    """What the trace plot and the maps need of a stored reduction: kept channels, labels, responses."""

    def label(self, c: int) -> str:
        return self.labels[int(c)] if 0 <= int(c) < len(self.labels) else f"A{int(c)}"


def _stored_reduction(res, prefix: str = "reduction/") -> Optional[_StoredReduction]:

    arrays = res.arrays
    if f"{prefix}kept" not in arrays:
        return None
    scalars = res.scalars()
    labels = scalars.get(f"{prefix}labels")
    return _StoredReduction(kept=[int(c) for c in arrays[f"{prefix}kept"].compute()],
                            reduced_response=arrays[f"{prefix}reduced_response"].compute(),
                            explained_variance=float(scalars.get(f"{prefix}explained_variance", float("nan"))),
                            labels=parse_json(labels, f"{res.key} labels") if isinstance(labels, str) else [])


def _reduce_traces(res, name: str) -> dict:
    """A ``reduce`` result's traces: the model's response, the reduced circuit's, the kept channels'."""
    from ._plot import stored_traces

    return stored_traces(_stored_attribution(res, "attribution/"), _stored_reduction(res), name)


def _rate_traces(res, name: str) -> dict:
    """A ``predict`` result's traces: every cell's predicted rate, one row each."""
    import numpy as np

    from ._plot import UNIT

    rates = np.asarray(res.arrays["rates"].compute(), np.float32)
    series = [{"label": f"cell {c} rate", "kind": "rate", "channel": -1, "row": c, "values": rates[:, c],
               "color": _rgba(RESPONSE_COLOR) if c == 0 else channel_color(c)} for c in range(rates.shape[1])]
    title = (f"<b>{name}</b> — predicted rates of cells 0–{rates.shape[1] - 1}, in {UNIT} (spikes per 10 ms bin), "
             "each row on its own scale.")
    return {"series": series, "title": title}


def _experiment_task_layers(res, name: Optional[str]) -> list[tuple]:
    """An experiment result as ``nr.show(ExperimentResult)`` shows one: stimulus (readout, conditions), maps, traces."""

    import numpy as np

    from ..batch import parse_readout
    from ._plot import TRACES_KEY, stored_traces

    scalars = res.scalars()
    experiment = res.attrs["name"]
    name = name or experiment
    meta = {"experiment": experiment, "readout": parse_readout(scalars.get("readout") or "{}"),
            "conditions": parse_json(scalars.get("conditions") or "[]", f"{res.key} conditions"), "batch_key": res.key}
    stim = np.asarray(res.arrays["stimulus"].compute())   # a protocol's movie: small, and limits symmetric about 0
    kwargs = stimulus_layer_kwargs(stim, name=name, metadata=meta)
    attr, red = _stored_attribution(res, "attribution/"), _stored_reduction(res)
    if attr is None:   # nothing attributed: the stimulus alone, as for a ground-truth ExperimentResult
        return [(stim, kwargs, "image")]
    cell = None   # the model's response at every frame, as nr.show draws an experiment's
    if "rates" in res.arrays and scalars.get("attribution/baseline_rate") is not None:
        cell = CellTraces.from_rates(res.arrays["rates"].compute(), attr.cells, scalars["attribution/baseline_rate"])
    maps = []
    if "attribution/maps" in res.arrays:
        attr.stimulus = stim
        geo = analysed_geometry(layer_geometry(shape=stim.shape), attr)
        maps = map_layer_data(attr, red, geometry=geo, maps=res.arrays["attribution/maps"], prefix=f"{name}: ")
        for _, kw, _ in maps:
            kw["metadata"][META]["prefix"] = f"{name}: "
    kwargs["metadata"][META][TRACES_KEY] = stored_traces(attr, red, name, cell, legend=colour_bar_legend(maps))
    return [(stim, kwargs, "image")] + maps
