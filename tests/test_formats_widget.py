"""The Model widget opens the lab's files, and its summary says what was loaded in its first two lines."""

from __future__ import annotations

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
