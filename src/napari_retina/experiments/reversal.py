"""Motion reversal (METHOD.md §4): a burst follows the reversal at a roughly fixed latency.

Stimulus: for each reversal position, a dark bar (uniform along y) moves at
``speed`` for ``approach`` frames towards the reversal position, reverses there
and moves back for as many frames; conditions are concatenated into one movie,
each preceded by ``gap`` grey frames. Reversal positions are relative to
``center``: by default the cell's receptive-field centre, mapped first with
flashed bars on the same response function (as an experimenter would).

Parameters (defaults)
---------------------
reversals : None → 12 positions from −9 to 2 px (1 px apart, relative to ``center`` along the bar's
    direction of travel: negative is before the centre on its approach, so with ``direction`` −1
    position p reverses the bar at ``center − p`` px);
    where some of those would lie outside the model's field (a small field, a
    centre near its edge), the same 12 positions shifted to lie inside it, and in a
    field too narrow for their 11-px span, 12 positions spread evenly across it
    (:func:`default_reversals`). Positions given explicitly are refused when one
    lies outside the field, and a position listed twice (its burst would count twice).
center : "rf" (map the receptive field with flashed bars; the field centre when
    no position stands out, see :func:`map_rf`) or a position in px from the field centre.
speed : 0.19 px/frame; width : 2 px; intensity : −1 (dark bar).
direction : +1 (the bar approaches moving towards larger x) or −1.
approach : None → 2·window frames of motion before (and after) the reversal, or
    more where the bar would travel less than ``MIN_TRAVEL_PX`` (1 px) or its width
    in them (:func:`check_approach`); an explicit approach that short is refused
    (the bar barely moves: a flashed bar, not a reversal of motion).
gap, window, max_frames : see :func:`napari_retina.experiments.base.resolve_params`.

Readout keys
------------
Every peak is read from the response averaged over one pixel crossing (1/``speed``
frames, centred: :func:`~napari_retina.experiments.base.crossing_envelopes`), as the
anticipation readout does: the bar is drawn area-weighted on the pixel grid, so
responses ripple once per pixel crossed, and a ripple crest 10-20 ms after the
reversal could otherwise outweigh the burst and decide the latency by where the
bar happens to reverse on the grid.

reversal_positions_px : list, relative to ``center`` along the bar's direction of travel
    (the movie's x is ``center + direction·position``; conditions keep it as ``absolute_position``).
center_px : the centre used (px from the field centre).
crossing_frames : list, the averaging window per condition (frames).
noise : the standard deviation of the averaged response over the grey frames
    before each condition (root mean square over conditions): ~0 for a model, a
    recorded trial's noise otherwise.
peak_before : list, largest response in the ``window`` frames up to the
    reversal, minus the grey level; peak_after : the same after the reversal, over
    the averages that reach only into the ``READ_AFTER``·``window`` frames after it (the bar
    still moving back, within the condition): twice the attributed window, so that a burst
    later than one window is read, not cut off (the shipped model's reduced circuit's two
    largest, 2.3 spikes/bin at 383 and 435 ms, were cut off by a 40-frame window and the
    other positions passed without them).
burst_ratios : list, peak_after / peak_before per reversal point.
burst_ratio : mean of burst_ratios.
burst_latencies_ms : list, reversal to the (sub-frame) peak after it.
peak_interior : list of bool, that peak is a local maximum inside the frames read
    after the reversal, not at either end (a response still rising at their end,
    or still falling from before the reversal, has no burst in it).
bursting : list of bool, a burst of at least ``AMPLITUDE_FLOOR`` (0.5 spikes/bin) and
    ``MIN_BURST_SNR`` (5) times ``noise`` above the grey level after the reversal,
    with an interior peak, that ends (``ends``).
ends : list of bool, after its peak the averaged response falls back to half its height
    above grey (or lower) within the frames read: a burst, brief, not a sustained answer
    (the shipped model's and the truth's fall to 6–23% of it).
late : list of bool, an answer of a burst's size which does not end within the frames read
    (still rising at their end, or a plateau above half its height): its burst, if any,
    lies beyond them, and no fixed latency can be claimed while it is left out (a flat
    plateau passed as a "burst" at its first frame, and with 1e-6 of noise did not);
    n_late : their number.
burst_latency_ms : mean over the bursting positions, burst_latency_sd_ms : their
    standard deviation.
burst_latency_slope_ms_per_px : least-squares slope of the bursting positions'
    latencies against their reversal positions (ms per px; NaN below two).
    Reported, not scored: near 0 for a burst locked to the reversal, as the
    literature's is; a classical linear-nonlinear ON cell, which the criterion
    passes, answers the bar leaving its centre, so its "burst" comes later the
    further the bar went (tens of ms/px in either ``direction``, positions counted
    along it, the bar returning at 1/``speed`` frames per px; docs/EXPERIMENTS.md).
n_bursts : number of bursting positions.
present : the literature criterion (Schwartz et al. 2007, Neuron: a synchronous burst
    follows the reversal at a fixed latency of about 250 ms wherever the bar
    reverses): at ``MIN_BURSTS`` (4) or more reversal positions, and at no fewer
    than ``MIN_BURST_SHARE`` (half) of the positions tried (6 of the default 12;
    the truths of versions 2–6 burst at 7–11, the shipped model at 7–8, an
    untrained RetinaCNN that passed before 2026-12-07 at 4), a burst (as in
    ``bursting``), with a latency whose mean over those positions lies in
    [150, 350] ms and whose standard deviation is at most 50 ms, and no ``late``
    answer (a reduced circuit passed with its two largest answers, 2.3 and 2.1
    spikes/bin at 383 and 435 ms, cut off by the window's end: read in a longer
    window they made the latencies' sd 67 ms). The noise clause
    keeps one trial of Poisson counts out: averaged, a few chance peaks above the
    0.5 floor otherwise lined up (3 of 1,200 trials at 0.2 spikes/bin).
    ``burst_ratio`` is reported but not scored: it divides by approach responses
    that can be near zero (docs/EXPERIMENTS.md).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from .. import stimuli
from .._units import FRAME_MS
from .base import AMPLITUDE_FLOOR, Movie, Protocol, baseline, check_bar_width, check_movie_length, check_position, \
    crossing_envelopes, distinct, finite_max, frame_count, int_param, list_param, parabolic_peak, real_param, unmet, \
    vertex3

NAME = "reversal"
DESCRIPTION = "motion reversal: a bar that reverses at one of several positions"
INVARIANCE = "y"
#: the default reversal positions relative to the centre, where they fit the field (METHOD.md §4)
REVERSALS = tuple(np.linspace(-9.0, 2.0, 12).round(6).tolist())
DEFAULTS = {"reversals": None, "center": "rf", "speed": 0.19,
            "width": 2.0, "intensity": -1.0, "direction": 1, "approach": None}

#: the unit of each readout key (:data:`~.base.READOUT_UNITS`; the Experiments dock shows it after the key)
UNITS = {"reversal_positions_px": "px", "center_px": "px", "crossing_frames": "frames", "noise": "spikes/bin",
         "peak_before": "spikes/bin", "peak_after": "spikes/bin", "burst_ratios": "dimensionless",
         "burst_ratio": "dimensionless", "burst_latencies_ms": "ms", "peak_interior": "", "bursting": "", "ends": "",
         "n_bursts": "count", "late": "", "n_late": "count", "burst_latency_ms": "ms", "burst_latency_sd_ms": "ms",
         "burst_latency_slope_ms_per_px": "ms/px", "present": "", "unmet": ""}
#: why a readout value is NaN, as the docs say (the module docstring)
NAN_REASONS = {"burst_latency_slope_ms_per_px": "fewer than two bursting positions"}

#: criterion constants of ``present`` (see the module docstring)
#: the frames after a reversal its burst is read in, in windows (the bar is still moving back then)
READ_AFTER = 2
MIN_BURSTS = 4
#: bursts at no fewer than this share of the reversal positions (Schwartz et al. 2007, Neuron: wherever the bar
#: reverses); 6 of the default 12, where the truths of versions 2-6 burst at 7-11 and the shipped model at 7-8
MIN_BURST_SHARE = 0.5
MIN_BURST_SNR = 5.0            # a burst's height over the noise of the grey level (readout key "noise"):
#                                at 4, 3 of 1,200 Poisson trials (400 seeds a rate) passed, at 5 none;
#                                tests/test_criteria.py checks 120
LATENCY_RANGE_MS = (150.0, 350.0)
MAX_LATENCY_SD_MS = 50.0
#: the least travel (px) before the reversal, also at least the bar's width: a bar that moves less is a flash
MIN_TRAVEL_PX = 1.0


def min_travel(width: float) -> float:
    """The least distance (px) a bar of ``width`` px must travel before reversing: its own width, and 1 px."""
    return max(MIN_TRAVEL_PX, width)


def check_approach(approach: Optional[int], speed: float, width: float, window: int) -> float:
    """Frames of motion before the reversal: ``approach``, or by default ``2·window`` lengthened to the
    :func:`min_travel` at ``speed`` px/frame (an int; inf when that division overflows, which the movie's length
    check refuses); a ValueError when an explicit one moves the bar less than that."""
    least = min_travel(width)
    if approach is None:
        frames = np.ceil(least / speed - 1e-9)
        return max(2 * window, int(frames)) if np.isfinite(frames) else float(frames)
    approach = int_param(approach, "approach", 2)
    if speed * approach < least - 1e-9:
        raise ValueError(
            f"approach={approach} frames at speed {speed:g} px/frame moves the bar {speed * approach:.3g} px before "
            f"the reversal, less than its width ({width:g} px) or 1 px, so it is a flashed bar, not a reversal of "
            f"motion; use approach >= {int(np.ceil(least / speed - 1e-9))} frames or a faster speed"
        )
    return approach


def map_rf(respond: Callable, size: int, width: float, intensity: float, gap: int, window: int, n: int = 21) -> float:
    """Receptive-field centre (px from the field centre) from flashed bars at ``n`` positions.

    The field centre (0.0) when no flashed bar raises the response above its grey level
    (a silent cell), every position gives the same amplitude (one the bars only
    suppress), or the best answer is under ``MIN_BURST_SNR`` (5) times the grey
    level's noise (the standard deviation of the response over the grey frames
    before the flashes: 0 for a model, a recorded trial's otherwise, whose
    chance peaks would place the centre at random): there is no peak to place
    the centre at.
    """
    positions = np.linspace(-size / 2.0 + width / 2.0, size / 2.0 - width / 2.0, n)
    movie = Movie()
    for pos in positions:
        seg, ev = stimuli.flashed_bar(position=float(pos), width=width, duration=2, intensity=intensity, pre=gap,
                                      post=window, size=size, axis="x", return_events=True)
        onset = movie.t0 + int(ev["onset"])
        movie.add(seg, {"onset": onset}, (onset, onset + window))
    r = np.asarray(respond(movie.stimulus()), dtype=np.float64)
    amp = [parabolic_peak(r, c["onset"], c["onset"] + window)[1] - baseline(r, c["start"], c["onset"])
           for c in movie.conditions]
    fin = np.asarray(amp, dtype=np.float64)
    fin = fin[np.isfinite(fin)]
    grey = np.concatenate([r[c["start"]:c["onset"]] for c in movie.conditions])
    noise = float(np.std(grey[np.isfinite(grey)])) if np.isfinite(grey).any() else 0.0
    if fin.size == 0 or fin.max() <= MIN_BURST_SNR * noise or np.ptp(fin) == 0:  # no position stands out
        return 0.0
    return vertex3(positions, amp)


def default_reversals(center: float, width: float, size: int, direction: int = 1) -> list:
    """Default reversal positions (px relative to ``center``, along the bar's ``direction`` of travel) for a
    ``size``-pixel field.

    :data:`REVERSALS` (−9…2 px, 1 px apart) when every bar of ``width`` there lies whole in the field
    (a helper's audit: one at the field's edge, which :func:`~.base.check_position` allows, was drawn half
    outside it, its centroid 0.5 px off its recorded position); otherwise the
    same positions shifted by the least amount that keeps every bar of ``width``
    whole inside the field; when the field is narrower than their span plus one
    bar width, as many positions spread evenly over the field instead.
    """
    rel = direction * np.asarray(REVERSALS, dtype=np.float64)   # along x
    order = np.argsort(rel)
    rel = rel[order]
    pos = center + rel
    half = size / 2.0
    lo, hi = -half + min(width, size / 2.0) / 2.0, half - min(width, size / 2.0) / 2.0
    if np.all((pos >= lo) & (pos <= hi)):   # every bar whole inside the field
        return list(REVERSALS)
    span = rel[-1] - rel[0]
    if span <= hi - lo:
        shift = (lo - pos[0]) if pos[0] < lo else (hi - pos[-1]) if pos[-1] > hi else 0.0
        pos = pos + shift
    else:
        pos = np.linspace(lo, hi, len(rel))
    along = np.empty_like(pos)
    along[order] = direction * (pos - center)   # back in REVERSALS' order, along the direction of travel
    return along.round(6).tolist()


def build(size: int, history: int, respond: Optional[Callable] = None, *, reversals: Optional[Sequence[float]],
          center: Union[str, float], speed: float, width: float, intensity: float, direction: int,
          approach: Optional[int], gap: int, window: int, max_frames: int) -> Protocol:
    """The movie for a ``size``-px model of ``history`` frames: a bar ``width`` px wide moving at ``speed``
    (px/frame, first in ``direction`` +1 or -1) for ``approach`` frames, reversing at each of ``reversals`` (px
    from the field centre; by default positions around ``center``, which ``"rf"`` maps from ``respond``'s answers
    to flashed bars, :func:`map_rf`). ``gap`` grey frames before each condition, ``window`` frames read after each
    event and ``max_frames`` the most frames attributed (:func:`~napari_retina.experiments.base.resolve_params`).
    Each value is checked here (one sentence when it is wrong).
    """
    explicit = reversals is not None
    if explicit:
        reversals = list_param(reversals, "reversals")
        reversals = distinct(reversals, "reversals")   # one position twice would count as two bursts
    speed = real_param(speed, "speed", positive=True)
    width = check_bar_width(real_param(width, "width", positive=True), size)
    intensity = real_param(intensity, "intensity")
    if isinstance(direction, (bool, np.bool_)) or direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    approach = check_approach(approach, speed, width, window)
    n_reversals = len(reversals) if explicit else len(REVERSALS)
    check_movie_length(n_reversals * (gap + 2 * approach + 1 + window), size,
                       f"{n_reversals} reversals after an approach of {frame_count(approach)} frames")
    if isinstance(center, str):
        if center != "rf":
            raise ValueError(f"center must be 'rf' or a position in px, got {center!r}")
        if respond is None:
            raise ValueError("center='rf' needs a response function to map the receptive field; pass center=<px>")
        center = map_rf(respond, size, width, intensity, gap, window)
    else:
        center = real_param(center, "center")
    check_position(center, size, "center")
    if not explicit:
        reversals = default_reversals(center, width, size, direction)
    for rev in reversals:
        check_position(center + direction * rev, size,
                       f"reversal position {rev:g} px from the centre {center:.3g} px along the bar's direction "
                       f"{direction:+d}, i.e.")

    movie = Movie()
    for rev in reversals:
        pos = center + direction * rev   # along the direction of travel
        seg, ev = stimuli.reversing_bar(reversal=pos, speed=speed, start=pos - direction * speed * approach,
                                        width=width, intensity=intensity, pre=gap, post=window, size=size,
                                        axis="x", return_events=True)
        t_rev = movie.t0 + int(ev["reversal_frame"])
        movie.add(seg, {"reversal_position": rev, "absolute_position": pos, "reversal_frame": t_rev,
                        "onset": movie.t0 + int(ev["onset"]), "offset": movie.t0 + int(ev["offset"]),
                        "window": window, "center": center, "speed": speed}, (t_rev - window, t_rev + window + 1))
    # the model-derived values as numbers, so that the result's params say what ran
    return movie.protocol(history, max_frames, INVARIANCE,
                          {"center": center, "reversals": list(reversals), "approach": approach})


def readout(response: np.ndarray, conditions: list) -> dict:
    """Motion-reversal readout of a (T,) response; see the module docstring for the keys."""
    r = np.asarray(response, dtype=np.float64)
    before, after, ratios, lats, interior, ends, reads, grey_var = [], [], [], [], [], [], [], []
    if any("speed" not in c for c in conditions):
        raise ValueError("a reversal condition has no 'speed' (px/frame), which the readout averages over one "
                         "pixel crossing with; conditions saved before 2026-12-02 lack it: add the run's speed "
                         "(its params, default 0.19) to each")
    envelopes = crossing_envelopes(r, [c["speed"] for c in conditions])   # the conditions usually share one
    for c in conditions:
        env, half = envelopes[c["speed"]]
        grey = (c["start"] + half, c["onset"] - half)      # the averages of grey frames only
        spread = env[max(0, grey[0]):max(0, grey[1])]
        if np.isfinite(spread).any():
            base = baseline(env, *grey)
            grey_var.append(float(np.var(spread[np.isfinite(spread)])))
        else:  # a gap shorter than one crossing: the grey level of the frames themselves, no noise estimate
            base = baseline(r, c["start"], c["onset"])
            grey_var.append(float("nan"))
        tr, w = c["reversal_frame"], c["window"]
        read = min(READ_AFTER * w, c.get("stop", tr + w + 1) - 1 - tr)   # frames read after the reversal
        first, last = tr + 1 + half, tr + read - half   # the averages of those frames only
        b = finite_max(env[max(0, tr - w):tr + 1]) - base
        t, v = parabolic_peak(env, first, last + 1)
        a = v - base
        before.append(b)
        after.append(a)
        ratios.append(a / b if np.isfinite(b) and b > 0 else (float("inf") if a > 0 else float("nan")))
        lats.append((t - tr) * FRAME_MS)
        i = int(round(t)) if np.isfinite(t) else tr
        interior.append(bool(np.isfinite(t) and first < i < last))
        tail = env[i + 1:last + 1] if np.isfinite(t) else np.array([])   # the frames read after the peak
        ends.append(bool(tail.size and np.isfinite(a) and np.nanmin(tail) <= base + a / 2))
        reads.append((last - tr) * FRAME_MS)
    fin = [x for x in ratios if np.isfinite(x)]
    ratio = float(np.mean(fin)) if fin else (float("inf") if any(x == float("inf") for x in ratios) else float("nan"))
    noise = float(np.sqrt(np.nanmean(grey_var))) if np.isfinite(grey_var).any() else float("nan")
    floor = max(AMPLITUDE_FLOOR, MIN_BURST_SNR * noise) if np.isfinite(noise) else AMPLITUDE_FLOOR
    bursting = [bool(np.isfinite(a) and a >= floor and inside and end) for a, inside, end in zip(after, interior, ends)]
    late = [bool(np.isfinite(a) and a >= floor and not end) for a, end in zip(after, ends)]
    lat_ok = [t for t, b in zip(lats, bursting) if b]
    lat_mean = float(np.mean(lat_ok)) if lat_ok else float("nan")
    lat_sd = float(np.std(lat_ok)) if lat_ok else float("nan")
    at = [c["reversal_position"] for c, b in zip(conditions, bursting) if b]
    slope = float(np.polyfit(at, lat_ok, 1)[0]) if len(set(at)) >= 2 else float("nan")
    low, high = LATENCY_RANGE_MS
    clauses = {
        f"a burst (≥ {floor:.3g} spikes/bin above grey: {AMPLITUDE_FLOOR:g}, or {MIN_BURST_SNR:g}× the grey level's "
        f"noise, peaking inside the frames read and ending there) at ≥ {MIN_BURSTS} reversal positions and at ≥ "
        f"{MIN_BURST_SHARE:.0%} of those tried (here {len(lat_ok)} of {len(conditions)})":
            len(lat_ok) >= MIN_BURSTS and len(lat_ok) >= MIN_BURST_SHARE * len(conditions),
        f"the bursts' mean latency in [{low:g}, {high:g}] ms (here {lat_mean:.3g} ms)": low <= lat_mean <= high,
        f"their latencies' s.d. ≤ {MAX_LATENCY_SD_MS:g} ms (here {lat_sd:.3g} ms)": lat_sd <= MAX_LATENCY_SD_MS,
        f"no answer that large still above half its height {max(reads, default=0):.0f} ms after the reversal (still "
        f"rising, or sustained: its burst lies beyond) (here at {sum(late)} position(s))": not any(late),
    }
    failed = unmet(clauses)
    return {
        "reversal_positions_px": [c["reversal_position"] for c in conditions],
        "center_px": conditions[0]["center"] if conditions else float("nan"),
        "crossing_frames": [1.0 / c["speed"] for c in conditions], "noise": noise,
        "peak_before": before, "peak_after": after, "burst_ratios": ratios, "burst_ratio": ratio,
        "burst_latencies_ms": lats, "peak_interior": interior, "bursting": bursting, "n_bursts": len(lat_ok),
        "ends": ends, "late": late, "n_late": sum(late),
        "burst_latency_ms": lat_mean, "burst_latency_sd_ms": lat_sd, "burst_latency_slope_ms_per_px": slope,
        "present": not failed, "unmet": failed,
    }
