"""Frame bookkeeping shared by predict, attribute and reduce.

Outputs are aligned to stimulus frames: output frame t is computed from the
window of frames t-history+1 .. t. Frames t < history-1 have no full history.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Union

import numpy as np
import torch

Frames = Union[None, slice, range, list, tuple, np.ndarray]


def select_frames(n_frames: int, history: int, frames: Frames = None, bins: str = "") -> np.ndarray:
    """Sorted, unique output-frame indices with a full history.

    ``frames=None`` means every frame from ``history-1`` on; a slice or a list of
    indices selects a subset (negative indices count from the end). A slice
    whose lower end is left open (``slice(None)``, ``slice(None, 100)``) starts
    at ``history-1``, as None does. Indices outside the movie, or without a
    full history, are a ValueError naming the index as given (``bins`` follows the movie's frame count in it:
    what the frames are when they are the model's bins of a resampled stack, :func:`._validate.bins_words`).
    """
    if frames is None:
        return np.arange(history - 1, n_frames)
    if isinstance(frames, slice):
        idx = np.arange(n_frames)[frames]
        if (frames.start if (frames.step or 1) > 0 else frames.stop) is None:   # open at its lower end
            idx = idx[idx >= history - 1]
        given = idx
    else:
        try:
            idx = np.asarray(frames)
        except Exception as exc:
            raise TypeError(f"frames must be None, a slice or a list of frame indices, got {frames!r}") from exc
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.dtype == bool:
            raise TypeError(f"frames must be frame indices, not a boolean mask (got a bool array of shape "
                            f"{idx.shape}); pass np.flatnonzero(mask)")
        if idx.ndim == 1 and idx.dtype == object and idx.size and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in idx):   # Python ints (> int64)
            outside = [v for v in idx if not -n_frames <= v < n_frames]
            if outside:
                raise ValueError(f"frames must lie inside the movie's {n_frames} frames{bins}, got index "
                                 f"{int(outside[0])}")
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"frames must be None, a slice or a list of integer frame indices, got "
                            f"{_described(frames, idx)}")
        if ((idx < -n_frames) | (idx >= n_frames)).any():
            bad = idx[(idx < -n_frames) | (idx >= n_frames)][0]
            raise ValueError(f"frames must lie inside the movie's {n_frames} frames{bins}, got index {int(bad)}")
        given = idx.astype(np.int64)  # in range now: int8 cannot hold idx + n_frames, torch cannot index with uint64
        idx = np.where(given < 0, given + n_frames, given)
    if idx.size == 0:
        raise ValueError("frames selects no frame of the movie")
    if idx.min() < history - 1:
        first = int(np.argmin(idx))
        got = (f"{int(idx[first])}" if given[first] == idx[first]
               else f"{int(given[first])} (frame {int(idx[first])} of {n_frames})")
        raise ValueError(
            f"frames must start at frame {history - 1} or later (the first {history - 1} frames have no "
            f"full {history}-frame history), got frame {got}"
        )
    return np.unique(idx)


def _described(frames: Any, idx: np.ndarray) -> str:
    """``frames`` in a few words for a one-line message: its repr when short, else its type, dtype and shape."""
    text = repr(frames)
    return text if len(text) <= 60 and "\n" not in text else f"{type(frames).__name__} of {idx.dtype} {idx.shape}"


def batches(idx: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Split frame indices into consecutive batches of at most ``batch_size``."""
    for start in range(0, len(idx), batch_size):
        yield idx[start : start + batch_size]


def gather_windows(stimulus: torch.Tensor, idx: np.ndarray, history: int) -> torch.Tensor:
    """Windows (n, history, H, W) ending at frames ``idx`` of a (T, H, W) tensor."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1:  # consecutive: one strided view
        block = stimulus[idx[0] - history + 1 : idx[-1] + 1]
        return block.unfold(0, history, 1).permute(0, 3, 1, 2).contiguous()
    return torch.stack([stimulus[t - history + 1 : t + 1] for t in idx])


#: frames per block when scanning a movie for grey frames (bounded temporaries)
_SCAN_FRAMES = 1024


def grey_windows(stimulus: np.ndarray, idx: np.ndarray, history: int) -> np.ndarray:
    """Bool (n,): whether every frame of the window ending at each frame of ``idx`` is all 0.

    ``stimulus`` (T, H, W) in contrast units, so 0 is mean luminance: such a
    window is the model at rest, the same input whatever ``t``. The movie is
    scanned ``_SCAN_FRAMES`` frames at a time.
    """
    T = len(stimulus)
    active = np.zeros(T, dtype=bool)
    for a in range(0, T, _SCAN_FRAMES):
        active[a : a + _SCAN_FRAMES] = np.any(stimulus[a : a + _SCAN_FRAMES], axis=(1, 2))
    csum = np.concatenate([[0], np.cumsum(active)])
    idx = np.asarray(idx)
    return (csum[idx + 1] - csum[idx + 1 - history]) == 0


#: where :func:`_probe_tells_apart` reads each frame: this many runs of this many consecutive values
_PROBE_RUNS, _PROBE_RUN = 4, 16


def _probe_tells_apart(flat: np.ndarray) -> bool:
    """Whether a sample of each row of ``flat`` (T, n) already differs between every two rows (then every two
    frames differ; False says nothing).

    The sample is ``_PROBE_RUNS`` runs of ``_PROBE_RUN`` consecutive values
    spread over the frame (whole cache lines). Each row's sample bytes are
    hashed to one uint64 (8-byte words times fixed odd multipliers, summed
    mod 2**64): byte-equal samples hash equal, so T distinct hashes mean T
    distinct frames. 10,000 white-noise frames of 50×50: ~3 ms, where
    sorting the whole frames takes ~20 ms.
    """
    n = flat.shape[1]
    starts = np.unique(np.linspace(0, max(0, n - _PROBE_RUN), _PROBE_RUNS).astype(np.int64))
    sample = np.concatenate([flat[:, a : a + _PROBE_RUN] for a in starts], axis=1)
    raw = sample.view(np.uint8).reshape(len(sample), -1)
    words = np.pad(raw, ((0, 0), (0, -raw.shape[1] % 8))).view(np.uint64)
    odd = np.random.default_rng(0).integers(0, 2**62, words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys = (words * odd).sum(axis=1, dtype=np.uint64)  # wraps mod 2**64: a hash, not a number
    return len(np.unique(keys)) == len(keys)


def _frame_ids(stimulus: np.ndarray) -> tuple[int, np.ndarray]:
    """The number of distinct frames and an id per frame, int64 (T,): equal ids for byte-equal frames.

    When a sample of each frame tells them all apart (:func:`_probe_tells_apart`:
    white noise, natural movies), the ids are 0..T−1. Otherwise each frame's
    bytes are one ``np.void`` value and a stable sort (memcmp) groups equal
    frames: ~4× faster than hashing each frame's bytes in a dict on 10,000
    white-noise frames (15 vs 64 ms), as fast on a flash train.
    """
    flat = np.ascontiguousarray(stimulus).reshape(len(stimulus), -1)
    if _probe_tells_apart(flat):
        return len(flat), np.arange(len(flat))
    rows = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    first = np.ones(len(rows), dtype=bool)  # where a new distinct frame starts in sorted order
    first[1:] = ordered[1:] != ordered[:-1]
    ids = np.empty(len(rows), dtype=np.int64)
    ids[order] = np.cumsum(first) - 1
    return int(first.sum()), ids


def unique_windows(stimulus: np.ndarray, idx: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames with distinct windows (``todo``) and ``inverse`` with idx ≡ todo[inverse].

    Exact: frames are compared byte for byte, windows by their sequence of
    frame identities (periodic flash trains repeat their windows).
    """
    distinct, frame_id = _frame_ids(stimulus)
    if distinct == len(stimulus):  # no repeated frame, no repeated window
        return idx, np.arange(len(idx))
    keys = np.lib.stride_tricks.sliding_window_view(frame_id, history)[idx - history + 1]
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep time order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return idx[first[order]], rank[inverse.reshape(-1)]


def fill_repeats(arr, idx: np.ndarray, todo: np.ndarray, inverse: np.ndarray, chunk_values: int = 1 << 20) -> None:
    """Copy each computed frame of ``arr`` (an array or tensor (T, …)) to the frames that repeat its window:
    ``arr[idx] = arr[todo][inverse]`` (:func:`unique_windows`), a chunk of about ``chunk_values`` values at a
    time, in place. All at once, the copy was a temporary as large as every frame's maps (2.6 GB for a
    32,000-frame flash train). The frames of ``todo`` are their own sources, so the order is free."""
    per_frame = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)))
    step = max(1, chunk_values // per_frame)
    for start in range(0, len(idx), step):
        arr[idx[start:start + step]] = arr[todo[inverse[start:start + step]]]
