"""The Experiments dock shows a model of the synthetic retina beside that ground truth (the central claim, in napari).

Before, the dock ran the model alone: whether the truth shows a phenomenon, which of its pathways the
kept channels recover and what the truth's response looks like were only in the command line's files.
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _session, _widgets  # noqa: E402
from napari_retina._napari._plot import DOCK_NAME  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return nr.load_model()


def _dock(make_napari_viewer, model):
    viewer = make_napari_viewer()
    _session.session(viewer).set_model(model, "test model")
    w = _widgets.ExperimentsWidget(viewer)
    viewer.window.add_dock_widget(w, name="ExperimentsWidget")
    w.steps.value = 2
    return viewer, w


def test_a_model_of_the_synthetic_retina_is_compared_with_it(make_napari_viewer, shipped, notes):
    viewer, w = _dock(make_napari_viewer, shipped)
    assert w.truth.enabled and w.truth.value       # the shipped model was trained on Retina(seed=0)
    assert w.run(["osr"])
    w.task.wait(300000)
    assert notes == [] and w.task.last_error is None

    model_res = nr.experiments.run("osr", shipped, cell=0, steps=2)
    retina = nr.synthetic.Retina(seed=0)
    truth = nr.experiments.run_truth("osr", retina, 0, history=shipped.config.history, **model_res.params)
    got = w.truths["osr"]
    np.testing.assert_allclose(got.rates, truth.rates, rtol=1e-5, atol=1e-6)
    assert got.readout["present"] == truth.readout["present"]

    table = w.table.to_dict("list")
    assert list(table) == ["readout", "model", "reduced", "truth"]   # "ground truth" was cut in a narrow dock
    assert table["readout"][0] == "present"
    assert table["truth"][0] == ("yes" if truth.readout["present"] else "no")
    assert table["model"][0] == ("yes" if model_res.readout["present"] else "no")
    overview = w.overview.value
    assert f"model {'yes' if model_res.readout['present'] else 'no'}" in overview
    assert f"ground truth</a> {'yes' if truth.readout['present'] else 'no'}" in overview
    # and how the model's rate follows the truth's on this movie (r alone hides a gain error)
    m, t = model_res.rates[:, 0].astype(np.float64), truth.rates[:, 0].astype(np.float64)
    ok = np.isfinite(m) & np.isfinite(t)
    assert (f"the model's rate against the truth's on this movie: r {np.corrcoef(m[ok], t[ok])[0, 1]:.4g}, EV "
            f"{1 - np.var(t[ok] - m[ok]) / np.var(t[ok]):.4g}, gain {np.polyfit(t[ok], m[ok], 1)[0]:.4g}") in overview

    report = nr.experiments.recovery_report(model_res.reduction, shipped, retina)
    for row in report["channels"]:
        channel = f"A{row['channel']}"
        said = f"{channel} ≈ {row['pathway']}" if row["recovers"] else f"{channel}: none (closest {row['pathway']}"
        own = " ".join(model_res.reduction.label(row["channel"]).split()[1:-1])   # "ON fast" of "A6 ON fast +"
        if row["recovers"] and own != row["pathway"]:   # "A6 ≈ ON slow" of a channel labelled ON fast says so
            said += f" (labelled {own})"
        assert said + (";" if row is not report["channels"][-1] else "") in w.recovery.value + ";"
    assert any(row["recovers"] for row in report["channels"])   # the line names a recovered pathway
    assert "temporal r" in w.recovery.tooltip and "; next " in w.recovery.tooltip   # the runner-up pathway
    assert all(model_res.reduction.label(row["channel"]) in w.recovery.tooltip for row in report["channels"])

    w.add_layers().wait()
    series = {s["kind"]: s for s in viewer.window.dock_widgets[DOCK_NAME].series}
    # the truth's rate above its resting rate: rest measured independently, on a blank stimulus
    rest = retina.respond(np.zeros((60, 50, 50), np.float32))[-1, 0]
    np.testing.assert_allclose(series["truth"]["values"], truth.rates[:, 0] - rest, atol=1e-5)
    res = w.results["osr"]   # the model's response at every frame: its rates minus F(0)
    np.testing.assert_allclose(series["response"]["values"], res.response - res.attribution.baseline_rate, atol=1e-6)


def test_the_comparison_can_be_switched_off_and_a_model_of_another_field_has_none(make_napari_viewer, shipped,
                                                                                  tiny, notes):
    viewer, w = _dock(make_napari_viewer, shipped)
    w.truth.value = False
    assert w.run(["osr"])
    w.task.wait(300000)
    assert w.truths["osr"] is None and w.recovery.value == ""
    assert list(w.table.to_dict("list")) == ["readout", "model", "reduced"]
    w.add_layers().wait()
    assert "truth" not in {s["kind"] for s in viewer.window.dock_widgets[DOCK_NAME].series}

    _session.session(viewer).set_model(tiny, "a 20-pixel model")   # Retina sees 50 px: nothing to compare
    assert not w.truth.enabled and not w.truth.value
    assert notes == []
