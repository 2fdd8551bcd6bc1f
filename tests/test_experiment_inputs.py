"""Degenerate and over-long experiment inputs are refused in one sentence before any work; runs are recorded.

Each test is about one defect of tester B's report (docs/EXPERIMENTS.md says what is refused and why).
Fast: tiny fields, a zero or synthetic response, the ``tiny`` model of conftest.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_retina as nr
from napari_retina.cli import main
from napari_retina.experiments import base, latency, osr
from napari_retina.experiments.battery import route_params


def bump(T: int, t0: float, height: float, width: float) -> np.ndarray:
    t = np.arange(T, dtype=np.float64)
    return height * np.exp(-0.5 * ((t - t0) / width) ** 2)


class Counting:
    """A zero response that counts the frames it was shown (T,)."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, stim: np.ndarray) -> np.ndarray:
        self.frames += len(stim)
        return np.zeros(len(stim))


# ----------------------------------------------------------------------------- 1. over-long movies


def test_a_movie_over_the_frame_cap_is_refused_before_any_response():
    # each 30,000-frame crossing fitted memory on its own, so nothing refused the 60,000+-frame movie
    respond = Counting()
    with pytest.raises(ValueError, match=r"2 bar crossings of 30 px \(the slowest, at 0\.001 px/frame, 30,000 frames\)"
                                         r" come to 6\d,\d{3} frames .* more than the 60,000 frames \(10 min\)"):
        nr.experiments.run_function("anticipation", respond, size=20, history=10, speed=1e-3)
    assert respond.frames == 0


def test_a_movie_whose_copies_exceed_memory_is_refused_though_each_segment_fits(monkeypatch):
    # a pretend 30 MB machine: each 6,000-frame crossing of 20x20 px (9.6 MB) fits, the movie's copies do not
    import napari_retina._validate as validate

    monkeypatch.setattr(validate, "physical_memory_bytes", lambda: 30 * 2**20)
    respond = Counting()
    with pytest.raises(MemoryError, match=r"^experiment 'anticipation' with .*speed=0\.005.* come to 1\d,\d{3} frames "
                                          r"of 20×20 px, and the 3 float32 copies .* more than this machine's memory"):
        nr.experiments.run_function("anticipation", respond, size=20, history=10, speed=5e-3)
    assert respond.frames == 0


@pytest.mark.parametrize("name,params,says", [
    ("reversal", dict(approach=100000, center=0.0), "12 reversals after an approach of 100,000 frames"),
    ("doubling", dict(period=1000), "gratings of 4 cycles of 2,000 frames"),
    ("osr", dict(n_flashes=100000), "7 flash trains of 100,000 flashes"),
    ("latency", dict(gap=100000), "21 flashes"),
])
def test_slow_or_long_stimuli_of_every_experiment_are_refused_up_front(name, params, says):
    respond = Counting()
    with pytest.raises((ValueError, MemoryError), match=says):
        nr.experiments.run_function(name, respond, size=20, history=10, **params)
    assert respond.frames == 0


def test_run_truth_refuses_a_slow_bar_before_the_retina_responds():
    class Truth:
        size, history = 20, 10
        frames = 0

        def respond(self, stim):
            Truth.frames += len(stim)
            return np.zeros((len(stim), 1))

    with pytest.raises(ValueError, match="come to .* frames"):
        nr.experiments.run_truth("anticipation", Truth(), speed=1e-3)
    assert Truth.frames == 0


def test_the_cli_refuses_a_slow_bar_with_exit_2_before_running(tmp_path, tiny, capsys):
    path = nr.save_model(tiny, tmp_path / "tiny.pt")
    code = main(["experiment", "anticipation", "--model", str(path), "--out", str(tmp_path / "o"), "--quiet",
                 "--steps", "2", "--no-truth", "--param", "speed=1e-3"])
    assert code == 2 and "more than the 60,000 frames" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- 2. OSR periods


def osr_response(periods: list) -> tuple[np.ndarray, list]:
    """A response that predicts the omitted flash: a bump 7 frames after it, whatever the period."""
    proto = osr.build(50, 40, periods=periods, n_flashes=4, intensity=-2.0, duration=2, gap=60, window=40,
                      max_frames=300)
    r = 0.2 + sum(bump(len(proto.stimulus), c["omitted"] + 7.3, 3.0, 3.0) for c in proto.conditions)
    return r, proto.conditions


def test_osr_is_not_present_from_two_periods_where_any_line_fits():
    two = osr.readout(*osr_response([5, 9]))
    assert two["r2"] == pytest.approx(1.0) and two["present"] is False
    assert osr.readout(*osr_response([5, 9, 13]))["present"] is True


def test_osr_refuses_a_period_listed_twice_instead_of_a_silent_zero_over_zero():
    with pytest.raises(ValueError, match=r"periods must differ from one another, got 5 more than once"):
        nr.experiments.run_function("osr", Counting(), size=20, history=10, periods=[5, 5, 9, 9])


@pytest.mark.parametrize("name, params, message", [
    ("osr", {"periods": [5]}, r"^periods must hold at least two periods: the omitted flash's latency is read as a "
                              r"line against the period, got \[5\]$"),
    ("osr", {"intensity": 0}, r"^intensity must not be 0: flashes at mean grey are no flashes"),
    ("osr", {"n_flashes": 1}, r"^n_flashes must be at least 2: an omitted flash is expected only after a periodic "
                              r"train, got 1$"),   # an audit: it ran, with a slope of -6.7e-16 and r² 0.44
    ("latency", {"intensities": [-1, -1.0]}, r"^intensities must hold at least two different contrasts: latency "
                                             r"coding is read against contrast, got \[-1.0, -1.0\]$"),
])
def test_settings_that_leave_nothing_to_read_are_refused_not_read_as_nan(name, params, message):
    """A tester's review: one period gave slope and r² NaN, intensity 0 every latency NaN, one contrast a NaN
    Spearman; the CLI printed 'slope nan' with exit 0."""
    respond = Counting()
    with pytest.raises(ValueError, match=message):
        nr.experiments.run_function(name, respond, size=20, history=10, **params)
    assert respond.frames == 0


# ----------------------------------------------------------------------------- 3. reversal


def test_reversal_refuses_a_position_listed_twice():
    with pytest.raises(ValueError, match=r"reversals must differ from one another, got 0 more than once"):
        nr.experiments.run_function("reversal", Counting(), size=20, history=10, center=0.0, reversals=[0, 0, 0, 0])


@pytest.mark.parametrize("params", [dict(approach=4, speed=0.01), dict(approach=2)])
def test_reversal_refuses_a_bar_that_barely_moves(params):
    respond = Counting()
    with pytest.raises(ValueError, match=r"moves the bar .* px before the reversal, less than its width .* flashed "
                                         r"bar, not a reversal of motion; use approach >= \d+ frames"):
        nr.experiments.run_function("reversal", respond, size=20, history=10, center=0.0, **params)
    assert respond.frames == 0


def test_reversal_default_approach_moves_the_bar_its_width_even_for_a_short_history():
    # history 2: window 2, approach 2·window = 4 frames at 0.19 px/frame was 0.76 px, a flashed bar
    res = nr.experiments.run_function("reversal", Counting(), size=20, history=2, center=0.0)
    assert res.params["approach"] * res.params["speed"] >= res.params["width"]
    assert len(res.params["reversals"]) == 12


# ----------------------------------------------------------------------------- 4. qualified parameter names


def test_a_qualified_parameter_goes_to_its_experiment_only_and_overrides_the_plain_one():
    routed = route_params(["anticipation", "reversal", "osr"],
                          {"speed": 0.19, "anticipation.speed": [0.1, 0.2], "max_frames": 40})
    assert routed["anticipation"] == {"speed": [0.1, 0.2], "max_frames": 40}
    assert routed["reversal"] == {"speed": 0.19, "max_frames": 40} and routed["osr"] == {"max_frames": 40}
    assert route_params(["osr"], {"osr.periods": [3, 5, 7]}) == {"osr": {"periods": [3, 5, 7]}}
    with pytest.raises(ValueError, match=r"names experiment 'anticipation', which is not among those run \(osr\)"):
        route_params(["osr"], {"anticipation.speed": 0.1})
    with pytest.raises(ValueError, match=r"unknown parameter 'periods' in 'reversal.periods' for experiment "
                                         r"'reversal'"):
        route_params(["osr", "reversal"], {"reversal.periods": [5]})


def test_the_cli_checks_a_qualified_parameter_for_its_experiment_only(tmp_path, tiny, capsys):
    path = nr.save_model(tiny, tmp_path / "tiny.pt")
    # a list of speeds is anticipation's, and reversal's one speed is not asked to take it
    code = main(["experiment", "all", "--model", str(path), "--out", str(tmp_path / "o"), "--quiet", "--no-truth",
                 "--param", "anticipation.speed=[0.1,-1]"])
    err = capsys.readouterr().err
    assert code == 2 and "experiment 'anticipation': speed must be > 0, got -1" in err
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "EXPERIMENT.KEY=VALUE" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- 5. records


def test_name_json_and_battery_files_record_explain_steps_params_and_the_ground_truth(tmp_path, tiny, monkeypatch):
    import napari_retina.experiments

    path = nr.save_model(tiny, tmp_path / "tiny.pt")
    monkeypatch.setattr(napari_retina.experiments, "names", lambda: ["osr"])   # 'all' of one experiment: fast
    assert main(["experiment", "all", "--model", str(path), "--out", str(tmp_path), "--quiet", "--steps", "2",
                 "--explain", "0.6", "--no-truth", "--param", "periods=[3,5,7]", "--param", "n_flashes=4",
                 "--param", "max_frames=20"]) == 0
    run = {"cell": 0, "explain": 0.6, "steps": 2, "tol": None,
           "params": {"periods": [3, 5, 7], "n_flashes": 4, "max_frames": 20}}
    for name in ("osr.json", "battery.json"):
        data = json.loads((tmp_path / name).read_text())
        assert data["run"] == run and data["truth_retina"] is None
    head = (tmp_path / "battery.md").read_text()
    assert '"periods": [3, 5, 7]' in head and "ground truth: none" in head



@pytest.mark.parametrize("model_is_none, kwargs, error, message", [
    (True, {"names": ["osr"]}, TypeError, r"^model must be a RetinaCNN \(nr.load_model\) or a wrapped module"),
    (False, {"names": "osr"}, TypeError, r"^names must be a list of experiment names \(e.g. \['osr'\]\), got str 'osr'$"),
    (False, {"names": []}, ValueError, r"^names is empty: give at least one experiment of osr, latency"),
    (False, {"names": ["osr"], "retina": "yes"}, TypeError, r"^retina must be 'auto', None or a ground truth with "
                                                             r"respond\(stimulus\) .*, got str 'yes'$"),
    (False, {"names": ["osr"], "retina": "Auto"}, TypeError, r"^retina must be 'auto', None"),
])
def test_the_battery_refuses_what_it_cannot_run_before_anything_runs(tiny, model_is_none, kwargs, error, message):
    """Not a model, one name as a plain string (it would read as its letters), no names, a retina that is no
    ground truth (it would silently leave the truth out): one sentence each."""
    with pytest.raises(error, match=message):
        nr.experiments.battery(None if model_is_none else tiny, **kwargs)



def test_run_truth_refuses_a_retina_whose_field_size_is_not_an_int():
    class Odd:
        size = "50x"

        def respond(self, stimulus):
            return np.zeros((len(stimulus), 1))

    with pytest.raises(TypeError, match=r"^retina.size must be an int, got str '50x'$"):
        nr.experiments.run_truth("latency", Odd())


def test_the_battery_says_which_ground_truth_it_compared_with():
    from napari_retina.experiments.battery import retina_record

    assert retina_record(nr.synthetic.Retina(seed=3, version=1)) == {
        "type": "napari_retina.synthetic.Retina", "seed": 3, "version": 1}
    assert retina_record(None) is None


# ----------------------------------------------------------------------------- 6. latency


def latency_response(intensities: list) -> tuple[np.ndarray, list]:
    """Onset latency that shortens by one frame per contrast unit."""
    proto = latency.build(10, 40, intensities=intensities, duration=2, gap=60, window=40, max_frames=300)
    r = np.zeros(len(proto.stimulus))
    for c in proto.conditions:
        r += bump(len(r), c["onset"] + 17 - abs(c["intensity"]), 5.0, 1.5)
    return r, proto.conditions


def test_latency_counts_distinct_contrasts_towards_five_responding_flashes():
    assert latency.readout(*latency_response([-2, -2, -4, -7, -10, -10]))["present"] is False
    assert latency.readout(*latency_response([-2, -3, -6, -8, -10]))["present"] is True


# ----------------------------------------------------------------------------- 7. a 1-frame history


def test_a_one_frame_history_gets_a_valid_default_window():
    res = nr.experiments.run_function("latency", Counting(), size=10, history=1, intensities=[-1, -2])
    assert res.params["window"] == 2
    with pytest.raises(ValueError, match="window must be >= 2, got 1"):   # one the user gave is still refused
        nr.experiments.run_function("latency", Counting(), size=10, history=1, window=1)


# ----------------------------------------------------------------------------- nits


@pytest.mark.parametrize("name,params", [
    ("osr", dict(periods=[True, 5])), ("reversal", dict(direction=True, center=0.0)),
    ("anticipation", dict(directions=[True])), ("anticipation", dict(speed=[True, 0.2])),
])
def test_true_is_not_a_number(name, params):
    with pytest.raises((TypeError, ValueError), match="true|True"):
        nr.experiments.run_function(name, Counting(), size=20, history=10, **params)


@pytest.mark.parametrize("name,params", [("anticipation", {}), ("reversal", dict(center=0.0))])
def test_a_bar_wider_than_the_field_is_refused(name, params):
    with pytest.raises(ValueError, match=r"width 30 px is wider than the model's 20-pixel field"):
        nr.experiments.run_function(name, Counting(), size=20, history=10, width=30, **params)


def test_model_derived_defaults_are_resolved_in_params():
    ant = nr.experiments.run_function("anticipation", Counting(), size=20, history=10).params
    assert ant["start"] == -15.0 and ant["stop"] == 15.0 and len(ant["flash_positions"]) == 21
    rev = nr.experiments.run_function("reversal", Counting(), size=20, history=10, center=0.0).params
    assert rev["approach"] == 20 and rev["reversals"] == pytest.approx(np.linspace(-9, 2, 12))
    dbl = nr.experiments.run_function("doubling", Counting(), size=20, history=10).params
    assert dbl["bar_width"] == [8.0, 4.0, 2.0]


@pytest.mark.parametrize("quadrature,says", [
    (dict(steps=0), "steps"), (dict(tol=-1.0), "tol"), (dict(steps=8, tol=1e-3), "not both"),
])
def test_steps_and_tol_are_checked_before_the_stimulus_is_built(tiny, monkeypatch, quadrature, says):
    def never(*args, **kwargs):
        raise AssertionError("the stimulus was built before steps/tol were checked")

    monkeypatch.setattr(base, "build", never)
    with pytest.raises(ValueError, match=says):
        nr.experiments.run("osr", tiny, **quadrature)
