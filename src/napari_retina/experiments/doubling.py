"""Frequency doubling (Maheswaranathan et al. 2023; Hochstein & Shapley): F2/F1 of a reversing grating.

A cell that sums rectified subunits responds to *both* reversals of a
contrast-reversing grating, even at the spatial phase where a linear cell's
response cancels: its response has a strong second harmonic F2 (twice the
reversal cycle frequency) relative to the first harmonic F1.

Stimulus: for each bar width and spatial phase, a square-wave grating (bars
``bar_width`` px, uniform along y) that flips sign every ``period`` frames for
``cycles`` full cycles; conditions concatenated, each preceded by ``gap`` grey frames.

Parameters (defaults)
---------------------
bar_width : one width or a list, px; None → (8, 4, 2) px, from wider than the
    ganglion cell's centre (σ 3 px) down to the bipolar subunits (σ 1 px), in a
    field of 16 px or more; in a smaller field the same widths scaled by size/16,
    so the widest still fits two bars (:func:`default_widths`). A width given
    explicitly that does not fit two bars into the field is refused.
period : 20 frames (a 2.5 Hz reversal cycle), at least 3 (F2 repeats every
    ``period`` frames: at 1 or 2 it is at or beyond the Nyquist frequency); cycles : 4,
    at least 3 (the first holds the onset transient; the noise floor needs two more).
contrast : 1.0. phases : None → 4 phases evenly over one bar width (the
    pattern repeats with a sign flip every bar width, so these cover it); a list
    applies to every width.
gap, window, max_frames : see :func:`napari_retina.experiments.base.resolve_params`.

Readout keys
------------
bar_widths_px, phases_px : lists, per condition. f1, f2 : lists, amplitudes of the
    response's first and second harmonics of the reversal cycle per condition
    (spikes per bin), measured over every full cycle after the first (which
    holds the onset transient). noise : list, per condition, the amplitude between
    the harmonics over the same cycles (:func:`harmonics`): ~0 for a response that
    repeats every cycle, the single trial's noise for a recorded one.
widths_px : the bar widths, widest first; null_f2_share : per width, F2 at the phase of least
    F1 over the largest F2 at that width (Hochstein & Shapley's null test: ~0 for a cell that pools before
    its nonlinearity, whose F1 and F2 vanish together at the null phase; ~1 for pooled rectified
    subunits, whose F2 does not depend on the phase); NaN where F1 or F2 is, or every F2 is 0.
f2_f1_per_width : per width, max over
    phases of F2 / max over phases of F1 (the nonlinearity index), F1 floored first
    at ``F1_FLOOR_SHARE`` (a thousandth) of that F2, at the width's noise between
    the harmonics and at ``F1_FLOOR`` (1e-9), so the index is at most 1000: a
    cancelled F1 is float round-off (~1e-17), whose ratios of 1e16 used to decide
    the criterion; NaN where F1 or F2 is. f2_per_width :
    max F2 per width; noise_per_width : root mean square of noise per width.
f2_f1 : the index at the narrowest bars.
present : the literature criterion (Hochstein & Shapley 1976: in a cell that pools
    rectified subunits F1 falls as the bars get narrower than the receptive-field
    centre while F2 persists down to the subunits' size, so F2/F1 rises; a cell
    with one output nonlinearity keeps F2/F1 constant, a linear cell has no F2):
    at ``MIN_WIDTHS`` (2) or more widths, every F2/F1 finite (a non-finite one
    never counts as a rise), F2/F1 never falls (by more than 10%)
    as the bars narrow, rises at least ``MIN_RISE`` (2×) from the widest to the
    narrowest, exceeds 1 at the narrowest, where F2 is at least ``MIN_F2``
    (0.1 spikes/bin) and ``MIN_F2_SNR`` (4) times the noise between the harmonics
    (docs/EXPERIMENTS.md), and where F2 at the phase of least F1 (the null phase) is at least
    ``NULL_F2_SHARE`` (0.5) of the largest F2 (a Y cell has no null position). Without the noise clause
    Poisson noise passed in 8 of 120 trials; with it, none. Before the F1 floor (2026-12-07) a cell with one
    full-wave rectifier after pooling (F1 at round-off at every width) passed in
    4 of 60 variants, as round-off fell. Before the null clause (2026-12-08) a cell with one centre (σ 1 px)
    feeding a rectified ON and a rectified OFF output passed (F2/F1 3.1 → 8.9) with F2 0 at the null phase at
    every width: 4 of 4,320 two-pathway cells of an audit's grid, all of that shape.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from .. import stimuli
from .._validate import is_real
from .base import Movie, Protocol, check_movie_length, finite_max, int_param, list_param, real_param, unmet

NAME = "doubling"
DESCRIPTION = "frequency doubling: F2/F1 of a contrast-reversing grating"
INVARIANCE = "y"
#: the default bar widths (px) in a field that fits two bars of the widest (METHOD.md §4)
BAR_WIDTHS = (8.0, 4.0, 2.0)
DEFAULTS = {"bar_width": None, "period": 20, "cycles": 4, "contrast": 1.0, "phases": None}

#: the unit of each readout key (:data:`~.base.READOUT_UNITS`; the Experiments dock shows it after the key)
UNITS = {"bar_widths_px": "px", "phases_px": "px", "f1": "spikes/bin", "f2": "spikes/bin", "noise": "spikes/bin",
         "widths_px": "px", "null_f2_share": "dimensionless", "f2_f1_per_width": "dimensionless",
         "f2_per_width": "spikes/bin",
         "noise_per_width": "spikes/bin", "f2_f1": "dimensionless", "present": "", "unmet": ""}
#: why a readout value is NaN, as the docs say (the module docstring)
NAN_REASONS = {"null_f2_share": "F1 or F2 is NaN, or F2 is 0 at every phase", "f2_f1_per_width": "F1 or F2 is NaN",
               "f2_f1": "F1 or F2 is NaN at the narrowest bars"}

#: criterion constants of ``present`` (see the module docstring)
MIN_WIDTHS = 2
MIN_RISE = 2.0
MIN_F2 = 0.1                   # spikes per 10 ms bin
MIN_F2_SNR = 4.0               # F2 over the noise between the harmonics (noise_per_width)
FALL_TOLERANCE = 0.9
#: F1 is floored before F2/F1 is taken, at this share of the width's F2 (and at the noise between the harmonics):
#: an F1 cancelled to float round-off (~1e-17) made ratios of 1e16 that round-off decided
F1_FLOOR_SHARE = 1e-3
F1_FLOOR = 1e-9                # spikes per 10 ms bin: where F2 and the noise are 0 too
#: at the narrowest bars, F2 at the phase of least F1 over the largest F2 (Hochstein & Shapley's null test); the
#: truths (versions 2-6, cells 0-3) read 0.83-1.0 at every width, a cell that pools before its rectifiers 0
NULL_F2_SHARE = 0.5


def default_widths(size: int) -> list:
    """Default bar widths (px) for a ``size``-pixel field: :data:`BAR_WIDTHS` when two bars of the widest fit
    (size >= 16), else those widths scaled by ``size / 16`` (the same 4× range, widest = size / 2)."""
    scale = min(1.0, size / (2.0 * BAR_WIDTHS[0]))
    return [float(w * scale) for w in BAR_WIDTHS]


def build(size: int, history: int, respond: Optional[Callable] = None, *,
          bar_width: Union[None, float, Sequence[float]], period: int, cycles: int, contrast: float,
          phases: Optional[Sequence[float]], gap: int, window: int, max_frames: int) -> Protocol:
    """The movie for a ``size``-px model of ``history`` frames: for each ``bar_width`` (px; default
    :func:`default_widths`) and spatial phase, a grating of ``contrast`` reversing every ``period`` frames for
    ``cycles`` cycles. ``respond`` is not needed (the movie does not depend on the cell); ``gap`` grey frames
    before each condition, ``window`` frames read after each event and ``max_frames`` the most frames attributed
    (:func:`~napari_retina.experiments.base.resolve_params`). Each value is checked here (one sentence when it is
    wrong).
    """
    if bar_width is None:
        widths = default_widths(size)
    else:
        widths = [real_param(v, "bar_width", positive=True) for v in list_param(bar_width, "bar_width")]
    for w in widths:
        if w > size / 2.0:
            raise ValueError(f"bar_width {w:g} px does not fit two bars into the model's {size}-pixel field")
    if is_real(period) and period < 3:
        raise ValueError(f"period must be at least 3 frames (F2 has a period of `period` frames and needs more "
                         f"than 2 samples per cycle to be measured, not aliased), got {period}")
    period = int_param(period, "period", 3)
    cycles = int_param(cycles, "cycles", 3)
    contrast = real_param(contrast, "contrast", positive=True)
    given = None if phases is None else list_param(phases, "phases")
    n = 2 * period * cycles
    n_gratings = len(widths) * (4 if given is None else len(given))
    check_movie_length(n_gratings * (gap + n + window), size,
                       f"{n_gratings} gratings of {cycles:,} cycles of {2 * period:,} frames")
    movie = Movie()
    for w in sorted(widths, reverse=True):
        for ph in ((np.arange(4) * w / 4.0).tolist() if given is None else given):
            seg, ev = stimuli.reversing_grating(bar_width=w, period=period, frames=n, phase=ph,
                                                contrast=contrast, pre=gap, size=size, axis="x", return_events=True)
            seg = np.concatenate([seg, np.zeros((window,) + seg.shape[1:], np.float32)])
            onset = movie.t0 + int(ev["onset"])
            movie.add(seg, {"bar_width": w, "phase": ph, "onset": onset, "period": period, "cycles": cycles},
                      (onset, onset + n))
    # the model-derived widths as numbers, so that the result's params say what ran (phases: per width)
    return movie.protocol(history, max_frames, INVARIANCE, {"bar_width": widths})


def harmonics(trace: np.ndarray, start: int, period: int, n_cycles: int) -> tuple[float, float, float]:
    """Amplitudes (F1, F2, noise) of ``trace`` over ``n_cycles`` cycles of ``2·period`` frames from ``start``.

    F1 and F2: the first and second harmonics of the reversal cycle (spikes per
    bin, the amplitude of a sinusoid). noise: the root mean square of the same
    amplitude at the frequencies between the harmonics (those of the segment's
    discrete Fourier transform that are not multiples of the cycle's), which a
    response that repeats every cycle does not have; NaN for one cycle, which
    has no such frequency. All NaN when the segment is short or not finite.
    """
    seg = np.asarray(trace, dtype=np.float64)[start:start + 2 * period * n_cycles]
    if len(seg) < 2 * period * n_cycles or not np.isfinite(seg).all():
        return float("nan"), float("nan"), float("nan")
    amp = 2.0 * np.abs(np.fft.rfft(seg - seg.mean())) / len(seg)
    k = np.arange(len(amp))
    between = amp[(k % n_cycles != 0) & (k > 0)]
    noise = float(np.sqrt(np.mean(between ** 2))) if between.size else float("nan")
    return float(amp[n_cycles]), float(amp[2 * n_cycles]), noise


def null_share(f1: Sequence[float], f2: Sequence[float]) -> float:
    """F2 at the phase of least F1 over the largest F2, of one bar width's phases (``f1``, ``f2``: amplitudes per
    phase, spikes per bin): Hochstein & Shapley's null test, ~0 for a cell with a null position (linear pooling
    before its nonlinearities), ~1 for pooled rectified subunits. NaN when any amplitude is NaN or every F2 is 0."""
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()) or b.max() <= 0.0:
        return float("nan")
    return float(b[np.argmin(a)] / b.max())


def readout(response: np.ndarray, conditions: list) -> dict:
    """Frequency-doubling readout of a (T,) response; see the module docstring for the keys."""
    f1, f2, noise = [], [], []
    for c in conditions:
        a, b, e = harmonics(response, c["onset"] + 2 * c["period"], c["period"], c["cycles"] - 1)
        f1.append(a)
        f2.append(b)
        noise.append(e)
    widths = [c.get("bar_width", float("nan")) for c in conditions]
    width_list = sorted(set(widths), reverse=True)
    ratios, peaks, floors, nulls = [], [], [], []
    for w in width_list:
        at = [k for k, v in enumerate(widths) if v == w]   # this width's phases
        w1, w2 = [f1[k] for k in at], [f2[k] for k in at]
        m1, m2 = finite_max(w1), finite_max(w2)
        nulls.append(null_share(w1, w2))
        floor = float(np.sqrt(np.mean([noise[k] ** 2 for k in at])))
        # F1 cannot be told from 0 below the noise between the harmonics, nor below a thousandth of F2 (float
        # round-off of a cancelled F1 is ~1e-17); NaN stays NaN
        ratios.append(float(m2 / np.nanmax([m1, F1_FLOOR_SHARE * m2, floor, F1_FLOOR]))
                      if np.isfinite(m1) and np.isfinite(m2) else float("nan"))
        peaks.append(m2)
        floors.append(floor)
    ratio = ratios[-1] if ratios else float("nan")
    narrow_f2 = peaks[-1] if peaks else float("nan")
    narrow_null = nulls[-1] if nulls else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):   # x/0: inf, 0/0: NaN, as the clauses read them
        rise = float(np.divide(ratio, ratios[0])) if ratios else float("nan")
        snr = float(np.divide(narrow_f2, floors[-1])) if floors else float("nan")
    clauses = {
        f"at least {MIN_WIDTHS} bar widths (here {len(width_list)})": len(width_list) >= MIN_WIDTHS,
        # a non-finite ratio never counts as a rise
        "F2/F1 finite at every width": all(np.isfinite(v) for v in ratios),
        f"F2/F1 never falls by more than {1 - FALL_TOLERANCE:.0%} as the bars narrow (here "
        f"{', '.join(f'{v:.3g}' for v in ratios)}, widest first)":
            all(b >= FALL_TOLERANCE * a for a, b in zip(ratios, ratios[1:])),
        f"F2/F1 rises at least {MIN_RISE:g}× from the widest to the narrowest bars (here {rise:.3g}×)":
            bool(ratios) and ratios[-1] >= MIN_RISE * ratios[0],
        f"F2/F1 > 1 at the narrowest bars (here {ratio:.3g})": ratio > 1.0,
        f"F2 ≥ {MIN_F2:g} spikes/bin at the narrowest bars (here {narrow_f2:.3g})": narrow_f2 >= MIN_F2,
        f"F2 ≥ {MIN_F2_SNR:g}× the noise between the harmonics there (here {snr:.3g}×)":
            bool(peaks) and narrow_f2 >= MIN_F2_SNR * floors[-1],
        f"F2 at the phase of least F1 there ≥ {NULL_F2_SHARE:g}× the largest F2 (no null position; here "
        f"{narrow_null:.3g}×)": narrow_null >= NULL_F2_SHARE,
    }
    failed = unmet(clauses)
    return {"bar_widths_px": widths, "phases_px": [c["phase"] for c in conditions], "f1": f1, "f2": f2,
            "noise": noise, "widths_px": width_list, "null_f2_share": nulls, "f2_f1_per_width": ratios,
            "f2_per_width": peaks,
            "noise_per_width": floors, "f2_f1": ratio, "present": not failed, "unmet": failed}

