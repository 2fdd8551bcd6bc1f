"""Long movies: attribution traces in chunks and lazily computed attribution maps.

Full maps cost ``T·C·h·w·4`` bytes (4 GB for 100,000 frames of the 8×36×36
model), so for long movies the Analyze widget computes only the traces (in
chunks of frames, maps discarded) and shows the maps as a dask array whose
blocks are attributed when napari displays them: opening is immediate and
memory stays bounded (a small LRU cache of blocks).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Optional

import numpy as np

import napari_retina as nr
from .._invariance import resolve_invariance as _resolve_invariance
from ..attribution import completeness_error
from .._progress import report

LAZY_MAP_BYTES = 256 * 2**20
"""Above this size of full maps the Analyze widget switches to lazy maps."""


def map_shape(model, invariance: str) -> Optional[tuple]:
    """(C, h, w) of one frame's maps for a resolved invariance (None for "space")."""
    c1, h1 = model.config.channels[0], model.config.map_sizes[0]
    return {"none": (c1, h1, h1), "y": (c1, 1, h1), "x": (c1, h1, 1)}.get(invariance)


def map_bytes(model, n_frames: int, invariance: str = "none") -> int:
    """Bytes of float32 maps for ``n_frames`` frames (0 when space is summed out)."""
    shape = map_shape(model, invariance)
    return 0 if shape is None else int(n_frames) * int(np.prod(shape)) * 4


def resolve_invariance(model, stimulus: np.ndarray, invariance: str = "auto") -> str:
    """The invariance ``nr.attribute`` would pick for the whole movie (see its docstring).

    Streams over the movie in chunks of frames (:mod:`napari_retina._invariance`),
    so it needs no memory in proportion to the movie; ``model`` is unused (kept
    for the callers' signature).
    """
    return _resolve_invariance(stimulus, invariance)


def attribute_traces(model, stimulus: np.ndarray, *, cell=0, steps=None, rule=None, invariance="none",
                     chunk_frames: int = 2048, batch_size=None, progress=None):
    """``nr.attribute`` over a long movie in chunks of frames, keeping traces only.

    Returns an :class:`~napari_retina.attribution.Attribution` with
    ``maps=None`` and ``channels``, ``response``, ``rates`` (T,) over every
    frame with a full history; ``invariance`` must already be resolved (not
    "auto") so every chunk is attributed the same way. ``stimulus`` is float32
    contrast units of the model's size. ``progress(done_frames, total_frames)``.
    """
    stim = np.asarray(stimulus)
    T, hist = len(stim), model.config.history
    total = T - hist + 1
    channels = np.full((T, model.config.channels[0]), np.nan, np.float32)
    rates = np.full(T, np.nan, np.float32)
    first = None
    report(progress, 0, total)
    for a in range(hist - 1, T, chunk_frames):
        b = min(a + chunk_frames, T)
        s0 = a - hist + 1
        part = nr.attribute(model, stim[s0:b], cell=cell, steps=steps, rule=rule, invariance=invariance,
                            batch_size=batch_size)
        channels[a:b] = part.channels[hist - 1:]
        rates[a:b] = part.rates[hist - 1:]
        first = part if first is None else first
        report(progress, b - hist + 1, total)
    response = (rates.astype(np.float64) - first.baseline_rate).astype(np.float32)
    frames = np.arange(hist - 1, T)
    err = completeness_error(channels[frames], response[frames], rates[frames], first.baseline_rate)
    return replace(first, maps=None, channels=channels, response=response, rates=rates,
                   completeness_error=err, frames=frames, stimulus=stim)


class _BlockCache:
    """Attributed map blocks shared by every channel layer (LRU, thread-safe)."""

    def __init__(self, compute, size: int) -> None:
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


def lazy_maps(model, stimulus: np.ndarray, *, cell=0, steps=None, rule=None, invariance="none",
              chunk: int = 8, cache_blocks: int = 32):
    """Attribution maps (T, C, h, w) as a dask array computed block by block on demand.

    Each block of ``chunk`` frames is ``nr.attribute(model, <its window>,
    frames=<its frames>).maps``; frames without a full history are NaN.
    Blocks are cached (``cache_blocks`` of them, shared by all channels), so
    showing one frame of eight channel layers attributes one block once.
    ``invariance`` must be resolved ("none", "x" or "y").
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
            part = nr.attribute(model, stim[s0:b], cell=cell, steps=steps, rule=rule, invariance=invariance)
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
