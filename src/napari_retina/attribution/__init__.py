"""Integrated gradients to first-layer (conv1) units (METHOD.md §2).

For a stimulus frame ``t`` with window ``s_t`` (the last ``history`` frames),
``z = W⊛s + b`` the conv1 pre-activation and ``F`` the summed rate of the
chosen cells, the straight path ``α·s_t`` from the mean-luminance baseline
``s = 0`` gives

    A_cxy(t) = (W_c⊛s_t)_xy · ∫₀¹ ∂F/∂z_cxy |_{z = b + α·(W⊛s_t)} dα ,
    Σ_cxy A_cxy(t) = F(s_t) − F(0)                       (completeness).

This is what Captum's ``LayerIntegratedGradients`` on conv1 computes. Because
conv1 is affine, ``W⊛s_t`` is computed once per frame
(:class:`napari_retina.first_layer.FirstLayer`) and only the rest of the
network is evaluated along the path ``z(α) = b + α·(W⊛s_t)``.

Layout: :mod:`._quadrature` (the rules: α points, weights, the kink logic),
:mod:`._head` (the network above conv1, split for the integral),
:mod:`._integrate` (the integral over a chunk of frames), :mod:`._adaptive`
(refinement until a tolerance, the default), :mod:`._host_copy` (each chunk's
results into the host arrays, on a GPU while it goes on), :mod:`._result`
(:class:`Attribution`, :func:`completeness_error`), :mod:`._attribute`
(:func:`attribute`). Every public name is importable from here.

Example
-------
>>> attr = nr.attribute(nr.load_model(), nr.stimuli.flash_train(size=50), cell=0)   # doctest: +SKIP
>>> attr.invariance, attr.maps is None, attr.channels.shape[1]                     # doctest: +SKIP
('space', True, 8)
"""

from __future__ import annotations

from .._invariance import INVARIANCES, UNIFORM_RTOL, Invariance, InvarianceArg, resolve_invariance
from ._adaptive import ADAPTIVE_MAX_STEPS, AccuracyWarning, ADAPTIVE_START_STEPS, DEFAULT_TOL, ESTIMATE_FACTOR, MIN_TOL
from ._attribute import Cells, attribute
from ._quadrature import CAPTUM_RULES, DEFAULT_RULE, DEFAULT_STEPS, KINK_RULES, MAX_STEPS, RULES, Rule, quadrature
from ._result import COMPLETENESS_FLOOR_EPS, Attribution, completeness_error

__all__ = [
    "Attribution", "AccuracyWarning", "attribute", "completeness_error", "quadrature", "resolve_invariance",
    "RULES", "CAPTUM_RULES", "KINK_RULES", "DEFAULT_RULE", "DEFAULT_STEPS", "MAX_STEPS", "COMPLETENESS_FLOOR_EPS",
    "DEFAULT_TOL", "ESTIMATE_FACTOR", "ADAPTIVE_START_STEPS", "ADAPTIVE_MAX_STEPS", "MIN_TOL",
    "INVARIANCES", "UNIFORM_RTOL", "Rule", "Invariance", "InvarianceArg", "Cells",
]
