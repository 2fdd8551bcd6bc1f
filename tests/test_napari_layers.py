"""Result layers: maps, lazy maps, the trace plot in a viewer (plain functions, no widgets)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_retina as nr

pytest.importorskip("napari")

from napari_retina import analysis  # noqa: E402
from napari_retina._napari import _layers, _plot  # noqa: E402
from napari_retina._napari import add_analysis, stimulus_layer_kwargs  # noqa: E402

UM, MS = nr.PIXEL_UM, nr.FRAME_MS


@pytest.fixture(scope="module")
def noise_analysis(tiny):
    stim = nr.stimuli.white_noise(frames=30, size=20, seed=1)
    attr = nr.attribute(tiny, stim, cell=0, steps=4, invariance="none")
    red = nr.reduce(attr, explain=0.6)
    return stim, attr, red


def test_map_layers_aligned_named_and_coloured(make_napari_viewer, noise_analysis):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    layers = add_analysis(viewer, attr, red, stim_layer)
    maps = [layer for layer in layers if layer.metadata[_layers.META]["role"] == "map"]
    C, h = attr.maps.shape[1], attr.maps.shape[2]
    assert len(maps) == C == 8
    off = 5 // 2
    lims = set()
    for c, layer in enumerate(maps):
        assert layer.name == f"noise: {red.label(c)}"
        assert layer.data.shape == (30, h, h)
        np.testing.assert_array_equal(np.asarray(layer.data), attr.maps[:, c])
        np.testing.assert_allclose(layer.scale, (MS, UM, UM))
        np.testing.assert_allclose(layer.translate, (0, off * UM, off * UM))
        assert layer.visible == (c in red.kept)
        lo, hi = layer.contrast_limits
        assert lo == pytest.approx(-hi) and hi > 0
        lims.add(round(hi, 12))
        assert layer.blending == "translucent"
    assert len(lims) == 1  # shared across channels
    # map pixel (i, j) is drawn over stimulus pixel (i + off, j + off): same world coordinate
    world = maps[0].data_to_world((3, 4, 6))
    np.testing.assert_allclose(stim_layer.world_to_data(world), (3, 4 + off, 6 + off))


def test_channel_colormap_keeps_each_sides_hue_and_is_transparent_at_zero():
    for c in range(8):
        cmap = _layers.channel_colormap(c)
        pos, neg, zero = cmap.map(np.array([1.0, 0.0, 0.5]))
        np.testing.assert_allclose(pos, _layers.channel_color(c))
        assert neg[3] == 1.0 and zero[3] < 1e-2            # opaque at ±limit, transparent at 0
        np.testing.assert_allclose(neg[:3], 0.35 + 0.65 * (1.0 - pos[:3]))
        half = cmap.map(np.array([0.75]))[0]                # half the limit: the hue at half opacity
        np.testing.assert_allclose(half[:3], pos[:3], atol=1e-6)
        assert half[3] == pytest.approx(0.5, abs=0.01)


def test_a_strong_map_over_a_bright_stimulus_shows_its_channels_colour_not_white(make_napari_viewer,
                                                                                  noise_analysis):
    """Drawn: additive blending added the colour to the stimulus, so over a bright stimulus a strong
    attribution was white, whatever its channel; a zero attribution must leave the stimulus as it is."""
    _, attr, red = noise_analysis
    viewer = make_napari_viewer(show=True)
    bright = np.full(attr.stimulus.shape, 2.0, dtype=np.float32)
    bright[0, 0, 0] = -2.0                                  # contrast limits ±2: the stimulus draws white
    stim_layer = viewer.add_image(bright, **stimulus_layer_kwargs(bright, "bright"))
    maps = [layer for layer in add_analysis(viewer, attr, red, stim_layer)
            if layer.metadata[_layers.META]["role"] == "map"]
    c = 1
    for layer in maps:
        layer.visible = layer.metadata[_layers.META]["channel"] == c
        layer.colorbar.visible = False
    lim = maps[c].contrast_limits[1]
    data = np.zeros_like(np.asarray(maps[c].data))
    data[:, :, : data.shape[2] // 2] = lim                  # left half: +limit; right half: 0
    maps[c].data = data
    viewer.dims.set_current_step(0, 10)
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float) / 255
    colour = _layers.channel_color(c)[:3]
    expected = maps[c].opacity * colour + (1 - maps[c].opacity) * 1.0        # translucent over white
    near = lambda rgb: (np.abs(img - rgb).max(-1) < 0.06).sum()              # noqa: E731 - pixels of that colour
    assert near(expected) > 2000 and near(np.ones(3)) > 2000                 # both halves, each in its colour
    assert expected.min() < 0.8                                              # a colour, not washed out to white


@pytest.mark.parametrize("raw, rounded", [(0.0497, 0.05), (17.0, 20.0), (0.000524, 0.001), (1.0, 1.0),
                                          (1.00001, 2.0), (7.0001, 10.0), (0.0376, 0.04), (123456.0, 200000.0),
                                          (4.3e-7, 5e-7), (0.25, 0.4), (3.0, 4.0), (0.0, 0.0)])
def test_a_computed_map_limit_is_rounded_up_to_a_round_number(raw, rounded):
    assert _layers.bar_limit(raw) == pytest.approx(rounded, rel=1e-12)


def _bar_labels(viewer, layer) -> list[str]:
    """The tick labels of the colour bar napari draws for ``layer`` (its vispy node: no public API gives them)."""
    overlay = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[layer][layer.colorbar]
    return list(overlay.node.ticks._text.text)


def test_the_colour_bar_s_top_tick_is_its_limit(make_napari_viewer):
    """A scientist reads the top of the bar as the maps' limit, but at ±0.25 the bar's top tick read 0.2, at ±0.3
    0.25, at ±6 or ±7 5 (vispy chooses the ticks, napari gives no say): the limit is now one the bar puts a tick
    on, read off the bar napari draws for computed limits from 1e-4 to 10 and beyond."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((4, 4), np.float32), colormap=_layers.channel_colormap(0))
    _layers.show_colour_bar(layer)
    rng = np.random.default_rng(0)
    raw = np.r_[10.0 ** rng.uniform(-4, 1, 300), 10.0 ** rng.uniform(-9, 9, 100), 0.25, 0.3, 6.0, 7.0, 1.5]
    wrong = []
    for value in raw:
        limit = _layers.bar_limit(value)
        layer.contrast_limits = (-limit, limit)
        labels = _bar_labels(viewer, layer)
        if not (float(labels[-1]) == limit and float(labels[0]) == -limit and len(labels) >= 3):
            wrong.append((value, limit, labels))
        assert value <= limit <= 2 * value * (1 + 1e-12)
    assert not wrong, wrong[:5]


def test_the_colour_bar_labels_its_scale_whatever_the_maps_limit(make_napari_viewer, noise_analysis):
    """The bar of maps with limits ±0.0497 (a percentile) read only "0": vispy's ticks were ±0.05, outside it.
    Labels read off the colour bar napari draws (its vispy node: no public API gives them)."""
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    rng = np.random.default_rng(4)
    for scale in (0.0497 / _layers.map_limit(attr.maps), *10.0 ** rng.uniform(-5, 3, 12)):
        maps = [layer for layer in add_analysis(viewer, attr, red, stim_layer, maps=attr.maps * np.float32(scale))
                if layer.metadata[_layers.META]["role"] == "map"]
        (bar,) = [layer for layer in maps if layer.colorbar.visible]
        overlay = viewer.window._qt_viewer.canvas._layer_overlay_to_visual[bar][bar.colorbar]
        labels = [float(text) for text in overlay.node.ticks._text.text]
        assert len(labels) >= 3 and min(labels) < 0 < max(labels), (scale, bar.contrast_limits, labels)


def test_replacing_an_analysis_does_not_duplicate_layers(make_napari_viewer, noise_analysis, tiny):
    stim, attr, red = noise_analysis
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    first = add_analysis(viewer, attr, red, stim_layer)
    other = nr.attribute(tiny, stim, cell=1, steps=4, invariance="none")  # another cell: other maps
    second = add_analysis(viewer, other, None, stim_layer)
    assert len(viewer.layers) == 1 + len(second) == 1 + 8
    # the same model's maps go into the same layers (napari collects garbage for each layer it removes)
    assert second == first
    for c, layer in enumerate(second):
        np.testing.assert_array_equal(np.asarray(layer.data), other.maps[:, c])
        lim = _layers.bar_limit(_layers.map_limit(other.maps))
        np.testing.assert_allclose(layer.contrast_limits, (-lim, lim))
    # without a reduction: A{c} names, every channel visible, one row per channel
    names = [layer.name for layer in second]
    assert "noise: A0" in names and all(layer.visible for layer in second)
    plot = viewer.window.dock_widgets[_plot.DOCK_NAME]
    assert len(plot.rows) == 1 + 8  # the plot shows the latest analysis: the response, then every channel
    np.testing.assert_array_equal(plot.series[0]["values"], other.response)
    rows = list(plot.rows)
    add_analysis(viewer, attr, None, stim_layer)  # same layout: the plot's rows take the new traces
    assert plot.rows == rows
    np.testing.assert_allclose(plot.rows[3].lines[0].pos[:, 1], attr.channels[attr.frames, 2], rtol=1e-6)
    # a third analysis with the reduction again: the rows' layout changes, the plot is rebuilt to match
    add_analysis(viewer, attr, red, stim_layer)
    assert [[s["label"] for s in row.series] for row in plot.rows][1:] == [[red.label(c)] for c in red.kept]


def test_bar_maps_summed_along_y_are_stretched_over_the_map(make_napari_viewer, tiny):
    stim = nr.stimuli.moving_bar(speed=0.5, start=-8.0, stop=8.0, size=20, pre=10)
    attr = nr.attribute(tiny, stim, cell=1, steps=4, invariance="auto")
    assert attr.invariance == "y" and attr.maps.shape[2] == 1
    viewer = make_napari_viewer()
    layers = add_analysis(viewer, attr)
    layer = next(lay for lay in layers if lay.metadata.get(_layers.META, {}).get("role") == "map")
    h1, off = tiny.config.map_sizes[0], tiny.config.first_layer_offset
    np.testing.assert_allclose(layer.scale, (MS, h1 * UM, UM))
    # the single row covers stimulus rows off .. off + h1 - 1 (centred on their middle)
    np.testing.assert_allclose(layer.translate, (0, (off + (h1 - 1) / 2) * UM, off * UM))
    lo, hi = layer.data_to_world((0, -0.5, 0))[1], layer.data_to_world((0, 0.5, 0))[1]  # the row's edges
    np.testing.assert_allclose((lo, hi), ((off - 0.5) * UM, (off + h1 - 0.5) * UM))


def test_a_cropped_analysis_lines_up_with_its_larger_stimulus_layer(make_napari_viewer, tiny):
    """Maps of a centre crop sit over the cut window (crop_origin), not at the layer's corner."""
    stim = nr.stimuli.white_noise(frames=30, size=26, seed=1)
    attr = nr.attribute(tiny, stim, cell=0, steps=2, crop="center")
    viewer = make_napari_viewer()
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "big"))
    layers = add_analysis(viewer, attr, None, stim_layer)
    off = tiny.config.first_layer_offset
    np.testing.assert_allclose(viewer.layers["big: A0"].translate, (0, (3 + off) * UM, (3 + off) * UM))
    world = viewer.layers["big: A0"].data_to_world((7, 0, 0))
    np.testing.assert_allclose(stim_layer.world_to_data(world), (7, 3 + off, 3 + off))
    assert viewer.layers.selection.active is stim_layer and len(layers) == 8


def test_an_attribution_without_maps_adds_the_stimulus_and_plots_the_traces(make_napari_viewer, tiny):
    stim = nr.stimuli.flash_train(period=4, n_flashes=3, size=20, pre=10, post=10)
    attr = nr.attribute(tiny, stim, cell=0, steps=4, invariance="space")
    assert attr.maps is None
    viewer = make_napari_viewer()
    layers = add_analysis(viewer, attr)
    roles = [lay.metadata[_layers.META]["role"] for lay in layers]
    assert roles == ["stimulus"]
    plot = viewer.window.dock_widgets[_plot.DOCK_NAME]
    np.testing.assert_array_equal(plot.series[0]["values"], attr.response)


def test_long_traces_are_decimated_to_extremes():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(50_000)
    t = np.arange(v.size, dtype=float)
    td, vd = _plot.decimate(t, v, 500)
    assert len(td) <= 1000 and np.all(np.diff(td) > 0)
    np.testing.assert_array_equal(vd, v[td.astype(int)])  # only real samples
    assert vd.max() == v.max() and vd.min() == v.min()


def test_long_movie_path_gives_lazy_maps_and_same_traces(make_napari_viewer, tiny):
    stim = nr.stimuli.white_noise(frames=40, size=20, seed=4)
    ref = nr.attribute(tiny, stim, cell=0, steps=4)
    out = analysis.run_analysis(tiny, stim, cell=0, steps=4, reduce=False, lazy_threshold=0)
    assert out.lazy and out.attribution.maps is None
    np.testing.assert_allclose(out.attribution.channels, ref.channels, rtol=1e-4, atol=1e-6)
    viewer = make_napari_viewer()
    layers = add_analysis(viewer, out.attribution, None, maps=out.maps, limit=out.limit)
    maps = [lay for lay in layers if lay.metadata[_layers.META]["role"] == "map"]
    assert len(maps) == 8 and maps[0].data.shape == ref.maps[:, 0].shape
    viewer.dims.set_current_step(0, 25)
    np.testing.assert_allclose(np.asarray(maps[3].data[25]), ref.maps[25, 3], rtol=1e-4, atol=1e-6)


def test_the_whole_cell_traces_are_achromatic_and_every_channel_is_not():
    """The reduced circuit's trace was pink (#ff4fd8) next to A5's reddish purple (#cc79a7): one could not
    tell them apart in the trace dock. Channels are chromatic; the model's response (white) and the reduced
    circuit (grey) are not, and differ from each other."""
    import colorsys

    def sat_val(hex_colour):
        r, g, b, _ = _layers._rgba(hex_colour)
        return colorsys.rgb_to_hsv(r, g, b)[1:]

    assert all(sat_val(c)[0] >= 0.25 for c in _layers.CHANNEL_COLORS)
    (s_red, v_red), (s_resp, v_resp) = sat_val(_layers.REDUCED_COLOR), sat_val(_layers.RESPONSE_COLOR)
    assert s_red == 0 and s_resp == 0 and abs(v_resp - v_red) >= 0.3


def test_the_ground_truth_band_is_achromatic_wide_and_under_the_lines():
    """The truth's trace (Experiments dock, compare with the ground truth) must not read as a channel."""
    import colorsys

    r, g, b, a = _layers._rgba(_layers.TRUTH_COLOR, _layers.TRUTH_ALPHA)
    assert colorsys.rgb_to_hsv(r, g, b)[1] == 0 and a < 0.5 and _layers.TRUTH_WIDTH > _plot.LINE_WIDTH
    attr = nr.attribute(nr.RetinaCNN(nr.ModelConfig(history=10, size=20, kernels=(5, 5), n_cells=2)).eval(),
                        nr.stimuli.white_noise(frames=30, size=20, seed=0), steps=2)
    truth = np.linspace(0, 1, 30, dtype=np.float32)
    series = _layers.trace_series(attr, None, _layers.CellTraces(truth=truth))
    band = [s for s in series if s["kind"] == "truth"]
    assert len(band) == 1 and band[0]["row"] == 0 and band[0]["order"] < 0
    np.testing.assert_array_equal(band[0]["values"], truth)
    with pytest.raises(ValueError, match="one value per stimulus frame"):
        _layers.trace_series(attr, None, _layers.CellTraces(truth=truth[:-1]))


def test_a_trace_is_broken_where_nothing_was_computed_not_drawn_across():
    """An experiment's traces are finite on its attributed frames (windows thinned to every k-th frame): the
    line was drawn straight from each response peak to the next window, across frames nobody computed."""
    v = np.full(40, np.nan, np.float32)
    v[[0, 2, 4, 6]] = 1.0          # one window, thinned to every 2nd frame
    v[[20, 22, 24, 26, 28]] = 2.0  # the next window
    v[35] = 3.0                    # a lone rest frame
    index, runs = _plot.trace_runs(v)
    assert list(index) == [0, 2, 4, 6, 20, 22, 24, 26, 28, 35]
    assert list(runs) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    index, runs = _plot.trace_runs(np.arange(5, dtype=np.float32))   # a whole movie: one run
    assert list(runs) == [0] * 5


def test_the_plot_connects_no_points_across_a_gap(make_napari_viewer):
    viewer = make_napari_viewer()
    v = np.full(40, np.nan, np.float32)
    v[[0, 2, 4, 6, 20, 22, 24]] = [0, 1, 2, 1, 0, 3, 0]
    series = [{"label": "model response", "kind": "response", "channel": -1, "row": 0, "values": v,
               "color": _layers._rgba(_layers.RESPONSE_COLOR)}]
    plot = _plot.trace_plot(viewer)
    plot.set_traces(series, np.arange(40) * 10.0, "gap", "gap")
    line = plot.rows[0].lines[0]
    assert list(line.connect) == [True, True, True, False, True, True, False]


def test_every_trace_row_labels_a_value_besides_zero(make_napari_viewer, qtbot):
    """A row whose trace topped at 0.0877 (or 0.43, the audit's reversing-bar row) read "0" alone: vispy's next
    tick, 0.1 (0.5), lay just outside the row's range, so the row had no scale. Labels read off the rows' axes as
    drawn (their vispy nodes)."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)
    plot = _plot.trace_plot(viewer)
    t = np.linspace(0, 1, 300)
    for tops in [(0.0877, 0.43, 4.4, 8.5, 17.0, 0.0497), (0.093, 0.46, 0.0089, 95.0, 1.7, 0.39)]:
        series = [{"label": f"A{r}", "kind": "channel", "channel": r, "row": r,
                   "values": (top * (t ** 2 - 0.045 * (r % 2))).astype(np.float32),
                   "color": _layers.channel_color(r)} for r, top in enumerate(tops)]
        plot.set_traces(series, np.arange(300) * 10.0, "rows", f"rows {tops[0]}")
        qtbot.wait(20)
        plot.canvas.render()
        for row, top in zip(plot.rows, tops):
            labels = [float(text) for text in row.axis.axis._text.text]
            assert any(value != 0 for value in labels), (top, row.y_range, labels)
            assert row.y_range[1] >= top   # the whole trace still in its row
            # the row shows its range and no more: vispy read margin=0 as 0.1 absolute, so a row topping at
            # 0.0089 spanned -0.1 to 0.11 and its trace was squashed into a twentieth of it
            rect = row.view.camera.rect
            np.testing.assert_allclose((rect.bottom, rect.top), row.y_range, rtol=1e-6, atol=1e-9 * top)


def test_a_lazy_stack_s_limits_read_three_of_its_blocks_and_none_of_an_integer_stack():
    """A review: the contrast limits of a store's lazy stimulus read 32 frames spread over the movie, so every
    2048-frame block of it (all 50,000 frames, on the GUI thread), and an integer stack's too, for no limits."""
    import dask.array as da

    data = np.random.default_rng(0).normal(size=(1000, 6, 6)).astype(np.float32)
    read = []

    def counted(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    lazy = da.from_array(data, chunks=(100, 6, 6)).map_blocks(counted, dtype=np.float32)
    lim = stimulus_layer_kwargs(lazy)["contrast_limits"][1]
    assert sorted(set(read)) == [0, 5, 9]     # the first, middle and last blocks
    assert lim == float(np.abs(data[np.r_[np.linspace(0, 99, 8), np.linspace(500, 599, 8),
                                          np.linspace(900, 999, 8)].astype(int)]).max())
    read.clear()
    ints = da.from_array((data * 10).astype(np.int16), chunks=(100, 6, 6)).map_blocks(counted, dtype=np.int16)
    assert "contrast_limits" not in stimulus_layer_kwargs(ints) and read == []
