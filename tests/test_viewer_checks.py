"""The scripted viewer's arguments (``nr.show``, ``nr.viewer.*``): one sentence each, before anything is changed.

A viewer that is None or closed, a time or a scale that is not a number: each
is refused with one sentence naming the argument, and the viewer keeps the
layers it had.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("call", ["show", "clear", "screenshot", "traces", "set_time", "current_time", "use_model",
                                  "fit"])
def test_a_closed_viewer_is_one_sentence_for_every_function(make_napari_viewer, attr, tmp_path, call):
    viewer = make_napari_viewer(show=False)
    nr.show(attr, viewer, name="a")
    viewer.close()
    with pytest.raises(ValueError, match=r"^viewer must be an open napari.Viewer, got one that was closed "
                                         r"\(viewer.close\(\)\)$"):
        _calls(viewer, attr, tmp_path)[call]()


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
    ({"scale": "2"}, TypeError, r"^scale must be a positive finite number, got '2'$"),
    ({"scale": float("nan")}, ValueError, r"^scale must be a positive finite number, got nan$"),
    ({"path": 3}, TypeError, r"^path must be a .png file path \(str or Path\), got int$"),
    ({"path": "no/such/folder/a.png"}, FileNotFoundError, r"^screenshot\(\) writes into an existing folder; "),
])
def test_a_bad_screenshot_argument_is_one_sentence(viewer, tmp_path, kwargs, error, message):
    args = {"path": tmp_path / "a.png", **kwargs}
    with pytest.raises(error, match=message):
        nrv.screenshot(viewer, **args)
