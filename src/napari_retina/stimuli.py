"""Stimulus generators for the model and the in-silico experiments.

Every generator returns a float32 ``(T, H, W)`` stack with ``H = W = size``
in contrast units: 0 is mean luminance, negative is dark, and the model's
training white noise has unit standard deviation. One frame is 10 ms and one
pixel is 55 µm (``nr.FRAME_MS``, ``nr.PIXEL_UM``). Deterministic stimuli
start with ``pre`` frames of mean grey so that a model with a 40-frame history
sees the whole event from a neutral state. Defaults follow METHOD.md §4.

Generators
----------
- :func:`white_noise` — binary or Gaussian checkerboard noise (seeded).
- :func:`contrast_switching` — white noise whose contrast switches between a high and a low level (seeded).
- :func:`naturalistic` — 1/f^alpha images with fixational jitter (seeded).
- :func:`flash` — one full-field flash.
- :func:`step` — a full-field luminance step.
- :func:`flash_train` — periodic full-field flashes with one omitted.
- :func:`moving_bar` — a bar drifting at constant speed.
- :func:`flashed_bar` — a bar flashed at one position.
- :func:`reversing_bar` — a bar that moves, reverses and comes back.
- :func:`reversing_grating` — a contrast-reversing square-wave grating.

Events
------
One pattern for event times: every generator takes ``return_events=False``;
with ``return_events=True`` it returns ``(stimulus, events)``, where
``events`` is a dict of frame indices and positions (flash onsets, the
omitted flash's expected onset, the bar-centre position on every frame, the
reversal frame...). Frame indices index the stimulus' first axis; positions
are in pixels along the bar's motion axis, relative to the field centre
(pixel ``j`` has its centre at ``j - (size - 1) / 2``). The keys of each dict
are listed in its generator's docstring. :func:`crossing_frames` turns a bar's
``position`` trace into the (fractional) frames at which it crosses a given
position.

Example
-------
>>> import napari_retina as nr
>>> stim, ev = nr.stimuli.flash_train(period=6, return_events=True)
>>> stim.shape, stim.dtype, ev["omitted"]
((154, 50, 50), dtype('float32'), 88)
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np

from ._progress import Progress, report
from ._validate import (FLOAT32_MAX, as_real_array, check_bool, check_int, check_movie_fits, check_positive,
                        check_real, is_real)

__all__ = [
    "white_noise",
    "contrast_switching",
    "naturalistic",
    "flash",
    "step",
    "flash_train",
    "moving_bar",
    "flashed_bar",
    "reversing_bar",
    "reversing_grating",
    "crossing_frames",
]

Result = Union[np.ndarray, tuple[np.ndarray, dict]]
"""A stimulus, or ``(stimulus, events)`` when ``return_events=True``."""

NOISE_CHUNK_VALUES = 2**20
"""Checker values :func:`white_noise` draws at a time (8 MiB of float64): the memory beyond the movie, and how
often it reports progress (every 419 frames of a 50×50 field of 1 px checkers)."""
#: the largest spectral exponent of :func:`naturalistic` (beyond it the coarsest frequencies hold all the power;
#: far beyond it ``f ** -alpha`` overflows float64)
MAX_ALPHA = 4.0

#: the widest bar of :func:`reversing_grating`, pixels: any wider grating shows at most one bar boundary in the
#: field, as one this wide does (and 2·bar_width stays far from overflowing, positions exact to ~1e-10 px)
MAX_BAR_WIDTH = 1e6


# ---------------------------------------------------------------------------
# helpers

def _check_contrast(value, name: str = "contrast") -> float:
    """A contrast scale: a finite number in (0, float32's largest], or a clear error (stimuli are float32)."""
    return check_real(value, name, low=0, strict=True, float32=True)


def _check_peak(peak: float, contrast: float, what: str) -> None:
    """Refuse a movie whose largest |value| ``peak`` (float64, before the cast) overflows float32, naming contrast.

    For generators whose values are ``contrast`` times Gaussian draws: a
    contrast within float32 can still give a few values beyond it.
    """
    if not peak <= FLOAT32_MAX:
        raise ValueError(f"contrast {contrast:g} makes {what} reach {peak:.3g}, beyond float32 "
                         f"(|value| <= {FLOAT32_MAX:.3g}), the precision stimuli are kept in; use a few contrast units")


def _check_axis(axis) -> str:
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' (bar uniform along y, moving along x) or 'y', got {axis!r}")
    return axis


def _check_bar(width, intensity, pre, post, size, axis) -> tuple:
    """The checks every bar generator makes: (width, intensity, pre, post, size, axis)."""
    return (check_positive(width, "width"), check_real(intensity, "intensity", float32=True), check_int(pre, "pre", 0),
            check_int(post, "post", 0), check_int(size, "size", 1), _check_axis(axis))


def _out(stim: np.ndarray, events: dict, return_events: bool) -> Result:
    return (stim, events) if return_events else stim


def _bar_profile(centres: np.ndarray, width: float, size: int) -> np.ndarray:
    """Area-weighted coverage (T, size) of a bar of ``width`` px centred at ``centres``.

    Pixel ``j`` spans ``[j - size/2, j + 1 - size/2]``; its value is the length
    of its overlap with ``[c - width/2, c + width/2]`` (0..1). NaN centres mean
    no bar. Summed over pixels, the coverage is ``width`` whenever the bar is
    inside the field.
    """
    left = np.arange(size) - size / 2.0
    c = np.where(np.isfinite(centres), centres, np.inf)[:, None]
    cover = np.minimum(c + width / 2.0, left + 1.0) - np.maximum(c - width / 2.0, left)
    return np.clip(cover, 0.0, 1.0)


def _profile_movie(profile: np.ndarray, axis: str) -> np.ndarray:
    """Broadcast a (T, size) profile along the other axis to float32 (T, size, size)."""
    t, n = profile.shape
    prof = profile.astype(np.float32)
    shape = (t, 1, n) if axis == "x" else (t, n, 1)
    return np.ascontiguousarray(np.broadcast_to(prof.reshape(shape), (t, n, n)))


def _check_bar_visible(lo: float, hi: float, width: float, size: int, what: str) -> None:
    if hi + width / 2.0 <= -size / 2.0 or lo - width / 2.0 >= size / 2.0:
        raise ValueError(
            f"{what} lies entirely outside the field (pixels {-size / 2:g} to {size / 2:g} "
            f"from the centre), so the bar is never seen"
        )


def _full_field(values: np.ndarray, size: int) -> np.ndarray:
    """Float32 (T, size, size) stack whose frame t is uniform at ``values[t]``."""
    v = np.asarray(values, dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(v[:, None, None], (v.shape[0], size, size)))


# ---------------------------------------------------------------------------
# noise

def _check_grey(grey) -> float:
    """``grey`` of :func:`white_noise`: the probability in [0, 1) that a frame is grey, or a clear error."""
    if not is_real(grey) or not 0.0 <= grey < 1.0:
        raise ValueError(f"grey must be a probability in [0, 1), got {grey!r}")
    return float(grey)


def _checkerboard(grid: np.ndarray, checker: int, size: int) -> np.ndarray:
    """The (T, size, size) movie of a (T, n, n) grid of checkers ``checker`` px wide, cut at the field edge.

    Pixel ``(y, x)`` shows checker ``(y // checker, x // checker)``: one copy of
    the grid's values, O(T·size²) whatever ``checker``.
    """
    cell = np.arange(size) // checker
    return np.ascontiguousarray(grid[:, cell[:, None], cell[None, :]])


def white_noise(
    frames: int = 1000,
    size: int = 50,
    seed: int = 0,
    *,
    kind: Literal["binary", "gaussian"] = "binary",
    contrast: float = 1.0,
    checker: int = 1,
    grey: float = 0.0,
    return_events: bool = False,
    progress: Optional[Progress] = None,
) -> Result:
    """Spatiotemporal white-noise checkerboard.

    Each checker (``checker × checker`` pixels) takes an independent value
    on every frame: ``±contrast`` with equal probability (``kind="binary"``)
    or Normal(0, contrast²) (``kind="gaussian"``). Checkers cut by the field
    edge are kept partially. With ``grey > 0`` each frame is instead left at
    mean luminance (0) with probability ``grey``, independently ("sparse"
    noise: frames stay independent, so it is still white in time, and it has
    the grey stretches, isolated frames and onsets from grey that flashes and
    bars on a grey background are made of).

    Parameters
    ----------
    frames : number of frames T (10 ms each).
    size : field side H = W in pixels (55 µm each).
    seed : non-negative int; the same seed gives the same movie.
    kind : "binary" or "gaussian".
    contrast : standard deviation of every pixel on the frames that are not grey, contrast units (> 0;
        over the whole movie contrast·√(1 − grey)); a Gaussian value beyond float32 is refused.
    checker : checker side in pixels (>= 1; one as wide as the field or wider flickers the whole field).
    grey : probability in [0, 1) that a frame is grey (0: classic white noise;
        the checkers are drawn first, so the non-grey frames do not depend on it).
    return_events : also return ``{}`` (white noise has no events).
    progress : optional ``progress(done, total)`` in frames, called after each chunk of frames
        (:data:`NOISE_CHUNK_VALUES` checker values); it may raise to cancel.

    Returns
    -------
    float32 (frames, size, size), contrast units. Drawn chunk by chunk into the result (the
    same draws as at once), so the memory it takes beyond the movie is one chunk's.

    Example
    -------
    >>> s = white_noise(frames=100, size=50, seed=1)
    >>> s.shape, sorted(set(s.ravel().tolist()))
    ((100, 50, 50), [-1.0, 1.0])
    """
    frames = check_int(frames, "frames", 1)
    size = check_int(size, "size", 1)
    seed = check_int(seed, "seed", 0)
    contrast = _check_contrast(contrast)
    checker = check_int(checker, "checker", 1)
    if kind not in ("binary", "gaussian"):
        raise ValueError(f"kind must be 'binary' or 'gaussian', got {kind!r}")
    grey = _check_grey(grey)
    check_movie_fits(frames, size, f"white noise with frames={frames:,}")
    # a checker wider than the field is one checker covering it (full-field flicker): the same draws
    checker = min(checker, size)
    rng = np.random.default_rng(seed)
    n = -(-size // checker)
    movie = np.empty((frames, size, size), np.float32)
    chunk = max(1, NOISE_CHUNK_VALUES // (n * n))
    for t0 in range(0, frames, chunk):   # the generator's stream in order: the same draws as one (frames, n, n)
        m = min(chunk, frames - t0)
        if kind == "binary":
            grid = np.where(rng.random((m, n, n)) < 0.5, -contrast, contrast)
        else:
            grid = contrast * rng.standard_normal((m, n, n))
            _check_peak(max(float(grid.max()), -float(grid.min())), contrast, "Gaussian noise values")
        movie[t0 : t0 + m] = _checkerboard(grid.astype(np.float32), checker, size)
        report(progress, t0 + m, frames)
    if grey > 0:   # drawn after every checker, as before chunks
        movie[rng.random(frames) < grey] = 0.0
    return _out(movie, {}, return_events)


def contrast_switching(
    frames: int = 1000,
    size: int = 50,
    seed: int = 0,
    *,
    contrast: float = 2.0,
    low_contrast: float = 0.25,
    duration: int = 100,
    order: Literal["alternate", "random"] = "alternate",
    kind: Literal["binary", "gaussian"] = "binary",
    checker: int = 4,
    grey: float = 0.5,
    return_events: bool = False,
) -> Result:
    """White noise whose contrast switches between a high and a low level (Baccus & Meister 2002).

    :func:`white_noise` of unit contrast (same ``seed``, ``kind``, ``checker``
    and ``grey``) scaled frame by frame: ``contrast`` for the first
    ``duration`` frames, ``low_contrast`` for the next ``duration``, and so on.
    The stimulus of contrast adaptation: a retina's gain falls over a high
    stretch and recovers over a low one, so what follows a switch shows the
    gain's slow state, which steady noise never varies. With ``order="random"``
    each stretch's level is drawn log-uniformly between ``low_contrast`` and
    ``contrast`` instead (random contrast steps: every contrast in the range,
    each after every other).

    Parameters
    ----------
    frames : number of frames T (10 ms each).
    size : field side H = W in pixels (55 µm each).
    seed : non-negative int; the same seed gives the same movie.
    contrast : the high level: standard deviation of every pixel on the frames that are not grey, contrast
        units (> 0; with ``grey`` over a stretch: contrast·√(1 − grey)).
    low_contrast : the low level, contrast units (>= 0; 0 leaves the low stretches grey).
    duration : frames at each level before it switches (>= 1; 100 = 1 s).
    order : "alternate" (high, low, high, ...) or "random" (each stretch log-uniform in
        [low_contrast, contrast], which must then be > 0; the levels' draw has its own
        stream of ``seed``, so the noise is the same as with "alternate").
    kind : "binary" or "gaussian" (see :func:`white_noise`).
    checker : checker side in pixels (>= 1).
    grey : probability in [0, 1) that a frame is grey (see :func:`white_noise`).
    return_events : also return the events.

    Returns
    -------
    float32 (frames, size, size), contrast units; with ``return_events``, also
    ``{"onsets": frames where a stretch starts, "contrast": the level of every
    frame}`` and, with ``order="alternate"``, ``"high_onsets"`` and
    ``"low_onsets"``: the frames where the high and the low level start.

    Example
    -------
    >>> s, ev = contrast_switching(frames=400, duration=100, return_events=True)
    >>> ev["high_onsets"].tolist(), ev["low_onsets"].tolist()
    ([0, 200], [100, 300])
    """
    frames = check_int(frames, "frames", 1)
    contrast = _check_contrast(contrast)
    low_contrast = check_real(low_contrast, "low_contrast", float32=True)
    if not 0.0 <= low_contrast <= contrast:
        raise ValueError(f"low_contrast must be in [0, contrast] = [0, {contrast:g}], got {low_contrast:g}")
    # a stretch as long as the movie or longer is the same one stretch (and a huge int stays out of numpy)
    duration = min(check_int(duration, "duration", 1), frames)
    if order not in ("alternate", "random"):
        raise ValueError(f"order must be 'alternate' or 'random', got {order!r}")
    if order == "random" and low_contrast <= 0.0:
        raise ValueError(f"order 'random' draws levels log-uniformly: low_contrast must be > 0, got {low_contrast:g}")
    # unit-contrast noise, a fresh array of ours: scaled in place (no second copy of the movie)
    stim = white_noise(frames, size, seed, kind=kind, contrast=1.0, checker=checker, grey=grey)
    stretch = np.arange(frames) // duration
    if order == "alternate":
        levels = np.where(np.arange(stretch[-1] + 1) % 2 == 0, contrast, low_contrast)
    else:   # a stream of its own (seed, 1): white_noise's draws stay those of default_rng(seed)
        log_lo, log_hi = np.log(low_contrast), np.log(contrast)
        levels = np.exp(np.random.default_rng([seed, 1]).uniform(log_lo, log_hi, stretch[-1] + 1))
    level = levels[stretch]
    if kind == "gaussian":
        _check_peak(max(float(stim.max()), -float(stim.min())) * contrast, contrast, "Gaussian noise values")
    stim *= level.astype(np.float32)[:, None, None]
    starts = np.arange(0, frames, duration)
    events = {"onsets": starts, "contrast": level}
    if order == "alternate":
        events.update(high_onsets=starts[0::2], low_onsets=starts[1::2])
    return _out(stim, events, return_events)


def naturalistic(
    frames: int = 1000,
    size: int = 50,
    seed: int = 0,
    *,
    alpha: float = 1.0,
    fixation: int = 100,
    jitter: float = 0.25,
    contrast: float = 1.0,
    return_events: bool = False,
    progress: Optional[Progress] = None,
) -> Result:
    """Naturalistic movie: 1/f^alpha images seen through fixational jitter.

    A new random image appears every ``fixation`` frames (a saccade). Each
    image is a Gaussian random field on a ``2·size`` periodic canvas whose
    amplitude spectrum falls as ``1/f^alpha`` (``alpha=1``: the power
    spectrum ``1/f²`` of natural scenes). During a fixation the image drifts
    by a Gaussian random walk (step s.d. ``jitter`` px per frame, starting at
    zero offset at each saccade); the sub-pixel shift is applied exactly in
    the Fourier domain and the central ``size × size`` window is shown. The
    whole movie is then scaled to mean 0 and standard deviation ``contrast``.

    Parameters
    ----------
    frames : number of frames T (10 ms each).
    size : field side in pixels (55 µm each).
    seed : non-negative int; the same seed gives the same movie.
    alpha : spectral exponent of the amplitude spectrum, in [0, 4] (``MAX_ALPHA``; at 4
        the power falls as 1/f^8 and the coarsest frequencies hold nearly all of it).
    fixation : frames per image (>= 1); default 100 (1 s).
    jitter : random-walk step s.d. in pixels per frame (>= 0; 0 holds the image still).
    contrast : standard deviation of the movie, contrast units (> 0; a value beyond
        float32 is refused).
    return_events : also return ``{"image_onsets": int array of the frames
        where a new image starts, "offsets": float64 (T, 2) image displacement
        (dy, dx) in pixels on each frame}``.
    progress : optional ``progress(done, total)`` in frames, called after the images of every
        hundredth of the movie or more (each image after 1 % of the frames); it may raise to cancel.

    Returns
    -------
    float32 (frames, size, size), contrast units.

    Example
    -------
    >>> s, ev = naturalistic(frames=200, size=50, seed=0, return_events=True)
    >>> s.shape, ev["image_onsets"].tolist()
    ((200, 50, 50), [0, 100])
    """
    frames = check_int(frames, "frames", 1)
    size = check_int(size, "size", 1)
    seed = check_int(seed, "seed", 0)
    alpha = check_real(alpha, "alpha", float32=True)
    if not 0 <= alpha <= MAX_ALPHA:
        raise ValueError(f"alpha must be in [0, {MAX_ALPHA:g}] (an amplitude spectrum 1/f^alpha falling with "
                         f"frequency; natural scenes have about 1), got {alpha}")
    fixation = check_int(fixation, "fixation", 1)
    jitter = check_real(jitter, "jitter", float32=True)
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0 pixels per frame, got {jitter}")
    contrast = _check_contrast(contrast)
    check_movie_fits(frames, size, f"a naturalistic movie with frames={frames:,}")

    rng = np.random.default_rng(seed)
    n = 2 * size
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    amp = f ** -alpha
    amp[0, 0] = 0.0  # no mean: the mean luminance is 0 contrast
    lo = (n - size) // 2

    onsets = np.arange(0, frames, fixation)
    offsets = np.zeros((frames, 2))
    movie = np.empty((frames, size, size))
    reported, every = 0, max(1, frames // 100)
    for t0 in onsets:
        m = min(fixation, frames - t0)
        spec = np.fft.fft2(rng.standard_normal((n, n))) * amp
        steps = jitter * rng.standard_normal((m, 2))
        steps[0] = 0.0
        d = np.cumsum(steps, axis=0)
        offsets[t0 : t0 + m] = d
        shift = np.exp(-2j * np.pi * (fy[None] * d[:, 0, None, None] + fx[None] * d[:, 1, None, None]))
        img = np.fft.ifft2(spec[None] * shift).real
        movie[t0 : t0 + m] = img[:, lo : lo + size, lo : lo + size]
        if t0 + m - reported >= every or t0 + m == frames:
            reported = t0 + m
            report(progress, reported, frames)
    mean, std = movie.mean(), movie.std()
    if std > 0:
        _check_peak(contrast * max(float(movie.max()) - mean, mean - float(movie.min())) / std, contrast,
                    "the movie's values")
    movie = (movie - mean) * (contrast / std if std > 0 else 0.0)
    events = {"image_onsets": onsets, "offsets": offsets}
    return _out(movie.astype(np.float32), events, return_events)


# ---------------------------------------------------------------------------
# full-field

def flash(
    intensity: float = -2.0,
    duration: int = 2,
    pre: int = 40,
    post: int = 60,
    size: int = 50,
    *,
    return_events: bool = False,
) -> Result:
    """One full-field flash on mean grey.

    ``pre`` grey frames, ``duration`` frames at ``intensity``, ``post`` grey
    frames. METHOD.md §4 (latency coding): 2-frame flashes of 0 to −10.

    Parameters
    ----------
    intensity : flash contrast (negative = dark; 0 allowed, a blank trial).
    duration : flash length in frames (>= 1; 10 ms each).
    pre, post : grey frames before and after the flash (>= 0).
    size : field side in pixels.
    return_events : also return ``{"onset": pre, "offset": pre + duration}``
        (first flash frame, first frame after it).

    Returns
    -------
    float32 (pre + duration + post, size, size), contrast units.

    Example
    -------
    >>> s, ev = flash(intensity=-4.0, return_events=True)
    >>> s.shape, ev, float(s[ev["onset"], 0, 0])
    ((102, 50, 50), {'onset': 40, 'offset': 42}, -4.0)
    """
    intensity = check_real(intensity, "intensity", float32=True)
    duration = check_int(duration, "duration", 1)
    pre = check_int(pre, "pre", 0)
    post = check_int(post, "post", 0)
    size = check_int(size, "size", 1)
    check_movie_fits(pre + duration + post, size, f"a flash with pre={pre:,}, duration={duration:,}, post={post:,}")
    values = np.zeros(pre + duration + post)
    values[pre : pre + duration] = intensity
    return _out(_full_field(values, size), {"onset": pre, "offset": pre + duration}, return_events)


def step(
    intensity: float = -1.0,
    pre: int = 40,
    post: int = 60,
    size: int = 50,
    *,
    return_events: bool = False,
) -> Result:
    """A full-field luminance step from mean grey to ``intensity``.

    ``pre`` grey frames, then ``post`` frames at ``intensity`` (the step
    stays on until the end). METHOD.md §4: darkening steps of 0 to −2.

    Parameters
    ----------
    intensity : contrast after the step (negative = darker).
    pre : grey frames before the step (>= 0).
    post : frames at ``intensity`` (>= 1).
    size : field side in pixels.
    return_events : also return ``{"onset": pre}`` (first frame of the step).

    Returns
    -------
    float32 (pre + post, size, size), contrast units.

    Example
    -------
    >>> s, ev = step(intensity=-2.0, return_events=True)
    >>> s.shape, ev, float(s[-1].mean())
    ((100, 50, 50), {'onset': 40}, -2.0)
    """
    intensity = check_real(intensity, "intensity", float32=True)
    pre = check_int(pre, "pre", 0)
    post = check_int(post, "post (the frames after the step)", 1)
    size = check_int(size, "size", 1)
    check_movie_fits(pre + post, size, f"a step with pre={pre:,}, post={post:,}")
    values = np.zeros(pre + post)
    values[pre:] = intensity
    return _out(_full_field(values, size), {"onset": pre}, return_events)


def flash_train(
    period: int = 6,
    n_flashes: int = 8,
    omit: bool = True,
    intensity: float = -2.0,
    duration: int = 2,
    pre: int = 40,
    post: int = 60,
    size: int = 50,
    *,
    return_events: bool = False,
) -> Result:
    """Periodic full-field flashes with the last one omitted (omitted-stimulus response).

    Flashes of ``duration`` frames start every ``period`` frames from frame
    ``pre``: ``n_flashes`` flashes, then one slot of ``period`` frames where
    the next flash would start; with ``omit=True`` that slot stays grey, with
    ``omit=False`` it holds one more flash (the control train). ``post`` grey
    frames follow the slot. METHOD.md §4: 2-frame flashes of −2 every 2–8
    frames, ~8 flashes then one omitted.

    Parameters
    ----------
    period : frames from one flash onset to the next (>= duration; 10 ms each).
    n_flashes : flashes before the omission (>= 1).
    omit : leave out the flash after the ``n_flashes``-th.
    intensity : flash contrast (negative = dark).
    duration : flash length in frames (1..period).
    pre : grey frames before the first flash (>= 0).
    post : grey frames after the omitted slot (>= 0).
    size : field side in pixels.
    return_events : also return ``{"onsets": int array of the onsets of the
        flashes shown, "omitted": onset the omitted flash would have had
        (``pre + n_flashes * period``), or None when ``omit=False``,
        "period": period}``.

    Returns
    -------
    float32 (pre + (n_flashes + 1) * period + post, size, size), contrast units.

    Example
    -------
    >>> s, ev = flash_train(period=4, n_flashes=3, return_events=True)
    >>> ev["onsets"].tolist(), ev["omitted"], s.shape[0]
    ([40, 44, 48], 52, 116)
    """
    period = check_int(period, "period", 1)
    n_flashes = check_int(n_flashes, "n_flashes", 1)
    intensity = check_real(intensity, "intensity", float32=True)
    duration = check_int(duration, "duration", 1)
    if duration > period:
        raise ValueError(f"duration ({duration} frames) must not exceed period ({period} frames), or flashes overlap")
    pre = check_int(pre, "pre", 0)
    post = check_int(post, "post", 0)
    size = check_int(size, "size", 1)
    omit = check_bool(omit, "omit")
    slot = pre + n_flashes * period
    check_movie_fits(slot + period + post, size, f"a flash train of n_flashes={n_flashes:,} at period={period:,} "
                     f"with pre={pre:,}, post={post:,}")
    onsets = pre + period * np.arange(n_flashes + (0 if omit else 1))
    values = np.zeros(slot + period + post)
    for t in onsets:
        values[t : t + duration] = intensity
    events = {"onsets": onsets, "omitted": int(slot) if omit else None, "period": period}
    return _out(_full_field(values, size), events, return_events)


# ---------------------------------------------------------------------------
# bars and gratings

def moving_bar(
    speed: float = 0.08,
    start: float = -30.0,
    stop: float = 30.0,
    width: float = 2.0,
    intensity: float = -1.0,
    pre: int = 40,
    post: int = 0,
    size: int = 50,
    axis: str = "x",
    *,
    return_events: bool = False,
) -> Result:
    """A bar drifting at constant speed (motion anticipation).

    The bar is uniform along the other axis and ``width`` px wide; its centre
    is at ``start + speed·k`` on the k-th frame of motion (moving towards
    ``stop``), for as many frames as it takes to reach ``stop``. Edges are
    area-weighted (a pixel half covered gets half the intensity), so
    sub-pixel motion is smooth and the bar's summed contrast is
    ``intensity·width`` on every frame it is fully inside the field. METHOD.md
    §4: a dark 2 px bar at 0.08 px/frame (0.44 mm/s) from −30 to 30 px.
    ``intensity=-1`` is a bar as dark as a black checker of the unit white
    noise the model was trained on.

    Parameters
    ----------
    speed : pixels per frame (> 0); the direction is from ``start`` to ``stop``.
    start, stop : first and last bar-centre positions, pixels from the field centre.
    width : bar width in pixels (> 0).
    intensity : bar contrast (negative = dark bar).
    pre, post : grey frames before and after the motion (>= 0).
    size : field side in pixels.
    axis : "x" (bar uniform along y, moving along x) or "y".
    return_events : also return ``{"onset": first frame of motion,
        "offset": first frame after it, "position": float64 (T,) bar-centre
        position in pixels, NaN on grey frames}``; see :func:`crossing_frames`.

    Returns
    -------
    float32 (pre + n_motion + post, size, size), contrast units, with
    ``n_motion = floor(|stop - start| / speed) + 1``.

    Example
    -------
    >>> s, ev = moving_bar(return_events=True)
    >>> s.shape, float(crossing_frames(ev["position"], 0.0)[0])
    ((791, 50, 50), 415.0)
    """
    speed = check_positive(speed, "speed")
    start = check_real(start, "start", float32=True)
    stop = check_real(stop, "stop", float32=True)
    if start == stop:
        raise ValueError(f"start and stop must differ for the bar to move, got {start} for both")
    width, intensity, pre, post, size, axis = _check_bar(width, intensity, pre, post, size, axis)
    _check_bar_visible(min(start, stop), max(start, stop), width, size, f"the bar's path from {start:g} to {stop:g} px")
    span = abs(stop - start) / speed  # frames of travel (inf when the division overflows)
    check_movie_fits(pre + span + post, size, f"a bar moving {abs(stop - start):g} px at speed {speed:g} px/frame")
    n = int(np.floor(span + 1e-9)) + 1
    position = np.full(pre + n + post, np.nan)
    position[pre : pre + n] = start + np.sign(stop - start) * speed * np.arange(n)
    stim = _profile_movie(intensity * _bar_profile(position, width, size), axis)
    return _out(stim, {"onset": pre, "offset": pre + n, "position": position}, return_events)


def flashed_bar(
    position: float = 0.0,
    width: float = 2.0,
    duration: int = 2,
    intensity: float = -1.0,
    pre: int = 40,
    post: int = 60,
    size: int = 50,
    axis: str = "x",
    *,
    return_events: bool = False,
) -> Result:
    """A bar flashed at one position (the control for motion anticipation).

    Same bar as :func:`moving_bar` (area-weighted edges), shown still at
    ``position`` for ``duration`` frames between grey. METHOD.md §4:
    2-frame flashed bars at −25…25 px.

    Parameters
    ----------
    position : bar-centre position, pixels from the field centre.
    width : bar width in pixels (> 0).
    duration : frames the bar is shown (>= 1).
    intensity : bar contrast (negative = dark bar).
    pre, post : grey frames before and after (>= 0).
    size : field side in pixels.
    axis : "x" (bar uniform along y, placed along x) or "y".
    return_events : also return ``{"onset": pre, "offset": pre + duration,
        "position": float64 (T,) bar centre, NaN on grey frames}``.

    Returns
    -------
    float32 (pre + duration + post, size, size), contrast units.

    Example
    -------
    >>> s = flashed_bar(position=-10.0)
    >>> s.shape, float(s[40].sum(axis=0).sum() / 50)
    ((102, 50, 50), -2.0)
    """
    position = check_real(position, "position", float32=True)
    width, intensity, pre, post, size, axis = _check_bar(width, intensity, pre, post, size, axis)
    duration = check_int(duration, "duration", 1)
    _check_bar_visible(position, position, width, size, f"a bar at {position:g} px")
    check_movie_fits(pre + duration + post, size,
                     f"a flashed bar with pre={pre:,}, duration={duration:,}, post={post:,}")
    trace = np.full(pre + duration + post, np.nan)
    trace[pre : pre + duration] = position
    stim = _profile_movie(intensity * _bar_profile(trace, width, size), axis)
    return _out(stim, {"onset": pre, "offset": pre + duration, "position": trace}, return_events)


def reversing_bar(
    reversal: float = 0.0,
    speed: float = 0.19,
    start: float = -25.0,
    width: float = 2.0,
    intensity: float = -1.0,
    pre: int = 40,
    post: int = 0,
    size: int = 50,
    axis: str = "x",
    *,
    return_events: bool = False,
) -> Result:
    """A bar that moves to ``reversal``, reverses and moves back (motion reversal).

    The bar moves at ``speed`` from ``start`` towards ``reversal``, is there
    on exactly one frame (the reversal frame), then moves back the same way
    for as many frames as it came. ``start`` is moved by less than half a
    frame's travel so that the bar sits exactly at ``reversal`` on an integer
    frame. Edges are area-weighted as in :func:`moving_bar`. METHOD.md §4:
    ~0.19 px/frame, reversing at one of 12 positions −9…2 px.

    Parameters
    ----------
    reversal : bar-centre position at the reversal, pixels from the field centre.
    speed : pixels per frame (> 0).
    start : approximate starting position, pixels (at least half a frame's travel from ``reversal``).
    width : bar width in pixels (> 0).
    intensity : bar contrast (negative = dark bar).
    pre, post : grey frames before and after the motion (>= 0).
    size : field side in pixels.
    axis : "x" (bar uniform along y, moving along x) or "y".
    return_events : also return ``{"onset": first frame of motion,
        "reversal_frame": frame the bar is at ``reversal``, "reversal_position":
        reversal, "offset": first frame after the motion, "position": float64
        (T,) bar centre, NaN on grey frames}``.

    Returns
    -------
    float32 (pre + 2·n + 1 + post, size, size), contrast units, with
    ``n = round(|reversal - start| / speed)`` frames each way.

    Example
    -------
    >>> s, ev = reversing_bar(reversal=-5.0, return_events=True)
    >>> ev["reversal_frame"], float(ev["position"][ev["reversal_frame"]])
    (145, -5.0)
    """
    reversal = check_real(reversal, "reversal", float32=True)
    speed = check_positive(speed, "speed")
    start = check_real(start, "start", float32=True)
    width, intensity, pre, post, size, axis = _check_bar(width, intensity, pre, post, size, axis)
    _check_bar_visible(reversal, reversal, width, size, f"the reversal position {reversal:g} px")
    span = abs(reversal - start) / speed  # frames from start to the reversal (inf when the division overflows)
    check_movie_fits(pre + 2 * span + post, size,
                     f"a bar reversing after {abs(reversal - start):g} px at speed {speed:g} px/frame")
    n = int(round(span))
    if n < 1:
        raise ValueError(
            f"start ({start:g} px) must be at least half a frame's travel ({speed / 2:g} px) "
            f"away from reversal ({reversal:g} px)"
        )
    k = np.arange(2 * n + 1)
    position = np.full(pre + 2 * n + 1 + post, np.nan)
    position[pre : pre + 2 * n + 1] = reversal - np.sign(reversal - start) * speed * np.abs(n - k)
    stim = _profile_movie(intensity * _bar_profile(position, width, size), axis)
    events = {
        "onset": pre,
        "reversal_frame": pre + n,
        "reversal_position": reversal,
        "offset": pre + 2 * n + 1,
        "position": position,
    }
    return _out(stim, events, return_events)


def reversing_grating(
    bar_width: float = 4.0,
    period: int = 50,
    frames: int = 400,
    phase: float = 0.0,
    contrast: float = 1.0,
    pre: int = 40,
    size: int = 50,
    axis: str = "x",
    *,
    return_events: bool = False,
) -> Result:
    """A contrast-reversing square-wave grating (frequency doubling, F2/F1).

    Bars ``bar_width`` px wide alternate between ``+contrast`` and
    ``-contrast`` (spatial period ``2·bar_width``); the whole pattern flips
    sign every ``period`` frames. A bar boundary sits at ``-phase`` px from
    the field centre, with a bright bar to its right (larger x). Pixels cut
    by a boundary take their area-weighted mean, so any sub-pixel phase is
    rendered exactly. ``pre`` grey frames come first.

    Parameters
    ----------
    bar_width : width of each bar in pixels, in (0, 1e6] (``MAX_BAR_WIDTH``).
    period : frames between reversals (>= 1); default 50 (a 1 Hz reversal cycle).
    frames : grating frames after ``pre`` (>= 1).
    phase : spatial shift of the pattern in pixels (read modulo the spatial period ``2·bar_width``).
    contrast : bar contrast (> 0, within float32).
    pre : grey frames before the grating (>= 0).
    size : field side in pixels.
    axis : "x" (bars uniform along y, alternating along x) or "y".
    return_events : also return ``{"onset": pre, "reversals": int array of
        the frames where the sign flips, "sign": int8 (T,) sign of the
        pattern on each frame (0 on grey frames)}``.

    Returns
    -------
    float32 (pre + frames, size, size), contrast units.

    Example
    -------
    >>> s, ev = reversing_grating(period=10, frames=40, return_events=True)
    >>> s.shape, ev["reversals"].tolist()
    ((80, 50, 50), [50, 60, 70])
    """
    bar_width = check_positive(bar_width, "bar_width")
    if bar_width > MAX_BAR_WIDTH:
        raise ValueError(f"bar_width must be at most {MAX_BAR_WIDTH:g} pixels (any wider grating shows at most one "
                         f"bar boundary in the field, as one that wide does), got {bar_width:g}")
    period = check_int(period, "period", 1)
    frames = check_int(frames, "frames", 1)
    period = min(period, frames)   # no reversal within the frames either way (and a huge int stays out of numpy)
    phase = check_real(phase, "phase", float32=True)
    contrast = _check_contrast(contrast)
    pre = check_int(pre, "pre", 0)
    size = check_int(size, "size", 1)
    axis = _check_axis(axis)

    w = bar_width

    def integral(u):  # ∫_0^u of the ±1 square wave (+1 on [0, w)): a triangle wave
        return w - np.abs(np.mod(u, 2 * w) - w)

    # the pattern repeats every 2w px: the phase modulo 2w (exact) keeps pixel positions exact for any phase
    left = np.arange(size) - size / 2.0 + np.mod(phase, 2 * w)
    pattern = integral(left + 1.0) - integral(left)  # area-weighted, in [-1, 1]
    check_movie_fits(pre + frames, size, f"a reversing grating with pre={pre:,}, frames={frames:,}")
    sign = np.zeros(pre + frames, dtype=np.int8)
    sign[pre:] = np.where((np.arange(frames) // period) % 2 == 0, 1, -1)
    stim = _profile_movie(contrast * sign[:, None] * pattern[None, :], axis)
    events = {"onset": pre, "reversals": pre + np.arange(period, frames, period), "sign": sign}
    return _out(stim, events, return_events)


# ---------------------------------------------------------------------------
# events

def crossing_frames(position: np.ndarray, x: float) -> np.ndarray:
    """Fractional frames at which a bar-centre trace passes position ``x``.

    Linear interpolation between consecutive frames with finite positions
    (exact for constant-speed motion); every frame on which the bar sits
    exactly at ``x`` (a reversal there, say) is reported as that frame.

    Parameters
    ----------
    position : (T,) bar-centre positions in pixels, NaN where no bar
        (the ``"position"`` event of the bar generators).
    x : position in pixels from the field centre.

    Returns
    -------
    float64 (k,) frames, ascending; empty when the bar never crosses ``x``.

    Example
    -------
    >>> _, ev = moving_bar(speed=0.5, start=-10.0, stop=10.0, return_events=True)
    >>> crossing_frames(ev["position"], 2.25).tolist()
    [64.5]
    """
    p = as_real_array(position, "position must be a (T,) trace of bar positions in pixels",
                      "position must hold real numbers (pixels, NaN where no bar)").astype(np.float64)
    if p.ndim != 1:
        raise ValueError(f"position must be a (T,) trace, got shape {p.shape}")
    x = check_real(x, "x", float32=True)
    a, b = p[:-1] - x, p[1:] - x
    with np.errstate(invalid="ignore"):
        t = np.flatnonzero(a * b < 0)  # strictly on either side (NaN compares False)
        exact = np.flatnonzero(p == x)
    return np.sort(np.concatenate([t + a[t] / (a[t] - b[t]), exact.astype(np.float64)]))
