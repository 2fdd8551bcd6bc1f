"""``attribute``: integrated gradients of a cell's rate to conv1 units over a movie."""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .._device import DeviceLike
from .._frames import Frames, select_frames, unique_windows
from .._invariance import Invariance, InvarianceArg, check_invariance, resolve_invariance
from .._predict import default_batch_size, model_on
from .._progress import Progress, report
from .._validate import Crop, Normalize, as_stimulus, check_cells, check_finite_output, check_int, crop_origin
from ..first_layer import FirstLayer
from ..model import RetinaCNN
from ._head import Head
from ._integrate import integrate_chunk
from ._quadrature import DEFAULT_RULE, DEFAULT_STEPS, Rule, check_rule_steps, quadrature
from ._result import Attribution, completeness_error, map_shape
from ._wrapped import attribute_wrapped

Cells = Union[int, Sequence[int], str]
"""A cell index, a list of them, or "all"."""


def _empty(T: int, c1: int, h1: int, invariance: Invariance) -> tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """NaN-filled maps (None for "space"; summed along a uniform axis), channels (T, C1) and rates (T,)."""
    shape = map_shape(c1, h1, invariance)
    maps = None if shape is None else np.full((T,) + shape, np.nan, dtype=np.float32)
    return maps, np.full((T, c1), np.nan, dtype=np.float32), np.full(T, np.nan, dtype=np.float32)


def _reduce_maps(a: torch.Tensor, invariance: Invariance) -> Optional[torch.Tensor]:
    """A (n, C, h, w) summed along the uniform axis ("y": over y, "x": over x); None for "space"."""
    if invariance == "none":
        return a
    if invariance == "y":
        return a.sum(dim=2, keepdim=True)
    if invariance == "x":
        return a.sum(dim=3, keepdim=True)
    return None


def _integrate_frames(model: RetinaCNN, stim: np.ndarray, idx: np.ndarray, cells: list[int], rule: Rule,
                      steps: int, invariance: Invariance, batch_size: int, progress: Optional[Progress]):
    """(maps, channels, rates, F(0)) of the frames ``idx``; arrays over T, NaN elsewhere.

    Distinct windows only (repeated ones are copied), in chunks of
    ``max(1, batch_size // steps)`` frames; conv1 by
    :class:`~napari_retina.first_layer.FirstLayer`, then the path integral of
    :func:`~._integrate.integrate_chunk`, and A = G·(W⊛s).
    """
    # a private copy without parameter gradients (cheap: the model is small)
    net = copy.deepcopy(model).eval().requires_grad_(False)
    cfg = net.config
    layer = FirstLayer(net, stim, invariance)
    scale, shift = net.first_layer_affine()
    rest = layer.rest()  # z of the baseline s = 0: the bias
    a0 = scale * rest[0] + shift  # bn1 output at the baseline (α = 0)
    alphas, weights = quadrature(rule, steps)
    maps, chan, rates = _empty(len(stim), cfg.channels[0], cfg.map_sizes[0], invariance)
    todo, inverse = unique_windows(stim, idx, cfg.history)
    with torch.no_grad():
        head = Head(net, cells)
        f0 = float(net.from_first_layer(rest).to(torch.float64)[0, cells].sum())
    report(progress, 0, len(todo))
    chunk = max(1, batch_size // steps)
    for start in range(0, len(todo), chunk):
        fidx = todo[start : start + chunk]
        with torch.no_grad():
            d = layer.linear(fidx)
            G, r = integrate_chunk(head, d, a0, scale, alphas, weights, rule, batch_size)
            A = G * d
            red = _reduce_maps(A, invariance)
            if red is not None:
                maps[fidx] = red.float().cpu().numpy()
            chan[fidx] = A.sum(dim=(2, 3)).float().cpu().numpy()
            rates[fidx] = r.float().cpu().numpy()
        report(progress, start + len(fidx), len(todo))
    if len(todo) < len(idx):  # repeated windows: identical inputs, identical attributions
        for arr in (maps, chan, rates):
            if arr is not None:
                arr[idx] = arr[todo][inverse]
    return maps, chan, rates, f0


def attribute(
    model: RetinaCNN,
    stimulus,
    cell: Cells = 0,
    steps: Optional[int] = None,
    rule: Optional[Rule] = None,
    invariance: InvarianceArg = "auto",
    frames: Frames = None,
    device: DeviceLike = None,
    batch_size: Optional[int] = None,
    crop: Crop = None,
    progress: Optional[Progress] = None,
    normalize: Normalize = False,
) -> Attribution:
    """Integrated gradients of a cell's rate to the conv1 units, per frame.

    Parameters
    ----------
    model : RetinaCNN or WrappedModel
        E.g. ``nr.load_model()``; used in eval mode (bn1 as a fixed affine map).
        A user's module through ``nr.wrap`` is attributed to its first layer's
        units as Captum's LayerIntegratedGradients does (default rule
        "gausslegendre", 32 steps; see :mod:`._wrapped`).
    stimulus : array (T, H, W)
        Contrast units (float) or raw intensities (integers); 1 frame = 10 ms.
        As in :func:`napari_retina.predict`: float values must fit in float32,
        and a float stack far from contrast units warns
        (:class:`napari_retina.StimulusUnitsWarning`).
    cell : int, list of int or "all"
        The attributed output is the sum of these cells' rates.
    steps : int, optional
        Quadrature points along the path (default 8 with the default rule),
        at most :data:`MAX_STEPS` (10,000).
    rule : str, optional
        ``"kink_midpoint"`` (default), ``"kink1_midpoint"`` or one of Captum's
        ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
        ``"riemann_trapezoid"``, ``"gausslegendre"`` (same α points and weights
        as Captum, so results match ``LayerIntegratedGradients`` on conv1 point
        for point); see :mod:`napari_retina.attribution._quadrature`.
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
        Path points (frames × α) per backward pass (default 256 on CPU, 1024 on GPU).
    crop : None, "center", (y0, x0) or "y0,x0"
        How to cut a ``size × size`` window out of a larger stack (integers
        only; see :func:`napari_retina._validate.parse_crop`); the window's
        corner is the result's ``crop_origin``.
    progress : callable, optional
        ``progress(done, total)`` after each chunk, counting distinct windows;
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
    ``max(1, batch_size // steps)``; besides the stimulus and the outputs
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
    if getattr(model, "wrapped", False):  # a user's module (nr.wrap): Captum's layer IG, see ._wrapped
        check_invariance(invariance)
        return attribute_wrapped(model, stimulus, cell, steps, rule, frames, device, batch_size, crop, progress,
                                 normalize)
    model = model_on(model, device)
    cfg = model.config
    cells = check_cells(cell, cfg.n_cells)
    rule, steps = check_rule_steps(DEFAULT_RULE if rule is None else rule, DEFAULT_STEPS if steps is None else steps)
    check_invariance(invariance)
    stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=normalize)
    origin = crop_origin(np.shape(stimulus)[1:], cfg.size, crop)
    idx = select_frames(len(stim), cfg.history, frames)
    bs = default_batch_size(model.device) if batch_size is None else check_int(batch_size, "batch_size", 1)
    inv = resolve_invariance(stim[idx[0] - cfg.history + 1 : idx[-1] + 1], invariance)
    maps, chan, rates, f0 = _integrate_frames(model, stim, idx, cells, rule, steps, inv, bs, progress)
    check_finite_output(rates, idx, "the model's rates", stim)
    check_finite_output(chan, idx, "the attributions", stim)
    if maps is not None:
        check_finite_output(maps, idx, "the attribution maps", stim)
    response = (rates.astype(np.float64) - f0).astype(np.float32)
    return Attribution(
        maps=maps, channels=chan, response=response, rates=rates, baseline_rate=f0,
        completeness_error=completeness_error(chan[idx], response[idx], rates[idx], f0),
        cells=cells, steps=steps, rule=rule, invariance=inv, frames=idx, offset=cfg.first_layer_offset,
        history=cfg.history, stimulus=stim, model=model, crop_origin=origin,
    )
