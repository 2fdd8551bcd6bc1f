"""The result of ``attribute``: :class:`Attribution`, and its completeness check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .._invariance import Invariance
from ..model import RetinaCNN
from ._quadrature import Rule

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
    stimulus : float32 (T, H, W) contrast units actually used (the analysed window).
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
    rule: Rule
    invariance: Invariance
    frames: np.ndarray
    offset: int
    history: int
    stimulus: np.ndarray = field(repr=False)
    model: RetinaCNN = field(repr=False)


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
