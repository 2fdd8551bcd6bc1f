"""Accuracy by tolerance: the quadrature refined per frame until it meets ``tol`` (METHOD.md §2).

A chunk of frames is integrated at :data:`ADAPTIVE_START_STEPS` (4) points, then
at twice as many, and so on (4, 8, 16, … up to :data:`ADAPTIVE_MAX_STEPS`). The
4-point level only provides the first error estimate; after each refinement, a
frame is accepted at its finest level (8 points at the least) when both

* its completeness gap ``|Σ A(t) − (F(s_t) − F(0))|`` is at most
  ``tol · max(R, floor)``, with ``R`` the largest response ``|F(s_t) − F(0)|``
  seen so far (this chunk's and earlier ones') and ``floor`` the completeness
  floor of :func:`~._result.completeness_error`, or at most
  :data:`ROUNDING_ULPS` float32 ulps of the rates' scale (rounding, which no
  refinement removes: a blank stimulus, or one too faint to move the rates by
  more than a few ulps, would otherwise climb to the cap); and
* its error estimate ``ESTIMATE_FACTOR · ‖A_2m(t) − A_m(t)‖`` is at most
  ``tol · M``, with ``M`` the largest ``‖A(t)‖`` seen so far. ``A`` is what the
  result reports: the maps, summed along the uniform axis for "x"/"y", the
  channel traces for "space"; ``‖·‖`` the Frobenius norm over one frame.

Frames not accepted are refined again; the others keep their result and their
number of points (``Attribution.steps_per_frame``). Because ``R`` and ``M``
only grow as chunks go by, each accepted frame meets the criterion against the
final maxima too, so ``completeness_error <= tol`` on the whole result (up to
float32 rounding of the sums: when the whole response is below ~``ROUNDING_ULPS
/ tol`` ulps, the rounding gap can read above ``tol``), and the maps' error estimate, relative to the
largest frame's maps, is below ``tol`` on every frame.

Why ``ESTIMATE_FACTOR = 0.5``: the kink rules' error falls by ~3.5× per
doubling (order ≈ 1.8, BENCHMARKS.md "Attribution"), so the error of the finer
level is ≈ 1/(3.5 − 1) = 0.4 of its change from the coarser one. Measured on
the shipped model (retrained 2026-11-30; 12 white-noise frames at contrast 1
and 12 at contrast 3, float64 2,000-step reference), the ratio per frame was
0.26–0.43 (contrast 1) and 0.29–0.38 (contrast 3) for 4 → 8 points, 0.26–0.48
for 8 → 16, 0.24–0.50 for 16 → 32 and 0.29–0.67 for 32 → 64 (one frame above
0.53), medians 0.31–0.40. Half the change is the estimate.

Why start at 4: the 4 → 8 change estimates the 8-point error as well as the
later pairs do theirs (above), and on the shipped model contrast-1 white noise
meets ``tol = 1e-3`` at 8 points (maps' error ≤ 5e-4 of the largest frame's,
completeness gap ≤ 8e-4), so those frames evaluate 4 + 8 points; a start at 8
made them pay 8 + 16, twice as many.

Frames that reach :data:`ADAPTIVE_MAX_STEPS` are accepted as they are (their
completeness error is in the result), and so are frames whose estimate is NaN
or infinite (refining cannot mend that; ``attribute`` then reports it).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np
import torch

from .._invariance import Invariance
from .._validate import is_real
from ._head import Head
from ._integrate import chunk_rates, path_integral
from ._quadrature import DEFAULT_STEPS, Rule, check_rule_steps
from ._result import COMPLETENESS_FLOOR_EPS, reported

#: the default tolerance of ``nr.attribute`` (the completeness metric and the maps' error estimate)
DEFAULT_TOL = 1e-3
#: the error of the finer of two levels, as a fraction of their difference (see the module docstring)
ESTIMATE_FACTOR = 0.5
#: the first level (points per frame): only its change to the next (twice as many) is used, as the first estimate
ADAPTIVE_START_STEPS = 4
#: the finest level the adaptive rule goes to (points per frame)
ADAPTIVE_MAX_STEPS = 1024
#: a completeness gap of at most this many float32 ulps of the rates' scale is rounding: accepted at any tol
ROUNDING_ULPS = 4.0
#: the smallest tolerance accepted: float32 sums of ~10⁴ terms are not resolved much better
MIN_TOL = 1e-6


class AccuracyWarning(UserWarning):
    """An attribution refined up to :data:`ADAPTIVE_MAX_STEPS` points that still misses its ``tol``."""


def warn_if_unmet(completeness: float, tol: Optional[float], steps_per_frame: np.ndarray,
                  stacklevel: int = 3) -> None:
    """Warn (:class:`AccuracyWarning`) when frames reached the cap and the completeness error is above ``tol``.

    ``completeness``: the result's completeness error; ``tol``: None for a
    fixed quadrature (nothing was asked, nothing is warned); ``steps_per_frame``
    the points of the attributed frames; ``stacklevel`` as warnings.warn's,
    counted from this function. A completeness error near 1 means the
    attributions sum to almost nothing while the response does not: the rates'
    gradient along the path is zero or does not follow the rates (a rounding,
    step or argmax after the first layer).
    """
    capped = int((steps_per_frame >= ADAPTIVE_MAX_STEPS).sum())
    if tol is None or not capped or not completeness > tol:
        return
    why = ("; the attributions miss most of the response: the rates' gradient along the path is zero or does not "
           "follow them (a rounding, step or argmax after the first layer?)") if completeness > 0.5 else ""
    warnings.warn(
        f"the attribution misses tol {tol:g}: {capped} of {len(steps_per_frame)} frames reached the "
        f"{ADAPTIVE_MAX_STEPS}-point cap and the completeness error is {completeness:.3g}{why}",
        AccuracyWarning, stacklevel=stacklevel,
    )


def check_tol(tol) -> float:
    """``tol`` checked: a number in [MIN_TOL, 1), or a one-sentence TypeError/ValueError."""
    if not is_real(tol):
        raise TypeError(f"tol must be a number, got {type(tol).__name__} {tol!r}")
    if not (np.isfinite(tol) and MIN_TOL <= tol < 1):
        raise ValueError(f"tol must be a number in [{MIN_TOL:g}, 1) (a relative error), got {tol}")
    return float(tol)


def check_quadrature(rule, steps, tol, default_rule: Rule) -> tuple[Rule, Optional[int], Optional[float]]:
    """(rule, steps, tol) checked: fixed ``steps`` (tol None) or refined to ``tol`` (steps None; ``tol`` None:
    :data:`DEFAULT_TOL`), not both; ``rule`` None is ``default_rule``. One sentence for each mistake."""
    if steps is not None and tol is not None:
        raise ValueError(f"give steps (a fixed quadrature) or tol (refined until it meets tol), not both; "
                         f"got steps={steps!r} and tol={tol!r}")
    rule = default_rule if rule is None else rule
    if steps is not None:
        return (*check_rule_steps(rule, steps), None)
    rule, _ = check_rule_steps(rule, DEFAULT_STEPS)
    return rule, None, check_tol(DEFAULT_TOL if tol is None else tol)


class Scales:
    """The running maxima the criterion is relative to, over the chunks so far (float64 0-d tensors).

    ``response``: max |F(s_t) − F(0)|; ``level``: max(|F(0)|, |F(s_t)|, 1), for
    the completeness floor; ``maps``: max over frames of ‖A(t)‖ (Frobenius).
    They stay on the device (NaN ignored), so updating them needs no host
    synchronisation.
    """

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.response, self.level, self.maps = zero, zero + 1.0, zero

    def floor(self) -> torch.Tensor:
        """The completeness floor of :func:`~._result.completeness_error` at the current level."""
        return COMPLETENESS_FLOOR_EPS * float(np.finfo(np.float32).eps) * self.level

    def rounding(self) -> torch.Tensor:
        """A completeness gap this small is float32 rounding (:data:`ROUNDING_ULPS` ulps at the current level)."""
        return ROUNDING_ULPS * float(np.finfo(np.float32).eps) * self.level


def _frame_norms(x: torch.Tensor) -> torch.Tensor:
    """‖x(t)‖ per frame, float64 (n,), for x (n, …)."""
    return torch.linalg.vector_norm(x.flatten(1).double(), dim=1)


def refine(evaluate: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]], rates: torch.Tensor,
           f0: float, tol: float, scales: Scales) -> tuple[torch.Tensor, np.ndarray]:
    """The adaptive loop: levels of ``ADAPTIVE_START_STEPS·2^k`` points until every frame meets ``tol``.

    ``evaluate(rows, m)`` integrates the frames ``rows`` (int64 tensor) at
    ``m`` points and returns ``(kept, reported)``: what is returned for an
    accepted frame (e.g. G, (len(rows), …)) and the attribution the criterion
    reads (module docstring; its frame sums are the completeness sums).
    ``rates`` (n,) are F(s_t) of the chunk's frames, ``f0`` = F(0);
    ``scales`` is updated with this chunk's maxima. Returns ``kept`` of every
    frame at its accepted level, stacked (n, …), and the points each frame
    needed, int64 (n,). One host synchronisation per level: the frames still
    to do stay on the device, and ``evaluate`` should not wait for it either
    (:func:`~._integrate.path_integral` does not).
    """
    resp = rates.double() - f0
    scales.response = torch.fmax(scales.response, resp.abs().max())
    scales.level = torch.fmax(scales.level, torch.fmax(rates.abs().max().double(), resp.new_tensor(abs(f0))))
    tol_resp = torch.maximum(tol * torch.maximum(scales.response, scales.floor()), scales.rounding())
    n, device = len(rates), rates.device
    out, steps = None, np.zeros(n, dtype=np.int64)
    todo, rows = np.arange(n), torch.arange(n, device=device)  # the frames not yet accepted, on host and device
    m = ADAPTIVE_START_STEPS
    _, coarse = evaluate(rows, m)
    while len(todo):
        m *= 2
        kept, fine = evaluate(rows, m)
        estimate = ESTIMATE_FACTOR * _frame_norms(fine - coarse)
        scales.maps = torch.fmax(scales.maps, _frame_norms(fine).max())
        gap = (fine.flatten(1).double().sum(1) - resp[rows]).abs()
        ok = (estimate <= tol * scales.maps) & (gap <= tol_resp)
        # refining cannot mend a NaN or an overflow: stop there, the caller's finiteness check reports it
        ok |= ~(torch.isfinite(estimate) & torch.isfinite(gap))
        ok = ok.cpu().numpy() | (m >= ADAPTIVE_MAX_STEPS)  # the level's one wait for the device
        if out is None:
            out = kept.new_empty((n, *kept.shape[1:]))
        ok_dev = torch.from_numpy(ok).to(device)  # copied after the wait: nothing queued to wait for
        out[rows[ok_dev]] = kept[ok_dev]
        steps[todo[ok]] = m
        todo, rows, coarse = todo[~ok], rows[~ok_dev], fine[~ok_dev]
    return out, steps


def integrate_adaptive(head: Head, d: torch.Tensor, a0: torch.Tensor, scale: torch.Tensor, rule: Rule,
                       tol: float, batch_size: int, f0: float, invariance: Invariance,
                       scales: Scales) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """G = ∫ ∂F/∂z dα per frame (n, C, h, w), F(s_t) (n,) and the points each frame needed, int64 (n,).

    ``d`` (n, C, h, w) = W⊛s per frame; ``a0``, ``scale`` as in
    :func:`~._integrate.integrate_chunk`; ``f0`` = F(0). Levels of ``rule`` at
    ``ADAPTIVE_START_STEPS·2^k`` points (k >= 1) until every frame meets ``tol``
    (:func:`refine`, module docstring); ``scales`` is updated with this chunk's maxima.
    """
    c = scale * d
    rates = chunk_rates(head, a0, c, batch_size)

    def evaluate(rows: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = path_integral(head, c[rows], a0, rule, m, batch_size) * scale
        return g, reported(g * d[rows], invariance)

    G, steps = refine(evaluate, rates, f0, tol, scales)
    return G, rates, steps
