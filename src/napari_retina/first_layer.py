"""conv1, the first layer: its drive over a whole movie and the temporal filters of its channels.

The one implementation of the first-layer computation that predict, attribution,
reduction and the experiments share. For a movie ``s`` (T, H, W) and output frames
``idx`` (n,), the window ending at frame ``t`` is ``s[t-history+1 : t+1]`` and

    d = W⊛s  (the linear drive, no bias),   z = d + b  (conv1's pre-activation),

each (n, C1, h1, h1) with ``h1 = size - k1 + 1``. :class:`FirstLayer` computes them
by FFT (:func:`conv1_fft`) for any stimulus, and exactly but far more cheaply for
stimuli uniform over space ("space": a product with each kernel's spatial sum),
along y ("y": a 1-D convolution along x) or along x ("x"); which of these a
stimulus satisfies is decided in :mod:`napari_retina._invariance`.

The channels' temporal filters (:func:`temporal_filters`, :func:`filter_properties`)
are properties of conv1's weights, the same on every stimulus.

Units: stimuli in contrast units, 1 frame = 10 ms; d and z in conv1's units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from ._invariance import Invariance, InvarianceArg, check_invariance, stimulus_invariance
from ._types import ArrayLike
from ._units import FRAME_MS
from ._validate import consecutive, stimulus_tensor

if TYPE_CHECKING:  # the model imports this module (conv1_fft)
    from .model import RetinaCNN

__all__ = [
    "conv1_fft", "FirstLayer", "bn1_sign", "temporal_filters", "filter_properties", "properties_of_filters",
    "two_means_split", "DEFAULT_IGNORE_OLDEST_MS"
]

#: ``filter_properties``' default ``ignore_oldest_ms`` (ms; at most the older half of the history is ignored)
DEFAULT_IGNORE_OLDEST_MS = 150.0


def conv1_fft(weight: torch.Tensor, source: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Valid 2-D correlation of history-long windows of a movie with conv1's kernels, by FFT.

    ``weight`` (C, history, k, k), ``source`` (T, H, W) and output frame
    indices ``idx`` (n,) -> d (n, C, H-k+1, W-k+1), without bias, where
    ``d[i] = Σ_lag weight[:, lag] ⋆ source[idx[i] - history + 1 + lag]``.

    Each frame any window needs is Fourier transformed once (windows of
    consecutive frames share frames); a window is then one small complex
    matrix product per spatial frequency (summing over the lags) and C inverse
    transforms. Consecutive ``idx`` read their lags as a strided view of the
    spectra; others gather them. The circular correlation equals the valid
    one on the kept ``(H-k+1) × (W-k+1)`` corner, so no padding is needed. Differentiable
    (training uses it too); runs on ``weight``'s device and in its dtype.
    """
    c, hist, k, _ = weight.shape
    height, width = source.shape[-2:]
    idx = np.asarray(idx)
    if consecutive(idx):
        # consecutive windows: lag j of window i is frame i + j of the block, a strided view of the spectra
        # (no gather of n·hist spectra: ~2× faster on a CPU, the same numbers)
        frames = source[idx[0] - hist + 1 : idx[-1] + 1].to(weight.device, weight.dtype)
        xw = torch.fft.rfft2(frames).flatten(1).T.contiguous().unfold(1, hist, 1)  # (freq, n, hist)
    else:
        lags = idx[:, None] - hist + 1 + np.arange(hist)  # (n, hist) frame index of each lag
        needed, pos = np.unique(lags, return_inverse=True)
        frames = source[torch.as_tensor(needed, device=source.device)].to(weight.device, weight.dtype)
        xf = torch.fft.rfft2(frames).flatten(1).T  # (freq, frames)
        xw = xf[:, torch.as_tensor(pos.reshape(lags.shape), device=xf.device)]  # (freq, n, hist)
    wf = torch.fft.rfft2(weight, s=(height, width)).conj()  # (C, hist, H, W//2+1)
    wf = wf.permute(2, 3, 1, 0).reshape(-1, hist, c)  # (freq, hist, C)
    zf = torch.bmm(xw, wf).view(height, width // 2 + 1, len(idx), c).permute(2, 3, 0, 1)
    z = torch.fft.irfft2(zf, s=(height, width))
    return z[..., : height - k + 1, : width - k + 1].contiguous()


def _reduced_source(stimulus: np.ndarray, invariance: Invariance, dtype: torch.dtype) -> torch.Tensor:
    """The movie as the fast path reads it: (T,) per-frame means for "space", (T, W) for "y",
    (T, H) for "x", the (T, H, W) movie itself for "none" (no copy when it is already ``dtype``)."""
    movie = stimulus_tensor(stimulus)
    if invariance == "none":
        return movie.to(dtype)
    dims = {"space": (1, 2), "y": 1, "x": 2}[invariance]
    return movie.to(dtype).mean(dim=dims)


class FirstLayer:
    """conv1 of a whole movie, window by window, on the cheapest exact path its invariance allows.

    Parameters
    ----------
    model : RetinaCNN
        Its ``conv1`` weight (C1, history, k1, k1) and bias (C1,) are used, on
        their device and in their dtype.
    stimulus : float32 (T, H, W)
        Contrast units, the model's size.
    invariance : "auto", "none", "x", "y" or "space"
        "auto" detects it on the whole movie
        (:func:`napari_retina._invariance.stimulus_invariance`); a named one is
        taken as given (check it with ``resolve_invariance`` on the frames the
        windows use): the mean along the uniform axis stands for the axis.

    ``linear(idx)`` is d = W⊛s and ``z(idx)`` is z = d + b, each (len(idx), C1,
    h1, h1), for the windows ending at frames ``idx`` (each >= history-1); on
    the invariant paths they are broadcast (expanded) views of a (n, C1, 1, 1),
    (n, C1, 1, w) or (n, C1, h, 1) result. Nothing of size history·H·W per
    window is copied: the "none" path transforms each needed frame once
    (:func:`conv1_fft`), the others read a value or a profile per frame.

    Example
    -------
    >>> layer = FirstLayer(model, nr.stimuli.flash_train(size=50))   # doctest: +SKIP
    >>> layer.invariance, layer.z(np.arange(39, 45)).shape            # doctest: +SKIP
    ('space', torch.Size([6, 8, 36, 36]))
    """

    def __init__(self, model: "RetinaCNN", stimulus: np.ndarray, invariance: InvarianceArg = "auto") -> None:
        conv = model.first_layer_module
        self.weight, self.bias = conv.weight, conv.bias
        self.history = model.config.history
        self.size = model.config.map_sizes[0]
        stim = np.ascontiguousarray(stimulus, dtype=np.float32)
        inv = check_invariance(invariance)
        self.invariance: Invariance = stimulus_invariance(stim) if inv == "auto" else inv
        self.source = _reduced_source(stim, self.invariance, self.weight.dtype)
        w = self.weight
        self._kernel = {"space": lambda: w.sum(dim=(2, 3)), "y": lambda: w.sum(dim=2),
                        "x": lambda: w.sum(dim=3), "none": lambda: w}[self.invariance]()

    def _compact(self, idx: np.ndarray) -> torch.Tensor:
        """W⊛s for the windows ending at ``idx``: (n, C, 1, 1), (n, C, 1, w), (n, C, h, 1) or (n, C, h, w)."""
        if self.invariance == "none":
            return conv1_fft(self.weight, self.source, idx)
        lags = torch.arange(-self.history + 1, 1)
        win = self.source[torch.as_tensor(np.asarray(idx))[:, None] + lags]  # (n, history[, L])
        win = win.to(device=self.weight.device, dtype=self.weight.dtype)
        if self.invariance == "space":
            return (win @ self._kernel.T)[:, :, None, None]
        d = F.conv1d(win, self._kernel)  # (n, C, L - k + 1)
        return d[:, :, None, :] if self.invariance == "y" else d[:, :, :, None]

    def _full(self, d: torch.Tensor) -> torch.Tensor:
        return d.expand(d.shape[0], d.shape[1], self.size, self.size)

    def linear(self, idx: ArrayLike) -> torch.Tensor:
        """d = W⊛s without bias, (len(idx), C1, h1, h1), for the windows ending at frames ``idx``."""
        return self._full(self._compact(np.asarray(idx)))

    def z(self, idx: ArrayLike) -> torch.Tensor:
        """z = W⊛s + b, (len(idx), C1, h1, h1), for the windows ending at frames ``idx``."""
        return self._full(self._compact(np.asarray(idx)) + self.bias.view(1, -1, 1, 1))

    def rest(self) -> torch.Tensor:
        """z of an all-grey window (s = 0): the bias, (1, C1, h1, h1).

        W⊛0 is added as 0·ΣW, so that a NaN or infinite conv1 weight gives NaN
        here as it does on any other window (the rates' finiteness check then
        reports it), not the bias alone.
        """
        w_times_0 = 0 * self.weight.sum(dim=(1, 2, 3))
        return (self.bias + w_times_0).view(1, -1, 1, 1).expand(1, -1, self.size, self.size)


# ----------------------------------------------------------------------------- temporal filters


def bn1_sign(model: "RetinaCNN") -> np.ndarray:
    """Sign (C1,) of bn1's scale per channel (the median over the channel's units), ±1.0."""
    scale, _ = model.first_layer_affine()
    sc = scale.detach().double().cpu().numpy()
    med = np.median(sc.reshape(sc.shape[0], -1), axis=1)
    return np.where(med < 0, -1.0, 1.0)


def temporal_filters(model: "RetinaCNN") -> np.ndarray:
    """Spatially summed conv1 kernels, float64 (C1, history), index 0 = oldest frame.

    Each channel's kernel (history, k, k) summed over space is its response
    filter to full-field light; it is multiplied by the sign of the channel's
    batch-norm scale (:func:`bn1_sign`) so that "positive" means "light
    increases the unit's activation" even when bn1 flips the sign. Tap
    ``history-1`` is the current frame, so tap ``j`` lies ``(history-1-j) × 10`` ms
    in the past.

    Example
    -------
    >>> temporal_filters(nr.load_model()).shape          # doctest: +SKIP
    (8, 40)
    """
    w = model.first_layer_module.weight.detach().double().cpu().numpy()  # (C, history, k, k)
    return w.sum(axis=(2, 3)) * bn1_sign(model)[:, None]


def filter_properties(model: "RetinaCNN", ignore_oldest_ms: float = DEFAULT_IGNORE_OLDEST_MS) -> dict[str, Any]:
    """Polarity, peak latency and kinetics of every first-layer channel (METHOD.md §3).

    The peak is the largest-magnitude tap of :func:`temporal_filters` ignoring
    the oldest ``ignore_oldest_ms`` of the history (at most the older half of it,
    so short-history models keep their recent taps); ON if that tap is positive.
    ``latency_ms = (history-1-tap) × 10``.

    Kinetics is derived from the data, not a fixed threshold: the latencies of
    all C channels are split in two by 1-D 2-means (:func:`two_means_split`);
    the early group is "fast", the late group "slow", and the threshold is the
    midpoint between the two groups. When every channel has the same latency
    all are "fast". Using all channels (not only the kept ones) makes a
    channel's kinetics a property of the model, the same on every stimulus.

    Returns
    -------
    dict with ``polarity`` (list of "ON"/"OFF"), ``latency_ms`` (float (C,)),
    ``tap`` (int (C,)), ``kinetics`` (list of "fast"/"slow"), ``split_ms`` (float),
    ``filters`` (float64 (C, history)).
    """
    return properties_of_filters(temporal_filters(model), ignore_oldest_ms)


def properties_of_filters(filt: np.ndarray, ignore_oldest_ms: float = DEFAULT_IGNORE_OLDEST_MS) -> dict[str, Any]:
    """:func:`filter_properties` of temporal filters ``filt`` (C, taps), index 0 = oldest, last tap = now."""
    history = filt.shape[1]
    n_ignore = int(round(float(ignore_oldest_ms) / FRAME_MS))
    n_ignore = max(0, min(n_ignore, history // 2))
    recent = filt[:, n_ignore:]
    tap = n_ignore + np.argmax(np.abs(recent), axis=1)
    peak = filt[np.arange(len(filt)), tap]
    polarity = ["ON" if p > 0 else "OFF" for p in peak]
    latency = (history - 1 - tap).astype(np.float64) * FRAME_MS
    split = two_means_split(latency)
    kinetics = ["fast" if lat <= split else "slow" for lat in latency]
    return {"polarity": polarity, "latency_ms": latency, "tap": tap, "kinetics": kinetics,
            "split_ms": split, "filters": filt}


def two_means_split(values: np.ndarray) -> float:
    """Threshold of the optimal 1-D 2-means split of ``values`` (midpoint between groups).

    The split of the sorted values that minimises the within-group sum of
    squares; returns the largest value when all values are equal (everything
    in the low group), NaN for no values.

    Example
    -------
    >>> two_means_split(np.array([30., 40., 40., 120., 130.]))
    80.0
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return float("nan")
    if v[0] == v[-1]:
        return float(v[-1])
    best, best_i = np.inf, 1
    for i in range(1, len(v)):
        if v[i] == v[i - 1]:
            continue
        lo, hi = v[:i], v[i:]
        cost = ((lo - lo.mean()) ** 2).sum() + ((hi - hi.mean()) ** 2).sum()
        if cost < best:
            best, best_i = cost, i
    return float((v[best_i - 1] + v[best_i]) / 2.0)
