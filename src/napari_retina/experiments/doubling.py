"""Frequency doubling (Maheswaranathan et al. 2023; Hochstein & Shapley): F2/F1 of a reversing grating.

A cell that sums rectified subunits responds to *both* reversals of a
contrast-reversing grating, even at the spatial phase where a linear cell's
response cancels: its response has a strong second harmonic F2 (twice the
reversal cycle frequency) relative to the first harmonic F1.

Stimulus: for each spatial phase, a square-wave grating (bars ``bar_width`` px,
uniform along y) that flips sign every ``period`` frames for ``cycles`` full
cycles; conditions concatenated, each preceded by ``gap`` grey frames.

Parameters (defaults)
---------------------
bar_width : 4 px; period : 20 frames (a 2.5 Hz reversal cycle); cycles : 4.
contrast : 1.0. phases : None → 4 phases evenly over one bar width (the
    pattern repeats with a sign flip every bar width, so these cover it).
gap, window, max_frames : see :func:`napari_retina.experiments.base.resolve_params`.

Readout keys
------------
phases_px : list. f1, f2 : lists, amplitudes of the response's first and second
    harmonics of the reversal cycle per phase (spikes per bin), measured over
    every full cycle after the first (which holds the onset transient).
f2_f1 : max over phases of F2 / max over phases of F1 (the nonlinearity index).
present : f2_f1 > 1 (the doubled response dominates).
"""

from __future__ import annotations

import numpy as np

from .. import stimuli
from .base import Movie, Protocol, int_param, list_param, real_param

NAME = "doubling"
DESCRIPTION = "frequency doubling: F2/F1 of a contrast-reversing grating"
INVARIANCE = "y"
DEFAULTS = {"bar_width": 4.0, "period": 20, "cycles": 4, "contrast": 1.0, "phases": None}


def build(size: int, history: int, respond=None, *, bar_width, period, cycles, contrast, phases, gap, window,
          max_frames) -> Protocol:
    bar_width = real_param(bar_width, "bar_width", positive=True)
    if bar_width > size / 2.0:
        raise ValueError(f"bar_width {bar_width:g} px does not fit two bars into the model's {size}-pixel field")
    period = int_param(period, "period", 1)
    cycles = int_param(cycles, "cycles", 2)
    contrast = real_param(contrast, "contrast", positive=True)
    phases = ((np.arange(4) * bar_width / 4.0).tolist() if phases is None else list_param(phases, "phases"))
    movie = Movie()
    n = 2 * period * cycles
    for ph in phases:
        seg, ev = stimuli.reversing_grating(bar_width=bar_width, period=period, frames=n, phase=ph,
                                            contrast=contrast, pre=gap, size=size, axis="x", return_events=True)
        seg = np.concatenate([seg, np.zeros((window,) + seg.shape[1:], np.float32)])
        onset = movie.t0 + int(ev["onset"])
        movie.add(seg, {"phase": ph, "onset": onset, "period": period, "cycles": cycles}, (onset, onset + n))
    return movie.protocol(history, max_frames, INVARIANCE)


def harmonics(trace: np.ndarray, start: int, period: int, n_cycles: int) -> tuple[float, float]:
    """Amplitudes (F1, F2) of ``trace`` over ``n_cycles`` cycles of ``2·period`` frames from ``start``."""
    seg = np.asarray(trace, dtype=np.float64)[start:start + 2 * period * n_cycles]
    if len(seg) < 2 * period * n_cycles or not np.isfinite(seg).all():
        return float("nan"), float("nan")
    seg = seg - seg.mean()
    t = np.arange(len(seg))
    out = []
    for k in (1, 2):
        w = 2 * np.pi * k / (2 * period)
        out.append(float(2 * abs((seg * np.exp(-1j * w * t)).sum()) / len(seg)))
    return out[0], out[1]


def readout(response: np.ndarray, conditions: list) -> dict:
    """Frequency-doubling readout of a (T,) response; see the module docstring for the keys."""
    f1, f2 = [], []
    for c in conditions:
        a, b = harmonics(response, c["onset"] + 2 * c["period"], c["period"], c["cycles"] - 1)
        f1.append(a)
        f2.append(b)
    m1 = np.nanmax(f1) if np.isfinite(f1).any() else float("nan")
    m2 = np.nanmax(f2) if np.isfinite(f2).any() else float("nan")
    ratio = float(m2 / m1) if m1 > 0 else (float("inf") if m2 > 0 else float("nan"))
    return {"phases_px": [c["phase"] for c in conditions], "f1": f1, "f2": f2, "f2_f1": ratio,
            "present": bool(np.isfinite(m2) and ratio > 1.0)}
