"""Frame bookkeeping shared by predict and attribute.

Outputs are aligned to stimulus frames: output frame t is computed from the
window of frames t-history+1 .. t. Frames t < history-1 have no full history.
"""

from __future__ import annotations

from typing import Iterator, Union

import numpy as np
import torch

Frames = Union[None, slice, range, list, tuple, np.ndarray]


def select_frames(n_frames: int, history: int, frames: Frames = None) -> np.ndarray:
    """Sorted, unique output-frame indices with a full history.

    ``frames=None`` means every frame from ``history-1`` on; a slice or a list of
    indices selects a subset (negative indices count from the end). Indices
    outside the movie, or without a full history, are a ValueError.
    """
    if frames is None:
        return np.arange(history - 1, n_frames)
    if isinstance(frames, slice):
        idx = np.arange(n_frames)[frames]
    else:
        try:
            idx = np.asarray(frames)
        except Exception as exc:
            raise TypeError(f"frames must be None, a slice or a list of frame indices, got {frames!r}") from exc
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"frames must be None, a slice or a list of integer frame indices, got {frames!r}")
        if ((idx < -n_frames) | (idx >= n_frames)).any():
            bad = idx[(idx < -n_frames) | (idx >= n_frames)][0]
            raise ValueError(f"frames must lie inside the movie's {n_frames} frames, got index {int(bad)}")
        idx = np.where(idx < 0, idx + n_frames, idx)
    idx = np.unique(idx)
    if idx.size == 0:
        raise ValueError("frames selects no frame of the movie")
    if idx[0] < history - 1:
        raise ValueError(
            f"frames must start at frame {history - 1} or later (the first {history - 1} frames have no "
            f"full {history}-frame history), got frame {int(idx[0])}"
        )
    return idx


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


def aligned(values: np.ndarray, idx: np.ndarray, n_frames: int) -> np.ndarray:
    """Place per-frame ``values`` (len(idx), ...) into a NaN array (n_frames, ...)."""
    out = np.full((n_frames,) + values.shape[1:], np.nan, dtype=np.float32)
    out[idx] = values
    return out
