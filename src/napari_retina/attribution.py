"""Integrated gradients to first-layer (conv1) units (METHOD.md §2).

For a stimulus frame ``t`` with window ``s_t`` (the last ``history`` frames),
``z = W⊛s + b`` the conv1 pre-activation and ``F`` the summed rate of the
chosen cells, the straight path ``α·s_t`` from the mean-luminance baseline
``s = 0`` gives

    A_cxy(t) = (W_c⊛s_t)_xy · ∫₀¹ ∂F/∂z_cxy |_{z = b + α·(W⊛s_t)} dα ,
    Σ_cxy A_cxy(t) = F(s_t) − F(0)                       (completeness).

This is exactly what Captum's ``LayerIntegratedGradients`` on conv1 computes.
Because conv1 is affine, ``W⊛s_t`` is computed once per frame and only the
rest of the network is evaluated along the path ``z(α) = b + α·(W⊛s_t)``.

Quadrature rules
----------------
Captum's rules, reproduced exactly (same α points, same weights):
``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
``"riemann_trapezoid"`` (all need ``steps >= 2`` as in Captum, except that
left/right/middle also accept 1) and ``"gausslegendre"``.

``"kink_midpoint"`` (this package's default): with bn1 in eval mode the
first-layer unit ``j`` is ``u_j(α) = scale_j·(b_j + α·d_j) + shift_j``, affine
in α, so its ReLU switches at most once, at ``α*_j = −(scale_j b_j +
shift_j)/(scale_j d_j)``, and is active on a known sub-interval of [0, 1].
With ``q(α) = ∂F/∂y1`` (the gradient with respect to the rectified
first-layer activation), ``∂F/∂z_j = 1[u_j(α) > 0]·scale_j·q_j(α)`` and
``A_j = d_j·scale_j·∫_{active_j} q_j(α) dα``. The rule samples ``q`` at the
midpoints of ``steps`` cells of width ``1/steps`` and weights each sample by
the length of the cell's overlap with unit ``j``'s active interval, so the
first-layer switches are integrated exactly; what remains is the smooth
output softplus and the small jumps of ``q`` where second-layer units switch.
It converges to the same integral as every other rule.

``"kink1_midpoint"`` treats only the first-layer switches exactly (the
second-layer ReLU mask is taken at the midpoint); kept for comparison.
``"kink_midpoint"`` also places each second-layer unit's switch inside the
cell from the tangent of its pre-activation at the midpoint (u2 is piecewise
linear in α), at the cost of one more conv2 pass per point.

Measured accuracy: relative Frobenius error of the maps against a float64
2,000-step ``kink_midpoint`` reference (which agrees with a float64 2,000-step
``riemann_middle`` run to 2e-4, the latter's own error, and with 4,000 steps
to 3e-7 on a small random model); shipped model, white noise, 3 frames,
cell 0 (benchmarks/bench_attribution.py re-measures it):

==================  =======  =======  =======  =======  =======  =======
steps                   4        8       16       32       50
==================  =======  =======  =======  =======  =======  =======
kink_midpoint       9.6e-03  5.2e-03  2.0e-03  7.3e-04  4.0e-04
kink1_midpoint      8.0e-02  4.1e-02  2.0e-02  1.0e-02  6.6e-03
gausslegendre       9.7e-02  5.1e-02  2.7e-02  1.3e-02  8.7e-03
riemann_middle      8.4e-02  4.5e-02  2.4e-02  1.2e-02  7.9e-03
==================  =======  =======  =======  =======  =======  =======

(on a small random BN-CNN: kink_midpoint 8 steps 4.2e-3, Gauss–Legendre 50
steps 1.0e-2). The default, 8 ``kink_midpoint`` steps, is the cheapest
setting measured that beats Captum's default (50 Gauss–Legendre steps) on
both models, with a margin; its cost per point is 1.5× a plain rule's.

Invariance
----------
``"space"``: every frame is uniform over space (full-field flashes); conv1's
output is then uniform per channel and is computed as the kernel's spatial
sum times the frame values; ``maps`` is None, ``channels`` holds A_c(t).
``"y"``: uniform along y (a vertical bar moving along x); conv1 reduces to a
1-D convolution along x and ``maps`` is (T, C, 1, w), summed over y.
``"x"``: uniform along x; ``maps`` is (T, C, h, 1), summed over x.
``"none"``: full maps (T, C, h, w). ``"auto"`` picks the most specific of
these that the stimulus satisfies: an axis counts as uniform when, over the
frames the attributed windows use, every value differs from its mean along
that axis by at most ``1e-6 · max(1, max|s|)`` (float32 rounding level); the
mean along the axis is then used, so the result is exact up to that
tolerance times the kernel's absolute sum.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

from ._device import DeviceLike
from ._frames import Frames, gather_windows, select_frames
from ._invariance import INVARIANCES, UNIFORM_RTOL, resolve_invariance  # noqa: F401 (re-exported)
from ._progress import Progress, report
from ._validate import Crop, Normalize, as_stimulus, check_cells, check_finite_output, check_int
from .model import RetinaCNN, conv1_fft
from .predict import default_batch_size, model_on

RULES = ("kink_midpoint", "kink1_midpoint", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
CAPTUM_RULES = RULES[2:]
DEFAULT_RULE = "kink_midpoint"
DEFAULT_STEPS = 8
#: the most quadrature steps ``attribute`` accepts (the GUI's cap too)
MAX_STEPS = 10_000
#: ``completeness_error``'s floor on its denominator, in float32 eps of the rate scale: a
#: response of fewer ulps than this carries more than ~1/256 of rounding of its own
COMPLETENESS_FLOOR_EPS = 256.0


@dataclass
class Attribution:
    """Integrated-gradient attributions of a response to conv1 units.

    Arrays over time have length T (stimulus frames), NaN on frames not
    attributed. Units: spikes per 10 ms bin (the model's rate units).

    Attributes
    ----------
    maps : float32 (T, C, h, w), (T, C, 1, w) for invariance "y" (summed over
        y), (T, C, h, 1) for "x" (summed over x), or None for "space".
        Map pixel (i, j) sits on stimulus pixel (i + offset, j + offset).
    channels : float32 (T, C), A_c(t) = sum of the maps over space.
    response : float32 (T,), F(s_t) − F(0).
    rates : float32 (T,), F(s_t), the summed rate of ``cells``.
    baseline_rate : F(0), the rate at mean luminance.
    completeness_error : ``max_t |Σ_c A_c(t) − response(t)| / max(max_t |response(t)|, floor)``
        over the attributed frames, with ``floor = 256·eps32·max(|F(0)|, max_t |F(s_t)|, 1)``
        (``eps32 = 2⁻²³``, so ≈ 3e-5 of the rate scale; :func:`completeness_error`):
        the response is a difference of float32 rates that each carry a few
        ulps of rounding, so below the floor it is mostly rounding, and the
        error is measured against the floor instead of blowing up (a
        near-zero stimulus gives a small finite value, not inf). For any
        response above the floor it is the plain relative error.
    cells : attributed cells (their rates are summed).
    steps, rule : quadrature used; invariance : "none" | "x" | "y" | "space".
    frames : int (n,), the attributed frames.
    offset : stimulus pixel under map pixel 0 (k1 // 2).
    history : frames per window.
    stimulus : float32 (T, H, W) contrast units actually used.
    model : the model used.
    """

    maps: Optional[np.ndarray]
    channels: np.ndarray
    response: np.ndarray
    rates: np.ndarray
    baseline_rate: float
    completeness_error: float
    cells: list
    steps: int
    rule: str
    invariance: str
    frames: np.ndarray
    offset: int
    history: int
    stimulus: np.ndarray = field(repr=False)
    model: RetinaCNN = field(repr=False)


# ---------------------------------------------------------------------------
# quadrature


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """α points and weights of a rule, float64 arrays of length ``steps``.

    For Captum's rules these are exactly Captum's (``captum.attr._utils.
    approximation_methods``): Riemann α from a float32 ``torch.linspace``,
    weights ``1/steps`` (halved at both ends for the trapezoid); Gauss–Legendre
    nodes and weights from ``numpy.polynomial.legendre.leggauss`` mapped to
    [0, 1]. ``"kink_midpoint"`` returns the cell midpoints and widths (its
    per-unit weights are computed in :func:`attribute`).
    """
    n = steps
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + x), 0.5 * w
    if rule in ("kink_midpoint", "kink1_midpoint"):
        return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    w = np.full(n, 1.0 / n)
    if rule == "riemann_trapezoid":
        w[0] /= 2
        w[-1] /= 2
        a = torch.linspace(0, 1, n)
    elif rule == "riemann_left":
        a = torch.linspace(0, 1 - 1 / n, n)
    elif rule == "riemann_middle":
        a = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    elif rule == "riemann_right":
        a = torch.linspace(1 / n, 1, n)
    else:  # pragma: no cover - checked by the caller
        raise ValueError(f"unknown rule {rule!r}")
    return np.asarray(a.tolist(), dtype=np.float64), w


def _check_rule_steps(rule, steps) -> tuple[str, int]:
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in RULES)}, got {rule!r}")
    steps = check_int(steps, "steps", 1, MAX_STEPS + 1)
    if rule == "riemann_trapezoid" and steps < 2:
        raise ValueError(f"rule 'riemann_trapezoid' needs steps >= 2 (it samples both ends), got {steps}")
    return rule, steps


# ---------------------------------------------------------------------------
# invariance: detected once for the package in ._invariance (resolve_invariance
# is re-exported here, where it has always been imported from)


def _conv1_linear(weight: torch.Tensor, source: torch.Tensor, idx: np.ndarray, history: int,
                  invariance: str, h: int) -> torch.Tensor:
    """d = W⊛s without bias, (n, C, h, h), for the windows ending at ``idx``, using the invariance.

    Returns a broadcast (expanded) view for the invariant cases.
    """
    n, c = len(idx), weight.shape[0]
    if invariance == "none":
        return conv1_fft(weight, source, idx)
    windows = gather_windows(source, idx, history).to(weight.device)
    if invariance == "space":
        s = windows.mean(dim=(2, 3))  # (n, hist)
        d = s @ weight.sum(dim=(2, 3)).T  # (n, C)
        return d[:, :, None, None].expand(n, c, h, h)
    if invariance == "y":  # uniform along y: a 1-D convolution along x
        s = windows.mean(dim=2)  # (n, hist, W)
        d = F.conv1d(s, weight.sum(dim=2))  # (n, C, w)
        return d[:, :, None, :].expand(n, c, h, h)
    s = windows.mean(dim=3)  # uniform along x: (n, hist, H)
    d = F.conv1d(s, weight.sum(dim=3))  # (n, C, h)
    return d[:, :, :, None].expand(n, c, h, h)


def _reduce_maps(a: torch.Tensor, invariance: str) -> Optional[torch.Tensor]:
    if invariance == "none":
        return a
    if invariance == "y":
        return a.sum(dim=2, keepdim=True)
    if invariance == "x":
        return a.sum(dim=3, keepdim=True)
    return None


# ---------------------------------------------------------------------------
# the integral


class _Head:
    """The network above conv1 as affine maps, split where the quadrature needs it (eval mode).

    ``u2 = bn2(conv2(y))`` is affine in y (eval batch norm):
    ``u2 = scale2·conv2₀(y) + u2_zero`` with ``conv2₀`` conv2 without bias, so its
    tangent and its vector-Jacobian product are conv2₀ and its transpose scaled
    by ``scale2``. The output head ``F = Σ_cells softplus(scale3·(L·a2 + b) +
    shift3)`` is differentiated by hand: ``∂F/∂a2 = Σ_cells σ(·)·scale3·L_cell``
    (no autograd). Both splits are checked against the model at construction.
    """

    def __init__(self, net: RetinaCNN, cells: list) -> None:
        self.net, self.cells = net, cells
        c1, h1 = net.config.channels[0], net.config.map_sizes[0]
        p = net.conv2.weight
        self.weight2 = p
        # the transposed conv2 runs ~2× faster on CPU in channels_last (measured)
        self.weight2_cl = p.contiguous(memory_format=torch.channels_last)
        zero = torch.zeros(1, c1, h1, h1, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            self.u2_zero = net.bn2(net.conv2(zero))
            self.scale2 = net.bn2(torch.ones_like(self.u2_zero)) - net.bn2(torch.zeros_like(self.u2_zero))
            n_out = net.linear.out_features
            eye = torch.zeros(2, n_out, dtype=p.dtype, device=p.device)
            eye[1] = 1.0
            ends = net.bn3(eye)  # bn3 at 0 and at 1: its affine map
            self.shift3 = ends[0, cells]
            self.scale3 = ends[1, cells] - ends[0, cells]
            self.lin_w = net.linear.weight[cells]  # (n_cells, C2·h2²)
            self.lin_b = net.linear.bias[cells]
            # ∂F/∂u2 through the mask is (∂F/∂a2)·w2; fold scale2 into the rows of L
            self.lin_w_scaled = self.lin_w * self.scale2.flatten()[None]
            check = self.rates(zero)[0]
            expected = net.from_activation(zero)[0, cells].sum()
            probe = torch.randn(2, *self.u2_zero.shape[1:], generator=torch.Generator().manual_seed(0))
            probe = probe.to(dtype=p.dtype, device=p.device)
        a2 = F.relu(probe).requires_grad_(True)
        with torch.enable_grad():
            (auto,) = torch.autograd.grad(self._out_module(a2).sum(), a2)
        with torch.no_grad():
            manual = self.grad_a2(probe)
        ok = torch.allclose(check, expected, rtol=1e-5, atol=1e-6)
        ok = ok and torch.allclose(manual, auto, rtol=1e-4, atol=1e-6 * float(auto.abs().max()) + 1e-12)
        if not ok:  # pragma: no cover - structural guard
            raise RuntimeError("RetinaCNN.from_activation no longer matches the attribution's split of the network")

    def u2(self, y: torch.Tensor) -> torch.Tensor:
        return self.net.bn2(self.net.conv2(y))

    def rates(self, y: torch.Tensor) -> torch.Tensor:
        return self._out_module(F.relu(self.u2(y)))

    def _out_module(self, a2: torch.Tensor) -> torch.Tensor:
        net = self.net
        return F.softplus(net.bn3(net.linear(a2.flatten(1))))[:, self.cells].sum(1)

    def grad_a2(self, u2: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        """∂F/∂a2 at a2 = relu(u2), (N, C2, h2, h2); times scale2 if ``scaled``."""
        a2 = F.relu(u2).flatten(1)
        pre = torch.addmm(self.lin_b, a2, self.lin_w.T) * self.scale3 + self.shift3
        g = torch.sigmoid(pre) * self.scale3  # softplus' = sigmoid (float32: equal to 1 past softplus's threshold 20)
        return (g @ (self.lin_w_scaled if scaled else self.lin_w)).view(u2.shape)

    def conv(self, y: torch.Tensor) -> torch.Tensor:
        """conv2 without bias."""
        return F.conv2d(y, self.weight2)

    def vjp(self, g: torch.Tensor) -> torch.Tensor:
        """conv2's transpose (in channels_last; the result is channels_last)."""
        return F.conv_transpose2d(g.contiguous(memory_format=torch.channels_last), self.weight2_cl)


def _unique_windows(stim: np.ndarray, idx: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames with distinct windows (``todo``) and ``inverse`` with idx ≡ todo[inverse].

    Exact: frames are compared byte for byte, windows by their sequence of
    frame identities (periodic flash trains repeat their windows).
    """
    ids: dict = {}
    frame_id = np.fromiter((ids.setdefault(f.tobytes(), len(ids)) for f in stim), dtype=np.int64, count=len(stim))
    if len(ids) == len(stim):  # no repeated frame, no repeated window
        return idx, np.arange(len(idx))
    keys = np.lib.stride_tricks.sliding_window_view(frame_id, history)[idx - history + 1]
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep time order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return idx[first[order]], rank[inverse.reshape(-1)]


def _interval01(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] ⊂ [0, 1] where a + α·c > 0 (lo >= hi: never active), per unit."""
    safe = torch.where(c == 0, torch.ones_like(c), c)
    kink = -a / safe
    pos, neg = c > 0, c < 0
    flat_on = (c == 0) & (a > 0)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    lo = torch.where(pos, kink.clamp_min(0.0), torch.where(neg | flat_on, zero, one))
    hi = torch.where(neg, kink.clamp_max(1.0), torch.where(pos | flat_on, one, zero))
    return lo, hi


def _integrate_chunk(head: _Head, d, a0, scale, alphas, weights, rule, batch_size):
    """G = ∫ ∂F/∂z dα for each frame of a chunk, (n, C, h, w), and F(s_t), (n,).

    ``d``: (n, C, h, w) = W⊛s per frame, so z(α) = b + α·d and bn1's output
    is u1(α) = a0 + α·c with a0 = scale·b + shift, c = scale·d.

    Points are processed as (frames, α) blocks of at most ``batch_size``
    points (whole frames when ``batch_size >= steps``), so the sum over α is a
    plain reduction. Per frame, the first-layer active interval is computed
    once; per point, the weights of the kink rules are

        w1 = |[lo, hi] ∩ [left, right]|                (exact first-layer switches)
        w2 = clamp(1/2 + u2(mid) / (|u2'|·h), 0, 1)     (fraction of the cell where
                                                        u2 = u2(mid) + (α − mid)·u2' > 0)
    """
    n = d.shape[0]
    dtype, dev = d.dtype, d.device
    c = scale * d
    m = len(alphas)
    al = torch.as_tensor(alphas, dtype=dtype, device=dev)
    wt = torch.as_tensor(weights, dtype=dtype, device=dev)
    kink = rule in ("kink_midpoint", "kink1_midpoint")
    h = 1.0 / m
    G = torch.zeros_like(c)
    # u2 at α = 1 (the rates), in the model's own modules
    u2_one = torch.cat([head.u2(F.relu(a0 + c[i : i + batch_size])) for i in range(0, n, batch_size)])
    rates = head._out_module(F.relu(u2_one))
    per_frames = max(1, batch_size // m)
    group = min(m, batch_size)
    for f0 in range(0, n, per_frames):
        cf = c[f0 : f0 + per_frames, None]  # (nf, 1, C, h, w)
        nf = cf.shape[0]
        if kink:
            lo1, hi1 = _interval01(a0, cf)
        for j0 in range(0, m, group):
            ga = min(group, m - j0)
            alpha = al[j0 : j0 + ga].view(1, ga, 1, 1, 1)
            u1 = torch.addcmul(a0, alpha, cf)  # (nf, ga, C, h, w)
            mask = u1 > 0
            y = (u1 * mask).flatten(0, 1)
            if kink:
                cell = torch.arange(j0, j0 + ga + 1, device=dev, dtype=dtype) * h
                left, right = cell[:-1].view(1, ga, 1, 1, 1), cell[1:].view(1, ga, 1, 1, 1)
                w1 = (torch.minimum(hi1, right) - torch.maximum(lo1, left)).clamp_min_(0.0)
            else:
                w1 = wt[j0 : j0 + ga].view(1, ga, 1, 1, 1) * mask
            u2 = torch.addcmul(head.u2_zero, head.conv(y), head.scale2)
            if rule == "kink_midpoint":
                # u2 is piecewise linear in α; its tangent at the midpoint places the
                # second-layer switches inside the cell
                slope = head.conv((cf * mask).flatten(0, 1)).mul_(head.scale2).abs_().mul_(h)
                w2 = torch.addcdiv(torch.full_like(u2, 0.5), u2, slope).clamp_(0.0, 1.0).nan_to_num_(0.0)
            else:
                w2 = u2 > 0
            q = head.vjp(head.grad_a2(u2, scaled=True).mul_(w2))
            G[f0 : f0 + nf] += (q.view(nf, ga, *q.shape[1:]) * w1).sum(1)
    return G * scale, rates


def completeness_error(channels: np.ndarray, response: np.ndarray, rates: np.ndarray,
                       baseline_rate: float) -> float:
    """``max_t |Σ_c A_c(t) − response(t)| / max(max_t |response(t)|, floor)``, in float64.

    ``channels`` (n, C) A_c(t), ``response`` (n,) F(s_t) − F(0) and ``rates``
    (n,) F(s_t) on the attributed frames; ``baseline_rate`` F(0). The floor,
    ``COMPLETENESS_FLOOR_EPS·eps32·max(|F(0)|, max_t |F(s_t)|, 1)`` spikes per
    bin (256 ulps of the rate scale, ≈ 3e-5 of it), is where a difference of
    float32 rates, each a few ulps off, stops resolving the response to
    better than ~1/256: when the response is below it (a near-zero stimulus)
    the gap is compared with the floor, so the error stays finite and small
    (a 1-ulp gap reads 0.004) instead of inf.

    Example
    -------
    >>> completeness_error(np.array([[0.5, 0.5]]), np.array([1.0]), np.array([2.0]), 1.0)
    0.0
    """
    resp = np.asarray(response, dtype=np.float64)
    if resp.size == 0:
        return 0.0
    gap = float(np.abs(np.asarray(channels, dtype=np.float64).sum(1) - resp).max())
    level = max(abs(float(baseline_rate)), float(np.abs(np.asarray(rates, dtype=np.float64)).max()), 1.0)
    floor = COMPLETENESS_FLOOR_EPS * float(np.finfo(np.float32).eps) * level
    return gap / max(float(np.abs(resp).max()), floor)


def attribute(
    model: RetinaCNN,
    stimulus,
    cell=0,
    steps: Optional[int] = None,
    rule: Optional[str] = None,
    invariance: str = "auto",
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
    model : RetinaCNN
        E.g. ``nr.load_model()``; used in eval mode (bn1 as a fixed affine map).
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
        ``"kink_midpoint"`` (default) or one of Captum's ``"riemann_left"``,
        ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``,
        ``"gausslegendre"`` (same α points and weights as Captum, so results
        match ``LayerIntegratedGradients`` on conv1 point for point).
    invariance : "auto", "none", "x", "y" or "space"
        See the module docstring: "space" sums the maps over space (maps None),
        "y" (uniform along y) sums over y, "x" over x. "auto" detects the
        invariance (tolerance ``1e-6·max(1, max|s|)``); requesting one the
        stimulus lacks is a ValueError.
    frames : None, slice or list of int
        Frames to attribute (default: every frame with a full history).
    device : str, optional
        Where to run; ``None`` keeps the model's device.
    batch_size : int, optional
        Path points (frames × α) per backward pass (default 256 on CPU, 2048 on GPU).
    crop : None, "center", (y0, x0) or "y0,x0"
        How to cut a ``size × size`` window out of a larger stack (integers
        only; see :func:`napari_retina._validate.parse_crop`).
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
    40×50×50, 8-channel model).

    Cost (invariance "none"): conv1 by FFT, each stimulus frame transformed
    once per chunk (~0.4 ms per frame on one CPU core at the default
    shape), then per path point conv2, its tangent (``kink_midpoint``) and
    its transpose; measured ~10 ms per frame with the defaults on one core.

    Example
    -------
    >>> attr = nr.attribute(nr.load_model(), nr.stimuli.white_noise(frames=100), cell=0)  # doctest: +SKIP
    >>> attr.maps.shape, attr.channels.shape                                              # doctest: +SKIP
    ((100, 8, 36, 36), (100, 8))
    """
    model = model_on(model, device)
    cfg = model.config
    cells = check_cells(cell, cfg.n_cells)
    rule = DEFAULT_RULE if rule is None else rule
    steps = DEFAULT_STEPS if steps is None else steps
    rule, steps = _check_rule_steps(rule, steps)
    if not isinstance(invariance, str) or invariance not in INVARIANCES:
        raise ValueError(
            f"invariance must be one of {', '.join(repr(i) for i in INVARIANCES)}, got {invariance!r}"
        )
    stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop, norm=cfg.norm, normalize=normalize)
    idx = select_frames(len(stim), cfg.history, frames)
    bs = default_batch_size(model.device) if batch_size is None else check_int(batch_size, "batch_size", 1)
    inv = resolve_invariance(stim[idx[0] - cfg.history + 1 : idx[-1] + 1], invariance)

    # a private copy without parameter gradients (cheap: the model is small)
    net = copy.deepcopy(model).eval().requires_grad_(False)
    dtype = net.conv1.weight.dtype
    weight, bias = net.conv1.weight, net.conv1.bias
    scale, shift = net.first_layer_affine()
    c1, h1 = cfg.channels[0], cfg.map_sizes[0]
    b = bias.view(c1, 1, 1).expand(c1, h1, h1)
    alphas, weights = quadrature(rule, steps)
    a0 = scale * b + shift  # bn1 output at the baseline (α = 0)

    T = len(stim)
    n = len(idx)
    maps_out = None
    if inv != "none" and inv != "space":
        shape = (c1, 1, h1) if inv == "y" else (c1, h1, 1)
        maps_out = np.full((T,) + shape, np.nan, dtype=np.float32)
    elif inv == "none":
        maps_out = np.full((T, c1, h1, h1), np.nan, dtype=np.float32)
    chan = np.full((T, c1), np.nan, dtype=np.float32)
    rates = np.full(T, np.nan, dtype=np.float32)
    source = torch.from_numpy(stim).to(dtype)
    chunk = max(1, bs // steps)
    todo, inverse = _unique_windows(stim, idx, cfg.history)
    n = len(todo)

    with torch.no_grad():
        head = _Head(net, cells)
        f0 = float(net.from_first_layer(b[None]).to(torch.float64)[0, cells].sum())
    report(progress, 0, n)
    done = 0
    for start in range(0, n, chunk):
        fidx = todo[start : start + chunk]
        with torch.no_grad():
            d = _conv1_linear(weight, source, fidx, cfg.history, inv, h1)
            G, r = _integrate_chunk(head, d, a0, scale, alphas, weights, rule, bs)
            A = G * d
            red = _reduce_maps(A, inv)
            if red is not None:
                maps_out[fidx] = red.float().cpu().numpy()
            chan[fidx] = A.sum(dim=(2, 3)).float().cpu().numpy()
            rates[fidx] = r.float().cpu().numpy()
        done += len(fidx)
        report(progress, done, n)
    if n < len(idx):  # repeated windows: identical inputs, identical attributions
        for arr in (maps_out, chan, rates):
            if arr is not None:
                arr[idx] = arr[todo][inverse]

    check_finite_output(rates, idx, "the model's rates", stim)
    check_finite_output(chan, idx, "the attributions", stim)
    if maps_out is not None:
        check_finite_output(maps_out, idx, "the attribution maps", stim)
    response = (rates.astype(np.float64) - f0).astype(np.float32)
    cerr = completeness_error(chan[idx], response[idx], rates[idx], f0)
    return Attribution(
        maps=maps_out,
        channels=chan,
        response=response,
        rates=rates,
        baseline_rate=f0,
        completeness_error=cerr,
        cells=cells,
        steps=steps,
        rule=rule,
        invariance=inv,
        frames=idx,
        offset=cfg.first_layer_offset,
        history=cfg.history,
        stimulus=stim,
        model=model,
    )
