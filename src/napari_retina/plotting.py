"""Figures of experiment results (matplotlib, Agg; imported only when a figure is made).

The core never imports matplotlib at import time: :func:`write_figure` imports
it when called, renders on an Agg canvas of its own (no pyplot, no global
backend switch, so it is safe inside a napari session) and writes the file
atomically (:func:`napari_retina._atomic.atomic_write`). Callers that do work
before drawing call :func:`require_matplotlib` first, so a missing matplotlib
fails in one sentence before the work instead of after it.

Example
-------
>>> res = nr.experiments.run("latency", nr.load_model())          # doctest: +SKIP
>>> write_figure(res, "latency.png")                               # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ._atomic import atomic_write
from ._types import PathLike
from ._units import FRAME_MS, PIXEL_UM
from ._validate import is_real
from .experiments import anticipation, doubling, latency, osr, reversal
from .experiments.base import unmet_of
from .experiments.recovery import channel_labels

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import matplotlib.axes
    import matplotlib.figure

__all__ = [
    "require_matplotlib", "write_figure", "make_figure", "model_name", "pool_time", "readout_panel", "DPI", "FIGSIZE",
    "EVENTS", "POOL_NAMES", "SOURCE_STYLES", "MM_PER_S", "READOUT_PANELS"
]


#: resolution of the written figure (dots per inch)
DPI = 90
#: figure size in inches (width, height)
FIGSIZE = (11, 12)


def require_matplotlib() -> None:
    """Raise an ImportError (one sentence) when matplotlib cannot be imported; no-op otherwise."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"figures need matplotlib, which cannot be imported ({exc}); install it with pip install matplotlib"
        ) from None


def write_figure(res: Any, path: PathLike, truth: Optional[Any] = None, recovery: Optional[dict] = None) -> Path:
    """Write a figure of a model's experiment result to ``path`` (atomically); return the path.

    The figure (:func:`make_figure`) is titled with the experiment, the analysed
    cell(s) and the model (:func:`model_name`), over four panels sharing a time
    axis (ms, 1 frame = :data:`~napari_retina._units.FRAME_MS`) and, below
    them, the readout panel:

    - the stimulus: the full-field contrast in s.d. of the training stimulus,
      or, for bars, an x–t image of the middle row in µm (grey scale from −1
      to +1 s.d., values beyond drawn black or white), its frames max-|value| pooled to half the panel's width
      in pixels so that a 2-frame flash stays visible (:func:`pool_time`);
    - the response: the model's summed rate, the reduced circuit's and, with
      ``truth``, the ground-truth retina's (spikes per bin), titled with each
      one's ``present`` flag;
    - the kept channels' attributions A_c(t) on the attributed frames (spikes per bin);
    - each kept channel's term of the reduced circuit's softplus argument;
    - the readout as the classic figure of the experiment's paper
      (:data:`READOUT_PANELS`, :func:`readout_panel`): the model's, the reduced
      circuit's (``res.readout["reduced"]``) and, with ``truth``, the ground
      truth's readout, with the criterion's bounds where they are lines. ``osr``:
      latency from the last flash (ms) against the flash period (ms), with each
      one's fitted line and slope (``present`` needs a slope in [0.5, 1.5]);
      ``latency``: onset latency (ms) against |flash contrast| (s.d.);
      ``anticipation``: lead (µm) against bar speed (mm/s), with 0, the least
      lead counted (``lead_floor_um``: 27.5 µm for the 2 px bar) and the lag a
      pure delay would give; ``reversal``: burst
      latency (ms) against reversal position (µm from the centre used), filled
      where a burst counts, with the [150, 350] ms band; ``doubling``: F2/F1
      (log scale) against bar width (µm), with F2/F1 = 1. Non-finite values
      (NaN, None, inf; ≤ 0 on the log axis) are left out and a missing key is
      said in the panel; any other experiment's panel says it has no readout
      figure.

    Legends sit right of their panels, outside the data. Every panel marks
    the experiment's events (:data:`EVENTS`, read from ``res.conditions``) as
    thin vertical lines, named in the response panel's legend: ``osr``, the
    omitted flash of each period; ``latency``, each flash's onset;
    ``anticipation``, each flashed bar's onset and each moving bar's onset
    and offset; ``reversal``, each bar's onset, reversal and offset;
    ``doubling``, each grating's onset. Any other experiment gets the events
    of these names its conditions hold.

    ``res`` is a model run's :class:`~napari_retina.experiments.base.ExperimentResult`
    (with attribution and reduction); ``truth`` the same experiment's
    ground-truth result or None. The format is ``path``'s suffix (``.png``
    when there is none), passed to matplotlib explicitly. ``recovery``: the
    experiment's :func:`napari_retina.experiments.recovery_report`, whose
    matches are added to the channels' legend labels ("A5 OFF fast + ≈ truth
    ON fast"): the labels come from the kernels' largest tap and latency
    (METHOD.md §3) and can differ from the ground-truth pathway a channel recovers. The file is
    :data:`FIGSIZE` × :data:`DPI` pixels (constrained layout, nothing clipped).
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"  # the temporary file's name has no image suffix
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"a figure is written as one of {', '.join('.' + f for f in sorted(formats))}, "
                         f"got {path.name!r}")
    fig = make_figure(res, truth, recovery)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=fmt))


def make_figure(res: Any, truth: Optional[Any] = None, recovery: Optional[dict] = None) -> "matplotlib.figure.Figure":
    """The :class:`matplotlib.figure.Figure` that :func:`write_figure` writes (Agg canvas, laid out)."""
    if getattr(res, "attribution", None) is None or getattr(res, "reduction", None) is None:
        raise ValueError(f"a figure needs a model's experiment result (with attribution and reduction), "
                         f"got {type(res).__name__} without them")
    _check_truth(res, truth)
    if recovery is not None and not isinstance(recovery, dict):
        raise TypeError(f"recovery must be a recovery report (nr.experiments.recovery_report) or None, "
                        f"got {type(recovery).__name__}")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    # four time panels sharing x, and the readout panel below them in the same column (left edges aligned)
    *axes, readout_ax = fig.subplots(5, 1, gridspec_kw={"height_ratios": [1.2, 1.5, 1.5, 1.2, 2.3]})
    for ax in axes[1:]:
        ax.sharex(axes[0])
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    t_ms = np.arange(len(res.stimulus)) * FRAME_MS
    model = getattr(res.attribution, "model", None)
    fig.suptitle(f"{res.name} experiment — {_cells_text(res.cells)} — {model_name(model)}")
    image = _stimulus_panel(axes[0], res)
    _response_panel(axes[1], res, t_ms, truth)
    labels = channel_labels(res.reduction, recovery)
    _attribution_panel(axes[2], res, t_ms, labels)
    _contribution_panel(axes[3], res, t_ms, labels)
    events = [_mark_events(ax, res.conditions) for ax in axes]
    handles, labels = axes[1].get_legend_handles_labels()
    _legend(axes[1], handles + events[1], labels + [h.get_label() for h in events[1]])
    for ax in axes[2:]:
        _legend(ax)
    axes[-1].set_xlim(0, len(res.stimulus) * FRAME_MS)
    readout_panel(readout_ax, res, truth)
    if image is not None:  # pool the x–t image to the panel's width in pixels, known once laid out
        fig.draw_without_rendering()
        _pool_image(image, res, axes[0].bbox.width)
    return fig


#: condition keys drawn as events (absolute frames): key -> (legend label, colour, line style)
EVENTS = {
    "onset": ("onset", "tab:cyan", "-"),
    "reversal_frame": ("reversal", "tab:purple", "-"),
    "offset": ("offset", "tab:cyan", ":"),
    "omitted": ("omitted flash", "magenta", "-"),
}


def model_name(model: Any) -> str:
    """The model in a few words from its ``provenance``: an imported file's name and format, the data a
    napari-retina checkpoint was trained on and when, or that it has no provenance (built in code)."""
    prov = getattr(model, "provenance", None) or {}
    imported = prov.get("imported")
    if isinstance(imported, dict):
        return f"model {imported.get('file', 'imported')} ({imported.get('format', 'imported')})"
    if prov.get("data_file"):
        date = str(prov.get("date", "")).split(" ")[0]
        return f"model trained on {Path(str(prov['data_file'])).name}" + (f", {date}" if date else "")
    return "model without provenance (not trained by napari-retina)"


def pool_time(image: np.ndarray, bins: int) -> tuple[np.ndarray, int]:
    """``image`` (T, X) pooled over time to at most ``bins`` rows, each the value of largest magnitude among
    ``k`` consecutive frames (the last ones padded with 0, grey); returns (pooled, k).

    Nearest-neighbour resampling of T frames onto fewer pixel columns drops
    short events (a 2-frame flash among thousands of frames); max-|value|
    pooling keeps every one, with its sign.
    """
    image = np.asarray(image, dtype=np.float32)
    k = max(1, -(-len(image) // max(1, int(bins))))
    if k == 1:
        return image, 1
    n = -(-len(image) // k)
    padded = np.zeros((n * k,) + image.shape[1:], np.float32)
    padded[:len(image)] = image
    blocks = padded.reshape(n, k, *image.shape[1:])
    pick = np.abs(blocks).argmax(axis=1)[:, None]
    return np.take_along_axis(blocks, pick, axis=1)[:, 0], k


def _cells_text(cells) -> str:
    cells = [int(c) for c in cells]
    return f"cell {cells[0]}" if len(cells) == 1 else f"cells {', '.join(map(str, cells))} (summed)"


def _yes_no(readout: Optional[dict]) -> str:
    present = (readout or {}).get("present")
    return "n/a" if present is None else ("yes" if present else "no")


LEGEND_CHARS = 44
"""Longest line of a legend entry (characters; longer ones wrap): a wide legend narrowed every panel."""
TITLE_CHARS = {None: 80, 9: 96}
"""Longest line of a panel title, by font size (characters; longer ones wrap): a title wider than its panel was
cut at the figure's left edge ("sponse of cell 0 …" above a panel narrowed by the reversal's legend)."""


def _title(ax, text: str, **kwargs) -> None:
    """``ax.set_title`` with each line wrapped at :data:`TITLE_CHARS` for its font size."""
    width = TITLE_CHARS.get(kwargs.get("fontsize"), TITLE_CHARS[None])
    ax.set_title("\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in text.split("\n")),
                 **kwargs)


def _legend(ax, handles=None, labels=None) -> None:
    """The panel's legend right of its axes, outside the data, each entry wrapped at :data:`LEGEND_CHARS`."""
    args = () if handles is None else (handles, labels)
    legend = ax.legend(*args, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=8)
    for text in legend.get_texts():
        text.set_text(textwrap.fill(text.get_text(), LEGEND_CHARS, break_on_hyphens=False))


def _mark_events(ax, conditions) -> list:
    """Thin vertical lines at every condition's events (:data:`EVENTS`); one legend handle per kind drawn."""
    from matplotlib.lines import Line2D

    handles = {}
    for cond in conditions:
        for key, (label, colour, style) in EVENTS.items():
            frame = cond.get(key) if isinstance(cond, dict) else None
            if isinstance(frame, (int, float, np.integer, np.floating)) and not isinstance(frame, bool) \
                    and np.isfinite(frame):
                line = ax.axvline(float(frame) * FRAME_MS, color=colour, ls=style, lw=0.6, alpha=0.7, zorder=1)
                handles.setdefault(key, line)
    return [Line2D([], [], color=EVENTS[k][1], ls=EVENTS[k][2], lw=0.8, label=EVENTS[k][0])
            for k in EVENTS if k in handles]


def _stimulus_panel(ax, res):
    """Full-field contrast (T,) for space-invariant runs, else an x–t image of the middle row (bars along y),
    returned to be pooled once the panel's width is known."""
    stim = res.stimulus
    t_ms = np.arange(len(stim)) * FRAME_MS
    if res.attribution.invariance == "space":
        ax.plot(t_ms, stim[:, 0, 0], color="k", lw=0.8)
        ax.set_ylabel("contrast\n(s.d. of the\ntraining stimulus)", fontsize=9)
        _title(ax, "stimulus (full field)")
        return None
    half_um = stim.shape[2] / 2 * PIXEL_UM
    image = ax.imshow(stim[:, stim.shape[1] // 2, :].T, aspect="auto", cmap="gray", vmin=-1, vmax=1,
                      extent=(0, len(stim) * FRAME_MS, half_um, -half_um), interpolation="nearest")
    ax.set_ylabel("x (µm)")
    _title(ax, "stimulus: middle row over time\n(grey scale −1 to +1 s.d. of the training stimulus; beyond: black "
               "or white)", fontsize=9)
    return image


def _pool_image(image, res, width_px: float) -> None:
    """Show the x–t image pooled to half the panel's width in pixels: each pooled column then spans at least
    one whole pixel, so nearest-neighbour drawing shows every one."""
    stim = res.stimulus
    pooled, k = pool_time(stim[:, stim.shape[1] // 2, :], int(width_px) // 2)
    image.set_data(pooled.T)
    left, _, bottom, top = image.get_extent()
    image.set_extent((left, len(pooled) * k * FRAME_MS, bottom, top))


def _response_panel(ax, res, t_ms: np.ndarray, truth) -> None:
    """The model's summed rate, the reduced circuit's and the ground truth's (spikes per bin)."""
    ax.plot(t_ms, res.response, color="k", lw=1, label="model")
    ax.plot(t_ms, res.reduction.reduced_rates, color="tab:red", lw=1, ls="--",
            label=f"reduced circuit (EV {res.reduction.explained_variance:.3f})")
    if truth is not None:
        ax.plot(t_ms, truth.response, color="tab:green", lw=0.8, alpha=0.7, label="ground truth")
    ax.set_ylabel("rate (spikes/bin)")
    present = [f"model {_yes_no(res.readout)}", f"reduced circuit {_yes_no(res.readout.get('reduced'))}"]
    if truth is not None:
        present.append(f"ground truth {_yes_no(truth.readout)}")
    _title(ax, f"response of {_cells_text(res.cells)} — {res.name}\npresent: {', '.join(present)}")


def _attribution_panel(ax, res, t_ms: np.ndarray, labels: dict) -> None:
    """Kept channels' A_c(t) (spikes per bin, like the response they sum to) on the attributed frames, the line
    broken between attributed windows."""
    frames = np.asarray(res.attribution.frames)
    step = int(np.median(np.diff(frames))) if len(frames) > 1 else 1
    cuts = np.flatnonzero(np.diff(frames) > step) + 1
    for k, c in enumerate(res.reduction.kept):
        tr = res.reduction.traces[frames, k].astype(float)
        ax.plot(np.insert(t_ms[frames], cuts, np.nan), np.insert(tr, cuts, np.nan), lw=0.9, marker=".", ms=2,
                label=labels[int(c)])
    ax.set_ylabel("A_c(t) (spikes/bin)")
    _title(ax, "kept channels' attributions (attributed frames)")


#: what each of the reduced circuit's pools weights a channel's units with (:func:`napari_retina.reduce`)
POOL_NAMES = {"abs": "mean_t |A_c| (where the channel mattered)", "signed": "mean_t A_c (signed)",
              "uniform": "one uniform weight (full field: space summed out)"}


def _contribution_panel(ax, res, t_ms: np.ndarray, labels: dict) -> None:
    """Each kept channel's pooled contribution Σ_p β_cp·d_cp(t) to the reduced circuit's softplus argument
    (dimensionless: the rate is softplus of their sum plus β_0, not their sum)."""
    red = res.reduction
    for k, c in enumerate(red.kept):
        ax.plot(t_ms, red.contributions[:, k], lw=0.9, label=labels[int(c)])
    ax.set_ylabel("term of the softplus\nargument (a.u.)")
    ax.set_xlabel("time (ms)")
    pools = " and by ".join(POOL_NAMES.get(p, p) for p in red.pools)
    _title(ax, f"reduced circuit: r = softplus(Σ_c term_c + β_0), term_c = Σ_p β_cp·d_cp(t), the pools d_cp of "
               f"channel c's rectified units weighted over space by {pools}", fontsize=9)


# --- the readout panel: the experiment's classic figure ------------------------------------------------------------

#: how each readout source is drawn: label -> line style (the response panel's colours)
SOURCE_STYLES = {
    "model": {"color": "k", "marker": "o", "ls": "-", "ms": 5, "zorder": 5},          # on top, smallest
    "reduced circuit": {"color": "tab:red", "marker": "s", "ls": "--", "ms": 7, "zorder": 3},
    "ground truth": {"color": "tab:green", "marker": "^", "ls": "-", "ms": 7, "zorder": 4},
}


def _check_truth(res: Any, truth: Any) -> None:
    """One sentence unless ``truth`` is None or the ground truth's run of ``res``'s experiment on its stimulus."""
    if truth is None:
        return
    if not all(hasattr(truth, a) for a in ("name", "stimulus", "response", "readout")):
        raise TypeError(f"truth must be the ground truth's ExperimentResult (nr.experiments.run_truth) or None, "
                        f"got {type(truth).__name__}")
    if truth.name != res.name or np.shape(truth.stimulus) != np.shape(res.stimulus):
        raise ValueError(
            f"truth must be the ground truth's {res.name!r} run on the model's stimulus ({len(res.stimulus)} "
            f"frames), got its {truth.name!r} run on {len(truth.stimulus)} frames; run it as "
            f"run_truth({res.name!r}, retina, history=model.config.history, **result.params)")


def readout_panel(ax: "matplotlib.axes.Axes", res: Any, truth: Optional[Any] = None) -> None:
    """Draw ``res``'s readout on ``ax`` as its experiment's classic figure (:data:`READOUT_PANELS`).

    The sources are the model's readout (``res.readout``), the reduced circuit's
    (``res.readout["reduced"]``, when a dict) and the ground truth's
    (``truth.readout``, when ``truth`` is given), drawn in the response panel's
    colours. Never raises on the readout's values: non-finite points are left
    out, and a missing or unreadable key is said in the panel; an experiment
    without an entry in :data:`READOUT_PANELS` gets a panel that says so.
    """
    readout = getattr(res, "readout", None)
    readout = readout if isinstance(readout, dict) else {}
    sources = [("model", readout), ("reduced circuit", readout.get("reduced"))]
    if truth is not None:
        sources.append(("ground truth", getattr(truth, "readout", None)))
    sources = [(label, r) for label, r in sources if isinstance(r, dict)]
    draw = READOUT_PANELS.get(res.name)
    if draw is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"readout: no figure for the {res.name!r} experiment (there is one for "
                f"{', '.join(READOUT_PANELS)})", transform=ax.transAxes, ha="center", va="center", fontsize=9)
        return
    notes = draw(ax, sources)
    if notes:
        ax.text(0.01, 0.97, "\n".join(notes), transform=ax.transAxes, ha="left", va="top", fontsize=8,
                color="0.3")
    unmet = _unmet_notes(sources)
    if unmet:   # under the x-axis label, where it hides no point (the layout makes room for it)
        ax.annotate("\n".join(unmet), xy=(0, 0), xycoords=("axes fraction", ax.xaxis.label), xytext=(0, -4),
                    textcoords="offset points", ha="left", va="top", fontsize=8, color="0.3")
    if ax.get_legend_handles_labels()[0]:
        _legend(ax)


def _unmet_notes(sources) -> list[str]:
    """For each source whose verdict is no, the clauses of the criterion it does not meet (its readout's
    ``unmet``, with its values): the panel's title gives the criterion in short, and a point that seems to meet
    it may fail a floor the title leaves out."""
    why = [(label, unmet_of(readout)) for label, readout in sources]
    notes = [f"{label}, not present: " + "; ".join(textwrap.shorten(u, 200) for u in unmet) for label, unmet in why
             if unmet]
    return [textwrap.fill(note, 130, subsequent_indent="    ") for note in notes]


def _floats(values) -> Optional[np.ndarray]:
    """A readout list as float64 (entries that are not numbers, e.g. None, become NaN); None when not a list."""
    if isinstance(values, np.ndarray):
        values = values.tolist() if values.ndim == 1 else None
    if not isinstance(values, (list, tuple)):
        return None
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError, OverflowError):
            pass
    return out


def _number(value) -> float:
    """A readout scalar as a float; NaN when it is not a finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def _points(ax, sources, xkey: str, ykey: str, x_fn=None, log_y: bool = False, **style):
    """Plot each source's (``x_fn(readout[xkey])``, ``readout[ykey]``) at its finite points (positive ones when
    ``log_y``), labelled with the source (``style`` overrides its line style); return
    ({label: (x, y, mask)}, notes), ``mask`` marking which of the readout's entries were drawn."""
    drawn, notes = {}, []
    for label, readout in sources:
        x, y = _floats(readout.get(xkey)), _floats(readout.get(ykey))
        if x is None or y is None:
            missing = [k for k, v in ((xkey, x), (ykey, y)) if v is None]
            notes.append(f"{label}: no list {' or '.join(repr(k) for k in missing)} in the readout")
            continue
        if len(x) != len(y):
            notes.append(f"{label}: {xkey!r} and {ykey!r} differ in length ({len(x)}, {len(y)})")
            continue
        if x_fn is not None:
            x = x_fn(x)
        mask = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        if not mask.any():
            notes.append(f"{label}: no finite {ykey!r}" + (" above 0" if log_y else ""))
            continue
        ax.plot(x[mask], y[mask], **{"lw": 1, **SOURCE_STYLES[label], **style}, label=label)
        drawn[label] = (x[mask], y[mask], mask)
    return drawn, notes


def _osr_readout(ax, sources) -> list:
    """Latency from the last flash (ms) against the flash period (ms), each source's least-squares line (its
    ``slope`` and ``intercept``) dotted, the slope's bounds for ``present`` in the legend and title."""
    drawn, notes = _points(ax, sources, "periods_ms", "latency_from_last_ms", ls="none")  # the fit is the line
    for label, readout in sources:
        slope, intercept = _number(readout.get("slope")), _number(readout.get("intercept"))
        if label not in drawn or not (np.isfinite(slope) and np.isfinite(intercept)):
            continue
        x = np.array([drawn[label][0].min(), drawn[label][0].max()])
        inside = osr.MIN_SLOPE <= slope <= osr.MAX_SLOPE
        digits = next((d for d in range(2, 7) if (osr.MIN_SLOPE <= round(slope, d) <= osr.MAX_SLOPE) == inside), 7)
        ax.plot(x, intercept + slope * x, color=SOURCE_STYLES[label]["color"], ls=":", lw=1.2,
                label=f"{label} fit: slope {slope:.{digits}f} {'∈' if inside else '∉'} "
                      f"[{osr.MIN_SLOPE:g}, {osr.MAX_SLOPE:g}], "
                      f"intercept {intercept:.0f} ms")
    ax.set_xlabel("flash period (ms)")
    ax.set_ylabel("latency from the\nlast flash (ms)")
    _title(ax, f"omitted stimulus response: the peak after the omitted flash against the period\npresent: "
               f"slope in [{osr.MIN_SLOPE:g}, {osr.MAX_SLOPE:g}], r² ≥ {osr.MIN_R2:g}, each peak rising ≥ "
               f"{osr.MIN_RISE_SHARE:.0%} of the train's answer;\nslope 1 = a fixed latency after the expected "
               f"flash", fontsize=9)
    return notes


def _latency_readout(ax, sources) -> list:
    """Onset latency (ms) against the flash's |contrast| (s.d. of the training stimulus)."""
    _, notes = _points(ax, sources, "intensities", "latency_ms", x_fn=np.abs)
    ax.set_xlabel("|flash contrast| (s.d. of the training stimulus)")
    ax.set_ylabel("onset latency (ms)")
    _title(ax, f"latency coding: onset latency against flash strength\npresent: falls by ≥ "
               f"{latency.MIN_RANGE_MS:g} ms over ≥ {latency.MIN_RESPONDING} responding flashes; none answered > "
               f"{latency.MONOTONIC_TOLERANCE_MS:g} ms "
               f"later than a weaker one or within {latency.MIN_LATENCY_MS:g} ms", fontsize=9)
    return notes


#: bar speed: px/frame -> mm/s (µm/ms)
MM_PER_S = PIXEL_UM / FRAME_MS


def _anticipation_readout(ax, sources) -> list:
    """Lead of the moving-bar response over the flashed-bar peak (µm, mean over directions) against the bar's
    speed (mm/s = px/frame × :data:`MM_PER_S`), with 0, the least lead counted (``lead_floor_um``) and, per
    source, the lead a pure delay would give (−``lag_expected_um``, crosses)."""
    drawn, notes = _points(ax, sources, "speed_list", "lead_um_per_speed", x_fn=lambda v: v * MM_PER_S)
    for label, readout in sources:
        speeds, lag = _floats(readout.get("speed_list")), _floats(readout.get("lag_expected_um"))
        if label not in drawn or lag is None or speeds is None or len(lag) != len(speeds):
            continue
        ok = np.isfinite(speeds) & np.isfinite(lag)
        if ok.any():
            ax.plot(speeds[ok] * MM_PER_S, -lag[ok], color=SOURCE_STYLES[label]["color"], ls=":", lw=1,
                    marker="x", ms=5, label=f"{label}: a pure delay (−speed × the flash response's delay)")
    ax.axhline(0, color="0.5", lw=0.8, label="0: peak at the flashed-bar centre")
    given = [float(f) for f in (r.get("lead_floor_um") for _, r in sources) if is_real(f) and math.isfinite(f)]
    floor = given[0] if given else anticipation.lead_floor_um(anticipation.DEFAULTS["width"])   # older results
    ax.axhline(floor, color="tab:blue", lw=0.8, ls="--",
               label=f"{floor:g} µm: the least lead counted (nearer the bar's leading edge than its centre)")
    ax.set_xlabel("bar speed (mm/s)")
    ax.set_ylabel("lead (µm, + ahead\nof the bar)")
    _title(ax, f"motion anticipation: how far ahead of the moving bar its response peaks\npresent: a lead "
               f"≥ {floor:g} µm at every speed, ≥ {anticipation.MIN_SPEEDS} speeds", fontsize=9)
    return notes


def _reversal_readout(ax, sources) -> list:
    """Burst latency after the reversal (ms) against the reversal position (µm from the centre used), markers
    filled where a burst counts (``bursting``), open elsewhere, with the band the bursts' mean latency must
    lie in, and each source's least-squares line through its bursts (``burst_latency_slope_ms_per_px``
    through their mean, dotted): flat for a burst locked to the reversal, rising for one that follows the bar."""
    drawn, notes = _points(ax, sources, "reversal_positions_px", "burst_latencies_ms",
                           x_fn=lambda v: v * PIXEL_UM, mfc="none")
    fitted = False
    for label, readout in sources:
        if label not in drawn:
            continue
        x, y, mask = drawn[label]
        flags = readout.get("bursting")
        flags = list(flags) if isinstance(flags, (list, tuple, np.ndarray)) else []
        burst = np.array([i < len(flags) and isinstance(flags[i], (bool, np.bool_)) and bool(flags[i])
                          for i in range(len(mask))], dtype=bool)[mask]
        if burst.any():
            style = SOURCE_STYLES[label]
            ax.plot(x[burst], y[burst], **{**style, "ls": "none"}, label=f"_{label} bursting")  # "_": no legend
        slope = _number(readout.get("burst_latency_slope_ms_per_px"))
        if burst.sum() >= 2 and np.isfinite(slope):
            ends = np.array([x[burst].min(), x[burst].max()])
            ax.plot(ends, y[burst].mean() + slope / PIXEL_UM * (ends - x[burst].mean()),
                    color=SOURCE_STYLES[label]["color"], ls=":", lw=1.2,
                    label=f"{label} fit: {slope:+.1f} ms/px")
            fitted = True
    low, high = reversal.LATENCY_RANGE_MS
    ax.axhspan(low, high, color="tab:blue", alpha=0.1, lw=0,
               label=f"[{low:g}, {high:g}] ms: where present needs the bursts' mean latency")
    ax.plot([], [], color="0.4", marker="o", ls="none",  # legend entry only
            label=f"filled: a burst ≥ {reversal.AMPLITUDE_FLOOR:g} spikes/bin and {reversal.MIN_BURST_SNR:g}× the "
                  "noise (bursting)")
    if fitted:
        ax.plot([], [], color="0.4", ls=":", lw=1.2,
                label="fit through the bursts: ≈ 0 ms/px locked to the reversal, rising: following the bar")
    ax.set_xlabel("reversal position (µm from the centre)")
    ax.set_ylabel("burst latency after\nthe reversal (ms)")
    _title(ax, f"motion reversal: the burst after the reversal against where the bar reverses\npresent: "
               f"≥ {reversal.MIN_BURSTS} bursts, mean latency in [{low:g}, {high:g}] ms, s.d. ≤ "
               f"{reversal.MAX_LATENCY_SD_MS:g} ms", fontsize=9)
    return notes


def _doubling_readout(ax, sources) -> list:
    """F2/F1 (dimensionless, log scale; ≤ 0 left out) against the bar width (µm), with F2/F1 = 1 and, where a
    point reaches it, the ratio's ceiling (F1 floored at ``doubling.F1_FLOOR_SHARE`` of F2: a lower bound)."""
    ax.set_yscale("log")
    drawn, notes = _points(ax, sources, "widths_px", "f2_f1_per_width", x_fn=lambda v: v * PIXEL_UM,
                           log_y=True)
    ax.axhline(1, color="0.5", lw=0.8, ls="--", label="F2/F1 = 1")
    ceiling = 1.0 / doubling.F1_FLOOR_SHARE
    if any(np.any(y >= ceiling * (1 - 1e-6)) for _, y, _ in drawn.values()):
        ax.axhline(ceiling, color="tab:red", lw=0.8, ls=":",
                   label=f"{ceiling:g}: the ceiling (F1 floored at F2/{ceiling:g}); a point on it is a lower bound")
    ax.set_xlabel("bar width (µm)")
    ax.set_ylabel("F2/F1 (max over phases)")
    _title(ax, f"frequency doubling: F2/F1 of a contrast-reversing grating against bar width\npresent: rises "
               f"≥ {doubling.MIN_RISE:g}× to the narrowest bars, > 1 there", fontsize=9)
    return notes


#: the readout panel per experiment name: ``fn(ax, sources) -> notes`` with ``sources`` a list of (label, readout
#: dict) among :data:`SOURCE_STYLES`' labels; a custom experiment can add its own
READOUT_PANELS = {
    "osr": _osr_readout,
    "latency": _latency_readout,
    "anticipation": _anticipation_readout,
    "reversal": _reversal_readout,
    "doubling": _doubling_readout,
}
