"""Quadrature over the straight path α ∈ [0, 1] for integrated gradients.

Captum's rules, reproduced exactly (same α points, same weights):
``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
``"riemann_trapezoid"`` (all need ``steps >= 2`` as in Captum, except that
left/right/middle also accept 1) and ``"gausslegendre"``. Captum's trapezoid
spaces ``steps`` points 1/steps apart over [0, 1] (whose spacing is
1/(steps − 1)), so its weights sum to 1 − 1/steps: it carries a bias of
1/steps of the whole integral, which is not quadrature error and is kept for
equality with Captum (against an exact reference: 0.125 at 8 points).

The kink rules. With bn1 in eval mode the first-layer unit ``j`` is
``u_j(α) = scale_j·(b_j + α·d_j) + shift_j``, affine in α, so its ReLU
switches at most once, at ``α*_j = −(scale_j b_j + shift_j)/(scale_j d_j)``,
and is active on a known sub-interval of [0, 1] (:func:`active_interval`).
With ``q(α) = ∂F/∂y1`` (the gradient with respect to the rectified first-layer
activation), ``∂F/∂z_j = 1[u_j(α) > 0]·scale_j·q_j(α)`` and
``A_j = d_j·scale_j·∫_{active_j} q_j(α) dα``.

``"kink1_midpoint"`` samples ``q`` at the midpoints of ``steps`` cells of width
``1/steps`` and weights each sample by the length of the cell's overlap with
unit ``j``'s active interval (:func:`cell_overlap`), so the first-layer
switches are integrated exactly; the second-layer ReLU mask is taken at the
midpoint.

``"kink_midpoint"`` (the default) also places each second-layer unit's switch
inside the cell from the tangent of its pre-activation at the midpoint (u2 is
piecewise linear in α; :func:`switch_fraction`), at the cost of one more conv2
pass per point. What remains is the smooth output softplus and the small jumps
of ``q`` where second-layer units switch. Every rule converges to the same
integral; their measured accuracy is in BENCHMARKS.md ("Attribution").
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from .._validate import check_int

Rule = Literal["kink_midpoint", "kink1_midpoint", "riemann_left", "riemann_right", "riemann_middle",
               "riemann_trapezoid", "gausslegendre"]
"""A quadrature rule's name."""
RULES: tuple[str, ...] = get_args(Rule)
CAPTUM_RULES = RULES[2:]
KINK_RULES = RULES[:2]
DEFAULT_RULE: Rule = "kink_midpoint"
DEFAULT_STEPS = 8
#: the most quadrature steps ``attribute`` accepts (the GUI's cap too)
MAX_STEPS = 10_000


def quadrature(rule: Rule, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """α points and weights of a rule, float64 arrays of length ``steps``.

    For Captum's rules these are exactly Captum's (``captum.attr._utils.
    approximation_methods``): Riemann α from a float32 ``torch.linspace``,
    weights ``1/steps`` (halved at both ends for the trapezoid); Gauss–Legendre
    nodes and weights from ``numpy.polynomial.legendre.leggauss`` mapped to
    [0, 1]. The kink rules return the cell midpoints and widths (their
    per-unit weights are :func:`cell_overlap` and :func:`switch_fraction`).

    >>> quadrature("riemann_trapezoid", 3)[1].tolist()
    [0.16666666666666666, 0.3333333333333333, 0.16666666666666666]
    """
    n = steps
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + x), 0.5 * w
    if rule in KINK_RULES:
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
    else:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in RULES)}, got {rule!r}")
    return np.asarray(a.tolist(), dtype=np.float64), w


def quadrature_tensors(rule: Rule, steps: int, dtype: torch.dtype,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quadrature`'s α points and weights as ``dtype`` tensors (steps,) on ``device``.

    The kink rules' are made on the device, in float64 as :func:`quadrature`
    computes them and then cast, so equal to its values: no host-to-device
    copy, which on a GPU would wait for every kernel queued before it (the
    adaptive loop asks for points at every level). Captum's rules are copied
    from :func:`quadrature`.
    """
    if rule in KINK_RULES:
        mid = (torch.arange(steps, dtype=torch.float64, device=device) + 0.5) / steps
        return mid.to(dtype), torch.full((steps,), 1.0 / steps, dtype=dtype, device=device)
    alphas, weights = quadrature(rule, steps)
    return torch.as_tensor(alphas, dtype=dtype, device=device), torch.as_tensor(weights, dtype=dtype, device=device)


def check_rule_steps(rule, steps) -> tuple[Rule, int]:
    """``(rule, steps)`` checked: a name of :data:`RULES` and an int in [1, MAX_STEPS] (>= 2 for the trapezoid)."""
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(repr(r) for r in RULES)}, got {rule!r}")
    steps = check_int(steps, "steps", 1, MAX_STEPS + 1)
    if rule == "riemann_trapezoid" and steps < 2:
        raise ValueError(f"rule 'riemann_trapezoid' needs steps >= 2 (it samples both ends), got {steps}")
    return rule, steps


def active_interval(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] ⊂ [0, 1] where a + α·c > 0 (lo >= hi: never active), per unit (broadcast shapes)."""
    safe = torch.where(c == 0, torch.ones_like(c), c)
    kink = -a / safe
    pos, neg = c > 0, c < 0
    flat_on = (c == 0) & (a > 0)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    lo = torch.where(pos, kink.clamp_min(0.0), torch.where(neg | flat_on, zero, one))
    hi = torch.where(neg, kink.clamp_max(1.0), torch.where(pos | flat_on, one, zero))
    return lo, hi


def cell_overlap(lo: torch.Tensor, hi: torch.Tensor, first: int, count: int, steps: int) -> torch.Tensor:
    """``w1 = |[lo, hi] ∩ [j/steps, (j+1)/steps]|`` for cells j = first .. first+count-1.

    ``lo``, ``hi`` (n, 1, C, h, w) from :func:`active_interval`; returns
    (n, count, C, h, w): the exact weight of each midpoint sample for the
    first-layer switches.
    """
    cell = torch.arange(first, first + count + 1, device=lo.device, dtype=lo.dtype) * (1.0 / steps)
    left, right = cell[:-1].view(1, count, 1, 1, 1), cell[1:].view(1, count, 1, 1, 1)
    return (torch.minimum(hi, right) - torch.maximum(lo, left)).clamp_min_(0.0)


def switch_fraction(u2: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``w2 = clamp(1/2 + u2 / slope, 0, 1)``: the fraction of a cell where a second-layer unit is active.

    ``u2`` is the unit's pre-activation at the cell midpoint and ``slope =
    |u2'|·(cell width)`` its change across the cell, so ``u2(α) = u2 + (α −
    mid)·u2'`` is positive on that fraction; 0 where both are 0 (NaN). Same shapes.
    """
    return torch.addcdiv(torch.full_like(u2, 0.5), u2, slope).clamp_(0.0, 1.0).nan_to_num_(0.0)
