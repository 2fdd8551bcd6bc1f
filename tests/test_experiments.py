"""nr.experiments: readouts on synthetic responses with known answers, runs on a tiny model, bad input, CLI."""

from __future__ import annotations

import copy
import json
import math
import types
import warnings

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import experiments as E
from napari_retina.experiments import anticipation, base, doubling, latency, osr, recovery, reversal

SIZE, HISTORY = 20, 10
SMALL = {  # scaled-down parameters for the tiny model
    "osr": {"periods": [3, 5, 8], "n_flashes": 4},
    "latency": {"intensities": [0.0, -2.0, -5.0, -10.0]},
    "anticipation": {"speed": 0.5, "flash_positions": [-6.0, -3.0, 0.0, 3.0, 6.0]},
    "reversal": {"reversals": [-3.0, -1.0, 1.0], "speed": 0.3},
    "doubling": {"period": 5, "cycles": 3, "bar_width": 2.0},
}


def bump(T: int, t0: float, amp: float = 1.0, sigma: float = 2.0) -> np.ndarray:
    t = np.arange(T, dtype=np.float64)
    return amp * np.exp(-0.5 * ((t - t0) / sigma) ** 2)


def protocol(module, size=50, history=40, **params):
    p = base.resolve_params(module, params, size, history)
    return module.build(size=size, history=history, respond=None, **p)


# ----------------------------------------------------------------------------- readouts on known responses


def test_osr_readout_recovers_a_fixed_latency_after_the_omitted_flash():
    proto = protocol(osr)
    T = len(proto.stimulus)
    L = 7.3  # frames after the omitted flash
    r = 0.2 + sum(bump(T, c["omitted"] + L, 3.0, 3.0) for c in proto.conditions)
    out = osr.readout(r, proto.conditions)
    np.testing.assert_allclose(out["latency_ms"], 73.0, atol=1.0)
    periods = np.array(out["periods_ms"])
    np.testing.assert_allclose(out["latency_from_last_ms"], 73.0 + periods, atol=1.0)
    assert out["slope"] == pytest.approx(1.0, abs=0.03) and out["r2"] > 0.99
    assert out["present"] is True
    assert periods.tolist() == [50.0, 70.0, 90.0, 110.0, 130.0, 150.0, 170.0]


def test_osr_readout_rejects_a_response_locked_to_the_last_flash():
    proto = protocol(osr)
    T = len(proto.stimulus)
    r = 0.2 + sum(bump(T, c["last_onset"] + 20.0, 3.0, 3.0) for c in proto.conditions)
    out = osr.readout(r, proto.conditions)
    np.testing.assert_allclose(out["latency_from_last_ms"], 200.0, atol=1.0)
    assert abs(out["slope"]) < 0.05
    assert out["present"] is False


def test_latency_readout_recovers_known_latencies():
    proto = protocol(latency)
    T = len(proto.stimulus)
    inten = np.array([c["intensity"] for c in proto.conditions])
    lat = 9.0 - 0.35 * np.abs(inten)  # frames: stronger -> earlier
    r = np.full(T, 0.1)
    for c, L, i in zip(proto.conditions, lat, inten):
        r += bump(T, c["onset"] + L, 2.0 * abs(i), 2.5)    # the -0.5 flash answered at 1 (the floor is 0.5)
    out = latency.readout(r, proto.conditions)
    assert math.isnan(out["latency_ms"][0])  # the blank flash evokes nothing
    np.testing.assert_allclose(out["peak_latency_ms"][1:], 10.0 * lat[1:], atol=0.6)
    # onset: a Gaussian reaches 20% of its peak sqrt(2 ln 5) sigma before it (baseline 0.1 subtracted)
    np.testing.assert_allclose(out["latency_ms"][1:], 10.0 * (lat[1:] - 2.5 * np.sqrt(2 * np.log(5))), atol=1.5)
    assert out["spearman"] == pytest.approx(-1.0)
    assert out["latency_range_ms"] == pytest.approx(10 * (lat[1] - lat[-1]), abs=1.5)
    assert out["present"] is True
    flat = np.full(T, 0.1) + sum(bump(T, c["onset"] + 8.0, abs(c["intensity"]), 2.5) for c in proto.conditions)
    assert latency.readout(flat, proto.conditions)["present"] is False


@pytest.mark.parametrize("lead_px", [1.5, -0.8])
def test_anticipation_readout_recovers_a_known_lead(lead_px):
    proto = protocol(anticipation)
    T = len(proto.stimulus)
    rf = 3.2
    r = np.full(T, 0.1)
    for c in proto.conditions:
        if c["kind"] == "flash":  # flashed-bar profile peaked at the RF centre, 6 frames after onset
            r += bump(T, c["onset"] + 6, np.exp(-0.5 * ((c["position"] - rf) / 4.0) ** 2), 2.0)
        else:  # the moving bar's response peaks when the bar is lead_px short of the RF centre
            d = c["direction"]
            t_star = c["onset"] + (rf - d * lead_px - c["x0"]) / (d * c["speed"])
            r += bump(T, t_star, 1.0, 15.0)
    out = anticipation.readout(r, proto.conditions)
    assert out["rf_center_px"] == pytest.approx(rf, abs=0.1)
    np.testing.assert_allclose(out["lead_px_per_direction"], lead_px, atol=0.1)
    assert out["lead_um"] == pytest.approx(lead_px * 55.0, abs=5.0)
    assert out["flash_latency_ms"] == pytest.approx(60.0, abs=1.0)
    assert out["present"] is (lead_px > 0)


def test_anticipation_s_pure_delay_reference_is_the_lag_of_a_cell_that_only_delays_the_bar():
    """A cell that answers the bar over its Gaussian field D = 8 frames late lags the moving bar by speed·D;
    its answer to a 2-frame flash peaks half a frame later than D (the flash's middle frame). Before, the
    reference was speed × flash latency, 0.5 frame too long (37.4 µm against a measured lag of 35.2 at 0.08
    px/frame)."""
    delay, centre, sigma = 8, 1.3, 1.5
    field = np.exp(-0.5 * ((np.arange(50) - 25 + 0.5 - centre) / sigma) ** 2)

    def respond(stim):
        out = np.ones(len(stim))
        out[delay:] -= (stim[:, 0, :].astype(np.float64) @ field)[:-delay]   # a dark bar raises the rate
        return out

    ro = nr.experiments.run_function("anticipation", respond).readout
    assert ro["flash_latency_ms"] == pytest.approx(85.0, abs=0.5)
    expected = [v * delay * 55.0 for v in ro["speed_list"]]
    np.testing.assert_allclose(ro["lag_expected_um"], expected, rtol=0, atol=0.5)
    np.testing.assert_allclose(ro["lead_um_per_speed"], -np.asarray(expected), rtol=0, atol=0.5)


def test_anticipation_readout_reads_the_envelope_not_the_pixel_ripple():
    """A bar drawn on the pixel grid makes the response ripple once per pixel crossing; a ripple
    crest 0.4 px ahead of the envelope's peak must not move the lead."""
    proto = protocol(anticipation, speed=0.1)         # one pixel crossing = 10 frames
    T = len(proto.stimulus)
    rf, lead_px = 0.0, 0.3
    r = np.full(T, 0.1)
    for c in proto.conditions:
        if c["kind"] == "flash":
            r += bump(T, c["onset"] + 6, np.exp(-0.5 * ((c["position"] - rf) / 4.0) ** 2), 2.0)
        else:
            d = c["direction"]
            t = np.arange(T, dtype=np.float64)
            t_star = c["onset"] + (rf - d * lead_px - c["x0"]) / (d * c["speed"])
            env = bump(T, t_star, 1.0, 15.0)
            r += env * (1.0 + 0.3 * np.cos(2 * np.pi * (c["speed"] * (t - t_star) + 0.4)))   # crest 4 frames early
    out = anticipation.readout(r, proto.conditions)
    assert out["crossing_frames"] == pytest.approx([10.0, 10.0])
    np.testing.assert_allclose(out["lead_px_per_direction"], lead_px, atol=0.1)


def test_reversal_readout_reports_how_the_latency_rises_with_the_reversal_position():
    """A burst 3 frames later per px of reversal position at the bursting positions (the last 7), none at the
    others: slope 30 ms/px over the bursting ones only; with a single burst it is NaN."""
    proto = protocol(reversal, center=0.0)
    T = len(proto.stimulus)
    r = np.full(T, 0.5)
    for k, c in enumerate(proto.conditions):
        if k >= 5:
            r += bump(T, c["reversal_frame"] + 20.0 + 3.0 * c["reversal_position"], 3.0, 3.0)
    out = reversal.readout(r, proto.conditions)
    assert out["bursting"] == [False] * 5 + [True] * 7
    assert out["burst_latency_slope_ms_per_px"] == pytest.approx(30.0, abs=0.5)
    one = np.full(T, 0.5) + bump(T, proto.conditions[6]["reversal_frame"] + 20.0, 3.0, 3.0)
    assert np.isnan(reversal.readout(one, proto.conditions)["burst_latency_slope_ms_per_px"])


def test_reversal_positions_count_along_the_bar_s_direction_so_a_mirrored_run_reads_alike():
    """Before, the default positions −9…2 px were added to the centre along +x whatever the direction: with
    direction −1 the bar came from the right and turned up to 9 px past the centre, and the same cell read
    another latency, slope sign and present flag (a helper's audit). The truth at centre 0 is mirror-symmetric:
    mirrored, its movie is the other direction's, and so is every number."""
    gt = nr.synthetic.Retina(seed=0)
    runs = {d: nr.experiments.run_truth("reversal", gt, cell=0, history=40, center=0.0, direction=d) for d in (1, -1)}
    np.testing.assert_allclose([c["absolute_position"] for c in runs[-1].conditions],
                               [-c["absolute_position"] for c in runs[1].conditions], atol=1e-12)
    np.testing.assert_allclose(runs[-1].stimulus, runs[1].stimulus[:, :, ::-1], atol=1e-6)
    a, b = runs[1].readout, runs[-1].readout
    assert a["reversal_positions_px"] == b["reversal_positions_px"] and a["present"] is b["present"] is True
    for key in ("n_bursts", "burst_latency_ms", "burst_latency_sd_ms", "burst_latency_slope_ms_per_px"):
        assert b[key] == pytest.approx(a[key], abs=1e-3), key   # ms, ms/px: float32 rounding apart


@pytest.mark.parametrize("center, direction", [(1.0, -1), (-1.0, 1)])
def test_reversal_s_default_bars_lie_whole_inside_a_small_field(center, direction):
    """A helper's audit: in a 20-px field with the centre 1 px off, the default positions were kept as long as
    each centre lay inside the field, so the outermost 2-px bar sat on its edge, half drawn (centroid 9.5 px
    where 10 was recorded)."""
    from napari_retina.experiments import base, reversal

    params = base.resolve_params(reversal, {"center": center, "direction": direction}, 20, 10)
    proto = reversal.build(20, 10, None, **params)
    x = np.arange(20) - 10 + 0.5
    for c in proto.conditions:
        assert -9.0 <= c["absolute_position"] <= 9.0
        frame = -proto.stimulus[c["reversal_frame"], 0]     # the dark bar at its reversal
        assert float((frame * x).sum() / frame.sum()) == pytest.approx(c["absolute_position"], abs=1e-6)


def test_reversal_readout_recovers_burst_ratio_and_latency():
    proto = protocol(reversal, center=0.0)
    T = len(proto.stimulus)
    r = np.full(T, 0.5)
    for c in proto.conditions:
        r += bump(T, c["reversal_frame"] - 10, 1.0, 3.0)   # approach response
        r += bump(T, c["reversal_frame"] + 24.8, 3.0, 3.0)  # burst
    out = reversal.readout(r, proto.conditions)
    np.testing.assert_allclose(out["burst_ratios"], 3.0, rtol=0.01)
    assert out["burst_latency_ms"] == pytest.approx(248.0, abs=1.0)
    assert out["burst_latency_sd_ms"] < 0.5 and abs(out["burst_latency_slope_ms_per_px"]) < 0.5
    assert out["present"] is True
    assert len(out["burst_latencies_ms"]) == 12
    no_burst = np.full(T, 0.5) + sum(bump(T, c["reversal_frame"] - 10, 1.0, 3.0) for c in proto.conditions)
    assert reversal.readout(no_burst, proto.conditions)["present"] is False


@pytest.mark.parametrize("a1,a2", [(0.7, 0.2), (0.1, 0.9)])
def test_doubling_readout_recovers_known_harmonics(a1, a2):
    proto = protocol(doubling, bar_width=4.0)
    T = len(proto.stimulus)
    r = np.full(T, 2.0)
    for k, c in enumerate(proto.conditions):
        t = np.arange(2 * c["period"] * c["cycles"])
        w = 2 * np.pi / (2 * c["period"])
        scale = 1.0 - 0.2 * k  # the largest F1 and F2 are at the first phase
        r[c["onset"] : c["onset"] + len(t)] += scale * (a1 * np.cos(w * t + 0.3) + a2 * np.sin(2 * w * t))
    out = doubling.readout(r, proto.conditions)
    np.testing.assert_allclose(out["f1"], a1 * (1.0 - 0.2 * np.arange(4)), atol=1e-9)
    np.testing.assert_allclose(out["f2"], a2 * (1.0 - 0.2 * np.arange(4)), atol=1e-9)
    assert out["f2_f1"] == pytest.approx(a2 / a1)
    assert out["f2_f1_per_width"] == [pytest.approx(a2 / a1)]
    assert out["present"] is False        # one width cannot show F2/F1 rising as the bars narrow


def test_latency_onset_ignores_which_bump_is_highest():
    """Two bumps whose heights trade places: the peak jumps, the onset does not."""
    proto = protocol(latency, intensities=[-2.0, -4.0, -6.0, -8.0])
    T = len(proto.stimulus)
    r = np.zeros(T)
    for k, c in enumerate(proto.conditions):
        r += bump(T, c["onset"] + 5.0 - 0.3 * k, 1.0 + 0.2 * k, 1.5)   # early bump, earlier when stronger
        r += bump(T, c["onset"] + 9.0, 0.2 + 0.6 * k, 1.5)             # late bump, overtakes it
    out = latency.readout(r, proto.conditions)
    assert out["spearman"] == pytest.approx(-1.0) and out["monotonic"] is True
    assert out["peak_latency_ms"][-1] > out["peak_latency_ms"][0]


def test_frames_of_interest_keep_rest_frames_and_the_budget():
    proto = protocol(latency, size=SIZE, history=HISTORY, max_frames=60)
    fr = proto.frames
    assert len(fr) <= 60
    for c in proto.conditions[1:]:  # the first is the blank (0) flash: no event, nothing to rest before
        before = fr[(fr >= c["onset"] - base.REST_FRAMES) & (fr < c["onset"])]
        assert len(before) >= 1  # at least one resting frame right before every flash
        assert np.abs(proto.stimulus[before[0] - HISTORY + 1 : before[-1] + 1]).max() == 0
    for c in proto.conditions:  # and every response window is represented
        assert ((fr >= c["onset"]) & (fr < c["onset"] + c["window"])).any()


def test_onset_time_interpolates():
    assert base.onset_time(np.array([0.0, 0.0, 1.0, 3.0, 2.0]), 0, 3.0, 0.5) == pytest.approx(1.5)
    assert math.isnan(base.onset_time(np.zeros(5), 0, 3.0, 0.5))


def test_parabolic_peak_and_helpers_against_references():
    t = np.arange(100.0)
    y = -(t - 41.3) ** 2
    tp, v = base.parabolic_peak(y, 30, 60)
    assert tp == pytest.approx(41.3) and v == pytest.approx(0.0, abs=1e-9)
    assert base.vertex3([0.0, 1.0, 3.0, 4.0], -(np.array([0.0, 1.0, 3.0, 4.0]) - 1.7) ** 2) == pytest.approx(1.7)
    # linear_fit and spearman (the osr and latency readouts') are tested in test_metrics.py


# ----------------------------------------------------------------------------- runs on a tiny model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 5), n_cells=2)).eval()


def test_names():
    assert E.names()[:4] == ["osr", "latency", "anticipation", "reversal"]


@pytest.mark.parametrize("name", ["osr", "latency", "anticipation", "reversal", "doubling"])
def test_every_experiment_runs_on_a_tiny_model(tiny, name):
    res = E.run(name, tiny, cell=0, max_frames=60, steps=4, **SMALL[name])
    T = len(res.stimulus)
    assert res.name == name and res.stimulus.shape == (T, SIZE, SIZE)
    assert res.rates.shape == (T, 2)
    assert res.attribution.invariance == E.get(name).INVARIANCE
    assert len(res.attribution.frames) <= 60
    red = res.reduction
    assert red.reduced_rates.shape == (T,) and np.isfinite(red.reduced_rates[HISTORY - 1:]).all()
    assert 1 <= len(red.kept) <= 8
    ro = res.readout
    assert isinstance(ro["present"], bool) and isinstance(ro["reduced"]["present"], bool)
    assert ro["explained_variance"] == pytest.approx(red.explained_variance)
    json.dumps(ro)  # plain numbers and lists
    # every condition has attributed frames
    for c in res.conditions:
        assert ((res.attribution.frames >= c["start"]) & (res.attribution.frames < c["stop"])).any()
    # the readout of the model is the readout function applied to its response
    assert E.readout(name, res.response, res.conditions)["present"] == ro["present"]


@pytest.mark.parametrize("name", ["osr", "latency", "anticipation", "reversal", "doubling"])
def test_every_readout_key_has_a_declared_unit(tiny, name):
    """Each experiment module declares the unit of every key its readout returns (the Experiments dock shows it),
    and a reason for NaN only for keys it has; run on the tiny model, as a user's run reads them."""
    res = E.run(name, tiny, cell=0, max_frames=60, steps=2, **SMALL[name])
    module = E.get(name)
    units = E.readout_units(name)
    assert units == {**base.COMMON_UNITS, **module.UNITS}
    assert sorted(set(res.readout) - {"reduced"} - set(units)) == []
    assert set(module.UNITS) == set(res.readout["reduced"])   # the module's own keys, none stale
    assert set(units.values()) <= set(base.READOUT_UNITS)
    assert set(module.NAN_REASONS) <= set(module.UNITS) and all(module.NAN_REASONS.values())
    numbers = [k for k, v in res.readout["reduced"].items() if not isinstance(v, bool)
               and not (isinstance(v, list) and v and all(isinstance(x, bool) for x in v))
               and not (isinstance(v, list) and all(isinstance(x, str) for x in v))]   # text: "unmet"
    assert [k for k in numbers if not units[k]] == []   # only yes/no values (and labels) go without a unit


def test_model_rates_equal_predict(tiny):
    for stim in (nr.stimuli.flash_train(period=4, n_flashes=3, pre=12, post=15, size=SIZE),
                 nr.stimuli.moving_bar(speed=0.7, start=-12, stop=12, pre=12, size=SIZE)):
        ref = nr.predict(tiny, stim)
        got = base.model_rates(tiny, stim)
        np.testing.assert_array_equal(got, ref)  # one forward path: the experiments run predict
        assert np.isnan(got[: HISTORY - 1]).all()


def test_run_on_a_response_function_matches_the_model_run(tiny):
    params = dict(SMALL["latency"], max_frames=40)
    res = E.run("latency", tiny, cell=1, steps=4, **params)
    fn = E.run_function("latency", lambda s: nr.predict(tiny, s), size=SIZE, history=HISTORY, cell=1, **params)
    np.testing.assert_allclose(fn.readout["latency_ms"], res.readout["latency_ms"], atol=1e-3)
    assert fn.attribution is None and fn.reduction is None


def test_to_dict_holds_the_result_and_write_results_writes_it(tiny, tmp_path):
    """ExperimentResult.to_dict: arrays, JSON text for the nested values (NaN kept), the attribution's
    and reduction's own to_dict; write_results writes it to HDF5 and .npz."""
    import h5py

    res = E.run("latency", tiny, cell=1, steps=4, max_frames=40, **SMALL["latency"])
    d = res.to_dict()
    assert set(d) == {"name", "stimulus", "rates", "cells", "conditions", "readout", "params", "attribution",
                      "reduction", "readout_units", "units", "frame_ms", "pixel_um"}
    assert set(d["attribution"]) == set(res.attribution.to_dict())
    assert set(d["reduction"]) == set(res.reduction.to_dict())
    for suffix in (".h5", ".npz"):
        nr.io.write_results(tmp_path / f"latency{suffix}", d)
    with h5py.File(tmp_path / "latency.h5") as f:
        assert f.attrs["name"] == "latency"
        np.testing.assert_array_equal(f["stimulus"][()], res.stimulus)
        np.testing.assert_array_equal(f["rates"][()], res.rates)
        assert f["cells"][()].tolist() == [1]
        np.testing.assert_equal(json.loads(f.attrs["readout"]), res.readout)
        assert json.loads(f.attrs["conditions"]) == res.conditions
        assert json.loads(f.attrs["params"]) == res.params
        # a scientist's audit: the file said no unit of the readout, the rates, or the frames its params count
        units = json.loads(f.attrs["readout_units"])
        assert set(units) == set(res.readout) - {"reduced"} and units["latency_ms"] == "ms"
        assert f.attrs["units"].startswith("spikes per 10 ms bin")
        assert (f.attrs["frame_ms"], f.attrs["pixel_um"]) == (10.0, 55.0)
        np.testing.assert_array_equal(f["reduction/kept"][()], res.reduction.kept)
        np.testing.assert_array_equal(f["attribution/channels"][()], res.attribution.channels)
    with np.load(tmp_path / "latency.npz") as z:
        np.testing.assert_array_equal(z["attribution/frames"], res.attribution.frames)

    flat = E.run_function("latency", lambda s: np.full(len(s), 0.5), size=SIZE, history=HISTORY,
                          **SMALL["latency"])
    assert math.isnan(flat.readout["spearman"]) and type(flat.readout["spearman"]) is float   # NaN kept as nan
    d = flat.to_dict()
    assert "attribution" not in d and "reduction" not in d
    assert math.isnan(json.loads(d["readout"])["spearman"])
    nr.io.write_results(tmp_path / "flat.h5", d)


def test_run_truth_uses_the_retina_and_battery_calls_recovery_report(tiny, monkeypatch):
    class FakeRetina:  # a "ground truth" that is the tiny model itself
        size, history = SIZE, HISTORY

        def respond(self, stimulus):
            return nr.predict(tiny, stimulus)

    calls = []
    monkeypatch.setattr(recovery, "recovery_report",
                        lambda red, model, retina: calls.append(red) or {"matched": len(red.kept)})
    out = E.battery(tiny, 0, retina=FakeRetina(), names=["osr"], steps=4, max_frames=40)
    row = out["rows"][0]
    assert row["truth_present"] == row["model_present"]
    assert out["recovery"]["osr"] == {"matched": len(out["results"]["osr"].reduction.kept)}
    assert calls and "| osr |" in E.format_table(out["rows"])


def test_battery_keeps_going_when_the_retina_cannot_be_scored(tiny):
    """A ground truth that is not an nr.synthetic.Retina runs, but its recovery report is an error entry."""
    class FakeRetina:
        size, history = SIZE, HISTORY

        def respond(self, stimulus):
            return nr.predict(tiny, stimulus)

    assert E.battery.__module__ == "napari_retina.experiments.battery"
    from napari_retina.experiments.battery import default_retina

    assert default_retina(tiny) is None                  # the 50-px retina does not see a 20-px model
    out = E.battery(tiny, 0, retina=FakeRetina(), names=["latency"], steps=4, max_frames=40,
                    intensities=[0.0, -5.0])
    assert out["recovery"]["latency"] == {"error": "TypeError: retina must be an nr.synthetic.Retina, got FakeRetina"}
    assert E.battery(tiny, 0, retina=None, names=["latency"], steps=4, max_frames=40,
                     intensities=[0.0, -5.0])["recovery"] == {}


# ----------------------------------------------------------------------------- recovery report (experiments/recovery.py)


@pytest.fixture(scope="module")
def gt():
    return nr.synthetic.Retina(seed=0)


def _model_with_truth(gt: nr.synthetic.Retina, shift: int = 0, flip: int = -1, pathways=None) -> nr.RetinaCNN:
    """A standard model whose first conv1 channels hold the true kernels of ``pathways`` (default every
    candidate of ``gt``; channel ``flip`` negated, with a negative bn1 scale so that the unit is
    unchanged), the rest noise."""
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(n_cells=gt.n_cells)).eval()
    with torch.no_grad():
        w = model.conv1.weight
        w.mul_(0.01)
        for c, q in enumerate(gt.candidates if pathways is None else pathways):
            k = torch.from_numpy(q.kernel().copy())
            w[c] = torch.roll(k, shifts=(shift, -shift), dims=(1, 2))
        if flip >= 0:
            w[flip] *= -1
            model.bn1.bn.weight.view(8, -1)[flip] = -1.0
    return model


def test_recovery_report_finds_planted_pathways(gt):
    model = _model_with_truth(gt, shift=2, flip=3)
    n = len(gt.pathways)
    red = types.SimpleNamespace(kept=list(range(n)), polarity=[q.polarity for q in gt.pathways] + ["ON"] * (8 - n),
                                sign=np.ones(8, int), label=lambda c: f"A{c}")
    rep = recovery.recovery_report(red, model, gt)
    by = {r["channel"]: r for r in rep["channels"]}
    for c, q in enumerate(gt.pathways):
        assert by[c]["pathway"] == q.name
        assert by[c]["temporal_r"] > 0.999
        assert by[c]["spatial_r"] > 0.99          # found despite the 2-px shift
        assert by[c]["polarity_match"] and by[c]["recovers"] and by[c]["margin"] > 0
        assert by[c]["label"] == f"A{c}"          # the reduction's label, as in every table
    gain = [c for c, q in enumerate(gt.pathways) if q.role == "gain control"]
    assert gain and all(by[c]["sign_match"] is False for c in gain)   # the reduction said +1, the truth subtracts
    assert rep["recovered"] == {q.name: [c] for c, q in enumerate(gt.pathways)}
    assert rep["missing"] == []
    # an ON filter is anti-correlated with its OFF mirror, so polarity is part of the match
    assert by[0]["all_temporal_r"]["OFF fast"] < 0


def test_recovery_report_offers_the_v1_inhibitor_as_a_candidate():
    """Version 1's inhibitor correlates with ON slow at r -0.97: a channel holding it is the inhibitor,
    and not 'recovered ON slow'."""
    v1 = nr.synthetic.Retina(version=1)
    model = _model_with_truth(v1, pathways=[v1.inhibitor])
    rep = recovery.recovery_report(None, model, v1, channels=[0])
    row = rep["channels"][0]
    assert row["pathway"] == v1.inhibitor.name and row["recovers"]
    assert rep["recovered"][v1.inhibitor.name] == [0] and rep["recovered"]["ON slow"] == []


def test_recovery_report_needs_the_spatial_filter_too(gt):
    """A channel with a pathway's temporal filter but a spatial profile unlike any truth filter
    (a ring of radius 5 px) matches in time only: not recovered."""
    q = gt.pathways[0]
    model = _model_with_truth(gt, pathways=[q])
    with torch.no_grad():
        yy, xx = np.mgrid[-7:8, -7:8]
        ring = (np.abs(np.hypot(yy, xx) - 5.0) < 0.7).astype(np.float64)
        model.conv1.weight[0] = torch.from_numpy((q.temporal[::-1, None, None] * ring[None]).astype(np.float32))
    row = recovery.recovery_report(None, model, gt, channels=[0])["channels"][0]
    assert row["all_temporal_r"][q.name] > 0.99 and row["all_spatial_r"][q.name] < 0.8
    assert row["recovers"] is False


def test_recovery_report_on_noise_recovers_nothing(gt):
    torch.manual_seed(1)
    model = nr.RetinaCNN(nr.ModelConfig(n_cells=gt.n_cells)).eval()
    rep = recovery.recovery_report(None, model, gt, channels=range(8))
    assert rep["missing"] == [q.name for q in gt.candidates]


def test_recovery_report_bad_input(gt):
    model = nr.RetinaCNN(nr.ModelConfig(n_cells=4)).eval()
    with pytest.raises(TypeError, match="Reduction"):
        recovery.recovery_report(None, model, gt)
    with pytest.raises(ValueError, match="channel"):
        recovery.recovery_report(None, model, gt, channels=[9])
    with pytest.raises(TypeError, match="RetinaCNN"):
        recovery.recovery_report(None, "model", gt, channels=[0])


# ----------------------------------------------------------------------------- bad input


def test_unknown_experiment_lists_the_valid_ones(tiny):
    with pytest.raises(ValueError, match="unknown experiment 'osrr'.*osr, latency, anticipation, reversal"):
        E.run("osrr", tiny)


def test_unknown_parameter_lists_the_valid_ones(tiny):
    with pytest.raises(ValueError, match="unknown parameter 'speeds'.*speed"):
        E.run("anticipation", tiny, speeds=0.1)


def test_negative_periods(tiny):
    with pytest.raises(ValueError, match="periods must be positive"):
        E.run("osr", tiny, periods=[3, -4])


@pytest.mark.parametrize("name", ["anticipation", "reversal"])
def test_zero_speed(tiny, name):
    with pytest.raises(ValueError, match="speed must be > 0"):
        E.run(name, tiny, speed=0.0)


def test_bars_outside_the_field(tiny):
    with pytest.raises(ValueError, match="outside the model's 20-pixel field"):
        E.run("anticipation", tiny, flash_positions=[0.0, 30.0])
    with pytest.raises(ValueError, match="outside the model's 20-pixel field"):
        E.run("reversal", tiny, center=0.0, reversals=[-15.0])
    with pytest.raises(ValueError, match="never enters"):
        E.run("anticipation", tiny, start=40.0, stop=60.0)


def test_model_history_does_not_fit_the_gap(tiny):
    with pytest.raises(ValueError, match="shorter than the model's history of 10 frames"):
        E.run("latency", tiny, gap=5)


def test_model_size_does_not_fit_the_default_protocol(tiny):
    # METHOD.md's 50-px positions do not fit a 20-px model
    with pytest.raises(ValueError, match="outside the model's 20-pixel field"):
        E.run("anticipation", tiny, flash_positions=list(np.linspace(-25, 25, 11)))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_explain_out_of_range(tiny, bad):
    with pytest.raises(ValueError, match="explain"):
        E.run("osr", tiny, explain=bad)


def test_not_a_model():
    with pytest.raises(TypeError, match="RetinaCNN"):
        E.run("osr", "model.pt")


def test_grating_too_coarse_for_the_field(tiny):
    with pytest.raises(ValueError, match="bar_width"):
        E.run("doubling", tiny, bar_width=15.0)


def test_wrong_parameter_types(tiny):
    with pytest.raises(TypeError, match="periods"):
        E.run("osr", tiny, periods="fast")
    with pytest.raises(ValueError, match="directions"):
        E.run("anticipation", tiny, directions=[2])


def test_huge_intensity_gives_an_error_not_nan_readouts(tiny):
    with pytest.raises(ValueError, match=r"the model's rates are NaN or infinite on \d+ of \d+ frames with a full "
                                         r"history .*largest \|value\| 1e\+38.*intensity or contrast parameters"):
        with warnings.catch_warnings():  # the movie is contrast by construction: no units warning
            warnings.simplefilter("error", nr.StimulusUnitsWarning)
            E.run("osr", tiny, intensity=1e38, **SMALL["osr"])


def test_model_rates_refuse_non_finite_rates(tiny):
    stim = nr.stimuli.flash_train(period=4, n_flashes=3, pre=12, post=15, size=SIZE, intensity=1e37)
    with pytest.raises(ValueError, match=r"the model's rates are NaN or infinite on \d+ of 34 frames.*"
                                         r"intensity or contrast parameters of a few contrast units"):
        base.model_rates(tiny, stim)
    with pytest.raises(ValueError, match="intensity or contrast parameters"):
        E.run("osr", tiny, intensity=1e37, **SMALL["osr"])


def test_readout_says_what_it_expects():
    proto = protocol(osr, periods=[3, 5])
    r = np.zeros(len(proto.stimulus))
    with pytest.raises(TypeError, match=r"readout expects conditions as a non-empty list of dicts.*"
                                        r"ExperimentResult\.conditions.*got a list holding int"):
        E.readout("osr", r, [1, 2])
    with pytest.raises(ValueError, match="got an empty list"):
        E.readout("osr", r, [])
    with pytest.raises(TypeError, match="got dict"):
        E.readout("osr", r, proto.conditions[0])
    with pytest.raises(ValueError, match=r"readout 'osr' expects the conditions of a 'osr' run .*lacks the key 'onsets'"):
        E.readout("osr", r, [{"start": 0, "stop": 10}])
    with pytest.raises(ValueError, match=r"response as a non-empty \(T,\) array of rates, got shape \(\d+, 2\)"):
        E.readout("osr", np.zeros((len(r), 2)), proto.conditions)
    with pytest.raises(TypeError, match=r"response as a \(T,\) array of rates, got str"):
        E.readout("osr", "rates", proto.conditions)
    with pytest.raises(ValueError, match=rf"conditions reach frame {len(r)} but the response has 50 frames"):
        E.readout("osr", r[:50], proto.conditions)
    for stop, got in [("x", "str 'x'"), (None, "NoneType None"), (10.5, "float 10.5")]:   # int("x"), int(None)
        with pytest.raises(TypeError, match=rf"^readout expects each condition's 'stop' as a frame index \(an int\), "
                                            rf"got {got}; pass the conditions of the run"):
            E.readout("osr", r, [{**proto.conditions[0], "stop": stop}])
    assert E.readout("osr", r, proto.conditions)["present"] is False


def test_readout_refuses_nan_inside_a_condition_but_not_before_the_first():
    """A scientist's audit: three NaN frames in an OSR response moved its first latency from 94.5 to 110 ms
    without a word, and an all-NaN response gave a readout of NaN with present False."""
    proto = protocol(osr, periods=[3, 5])
    r = np.random.default_rng(0).random(len(proto.stimulus))
    first = proto.conditions[0]
    start, stop = first["start"], first["stop"]
    r[:start + 4] = np.nan                               # no full history yet: allowed, inside a condition too
    assert isinstance(E.readout("osr", r, proto.conditions)["present"], bool)
    with pytest.raises(ValueError, match=rf"^readout expects finite rates, but all {len(r)} frames of the response "
                                         r"are NaN or infinite"):
        E.readout("osr", np.full(len(r), np.nan), proto.conditions)
    bad = r.copy()
    bad[start + 5:start + 8] = np.nan
    with pytest.raises(ValueError, match=rf"^readout expects finite rates inside each condition, but the response "
                                         rf"is nan at frame {start + 5} \(condition 0, frames {start}-{stop}, 3 "
                                         rf"such frames\)"):   # counted from the first finite frame
        E.readout("osr", bad, proto.conditions)
    last = proto.conditions[-1]
    bad = r.copy()
    bad[last["stop"] - 1] = np.inf
    with pytest.raises(ValueError, match=rf"response is inf at frame {last['stop'] - 1} \(condition "
                                         rf"{len(proto.conditions) - 1},"):
        E.readout("osr", bad, proto.conditions)


def test_run_function_refuses_a_response_of_the_wrong_length():
    """respond answered 10 values for a 326-frame movie (or 331): the run returned every readout NaN."""
    with pytest.raises(ValueError, match=r"respond must return rates of shape \(T,\) or \(T, n_cells\) with "
                                         r"T = 326.*got shape \(10,\)"):
        E.run_function("osr", lambda st: np.ones(10), periods=[5, 9])
    with pytest.raises(ValueError, match=r"respond must return .*T = 326.*got shape \(331,\)"):
        E.run_function("osr", lambda st: np.ones(len(st) + 5), periods=[5, 9])
    with pytest.raises(ValueError, match=r"respond must return .*T = 326.*got shape \(326, 0\)"):
        E.run_function("osr", lambda st: np.ones((len(st), 0)), periods=[5, 9])


def test_run_function_refuses_a_response_that_is_not_an_array_of_rates():
    """None gave an IndexError, a (T, 2, 2) answer numpy's 'only 0-dimensional arrays ...' TypeError."""
    with pytest.raises(TypeError, match=r"respond must return an array of rates of shape \(T,\) or "
                                        r"\(T, n_cells\) .*got NoneType"):
        E.run_function("osr", lambda st: None, periods=[5, 9])
    with pytest.raises(ValueError, match=r"respond must return .*T = 326.*got shape \(326, 2, 2\)"):
        E.run_function("osr", lambda st: np.ones((len(st), 2, 2)), periods=[5, 9])
    with pytest.raises(TypeError, match=r"respond must return real numbers.*got dtype <U"):
        E.run_function("osr", lambda st: np.full(len(st), "x"), periods=[5, 9])
    with pytest.raises(TypeError, match=r"respond must return real numbers.*got dtype bool"):
        E.run_function("osr", lambda st: np.zeros(len(st), bool), periods=[5, 9])
    with pytest.raises(TypeError, match=r"history must be an int"):
        E.run_function("osr", lambda st: np.ones(len(st)), history="a", periods=[5, 9])


def test_run_function_refuses_non_finite_rates_after_the_history():
    """An all-NaN or overflowing response gave NaN readouts (or inf rates) without a word; NaN on the first
    history - 1 frames, as the model's own rates have, is the convention and still runs."""
    with pytest.raises(ValueError, match=r"the rates respond returned are NaN or infinite on 287 of 287 frames "
                                         r"with a full history \(first at frame 39\).*history"):
        E.run_function("osr", lambda st: np.full(len(st), np.nan), periods=[5, 9])
    with pytest.raises(ValueError, match=r"respond returned a rate of magnitude 1e\+39.*float32"):
        E.run_function("osr", lambda st: np.full(len(st), 1e39), periods=[5, 9])

    def early_nan(st):
        r = np.full((len(st), 2), 0.5)
        r[:39] = np.nan
        return r
    res = E.run_function("osr", early_nan, cell="all", periods=[5, 9])
    assert res.rates.shape == (326, 2) and res.rates.dtype == np.float32 and res.cells == [0, 1]
    assert np.isnan(res.rates[:39]).all() and np.isfinite(res.rates[39:]).all()


def test_run_function_and_run_truth_accept_a_correct_response():
    # three periods: OSR's criterion needs at least three (through two points any line fits)
    proto = protocol(osr, periods=[5, 9, 13])
    r = 0.2 + sum(bump(len(proto.stimulus), c["omitted"] + 7.3, 3.0, 3.0) for c in proto.conditions)
    res = E.run_function("osr", lambda st: r.tolist(), periods=[5, 9, 13])      # a list of floats is an array of rates
    assert res.rates.shape == (len(r), 1) and res.cells == [0] and res.readout["present"] is True
    assert res.readout["latency_ms"] == pytest.approx(osr.readout(r, proto.conditions)["latency_ms"], abs=1e-3)

    class Truth:
        size, history = 50, 40

        def respond(self, stimulus):
            return np.stack([np.zeros(len(stimulus)), np.interp(np.arange(len(stimulus)), np.arange(len(r)), r)], 1)
    truth = E.run_truth("osr", Truth(), cell=1, periods=[5, 9, 13])
    assert truth.cells == [1] and truth.readout["latency_ms"] == pytest.approx([73.0] * 3, abs=1.0)


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_json_and_png(tiny, tmp_path, capsys):
    from napari_retina.cli import main

    path = nr.save_model(tiny, tmp_path / "tiny.pt")
    out = tmp_path / "out"
    rc = main(["experiment", "osr", "--model", str(path), "--out", str(out), "--quiet", "--steps", "4",
               "--param", "periods=[3,6]", "--param", "n_flashes=4", "--param", "max_frames=30"])
    assert rc == 0
    data = json.loads((out / "osr.json").read_text())
    assert data["readout"]["periods_ms"] == [30.0, 60.0]
    assert (out / "osr.png").stat().st_size > 1000
    assert "| osr |" in capsys.readouterr().out



def test_cli_writes_a_runs_files_all_or_none(tiny, tmp_path, capsys, monkeypatch):
    """A figure that cannot be written (a full disk) left a new osr.json beside the last run's osr.png; now
    the folder keeps the last run's files, and the command says so with exit 1."""
    from napari_retina import plotting
    from napari_retina.cli import main

    path = nr.save_model(tiny, tmp_path / "tiny.pt")
    out = tmp_path / "out"
    args = ["experiment", "osr", "--model", str(path), "--out", str(out), "--quiet", "--steps", "4",
            "--param", "periods=[3,6]", "--param", "n_flashes=4", "--param", "max_frames=30"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(res, path, *rest):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plotting, "write_figure", full_disk)
    assert main(args + ["--steps", "5"]) == 1
    assert capsys.readouterr().err.strip().endswith(f"cannot write {str(out / 'osr.png')!r}: No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_unknown_experiment(tmp_path, capsys):
    from napari_retina.cli import main

    assert main(["experiment", "flicker", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'flicker'" in err and "osr" in err


# ----------------------------------------------------------------------------- the shipped model

#: what docs/MODEL.md reports for the shipped model (cell 0): (truth present, model present) per experiment
SHIPPED_MODEL_SHOWS = {"osr": (False, False), "latency": (False, False), "anticipation": (False, False),
                       "reversal": (True, True), "doubling": (True, False)}


@pytest.fixture(scope="module")
def shipped_battery():
    model = nr.load_model(device="cpu")
    return E.battery(model, 0)


def test_shipped_model_reproduces_the_documented_phenomena(shipped_battery):
    rows = {r["name"]: r for r in shipped_battery["rows"]}
    assert {name: (r["truth_present"], r["model_present"]) for name, r in rows.items()} == SHIPPED_MODEL_SHOWS
    for row in rows.values():                      # METHOD.md §3: the reduced circuit explains >= 80%
        assert row["explained_variance"] >= 0.8, row


def test_shipped_model_osr_reduction_recovers_both_on_pathways(shipped_battery):
    """Issue 5: the OSR's kept channels match the ground truth's fast and slow ON pathways (r >= 0.8)."""
    rec = shipped_battery["recovery"]["osr"]
    assert rec["recovered"]["ON fast"] and rec["recovered"]["ON slow"], rec["channels"]
    kept = set(int(c) for c in shipped_battery["results"]["osr"].reduction.kept)
    assert set(rec["recovered"]["ON fast"] + rec["recovered"]["ON slow"]) <= kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_experiment_on_gpu_matches_cpu(tiny):
    # fixed steps: the same points on both devices (the default tol may stop a borderline frame one level apart)
    cpu = E.run("latency", tiny, 0, steps=8)
    gpu = E.run("latency", copy.deepcopy(tiny).to("cuda"), 0, steps=8)
    # cuDNN convolutions use TF32 by default: ~3e-4 relative differences from the CPU
    np.testing.assert_allclose(gpu.rates, cpu.rates, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(gpu.attribution.channels, cpu.attribution.channels, rtol=1e-2,
                               atol=1e-3 * np.nanmax(np.abs(cpu.attribution.channels)))
    assert gpu.reduction.kept == cpu.reduction.kept


def test_battery_compares_a_model_with_the_truth_version_it_was_trained_on(tiny):
    """A model trained on version-1 data (its dataset's retina description has no version) is compared with
    version 1; the shipped model, trained on version 2, with version 2; no description: the default."""
    from napari_retina.experiments.battery import default_retina

    big = nr.RetinaCNN(nr.ModelConfig(n_cells=4))
    assert default_retina(big).version == 2
    big.provenance = {"data_attrs": {"retina": json.dumps({"params": {}, "seed": 0})}}
    assert default_retina(big).version == 1
    big.provenance = {"data_attrs": {"retina": json.dumps({"version": 2, "params": {}})}}
    assert default_retina(big).version == 2
    big.provenance = {"data_attrs": {"retina": json.dumps({"version": 3, "params": {}})}}
    assert default_retina(big).version == 3                 # the gain-controlled truth
    big.provenance = {"data_attrs": {"retina": json.dumps({"version": 9, "params": {}})}}
    assert default_retina(big).version == 2                 # a version this package does not build: the default
    assert default_retina(nr.load_model(device="cpu")).version == 2
    assert default_retina(tiny) is None                    # another field size: no truth


@pytest.mark.parametrize("provenance", [{"data_attrs": [1]}, ["x"], {"data_attrs": {"retina": 3}}, None])
def test_a_provenance_of_another_shape_is_no_description_not_a_crash(provenance):
    """A checkpoint may say anything in its provenance: a list of data_attrs crashed the battery (AttributeError)."""
    from napari_retina.experiments.battery import default_retina, trained_on_truth

    big = nr.RetinaCNN(nr.ModelConfig(n_cells=4))
    big.provenance = provenance
    assert default_retina(big).version == 2 and not trained_on_truth(big)


def test_only_a_model_of_the_synthetic_retina_is_compared_with_it_by_default(tiny):
    from napari_retina.experiments.battery import trained_on_truth

    assert trained_on_truth(nr.load_model(device="cpu"))          # the shipped model: trained on Retina(seed=0)
    assert not trained_on_truth(nr.RetinaCNN(nr.ModelConfig(n_cells=4)))   # an untrained model: no description
    assert not trained_on_truth(tiny)                               # another field size


def test_recovery_needs_the_channel_closer_to_its_match_than_to_any_other_pathway():
    """Two OFF pathways of nearly the same kinetics but different sizes: a channel with A's temporal filter
    and B's spatial profile matches B best on min(temporal r, spatial r), yet its temporal filter is closer
    to A's. It recovers neither."""
    base = {"polarity": "OFF", "kinetics": "fast", "stage": "off", "rebound": 0.3, "order": 5.0, "threshold": 0.0}
    gt = nr.synthetic.Retina(params={"pathways": {"A": {**base, "peak": 7.0, "sigma": 1.0, "weight": 1.0},
                                                  "B": {**base, "peak": 8.0, "sigma": 3.0, "weight": 1.0}}})
    a, b = gt.pathway("A"), gt.pathway("B")
    model = _model_with_truth(gt, pathways=[a])
    with torch.no_grad():
        model.conv1.weight[0] = torch.from_numpy((a.temporal[::-1, None, None] * b.spatial[None]).astype(np.float32))
    row = recovery.recovery_report(None, model, gt, channels=[0])["channels"][0]
    assert row["pathway"] == "B" and row["match_r"] >= 0.8            # B is the best match on both filters ...
    assert row["all_temporal_r"]["A"] > row["all_temporal_r"]["B"]  # ... but A's temporal filter is closer
    assert row["margin"] < 0 and row["recovers"] is False


def test_a_cell_the_ground_truth_lacks_is_named_as_the_truth_s_before_any_response():
    """A 6-cell model compared with the 4-cell truth at cell 5 read 'cell (the model has 4 cells) must be in
    [0, 3]': wrong about the model, and found only after the first response. A function's rates say theirs."""
    retina = nr.synthetic.Retina(seed=0)

    def no_response(stimulus):
        raise AssertionError("a response was computed before the cell was checked")

    retina.respond = no_response
    with pytest.raises(ValueError, match=r"^cell \(the ground truth has 4 cells\) must be in \[0, 3\], got 5$"):
        E.run_truth("osr", retina, cell=5)
    with pytest.raises(ValueError, match=r"^cell \(the rates respond returned have 2 cells\) must be in \[0, 1\], "
                                         r"got 2$"):
        E.run_function("osr", lambda st: np.ones((len(st), 2)), cell=2, periods=[5, 9])


def test_battery_compares_only_a_model_of_the_synthetic_retina_by_default():
    """A shape-audit finding: the battery's "auto" compared any 50-px model with Retina(seed=0), a model of a
    recording too, where the Experiments dock (and docs/EXPERIMENTS.md's "ground truth": the retina a model was
    trained on) compare only a model trained on it. A retina passed in is still compared."""
    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(n_cells=4))
    small = {"names": ["osr"], "steps": 2, "periods": [3, 6], "n_flashes": 4}
    bat = E.battery(model, **small)
    assert bat["retina"] is None and bat["truth"] == {"osr": None} and bat["recovery"] == {}
    assert bat["rows"][0]["truth_present"] is None
    model.provenance = {"data_attrs": {"retina": json.dumps({"version": 2, "params": {}})}}   # trained on it
    assert E.battery(model, **small)["retina"].version == 2
    model.provenance = None
    bat = E.battery(model, retina=nr.synthetic.Retina(seed=0), **small)   # asked for: compared all the same
    assert bat["truth"]["osr"] is not None and bat["rows"][0]["truth_present"] in (True, False)
