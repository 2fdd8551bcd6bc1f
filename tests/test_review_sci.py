"""Review of the science core: readouts, reduction and scores against hand-made references.

Each test pins a defect that was found and fixed (see the commit that added it):
the reference is computed here by hand (float64 numpy, closed forms), never taken
from what the code printed.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_retina.experiments import base, latency


def _latency_protocol(n_flashes: int, max_frames: int, size: int = 20, history: int = 10):
    intensities = np.linspace(-1.0, -2.0, n_flashes).tolist()   # distinct: one repeated contrast is refused
    p = base.resolve_params(latency, {"intensities": intensities, "max_frames": max_frames}, size, history)
    return latency.build(size=size, history=history, respond=None, **p)


@pytest.mark.parametrize("n_flashes,max_frames", [(12, 12), (25, 10), (40, 30)])
def test_frames_of_interest_stay_within_max_frames_with_many_conditions(n_flashes, max_frames):
    """The resting frames before each condition used to be taken one per condition whatever
    max_frames said: with as many conditions as max_frames the thinning divided by zero, with
    more it attributed more frames than max_frames (41 for max_frames=10)."""
    proto = _latency_protocol(n_flashes, max_frames)
    fr = proto.frames
    assert 0 < len(fr) <= max_frames
    assert np.all(np.diff(fr) > 0) and fr.min() >= 9
    # resting frames (whole window grey) are still there, at most half of the budget
    stim = np.abs(proto.stimulus).reshape(len(proto.stimulus), -1).max(1)
    rest = [t for t in fr if stim[t - 9:t + 1].max() == 0]
    assert 1 <= len(rest) <= max_frames // 2


# ----------------------------------------------------------------------------- onset of a response


def test_onset_time_is_the_rise_not_the_tail_of_an_earlier_response():
    """onset_time returned ``start`` whenever the trace was already above the level there, contrary
    to its docstring (nan when never below the level): the omitted-stimulus response's onset_ms
    read 0.0 ms at every period on the ground truth, whose train response had not decayed."""
    tail = np.array([0.0, 4.0, 3.0, 2.5, 4.0, 5.0, 2.0, 0.0])        # above 1.0 from before start to the peak
    assert np.isnan(base.onset_time(tail, 2, 5.0, 1.0))
    dip = np.array([0.0, 4.0, 3.0, 0.2, 0.2, 2.0, 5.0, 2.0])         # the tail decays below 1.0, then the rise
    assert base.onset_time(dip, 2, 6.0, 1.0) == pytest.approx(4.0 + (1.0 - 0.2) / (2.0 - 0.2))
    fresh = np.array([0.0, 0.0, 3.0, 5.0, 2.0])                       # at rest before start: the rise is start
    assert base.onset_time(fresh, 2, 3.0, 1.0) == 2.0
    assert base.onset_time(np.array([0.0, 0.0, 1.0, 3.0, 2.0]), 0, 3.0, 0.5) == pytest.approx(1.5)


def test_osr_onset_after_a_train_response_that_has_not_decayed():
    from napari_retina.experiments import osr

    p = base.resolve_params(osr, {}, 50, 40)
    proto = osr.build(size=50, history=40, respond=None, **p)
    r = np.zeros(len(proto.stimulus))
    for k, c in enumerate(proto.conditions):
        om = c["omitted"]
        if k % 2:   # decays below 20% of the peak (level 1.0), then rises: onset between om+2 and om+3
            r[om - 1:om + 6] = [4.0, 3.0, 0.2, 0.2, 2.0, 5.0, 2.0]
        else:       # stays above the level from before the omitted flash to the peak: no onset
            r[om - 1:om + 6] = [4.0, 3.0, 2.5, 2.5, 2.0, 5.0, 2.0]
    out = osr.readout(r, proto.conditions)
    np.testing.assert_allclose(out["latency_ms"], 40.0)      # symmetric peak at om+4
    for k, onset in enumerate(out["onset_ms"]):
        if k % 2:
            assert onset == pytest.approx(10.0 * (2.0 + (1.0 - 0.2) / (2.0 - 0.2)))
        else:
            assert np.isnan(onset)


# ----------------------------------------------------------------------------- long movies: the reduced circuit's pools


def test_attribute_traces_keeps_the_time_averaged_maps(tiny):
    import napari_retina as nr
    from napari_retina import analysis

    stim = nr.stimuli.white_noise(frames=45, size=20, seed=3)
    ref = nr.attribute(tiny, stim, cell=0, steps=8, invariance="none")
    means: dict = {}
    analysis.attribute_traces(tiny, stim, cell=0, steps=8, invariance="none", chunk_frames=7, map_means=means)
    maps = np.asarray(ref.maps, dtype=np.float64)[9:]                   # the frames with a full history
    scale = np.abs(maps).max()
    np.testing.assert_allclose(means["abs"], np.abs(maps).sum(0) / len(maps), rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(means["signed"], maps.sum(0) / len(maps), rtol=1e-4, atol=1e-6 * scale)


def test_a_long_movie_is_reduced_with_the_same_pools_as_a_short_one(tiny):
    """Above LAZY_MAP_BYTES the attribution keeps traces only, and reduce fell back to one uniform
    pool per channel: the same white noise gave a reduced circuit with EV 0.19 instead of 0.70."""
    import napari_retina as nr
    from napari_retina import analysis

    stim = nr.stimuli.white_noise(frames=120, size=20, seed=0)
    short = analysis.run_analysis(tiny, stim, cell=0, steps=16)
    long = analysis.run_analysis(tiny, stim, cell=0, steps=16, lazy_threshold=0)
    assert not short.lazy and long.lazy and long.attribution.maps is None
    a, b = short.reduction, long.reduction
    assert b.pools == a.pools == ["abs", "signed"]
    assert b.kept == a.kept
    assert b.explained_variance == pytest.approx(a.explained_variance, abs=1e-3)
    np.testing.assert_allclose(b.reduced_rates[9:], a.reduced_rates[9:], rtol=1e-3, atol=1e-4)


def test_reduce_refuses_pool_maps_of_the_wrong_shape(tiny):
    import napari_retina as nr
    from napari_retina import analysis

    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    traces = analysis.attribute_traces(tiny, stim, cell=0, steps=4, invariance="none")
    with pytest.raises(ValueError, match="one per channel"):
        nr.reduce(traces, pool_maps={"abs": np.ones((3, 16, 16)), "signed": np.ones((3, 16, 16))})
    with pytest.raises(TypeError, match="'abs' and 'signed'"):
        nr.reduce(traces, pool_maps={"abs": np.ones((8, 16, 16))})


# ----------------------------------------------------------------------------- evaluate with constant recordings


def _no_numpy_warnings(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_evaluate_with_every_recorded_cell_constant_says_why_r_is_nan(tiny):
    """r_mean was np.nanmean over all-NaN r: numpy's 'Mean of empty slice' RuntimeWarning and a
    NaN nobody explained; a cell that never fired also divided by zero in mean_ratio."""
    import warnings

    import napari_retina as nr

    stim = nr.stimuli.white_noise(frames=40, size=20, seed=5)
    rates = np.zeros((40, 2), np.float32)
    rates[:, 0] = 0.7                                     # constant; cell 1 never fires
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = nr.evaluate(tiny, (stim, rates))
    assert _no_numpy_warnings(record) == []
    mine = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(mine) == 1 and "every cell" in mine[0] and "recorded test rate is constant for cell0, cell1" in mine[0]
    assert np.isnan(out["r"]).all() and np.isnan(out["r_mean"])
    pred = nr.predict(tiny, stim)[9:].astype(np.float64)
    assert out["mean_ratio"][0] == pytest.approx(pred[:, 0].mean() / 0.7, rel=1e-6)
    assert np.isnan(out["mean_ratio"][1])                  # never fired: no calibration, not inf


def test_evaluate_means_over_the_cells_that_have_an_r(tiny):
    import warnings

    import napari_retina as nr

    stim = nr.stimuli.white_noise(frames=40, size=20, seed=6)
    rates = np.random.default_rng(0).random((40, 2)).astype(np.float32)
    rates[:, 1] = 2.0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = nr.evaluate(tiny, (stim, rates))
    assert _no_numpy_warnings(record) == []
    pred = nr.predict(tiny, stim)[9:].astype(np.float64)
    r0 = np.corrcoef(pred[:, 0], rates[9:, 0].astype(np.float64))[0, 1]
    assert out["r_mean"] == pytest.approx(r0, abs=1e-6) and np.isnan(out["r"][1])
    mine = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(mine) == 1 and "constant for cell1 " in mine[0] and "every cell" not in mine[0]


def test_finite_mean_and_ratio_of_means_against_numpy():
    import warnings

    from napari_retina.metrics import finite_mean, ratio_of_means

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert finite_mean([1.0, np.nan, 2.0, np.inf]) == 1.5
        assert np.isnan(finite_mean([np.nan, np.nan])) and np.isnan(finite_mean([]))
        a = np.array([[1.0, 4.0, 1.0], [3.0, 2.0, 1.0]])
        b = np.array([[2.0, 0.0, np.nan], [6.0, 0.0, np.nan]])
        got = ratio_of_means(a, b)
    assert got[0] == 2.0 / 4.0 and np.isnan(got[1]) and np.isnan(got[2])


# ----------------------------------------------------------------------------- reversal: mapping the receptive field


@pytest.mark.parametrize("cell", ["silent", "suppressed by dark bars"])
def test_reversal_of_a_cell_that_flashed_bars_do_not_excite_runs_around_the_field_centre(cell):
    """map_rf took the best of 21 zero amplitudes, the first flashed position (-24 px), as the
    receptive-field centre; the reversal positions -9..2 px from it fell outside the field and the
    experiment (and with it the battery) stopped with 'reversal position -9 px from the centre
    -24 px, i.e. -33 px lies outside the model's 50-pixel field'."""
    from napari_retina.experiments import reversal, run_function

    if cell == "silent":
        def respond(s):
            return np.full(len(s), 0.3)
    else:  # dark bars only lower the rate; nothing rises above grey
        def respond(s):
            return 1.0 + np.minimum(s[:, 25, :].mean(1), 0.0)
    assert reversal.map_rf(respond, 50, 2.0, -1.0, 60, 40) == 0.0
    out = run_function("reversal", respond).readout
    assert out["center_px"] == 0.0 and out["present"] is False and out["n_bursts"] == 0


def test_map_rf_still_finds_a_responding_cell():
    from napari_retina.experiments import reversal

    def respond(s):   # a dark bar excites in proportion to its overlap with a Gaussian centred at 4.3 px
        x = np.arange(50) - 24.5
        return 0.1 + np.maximum(-(s[:, 25, :] @ np.exp(-0.5 * ((x - 4.3) / 3.0) ** 2)), 0.0)
    assert reversal.map_rf(respond, 50, 2.0, -1.0, 60, 40) == pytest.approx(4.3, abs=0.3)


# ----------------------------------------------------------------------------- anticipation without a flashed-bar response


def test_anticipation_without_a_flashed_bar_response_has_no_lead():
    """rf_center_px was the best of equal (zero) flashed-bar amplitudes, the first position
    (-25 px); with one direction (-1) every moving-bar peak then 'led' it by 25 px or more,
    and a cell that flashed bars do not drive at all was called anticipating."""
    from napari_retina.experiments import anticipation

    p = base.resolve_params(anticipation, {"directions": [-1]}, 50, 40)
    proto = anticipation.build(size=50, history=40, respond=None, **p)
    T = len(proto.stimulus)
    t = np.arange(T, dtype=np.float64)
    r = np.full(T, 0.1)
    for c in proto.conditions:
        if c["kind"] == "moving":   # a strong response when the bar passes x = 2 px; none to flashes
            t_star = c["onset"] + (c["x0"] - 2.0) / c["speed"]
            r += 2.0 * np.exp(-0.5 * ((t - t_star) / 15.0) ** 2)
    out = anticipation.readout(r, proto.conditions)
    assert np.isnan(out["rf_center_px"]) and np.isnan(out["flash_latency_ms"])
    assert all(np.isnan(v) for v in out["lead_um_per_speed"]) and np.isnan(out["lead_um"])
    assert out["present"] is False
    np.testing.assert_allclose(out["bar_at_peak_px"], 2.0, atol=0.05)   # the bar positions are still read


# ----------------------------------------------------------------------------- defaults that fit the model's field


def _bar_inside(frame: np.ndarray, width: float) -> bool:
    """A dark bar (uniform along y) lies wholly inside the field: its dark area is width · size pixels."""
    return float(-np.minimum(frame, 0.0).sum()) == pytest.approx(width * frame.shape[0], rel=1e-5)


@pytest.mark.parametrize("size, center", [(20, -1.01), (20, 6.0), (12, 0.0), (12, -3.0)])
def test_reversal_defaults_fit_a_small_field(size, center):
    """The default reversal positions were fixed at -9..2 px from the centre: a 20-px field refused
    every centre below -1 px, a 12-px field every centre ('reversal position -9 px from the centre
    ... lies outside the model's 20-pixel field'). The bar at each reversal is now wholly inside."""
    from napari_retina.experiments import run_function

    res = run_function("reversal", lambda s: np.full(len(s), 0.5), size=size, history=10, center=center)
    rel = np.asarray(res.readout["reversal_positions_px"])
    assert len(rel) == 12
    if size >= 13:   # room for the 11-px span: same spacing, shifted
        np.testing.assert_allclose(np.diff(rel), 1.0, atol=1e-6)
    for c in res.conditions:   # the stimulus itself: the bar at the reversal frame is whole
        assert _bar_inside(res.stimulus[c["reversal_frame"]], 2.0)


def test_reversal_and_doubling_defaults_of_a_50_pixel_field_are_the_documented_ones():
    """docs/EXPERIMENTS.md: 12 reversal positions -9..2 px from the centre; 8, 4 and 2 px bars."""
    from napari_retina.experiments import run_function

    flat = lambda s: np.full(len(s), 0.5)  # noqa: E731
    for center in (0.0, 3.7, -14.9):
        res = run_function("reversal", flat, center=center, window=5, gap=40)
        assert res.readout["reversal_positions_px"] == np.linspace(-9.0, 2.0, 12).round(6).tolist()
    # centre -15.9: the bar at -24.9 px would stick out of the field (edge -25) by half a pixel: shifted 0.9 px in
    res = run_function("reversal", flat, center=-15.9, window=5, gap=40)
    np.testing.assert_allclose(res.readout["reversal_positions_px"], np.linspace(-9.0, 2.0, 12) + 0.9, atol=1e-6)
    res = run_function("doubling", flat, period=3, cycles=3, window=5, gap=40)
    assert res.readout["widths_px"] == [8.0, 4.0, 2.0]


def test_explicit_reversals_and_widths_outside_a_small_field_are_still_refused():
    from napari_retina.experiments import run_function

    flat = lambda s: np.full(len(s), 0.5)  # noqa: E731
    with pytest.raises(ValueError, match="reversal position -9 px from the centre 0 px.*outside the model's 12-pixel"):
        run_function("reversal", flat, size=12, history=6, center=0.0, reversals=[-9.0, 2.0])
    with pytest.raises(ValueError, match="bar_width 8 px does not fit two bars into the model's 12-pixel field"):
        run_function("doubling", flat, size=12, history=6, bar_width=[8.0, 4.0])


@pytest.mark.parametrize("size", [12, 10])
def test_doubling_defaults_fit_a_small_field(size):
    """bar_width (8, 4, 2) px 'does not fit two bars into the model's 12-pixel field': the default widths now
    keep their 4x range with two bars of the widest in the field."""
    from napari_retina.experiments import run_function

    res = run_function("doubling", lambda s: np.full(len(s), 0.5), size=size, history=6, period=3, cycles=3)
    widths = res.readout["widths_px"]
    assert len(widths) == 3 and max(widths) == pytest.approx(size / 2.0) and widths[0] / widths[-1] == pytest.approx(4)
    c = res.conditions[0]   # the stimulus: the widest grating shows both polarities, each over half the field
    frame = res.stimulus[c["onset"]]
    assert (frame > 0).sum() == (frame < 0).sum() == size * size // 2


# ----------------------------------------------------------------------------- the battery when one experiment fails


@pytest.fixture(scope="module")
def tiny20():
    import torch

    import napari_retina as nr

    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()


def _flash_onsets(stim: np.ndarray) -> np.ndarray:
    """Frames where a full-field flash starts, from the movie itself."""
    on = np.abs(stim).reshape(len(stim), -1).max(1) > 0
    return np.flatnonzero(on & ~np.concatenate([[False], on[:-1]]))


def test_battery_keeps_the_finished_experiments_when_one_fails_and_routes_each_parameter(tiny20):
    """One failing experiment dropped every finished one (the exception ended the battery), and every
    parameter went to every experiment ('unknown parameter 'reversals' for experiment 'osr'')."""
    from napari_retina import experiments as E

    out = E.battery(tiny20, 0, retina=None, names=["osr", "reversal", "latency"], steps=2, max_frames=30,
                    periods=[3, 6], n_flashes=4, reversals=[-50.0], center=0.0, intensities=[0.0, -5.0])
    assert list(out["errors"]) == ["reversal"]
    assert "reversal position -50 px" in out["errors"]["reversal"] and "20-pixel field" in out["errors"]["reversal"]
    assert list(out["results"]) == ["osr", "latency"] and [r["name"] for r in out["rows"]] == ["osr", "latency"]
    onsets = _flash_onsets(out["results"]["osr"].stimulus)   # 2 trains of 4 flashes, 3 and 6 frames apart
    assert np.diff(onsets[:4]).tolist() == [3, 3, 3] and np.diff(onsets[4:]).tolist() == [6, 6, 6]
    assert len(_flash_onsets(out["results"]["latency"].stimulus)) == 1   # intensity 0 is grey: one flash
    assert "reversals" not in out["results"]["osr"].params


def test_battery_refuses_a_parameter_no_experiment_takes_and_raises_when_all_fail(tiny20):
    from napari_retina import experiments as E

    with pytest.raises(ValueError, match="unknown parameter 'reversal': none of the experiments osr, latency"):
        E.battery(tiny20, 0, retina=None, names=["osr", "latency"], reversal=[1.0])
    with pytest.raises(ValueError, match="cell"):   # wrong for every experiment: the input is wrong
        E.battery(tiny20, 7, retina=None, names=["osr", "latency"], steps=2)


def test_cli_experiment_all_writes_the_finished_ones_and_exits_1(tiny20, tmp_path, capsys):
    import json

    import napari_retina as nr
    from napari_retina.cli import main

    path = nr.save_model(tiny20, tmp_path / "tiny.pt")
    out = tmp_path / "out"
    rc = main(["experiment", "all", "--model", str(path), "--out", str(out), "--quiet", "--steps", "2", "--no-truth",
               "--param", "max_frames=20", "--param", "periods=[3,6]", "--param", "n_flashes=4",
               "--param", "intensities=[0,-5]", "--param", "speed=0.5", "--param", "flash_positions=[-3,0,3]",
               "--param", "reversals=[-50]", "--param", "bar_width=2",
               "--param", "period=5", "--param", "cycles=3"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "failed: reversal: ValueError: reversal position -50 px" in err
    assert json.loads((out / "reversal.json").read_text())["error"].startswith("ValueError: reversal position")
    bat = json.loads((out / "battery.json").read_text())
    assert list(bat["errors"]) == ["reversal"] and [r["name"] for r in bat["rows"]] == [
        "osr", "latency", "anticipation", "doubling"]
    for n in ("osr", "latency", "anticipation", "doubling"):
        assert json.loads((out / f"{n}.json").read_text())["name"] == n and (out / f"{n}.png").exists()
    assert not (out / "reversal.png").exists()


@pytest.mark.parametrize("param, message", [
    ("periods=[-1]", "experiment 'osr': periods must be positive whole numbers of frames, got -1"),
    ("center=99", "experiment 'reversal': center"),
    ("bar_width=[\"x\"]", "experiment 'doubling': bar_width must be a list of numbers"),
])
def test_cli_experiment_all_checks_every_param_value_before_running_any(tiny20, tmp_path, capsys, monkeypatch,
                                                                        param, message):
    """'experiment all --param periods=[-1]' ran latency, anticipation, reversal and doubling (~50 s) and only
    then failed osr, exit 1; a single experiment refuses the same value with exit 2."""
    import importlib

    import napari_retina as nr
    from napari_retina.cli import main
    battery = importlib.import_module("napari_retina.experiments.battery")   # the module, not the function

    monkeypatch.setattr(battery, "run", lambda *a, **k: pytest.fail("an experiment ran before --param was checked"))
    path = nr.save_model(tiny20, tmp_path / "tiny.pt")
    assert main(["experiment", "all", "--model", str(path), "--out", str(tmp_path / "out"), "--quiet",
                 "--param", param]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"napari-retina experiment: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_cli_param_with_malformed_json_is_an_error(tmp_path, capsys):
    from napari_retina.cli import main

    assert main(["experiment", "osr", "--out", str(tmp_path), "--param", "periods=[3,5"]) == 2
    err = capsys.readouterr().err
    assert "--param periods must be valid JSON" in err and "'[3,5'" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- OSR without a response


def _osr_conditions(periods):
    from napari_retina.experiments import osr

    p = base.resolve_params(osr, {"periods": periods}, 20, 10)
    return osr.build(size=20, history=10, respond=None, **p)


def test_osr_period_without_a_response_has_no_latency_and_stays_out_of_the_fit():
    """A flat response after the omitted flash read as latency 0 ms (the window's first frame) and entered
    the fit: a tdr model with history 10 gave lat 0.0 amp 0.0 at periods 11-17 yet slope 0.84, r2 0.941."""
    from napari_retina.experiments import osr

    proto = _osr_conditions([5, 7, 9, 11, 13])
    T = len(proto.stimulus)
    t = np.arange(T, dtype=np.float64)
    r = np.full(T, 0.2)
    for c in proto.conditions[:3]:   # a bump 4 frames after the expected flash; none for 11 and 13
        r += 2.0 * np.exp(-0.5 * ((t - (c["omitted"] + 4.0)) / 1.5) ** 2)
    out = osr.readout(r, proto.conditions)
    np.testing.assert_allclose(out["latency_ms"][:3], 40.0, atol=1e-6)
    assert np.isnan(out["latency_ms"][3:]).all() and np.isnan(out["latency_from_last_ms"][3:]).all()
    assert out["slope"] == pytest.approx(1.0, abs=1e-6) and out["r2"] == pytest.approx(1.0)   # the 3 responding
    assert out["present"] is False


def test_osr_of_a_flat_response_has_no_latency_at_all():
    """intensity 0 (or a silent cell): no period has a peak, so no latency, slope or r2."""
    from napari_retina.experiments import run_function

    out = run_function("osr", lambda s: np.full(len(s), 0.7), size=20, history=10, periods=[5, 9, 13]).readout
    assert np.isnan(out["latency_ms"]).all() and np.isnan(out["slope"]) and np.isnan(out["r2"])
    assert out["present"] is False


# ----------------------------------------------------------------------------- the truth sees the model's stimulus


class _RecordingRetina:
    """A ground truth with the 40-frame history of nr.synthetic.Retina that keeps what it was shown."""

    def __init__(self, size: int, history: int = 40):
        self.size, self.history, self.shown = size, history, []

    def respond(self, stimulus):
        self.shown.append(np.array(stimulus))
        return 1.0 + np.abs(stimulus).mean(axis=(1, 2))[:, None] * np.ones((1, 2))


@pytest.mark.parametrize("name, params", [("osr", {"periods": [3, 6], "n_flashes": 4}),
                                          ("doubling", {"period": 4, "cycles": 3}),
                                          ("reversal", {"center": "rf"})])
def test_battery_shows_the_truth_the_model_stimulus(tiny20, name, params):
    """run_truth built its movie for a 40-frame history whatever the model's, so a history-10 model and
    the truth were compared on different movies (gap 30 vs 60); and the reversal's truth mapped its own
    receptive field instead of reversing the bar where the model's was."""
    from napari_retina import experiments as E

    gt = _RecordingRetina(20)
    out = E.battery(tiny20, 0, retina=gt, names=[name], steps=2, max_frames=20, **params)
    res, truth = out["results"][name], out["truth"][name]
    assert res.params["gap"] == 30                      # history 10 + 20
    np.testing.assert_array_equal(gt.shown[-1], res.stimulus)
    np.testing.assert_array_equal(truth.stimulus, res.stimulus)
    assert truth.conditions == res.conditions


def test_battery_refuses_a_truth_of_another_field_size(tiny20):
    from napari_retina import experiments as E

    with pytest.raises(ValueError, match="retina sees a 50-pixel field but the model a 20-pixel one"):
        E.battery(tiny20, 0, retina=_RecordingRetina(50), names=["osr"], steps=2)


# ----------------------------------------------------------------------------- doubling below Nyquist


@pytest.mark.parametrize("period", [1, 2])
def test_doubling_refuses_periods_that_alias_f2(period):
    """At period 1 or 2 the second harmonic (period frames per cycle) is at or past Nyquist: a response with
    F2 = 1 and F1 = 0.5 read as F1 1.5 / F2 0 (period 1) or F2 2 (period 2)."""
    from napari_retina.experiments import run_function

    with pytest.raises(ValueError, match=f"period must be at least 3 frames.*got {period}"):
        run_function("doubling", lambda s: np.full(len(s), 0.5), size=20, history=10, period=period, bar_width=[4.0])


def test_doubling_measures_known_harmonics_from_period_3():
    from napari_retina.experiments import run_function

    for period in (3, 5):
        def respond(s, period=period):
            t = np.arange(len(s))
            return 2 + 0.5 * np.cos(np.pi * t / period) + np.cos(2 * np.pi * t / period + 0.3)
        out = run_function("doubling", respond, size=20, history=10, period=period, bar_width=[4.0]).readout
        np.testing.assert_allclose(out["f1"], 0.5, atol=1e-6)
        np.testing.assert_allclose(out["f2"], 1.0, atol=1e-6)
