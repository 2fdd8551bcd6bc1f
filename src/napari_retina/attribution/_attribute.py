"""``attribute``: integrated gradients of a cell's rate to conv1 units over a movie."""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .._device import DeviceLike
from .._frames import Frames, fill_repeats, select_frames, unique_windows
from .._invariance import Invariance, InvarianceArg, check_invariance, resolve_invariance
from .._predict import callers_modes
from .._wrap import model_on
from .._progress import Progress, report
from .._types import AnyModel, ArrayLike, FrameMs, PixelUm
from .._validate import (Crop, Normalize, analysed_origin, as_stimulus, bins_words, check_cells, check_finite_output,
                         check_frame_ms, check_int, check_maps_fit, check_pixel_um)
from .._wrap import is_wrapped
from ..first_layer import FirstLayer
from ..model import RetinaCNN
from ._adaptive import ADAPTIVE_START_STEPS, Scales, check_quadrature, integrate_adaptive, warn_if_unmet
from ._head import Head
from ._host_copy import HostWriter
from ._integrate import chunk_rates, default_batch_points, integrate_chunk
from ._quadrature import DEFAULT_RULE, Rule
from ._result import Attribution, completeness_error, kept_stimulus, map_shape, reduce_maps
from ._wrapped import attribute_wrapped

Cells = Union[int, Sequence[int], str]
"""A cell index, a list of them, or "all"."""


def _empty(T: int, idx: np.ndarray, c1: int, h1: int,
           invariance: Invariance) -> tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Maps (None for "space"; summed along a uniform axis), channels (T, C1) and rates (T,): NaN on the
    frames not in ``idx``, not yet written on those in ``idx`` (the maps of 10,000 frames are 415 MB:
    filling them twice costs a pass)."""
    shape = map_shape(c1, h1, invariance)
    if shape is not None:
        check_maps_fit(T, shape)
    maps = None if shape is None else np.empty((T,) + shape, dtype=np.float32)
    if maps is not None:
        outside = np.ones(T, dtype=bool)
        outside[idx] = False
        maps[outside] = np.nan
    return maps, np.full((T, c1), np.nan, dtype=np.float32), np.full(T, np.nan, dtype=np.float32)


def _integrate_frames(model: RetinaCNN, stim: np.ndarray, idx: np.ndarray, cells: list[int], rule: Rule,
                      steps: Optional[int], tol: Optional[float], invariance: Invariance, batch_size: int,
                      progress: Optional[Progress]):
    """(maps, channels, rates, F(0), steps per frame) of the frames ``idx``; arrays over T, NaN (0) elsewhere.

    Rates, channels or maps NaN or infinite on a frame of ``idx`` raise a
    ValueError (:func:`~napari_retina._validate.check_finite_output`); the maps
    are read on the host for it only when their running sum on the device is
    not finite (a NaN or an infinity, or an overflow of the sum of finite values).

    Distinct windows only (repeated ones are copied), in chunks of
    ``max(1, batch_size // steps)`` frames (steps = ``2·ADAPTIVE_START_STEPS``, the
    first level a frame can be accepted at, with ``tol``);
    conv1 by :class:`~napari_retina.first_layer.FirstLayer`, then the path
    integral at fixed ``steps`` (:func:`~._integrate.integrate_chunk`) or
    refined until ``tol`` (:func:`~._adaptive.integrate_adaptive`), and A = G·(W⊛s).
    ``progress`` is called once per chunk.
    """
    # a private copy without parameter gradients (cheap: the model is small)
    net = copy.deepcopy(model).eval().requires_grad_(False)
    cfg = net.config
    layer = FirstLayer(net, stim, invariance)
    scale, shift = net.first_layer_affine()
    rest = layer.rest()  # z of the baseline s = 0: the bias
    a0 = scale * rest[0] + shift  # bn1 output at the baseline (α = 0)
    maps, chan, rates = _empty(len(stim), idx, cfg.channels[0], cfg.map_sizes[0], invariance)
    per_frame = np.zeros(len(stim), dtype=np.int64)
    todo, inverse = unique_windows(stim, idx, cfg.history)
    with torch.no_grad():
        head = Head(net, cells)
        # F(0) by the path F(s_t) takes (chunk_rates at c = 0), so that a blank frame's response is exactly 0
        f0 = float(chunk_rates(head, a0, torch.zeros_like(a0)[None], 1).to(torch.float64)[0])
    scales = Scales(a0.device)
    maps_sum = torch.zeros((), device=a0.device)  # finite when every map value is (or an overflow: then look)
    report(progress, 0, len(todo))
    chunk = max(1, batch_size // (2 * ADAPTIVE_START_STEPS if steps is None else steps))
    with HostWriter(a0.device) as out:
        for start in range(0, len(todo), chunk):
            fidx = todo[start : start + chunk]
            with torch.no_grad():
                d = layer.linear(fidx)
                if steps is None:
                    G, r, used = integrate_adaptive(head, d, a0, scale, rule, tol, batch_size, f0, invariance, scales)
                else:
                    G, r = integrate_chunk(head, d, a0, scale, rule, steps, batch_size)
                    used = steps
                A = G * d
                red = reduce_maps(A, invariance)
                if red is not None:
                    out.put(maps, fidx, red)
                    maps_sum += red.sum()
                out.put(chan, fidx, A.sum(dim=(2, 3)))
                out.put(rates, fidx, r)
                per_frame[fidx] = used
            report(progress, start + len(fidx), len(todo))
    if len(todo) < len(idx):  # repeated windows: identical inputs, identical attributions
        for arr in (maps, chan, rates, per_frame):
            if arr is not None:
                fill_repeats(arr, idx, todo, inverse)
    check_finite_output(rates, idx, "the model's rates", stim)
    check_finite_output(chan, idx, "the attributions", stim)
    if maps is not None and not torch.isfinite(maps_sum):  # no pass over the maps on the host otherwise
        check_finite_output(maps, idx, "the attribution maps", stim)
    return maps, chan, rates, f0, per_frame


def attribute(
    model: AnyModel,
    stimulus: ArrayLike,
    cell: Cells = 0,
    steps: Optional[int] = None,
    rule: Optional[Rule] = None,
    tol: Optional[float] = None,
    invariance: InvarianceArg = "auto",
    frames: Frames = None,
    device: DeviceLike = None,
    batch_size: Optional[int] = None,
    crop: Crop = None,
    progress: Optional[Progress] = None,
    normalize: Normalize = False,
    pixel_um: PixelUm = None,
    frame_ms: FrameMs = None,
) -> Attribution:
    """Integrated gradients of a cell's rate to the conv1 units, per frame.

    Parameters
    ----------
    model : RetinaCNN or WrappedModel
        E.g. ``nr.load_model()``; used in eval mode (bn1 as a fixed affine map).
        A user's module through ``nr.wrap`` is attributed to its first layer's
        units as Captum's LayerIntegratedGradients does (rule
        "gausslegendre" by default, refined until ``tol`` or at fixed
        ``steps``; ``invariance`` "auto" means "none" for it; see :mod:`._wrapped`).
    stimulus : array (T, H, W)
        Contrast units (float) or raw intensities (integers); 1 frame = 10 ms (another
        interval: ``frame_ms``).
        As in :func:`napari_retina.predict`: float values must fit in float32,
        and a float stack far from contrast units warns
        (:class:`napari_retina.StimulusUnitsWarning`).
    cell : int, list of int or "all"
        The attributed output is the sum of these cells' rates.
    steps : int, optional
        A fixed number of quadrature points along the path, at most
        :data:`MAX_STEPS` (10,000); with ``rule`` one of Captum's, the result
        equals Captum's point for point. Default: none, the quadrature is
        refined per frame until it meets ``tol``.
    rule : str, optional
        ``"kink_midpoint"`` (default), ``"kink1_midpoint"`` or one of Captum's
        ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
        ``"riemann_trapezoid"``, ``"gausslegendre"`` (same α points and weights
        as Captum, so results match ``LayerIntegratedGradients`` on conv1 point
        for point; Captum's trapezoid weights sum to 1 − 1/steps, a bias of
        1/steps); see :mod:`napari_retina.attribution._quadrature`. With
        ``tol`` (no ``steps``) the rule is refined at 4, 8, 16, … points.
    tol : float, optional
        The accuracy asked for, without ``steps`` (default
        :data:`DEFAULT_TOL` = 1e-3): each frame's quadrature is doubled from
        4 points (8 at the least are kept) until its completeness gap is at most ``tol`` times the
        largest response (so ``completeness_error <= tol``, except for float32 rounding
        when the whole response is below ~4.8e-7/``tol`` spikes/bin: white noise of
        contrast 1e-3 on the shipped model, whose maps are still right, reads 1.45e-3
        at ``tol`` 1e-3, contrast 1e-4 ~3e-3) and the change of
        its maps between the last two refinements, halved (an estimate of
        their error), is at most ``tol`` times the largest frame's maps
        (:mod:`napari_retina.attribution._adaptive`); the points each frame
        needed are ``steps_per_frame``. The maps' error is estimated, not
        bounded: against an exact float64 reference it stayed within ``tol``
        on the shipped model, and reached 1.3–2.3 ``tol`` on random models
        with tripled conv1 weights, whose quadrature converges more slowly
        (METHOD.md §2). The
        largest response and maps are the running maxima over the chunks
        of frames so far, so another ``batch_size`` or ``frames`` can stop a
        frame at another level: results then differ by up to about ``tol``
        (with ``steps`` they do not). Giving both ``tol`` and ``steps`` is
        a ValueError.
    invariance : "auto", "none", "x", "y" or "space"
        "space" (every frame uniform over space) sums the maps over space
        (maps None); "y" (uniform along y) sums them over y, (T, C, 1, w);
        "x" over x, (T, C, h, 1); "none" keeps full maps (T, C, h, w). "auto"
        picks the most specific that holds on the frames the attributed
        windows use (:func:`napari_retina._invariance.resolve_invariance`:
        every value within ``1e-6·max(1, max|s|)`` of its mean along the axis;
        that mean is then used); requesting one the stimulus lacks is a ValueError.
    frames : None, slice or list of int
        Frames to attribute (default: every frame with a full history).
    device : str, optional
        Where to run; ``None`` keeps the model's device.
    batch_size : int, optional
        Path points (frames × α) per backward pass (default :func:`~._integrate.default_batch_points`: 256 on CPU,
        4096 on a CUDA GPU; for a wrapped module its ``config.batch_size``, fewer for a heavy module).
    crop : None, "center", (y0, x0) or "y0,x0"
        How to cut a ``size × size`` window out of a larger stack (integers
        only; see :func:`napari_retina._validate.parse_crop`); the window's
        corner is the result's ``crop_origin``.
    pixel_um : float or (y_um, x_um), optional
        The stack's pixel size on the retina (µm). Other than the model's 55 µm,
        the stack is resampled to the model's pixels first, each model pixel
        the area-weighted mean of the stack under it (a stack of 100 × 100
        pixels of 27.5 µm is analysed as 50 × 50), and ``crop`` counts model
        pixels (:func:`napari_retina._validate.as_stimulus`); the result's
        ``input_pixel_um`` keeps it. Default None: the stack's pixels are the model's.
    frame_ms : float, optional
        How long each frame of the stack was shown (ms), e.g. ``1000 / 60``
        for a 60 Hz monitor. Other than the model's 10 ms, time is resampled
        to the model's 10 ms bins first (each bin the mean of the frames shown
        during it: :func:`napari_retina.predict`), so every array over time,
        ``frames`` and the kept ``stimulus`` count model bins; the result's
        ``input_frame_ms`` keeps it. Default None: the stack's frames are the model's.
    progress : callable, optional
        ``progress(done, total)`` after each chunk of frames, counting distinct windows;
        raise :class:`napari_retina.Cancelled` in it to stop.
    normalize : False, True or "zscore"
        As in :func:`napari_retina.predict`: True or "zscore" z-scores the
        stack by its own mean and std first.

    Returns
    -------
    Attribution
        ``maps`` (T, C, h, w) (or reduced, see ``invariance``), ``channels`` (T, C),
        ``response``/``rates`` (T,), NaN on frames not attributed. Rates or
        attributions that come out NaN or infinite on an attributed frame
        raise a ValueError.

    Memory stays bounded whatever T: frames are processed in chunks of
    ``max(1, batch_size // steps)`` (``steps`` = 8 with ``tol``); besides the stimulus and the outputs
    (T·C·h·w·4 bytes for "none" maps), a chunk needs about
    ``chunk·(history·H·W + 6·C1·h1²)·4`` bytes and a backward pass about
    ``batch_size·(4·C1·h1² + 3·C2·h2²)·4`` bytes (≈ 60 MB at 256 for the
    40×50×50, 8-channel model). Windows that repeat (periodic flash trains,
    grey stretches) are attributed once.

    Example
    -------
    >>> attr = nr.attribute(nr.load_model(), nr.stimuli.white_noise(frames=100), cell=0)  # doctest: +SKIP
    >>> attr.maps.shape, attr.channels.shape                                              # doctest: +SKIP
    ((100, 8, 36, 36), (100, 8))
    """
    with callers_modes(model):  # eval mode here, the caller's modes kept
        if is_wrapped(model):  # a user's module (nr.wrap): Captum's layer IG, see ._wrapped
            return attribute_wrapped(model, stimulus, cell, steps=steps, rule=rule, frames=frames, device=device,
                                     batch_size=batch_size, crop=crop, progress=progress, normalize=normalize,
                                     tol=tol, invariance=invariance, pixel_um=pixel_um, frame_ms=frame_ms)
        pixel_um = check_pixel_um(pixel_um)   # read once: as_stimulus, the origin and the result take it
        frame_ms = check_frame_ms(frame_ms)
        model = model_on(model, device)
        cfg = model.config
        cells = check_cells(cell, cfg.n_cells)
        rule, steps, tol = check_quadrature(rule, steps, tol, DEFAULT_RULE)
        check_invariance(invariance)
        stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=normalize,
                           pixel_um=pixel_um, frame_ms=frame_ms, progress=progress)
        origin = analysed_origin(np.shape(stimulus)[1:], cfg.size, crop, pixel_um)
        idx = select_frames(len(stim), cfg.history, frames, bins_words(len(stimulus), frame_ms))
        bs = default_batch_points(model) if batch_size is None else check_int(batch_size, "batch_size", 1)
        inv = resolve_invariance(stim[idx[0] - cfg.history + 1 : idx[-1] + 1], invariance)
        maps, chan, rates, f0, per_frame = _integrate_frames(model, stim, idx, cells, rule, steps, tol, inv, bs,
                                                             progress)
        response = (rates.astype(np.float64) - f0).astype(np.float32)
        completeness = completeness_error(chan[idx], response[idx], rates[idx], f0)
        warn_if_unmet(completeness, tol, per_frame[idx])
        return Attribution(
            maps=maps, channels=chan, response=response, rates=rates, baseline_rate=f0,
            completeness_error=completeness,
            cells=cells, steps=int(per_frame[idx].max()), rule=rule, invariance=inv, frames=idx,
            offset=cfg.first_layer_offset, history=cfg.history, stimulus=kept_stimulus(stim, stimulus), model=model,
            crop_origin=origin, input_pixel_um=pixel_um, input_frame_ms=frame_ms,
            tol=tol, steps_per_frame=per_frame,
        )
