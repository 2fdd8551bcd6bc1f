"""Motion anticipation (METHOD.md §4): a moving bar's response peaks before the bar arrives.

Stimulus, one movie: dark bars flashed for ``flash_duration`` frames at each of
``flash_positions`` (each followed by ``window`` frames), then the bar moving
at each ``speed`` across the field in each of ``directions`` (+1: towards larger x,
−1: back), every condition preceded by ``gap`` grey frames. Bars are uniform
along y (attribution invariance "y").

Parameters (defaults)
---------------------
speed : one speed or a list, px/frame; default (0.08, 0.176) px/frame (0.44 and
    0.97 mm/s, the lab's figure speed); width : 2 px; intensity : −1 (dark bar).
start, stop : None → ∓(size/2 + 5) px (−30…30 for the 50-px field).
directions : (1, −1); both, so that an error in the receptive-field centre
    cancels in the mean lead.
flash_positions : None → 21 positions evenly from −size/2 to size/2 (−25…25).
flash_duration : 2 frames.
gap, window, max_frames : see :func:`napari_retina.experiments.base.resolve_params`.

Readout keys
------------
flash_positions : list (px from the field centre).
flash_amplitude : list, flashed-bar response peak minus the grey level, per position.
rf_center_px : where the flashed-bar responses peak (parabola through the best
    position and its neighbours); NaN when no position stands out (no flashed bar
    raises the response above grey, or all give the same amplitude), and with it
    flash_latency_ms and the leads.
rf_extent_px : [low, high], the receptive field as the flashed bars map it, to
    half height: on either side of the best position, where the responses fall
    below half of the best's, linearly interpolated between the last flashed
    position at or above half and the first below (:func:`rf_extent`; the
    outermost position where none falls below); NaNs with rf_center_px.
flash_peak : the best flashed position's amplitude (the largest of flash_amplitude).
flash_latency_ms : flash onset to response peak at the best flashed position.
directions, speeds : lists, per moving condition; peak_frame : list, sub-frame time of each moving-bar
    response peak; bar_at_peak_px : list, bar centre at that time. The peak is
    that of the response averaged over one pixel crossing (``crossing_frames``,
    1/speed frames, centred: :func:`~napari_retina.experiments.base.crossing_envelopes`): the bar is drawn
    area-weighted on the pixel grid, so responses ripple with that period, and
    the ripple's crests would otherwise move the peak by up to half a pixel (the
    ground truth's lead, cell 0, is 44 µm on the raw response, 24 µm on its envelope).
crossing_frames : list, the averaging window per moving condition (frames).
lead_px_per_direction, lead_um_per_direction : ``direction·(rf_center − bar_at_peak)``
    per moving condition: how far ahead of the bar centre the response peaks
    (positive = before the bar reaches the flashed-bar centre), in px and µm.
inside_rf : list of bool, per moving condition: the bar at the peak lies within rf_extent_px.
moving_amplitude : list, per moving condition, the envelope's peak minus the grey level
    (spikes per 10 ms bin).
speed_list : the speeds (px/frame); lead_um_per_speed, moving_amplitude_per_speed :
    mean lead over directions (µm) and smallest peak over directions, per speed.
lead_ratio_per_speed : per speed, the largest lead over the smallest of its
    directions (1 for one direction; inf when one is not positive).
lead_um : mean over every moving condition (µm).
lead_floor_um : the least lead counted at each speed for the bar's width (µm,
    :func:`lead_floor_um`).
lag_expected_um : ``speed · (flash_latency − (flash_duration − 1)/2 frames)`` in µm per
    speed, the lag a cell that just delays the bar by the delay its flash response shows
    would show (a lead of −lag_expected_um): a pure delay of D frames answers a flash
    lasting ``flash_duration`` frames at its middle frame, D + (flash_duration − 1)/2
    frames after its onset, and the moving bar at D frames (conditions saved before
    2026-12-07 hold no duration: theirs is ``speed · flash_latency``).
present : the literature criterion (Berry et al. 1999: at every speed tested the
    moving-bar response peaks near the bar's leading edge, with strong
    responses): at every speed, and ``MIN_SPEEDS`` (2) or more of them, the response peaks ahead
    of the flashed-bar peak by at least :func:`lead_floor_um` (nearer the bar's leading edge than
    its centre: ``EDGE_SHARE`` of the way to it, 27.5 µm for the 2 px bar; at least ``MIN_LEAD_UM``,
    10 µm, a fifth of a pixel, for any bar; 10 µm for every bar until 2026-12-08) on average over the
    directions, ahead of it (lead > 0) in every direction, while the bar is
    inside the mapped receptive field (``inside_rf``), with a peak at least
    ``AMPLITUDE_FLOOR`` (0.5 spikes/bin) above grey in every direction; the
    flashed bars that map that field answered at least ``AMPLITUDE_FLOOR`` above
    grey at the best position (``flash_peak``); and at each speed the two
    directions' leads within ``MAX_LEAD_RATIO`` (2×) of each other
    (``lead_ratio_per_speed``; the truths of versions 3–6 agree within 2%)
    (docs/EXPERIMENTS.md). The inside-the-field and moving-amplitude clauses
    reject a "lead" made by a response far from the receptive field: Poisson
    noise passed the first two in 32 of 120 trials, none with all four. The last
    two (2026-12-07) reject an untrained RetinaCNN (weights ×3, seed 0, cell 0)
    whose flashed bars peaked at 0.22 spikes/bin and whose leads at 0.08 px/frame
    were 122 and 501 µm.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from .. import stimuli
from .._units import FRAME_MS, PIXEL_UM
from .base import AMPLITUDE_FLOOR, Movie, Protocol, baseline, check_bar_width, check_movie_length, check_position, \
    crossing_envelopes, frame_count, int_param, least, list_param, parabolic_peak, real_param, unmet, vertex3

NAME = "anticipation"
DESCRIPTION = "motion anticipation: moving bar versus flashed bars"
INVARIANCE = "y"
DEFAULTS = {"speed": (0.08, 0.176), "width": 2.0, "intensity": -1.0, "start": None, "stop": None,
            "directions": (1, -1), "flash_positions": None, "flash_duration": 2}

#: the unit of each readout key (:data:`~.base.READOUT_UNITS`; the Experiments dock shows it after the key)
UNITS = {"flash_positions": "px", "flash_amplitude": "spikes/bin", "rf_center_px": "px", "rf_extent_px": "px",
         "flash_latency_ms": "ms", "directions": "dimensionless", "speeds": "px/frame", "peak_frame": "frames",
         "bar_at_peak_px": "px", "inside_rf": "", "lead_px_per_direction": "px", "lead_um_per_direction": "µm",
         "moving_amplitude": "spikes/bin", "speed_list": "px/frame", "lead_um_per_speed": "µm",
         "moving_amplitude_per_speed": "spikes/bin", "lead_ratio_per_speed": "dimensionless",
         "flash_peak": "spikes/bin", "lead_um": "µm", "lag_expected_um": "µm", "crossing_frames": "frames",
         "lead_floor_um": "µm", "present": "", "unmet": ""}
_NO_CENTRE = ("no flashed position stands out (no flashed bar raises the response above grey, or all give the same "
              "amplitude): no receptive-field centre")
#: why a readout value is NaN, as the docs say (the module docstring)
NAN_REASONS = {key: _NO_CENTRE for key in ("rf_center_px", "rf_extent_px", "flash_latency_ms", "lead_px_per_direction",
                                           "lead_um_per_direction", "lead_um_per_speed", "lead_um")}

#: criterion constants of ``present`` (see the module docstring)
MIN_SPEEDS = 2
#: the least lead counted for any bar (µm): a fifth of a pixel, so that a noise-level lead does not count
MIN_LEAD_UM = 10.0
#: the share of the way from the bar's centre to its leading edge the lead must cover (Berry et al. 1999: the
#: response peaks near the leading edge; half the way: nearer the edge than the centre)
EDGE_SHARE = 0.5
#: the most by which one direction's lead may exceed the other's at one speed (truths v3-v6: within 2%)
MAX_LEAD_RATIO = 2.0


def build(size: int, history: int, respond: Optional[Callable] = None, *, speed: Union[float, Sequence[float]],
          width: float, intensity: float, start: Optional[float], stop: Optional[float], directions: Sequence[int],
          flash_positions: Optional[Sequence[float]], flash_duration: int, gap: int, window: int,
          max_frames: int) -> Protocol:
    """The movie for a ``size``-px model of ``history`` frames: a bar ``width`` px wide moving from ``start`` to
    ``stop`` (px from the field centre) at each ``speed`` (px/frame) in each of ``directions`` (+1, -1), then the
    same bar flashed for ``flash_duration`` frames at ``flash_positions`` (px). ``respond`` is not needed (the
    movie does not depend on the cell); ``gap`` grey frames before each condition, ``window`` frames read after
    each event and ``max_frames`` the most frames attributed
    (:func:`~napari_retina.experiments.base.resolve_params`). Each value is checked here (one sentence when it is
    wrong).
    """
    speeds = [real_param(v, "speed", positive=True) for v in list_param(speed, "speed")]
    width = check_bar_width(real_param(width, "width", positive=True), size)
    intensity = real_param(intensity, "intensity")
    start = -(size / 2.0 + 5.0) if start is None else real_param(start, "start")
    stop = size / 2.0 + 5.0 if stop is None else real_param(stop, "stop")
    if start >= stop:
        raise ValueError(f"start ({start:g} px) must be smaller than stop ({stop:g} px); directions sets the way")
    if stop < -size / 2.0 or start > size / 2.0:
        raise ValueError(
            f"the bar's path from {start:g} to {stop:g} px never enters the model's {size}-pixel field "
            f"({-size / 2:g} to {size / 2:g} px)"
        )
    directions = list_param(directions, "directions")
    if any(d not in (1, -1) for d in directions):
        raise ValueError(f"directions must be +1 and/or -1, got {directions}")
    positions = (np.linspace(-size / 2.0, size / 2.0, 21).tolist() if flash_positions is None
                 else sorted(list_param(flash_positions, "flash_positions")))
    for pos in positions:
        check_position(pos, size, "flash position")
    flash_duration = int_param(flash_duration, "flash_duration", 1)
    crossing = (stop - start) / min(speeds)        # frames of the slowest bar's path (inf on overflow)
    check_movie_length(len(positions) * (gap + flash_duration + window)
                       + sum(len(directions) * (gap + (stop - start) / v + 1 + window) for v in speeds), size,
                       f"{len(positions)} flashed bars and {len(speeds) * len(directions)} bar crossings of "
                       f"{stop - start:g} px (the slowest, at {min(speeds):g} px/frame, "
                       f"{frame_count(crossing)} frames)")

    movie = Movie()
    for pos in positions:
        seg, ev = stimuli.flashed_bar(position=pos, width=width, duration=flash_duration, intensity=intensity,
                                      pre=gap, post=window, size=size, axis="x", return_events=True)
        onset = movie.t0 + int(ev["onset"])
        movie.add(seg, {"kind": "flash", "position": pos, "onset": onset, "window": window,
                        "duration": flash_duration}, (onset, onset + window))
    for v in speeds:
        for d in directions:
            a, b = (start, stop) if d > 0 else (stop, start)
            seg, ev = stimuli.moving_bar(speed=v, start=a, stop=b, width=width, intensity=intensity,
                                         pre=gap, post=window, size=size, axis="x", return_events=True)
            onset, offset = movie.t0 + int(ev["onset"]), movie.t0 + int(ev["offset"])
            # the whole crossing is attributed (thinned with the rest): fitting the reduced circuit only
            # around the response peak left it unconstrained elsewhere (explained variance over all
            # frames 0.53 versus 0.92 with the whole crossing, shipped model)
            movie.add(seg, {"kind": "moving", "direction": int(d), "speed": v, "x0": a, "width": width,
                            "onset": onset, "offset": offset, "window": window}, (onset, offset + window))
    # the model-derived defaults as numbers, so that the result's params say what ran
    return movie.protocol(history, max_frames, INVARIANCE, {"start": start, "stop": stop, "flash_positions": positions})


def rf_extent(positions: list, amplitudes: list) -> list:
    """[low, high] px: the receptive field that flashed bars at ``positions`` (px) map, to half height.

    From the best position outwards, on each side the half-height crossing, linearly interpolated between
    the last position whose amplitude (response above grey) is at least half of the best's and the first
    one below it; the outermost position on a side where none is below. A NaN amplitude counts as below
    half, with no value to interpolate to: that side ends at the last position at or above half. (The
    nearest position below half, as this returned before 2026-12-07, widened the field by up to a grid
    step: 2.5 px with the default 21 positions on a 50-px field.)
    """
    order = np.argsort(positions)
    pos = np.asarray(positions, dtype=np.float64)[order]
    amp = np.asarray(amplitudes, dtype=np.float64)[order]
    best = int(np.nanargmax(amp))
    half = amp[best] / 2.0
    below = ~(amp >= half)                                 # NaN: below

    def crossing(inner: int, outer: int) -> float:
        if not np.isfinite(amp[outer]):
            return float(pos[inner])
        return float(pos[inner] + (amp[inner] - half) / (amp[inner] - amp[outer]) * (pos[outer] - pos[inner]))

    low = next((i for i in range(best - 1, -1, -1) if below[i]), None)
    high = next((i for i in range(best + 1, len(amp)) if below[i]), None)
    return [float(pos[0]) if low is None else crossing(low + 1, low),
            float(pos[-1]) if high is None else crossing(high - 1, high)]


def lead_floor_um(width: float) -> float:
    """The least lead (µm) counted for a bar ``width`` px wide: :data:`EDGE_SHARE` of the way from its centre to
    its leading edge, and at least :data:`MIN_LEAD_UM` (27.5 µm for the default 2 px bar)."""
    return max(MIN_LEAD_UM, EDGE_SHARE * float(width) / 2.0 * PIXEL_UM)


def readout(response: np.ndarray, conditions: list) -> dict:
    """Motion-anticipation readout of a (T,) response; see the module docstring for the keys."""
    r = np.asarray(response, dtype=np.float64)
    flashes = [c for c in conditions if c["kind"] == "flash"]
    pos, amp, lat = [], [], []
    for c in flashes:
        base = baseline(r, c["start"], c["onset"])
        t, v = parabolic_peak(r, c["onset"], c["onset"] + c["window"])
        pos.append(c["position"])
        amp.append(v - base)
        lat.append((t - c["onset"]) * FRAME_MS)
    fin = np.asarray(amp, dtype=np.float64)
    fin = fin[np.isfinite(fin)]
    if fin.size and fin.max() > 0 and np.ptp(fin) > 0:
        rf = vertex3(pos, amp)
        flash_lat = float(lat[int(np.nanargmax(amp))])
        extent = rf_extent(pos, amp)
    else:  # no flashed position stands out (none above grey, or all equal): no centre to lead
        rf, flash_lat, extent = float("nan"), float("nan"), [float("nan")] * 2
    # a pure delay's: the flash latency less the flash's middle frame (its answer peaks there, the bar's at the delay)
    delay_frames = flash_lat / FRAME_MS - (flashes[0].get("duration", 1) - 1) / 2 if flashes else float("nan")
    dirs, speeds, peaks, bars, leads, heights, crossings = [], [], [], [], [], [], []
    moving = [c for c in conditions if c["kind"] == "moving"]
    envelopes = crossing_envelopes(r, [c["speed"] for c in moving])   # one per speed: directions share it
    for c in moving:
        crossing = 1.0 / c["speed"]
        envelope = envelopes[c["speed"]][0]
        t, v = parabolic_peak(envelope, c["onset"], c["offset"] + c["window"])
        x = c["x0"] + c["direction"] * c["speed"] * (t - c["onset"])
        dirs.append(c["direction"])
        speeds.append(c["speed"])
        crossings.append(crossing)
        peaks.append(t)
        bars.append(x)
        leads.append(c["direction"] * (rf - x))
        heights.append(v - baseline(r, c["start"], c["onset"]))
    speed_list = sorted(set(speeds))
    # the bar's width (conditions saved before 2026-12-08 hold none: theirs is the default's)
    floor = lead_floor_um(moving[0].get("width", DEFAULTS["width"]) if moving else DEFAULTS["width"])
    lead_per_speed = [float(np.mean([ld for ld, s in zip(leads, speeds) if s == v]) * PIXEL_UM) for v in speed_list]
    amp_per_speed = [float(np.min([h for h, s in zip(heights, speeds) if s == v])) for v in speed_list]
    lead_um = float(np.mean(leads) * PIXEL_UM) if leads else float("nan")
    inside = [bool(extent[0] <= x <= extent[1]) for x in bars]
    flash_peak = float(np.nanmax(amp)) if np.isfinite(np.asarray(amp, dtype=np.float64)).any() else float("nan")
    # per speed, the largest over the smallest lead of its directions (1 for one direction; inf when one is <= 0;
    # NaN when one is NaN, whatever the directions' order)
    ratio_per_speed = []
    for v in speed_list:
        ld = np.array([x for x, s in zip(leads, speeds) if s == v], dtype=np.float64)
        ratio_per_speed.append(float("nan") if np.isnan(ld).any()
                               else float(ld.max() / ld.min()) if ld.min() > 0 else float("inf"))
    clauses = {
        f"at least {MIN_SPEEDS} speeds (here {len(speed_list)})": len(speed_list) >= MIN_SPEEDS,
        f"a lead ≥ {floor:g} µm at every speed (nearer the bar's leading edge than its centre), mean over the "
        f"directions (here from {least(lead_per_speed):.3g} µm)": all(np.isfinite(ld) and ld >= floor
                                                                       for ld in lead_per_speed),
        f"ahead of the flashed-bar peak in every direction (here in {sum(bool(ld > 0) for ld in leads)} of "
        f"{len(leads)})": all(ld > 0 for ld in leads),
        f"the bar inside the flashed bars' receptive field (to half height) at every peak (here at "
        f"{sum(inside)} of {len(inside)})": all(inside),
        f"the moving bar answered ≥ {AMPLITUDE_FLOOR:g} spikes/bin above grey at every speed and direction (here "
        f"from {least(amp_per_speed):.3g})": all(np.isfinite(h) and h >= AMPLITUDE_FLOOR for h in amp_per_speed),
        f"the flashed bars answered ≥ {AMPLITUDE_FLOOR:g} spikes/bin above grey at the best position (here "
        f"{flash_peak:.3g})": bool(np.isfinite(flash_peak) and flash_peak >= AMPLITUDE_FLOOR),
        f"at each speed the two directions' leads within {MAX_LEAD_RATIO:g}× of each other (here up to "
        f"{-least(-q for q in ratio_per_speed):.3g}×)": all(q <= MAX_LEAD_RATIO for q in ratio_per_speed),
    }
    failed = unmet(clauses)
    return {
        "flash_positions": pos, "flash_amplitude": amp, "rf_center_px": rf, "rf_extent_px": extent,
        "flash_latency_ms": flash_lat, "directions": dirs, "speeds": speeds, "peak_frame": peaks,
        "bar_at_peak_px": bars, "inside_rf": inside,
        "lead_px_per_direction": leads, "lead_um_per_direction": [v * PIXEL_UM for v in leads],
        "moving_amplitude": heights, "speed_list": speed_list, "lead_um_per_speed": lead_per_speed,
        "moving_amplitude_per_speed": amp_per_speed, "lead_ratio_per_speed": ratio_per_speed,
        "flash_peak": flash_peak, "lead_um": lead_um,
        "lag_expected_um": [v * delay_frames * PIXEL_UM for v in speed_list], "crossing_frames": crossings,
        "lead_floor_um": floor, "present": not failed, "unmet": failed,
    }
