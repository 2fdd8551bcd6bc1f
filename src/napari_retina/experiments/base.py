"""Shared machinery of the in-silico experiments: results, parameters, running, readout helpers.

An experiment module (one per phenomenon) defines

- ``NAME``, ``DESCRIPTION``, ``INVARIANCE`` ("space" for full-field, "y" for bars
  uniform along y) and ``DEFAULTS`` (every parameter and its default; ``None``
  means "derived from the model's size/history", documented in the module);
- ``build(size, history, respond=None, **params) -> Protocol``: the stimulus (all
  conditions concatenated into one movie, separated by ``gap`` grey frames so
  that no model window spans two conditions), the per-condition event times,
  and the frames worth attributing;
- ``readout(response, conditions) -> dict``: plain numbers from a (T,) response
  trace and the conditions' event times, with a ``present`` flag. Readouts are
  pure NumPy functions of (trace, events), so the same function scores the
  model, its reduced circuit and the ground-truth retina.

Conventions: frames are indices into the movie (10 ms each); positions are
pixels from the field centre (55 µm each), as in :mod:`napari_retina.stimuli`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .._frames import grey_windows
from .._json import jsonable
from .._predict import predict
from .._progress import Progress, report, within
from .._types import AnyModel, ArrayLike
from .._units import FRAME_MS, PIXEL_UM, RATE_UNITS
from .._validate import (FLOAT32_MAX, NonFiniteOutputError, StimulusUnitsWarning, as_real_array, beyond_memory,
                         check_cells, check_finite_output, check_real, is_real, size_text)
from .._wrap import check_model_dtype, model_config
from ..attribution import Cells, attribute
from ..reduction import DEFAULT_EXPLAIN, check_explain, reduce


#: what a non-finite result of an experiment advises
PARAMETER_REMEDY = "use intensity or contrast parameters of a few contrast units"

#: parameters every experiment accepts besides its own, and their defaults (None: derived from the model's
#: history, :func:`resolve_params`)
COMMON_DEFAULTS = {"gap": None, "window": None, "max_frames": 300}
COMMON_PARAMS = tuple(COMMON_DEFAULTS)

#: the units a readout value can have (docs/EXPERIMENTS.md, "What NAME.json holds"): each experiment module's
#: ``UNITS`` gives one for every key its readout returns ("" where a value has none: yes/no, channel labels);
#: "spikes/bin" is spikes per 10 ms bin, "s.d." contrast units (s.d. of the training stimulus), "frames" 10 ms each
READOUT_UNITS = ("ms", "frames", "px", "µm", "px/frame", "spikes/bin", "s.d.", "ms/ms", "ms/px", "count",
                 "dimensionless", "")
#: the units of the readout keys every model run adds to the module's (:func:`run_model`)
COMMON_UNITS = {"present": "", "explained_variance": "dimensionless", "kept": ""}


def readout_units_of(module: ModuleType) -> dict:
    """The unit of every readout key of an experiment ``module``: its ``UNITS`` and those of the keys every
    model run adds (:data:`COMMON_UNITS`)."""
    return {**COMMON_UNITS, **getattr(module, "UNITS", {})}
#: why a readout value is NaN where its module's ``NAN_REASONS`` (the reasons its docs give) has no key
NAN_UNDEFINED = "not defined for this run"

#: the most frames an experiment's whole movie may have: 60,000 frames of 10 ms = 10 minutes of stimulus
#: (the default protocols take at most ~5,000 frames on a 50-pixel field); longer ones take many minutes
#: to predict and to show the ground truth, and come from a parameter off by orders of magnitude
MAX_MOVIE_FRAMES = 60_000
#: float32 copies of the whole movie that exist at once: its conditions' segments and the joined movie, then
#: (in a battery) the ground truth's rebuilt movie while the model's result holds its own
MOVIE_COPIES = 3
#: the least response window (frames): a peak needs a frame on either side
MIN_WINDOW = 2
#: spikes per 10 ms bin above the grey level: the least answer the OSR, latency, anticipation and reversal
#: criteria take as a response (a peak, a flash's answer, a burst). One floor for the four: it is set on the
#: synthetic truths' scale, about ten times a salamander cell's rates, where it rejects noise-level answers;
#: at a cell's rates it would reject every phenomenon but latency coding (docs/MODEL.md, "The rates' scale
#: against physiology"), so it is the one number a rescaled truth changes
AMPLITUDE_FLOOR = 0.5


@dataclass
class Protocol:
    """A built experiment: the movie, its conditions and the frames to attribute."""

    stimulus: np.ndarray          # float32 (T, H, W) contrast units
    conditions: list              # one JSON-able dict per condition (absolute frame indices)
    frames: np.ndarray            # int frames of interest (readout windows), sorted
    invariance: str               # "space" | "y" | "x" | "none"
    resolved: dict = field(default_factory=dict)   # parameters derived from the response (reversal's "rf" centre)


@dataclass
class ExperimentResult:
    """Everything an experiment produced.

    Attributes
    ----------
    name : str
        Experiment name (see ``nr.experiments.names()``).
    stimulus : float32 (T, H, W)
        The whole movie, conditions concatenated, contrast units.
    rates : float32 (T, n_cells)
        Rates of every cell (NaN on the first history-1 frames); for a ground-truth
        run the retina's true rates.
    attribution : Attribution or None
        Integrated gradients of the chosen cell(s) on the frames of interest
        (None for ground-truth runs).
    reduction : Reduction or None
        ``nr.reduce(attribution, explain)`` (None for ground-truth runs).
    conditions : list of dict
        One dict per condition with its parameters and absolute event frames.
    readout : dict
        The experiment's readout (plain numbers and lists, ``present``: bool);
        for model runs also ``reduced`` (the same readout on the reduced
        circuit's rate), ``explained_variance`` and ``kept`` (channel labels).
    params : dict
        Every parameter used, defaults resolved, and those the protocol derived
        from the response as numbers (reversal's ``center="rf"``: the mapped
        centre), so that ``run_truth(name, retina, history=..., **params)`` builds
        the same movie.
    cells : list of int
        The cells whose summed rate was analysed.
    units : dict
        The unit of every readout key (:func:`readout_units_of` its module; "" where a value has none).
    """

    name: str
    stimulus: np.ndarray = field(repr=False)
    rates: np.ndarray = field(repr=False)
    attribution: Any = field(repr=False)
    reduction: Any = field(repr=False)
    conditions: list = field(repr=False)
    readout: dict
    params: dict = field(default_factory=dict, repr=False)
    cells: list = field(default_factory=list)
    units: dict = field(default_factory=dict, repr=False)

    @property
    def response(self) -> np.ndarray:
        """(T,) summed rate of the analysed cells."""
        return np.asarray(self.rates, dtype=np.float64)[:, self.cells].sum(1)

    def to_dict(self) -> dict[str, Any]:
        """Everything the run produced as a nested dict for :func:`napari_retina.io.write_results`.

        ``name`` (str); NumPy arrays ``stimulus`` float32 (T, H, W), ``rates``
        float32 (T, n_cells) and ``cells`` int64 (k,); ``conditions``,
        ``readout``, ``readout_units`` (:attr:`units`) and ``params`` as JSON
        text (nested lists and dicts, which neither HDF5 attributes nor ``.npz``
        hold; NaN written as ``NaN``, read back by ``json.loads``); ``units``
        (the rates'), ``frame_ms`` and ``pixel_um`` (the frames' and pixels'
        size, which ``params``' frame and pixel counts are in); ``attribution`` (:meth:`Attribution.to_dict`)
        and ``reduction`` (:meth:`Reduction.to_dict`) as sub-dicts, left out
        for a ground-truth run, which has neither.

        >>> nr.io.write_results("osr.h5", nr.experiments.run("osr", model).to_dict())   # doctest: +SKIP
        """
        out: dict[str, Any] = {
            "name": self.name,
            "stimulus": np.asarray(self.stimulus),
            "rates": np.asarray(self.rates),
            "cells": np.asarray(self.cells, dtype=np.int64),
            "conditions": json.dumps(jsonable(self.conditions)),
            "readout": json.dumps(jsonable(self.readout)),
            "readout_units": json.dumps(jsonable(self.units)),
            "params": json.dumps(jsonable(self.params)),
            "units": RATE_UNITS,
            "frame_ms": FRAME_MS,
            "pixel_um": PIXEL_UM,
        }
        if self.attribution is not None:
            out["attribution"] = self.attribution.to_dict()
        if self.reduction is not None:
            out["reduction"] = self.reduction.to_dict()
        return out


# ----------------------------------------------------------------------------- parameters


def resolve_params(module: ModuleType, params: dict, size: int, history: int) -> dict:
    """Merge ``params`` into the module's defaults, refusing unknown names.

    Fills the common ``gap`` (grey frames between conditions; default
    ``history + 20``), ``window`` (response window after an event; default
    ``history``, at least :data:`MIN_WINDOW` frames) and ``max_frames`` (most
    frames attributed; default 300) and checks them against the model's history.
    """
    valid = list(module.DEFAULTS) + list(COMMON_PARAMS)
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for experiment {module.NAME!r}; valid parameters: {', '.join(valid)}"
        )
    p = dict(module.DEFAULTS)
    p.update(COMMON_DEFAULTS)
    p.update(params)
    if p["gap"] is None:
        p["gap"] = history + 20
    p["gap"] = int_param(p["gap"], "gap", 1)
    if p["gap"] < history:
        raise ValueError(
            f"gap of {p['gap']} grey frames is shorter than the model's history of {history} frames, so a model "
            f"window would span two conditions; use gap >= {history}"
        )
    if p["window"] is None:   # a 1-frame history is too short a window to find a peak in
        p["window"] = max(history, MIN_WINDOW)
    p["window"] = int_param(p["window"], "window", MIN_WINDOW)
    p["max_frames"] = int_param(p["max_frames"], "max_frames", 10)
    return p


def int_param(value: Any, name: str, low: int = 1) -> int:
    """An int >= ``low`` (floats with an integer value accepted), or a clear error."""
    if not is_real(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or float(value) != int(value):  # int() of inf or NaN raises its own error
        raise ValueError(f"{name} must be a whole number of frames, got {value}")
    if int(value) < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def real_param(value: Any, name: str, positive: bool = False) -> float:
    """A finite real within float32 (stimuli and readouts are float32; :func:`~napari_retina._validate.check_real`),
    > 0 when ``positive``, or a clear error."""
    number = check_real(value, name, float32=True)
    if positive and number <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return number


def list_param(values: Any, name: str) -> list:
    """A non-empty 1-D list of numbers, or a clear error."""
    if isinstance(values, (str, bytes)) or values is None:
        raise TypeError(f"{name} must be a list of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1) if np.ndim(values) <= 1 else None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a list of numbers, got {values!r}") from exc
    if arr is None:
        raise ValueError(f"{name} must be a flat list of numbers, got shape {np.shape(values)}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    if any(isinstance(v, (bool, np.bool_)) for v in np.asarray(values, dtype=object).reshape(-1)):
        raise TypeError(f"{name} must be a list of numbers, not true/false, got {values!r}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return arr.tolist()


def distinct(values: list, name: str) -> list:
    """``values`` when no value is listed twice, or a ValueError naming the repeated one."""
    seen: set = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name} must differ from one another, got {v:g} more than once in {values}")
        seen.add(v)
    return values


def frame_count(frames: float) -> str:
    """A number of frames as text: ``1,202,340`` (``inf`` or ``4.8e+301`` beyond what digits can say)."""
    frames = float(frames)
    return f"{frames:,.0f}" if frames < 1e15 else f"{frames:.3g}"


def check_movie_length(frames: float, size: int, what: str) -> None:
    """Refuse, before anything is allocated, an experiment's whole movie that is too long.

    ``frames``: the movie's length summed over all its conditions (a float, inf
    when a division overflowed); ``size``: its field in pixels; ``what``: what
    makes it that long (e.g. "7 flash trains"). A MemoryError when
    :data:`MOVIE_COPIES` float32 copies of (frames, size, size) exceed this
    machine's physical memory; else a ValueError beyond :data:`MAX_MOVIE_FRAMES`
    (10 minutes at 10 ms a frame). One sentence each, naming the length.
    """
    frames = float(frames)
    count = frame_count(frames)
    beyond = beyond_memory(frames * float(size) ** 2 * MOVIE_COPIES)
    if beyond is not None:
        need, have = beyond
        raise MemoryError(f"{what} come to {count} frames of {size}×{size} px, and the {MOVIE_COPIES} float32 copies "
                          f"of that movie an experiment keeps take {size_text(need, 'GiB')}, more than this machine's "
                          f"memory ({size_text(have, 'GiB')})")
    if not frames <= MAX_MOVIE_FRAMES:
        minutes = frames * FRAME_MS / 60_000.0
        raise ValueError(f"{what} come to {count} frames ({minutes:.3g} min at {FRAME_MS:g} ms a frame), more than "
                         f"the {MAX_MOVIE_FRAMES:,} frames ({MAX_MOVIE_FRAMES * FRAME_MS / 60_000:g} min) an "
                         "experiment may take; use faster or fewer conditions")


def check_bar_width(width: float, size: int) -> float:
    """``width`` (px) when a bar that wide fits the ``size``-pixel field, else a ValueError (the bar would cover
    the whole field: a full-field flash, with no position or motion to read out)."""
    if width > size:
        raise ValueError(f"width {width:g} px is wider than the model's {size}-pixel field, so the bar would cover "
                         f"all of it; use width <= {size}")
    return width


def check_position(pos: float, size: int, name: str) -> None:
    """Refuse a bar centre that lies outside a ``size``-pixel field (±size/2)."""
    if abs(pos) > size / 2.0:
        raise ValueError(
            f"{name} {pos:g} px lies outside the model's {size}-pixel field (positions from "
            f"{-size / 2:g} to {size / 2:g} px from the centre)"
        )


class Movie:
    """An experiment's conditions laid end to end into one movie.

    For each condition: ``t0 = movie.t0`` is the frame its segment will start
    at (to turn the segment's event frames into absolute ones), then
    ``movie.add(segment, condition, window)`` appends the segment (T_i, H, W),
    stores ``condition`` with its ``start`` and ``stop`` frames, and the
    absolute readout window [a, b) whose frames are attributed.
    :meth:`protocol` concatenates the movie and picks the frames of interest.
    """

    def __init__(self) -> None:
        self.segments: list[np.ndarray] = []
        self.conditions: list[dict] = []
        self.windows: list[tuple[int, int]] = []
        self.t0 = 0

    def add(self, segment: np.ndarray, condition: dict, window: tuple[int, int]) -> None:
        condition.update(start=self.t0, stop=self.t0 + len(segment))
        self.conditions.append(condition)
        self.windows.append((int(window[0]), int(window[1])))
        self.segments.append(segment)
        self.t0 += len(segment)

    def stimulus(self) -> np.ndarray:
        """The whole movie, float32 (T, H, W)."""
        return np.ascontiguousarray(np.concatenate(self.segments, axis=0), dtype=np.float32)

    def protocol(self, history: int, max_frames: int, invariance: str, resolved: Optional[dict] = None) -> "Protocol":
        stim = self.stimulus()
        return Protocol(stim, self.conditions, frames_of_interest(self.windows, len(stim), history, max_frames, stim),
                        invariance, dict(resolved or {}))


#: grey frames just before each condition's first non-grey frame that are always attributed
REST_FRAMES = 5


def frames_of_interest(windows: Sequence[tuple[int, int]], n_frames: int, history: int,
                       max_frames: int, stimulus: Optional[np.ndarray] = None) -> np.ndarray:
    """Union of [start, stop) windows, clipped to frames with history, thinned to ``max_frames``.

    Thinning keeps every k-th frame (k the smallest stride that fits), so all
    conditions stay represented. With ``stimulus`` given, the last
    :data:`REST_FRAMES` frames before every stretch of non-grey frames whose
    whole window is grey are added (unthinned; at most a quarter of
    ``max_frames`` in all, or one per condition up to half of it, spread
    evenly over the conditions when there are more): the model is at rest there, which anchors the reduced
    circuit's resting rate (and the grey level its readouts subtract); their
    windows are identical, so attributing them costs one window.
    """
    rest = np.zeros(0, dtype=np.int64)
    if stimulus is not None:
        active = np.abs(np.asarray(stimulus)).reshape(len(stimulus), -1).max(1) > 0
        starts = np.flatnonzero(active & ~np.concatenate([[False], active[:-1]]))
        csum = np.concatenate([[0], np.cumsum(active)])
        parts = [np.arange(max(t - REST_FRAMES, history - 1), t) for t in starts]
        # keep frames whose whole window is grey (the model at rest), not gaps inside a flash train
        parts = [r[(csum[r + 1] - csum[r + 1 - history]) == 0] for r in parts if len(r)]
        parts = [r for r in parts if len(r)]
        if parts:
            # a quarter of the budget, or one frame per condition up to half of it
            most = max(1, max_frames // 4, min(len(parts), max_frames // 2))
            each = max(1, most // len(parts))  # the same few frames before every condition
            rest = np.concatenate([r[-each:] for r in parts])
            if len(rest) > most:  # more conditions than that: spread that many frames over them
                rest = rest[np.unique(np.linspace(0, len(rest) - 1, most).round().astype(np.int64))]
    idx = np.unique(np.concatenate([np.arange(max(a, history - 1), min(b, n_frames)) for a, b in windows]))
    budget = max_frames - len(rest)
    if len(idx) > budget:
        stride = int(np.ceil(len(idx) / budget))
        idx = idx[::stride]
    idx = np.union1d(idx, rest)
    return idx.astype(np.int64)


# ----------------------------------------------------------------------------- model responses


def model_rates(model: AnyModel, stimulus: np.ndarray, batch_size: Optional[int] = None,
                progress: Optional[Progress] = None) -> np.ndarray:
    """Rates (T, n_cells) of ``model`` on an experiment's movie: :func:`napari_retina.predict`.

    ``stimulus`` float32 (T, H, W) contrast units (an experiment builds it so,
    whatever its scale: no units warning). Rates that come out NaN or infinite
    on a frame with a full history raise a ValueError that points at the
    experiment's intensity or contrast parameters.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StimulusUnitsWarning)
            return predict(model, stimulus, batch_size=batch_size, progress=progress)
    except NonFiniteOutputError as exc:  # the advice for an experiment is about its parameters
        raise NonFiniteOutputError(exc.finding, PARAMETER_REMEDY) from None


def cell_response(rates: np.ndarray, cells: list[int]) -> np.ndarray:
    """The summed rate (T,) float64 of ``cells`` from (T, n_cells) ``rates``; a (T,) response is returned as it is."""
    r = np.asarray(rates, dtype=np.float64)
    return r if r.ndim == 1 else r[:, cells].sum(1)


# ----------------------------------------------------------------------------- readout helpers


def parabolic_peak(trace: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """Sub-frame time and value of the maximum of ``trace[start:stop]``.

    The maximum sample and its two neighbours (when inside the window and
    finite) are fitted by a parabola; its vertex gives the time (fractional
    frame) and value. Returns (nan, nan) when the window holds no finite value.
    """
    x = np.asarray(trace, dtype=np.float64)
    start, stop = max(0, int(start)), min(len(x), int(stop))
    seg = x[start:stop]
    if seg.size == 0 or not np.isfinite(seg).any():
        return float("nan"), float("nan")
    i = int(np.nanargmax(seg))
    t, v = float(start + i), float(seg[i])
    if 0 < i < len(seg) - 1 and np.isfinite(seg[i - 1]) and np.isfinite(seg[i + 1]):
        a, b, c = seg[i - 1], seg[i], seg[i + 1]
        den = a - 2 * b + c
        if den < 0:
            off = 0.5 * (a - c) / den
            t += off
            v = b - 0.25 * (a - c) * off
    return t, v


def onset_time(trace: np.ndarray, start: int, t_peak: float, level: float) -> float:
    """First time in [start, t_peak] at which ``trace`` rises above ``level`` (linear interpolation).

    METHOD.md §4: a response's onset is the first point above 20% of the
    following peak (``level = base + 0.2·(peak − base)``). A rise is a sample
    above ``level`` whose previous sample is at or below it; a rise onto
    ``start`` itself (the sample before it at or below ``level``) is ``start``.
    nan when the trace never rises to ``level`` there: it is above ``level``
    from before ``start`` until the peak (the tail of an earlier response, as
    after an omitted flash whose train's response has not decayed), or has no
    finite values. A sample above ``level`` that follows a non-finite one (the
    first frame with a full history) counts as the rise.
    """
    x = np.asarray(trace, dtype=np.float64)
    if not np.isfinite(t_peak):
        return float("nan")
    start = max(0, int(start))
    stop = min(len(x), int(np.floor(t_peak)) + 1)
    if stop <= start:
        return float("nan")
    seg = x[start:stop]
    prev = np.concatenate([[x[start - 1] if start > 0 else np.nan], seg[:-1]])
    with np.errstate(invalid="ignore"):
        rises = np.isfinite(seg) & (seg > level) & ~(np.isfinite(prev) & (prev > level))
    hits = np.flatnonzero(rises)
    if hits.size == 0:
        return float("nan")
    i = int(hits[0])
    a, b = prev[i], seg[i]
    if i == 0 or not np.isfinite(a):
        return float(start + i)
    return float(start + i - 1 + (level - a) / (b - a))


def vertex3(xs: Sequence[float], ys: Sequence[float]) -> float:
    """x of the maximum of the parabola through the best sample of (xs, ys) and its neighbours.

    Works on non-uniform grids; falls back to the best sample at the edges.
    """
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    i = int(np.nanargmax(y))
    if 0 < i < len(x) - 1 and np.isfinite(y[i - 1 : i + 2]).all():
        coef = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
        if coef[0] < 0:
            v = -coef[1] / (2 * coef[0])
            if x[i - 1] <= v <= x[i + 1]:
                return float(v)
    return float(x[i])


def crossing_window(frames: float) -> np.ndarray:
    """A centred moving average over ``frames`` (>= 1, may be fractional) frames.

    Odd length; the two end taps carry the fractional part, so the weights sum
    to ``frames`` before normalisation and a ripple of period ``frames`` averages out.
    """
    if frames <= 1.0:
        return np.ones(1)
    half = int(np.floor((frames - 1.0) / 2.0))            # full taps on each side of the centre
    rest = (frames - (2 * half + 1)) / 2.0                  # what the two end taps carry, each in [0, 1)
    w = np.ones(2 * half + 1)
    if rest > 0:
        w = np.concatenate([[rest], w, [rest]])
    return w / w.sum()


def crossing_envelopes(response: np.ndarray, speeds: Sequence[float]) -> dict:
    """``{speed: (envelope, half)}`` for each distinct bar speed (px/frame): the (T,) ``response`` averaged over
    one pixel crossing (1/speed frames, centred, :func:`crossing_window`) and that average's half width (frames).

    A bar is drawn area-weighted on the pixel grid, so responses to it ripple once per pixel crossed; the
    moving-bar readouts (anticipation, reversal) read their peaks from the envelope, not from the ripple.
    Beyond either end the response is taken to stay at its end value (edge padding): padding with zeros, as
    ``np.convolve(mode="same")`` does, pulled the last frames' average towards 0, a false peak at the movie's
    end for a response below 0 (a rate with a negative offset).
    """
    out = {}
    r = np.asarray(response, dtype=np.float64)
    for speed in speeds:
        if speed not in out:
            kernel = crossing_window(1.0 / speed)
            half = len(kernel) // 2
            padded = np.pad(r, half, mode="edge") if half and len(r) else r
            out[speed] = (np.convolve(padded, kernel, mode="valid"), half)
    return out


def unmet(clauses: dict) -> list[str]:
    """The clauses of a criterion that a run does not meet, in the criterion's order: ``clauses`` maps each
    clause, said with the run's own value (``"F2 ≥ 0.1 spikes/bin at the narrowest bars (here 0.0106)"``), to
    whether it holds. ``present`` is that this list is empty; a readout keeps it as ``"unmet"``, so that a
    verdict of no says why (the Experiments dock, the figures, ``NAME.json``)."""
    return [text for text, holds in clauses.items() if not bool(holds)]


def unmet_of(readout: Any) -> list[str]:
    """Why a readout's verdict is no: its ``unmet`` clauses when ``present`` is False; [] when it is present, or is
    not a readout, or has none (a result saved before readouts kept them)."""
    if not isinstance(readout, dict) or readout.get("present") is not False:
        return []
    unmet = readout.get("unmet")
    return [str(u) for u in unmet] if isinstance(unmet, (list, tuple)) else []


def least(values: Sequence[float]) -> float:
    """The smallest of ``values`` with NaN counted as smallest (NaN when any is NaN or there are none): the value
    an "every value ≥ floor" clause is decided by."""
    arr = np.asarray(list(values), dtype=np.float64)
    return float(np.min(arr)) if arr.size else float("nan")


def finite_max(values: ArrayLike) -> float:
    """The largest finite value of ``values`` (any array-like), nan if none is finite."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(arr)) if np.isfinite(arr).any() else float("nan")


def baseline(trace: np.ndarray, start: int, stop: int) -> float:
    """Median of the finite values of ``trace[start:stop]`` (the grey level), nan if none."""
    seg = np.asarray(trace, dtype=np.float64)[max(0, start):max(0, stop)]
    seg = seg[np.isfinite(seg)]
    return float(np.median(seg)) if seg.size else float("nan")


def above_rest(result: "ExperimentResult", history: int) -> Optional[np.ndarray]:
    """float32 (T,): ``result.response`` minus its resting level, or None when no frame is at rest.

    The resting level is the median response over the frames whose whole
    window of ``history`` frames is grey (the system at rest, the same input
    whatever the frame). This puts a ground-truth run
    (:func:`~napari_retina.experiments.run_truth`), whose rates are absolute,
    beside the model's ``attribution.response`` = F(s) − F(0), which is 0 at rest.
    """
    stim = np.asarray(result.stimulus)
    idx = np.arange(history - 1, len(stim))
    resp = result.response
    rest = resp[idx[grey_windows(stim, idx, history)]] if len(idx) else resp[:0]
    rest = rest[np.isfinite(rest)]
    return (resp - np.median(rest)).astype(np.float32) if rest.size else None


# ----------------------------------------------------------------------------- running


def build(module: ModuleType, size: int, history: int, respond: Callable, params: dict) -> "Protocol":
    """``module.build`` with the resolved ``params``; a movie too long for memory is a MemoryError that names
    the experiment and its parameters (the generator's sentence names its own, e.g. a flash train's ``post``)."""
    try:
        return module.build(size=size, history=history, respond=respond, **params)
    except MemoryError as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise MemoryError(f"experiment {module.NAME!r} with {given}: {exc}") from None


class _ModelNeeded(Exception):
    """Raised by :func:`check_params`'s stand-in response: the rest of the protocol needs the model's rates."""


def _model_needed(stim: np.ndarray) -> np.ndarray:
    raise _ModelNeeded


def check_params(module: ModuleType, params: dict, size: int, history: int) -> dict:
    """``params`` resolved and checked as :func:`run_model` would, without running a model; returns them resolved.

    Builds ``module``'s protocol for a ``size``-pixel field and ``history`` frames,
    so every parameter value is refused in the experiment's own sentence before any
    model runs, up to what depends on the model's rates (the reversal's
    ``center='rf'`` maps the receptive field first: the checks after it wait for the run).

    Example
    -------
    >>> check_params(get("osr"), {"periods": [-1]}, 50, 40)     # doctest: +SKIP
    ValueError: periods must be positive whole numbers of frames, got -1
    """
    p = resolve_params(module, params, size, history)
    try:
        build(module, size, history, _model_needed, p)
    except _ModelNeeded:
        pass
    return p


def check_quadrature(steps: Optional[int], tol: Optional[float]) -> None:
    """``steps`` or ``tol`` checked by :func:`napari_retina.attribute`'s own check, before any stimulus is built."""
    from ..attribution._adaptive import check_quadrature as check
    from ..attribution._quadrature import DEFAULT_RULE

    check(None, steps, tol, DEFAULT_RULE)


def run_model(module: ModuleType, model: AnyModel, cell: Cells = 0, *, explain: float = DEFAULT_EXPLAIN,
              steps: Optional[int] = None, tol: Optional[float] = None, progress: Optional[Progress] = None,
              **params) -> ExperimentResult:
    """Build ``module``'s protocol for ``model``, run, attribute, reduce and read out.

    ``model``: a RetinaCNN or a wrapped module (``nr.wrap``), read through
    :func:`napari_retina._wrap.model_config` (history, size, cells); a wrapped
    module is attributed with Captum's rules (to ``tol`` or at ``steps``) and reduced as
    :func:`napari_retina.reduce` says. ``progress(done, 400)``: 100 units for each of
    the protocol's probe runs, the rates, the attribution and the reduction,
    reported from inside each (raise :class:`napari_retina.Cancelled` in it to stop).
    """
    cfg = model_config(model)
    check_model_dtype(model)
    explain = check_explain(explain)
    cells = check_cells(cell, cfg.n_cells)
    check_quadrature(steps, tol)
    p = resolve_params(module, params, cfg.size, cfg.history)
    # four stages of 100 units each: building the protocol (the model's rates on probe movies, e.g.
    # the reversal's RF mapping), the rates on the movie, the attribution and the reduction; each
    # reports its own progress inside its range, so the bar moves and Cancel acts at the next report
    unit, total = 100, 400
    report(progress, 0, total)
    probe = within(progress, 0, unit, total)

    def respond(stim: np.ndarray) -> np.ndarray:
        return cell_response(model_rates(model, stim, progress=probe), cells)

    proto = build(module, cfg.size, cfg.history, respond, p)
    report(progress, unit, total)
    rates = model_rates(model, proto.stimulus, progress=within(progress, unit, 2 * unit, total))
    try:
        with warnings.catch_warnings():
            # the movie is in contrast units by construction; its scale is the caller's parameters
            warnings.simplefilter("ignore", StimulusUnitsWarning)
            attr = attribute(model, proto.stimulus, cell=cells, steps=steps, tol=tol, invariance=proto.invariance,
                             frames=proto.frames, progress=within(progress, 2 * unit, 3 * unit, total))
    except NonFiniteOutputError as exc:  # the advice for an experiment is about its parameters
        raise NonFiniteOutputError(exc.finding, PARAMETER_REMEDY) from None
    red = reduce(attr, explain, progress=within(progress, 3 * unit, total, total))
    report(progress, total, total)
    resp = cell_response(rates, cells)
    readout = dict(module.readout(resp, proto.conditions))
    readout["reduced"] = module.readout(np.asarray(red.reduced_rates, dtype=np.float64), proto.conditions)
    readout["explained_variance"] = float(red.explained_variance)
    readout["kept"] = [red.label(c) for c in red.kept]
    return ExperimentResult(module.NAME, proto.stimulus, rates, attr, red, proto.conditions,
                            jsonable(readout), jsonable({**p, **proto.resolved}), cells, readout_units_of(module))


def check_response(response: Any, n_frames: int, history: int) -> np.ndarray:
    """What a response function returned, as float64 (T,) or (T, n_cells) with T = ``n_frames``, or one sentence.

    Refused: anything that is not an array of real numbers (None, text, bools, a
    ragged list), another shape (a (T, n_cells) answer needs at least one cell),
    NaN or infinite values on frames with a full history (from ``history - 1``
    on: NaN before that is the convention of the model's own rates, as
    :func:`model_rates` and :func:`napari_retina._validate.check_finite_output`
    have it) and values beyond float32, the precision rates are kept in.
    """
    expected = f"(T,) or (T, n_cells) with T = {n_frames}, the stimulus' frames"
    arr = as_real_array(response, f"respond must return an array of rates of shape {expected}",
                        "respond must return real numbers (integers or floats) as rates")
    if arr.ndim not in (1, 2) or arr.shape[0] != n_frames or arr.size == 0:
        raise ValueError(f"respond must return rates of shape {expected}, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    check_finite_output(arr, np.arange(max(history - 1, 0), n_frames), "the rates respond returned",
                        remedy=f"respond must return finite rates from frame history - 1 = {history - 1} on "
                               "(NaN is allowed only before it); pass history= to say a longer one")
    with np.errstate(invalid="ignore"):
        peak = float(np.nanmax(np.abs(arr))) if not np.isnan(arr).all() else 0.0
    if peak > FLOAT32_MAX:
        raise ValueError(f"respond returned a rate of magnitude {peak:.3g}, beyond float32 "
                         f"(|value| <= {FLOAT32_MAX:.3g}), the precision rates are kept in")
    return arr


#: whose cells ``cell`` picks in :func:`run_response` (a model's are checked as "the model has")
RESPONSE_HOLDER = "the rates respond returned have"


def run_response(module: ModuleType, respond: Callable, size: int = 50, history: int = 40, cell: Cells = 0,
                 **params) -> ExperimentResult:
    """Run ``module``'s protocol on any response function and read it out.

    ``respond(stimulus (T, H, W)) -> (T,)`` or ``(T, n_cells)`` rates, one row
    per stimulus frame, finite from frame ``history - 1`` on (NaN before it is
    allowed) and within float32 (:func:`check_response`); ``cell`` picks (and
    sums) columns of a 2-D answer. ``history`` only sizes the default gap and
    window and says from which frame rates must be finite. Attribution and
    reduction are None.
    """
    if not callable(respond):
        raise TypeError(f"respond must be a function stimulus -> rates, got {type(respond).__name__}")
    history = int_param(history, "history", 1)
    p = resolve_params(module, params, size, history)

    def checked(stim: np.ndarray) -> np.ndarray:
        return check_response(respond(stim), len(stim), history)

    def pick(r) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        if r.ndim == 1:
            return r
        return r[:, check_cells(cell, r.shape[1], RESPONSE_HOLDER)].sum(1)

    proto = build(module, size, history, lambda s: pick(checked(s)), p)
    rates = checked(proto.stimulus).astype(np.float32)
    if rates.ndim == 1:
        rates = rates[:, None]
    cells = list(range(rates.shape[1])) if rates.shape[1] == 1 else check_cells(cell, rates.shape[1], RESPONSE_HOLDER)
    readout = module.readout(pick(rates), proto.conditions)
    return ExperimentResult(module.NAME, proto.stimulus, rates, None, None, proto.conditions,
                            jsonable(readout), jsonable({**p, **proto.resolved}), cells, readout_units_of(module))
