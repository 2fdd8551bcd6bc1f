"""The scripted viewer's arguments (``nr.show``, ``nr.viewer.*``): one sentence each, before anything is changed.

A ``stimulus_layer`` that is not an image of this viewer holding the analysed
stimulus, ``maps`` of another shape, a ``limit`` that is not a positive finite
number, a viewer that is None or closed, a time or a scale that is not a
number: each is refused with one sentence naming the argument, and the viewer
keeps the layers it had. Also: the time slider snaps to frames, and a window
screenshot leaves the view as it was.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina import viewer as nrv  # noqa: E402


@pytest.fixture(scope="module")
def attr(tiny):
    """An attribution with full maps: 30 frames of 20 × 20 white noise, maps (30, 8, 16, 16)."""
    return nr.attribute(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=2), cell=0, steps=2,
                        invariance="none")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=False)


def _names(viewer) -> list:
    return [lay.name for lay in viewer.layers]


# --------------------------------------------------------- stimulus_layer ---

def _layers_of_every_kind(viewer, attr):
    return {
        "labels": (viewer.add_labels(np.zeros((30, 20, 20), np.int32), name="labels"), TypeError,
                   r"^stimulus_layer must be a napari Image layer of the viewer, got Labels$"),
        "2-D": (viewer.add_image(np.zeros((20, 20), np.float32), name="frame"), ValueError,
                r"^stimulus_layer must be a \(T, H, W\) stack of the analysed stimulus \(30, 20, 20\), "
                r"got layer 'frame' of shape \(20, 20\)$"),
        "other frames": (viewer.add_image(np.zeros((12, 20, 20), np.float32), name="short"), ValueError,
                         r"^stimulus_layer must hold the analysed stimulus, \(T, H, W\) = \(30, 20, 20\), "
                         r"got layer 'short' of shape \(12, 20, 20\)$"),
        "other size": (viewer.add_image(np.zeros((30, 24, 24), np.float32), name="big"), ValueError,
                       r"^stimulus_layer must hold the analysed stimulus, \(T, H, W\) = \(30, 20, 20\), "
                       r"got layer 'big' of shape \(30, 24, 24\)$"),
        "a name": ("big", TypeError, r"^stimulus_layer must be a napari Image layer of the viewer, got str$"),
    }


@pytest.mark.parametrize("which", ["labels", "2-D", "other frames", "other size", "a name"])
def test_a_stimulus_layer_that_does_not_hold_the_stimulus_is_refused_before_any_layer_is_added(viewer, attr, which):
    layer, error, message = _layers_of_every_kind(viewer, attr)[which]
    before = _names(viewer)
    with pytest.raises(error, match=message):
        nr.show(attr, viewer, stimulus_layer=layer)
    assert _names(viewer) == before


def test_a_stimulus_layer_of_another_viewer_is_refused_and_leaves_no_orphan_maps(make_napari_viewer, attr):
    here, there = make_napari_viewer(show=False), make_napari_viewer(show=False)
    foreign = there.add_image(attr.stimulus, name="foreign")
    with pytest.raises(ValueError, match=r"^stimulus_layer must be a layer of the viewer the result is shown in, "
                                         r"got layer 'foreign', which is not in the viewer$"):
        nr.show(attr, here, stimulus_layer=foreign)
    assert _names(here) == [] and _names(there) == ["foreign"]


def test_the_stimulus_layer_of_the_analysis_and_a_larger_stack_its_window_was_cut_from_are_accepted(viewer, tiny,
                                                                                                   attr):
    own = viewer.add_image(attr.stimulus, name="own")
    assert len(nr.show(attr, viewer, stimulus_layer=own)) == 8
    big = nr.stimuli.white_noise(frames=30, size=26, seed=3)
    cut = nr.attribute(tiny, big, cell=0, steps=2, invariance="none", crop=(4, 6))
    layer = viewer.add_image(big, name="big")
    maps = nr.show(cut, viewer, stimulus_layer=layer)
    assert len(maps) == 8 and maps[0].name == "big: A0"
    with pytest.raises(ValueError, match=r"\(or a larger stack holding its window at \(y0, x0\) = \(4, 6\)\)"):
        nr.show(cut, viewer, stimulus_layer=viewer.add_image(big[:, :20, :20], name="too small"))


def test_the_analyze_widgets_own_call_with_a_cropped_window_is_accepted(viewer, tiny):
    from napari_retina.analysis import run_analysis

    big = nr.stimuli.white_noise(frames=30, size=26, seed=3)
    layer = viewer.add_image(big, name="movie")
    res = run_analysis(tiny, big, cell=0, steps=2, invariance="none", crop="center", layer="movie")
    staged = nr.show(res, viewer, stimulus_layer=layer, staged=True)
    staged.wait()
    assert len(staged.layers) == 8 and staged.layers[0].name == "movie: " + res.reduction.label(0)


# ------------------------------------------------------------ maps, limit ---

@pytest.mark.parametrize("maps, error, message", [
    (np.zeros((5, 8, 3, 3), np.float32), ValueError,
     r"^maps must be the attribution's \(T, C, h, w\) = \(30, 8, 16, 16\), got shape \(5, 8, 3, 3\)$"),
    (np.zeros((30, 8, 12), np.float32), ValueError,
     r"^maps must be the attribution's \(T, C, h, w\) = \(30, 8, 16, 16\), got shape \(30, 8, 12\)$"),
    (np.zeros((30, 8, 16, 16), complex), TypeError, r"^maps must hold real numbers, got dtype complex128$"),
])
def test_maps_of_another_shape_are_refused_before_any_layer_is_added(viewer, attr, maps, error, message):
    with pytest.raises(error, match=message):
        nr.show(attr, viewer, maps=maps)
    assert _names(viewer) == []
    assert len(nr.show(attr, viewer, maps=attr.maps * 2)) == 9   # the right shape is fine


@pytest.mark.parametrize("limit, error", [(float("nan"), ValueError), (float("inf"), ValueError), (0.0, ValueError),
                                          (-1.0, ValueError), ("1", TypeError)])
def test_a_limit_that_is_not_a_positive_finite_number_is_refused_before_any_layer_is_added(viewer, attr, limit,
                                                                                            error):
    expected = f"a number, got str {limit!r}" if isinstance(limit, str) else f"a finite number > 0, got {limit}"
    with pytest.raises(error, match=rf"^limit must be {re.escape(expected)}$"):
        nr.show(attr, viewer, name="a", limit=limit)
    assert _names(viewer) == []
    viewer.close()   # napari's layer controls were not left holding a half-added layer



@pytest.mark.parametrize("kwargs, message", [
    ({"reduction": "x"}, r"^reduction must be the Attribution's Reduction \(nr.reduce\), got str$"),
    # it was AttributeError: 'str' object has no attribute 'kept'
    ({"name": 5}, r"^name must be a non-empty str \(the stimulus layer's name\), got int 5$"),   # it named clear()
    ({"name": ""}, r"^name must be a non-empty str .*, got str ''$"),
])
def test_a_name_or_reduction_of_the_wrong_type_is_one_sentence_before_any_layer(viewer, attr, kwargs, message):
    with pytest.raises(TypeError, match=message):
        nr.show(attr, viewer, **kwargs)
    assert _names(viewer) == []
    with pytest.raises(ValueError, match=r"^reduction= goes with an Attribution only; the result shown is of kind "
                                         r"'stimulus'$"):
        nr.show(attr.stimulus, viewer, reduction=nr.reduce(attr))
    assert _names(viewer) == []


def test_a_reduction_of_another_attribution_is_refused_before_any_layer(viewer, attr, tiny):
    """The plot showed one analysis' response beside another's reduced circuit, under one title."""
    other = nr.attribute(tiny, nr.stimuli.white_noise(frames=30, size=20, seed=3), cell=0, steps=2,
                         invariance="none")
    for call in (lambda: nr.show(attr, viewer, reduction=nr.reduce(other)),
                 lambda: nr.show(nr.reduce(other), viewer, attribution=attr)):
        with pytest.raises(ValueError, match=r"^the reduction is not of this attribution: its kept channels' "
                                             r"traces are not the attribution's"):
            call()
        assert _names(viewer) == []


def test_analysis_options_with_a_result_that_has_no_maps_are_refused(viewer, attr):
    with pytest.raises(ValueError, match=r"^maps goes with an Attribution, a Reduction or an Analysis; got maps "
                                         r"with a stimulus result$"):
        nr.show(attr.stimulus, viewer, maps=attr.maps)


# ----------------------------------------------------------------- viewer ---

def _calls(viewer, attr, tmp_path) -> dict:
    return {
        "show": lambda: nr.show(attr.stimulus, viewer, name="b"),
        "clear": lambda: nrv.clear(viewer, "a"),
        "screenshot": lambda: nrv.screenshot(viewer, tmp_path / "a.png"),
        "traces": lambda: nrv.traces(viewer),
        "set_time": lambda: nrv.set_time(viewer, 100),
        "current_time": lambda: nrv.current_time(viewer),
        "use_model": lambda: nrv.use_model(viewer, attr.model),
        "fit": lambda: nrv.fit(viewer, (100, 100)),
    }


def test_a_closed_viewer_is_one_sentence_for_every_function(make_napari_viewer, attr, tmp_path):
    """One closed viewer for every function: a viewer per function cost ~10 s each."""
    viewer = make_napari_viewer(show=False)
    nr.show(attr, viewer, name="a")
    viewer.close()
    calls = _calls(viewer, attr, tmp_path)
    assert sorted(calls) == sorted(["show", "clear", "screenshot", "traces", "set_time", "current_time",
                                    "use_model", "fit"])
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"^viewer must be an open napari.Viewer, got one that was closed "
                                             r"\(viewer.close\(\)\)$"):
            call()
        assert not (tmp_path / "a.png").exists(), name


@pytest.mark.parametrize("call", ["clear", "screenshot", "traces", "set_time", "current_time", "use_model", "fit"])
def test_no_viewer_is_one_sentence_for_every_function(attr, tmp_path, call):
    with pytest.raises(TypeError, match=r"^viewer must be a napari.Viewer, got NoneType$"):
        _calls(None, attr, tmp_path)[call]()


@pytest.mark.parametrize("time_ms, error", [("abc", TypeError), (None, TypeError), (float("nan"), ValueError)])
def test_a_time_that_is_not_a_number_names_time_ms(viewer, attr, time_ms, error):
    nr.show(attr.stimulus, viewer)
    with pytest.raises(error, match=rf"^time_ms must be a finite number of ms, got {time_ms!r}$"):
        nrv.set_time(viewer, time_ms)


def test_time_needs_a_stack_in_the_viewer(viewer):
    with pytest.raises(ValueError, match=r"^set_time\(\) needs a viewer showing a \(T, H, W\) stack, got one with "
                                         r"2 dimensions \(no time axis\)$"):
        nrv.set_time(viewer, 10)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"scale": "2"}, TypeError, r"^scale must be a number, got str '2'$"),
    ({"scale": float("nan")}, ValueError, r"^scale must be a finite number > 0, got nan$"),
    ({"path": 3}, TypeError, r"^path must be a .png file path \(str or Path\), got int$"),
    ({"path": "no/such/folder/a.png"}, FileNotFoundError, r"^screenshot\(\) writes into an existing folder; "),
    # beyond OpenGL's framebuffer limit vispy failed to draw and the process aborted (exit 134)
    ({"size": (1200, 800), "scale": 15}, ValueError, r"^a screenshot is at most 16384 pixels a side \(an OpenGL "
                                                     r"limit\), got 18000 \(size 1200x800, scale 15\)$"),
    ({"size": (17000, 800), "window": True}, ValueError, r"^a screenshot is at most 16384 pixels a side .*, got "
                                                         r"17000 \(size 17000x800\)$"),
])
def test_a_bad_screenshot_argument_is_one_sentence(viewer, tmp_path, kwargs, error, message):
    args = {"path": tmp_path / "a.png", **kwargs}
    with pytest.raises(error, match=message):
        nrv.screenshot(viewer, **args)


# ------------------------------------------------------------- time, view ---

def test_the_time_slider_snaps_to_the_nearest_frame(viewer, attr):
    nr.show(attr, viewer, name="a")
    # 30 frames: 0 to 290 ms. napari's slider snaps the point only when the frame changes: 96 after 104 did not
    for asked, frame in ((104, 10), (96, 10), (106, 11), (99.9, 10), (-50, 0), (1e9, 29)):
        assert nrv.set_time(viewer, asked) == frame * nr.FRAME_MS
        assert viewer.dims.current_step[0] == frame and nrv.current_time(viewer) == frame * nr.FRAME_MS
    assert nrv.traces(viewer).cursor_time_ms == 290.0


def test_a_window_screenshot_leaves_the_view_as_it_was(make_napari_viewer, attr, tmp_path, qtbot):
    viewer = make_napari_viewer(show=False)
    viewer.window.resize(1200, 1100)   # above the window's minimum size (trace plot included): put back exactly
    nr.show(attr, viewer, name="a")
    qtbot.wait(50)
    viewer.scene.camera.zoom, viewer.scene.camera.center = 3.0, (0, 50, 60)   # the user's own view
    before = (tuple(viewer.scene.camera.center), viewer.scene.camera.zoom, viewer.window.geometry())
    nrv.screenshot(viewer, tmp_path / "w.png", size=(1000, 1000), window=True)
    assert (tuple(viewer.scene.camera.center), viewer.scene.camera.zoom, viewer.window.geometry()) == before
