"""The Stimulus dock: generation in the background (busy bar, Cancel, one sentence for bad parameters) and
float parameters that keep their decimals (pytest-qt, Xvfb).

A slow generator is simulated by replacing ``nr.stimuli.flash`` (after the dock
built its parameters from the real one) with one that checks its movie fits,
as every generator does before it makes anything, then waits for the test.
"""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest

import napari_retina as nr
from napari_retina._validate import check_movie_fits

pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_retina._napari import _widgets  # noqa: E402
from napari_retina._napari._viewer import process_events_until  # noqa: E402


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def dock(viewer):
    widget = _widgets.StimulusWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Stimulus")
    return widget


def _params(dock) -> dict:
    return {w.name: w for w in dock.params}


@pytest.fixture
def slow_flash(dock, monkeypatch):
    """``nr.stimuli.flash`` that, once its movie is checked, records its thread and waits (at most 2 s) for
    ``state["release"]`` before making the real flash. The dock shows flash's (real) parameters."""
    dock.generator.value = "flash"
    real = nr.stimuli.flash
    state = {"release": threading.Event(), "started": threading.Event(), "threads": [], "error": None,
             "real": real}

    def slow(pre=40, duration=2, post=60, size=50, **kwargs):
        check_movie_fits(pre + duration + post, size, "a flash")   # where every generator stops being checked
        if state["error"] is not None:
            raise state["error"]
        state["threads"].append(threading.current_thread())
        state["started"].set()
        state["release"].wait(2.0)
        return real(pre=pre, duration=duration, post=post, size=size, **kwargs)

    monkeypatch.setattr(nr.stimuli, "flash", slow)
    return state


def test_generation_runs_off_the_gui_thread_and_adds_the_layer_when_done(viewer, dock, slow_flash, notes):
    params = _params(dock)
    params["size"].value, params["post"].value = 20, 10
    worker = dock.generate()
    assert worker is not None
    assert slow_flash["started"].wait(2.0)
    assert slow_flash["threads"] != [threading.main_thread()]          # the generator runs in a worker thread
    ticked = []
    QTimer.singleShot(0, lambda: ticked.append(True))                  # the event loop keeps running meanwhile
    process_events_until(lambda: bool(ticked), 2000, "a timer tick")
    assert len(viewer.layers) == 0 and dock.task.running
    assert dock.task.progress.max == 0                                 # a busy bar: flash reports no progress
    assert dock.task.cancel_button.enabled
    slow_flash["release"].set()
    dock.task.wait(5000)
    assert notes == [] and len(viewer.layers) == 1
    layer = dock.last_layer
    assert layer is viewer.layers[0] and layer.name == "flash"
    np.testing.assert_array_equal(layer.data, slow_flash["real"](size=20, post=10))
    assert layer.metadata["parameters"]["size"] == 20
    assert (dock.task.progress.max, dock.task.progress.value) == (1, 1)
    assert not dock.task.cancel_button.enabled


def test_cancel_leaves_no_layer_and_a_second_click_is_refused(viewer, dock, slow_flash, notes):
    _params(dock)["size"].value = 20
    assert dock.generate() is not None
    assert slow_flash["started"].wait(2.0)
    assert dock.generate() is None                                      # a second click while it runs
    assert notes == [("warning", "A stimulus generation is already running; wait for it to finish or cancel "
                                 "it first.")]
    dock.task.cancel_button.native.click()
    slow_flash["release"].set()
    dock.task.wait(5000)
    assert len(viewer.layers) == 0 and dock.last_layer is None
    assert notes[-1] == ("info", "The stimulus generation was cancelled; nothing was added.")
    assert (dock.task.progress.max, dock.task.progress.value) == (1, 0)   # no busy bar left behind
    assert dock.generate() is not None                                  # a new run starts after the cancelled one
    slow_flash["release"].set()
    dock.task.wait(5000)
    assert len(viewer.layers) == 1


@pytest.mark.parametrize("generator", ["white_noise", "naturalistic"])
def test_a_long_generation_shows_its_progress_and_cancel_stops_it_at_the_next_report(viewer, dock, notes,
                                                                                      monkeypatch, generator):
    """The long generators (100,000 frames of white noise: 15 s here; naturalistic: 45 s) ran to their end
    after Cancel. They now report progress (the bar fills, the status line says how far) and stop at the first
    report after Cancel: the progress callback is their only way out, so had it not stopped them they would
    have gone on reporting to the end."""
    import napari_retina.stimuli as stimuli

    dock.generator.value = generator
    real, calls, seen, cancelled = getattr(stimuli, generator), [], [], threading.Event()

    def recorded(*args, progress=None, **kwargs):
        def spy(done, total):
            calls.append((done, total))
            if len(calls) == 3:   # hold the worker until the GUI thread has pressed Cancel
                assert cancelled.wait(10.0)
            progress(done, total)
        return real(*args, progress=spy, **kwargs)

    def poll() -> None:   # GUI thread: once two reports are in, look at the bar, then press Cancel
        if len(calls) >= 3 and not seen:
            process_events_until(lambda: dock.task.progress.value == calls[1][0], 5000, "the second report")
            seen.append((dock.task.progress.max, dock.task.progress.value, dock.task.status.value))
            dock.task.cancel_button.native.click()
            cancelled.set()

    monkeypatch.setattr(stimuli, generator, recorded)
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(poll)
    timer.start()
    frames = 20000 if generator == "white_noise" else 5000
    _params(dock)["frames"].value = frames
    if generator == "naturalistic":
        _params(dock)["fixation"].value = 10
    assert dock.generate() is not None
    dock.task.wait(60000)
    timer.stop()
    assert len(calls) == 3 and calls[-1][0] < frames and {total for _, total in calls} == {frames}
    assert calls[0][0] < calls[1][0] < calls[2][0]
    (bar_max, bar_value, status), = seen
    assert (bar_max, bar_value) == (frames, calls[1][0]) and status.startswith(f"generating {generator}")
    assert notes == [("info", "The stimulus generation was cancelled; nothing was added.")]
    assert len(viewer.layers) == 0 and dock.last_layer is None


def test_bad_parameters_are_one_sentence_and_add_nothing(viewer, dock, notes):
    """The generator's own checks come before any work: the run fails at once with its sentence."""
    dock.generator.value = "flash_train"
    params = _params(dock)
    params["period"].value, params["duration"].value = 4, 6            # flashes longer than their period
    assert dock.generate() is not None
    dock.task.wait(5000)
    assert len(notes) == 1 and notes[0][0] == "error"
    assert notes[0][1].startswith("The stimulus generation failed: duration (6 frames) must not exceed period")
    assert "\n" not in notes[0][1] and len(viewer.layers) == 0
    # a movie far beyond this machine's memory: refused from its size, before anything is allocated
    dock.generator.value = "white_noise"
    params = _params(dock)
    params["frames"].value, params["size"].value = 10**7, 10**5
    assert dock.generate() is not None
    dock.task.wait(5000)
    assert notes[-1][0] == "error" and notes[-1][1].startswith("The stimulus generation failed: white noise with "
                                                               "frames=10,000,000 takes")
    assert "GiB as float32, more than this machine's memory" in notes[-1][1] and len(viewer.layers) == 0


def test_running_out_of_memory_in_the_worker_is_one_sentence_without_numpy(viewer, dock, slow_flash, notes):
    slow_flash["error"] = MemoryError("Unable to allocate 9.31 GiB for an array with shape (1000040, 50, 50) "
                                      "and data type float32")
    assert dock.generate() is not None
    dock.task.wait(5000)
    assert notes == [("error", "The stimulus generation failed: there is not enough free memory for flash with "
                               "these parameters; close other programs or choose fewer frames or a smaller size")]
    assert len(viewer.layers) == 0 and (dock.task.progress.max, dock.task.progress.value) == (1, 0)


def test_float_parameters_keep_their_decimals(viewer, dock, notes):
    dock.generator.value = "moving_bar"
    params = _params(dock)
    for typed in (0.085, 0.004, 0.000125):
        params["speed"].value = typed
        assert dock.parameters()["speed"] == typed
    spin = params["speed"].native                                      # typed in the box itself
    spin.lineEdit().setText("0.0035")
    spin.interpretText()
    assert dock.parameters()["speed"] == 0.0035
    # a slow bar is made: 0.004 px/frame over 2 px
    params["speed"].value, params["start"].value, params["stop"].value = 0.004, -1.0, 1.0
    params["size"].value = 10
    assert dock.generate() is not None
    dock.task.wait(5000)
    assert notes == []
    assert dock.last_layer.metadata["parameters"]["speed"] == 0.004
    assert len(dock.last_layer.data) == 40 + 501
    # the defaults are the generators' own, unrounded
    for name in _widgets.stimulus.GENERATORS:
        dock.generator.value = name
        fn = getattr(nr.stimuli, name)
        for widget in dock.params:
            assert widget.value == inspect.signature(fn).parameters[widget.name].default, (name, widget.name)


def test_every_label_of_every_generator_is_shown_whole_at_napari_s_default_width(make_napari_viewer, qtbot):
    """The generator's parameters sat in a nested container with a narrower label column: at 1280 px
    "intensity (contrast)" read "intensity (contras". They share the dock's label column now. On CI, with
    contrast_switching's long labels, "or, for a stack opened another way:" (in the value column) lost 11 px: it
    wraps across the row now; and magicgui sized the label column in the application's font, 1 pt smaller than
    napari's: at the dock's narrowest, "intensity (contrast)" read "intensity (contra"."""
    from magicgui.widgets.bases import ButtonWidget
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    widget = _widgets.StimulusWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Stimulus")

    def shown():
        return [label for label in widget.native.findChildren(QLabel) if label.isVisible() and label.text()]

    def cut():   # a wrapped label is whole when it has the lines its width needs; another, its hint's width
        return [(label.text(), label.width(), label.height()) for label in shown()
                if (label.height() < label.heightForWidth(label.width()) if label.wordWrap()
                    else label.width() < label.sizeHint().width())]

    for name in widget.generator.choices:
        widget.generator.value = name
        viewer.window._qt_window.resizeDocks([dock], [1], Qt.Orientation.Horizontal)   # at its narrowest
        labelled = {w.label for w in widget.params if not isinstance(w, ButtonWidget)}   # a check box has its text
        try:   # the dock shows the new rows, then settles its columns
            qtbot.waitUntil(lambda: labelled <= {label.text() for label in shown()} and not cut(), timeout=2000)
        except qtbot.TimeoutError:
            pass
        texts = {label.text() for label in shown()}
        assert labelled and labelled <= texts, (name, texts)
        assert not cut(), (name, cut())


def test_parameter_tooltips_read_as_text_not_as_restructuredtext(viewer):
    """flash_train's "omit" tooltip read "leave out the flash after the ``n_flashes``-th": the docstrings'
    markup is for Sphinx, the tooltip shows its text."""
    widget = _widgets.StimulusWidget(viewer)
    seen = {}
    for name in widget.generator.choices:
        widget.generator.value = name
        seen.update({f"{name}.{w.name}": w.tooltip for w in widget.params})
    assert "n_flashes-th" in seen["flash_train.omit"]
    marked = {k: v for k, v in seen.items() if "``" in (v or "") or ":func:" in (v or "") or ":data:" in (v or "")}
    assert not marked


def test_parameter_tooltips_say_what_a_frame_or_a_pixel_is_in_time_and_on_the_retina(viewer):
    """The labels keep the generators' units (frames, px, px/frame); a tooltip that said "pixels per frame (> 0)"
    left the user to work out that 1 px/frame is 5.5 mm/s on the retina (a GUI audit)."""
    widget = _widgets.StimulusWidget(viewer)
    seen = {}
    for name in widget.generator.choices:
        widget.generator.value = name
        seen.update({f"{name}.{w.name}": w.tooltip for w in widget.params})
    assert seen["moving_bar.speed"].endswith("(1 px/frame = 5.5 mm/s on the retina)")
    assert seen["flash_train.duration"].endswith("(1 frame = 10 ms)")
    assert seen["flash_train.size"].endswith("(1 px = 55 µm on the retina)")
    unitless = {k: v for k, v in seen.items() if k.endswith((".seed", ".intensity"))}
    assert unitless and not any("on the retina" in v or "= 10 ms" in v for v in unitless.values())
