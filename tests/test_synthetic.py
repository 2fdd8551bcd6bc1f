"""The synthetic retina: its circuit against a float64 reference, its phenomena (read out by
nr.experiments.phenomena), its datasets. Scoring a model against it: test_experiments.py (recovery)."""

from __future__ import annotations

import inspect
import json
import sys
import types

import numpy as np
import pytest
from scipy import ndimage

import napari_retina as nr
from napari_retina import synthetic as syn


@pytest.fixture(scope="module")
def gt():
    return syn.Retina(seed=0)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _subunits(q, s):
    """Rectified subunit outputs of one filtered input, float64 (T, H, W), straight from the docstring."""
    T = len(s)
    sp = np.stack([ndimage.correlate(frame, q.spatial, mode="constant") for frame in s])
    u = np.zeros_like(sp)
    for t in range(T):
        for tau in range(min(len(q.temporal), t + 1)):
            u[t] += q.temporal[tau] * sp[t - tau]
    return np.maximum(u - q.threshold, 0.0)


def _past_mean(x: np.ndarray, tau: float) -> np.ndarray:
    """x (T, cells) averaged over each frame's past 200 frames with weights exp(-lag/tau), lags 1..200,
    normalised to unit sum; frames before the first count as 0 (the caller pads with grey)."""
    w = np.exp(-np.arange(1, 201) / tau)
    w /= w.sum()
    out = np.zeros_like(x)
    for t in range(len(x)):
        lags = np.arange(1, min(200, t) + 1)
        out[t] = (w[lags - 1, None] * x[t - lags]).sum(0)
    return out


def reference_rates(gt: syn.Retina, stim: np.ndarray) -> np.ndarray:
    """The circuit written out in float64 NumPy/SciPy, straight from the module docstring."""
    s = stim.astype(np.float64)
    if gt.gained:                                    # versions 3 to 5: the same circuit
        # grey before the stimulus: the filters' 39 frames and the gain signals' 200 frames before them
        pad = 39 + 200
        s = np.concatenate([np.zeros((pad,) + s.shape[1:]), s])
        g = gt.params["gain_control"]
        pooled = {q.name: q.weight * np.einsum("thw,chw->tc", _subunits(q, s), gt.ganglion_pools) for q in gt.pathways}
        off = np.maximum(sum(pooled[q.name] for q in gt.pathways if q.role != "ganglion"), 0.0)
        off = off / (1.0 + g["off"]["strength"] * _past_mean(off, g["off"]["tau"]))
        n = _softplus(off + sum(pooled[q.name] for q in gt.pathways if q.role == "ganglion") + gt.params["bias"])
        rates = n / (1.0 + g["ganglion"]["strength"] * _past_mean(n, g["ganglion"]["tau"])) * gt.cell_gain
        return rates[pad:]
    if gt.version == 2:
        pooled = {q.name: q.weight * np.einsum("thw,chw->tc", _subunits(q, s), gt.ganglion_pools) for q in gt.pathways}
        off = np.maximum(sum(pooled[q.name] for q in gt.pathways if q.role != "ganglion"), 0.0)
        drive = off + sum(pooled[q.name] for q in gt.pathways if q.role == "ganglion") + gt.params["bias"]
        return _softplus(drive) * gt.cell_gain
    subunits = [_subunits(q, s) for q in gt.pathways + [gt.inhibitor]]
    p = gt.params
    # presynaptic inhibition of the target pathway's terminals by the pooled inhibitor subunits
    ti = p["terminal_inhibition"]
    gi = syn.gaussian_2d(ti["sigma"], 15)
    inh = np.stack([ndimage.correlate(f, gi, mode="constant") for f in subunits.pop()])
    k = [q.name for q in gt.pathways].index(ti["target"])
    subunits[k] = np.maximum(subunits[k] - ti["weight"] * inh, 0.0)
    m = [v["amacrine"] for v in p["pathways"].values()]
    ama_in = sum(mk * b for mk, b in zip(m, subunits))
    ga = syn.gaussian_2d(p["amacrine_sigma"], 15)
    a = np.maximum(np.stack([ndimage.correlate(f, ga, mode="constant") for f in ama_in]) - p["amacrine_threshold"], 0)
    exc = sum(q.weight * b for q, b in zip(gt.pathways, subunits))
    net = exc - p["amacrine_weight"] * a
    drive = np.einsum("thw,chw->tc", net, gt.ganglion_pools) + p["bias"]
    return _softplus(drive) * gt.cell_gain


@pytest.fixture(scope="module")
def v1():
    return syn.Retina(seed=0, version=1)


def _noise_with_dark_flash(frames: int, flash_at: int) -> np.ndarray:
    """±1 binary noise (seed 3) with a −5 dark flash of 2 frames at ``flash_at``: it drives every stage."""
    rng = np.random.default_rng(3)
    stim = np.where(rng.random((frames, 50, 50)) < 0.5, -1.0, 1.0).astype(np.float32)
    stim[flash_at:flash_at + 2] -= 5.0
    return stim


def test_respond_matches_float64_reference(gt):
    stim = _noise_with_dark_flash(70, 30)    # the strong dark flash drives the OFF stage
    off = gt._run(stim, "off")
    assert off.max() > 0.5, "the test stimulus must drive the gain-controlled OFF stage"
    ref = reference_rates(gt, stim)
    out = gt.respond(stim)
    assert out.shape == (70, gt.n_cells) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-4)


def test_version_1_matches_its_float64_reference(v1):
    stim = _noise_with_dark_flash(70, 30)    # the strong dark flash engages the amacrine cell
    assert v1._run(stim, "amacrine").max() > 0.1, "the test stimulus must drive the amacrine pathway"
    assert v1._run(stim, "inhibition").max() > 0.1, "the test stimulus must drive the terminal inhibition"
    np.testing.assert_allclose(v1.respond(stim), reference_rates(v1, stim), rtol=2e-4, atol=2e-4)
    assert not np.allclose(v1.respond(stim), syn.Retina().respond(stim))


@pytest.fixture(scope="module")
def v3():
    return syn.Retina(seed=0, version=3)


@pytest.fixture
def osr_before_share(monkeypatch):
    """The OSR criterion versions 3–5 were found and documented under: no floor on the peak's rise over the level
    the train leaves (``osr.MIN_RISE_SHARE`` 0), and no plateau clause (``osr.MAX_LOCKED_RUN``, 2026-12-07's
    second audit: their peaks stay with the last flash at the longest periods). Under today's their OSR is lost
    (test_versions_3_to_5_lose_the_osr_to_its_rise_share)."""
    monkeypatch.setattr(nr.experiments.osr, "MIN_RISE_SHARE", 0.0)
    monkeypatch.setattr(nr.experiments.osr, "MAX_LOCKED_RUN", 10 ** 6)


def test_version_3_matches_its_float64_reference(v3):
    """Version 3 written out from the docstring, gain signals included, across chunk boundaries."""
    stim = _noise_with_dark_flash(260, 100)  # the dark flash drives the OFF stage and both gain signals
    stim[:40] = 0.0
    g = v3.params["gain_control"]
    assert g["off"]["strength"] > 0 and g["ganglion"]["strength"] > 0
    assert v3._run(stim, "off").max() > 0.5, "the test stimulus must drive the OFF stage"
    ref = reference_rates(v3, stim)
    divisor = v3._run(stim, "divisor")
    assert divisor.max() > 1.5, "the ganglion gain control must act on the test stimulus"
    for chunk in (None, 37, 120):
        out = v3._run(stim, "rates", chunk=chunk)
        assert out.shape == (260, v3.n_cells) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-4)
    # the gain controls are in the rates: without them the same pathways answer differently
    off_only = syn.Retina(seed=0, version=3, params={"gain_control": {"off": {"strength": 0.0, "tau": 1.0},
                                                                      "ganglion": {"strength": 0.0, "tau": 1.0}}})
    plain = off_only.respond(stim)
    assert np.abs(plain - ref).max() > 0.5
    np.testing.assert_allclose(plain, np.logaddexp(0, off_only.drive(stim)) * v3.cell_gain, rtol=1e-5, atol=1e-6)


def test_version_3_bad_gain_control():
    ok = {"strength": 1.0, "tau": 10.0}
    for bad, match in [({"off": ok}, "stages 'off' and 'ganglion'"),
                       ({"off": ok, "ganglion": {"strength": 1.0}}, "'strength' and 'tau'"),
                       ({"off": ok, "ganglion": {"strength": -1.0, "tau": 10.0}}, "strength.*>= 0"),
                       ({"off": ok, "ganglion": {"strength": float("nan"), "tau": 10.0}}, "strength.*>= 0"),
                       ({"off": ok, "ganglion": {"strength": 1.0, "tau": 0}}, "tau.*> 0"),
                       ({"off": ok, "ganglion": {"strength": True, "tau": 10.0}}, "strength"),
                       ([1, 2], "stages")]:
        with pytest.raises(ValueError, match=match):
            syn.Retina(version=3, params={"gain_control": bad})
    with pytest.raises(ValueError, match="unknown Retina parameters"):
        syn.Retina(version=2, params={"gain_control": {"off": ok, "ganglion": ok}})


def test_contributions_sum_to_the_drive(gt, v1, v3):
    stim = nr.stimuli.white_noise(60, seed=8, checker=2)
    stim[20:22] -= 4.0
    assert v3._run(stim, "off")[:, 1].max() > 0.5
    for r in (gt, v1, v3):
        c = r.contributions(stim, 1)
        np.testing.assert_allclose(sum(c.values()), r.drive(stim)[:, 1], atol=1e-4)
    assert set(gt.contributions(stim, 0)) == {"ON fast", "ON slow", "ON tuned", "OFF stage", "bias"}


def test_off_and_on_are_the_inputs_the_drive_is_made_of(gt, v1, v3):
    """Version 2's drive is O + R + bias; version 3's R is its ganglion-stage contributions summed, and its OFF
    stage after the gain control is O divided (smaller where the OFF stage has been active); version 1 refuses."""
    stim = nr.stimuli.white_noise(80, seed=8, checker=2)
    stim[20:24] -= 4.0
    n = gt.n_cells
    for r in (gt, v3):
        both = r.off_and_on(stim)
        assert both.shape == (80, 2 * n) and both.dtype == np.float32 and both.min() >= 0
    both = gt.off_and_on(stim)
    np.testing.assert_allclose(both[:, :n] + both[:, n:] + gt.params["bias"], gt.drive(stim), atol=1e-4)
    both, parts = v3.off_and_on(stim), v3.contributions(stim, 1)
    np.testing.assert_allclose(both[:, n + 1], sum(v for k, v in parts.items() if k not in ("OFF stage", "bias")),
                               atol=1e-4)
    assert np.all(parts["OFF stage"] <= both[:, 1] + 1e-5) and both[:, 1].max() > 0.5
    assert np.max(both[:, 1] - parts["OFF stage"]) > 0.1 * both[:, 1].max()
    with pytest.raises(ValueError, match="version 1 has no OFF stage"):
        v1.off_and_on(stim)


def test_respond_is_chunk_invariant(gt):
    stim = nr.stimuli.white_noise(130, seed=5, checker=3)
    whole = gt.respond(stim)
    chunked = gt._run(stim, "rates", chunk=50)
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)


def test_pathway_filters_drive_subunits_as_documented(gt):
    """An impulse at one pixel gives u[t] = temporal[t - t0] * spatial, for every pathway."""
    stim = np.zeros((60, 50, 50), np.float32)
    stim[5, 25, 25] = 1.0
    u = gt._run(stim, "u")                    # (T, K, H, W)
    for k, q in enumerate(gt.pathways):
        expect = np.concatenate([q.temporal, np.zeros(15)]) * q.spatial[7, 7]
        np.testing.assert_allclose(u[5:60, k, 25, 25], expect, atol=1e-6)
        np.testing.assert_allclose(u[5 + 4, k, 18:33, 18:33], q.temporal[4] * q.spatial, atol=1e-6)
        kern = q.kernel()
        assert kern.shape == (40, 15, 15)
        np.testing.assert_allclose(kern[-1 - 4], q.temporal[4] * q.spatial, atol=1e-7)


def test_pathways_are_documented(gt, v1):
    names = [q.name for q in gt.pathways]
    assert names == ["ON fast", "ON slow", "ON tuned", "OFF fast", "OFF gain"] and gt.version == 2
    for q in gt.pathways + v1.candidates:
        first = q.temporal[np.argmax(np.abs(q.temporal) > 0.3 * np.abs(q.temporal).max())]   # the first lobe
        largest = q.temporal[np.argmax(np.abs(q.temporal))]          # a tuned (oscillating) filter: its largest
        assert ((largest if q.kinetics == "tuned" else first) > 0) == (q.polarity == "ON")
        assert q.peak_ms == 10.0 * np.argmax(q.temporal if q.polarity == "ON" else -q.temporal)
        assert np.isclose(q.spatial.sum(), 1.0)
        assert np.isclose(np.linalg.norm(q.temporal), 1.0)
    assert gt.pathway("ON fast").peak_ms < gt.pathway("ON slow").peak_ms
    assert [q.role for q in gt.pathways] == ["ganglion"] * 3 + ["OFF stage", "gain control"]
    assert gt.pathway("OFF gain").sign == -1 and gt.inhibitor is None
    tuned = gt.pathway("ON tuned").temporal           # a damped oscillation: several sign changes
    assert np.sum(np.diff(np.sign(tuned[np.abs(tuned) > 0.02])) != 0) >= 3
    # version 1, kept: its four pathways, the amacrine and the terminal inhibitor
    assert [q.name for q in v1.pathways] == ["ON fast", "ON slow", "OFF fast", "OFF slow"]
    assert v1.pathway("OFF slow").role == "amacrine" and v1.inhibitor.role == "terminal inhibition"
    assert len({tuple(p) for p in gt.cell_positions}) == gt.n_cells >= 3


def test_bad_version():
    with pytest.raises(ValueError, match=r"version must be one of \[1, 2, 3, 4, 5, 6\], got 7"):
        syn.Retina(version=7)
    with pytest.raises(ValueError, match="stage must be 'ganglion' or 'off'"):
        syn.Retina(params={"pathways": {"ON x": {"polarity": "ON", "kinetics": "fast", "peak": 3.0, "rebound": 0.5,
                                                 "sigma": 1.0, "threshold": 0.0, "weight": 1.0}}})


def _pathways(version: int = 2, name: str = "ON fast", **change) -> dict:
    """A copy of ``version``'s pathway table with ``change`` made to pathway ``name`` (a value None drops the key)."""
    table = json.loads(json.dumps(syn._PARAMS[version]["pathways"]))
    for key, value in change.items():
        if value is None:
            del table[name][key]
        else:
            table[name][key] = value
    return {"pathways": table}


BAD_PARAMS = [   # (params, version, exception, key phrase): each gave NaN or negative rates or numpy's words
    ({"bias": float("nan")}, 2, ValueError, "bias must be a finite number"),
    ({"bias": "x"}, 2, TypeError, "bias must be a number"),
    ({"gain": float("inf")}, 2, ValueError, "gain must be a finite number > 0"),
    ({"gain": -1}, 2, ValueError, "gain must be a finite number > 0"),
    ({"ganglion_sigma": 0}, 2, ValueError, "ganglion_sigma must be a finite number > 0"),
    ({"ganglion_sigma": 1e-3}, 2, ValueError, "ganglion_sigma of 0.001 px is too small"),
    ({"cells": [[1000, 1000]]}, 2, ValueError, "cells must lie inside the 50x50 field"),
    ({"cells": []}, 2, ValueError, "cells must be a list of at least one"),
    ({"cells": [[1, 2, 3]]}, 2, ValueError, "cells must be a list of at least one"),
    ({"pathways": {}}, 2, ValueError, "pathways must be a dict of at least one pathway"),
    ({"pathways": {"a": [1]}}, 2, TypeError, r"pathways\['a'\] must be a dict"),
    (_pathways(peak=0), 2, ValueError, r"pathways\['ON fast'\]\['peak'\] must be a finite number > 0"),
    (_pathways(weight=1e39), 2, ValueError, r"\['weight'\] must be within float32"),
    (_pathways(threshold=float("nan")), 2, ValueError, r"\['threshold'\] must be a finite number"),
    (_pathways(sigma="wide"), 2, TypeError, r"\['sigma'\] must be a number"),
    (_pathways(peak=None), 2, ValueError, r"pathways\['ON fast'\] lacks peak"),
    (_pathways(polarity="on"), 2, ValueError, "polarity.* must be 'ON' or 'OFF'"),
    (_pathways(rebound=1.0, ratio=1.0), 2, ValueError, "no usable temporal filter"),       # the lobes cancel
    (_pathways(name="ON tuned", period=0), 2, ValueError, r"\['period'\] must be a finite number > 0"),
    (_pathways(1, amacrine=float("inf")), 1, ValueError, r"\['amacrine'\] must be a finite number"),
    ({"amacrine_sigma": 0}, 1, ValueError, "amacrine_sigma must be a finite number > 0"),
    ({"terminal_inhibition": {"target": "OFF fast"}}, 1, ValueError, "terminal_inhibition lacks"),
    ({"gain_control": {"off": {"strength": 1.0, "tau": 1e-5}, "ganglion": {"strength": 1.0, "tau": 10.0}}}, 3,
     ValueError, r"\['tau'\] of 1e-05 frames is too short"),
    ([1], 2, TypeError, "params must be a dict"),
    ({"bias": object()}, 2, TypeError, "Retina parameters must be numbers"),
]


@pytest.mark.parametrize("params,version,exc,match", BAD_PARAMS)
def test_bad_params_are_refused_naming_the_parameter(params, version, exc, match):
    with pytest.raises(exc, match=match):
        syn.Retina(version=version, params=params)


def test_params_may_hold_numpy_values_and_rates_stay_finite():
    """NumPy numbers and arrays were refused by JSON; the promise of finite rates is kept or said in one sentence."""
    stim = nr.stimuli.white_noise(45, seed=1)
    one = syn.Retina(params={"cells": np.array([[24.5, 24.5]]), "gain": np.float32(2.0), "bias": np.float64(-1.6)})
    np.testing.assert_array_equal(one.respond(stim), syn.Retina(params={"cells": [[24.5, 24.5]], "gain": 2.0})
                                  .respond(stim))
    with pytest.raises(ValueError, match="rates overflow float32"):
        syn.Retina(params=_pathways(name="OFF fast", weight=3e38)).respond(stim * 1e30)


def test_white_noise_rates_in_documented_range(gt):
    stim = nr.stimuli.white_noise(600, seed=2, checker=syn.DATASET_CHECKER, contrast=syn.DATASET_CONTRAST,
                                  grey=syn.DATASET_GREY)
    r = gt.respond(stim)[40:]
    assert np.isfinite(r).all() and (r >= 0).all()
    assert 1.0 < r.mean() < 2.0                # ~1.45 (DATASET_* comment)
    assert (r.std(0) > 0.7).all()            # modulated: Poisson noise leaves signal
    mix = gt.respond(syn.training_mix(3000, seed=2))[40:]
    assert 0.8 < mix.mean() < 3.0 and (mix.std(0) > 0.5).all()


def test_version_3_rates_average_as_version_2_but_vary_less(gt, v3):
    """With its gain of 2 version 3's rates average as version 2's on the dataset's noise (~1.5 spikes/bin), but
    its gain controls compress them (sd ~0.9 against ~1.25; DATASET_* comment), and grey gives twice version 2's."""
    stim = nr.stimuli.white_noise(1500, seed=2, checker=syn.DATASET_CHECKER, contrast=syn.DATASET_CONTRAST,
                                  grey=syn.DATASET_GREY)
    r, r2 = v3.respond(stim)[240:], gt.respond(stim)[240:]    # a full history of the filters and the gain signals
    assert np.isfinite(r).all() and abs(r.mean() / r2.mean() - 1) < 0.15
    assert (r.std(0) > 0.6).all() and (r.std(0) < 0.85 * r2.std(0)).all()
    grey = v3.respond(np.zeros((300, 50, 50), np.float32))[-1]
    np.testing.assert_allclose(grey, 2 * gt.respond(np.zeros((300, 50, 50), np.float32))[-1], rtol=0.15)


def test_record_is_poisson_around_the_true_rates(gt):
    stim = nr.stimuli.white_noise(120, seed=4, checker=3)
    rates = gt.respond(stim).astype(np.float64)
    counts = gt.record(stim, seed=1, repeats=400)
    assert counts.shape == (400, 120, gt.n_cells)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    mean = counts.mean(0)
    # 6 standard errors of a Poisson mean
    assert np.all(np.abs(mean - rates) <= 6 * np.sqrt(np.maximum(rates, 1e-3) / 400) + 1e-3)
    np.testing.assert_array_equal(gt.record(stim, seed=7), gt.record(stim, seed=7))
    assert not np.array_equal(gt.record(stim, seed=7), gt.record(stim, seed=8))


def test_bad_input(gt):
    with pytest.raises(ValueError, match="50x50"):
        gt.respond(np.zeros((10, 40, 40), np.float32))
    with pytest.raises(ValueError, match="finite"):
        gt.respond(np.full((10, 50, 50), np.nan, np.float32))
    with pytest.raises(ValueError, match="unknown Retina parameters"):
        syn.Retina(params={"nope": 1})
    with pytest.raises(ValueError, match="seed"):
        syn.Retina(seed=-1)
    with pytest.raises(ValueError, match="no pathway"):
        gt.pathway("rod")
    with pytest.raises(ValueError, match="cell"):
        gt.contributions(np.zeros((5, 50, 50), np.float32), cell=9)


# ----------------------------------------------------------------------------- phenomena

#: what docs/MODEL.md reports for the version-2 truth, per phenomenon (every cell the same). Its OSR went on
#: 2026-12-07: at the 130-170 ms periods its peak stays 200-206 ms after the last flash (docs/EXPERIMENTS.md)
TRUTH_SHOWS = {"osr": False, "latency": False, "anticipation": False, "reversal": True, "doubling": True}


@pytest.mark.parametrize("cell", [0, 3])
def test_truth_shows_the_documented_phenomena(gt, cell):
    got = {name: nr.experiments.run_truth(name, gt, cell).readout for name in TRUTH_SHOWS}
    assert {name: ro["present"] for name, ro in got.items()} == TRUTH_SHOWS
    osr = got["osr"]
    assert 0.6 < osr["slope"] < 0.9 and osr["r2"] > 0.9 and min(osr["omitted_amplitude"]) > 5.0
    assert min(osr["omitted_share"]) > 0.18                # a distinct answer to the omission (MIN_RISE_SHARE 0.15)
    # but locked to the last flash over the three longest periods: its only unmet clause
    assert [text.split(" (here ")[0] for text in osr["unmet"]] == [
        "no 2 neighbouring local slopes under 0.5, the peak locked to the last flash over 3 periods"]
    np.testing.assert_allclose(osr["latency_from_last_ms"][-3:], [200.0, 203.0, 206.0], atol=2.0)
    rev = got["reversal"]
    assert rev["n_bursts"] >= 6 and 250 < rev["burst_latency_ms"] < 320 and rev["burst_latency_sd_ms"] < 30
    assert rev["burst_latency_slope_ms_per_px"] > 8.0   # the burst follows the bar, as a classical ON cell's does
    dbl = got["doubling"]["f2_f1_per_width"]
    assert dbl[0] < dbl[1] < dbl[2]
    # what fails, as documented: the latency range is one step (the weakest flash answered ~150 ms late,
    # the others within ~12 ms), and the moving bar's response lags (ON responses to its trailing edge)
    lat = got["latency"]
    assert lat["largest_step_ms"] > 0.5 * lat["latency_range_ms"]
    assert max(got["anticipation"]["lead_um_per_speed"]) < 0


@pytest.mark.parametrize("cell", [0, 1, 2, 3])
def test_version_3_shows_all_five_phenomena(v3, cell, osr_before_share):
    """The gain-controlled truth shows every phenomenon of METHOD.md §4 by the literature criteria it was found
    under, in every cell (docs/MODEL.md gives the numbers; the experiments' defaults, the reversal at the mapped
    receptive field)."""
    got = {name: nr.experiments.run_truth(name, v3, cell).readout
           for name in ("osr", "latency", "anticipation", "reversal", "doubling")}
    assert {name: bool(ro["present"]) for name, ro in got.items()} == dict.fromkeys(got, True)
    osr, lat, ant, rev = got["osr"], got["latency"], got["anticipation"], got["reversal"]
    assert 0.6 < osr["slope"] < 0.9 and osr["r2"] > 0.85
    assert lat["latency_range_ms"] > 22 and lat["largest_step_ms"] < 0.4 * lat["latency_range_ms"]
    assert min(ant["lead_um_per_direction"]) > 40 and min(ant["moving_amplitude"]) > 0.55
    assert rev["n_bursts"] >= 5 and 180 < rev["burst_latency_ms"] < 250 and rev["burst_latency_sd_ms"] < 15
    # locked to the reversal, not to the bar (a classical ON cell's rises > 15 ms/px: test_criteria.py), and
    # where the bar turns back before it reaches the centre
    assert abs(rev["burst_latency_slope_ms_per_px"]) < 5.0
    assert max(p for p, b in zip(rev["reversal_positions_px"], rev["bursting"]) if b) < 0


def test_version_3_reversal_holds_wherever_the_bar_reverses_on_the_pixel_grid(v3):
    """The burst follows the reversal with the centre moved off the grid, in the cell of the smallest gain: at the
    offsets where, before the readout averaged over one pixel crossing, a ripple of the approach response counted
    as an early burst (0.1-0.2 px, 0.35 px short; docs/MODEL.md), and at a quarter, a half, three quarters."""
    centre = nr.experiments.run_truth("reversal", v3, 3).readout["center_px"]
    for dx in (0.1, 0.15, 0.2, -0.35, 0.25, 0.5, 0.75):
        rev = nr.experiments.run_truth("reversal", v3, 3, center=centre + dx).readout
        assert rev["present"] and rev["n_bursts"] >= 5 and rev["burst_latency_sd_ms"] < 15, (dx, rev)


@pytest.mark.parametrize("stage, lost", [("ganglion", ("anticipation", "latency")), ("off", ("reversal",))])
def test_version_3_gain_controls_make_the_phenomena(stage, lost):
    """Mechanism: without the ganglion gain control the moving bar's response lags and latency coding is lost;
    without the OFF stage's, the OFF response to the returning bar breaks the reversal's fixed latency."""
    control = json.loads(json.dumps(syn.V3_PARAMS["gain_control"]))
    control[stage]["strength"] = 0.0
    without = syn.Retina(seed=0, version=3, params={"gain_control": control})
    got = {name: nr.experiments.run_truth(name, without, 0).readout for name in lost}
    assert not any(ro["present"] for ro in got.values())
    if stage == "ganglion":
        assert max(got["anticipation"]["lead_um_per_direction"]) < 0          # a lag, as in version 2
    else:
        assert got["reversal"]["burst_latency_sd_ms"] > 50                     # early bursts at some positions


def _script(name: str, monkeypatch):
    """The module of ``scripts/NAME.py`` (the scripts import each other by name, as when run from there)."""
    import importlib
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
    return importlib.import_module(name)


def test_truth_search_line_is_the_version_3_circuit(v3, monkeypatch, osr_before_share):
    """scripts/truth_search.py's 1-D circuit, behind docs/MODEL.md's search and ±20% table, equals Retina(version=3)
    on a y-uniform movie in every cell, and its margins are positive exactly where the criteria pass."""
    import torch

    ts = _script("truth_search", monkeypatch)
    movie = nr.experiments.run_truth("anticipation", v3, 0, speed=0.5).stimulus
    line = ts.Line(None, torch.float64)
    np.testing.assert_allclose(line.respond(movie), v3.respond(movie), rtol=1e-5, atol=1e-5)
    per_cell = ts.readouts(syn.V3_PARAMS, cells=(0,))
    assert min(ts.margins(per_cell[0]).values()) > 0
    control = json.loads(json.dumps(syn.V3_PARAMS))
    control["gain_control"]["ganglion"]["strength"] = 0.0
    lag = ts.margins(ts.readouts(control, cells=(0,))[0])
    assert lag["anticipation lead"] < 0 and lag["latency monotonic"] < 0
    # the monotonic margin is graded by the latency curve's largest rise: 0 at the 1 ms tolerance, and a
    # small rise nearer to passing than a large one (a search can climb it)
    rises = [0.0, 0.5, 1.0, 3.0, 15.0]
    graded = [ts._rise_margin(x) for x in rises]
    assert graded[0] == 1.0 and graded[2] == 0.0 and all(np.diff(graded) < 0)


def test_truth_search_osr_robustness_counts_the_2d_circuits_osr_under_each_move(monkeypatch, tmp_path,
                                                                               osr_before_share):
    """``truth_search.osr_robustness`` (the ``--robust-osr`` search): one run per ON pathway × (peak, weight) ×
    factor × cell, counted as passing exactly where the 2-D ``Retina(version=3)`` with that one value moved shows
    the OSR; its worst margin is negative iff a run fails, and the search's score carries the count."""
    ts = _script("truth_search", monkeypatch)
    got = ts.osr_robustness(syn.V3_PARAMS, cells=(0,), factors=(0.9, 1.1))
    on = [n for n, pw in syn.V3_PARAMS["pathways"].items() if pw["polarity"] == "ON"]
    assert len(on) == 3 and got["runs"] == len(on) * 2 * 2
    passes = 0
    for name in on:
        for key in ("peak", "weight"):
            for factor in (0.9, 1.1):
                params = json.loads(json.dumps(syn.V3_PARAMS))
                params["pathways"][name][key] *= factor
                assert params["pathways"][name][key] != syn.V3_PARAMS["pathways"][name][key]
                gt = syn.Retina(seed=0, version=3, params={"pathways": params["pathways"]})
                passes += bool(nr.experiments.run_truth("osr", gt, 0).readout["present"])
    assert 0 < passes < got["runs"]                     # the truth's OSR is fragile: some moves break it
    assert got["passes"] == passes
    assert got["worst"] < 0 and got["worst"] < got["mean"]
    score = ts.score(syn.V3_PARAMS, robust_osr=True)
    assert score[0] == 0 and score[1] == ts.osr_robustness(syn.V3_PARAMS)["passes"]
    # a search's log gives its last accepted step, over version 3's other parameters
    steps = [json.loads(json.dumps(syn.V3_PARAMS)) for _ in range(2)]
    for i, step in enumerate(steps):
        step["bias"] += i + 1
        del step["ganglion_sigma"]
    log = tmp_path / "out.jsonl"
    log.write_text("".join(json.dumps({"iteration": i, "params": p}) + "\n" for i, p in enumerate(steps)))
    loaded = ts.load_params(str(log))
    assert loaded["bias"] == syn.V3_PARAMS["bias"] + 2 and loaded["ganglion_sigma"] == syn.V3_PARAMS["ganglion_sigma"]
    (tmp_path / "p.json").write_text(json.dumps(steps[0]))
    assert ts.load_params(str(tmp_path / "p.json"))["bias"] == syn.V3_PARAMS["bias"] + 1
    assert ts.load_params(None) == syn.V3_PARAMS


def test_truth_search_osr_line_margins_measure_the_distance_from_a_line_of_slope_one(v4, monkeypatch,
                                                                                     osr_before_share):
    """``--osr-line``: positive margins for latencies on a line of slope ~1, each margin negative where its own
    clause of OSR_LINE fails; version 4 (2-D circuit) is a step, not a line, so its line margins are negative
    and a search with ``line`` scores it below its plain score (the line's margins join the smallest)."""
    ts = _script("truth_search", monkeypatch)
    periods = np.array([50, 70, 90, 110, 130, 150, 170.0])

    def readout(latency):
        fit = nr.metrics.linear_fit(periods, latency)
        return {"slope": fit[0], "r2": fit[2], "local_slopes": list(np.diff(latency) / np.diff(periods))}

    line = ts.osr_line_margins(readout(periods + 40))
    assert min(line.values()) > 0
    stepped = periods + 40
    stepped[3:] += 15                                     # one step of 15 ms: local slope 1.75
    assert ts.osr_line_margins(readout(stepped))["osr line no step"] < 0
    plateau = np.minimum(periods + 40, 170.0)              # stops following the period: local slopes of 0
    assert ts.osr_line_margins(readout(plateau))["osr line no step"] < 0
    shallow = ts.osr_line_margins(readout(0.6 * periods + 80))
    assert shallow["osr line slope"] < 0 < shallow["osr line no step"] and shallow["osr line r2"] > 0
    truth = ts.osr_line_margins(nr.experiments.run_truth("osr", v4, 0).readout)
    assert all(-1 < m < 0 for m in truth.values())        # inside the clip: a hill climb has a slope to follow
    cell0 = ts.readouts(syn.V4_PARAMS, cells=(0,), offsets=())[0]
    assert "osr line r2" not in ts.margins(cell0) and ts.margins(cell0, line=True)["osr line r2"] < 0
    plain, with_line = ts.score(syn.V4_PARAMS), ts.score(syn.V4_PARAMS, line=True)
    assert with_line[0] == plain[0] == 0 and with_line[1] == pytest.approx(min(truth.values()), abs=0.02)
    assert plain[1] > 0


def test_truth_search_osr_rise_margin_is_the_criterions_share(monkeypatch, tmp_path):
    """Every search's "osr rise" margin is the OSR's smallest ``omitted_share`` over ``osr.MIN_RISE_SHARE`` in
    units of 0.15 (−1 where a period's share is NaN): version 5's (cell 0, under 0.07) is negative and its smallest,
    the OSR is the one phenomenon it misses, and a search logs that score."""
    ts = _script("truth_search", monkeypatch)
    cell0 = ts.readouts(syn.V5_PARAMS, cells=(0,), offsets=())[0]
    share = cell0["osr"]["omitted_share"]
    m = ts.margins(cell0)
    assert m["osr rise"] == pytest.approx((min(share) - nr.experiments.osr.MIN_RISE_SHARE) / 0.15)
    assert -1 < m["osr rise"] < 0 and m["osr rise"] == min(m.values())
    assert not cell0["osr"]["present"] and all(cell0[n]["present"] for n in ts.NAMES if n != "osr")
    assert ts.osr_margins(dict(cell0["osr"], omitted_share=[0.6, float("nan")]))["osr rise"] == -1.0
    assert ts.osr_margins(dict(cell0["osr"], omitted_share=[0.6, 0.3]))["osr rise"] == pytest.approx(1.0)
    start = {k: syn.V5_PARAMS[k] for k in ("pathways", "bias", "gain_control")}
    score = ts.score(start)
    assert score[0] == -1
    ts.search(str(tmp_path / "s.jsonl"), start, 0, 0, 0.06)
    assert json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])["score"] == pytest.approx(list(score))


def test_versions_3_to_5_lose_the_osr_to_its_rise_share(monkeypatch):
    """The gain-controlled truths answer the omission with a rise under 8% of their answer to the train (the 1-D
    circuit, cell 0: version 3 down to 0.3%), so the OSR criterion's ``MIN_RISE_SHARE`` (0.15) takes their OSR, and
    it alone among the clauses they were found under: without it each shows the OSR again (the plateau clause of
    2026-12-07 aside). The ganglion's division is what holds the share down: version 5
    with it at a tenth rises 6–26%, without it 19–92% (and loses anticipation)."""
    ts = _script("truth_search", monkeypatch)
    truths = {3: syn.V3_PARAMS, 4: syn.V4_PARAMS, 5: syn.V5_PARAMS}
    per_version = {v: ts.readouts(p, cells=(0,), offsets=())[0] for v, p in truths.items()}
    for v, r in per_version.items():
        assert max(r["osr"]["omitted_share"]) < 0.08 and not r["osr"]["present"], v
        assert all(r[n]["present"] for n in ts.NAMES if n != "osr"), v
    assert min(per_version[3]["osr"]["omitted_share"]) < 0.005
    shares = {f: ts.readouts(ts.moved(syn.V5_PARAMS, ("gain_control", "ganglion", "strength"), f), cells=(0,),
                             offsets=())[0]["osr"]["omitted_share"] for f in (0.1, 0.0)}
    assert 0.05 < min(shares[0.1]) and 0.2 < max(shares[0.1]) and min(shares[0.0]) > 0.15
    assert max(shares[0.0]) > 0.8 > max(shares[0.1])
    monkeypatch.setattr(nr.experiments.osr, "MIN_RISE_SHARE", 0.0)
    monkeypatch.setattr(nr.experiments.osr, "MAX_LOCKED_RUN", 10 ** 6)   # nor, since 2026-12-07, to a plateau
    for v, p in truths.items():
        assert nr.experiments.run_function("osr", ts.Line(p).respond, cell=0).readout["present"], v


def test_truth_search_shape_moves_each_tuned_pathways_order_and_phase_within_bounds(monkeypatch):
    """``--shape``: each tuned pathway's envelope order and phase move (within ORDER_BOUNDS and ±PHASE_BOUND
    periods); every other parameter moves exactly as the same seed moves it without ``shape`` (so that the
    searches docs/MODEL.md reports stay reproducible), and without ``shape`` order and phase stay put."""
    ts = _script("truth_search", monkeypatch)
    start = {k: syn.V4_PARAMS[k] for k in ("pathways", "bias", "gain_control")}
    tuned = [n for n, q in start["pathways"].items() if "period" in q]
    assert len(tuned) == 8
    plain = ts.perturb(start, np.random.default_rng(3), 0.1)
    for n in tuned:
        assert (plain["pathways"][n]["order"], plain["pathways"][n]["phase"]) == \
            (start["pathways"][n]["order"], start["pathways"][n]["phase"])
    shaped = ts.perturb(start, np.random.default_rng(3), 0.1, shape=True)
    for n, q in shaped["pathways"].items():
        rest = {k: v for k, v in q.items() if n not in tuned or k not in ("order", "phase")}
        assert rest == {k: v for k, v in plain["pathways"][n].items() if k in rest}
        if n in tuned:
            assert q["order"] != start["pathways"][n]["order"] and q["phase"] != start["pathways"][n]["phase"]
    assert (shaped["bias"], shaped["gain_control"]) == (plain["bias"], plain["gain_control"])
    rng, q = np.random.default_rng(0), start
    for _ in range(200):                                  # a long walk with a large step meets the bounds
        q = ts.perturb(q, rng, 1.0, shape=True)
        for n in tuned:
            p = q["pathways"][n]
            assert ts.ORDER_BOUNDS[0] <= p["order"] <= ts.ORDER_BOUNDS[1]
            assert abs(p["phase"]) <= ts.PHASE_BOUND * p["period"] + 1e-12
    orders = [q["pathways"][n]["order"] for n in tuned]
    assert min(orders) == ts.ORDER_BOUNDS[0] or max(orders) == ts.ORDER_BOUNDS[1]
    syn.Retina(seed=0, version=4, params={**syn.V4_PARAMS, **q})           # still a circuit the truth accepts


@pytest.fixture(scope="module")
def v4():
    return syn.Retina(seed=0, version=4)


def test_version_4_is_version_3s_circuit_with_a_bank_of_tuned_on_pathways(v3, v4):
    """Version 4 (docs/MODEL.md): version 3's equations (the float64 reference, across chunk boundaries) with
    seven more tuned ON pathways, whose periods span the OSR experiment's 50–170 ms; the bank is in the rates."""
    bank = [q for q in v4.pathways if q.name.startswith("ON bank")]
    assert [q.name for q in v4.pathways[:5]] == [q.name for q in v3.pathways] and len(v4.pathways) == 12
    assert len(bank) == 7 and all(q.kinetics == "tuned" and q.role == "ganglion" and q.weight > 0 for q in bank)
    periods = [v4.params["pathways"][q.name]["period"] for q in bank]
    assert periods == sorted(periods) and periods[0] < 6 and periods[-1] > 15
    assert v4.gained and v3.gained and not syn.Retina(version=2).gained
    stim = _noise_with_dark_flash(260, 100)
    stim[:40] = 0.0
    ref = reference_rates(v4, stim)
    for chunk in (None, 37):
        np.testing.assert_allclose(v4._run(stim, "rates", chunk=chunk), ref, rtol=2e-4, atol=2e-4)
    without = syn.Retina(seed=0, version=4, params={"pathways": {k: v for k, v in syn.V4_PARAMS["pathways"].items()
                                                                 if not k.startswith("ON bank")}})
    assert len(without.pathways) == 5 and np.abs(without.respond(stim) - ref).max() > 0.1


def test_version_4_shows_all_five_phenomena(v4, monkeypatch, osr_before_share):
    """Version 4 keeps version 3's five phenomena by the literature criteria it was found under: the 2-D circuit in
    cell 3 (the smallest gain, the nearest to every amplitude floor), the 1-D circuit (truth_search.Line) in all
    four."""
    ts = _script("truth_search", monkeypatch)
    per_cell = ts.readouts(syn.V4_PARAMS)
    assert sorted(per_cell) == [0, 1, 2, 3] and all(r[n]["present"] for r in per_cell.values() for n in ts.NAMES)
    got = {name: nr.experiments.run_truth(name, v4, 3).readout
           for name in ("osr", "latency", "anticipation", "reversal", "doubling")}
    assert {name: bool(ro["present"]) for name, ro in got.items()} == dict.fromkeys(got, True)
    osr, lat, ant, rev = got["osr"], got["latency"], got["anticipation"], got["reversal"]
    assert 0.6 < osr["slope"] < 0.8 and osr["r2"] > 0.84 and min(osr["omitted_amplitude"]) > 1.4
    assert lat["latency_range_ms"] > 30 and lat["largest_step_ms"] < 0.4 * lat["latency_range_ms"]
    assert min(ant["lead_um_per_direction"]) > 35 and min(ant["moving_amplitude"]) > 1.1
    assert rev["n_bursts"] >= 6 and 200 < rev["burst_latency_ms"] < 230 and rev["burst_latency_sd_ms"] < 10
    assert abs(rev["burst_latency_slope_ms_per_px"]) < 5.0


@pytest.fixture(scope="module")
def v5():
    return syn.Retina(seed=0, version=5)


def test_version_5_shows_all_five_phenomena_and_an_osr_on_a_line(v4, v5, monkeypatch, osr_before_share):
    """Version 5 (docs/MODEL.md): version 4's circuit (its twelve pathways, other numbers) whose OSR latency from
    the last flash follows the period on a line of slope ~1 (truth_search.OSR_LINE: r² ≥ 0.95, slope 0.8–1.2,
    every local slope within 0.5 of it) where version 4's levels off at ~180 ms, with all five phenomena in
    every cell by the criteria it was found under: the 2-D circuit in cell 3 (the smallest gain), the 1-D
    circuit, equal to it, in all four."""
    ts = _script("truth_search", monkeypatch)
    assert list(syn.V5_PARAMS["pathways"]) == list(syn.V4_PARAMS["pathways"]) and v5.gained
    assert syn.V5_PARAMS["pathways"] != syn.V4_PARAMS["pathways"] and ts.load_params(None, 5) == syn.V5_PARAMS
    osr = _all_five_in_every_cell(ts, v5, line=True)
    assert min(ts.osr_line_margins(osr).values()) > 0 and 0.8 < osr["slope"] < 1.2 and osr["r2"] > 0.95
    assert osr["latency_from_last_ms"][-1] > 200                     # past version 4's plateau
    v4_osr = nr.experiments.run_truth("osr", v4, 3).readout
    assert max(v4_osr["latency_from_last_ms"][-3:]) < 185 and min(ts.osr_line_margins(v4_osr).values()) < 0


def _all_five_in_every_cell(ts, retina, line: bool = False) -> dict:
    """Check that ``retina`` (a version of 4 or more) shows all five phenomena: the 2-D circuit in cell 3 (the
    smallest gain, the nearest to every amplitude floor), the 1-D circuit (``ts.Line``, checked equal to it on the
    OSR movie) in all four, the reversal with its centre moved too, every margin positive (with ``line``, the OSR
    line's too). Returns the 2-D circuit's OSR readout in cell 3."""
    import torch

    runs = {name: nr.experiments.run_truth(name, retina, 3) for name in ts.NAMES}
    assert {name: bool(run.readout["present"]) for name, run in runs.items()} == dict.fromkeys(ts.NAMES, True)
    movie = runs["osr"].stimulus
    np.testing.assert_allclose(ts.Line(retina.params, torch.float64).respond(movie), retina.respond(movie),
                               rtol=1e-5, atol=1e-5)
    per_cell = ts.readouts(retina.params)                             # the 1-D circuit: every cell, shifted reversals
    assert all(r[n]["present"] for r in per_cell.values() for n in ts.NAMES)
    assert all(r[f"reversal{dx:+g}"]["present"] for dx in ts.REVERSAL_OFFSETS for r in [per_cell[ts.OFFSET_CELL]])
    assert min(min(ts.margins(r, line=line).values()) for r in per_cell.values()) > 0
    return runs["osr"].readout


@pytest.fixture(scope="module")
def v6():
    return syn.Retina(seed=0, version=6)


def test_version_6_shows_all_five_phenomena_with_an_osr_that_rises(v5, v6, monkeypatch):
    """Version 6 (docs/MODEL.md): version 5's circuit (its twelve pathways, other numbers) whose answer to the
    omitted flash rises over the level the train leaves by at least 15% of its answer to the train at every period
    (version 5's: under 8%), with all five phenomena in every cell by today's criteria: the 2-D circuit in cell 3
    (the smallest gain), the 1-D circuit, equal to it, in all four, the reversal with its centre moved too."""
    ts = _script("truth_search", monkeypatch)
    assert list(syn.V6_PARAMS["pathways"]) == list(syn.V5_PARAMS["pathways"]) and v6.gained
    assert ts.load_params(None, 6) == syn.V6_PARAMS
    osr = _all_five_in_every_cell(ts, v6)
    assert min(osr["omitted_share"]) > 0.18 and min(osr["omitted_rise"]) > 1.0
    assert max(nr.experiments.run_truth("osr", v5, 3).readout["omitted_share"]) < 0.08


def test_version_6_osr_is_that_of_the_default_protocol(v6):
    """The limit docs/MODEL.md and the README state (an audit, 2026-12-08): version 6's OSR holds at the default
    odd periods (5-17 frames) and at -1.5 flashes, but at the even periods 6-16 its omitted peak rises only 9% of
    the train's answer (the criterion asks 15%), and at -3 flashes 2%."""
    share = {}
    for label, params in [("even", {"periods": (6, 8, 10, 12, 14, 16)}), ("-3", {"intensity": -3.0})]:
        out = nr.experiments.run_truth("osr", v6, 0, **params).readout
        share[label] = (out["present"], round(min(out["omitted_share"]), 2))
    assert share == {"even": (False, 0.09), "-3": (False, 0.02)}   # the default's 0.19: the test above


def test_truth_search_fit_line_moves_the_bank_by_gradient_and_logs_scored_circuits(monkeypatch, tmp_path):
    """``fit-line`` (how version 5's search started, docs/MODEL.md): its torch filter is synthetic.tuned_filter
    (sign flip included) for every tuned pathway of versions 4 and 5, the 1-D circuit given its own filters
    answers as without them, the OSR movie's trains are found at their periods, and two Adam steps move every
    fitted parameter and log three scored circuits, the best returned, each one the truth accepts."""
    import torch

    ts = _script("truth_search", monkeypatch)
    for params in (syn.V4_PARAMS, syn.V5_PARAMS):
        for q in (q for q in params["pathways"].values() if "period" in q):
            got = ts.tuned_filter(*(torch.tensor(q[k], dtype=torch.float64) for k in ("period", "peak", "order", "phase")))
            np.testing.assert_allclose(got.numpy(), syn.pathway_filter(q), atol=1e-12)
    start = {k: syn.V4_PARAMS[k] for k in ("pathways", "bias", "gain_control")}
    line = ts.Line(start, torch.float64)
    rows, trains = ts.osr_trains(line)
    assert [t[0] for t in trains] == list(nr.experiments.osr.DEFAULTS["periods"])
    assert all(last - first == 7 * period for period, first, last in trains)
    np.testing.assert_array_equal(line.rates(rows, line.temporal, line.threshold, line.weight), line.rates(rows))
    best = ts.fit_line(start, str(tmp_path / "fit.jsonl"), steps=2, every=1)
    logged = [json.loads(x) for x in (tmp_path / "fit.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in logged] == [0, 1, 2]
    assert all(v == (pytest.approx(start["pathways"][n][k], rel=1e-12) if isinstance(v, float) else start["pathways"][n][k])
               for n, q in logged[0]["params"]["pathways"].items() for k, v in q.items())   # step 0: the start
    assert tuple(best[0]) == max(tuple(x["score"]) for x in logged + [{"score": ts.score(start, line=True)}])
    moved = logged[-1]["params"]["pathways"]
    for name, q in start["pathways"].items():
        keys = ts.FIT_KEYS if "period" in q else ("weight",)
        assert all(moved[name][k] != q[k] for k in keys if k != "threshold" or q[k] > 0), name
        syn.Retina(seed=0, version=4, params={"pathways": moved})


def test_truth_search_score_puts_the_line_before_the_runs_under_both(monkeypatch, osr_before_share):
    """With ``robust_osr`` and ``line`` a circuit off the line scores below one on it whatever its robustness
    (version 4, on every run, below version 5); the line's element is 0 on it and its smallest margin off it."""
    ts = _script("truth_search", monkeypatch)
    v4p, v5p = ({k: p[k] for k in ("pathways", "bias", "gain_control")} for p in (syn.V4_PARAMS, syn.V5_PARAMS))
    monkeypatch.setattr(ts, "osr_robustness", lambda params: {"passes": 160 if params is v4p else 1, "mean": 0.5})
    seen, readouts = {}, ts.readouts
    monkeypatch.setattr(ts, "readouts", lambda params: seen.setdefault(id(params), readouts(params)))
    s4, s5 = ts.score(v4p, robust_osr=True, line=True), ts.score(v5p, robust_osr=True, line=True)
    assert s5[:3] == (0, 0.0, 1) and s4[:3] == (0, s4[1], 160) and s4[1] < 0 and s5 > s4
    assert s4[1] == pytest.approx(min(min(ts.osr_line_margins(r["osr"]).values()) for r in seen[id(v4p)].values()))
    plain = ts.score(v4p, robust_osr=True)
    assert len(plain) == 3 and plain[1] == 160


def test_version_4_osr_survives_each_on_input_moved_by_ten_percent(v4, monkeypatch, osr_before_share):
    """What version 4 was searched for (docs/MODEL.md): its OSR passes in every cell with each ON pathway's filter
    peak and weight moved by ×0.9 and ×1.1, one at a time (160 runs; version 3's passes 36 of 48), by
    truth_search's 1-D circuit, which equals the 2-D one on the OSR movie; moved by 20% some runs fail."""
    import torch

    ts = _script("truth_search", monkeypatch)
    movie = nr.experiments.run_truth("osr", v4, 0).stimulus
    np.testing.assert_allclose(ts.Line(syn.V4_PARAMS, torch.float64).respond(movie), v4.respond(movie),
                               rtol=1e-5, atol=1e-5)
    assert ts.load_params(None, 4) == syn.V4_PARAMS
    rob = ts.osr_robustness(syn.V4_PARAMS)
    assert rob["runs"] == 10 * 2 * 2 * 4 and rob["passes"] == rob["runs"] and rob["worst"] > 0.05
    wide = ts.osr_robustness(syn.V4_PARAMS, factors=(0.8, 1.2))
    assert 0.75 * wide["runs"] < wide["passes"] < wide["runs"]
    # the search's start: version 3 with one tuned pathway per period of the experiment, as BANK_PERIODS says
    start = ts.bank_start()
    assert len(start["pathways"]) == 12 and {n: q for n, q in start["pathways"].items() if n in syn.V3_PARAMS[
        "pathways"]} == syn.V3_PARAMS["pathways"]
    assert [start["pathways"][f"ON tuned {p}"]["period"] for p in ts.BANK_PERIODS] == list(map(float, ts.BANK_PERIODS))


def test_history_window_is_the_truth_cut_to_the_last_frames(v3, monkeypatch):
    """scripts/history_window.py (docs/MODEL.md): at frame t, the truth's response to frames t−H+1 … t with
    grey before them, as the 2-D Retina gives on the movie greyed before the window; a window longer than the
    movie changes nothing, a 400 ms one does."""
    import torch

    hw = _script("history_window", monkeypatch)
    line = hw.Line(None, torch.float64)
    movie = nr.experiments.run_truth("anticipation", v3, 0, speed=0.5).stimulus[2400:2520]  # the bar crosses
    got = hw.windowed(line, movie, 40)
    for t in (10, 60, 119):
        greyed = movie.copy()
        greyed[:max(0, t - 39)] = 0.0
        np.testing.assert_allclose(got[t], v3.respond(greyed)[t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hw.windowed_2d(v3, movie, 40, [60, 119]), got[[60, 119]], rtol=1e-5, atol=1e-5)
    # with a past other than grey: a steady checkerboard (every stretch of it alike) before the window
    board = np.where(np.indices((50, 50)).sum(0) // 4 % 2 == 0, 1.0, -1.0).astype(np.float32)
    past = np.repeat(board[None], 600, axis=0)
    seen = np.concatenate([past[:500], movie[119 - 39:120]])
    np.testing.assert_allclose(hw.windowed_2d(v3, movie, 40, [119], past=past)[0], v3.respond(seen)[-1],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hw.windowed(line, movie, 150), line.respond(movie), rtol=1e-5, atol=1e-5)
    assert np.abs(got - line.respond(movie)).max() > 0.1


def test_the_truth_cut_to_400_ms_loses_the_osr_and_cut_to_700_ms_keeps_it(monkeypatch, osr_before_share):
    """Cut to the 400 ms a 40-frame model sees, the truth's memory no longer gives the OSR (docs/MODEL.md, "What a
    model's history allows")."""
    hw = _script("history_window", monkeypatch)
    line = hw.Line()
    ro = {h: nr.experiments.run_function("osr", lambda s, h=h: hw.windowed(line, s, h), cell=0).readout
          for h in (40, 70)}
    assert not ro[40]["present"] and ro[70]["present"]


def test_osr_is_carried_by_the_on_pathways(gt):
    """Mechanism: after the omitted flash the ON pathways carry the response, the OFF stage is silent."""
    s, ev = nr.stimuli.flash_train(period=9, return_events=True)
    c = gt.contributions(s, 0)
    win = slice(ev["omitted"], ev["omitted"] + 30)
    on = c["ON fast"][win] + c["ON slow"][win] + c["ON tuned"][win]
    assert on.max() > 5.0 and c["OFF stage"][win].max() < 0.1 * on.max()


def test_phenomena_live_in_experiments_and_check_the_retina():
    assert set(nr.experiments.PHENOMENA) == {"osr", "latency", "anticipation", "reversal"}
    with pytest.raises(TypeError, match="retina must be an nr.synthetic.Retina, got str"):
        nr.experiments.phenomena("gt")


# ----------------------------------------------------------------------------- datasets

def test_make_dataset_reads_back_identically(tmp_path, gt):
    import h5py

    path = syn.make_dataset(tmp_path / "wn.h5", frames=300, test_frames=120, repeats=3, seed=4, checker=2,
                            kind="binary")
    ds = nr.io.read_dataset(path)
    noise = dict(checker=2, contrast=syn.DATASET_CONTRAST, grey=syn.DATASET_GREY)   # the defaults but the checker
    train_stim = nr.stimuli.white_noise(300, 50, 4, **noise)
    test_stim = nr.stimuli.white_noise(120, 50, 5, **noise)
    np.testing.assert_array_equal(ds.train.stimulus, train_stim)
    np.testing.assert_array_equal(ds.test.stimulus, test_stim)
    assert ds.cell_names == gt.cell_names
    assert ds.train.rates.shape == (300, gt.n_cells)
    assert ds.test.repeats.shape == (gt.n_cells, 3, 120)
    np.testing.assert_allclose(ds.test.rates, ds.test.repeats.mean(1).T, rtol=1e-6)
    assert np.all(ds.train.rates == np.round(ds.train.rates))
    with h5py.File(path, "r") as h5:
        true_test = h5["test/true_rates"][()]
        true_train = h5["train/true_rates"][()]
        assert int(h5.attrs["synthetic"]) == 1
    np.testing.assert_allclose(true_test.T, gt.respond(test_stim), rtol=1e-6)
    np.testing.assert_allclose(true_train.T, gt.respond(train_stim), rtol=1e-6)
    # the same call writes the same file contents
    again = nr.io.read_dataset(syn.make_dataset(tmp_path / "wn2.h5", frames=300, test_frames=120, repeats=3,
                                                seed=4, checker=2, kind="binary"))
    np.testing.assert_array_equal(again.train.rates, ds.train.rates)
    np.testing.assert_array_equal(again.test.repeats, ds.test.repeats)


def test_make_dataset_sparse_noise(tmp_path):
    path = syn.make_dataset(tmp_path / "sp.h5", frames=200, test_frames=60, repeats=2, seed=2, checker=4,
                            contrast=2.0, grey=0.5, kind="binary")
    ds = nr.io.read_dataset(path)
    np.testing.assert_array_equal(ds.train.stimulus, nr.stimuli.white_noise(200, 50, 2, checker=4, contrast=2.0,
                                                                            grey=0.5))
    assert float(ds.attrs["grey"]) == 0.5
    assert 0.3 < (ds.train.stimulus == 0).all(axis=(1, 2)).mean() < 0.7


def test_make_dataset_default_is_the_training_mix(tmp_path):
    path = syn.make_dataset(tmp_path / "mix.h5", frames=1200, test_frames=100, repeats=2, seed=3)
    ds = nr.io.read_dataset(path)
    np.testing.assert_array_equal(ds.train.stimulus, syn.training_mix(1200, 3))
    np.testing.assert_array_equal(ds.test.stimulus, syn.training_mix(100, 4))
    assert ds.attrs["kind"] == "mix"
    # blocks: naturalistic (continuous values) then 4 px binary noise (0 and ±2 only)
    first, second = ds.train.stimulus[:syn.MIX_BLOCK], ds.train.stimulus[syn.MIX_BLOCK:2 * syn.MIX_BLOCK]
    assert len(np.unique(first)) > 1000 and set(np.unique(second)) <= {-2.0, 0.0, 2.0}


def _mix_train_stimulus(tmp_path, kind: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The training stimulus of a ``kind`` dataset of seed 3, checked against ``training_mix`` with its block
    table and its first (naturalistic) block against the plain mix's; and the plain mix's stimulus."""
    path = syn.make_dataset(tmp_path / "m.h5", frames=frames, test_frames=100, repeats=1, seed=3, kind=kind)
    ds = nr.io.read_dataset(path)
    plain = syn.training_mix(frames, 3)
    assert ds.attrs["kind"] == kind
    np.testing.assert_array_equal(ds.train.stimulus, syn.training_mix(frames, 3, blocks=syn.MIXES[kind]))
    np.testing.assert_array_equal(ds.train.stimulus[:syn.MIX_BLOCK], plain[:syn.MIX_BLOCK])   # naturalistic
    return ds.train.stimulus, plain


def test_mix_switching_is_the_mix_with_its_noise_switching_contrast_every_second(tmp_path):
    """The same naturalistic blocks; each noise block is ±2 and ±0.25 by turns, 100 frames each."""
    stim, plain = _mix_train_stimulus(tmp_path, "mix-switching", 1500)
    B = syn.MIX_BLOCK
    noise = stim[B:2 * B]
    for k in range(5):
        level = 2.0 if k % 2 == 0 else 0.25
        assert set(np.unique(noise[100 * k:100 * (k + 1)])) == {-level, 0.0, level}
    np.testing.assert_array_equal(noise[:100], plain[B:B + 100])               # the high runs are the mix's noise
    np.testing.assert_array_equal(noise[100:200] * 8, plain[B + 100:B + 200])  # the low runs, that noise at 1/8


def test_mix_steps_is_the_mix_with_its_noise_stepping_to_a_random_contrast_every_second(tmp_path):
    """The same naturalistic blocks; each noise block is the mix's noise at one level per 100 frames, in
    [0.25, 10] at the default contrast 2, and the levels differ between runs and between blocks."""
    stim, plain = _mix_train_stimulus(tmp_path, "mix-steps", 2000)
    B = syn.MIX_BLOCK
    levels = []
    for block in (1, 3):                                                       # the 4 px and 2 px noise blocks
        noise, mix_noise = stim[block * B:(block + 1) * B], plain[block * B:(block + 1) * B]
        for k in range(5):
            run, ref = noise[100 * k:100 * (k + 1)], mix_noise[100 * k:100 * (k + 1)]
            level = float(np.abs(run).max())
            assert 0.25 <= level <= 10.0
            np.testing.assert_allclose(run, ref * (level / 2.0), rtol=1e-6)   # the mix's noise, rescaled
            levels.append(level)
    assert len(set(np.round(levels, 4))) == len(levels)
    assert max(levels) > 2.0 > min(levels)


def test_mix_field_is_the_steps_mix_with_a_block_of_whole_field_steps_added():
    """Blocks 0-5 are the steps mix's and block 6 the plain mix's naturalistic movie; block 7 flickers the whole
    screen (one value per frame), at one level per 100 frames in [0.25, 10], grey about half the time."""
    B = syn.MIX_BLOCK
    field = syn.training_mix(8 * B, 3, blocks=syn.MIX_FIELD)
    np.testing.assert_array_equal(field[:6 * B], syn.training_mix(6 * B, 3, blocks=syn.MIX_STEPS))
    np.testing.assert_array_equal(field[6 * B:7 * B], syn.training_mix(7 * B, 3)[6 * B:])
    whole = field[7 * B:]
    assert (whole == whole[:, :1, :1]).all()
    levels = []
    for k in range(5):
        run = whole[100 * k:100 * (k + 1), 0, 0]
        level = float(np.abs(run).max())
        assert 0.25 <= level <= 10.0 and set(np.unique(run)) == {-level, 0.0, level}
        levels.append(level)
    assert len(set(levels)) == 5
    assert 0.35 < np.mean(whole[:, 0, 0] == 0) < 0.65


def test_mix_quiet_is_the_field_mix_stepping_down_to_near_grey():
    """The naturalistic blocks are the field mix's; each steps block is that block's noise at levels log-uniform
    in [0.01, 10] at the default contrast 2, a third of them below 0.1; the whole-field block stays whole-field."""
    B = syn.MIX_BLOCK
    n = 8 * B * 2
    quiet, field = syn.training_mix(n, 3, blocks=syn.MIX_QUIET), syn.training_mix(n, 3, blocks=syn.MIX_FIELD)
    levels = []
    for block in range(16):
        q, f = quiet[block * B:(block + 1) * B], field[block * B:(block + 1) * B]
        if block % 2 == 0:
            np.testing.assert_array_equal(q, f)                                # naturalistic
            continue
        if block % 8 == 7:
            assert (q == q[:, :1, :1]).all()                                   # whole field
        for k in range(5):
            run, ref = q[100 * k:100 * (k + 1)], f[100 * k:100 * (k + 1)]
            level = float(np.abs(run).max())
            np.testing.assert_allclose(run, ref * (level / float(np.abs(ref).max())), rtol=1e-5)
            levels.append(level)
    levels = np.log10(levels)
    assert levels.min() >= np.log10(0.01) - 1e-6 and levels.max() <= 1.0 + 1e-6
    assert 0.2 < np.mean(levels < -1) < 0.5 and levels.min() < np.log10(0.05)


def test_flash_ceiling_trains_on_dark_flashes_after_random_rests(monkeypatch):
    """scripts/flash_ceiling.py's movie (docs/MODEL.md): whole-field, grey but for 2-frame flashes at the
    intensities it returns, in [-10, 0], each after 2-150 grey frames and followed by 40."""
    fc = _script("flash_ceiling", monkeypatch)
    movie, inten = fc.flash_movie(3000, 4)
    assert movie.shape == (3000, syn.SIZE, syn.SIZE) and (movie == movie[:, :1, :1]).all()
    v = movie[:, 0, 0]
    lit = np.flatnonzero(v)
    starts = lit[np.r_[True, np.diff(lit) > 1]]
    assert all(v[t] == v[t + 1] and (t + 2 >= len(v) or v[t + 2] == 0) for t in starts)   # two frames each
    np.testing.assert_allclose(v[starts], inten[:len(starts)], rtol=1e-6)
    assert (inten <= 0).all() and (inten >= -10).all() and inten.min() < -8 and inten.max() > -2
    rests = np.diff(np.r_[-fc.WINDOW - 2, starts]) - 2 - fc.WINDOW                   # grey before each flash
    assert rests.min() >= fc.GAP[0] and rests.max() <= fc.GAP[1] and rests.max() > 100


def test_flash_ceiling_noise_free_copy_trains_on_the_true_rates(monkeypatch, tmp_path):
    """``--targets rates``: a copy of the flash dataset whose training responses are the truth's rates, the rest
    (stimuli, test split) the same; nr.io reads it as a dataset, and a second call leaves it as it is."""
    import h5py

    fc = _script("flash_ceiling", monkeypatch)
    movie, _ = fc.flash_movie(300, 1)
    counts = syn.record_dataset(tmp_path / "flashes.h5", movie[:240], movie[240:], repeats=2,
                                retina=syn.Retina(seed=0, version=3))
    rates = fc.noise_free(tmp_path / "flashes.h5", tmp_path / "flashes_rates.h5")
    got, was = nr.io.read_dataset(rates), nr.io.read_dataset(counts)
    with h5py.File(counts, "r") as f:
        true = f["train/true_rates"][...].T
    np.testing.assert_array_equal(got.train.rates, true)
    assert not np.array_equal(was.train.rates, true)                     # the counts were noisy
    np.testing.assert_array_equal(got.train.stimulus, was.train.stimulus)
    np.testing.assert_array_equal(got.test.rates, was.test.rates)
    stamp = rates.stat().st_mtime_ns
    fc.noise_free(tmp_path / "flashes.h5", rates)
    assert rates.stat().st_mtime_ns == stamp


def test_flash_ceiling_capacity_movie_is_the_experiments_own_three_times(monkeypatch, tmp_path):
    """``--movie experiment``: trained on three copies of the latency experiment's movie, tested on one, the
    held-out tail (HOLDOUT) inside the third copy so that every flash is also trained on."""
    fc = _script("flash_ceiling", monkeypatch)
    seen = {}
    monkeypatch.setattr(fc.syn, "record_dataset", lambda path, train, test, **kw: seen.update(train=train, test=test, **kw))
    gt = syn.Retina(seed=0, version=3)
    fc.record(tmp_path / "experiment.h5", "experiment", 123, gt)
    movie = nr.experiments.run_truth("latency", gt, 0).stimulus
    np.testing.assert_array_equal(seen["test"], movie)
    np.testing.assert_array_equal(seen["train"], np.concatenate([movie] * 3))
    assert seen["attrs"] == {"kind": "experiment"} and seen["retina"] is gt
    assert fc.HOLDOUT["experiment"]["holdout"] < 1 / 3


def test_gain_ceiling_battery_movie_is_the_five_experiments_twice_the_second_held_out(monkeypatch, tmp_path):
    """``--movie battery``: the five experiments' own movies (cell 0's) one after another, in PHENOMENA's order,
    twice; tested on one copy; with HOLDOUT's split every fitted window ends in the first copy and every
    held-out window in the second, so each experiment is both trained on and held out. ``--movie osr``: the
    omitted-stimulus experiment's movie, three copies, held out as the latency movie is."""
    gc = _script("gain_ceiling", monkeypatch)
    fc = _script("flash_ceiling", monkeypatch)
    lengths = {"osr": 130, "latency": 170, "anticipation": 110, "reversal": 150, "doubling": 140}
    movies = {name: np.full((n, 3, 3), i + 1, np.float32) for i, (name, n) in enumerate(lengths.items())}
    asked = []

    def run_truth(name, retina, cell):
        asked.append((name, cell))
        return types.SimpleNamespace(stimulus=movies[name])

    monkeypatch.setattr(fc.nr.experiments, "run_truth", run_truth)
    seen = {}
    monkeypatch.setattr(fc.syn, "record_dataset", lambda path, train, test, **kw: seen.update(train=train, test=test, **kw))
    gt = syn.Retina(seed=0, version=3)
    fc.record(tmp_path / "battery.h5", "battery", 123, gt)
    assert gc.PHENOMENA is fc.PHENOMENA and set(fc.PHENOMENA) == set(lengths)
    assert asked == [(name, 0) for name in fc.PHENOMENA]
    once = np.concatenate([movies[name] for name in fc.PHENOMENA])
    np.testing.assert_array_equal(seen["test"], once)
    np.testing.assert_array_equal(seen["train"], np.concatenate([once, once]))
    assert seen["repeats"] == 2 and seen["retina"] is gt and seen["attrs"] == {"kind": "battery"}
    fit_lo, fit_hi, hold = gc.split(len(seen["train"]), 40, gc.LAGS, fc.HOLDOUT["battery"]["holdout"])
    assert fit_hi < len(once) <= hold[0] and hold[-1] == len(seen["train"]) - 1
    assert hold[0] - len(once) < gc.LAGS            # the held-out tail is nearly the whole second copy
    asked.clear()
    fc.record(tmp_path / "osr.h5", "osr", 123, gt)        # ``--movie osr``: that experiment's movie, three copies
    assert asked == [("osr", 0)] and seen["attrs"] == {"kind": "osr"}
    np.testing.assert_array_equal(seen["test"], movies["osr"])
    np.testing.assert_array_equal(seen["train"], np.concatenate([movies["osr"]] * 3))
    assert fc.HOLDOUT["osr"] == fc.HOLDOUT["experiment"]


def test_flash_ceiling_loss_by_strength_finds_the_error_where_it_is(monkeypatch):
    """flash_ceiling.loss_by_strength: the excess Poisson loss is torch's Poisson loss of the prediction minus
    that of the true rates; the truth itself has none; an error put only on the weak flashes' frames shows up
    only in the weak class, one put only on the grey gaps only outside the flashes."""
    import torch
    from torch.nn import functional as F

    fc = _script("flash_ceiling", monkeypatch)
    rng = np.random.default_rng(0)
    y, lam = rng.gamma(0.5, 2.0, (50, 4)), rng.gamma(0.5, 2.0, (50, 4))
    y[:5] = 0.0
    nll = lambda rate: F.poisson_nll_loss(torch.from_numpy(rate), torch.from_numpy(y), log_input=False,  # noqa: E731
                                          full=False, eps=0.0, reduction="none").numpy()
    np.testing.assert_allclose(fc.excess_poisson_loss(y, lam), (nll(lam) - nll(np.maximum(y, 1e-300))).sum(1),
                               rtol=1e-9, atol=1e-9)
    gt = syn.Retina(seed=0, version=3)
    frames = 1500
    movie, _ = fc.flash_movie(frames, 1)
    level = movie[:, 0, 0]
    lit = np.flatnonzero(level)
    onsets = lit[np.r_[True, np.diff(lit) > 1]]
    in_flash = np.zeros(frames, bool)
    weak = np.zeros(frames, bool)
    for t in onsets:
        in_flash[max(t - fc.BEFORE, 0):t + fc.WINDOW] = True
        weak[max(t - fc.BEFORE, 0):t + fc.WINDOW] |= -level[t] < 2.0
    assert weak.any() and (in_flash & ~weak).any()

    def scaled(where):
        return lambda m: gt.respond(m) * np.where(where, 0.5, 1.0)[:, None]

    exact = fc.loss_by_strength(gt.respond, gt, frames)
    assert exact["total"] < 1e-6
    only_weak = fc.loss_by_strength(scaled(weak), gt, frames)
    assert only_weak["total"] > 1 and only_weak["share"][0] > 0.99 and only_weak["outside"] < 0.01
    assert only_weak["flashes"][0] >= 1 and sum(only_weak["flashes"]) > only_weak["flashes"][0]
    only_gaps = fc.loss_by_strength(scaled(~in_flash), gt, frames)
    assert only_gaps["outside"] > 0.99 and max(only_gaps["share"]) < 0.01


def test_gain_ceiling_divides_by_the_models_own_past_output(monkeypatch):
    """scripts/gain_ceiling.py's gain control against a float64 loop: rate_t = g N_t / (1 + k Σ_{l=1..L} w_l N_{t-l}),
    w_l ∝ exp(-l/τ) per cell, summing to 1; the current frame does not divide itself; 0 lags is the identity."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    lags, n, cells = 7, 12, 3
    gain = gc.GainControl(cells, lags).double()
    with torch.no_grad():
        gain.raw_strength.copy_(torch.tensor([-1.0, 0.3, 1.5], dtype=torch.float64))
        gain.raw_tau.copy_(torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64))
        gain.log_scale.copy_(torch.tensor([0.0, 0.5, -0.7], dtype=torch.float64))
    d = np.random.default_rng(0).gamma(1.0, 2.0, (2, lags + n, cells))
    k = np.log1p(np.exp([-1.0, 0.3, 1.5]))
    tau = 1 + np.log1p(np.exp([0.2, 1.0, 3.0]))
    expected = np.empty((2, n, cells))
    for b in range(2):
        for c in range(cells):
            w = np.exp(-np.arange(1, lags + 1) / tau[c])
            w /= w.sum()
            for t in range(lags, lags + n):
                signal = sum(w[l - 1] * d[b, t - l, c] for l in range(1, lags + 1))
                expected[b, t - lags, c] = np.exp([0.0, 0.5, -0.7][c]) * d[b, t, c] / (1 + k[c] * signal)
    with torch.no_grad():
        got = gain(torch.from_numpy(d)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    x = torch.rand(1, 5, cells)
    assert gc.GainControl(cells, 0)(x) is x
    with pytest.raises(ValueError, match="needs more than 7"):
        gain(torch.from_numpy(d[:, :lags]))


def test_gain_ceiling_stage_on_the_truths_own_drive_is_the_truth(monkeypatch):
    """The stage has the v3 truth's form: on the truth's undivided drive N = softplus(drive), with the truth's
    k_g, τ and gain_j as g, it gives the truth's rates: to float32 rounding with the truth's GAIN_HISTORY lags,
    within 1% with the script's LAGS; with k 0 it is far from them."""
    import math

    import torch
    from torch.nn import functional as F

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    g = gt.params["gain_control"]["ganglion"]
    stim = nr.stimuli.white_noise(frames=300, seed=1)
    truth = gt.respond(stim)

    def staged(lags, strength):
        gain = gc.GainControl(gt.n_cells, lags)
        with torch.no_grad():
            gain.raw_strength.fill_(math.log(math.expm1(strength)))
            gain.raw_tau.fill_(math.log(math.expm1(g["tau"] - 1)))
            gain.log_scale.copy_(torch.log(torch.tensor(gt.cell_gain, dtype=torch.float32)))
            grey = np.zeros((lags,) + stim.shape[1:], np.float32)
            n = F.softplus(torch.from_numpy(gt._run(np.concatenate([grey, stim]), "drive")))
            return gain(n[None])[0].numpy()

    np.testing.assert_allclose(staged(syn.GAIN_HISTORY, g["strength"]), truth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(staged(gc.LAGS, g["strength"]), truth, rtol=1e-2)
    assert np.max(np.abs(staged(gc.LAGS, 1e-9) / truth - 1)) > 0.3


def test_gain_ceiling_off_stage_on_the_truths_own_stages_is_the_truth(monkeypatch):
    """OffStage then the ganglion's stage have the v3 truth's form: on the truth's own rectified OFF stage and ON
    inputs (from its pooled pathways), with its k_off, τ_off and bias and its ganglion stage, they give the truth's
    rates: to float32 rounding with the truth's GAIN_HISTORY lags, within 1% with the script's OFF_LAGS and LAGS;
    with k_off 0 they are far from them."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    off_gain = gt.params["gain_control"]["off"]
    stim = nr.stimuli.white_noise(frames=300, seed=1)
    truth = gt.respond(stim)
    history = syn.GAIN_HISTORY
    n = torch.from_numpy(gt.off_and_on(np.concatenate([np.zeros((2 * history, 50, 50), np.float32), stim])))

    def staged(off_lags, lags, strength):
        model = gc.GainModel(nr.RetinaCNN(nr.ModelConfig(n_cells=2 * gt.n_cells)), gc.truth_stage(gt, lags),
                             gc.OffStage(gt.n_cells, off_lags, strength, off_gain["tau"], gt.params["bias"]))
        assert model.context == off_lags + lags and model.n_cells == gt.n_cells
        with torch.no_grad():
            return model.stages(n[None, -(len(stim) + model.context):])[0].numpy()

    np.testing.assert_allclose(staged(history, history, off_gain["strength"]), truth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(staged(gc.OFF_LAGS, gc.LAGS, off_gain["strength"]), truth, rtol=1e-2)
    assert np.max(np.abs(staged(history, history, 1e-9) / truth - 1)) > 0.3


def test_gain_ceiling_off_stage_vs_truth_of_the_truths_own_stages_is_the_truth(monkeypatch):
    """off_stage_vs_truth on a model whose BN-CNN gives the truth's own rectified OFF stage and ON inputs, with the
    truth's OFF-stage gain control: its share of the input is the truth's (float64 NumPy from the pooled pathways)
    and its OFF stage correlates with the truth's at r 1; with the two outputs swapped, neither holds."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    history = syn.GAIN_HISTORY
    is_off = np.array([q.role in ("OFF stage", "gain control") for q in gt.pathways])
    swap = [False]

    def truths_inputs(cnn, full, ends):        # the truth's O | R for the windows ending at ``ends``
        n = gt.off_and_on(full.numpy()[cnn.config.history - 1:])
        assert len(ends) == len(n)
        return torch.from_numpy(np.roll(n, gt.n_cells, axis=1) if swap[0] else n)

    monkeypatch.setattr(gc, "drive", truths_inputs)
    monkeypatch.setattr(gc, "PHENOMENA", ("osr", "reversal"))
    g = gt.params["gain_control"]["off"]
    model = gc.GainModel(nr.RetinaCNN(nr.ModelConfig(n_cells=2 * gt.n_cells)), gc.truth_stage(gt, history),
                         gc.truth_off_stage(gt, history))
    got = gc.off_stage_vs_truth(model, gt, cell=1)
    assert set(got) == {"osr", "reversal"}
    for name, res in got.items():
        movie = nr.experiments.run_truth(name, gt, 1).stimulus
        grey = np.zeros((2 * history,) + movie.shape[1:], np.float32)
        pooled = gt._run(np.concatenate([grey, movie]), "pooled").astype(np.float64)[:, 1]     # (T, K), cell 1
        o = np.maximum(pooled[:, is_off].sum(-1), 0)
        w = syn.gain_kernel(g["tau"])                                                      # lags 0..history
        past = np.array([w @ o[t - history:t + 1][::-1] for t in range(2 * history, len(o))])
        divided = o[2 * history:] / (1 + g["strength"] * past)
        on = pooled[2 * history:, ~is_off].sum(-1)
        assert res["truth"] == pytest.approx(divided.sum() / (divided + on).sum(), rel=1e-4)
        assert res["model"] == pytest.approx(res["truth"], rel=1e-4)
        assert res["r"] == pytest.approx(1.0, abs=1e-5)
    swap[0] = True
    for res in gc.off_stage_vs_truth(model, gt, cell=1).values():
        assert abs(res["model"] - res["truth"]) > 0.1 and res["r"] < 0.9


@pytest.mark.parametrize("argv, version", [([], 3), (["--retina-version", "4"], 4)])
def test_gain_ceiling_records_its_data_from_the_truth_asked_for(monkeypatch, tmp_path, argv, version):
    """gain_ceiling.py's datasets (the movie's, its rates, drive and split) come from version 3, or from version 4
    with --retina-version 4."""
    gc = _script("gain_ceiling", monkeypatch)
    used = []
    monkeypatch.setattr(gc, "record", lambda path, movie, frames, gt: used.append(("record", gt.version)))
    monkeypatch.setattr(gc, "noise_free", lambda data, out: used.append(("rates", None)))
    for name in ("undivided", "split_inputs"):
        monkeypatch.setattr(gc, name, lambda data, out, gt, name=name: used.append((name, gt.version)))
    monkeypatch.setattr(sys, "argv", ["gain_ceiling.py", str(tmp_path), "--data", "--movie", "osr"] + argv)
    gc.main()
    assert used == [("record", version), ("rates", None), ("undivided", version), ("split_inputs", version)]


@pytest.mark.parametrize("version", [3, 4])
def test_gain_ceiling_truth_stages_start_both_stages_at_the_truths_own(monkeypatch, tmp_path, version):
    """--truth-stages trains with each gain control at the asked truth's own k and τ (synthetic.V3_PARAMS'
    and V4_PARAMS'), --fixed holding them; without it, the defaults; --channels reaches the training (8 8
    without it)."""
    gc = _script("gain_ceiling", monkeypatch)
    asked = []

    class Stop(Exception):
        pass

    signature = inspect.signature(gc.train_gain)

    def train_gain(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        asked.append({"k": bound["strength"], "tau": bound["tau"], "fixed": bound["fixed"], "off": bound["off"],
                      "channels": bound.get("channels", (8, 8))})
        raise Stop

    monkeypatch.setattr(gc, "record", lambda path, movie, frames, gt: None)
    monkeypatch.setattr(gc, "noise_free", lambda data, out: data)
    monkeypatch.setattr(gc.nr.io, "read_dataset", lambda path: types.SimpleNamespace(
        test=types.SimpleNamespace(stimulus=None)))
    monkeypatch.setattr(gc, "train_gain", train_gain)
    base = ["gain_ceiling.py", str(tmp_path), "--movie", "osr", "--off-stage", "--retina-version", str(version)]
    for extra in (["--truth-stages", "--fixed"], ["--channels", "12", "6"]):
        monkeypatch.setattr(sys, "argv", base + extra)
        with pytest.raises(Stop):
            gc.main()
    stages = syn.Retina(version=version).params["gain_control"]
    assert asked[0] == {"k": stages["ganglion"]["strength"], "tau": stages["ganglion"]["tau"], "fixed": True,
                        "off": (stages["off"]["strength"], stages["off"]["tau"]), "channels": (8, 8)}
    assert asked[1] == {"k": 0.5, "tau": 10.0, "fixed": False, "off": (0.5, 10.0), "channels": (12, 6)}


def test_gain_ceiling_mixed_inputs_put_the_truths_stages_on_the_o_and_r_asked_for(monkeypatch, capsys,
                                                                                  osr_before_share):
    """MixedInputs: the truth's two stages on O from one source and R from another. A model whose BN-CNN gives the
    truth's O doubled and its R: with the truth's O and R it answers as the truth (as exactly as its lags allow),
    with the model's R and the truth's O too, with the model's O not, and with both the model's as the model's
    BN-CNN does with the truth's stages on it (not its own β). osr_by_input on a model that gives the truth's O
    and R finds the truth's OSR with every pair, and names each result by the pair it ran. ``on_share`` keeps
    that share of the model's error in R, and osr_margin asks the truth's O with each share; report_stage prints
    both."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    history = syn.GAIN_HISTORY
    scale = torch.ones(2 * gt.n_cells)

    def truths_inputs(cnn, full, ends):        # the truth's O | R for the windows ending at ``ends``, O scaled
        n = gt.off_and_on(full.numpy()[cnn.config.history - 1:])
        assert len(ends) == len(n)
        return torch.from_numpy(n) * scale

    monkeypatch.setattr(gc, "drive", truths_inputs)
    model = gc.GainModel(nr.RetinaCNN(nr.ModelConfig(n_cells=2 * gt.n_cells)), gc.truth_stage(gt, history),
                         gc.truth_off_stage(gt, history))
    truths = gc.GainModel(model.cnn, model.gain, gc.truth_off_stage(gt, history))
    with torch.no_grad():
        model.off.bias.fill_(0.0)                   # its own β: the mixer puts the truth's stages on, not the model's
    stim = nr.stimuli.white_noise(frames=200, seed=2)
    truth = gt.respond(stim)
    mixed = lambda off, on: gc.MixedInputs(model, gt, off, on).respond(stim)       # noqa: E731
    np.testing.assert_allclose(mixed("truth", "truth"), truth, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(model.respond(stim) / truth - 1)) > 0.05
    scale[:gt.n_cells] = 2.0
    np.testing.assert_allclose(mixed("truth", "model"), truth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed("model", "model"), truths.respond(stim), rtol=1e-6)
    np.testing.assert_allclose(mixed("model", "truth"), truths.respond(stim), rtol=1e-6)
    assert np.max(np.abs(mixed("model", "truth") / truth - 1)) > 0.05
    scale[gt.n_cells:] = 2.0                        # the model's R twice the truth's: 0.25 of its error is R · 1.25
    quarter = gc.MixedInputs(model, gt, "truth", "model", on_share=0.25).respond(stim)
    scale[gt.n_cells:] = 1.25
    np.testing.assert_allclose(quarter, mixed("truth", "model"), rtol=1e-5)
    assert np.max(np.abs(quarter / truth - 1)) > 0.01
    # carried over to version 4: its stages and O, and its R plus a share of the error against version 3
    v4 = syn.Retina(seed=0, version=4)
    onto = lambda share: gc.MixedInputs(model, gt, "truth", "model", share, onto=v4).respond(stim)  # noqa: E731
    scale[gt.n_cells:] = 1.0                        # no error in R: version 4 itself
    np.testing.assert_allclose(onto(1.0), v4.respond(stim), rtol=1e-5, atol=1e-6)
    scale[gt.n_cells:] = 2.0                        # an error of R_v3: none of it, then all of it
    np.testing.assert_allclose(onto(0.0), v4.respond(stim), rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(onto(1.0) / v4.respond(stim) - 1)) > 0.01
    scale[gt.n_cells:] = 1.25
    with pytest.raises(ValueError, match="'model' or 'truth'"):
        gc.MixedInputs(model, gt, "truth", "other")
    with pytest.raises(ValueError, match="OFF stage"):
        gc.MixedInputs(gc.GainModel(model.cnn, model.gain), gt, "truth", "truth")
    scale[:] = 1.0
    want = nr.experiments.run_truth("osr", gt, 0).readout
    got = gc.osr_by_input(model, gt)
    assert list(got) == [f"O {o}, R {r}" for o, r in gc.INPUT_PAIRS] and len(got) == 4
    for res in got.values():
        assert res["present"] and res["slope"] == pytest.approx(want["slope"], abs=1e-3)
        assert res["r2"] == pytest.approx(want["r2"], abs=1e-3)
        assert res["share"] == pytest.approx(min(want["omitted_share"]), abs=1e-3)
    asked, ontos = [], []

    def run_truth(name, retina, cell):
        asked.append((name, retina.off_from, retina.on_from, retina.on_share, cell))
        ontos.append(retina.onto.version)
        return types.SimpleNamespace(readout={"slope": retina.on_share, "r2": 0.5, "omitted_share": [0.4, 0.25],
                                              "present": retina.off_from == "model"})

    monkeypatch.setattr(gc.nr.experiments, "run_truth", run_truth)
    pairs = gc.osr_by_input(model, gt, cell=2)
    assert asked == [("osr", o, r, 1.0, 2) for o, r in gc.INPUT_PAIRS]
    assert {pair: res["present"] for pair, res in pairs.items()} == {
        "O truth, R truth": False, "O model, R truth": True, "O truth, R model": False, "O model, R model": True}
    asked.clear()
    margin = gc.osr_margin(model, gt, (0.1, 0.3), cell=1)
    assert asked == [("osr", "truth", "model", 0.1, 1), ("osr", "truth", "model", 0.3, 1)]
    assert {share: res["slope"] for share, res in margin.items()} == {0.1: 0.1, 0.3: 0.3}
    ontos.clear()
    gc.osr_margin(model, gt, (0.1,), onto=v4)
    assert ontos == [4] and asked[-1] == ("osr", "truth", "model", 0.1, 0)
    capsys.readouterr()
    gc.report_stage("m", {"early": {-0.5: [0.0], -1.0: [0.0]}, "k": None,
                          "off": {"k": [0.3], "tau_frames": [22.5], "bias": [-1.3],
                                  "truth": {"k": 0.3612, "tau_frames": 22.7, "bias": -1.551},
                                  "vs_truth": {"osr": {"model": 0.1, "truth": 0.1, "r": 1.0}},
                                  "osr_by_input": pairs, "osr_margin": margin, "osr_margin_v4": margin}})
    printed = capsys.readouterr().out
    assert ("O truth, R truth slope 1.00, r2 0.50, share 0.25; O model, R truth slope 1.00, r2 0.50, share 0.25 "
            "(present);") in printed                                   # the smallest of the periods' shares
    assert "R: 0.1: slope 0.10, r2 0.50, share 0.25; 0.3: slope 0.30, r2 0.50, share 0.25\n" in printed
    assert "carried over to version 4 (its O, R and stages): 0.1: slope 0.10, r2 0.50, share 0.25; 0.3" in printed
    assert "(the truth's: k 0.3612, tau 22.7, bias -1.551)" in printed     # the truth's own, not version 3's


def test_gain_ceiling_drive_targets_are_what_the_truths_stage_divides(monkeypatch, tmp_path):
    """``--targets drive``: the copy's training responses are the truth's undivided drive, aligned to the frames,
    so that ``truth_stage`` on them gives the dataset's true rates (within 1% past its LAGS frames of context);
    the stimuli and the test split are the counts file's."""
    import h5py
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=400, seed=1)
    counts = syn.record_dataset(tmp_path / "m.h5", stim[:300], stim[300:], repeats=2, retina=gt)
    got = nr.io.read_dataset(gc.undivided(counts, tmp_path / "m_drive.h5", gt))
    was = nr.io.read_dataset(counts)
    with h5py.File(counts, "r") as f:
        true = f["train/true_rates"][...].T
    with torch.no_grad():
        staged = gc.truth_stage(gt)(torch.from_numpy(got.train.rates)[None])[0].numpy()
    np.testing.assert_allclose(staged, true[gc.LAGS:], rtol=1e-2)
    assert np.all(got.train.rates * np.asarray(gt.cell_gain) > 1.2 * true)     # undivided: the divisor is > 1.2 here
    np.testing.assert_array_equal(got.train.stimulus, was.train.stimulus)
    np.testing.assert_array_equal(got.test.rates, was.test.rates)


def test_gain_ceiling_reads_the_truths_drive_and_split_without_the_hz_warning(monkeypatch, tmp_path):
    """The truth's drive and its O and R are in its own units, often above 5 per bin: read as targets, they do not
    warn that rates look like Hz; the same numbers in any other dataset still do."""
    import warnings

    gc = _script("gain_ceiling", monkeypatch)
    stim = nr.stimuli.white_noise(frames=60, seed=1)
    big = np.full((60, 2), 8.0, np.float32)
    part = nr.io.Split(stim, big)
    for name, warns in (("m_split.h5", False), ("m_drive.h5", False), ("m.h5", True)):
        path = nr.io.write_dataset(tmp_path / name, nr.io.Dataset(part, part, ["a", "b"], {}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = gc.read_targets(path)
        assert any("look like Hz" in str(w.message) for w in caught) is warns, name
        np.testing.assert_array_equal(ds.train.rates, big)


def test_gain_ceiling_model_responds_as_its_cnn_then_divides(monkeypatch):
    """GainModel.respond is nr.predict's rate of its BN-CNN on the stimulus with grey before it (the truth's
    convention, a rate on every frame), then the gain control; with k 0 it is nr.predict's rate itself."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    torch.manual_seed(0)
    cnn = nr.RetinaCNN(nr.ModelConfig(size=30, n_cells=2)).eval()
    stim = nr.stimuli.white_noise(frames=30, size=30, seed=2)
    model = gc.GainModel(cnn, gc.GainControl(2, lags=5))
    grey = np.zeros((cnn.config.history - 1 + 5, 30, 30), np.float32)
    n = nr.predict(cnn, np.concatenate([grey, stim]))[cnn.config.history - 1:]
    with torch.no_grad():
        expected = model.gain(torch.from_numpy(n)[None])[0].numpy()
    got = model.respond(stim)
    assert got.shape == (30, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert not np.allclose(got, n[5:], rtol=1e-3)
    with torch.no_grad():
        model.gain.raw_strength.fill_(-50.0)                 # k = softplus(-50) ~ 2e-22
    np.testing.assert_allclose(model.respond(stim), n[5:], rtol=1e-5)


def test_gain_ceiling_committee_answers_with_its_members_mean_rate(monkeypatch):
    """``--score … --committee``: a committee's rates are its members' mean (float64 NumPy), it has no stage of
    its own for result() to report, and members of another size or cell count are refused."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    torch.manual_seed(0)
    members = [gc.GainModel(nr.RetinaCNN(nr.ModelConfig(size=30, n_cells=2)).eval(), gc.GainControl(2, lags=lags))
               for lags in (0, 5, 3)]
    stim = nr.stimuli.white_noise(frames=25, size=30, seed=4)
    each = [m.respond(stim).astype(np.float64) for m in members]
    committee = gc.Committee(members)
    got = committee.respond(stim)
    assert got.shape == (25, 2) and committee.gain is None
    np.testing.assert_allclose(got, (each[0] + each[1] + each[2]) / 3, rtol=1e-6)
    assert not np.allclose(got, each[0], rtol=1e-2)
    assert (committee.history, committee.size, committee.n_cells) == (members[0].history, 30, 2)
    other = gc.GainModel(nr.RetinaCNN(nr.ModelConfig(size=30, n_cells=3)).eval(), gc.GainControl(3, lags=0))
    with pytest.raises(ValueError, match="share their history, size and cells"):
        gc.Committee(members + [other])
    with pytest.raises(ValueError, match="at least one"):
        gc.Committee([])


def test_gain_ceiling_committee_draws_score_distinct_committees_and_run_each_member_once(monkeypatch):
    """``--draw K``: per size, min(draws, C(n, K)) distinct committees, each scored as the latency experiment scores
    that committee built afresh; a Remembered member answers a movie it has seen without running again."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    torch.manual_seed(1)
    models = [gc.GainModel(nr.RetinaCNN(nr.ModelConfig(size=30, n_cells=2, channels=(4, 4))).eval(),
                           gc.GainControl(2, lags=4)) for _ in range(3)]
    calls = []
    for m in models:
        m.respond = (lambda f: lambda stim: calls.append(1) or f(stim))(m.respond)
    members = [gc.Remembered(m) for m in models]
    draws = gc.committee_draws(members, ["a", "b", "c"], [1, 2], draws=2)
    assert [len(draws[1]), len(draws[2])] == [2, 2]
    for k in (1, 2):
        assert len({tuple(r["members"]) for r in draws[k]}) == 2 and all(len(r["members"]) == k for r in draws[k])
    row = draws[2][0]
    fresh = gc.Committee([models["abc".index(n)] for n in row["members"]])
    for c in range(2):
        expected = gc.latency_summary(nr.experiments.run_truth("latency", fresh, c).readout)
        assert row["present"][c] == expected["present"]
        assert row["range_ms"][c] == pytest.approx(expected["latency_range_ms"], nan_ok=True)
    seen = len(calls)
    gc.committee_draws(members, ["a", "b", "c"], [3])
    assert len(calls) == seen                                       # every member had answered that movie already


def test_gain_ceiling_battery_asks_each_experiment_of_each_cell(monkeypatch, capsys):
    """``--battery``: every phenomenon of the five, every cell, each answer in its place, and each cell's r with
    the truth on that run's own movie (against float64 NumPy, frames with a full history only); the report counts
    the committee's cells and the members that show a phenomenon in every cell, and gives the r ranges."""
    gc = _script("gain_ceiling", monkeypatch)
    history, frames, cells = 3, 40, 2
    rng = np.random.default_rng(0)
    movies = {(n, c): rng.normal(size=(frames, 2, 2)).astype(np.float32) for n in gc.PHENOMENA for c in range(cells)}
    asked = []

    class Model:
        def __init__(self, shows):
            self.shows, self.history = shows, history

        def respond(self, stimulus):
            out = np.stack([stimulus.mean(axis=(1, 2)), stimulus[:, 0, 0]], axis=1).astype(np.float32)
            out[:history - 1] = np.nan
            return out

    class Truth:
        def respond(self, stimulus):
            return np.stack([stimulus[:, 1, 1], stimulus.sum(axis=(1, 2))], axis=1).astype(np.float32)

    class Run:
        def __init__(self, name, retina, cell):
            asked.append((name, cell))
            self.stimulus = movies[(name, cell)]
            self.rates = retina.respond(self.stimulus)
            self.readout = {"present": (name, cell) in retina.shows}

    monkeypatch.setattr(gc.nr.experiments, "run_truth", Run)
    got = gc.run_battery(Model({("osr", 1), ("doubling", 0), ("doubling", 1)}), Truth(), cells)
    assert sorted(asked) == sorted((n, c) for n in gc.PHENOMENA for c in range(cells))
    assert got["present"] == {"osr": [False, True], "latency": [False, False], "anticipation": [False, False],
                              "reversal": [False, False], "doubling": [True, True]}
    for name in gc.PHENOMENA:
        for c in range(cells):
            m = movies[(name, c)].astype(np.float64)[history - 1:]
            model = m.mean(axis=(1, 2)) if c == 0 else m[:, 0, 0]
            truth = m[:, 1, 1] if c == 0 else m.sum(axis=(1, 2))
            assert got["r"][name][c] == pytest.approx(np.corrcoef(model, truth)[0, 1], abs=1e-6)
    other = {"present": dict(got["present"], osr=[True, True]), "r": got["r"]}
    gc.report_battery("c", {"committee": got, "members": {"a": got, "b": other}})
    out = capsys.readouterr().out
    assert "c: osr in 1 of 2 cells; 1 of 2 members show it in every cell" in out
    assert "c: doubling in 2 of 2 cells; 2 of 2 members" in out and "c: latency in 0 of 2 cells; 0 of 2" in out
    r = got["r"]["reversal"]
    assert f"reversal in 0 of 2 cells; 0 of 2 members show it in every cell; r with the truth on its movies " \
           f"{min(r):.3f}-{max(r):.3f} (members {min(r):.3f}-{max(r):.3f})" in out


def test_gain_ceiling_log_loss_is_the_squared_error_of_log_rates_and_trains_and_scores(monkeypatch, tmp_path):
    """``--loss log``: mean over frames and cells of (log(ε + pred) − log(ε + target))², against float64 NumPy
    (a factor of two in a weak answer weighs as much as in a strong one; Poisson does not); a run trained with it
    reports that loss on its held-out frames."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    rng = np.random.default_rng(0)
    pred, target = rng.gamma(2.0, 3.0, (50, 4)), rng.gamma(2.0, 3.0, (50, 4))
    eps = gc.LOG_FLOOR
    expected = np.mean((np.log(eps + pred) - np.log(eps + target)) ** 2)
    got = float(gc.log_error(torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(target.astype(np.float32))))
    assert got == pytest.approx(expected, rel=1e-5)
    one = torch.ones(1, 1)
    assert float(gc.log_error(2 * one, 4 * one)) == pytest.approx(float(gc.log_error(200 * one, 400 * one)), rel=0.1)
    excess = lambda p, t: float(gc.poisson(p * one, t * one) - gc.poisson(t * one, t * one))  # noqa: E731
    assert excess(2, 4) < 0.05 * excess(200, 400)
    assert set(gc.LOSSES) == {"poisson", "log", "both"}
    p, t = torch.from_numpy(pred.astype(np.float32)), torch.from_numpy(target.astype(np.float32))
    assert float(gc.LOSSES["both"](p, t)) == pytest.approx(float(gc.poisson(p, t)) + expected, rel=1e-5)

    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=700, seed=3)
    syn.record_dataset(tmp_path / "d.h5", stim, stim[:200], repeats=2, retina=gt)
    model, history = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "g.pt",
                                   loss_fn=gc.log_error)
    rates = nr.io.read_dataset(tmp_path / "d.h5").train.rates.astype(np.float32)
    _, _, hold = gc.split(len(rates), model.history, model.gain.lags, 0.3)
    loss, _ = gc.heldout(model, torch.from_numpy(stim), rates, hold, gc.log_error)
    assert history[-1]["heldout_loss"] == pytest.approx(loss, rel=1e-5)
    assert loss != pytest.approx(gc.heldout(model, torch.from_numpy(stim), rates, hold)[0], rel=1e-3)


def test_gain_ceiling_division_is_the_truths_own_and_scale_free(monkeypatch):
    """gain_ceiling.division on the latency movie: the truth's stage on its own drive divides at rest by
    1 + k · N_grey (a constant past averages to itself; k from the truth's parameters), and more after a strong
    flash than after a weak one; a drive c times larger under a stage with k / c divides the same (the divisor
    is what the rates fix; k alone is not)."""
    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    movie = nr.experiments.run_truth("latency", gt, 0).stimulus
    truth = gc.TruthDrive(gt)
    d = gc.division(gc.truth_stage(gt, syn.GAIN_HISTORY), truth.respond, movie)
    ganglion = gt.params["gain_control"]["ganglion"]
    n_grey = truth.respond(np.zeros((gt.history + 1, gt.size, gt.size), np.float32))[-1]
    np.testing.assert_allclose(d["rest"], 1 + ganglion["strength"] * n_grey, rtol=1e-4)
    assert set(d["peak"]) == set(np.round(np.arange(-0.5, -10.01, -0.5), 3).tolist())
    for c in range(gt.n_cells):
        assert d["peak"][-10.0][c] > 10 * d["peak"][-0.5][c] and d["peak"][-0.5][c] > d["rest"][c]
    scale = 7.0
    weaker = gc.GainControl(gt.n_cells, syn.GAIN_HISTORY, ganglion["strength"] / scale, ganglion["tau"])
    scaled = gc.division(weaker, lambda m: scale * truth.respond(m), movie)
    np.testing.assert_allclose(scaled["rest"], d["rest"], rtol=1e-4)
    for level, peak in d["peak"].items():
        np.testing.assert_allclose(scaled["peak"][level], peak, rtol=1e-4)


def test_gain_ceiling_early_share_finds_an_answer_before_the_truths(monkeypatch):
    """gain_ceiling.early_share on the latency movie: the truth answers no flash from −0.5 to −1.5 in its first
    40 ms (share ≈ 0; −2 begins at 33 ms); a bump of half the answer's height put 20 ms after each onset, in
    one cell, reads 0.5 there and nothing in the others."""
    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    movie = nr.experiments.run_truth("latency", gt, 0).stimulus
    truth = gt.respond(movie)
    share = gc.early_share(gt.respond, movie)
    assert len(share) == 20 and min(share) == -10.0
    for level in (-0.5, -1.0, -1.5):
        assert max(abs(v) for v in share[level]) < 0.01
    assert min(share[-2.0]) > 0.02
    bumped = truth.copy()
    for t in gc.flash_onsets(movie):
        grey = np.median(truth[t - 20:t, 1])
        bumped[t + 2, 1] = grey + 0.5 * (truth[t:t + 30, 1].max() - grey)
    got = gc.early_share(lambda m: bumped, movie)
    for level in (-0.5, -1.0, -1.5):
        assert got[level][1] == pytest.approx(0.5, abs=0.01)
        assert max(abs(got[level][c]) for c in (0, 2, 3)) < 0.01


def test_gain_ceiling_warmup_epochs_count_for_nothing(monkeypatch, tmp_path):
    """``warmup``: a dip of the held-out loss in the first epochs neither stands as the best, nor runs out the
    patience, nor halves the learning rate; without it, the same losses do all three (the failure it fixes)."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=700, seed=3)
    syn.record_dataset(tmp_path / "d.h5", stim, stim[:200], repeats=2, retina=gt)
    scripted = []
    monkeypatch.setattr(gc, "heldout", lambda *args, **kwargs: (scripted.pop(0), 0.9))
    lr = gc.RECIPE["lr"]

    scripted[:] = [-1.0, 0.5, 0.4, 0.3]
    _, history = gc.train_gain(tmp_path / "d.h5", 0, True, 4, 2, 1, 0.0, 0.3, tmp_path / "w.pt", warmup=1)
    assert [h["lr"] for h in history] == [lr] * 4
    assert len(torch.load(tmp_path / "w.pt", weights_only=True)["history"]) == 4     # the last, best epoch

    scripted[:] = [-1.0, 0.5, 0.4, 0.3]
    _, history = gc.train_gain(tmp_path / "d.h5", 0, True, 4, 2, 1, 0.0, 0.3, tmp_path / "n.pt")
    assert [h["lr"] for h in history] == [lr, lr, lr / 2]                          # stopped at the third
    assert len(torch.load(tmp_path / "n.pt", weights_only=True)["history"]) == 1     # the dip


def test_gain_ceiling_trains_the_gain_and_keeps_held_out_frames_apart(monkeypatch, tmp_path):
    """The held-out windows and their context share no stimulus frame with a fit window; one epoch moves k
    and τ (the gradient reaches them) and saves a model that loads with weights_only to the same rates;
    ``fixed`` keeps the given k and τ and trains the BN-CNN and g; a plain model (no stage) is the BN-CNN's rate,
    and it can start a gain-controlled one (``init``), or be saved with other stages (``saved_stages``); a
    gain-controlled one goes on with its stage. ``channels`` sizes a BN-CNN from scratch; from an init, the
    init's sizes hold."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    history, lags = 40, gc.LAGS
    fit_lo, fit_hi, hold = gc.split(1000, history, lags, 0.3)
    assert fit_lo == history - 1 + lags and hold[-1] == 999
    assert fit_hi < hold[0] - lags - (history - 1)           # the first stimulus frame the held-out part uses
    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=900, seed=3)
    syn.record_dataset(tmp_path / "d.h5", stim, stim[:200], repeats=2, retina=gt)
    model, history_ = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "g.pt")
    assert len(history_) == 1 and np.isfinite(history_[0]["heldout_loss"])
    start = gc.GainControl(4)
    assert not np.allclose(model.gain.strength.detach(), start.strength.detach())
    assert not np.allclose(model.gain.tau.detach(), start.tau.detach())
    again = gc.load(tmp_path / "g.pt")
    np.testing.assert_array_equal(again.respond(stim[:80]), model.respond(stim[:80]))
    assert not np.allclose(model.gain.scale.detach(), start.scale.detach())
    fixed, _ = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "f.pt", strength=1.18,
                             tau=12.2, fixed=True)
    np.testing.assert_allclose(fixed.gain.strength.detach(), 1.18, rtol=1e-6)
    np.testing.assert_allclose(fixed.gain.tau.detach(), 12.2, rtol=1e-6)
    assert not np.allclose(fixed.cnn.conv1.weight.detach(), nr.RetinaCNN(fixed.cnn.config).conv1.weight.detach())
    assert not np.allclose(fixed.gain.scale.detach(), 1.0)
    plain, _ = gc.train_gain(tmp_path / "d.h5", 0, False, 1, 1, 1, 0.0, 0.3, tmp_path / "p.pt")
    assert plain.gain.lags == 0
    np.testing.assert_allclose(plain.respond(stim[:50]), nr.predict(plain.cnn, np.concatenate(
        [np.zeros((39, 50, 50), np.float32), stim[:50]]))[39:], rtol=1e-5)
    warm, _ = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "w.pt", init=tmp_path / "p.pt")
    assert warm.gain.lags == gc.LAGS
    wide, _ = gc.train_gain(tmp_path / "d.h5", 0, False, 1, 1, 1, 0.0, 0.3, tmp_path / "c.pt", channels=(12, 6))
    assert wide.cnn.conv1.weight.shape[0] == 12 and gc.load(tmp_path / "c.pt").cnn.config.channels == (12, 6)
    on_wide, _ = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "cw.pt", init=tmp_path / "c.pt")
    assert on_wide.cnn.config.channels == (12, 6)                      # from an init, the init's sizes
    staged, _ = gc.train_gain(tmp_path / "d.h5", 0, False, 1, 1, 1, 0.0, 0.3, tmp_path / "s.pt",
                              saved_stages=(gc.truth_stage(gt), None))   # --targets drive: trained plain, saved staged
    truth = gc.truth_stage(gt)
    assert gc.load(tmp_path / "s.pt").gain.lags == gc.LAGS
    for name in ("strength", "tau", "scale"):
        np.testing.assert_allclose(getattr(staged.gain, name).detach(), getattr(truth, name).detach(), rtol=1e-6)
    for key, value in plain.cnn.state_dict().items():                  # the same training as the plain run's
        torch.testing.assert_close(staged.cnn.state_dict()[key], value, rtol=0, atol=0, msg=key)
    on, _ = gc.train_gain(tmp_path / "d.h5", 1, True, 1, 1, 1, 0.0, 0.3, tmp_path / "o.pt", init=tmp_path / "g.pt",
                          fixed=True)
    np.testing.assert_allclose(on.gain.strength.detach(), model.gain.strength.detach(), rtol=1e-6)
    np.testing.assert_allclose(on.gain.tau.detach(), model.gain.tau.detach(), rtol=1e-6)


def test_gain_ceiling_trains_an_off_stage_before_the_gain_control(monkeypatch, tmp_path):
    """``off``: a BN-CNN with two outputs per cell, the OFF stage's context before the ganglion's (held-out windows
    apart by both), one epoch moving both stages' k and τ and the OFF stage's β, a saved model that loads with
    weights_only to the same rates, which are the stages on the BN-CNN's outputs with grey before the stimulus;
    ``fixed`` keeps both stages' k and τ; a run goes on from a saved two-stage model with its OFF stage."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    splits = []
    real_split = gc.split
    monkeypatch.setattr(gc, "split", lambda *args: splits.append(args) or real_split(*args))
    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=1200, seed=3)
    syn.record_dataset(tmp_path / "d.h5", stim, stim[:200], repeats=2, retina=gt)
    model, history = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "t.pt", off=(0.5, 10.0))
    assert splits[-1][2] == gc.OFF_LAGS + gc.LAGS == model.context
    assert model.cnn.config.n_cells == 8 and model.n_cells == 4 and model.off.lags == gc.OFF_LAGS
    assert np.isfinite(history[0]["heldout_loss"]) and len(history[0]["k_off"]) == 4
    start = gc.OffStage(4)
    for name in ("strength", "tau"):
        assert not np.allclose(getattr(model.off.control, name).detach(), getattr(start.control, name).detach())
        assert not np.allclose(getattr(model.gain, name).detach(), getattr(gc.GainControl(4), name).detach())
    assert not np.allclose(model.off.bias.detach(), 0.0)
    np.testing.assert_array_equal(model.off.control.scale.detach(), 1.0)       # O's scale is the BN-CNN's
    again = gc.load(tmp_path / "t.pt")
    got = again.respond(stim[:60])
    np.testing.assert_array_equal(got, model.respond(stim[:60]))
    grey = np.zeros((39 + model.context, 50, 50), np.float32)
    n = torch.from_numpy(nr.predict(model.cnn, np.concatenate([grey, stim[:60]]))[39:])
    with torch.no_grad():
        np.testing.assert_allclose(got, model.stages(n[None])[0].numpy(), rtol=1e-5)
    fixed, _ = gc.train_gain(tmp_path / "d.h5", 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "f.pt", strength=1.18,
                             tau=12.2, fixed=True, off=(0.312, 22.5))
    np.testing.assert_allclose(fixed.gain.strength.detach(), 1.18, rtol=1e-6)
    np.testing.assert_allclose(fixed.off.control.strength.detach(), 0.312, rtol=1e-6)
    np.testing.assert_allclose(fixed.off.control.tau.detach(), 22.5, rtol=1e-6)
    assert not np.allclose(fixed.off.bias.detach(), 0.0)
    on, _ = gc.train_gain(tmp_path / "d.h5", 1, True, 1, 1, 1, 0.0, 0.3, tmp_path / "o.pt", init=tmp_path / "t.pt",
                          fixed=True, off=(0.312, 22.5))
    np.testing.assert_allclose(on.off.control.strength.detach(), model.off.control.strength.detach(), rtol=1e-6)
    np.testing.assert_allclose(on.off.control.tau.detach(), model.off.control.tau.detach(), rtol=1e-6)


def test_gain_ceiling_rectified_from_scratch_starts_at_the_mean_and_stays_rectified(monkeypatch, tmp_path):
    """``init_outputs``: a fresh BN-CNN's typical frame (the median over a batch) answers each output's mean rate,
    with the softplus as with rectified outputs (β = the mean itself, not softplus⁻¹ of it, which a ReLU turns to 0
    for rates under log 2). ``rectified`` from scratch trains a :class:`RectifiedCNN`, saved and loaded as one; a
    rectified run from a softplus init is refused (a run keeps its init's kind). ``penalty=False`` trains on the loss
    alone: the recipe's weight penalty is not computed."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    stim = nr.stimuli.white_noise(frames=300, seed=3)
    rates = np.random.default_rng(0).poisson([0.3, 0.5, 1.0, 4.0], size=(2000, 4)).astype(np.float64)
    for cls in (nr.RetinaCNN, gc.RectifiedCNN):
        cnn = cls(nr.ModelConfig(size=50, n_cells=4)).train()
        gc.init_outputs(cnn, rates)
        with torch.no_grad():
            out = cnn.from_first_layer(cnn.first_layer_windows(torch.from_numpy(stim), np.arange(39, 239))).numpy()
        np.testing.assert_allclose(np.median(out, 0), rates.mean(0), rtol=0.1, err_msg=cls.__name__)
    gt = syn.Retina(seed=0, version=3)
    data = syn.record_dataset(tmp_path / "d.h5", nr.stimuli.white_noise(frames=900, seed=3), stim[:200], repeats=2,
                              retina=gt)
    penalties, real_penalty = [], gc.weight_penalty
    monkeypatch.setattr(gc, "weight_penalty", lambda *args: penalties.append(args[1:]) or real_penalty(*args))
    model, history = gc.train_gain(data, 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "r.pt", off=(0.5, 10.0),
                                   rectified=True, penalty=False)
    assert penalties == []
    assert isinstance(model.cnn, gc.RectifiedCNN) and np.isfinite(history[-1]["heldout_loss"])
    assert torch.load(tmp_path / "r.pt", weights_only=True)["output"] == "relu"
    assert isinstance(gc.load(tmp_path / "r.pt").cnn, gc.RectifiedCNN)
    gc.train_gain(data, 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "p.pt")
    assert penalties and set(penalties) == {(gc.RECIPE["l2"], gc.RECIPE["l1_linear"])}     # by default, each step
    with pytest.raises(ValueError, match="softplus outputs"):
        gc.train_gain(data, 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "q.pt", init=tmp_path / "p.pt", rectified=True)


def test_gain_ceiling_split_targets_are_what_the_truths_stages_join(monkeypatch, tmp_path):
    """``--targets split``: both splits' responses are the truth's O and R (two outputs per cell, named so), on
    which the truth's OFF stage and ganglion stage give the dataset's true rates (within 1% past their context);
    the copy is written once. A plain BN-CNN trained on them is saved with both of the truth's stages, and a
    two-stage run started from it (``init``) keeps them when ``fixed``, whatever ``off`` says."""
    import h5py
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=3)
    stim = nr.stimuli.white_noise(frames=1400, seed=1)
    counts = syn.record_dataset(tmp_path / "m.h5", stim[:1200], stim[1200:], repeats=2, retina=gt)
    path = gc.split_inputs(counts, tmp_path / "m_split.h5", gt)
    got, was = nr.io.read_dataset(path), nr.io.read_dataset(counts)
    assert got.cell_names == [f"{n} OFF stage" for n in was.cell_names] + [f"{n} ON inputs" for n in was.cell_names]
    assert got.train.rates.shape == (1200, 8) and got.test.rates.shape == (200, 8)
    np.testing.assert_array_equal(got.train.stimulus, was.train.stimulus)
    np.testing.assert_array_equal(got.test.stimulus, was.test.stimulus)
    with h5py.File(counts) as f:
        true = f["train/true_rates"][...].T
    model = gc.GainModel(nr.RetinaCNN(nr.ModelConfig(n_cells=8)), gc.truth_stage(gt), gc.truth_off_stage(gt))
    with torch.no_grad():
        joined = model.stages(torch.from_numpy(got.train.rates)[None])[0].numpy()
    np.testing.assert_allclose(joined, true[model.context:], rtol=1e-2)
    assert np.max(np.abs(joined / np.roll(true, 1, 0)[model.context:] - 1)) > 0.05      # a frame off is not
    stamp = path.stat().st_mtime_ns
    assert gc.split_inputs(counts, path, gt) == path and path.stat().st_mtime_ns == stamp
    stages = (gc.truth_stage(gt), gc.truth_off_stage(gt))
    fitted, _ = gc.train_gain(path, 0, False, 1, 1, 1, 0.0, 0.3, tmp_path / "s.pt", saved_stages=stages)
    assert fitted.cnn.config.n_cells == 8 and fitted.n_cells == 4 and fitted.context == gc.LAGS + gc.OFF_LAGS
    off = gt.params["gain_control"]["off"]
    np.testing.assert_allclose(fitted.off.control.strength.detach(), off["strength"], rtol=1e-6)
    np.testing.assert_allclose(fitted.off.bias.detach(), gt.params["bias"], rtol=1e-6)
    on, _ = gc.train_gain(counts, 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "o.pt", init=tmp_path / "s.pt",
                          fixed=True, off=(0.5, 10.0))
    np.testing.assert_allclose(on.off.control.strength.detach(), off["strength"], rtol=1e-6)
    np.testing.assert_allclose(on.off.control.tau.detach(), off["tau"], rtol=1e-6)
    np.testing.assert_allclose(on.gain.strength.detach(), gt.params["gain_control"]["ganglion"]["strength"],
                               rtol=1e-6)
    assert not np.allclose(on.off.bias.detach(), gt.params["bias"])                    # β still learns


def test_gain_ceiling_planted_truth_is_the_truth_in_a_two_output_bn_cnn(monkeypatch, tmp_path):
    """``planted``: version 5 built into a twelve-channel two-output BN-CNN gives, on a stimulus it was not set up
    on, the truth's ON inputs through the output's softplus (to the ganglion field's cut at conv2's map, < 1%), its
    OFF stage where on (softplus within 0.15 of O > 2) and log 2 where off, and with the truth's stages its rates
    (r > 0.99 per cell), at PLANT_RMS as at the truth's own scale (``rms=None``); ``rectified``, saved and loaded as
    such, gives O and R themselves (0 where they are) and the rates at r > 0.999; ``noise`` adds that share of each
    kernel's rms. Trained from it, epoch 0 is its held-out loss before any step, ``frozen_bn`` keeps the batch norms'
    statistics where training moves them, and ``lr`` is Adam's."""
    import torch

    gc = _script("gain_ceiling", monkeypatch)
    gt = syn.Retina(seed=0, version=5)
    train, test = nr.stimuli.white_noise(frames=1000, seed=3), nr.stimuli.white_noise(frames=200, seed=4)
    model = gc.planted(gt, train[:400], windows=300)
    assert model.cnn.config.channels == (12, 8) and model.n_cells == 4 and model.off is not None
    for layer, target in zip((model.cnn.conv1, model.cnn.conv2, model.cnn.linear), gc.PLANT_RMS):
        assert float(layer.weight.detach().pow(2).mean().sqrt()) == pytest.approx(target, rel=1e-5)
    own = gc.planted(gt, train[:400], windows=300, rms=None)
    assert float(own.cnn.conv1.weight.pow(2).mean().sqrt()) < gc.PLANT_RMS[0] / 5
    got, want = model.outputs(test)[model.context:].numpy(), gt.off_and_on(test)
    np.testing.assert_allclose(got, own.outputs(test)[model.context:].numpy(), rtol=1e-4, atol=1e-4)
    softplus = torch.nn.functional.softplus
    np.testing.assert_allclose(got[:, 4:], softplus(torch.from_numpy(want[:, 4:])).numpy(), rtol=1e-2)
    on, off = want[:, :4] > 2, want[:, :4] == 0
    assert on.sum() > 5 and off.sum() > 5
    assert np.abs(got[:, :4][on] - want[:, :4][on]).max() < 0.15
    np.testing.assert_allclose(got[:, :4][off], np.log(2), atol=0.01)
    rates, truth = model.respond(test), gt.respond(test)
    assert min(np.corrcoef(rates[:, j], truth[:, j])[0, 1] for j in range(4)) > 0.99
    rect = gc.planted(gt, train[:400], windows=300, rectified=True)       # outputs that can be 0, as O and R are
    gc.save(tmp_path / "r.pt", rect, [])
    again = gc.load(tmp_path / "r.pt")
    assert isinstance(again.cnn, gc.RectifiedCNN) and not isinstance(model.cnn, gc.RectifiedCNN)
    exact = again.outputs(test)[model.context:].numpy()
    np.testing.assert_allclose(exact, want, rtol=1e-2, atol=1e-2 * want.max())
    assert (exact[:, :4][off] < 1e-2).all()                                # where the softplus answered log 2
    rates = again.respond(test)
    assert min(np.corrcoef(rates[:, j], truth[:, j])[0, 1] for j in range(4)) > 0.999
    noisy = gc.planted(gt, train[:400], noise=0.1, seed=1, windows=300, rms=None)
    for c, q in enumerate(gt.pathways):
        k = torch.from_numpy(q.kernel().copy())
        ratio = float((noisy.cnn.conv1.weight[c].detach() - k).pow(2).mean().sqrt() / k.pow(2).mean().sqrt())
        assert 0.09 < ratio < 0.11
    data = gc.noise_free(syn.record_dataset(tmp_path / "d.h5", train, test, repeats=2, retina=gt), tmp_path / "r.h5")
    bns = lambda m: [b for b in m.cnn.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]  # noqa: E731
    trained, history = gc.train_gain(data, 0, True, 1, 1, 1, 0.0, 0.3, tmp_path / "t.pt", init=tmp_path / "r.pt",
                                     fixed=True, off=(0.5, 10.0), frozen_bn=True, lr=1e-4)
    assert isinstance(trained.cnn, gc.RectifiedCNN)                                    # from a rectified init
    assert [h["epoch"] for h in history] == [0, 1] and history[0]["heldout_r"] > 0.98 and history[1]["lr"] == 1e-4
    assert not torch.equal(trained.cnn.conv1.weight, rect.cnn.conv1.weight)           # a step was taken,
    for b, a in zip(bns(trained), bns(rect)):                                          # in training mode,
        assert torch.equal(b.running_mean, a.running_mean) and torch.equal(b.running_var, a.running_var)
    again = gc.load(tmp_path / "r.pt")
    _, _, hold = gc.split(1000, 40, again.context, 0.3)
    stim = torch.from_numpy(np.ascontiguousarray(train))
    rates_ = nr.io.read_dataset(data).train.rates.astype(np.float32)
    assert history[0]["heldout_loss"] == pytest.approx(gc.heldout(again, stim, rates_, hold)[0], rel=1e-6)


def test_mix_sparse_is_the_field_mix_with_its_whole_field_block_mostly_grey():
    """Blocks 0-6 are the field mix's; the whole-field block is grey on ~97% of frames, its other frames at
    the steps' levels in [0.25, 10], a fifth of them or more after 40 grey frames (one 400 ms history),
    where the field mix's block has none."""
    B = syn.MIX_BLOCK
    sparse = syn.training_mix(8 * B, 3, blocks=syn.MIX_SPARSE)
    np.testing.assert_array_equal(sparse[:7 * B], syn.training_mix(7 * B, 3, blocks=syn.MIX_FIELD))

    def lit_and_rests(blocks):
        movie = syn.training_mix(6 * B, 3, blocks=blocks)            # six whole-field blocks
        assert (movie == movie[:, :1, :1]).all()
        v = movie[:, 0, 0]
        lit = np.flatnonzero(v)
        return v, lit, np.diff(np.concatenate([[-1], lit])) - 1     # grey frames before each lit frame

    v, lit, rests = lit_and_rests(syn.MIX_SPARSE[7:])
    assert 0.015 < len(lit) / len(v) < 0.05
    assert np.abs(v[lit]).min() >= 0.25 - 1e-6 and np.abs(v[lit]).max() <= 10.0 + 1e-6
    assert np.mean(rests >= 40) > 0.2
    assert np.mean(lit_and_rests(syn.MIX_FIELD[7:])[2] >= 40) == 0.0


def test_a_mix_block_with_a_grey_out_of_range_is_refused():
    with pytest.raises(ValueError, match="grey"):
        syn.training_mix(100, 0, blocks=(("noise", {"checker": 4, "grey": 1.5}),))


def test_make_dataset_bad_input(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        syn.make_dataset(tmp_path / "x.h5", frames=10)
    with pytest.raises(TypeError, match="Retina"):
        syn.make_dataset(tmp_path / "x.h5", frames=100, test_frames=50, retina="gt")
    with pytest.raises(FileNotFoundError):
        syn.make_dataset(tmp_path / "missing" / "x.h5", frames=100, test_frames=50)
    with pytest.raises(ValueError, match="kind must be one of 'mix', .*'mix-sparse', 'binary', 'gaussian'"):
        syn.make_dataset(tmp_path / "x.h5", frames=100, test_frames=50, kind="bogus")


def test_record_dataset_records_any_stimulus(tmp_path, gt):
    import h5py

    bars = nr.stimuli.moving_bar(speed=0.5, start=-20, stop=20, width=2, intensity=-2, pre=10, post=10, size=50)
    test = nr.stimuli.white_noise(60, seed=3, checker=2, contrast=2.0)
    path = syn.record_dataset(tmp_path / "bars.h5", bars, test, repeats=4, seed=7, attrs={"stimulus": "bars"})
    ds = nr.io.read_dataset(path)
    np.testing.assert_array_equal(ds.train.stimulus, bars)
    np.testing.assert_array_equal(ds.test.stimulus, test)
    assert ds.test.repeats.shape == (gt.n_cells, 4, 60) and ds.attrs["stimulus"] == "bars"
    with h5py.File(path, "r") as h5:
        np.testing.assert_allclose(h5["train/true_rates"][()].T, gt.respond(bars), rtol=1e-6)
    # spikes are Poisson around the true rates: the train counts' total is within 5 sd of the expected total
    expected = float(gt.respond(bars).sum())
    assert abs(float(ds.train.rates.sum()) - expected) < 5 * np.sqrt(expected)


def test_record_dataset_bad_input(tmp_path):
    noise = nr.stimuli.white_noise(60, seed=1)
    with pytest.raises(ValueError, match="50x50"):
        syn.record_dataset(tmp_path / "x.h5", np.zeros((60, 40, 40), np.float32), noise)
    with pytest.raises(ValueError, match="frames"):
        syn.record_dataset(tmp_path / "x.h5", noise[:30], noise)
    with pytest.raises(ValueError, match="repeats"):
        syn.record_dataset(tmp_path / "x.h5", noise, noise, repeats=0)


def test_a_dataset_is_written_under_an_hdf5_name_with_attributes_hdf5_stores_checked_first(tmp_path, monkeypatch):
    """A tester's review: make_dataset('d.npy') wrote HDF5 that every reader then took for a broken .npy stack,
    and record_dataset(attrs={'x': object()}) failed 17 frames deep in h5py after the recording."""
    def no_recording(self, stim):
        raise AssertionError("recorded before the path and attributes were checked")

    monkeypatch.setattr(syn.Retina, "respond", no_recording)
    noise = nr.stimuli.white_noise(60, seed=1)
    for call in (lambda: syn.make_dataset(tmp_path / "d.npy", frames=100, test_frames=50),
                 lambda: syn.record_dataset(tmp_path / "d.npy", noise, noise),
                 lambda: nr.io.write_dataset(tmp_path / "d.npy", None)):
        with pytest.raises(ValueError, match=r"^path must end in .h5, .hdf5 \(the file is HDF5\), got '.npy' "):
            call()
    with pytest.raises(ValueError, match=r"^dataset.attrs.*'x'"):
        syn.record_dataset(tmp_path / "d.h5", noise, noise, attrs={"x": object()})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the shipped model

def test_shipped_model_was_trained_on_this_retina():
    """The default model's provenance names the circuit that made its data, and it is today's circuit."""
    model = nr.load_model(device="cpu")
    prov, scores = model.provenance, model.scores
    assert prov.get("trained_by") == "napari_retina.training.train"
    attrs = prov["data_attrs"]
    assert int(attrs["synthetic"]) == 1
    recorded = json.loads(attrs["retina"])
    assert recorded["version"] == 2 and recorded["params"] == json.loads(json.dumps(syn.DEFAULT_PARAMS))   # today's
    assert attrs["kind"] == "mix" and prov["train_frames"] == 120000     # the general-purpose training mix
    assert model.config.norm["units"] == "contrast"
    assert (model.config.history, model.config.size, model.config.channels, model.config.kernels,
            model.config.bn) == (40, 50, (8, 8), (15, 11), "unit")
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= n_params <= 140_000
    assert scores["test_r_true_mean"] >= 0.95


def test_shipped_model_predicts_the_true_rates():
    """Independent check of the recorded score on a fresh movie of the training distribution."""
    model = nr.load_model(device="cpu")
    attrs = model.provenance["data_attrs"]
    stim = syn.training_mix(1500, seed=123)
    true = syn.Retina(params=json.loads(attrs["retina"])["params"]).respond(stim)[39:]
    pred = nr.predict(model, stim)[39:]
    r = [np.corrcoef(pred[:, c], true[:, c])[0, 1] for c in range(true.shape[1])]
    assert np.mean(r) > 0.9
    # at about the right scale (r cannot see a model firing 1/5 of the rate): docs/MODEL.md reports the
    # shipped model firing 1.0-1.6x the true mean rate on this movie (over-predicting the naturalistic blocks)
    np.testing.assert_allclose(pred.mean(0), true.mean(0), rtol=0.6)
    # and on grey, the background of every experiment (white noise alone never shows it)
    grey = np.zeros((60, 50, 50), np.float32)
    np.testing.assert_allclose(nr.predict(model, grey)[-1], syn.Retina().respond(grey)[-1], atol=0.3)


def test_too_many_repeats_are_refused_before_the_draw(tmp_path, monkeypatch):
    """A reliability audit: make_dataset(repeats=10**9) died in NumPy's Poisson draw ("Unable to allocate
    2.91 TiB"), naming no argument; every other size had its sentence."""
    from napari_retina import _validate

    monkeypatch.setattr(_validate, "physical_memory_bytes", lambda: 2**30)   # a 1 GiB machine
    retina = nr.synthetic.Retina()
    test = np.zeros((60, 50, 50), np.float32)
    message = r"^repeats=100,000,000 trials of 60 frames × 4 cells take 268 GiB while drawn, more than this machine"
    with pytest.raises(MemoryError, match=message):
        nr.synthetic.record_dataset(tmp_path / "d.h5", np.zeros((50, 50, 50), np.float32), test, repeats=10**8)
    with pytest.raises(MemoryError, match=message):
        retina.record(test, repeats=10**8)
    assert not (tmp_path / "d.h5").exists()
    assert retina.record(test, repeats=2).shape == (2, 60, 4)


def test_make_dataset_reports_from_the_start_and_a_cancel_acts_while_the_stimulus_is_made(tmp_path):
    """The training stimulus (30,000 frames: 36 s in an audit) was made before the first report, so a bar sat
    still and Cancel waited for it. Progress now starts at 0 of 6, moves within the stimuli (per 5 s block of the
    mix) and the responses, never back, and ends at 6 of 6; a Cancel at the first report inside the training
    stimulus stops there, with no file written."""
    seen = []
    nr.synthetic.make_dataset(tmp_path / "a.h5", frames=1200, test_frames=100, repeats=2,
                              progress=lambda d, n: seen.append((d, n)))
    done = [d for d, _ in seen]
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and {n for _, n in seen} == {6} and done == sorted(done)
    token, calls = nr.CancelToken(), []

    def cancel_inside(d, n):
        calls.append(d)
        if len(calls) == 2:       # the first report after the start: inside the training stimulus
            token.cancel()

    with pytest.raises(nr.Cancelled):
        nr.synthetic.make_dataset(tmp_path / "b.h5", frames=1200, test_frames=100, repeats=2,
                                  progress=token.wrap(cancel_inside))
    assert calls == [0, 0] and not (tmp_path / "b.h5").exists()
