"""Where the maps and the traces lie for a stimulus layer in other units, at another frame rate, or transformed.

A stimulus layer in seconds and millimetres gets maps in ms and µm that lie over it (napari draws layers in
different units of one quantity in common units) and traces whose time axis reads ms; a layer at another frame
interval than the model's 10 ms is analysed, and the dock says once that the model saw its frames at 10 ms; a
rotated, sheared or affine-transformed layer gives its maps the same transform, so that each map pixel lies over
the stimulus pixel it explains (``layer.data_to_world``).
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina._napari import _session, _widgets  # noqa: E402
from napari_retina._napari._layers import plugin_metadata  # noqa: E402
from napari_retina._napari._plot import trace_plot  # noqa: E402

SECONDS = {"scale": (0.01, 0.055, 0.055), "units": ("s", "mm", "mm")}
"""10 ms per frame and 55 µm per pixel, in seconds and millimetres."""


@pytest.fixture
def viewer(make_napari_viewer, tiny):
    v = make_napari_viewer()
    _session.session(v).set_model(tiny, "tiny test model")
    return v


def _analyze(viewer, layer, **values):
    """Run the Analyze dock on ``layer`` (2 steps, ``values`` set on its widgets) to the end; the dock."""
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value = layer
    w.steps.value = 2
    for key, value in values.items():
        getattr(w, key).value = value
    assert w.run()
    w.task.wait()
    assert w.analysis is not None, w.task.status.value
    return w


def _maps(viewer, prefix):
    return [lay for lay in viewer.layers if plugin_metadata(lay).get("role") == "map"
            and plugin_metadata(lay).get("prefix") == prefix]


def _world_ms_um(layer, pixel) -> np.ndarray:
    """World position of ``layer``'s data ``pixel`` (t, y, x; (y, x) for a 2-D layer) in ms and µm (whatever the
    layer's units)."""
    factors = [(1.0 * u).to(t).magnitude for u, t in zip(layer.units, ("ms", "um", "um")[-layer.ndim:])]
    return np.asarray(layer.data_to_world(pixel), float) * factors


def _assert_maps_over_their_pixels(maps, stim_layer, h1, origin=(0, 0), k=1.0):
    """Each map's pixels lie, in the world, over the stimulus pixels they explain: map pixel (t, i, j) over
    stimulus pixel (t, i + offset + y0, j + offset + x0) (a map summed over y or x, of maps ``h1`` pixels
    tall: its row's middle). A layer of ``k`` pixels to a model pixel (resampled): model pixel ``m``'s centre
    is layer pixel ``(m + ½)·k − ½``."""
    for lay in maps:
        off = plugin_metadata(lay)["offset"]
        T, h, w = lay.data.shape
        for t, i, j in [(0, 0, 0), (T - 1, h - 1, 0), (3, 0, w - 1), (T // 2, h - 1, w - 1)]:
            y = i + off + origin[0] if h > 1 else off + origin[0] + (h1 - 1) / 2
            x = j + off + origin[1] if w > 1 else off + origin[1] + (h1 - 1) / 2
            y, x = (y + 0.5) * k - 0.5, (x + 0.5) * k - 0.5
            np.testing.assert_allclose(_world_ms_um(lay, (t, i, j)), _world_ms_um(stim_layer, (t, y, x)),
                                       rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------------ A. units ---

def test_a_layer_in_seconds_and_mm_gets_maps_in_ms_and_um_over_it_and_traces_in_ms(viewer, tiny, notes):
    """Before: the maps took the layer's numbers (0.01, 0.055, 0.055) labelled ms and µm, 1000× too small, and
    the traces ran from 0 to 0.29 "ms"."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="seconds", **SECONDS)
    w = _analyze(viewer, layer, invariance="none")
    maps = _maps(viewer, "seconds: ")
    assert len(maps) == 8
    off = plugin_metadata(maps[0])["offset"]
    for lay in maps:
        np.testing.assert_allclose(lay.scale, (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM))
        np.testing.assert_allclose(lay.translate, (0, off * nr.PIXEL_UM, off * nr.PIXEL_UM))
        assert [str(u) for u in lay.units] == ["millisecond", "micrometer", "micrometer"]
    _assert_maps_over_their_pixels(maps, layer, tiny.config.map_sizes[0])
    plot = trace_plot(viewer, create=False)
    np.testing.assert_allclose(plot.times_ms, np.arange(30) * nr.FRAME_MS)
    viewer.dims.set_current_step(0, 14)
    assert plot.time_label() == "time (ms) · slider at 140 ms, frame 14"
    assert [str(u) for u in layer.units] == ["second", "millimeter", "millimeter"]  # the layer is left as it was
    assert not [n for n in notes if n[0] in ("warning", "error")], notes   # 10 ms and 55 µm: nothing to say
    assert "ms per frame" not in w.task.status.value


def test_the_trace_cursor_reads_ms_in_a_viewer_whose_world_is_in_seconds(viewer, notes):
    """Invariance 'space' adds no maps: the world stays in the layer's seconds, the slider's point 0.14 is
    140 ms on the plot, and a click on the plot at 200 ms moves the slider to frame 20."""
    stim = np.repeat(np.repeat(nr.stimuli.white_noise(frames=30, size=1, seed=1), 20, axis=1), 20, axis=2)  # full field
    layer = viewer.add_image(stim, name="seconds", **SECONDS)
    _analyze(viewer, layer, invariance="space")
    assert not _maps(viewer, "seconds: ")
    plot = trace_plot(viewer, create=False)
    viewer.dims.set_current_step(0, 14)
    assert plot.cursor_time_ms == pytest.approx(140)
    np.testing.assert_allclose(plot.rows[0].cursor.pos, 140 / plot.ms_per_unit)
    assert plot.time_label() == "time (ms) · slider at 140 ms, frame 14"
    plot.legend_channel_at, plot.time_at = (lambda pos: None), (lambda pos: 200.0)   # a click at 200 ms
    plot._press = np.zeros(2)
    plot._on_release(type("Click", (), {"pos": (0.0, 0.0)})())
    assert viewer.dims.current_step[0] == 20


def test_a_layer_at_20_ms_per_frame_is_analysed_and_the_dock_says_so_once(viewer, notes):
    """Before: a layer at 20 ms per frame was analysed as the model's 10 ms frames without a word."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="slow", scale=(20, 55, 55), units=("ms", "um", "um"))
    w = _analyze(viewer, layer)
    said = [m for level, m in notes if "ms per frame" in m]
    assert len(said) == 1 and [lv for lv, m in notes if m == said[0]] == ["warning"], notes
    assert "Layer 'slow' has 20 ms per frame" in said[0] and "10 ms per frame" in said[0]
    assert "Layer 'slow' has 20 ms per frame" in w.task.status.value
    np.testing.assert_allclose(trace_plot(viewer, create=False).times_ms, np.arange(30) * 20.0)  # the layer's
    np.testing.assert_allclose(_maps(viewer, "slow: ")[0].scale, (20, 55, 55))


def test_the_frame_interval_is_compared_after_conversion(viewer, notes):
    """0.02 s per frame is 20 ms: said; 0.01 s per frame (SECONDS) is the model's: not said (test above)."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="slow s", scale=(0.02, 0.055, 0.055), units=("s", "mm", "mm"))
    _analyze(viewer, layer)
    assert [m for _, m in notes if "ms per frame" in m] == [
        "Layer 'slow s' has 20 ms per frame: the model saw it at its own 10 ms per frame (the maps and the traces "
        "keep the layer's scale); set 'frame interval (ms)' to 20 to resample it to the model's bins."]


def test_a_layer_without_units_still_gets_the_stimulus_scale(viewer, notes):
    """... drawn, and on the frame the slider showed: napari sliced a layer given units after its scale to (1, 1)
    (nothing drawn until the slider moved), and kept the slider's world value (frame 24 became frame 2)."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="pixels")
    viewer.dims.set_point(0, 24)
    _analyze(viewer, layer)
    assert tuple(layer.scale) == (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM)
    assert layer._data_view.shape == (20, 20) and viewer.dims.point[0] == pytest.approx(240.0)
    assert [lv for lv, m in notes] == ["info"] and "no physical scale" in notes[0][1]
    np.testing.assert_allclose(_maps(viewer, "pixels: ")[0].scale, (nr.FRAME_MS, nr.PIXEL_UM, nr.PIXEL_UM))


def test_a_scale_set_without_units_is_kept_and_read_as_ms_and_um(viewer, notes):
    """A helper's audit: ``add_image(stack, scale=(1000/60, 27.5, 27.5))`` (a calibration without units, as
    most scripts and readers give) was replaced with 10 ms and 55 µm, and the 27.5 µm stack analysed at 55 µm,
    with only "had no physical scale" said. The scale is kept, and the note says which boxes to set."""
    stim = nr.stimuli.white_noise(frames=40, size=40, seed=1)
    layer = viewer.add_image(stim, name="calibrated", scale=(1000 / 60, 27.5, 27.5))
    w = _analyze(viewer, layer, crop="center")
    assert tuple(layer.scale) == (1000 / 60, 27.5, 27.5) and str(layer.units[-1]) == "pixel"
    warned = [m for level, m in notes if level == "warning"]
    assert len(warned) == 1 and "no physical scale" not in " ".join(m for _, m in notes)
    assert warned[0].startswith("Layer 'calibrated' has 16.67 ms per frame and 27.5 µm per pixel (its scale has "
                                "no units: read as ms and µm)")
    assert warned[0].endswith("set 'pixel size (µm)' to 27.5 to resample it to the model's pixels.")
    np.testing.assert_allclose(_maps(viewer, "calibrated: ")[0].scale, (1000 / 60, 27.5, 27.5))
    w.frame.value, w.pixel.value = 1000 / 60, 27.5       # as the note says: no note, the stack resampled
    notes.clear()
    assert w.run(), w.task.status.value
    w.task.wait()
    assert w.analysis.attribution.input_pixel_um == (27.5, 27.5) and w.analysis.attribution.input_frame_ms == 1000 / 60
    assert not [m for level, m in notes if level == "warning"], notes
    # the slider steps are the maps' 10 ms bins: the plot says the stack's own frame too (a GUI audit: "frame 53"
    # was read as the 60 Hz stack's frame, which was 31)
    plot = trace_plot(viewer, create=False)
    viewer.dims.set_current_step(0, 9)   # the maps' bins start at -3.33 ms: 86.67 ms, the stack's frame 5.2
    assert plot.time_label() == "time (ms) · slider at 86.67 ms, step 9, frame 5 of 'calibrated'"


# --------------------------------------------------------- B. transformations ---

def test_a_rotated_layer_gives_its_maps_its_rotation_in_the_dock(viewer, tiny, notes):
    """Before: the maps of a layer with rotate=30 had no rotation and lay beside the pixels they explain."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="rotated", scale=(10, 55, 55), units=("ms", "um", "um"), rotate=30,
                             translate=(0, 300, -200))
    _analyze(viewer, layer, invariance="none")
    maps = _maps(viewer, "rotated: ")
    np.testing.assert_allclose(maps[0].rotate, layer.rotate)
    _assert_maps_over_their_pixels(maps, layer, tiny.config.map_sizes[0])


TRANSFORMS = {
    "rotate": {"rotate": 30},
    "shear": {"shear": [0.0, 0.0, 0.4]},
    "affine": {"affine": np.array([[1, 0, 0, 5], [0, 0.9, -0.3, 100], [0, 0.2, 1.1, -40], [0, 0, 0, 1]])},
    "all in seconds": {"rotate": -50, "shear": [0.0, 0.0, 0.2], "translate": (0.1, 0.3, -0.2),
                       "affine": np.array([[1, 0, 0, 0.05], [0, 1, 0, 0.2], [0, 0, 1, 0.0], [0, 0, 0, 1]]),
                       **SECONDS},
}


@pytest.mark.parametrize("invariance", ["none", "y"])
@pytest.mark.parametrize("case", list(TRANSFORMS))
def test_maps_of_a_cropped_transformed_layer_lie_over_the_pixels_they_explain(viewer, tiny, case, invariance):
    """nr.show over a transformed 26×26 layer of which the window at (2, 5) was analysed."""
    stim = nr.stimuli.white_noise(frames=24, size=26, seed=2)
    if invariance == "y":
        stim = np.repeat(stim[:, :1], 26, axis=1)   # uniform along y: one map row, stretched over the map
    kwargs = {"scale": (10, 55, 55), "units": ("ms", "um", "um"), **TRANSFORMS[case]}
    layer = viewer.add_image(stim, name="layer", **kwargs)
    attr = nr.attribute(tiny, stim, cell=0, steps=2, crop=(2, 5), invariance=invariance)
    assert attr.invariance == invariance
    maps = [lay for lay in nr.show(attr, viewer, stimulus_layer=layer) if plugin_metadata(lay).get("role") == "map"]
    assert maps and (maps[0].data.shape[1] == 1) == (invariance == "y")
    _assert_maps_over_their_pixels(maps, layer, tiny.config.map_sizes[0], origin=(2, 5))


def test_a_rerun_over_a_layer_transformed_since_moves_its_maps_with_it(viewer, tiny, notes):
    """A re-run updates the earlier maps in place; it copied their scale and translate only, so maps of a layer
    rotated, sheared and put in seconds since the first run kept the first run's placement."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    layer = viewer.add_image(stim, name="moved", scale=(10, 55, 55), units=("ms", "um", "um"))
    w = _analyze(viewer, layer, invariance="none")
    first = _maps(viewer, "moved: ")
    layer.units = ("s", "mm", "mm")
    layer.scale = (0.01, 0.055, 0.055)
    layer.rotate = 30
    layer.shear = [0.0, 0.0, 0.3]
    assert w.run()
    w.task.wait()
    maps = _maps(viewer, "moved: ")
    assert [id(m) for m in maps] == [id(m) for m in first]      # updated in place, not rebuilt
    _assert_maps_over_their_pixels(maps, layer, tiny.config.map_sizes[0])


@pytest.mark.parametrize("case", list(TRANSFORMS))
def test_the_crop_window_and_the_outline_lie_over_a_transformed_layer_and_read_where_they_lie(viewer, tiny, case,
                                                                                              notes):
    """The crop rectangle took the layer's scale and translate only: over a rotated, sheared or affine layer it lay
    beside the pixels it names, and a dragged rectangle was read back through scale and translate alone."""
    from napari_retina._napari._widgets._crop import window_rectangle

    stim = nr.stimuli.white_noise(frames=24, size=30, seed=2)
    layer = viewer.add_image(stim, name="big", **{"scale": (10, 55, 55), "units": ("ms", "um", "um"),
                                                  **TRANSFORMS[case]})
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value, w.steps.value, w.crop.value = layer, 2, "window"
    window = viewer.layers["big: crop window (drag me)"]

    def over(shapes, y0, x0, size=20):
        """Each corner of ``shapes``' rectangle lies, in the world, on the stimulus's corner of that window."""
        for corner, pixel in zip(np.asarray(shapes.data[0], float), window_rectangle(y0, x0, size)):
            np.testing.assert_allclose(_world_ms_um(shapes, corner), _world_ms_um(layer, (0, *pixel))[1:],
                                       rtol=1e-9, atol=1e-6)

    over(window, 5, 5)   # centred in the 30-px layer
    window.data = [np.asarray(window.data[0]) + np.array([3, -2])]   # the user drags it 3 px down, 2 px left
    assert w.run()
    w.task.wait()
    assert w.analysis is not None, w.task.status.value
    assert tuple(w.analysis.attribution.crop_origin) == (8, 3)
    over(viewer.layers["big: analysed window"], 8, 3)


# ---------------------------------------------------- D. other pixel sizes ---

def test_a_cropped_attribution_shown_without_its_stack_lies_on_its_window(viewer, tiny):
    """Before: nr.show(attr) added the analysed window as the stimulus layer and still shifted the maps by the
    window's corner in the stack it was cut from (crop (4, 6): 220 and 330 µm off)."""
    big = nr.stimuli.white_noise(frames=30, size=26, seed=3)
    cut = nr.attribute(tiny, big, cell=0, steps=2, invariance="none", crop=(4, 6))
    stim, *maps = nr.show(cut, viewer)
    assert stim.data.shape == (30, 20, 20) and len(maps) == 8
    _assert_maps_over_their_pixels(maps, stim, tiny.config.map_sizes[0])


@pytest.mark.parametrize("case", ["rotate", "all in seconds"])
def test_a_layer_of_27_5_um_pixels_resampled_in_the_dock_has_its_maps_window_and_outline_over_its_pixels(
        viewer, tiny, case, notes):
    """The dock's pixel size 27.5 µm: the 60 × 60 layer is analysed on the model's 30 × 30 grid, the crop
    rectangle spans 40 layer pixels, a drag is read in model pixels, and each map pixel lies over the 2 × 2
    layer pixels it explains; the result is nr.attribute's with pixel_um=27.5 at that corner."""
    from napari_retina._napari._widgets._crop import window_rectangle

    stim = nr.stimuli.white_noise(frames=24, size=60, seed=4)
    transform = dict(TRANSFORMS[case])
    scale = (0.01, 0.0275, 0.0275) if case == "all in seconds" else (10, 27.5, 27.5)
    layer = viewer.add_image(stim, name="fine", **{"units": ("ms", "um", "um"), **transform, "scale": scale})
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value, w.steps.value, w.invariance.value = layer, 2, "none"
    w.pixel.value, w.crop.value = 27.5, "window"
    window = viewer.layers["fine: crop window (drag me)"]
    np.testing.assert_allclose(window.data[0], window_rectangle(5, 5, 20, (2.0, 2.0)))   # centred: 9.5 … 49.5
    window.data = [np.asarray(window.data[0]) + np.array([6, -4])]   # dragged 6 layer pixels down, 4 left
    assert w.run()
    w.task.wait()
    attr = w.analysis.attribution
    assert attr.crop_origin == (8, 3) and attr.input_pixel_um == (27.5, 27.5)
    ref = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none", crop=(8, 3), pixel_um=27.5)
    np.testing.assert_allclose(attr.maps, ref.maps, rtol=1e-5, atol=1e-7)
    _assert_maps_over_their_pixels(_maps(viewer, "fine: "), layer, tiny.config.map_sizes[0], origin=(8, 3), k=2.0)
    np.testing.assert_allclose(viewer.layers["fine: analysed window"].data[0], window_rectangle(8, 3, 20, (2.0, 2.0)))
    assert "its 27.5 µm pixels were resampled to the model's 55 µm" in w.task.status.value
    assert "model saw it" not in w.task.status.value   # the layer's own pixel size is the one analysed


def test_the_dock_says_how_to_resample_a_layer_whose_pixels_are_not_55_um(viewer, notes):
    stim = nr.stimuli.white_noise(frames=30, size=40, seed=1)
    layer = viewer.add_image(stim, name="fine", scale=(10, 27.5, 27.5), units=("ms", "um", "um"))
    w = _analyze(viewer, layer, crop="center")
    assert w.analysis.attribution.input_pixel_um is None
    assert ("Layer 'fine' has 27.5 µm per pixel: the model saw it at its own 55 µm per pixel (the maps and the "
            "traces keep the layer's scale); set 'pixel size (µm)' to 27.5 to resample it to the model's pixels"
            ) in w.task.status.value


def test_a_scale_the_dock_set_follows_the_pixel_size_box(viewer, notes):
    """A helper's audit: crop 'window' chosen first gave a layer without units 55 µm pixels; the pixel size set
    next (27.5) left them so, and the status line then advised setting the box back to 55."""
    stim = nr.stimuli.white_noise(frames=30, size=60, seed=1)
    layer = viewer.add_image(stim, name="plain")                 # napari's default: scale 1, pixel units
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value, w.steps.value, w.crop.value = layer, 2, "window"
    assert tuple(layer.scale) == (10, 55, 55)
    w.pixel.value = 27.5
    assert tuple(layer.scale) == (10, 27.5, 27.5)
    assert w.run()
    w.task.wait()
    assert w.analysis.attribution.input_pixel_um == (27.5, 27.5)
    assert "model saw it" not in w.task.status.value and "set 'pixel size" not in w.task.status.value
    own = viewer.add_image(stim, name="own", scale=(10, 40, 40), units=("ms", "um", "um"))
    w.layer.value = own
    w.pixel.value = 30.0
    assert tuple(own.scale) == (10, 40, 40)                      # a scale the user set is theirs


def test_a_result_over_a_layer_the_dock_scaled_moves_with_the_boxes_and_the_crop_window_reads_its_new_pixels(
        viewer, tiny, notes):
    """After an analysis, the pixel size and frame interval boxes rescale a layer the dock scaled: its maps,
    outline and traces stay over the frames and pixels they were computed on (the status line says they are of
    the earlier scale), and the crop window, whose scale was taken once, lies over the layer and reads the
    window it shows (it was drawn off the layer, and read a corner clipped to the edge)."""
    from napari_retina._napari._widgets._crop import find_window, window_rectangle

    stim = nr.stimuli.white_noise(frames=48, size=60, seed=5)
    layer = viewer.add_image(stim, name="plain")                 # napari's default: scale 1, pixel units
    w = _analyze(viewer, layer, invariance="none", crop="window", pixel=27.5, frame=5.0)
    attr = w.analysis.attribution
    assert attr.crop_origin == (5, 5) and attr.input_pixel_um == (27.5, 27.5) and attr.input_frame_ms == 5.0
    maps, size = _maps(viewer, "plain: "), tiny.config.size

    def over_their_stimulus(k_t, k):
        """Map pixel (t, i, j) over layer frame (t + ½)·k_t − ½ and pixel (i + offset + y0 + ½)·k − ½ (x
        alike); the outline's corners over the layer's corners of the analysed window."""
        for lay in maps:
            off = plugin_metadata(lay)["offset"]
            T, h, wd = lay.data.shape
            for t, i, j in [(0, 0, 0), (T - 1, h - 1, 0), (3, 0, wd - 1)]:
                pixel = ((t + 0.5) * k_t - 0.5, (i + off + 5.5) * k - 0.5, (j + off + 5.5) * k - 0.5)
                np.testing.assert_allclose(_world_ms_um(lay, (t, i, j)), _world_ms_um(layer, pixel),
                                           rtol=1e-9, atol=1e-6)
        outline = viewer.layers["plain: analysed window"]
        for corner, pixel in zip(np.asarray(outline.data[0], float), window_rectangle(5, 5, size, (k, k))):
            np.testing.assert_allclose(_world_ms_um(outline, corner), _world_ms_um(layer, (0, *pixel))[1:],
                                       rtol=1e-9, atol=1e-6)

    over_their_stimulus(2.0, 2.0)
    np.testing.assert_allclose(trace_plot(viewer).times_ms, 2.5 + 10.0 * np.arange(24))
    viewer.dims.set_point(0, 50.0)                               # frame 10 of 5 ms
    w.frame.value = 10.0
    assert tuple(layer.scale) == (10, 27.5, 27.5) and viewer.dims.point[0] == pytest.approx(100.0)   # frame 10
    over_their_stimulus(2.0, 2.0)
    np.testing.assert_allclose(trace_plot(viewer).times_ms, 5.0 + 20.0 * np.arange(24))   # the bins' frames
    assert "Analyze again" in w.task.status.value
    w.pixel.value = 55.0
    assert tuple(layer.scale) == (10, 55, 55)
    over_their_stimulus(2.0, 2.0)
    window = find_window(viewer, layer)
    assert w.crop_value(layer) == (20, 20)   # the same centre (layer pixel 29.5) on the 60-pixel grid
    for corner, pixel in zip(np.asarray(window.data[0], float), window_rectangle(20, 20, size)):
        np.testing.assert_allclose(_world_ms_um(window, corner), _world_ms_um(layer, (0, *pixel))[1:],
                                   rtol=1e-9, atol=1e-6)
    assert w.run()
    w.task.wait()
    assert w.analysis.attribution.crop_origin == (20, 20) and w.analysis.attribution.input_pixel_um is None


def test_the_pixel_size_box_takes_55_3_um_and_a_small_layer_is_told_of_the_box(viewer, notes):
    """A helper's audit: the box held 18.33 (two decimals), with which a 150 × 150 layer of 55/3 µm pixels was
    49 × 49 model pixels, 'too small'; and the sentence for a small layer told the dock's user to 'pass
    pixel_um='."""
    from napari_retina._napari._widgets.analyze import check_stimulus_layer

    tiny = _session.session(viewer).model
    w = _widgets.AnalyzeWidget(viewer)
    w.pixel.value = 55 / 3
    assert w.pixel.value == pytest.approx(18.3333, abs=1e-9)
    third = viewer.add_image(nr.stimuli.white_noise(frames=30, size=60, seed=1), name="third")
    assert check_stimulus_layer(third, tiny, "none", w.pixel_um()).shape == (30, 60, 60)   # 20 x 20 model pixels
    small = viewer.add_image(np.zeros((30, 12, 12), np.float32), name="small")
    with pytest.raises(ValueError, match=r"^Layer 'small' is 12x12 pixels, smaller than the 20x20 the model "
                                         r"expects, and a crop cannot make it larger; if its pixels are larger than "
                                         r"the model's 55 µm, set 'pixel size \(µm\)' to their size to resample it, "
                                         r"else pad it to at least 20x20$"):
        check_stimulus_layer(small, tiny, "none")
    with pytest.raises(ValueError, match=r"^Layer 'third' on the model's 55 µm grid \(27.5 µm pixels\) is 30x30 "
                                         r"pixels but the model expects 20x20; choose crop 'center'"):
        check_stimulus_layer(third, tiny, "none", 27.5)


def test_a_saved_resampled_analysis_keeps_its_pixel_size_and_its_settings_say_where_it_applies(viewer, notes,
                                                                                              tmp_path):
    """A helper's audit: Analysis.to_dict wrote the model's 55 over the analysis' own pixel_um, and the reader
    dropped it from the settings: reopened, 'Use the settings' left the box as it was. Now the reopened window
    (on the model's grid) gets 55 µm and says why; the stack it came from gets 27.5 and its window back."""
    from napari_retina._napari._reader import SETTINGS_KEY
    from napari_retina._napari._layers import META

    tiny = _session.session(viewer).model
    stim = nr.stimuli.white_noise(frames=30, size=60, seed=5)
    res = nr.analysis.run_analysis(tiny, stim, cell=0, steps=2, crop=(2, 3), pixel_um=27.5)
    saved = nr.read_analysis(res.save(tmp_path / "a.h5"))
    assert np.ravel(saved.parameters["pixel_um"]).tolist() == [27.5, 27.5]
    assert saved.attribution.input_pixel_um == (27.5, 27.5)
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    reopened = viewer.open(str(tmp_path / "a.h5"), plugin="napari-retina")[0]
    w.layer.value, w.pixel.value = reopened, 27.5
    w.settings_button.native.click()
    assert (w.pixel.value, w.crop.value) == (55.0, "none")
    assert notes[-1][0] == "warning" and "pixel size 27.5 µm, which this layer no longer has (it holds the " \
                                         "analysed window" in notes[-1][1]
    stack = viewer.add_image(stim, name="stack", scale=(10, 27.5, 27.5), units=("ms", "um", "um"))
    stack.metadata[META] = {SETTINGS_KEY: dict(reopened.metadata[META][SETTINGS_KEY])}
    w.layer.value = stack
    w.settings_button.native.click()
    assert (w.pixel.value, w.crop.value) == (27.5, "window") and w.crop_value(stack) == (2, 3)


# ------------------------------------------------------- D. another frame rate ---

def _assert_bins_over_their_frames(maps, stim_layer, k_t: float) -> None:
    """Each map frame (a 10 ms model bin) lies, in the world, at the centre of the layer frames it averages:
    bin ``m`` over layer frame ``(m + ½)·k_t − ½`` (``k_t`` layer frames to a bin), its pixels over theirs."""
    for lay in maps:
        off = plugin_metadata(lay)["offset"]
        T = lay.data.shape[0]
        for m in (0, 1, T // 2, T - 1):
            np.testing.assert_allclose(_world_ms_um(lay, (m, 0, 0)),
                                       _world_ms_um(stim_layer, ((m + 0.5) * k_t - 0.5, off, off)),
                                       rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("case", ["5 ms frames", "20 ms frames in seconds"])
def test_a_layer_shown_at_another_frame_rate_resampled_in_the_dock_has_maps_and_traces_on_its_time(
        viewer, tiny, case, notes):
    """The dock's frame interval 5 ms (or 20 ms): the layer is analysed on the model's 10 ms bins, its maps are
    10 ms frames centred on the layer frames each averages, the traces' times are those centres, and the result
    is nr.attribute's with frame_ms at that interval."""
    from napari_retina.io import trace_columns

    frame_ms, frames = (5.0, 48) if case == "5 ms frames" else (20.0, 12)
    scale = (frame_ms, 55, 55) if case == "5 ms frames" else (frame_ms / 1000, 0.055, 0.055)
    units = ("ms", "um", "um") if case == "5 ms frames" else ("s", "mm", "mm")
    stim = nr.stimuli.white_noise(frames=frames, size=20, seed=6)
    layer = viewer.add_image(stim, name="movie", scale=scale, units=units, translate=(scale[0] * 3, 0, 0))
    w = _analyze(viewer, layer, invariance="none", frame=frame_ms)
    attr = w.analysis.attribution
    assert attr.input_frame_ms == frame_ms and len(attr.response) == 24
    ref = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none", frame_ms=frame_ms)
    np.testing.assert_allclose(attr.maps, ref.maps, rtol=1e-5, atol=1e-7)
    maps = _maps(viewer, "movie: ")
    assert len(maps) == 8
    k_t = 10.0 / frame_ms
    _assert_bins_over_their_frames(maps, layer, k_t)
    start = 3 * frame_ms + (0.5 * k_t - 0.5) * frame_ms              # the layer's translate, then bin 0's centre
    np.testing.assert_allclose(trace_plot(viewer, create=False).times_ms, start + np.arange(24) * 10.0)
    # the traces the layer keeps, plotted again by name (or when another result's layer leaves), keep that clock
    trace_plot(viewer, create=False).clear()
    np.testing.assert_allclose(nr.viewer.traces(viewer, "movie").times_ms, start + np.arange(24) * 10.0)
    # the CSV's time_ms is the plot's clock without the layer's translate (a helper's audit: 3.3 ms apart at 60 Hz)
    np.testing.assert_allclose(trace_columns(attr)["time (ms)"], start - 3 * frame_ms + np.arange(24) * 10.0)
    assert f"its {frame_ms:g} ms frames were resampled to the model's 10 ms bins" in w.task.status.value
    assert "model saw it" not in w.task.status.value and not [n for n in notes if n[0] == "warning"], notes


def test_a_scale_the_dock_set_follows_the_frame_interval_box_and_a_short_layer_is_counted_in_bins(viewer, notes):
    from napari_retina._napari._widgets.analyze import check_stimulus_layer
    from napari_retina._resample import model_frame_count

    tiny = _session.session(viewer).model
    stim = nr.stimuli.white_noise(frames=30, size=40, seed=1)
    layer = viewer.add_image(stim, name="plain")                 # napari's default: scale 1, pixel units
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value, w.crop.value = layer, "window"
    assert tuple(layer.scale) == (10, 55, 55)
    w.frame.value = 1000 / 60
    assert w.frame.value == pytest.approx(16.6667, abs=1e-9) and w.frame_ms() == 1000 / 60   # a 60 Hz monitor's
    assert tuple(layer.scale) == (1000 / 60, 55, 55)
    w.frame.value = 8.3333                       # 120 Hz as the box holds it: 1200 frames are 1000 bins, not 999
    assert w.frame_ms() == 1000 / 120 and model_frame_count(1200, w.frame_ms()) == 1000
    w.frame.value = 16.5                         # no whole-Hz monitor's: the box's own number
    assert w.frame_ms() == 16.5
    w.frame.value = 10.0
    assert w.frame_ms() is None
    short = viewer.add_image(np.zeros((19, 20, 20), np.float32), name="short")
    with pytest.raises(ValueError, match=r"^Layer 'short' has 19 frame\(s\) of 5 ms \(9 of the model's 10 ms\) "
                                         r"but the model needs at least its history of 10 frames \(100 ms\)$"):
        check_stimulus_layer(short, tiny, "none", None, 5.0)
    assert check_stimulus_layer(short, tiny, "none", None, 20.0).shape == (19, 20, 20)


def test_a_saved_analysis_of_5_ms_frames_reopens_on_10_ms_bins_and_its_settings_say_so(viewer, notes, tmp_path):
    """Reopened, the layer holds the analysed bins at 10 ms: 'Use the settings' sets the frame interval to 10 and
    says why; the stack it came from (5 ms frames) gets 5."""
    from napari_retina._napari._reader import SETTINGS_KEY
    from napari_retina._napari._layers import META

    tiny = _session.session(viewer).model
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=5)
    res = nr.analysis.run_analysis(tiny, stim, cell=0, steps=2, frame_ms=5)
    w = _widgets.AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    reopened = viewer.open(str(res.save(tmp_path / "a.h5")), plugin="napari-retina")[0]
    assert reopened.data.shape == (20, 20, 20)
    np.testing.assert_allclose(reopened.scale, (10, 55, 55))
    w.layer.value, w.frame.value = reopened, 5.0
    w.settings_button.native.click()
    assert w.frame.value == 10.0
    assert notes[-1][0] == "warning" and "frame interval 5 ms, which this layer no longer has (it holds the " \
                                         "analysed stimulus, resampled to the model's 10 ms bins" in notes[-1][1]
    stack = viewer.add_image(stim, name="stack", scale=(5, 55, 55), units=("ms", "um", "um"))
    stack.metadata[META] = {SETTINGS_KEY: dict(reopened.metadata[META][SETTINGS_KEY])}
    w.layer.value = stack
    w.settings_button.native.click()
    assert w.frame.value == 5.0


def test_a_time_resampled_attribution_shows_on_its_bins_or_over_its_stack(viewer, tiny):
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=7)
    attr = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none", frame_ms=5)
    window, *maps = nr.show(attr, viewer, name="bins")
    assert window.data.shape == (20, 20, 20) and len(maps) == 8
    _assert_bins_over_their_frames(maps, window, 1.0)
    stack = viewer.add_image(stim, name="stack", scale=(5, 55, 55), units=("ms", "um", "um"))
    _assert_bins_over_their_frames(nr.show(attr, viewer, stimulus_layer=stack), stack, 2.0)
    with pytest.raises(ValueError, match=r"^stimulus_layer must hold the analysed stimulus, \(T, H, W\) = "
                                         r"\(20, 20, 20\) \(20 model frames of 10 ms: 5 ms frames resampled\), got "
                                         r"layer 'half' of shape \(30, 20, 20\)$"):
        nr.show(attr, viewer, stimulus_layer=viewer.add_image(stim[:30], name="half"))


def test_a_60_hz_layer_is_read_at_its_own_interval_where_the_box_shows_it_rounded(viewer, tiny, notes):
    """A helper's audit: the box holds 16.6667; a layer at 1000/60 ms was told it 'has 16.67 ms per frame: the
    model saw it at 16.6667 ... set the box to 16.6667', its maps were 9.99998 ms apart, and 1200 frames of 8.3333
    ms lost a bin. The layer's own interval, of which the box shows the rounding, is the one analysed."""
    stim = nr.stimuli.white_noise(frames=36, size=20, seed=8)
    layer = viewer.add_image(stim, name="sixty", scale=(1000 / 60, 55, 55), units=("ms", "um", "um"))
    w = _analyze(viewer, layer, invariance="none", frame=1000 / 60)
    assert w.analysis.attribution.input_frame_ms == 1000 / 60 and len(w.analysis.attribution.response) == 60
    assert not [n for n in notes if n[0] == "warning"], notes
    np.testing.assert_allclose(_maps(viewer, "sixty: ")[0].scale[0], 10.0, rtol=1e-12)
    w.frame.value = 16.5                                          # not the layer's: the box's own number
    assert w.frame_ms() == 16.5


def test_a_time_resampled_attribution_over_a_layer_without_units_gives_it_its_frame_interval(viewer, tiny):
    """A helper's audit: nr.show gave a layer without units 10 ms per frame whatever the attribution was
    resampled from, so 50 bins of 60 Hz frames ended 195 ms from their frames, and the warning said they lined up."""
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=9)
    attr = nr.attribute(tiny, stim, cell=0, steps=2, invariance="none", frame_ms=1000 / 60)
    plain = viewer.add_image(stim, name="plain")
    with pytest.warns(UserWarning, match=r"it now has 16.6667 ms per frame and 55 µm pixels \(those the "
                                         r"attribution was resampled from\)"):
        maps = nr.show(attr, viewer, stimulus_layer=plain)
    np.testing.assert_allclose(plain.scale, (1000 / 60, 55, 55))
    _assert_bins_over_their_frames(maps, plain, 0.6)


def test_a_layer_without_units_analysed_at_60_hz_from_the_box_is_not_told_it_differs(viewer, tiny, notes):
    """The box holds 16.6667; the layer it scales gets 1000/60 ms, the interval analysed, so no note says the
    layer 'has 16.67 ms per frame' against the model's 16.6667."""
    layer = viewer.add_image(nr.stimuli.white_noise(frames=36, size=20, seed=3), name="plain 60")
    w = _analyze(viewer, layer, frame=1000 / 60)
    assert w.analysis.attribution.input_frame_ms == 1000 / 60 and tuple(layer.scale) == (1000 / 60, 55, 55)
    assert not [n for n in notes if n[0] == "warning"], notes
    assert "model saw it" not in w.task.status.value
