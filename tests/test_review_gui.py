"""Defects found by the review of the napari layer: each test failed before its fix.

Headless (Xvfb via pytest-xvfb); notifications are captured by the ``notes``
fixture (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _layers, _plot, _session, _widgets  # noqa: E402
from napari_retina._napari._layers import stimulus_layer_kwargs  # noqa: E402

META = _layers.META


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval()


@pytest.fixture(scope="module")
def analysed(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(tiny, stim, steps=2, invariance="none")
    return attr, nr.reduce(attr)


@pytest.fixture
def viewer(make_napari_viewer, tiny):
    v = make_napari_viewer()
    _session.session(v).set_model(tiny, "tiny test model")
    return v


def _dock(viewer, cls):
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget, name=cls.__name__)
    return widget


def _stimulus(viewer, frames=30, size=20, name="noise", seed=1):
    stim = nr.stimuli.white_noise(frames=frames, size=size, seed=seed)
    return stim, viewer.add_image(stim, **stimulus_layer_kwargs(stim, name))


def _close_dock(viewer, name: str) -> None:
    """Press the dock's close button ('x' in its title bar): napari removes the dock, the widget is unparented."""
    viewer.window.dock_widgets[name].parent().destroyOnClose()


# ------------------------------------------------------------ trace plot ---

def test_closing_the_traces_dock_then_showing_a_new_result_brings_the_traces_back(viewer, analysed, qtbot):
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="first")
    _close_dock(viewer, _plot.DOCK_NAME)
    qtbot.wait(10)
    assert _plot.DOCK_NAME not in viewer.window.dock_widgets
    nr.show(attr, viewer, name="second")   # no reduction: a row per channel
    assert _plot.DOCK_NAME in viewer.window.dock_widgets    # docked again, not plotted out of sight
    plot = viewer.window.dock_widgets[_plot.DOCK_NAME]
    assert plot is nr.viewer.traces(viewer) and plot.isVisibleTo(viewer.window._qt_window)
    assert len(plot.series) == 1 + attr.channels.shape[1]
    assert "second" in plot.title.text()
    viewer.dims.set_current_step(0, 7)
    np.testing.assert_allclose(plot.rows[0].cursor.pos, 7 * nr.FRAME_MS)
