"""Integrated gradients to the first-layer units of a wrapped module (``nr.wrap``), Captum's way.

For a window ``x`` (baseline: the all-zero, mean-luminance window), the first
layer's output ``z(x)`` and ``z0 = z(0)``, and the summed rate ``F`` of the
chosen cells, the attribution of unit ``u`` is

    A_u = (z(x) - z0)_u · Σ_k w_k ∂F/∂z_u |_{z = z0 + α_k (z(x) - z0)} ,

with the module run on ``x`` and its first layer's output replaced by the
path point: what Captum's ``LayerIntegratedGradients(forward, layer)`` does
(``attribute_to_layer_input=False``), at Captum's α points and weights
(:func:`~._quadrature.quadrature`). Two ways to get ``z(x) - z0``:

- fast path (``model.first_conv``: a Conv2d/Conv3d of the stimulus itself):
  the convolution of the window without bias, computed directly;
- generic path (any other layer): the layer's output on ``x`` and on the
  zero window, taken by a hook.

The path points of a chunk of frames go through the module in one batch.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

from .._device import DeviceLike
from .._frames import Frames, gather_windows, select_frames
from .._invariance import InvarianceArg, check_invariance, resolve_invariance
from .._progress import Progress, report
from .._validate import (Crop, Normalize, analysed_origin, as_stimulus, bins_words, check_cells, check_finite_output,
                         check_frame_ms, check_int, check_maps_fit, check_pixel_um, stimulus_tensor)
from .._wrap import WrappedModel, model_on, private_copy
from ._adaptive import Scales, check_quadrature, refine, warn_if_unmet
from ._integrate import default_batch_points
from ._quadrature import CAPTUM_RULES, DEFAULT_STEPS, Rule, quadrature_tensors
from ._result import Attribution, completeness_error, kept_stimulus, reduce_maps

#: a wrapped module's rule (Captum's default method; the kink rules need RetinaCNN's structure)
WRAPPED_RULE: Rule = "gausslegendre"


def _drive(model: WrappedModel, windows: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """z(x) - z0 for windows (n, history, H, W): by convolution on the fast path, by a hook otherwise."""
    conv = model.first_conv
    if conv is None:
        return model.layer_output(windows) - z0
    x = model.layout(windows)
    if isinstance(conv, torch.nn.Conv2d):
        return F.conv2d(x, conv.weight, None, padding=conv.padding)
    return F.conv3d(x, conv.weight, None, padding=conv.padding)


def _maps(A: torch.Tensor, first_conv) -> Optional[torch.Tensor]:
    """Per-unit maps (n, C, h, w): a Conv3d's output summed over its time axis; None for a generic layer."""
    if first_conv is None:
        return None
    return A if A.ndim == 4 else A.sum(dim=2)


def _offset(first_conv) -> int:
    """Stimulus pixel under map pixel 0: k//2 - padding (0 without a convolution)."""
    if first_conv is None:
        return 0
    return int(first_conv.kernel_size[-1] // 2 - first_conv.padding[-1])


def _rates(net: WrappedModel, windows: torch.Tensor, cells: list[int]) -> torch.Tensor:
    """F (n,): the summed rate of ``cells`` on windows (n, history, H, W)."""
    with torch.no_grad():
        return net(windows)[:, cells].sum(1)


def _integral(net: WrappedModel, windows: torch.Tensor, d: torch.Tensor, z0: torch.Tensor, cells: list[int],
              alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A = d · Σ_k w_k ∂F/∂z at z0 + α_k d, (n, *unit shape), for windows (n, …) and their drives d, one batch."""
    n, steps = len(windows), len(alphas)
    a = alphas.view(steps, 1, *([1] * (d.ndim - 1)))
    path = (z0 + a * d.unsqueeze(0)).reshape(steps * n, *d.shape[1:]).requires_grad_(True)
    x = windows.repeat(steps, *([1] * (windows.ndim - 1)))
    # a copy of the path: a layer after may change what it gets in place, and the leaf must stay as it is
    with torch.enable_grad(), net.replaced_layer(lambda out: path.clone()):
        out = net(x)[:, cells].sum()
        (grad,) = torch.autograd.grad(out, path)
    G = (grad.view(steps, n, *d.shape[1:]) * weights.view(steps, 1, *([1] * (d.ndim - 1)))).sum(0)
    return (G * d).detach()


def _integral_batched(net: WrappedModel, windows: torch.Tensor, d: torch.Tensor, z0: torch.Tensor,
                      cells: list[int], rule: Rule, steps: int, batch_size: int) -> torch.Tensor:
    """:func:`_integral` at ``steps`` points, in groups of ``max(1, batch_size // steps)`` windows."""
    alphas, weights = quadrature_tensors(rule, steps, torch.float32, d.device)
    group = max(1, batch_size // steps)
    return torch.cat([_integral(net, windows[i:i + group], d[i:i + group], z0, cells, alphas, weights)
                      for i in range(0, len(windows), group)])


def attribute_wrapped(model: WrappedModel, stimulus, cell=0, steps: Optional[int] = None, rule: Optional[Rule] = None,
                      frames: Frames = None, device: DeviceLike = None, batch_size: Optional[int] = None,
                      crop: Crop = None, progress: Optional[Progress] = None,
                      normalize: Normalize = False, tol: Optional[float] = None,
                      invariance: InvarianceArg = "auto", pixel_um=None, frame_ms=None) -> Attribution:
    """Integrated gradients of a wrapped module's summed cell rate to its first layer's units, per frame.

    What :func:`napari_retina.attribute` runs for a :class:`~napari_retina._wrap.WrappedModel`.
    ``rule``: one of Captum's (default ``"gausslegendre"``). With ``steps``, a
    fixed quadrature at Captum's points; without (the default), refined per
    frame until it meets ``tol`` (default :data:`~._adaptive.DEFAULT_TOL`;
    :func:`~._adaptive.refine`, the same levels and test as for a RetinaCNN,
    read on the units' attributions). Returns an :class:`Attribution`: ``channels`` (T, C)
    summed over the units of each channel (index 1 of the layer's output),
    ``maps`` (T, C, h, w) on the fast path (a Conv3d's summed over its time
    axis), None on the generic path; ``steps_per_frame`` the points each frame used.
    ``invariance``: "auto" is "none" here (full maps: no fast path for uniform
    stimuli); "y", "x" or "space", checked on the stimulus as for a RetinaCNN,
    sum the maps along y, along x or over space (maps None), as there. ``pixel_um``: the stack's pixel size,
    resampled to the module's 55 µm pixels as there; ``frame_ms``: its frame interval, resampled to 10 ms bins.
    """
    rule, steps, tol = check_quadrature(rule, steps, tol, WRAPPED_RULE)
    pixel_um = check_pixel_um(pixel_um)   # read once: as_stimulus, the origin and the result take it
    frame_ms = check_frame_ms(frame_ms)
    check_invariance(invariance)
    model = model_on(model, device)
    cfg = model.config
    cells = check_cells(cell, cfg.n_cells)
    fixed = DEFAULT_STEPS if steps is None else steps   # points a window at a time (adaptive: the first level)
    if rule not in CAPTUM_RULES:
        raise ValueError(
            f"rule {rule!r} needs RetinaCNN's structure; a wrapped module takes one of {list(CAPTUM_RULES)}"
        )
    stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=normalize,
                       pixel_um=pixel_um, frame_ms=frame_ms, progress=progress)
    origin = analysed_origin(np.shape(stimulus)[1:], cfg.size, crop, pixel_um)
    idx = select_frames(len(stim), cfg.history, frames, bins_words(len(stimulus), frame_ms))
    inv = "none" if invariance == "auto" else resolve_invariance(stim[idx[0] - cfg.history + 1 : idx[-1] + 1],
                                                                 invariance)
    bs = default_batch_points(model) if batch_size is None else check_int(batch_size, "batch_size", 1)
    net = private_copy(model).eval().requires_grad_(False)
    dev = net.device
    zero = torch.zeros(1, cfg.history, cfg.size, cfg.size, device=dev)
    with torch.no_grad():
        z0 = net.layer_output(zero)
        f0 = float(net(zero)[0, cells].sum())
    source = stimulus_tensor(stim)
    T, unit_shape = len(stim), tuple(z0.shape[1:])
    chan = np.full((T, unit_shape[0]), np.nan, dtype=np.float32)
    rates = np.full(T, np.nan, dtype=np.float32)
    per_frame = np.zeros(T, dtype=np.int64)
    maps = None
    if net.first_conv is not None and inv != "space":
        shape = reduce_maps(torch.zeros(1, unit_shape[0], *unit_shape[-2:]), inv).shape[1:]
        check_maps_fit(T, shape)
        maps = np.full((T, *shape), np.nan, dtype=np.float32)
    scales = Scales(dev)
    chunk = max(1, bs // fixed)
    report(progress, 0, len(idx))
    for start in range(0, len(idx), chunk):
        fidx = idx[start:start + chunk]
        windows = gather_windows(source, fidx, cfg.history).to(dev)
        with torch.no_grad():
            d = _drive(net, windows, z0)
        r = _rates(net, windows, cells)
        if tol is None:
            A = _integral_batched(net, windows, d, z0, cells, rule, fixed, bs)
            per_frame[fidx] = fixed
        else:
            def evaluate(rows: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
                a = _integral_batched(net, windows[rows], d[rows], z0, cells, rule, m, bs)
                return a, a

            A, per_frame[fidx] = refine(evaluate, r, f0, tol, scales)
        chan[fidx] = A.reshape(len(A), A.shape[1], -1).sum(2).float().cpu().numpy()  # units (C,) or (C, ...)
        rates[fidx] = r.float().cpu().numpy()
        if maps is not None:
            maps[fidx] = reduce_maps(_maps(A, net.first_conv), inv).float().cpu().numpy()
        report(progress, start + len(fidx), len(idx))
    check_finite_output(rates, idx, "the wrapped module's rates", stim)
    check_finite_output(chan, idx, "the attributions", stim)
    response = (rates.astype(np.float64) - f0).astype(np.float32)
    completeness = completeness_error(chan[idx], response[idx], rates[idx], f0)
    warn_if_unmet(completeness, tol, per_frame[idx], stacklevel=4)  # under attribute
    return Attribution(
        maps=maps, channels=chan, response=response, rates=rates, baseline_rate=f0,
        completeness_error=completeness,
        cells=cells, steps=int(per_frame[idx].max()) if len(idx) else fixed, rule=rule, invariance=inv,
        frames=idx, offset=_offset(net.first_conv), history=cfg.history, stimulus=kept_stimulus(stim, stimulus),
        model=model, crop_origin=origin, input_pixel_um=pixel_um, input_frame_ms=frame_ms, tol=tol,
        steps_per_frame=per_frame,
    )
