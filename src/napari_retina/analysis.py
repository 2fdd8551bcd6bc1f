"""One analysis of a stimulus, short or long movie: attribution, reduction, lazy maps, export.

What the Analyze widget computes, without Qt: :func:`run_analysis` returns an
:class:`Analysis` (attribution, reduction, parameters, where the model came
from) that saves itself (``Analysis.save``, ``Analysis.to_dict``).

Long movies: full maps cost ``T·C·h·w·4`` bytes (4 GB for 100,000 frames of
the 8×36×36 model), so above :data:`LAZY_MAP_BYTES` only the traces are
computed (:func:`attribute_traces`, in chunks of frames, maps discarded) and
the maps become a dask array whose blocks are attributed when they are read
(:func:`lazy_maps`): a viewer opens them at once and memory stays bounded (a
small LRU cache of blocks). The reduced circuit pools its units with the
time-averaged maps, kept while each chunk's maps are at hand, as it does on a
short movie. On a GPU that runs out of memory the attribution
is retried with smaller batches (down to :data:`MIN_OOM_BATCH` path points).

Example
-------
>>> res = run_analysis(nr.load_model(), nr.stimuli.flash_train(), cell=0)   # doctest: +SKIP
>>> res.attribution.channels.shape, res.reduction.kept                      # doctest: +SKIP
((140, 8), [3, 6])
>>> res.save("analysis.h5")                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import numpy as np
import torch

from . import attribution, io, reduction
from ._invariance import InvarianceArg, resolve_invariance
from ._json import jsonable
from ._progress import LastReport, Progress, report
from ._resample import model_frame_count
from ._types import AnyModel, ArrayLike, FrameMs, PathLike, PixelUm
from ._units import FRAME_MS, PIXEL_UM
from ._validate import (Crop, Normalize, StimulusUnitsWarning, analysed_origin, as_stack, as_stimulus, check_bool,
                        check_frame_ms, check_int, check_pixel_um, file_path, one_sentence, size_text)
from ._wrap import model_config
from .attribution import Attribution, Cells, Rule
from .attribution._integrate import default_batch_points
from .attribution._result import kept_stimulus, map_shape as attribution_map_shape
from .metrics import MapMeans, map_limit
from .model import RetinaCNN
from .reduction import Reduction

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import dask.array

__all__ = [
    "map_shape", "map_bytes", "attribute_traces", "lazy_maps", "Analysis", "maps_invariance", "run_analysis",
    "LAZY_MAP_BYTES", "MIN_OOM_BATCH", "SAVE_SUFFIXES"
]

LAZY_MAP_BYTES = 256 * 2**20
"""Above this size of full maps (bytes) :func:`run_analysis` switches to lazy maps."""
MIN_OOM_BATCH = 8
"""The smallest batch (path points per backward pass) an out-of-memory retry tries."""
SAVE_SUFFIXES = (".h5", ".hdf5", ".csv")
"""What :meth:`Analysis.save` writes: HDF5 (everything) or CSV (the traces)."""

_T = TypeVar("_T")


# ------------------------------------------------------------------- sizes ---

def map_shape(model: RetinaCNN, invariance: str) -> Optional[tuple[int, int, int]]:
    """(C, h, w) of one frame's maps for a resolved invariance (None for "space", and for a wrapped module
    whose attribution has no maps: its ``config.map_sizes`` is None)."""
    if model.config.map_sizes is None:
        return None
    return attribution_map_shape(model.config.channels[0], model.config.map_sizes[0], invariance)


def map_bytes(model: RetinaCNN, n_frames: int, invariance: str = "none") -> int:
    """Bytes of float32 maps for ``n_frames`` frames (0 when space is summed out)."""
    shape = map_shape(model, invariance)
    return 0 if shape is None else int(n_frames) * int(np.prod(shape)) * 4


# --------------------------------------------------------------- long movies ---

def attribute_traces(model: AnyModel, stimulus: np.ndarray, *, cell: Cells = 0, steps: Optional[int] = None,
                     rule: Optional[Rule] = None, tol: Optional[float] = None, invariance: str = "none",
                     chunk_frames: int = 2048, batch_size: Optional[int] = None,
                     progress: Optional[Progress] = None, map_means: Optional[dict] = None) -> Attribution:
    """``nr.attribute`` over a long movie in chunks of frames, keeping traces only.

    Returns an :class:`~napari_retina.attribution.Attribution` with
    ``maps=None`` and ``channels`` (T, C), ``response``, ``rates`` (T,) over
    every frame with a full history; ``invariance`` must already be resolved
    (not "auto") so every chunk is attributed the same way. ``stimulus`` is
    float32 (T, H, W) contrast units of the model's size (already cropped: the
    result's ``crop_origin`` is (0, 0)). ``progress(done_frames, total_frames)``,
    reported within chunks too (as often as ``nr.attribute`` reports, every
    ``batch_size // steps`` frames), so a cancel acts within one such step.

    ``map_means``: a dict to fill, while each chunk's maps are at hand, with
    ``"abs"`` (mean over the frames of |A_cxy|) and ``"signed"`` (mean of
    A_cxy), float64 (C, h, w) of the invariance's maps; what
    ``nr.reduce(..., pool_maps=)`` pools the reduced circuit's units with, as it
    pools them with the maps of a short movie. Left empty for "space" (no maps).
    """
    stim = np.asarray(stimulus)
    T, hist = len(stim), model.config.history
    total = T - hist + 1
    channels = np.full((T, model.config.channels[0]), np.nan, np.float32)
    rates = np.full(T, np.nan, np.float32)
    per_frame = np.zeros(T, np.int64)
    means = MapMeans()   # of |A_cxy| and A_cxy over the attributed frames
    first = None
    report(progress, 0, total)
    for a in range(hist - 1, T, chunk_frames):
        b = min(a + chunk_frames, T)
        s0 = a - hist + 1
        # the chunk's own reports (every few frames) keep progress fine-grained and a cancel prompt
        inner = None if progress is None else (
            lambda d, n, a=a, b=b: report(progress, a - hist + 1 + (b - a) * d // max(n, 1), total))
        part = attribution.attribute(model, stim[s0:b], cell=cell, steps=steps, rule=rule, tol=tol,
                                     invariance=invariance, batch_size=batch_size, progress=inner)
        channels[a:b] = part.channels[hist - 1:]
        rates[a:b] = part.rates[hist - 1:]
        per_frame[a:b] = part.steps_per_frame[hist - 1:]
        if map_means is not None and part.maps is not None:
            means.add(part.maps[hist - 1:])
        first = part if first is None else first
        report(progress, b - hist + 1, total)
    response = (rates.astype(np.float64) - first.baseline_rate).astype(np.float32)
    frames = np.arange(hist - 1, T)
    if map_means is not None:
        map_means.update(means.means())
    err = attribution.completeness_error(channels[frames], response[frames], rates[frames], first.baseline_rate)
    return replace(first, maps=None, channels=channels, response=response, rates=rates,
                   completeness_error=err, frames=frames, stimulus=stim, steps=int(per_frame.max()),
                   steps_per_frame=per_frame)


class _BlockCache:
    """Attributed map blocks shared by every channel layer (LRU, thread-safe)."""

    def __init__(self, compute: Callable[[int, int], np.ndarray], size: int) -> None:
        self.compute, self.size = compute, size
        self.blocks: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self.lock = threading.Lock()
        self.computed = 0

    def get(self, a: int, b: int) -> np.ndarray:
        with self.lock:
            if (a, b) in self.blocks:
                self.blocks.move_to_end((a, b))
                return self.blocks[(a, b)]
            block = self.compute(a, b)
            self.computed += 1
            self.blocks[(a, b)] = block
            while len(self.blocks) > self.size:
                self.blocks.popitem(last=False)
            return block


def lazy_maps(model: AnyModel, stimulus: np.ndarray, *, cell: Cells = 0, steps: Optional[int] = None,
              rule: Optional[Rule] = None, tol: Optional[float] = None, invariance: str = "none", chunk: int = 8,
              cache_blocks: int = 32) -> "dask.array.Array":
    """Attribution maps (T, C, h, w) as a dask array computed block by block on demand.

    Each block of ``chunk`` frames is ``nr.attribute(model, <its window>,
    frames=<its frames>).maps``; frames without a full history are NaN.
    Blocks are cached (``cache_blocks`` of them, shared by all channels), so
    showing one frame of eight channel layers attributes one block once.
    ``invariance`` must be resolved ("none", "x" or "y"); ``stimulus`` as in
    :func:`attribute_traces`.
    """
    import dask.array as da

    stim = np.asarray(stimulus)
    T, hist = len(stim), model.config.history
    shape = map_shape(model, invariance)
    if shape is None:
        raise ValueError("invariance 'space' has no maps to show lazily")

    def compute(a: int, b: int) -> np.ndarray:
        out = np.full((b - a,) + shape, np.nan, np.float32)
        start = max(a, hist - 1)
        if start < b:
            s0 = start - hist + 1
            part = attribution.attribute(model, stim[s0:b], cell=cell, steps=steps, rule=rule, tol=tol,
                                         invariance=invariance)
            out[start - a:] = part.maps[hist - 1:]
        return out

    cache = _BlockCache(compute, cache_blocks)

    def block(_, block_info=None):
        a, b = block_info[None]["array-location"][0]
        return cache.get(a, b)

    template = da.zeros((T,) + shape, chunks=(chunk,) + shape, dtype=np.float32)
    arr = da.map_blocks(block, template, dtype=np.float32, meta=np.empty((0,) * 4, np.float32))
    arr.block_cache = cache  # type: ignore[attr-defined]  # for tests and diagnostics
    return arr


def _peak_limit(maps, response: np.ndarray, history: int, frames: int = 8) -> float:
    """:func:`map_limit` of the ``frames`` lazy-map frames around the strongest response (one block)."""
    T = len(response)
    peak = int(np.nanargmax(np.abs(response))) if np.isfinite(response).any() else T - 1
    a = max(history - 1, min(peak - frames // 2, T - frames))
    return map_limit(np.asarray(maps[a:a + frames]))


# --------------------------------------------------------------- out of memory ---

_TORCH_OOM_WORDS = ("out of memory", "defaultcpuallocator", "can't allocate memory")
"""Words of torch's allocation failures: CUDA's "CUDA out of memory", the CPU's "DefaultCPUAllocator: can't
allocate memory: you tried to allocate N bytes" (a RuntimeError, not a MemoryError)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA or host) out-of-memory error: torch's, or Python's MemoryError."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(exc, oom)) or isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(word in str(exc).lower() for word in _TORCH_OOM_WORDS))


def memory_sentence(exc: BaseException) -> str:
    """What an out-of-memory error (:func:`is_out_of_memory`) asked for, in one short sentence: torch's size
    in GiB where its message gives one ("torch could not allocate 96.9 GiB at once"), else its first line."""
    text = str(exc)
    host = re.search(r"allocate (\d+) bytes", text)
    if host:
        return f"torch could not allocate {size_text(int(host[1]), 'GiB', '.1f')} at once"
    gpu = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
    if gpu:
        return f"torch could not allocate {gpu[1]} on the GPU at once"
    return one_sentence(exc)


def _oom_retry(call: Callable[[Optional[int]], _T], model, batch_size: Optional[int] = None) -> _T:
    """Run ``call(batch_size)`` (an attribution of ``model``); on out-of-memory retry with halved batches (from
    half of ``batch_size``, default the attribution's own for ``model``: :func:`default_batch_points`) down to
    MIN_OOM_BATCH."""
    try:
        return call(batch_size)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        err = exc
    bs = (batch_size or default_batch_points(model)) // 2
    while bs >= MIN_OOM_BATCH:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            return call(bs)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            err = exc
        bs //= 2
    raise err


# ------------------------------------------------------------------- result ---

@dataclass
class Analysis:
    """One analysis of a stimulus: what the Analyze widget shows and saves.

    Attributes
    ----------
    attribution : Attribution
        ``nr.attribute``'s result (``maps`` None on the long-movie path, see ``maps``).
    reduction : Reduction or None
        ``nr.reduce(attribution, explain=...)``, None when not asked for.
    parameters : dict
        The run's parameters: ``cell``, ``steps`` (the most points a frame used), ``tol``
        (None for fixed steps), ``invariance`` (as asked),
        ``crop``, ``normalize``, ``reduce``, ``explain``.
    model_source : str
        Where the model came from ("shipped default", a checkpoint path, ...).
    layer : str
        Name of the napari layer the stimulus came from ("" from a script).
    maps : dask array (T, C, h, w) or None
        Lazy maps of a long movie (:func:`lazy_maps`); None when the maps are
        ``attribution.maps``.
    limit : float or None
        Shared symmetric contrast limit of the maps (:func:`map_limit`), None without maps.
    maps_note : str
        Which maps were computed and why (:func:`maps_note`), for the status line.
    lazy : bool
        Property: whether the maps are computed on demand (``maps`` is a dask
        array; a long movie).

    Methods
    -------
    save(path)
        Write everything to ``.h5``/``.hdf5`` (reopened by ``nr.read_analysis`` or
        napari's File ▸ Open) or the traces to ``.csv``; returns the path.
    to_dict()
        The nested dict that ``save`` writes to HDF5.
    """

    attribution: Attribution
    reduction: Optional[Reduction] = None
    parameters: dict = field(default_factory=dict)
    model_source: str = ""
    layer: str = ""
    maps: Any = field(default=None, repr=False)
    limit: Optional[float] = None
    maps_note: str = ""

    @property
    def lazy(self) -> bool:
        """Whether the maps are computed on demand (a long movie)."""
        return self.maps is not None

    def to_dict(self) -> dict[str, Any]:
        """The nested dict :func:`napari_retina.io.write_results` writes (arrays, parameters, provenance).

        ``parameters`` (plus ``stimulus_layer``; ``frame_ms`` the stimulus's frame interval, 10 ms unless it
        was resampled; ``pixel_um`` its pixel size, 55 µm unless it was resampled, then [y_um, x_um]),
        ``attribution`` (:meth:`Attribution.to_dict`), ``reduction``
        (:meth:`Reduction.to_dict`, when there is one), ``stimulus`` (T, H, W)
        and ``model`` (``source``; ``config``, ``provenance``, ``scores`` as JSON text).
        """
        attr = self.attribution
        model = attr.model
        out: dict[str, Any] = {
            "parameters": jsonable({**self.parameters, "stimulus_layer": self.layer,
                                    "frame_ms": self.parameters.get("frame_ms") or FRAME_MS,
                                    "pixel_um": self.parameters.get("pixel_um") or PIXEL_UM}),
            "attribution": attr.to_dict(),
            "stimulus": attr.stimulus,
            "model": {"source": self.model_source, "config": json.dumps(jsonable(model.config.to_dict())),
                      "provenance": json.dumps(jsonable(model.provenance)),
                      "scores": json.dumps(jsonable(model.scores))},
        }
        if self.reduction is not None:
            out["reduction"] = self.reduction.to_dict()
        return out

    def save(self, path: PathLike) -> Path:
        """Write everything (``.h5``/``.hdf5``, :meth:`to_dict`) or the traces (``.csv``); returns the path.

        Written atomically (see :mod:`napari_retina.io`).
        """
        # None: file_path's sentence; "" or "." (a Save field left empty): the suffix's; a folder: the writer's
        path = Path(path) if isinstance(path, (str, os.PathLike)) else file_path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return io.write_traces_csv(path, self.attribution, self.reduction)
        if suffix in SAVE_SUFFIXES:
            return io.write_results(path, self.to_dict())
        got = f"'{path.name}'" if path.name else f"no file name ('{path}')"
        raise ValueError(f"Save to a .h5/.hdf5 file (everything) or a .csv file (traces), got {got}.")


def maps_invariance(asked: str, resolved: str) -> str:
    """The invariance the maps are computed with, given the one ``asked`` and what it ``resolved`` to.

    A full-field stimulus ("auto" resolving to "space") gets full maps ("none"):
    the spatially summed path has no maps at all, and the full path costs
    about the same (the windows of a flash train repeat and are attributed
    once). Everything else keeps its invariance; an explicit "space" stays
    "space" (no maps, as asked).
    """
    return "none" if (asked == "auto" and resolved == "space") else resolved


def maps_note(asked: str, resolved: str, maps_inv: str, lazy: bool, full_bytes: int) -> str:
    """One sentence for the status line: which maps were computed and why.

    ``asked``/``resolved``: the invariance argument and what the stimulus
    satisfies; ``maps_inv``: :func:`maps_invariance`; ``lazy``: maps computed
    on demand; ``full_bytes``: size of eager maps (for the lazy reason).
    """
    if maps_inv == "space":
        return "no maps: invariance 'space' sums them over space (choose 'auto' or 'none' for maps)"
    what = {"none": "full maps A_c(t, y, x)", "y": "maps summed over y (the stimulus is uniform along y)",
            "x": "maps summed over x (the stimulus is uniform along x)"}[maps_inv]
    if asked == "auto" and resolved == "space":
        what += " of the full-field stimulus (each channel's spatial pattern of contribution)"
    if lazy:
        what += f", computed on demand as the time slider moves (all frames at once would take {size_text(full_bytes)})"
    return what


def _prepared(model: RetinaCNN, stimulus, crop: Crop, normalize: Normalize, pixel_um=None,
              frame_ms=None, progress: Optional[Progress] = None) -> np.ndarray:
    """The analysed window, float32 (T, size, size) contrast units (a units warning is left to the attribution);
    ``progress`` as for :func:`~napari_retina._validate.as_stimulus` (a Cancel acts while it is resampled)."""
    cfg = model.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StimulusUnitsWarning)
        return as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm,
                           normalize=normalize, pixel_um=pixel_um, frame_ms=frame_ms, progress=progress)


def run_analysis(model: AnyModel, stimulus: ArrayLike, *, cell: Cells = 0, steps: Optional[int] = None,
                 tol: Optional[float] = None, invariance: InvarianceArg = "auto", crop: Crop = None,
                 normalize: Normalize = False, reduce: bool = True, explain: float = reduction.DEFAULT_EXPLAIN,
                 lazy_threshold: int = LAZY_MAP_BYTES, progress: Optional[Progress] = None,
                 reduce_progress: Optional[Progress] = None, model_source: str = "", layer: str = "",
                 pixel_um: PixelUm = None, frame_ms: FrameMs = None) -> Analysis:
    """Attribute (and reduce) a stimulus the way the Analyze widget does; lazy maps for long movies.

    Short movies: ``nr.attribute(model, stimulus, cell=, steps=, tol=,
    invariance=, crop=, normalize=, pixel_um=, frame_ms=, progress=)`` then ``nr.reduce(attr, explain=,
    progress=reduce_progress)``, exactly so but for a full-field stimulus with
    ``invariance="auto"``, which gets maps (below). When the full maps would exceed
    ``lazy_threshold`` bytes, the traces are attributed in chunks (maps
    discarded, :func:`attribute_traces`) and ``Analysis.maps`` is a lazy dask
    array (:func:`lazy_maps`). Either way the attribution's ``crop_origin``
    says where the analysed window sits in ``stimulus`` (T, H, W), and an
    out-of-memory error is retried with smaller batches.

    Maps by default: with ``invariance="auto"`` a full-field stimulus (which
    resolves to "space", no maps) is attributed with "none", so each
    channel's spatial pattern shows (:func:`maps_invariance`).
    ``Analysis.maps_note`` says which maps were computed and why. So on a
    full-field stimulus the numbers are not those of ``nr.attribute`` with
    "auto" ("space") then ``nr.reduce``: at fixed ``steps`` the channels,
    response and completeness agree up to float32 rounding, but refined to
    ``tol`` (the default) the error estimate reads the maps instead of the
    channel traces, so a frame can stop at another level and the two differ by
    up to about ``tol`` (each is within ``tol`` of the exact integral); and the
    reduction pools each kept channel by its maps (the "abs" and "signed"
    pools) instead of uniformly, so its explained variance differs too. Pass
    ``invariance="space"`` for ``nr.attribute``'s numbers exactly.

    Parameters
    ----------
    model : RetinaCNN or WrappedModel
        As for :func:`napari_retina.attribute` (``nr.load_model()``, ``nr.wrap(...)``).
    stimulus : array (T, H, W)
        Contrast units (float) or raw intensities (integers); 1 frame = 10 ms (another
        interval: ``frame_ms``).
    cell, steps, tol, invariance, crop, normalize, pixel_um, frame_ms
        As for :func:`napari_retina.attribute` (default ``tol`` 1e-3; ``invariance``
        "auto", with full maps of a full-field stimulus as above).
    reduce : bool
        Also run :func:`napari_retina.reduce` (default True); False leaves
        ``Analysis.reduction`` None.
    explain : float in (0, 1]
        Fraction of the response's variance the kept channels must explain
        (``nr.reduce``'s ``explain``, default 0.9).
    lazy_threshold : int
        Size in bytes of full maps (``T·C·h·w·4``) above which the traces are
        attributed in chunks and the maps made lazy (default
        :data:`LAZY_MAP_BYTES`, 256 MiB).
    progress : callable, optional
        ``progress(done, total)`` during the attribution, as for ``nr.attribute``;
        raise :class:`napari_retina.Cancelled` in it to stop.
    reduce_progress : callable, optional
        ``progress(done_frames, total_frames)`` during the reduction (``nr.reduce``'s
        ``progress``: while the first-layer activations are recomputed). Without
        it, ``progress`` is called again with its last values as the reduction goes
        on, so that a Cancel raised in it stops the reduction too (16 s of 10,000
        frames went by uncancellable).
    model_source : str
        Where the model came from ("shipped default", a checkpoint path, ...),
        recorded in the result and its saved file.
    layer : str
        Name of the napari layer the stimulus came from ("" from a script),
        recorded likewise.

    Returns
    -------
    Analysis
        The attribution (``maps`` None on the lazy path), the reduction (None
        without ``reduce``), the parameters, ``model_source`` and ``layer``, the
        lazy ``maps`` (None unless ``lazy``), the maps' shared colour limit
        ``limit`` and ``maps_note``.

    Example
    -------
    >>> res = run_analysis(model, nr.stimuli.white_noise(frames=100_000), cell=0)   # doctest: +SKIP
    >>> res.lazy, res.maps.shape                                                     # doctest: +SKIP
    (True, (100000, 8, 36, 36))
    """
    cfg = model_config(model)
    lazy_threshold = check_int(lazy_threshold, "lazy_threshold", 0)
    reduce = check_bool(reduce, "reduce")
    explain = reduction.check_explain(explain)   # before the attribution: a wrong one would end it, minutes on
    if callable(progress):   # reported again during the reduction (anything else: nr.attribute's sentence)
        progress = LastReport(progress)
    if getattr(stimulus, "ndim", 0) == 0:  # a list (ragged too), None, a path, a number: attribute's sentence
        stimulus = as_stack(stimulus)
    pixel_um, frame_ms = check_pixel_um(pixel_um), check_frame_ms(frame_ms)
    T = model_frame_count(int(stimulus.shape[0]), frame_ms)
    full_bytes = map_bytes(model, T, "none")
    big = full_bytes > lazy_threshold
    stim = (_prepared(model, stimulus, crop, normalize, pixel_um, frame_ms, progress) if (big or invariance == "auto")
            else None)
    resolved = resolve_invariance(stim, invariance) if stim is not None else invariance
    map_inv = maps_invariance(invariance, resolved)
    big = big and map_bytes(model, T, map_inv) > lazy_threshold
    maps = None
    means: dict = {}  # the lazy path's time-averaged maps, for the reduced circuit's pools
    if not big:
        inv_arg = map_inv if map_inv != resolved else invariance
        attr = _oom_retry(lambda bs: attribution.attribute(model, stimulus, cell=cell, steps=steps, tol=tol,
                                                           invariance=inv_arg, crop=crop, normalize=normalize,
                                                           pixel_um=pixel_um, frame_ms=frame_ms,
                                                           batch_size=bs, progress=progress), model)
        limit = None if attr.maps is None else map_limit(attr.maps)
    else:
        stim = kept_stimulus(stim, stimulus)   # the result keeps it, and the lazy maps read it as the slider moves
        attr = _oom_retry(lambda bs: attribute_traces(model, stim, cell=cell, steps=steps, tol=tol,
                                                      invariance=resolved, batch_size=bs, progress=progress,
                                                      map_means=means),
                          model)
        attr = replace(attr, crop_origin=analysed_origin(np.shape(stimulus)[1:], cfg.size, crop, pixel_um),
                       input_pixel_um=pixel_um, input_frame_ms=frame_ms)
        maps = lazy_maps(model, stim, cell=cell, steps=steps, tol=tol, invariance=map_inv)
        limit = _peak_limit(maps, attr.response, cfg.history)
    red = reduction.reduce(attr, explain=explain, progress=reduce_progress or getattr(progress, "again", None),
                           pool_maps=means or None) if reduce else None
    params = {"cell": cell, "steps": attr.steps, "tol": attr.tol, "invariance": invariance,
              "crop": "none" if crop is None else crop, "pixel_um": None if pixel_um is None else list(pixel_um),
              "frame_ms": frame_ms,
              "normalize": normalize, "reduce": bool(reduce), "explain": explain}
    note = maps_note(invariance, resolved, map_inv, big, full_bytes)
    return Analysis(attr, red, params, model_source, layer, maps, limit, note)
