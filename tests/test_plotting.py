"""plotting.write_figure: a valid PNG written atomically; matplotlib loaded only for figures, checked before work."""

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


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nr.RetinaCNN(nr.ModelConfig(history=HISTORY, size=SIZE, kernels=(5, 5), n_cells=2)).eval()


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
    assert len(labels) == 4 and figures[0].axes[-1].get_xlabel() == "time (ms)"
    # space-invariant latency: the stimulus panel is a contrast trace, in s.d. of the training stimulus
    assert labels[0] == "contrast (s.d. of the training stimulus)"
    assert all(label.endswith("(spikes/bin)") for label in labels[1:3]), labels
    assert labels[3] == "term of the softplus argument (a.u.)"  # not a rate: softplus comes after the sum


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
    assert len(legends) == 3  # response, attribution, contribution
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
    title = fig.axes[1].get_title()
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
    for ax in fig.axes:
        assert onsets <= _event_lines(ax), ax.get_title()
    assert "onset" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_events_are_read_generically_from_the_conditions(result, tmp_path, monkeypatch):
    """osr's omitted flash, reversal's reversal frame, onsets and offsets: whatever the conditions hold."""
    import dataclasses

    conditions = [{"onset": 5, "reversal_frame": 10, "offset": 15, "omitted": 20, "start": 0, "stop": 40},
                  {"omitted": 25, "onsets": [1, 2], "window": 10}]
    fig = _figure(dataclasses.replace(result, conditions=conditions), tmp_path, monkeypatch)
    for ax in fig.axes:
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
