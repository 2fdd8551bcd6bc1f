"""plotting.write_figure: a valid PNG written atomically; matplotlib loaded only for figures, checked before work;
the readout panel draws each experiment's readout (model, reduced circuit, truth) and never raises on its values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import napari_retina as nr
from napari_retina import plotting
from napari_retina.experiments import base, latency

SIZE, HISTORY = 20, 10
PARAMS = {"intensities": [0.0, -2.0, -5.0], "max_frames": 30}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _loud(model):
    """``model`` with its output batch norm's gain ×100: an untrained network answers flashes at hundredths of a
    spike per bin, under the 0.5 the latency criterion takes as an answer (its latencies would all be NaN)."""
    with torch.no_grad():
        model.bn3.weight.mul_(100.0)
    return model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _loud(nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 5), n_cells=2)).eval())


@pytest.fixture(scope="module")
def result(tiny):
    return nr.experiments.run("latency", tiny, cell=0, steps=4, **PARAMS)


@pytest.fixture(scope="module")
def truth():
    """A ground-truth-like result of the same protocol (no attribution, no reduction)."""
    return base.run_response(latency, lambda s: np.full((len(s), 1), 0.5, np.float32), size=SIZE,
                             history=HISTORY, **PARAMS)


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_write_figure_writes_a_valid_png_of_the_documented_size(result, truth, tmp_path):
    path = plotting.write_figure(result, tmp_path / "latency.png", truth)
    assert path == tmp_path / "latency.png"
    data = path.read_bytes()
    assert _png_size(data) == (plotting.FIGSIZE[0] * plotting.DPI, plotting.FIGSIZE[1] * plotting.DPI)
    assert data.endswith(b"IEND\xaeB`\x82")                     # complete: the PNG's last chunk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]   # no temporary left


def test_every_panel_says_its_unit(result, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    plotting.write_figure(result, tmp_path / "fig.png")
    labels = [" ".join(ax.get_ylabel().split()) for ax in figures[0].axes if ax.get_ylabel()]
    assert len(labels) == 5 and figures[0].axes[3].get_xlabel() == "time (ms)"  # four time panels, the readout's
    # space-invariant latency: the stimulus panel is a contrast trace, in s.d. of the training stimulus
    assert labels[0] == "contrast (s.d. of the training stimulus)"
    assert all(label.endswith("(spikes/bin)") for label in labels[1:3]), labels
    assert labels[3] == "term of the softplus argument (a.u.)"  # not a rate: softplus comes after the sum
    assert labels[4] == "onset latency (ms)"
    assert figures[0].axes[4].get_xlabel() == "|flash contrast| (s.d. of the training stimulus)"


def test_a_path_without_suffix_gets_a_png(result, tmp_path):
    data = plotting.write_figure(result, tmp_path / "figure").read_bytes()
    assert data[:8] == PNG_SIGNATURE


def test_a_failed_save_leaves_the_old_figure_and_no_temporary(result, tmp_path, monkeypatch):
    """Atomic: a save that dies half-way changes nothing at the destination."""
    from matplotlib.figure import Figure

    path = tmp_path / "latency.png"
    path.write_bytes(b"old figure")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_SIGNATURE + b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plotting.write_figure(result, path)
    assert path.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png"]


def test_a_result_without_attribution_is_one_sentence(truth, tmp_path):
    with pytest.raises(ValueError, match=r"^a figure needs a model's experiment result \(with attribution and "
                                         r"reduction\), got ExperimentResult without them$"):
        plotting.write_figure(truth, tmp_path / "truth.png")
    assert list(tmp_path.iterdir()) == []



def test_a_truth_of_another_stimulus_a_bad_recovery_and_an_unknown_format_are_one_sentence(result, tmp_path):
    """Each refused before the figure is drawn (matplotlib's own errors came from deep inside it, the format's
    only after the whole figure was built), and nothing is written."""
    other = base.run_response(latency, lambda s: np.full((len(s), 1), 0.5, np.float32), size=SIZE,
                              history=HISTORY, **{**PARAMS, "intensities": [-1.0, -2.0]})
    cases = [({"truth": other}, ValueError, r"^truth must be the ground truth's 'latency' run on the model's stimulus "
                                            rf"\({len(result.stimulus)} frames\), got its 'latency' run on "
                                            rf"{len(other.stimulus)} frames; run it as run_truth\('latency', "),
             ({"truth": "x"}, TypeError, r"^truth must be the ground truth's ExperimentResult .* got str$"),
             ({"recovery": "x"}, TypeError, r"^recovery must be a recovery report .* got str$")]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            plotting.write_figure(result, tmp_path / "f.png", **kwargs)
    with pytest.raises(ValueError, match=r"^a figure is written as one of .*\.png.*, got 'f.xyz'$"):
        plotting.write_figure(result, tmp_path / "f.xyz")
    assert list(tmp_path.iterdir()) == []


def test_importing_the_core_plotting_and_the_cli_loads_no_matplotlib():
    code = ("import sys, napari_retina as nr, napari_retina.plotting, napari_retina.cli, napari_retina.experiments; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_matplotlib_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(ImportError, match=r"^figures need matplotlib, which cannot be imported \(.*\); install it "
                                          r"with pip install matplotlib$"):
        plotting.require_matplotlib()


def test_cli_experiment_without_matplotlib_fails_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from napari_retina import checkpoint
    from napari_retina.cli import main

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before matplotlib was checked")

    monkeypatch.setattr(checkpoint, "load_model", forbidden)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["experiment", "latency", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("napari-retina experiment: error: figures need matplotlib, which cannot be imported")
    assert not (tmp_path / "out").exists()


# --- what the figure shows -------------------------------------------------------------------------------------


def _figure(res, tmp_path, monkeypatch, truth=None):
    """The Figure that write_figure saves, drawn (captured at savefig, as the file was written)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    plotting.write_figure(res, tmp_path / "fig.png", truth)
    fig = figures[0]
    fig.canvas.draw()
    return fig


@pytest.fixture(scope="module")
def anticipation(tiny):
    return nr.experiments.run("anticipation", tiny, cell=0, steps=4, max_frames=30)


def test_legends_sit_outside_their_panels_and_inside_the_figure(result, truth, tmp_path, monkeypatch):
    """A legend over the data hid the largest peaks: every legend is beside its axes, and not clipped."""
    fig = _figure(result, tmp_path, monkeypatch, truth)
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 4  # response, attribution, contribution, readout
    page = fig.bbox
    for ax, legend in legends:
        box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(frame), (ax.get_title(), box, frame)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1


def test_titles_say_the_experiment_cell_model_and_every_present_flag_in_words(result, truth, tmp_path,
                                                                              monkeypatch):
    model = result.attribution.model
    monkeypatch.setattr(model, "provenance", {"data_file": "/data/mix.h5", "date": "2026-11-30 22:47:32 UTC"},
                        raising=False)
    fig = _figure(result, tmp_path, monkeypatch, truth)
    assert fig.get_suptitle() == "latency experiment — cell 0 — model trained on mix.h5, 2026-11-30"
    yn = {True: "yes", False: "no"}
    title = " ".join(fig.axes[1].get_title().split())   # wrapped to fit its panel
    assert title == (f"response of cell 0 — latency present: model {yn[result.readout['present']]}, "
                     f"reduced circuit {yn[result.readout['reduced']['present']]}, "
                     f"ground truth {yn[truth.readout['present']]}")
    assert "True" not in title and "False" not in title


def test_model_name_comes_from_the_provenance():
    class M:
        provenance: dict = {}

    m = M()
    assert plotting.model_name(m) == "model without provenance (not trained by napari-retina)"
    m.provenance = {"imported": {"format": "torch-deep-retina", "file": "bncnn.pt"}}
    assert plotting.model_name(m) == "model bncnn.pt (torch-deep-retina)"
    m.provenance = {"data_file": "/tmp/sw2/mix.h5"}
    assert plotting.model_name(m) == "model trained on mix.h5"


def test_the_full_field_contrast_label_fits_its_panel(result, tmp_path, monkeypatch):
    fig = _figure(result, tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    label = ax.yaxis.label.get_window_extent(renderer)
    frame = ax.get_window_extent(renderer)
    assert label.height <= frame.height and fig.bbox.x0 <= label.x0


def test_every_flashed_bar_shows_in_the_rendered_x_t_stimulus(anticipation, tmp_path, monkeypatch):
    """2-frame flashes among ~2000 frames: nearest-neighbour drawing dropped most of them at figure
    resolution; each must leave a dark pixel where (when, where) it was flashed."""
    fig = _figure(anticipation, tmp_path, monkeypatch)
    rgba = np.asarray(fig.canvas.buffer_rgba())
    height = rgba.shape[0]
    ax, stim = fig.axes[0], anticipation.stimulus
    row = stim[:, stim.shape[1] // 2, :]
    half_um = stim.shape[2] / 2 * plotting.PIXEL_UM
    flashes = [c for c in anticipation.conditions if c["kind"] == "flash"]
    assert len(flashes) >= 10
    for c in flashes:
        seg = row[c["start"]:c["stop"]]
        t, x = np.nonzero(seg)
        t0, t1 = (c["start"] + t.min()) * plotting.FRAME_MS, (c["start"] + t.max() + 1) * plotting.FRAME_MS
        x0, x1 = -half_um + x.min() * plotting.PIXEL_UM, -half_um + (x.max() + 1) * plotting.PIXEL_UM
        (c0, r0), (c1, r1) = ax.transData.transform([(t0, x0), (t1, x1)])
        cols = slice(int(np.floor(min(c0, c1))) - 2, int(np.ceil(max(c0, c1))) + 3)
        rows = slice(height - int(np.ceil(max(r0, r1))), height - int(np.floor(min(r0, r1))))
        patch = rgba[rows, cols, :3].astype(int)
        assert patch.size and patch.max(axis=-1).min() < 60, (c, patch.max(axis=-1).min())  # black: contrast −1


def test_pool_time_keeps_every_short_event_with_its_sign():
    image = np.zeros((1000, 3), np.float32)
    image[[10, 11], 0] = -1.0      # a 2-frame dark flash
    image[503, 1] = 0.7            # a 1-frame bright one
    image[998, 2] = -0.5           # in the padded last bin
    pooled, k = plotting.pool_time(image, 90)
    assert k == 12 and pooled.shape == (84, 3)
    assert pooled[0, 0] == -1.0 and pooled[503 // 12, 1] == np.float32(0.7) and pooled[-1, 2] == -0.5
    assert np.count_nonzero(pooled) == 3
    same, k1 = plotting.pool_time(image, 5000)
    assert k1 == 1 and np.array_equal(same, image)


def _event_lines(ax) -> set:
    """x (ms) of the vertical lines drawn across the axes."""
    return {float(line.get_xdata()[0]) for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1]
            and tuple(line.get_ydata()) == (0, 1)}


def test_every_time_panel_marks_the_experiments_events(result, tmp_path, monkeypatch):
    fig = _figure(result, tmp_path, monkeypatch)
    onsets = {c["onset"] * plotting.FRAME_MS for c in result.conditions}
    assert len(onsets) == 3
    for ax in fig.axes[:4]:  # the time panels (the readout panel's x is not time)
        assert onsets <= _event_lines(ax), ax.get_title()
    assert "onset" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_events_are_read_generically_from_the_conditions(result, tmp_path, monkeypatch):
    """osr's omitted flash, reversal's reversal frame, onsets and offsets: whatever the conditions hold."""
    import dataclasses

    conditions = [{"onset": 5, "reversal_frame": 10, "offset": 15, "omitted": 20, "start": 0, "stop": 40},
                  {"omitted": 25, "onsets": [1, 2], "window": 10}]
    fig = _figure(dataclasses.replace(result, conditions=conditions), tmp_path, monkeypatch)
    for ax in fig.axes[:4]:
        assert _event_lines(ax) == {50.0, 100.0, 150.0, 200.0, 250.0}
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert {"onset", "reversal", "offset", "omitted flash"} <= set(legend)


def test_the_contribution_panel_names_the_softplus_terms_and_the_pools(anticipation, tmp_path, monkeypatch):
    fig = _figure(anticipation, tmp_path, monkeypatch)
    ax = fig.axes[3]
    assert "spikes/bin" not in ax.get_ylabel() and "softplus" in ax.get_ylabel()
    assert anticipation.reduction.pools == ["abs", "signed"]
    title = " ".join(ax.get_title().split())
    assert "softplus" in title and "mean_t |A_c|" in title and "mean_t A_c (signed)" in title
    renderer = fig.canvas.get_renderer()
    box = ax.title.get_window_extent(renderer)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1  # readable: not cut at the figure's edges


def test_channel_legends_say_which_truth_pathway_a_channel_recovers(result, tmp_path, monkeypatch):
    """The kernel-rule labels can contradict the recovery (the shipped model's A5 reads "OFF fast" and recovers
    the truth's ON fast): with a recovery report the legends carry both."""
    from matplotlib.figure import Figure

    kept = [int(c) for c in result.reduction.kept]
    recovery = {"recovered": {"ON fast": [kept[0]], "ON slow": [], "OFF fast": kept[1:2]}}
    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    plotting.write_figure(result, tmp_path / "fig.png", None, recovery)
    axes = figures[0].axes
    for ax in axes[2:4]:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts[0] == f"{result.reduction.label(kept[0])} ≈ truth ON fast"
        if len(kept) > 1:
            assert texts[1] == f"{result.reduction.label(kept[1])} ≈ truth OFF fast"
        assert all(t == result.reduction.label(c) for t, c in zip(texts[2:], kept[2:]))
    # without a report, the labels alone
    assert plotting.channel_labels(result.reduction) == {c: result.reduction.label(c) for c in kept}


# --- the readout panel: each experiment's classic figure ----------------------------------------------------------

READOUT_PARAMS = {"max_frames": 30}
#: experiment -> (x key, y key, x as drawn from the readout's x, (x unit, y unit) in the axis labels)
READOUT_AXES = {
    "osr": ("periods_ms", "latency_from_last_ms", lambda x: x, ("(ms)", "(ms)")),
    "latency": ("intensities", "latency_ms", np.abs, ("(s.d. of the training stimulus)", "(ms)")),
    "anticipation": ("speed_list", "lead_um_per_speed", lambda v: v * 55.0 / 10.0, ("(mm/s)", "(µm")),
    "reversal": ("reversal_positions_px", "burst_latencies_ms", lambda v: v * 55.0, ("(µm", "(ms)")),
    "doubling": ("widths_px", "f2_f1_per_width", lambda v: v * 55.0, ("(µm)", "F2/F1")),
}
SOURCES = ("model", "reduced circuit", "ground truth")


@pytest.fixture(scope="module")
def other():
    """A second tiny model (seed 1), standing in for the ground truth: a response that differs from the model's."""
    torch.manual_seed(1)
    return _loud(nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 5), n_cells=2)).eval())


@pytest.fixture(scope="module")
def runs(tiny, other):
    """name -> (model result, truth-like result of the same movie) for the five experiments (30 frames each)."""
    from importlib import import_module

    out = {}
    for name in READOUT_AXES:
        res = nr.experiments.run(name, tiny, cell=0, steps=4, **READOUT_PARAMS)
        module = import_module(f"napari_retina.experiments.{name}")
        truth = base.run_response(module, lambda s: nr.predict(other, s), size=SIZE, history=HISTORY, **res.params)
        out[name] = res, truth
    return out


def _with_gaps(res, name):
    """``res`` with four points appended to its model readout's (x, y) lists that the panel must skip:
    y None, NaN and inf, and x None."""
    import dataclasses

    xkey, ykey, _, _ = READOUT_AXES[name]
    readout = dict(res.readout)
    x, y = list(readout[xkey]), list(readout[ykey])
    readout[xkey] = x + [x[-1] + 1, x[-1] + 2, x[-1] + 3, None]
    readout[ykey] = y + [None, float("nan"), float("inf"), 5.0]
    return dataclasses.replace(res, readout=readout)


def _readout_ax(fig):
    """The readout panel: the figure's fifth axes, below the four time panels."""
    assert len(fig.axes) == 5
    return fig.axes[4]


def _series(ax, label):
    """(x, y) of the line labelled ``label``; None when there is none."""
    lines = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(lines) <= 1, label
    return (np.asarray(lines[0].get_xdata(), float), np.asarray(lines[0].get_ydata(), float)) if lines else None


def _finite(readout, name):
    """The (x, y) the panel should draw from ``readout``: finite pairs (positive y on doubling's log axis)."""
    xkey, ykey, x_fn, _ = READOUT_AXES[name]
    x = np.array([np.nan if v is None else v for v in readout[xkey]], float)
    y = np.array([np.nan if v is None else v for v in readout[ykey]], float)
    keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if name == "doubling" else True)
    return x_fn(x[keep]), y[keep]


@pytest.mark.parametrize("name", list(READOUT_AXES))
def test_the_readout_panel_draws_every_sources_finite_readout(name, runs, tmp_path, monkeypatch):
    res, truth = runs[name]
    xkey, ykey, _, (x_unit, y_unit) = READOUT_AXES[name]
    res = _with_gaps(res, name)
    fig = _figure(res, tmp_path, monkeypatch, truth)
    ax = _readout_ax(fig)
    for label, readout in zip(SOURCES, (res.readout, res.readout["reduced"], truth.readout)):
        want_x, want_y = _finite(readout, name)
        assert len(want_x), (label, readout[ykey])  # something to draw
        got = _series(ax, label)
        assert got is not None, label
        np.testing.assert_allclose(got[0], want_x, err_msg=label)
        np.testing.assert_allclose(got[1], want_y, err_msg=label)
    assert len(_series(ax, "model")[0]) <= len(res.readout[xkey]) - 4   # None, NaN and inf were left out
    assert x_unit in ax.get_xlabel() and y_unit in " ".join(ax.get_ylabel().split())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(SOURCES) <= set(legend)
    renderer = fig.canvas.get_renderer()
    for artist in (ax.title, ax.xaxis.label, ax.yaxis.label, ax.get_legend()):
        box = artist.get_window_extent(renderer)    # nothing cut at the figure's edges
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0, artist
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_the_truth_and_reduced_series_are_drawn_only_when_given(runs, tmp_path, monkeypatch):
    import dataclasses

    res, truth = runs["latency"]
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch))             # no truth
    assert _series(ax, "model") is not None and _series(ax, "reduced circuit") is not None
    assert _series(ax, "ground truth") is None
    assert "ground truth" not in [t.get_text() for t in ax.get_legend().get_texts()]
    readout = {k: v for k, v in res.readout.items() if k != "reduced"}
    ax = _readout_ax(_figure(dataclasses.replace(res, readout=readout), tmp_path, monkeypatch, truth))
    assert _series(ax, "reduced circuit") is None
    assert _series(ax, "model") is not None and _series(ax, "ground truth") is not None


def test_osr_draws_each_fitted_line_and_the_slope_bounds(runs, tmp_path, monkeypatch):
    import dataclasses

    res, truth = runs["osr"]
    readout = dict(res.readout, slope=0.8, intercept=12.0)
    res = dataclasses.replace(res, readout=readout)
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch, truth))
    fits = [ln for ln in ax.get_lines() if ln.get_label().startswith("model fit")]
    assert len(fits) == 1 and "slope 0.80 ∈ [0.5, 1.5]" in fits[0].get_label()
    x, y = np.asarray(fits[0].get_xdata(), float), np.asarray(fits[0].get_ydata(), float)
    np.testing.assert_allclose(y, 12.0 + 0.8 * x)
    finite_x = _finite(readout, "osr")[0]
    assert (x.min(), x.max()) == (finite_x.min(), finite_x.max())
    assert "[0.5, 1.5]" in " ".join(ax.get_title().split())


def test_anticipation_marks_zero_the_least_lead_and_a_pure_delay(runs, tmp_path, monkeypatch):
    res, truth = runs["anticipation"]
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch))
    levels = {float(ln.get_ydata()[0]) for ln in ax.get_lines() if tuple(ln.get_xdata()) == (0, 1)}
    assert levels == {0.0, res.readout["lead_floor_um"]} and res.readout["lead_floor_um"] == 27.5   # the 2 px bar
    delay = _series(ax, "model: a pure delay (−speed × the flash response's delay)")
    np.testing.assert_allclose(delay[1], -np.asarray(res.readout["lag_expected_um"]))
    np.testing.assert_allclose(delay[0], np.asarray(res.readout["speed_list"]) * nr.PIXEL_UM / nr.FRAME_MS)


def test_reversal_fills_the_bursting_positions_and_shades_the_latency_band(runs, tmp_path, monkeypatch):
    import dataclasses

    res, _ = runs["reversal"]
    n = len(res.readout["reversal_positions_px"])
    bursting = [i % 3 == 0 for i in range(n)]
    res = dataclasses.replace(res, readout=dict(res.readout, bursting=bursting))
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch))
    filled = [ln for ln in ax.get_lines() if ln.get_label() == "_model bursting"]
    assert len(filled) == 1
    x = np.asarray(res.readout["reversal_positions_px"], float)[bursting] * nr.PIXEL_UM
    np.testing.assert_allclose(filled[0].get_xdata(), x)
    assert _series(ax, "model")[0].size == n and ax.get_lines()[0].get_markerfacecolor() == "none"
    bands = [p for p in ax.patches if "[150, 350] ms" in p.get_label()]
    assert len(bands) == 1
    ys = ax.transData.inverted().transform(bands[0].get_verts())[:, 1]   # display -> data
    np.testing.assert_allclose((ys.min(), ys.max()), (150.0, 350.0))


def test_reversal_draws_the_least_squares_line_of_each_sources_bursts(runs, tmp_path, monkeypatch):
    import dataclasses

    res, _ = runs["reversal"]
    n = len(res.readout["reversal_positions_px"])
    pos = np.asarray(res.readout["reversal_positions_px"], float)
    lat = 200.0 + 12.0 * pos + 5.0 * np.cos(pos)                     # rising, not exactly on a line
    bursting = [i >= n // 2 for i in range(n)]
    fit = np.polyfit(pos[bursting], lat[bursting], 1)
    readout = dict(res.readout, bursting=bursting, burst_latencies_ms=lat.tolist(),
                   burst_latency_slope_ms_per_px=float(fit[0]))
    ax = _readout_ax(_figure(dataclasses.replace(res, readout=readout), tmp_path, monkeypatch))
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("model fit")]
    assert len(lines) == 1 and f"{fit[0]:+.1f} ms/px" in lines[0].get_label()
    x, y = np.asarray(lines[0].get_xdata(), float), np.asarray(lines[0].get_ydata(), float)
    np.testing.assert_allclose(x, [pos[bursting].min() * nr.PIXEL_UM, pos[bursting].max() * nr.PIXEL_UM])
    np.testing.assert_allclose(y, np.polyval(fit, x / nr.PIXEL_UM))  # the least-squares line itself


def test_doubling_is_on_a_log_axis_with_the_ratio_one_line(runs, tmp_path, monkeypatch):
    import dataclasses

    res, _ = runs["doubling"]
    readout = dict(res.readout, f2_f1_per_width=[1e4, 0.0, 0.5])     # 0 cannot be drawn on a log axis
    ax = _readout_ax(_figure(dataclasses.replace(res, readout=readout), tmp_path, monkeypatch))
    assert ax.get_yscale() == "log"
    x, y = _series(ax, "model")
    np.testing.assert_allclose(y, [1e4, 0.5])
    np.testing.assert_allclose(x, np.asarray(readout["widths_px"])[[0, 2]] * nr.PIXEL_UM)
    assert 1.0 in {float(ln.get_ydata()[0]) for ln in ax.get_lines() if tuple(ln.get_xdata()) == (0, 1)}
    lo, hi = ax.get_ylim()
    assert lo <= 0.5 and hi >= 1e4


@pytest.mark.parametrize("ratios,marked", [([1000.0, 2.0, 0.5], True), ([3.0, 2.0, 0.5], False)])
def test_doubling_marks_the_ratio_s_ceiling_where_a_point_reaches_it(runs, tmp_path, monkeypatch, ratios, marked):
    """F1 is floored at a thousandth of F2, so F2/F1 stops at 1000: a point there is a lower bound, and the panel
    did not say so (a last session's audit)."""
    import dataclasses

    from napari_retina.experiments import doubling

    res, _ = runs["doubling"]
    ax = _readout_ax(_figure(dataclasses.replace(res, readout=dict(res.readout, f2_f1_per_width=ratios)),
                             tmp_path, monkeypatch))
    ceiling = [ln for ln in ax.get_lines() if "ceiling" in ln.get_label()]
    assert len(ceiling) == int(marked)
    if marked:
        assert float(ceiling[0].get_ydata()[0]) == 1 / doubling.F1_FLOOR_SHARE == 1000
        assert "lower bound" in ceiling[0].get_label()
        assert ceiling[0].get_label() in [" ".join(t.get_text().split()) for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("name", list(READOUT_AXES))
def test_every_title_and_legend_lies_inside_the_figure(name, runs, tmp_path, monkeypatch):
    """A scientist's audit: the reversal figure's response title read "sponse of cell 0 …", cut at the figure's
    left edge (its readout legend's long entries narrowed every panel, and a title wider than its panel spilt
    out on both sides). Titles and legend entries wrap; every one is whole inside the figure."""
    res, truth = runs[name]
    fig = _figure(res, tmp_path, monkeypatch, truth)
    renderer, page = fig.canvas.get_renderer(), fig.bbox
    artists = [ax.title for ax in fig.axes] + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for artist in artists:
        box = artist.get_window_extent(renderer)
        assert page.x0 - 0.5 <= box.x0 and box.x1 <= page.x1 + 0.5, (name, getattr(artist, "get_text", str)())


def test_a_verdict_of_no_says_under_the_readout_which_clauses_fail(runs, tmp_path, monkeypatch):
    """A scientist's audit: doubling's panel title gives its criterion in short ("rises ≥ 2× to the narrowest bars,
    > 1 there"), which the model's points met while its verdict was no (F2 under its floor). The clauses a source
    does not meet (its readout's ``unmet``) are written under the panel, where they hide no point."""
    import dataclasses

    res, truth = runs["doubling"]
    clause = "F2 ≥ 0.1 spikes/bin at the narrowest bars (here 0.0106)"
    res = dataclasses.replace(res, readout=dict(res.readout, present=False, unmet=[clause]))
    truth = dataclasses.replace(truth, readout=dict(truth.readout, present=True, unmet=[]))
    fig = _figure(res, tmp_path, monkeypatch, truth)
    ax = _readout_ax(fig)
    notes = [t for t in ax.texts if "not present" in t.get_text()]
    assert len(notes) == 1
    text = " ".join(notes[0].get_text().split())
    assert f"model, not present: {clause}" in text and "ground truth" not in text
    renderer = fig.canvas.get_renderer()
    box = notes[0].get_window_extent(renderer)
    assert box.y1 <= ax.xaxis.label.get_window_extent(renderer).y0 + 0.5     # under the x-axis label
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0   # inside the figure


def _blank(value):
    """A readout value with every number replaced by NaN, None or inf (lists keep their length)."""
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    if isinstance(value, list):
        return [(None, float("nan"), float("inf"))[i % 3] for i in range(len(value))]
    if isinstance(value, bool):
        return False
    return None if isinstance(value, (int, float)) else value


@pytest.mark.parametrize("name", list(READOUT_AXES))
def test_a_readout_of_nan_and_none_gives_a_figure_that_says_so(name, runs, tmp_path, monkeypatch):
    import dataclasses

    res, truth = runs[name]
    res = dataclasses.replace(res, readout=_blank(res.readout))
    truth = dataclasses.replace(truth, readout=_blank(truth.readout))
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch, truth))
    assert all(_series(ax, label) is None for label in SOURCES)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert all(f"{label}: no finite" in texts for label in SOURCES), texts


def test_a_readout_without_its_keys_says_so(runs, tmp_path, monkeypatch):
    import dataclasses

    res, _ = runs["osr"]
    res = dataclasses.replace(res, readout={"present": False, "reduced": {"periods_ms": [50.0]}})
    ax = _readout_ax(_figure(res, tmp_path, monkeypatch))
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "model: no list 'periods_ms' or 'latency_from_last_ms'" in texts
    assert "reduced circuit: no list 'latency_from_last_ms'" in texts


def test_another_experiment_gets_a_figure_whose_readout_panel_says_it_has_none(result, truth, tmp_path,
                                                                               monkeypatch):
    """A registered custom experiment: the time panels as ever, no readout figure (and no crash)."""
    import dataclasses

    custom = dataclasses.replace(result, name="my_flicker", readout={"present": True, "gain": [1.0, None]})
    fig = _figure(custom, tmp_path, monkeypatch, dataclasses.replace(truth, name="my_flicker"))
    ax = _readout_ax(fig)
    assert [t.get_text() for t in ax.texts] == [
        "readout: no figure for the 'my_flicker' experiment (there is one for osr, latency, anticipation, "
        "reversal, doubling)"]
    assert fig.get_suptitle().startswith("my_flicker experiment")
    # one can be added for it
    calls = []
    monkeypatch.setitem(plotting.READOUT_PANELS, "my_flicker", lambda ax, sources: calls.append(sources) or [])
    _figure(custom, tmp_path, monkeypatch)
    assert [label for label, _ in calls[0]] == ["model"] and calls[0][0][1]["gain"] == [1.0, None]
