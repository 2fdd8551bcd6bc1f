"""Running a model over a movie: frame-aligned firing rates (the package's one forward pass).

``nr.predict`` is :func:`predict`; the module is private so that the package
attribute ``napari_retina.predict`` is the function, resolved lazily (importing
``napari_retina`` does not import torch).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import torch

from ._device import DeviceLike
from ._frames import batches, grey_windows, select_frames
from ._invariance import Invariance, InvarianceArg, check_invariance, resolve_invariance
from ._progress import Progress, report
from ._types import AnyModel, ArrayLike, FrameMs, PixelUm
from ._validate import Crop, Normalize, as_stimulus, check_finite_output, check_int
from .first_layer import FirstLayer
from . import _wrap
from ._wrap import model_on
from .model import RetinaCNN


def default_batch_size(device: torch.device) -> int:
    """Output frames per forward pass: 256 on CPU, 1024 on a GPU."""
    return 256 if device.type == "cpu" else 1024


@contextmanager
def callers_modes(model) -> Iterator[None]:
    """Restore the train/eval mode of every submodule of ``model`` on leaving the block.

    predict and attribute run the model in eval mode (``model_on``) without
    changing the caller's model, as :func:`napari_retina.reduce` does: a
    training loop that validates with them keeps training in its own mode.
    Anything that is not a torch module is left alone.
    """
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def predict(
    model: AnyModel,
    stimulus: ArrayLike,
    device: DeviceLike = None,
    batch_size: Optional[int] = None,
    crop: Crop = None,
    progress: Optional[Progress] = None,
    normalize: Normalize = False,
    invariance: InvarianceArg = "auto",
    pixel_um: PixelUm = None,
    frame_ms: FrameMs = None,
) -> np.ndarray:
    """Predicted firing rates of every cell, aligned to stimulus frames.

    Parameters
    ----------
    model : RetinaCNN or WrappedModel
        E.g. ``nr.load_model()``, or a user's module through ``nr.wrap``;
        run in eval mode (deterministic).
    stimulus : array (T, H, W)
        Contrast units (float) or raw intensities (integers; see
        :func:`napari_retina._validate.normalise`); 1 frame = 10 ms (another
        interval: ``frame_ms``). Float values must fit in float32. A float stack far from contrast units
        (|mean| above 3, or std above 10, times the std of the model's
        training stimulus) warns with :class:`napari_retina.StimulusUnitsWarning`.
    device : str, optional
        Where to run; ``None`` keeps the model's device.
    batch_size : int, optional
        Output frames per forward pass (default 256 on CPU, 1024 on GPU; for a wrapped module
        its ``config.batch_size``, fewer for a heavy module).
    crop : None, "center", (y0, x0) or "y0,x0"
        How to cut a ``size × size`` window out of a larger stack (integers
        only; see :func:`napari_retina._validate.parse_crop`).
    progress : callable, optional
        ``progress(done_frames, total_frames)`` after each batch; raise
        :class:`napari_retina.Cancelled` in it to stop.
    normalize : False, True or "zscore"
        False (default): float stacks are used as contrast, integer stacks
        mapped as described in ``normalise``. True or "zscore": z-score the
        stack by its own mean and std (for raw intensities stored as floats).
    invariance : "auto", "none", "x", "y" or "space"
        How conv1 is computed (:class:`napari_retina.first_layer.FirstLayer`):
        "auto" (default) detects whether the movie is uniform over space or
        along an axis and then uses the exact cheap path; "none" always
        convolves in full. A named invariance the movie lacks is a ValueError.
        The answer is the same up to float32 rounding. A wrapped module
        (``nr.wrap``) always runs in full (its name is still checked).
    pixel_um : float or (y_um, x_um), optional
        The stack's pixel size on the retina (µm); other than the model's
        55 µm, the stack is resampled to the model's pixels (area-weighted
        means) before ``crop``, which then counts model pixels (as in
        :func:`napari_retina.attribute`). Default None: the stack's pixels are the model's.
    frame_ms : float, optional
        How long each frame was shown (ms), e.g. ``1000 / 60`` for a 60 Hz
        monitor; other than the model's 10 ms, time is resampled to the
        model's 10 ms bins (each bin the mean of the frames shown during it)
        and the rates come on those bins: ``T' = floor(T·frame_ms/10)`` of
        them (a thousandth of a bin short counting as whole), bin ``k``
        covering ``[10k, 10(k+1))`` ms from the stack's first frame; text
        such as ``"1000/60"`` is read too. Default None: the stack's frames are the model's.

    Returns
    -------
    rates : float32 (T, n_cells) (T' with ``frame_ms``), spikes per 10 ms bin; NaN for the first
        ``history-1`` frames, which have no full history. Rates that come out
        NaN or infinite on any other frame raise a ValueError.

    Windows that are entirely grey (every value 0) all give the rate at rest
    and are computed once. Memory stays bounded whatever T: besides the
    stimulus and the (T, n_cells) output, a batch needs about ``batch_size ×
    (history·(H·W/2) × 8 + (C1·h1² + C2·h2²) × 4 × 3)`` bytes (conv1 by FFT,
    see :func:`napari_retina.first_layer.conv1_fft`; ≈ 140 MB at the default
    256 for the 40×50×50 model).

    Example
    -------
    >>> rates = nr.predict(nr.load_model(), nr.stimuli.white_noise(frames=200))  # doctest: +SKIP
    >>> rates.shape                                                             # doctest: +SKIP
    (200, 4)
    """
    check_invariance(invariance)   # a wrapped module computes every window in full, but a bad name is still refused
    with callers_modes(model):
        if _wrap.is_wrapped(model):  # a user's module (nr.wrap): its own forward pass, window by window
            return _wrap.predict(model, stimulus, device, batch_size, crop, progress, normalize, pixel_um, frame_ms)
        model = model_on(model, device)
        cfg = model.config
        stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm,
                           normalize=normalize, pixel_um=pixel_um, frame_ms=frame_ms, progress=progress)
        bs = default_batch_size(model.device) if batch_size is None else check_int(batch_size, "batch_size", 1)
        inv = resolve_invariance(stim, invariance)
        return forward(model, stim, inv, bs, progress)


def forward(model: RetinaCNN, stim: np.ndarray, invariance: Invariance, batch_size: int,
            progress: Optional[Progress] = None) -> np.ndarray:
    """Rates (T, n_cells) of an eval-mode ``model`` on a checked float32 (T, size, size) movie.

    The body of :func:`predict` after its checks: every frame with a full
    history, in batches of ``batch_size`` windows, conv1 by
    :class:`~napari_retina.first_layer.FirstLayer` with the resolved
    ``invariance``; all-grey windows computed once. Non-finite rates raise
    :class:`napari_retina._validate.NonFiniteOutputError`.
    """
    cfg = model.config
    idx = select_frames(len(stim), cfg.history)
    out = np.full((len(stim), cfg.n_cells), np.nan, dtype=np.float32)
    layer = FirstLayer(model, stim, invariance)
    grey = grey_windows(stim, idx, cfg.history)
    report(progress, 0, len(idx))
    done = 0
    with torch.inference_mode():
        if grey.any():
            out[idx[grey]] = model.from_first_layer(layer.rest()).float().cpu().numpy()[0]
            done = int(grey.sum())
            report(progress, done, len(idx))
        for chunk in batches(idx[~grey], batch_size):
            out[chunk] = model.from_first_layer(layer.z(chunk)).float().cpu().numpy()
            done += len(chunk)
            report(progress, done, len(idx))
    check_finite_output(out, idx, "the model's rates", stim)
    return out
