"""The Model widget opens the lab's files or takes a wrapped module (nr.wrap); its summary's first two lines
say what it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina._napari import _session, _tasks, _widgets
from test_formats import keras_weights, save_keras, save_tdr, tdr_state


def _load(viewer, path, monkeypatch):
    notes: list = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_tasks, f"show_{level}", lambda msg, level=level: notes.append((level, msg)))
    w = _widgets.ModelWidget(viewer)
    viewer.window.add_dock_widget(w, name="model")
    w.source.value = "checkpoint file"
    w.path.value = path
    model = w.load()
    return w, model, notes


def test_the_model_widget_opens_a_stacked_lab_checkpoint_and_says_what_it_is(make_napari_viewer, tmp_path,
                                                                            monkeypatch):
    viewer = make_napari_viewer()
    state, _ = tdr_state("LinearStackedBNCNN", ksizes=(7, 5))
    path = save_tdr(tmp_path / "lab.pt", "LinearStackedBNCNN", state)
    w, model, notes = _load(viewer, path, monkeypatch)
    assert notes == [] and _session.session(viewer).model is model
    first, second = w.summary.value.splitlines()[:2]
    assert first.startswith("torch-deep-retina LinearStackedBNCNN (3+2 stacked convolutions collapsed), as a BN-CNN: ")
    assert first.endswith("lab.pt")
    assert second.startswith("3 cells (cell2, cell5, cell9); history 6 frames (60 ms), 12×12 px")


def test_the_model_widget_opens_keras_weights(make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    path = save_keras(tmp_path / "bn_cnn.h5", keras_weights())
    w, model, notes = _load(viewer, path, monkeypatch)
    assert notes == [] and isinstance(model, nr.RetinaCNN)
    first, second = w.summary.value.splitlines()[:2]
    assert first.startswith("deep-retina Keras bn_cnn, as a BN-CNN: ")
    assert second.startswith("3 cells (cell0, cell1, cell2); history 6 frames (60 ms), 12×12 px")


def test_the_model_widget_says_a_native_checkpoint_is_one(make_napari_viewer, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    torch.manual_seed(0)
    path = nr.save_model(nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)),
                         tmp_path / "m.pt")
    w, _, notes = _load(viewer, path, monkeypatch)
    assert notes == []
    assert w.summary.value.splitlines()[0].startswith("napari-retina checkpoint, BN-CNN: ")


# ---------------------------------------------------------------- a wrapped module (nr.wrap) in the widgets


def test_a_wrapped_module_handed_to_the_session_is_summarised_and_analysed(make_napari_viewer, monkeypatch):
    from napari_retina.viewer import use_model
    from napari_retina._napari._layers import stimulus_layer_kwargs
    from test_wrap import HISTORY, SIZE, Net, stim

    viewer = make_napari_viewer()
    notes: list = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(_tasks, f"show_{level}", lambda msg, level=level: notes.append((level, msg)))
    torch.manual_seed(0)
    wrapped = nr.wrap(Net().eval(), input="NCTHW", history=HISTORY, size=SIZE, first_layer="core.conv",
                      cell_names=["a", "b", "c"])
    model_widget = _widgets.ModelWidget(viewer)
    viewer.window.add_dock_widget(model_widget, name="model")
    use_model(viewer, wrapped)
    assert _session.session(viewer).model is wrapped
    first, second = model_widget.summary.value.splitlines()[:2]
    assert first == "wrapped Net (NCTHW, first layer 'core.conv', Conv3d): set by a script"
    assert second.startswith("3 cells (a, b, c); history 10 frames (100 ms), 12×12 px")
    assert "first layer 'core.conv': units (4, 6, 8, 8)" in model_widget.details.value

    s = stim(frames=24, seed=4)
    layer = viewer.add_image(s, **stimulus_layer_kwargs(s, "noise"))
    analyze = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(analyze, name="analyze")
    analyze.layer.value, analyze.steps.value, analyze.cell.value = layer, 0, 2   # 0: refine until tol
    assert analyze.run()
    analyze.task.wait()
    assert notes == []
    ref = nr.attribute(wrapped, s, cell=2)                 # the same default: refined until tol
    assert analyze.analysis.attribution.tol == ref.tol == nr.attribution.DEFAULT_TOL
    np.testing.assert_array_equal(analyze.analysis.attribution.channels, ref.channels)
    np.testing.assert_array_equal(analyze.analysis.attribution.steps_per_frame, ref.steps_per_frame)
    analyze.steps.value = 8
    assert analyze.run()
    analyze.task.wait()
    assert notes == []
    ref = nr.attribute(wrapped, s, cell=2, steps=8)
    np.testing.assert_array_equal(analyze.analysis.attribution.channels, ref.channels)
    red = analyze.analysis.reduction
    assert red.kept == nr.reduce(ref).kept
    assert [lay.name for lay in viewer.layers][1:] == [f"noise: {red.label(c)}" for c in range(4)]

    runs = _widgets.ExperimentsWidget(viewer)
    viewer.window.add_dock_widget(runs, name="experiments")
    runs.steps.value, runs.cell.value = 2, 1
    assert runs.run(["latency"])
    runs.task.wait(120000)
    assert notes == []
    ref = nr.experiments.run("latency", wrapped, cell=1, steps=2)
    np.testing.assert_array_equal(runs.results["latency"].rates, ref.rates)
    assert runs.results["latency"].readout["kept"] == ref.readout["kept"]


def test_the_session_refuses_what_is_not_a_model_with_one_sentence():
    with pytest.raises(TypeError, match=r"model must be a RetinaCNN \(nr.load_model\) or a wrapped module "
                                        r"\(nr.wrap\), got str"):
        _session.Session().model = "m.pt"
