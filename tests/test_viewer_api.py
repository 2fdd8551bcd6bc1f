"""Issue 18, the scripted viewer: ``napari_retina.viewer`` (``nr.show``) driven through napari's viewer fixture.

Each test shows a result the library returns and checks what a user sees:
layer names, scale (10 ms, 55 µm, 55 µm), translate (maps centred on the
stimulus pixels their kernels see), units, colour limits, that the layers lie
inside the canvas, and that a loop of analyses replaces its layers.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import napari_retina as nr

pytest.importorskip("napari")

import napari  # noqa: E402

from napari_retina import viewer as nrv  # noqa: E402
from napari_retina._napari._layers import META, bar_limit  # noqa: E402
from napari_retina.metrics import map_limit  # noqa: E402
from test_napari_results import _analyze, _canvas_box  # noqa: E402  (issue 14's helpers; plugin: conftest)

SCALE = (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM)
UNITS = ["millisecond", "micrometer", "micrometer"]
WINDOW = (1200, 900)


@pytest.fixture(scope="module")
def analysed(tiny):
    """An attribution with full maps and its reduction (a 40-frame white noise, 3 steps)."""
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=1)
    attr = nr.attribute(tiny, stim, cell=0, steps=3, invariance="none")
    return attr, nr.reduce(attr)


@pytest.fixture
def viewer(make_napari_viewer, qtbot):
    v = make_napari_viewer(show=True)
    v.window.resize(*WINDOW)
    qtbot.wait(50)
    return v


def _units(layer) -> list[str]:
    return [str(u) for u in layer.units]


def _in_view(viewer, layers) -> bool:
    size = np.asarray(viewer.canvas.size, float)
    boxes = [_canvas_box(viewer, layer) for layer in layers]
    return all((b >= -0.5).all() and (b <= size + 0.5).all() for b in boxes)


def _maps(layers) -> list:
    return [lay for lay in layers if lay.metadata.get(META, {}).get("role") == "map"]


# ------------------------------------------------------------------- show ---

def test_an_attribution_is_shown_with_names_scales_translates_units_and_limits(viewer, analysed, qtbot):
    attr, red = analysed
    layers = nr.show(attr, viewer, reduction=red, name="cell 0")
    qtbot.wait(50)
    stim, maps = layers[0], layers[1:]
    assert [lay.name for lay in layers] == ["cell 0"] + [f"cell 0: {red.label(c)}" for c in range(8)]
    assert list(viewer.layers) == layers
    assert tuple(stim.scale) == SCALE and tuple(stim.translate) == (0, 0, 0) and _units(stim) == UNITS
    lim = bar_limit(map_limit(attr.maps))   # rounded up so that the colour bar's ticks are labelled
    off = attr.offset * nr.PIXEL_UM
    for c, layer in enumerate(maps):
        assert tuple(layer.scale) == SCALE and tuple(layer.translate) == (0, off, off) and _units(layer) == UNITS
        assert layer.contrast_limits == pytest.approx([-lim, lim])
        assert layer.visible == (c in red.kept)
        np.testing.assert_array_equal(layer.data, attr.maps[:, c])
    assert _in_view(viewer, layers)
    plot = nrv.traces(viewer)
    assert [s["label"] for s in plot.series][:2] == ["model response", "reduced circuit (EV "
                                                     f"{red.explained_variance:.3f})"]


def test_a_loop_of_analyses_under_one_name_replaces_its_layers(viewer, tiny, qtbot):
    shown = []
    for cell in (0, 1, 0):
        attr = nr.attribute(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=cell), cell=cell, steps=2,
                            invariance="none")
        shown.append(nr.show(attr, viewer, name="loop"))
    assert len(viewer.layers) == 9  # one stimulus and 8 maps, not 27 layers
    assert [lay.name for lay in viewer.layers] == ["loop"] + [f"loop: A{c}" for c in range(8)]
    assert viewer.layers["loop"].metadata[META]["traces"]["series"][0]["values"].shape == (30,)
    np.testing.assert_array_equal(viewer.layers["loop: A2"].data, attr.maps[:, 2])
    assert all(a is b for a, b in zip(shown[0], shown[2]))  # the same layers, updated in place


def test_a_stimulus_shown_over_an_analysis_of_that_name_replaces_its_maps_and_traces(viewer, analysed, qtbot):
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="x")
    nr.show(attr, viewer, reduction=red, name="other", beside=True)
    nrv.traces(viewer, "x")
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=5)
    (layer,) = nr.show(stim, viewer, name="x")
    # no maps of the old analysis; its title stays, beside "other"
    assert [lay.name for lay in viewer.layers if _belongs_to(lay, "x")] == ["x", "x: title"]
    assert layer.data.shape == (30, 20, 20) and len(viewer.layers) == 12   # "other"'s layers (and title) untouched
    plot = nrv.traces(viewer)
    assert plot.series == [] and plot.source == ""   # the dock no longer plots x's old traces
    with pytest.raises(ValueError, match=r"^layer 'x' carries no traces"):
        nrv.traces(viewer, "x")
    nrv.traces(viewer, "other")
    nr.show(stim, viewer, name="x")   # traces of another result stay
    assert nrv.traces(viewer).source == "other" and len(nrv.traces(viewer).series) > 0


def _bar_shown(layer) -> bool:
    """Whether ``layer`` shows napari's colour bar (a Points layer, a result's title, has none)."""
    return getattr(layer, "colorbar", None) is not None and layer.colorbar.visible


def _belongs_to(layer, name: str) -> bool:
    return layer.name == name or layer.name.startswith(f"{name}: ")


def test_a_layer_of_another_kind_under_the_name_is_replaced_not_updated(viewer, analysed):
    viewer.add_labels(np.zeros((40, 20, 20), np.int32), name="stimulus")
    layers = nr.show(analysed[0], viewer)
    assert isinstance(viewer.layers["stimulus"], napari.layers.Image) and list(viewer.layers) == layers


def test_replace_false_adds_a_second_copy_with_a_fresh_name(viewer, analysed):
    attr, _ = analysed
    nr.show(attr, viewer, name="r")
    second = nr.show(attr, viewer, name="r", replace=False)
    assert second[0].name == "r [1]" and second[1].name == "r [1]: A0"
    assert len(viewer.layers) == 18


def test_clear_removes_only_the_layers_of_that_prefix(viewer, analysed):
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="cell 0")
    nr.show(attr, viewer, reduction=red, name="cell 1", beside=True)
    viewer.add_image(np.zeros((3, 4, 4), np.float32), name="mine")
    batches = []
    viewer.layers.events.begin_batch.connect(lambda event: batches.append(event))
    assert nrv.clear(viewer, "cell 0") == 10   # its stimulus, 8 maps and its title (shown side by side)
    assert len(batches) == 1   # one batch: napari garbage-collects once, not after each of the 10 removals
    assert [lay.name for lay in viewer.layers] == ["cell 1", "cell 1: title"] + \
        [f"cell 1: {red.label(c)}" for c in range(8)] + ["mine"]
    assert nrv.clear(viewer, "nothing") == 0
    viewer.add_image(np.zeros((3, 4, 4), np.float32), name="cell 10")
    assert nrv.clear(viewer, "cell 1", exact=True) == 10  # "cell 1", "cell 1: ...", not "cell 10"
    assert [lay.name for lay in viewer.layers] == ["mine", "cell 10"]
    with pytest.raises(ValueError, match=r"^clear\(\) expects a non-empty layer-name prefix \(str\), got ''$"):
        nrv.clear(viewer, "")


def test_two_models_side_by_side_share_the_time_slider_and_both_are_in_view(viewer, tiny, analysed, qtbot):
    attr_a, _ = analysed
    torch.manual_seed(5)
    other = nr.RetinaCNN(tiny.config).eval()
    attr_b = nr.attribute(other, attr_a.stimulus, cell=0, steps=3, invariance="none")
    a = nr.show(attr_a, viewer, name="model A")
    b = nr.show(attr_b, viewer, name="model B", beside=True)
    qtbot.wait(50)
    ext_a = np.array([np.asarray(lay.extent.world)[:, -1] for lay in a])
    ext_b = np.array([np.asarray(lay.extent.world)[:, -1] for lay in b])
    assert ext_b[:, 0].min() > ext_a[:, 1].max()  # B lies right of A, maps included
    width = nr.PIXEL_UM * 19  # extent.world spans pixel centres: first to last
    assert tuple(b[0].translate) == pytest.approx((0, 0, width * (1 + nrv.BESIDE_GAP)))
    off = attr_b.offset * nr.PIXEL_UM
    assert tuple(b[1].translate) == pytest.approx((0, off, width * (1 + nrv.BESIDE_GAP) + off))
    assert _in_view(viewer, a + b)
    assert nrv.set_time(viewer, 200) == 200.0 and nrv.current_time(viewer) == 200.0
    assert nrv.traces(viewer).cursor_time_ms == 200.0
    # showing B again (a loop) keeps it beside A
    nr.show(attr_b, viewer, name="model B", beside=True)
    assert tuple(viewer.layers["model B"].translate) == pytest.approx((0, 0, width * (1 + nrv.BESIDE_GAP)))


def test_results_side_by_side_are_titled_with_their_names(viewer, analysed, qtbot):
    """Results side by side had nothing on the canvas to tell them apart (the layer list only): each one shown
    beside others, and each already shown, gets its name centred above it; a result alone gets none."""
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="model A")
    assert not [lay for lay in viewer.layers if lay.name.endswith(": title")]
    nr.show(attr, viewer, name="model B", beside=True)
    qtbot.wait(20)
    for name in ("model A", "model B"):
        title, stim = viewer.layers[f"{name}: title"], viewer.layers[name]
        assert list(title.text.values) == [name] and title.text.visible
        y, x = np.asarray(title.data_to_world(title.data[0]), float)[-2:]
        (top, left), (bottom, right) = np.asarray(stim.extent.world, float)[:, -2:]
        assert left < x < right and x == pytest.approx((left + right) / 2)
        assert y < top - stim.scale[-2] / 2     # above the top edge of its first row
    assert viewer.layers.selection.active is viewer.layers["model B"]
    nr.show(attr, viewer, name="model B", beside=True)   # again: still one title
    assert [lay.name for lay in viewer.layers].count("model B: title") == 1
    viewer.layers["model A"].name = "model A2"   # a helper's audit: the renamed result's title still said A
    assert list(viewer.layers["model A2: title"].text.values) == ["model A2"]
    nrv.clear(viewer, "model B", exact=True)
    assert "model B: title" not in viewer.layers and "model A2: title" in viewer.layers


def test_one_colour_bar_the_plotted_result_s(viewer, tiny, analysed, qtbot):
    """Two results' bars side by side had no title to tell them apart: the viewer shows the bar of the result
    whose traces are plotted (the plot's legend line says whose), and the other's comes back with its traces."""
    attr_a, red_a = analysed
    torch.manual_seed(5)
    other = nr.RetinaCNN(tiny.config).eval()
    attr_b = nr.attribute(other, attr_a.stimulus, cell=0, steps=3, invariance="none")
    a = _maps(nr.show(attr_a, viewer, reduction=red_a, name="model A"))
    b = _maps(nr.show(attr_b, viewer, name="model B", beside=True))
    qtbot.wait(20)

    def bars():
        return [lay.name for lay in viewer.layers if _bar_shown(lay)]

    assert bars() == [b[0].name] and nrv.traces(viewer).source == "model B"
    plot = nrv.traces(viewer)
    b_title = plot.title.text()
    a_bar = a[red_a.kept[0]].name   # A's bar was on its most important kept channel
    nrv.traces(viewer, "model A")
    assert bars() == [a_bar]
    # the title's second line gives the bar's unit, limits and channel: it was dropped when switching
    legend = plot.title.text().split("<br>")
    assert len(legend) == 2 and legend[1].startswith("Maps: attribution"), plot.title.text()
    assert f"in {a_bar.split(': ')[1]}'s colours" in legend[1]
    nrv.traces(viewer, "model B")
    assert bars() == [b[0].name] and plot.title.text() == b_title
    # the plotted result removed, the other's maps get their bar back (they would have no scale)
    nrv.clear(viewer, "model B")
    assert bars() == [a_bar]


def test_a_stimulus_array_is_one_layer_with_scale_units_and_symmetric_limits(viewer):
    stim = nr.stimuli.white_noise(frames=10, size=16, seed=0)
    (layer,) = nr.show(stim, viewer, name="noise")
    assert layer.name == "noise" and tuple(layer.scale) == SCALE and _units(layer) == UNITS
    lim = float(np.abs(stim).max())
    assert layer.contrast_limits == pytest.approx([-lim, lim])
    assert layer.metadata[META]["role"] == "stimulus"


@pytest.mark.parametrize("bad, error, message", [
    (object(), TypeError, r"^show\(\) expects a stimulus array \(T, H, W\), an Attribution, .* got object$"),
    (np.zeros((4, 4), np.float32), ValueError, r"^show\(\) stimulus must be a \(T, H, W\) stack, got 2 dimension"),
    (np.array([["a"]]), TypeError, r"^show\(\) stimulus must hold real numbers .* got dtype <U1$"),
])
def test_bad_input_is_one_sentence_and_opens_no_viewer(make_napari_viewer, bad, error, message, monkeypatch):
    opened = []
    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: opened.append(make_napari_viewer()) or opened[-1])
    with pytest.raises(error, match=message):
        nr.show(bad)
    assert opened == []  # checked before any window opens


def test_a_viewer_that_is_not_one_is_one_sentence(analysed):
    with pytest.raises(TypeError, match=r"^viewer must be a napari.Viewer \(or None for a new one\), got str$"):
        nr.show(analysed[0], "my viewer")


def test_a_reduction_needs_its_attribution(viewer, analysed):
    attr, red = analysed
    with pytest.raises(ValueError, match=r"^show\(reduction\) needs the attribution it reduces: "
                                         r"show\(reduction, attribution=attr\); got attribution=None$"):
        nr.show(red, viewer)
    layers = nr.show(red, viewer, attribution=attr, name="red")
    assert [lay.name for lay in layers][1] == f"red: {red.label(0)}" and layers[1].visible == (0 in red.kept)


def test_without_a_viewer_show_opens_one_and_never_runs_the_event_loop(make_napari_viewer, monkeypatch, analysed):
    made = []
    monkeypatch.setattr(napari, "Viewer", lambda *a, **k: made.append(make_napari_viewer()) or made[-1])
    monkeypatch.setattr(napari, "run", lambda *a, **k: pytest.fail("show() must not call napari.run()"))
    layers = nr.show(analysed[0])
    assert len(made) == 1 and list(made[0].layers) == layers and layers[0].name == "stimulus"


def test_an_analysis_keeps_its_lazy_maps_and_limit(viewer, tiny):
    from napari_retina.analysis import run_analysis

    res = run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=3), cell=1, steps=2,
                       invariance="none")
    layers = nr.show(res, viewer, name="run")
    assert layers[0].name == "run" and [lay.contrast_limits for lay in _maps(layers)][0] == \
        pytest.approx([-bar_limit(res.limit), bar_limit(res.limit)])
    given = nr.show(res, viewer, name="run", limit=0.0497)   # a limit given is used as it is
    assert [lay.contrast_limits for lay in _maps(given)][0] == pytest.approx([-0.0497, 0.0497])


def test_the_analyze_widget_shows_through_nr_show_so_a_script_can_browse_its_result(viewer, tiny, plugin, qtbot):
    from napari_retina._napari import _session

    _session.session(viewer).set_model(tiny, "tiny test model")
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=6)
    layer = nr.show(stim, viewer, name="mine")[0]
    w = _analyze(viewer, plugin, qtbot, steps=2)
    assert [lay.name for lay in w.added_layers][0] == f"mine: {w.analysis.reduction.label(0)}"
    nr.show(nr.stimuli.white_noise(frames=30, size=20, seed=7), viewer, name="other")
    plot = nrv.traces(viewer, "mine")  # the widget's result carries its traces, as a script's does
    np.testing.assert_array_equal(plot.series[0]["values"], w.analysis.attribution.response.astype(np.float32))
    assert layer in viewer.layers


# ------------------------------------------ a viewer of more dimensions ---

FAR = 50_000.0  # µm: a 4-D layer placed far from the stimulus, so a view fitted to every layer is not on it


def _segmentation_4d(viewer):
    """A user's 4-D labels layer (channel, T, H, W) in pixels, far to the lower right of the result."""
    return viewer.add_labels(np.zeros((2, 30, 20, 20), np.uint8), name="segmentation", translate=(0, 0, FAR, FAR))


def _framed_on(viewer, layer) -> bool:
    """The camera centred inside ``layer``'s (y, x) extent and the layer, whole, filling most of the canvas."""
    ext = np.asarray(layer.extent.world, float)[:, -2:]
    centre = np.asarray(viewer.scene.camera.center, float)[-2:]
    box = _canvas_box(viewer, layer)
    filled = np.max((box[1] - box[0]) / np.asarray(viewer.canvas.size, float))
    return bool(((ext[0] <= centre) & (centre <= ext[1])).all() and _in_view(viewer, [layer]) and filled > 0.5)


def test_a_4d_layer_in_the_viewer_does_not_fail_the_analyze_run(viewer, tiny, plugin, notes, qtbot):
    """Before: napari's reset_view(layers=the result) indexed the 3-D layers with the 4-D viewer's displayed
    axes; the IndexError came after every map and the traces were in: "The analysis failed", no analysis kept."""
    from napari_retina._napari import _session

    _session.session(viewer).set_model(tiny, "tiny test model")
    _segmentation_4d(viewer)
    stim = viewer.add_image(nr.stimuli.white_noise(frames=30, size=20, seed=6), name="mine", scale=SCALE,
                            units=("ms", "µm", "µm"))
    w = _analyze(viewer, plugin, qtbot, layer=stim, steps=2)
    assert w.analysis is not None and w.task.status.value.startswith("analysis done")
    assert not [n for n in notes if n[0] == "error"], notes
    names = [lay.name for lay in viewer.layers]
    maps = [f"mine: {w.analysis.reduction.label(c)}" for c in range(8)]
    assert all(names.count(name) == 1 for name in ["segmentation", "mine"] + maps), names
    assert nrv.traces(viewer).series[0]["label"] == "model response"
    assert _framed_on(viewer, stim)


def test_a_4d_layer_in_the_viewer_does_not_fail_nr_show(viewer, analysed, qtbot):
    attr, red = analysed
    _segmentation_4d(viewer)
    layers = nr.show(attr, viewer, reduction=red, name="scripted")
    qtbot.wait(50)  # the view is fitted again once Qt has laid out the trace plot's dock
    assert [lay.name for lay in viewer.layers] == ["segmentation"] + [lay.name for lay in layers]
    assert _framed_on(viewer, layers[0])
    assert nr.show(attr, viewer, reduction=red, name="scripted", beside=True)  # the other framing calls, too
    assert len(nr.show(attr.stimulus, viewer, name="stimulus only")) == 1


def test_a_failure_to_frame_the_view_leaves_a_complete_result_and_says_so(viewer, tiny, analysed, plugin, notes,
                                                                         monkeypatch, qtbot):
    """Framing is the last, cosmetic step: if it fails, the run still succeeds, with a warning."""
    from napari_retina._napari import _framing, _session

    def broken(viewer, layers, margin=0.05):
        raise IndexError("no view for you")

    monkeypatch.setattr(_framing, "fit_view", broken)
    with pytest.warns(RuntimeWarning, match=r"^the result was added, but the view could not be fitted to it "
                                            r"\(IndexError: no view for you\); napari's Reset view"):
        layers = nr.show(analysed[0], viewer, reduction=analysed[1], name="scripted")
    assert list(viewer.layers) == layers and len(layers) == 9
    _session.session(viewer).set_model(tiny, "tiny test model")
    with pytest.warns(RuntimeWarning, match="the view could not be fitted"):
        w = _analyze(viewer, plugin, qtbot, layer=layers[0], steps=2)
    assert w.analysis is not None and w.task.status.value.startswith("analysis done") and not notes


# ------------------------------------------------------- napari's units warning ---

UNITS_WARNING = "Inconsistent units across layers; units will not be used for rendering."


@pytest.fixture
def units_warnings():
    """A counter: napari's units warnings dispatched (to its toast, its console, every listener) since the last call."""
    from napari.utils.notifications import notification_manager

    start = [len(notification_manager.records)]

    def count() -> int:
        new = notification_manager.records[start[0]:]
        start[0] = len(notification_manager.records)
        return sum(str(n.message) == UNITS_WARNING for n in new)

    return count


def test_only_repeats_of_the_units_warning_are_held_back_and_only_within_the_run():
    from napari.utils.notifications import notification_manager, show_warning

    from napari_retina._napari._viewer import UnitsWarningOnce

    once = UnitsWarningOnce()
    start = len(notification_manager.records)
    with once:
        show_warning(UNITS_WARNING)
        with UnitsWarningOnce():  # nested (nr.show around add_analysis)
            show_warning(UNITS_WARNING)
            show_warning("something else")
    with once:  # the next step of the same staged run
        show_warning(UNITS_WARNING)
    assert "dispatch" not in vars(notification_manager)  # napari's own dispatch is back
    show_warning(UNITS_WARNING)
    messages = [str(n.message) for n in notification_manager.records[start:]]
    assert messages == [UNITS_WARNING, "something else", UNITS_WARNING]


def test_one_nr_show_warns_once_about_a_layer_without_units(viewer, analysed, units_warnings):
    """Before: napari warned at each layer added, 9 times for a stimulus and its 8 maps."""
    viewer.add_image(np.random.default_rng(0).random((50, 50)), name="no units")
    units_warnings()
    nr.show(analysed[0], viewer, reduction=analysed[1], name="scripted")
    assert units_warnings() == 1


def test_one_analyze_run_warns_once_about_a_layer_without_units(viewer, tiny, plugin, units_warnings, qtbot):
    """Before: once per map layer added, 8 times."""
    from napari_retina._napari import _session

    _session.session(viewer).set_model(tiny, "tiny test model")
    viewer.add_image(np.random.default_rng(0).random((50, 50)), name="no units")
    (stim,) = nr.show(nr.stimuli.white_noise(frames=30, size=20, seed=6), viewer, name="mine")
    units_warnings()
    w = _analyze(viewer, plugin, qtbot, layer=stim, steps=2)
    assert w.analysis is not None and units_warnings() == 1


# ------------------------------------------------------------ experiments ---

def _assert_every_frame_response(drawn, summed_rates, attribution):
    """An experiment's model response is drawn at every frame (its rates minus F(0)), not only on the attributed
    frames (its windows, thinned: straight chords and peaks off by frames), and equals the attribution's there."""
    want = np.asarray(summed_rates, np.float64) - attribution.baseline_rate
    np.testing.assert_allclose(drawn, want, rtol=1e-6, atol=1e-6)
    frames = np.asarray(attribution.frames)
    assert np.isfinite(drawn).sum() > 2 * len(frames)
    np.testing.assert_allclose(drawn[frames], np.asarray(attribution.response)[frames], atol=1e-5)


def test_an_experiment_and_a_battery_are_named_after_their_experiments(viewer, tiny, qtbot):
    bat = nr.experiments.battery(tiny, names=["osr", "reversal"], steps=2, retina=None)
    osr = bat["results"]["osr"]
    layers = nr.show(osr, viewer)
    assert layers[0].name == "osr" and layers[0].metadata["readout"] == dict(osr.readout)
    assert all(lay.name.startswith("osr: ") for lay in layers[1:])
    assert tuple(layers[0].scale) == SCALE and _units(layers[0]) == UNITS
    nrv.clear(viewer, "osr")

    layers = nr.show(bat, viewer)
    qtbot.wait(50)
    stims = [lay for lay in layers if lay.metadata.get(META, {}).get("role") == "stimulus"]
    assert [lay.name for lay in stims] == ["osr", "reversal"]
    x = [np.asarray(lay.extent.world)[:, -1] for lay in stims]
    assert x[1][0] > x[0][1]  # each experiment beside the previous one
    assert _in_view(viewer, [lay for lay in layers if lay.visible])
    plot = nrv.traces(viewer, "osr")  # browse: plot the osr traces again
    _assert_every_frame_response(plot.series[0]["values"], osr.rates[:, osr.cells].sum(1), osr.attribution)
    with pytest.raises(ValueError, match=r"^traces\(\) expects the name of a shown result, got 'nope'; "):
        nrv.traces(viewer, "nope")


def test_a_battery_goes_beside_what_the_viewer_shows_and_stays_put_when_shown_again(viewer, tiny, analysed):
    """The battery's first experiment was drawn over a result already shown (at x = 0), and each next one was put
    right of every other layer, so showing the battery again moved its experiments right each time."""
    attr, red = analysed
    nr.show(attr, viewer, reduction=red, name="x")
    bat = nr.experiments.battery(tiny, names=["osr", "reversal"], steps=2, retina=None)
    nr.show(bat, viewer)

    def lefts_rights():
        return {name: np.asarray(viewer.layers[name].extent.world)[:, -1] for name in ("x", "osr", "reversal")}

    edges = lefts_rights()
    assert edges["x"][1] < edges["osr"][0] < edges["osr"][1] < edges["reversal"][0], edges
    nr.show(bat, viewer)
    again = lefts_rights()
    for name, (left, right) in edges.items():
        assert again[name] == pytest.approx([left, right]), (name, again[name])


class _Retina20:
    """A ground truth for the 20-px test model: 0.2 spikes/bin at rest plus the rectified mean contrast."""
    size = 20

    def respond(self, stimulus):
        drive = np.maximum(np.asarray(stimulus, np.float64).mean(axis=(1, 2)), 0.0)
        return np.stack([0.2 + drive, 0.2 + 2 * drive], axis=1)


def test_a_battery_shows_its_ground_truth_under_the_model_and_a_wrong_truth_is_refused(viewer, tiny):
    bat = nr.experiments.battery(tiny, names=["osr", "reversal"], steps=2, retina=_Retina20())
    nr.show(bat, viewer)
    for name in ("osr", "reversal"):
        series = {s["kind"]: s for s in nrv.traces(viewer, name).series}
        truth = bat["truth"][name]
        np.testing.assert_allclose(series["truth"]["values"], truth.rates[:, 0] - 0.2, atol=1e-6)   # above rest
    before = list(viewer.layers)
    osr = bat["results"]["osr"]
    with pytest.raises(TypeError, match="ground truth's run"):
        nr.show(osr, viewer, name="x", truth=bat["results"]["reversal"])      # a model's result, not a truth
    with pytest.raises(ValueError, match="not on this 'osr' result's stimulus"):
        nr.show(osr, viewer, name="x", truth=bat["truth"]["reversal"])        # another experiment's truth
    with pytest.raises(ValueError, match="goes with an ExperimentResult"):
        nr.show(osr.stimulus, viewer, name="x", truth=bat["truth"]["osr"])
    assert list(viewer.layers) == before                                         # refused before any layer


def test_a_saved_analysis_reopens_with_its_maps_and_traces(viewer, tiny, tmp_path):
    from napari_retina.analysis import run_analysis

    res = run_analysis(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=4), cell=0, steps=2,
                       invariance="none")
    path = res.save(tmp_path / "saved.h5")
    layers = nr.show(path, viewer)
    assert [lay.name for lay in layers][:2] == ["saved", f"saved: {res.reduction.label(0)}"]
    assert tuple(layers[1].translate) == (0, res.attribution.offset * nr.PIXEL_UM, res.attribution.offset *
                                          nr.PIXEL_UM)
    np.testing.assert_allclose(nrv.traces(viewer).series[0]["values"], res.attribution.response, rtol=1e-6)
    nr.show(str(path), viewer)  # again: replaced, not piled up
    assert len(viewer.layers) == len(layers)
    with pytest.raises(FileNotFoundError, match=r"^show\(\) expects an existing stimulus file, saved analysis "
                                                r"or results store; '.*missing.h5' does not exist$"):
        nr.show(tmp_path / "missing.h5", viewer)


def test_batch_results_are_shown_as_the_store_reader_shows_them(viewer, tiny, tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    nr.save_model(tiny, tmp_path / "tiny.pt")
    np.save(tmp_path / "a.npy", nr.stimuli.white_noise(frames=24, size=20, seed=0))
    spec = {"model": str(tmp_path / "tiny.pt"), "stimuli": [str(tmp_path / "a.npy")], "cells": [0],
            "analyses": ["attribute"], "out": str(tmp_path / "results"), "steps": 2}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        nr.batch.run(spec, client)
    results = nr.batch.load(tmp_path / "results")
    layers = nr.show(results, viewer)
    assert [lay.name for lay in layers][:2] == ["a", "a tiny cell0 A0"]
    assert tuple(layers[1].translate) == (0, 2 * nr.PIXEL_UM, 2 * nr.PIXEL_UM) and _units(layers[0]) == UNITS
    assert nrv.traces(viewer).series[0]["label"] == "model response"
    (one,) = results.values()
    assert [lay.name for lay in nr.show(one, viewer)] == [lay.name for lay in layers]
    assert len(viewer.layers) == len(layers)


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    """A results store of every kind of task: predict, attribute and reduce of two stimuli, cell 0; osr, cell 0;
    and attribute of two recordings that share a file name (``d1/x.npy``, ``d2/x.npy``)."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    d = tmp_path_factory.mktemp("viewer-store")
    nr.save_model(tiny, d / "tiny.pt")
    for stem, frames in (("a", 24), ("b", 20), ("d1/x", 12), ("d2/x", 14)):
        (d / stem).parent.mkdir(exist_ok=True)
        np.save(d / f"{stem}.npy", nr.stimuli.white_noise(frames=frames, size=20, seed=frames))
    spec = {"model": str(d / "tiny.pt"), "stimuli": [str(d / "a.npy"), str(d / "b.npy")], "cells": [0],
            "analyses": ["predict", "attribute", "reduce"], "experiments": ["osr"], "out": str(d / "results"),
            "steps": 2}
    dup = {**spec, "stimuli": [str(d / "d1/x.npy"), str(d / "d2/x.npy")], "analyses": ["attribute"],
           "experiments": []}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert nr.batch.run(spec, client).failed == [] and nr.batch.run(dup, client).failed == []
    return nr.batch.load(d / "results")


def _task(results, kind: str, stem: str = "a"):
    (res,) = [r for r in results.values() if r.attrs["kind"] == kind and
              (kind == "experiment" or r.attrs["stimulus"].endswith(f"/{stem}.npy"))]
    return res


def test_one_experiment_task_is_shown_as_its_experiment_result_and_nothing_else(viewer, store):
    res = _task(store, "experiment")
    layers = nr.show(res, viewer)
    assert [lay.name for lay in viewer.layers] == [lay.name for lay in layers] == ["osr"]  # no stimulus' maps
    stim = layers[0]
    assert stim.metadata["experiment"] == "osr" and stim.metadata["readout"]["present"] in (True, False)
    assert stim.data.shape == res.arrays["stimulus"].shape and tuple(stim.scale) == SCALE
    plot = nrv.traces(viewer, "osr")
    attr = SimpleNamespace(baseline_rate=res.scalars()["attribution/baseline_rate"],
                           frames=np.flatnonzero(np.isfinite(res.arrays["attribution/response"].compute())),
                           response=res.arrays["attribution/response"].compute())
    cells = [int(c) for c in res.arrays["attribution/cells"].compute()]
    _assert_every_frame_response(plot.series[0]["values"], res.arrays["rates"].compute()[:, cells].sum(1), attr)
    assert plot.series[1]["kind"] == "reduced"
    assert [s["channel"] for s in plot.series[2:]] == [int(c) for c in res.arrays["reduction/kept"].compute()]


@pytest.mark.parametrize("kind", ["reduce", "predict"])
def test_one_reduce_or_predict_task_is_its_stimulus_with_its_traces(viewer, store, kind):
    res = _task(store, kind, "b")
    layers = nr.show(res, viewer)
    assert [lay.name for lay in viewer.layers] == [lay.name for lay in layers] == ["b"]
    assert layers[0].data.shape == (20, 20, 20) and layers[0].metadata["batch_key"] == res.key
    series = nrv.traces(viewer, "b").series
    if kind == "reduce":
        np.testing.assert_array_equal(series[0]["values"], res.arrays["attribution/response"].compute())
        np.testing.assert_array_equal(series[1]["values"], res.arrays["reduction/reduced_response"].compute())
    else:
        rates = res.arrays["rates"].compute()
        assert len(series) == rates.shape[1]
        for c, s in enumerate(series):
            np.testing.assert_array_equal(s["values"], rates[:, c])


def test_one_attribute_task_shows_its_own_maps_only(viewer, store):
    res = _task(store, "attribute", "b")
    layers = nr.show(res, viewer)
    assert [lay.name for lay in layers] == ["b"] + [f"b tiny cell0 A{c}" for c in range(8)]
    assert len(viewer.layers) == len(layers) and all(lay.visible for lay in layers)
    # the maps' scale as a live result has it: one colour bar (no reduction: on the first map), named in the title
    plot = nrv.traces(viewer)
    title = plot.title.text()
    assert [lay.name for lay in layers if lay.colorbar.visible] == ["b tiny cell0 A0"]
    assert "<br>Maps: attribution" in title and "in A0's colours" in title
    # a click on a channel's name shows its map alone here too (the store's maps carry their prefix), with the
    # colour bar: shown alone, a map had no scale at all
    for channel in (3, 5):
        plot.solo(channel)
        assert plot.solo_channel == channel
        assert [lay.name for lay in layers[1:] if lay.visible] == [f"b tiny cell0 A{channel}"] and layers[0].visible
        assert [lay.name for lay in layers if lay.colorbar.visible] == [f"b tiny cell0 A{channel}"]
        assert plot.title.text() == title.replace("in A0's colours", f"in A{channel}'s colours")
    plot.solo(None)
    assert all(lay.visible for lay in layers)
    assert [lay.name for lay in layers if lay.colorbar.visible] == ["b tiny cell0 A0"] and plot.title.text() == title


def test_a_store_opened_in_napari_is_framed_from_frame_0_and_says_what_it_does_not_draw(viewer, store, qtbot,
                                                                                        monkeypatch):
    """A helper's audit: a store opened in an empty viewer was not framed (its traces ride on its first map, the
    second layer: only a first layer framed), so the Traces dock docking left the stimulus cut; it opened
    mid-movie; and its predict, reduce and experiment results were dropped without a word."""
    import napari.utils.notifications as notifications

    said = []
    monkeypatch.setattr(notifications, "show_info", said.append)
    from napari_retina.batch import MANIFEST

    path = next(p for p in next(iter(store.values())).path.parents if (p / MANIFEST).is_file())
    viewer.window.resize(1600, 1000)
    layers = viewer.open(str(path), plugin="napari-retina")
    qtbot.wait(200)
    assert viewer.dims.current_step[0] == 0
    assert _in_view(viewer, [lay for lay in layers if lay.visible])
    # its lazy stimuli's limits are symmetric about grey, as an array's (a GUI audit: napari's (0, 1) drew grey
    # and dark both black), from 8 frames spread over their one block
    stimuli = [lay for lay in layers if lay.metadata.get(META, {}).get("role") == "stimulus"]
    assert stimuli and all(hasattr(lay.data, "dask") for lay in stimuli)
    for lay in stimuli:
        frames = np.unique(np.linspace(0, len(lay.data) - 1, 8).astype(int))
        lim = float(np.abs(np.asarray(lay.data[frames])).max())
        np.testing.assert_allclose(lay.contrast_limits, (-lim, lim), rtol=1e-6)
    assert said == [f"The results store '{path.name}' also holds 2 predict, 2 reduce and 1 experiment result(s), "
                    "not drawn here (its layers are the attribution maps); nr.show(nr.batch.load(path)[key]) shows "
                    "one, with its traces"]


def test_recordings_that_share_a_file_name_are_told_apart_and_replaced_when_shown_again(viewer, store):
    root = _task(store, "experiment").path.parents[3]
    for _ in range(2):   # the second showing piled up layers (x [1], ...): 18, then 27
        nr.show(root, viewer)
        names = [lay.name for lay in viewer.layers]
        assert len(names) == 4 * 9 and len(set(names)) == len(names)   # 4 stimuli, each with 8 maps
    assert {"d1/x", "d2/x", "d1/x tiny cell0 A0", "d2/x tiny cell0 A0"} <= set(names)
    viewer.layers.clear()
    assert nr.show(_task(store, "attribute", "d2/x"), viewer)[0].name == "d2/x"   # as the store names it
    from napari_retina._napari._batch_reader import unique_names

    assert unique_names(["/r/a.npy", "/r/a.h5", "/s/b.npy", "/d1/x.npy", "/q/d1/x.npy"]) == {
        "/r/a.npy": "/r/a.npy", "/r/a.h5": "/r/a.h5", "/s/b.npy": "b", "/d1/x.npy": "/d1/x.npy",
        "/q/d1/x.npy": "q/d1/x"}   # a suffix alone, or a path that is the end of another: the whole path


# ------------------------------------------------------------- screenshot ---

def _ring_boxes(image: np.ndarray) -> list:
    """(top, bottom, left, right) of the bright pixels in the left and the right half of ``image``."""
    bright = image[..., :3].max(-1) > 100
    half = image.shape[1] // 2
    boxes = []
    for part, dx in ((bright[:, :half], 0), (bright[:, half:], half)):
        rows, cols = np.nonzero(part)
        boxes.append((rows.min(), rows.max(), cols.min() + dx, cols.max() + dx))
    return boxes


@pytest.mark.parametrize("shown", [True, False], ids=["window shown", "hidden (batch figures)"])
@pytest.mark.parametrize("size", [(1000, 600), (800, 300)], ids=["canvas of that size", "smaller than the window"])
def test_the_screenshot_has_the_asked_size_and_every_result_in_it(make_napari_viewer, shown, size, tmp_path, qtbot):
    import imageio.v3 as iio

    viewer = make_napari_viewer(show=shown)
    viewer.window.resize(900, 700)  # above the window's minimum size, so that it can be put back exactly
    ring = np.zeros((4, 30, 30), np.float32)
    ring[:, [0, -1], :] = ring[:, :, [0, -1]] = 1.0  # a bright frame around a black stimulus
    nr.show(ring, viewer, name="left")
    nr.show(ring, viewer, name="right", beside=True)
    for name in ("left", "right"):   # the rings are measured below: their titles (white text) would count as ring
        viewer.layers[f"{name}: title"].visible = False
    qtbot.wait(50)
    viewer.scene.camera.zoom *= 7  # the user zoomed into one corner
    before = (tuple(viewer.scene.camera.center), viewer.scene.camera.zoom, viewer.window.geometry())
    w, h = size
    image = iio.imread(nrv.screenshot(viewer, tmp_path / "both.png", size=size))
    assert image.shape == (h, w, 4)
    # both rings whole, square (not stretched), inside the margin, and as large as the margin allows
    for top, bottom, left, right in _ring_boxes(image):
        assert top > 0 and bottom < h - 1 and left > 0 and right < w - 1
        assert abs((bottom - top) - (right - left)) <= 2
    (t0, b0, l0, _), (_, _, _, r1) = _ring_boxes(image)
    assert max((b0 - t0) / h, (r1 - l0) / w) > 0.85
    after = (tuple(viewer.scene.camera.center), viewer.scene.camera.zoom, viewer.window.geometry())
    assert after == before  # the view and the window are left as they were
    big = iio.imread(nrv.screenshot(viewer, tmp_path / "big.png", size=(w // 2, h // 2), scale=2))
    assert big.shape == (h // 2 * 2, w // 2 * 2, 4)


def test_fit_keeps_results_beside_each_other_clear_of_the_colour_bar(viewer, analysed, qtbot):
    """A visual audit: three results side by side, fitted for a window screenshot, had the colour bar (napari draws
    it at the canvas' top right) over the last stimulus' top-right corner; fit now leaves it its room, as the
    docks' framing does."""
    from napari_retina._napari._framing import BAR_RESERVE_PX

    attr, red = analysed
    for i, name in enumerate(("a", "b", "c")):
        nr.show(attr, viewer, reduction=red, name=name, beside=i > 0)
    qtbot.wait(50)
    assert any(_bar_shown(lay) for lay in viewer.layers)
    size = np.asarray(viewer.canvas.size, float)
    nrv.fit(viewer, size)
    boxes = np.array([_canvas_box(viewer, lay) for lay in viewer.layers if lay.visible])
    right = boxes[:, 1, 1].max()
    assert right <= size[1] - BAR_RESERVE_PX + 0.5, (right, size)
    assert boxes[:, 0, 1].min() >= -0.5 and right - boxes[:, 0, 1].min() > 0.8 * (size[1] - BAR_RESERVE_PX)


def test_fit_frames_the_axes_the_viewer_shows_and_whole_pixels(viewer):
    """fit took each layer's last two axes: with the time axis rolled into view (rows = t) it centred on y, 830 µm
    off a (t, x) view 290 ms high, and with no margin it cut half an edge pixel off either side."""
    stack = np.zeros((30, 40, 80), np.float32)
    viewer.add_image(stack, scale=(10, 50, 50))   # t: 300 ms of 10 ms frames; y, x: 50 µm pixels
    size = (600, 800)
    for order, rows in [((1, 0, 2), 30 * 10), ((0, 1, 2), 40 * 50)]:
        viewer.dims.order = order
        nrv.fit(viewer, size, margin=0)
        centre, zoom = np.asarray(viewer.scene.camera.center, float)[-2:], viewer.scene.camera.zoom
        assert np.allclose(centre, [(rows - rows / stack.shape[order[1]]) / 2, 79 * 50 / 2]), (order, centre)
        assert zoom == pytest.approx(min(size[0] / rows, size[1] / (80 * 50))), order  # every pixel, whole


@pytest.mark.parametrize("shown", [True, False], ids=["window shown", "hidden (batch figures)"])
def test_a_screenshot_taller_than_the_canvas_can_grow_holds_the_whole_stimulus(make_napari_viewer, shown, tmp_path,
                                                                              qtbot):
    """A docs audit: 1200x800 of a square stimulus, with a window whose canvas could not grow that tall (the
    screen, a hidden window, a Traces dock: ~460-650 px), showed rows 4-45 of 50 (the view was fitted for 800 px,
    the image cut from the smaller canvas). The layers are fitted to the canvas the window has."""
    import imageio.v3 as iio

    viewer = make_napari_viewer(show=shown)
    ring = np.zeros((4, 50, 50), np.float32)
    ring[:, [0, -1], :] = ring[:, :, [0, -1]] = 1.0
    nr.show(ring, viewer, name="ring")
    qtbot.wait(50)
    image = iio.imread(nrv.screenshot(viewer, tmp_path / "ring.png", size=(1200, 800)))
    assert image.shape == (800, 1200, 4)
    bright = image[..., :3].max(-1) > 100
    rows, cols = np.nonzero(bright)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    assert bright[top, left:right].mean() > 0.99 and bright[bottom, left:right].mean() > 0.99   # top, bottom whole
    assert bright[top:bottom, left].mean() > 0.99 and bright[top:bottom, right].mean() > 0.99   # both sides whole
    assert abs((bottom - top) - (right - left)) <= 2 and top > 0 and bottom < 799                # square, inside


@pytest.mark.parametrize("kwargs, message", [
    ({"size": (0, 10)}, r"^size must be \(width, height\) in pixels, two positive integers, got \(0, 10\)$"),
    ({"size": "big"}, r"^size must be \(width, height\) in pixels, two positive integers, got 'big'$"),
    ({"path": "x.jpg"}, r"^screenshot\(\) writes PNG files; give a path ending in .png, got 'x.jpg'$"),
])
def test_a_bad_screenshot_request_is_one_sentence(viewer, tmp_path, kwargs, message):
    args = {"path": tmp_path / "x.png", "size": (100, 100), **kwargs}
    with pytest.raises(ValueError, match=message):
        nrv.screenshot(viewer, **args)


# -------------------------------------------------------------- packaging ---

def test_import_napari_retina_does_not_import_napari_and_nr_show_does():
    code = ("import sys, napari_retina as nr; a = 'napari' in sys.modules; star = {}; "
            "exec('from napari_retina import *', star); b = 'napari' in sys.modules; "
            "show = nr.show; import napari_retina.viewer as v; "
            "print(a, b, 'napari' in sys.modules, show is v.show, 'show' in dir(nr))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False", "True", "True", "True"], out.stderr


def test_an_attribution_without_maps_says_so_when_shown(viewer, tiny, analysed):
    """nr.attribute's default sums a full-field stimulus over space (no maps): nr.show added the stimulus and the
    traces and no map, without a word. One warning, at the user's call; an attribution with maps says nothing."""
    import warnings

    flashes = nr.stimuli.flash_train(size=20)
    attr = nr.attribute(tiny, flashes, cell=0, steps=3)
    assert attr.invariance == "space" and attr.maps is None
    with pytest.warns(UserWarning, match=r"^the attribution has no maps \(invariance 'space'.*so only the stimulus "
                                         r"and the traces are shown; nr\.attribute\(\.\.\., invariance='none'\) keeps")\
            as caught:
        layers = nr.show(attr, viewer, name="flashes")
    assert [layer.name for layer in layers] == ["flashes"]
    assert [w.filename for w in caught if "has no maps" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*has no maps.*")
        nr.show(analysed[0], viewer, name="noise", reduction=analysed[1])


def test_staged_show_takes_an_analysis_over_a_layer_or_an_experiment_alone(make_napari_viewer):
    """``staged=True`` adds an analysis over a given stimulus layer or an experiment's attributed result (the
    Experiments dock's path); a stimulus array, or an experiment placed beside others, is one sentence."""
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match=r"staged=True\) adds an analysis over an existing stimulus_layer"):
        nrv.show(np.zeros((5, 10, 10), np.float32), viewer, staged=True)
    assert len(viewer.layers) == 0
