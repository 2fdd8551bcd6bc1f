"""The Experiments dock lists results of the current model only: a model change clears them."""

from __future__ import annotations

import dataclasses
import sys
import threading

import pytest
import torch

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _session, _widgets  # noqa: E402
from napari_retina.experiments import osr  # noqa: E402


@pytest.fixture
def viewer(make_napari_viewer, tiny):
    v = make_napari_viewer()
    _session.session(v).set_model(tiny, "tiny test model")
    return v


def _other_model():
    torch.manual_seed(1)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()


def _dock(viewer):
    w = _widgets.ExperimentsWidget(viewer)
    viewer.window.add_dock_widget(w, name="ExperimentsWidget")
    w.steps.value = 2
    return w


def test_a_model_change_clears_the_results_of_the_previous_model(viewer, tiny, notes):
    w = _dock(viewer)
    assert w.run(["osr", "anticipation"])
    w.task.wait(120000)
    assert list(w.results) == ["osr", "anticipation"] and w.results_model is tiny
    _session.session(viewer).set_model(tiny, "the same model again")  # not a change: results stay
    assert list(w.results) == ["osr", "anticipation"]
    other = _other_model()
    _session.session(viewer).set_model(other, "another model")
    assert w.results == {} and w.results_model is None
    assert list(w.result_choice.choices) == [] and w.overview.value == ""
    assert w.table.to_dict("list") == {"readout": [], "model": []}
    assert "model changed" in w.task.status.value and "cleared" in w.task.status.value
    assert w.run(["osr"])
    w.task.wait(120000)
    assert list(w.results) == ["osr"] and w.results_model is other  # no anticipation of the first model
    assert "anticipation" not in w.overview.value
    assert notes == []


def test_a_run_that_ends_after_the_model_changed_is_dropped(viewer, tiny, notes, monkeypatch):
    w = _dock(viewer)
    go, real = threading.Event(), nr.experiments.run

    def held(*args, **kwargs):
        go.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(sys.modules["napari_retina.experiments.battery"], "run", held)   # the dock runs battery()
    assert w.run(["osr"])
    _session.session(viewer).set_model(_other_model(), "another model")
    go.set()
    w.task.wait(120000)
    assert w.results == {} and list(w.result_choice.choices) == []
    assert "dropped" in w.task.status.value
    assert notes and notes[-1][0] == "warning" and "model changed" in notes[-1][1]


def test_run_all_keeps_the_experiments_that_finished_when_one_fails(viewer, tiny, notes, monkeypatch):
    """One failing experiment (a reversal that did not fit the field) threw away every finished one."""
    real = nr.experiments.run

    def one_fails(name, *args, **kwargs):
        if name == "anticipation":
            raise ValueError("anticipation could not run here")
        return real(name, *args, **kwargs)

    w = _dock(viewer)   # before the patch: the dock reads run's signature for its parameter boxes
    monkeypatch.setattr(sys.modules["napari_retina.experiments.battery"], "run", one_fails)
    assert w.run(["osr", "anticipation", "latency"])
    w.task.wait(120000)
    assert list(w.results) == ["osr", "latency"]
    assert "2 experiment(s) done, 1 failed (anticipation)" in w.task.status.value
    assert notes[-1][0] == "warning" and "anticipation: anticipation could not run here" in notes[-1][1]
    notes.clear()
    assert w.run(["anticipation"])           # one experiment alone: its failure is the run's, as before
    w.task.wait(120000)
    assert list(w.results) == ["osr", "latency"]
    assert notes and notes[-1][0] == "error" and "anticipation could not run here" in notes[-1][1]


def test_cancel_during_run_all_keeps_the_experiments_that_finished(viewer, tiny, notes, monkeypatch):
    """A GUI audit: Cancel at 30% of Run all, osr finished, said "nothing was added" and kept no result."""
    real = nr.experiments.run
    w = _dock(viewer)

    def cancel_at_latency(name, *args, **kwargs):
        if name == "latency":
            w.task.token.cancel()   # what Cancel sets (from this worker thread: no widget touched)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(sys.modules["napari_retina.experiments.battery"], "run", cancel_at_latency)
    assert w.run(["osr", "anticipation", "latency", "doubling"])
    w.task.wait(120000)
    assert list(w.results) == ["osr", "anticipation"]
    assert w.task.status.value == "2 experiment(s) done; cancelled before latency, doubling"
    assert notes[-1] == ("info", "The run was cancelled: the 2 experiment(s) it finished are shown, latency, "
                                 "doubling did not run.")
    notes.clear()
    monkeypatch.setattr(sys.modules["napari_retina.experiments.battery"], "run", cancel_at_latency)
    assert w.run(["latency"])                # cancelled before any finished: nothing to show, as before
    w.task.wait(120000)
    assert list(w.results) == ["osr", "anticipation"] and "cancelled" in w.task.status.value
    assert notes[-1][0] == "info" and "nothing was added" in notes[-1][1]


def test_a_result_scrolls_inside_the_dock_instead_of_raising_its_minimum_height(viewer, notes, qtbot):
    """The overview, table, recovery and terms grew the dock's minimum height with each result's text, which
    made napari's window taller than a 1000-pixel screen (docs/images/tour-4-experiment.png: 1067 px)."""
    w = _dock(viewer)
    dock = w.native.parentWidget()
    before = dock.minimumSizeHint().height()
    assert w.run(["osr"])
    w.task.wait(120000)
    w.recovery.visible = True
    w.recovery.value = "kept channels recover truth pathways: " + "A6 ≈ ON slow (temporal r 1.00); " * 40
    qtbot.wait(20)
    w.native.layout().activate()
    grown = w.results_area.widget().minimumSizeHint().height()
    assert w.results and grown > 300                                   # what the dock would have to hold
    assert dock.minimumSizeHint().height() <= before + 5               # it scrolls instead
    assert w.results_area.isAncestorOf(w.table.native) and w.results_area.isAncestorOf(w.recovery.native)
    assert notes == []


def test_result_text_wraps_across_the_dock_not_in_a_narrow_column(viewer, qtbot):
    """magicgui fixes a label's size at its hint: the overview sat, ~140 px of short lines, in the middle of a
    450 px row (docs/images/tour-4-experiment.png); the status line likewise."""
    w = _dock(viewer)
    viewer.window._qt_window.resize(1200, 900)
    viewer.window.show()           # laid out as on a screen
    qtbot.waitExposed(viewer.window._qt_window)
    assert w.run(["osr"])
    w.task.wait(120000)
    qtbot.wait(50)
    w.native.layout().activate()
    assert "present" in w.overview.value and w.task.status.value          # the run's own overview and status
    row = w.results_area.viewport().width()
    assert w.overview.native.width() >= 0.8 * row
    assert w.overview.native.height() >= w.overview.native.heightForWidth(w.overview.native.width())
    assert w.task.status.native.width() >= w.task.progress.native.width() - 2   # its row's whole value column


def test_a_result_added_again_stays_where_it_was(viewer):
    """Adding a result again replaced its layers and moved them below the others ('reversal' from y 0 to below
    'doubling', leaving a gap where it was; every re-add walked each result further down)."""
    w = _dock(viewer)
    w.steps.value = 2
    assert w.run(["reversal", "doubling"])
    w.task.wait(300000)
    for name in ("reversal", "doubling"):
        w.result_choice.value = name
        w.add_layers().wait()
    where = {name: tuple(viewer.layers[name].translate) for name in ("reversal", "doubling")}
    maps = {layer.name: tuple(layer.translate) for layer in viewer.layers if layer.name.startswith("reversal: ")}
    assert where["doubling"][1] > where["reversal"][1]          # stacked below it, the first time
    w.result_choice.value = "reversal"
    count = len(viewer.layers)
    w.add_layers().wait()
    assert len(viewer.layers) == count      # replaced, not added beside
    assert {name: tuple(viewer.layers[name].translate) for name in where} == where
    assert {name: tuple(viewer.layers[name].translate) for name in maps} == maps


def test_add_layers_moves_the_slider_to_the_largest_response_among_the_attributed_frames():
    """An experiment attributes frames near its events only (anticipation: 287 of 4,726); the rate's peak fell
    between them, on a frame whose maps are NaN: the canvas showed a colour bar over no map."""
    from types import SimpleNamespace

    import numpy as np

    rates = np.zeros((100, 2))
    rates[40, 0], rates[60, 0] = 9.0, 5.0                 # the peak at frame 40, attributed frames 50-70
    result = SimpleNamespace(rates=rates, cells=[0], attribution=SimpleNamespace(frames=np.arange(50, 71)))
    layer = SimpleNamespace(translate=(1000.0, 0.0, 0.0), scale=(10.0, 55.0, 55.0))
    assert _widgets.experiments.peak_time_ms(result, layer) == 1000.0 + 60 * 10.0
    none = SimpleNamespace(rates=rates, cells=[0], attribution=SimpleNamespace(frames=np.arange(0)))
    assert _widgets.experiments.peak_time_ms(none, layer) == 1000.0 + 40 * 10.0   # nothing attributed: the rate's


def test_the_readout_table_says_each_row_s_unit(viewer, notes):
    """A visual audit: rows such as peak_before, noise, slope and r2 said no unit (only keys ending _ms or _px
    did)."""
    w = _dock(viewer)
    assert w.run(["osr", "reversal"])
    w.task.wait(120000)
    assert notes == []
    for name in ("osr", "reversal"):
        w.result_choice.value = name
        units = nr.experiments.readout_units(name)
        rows = w.table.to_dict("list")["readout"]
        assert rows[0] == "present"   # yes/no: no unit
        assert sorted(rows) == sorted(f"{k} ({units[k]})" if units[k] else k for k in w.results[name].readout
                                      if k != "reduced")
        table = w.table.native
        assert [table.item(row, 0).toolTip() for row in range(len(rows))] == rows
    assert {"peak_before (spikes/bin)", "noise (spikes/bin)", "crossing_frames (frames)"} <= set(rows)   # reversal
    w.result_choice.value = "osr"
    assert {"slope (ms/ms)", "r2 (dimensionless)", "onset_ms (ms)"} <= set(w.table.to_dict("list")["readout"])


def _osr_shown_with(w, notes, change) -> tuple:
    """Run the OSR in dock ``w``, show its result with ``change(readout)``'s keys replaced; returns the result
    (unchanged), the table and its rows' keys."""
    assert w.run(["osr"])
    w.task.wait(120000)
    assert notes == []
    res = w.results["osr"]
    w._show({"osr": dataclasses.replace(res, readout={**res.readout, **change(res.readout)})})
    return res, w.table.native, [row.split(" ")[0] for row in w.table.to_dict("list")["readout"]]


def test_a_nan_cell_s_tooltip_says_why_it_is_nan(viewer, notes):
    """Whole rows of NaN (osr's onset_ms "[nan, nan, …") were shown without the reason docs/EXPERIMENTS.md gives."""
    w = _dock(viewer)
    nan = float("nan")
    res, table, keys = _osr_shown_with(w, notes, lambda ro: {"onset_ms": [nan] * len(ro["periods_ms"]),
                                                              "slope": nan})
    n = len(res.readout["periods_ms"])

    def tip(key):
        return table.item(keys.index(key), 1).toolTip()   # the model's column

    assert n > 6 and w.table.to_dict("list")["model"][keys.index("onset_ms")].endswith(f"… ({n} values)]")
    assert tip("onset_ms") == "[" + ", ".join(["nan"] * n) + "]\nNaN: " + osr.NAN_REASONS["onset_ms"]
    assert "the train's response never falls to 20% of the peak" in tip("onset_ms")   # docs/EXPERIMENTS.md's reason
    assert tip("slope") == "nan\nNaN: not defined for this run"   # the docs give no reason: none invented
    assert "NaN" not in tip("periods_ms")


def test_a_met_criterion_reads_none_in_the_unmet_row(viewer, notes):
    """The unmet row read "[]" where every clause was met (the screenshot's reversal: three columns of "[]")."""
    w = _dock(viewer)
    met = {"present": True, "unmet": []}
    _, table, keys = _osr_shown_with(w, notes, lambda ro: {**met, "reduced": {**ro["reduced"], **met}})
    row = keys.index("unmet")
    assert w.table.to_dict("list")["model"][row] == w.table.to_dict("list")["reduced"][row] == "none"
    assert table.item(row, 1).toolTip() == "none"
    assert not w.unmet.visible   # and no "not present" line above the table


def test_add_layers_cancelled_takes_its_stimulus_layer_back_and_a_second_click_waits(viewer, notes):
    """'Add layers' adds the stimulus at once and the maps and traces over the next event-loop passes (in one call
    the window froze 3-6 s under software OpenGL). A click while they go in adds nothing; cancelled, the stimulus
    layer it added goes too, and the user is told."""
    w = _dock(viewer)
    assert w.run(["osr"])
    w.task.wait(120000)
    adding = w.add_layers()
    assert "osr" in viewer.layers and not adding.done and w.task.cancel_button.enabled
    assert w.add_layers() is None and notes[-1][0] == "info"
    w.task.cancel()                                # the dock's Cancel button
    assert adding.done and not [layer for layer in viewer.layers if layer.name.startswith("osr")]
    assert notes[-1] == ("info", "Adding the layers of 'osr' was cancelled; none were added.")
    assert not w.task.running and not w.task.cancel_button.enabled
    again = w.add_layers()                        # the next click adds them
    again.wait()
    assert again.layers[0].name == "osr" and "osr" in viewer.layers   # full-field: the traces, no maps
