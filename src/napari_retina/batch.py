"""Analyses over many stimuli, cells, models and experiments on a dask cluster.

A batch *spec* (a dict, or a .json/.yaml/.yml file) names the grid::

    {"model": "default",                      # or a checkpoint path, or a list of them
     "stimuli": ["a.npy", "runs/*.h5"],       # paths, globs welcome (relative to the spec file;
                                              # an existing file is taken literally, even run[1].npy)
     "cells": [0, 1],                         # or "all"
     "analyses": ["predict", "attribute", "reduce"],
     "experiments": ["osr", "anticipation"],  # optional, per model and cell
     "out": "results",                        # the results store (a folder)
     "steps": 8, "invariance": "none", "block_frames": 2048, "threads": 1,   # optional (steps up to
                                              # attribution.MAX_STEPS, threads up to MAX_THREADS)
     "crop": "center",                        # optional: None, "center" or [y0, x0], as nr.attribute's crop
     "pixel_um": 27.5,                        # optional: the stimuli's pixel size (µm; or [y, x]), resampled
                                              # to the model's 55 µm pixels as nr.attribute's pixel_um
     "frame_ms": "1000/60",                   # optional: how long each frame was shown (ms; a number, or a
                                              # ratio as text), resampled to the model's 10 ms bins as
                                              # nr.attribute's frame_ms
     "normalize": "zscore"}                   # optional: z-score each stimulus by the whole file's (cropped)
                                              # statistics, as nr.attribute's normalize="zscore"

:func:`run` makes one *task* per (model, stimulus, analysis) for ``predict``
(every cell at once), per (model, stimulus, cell, analysis) for ``attribute``
and ``reduce``, and per (model, experiment, cell). Tasks run on
``dask.distributed`` workers (a ``LocalCluster`` of processes, or any cluster
the given ``Client`` talks to), read their own inputs (only paths travel
through the scheduler) and write their own result.

The store: one Zarr group per task at ``out/<model>/<stimulus>/<analysis>``
(``.../cell<c>/<analysis>`` with a cell, ``out/<model>/experiments/<name>/cell<c>``),
with the parameters, versions and provenance as attributes (``predict``,
``attribute`` and ``reduce`` also ``units``: what the rates are in, the string the
``predict`` and ``attribute`` commands write). ``predict`` and
``attribute`` split a long stimulus into blocks of ``block_frames`` output
frames, each a task of its own reading only its frames plus ``history − 1``
frames before them (the model's history as overlap), and a worker's memory is
bounded by the block, not the movie (``.npy`` and HDF5 are read by window; a
TIFF is read whole). With fixed ``steps`` the blocks' results equal the unsplit
run's (up to float32 rounding). With the default tolerance (``steps`` unset)
each frame is refined until it meets ``tol`` against the running maxima of its
own block (largest response and largest frame of maps; see
:mod:`napari_retina.attribution._adaptive`), which are never above the whole
movie's: every frame meets the unsplit run's criterion too, so the task's
``completeness_error`` is at most ``tol`` and its maps agree with the unsplit
run's within about ``tol`` of the largest frame's (each is within ``tol`` of
the exact integral by the error estimate), but they are not equal: a frame can
stop at another number of points. The tests check both statements. ``reduce`` is
not split (it selects channels over every frame): it runs what the Analyze
widget runs (:func:`napari_retina.analysis.run_analysis`, traces in chunks
for movies whose maps would not fit), so its memory grows with the movie's
(T, C) traces and the stimulus. Each block is
written to a temporary folder and renamed into place; the task's group is
renamed into place only when all its blocks are there. A killed worker thus
leaves no partial result (a rerun removes its temporary folder; the folders a
run's committed tasks leave empty under ``out/.partial`` go when it ends), and a rerun
skips every task (and every block) whose result exists with the same
parameters and inputs (the model's weights, the stimulus file's size and
modification time); ``force=True`` recomputes. A result whose parameters or
inputs have changed is removed when the rerun starts, before its task runs,
so a rerun that fails on a changed input leaves no outdated result to load. Renames are atomic on a POSIX file
system, local or shared by the workers (NFS, Lustre); object stores are not
supported.

:func:`load` opens a store lazily (dask arrays over the Zarr chunks).

A script that calls :func:`run` without a client starts worker processes:
guard it with ``if __name__ == "__main__":``, as for any ``LocalCluster``.

Example
-------
>>> report = nr.batch.run({"stimuli": ["a.npy"], "cells": [0], "analyses": ["attribute"],
...                        "out": "results"})                        # doctest: +SKIP
>>> res = nr.batch.load("results")                                   # doctest: +SKIP
>>> res["default/a-1f2e3d4c/cell0/attribute"].arrays["maps"]        # doctest: +SKIP
dask.array<concatenate, shape=(200, 8, 36, 36), ...>
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np

from ._atomic import _host_tag, atomic_write_text, is_stale, sigint_handled
from ._json import MAX_JSON_DEPTH, TOO_DEEP, nesting_depth, parse_json, strict_json
from ._resample import model_frame_count
from ._types import PathLike
from ._units import RATE_UNITS
from ._validate import RESAMPLED_SMALL_REMEDY, grid_shape, grid_words, is_int, is_real, one_sentence

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import dask.array
    import distributed

    from ._validate import Crop

__all__ = [
    "BatchSpecError", "Spec", "parse_spec", "Task", "stimulus_shape", "stimulus_frames", "check_frame_size",
    "check_stimulus_shape", "read_window", "lazy_stimulus", "plan", "run_block", "task_summary", "finish_task",
    "parse_readout", "is_complete", "store_lock", "StoreInUseError", "LOCK_NAME", "remove_outdated",
    "remove_empty_partial", "remove_stale_tmp", "Report", "require",
    "connect", "start_cluster", "dashboard_link", "run", "TaskResult", "Results", "StoreError", "load", "ANALYSES",
    "SPLIT_ANALYSES", "SPEC_KEYS", "DEFAULT_BLOCK_FRAMES", "MAX_THREADS", "MANIFEST", "STALE_TMP_S", "SPEC_SUFFIXES",
    "FLOAT_ATTRS", "EVERY_CHUNK", "MAX_CHUNKS", "MAX_CHUNK_BYTES", "MAX_UNSPLIT_BYTES",
    "SPEC_CROP_REMEDY"
]


ANALYSES = ("predict", "attribute", "reduce")
"""Analyses a spec may ask for per stimulus."""
SPLIT_ANALYSES = ("predict", "attribute")
"""Analyses split into frame blocks (``reduce`` selects channels over the whole movie)."""
SPEC_KEYS = ("model", "stimuli", "cells", "analyses", "experiments", "out", "steps", "invariance",
             "block_frames", "threads", "crop", "normalize", "pixel_um", "frame_ms")
DEFAULT_BLOCK_FRAMES = 2048
"""Output frames per block of a split task."""
MAX_THREADS = 512
"""Most torch threads per worker a spec may ask for (more than one machine's cores; 10^9 would make every
worker try to start that many)."""
MANIFEST = "napari-retina-batch.json"
"""The file that marks a folder as a results store (the spec and the task list)."""
STALE_TMP_S = 3600.0
"""A temporary folder untouched for this long is removed whoever wrote it."""
_CRASH_ENV = "NAPARI_RETINA_BATCH_CRASH_BEFORE_COMMIT"
"""Fault injection for tests: a worker exits just before committing the result whose path in the store
(``<key>`` or ``.partial/<key>/b00001``) equals this environment variable, as a killed worker would."""


class BatchSpecError(ValueError):
    """A batch spec that cannot be run (one sentence: what was expected, what came in)."""


# ------------------------------------------------------------------- spec ---

@dataclass(frozen=True)
class Spec:
    """A parsed, checked batch spec (see the module docstring).

    ``models``: checkpoint paths, None for the shipped model; ``stimuli``:
    absolute paths; ``cells``: indices or "all"; ``out``: the store folder;
    ``crop``: None, "center" or (y0, x0), read by
    :func:`napari_retina._validate.parse_crop` and used for every stimulus
    analysis (experiments make their own stimuli at the model's size);
    ``normalize``: z-score every stimulus by its whole file's statistics (over
    the crop window), as ``normalize="zscore"`` does for a direct call;
    ``pixel_um``: the stimuli's pixel size (y_um, x_um), None for the model's
    55 µm (:func:`napari_retina._validate.check_pixel_um`): each stimulus is
    resampled to the model's pixels before the crop, as ``pixel_um=`` does;
    ``frame_ms``: the stimuli's frame interval (ms), None for the model's 10 ms
    (:func:`napari_retina._validate.check_frame_ms`): each stimulus is resampled
    to the model's 10 ms bins, as ``frame_ms=`` does, and blocks count bins.
    """

    models: tuple
    stimuli: tuple
    cells: Union[tuple, str]
    analyses: tuple
    experiments: tuple
    out: Path
    steps: Optional[int] = None
    invariance: str = "none"
    block_frames: int = DEFAULT_BLOCK_FRAMES
    threads: int = 1
    crop: Union[None, str, tuple] = None
    normalize: bool = False
    pixel_um: Optional[tuple] = None
    frame_ms: Optional[float] = None

    def to_dict(self) -> dict:
        """The spec as plain JSON values (paths as strings)."""
        return {"model": [m or "default" for m in self.models], "stimuli": [str(s) for s in self.stimuli],
                "cells": self.cells if isinstance(self.cells, str) else list(self.cells),
                "analyses": list(self.analyses), "experiments": list(self.experiments), "out": str(self.out),
                "steps": self.steps, "invariance": self.invariance, "block_frames": self.block_frames,
                "threads": self.threads, "crop": _crop_json(self.crop),
                "normalize": "zscore" if self.normalize else False,
                "pixel_um": None if self.pixel_um is None else list(self.pixel_um), "frame_ms": self.frame_ms}


SPEC_SUFFIXES = (".json", ".yaml", ".yml")
"""What a spec file's name ends in: its format."""


def _parse_yaml(path: Path, text: str):
    """The YAML spec ``text`` of ``path`` as Python values (safe_load: no objects), or one BatchSpecError,
    also for YAML nested deeper than JSON may be (:data:`~napari_retina._json.MAX_JSON_DEPTH`)."""
    try:
        import yaml
    except ImportError as exc:
        raise BatchSpecError(f"reading the YAML spec {str(path)!r} needs PyYAML; "
                             "pip install pyyaml, or write the spec as JSON") from exc
    class UniqueKeys(yaml.SafeLoader):   # safe_load, where a key given twice is an error, not the last one's value
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
        _refuse_twice(keys, lambda problem: yaml.constructor.ConstructorError(None, None, problem, node.start_mark))
        return loader.construct_mapping(node, deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        data = yaml.load(text, Loader=UniqueKeys)  # noqa: S506 - a SafeLoader: plain values, no objects
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
    except RecursionError:
        problem = TOO_DEEP
    else:
        problem = TOO_DEEP if nesting_depth(data) > MAX_JSON_DEPTH else None
    if problem:
        raise BatchSpecError(f"the batch spec {str(path)!r} is not valid YAML ({problem})") from None
    return data


def _read_spec_file(path: Path) -> dict:
    if path.suffix.lower() not in SPEC_SUFFIXES:
        raise BatchSpecError(f"the batch spec must be a {', '.join(SPEC_SUFFIXES)} file (the suffix says which "
                             f"format), got {path.suffix or 'no suffix'!r} ({str(path)!r})")
    if path.is_dir():
        raise IsADirectoryError(f"the batch spec {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"no batch spec at {str(path)!r}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")   # -sig: a BOM, as Windows editors write, is not text
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _parse_yaml(path, text)
    else:
        try:
            data = parse_json(text, f"the batch spec {str(path)!r}", object_pairs_hook=_unique_pairs)
        except ValueError as exc:
            raise BatchSpecError(str(exc)) from None
    if not isinstance(data, dict):
        raise BatchSpecError(f"the batch spec {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _names_list(data: dict, key: str) -> list:
    """The spec's ``key`` (analyses or experiments) as a list of names, each once, in order: [] when it is absent,
    null or [], else :func:`_str_list` (a 0, false or "" is refused, not read as none)."""
    value = data.get(key)
    if value is None or (isinstance(value, list) and not value):
        return []
    return list(dict.fromkeys(_str_list(value, key)))


def _refuse_twice(keys: list, error: Callable[[str], Exception]) -> None:
    """Raise ``error(problem)`` when a key of one mapping of a spec file appears twice (the last would win)."""
    seen = set()
    for key in keys:
        try:
            if key in seen:
                raise error(f"key {key!r} appears twice in one mapping")
            seen.add(key)
        except TypeError:   # an unhashable key: the parser says so itself
            pass


def _unique_pairs(pairs: list) -> dict:
    """A JSON object's (key, value) pairs as a dict, or a ValueError when a key appears twice."""
    _refuse_twice([key for key, _ in pairs], ValueError)
    return dict(pairs)


def _str_list(value, key: str, allow_one: bool = True) -> list:
    if isinstance(value, str) and allow_one:
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise BatchSpecError(f"spec key {key!r} must be a non-empty list of strings, got {value!r}")
    return list(value)


def _positive_int(value, key: str, low: int = 1, high: Optional[int] = None) -> int:
    """``value`` as an int in [low, high] (no upper bound when ``high`` is None), or a BatchSpecError naming
    ``key``."""
    if not is_int(value) or value < low or (high is not None and value > high):
        bounds = f"of at least {low}" if high is None else f"from {low} to {high}"
        raise BatchSpecError(f"spec key {key!r} must be an integer {bounds}, got {value!r}")
    return int(value)


def _crop_json(crop) -> Union[None, str, list]:
    """A parsed crop as JSON: None, "center" or [y0, x0]."""
    return list(crop) if isinstance(crop, tuple) else crop


def _crop(value) -> Union[None, str, tuple]:
    from ._validate import CROP_FORMS, parse_crop

    try:
        return parse_crop(value)
    except (TypeError, ValueError) as exc:
        raise BatchSpecError(f"spec key 'crop' must be {CROP_FORMS} (a list [y0, x0] in JSON), "
                             f"got {value!r}") from exc


def _checked_key(check: Callable, value, key: str, expected: str):
    """``check(value)`` (a ``_validate`` reading), its ValueError said as the spec key ``key``'s: what was expected."""
    try:
        return check(value)
    except ValueError:
        raise BatchSpecError(f"spec key '{key}' must be {expected}, got {value!r}") from None


def _pixel_um(value) -> Optional[tuple]:
    from ._validate import PIXEL_UM_FORMS, check_pixel_um

    return _checked_key(check_pixel_um, value, "pixel_um", PIXEL_UM_FORMS.replace("(y_um, x_um)", "[y_um, x_um]"))


def _frame_ms(value) -> Optional[float]:
    from ._validate import MAX_FRAME_MS, check_frame_ms

    return _checked_key(check_frame_ms, value, "frame_ms", "a positive number of ms per frame or a ratio as text "
                        f"('1000/60'), at most {MAX_FRAME_MS:g} (null: the model's 10)")


def _normalize(value) -> bool:
    from ._validate import check_normalize

    try:
        return check_normalize(value)
    except ValueError:
        raise BatchSpecError(f"spec key 'normalize' must be false, true or \"zscore\", got {value!r}") from None


def _expand_stimuli(patterns: list, base: Path) -> tuple:
    from .io import STIMULUS_SUFFIXES

    found: list[Path] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        # an existing file is taken literally, so a name with glob characters in it (run[1].npy) is itself
        if os.path.exists(full):
            hits = [full]
        else:
            hits = sorted(glob.glob(full)) if glob.has_magic(pattern) else []
        if not hits:
            raise BatchSpecError(f"spec stimulus {pattern!r} matches no file (looked for {full!r})")
        for hit in hits:
            p = Path(hit).resolve()
            if p.suffix.lower() not in STIMULUS_SUFFIXES:
                raise BatchSpecError(f"spec stimulus {str(p)!r} must end in {', '.join(STIMULUS_SUFFIXES)}")
            if p not in found:
                found.append(p)
    return tuple(found)


def _models(value, base: Path) -> tuple:
    names = _str_list("default" if value is None else value, "model")
    out = []
    for name in names:
        if name == "default":
            out.append(None)
            continue
        p = Path(name) if os.path.isabs(name) else base / name
        if not p.is_file():
            raise BatchSpecError(f"spec model {name!r} must be 'default' or an existing checkpoint, "
                                 f"but there is no file at {str(p)!r}")
        out.append(str(p.resolve()))
    return tuple(dict.fromkeys(out))   # one model named twice (or spelled two ways) is one set of tasks


def _cells(value) -> Union[tuple, str]:
    if value == "all":
        return "all"
    if is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or any(not is_int(c) or c < 0 for c in value):
        raise BatchSpecError(f"spec key 'cells' must be 'all' or a non-empty list of cell indices (0 or more), "
                             f"got {value!r}")
    if len(set(value)) != len(value):
        raise BatchSpecError(f"spec key 'cells' lists each cell once, got {list(value)}")
    return tuple(int(c) for c in value)


def parse_spec(spec: Union[PathLike, dict, Spec], out: Optional[PathLike] = None) -> Spec:
    """Read and check a batch spec: a dict, a :class:`Spec`, or a JSON/YAML file.

    Relative paths in a spec file are relative to the file's folder; in a dict,
    to the working folder. ``out`` overrides the spec's ``out``. Every problem
    is a :class:`BatchSpecError` (a ValueError) in one sentence, raised before
    any work: unknown keys, globs that match nothing, missing checkpoints,
    unknown analyses or experiments, bad cells, steps, block sizes or crops.
    """
    if isinstance(spec, Spec):
        return spec if out is None else Spec(**{**spec.__dict__, "out": Path(out)})
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        data, base = _read_spec_file(path), path.resolve().parent
    elif isinstance(spec, dict):
        data, base = spec, Path.cwd()
    else:
        raise TypeError(f"spec must be a dict or the path of a JSON/YAML file, got {type(spec).__name__}")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise BatchSpecError(f"spec keys must be among {', '.join(SPEC_KEYS)}; got unknown {', '.join(map(repr, unknown))}")
    # an entry named twice would make two tasks with one key, writing one result: each once, in order
    analyses = _names_list(data, "analyses")
    bad = [a for a in analyses if a not in ANALYSES]
    if bad:
        raise BatchSpecError(f"spec analyses must be among {', '.join(ANALYSES)}, got {bad[0]!r}")
    experiments = _names_list(data, "experiments")
    if experiments:
        from .experiments.registry import names

        bad = [e for e in experiments if e not in names()]
        if bad:
            raise BatchSpecError(f"spec experiments must be among {', '.join(names())}, got {bad[0]!r}")
    if not analyses and not experiments:
        raise BatchSpecError("spec must ask for at least one of 'analyses' or 'experiments', got neither")
    if analyses and "stimuli" not in data:
        raise BatchSpecError("spec key 'stimuli' is required with 'analyses', got none")
    stimuli = _expand_stimuli(_str_list(data["stimuli"], "stimuli"), base) if analyses else ()
    out_dir = out if out is not None else data.get("out")
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise BatchSpecError(f"spec key 'out' (the results folder) must be a path, got {out_dir!r}")
    out_path = Path(out_dir) if os.path.isabs(out_dir) or out is not None else base / out_dir
    if out_path.exists() and not out_path.is_dir():
        raise BatchSpecError(f"spec 'out' must be a folder, but {str(out_path)!r} is a file")
    from .attribution import MAX_STEPS

    steps = data.get("steps")
    invariance = data.get("invariance", "none")
    if invariance not in ("none", "x", "y", "space"):
        raise BatchSpecError("spec key 'invariance' must be 'none', 'x', 'y' or 'space' (one fixed choice, "
                             f"so that every frame block has the same maps), got {invariance!r}")
    return Spec(models=_models(data.get("model"), base), stimuli=stimuli, cells=_cells(data.get("cells", [0])),
                analyses=tuple(analyses), experiments=tuple(experiments), out=out_path.resolve(),
                steps=None if steps is None else _positive_int(steps, "steps", high=MAX_STEPS), invariance=invariance,
                block_frames=_positive_int(data.get("block_frames", DEFAULT_BLOCK_FRAMES), "block_frames"),
                threads=_positive_int(data.get("threads", 1), "threads", high=MAX_THREADS), crop=_crop(data.get("crop")),
                normalize=_normalize(data.get("normalize", False)), pixel_um=_pixel_um(data.get("pixel_um")),
                frame_ms=_frame_ms(data.get("frame_ms")))


# ------------------------------------------------------------------ tasks ---

@dataclass(frozen=True)
class Task:
    """One unit of the grid: what to compute and where its result goes.

    ``key`` is the result's path inside the store; ``blocks`` the output frame
    ranges ``(start, stop)`` of its blocks (one block ``(0, 0)`` for tasks that
    are not split); ``params`` everything the result depends on.
    """

    key: str
    kind: str                      # "predict" | "attribute" | "reduce" | "experiment"
    model: Optional[str]
    stimulus: Optional[str]
    cell: Optional[int]
    name: str                      # the analysis or the experiment
    params: dict
    blocks: tuple = ((0, 0),)
    error: Optional[str] = None    # a failure found while planning (unreadable stimulus or model)

    @property
    def label(self) -> str:
        """How a report names the task: its inputs."""
        what = f"{self.kind} of {self.stimulus}" if self.stimulus else f"experiment {self.name}"
        cell = "" if self.cell is None else f", cell {self.cell}"
        return f"{what} (model {self.model or 'default'}{cell})"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _path_key(path: Optional[str]) -> str:
    return "default" if path is None else f"{Path(path).stem}-{_short_hash(str(path))}"


def stimulus_shape(path: PathLike) -> tuple:
    """Shape (T, H, W) of a stimulus file, read from its header (.npy, HDF5, TIFF: no pixel is read; a colour
    TIFF is read, for read_stimulus's sentence)."""
    from . import io

    path = io._existing(path)
    suffix = path.suffix.lower()
    io.refuse_empty_file(path)   # a header reader says less of an empty file (a batch audit)
    if suffix == ".npy":
        shape = tuple(int(n) for n in _npy_view(path).shape)
    elif suffix in io.HDF5_SUFFIXES:
        with io._open_h5(path) as h5:
            shape = tuple(int(n) for n in h5[_h5_key(h5, path)].shape)
    else:   # a TIFF: its header (it was read whole, for each block, in each worker)
        _, colour, shape = io._read_tiff(path, header=True)
        if colour:
            shape = tuple(int(n) for n in io.read_stimulus(path).shape)   # refused there, in its words
    if len(shape) != 3:   # planning indexes (T, H, W): a 2-D dataset was an IndexError that ended the whole batch
        raise ValueError(f"the stimulus in {path.name} must be a (T, H, W) stack, got {len(shape)} dimension(s) "
                         f"with shape {shape}")
    return shape


def stimulus_frames(path: PathLike) -> int:
    """Frames T of a stimulus file, read from its header (the data are not read)."""
    return stimulus_shape(path)[0]


#: how a batch asks for a crop, said when a stimulus is larger than the model's frame (:func:`check_frame_size`)
SPEC_CROP_REMEDY = "set the spec's 'crop' to 'center' or [y0, x0] to cut a window out of a larger stack"


def check_frame_size(shape: tuple, size: int, crop: Crop, name: str, remedy: str = SPEC_CROP_REMEDY,
                     small: Optional[str] = None) -> None:
    """A one-sentence ValueError unless frames of ``shape`` (T, H, W) give the model's ``size × size`` with ``crop``.

    What ``nr.attribute`` checks (:func:`napari_retina._validate.crop_to`), on the
    shape alone, with ``remedy`` for a larger stack without a crop (default: a
    batch's, the spec's ``crop`` key).
    """
    from ._validate import crop_to

    crop_to(np.empty((0, *shape[1:3]), np.float32), size, crop, name, remedy, small)


def check_stimulus_shape(shape: tuple, history: int, size: int, crop: Crop, name: str,
                         remedy: str = SPEC_CROP_REMEDY, small: Optional[str] = None,
                         frame_ms: Optional[float] = None) -> None:
    """A one-sentence ValueError unless a stimulus of ``shape`` (T, H, W) is one a model of ``history`` frames
    and ``size × size`` pixels can analyse: not empty, at least ``history`` frames, the model's frame size with
    ``crop`` (:func:`check_frame_size`, ``remedy`` its advice for a larger stack without a crop, ``small`` for a
    smaller one: :data:`~napari_retina._validate.SMALL_REMEDY` by default). The checks
    ``nr.io.read_stimulus`` and ``nr.predict`` make, on a shape alone: on a file's header before any batch task
    runs, on a napari layer's before the Analyze dock runs. ``frame_ms``: the frame interval of its ``T`` frames
    (:func:`~napari_retina._validate.check_frame_ms`'s; None: the model's), which the history is counted in.
    """
    from ._validate import check_history_frames, check_not_empty

    check_not_empty(shape, name)
    check_history_frames(shape[0], history, name, frame_ms)
    check_frame_size(shape, size, crop, name, remedy, small)


def _npy_view(path: Path) -> np.ndarray:
    """A memory map of a .npy stack, refusing a damaged header, pickled objects and truncated data."""
    from .io import npy_header

    npy_header(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # ValueError (data shorter than the header says), OSError
        raise ValueError(f"{str(path)!r} is not a readable .npy array, truncated or corrupt ({exc})") from exc
    if arr.ndim != 3:
        raise ValueError(f"the stimulus in {path.name} must be a (T, H, W) stack, got shape {arr.shape}")
    return arr


def _h5_key(h5, path: Path) -> str:
    """The stimulus dataset's path in the open file, found as ``nr.io.read_stimulus`` finds it."""
    from .io import _h5_stimulus_key

    return _h5_stimulus_key(h5, path)


def read_window(path: PathLike, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` of a stimulus file (T', H, W), checked like ``nr.io.read_stimulus``.

    ``.npy`` (memory-mapped), HDF5 and TIFF files (a page per frame) are read
    by window, so memory follows the window, not the movie; a TIFF of another
    layout is read whole and cut.
    """
    from . import io
    from ._validate import as_stack

    path = io._existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.array(_npy_view(path)[start:stop])
    elif suffix in io.HDF5_SUFFIXES:
        with io._open_h5(path) as h5:
            arr = io._read_h5_dataset(h5, _h5_key(h5, path), path, frames=(start, stop))
    else:
        io.refuse_empty_file(path)
        arr, colour, _ = io._read_tiff(path, frames=(start, stop))
        if colour:
            arr = io.read_stimulus(path)   # refused there, in its words
    return as_stack(arr, name=f"the stimulus in {path.name} (frames {start}:{stop})")


def lazy_stimulus(path: PathLike, block_frames: int = DEFAULT_BLOCK_FRAMES) -> "dask.array.Array":
    """A stimulus file as a dask array (T, H, W) whose blocks of frames are read when computed."""
    import dask
    import dask.array as da

    first = read_window(path, 0, 1)
    n = stimulus_frames(path)
    parts = [da.from_delayed(dask.delayed(read_window)(str(path), a, min(a + block_frames, n)),
                             shape=(min(a + block_frames, n) - a,) + first.shape[1:], dtype=first.dtype)
             for a in range(0, n, block_frames)]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


def _blocks(n_frames: int, history: int, block: int) -> tuple:
    """Output frame ranges covering 0..n_frames; the first holds at least ``history`` frames."""
    first = min(n_frames, max(block, history))
    edges = [0, first] + list(range(first + block, n_frames, block))
    edges = sorted(set(edges + [n_frames]))
    return tuple((a, b) for a, b in zip(edges[:-1], edges[1:]))


def _model_info(path: Optional[str]) -> tuple[int, int, int, str, Optional[dict]]:
    """(history, n_cells, size, weights SHA-256, raw statistics) of a checkpoint, for planning: the statistics
    ({"mean", "std"}) of a checkpoint whose ``norm`` maps integer stacks from raw units, else None (they are then
    part of what its results were computed with: a checkpoint saved again with corrected statistics and the same
    weights left results 0.136 off marked current, a helper's audit)."""
    from .checkpoint import weights_sha256

    model = _load_model(path)
    norm = model.config.norm
    raw = {"mean": float(norm["mean"]), "std": float(norm["std"])} \
        if isinstance(norm, dict) and norm.get("units") == "raw" else None
    return model.config.history, model.config.n_cells, model.config.size, weights_sha256(model.state_dict()), raw


def _file_stamp(path: PathLike) -> list:
    """[size in bytes, modification time in ns] of a file: a changed input makes its tasks run again."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def plan(spec: Spec) -> list[Task]:
    """The tasks of a spec, in a stable order. Inputs that cannot be read give tasks with ``error`` set."""
    tasks: list[Task] = []
    base = {"steps": spec.steps, "invariance": spec.invariance}
    frames_cache: dict = {}
    for model in spec.models:
        mkey = _path_key(model)
        try:
            history, n_cells, size, weights, raw = _model_info(model)
            merr = None
        except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
            history, n_cells, size, weights, raw, merr = 1, 0, 0, "", None, f"model {model or 'default'}: {exc}"
        cells = list(range(n_cells)) if spec.cells == "all" else list(spec.cells)
        if merr is not None and not cells:   # "all" of a model that did not load: its tasks fail, not vanish (cell 0)
            cells = [0]
        cell_error = {c: f"cell {c} is out of range: model {model or 'default'} has {n_cells} cells (0 to "
                         f"{n_cells - 1})" for c in cells if merr is None and c >= n_cells}
        for stim in spec.stimuli:
            skey = f"{mkey}/{_path_key(str(stim))}"
            err = merr
            if str(stim) not in frames_cache:
                try:
                    frames_cache[str(stim)] = (stimulus_shape(stim), None)
                except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
                    frames_cache[str(stim)] = ((0, 0, 0), str(exc))
            shape, serr = frames_cache[str(stim)]
            n_frames = model_frame_count(shape[0], spec.frame_ms)   # output frames: the model's 10 ms bins
            if merr is None and serr is None:
                try:
                    check_stimulus_shape(grid_shape(shape, spec.pixel_um), history, size, spec.crop,
                                         f"the stimulus in {Path(stim).name}{grid_words(spec.pixel_um)}",
                                         small=None if spec.pixel_um is None else RESAMPLED_SMALL_REMEDY,
                                         frame_ms=spec.frame_ms)
                except ValueError as exc:
                    serr = str(exc)
            err = err or serr
            # the file's stamp whenever it exists (even unreadable): it tells a changed input from a missing one
            inputs = {"model_weights": weights, "stimulus_file": _file_stamp(stim) if os.path.isfile(stim) else None}
            if raw is not None:   # absent for a contrast-unit checkpoint, so stores made before the key stay valid
                inputs["model_raw_norm"] = raw
            if spec.crop is not None:   # absent without one, so stores made before the key stay valid
                inputs["crop"] = _crop_json(spec.crop)
            if spec.normalize:          # likewise
                inputs["normalize"] = "zscore"
            if spec.pixel_um is not None:   # likewise
                inputs["pixel_um"] = list(spec.pixel_um)
            if spec.frame_ms is not None:   # likewise
                inputs["frame_ms"] = spec.frame_ms
            for name in spec.analyses:
                split = name in SPLIT_ANALYSES and err is None
                blocks = _blocks(n_frames, history, spec.block_frames) if split else ((0, 0),)
                # the same parameters whether planning failed or not (a failed task's are compared with its result's)
                params = {**base, "block_frames": spec.block_frames, **inputs} if name in SPLIT_ANALYSES \
                    else {**base, **inputs}
                if name == "predict":
                    params = {"block_frames": spec.block_frames, **inputs}
                    tasks.append(Task(f"{skey}/predict", name, model, str(stim), None, name, params, blocks, err))
                    continue
                for c in cells:
                    tasks.append(Task(f"{skey}/cell{c}/{name}", name, model, str(stim), c, name, params, blocks,
                                      err or cell_error.get(c)))
        for name in spec.experiments:
            for c in cells:
                tasks.append(Task(f"{mkey}/experiments/{name}/cell{c}", "experiment", model, None, c, name,
                                  {"steps": spec.steps, "model_weights": weights}, ((0, 0),),
                                  merr or cell_error.get(c)))
    return tasks


# ----------------------------------------------------------------- worker ---

_MODELS: dict = {}


def _load_model(path: Optional[str]):
    """The model at ``path`` (None: the shipped one) on this process's best device, loaded once per process."""
    from .checkpoint import load_model

    stamp = None if path is None else os.stat(path).st_mtime_ns
    key = (path, stamp)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(path)
    return _MODELS[key]


_STATS: dict = {}


def _file_chunks(path: str, size: Optional[int] = None, crop=None, pixel_um=None) -> Callable:
    """A function giving, at each call, an iterator over the values of a stimulus file a single run reads (its
    ``crop`` window of ``size × size``; for a stack resampled to the model's pixels, ``pixel_um``, the stack's own
    pixels under the window, as ``_validate.as_stimulus`` reads them; ``size`` None: the whole frames), in
    chunks of whole frames of about ``mean_std``'s size, read window by window: memory follows the chunk."""
    from ._resample import source_window
    from ._validate import analysed_origin, crop_to, frames_per_chunk

    n = stimulus_frames(path)
    first = read_window(path, 0, 1)
    frame = first.shape[1:]
    if size is None:
        cut = None
    elif pixel_um is None:
        cut = lambda c: crop_to(c, size, crop)   # noqa: E731 - the chunk's window
    else:
        rows, cols = source_window(frame, pixel_um, analysed_origin(frame, size, crop, pixel_um), size)
        cut = lambda c: c[:, rows, cols]   # noqa: E731
    step = frames_per_chunk(frame if cut is None else cut(first).shape[1:])  # mean_std's chunks

    def chunks():
        windows = (read_window(path, i, min(i + step, n)) for i in range(0, n, step))
        return windows if cut is None else (cut(c) for c in windows)
    return chunks


def _file_mean_std(path: str, size: Optional[int] = None, crop=None, pixel_um=None) -> tuple[float, float]:
    """Mean and standard deviation (float64) of a whole stimulus file (its ``crop`` window), read window by window.

    What a single run z-scores an integer stack by (``_validate.zscore`` through ``mean_std``, on the
    stack cropped to ``size × size``): the same :func:`~napari_retina._validate.chunked_mean_std` over the
    same chunks of whole frames (:func:`_file_chunks`), so a block mapped with them equals the unsplit run's
    frames; memory follows the chunk, not the movie. Computed once per process, file version (size,
    modification time), crop and pixel size. ``size`` None: the whole frames, uncropped.
    """
    from ._validate import chunked_mean_std

    key = (path, *_file_stamp(path), size, str(crop), str(pixel_um))
    if key not in _STATS:
        if len(_STATS) >= 1024:   # two numbers per file: keep many, as workers take stimuli in any order
            _STATS.clear()
        _STATS[key] = chunked_mean_std(_file_chunks(path, size, crop, pixel_um)())
    return _STATS[key]


def _warn_if_file_grey_moves(path: str, size: int, crop, pixel_um, name: str) -> None:
    """The grey-background warning a single run gives a stack z-scored by its own statistics
    (``_validate.warn_if_grey_moves``), for a whole stimulus file read window by window: every block of a split
    task says it (the run reports it once per task). Computed once per process and file version."""
    from ._validate import StimulusUnitsWarning, chunked_grey_shift, grey_shift_warning

    key = ("grey", path, *_file_stamp(path), size, str(crop), str(pixel_um))
    if key not in _STATS:
        _STATS[key] = chunked_grey_shift(_file_chunks(path, size, crop, pixel_um),
                                         lambda: _file_mean_std(path, size, crop, pixel_um))
    if _STATS[key] is not None:
        warnings.warn(grey_shift_warning(_STATS[key], name), StimulusUnitsWarning, stacklevel=2)


def _check_invariance(stim: np.ndarray, invariance: str, name: str) -> None:
    """The spec's ``invariance`` checked on the frames a task analyses, with a remedy the batch spec offers.

    ``nr.attribute`` would suggest ``invariance='auto'``, which a spec refuses
    (every block must have the same maps); this names the fixed choices that fit.
    """
    from ._invariance import uniform_axes

    if invariance == "none":
        return
    uy, ux = uniform_axes(stim)
    if {"space": uy and ux, "y": uy, "x": ux}[invariance]:
        return
    varies = " and ".join(a for a, u in (("y", uy), ("x", ux)) if not u)
    fits = " or ".join(repr(i) for i, u in (("y", uy), ("x", ux), ("none", True)) if u and i != invariance)
    needs = {"space": "a spatially uniform stimulus", "y": "a stimulus uniform along y (rows identical)",
             "x": "a stimulus uniform along x (columns identical)"}[invariance]
    raise ValueError(f"spec invariance {invariance!r} needs {needs}, but {name} varies along {varies}; "
                     f"set the spec's 'invariance' to {fits}")


def _as_contrast(window: np.ndarray, path: str, norm: Optional[dict], size: int, crop=None,
                 zscore: bool = False) -> np.ndarray:
    """Frames of ``path`` (already cropped to ``size × size``) mapped to contrast as the unsplit run maps the stack.

    Float stacks and integer stacks of a model with stored raw statistics map frame by frame (the window is
    returned as it is, for predict and attribute to map); an integer stack of a model without them, and any
    stack with ``zscore`` (the spec's ``normalize``), is z-scored by its own statistics, which must be the
    whole file's, not the window's (:func:`_file_mean_std`).
    """
    from ._validate import contrast_mapping

    if contrast_mapping(window.dtype, norm, zscore) in ("contrast", "raw"):
        return window
    _warn_if_file_grey_moves(path, size, crop, None, f"the stimulus in {Path(path).name}")
    mean, std = _file_mean_std(path, size, crop)
    return ((window.astype(np.float64) - mean) / (std if std > 0 else 1.0)).astype(np.float32)


def _resampled_contrast(frames: np.ndarray, path: str, norm: Optional[dict], size: int, crop, zscore: bool,
                        pixel_um: Optional[tuple], frame_ms: Optional[float] = None,
                        bins: Optional[tuple[int, int]] = None, first_frame: int = 0) -> np.ndarray:
    """Whole frames of ``path`` resampled to the model's pixels (``pixel_um``; None: its own, the window cut) and
    10 ms bins (``frame_ms``: the bins ``(start, stop)`` of the file's frames ``first_frame`` on, which
    ``frames`` holds; :func:`napari_retina._resample.resample_window`), its ``size × size`` window on
    that grid, float32 contrast: mapped as the unsplit run (``_validate.as_stimulus``) maps them, with the
    checkpoint's statistics for "raw", the whole file's (:func:`_file_mean_std`, at the stack's pixels) for an
    integer stack z-scored by its own and for ``zscore``."""
    from ._resample import resample_window
    from ._validate import analysed_origin, contrast_mapping, standardisation

    if contrast_mapping(frames.dtype, norm, zscore) in ("own", "zscore"):
        _warn_if_file_grey_moves(path, size, crop, pixel_um, f"the stimulus in {Path(path).name}")
    mean, std = standardisation(frames, norm, zscore, own=lambda: _file_mean_std(path, size, crop, pixel_um)) \
        or (0.0, 1.0)
    origin = analysed_origin(frames.shape[1:], size, crop, pixel_um)
    return resample_window(frames, pixel_um, origin, size, mean, std, frame_ms=frame_ms, bins=bins,
                           first_frame=first_frame)


def _write_tree(group, data: dict) -> None:
    """Arrays as Zarr arrays (chunked along the first axis, every chunk written: :data:`EVERY_CHUNK`), dicts as
    subgroups, the rest as attributes.

    Attributes are strict JSON (:func:`~napari_retina._json.strict_json`: NaN as null, ±inf as
    ``"inf"``/``"-inf"``, JSON text in strings too), as every attribute of the store; :data:`FLOAT_ATTRS`
    and readouts (:func:`parse_readout`) read back as floats.
    """
    attrs = {}
    for name, value in data.items():
        if isinstance(value, dict):
            _write_tree(group.create_group(name), value)
        elif isinstance(value, np.ndarray) and value.ndim > 0 and value.dtype.kind in "fiub":
            chunks = (min(max(value.shape[0], 1), 256),) + value.shape[1:]
            # every chunk on disk, even one of zeros (zarr skips those by default): a missing chunk is then damage
            arr = group.create_array(name, shape=value.shape, dtype=value.dtype, chunks=chunks,
                                     config={"write_empty_chunks": True}, attributes={EVERY_CHUNK: True})
            arr[...] = value
        else:
            attrs[name] = strict_json(value)
    if attrs:
        group.attrs.update(attrs)


def _tmp_dir(out: Path) -> Path:
    """A fresh temporary folder inside the store (same file system, so the final rename is atomic)."""
    tmp = out / ".tmp" / f"{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, dest: Path, store: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest`` (replacing one that is there)."""
    if os.environ.get(_CRASH_ENV) == dest.relative_to(store).as_posix():  # tests: die before the commit
        os._exit(70)
    if dest.exists():
        trash = tmp.parent / f"{tmp.name}-old"
        os.rename(dest, trash)
        os.rename(tmp, dest)
        shutil.rmtree(trash, ignore_errors=True)
        return
    for attempt in range(3):   # remove_empty_partial (another run's, or this one's straggler) may take the parent
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, dest)
            return
        except FileNotFoundError:
            if not tmp.exists() or attempt == 2:
                raise


def _compute_block(task: Task, start: int, stop: int) -> dict:
    """The arrays and attributes of one block (output frames ``start:stop``; (0, 0): the whole task)."""
    from . import attribution, experiments
    from .analysis import run_analysis
    from .attribution._result import map_shape
    from .metrics import map_limit
    from ._predict import predict
    from ._resample import area_weights
    from ._units import FRAME_MS
    from ._validate import analysed_origin, as_stimulus, check_history_frames, crop_to

    model = _load_model(task.model)
    cfg = model.config
    if task.kind == "experiment":
        return experiments.run(task.name, model, cell=task.cell, steps=task.params["steps"]).to_dict()
    crop = task.params.get("crop")
    crop = tuple(crop) if isinstance(crop, list) else crop
    zscore = task.params.get("normalize") == "zscore"
    pixel = tuple(task.params["pixel_um"]) if task.params.get("pixel_um") is not None else None
    frame = task.params.get("frame_ms")
    placed = {"crop_origin": None, **({"input_pixel_um": list(pixel)} if pixel is not None else {}),
              **({"input_frame_ms": frame} if frame is not None else {})}
    name = Path(task.stimulus).name
    if task.kind == "reduce":
        raw = read_window(task.stimulus, 0, stimulus_frames(task.stimulus))
        placed["crop_origin"] = analysed_origin(raw.shape[1:], cfg.size, crop, pixel)
        stim = as_stimulus(raw, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=zscore,
                           name=f"the stimulus in {name}", pixel_um=pixel, frame_ms=frame)
        del raw
        _check_invariance(stim, task.params["invariance"], f"the stimulus in {name}")
        res = run_analysis(model, stim, cell=task.cell, steps=task.params["steps"],
                           invariance=task.params["invariance"])
        attr, red = res.attribution, res.reduction
        keep = ("channels", "response", "rates", "cells", "frames", "baseline_rate", "completeness_error",
                "steps", "rule", "invariance", "offset", "history")
        return {"attribution": {**{k: v for k, v in attr.to_dict().items() if k in keep}, **placed},
                "reduction": red.to_dict()}
    first = max(0, start - cfg.history + 1)   # output frames (the model's bins): the block and its history
    if frame is None:
        window = read_window(task.stimulus, first, stop)
    else:   # the file's frames on screen during bins first..stop
        rows, _ = area_weights(frame, first, stop - first, stimulus_frames(task.stimulus), unit=FRAME_MS)
        window = read_window(task.stimulus, rows.start, rows.stop)
    placed["crop_origin"] = analysed_origin(window.shape[1:], cfg.size, crop, pixel)
    if pixel is None and frame is None:
        window = crop_to(window, cfg.size, crop, f"the stimulus in {name}")
        window = _as_contrast(window, task.stimulus, cfg.norm, cfg.size, crop, zscore)
    else:
        window = _resampled_contrast(window, task.stimulus, cfg.norm, cfg.size, crop, zscore, pixel, frame,
                                     None if frame is None else (first, stop), 0 if frame is None else rows.start)
    if task.kind == "predict":
        rates = predict(model, window)[start - first:]
        return {"rates": rates}
    frames = list(range(max(start, cfg.history - 1) - first, stop - first))
    if not frames:  # the block lies wholly before the first full history
        check_history_frames(stimulus_frames(task.stimulus), cfg.history, frame_ms=frame)  # none: fails, as unsplit
        C, h = cfg.channels[0], cfg.map_sizes[0]
        n = stop - start
        nan = np.full((n,), np.nan, np.float32)
        out = {"channels": np.full((n, C), np.nan, np.float32), "response": nan, "rates": nan.copy()}
        if task.params["invariance"] != "space":
            shape = map_shape(C, h, task.params["invariance"])
            out["maps"] = np.full((n,) + shape, np.nan, np.float32)
        return out
    frames_are = "frames" if frame is None else f"{FRAME_MS:g} ms bins"   # a resampled stack's frames are bins
    _check_invariance(window, task.params["invariance"], f"the stimulus in {name} ({frames_are} {first}:{stop})")
    attr = attribution.attribute(model, window, cell=task.cell, steps=task.params["steps"],
                                 invariance=task.params["invariance"], frames=frames)
    out = {k: v[start - first:] for k, v in (("channels", attr.channels), ("response", attr.response),
                                             ("rates", attr.rates), ("maps", attr.maps)) if v is not None}
    out.update({"map_limit": map_limit(out.get("maps")),
                "baseline_rate": attr.baseline_rate, "completeness_error": attr.completeness_error,
                "offset": attr.offset, "history": attr.history, "rule": attr.rule, "steps": attr.steps,
                **placed})
    return out


def _peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # not on POSIX
        return float("nan")


def _release_memory() -> None:
    """Hand the freed heap of the last block back to the system (glibc's malloc_trim), so blocks do not pile up."""
    import gc

    from ._malloc import release_freed_memory

    gc.collect()
    release_freed_memory()


def run_block(task: Task, index: int, out: str, threads: int = 1) -> dict:
    """Compute block ``index`` of ``task`` and commit it to ``out/.partial/<key>/b<index>`` (a worker's job).

    Returns a small summary (seconds, peak memory of the worker in MB), which
    is all that travels back through the scheduler; bad input (a broken file,
    a cell the model lacks) returns ``{"error": sentence}`` instead, and
    nothing is written. Warnings are returned too (``"warnings"``: category and
    message, each once), not printed by the worker. A block already committed is not recomputed.
    """
    import torch

    store = Path(out)
    dest = store / ".partial" / task.key / _block_name(index)
    start, stop = task.blocks[index]
    if (_attrs(dest).get("params") == strict_json(task.params) and _attrs(dest).get("frames") == [start, stop]
            and _block_intact(store, task.key, dest, stop - start if stop > start else None)):
        return {"index": index, "seconds": 0.0, "skipped": True, "peak_mb": _peak_rss_mb()}
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    import zarr

    t0 = time.perf_counter()
    # warnings go back with the summary, for run() to issue in the caller's process (the command shows them on
    # one line), not to the worker's stderr in Python's format with a source line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = _compute_block(task, start, stop)
        except (ValueError, TypeError, FileNotFoundError) as exc:  # bad input: reported, not a worker traceback
            return {"index": index, "error": str(exc), "warnings": _unique_warnings(caught)}
    warned = _unique_warnings(caught)
    tmp = _tmp_dir(store)
    try:
        group = zarr.open_group(str(tmp), mode="w")
        _write_tree(group, data)
        group.attrs.update(strict_json({"block": index, "frames": [start, stop], "params": task.params}))
        _commit(tmp, dest, store)
    except BaseException:   # a full disk, say: its half-written folder is not left in .tmp (a helper's audit)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del data, group
    _release_memory()
    return {"index": index, "seconds": time.perf_counter() - t0, "skipped": False, "peak_mb": _peak_rss_mb(),
            "worker": f"{socket.gethostname()}:{os.getpid()}", "warnings": warned}


def _unique_warnings(caught) -> list:
    """``[(category, message)]`` of recorded warnings, each once, in order."""
    return list(dict.fromkeys((w.category, str(w.message)) for w in caught))


def _versions() -> dict:
    import dask
    import zarr

    from .checkpoint import versions

    return {**versions(), "zarr": zarr.__version__, "dask": dask.__version__}


def task_summary(path: PathLike, n_blocks: int) -> dict:
    """The whole task's numbers of a split ``attribute`` result whose blocks are under ``path`` (``b00000``...).

    Each block reports its own ``completeness_error`` (relative to its own
    largest response), ``map_limit`` (its own maps' percentile) and ``steps``
    (its own finest frame); none of them is the task's. Here they are computed
    over every frame: the completeness error of
    :func:`napari_retina.attribution.completeness_error` on the attributed
    frames (those with a full history) of the stored channels, response and
    rates, :func:`~napari_retina.metrics.map_limit_of_blocks` of all maps, and the most points any
    frame needed. With fixed ``steps`` they equal the unsplit run's up to
    float32 rounding.
    """
    import zarr

    from .attribution import completeness_error
    from .metrics import map_limit_of_blocks

    groups = [zarr.open_group(str(Path(path) / _block_name(i)), mode="r") for i in range(n_blocks)]
    attrs = [_float_attrs(dict(g.attrs)) for g in groups]
    done = [a for a in attrs if "baseline_rate" in a]   # blocks before the first full history hold NaN only
    if not done:
        return {}
    history = int(done[0]["history"])
    chan = np.concatenate([g["channels"][...] for g in groups])
    resp = np.concatenate([g["response"][...] for g in groups])
    rates = np.concatenate([g["rates"][...] for g in groups])
    idx = np.arange(history - 1, len(resp))
    return {"completeness_error": completeness_error(chan[idx], resp[idx], rates[idx], float(done[0]["baseline_rate"])),
            "map_limit": map_limit_of_blocks(g["maps"] for g in groups) if "maps" in groups[0] else 1.0,
            "steps": max(int(a["steps"]) for a in done)}


def finish_task(task: Task, out: str, *blocks: dict) -> dict:
    """Write the task group's attributes and rename it into place (runs once every block is committed)."""
    import zarr

    # one warning of each kind per task: its blocks' (a window's statistics each) would say it again and again
    first: dict = {}
    for b in blocks:
        for category, message in b.get("warnings", []):
            first.setdefault(category, message)
    warned = list(first.items())
    errors = [b["error"] for b in blocks if "error" in b]
    if errors:
        return {"key": task.key, "error": errors[0], "warnings": warned}
    store = Path(out)
    partial = store / ".partial" / task.key
    missing = _missing_blocks(partial, len(task.blocks))
    if missing:
        raise RuntimeError(f"{task.label}: blocks {missing} are missing from {str(partial)!r}")
    for stale in partial.iterdir():   # a block of an earlier layout (another block_frames): not this task's
        if stale.is_dir() and re.fullmatch(r"b\d{5}", stale.name) and int(stale.name[1:]) >= len(task.blocks):
            shutil.rmtree(stale)
    model = _load_model(task.model)
    meta = partial / "zarr.json"   # the group's own metadata, written whole below: a damaged one is not kept (it
    try:                           # failed the task on every rerun with a JSON error naming no file; a helper's audit)
        if meta.exists():
            parse_json(meta.read_text(encoding="utf-8"), str(meta))
    except (OSError, ValueError):
        meta.unlink()
    group = zarr.open_group(str(partial), mode="a")
    group.attrs.update(strict_json({
        "napari_retina_batch": 1, "complete": True, "key": task.key, "kind": task.kind, "name": task.name,
        "model": task.model or "default", "stimulus": task.stimulus, "cell": task.cell, "params": task.params,
        "blocks": [list(b) for b in task.blocks], "versions": _versions(),
        "summary": task_summary(partial, len(task.blocks)) if task.kind == "attribute" else {},
        **({"units": RATE_UNITS} if task.kind in ANALYSES else {}),   # the rates', as predict's and attribute's files
        "provenance": {"model": model.provenance, "model_config": model.config.__dict__,
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "host": socket.gethostname(), "device": str(model.device),
                       "seconds": float(sum(b.get("seconds", 0.0) for b in blocks)),
                       "peak_mb": max([b.get("peak_mb", float("nan")) for b in blocks] or [float("nan")])},
    }))
    _commit(partial, store / task.key, store)
    return {"key": task.key, "seconds": float(sum(b.get("seconds", 0.0) for b in blocks)),
            "peak_mb": max([b.get("peak_mb", 0.0) for b in blocks] or [0.0]), "warnings": warned}


# ---------------------------------------------------------------- client ---

FLOAT_ATTRS = frozenset({"baseline_rate", "bias", "completeness_error", "explain", "explained_variance",
                         "explained_variance_all", "kept_variance", "kinetics_split_ms", "map_limit", "peak_mb",
                         "seconds"})
"""Attributes that hold a float: stored as strict JSON (NaN as null, ±inf as "inf"/"-inf"), read back as floats."""


def _as_float(value):
    """A float stored as strict JSON, as the float: null → NaN, "inf"/"-inf" → ±inf (others as they are)."""
    if value is None:
        return float("nan")
    return float(value) if value in ("inf", "-inf") else value


def _float_attrs(attrs):
    """``attrs`` (nested dicts) with the values of :data:`FLOAT_ATTRS` read back as floats."""
    if not isinstance(attrs, dict):
        return attrs
    return {k: _as_float(v) if k in FLOAT_ATTRS else _float_attrs(v) for k, v in attrs.items()}


def parse_readout(text: str) -> dict:
    """An experiment's stored ``readout`` (JSON text) with NaN and ±inf back where the store holds null and
    "inf"/"-inf" (a readout holds numbers, flags, labels and lists and dicts of them, never None)."""
    def floats(value):
        if isinstance(value, dict):
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, list):
            return [floats(v) for v in value]
        return _as_float(value)

    return floats(parse_json(text, "an experiment's stored readout"))


def _attrs(group: Path) -> dict:
    """A Zarr group's attributes read from its ``zarr.json`` ({} when there is none)."""
    try:
        return parse_json((group / "zarr.json").read_text(encoding="utf-8"), str(group / "zarr.json")).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _block_name(index: int) -> str:
    """The folder of a task's block ``index`` in a store: ``b00000``, ``b00001``, ..."""
    return f"b{index:05d}"


def _missing_blocks(folder: Path, n_blocks: int) -> list[int]:
    """The indices of the ``n_blocks`` block groups (:func:`_block_name`) that ``folder`` lacks."""
    return [i for i in range(n_blocks) if not (folder / _block_name(i) / "zarr.json").is_file()]


def is_complete(out: PathLike, task: Task) -> bool:
    """Whether ``task``'s result is in the store, complete and made with the same parameters and inputs, and
    whether :func:`load` opens it: every block its attributes list there, with every array and chunk (a block
    folder deleted, a store written by two runs at once, a chunk or array deleted left a task marked complete that
    no rerun recomputed and that :func:`load` refused)."""
    attrs = _attrs(Path(out) / task.key)
    if not (attrs.get("complete") and attrs.get("params") == strict_json(task.params)
            and attrs.get("blocks") == [list(b) for b in task.blocks]):
        return False
    try:
        _lazy_arrays(Path(out), task.key, attrs["blocks"])
    except (StoreError, FileNotFoundError):
        return False
    return True


def remove_outdated(out: PathLike, task: Task) -> bool:
    """Remove ``task``'s result from the store when it was made with other parameters or inputs.

    A result whose stimulus file, model or parameters have changed since it was
    computed is not this task's result any more: it goes before the task runs,
    so that a rerun that fails leaves no old result that :func:`load` would
    serve as current. The folder is renamed into ``out/.tmp`` (atomic) and
    deleted there; a writer killed meanwhile leaves it to :func:`remove_stale_tmp`.
    A task that failed while planning is compared by its parameters only,
    and only when its inputs are known: a stimulus file or model that cannot
    be found now (an unmounted disk) says nothing about the result, which is
    kept. Returns whether a result was removed.
    """
    out = Path(out)
    dest = out / task.key
    if not dest.exists() or is_complete(out, task):
        return False
    if task.error is not None:
        known = task.params.get("model_weights") and (task.stimulus is None or task.params.get("stimulus_file"))
        if not known or _attrs(dest).get("params") == strict_json(task.params):
            return False
    trash = _tmp_dir(out)
    os.rename(dest, trash / "outdated")
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it is empty; keep it (or its absence) otherwise."""
    try:
        folder.rmdir()
    except OSError:   # not empty (another run's writer is at work there), or gone
        pass


def remove_empty_partial(out: PathLike) -> None:
    """Remove the empty folders under ``out/.partial`` (and ``.partial`` itself when it is left empty).

    A task's blocks go to ``.partial/<key>`` until the task is renamed into
    place, which leaves the folders above it (``.partial/<model>/<stimulus>/cell<c>``)
    empty. Only empty folders go (``os.rmdir`` refuses the others), so committed
    blocks of a failed or killed task stay for the rerun; a block committed
    meanwhile makes its folder again (:func:`_commit`).
    """
    root = Path(out) / ".partial"
    if not root.is_dir():
        return
    for folder, _, _ in os.walk(root, topdown=False):   # deepest first
        if folder.endswith("-old"):   # a replaced result _commit was killed before deleting (no key ends so:
            shutil.rmtree(folder, ignore_errors=True)   # its parts end in a hash or an analysis' name)
        else:
            _remove_if_empty(Path(folder))


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 task", "3 tasks"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def remove_stale_tmp(out: PathLike) -> list[Path]:
    """Remove temporary folders that killed writers left in ``out/.tmp`` (same rule as ``_atomic.remove_stale``)."""
    removed = []
    tmp_root = Path(out) / ".tmp"
    if not tmp_root.is_dir():
        return removed
    for entry in tmp_root.iterdir():
        parts = entry.name.split("-")
        try:
            if is_stale(parts[0], int(parts[1]), entry.stat().st_mtime, STALE_TMP_S):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except (IndexError, ValueError, OSError):
            continue
    return removed


@dataclass
class Report:
    """What :func:`run` did: task keys computed, skipped and failed (with one sentence each)."""

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)   # (task label, message)
    seconds: float = 0.0
    dashboard: Optional[str] = None
    task_seconds: list = field(default_factory=list)
    peak_mb: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every task succeeded (or was already done), 1 when any failed."""
        return 1 if self.failed else 0


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "KilledWorker":
        return "its worker died while running it (killed, or out of memory); rerun to complete it"
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"


def require() -> None:
    """Check that the batch extras (``dask.distributed``, ``zarr``) are installed; one sentence if not."""
    try:
        import distributed  # noqa: F401
        import zarr
    except ImportError as exc:
        raise ImportError(f"batch runs need dask.distributed and zarr, but {exc.name!r} is not installed; "
                          "pip install 'napari-retina[batch]'") from exc
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ImportError(f"batch runs need zarr 3 or later (Python 3.11 or later), got zarr {zarr.__version__}")


def connect(scheduler: str, timeout_s: float = 10.0) -> "distributed.Client":
    """A ``distributed.Client`` on the scheduler at ``scheduler`` (e.g. ``tcp://10.0.0.5:8786``); one sentence if unreachable."""
    require()
    from distributed import Client

    try:
        return Client(scheduler, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot reach a dask scheduler at {scheduler!r} within {timeout_s:g} s ({exc})") from exc


def start_cluster(workers: Optional[int] = None, threads: int = 1) -> "distributed.Client":
    """A ``LocalCluster`` of ``workers`` processes (default: one per core), one thread each, and its Client."""
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with _sigint_ignored():   # the workers inherit it: a terminal's Ctrl-C cancels the run, not each worker
        # its workers log nothing below CRITICAL: a cancelled run's tasks each warned of their CancelledError, and
        # a task that raised printed dask's "Compute Failed" block with its traceback before the run's own
        # one-line report of the same failure (an audit: a full disk)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", env=env,
                               silence_logs=logging.CRITICAL)
    return Client(cluster)


def _sigint_ignored() -> contextlib.AbstractContextManager:
    """SIGINT ignored in this process while the block runs (:func:`~napari_retina._atomic.sigint_handled`).

    A process started meanwhile keeps it ignored: a terminal's Ctrl-C goes to every process of its group, so
    without this each worker printed its own KeyboardInterrupt traceback while the run was being cancelled."""
    return sigint_handled(signal.SIG_IGN)


def dashboard_link(client: "distributed.Client") -> Optional[str]:
    """The dask dashboard address, or None when it is not running (it needs bokeh)."""
    try:
        info = client.scheduler_info()
        port = info.get("services", {}).get("dashboard")
    except Exception:  # a client without a scheduler connection
        return None
    return client.dashboard_link if port else None


def run(spec: Union[PathLike, dict, Spec], client: Optional["distributed.Client"] = None, *, force: bool = False,
        workers: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None,
        log: Optional[Callable[[str], None]] = None) -> Report:
    """Run a batch spec on a dask cluster; return a :class:`Report`.

    Parameters
    ----------
    spec : dict, path of a JSON/YAML file, or :class:`Spec`
        See the module docstring; checked before any work (:class:`BatchSpecError`).
    client : distributed.Client, optional
        The cluster to use (any: local, ``dask-jobqueue``, Kubernetes). Default:
        a ``LocalCluster`` of ``workers`` processes started here and closed at the end.
    force : bool
        Recompute tasks whose results exist.
    progress : callable, optional
        ``progress(done_tasks, total_tasks)`` as tasks finish (failed ones count as done).
    log : callable, optional
        Receives one line per event (the dashboard address, each failure).

    A task that fails (a broken file, a cell index the model lacks) is
    reported with its input named, the others run on; ``Report.exit_code`` is
    1 when any failed. A warning a task raises on its worker (a float stack of
    0–255 intensities: ``StimulusUnitsWarning``) is issued again in this process,
    once per task, its message prefixed with the task's label.
    """
    spec = parse_spec(spec)
    require()
    spec.out.mkdir(parents=True, exist_ok=True)
    with store_lock(spec.out):
        return _run(spec, client, force, workers, progress, log or (lambda line: None))


class StoreInUseError(ValueError):
    """A results store that another batch run is writing: one sentence naming the store and that run."""


LOCK_NAME = ".lock"
"""The file in a results store that a batch run holds locked while it writes the store (:func:`store_lock`)."""


@contextlib.contextmanager
def store_lock(out: Path):
    """Hold the results store ``out`` for one batch run: a second run on it is refused (:class:`StoreInUseError`)
    until the first ends, however it ends (the lock goes with the process).

    Two runs writing one store at once committed each other's half-written
    tasks: the audit's second run found blocks missing, and a task was left
    marked complete without its blocks. The lock is ``fcntl.flock`` on
    ``out/.lock``, which names the run that holds it; where there is no
    ``fcntl`` (not POSIX) there is no lock.
    """
    try:
        import fcntl
    except ImportError:   # pragma: no cover - Windows
        yield
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "a process that did not say which"
            raise StoreInUseError(f"the results store {str(out)!r} is being written by another batch run ({holder}); "
                                  "wait for it to end, or give another out folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode("utf-8"))
        yield
    finally:
        os.close(fd)   # and with it the lock


def _run(spec: Spec, client, force: bool, workers: Optional[int], progress, log) -> Report:
    """:func:`run` on a store this process holds (:func:`store_lock`)."""
    out = spec.out
    remove_stale_tmp(out)
    t0 = time.perf_counter()
    tasks = plan(spec)
    _write_manifest(out, spec, tasks)
    report = Report()
    todo = []
    for task in tasks:
        if remove_outdated(out, task):   # its inputs or parameters changed: not served, whatever this run does
            log(f"removed the outdated result {task.key} (its inputs or parameters changed)")
        if task.error is not None:
            report.failed.append((task.label, task.error))
        elif not force and is_complete(out, task):
            report.skipped.append(task.key)
            shutil.rmtree(out / ".partial" / task.key, ignore_errors=True)   # a cancelled --force run's blocks
        else:
            if force:
                shutil.rmtree(out / ".partial" / task.key, ignore_errors=True)
            todo.append(task)
    total = len(todo) + len(report.failed)
    if progress is not None:
        progress(len(report.failed), total)
    if todo:
        own = client is None
        if own:
            client = start_cluster(workers, spec.threads)
        try:
            report.dashboard = dashboard_link(client)
            n_workers = len(client.scheduler_info().get("workers", {}))
            refused = f" ({len(report.failed)} failed before running)" if report.failed else ""
            log(f"dask dashboard: {report.dashboard or 'not running (pip install bokeh to get one)'}; "
                f"{_count(len(todo), 'task')} to compute{refused} on {_count(n_workers, 'worker')}")
            _submit_and_wait(client, todo, out, spec, report, progress, total, log)
        finally:
            if own:
                cluster = client.cluster
                client.close()
                cluster.close()
    remove_empty_partial(out)   # every task has committed or failed: what is left above their blocks is empty
    _remove_if_empty(out / ".tmp")   # each writer removed its own folder (a killed one's waits for the next run)
    report.seconds = time.perf_counter() - t0
    return report


def _write_manifest(out: Path, spec: Spec, tasks: list) -> None:
    """Record the spec and the task list in ``out/napari-retina-batch.json``, keeping earlier runs' tasks.

    A manifest that cannot be read is not silently replaced (its earlier runs' results dropped out of
    :func:`load`, a helper's audit): it is kept beside as ``….damaged``, its entries are rebuilt from the
    complete results in the store (their attributes name them), and a warning says so."""
    entries = {}
    path = out / MANIFEST
    try:
        entries = {e["key"]: e for e in parse_json(path.read_text(encoding="utf-8"), MANIFEST)["tasks"]}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        aside = path.with_name(f"{MANIFEST}.damaged")
        os.replace(path, aside)
        entries = _entries_from_results(out)
        warnings.warn(f"the manifest of the results store {str(out)!r} could not be read ({one_sentence(exc)}); it "
                      f"was kept as {aside.name} and rebuilt from the {len(entries)} complete result(s) in the store",
                      UserWarning, stacklevel=3)
    entries.update({t.key: {"key": t.key, "kind": t.kind, "name": t.name, "model": t.model or "default",
                            "stimulus": t.stimulus, "cell": t.cell} for t in tasks})
    atomic_write_text(out / MANIFEST, json.dumps({"spec": spec.to_dict(), "tasks": list(entries.values())}, indent=1))


def _entries_from_results(out: Path) -> dict:
    """Manifest entries (key → {key, kind, name, model, stimulus, cell}) of the complete results stored under
    ``out`` (not under .partial or .tmp), read from each result's attributes, where their key matches their
    folder."""
    entries = {}
    for meta in sorted(out.rglob("zarr.json")):
        rel = meta.parent.relative_to(out)
        if not rel.parts or rel.parts[0] in (".partial", ".tmp"):
            continue
        attrs = _attrs(meta.parent)
        if attrs.get("complete") and attrs.get("key") == rel.as_posix():
            entries[rel.as_posix()] = {k: attrs.get(k) for k in ("key", "kind", "name", "model", "stimulus", "cell")}
    return entries


def _submit_and_wait(client, todo: list, out: Path, spec: Spec, report: Report, progress, total: int, log) -> None:
    run_id = uuid.uuid4().hex[:8]
    finals, submitted = {}, []
    for task in todo:
        blocks = [client.submit(run_block, task, i, str(out), spec.threads, pure=False,
                                key=f"block-{task.key}-{i}-{run_id}") for i in range(len(task.blocks))]
        fut = client.submit(finish_task, task, str(out), *blocks, pure=False, key=f"task-{task.key}-{run_id}")
        finals[fut] = task
        submitted += [*blocks, fut]
    try:
        _collect(finals, report, progress, total)
    except BaseException:   # cancelled (or interrupted): the work still queued on a client passed in goes too, or
        client.cancel(submitted)   # it went on committing after run returned and the store's lock was released
        raise


def _collect(finals: dict, report: Report, progress, total: int) -> None:
    """Record each task's outcome in ``report`` as its final future (``finals``: future → task) completes."""
    from distributed import as_completed

    done = len(report.failed)
    for fut in as_completed(list(finals)):
        task = finals[fut]
        exc = fut.exception()
        summary = fut.result() if exc is None else {"error": _message(exc)}
        for category, message in summary.get("warnings", []):   # the workers' warnings, issued here
            warnings.warn(f"{task.label}: {message}", category, stacklevel=2)
        if "error" not in summary:
            report.done.append(task.key)
            report.task_seconds.append(summary["seconds"])
            report.peak_mb.append(summary["peak_mb"])
        else:
            report.failed.append((task.label, summary["error"]))
        done += 1
        if progress is not None:
            progress(done, total)


# ------------------------------------------------------------------- load ---

@dataclass
class TaskResult:
    """One task's result in a store: its attributes and lazy arrays.

    ``arrays`` maps names (``rates``, ``maps``, ``attribution/channels``,
    ``reduction/traces``...) to dask arrays over the Zarr chunks; a split
    task's blocks are concatenated along time (T, ...). Nothing is read until
    computed.
    """

    key: str
    attrs: dict
    arrays: dict
    path: Path

    def scalars(self) -> dict:
        """The task's plain numbers and strings, flattened with '/'.

        Those of block 0, except that a split ``attribute`` task's
        ``completeness_error``, ``map_limit`` and ``steps`` are the whole
        task's (:func:`task_summary`), not block 0's.
        """
        import zarr

        out: dict = {}

        def walk(group, prefix):
            for k, v in _float_attrs(dict(group.attrs)).items():
                if isinstance(v, (int, float, str, bool)) or v is None:
                    out[prefix + k] = v
            for name, sub in group.groups():
                walk(sub, f"{prefix}{name}/")

        walk(zarr.open_group(str(self.path / "b00000"), mode="r"), "")
        if self.attrs.get("kind") == "attribute":
            summary = self.attrs.get("summary")
            if summary is None:   # a store written before the summary was recorded
                summary = task_summary(self.path, len(self.attrs["blocks"]))
            out.update(summary)
        return out


class Results(dict):
    """Task key → :class:`TaskResult` for a results store (what :func:`load` returns); ``damaged``: task key →
    the sentence that says why, for the tasks ``load(..., damaged="skip")`` left out."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.damaged: dict[str, str] = {}

    def table(self) -> list[dict]:
        """One row per task: its inputs plus its scalar readouts (``readout`` parsed), for ``pandas.DataFrame``."""
        rows = []
        for key, res in sorted(self.items()):
            row = {"key": key, "kind": res.attrs["kind"], "name": res.attrs["name"], "model": res.attrs["model"],
                   "stimulus": res.attrs["stimulus"], "cell": res.attrs["cell"]}
            scalars = res.scalars()
            if isinstance(scalars.get("readout"), str):
                readout = parse_readout(scalars.pop("readout"))
                scalars.update({f"readout/{k}": v for k, v in readout.items() if not isinstance(v, (list, dict))})
            row.update({k: v for k, v in scalars.items() if not (isinstance(v, str) and v.startswith(("[", "{")))})
            rows.append(row)
        return rows


class StoreError(ValueError):
    """A results store (or one of its entries) that is damaged or was not written by :func:`run`."""


EVERY_CHUNK = "every_chunk_written"
"""Attribute (true) of a stored array whose every chunk was written, so that one missing is damage, not the
fill value (zarr leaves out chunks equal to it; stores written before this attribute may lack such chunks)."""
MAX_CHUNKS = 1 << 16
"""Most chunks one stored array may have (a block of 2048 frames in chunks of 256 has 8)."""

MAX_CHUNK_BYTES = 1 << 30
"""Largest chunk of a stored array, bytes (one is read whole when any frame of it is viewed)."""

MAX_UNSPLIT_BYTES = 1 << 31
"""Largest array of a result that is not split into blocks (``reduce``, experiments), bytes."""


def _damaged_store(root: Path, entry: str) -> str:
    """The start of every sentence refusing a store: it names the store and the entry."""
    return f"{str(root)!r} is a damaged napari-retina results store: {entry}"


def _manifest_keys(root: Path) -> list[str]:
    """The task keys the store's manifest lists, or one StoreError naming the store: not JSON, not a dict
    with a list ``tasks`` of dicts with a string ``key``, or a key that leaves the store (:func:`_task_path`)."""
    try:
        manifest = parse_json((root / MANIFEST).read_text(encoding="utf-8"), f"its {MANIFEST}")
    except UnicodeDecodeError:
        raise StoreError(_damaged_store(root, f"its {MANIFEST} is not UTF-8 text")) from None
    except ValueError as exc:   # not JSON, or nested too deeply (parse_json)
        raise StoreError(_damaged_store(root, str(exc))) from None
    tasks = manifest.get("tasks", []) if isinstance(manifest, dict) else None
    if not isinstance(tasks, list):
        got = f"a JSON {type(manifest).__name__}" if tasks is None else f"tasks that are a {type(tasks).__name__}"
        raise StoreError(_damaged_store(root, f"its {MANIFEST} holds {got}, expected an object with a list of "
                                              "tasks"))
    keys = []
    for i, entry in enumerate(tasks):
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str):
            raise StoreError(_damaged_store(root, f"task {i} of its {MANIFEST} is {str(entry)[:60]!r}, expected an "
                                                  "object with a string 'key'"))
        _task_path(root, key)
        keys.append(key)
    return keys


def _task_path(root: Path, key: str) -> Path:
    """The folder of task ``key`` inside the store ``root``, or a StoreError when the key would leave it: an
    absolute path, an empty, '.' or '..' part, or a folder that resolves outside the store (a symbolic link)."""
    parts = key.replace("\\", "/").split("/")
    if not key or os.path.isabs(key) or Path(key).drive or any(p in ("", ".", "..") for p in parts):
        raise StoreError(_damaged_store(root, f"its task key {key[:80]!r} is not a relative path inside the store"))
    path = root / Path(*parts)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise StoreError(_damaged_store(root, f"its task {key[:80]!r} is a link to a folder outside the store"))
    return path


def _task_attrs(root: Path, key: str) -> Optional[dict]:
    """Task ``key``'s attributes from its ``zarr.json`` (None when it has none: not computed yet, or failed), or
    a StoreError naming the store and the task when they are not JSON or not of the kinds :func:`run` writes."""
    path = _task_path(root, key) / "zarr.json"
    try:
        doc = parse_json(path.read_text(encoding="utf-8"), f"the zarr.json of its task {key!r}")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise StoreError(_damaged_store(root, f"the zarr.json of its task {key!r} is not UTF-8 text")) from None
    except ValueError as exc:   # not JSON, or nested too deeply (parse_json's sentence)
        raise StoreError(_damaged_store(root, str(exc))) from None
    except OSError as exc:
        raise StoreError(_damaged_store(root, f"the zarr.json of its task {key!r} cannot be read ({exc})")) from None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else None
    if not isinstance(attrs, dict):
        raise StoreError(_damaged_store(root, f"the attributes of its task {key!r} are not an object"))
    if attrs.get("complete") and attrs.get("blocks"):
        _check_task_attrs(root, key, attrs)
    return attrs


def _check_task_attrs(root: Path, key: str, attrs: dict) -> None:
    """A StoreError naming the store and task ``key`` unless its attributes are of the kinds :func:`finish_task`
    writes: ``kind`` one of the analyses or "experiment", ``name``/``model`` strings, ``stimulus`` a string or
    None, ``cell`` an int ≥ 0 or None, ``params``/``summary`` objects, ``blocks`` contiguous [start, stop]
    frame ranges (at most :data:`MAX_CHUNKS` of them)."""
    def bad(name: str, expected: str):
        return StoreError(_damaged_store(root, f"the attribute {name!r} of its task {key!r} is "
                                               f"{str(attrs.get(name))[:60]!r}, expected {expected}"))

    kinds = ANALYSES + ("experiment",)
    if attrs.get("kind") not in kinds:
        raise bad("kind", f"one of {', '.join(kinds)}")
    for name in ("name", "model"):
        if not isinstance(attrs.get(name), str):
            raise bad(name, "a string")
    if not isinstance(attrs.get("stimulus"), (str, type(None))):
        raise bad("stimulus", "a file path or null")
    cell = attrs.get("cell")
    if cell is not None and (not is_int(cell) or cell < 0):
        raise bad("cell", "a cell index or null")
    if not isinstance(attrs.get("params"), dict):
        raise bad("params", "an object")
    if not isinstance(attrs.get("summary", {}), dict):
        raise bad("summary", "an object")
    blocks = attrs["blocks"]
    ok = isinstance(blocks, list) and len(blocks) <= MAX_CHUNKS
    stop = 0
    for b in blocks if ok else ():
        ok = (isinstance(b, list) and len(b) == 2 and all(is_int(v) for v in b)
              and b[0] == stop and b[1] >= b[0])
        if not ok:
            break
        stop = b[1]
    if not ok:
        raise bad("blocks", "a list of contiguous [start, stop] frame ranges from frame 0")
    _check_summary(root, key, attrs.get("summary", {}))


def _check_summary(root: Path, key: str, summary: dict) -> None:
    """A StoreError unless a task's ``summary`` (:func:`task_summary`) holds numbers: ``completeness_error`` and
    ``map_limit`` ≥ 0 (null, NaN, stored as null, allowed; ``map_limit`` finite), ``steps`` an int ≥ 1."""
    checks = {"completeness_error": lambda v: v is None or v == "inf" or (is_real(v) and v >= 0),
              "map_limit": lambda v: v is None or (is_real(v) and 0 <= v < float("inf")),
              "steps": lambda v: is_int(v) and v >= 1}
    for name, ok in checks.items():
        if name in summary and not ok(summary[name]):
            raise StoreError(_damaged_store(root, f"the summary {name!r} of its task {key!r} is "
                                                  f"{str(summary[name])[:60]!r}, expected a number as "
                                                  "task_summary writes it"))


class _CheckedChunks:
    """A stored Zarr array as dask reads it (``shape``, ``dtype``, ``ndim``, ``[...]``) whose read errors (a
    corrupt chunk: zstd, a truncated file) are one StoreError naming the store, the task and the array."""

    def __init__(self, arr, where: str) -> None:
        self.arr, self.where = arr, where
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, index):
        try:
            return self.arr[index]
        except Exception as exc:  # noqa: BLE001 - zarr and its codecs raise many kinds for a damaged chunk
            raise StoreError(f"{self.where} cannot be read (a damaged chunk: {type(exc).__name__}: "
                             f"{str(exc)[:120]})") from None


def _checked_array(root: Path, key: str, block: str, name: str, arr, frames: Optional[int]):
    """A dask array over stored array ``name`` of ``block`` of task ``key``, or one StoreError naming them when
    it is not numbers, is not ``frames`` long (a split task's blocks are), or declares more than
    :data:`MAX_CHUNKS` chunks, a chunk over :data:`MAX_CHUNK_BYTES` or, unsplit, over :data:`MAX_UNSPLIT_BYTES`."""
    import dask.array as da

    where = _damaged_store(root, f"the array {name!r} of block {block} of its task {key!r}")
    shape = tuple(arr.shape)
    try:
        dtype = np.dtype(arr.dtype)
        chunks = tuple(arr.chunks)
    except Exception as exc:  # noqa: BLE001 - a data type or chunk grid zarr reads but numpy cannot hold
        raise StoreError(f"{where} has an unusable layout ({type(exc).__name__}: {str(exc)[:80]})") from None
    n_chunks = int(np.prod([-(-s // max(c, 1)) for s, c in zip(shape, chunks)], dtype=float)) if shape else 1
    problem = (f"data type {dtype}, expected numbers" if dtype.kind not in "fiub"
               else f"{shape[0] if shape else 0} frames, expected the block's {frames}"
               if frames is not None and (not shape or shape[0] != frames)
               else f"{n_chunks} chunks, at most {MAX_CHUNKS} expected" if n_chunks > MAX_CHUNKS
               else f"chunks of {np.prod(chunks, dtype=float) * dtype.itemsize:.3g} bytes, at most {MAX_CHUNK_BYTES}"
               if np.prod(chunks, dtype=float) * dtype.itemsize > MAX_CHUNK_BYTES
               else f"shape {shape}, over {MAX_UNSPLIT_BYTES} bytes"
               if frames is None and np.prod(shape, dtype=float) * dtype.itemsize > MAX_UNSPLIT_BYTES else None)
    if problem:
        raise StoreError(f"{where} has {problem}")
    if arr.attrs.get(EVERY_CHUNK) is True:   # else a missing chunk may be zarr's fill value (an older store)
        written = _written_chunks(arr, where)
        if written < n_chunks:
            raise StoreError(f"{where} has {n_chunks - written} of its {n_chunks} chunks missing")
    return da.from_array(_CheckedChunks(arr, where), chunks=chunks, meta=np.empty((0,) * len(shape), dtype))


def _written_chunks(arr, where: str) -> int:
    """How many chunks of the stored array ``arr`` exist in the store, or one StoreError naming ``where``."""
    try:
        return int(arr.nchunks_initialized)
    except Exception as exc:  # noqa: BLE001 - listing a damaged store's folder
        raise StoreError(f"{where} cannot be listed ({type(exc).__name__}: {str(exc)[:80]})") from None


def _block_members(root: Path, key: str, folder: Path) -> list:
    """[(name, zarr array)] of the block group at ``folder`` (nested names "a/b"), or the StoreError of a block
    zarr cannot open."""
    import zarr

    try:
        with warnings.catch_warnings():   # a member folder zarr cannot read (its zarr.json gone) is damage,
            warnings.simplefilter("error", zarr.errors.ZarrUserWarning)   # not a member to skip with a warning
            stack, found = [(zarr.open_group(str(folder), mode="r"), "")], []
            while stack:
                g, prefix = stack.pop()
                found += [(prefix + name, arr) for name, arr in g.arrays()]
                stack.extend((sub, f"{prefix}{name}/") for name, sub in g.groups())
    except Exception as exc:  # noqa: BLE001 - zarr's metadata errors: unknown codec or data type, bad JSON
        raise StoreError(_damaged_store(root, f"block {folder.name} of its task {key!r} cannot be opened "
                                              f"({type(exc).__name__}: {str(exc)[:120]})")) from None
    return found


def _block_intact(root: Path, key: str, folder: Path, frames: Optional[int]) -> bool:
    """Whether the partial block at ``folder`` (one a resumed run would reuse) opens, every array of it has every
    chunk and every chunk decompresses: a corrupt one was reused and committed as complete. A block's worth of
    reading, for a block about to be joined; a committed result is checked as :func:`load` checks it
    (:func:`is_complete`), not read whole at every rerun."""
    try:
        found = _block_members(root, key, folder)
        for name, arr in found:
            _checked_array(root, key, folder.name, name, arr, frames)
            arr[...]
        return bool(found)
    except Exception:  # noqa: BLE001 - any damage (zarr's and the codecs' errors alike) means: compute it again
        return False


def _lazy_arrays(root: Path, key: str, blocks: list) -> dict:
    """Task ``key``'s arrays as dask arrays (name → (T, ...), a split task's blocks concatenated along time);
    a block that is missing is a FileNotFoundError, one zarr cannot open a StoreError, each naming the store,
    the task and the block."""
    import dask.array as da

    path = _task_path(root, key)
    per_name: dict = {}
    for i, (start, stop) in enumerate(blocks):
        block = _block_name(i)
        if not (path / block / "zarr.json").is_file():
            raise FileNotFoundError(_damaged_store(root, f"block {block} of its task {key!r} is missing "
                                                         f"(its attributes list {len(blocks)} blocks)"))
        frames = stop - start if stop > start else None   # a split task's arrays are its block's frames
        found = _block_members(root, key, path / block)
        if i and {name for name, _ in found} != set(per_name):   # every block holds the same arrays
            name = sorted(set(per_name) ^ {name for name, _ in found})[0]
            raise StoreError(_damaged_store(root, f"block {block} of its task {key!r} "
                                                  f"{'lacks' if name in per_name else 'adds'} the array {name!r} "
                                                  f"that block b00000 {'holds' if name in per_name else 'lacks'}"))
        for name, arr in found:
            per_name.setdefault(name, []).append(_checked_array(root, key, block, name, arr, frames))
    return {k: (v[0] if len(v) == 1 else da.concatenate(v, axis=0)) for k, v in per_name.items()}


def load(out: PathLike, *, damaged: str = "raise") -> Results:
    """Open a results store lazily: task key → :class:`TaskResult` (complete results only).

    The store is checked as it is opened: a manifest or task attributes that
    are not what :func:`run` writes, a task key that leads out of the store, a
    missing block, or an array zarr cannot open, that declares more than the
    block holds or that lacks a chunk is one :class:`StoreError` (a ValueError;
    FileNotFoundError for a missing block) naming the store and the entry; a
    damaged chunk is one when it is computed. ``damaged="skip"``: a damaged
    task is left out instead, its sentence under ``Results.damaged`` (the
    napari reader shows the intact ones: one damaged task hid a whole store);
    a damaged manifest still raises.

    Example
    -------
    >>> res = nr.batch.load("results")                   # doctest: +SKIP
    >>> rates = res["default/a-1f2e3d4c/predict"].arrays["rates"].compute()   # (T, n_cells)
    """
    root = Path(out)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{str(root)!r} is not a napari-retina results store (no {MANIFEST} in it)")
    if damaged not in ("raise", "skip"):
        raise ValueError(f"damaged must be 'raise' or 'skip', got {damaged!r}")
    results = Results()
    for key in _manifest_keys(root):
        try:
            attrs = _task_attrs(root, key)
            # a result without blocks holds nothing (earlier versions stored one for an empty stimulus): not served
            if attrs is not None and attrs.get("complete") and attrs.get("blocks"):
                results[key] = TaskResult(key, _float_attrs(attrs), _lazy_arrays(root, key, attrs["blocks"]),
                                          _task_path(root, key))
        except (StoreError, FileNotFoundError) as exc:
            if damaged == "raise":
                raise
            results.damaged[key] = str(exc)
    return results
