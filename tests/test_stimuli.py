"""Tests for napari_retina.stimuli: shapes, seeding, statistics, event times, geometry, bad input."""

import warnings

import numpy as np
import pytest

from napari_retina import stimuli as S

ALL = [
    lambda: S.white_noise(frames=20, size=12),
    lambda: S.white_noise(frames=20, size=12, kind="gaussian", checker=5),
    lambda: S.naturalistic(frames=20, size=12),
    lambda: S.flash(size=12),
    lambda: S.step(size=12),
    lambda: S.flash_train(size=12),
    lambda: S.moving_bar(size=12, start=-8.0, stop=8.0, speed=0.5),
    lambda: S.flashed_bar(size=12),
    lambda: S.reversing_bar(size=12, start=-6.0),
    lambda: S.reversing_grating(size=12, frames=30),
    lambda: S.contrast_switching(size=12, frames=30, duration=7),
]


@pytest.mark.parametrize("make", ALL)
def test_float32_square_stacks(make):
    s = make()
    assert s.dtype == np.float32 and s.ndim == 3 and s.shape[1:] == (12, 12)
    assert np.isfinite(s).all() and s.flags.c_contiguous


def test_defaults_follow_method():
    assert S.white_noise().shape == (1000, 50, 50)
    s, ev = S.flash_train(return_events=True)
    assert s.shape == (40 + 9 * 6 + 60, 50, 50)
    assert ev["onsets"].tolist() == [40 + 6 * k for k in range(8)] and ev["omitted"] == 40 + 48
    assert s.min() == -2.0
    _, ev = S.moving_bar(return_events=True)
    p = ev["position"][ev["onset"] : ev["offset"]]
    assert p[0] == -30.0 and abs(p[-1] - 30.0) < 1e-9 and np.allclose(np.diff(p), 0.08)


@pytest.mark.parametrize("gen", [S.white_noise, S.naturalistic, S.contrast_switching])
def test_seeding(gen):
    a = gen(frames=30, size=16, seed=5)
    assert np.array_equal(a, gen(frames=30, size=16, seed=5))
    assert not np.array_equal(a, gen(frames=30, size=16, seed=6))


@pytest.mark.parametrize("gen", [S.white_noise, S.naturalistic, S.contrast_switching])
def test_events_pattern_everywhere(gen):
    a = gen(frames=10, size=8)
    b, ev = gen(frames=10, size=8, return_events=True)
    assert np.array_equal(a, b) and isinstance(ev, dict)


def test_binary_white_noise_statistics():
    s = S.white_noise(frames=400, size=50, seed=0, contrast=0.7)
    assert set(np.unique(s).tolist()) == {np.float32(-0.7), np.float32(0.7)}
    assert abs((s > 0).mean() - 0.5) < 0.005  # 1e6 fair coins: s.d. 5e-4
    # independent across time and space
    x = s.astype(np.float64)
    assert abs((x[1:] * x[:-1]).mean()) / 0.49 < 0.01
    assert abs((x[:, :, 1:] * x[:, :, :-1]).mean()) / 0.49 < 0.01


def test_gaussian_white_noise_statistics():
    s = S.white_noise(frames=400, size=50, seed=1, kind="gaussian", contrast=2.0).astype(np.float64)
    assert abs(s.std() - 2.0) < 0.01 and abs(s.mean()) < 0.01
    kurt = ((s - s.mean()) ** 4).mean() / s.var() ** 2
    assert abs(kurt - 3.0) < 0.05


@pytest.mark.parametrize("kind", ["binary", "gaussian"])
def test_contrast_switching_is_unit_noise_at_the_high_then_the_low_level(kind):
    """Frame t is white_noise(contrast=1) times 3.0 in the 1st, 3rd, ... run of 70 frames and 0.5 in the others."""
    s, ev = S.contrast_switching(frames=250, size=20, seed=4, contrast=3.0, low_contrast=0.5, duration=70,
                                 kind=kind, checker=2, grey=0.3, return_events=True)
    unit = S.white_noise(250, 20, 4, kind=kind, contrast=1.0, checker=2, grey=0.3).astype(np.float64)
    level = np.array([3.0] * 70 + [0.5] * 70 + [3.0] * 70 + [0.5] * 40)
    np.testing.assert_allclose(s, unit * level[:, None, None], rtol=1e-6)
    assert ev["high_onsets"].tolist() == [0, 140] and ev["low_onsets"].tolist() == [70, 210]
    np.testing.assert_array_equal(ev["contrast"], level)
    if kind == "binary":   # each non-grey frame is ±level exactly
        moving = np.abs(s).max(axis=(1, 2)) > 0
        assert (np.abs(s[moving]).max(axis=(1, 2)) == level[moving].astype(np.float32)).all()


@pytest.mark.parametrize("kind", ["binary", "gaussian"])
def test_contrast_switching_in_random_order_steps_the_same_noise_to_levels_in_the_range(kind):
    """order="random": the unit noise of "alternate", each 30-frame run at one level in [0.5, 8]."""
    s, ev = S.contrast_switching(frames=3000, size=8, seed=6, contrast=8.0, low_contrast=0.5, duration=30,
                                 order="random", kind=kind, grey=0.0, return_events=True)
    unit = S.white_noise(3000, 8, 6, kind=kind, contrast=1.0, checker=4, grey=0.0).astype(np.float64)
    level = ev["contrast"]
    np.testing.assert_allclose(s, unit * level[:, None, None], rtol=1e-6)
    assert ev["onsets"].tolist() == list(range(0, 3000, 30)) and "high_onsets" not in ev
    runs = level.reshape(100, 30)
    assert (runs == runs[:, :1]).all()                                  # constant within a run
    assert 0.5 <= level.min() and level.max() <= 8.0
    # log-uniform over [ln 0.5, ln 8]: a quarter of the runs in each quarter of that span (100 runs)
    quarter = np.floor((np.log(runs[:, 0]) - np.log(0.5)) / (np.log(16.0) / 4)).astype(int)
    assert np.bincount(quarter, minlength=4).min() >= 12
    # the levels' draw does not disturb the noise: the same seed alternating gives the same unit noise
    alt = S.contrast_switching(frames=3000, size=8, seed=6, contrast=8.0, low_contrast=0.5, duration=30,
                               kind=kind, grey=0.0)
    np.testing.assert_allclose(alt[:30], s[:30] * (8.0 / level[0]), rtol=1e-5)
    # and another seed other levels
    other = S.contrast_switching(frames=3000, size=8, seed=7, contrast=8.0, low_contrast=0.5, duration=30,
                                 order="random", return_events=True)[1]["contrast"]
    assert not np.allclose(other, level)


def test_contrast_switching_to_zero_leaves_the_low_runs_grey():
    s = S.contrast_switching(frames=40, size=8, low_contrast=0.0, duration=10, grey=0.0)
    assert (s[10:20] == 0).all() and (s[30:] == 0).all() and (np.abs(s[:10]) == 2.0).all()


@pytest.mark.parametrize("kw, match", [({"low_contrast": 3.0}, "low_contrast must be in"),
                                       ({"low_contrast": -0.1}, "low_contrast must be in"),
                                       ({"duration": 0}, "duration must be >= 1"),
                                       ({"contrast": 0.0}, "contrast"),
                                       ({"kind": "pink"}, "kind must be"),
                                       ({"order": "zigzag"}, "order must be .alternate. or .random."),
                                       ({"order": "random", "low_contrast": 0.0}, "low_contrast must be > 0")])
def test_contrast_switching_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        S.contrast_switching(frames=10, size=4, **kw)


def test_checkers():
    s = S.white_noise(frames=5, size=10, checker=4, seed=2)
    assert (s[:, :4, :4] == s[:, :1, :1]).all()  # one checker is uniform
    assert (s[:, 8:, 8:] == s[:, 8:9, 8:9]).all()  # the cut-off edge checker too
    blocks = s[:, ::4, ::4]
    assert len(np.unique(blocks)) == 2 and not (blocks == blocks[:, :1, :1]).all()


def _repeated_checkers(frames, size, seed, kind, contrast, checker, grey):
    """White noise as it was first written (np.repeat of the drawn grid): the draws every seed must keep."""
    rng = np.random.default_rng(seed)
    n = -(-size // checker)
    if kind == "binary":
        grid = np.where(rng.random((frames, n, n)) < 0.5, -contrast, contrast)
    else:
        grid = contrast * rng.standard_normal((frames, n, n))
    if grey > 0:
        grid[rng.random(frames) < grey] = 0.0
    return np.repeat(np.repeat(grid, checker, axis=1), checker, axis=2)[:, :size, :size].astype(np.float32)


@pytest.mark.parametrize("kind", ["binary", "gaussian"])
def test_white_noise_keeps_the_draws_of_its_seed(kind):
    for seed, checker, grey in [(0, 1, 0.0), (1, 3, 0.3), (7, 4, 0.0), (2, 11, 0.5), (5, 13, 0.2), (3, 20, 0.0)]:
        ref = _repeated_checkers(17, 13, seed, kind, 2.0, checker, grey)   # 20 > 13: one checker over the field
        got = S.white_noise(17, 13, seed, kind=kind, contrast=2.0, checker=checker, grey=grey)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert got.tobytes() == ref.tobytes(), (seed, checker, grey)


@pytest.mark.parametrize("kind", ["binary", "gaussian"])
def test_white_noise_drawn_in_chunks_keeps_the_draws_and_reports_each_chunk(kind, monkeypatch):
    """Drawn chunk by chunk (so that a long movie takes one chunk beyond itself, and reports progress): the
    draws of the one-shot reference, whatever the chunk, the grey frames included."""
    for values, frames in [(7, 23), (169, 40), (13 * 13 * 5, 17), (2**20, 1)]:
        monkeypatch.setattr(S, "NOISE_CHUNK_VALUES", values)
        reports: list = []
        got = S.white_noise(frames, 13, 5, kind=kind, contrast=2.0, checker=1, grey=0.3,
                            progress=lambda done, total: reports.append((done, total)))
        assert got.tobytes() == _repeated_checkers(frames, 13, 5, kind, 2.0, 1, 0.3).tobytes(), values
        per_chunk = max(1, values // 169)
        assert reports == [(min(t + per_chunk, frames), frames) for t in range(0, frames, per_chunk)]


def test_white_noise_takes_one_chunk_beyond_the_movie_and_stops_when_progress_raises():
    """Drawn at once, 4,000 frames of 50 × 50 took three float64 copies beyond the float32 movie (1.9 GiB for
    40,000 frames); now one chunk (8 MiB). A progress callback that raises (Cancel) stops it there."""
    import tracemalloc

    movie_bytes = 4000 * 50 * 50 * 4
    tracemalloc.start()
    try:
        S.white_noise(4000, 50, 0, kind="gaussian")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < movie_bytes + 4 * S.NOISE_CHUNK_VALUES * 8   # before: > 4 × the movie
    calls: list = []

    def stop_at_the_second(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt   # any exception: it propagates
    with pytest.raises(KeyboardInterrupt):
        S.white_noise(4000, 50, 0, progress=stop_at_the_second)
    assert calls == [419, 838]


def test_naturalistic_reports_its_progress_every_hundredth_and_stops_when_progress_raises():
    reports: list = []
    movie = S.naturalistic(frames=1000, size=10, seed=3, fixation=7,
                           progress=lambda done, total: reports.append((done, total)))
    np.testing.assert_array_equal(movie, S.naturalistic(frames=1000, size=10, seed=3, fixation=7))
    done = [d for d, _ in reports]
    assert {t for _, t in reports} == {1000} and done[-1] == 1000 and done == sorted(set(done))
    assert all(b - a >= 10 for a, b in zip([0] + done, done[:-1]))   # not one report per 7-frame image
    assert len(reports) == 72   # after every second 7-frame image (14, 28, …, 994), then at 1000
    with pytest.raises(KeyboardInterrupt):
        S.naturalistic(frames=1000, size=10, fixation=7, progress=lambda d, t: (_ for _ in ()).throw(
            KeyboardInterrupt()))


def test_a_checker_wider_than_the_field_flickers_the_whole_field():
    """checker=10**6 asked numpy for 437 TiB and checker=2**63 overflowed: it is one checker, O(frames·size²)."""
    field = S.white_noise(frames=40, size=50, seed=4, checker=50, grey=0.3, kind="gaussian")
    assert (field == field[:, :1, :1]).all() and len(np.unique(field)) > 20
    for checker in (51, 100, 10**6, 2**63, 2**70):
        np.testing.assert_array_equal(
            S.white_noise(frames=40, size=50, seed=4, checker=checker, grey=0.3, kind="gaussian"), field)


def test_a_huge_duration_or_period_is_one_stretch():
    """duration=2**63 and period=2**63 overflowed numpy's int64: longer than the movie, they are one stretch."""
    whole, ev = S.contrast_switching(frames=30, size=6, duration=30, return_events=True)
    for duration in (31, 2**63, 2**70):
        s, ev2 = S.contrast_switching(frames=30, size=6, duration=duration, return_events=True)
        np.testing.assert_array_equal(s, whole)
        assert ev2["onsets"].tolist() == [0] and ev2["high_onsets"].tolist() == [0]
    steady = S.reversing_grating(period=30, frames=30, size=6)
    for period in (31, 2**63):
        s, ev = S.reversing_grating(period=period, frames=30, size=6, return_events=True)
        np.testing.assert_array_equal(s, steady)
        assert ev["reversals"].size == 0 and (ev["sign"][40:] == 1).all()


def test_sparse_noise_leaves_a_fraction_of_whole_frames_grey():
    dense = S.white_noise(frames=4000, size=8, seed=3, checker=2, contrast=2.0)
    sparse = S.white_noise(frames=4000, size=8, seed=3, checker=2, contrast=2.0, grey=0.6)
    grey = (sparse == 0).all(axis=(1, 2))
    assert abs(grey.mean() - 0.6) < 0.03                       # binomial sd 0.008
    assert ((sparse == 0).any(axis=(1, 2)) == grey).all()      # whole frames, never single checkers
    np.testing.assert_array_equal(sparse[~grey], dense[~grey])  # the other frames are the dense noise's
    # frames stay independent: no correlation between a frame being grey and the next one being grey
    g = grey.astype(np.float64)
    assert abs(np.corrcoef(g[:-1], g[1:])[0, 1]) < 0.05


def _radial_slope(frames):
    """Log-log slope of the radially averaged power spectrum (Hann-windowed, mid frequencies)."""
    n = frames.shape[-1]
    w = np.outer(np.hanning(n), np.hanning(n))
    power = np.mean([np.abs(np.fft.fft2((f - f.mean()) * w)) ** 2 for f in frames.astype(np.float64)], axis=0)
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    f = np.hypot(fy, fx)
    edges = np.linspace(0.04, 0.45, 15)
    idx = np.digitize(f, edges)
    fm = [f[idx == i].mean() for i in range(1, len(edges))]
    pm = [power[idx == i].mean() for i in range(1, len(edges))]
    return np.polyfit(np.log(fm), np.log(pm), 1)[0]


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_naturalistic_spectrum(alpha):
    s, ev = S.naturalistic(frames=1000, size=50, seed=0, alpha=alpha, jitter=0.0, return_events=True)
    assert abs(s.astype(np.float64).std() - 1.0) < 1e-4 and abs(s.astype(np.float64).mean()) < 1e-4
    assert ev["image_onsets"].tolist() == list(range(0, 1000, 100))
    slope = _radial_slope(s[ev["image_onsets"]])
    assert abs(slope + 2 * alpha) < 0.25  # power ~ 1/f^(2 alpha)


def _phase_correlation_shift(a, b):
    """Integer (dy, dx) by which b is displaced relative to a."""
    r = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    c = np.fft.ifft2(r / (np.abs(r) + 1e-12)).real
    n = a.shape[0]
    return np.array([(k + n // 2) % n - n // 2 for k in np.unravel_index(np.argmax(c), c.shape)])


def test_naturalistic_jitter():
    s, ev = S.naturalistic(frames=100, size=50, seed=3, jitter=0.5, return_events=True)
    off = ev["offsets"]
    assert off.shape == (100, 2) and (off[0] == 0).all()
    steps = np.diff(off, axis=0)
    assert 0.35 < steps.std() < 0.65
    moved = [t for t in range(1, 100) if np.abs(off[t] - off[0]).max() >= 2]
    assert moved
    for t in moved[:5]:
        est = _phase_correlation_shift(s[0].astype(np.float64), s[t].astype(np.float64))
        assert np.abs(est - (off[t] - off[0])).max() <= 0.75
    still = S.naturalistic(frames=100, size=50, seed=3, jitter=0.0)
    assert np.array_equal(still[0], still[99]) and not np.array_equal(s[0], s[99])


def test_naturalistic_saccade_resets_offset():
    s, ev = S.naturalistic(frames=25, size=20, fixation=10, jitter=1.0, return_events=True)
    assert ev["image_onsets"].tolist() == [0, 10, 20]
    assert (ev["offsets"][[0, 10, 20]] == 0).all() and (ev["offsets"][1:10] != 0).any()


def test_flash_and_step():
    s, ev = S.flash(intensity=-3.0, duration=3, pre=5, post=7, size=4, return_events=True)
    expect = np.zeros(15)
    expect[5:8] = -3.0
    assert np.array_equal(s, np.broadcast_to(expect[:, None, None], (15, 4, 4)))
    assert ev == {"onset": 5, "offset": 8}
    s, ev = S.step(intensity=-2.0, pre=3, post=4, size=2, return_events=True)
    assert s[:, 0, 0].tolist() == [0, 0, 0, -2, -2, -2, -2] and ev == {"onset": 3}


@pytest.mark.parametrize("period", [2, 3, 6, 8])
def test_flash_train_onsets_and_omission(period):
    s, ev = S.flash_train(period=period, n_flashes=8, duration=2, pre=40, post=60, size=5, return_events=True)
    trace = s[:, 2, 2]
    assert (s == trace[:, None, None]).all()  # full field
    expect = np.zeros(40 + 9 * period + 60)
    for k in range(8):
        expect[40 + k * period : 40 + k * period + 2] = -2.0
    assert np.array_equal(trace, expect)
    assert ev["onsets"].tolist() == [40 + k * period for k in range(8)]
    assert ev["omitted"] == 40 + 8 * period and ev["period"] == period
    assert (trace[ev["omitted"] :] == 0).all()
    control, cev = S.flash_train(period=period, omit=False, size=5, return_events=True)
    assert cev["omitted"] is None and cev["onsets"][-1] == ev["omitted"]
    diff = control[:, 0, 0] - trace
    assert np.flatnonzero(diff).tolist() == [ev["omitted"], ev["omitted"] + 1]


def _centroids(s, axis="x"):
    prof = s.sum(axis=1 if axis == "x" else 2).astype(np.float64) / s.shape[1]  # (T, size)
    x = np.arange(s.shape[-1]) - (s.shape[-1] - 1) / 2
    mass = prof.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass, (prof * x).sum(axis=1) / mass


@pytest.mark.parametrize("axis", ["x", "y"])
def test_moving_bar_speed_and_mass(axis):
    s, ev = S.moving_bar(axis=axis, return_events=True)
    assert s.shape == (40 + 751, 50, 50)
    assert (s[:40] == 0).all()
    if axis == "x":
        assert (s == s[:, :1, :]).all()  # uniform along y
    else:
        assert (s == s[:, :, :1]).all()
    mass, c = _centroids(s, axis)
    inside = np.flatnonzero(np.abs(ev["position"]) <= 25 - 1)  # whole bar in the field
    assert len(inside) > 500
    assert np.allclose(mass[inside], -1.0 * 2.0, atol=1e-5)  # area-weighted: intensity x width
    slope, icpt = np.polyfit(inside, c[inside], 1)
    assert abs(slope - 0.08) < 1e-3
    assert np.allclose(c[inside], ev["position"][inside], atol=1e-4)
    assert abs(S.crossing_frames(ev["position"], 0.0)[0] - (40 + 30 / 0.08)) < 1e-6
    # a centroid of 0 is crossed at that frame (checked on the stimulus itself)
    assert abs(-icpt / slope - (40 + 30 / 0.08)) < 0.05


def test_moving_bar_subpixel_edges_and_direction():
    s, ev = S.moving_bar(speed=0.25, start=5.0, stop=-5.0, width=1.5, intensity=-2.0, pre=0, size=20,
                         return_events=True)
    p = ev["position"]
    assert p[0] == 5.0 and np.allclose(np.diff(p), -0.25)
    row = s[1, 0].astype(np.float64)  # centre 4.75: bar spans [4.0, 5.5] -> pixels [4,5] full, [5,6] half
    x0 = np.arange(20) - 10.0
    expect = -2.0 * np.clip(np.minimum(p[1] + 0.75, x0 + 1) - np.maximum(p[1] - 0.75, x0), 0, 1)
    assert np.allclose(row, expect) and sorted(set(np.round(row, 6))) == [-2.0, -1.0, 0.0]
    assert np.allclose(s.sum(axis=(1, 2)) / 20, -3.0)


def test_flashed_bar():
    s, ev = S.flashed_bar(position=-10.5, width=3.0, duration=2, intensity=-1.5, pre=4, post=5, size=30,
                          return_events=True)
    assert s.shape == (11, 30, 30) and ev["onset"] == 4 and ev["offset"] == 6
    assert (s[:4] == 0).all() and (s[6:] == 0).all()
    mass, c = _centroids(s)
    assert np.allclose(mass[4:6], -4.5) and np.allclose(c[4:6], -10.5)


def test_reversing_bar():
    s, ev = S.reversing_bar(reversal=-7.0, speed=0.19, start=-25.0, return_events=True)
    r, n = ev["reversal_frame"], ev["reversal_frame"] - ev["onset"]
    assert ev["reversal_position"] == -7.0 and n == round(18 / 0.19)
    assert s.shape[0] == 40 + 2 * n + 1 and ev["offset"] == 40 + 2 * n + 1
    mass, c = _centroids(s)
    assert abs(c[r] - (-7.0)) < 1e-5  # the bar is at the reversal position on the reversal frame
    v = np.diff(c[40 : 40 + 2 * n + 1])
    visible = np.isfinite(v) & (np.abs(c[40 : 40 + 2 * n]) < 23)
    before, after = np.arange(2 * n) < n, np.arange(2 * n) >= n
    assert np.allclose(v[visible & before], 0.19, atol=1e-4)
    assert np.allclose(v[visible & after], -0.19, atol=1e-4)
    assert c[40: 40 + 2 * n + 1][np.isfinite(c[40: 40 + 2 * n + 1])].max() == pytest.approx(-7.0, abs=1e-5)
    assert S.crossing_frames(ev["position"], -7.0).tolist() == [r]
    assert len(S.crossing_frames(ev["position"], -12.0)) == 2


def test_reversing_bar_from_the_right():
    s, ev = S.reversing_bar(reversal=2.0, start=10.0, speed=0.5, pre=0, size=30, return_events=True)
    p = ev["position"]
    assert p[ev["reversal_frame"]] == 2.0 and p.min() == 2.0 and p[0] == p[-1] == 10.0


def test_crossing_frames():
    p = np.array([np.nan, 0.0, 1.0, 2.0, 1.0, np.nan, 3.0])
    assert S.crossing_frames(p, 0.5).tolist() == [1.5]
    assert S.crossing_frames(p, 1.5).tolist() == [2.5, 3.5]
    assert S.crossing_frames(p, 2.0).tolist() == [3.0]
    assert S.crossing_frames(p, 3.0).tolist() == [6.0]
    assert S.crossing_frames(p, 9.0).size == 0


def test_reversing_grating():
    s, ev = S.reversing_grating(bar_width=4, period=10, frames=45, pre=5, size=16, return_events=True)
    assert s.shape == (50, 16, 16) and (s[:5] == 0).all()
    assert ev["reversals"].tolist() == [15, 25, 35, 45]
    # reference: pixel centres x = j - 7.5, a boundary at 0 with a bright bar to its right
    x = np.arange(16) - 7.5
    pattern = np.where(np.floor(x / 4) % 2 == 0, 1.0, -1.0)
    for t in range(5, 50):
        sign = (-1) ** ((t - 5) // 10)
        assert np.array_equal(s[t], np.broadcast_to(sign * pattern, (16, 16)))
        assert ev["sign"][t] == sign
    assert (s[15] == -s[14]).all() and (s[25] == s[5]).all()
    assert abs(s[5:].mean()) < 1e-7  # balanced: frequency doubling needs no net luminance change


def test_grating_subpixel_phase_is_area_weighted():
    s = S.reversing_grating(bar_width=2, phase=0.5, frames=1, pre=0, size=8, axis="y")
    col = s[0, :, 0].astype(np.float64)
    assert (s[0] == s[0][:, :1]).all()  # axis="y": uniform along x
    # pixels straddling a boundary are half bright, half dark
    assert set(np.round(col, 6).tolist()) == {-1.0, 0.0, 1.0}
    fine = np.arange(8 * 100) / 100 - 4 + 0.005 + 0.5  # 100 sub-samples per pixel
    ref = np.where(np.floor(fine / 2) % 2 == 0, 1.0, -1.0).reshape(8, 100).mean(axis=1)
    assert np.allclose(col, ref, atol=1e-9)


def test_sparse_noise_takes_a_numpy_grey_probability():
    # grey=np.float32(0.5) was refused as "not a probability in [0, 1)"
    ref = S.white_noise(frames=50, size=4, seed=1, grey=0.5)
    for grey in (np.float32(0.5), np.float16(0.5), np.float64(0.5)):
        np.testing.assert_array_equal(S.white_noise(frames=50, size=4, seed=1, grey=grey), ref)


BAD = [
    (lambda: S.white_noise(frames=0), ValueError, "frames must be >= 1"),
    (lambda: S.white_noise(frames=2.5), TypeError, "frames must be an int"),
    (lambda: S.white_noise(size=0), ValueError, "size must be >= 1"),
    (lambda: S.white_noise(seed=-1), ValueError, "seed must be >= 0"),
    (lambda: S.white_noise(kind="pink"), ValueError, "kind must be 'binary' or 'gaussian'"),
    (lambda: S.white_noise(contrast=0), ValueError, "contrast must be a finite number > 0"),
    (lambda: S.white_noise(checker=0), ValueError, "checker must be >= 1"),
    (lambda: S.white_noise(grey=1.0), ValueError, r"grey must be a probability in \[0, 1\)"),
    (lambda: S.white_noise(grey=-0.1), ValueError, "grey must be a probability"),
    (lambda: S.naturalistic(alpha=-1.0), ValueError, r"alpha must be in \[0, 4\] .*got -1.0"),
    (lambda: S.naturalistic(jitter=-0.1), ValueError, "jitter must be >= 0"),
    (lambda: S.naturalistic(fixation=0), ValueError, "fixation must be >= 1"),
    (lambda: S.naturalistic(contrast=float("nan")), ValueError, "contrast must be a finite number"),
    (lambda: S.flash(intensity=float("inf")), ValueError, "intensity must be a finite number"),
    (lambda: S.flash(intensity="dark"), TypeError, "intensity must be a number"),
    (lambda: S.flash(duration=0), ValueError, "duration must be >= 1"),
    (lambda: S.flash(pre=-1), ValueError, "pre must be >= 0"),
    (lambda: S.step(post=0), ValueError, "post .* must be >= 1"),
    (lambda: S.flash_train(period=0), ValueError, "period must be >= 1"),
    (lambda: S.flash_train(period=-3), ValueError, "period must be >= 1"),
    (lambda: S.flash_train(n_flashes=0), ValueError, "n_flashes must be >= 1"),
    (lambda: S.flash_train(period=2, duration=3), ValueError, "must not exceed period"),
    (lambda: S.flash_train(omit="yes"), TypeError, "omit must be True or False"),
    (lambda: S.moving_bar(speed=0), ValueError, "speed must be a finite number > 0"),
    (lambda: S.moving_bar(speed=-0.1), ValueError, "speed must be a finite number > 0"),
    (lambda: S.moving_bar(start=3.0, stop=3.0), ValueError, "start and stop must differ"),
    (lambda: S.moving_bar(start=30.0, stop=60.0), ValueError, "entirely outside the field"),
    (lambda: S.moving_bar(width=0), ValueError, "width must be a finite number > 0"),
    (lambda: S.moving_bar(axis="z"), ValueError, "axis must be 'x'"),
    (lambda: S.flashed_bar(position=-27.0), ValueError, "entirely outside the field"),
    (lambda: S.reversing_bar(reversal=40.0), ValueError, "entirely outside the field"),
    (lambda: S.reversing_bar(reversal=0.0, start=0.05), ValueError, "half a frame's travel"),
    (lambda: S.reversing_bar(speed=0), ValueError, "speed must be a finite number > 0"),
    (lambda: S.reversing_grating(bar_width=0), ValueError, "bar_width must be a finite number > 0"),
    (lambda: S.reversing_grating(period=0), ValueError, "period must be >= 1"),
    (lambda: S.reversing_grating(frames=0), ValueError, "frames must be >= 1"),
    (lambda: S.reversing_grating(phase=float("nan")), ValueError, "phase must be a finite number"),
    (lambda: S.crossing_frames(np.zeros((3, 2)), 0.0), ValueError, r"position must be a \(T,\) trace"),
    (lambda: S.crossing_frames(["a", "b"], 0.0), TypeError, "position must hold real numbers"),
    (lambda: S.crossing_frames(None, 0.0), TypeError, "position must be a"),
]


@pytest.mark.parametrize("call,exc,match", BAD)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bar_just_inside_the_field_is_accepted():
    s = S.flashed_bar(position=-25.5, width=2.0, size=50)  # covers half of pixel 0
    assert np.isclose(s.min(), -0.5)


# ----------------------------------------------------------------------------- scales that overflow float32

F32 = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("call", [
    lambda: S.white_noise(frames=2, size=4, contrast=1e39),
    lambda: S.white_noise(frames=2, size=4, kind="gaussian", contrast=1e39),
    lambda: S.naturalistic(frames=2, size=4, contrast=1e39),
    lambda: S.reversing_grating(frames=2, size=4, contrast=1e39),
])
def test_contrast_beyond_float32_is_refused(call):
    """contrast=1e39 gave a ±inf float32 movie with only numpy's overflow RuntimeWarning."""
    with pytest.raises(ValueError, match=r"contrast must be a finite number > 0 within float32 \(<= 3\.4e\+38\), "
                                         r"got 1e\+39"):
        call()


@pytest.mark.parametrize("call", [
    lambda: S.white_noise(frames=50, size=8, kind="gaussian", contrast=1e38),
    lambda: S.naturalistic(frames=2, size=4, contrast=3e38),
])
def test_contrast_whose_values_overflow_float32_is_refused(call):
    """A contrast within float32 whose Gaussian values are not: inf in some pixels, silently."""
    with pytest.raises(ValueError, match=r"contrast [0-9.e+]+ makes .* reach [0-9.e+]+, beyond float32"):
        call()


def test_naturalistic_alpha_beyond_its_range_is_refused():
    """alpha=400 gave an all-NaN movie (f**-alpha overflowed), alpha=300 an all-zero one."""
    for alpha in (400.0, 300.0, 4.5):
        with pytest.raises(ValueError, match=rf"alpha must be in \[0, 4\] .*got {alpha}"):
            S.naturalistic(frames=2, size=4, alpha=alpha)


def test_grating_bar_width_beyond_its_range_is_refused():
    """bar_width=1e308 gave NaN and inf pixels (2·bar_width overflowed); 1e20 an all-zero grating."""
    for w in (1e308, 1e20, 1.5e6):
        with pytest.raises(ValueError, match=r"bar_width must be at most 1e\+06 pixels.*got"):
            S.reversing_grating(bar_width=w, frames=2, size=4)


def test_scales_at_their_bounds_give_finite_float32_movies():
    for s, peak in [(S.white_noise(frames=2, size=4, contrast=F32), F32),
                    (S.reversing_grating(frames=2, pre=0, size=4, contrast=F32), F32),
                    (S.white_noise(frames=2, size=4, kind="gaussian", contrast=F32 / 100), None),
                    (S.naturalistic(frames=2, size=4, contrast=F32 / 100), None),
                    (S.naturalistic(frames=2, size=4, alpha=4.0), None),
                    (S.naturalistic(frames=2, size=4, alpha=0.0), None),
                    (S.reversing_grating(bar_width=1e6, frames=2, pre=0, size=4), 1.0)]:
        assert s.dtype == np.float32 and np.isfinite(s).all() and np.abs(s).max() > 0
        if peak is not None:
            assert np.abs(s).max() == np.float32(peak)
    s = S.naturalistic(frames=200, size=8, alpha=4.0).astype(np.float64)
    assert abs(s.std() - 1.0) < 1e-4


def test_grating_phase_is_read_modulo_its_spatial_period():
    """phase=1e30 px rounded every pixel's position to the same value: an all-zero grating."""
    import math

    ref = S.reversing_grating(bar_width=4.0, phase=math.fmod(1e30, 8.0), frames=2, pre=0, size=8)
    np.testing.assert_array_equal(S.reversing_grating(bar_width=4.0, phase=1e30, frames=2, pre=0, size=8), ref)
    np.testing.assert_allclose(S.reversing_grating(bar_width=4.0, phase=-2.5, frames=2, pre=0, size=8),
                               S.reversing_grating(bar_width=4.0, phase=5.5, frames=2, pre=0, size=8), atol=1e-6)
    assert np.abs(ref).max() > 0


def test_synth_names_contrast_beyond_float32(tmp_path, capsys):
    """synth --contrast 1e39 warned of an overflow, then said 'stimulus must be finite, got 280568 NaN…'."""
    from napari_retina.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        for kind in ("gaussian", "mix"):
            assert main(["synth", str(tmp_path / "d2.h5"), "--frames", "300", "--test-frames", "100",
                         "--contrast", "1e39", "--kind", kind, "--quiet"]) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith("napari-retina synth: error: contrast must be") and "1e+39" in err, err
    assert not (tmp_path / "d2.h5").exists()
