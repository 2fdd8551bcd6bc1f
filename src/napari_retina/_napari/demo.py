"""``napari-retina demo``: napari with the shipped model and the analysis of an omitted flash train ready.

A peak after the omitted flash is not by itself an omitted-stimulus response:
the summary gives the ``osr`` experiment's verdict on the same model (its
criteria over seven flash periods, docs/EXPERIMENTS.md), so the picture is not
read as showing one where the model has none.

What a script would do, through the public scripting API (:mod:`napari_retina.viewer`):
``show`` adds the analysis, ``screenshot(..., window=True)`` sizes the window
with ``viewer.window.resize``, fits the view to the canvas and takes the
picture with ``viewer.screenshot``; the docks are narrowed through the dock
widgets ``add_plugin_dock_widget`` returns. Public napari API only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .._atomic import atomic_write_text
from .._json import jsonable
from .._units import FRAME_MS

DEMO_CELL = 0
DEMO_WIDGETS = ("Analyze", "Model", "Stimulus", "Experiments")
DEMO_STIMULUS = {"period": 6, "n_flashes": 8, "omit": True, "intensity": -2.0, "duration": 2}
"""``nr.stimuli.flash_train`` parameters: eight dark full-field flashes every 60 ms, then one omitted."""
DEMO_LAYER = "omitted flash train"
SCREENSHOT_SIZE = (1600, 1000)
DEFAULT_OUT_DIR = "napari-retina-demo"
"""Where a headless demo writes its files when no folder is given (relative to the working folder)."""
SCREENSHOT_NAME = "napari-retina-demo.png"
SUMMARY_NAME = "napari-retina-demo.json"


def run_demo(headless: bool = False, out_dir: Optional[Path] = None, *, model=None,
             cell: int = DEMO_CELL, widgets: tuple = DEMO_WIDGETS) -> dict:
    """Open napari with the shipped model, an omitted-stimulus flash train and its analysis.

    The stimulus is ``nr.stimuli.flash_train(period=6)`` (eight dark full-field
    flashes every 60 ms, then one omitted); the analysis is the Analyze
    widget's (:func:`napari_retina.analysis.run_analysis`) of cell ``cell``
    with full spatial maps (``invariance="none"``, so the maps can be seen
    over the stimulus), reduced with ``nr.reduce``. The plugin's dock widgets
    are added (the Analyze widget holds the analysis, so it can be saved) and
    the time slider is put on the response peak after the omitted flash.

    Parameters
    ----------
    headless : bool
        True: no window is shown (``napari.Viewer(show=False)``; under Xvfb on
        a server); a PNG screenshot of the whole window and the summary (JSON)
        are written to ``out_dir`` and the viewer closed. False: show the
        window and run the event loop.
    out_dir : Path, optional
        Folder for ``napari-retina-demo.png`` and ``napari-retina-demo.json``
        (headless; default ``./napari-retina-demo``).
    model : RetinaCNN, optional
        Defaults to ``nr.load_model()`` (the shipped model).

    Returns
    -------
    dict: model provenance, stimulus, cell, completeness error, explained
    variance, kept channels (labels), the osr experiment's verdict on the model
    (:func:`osr_verdict`), timings (s), screenshot path (headless).
    """
    _require_qt()
    import napari

    from ._session import session

    t_start = time.perf_counter()
    analysis, events, t_analysis = _analyse(model, cell)
    osr = osr_verdict(analysis.attribution.model, cell)
    viewer = napari.Viewer(show=not headless, title="napari-retina demo: a flash train with one flash omitted")
    # the docks run (and the Model dock shows) the model the analysis was made with: no second load
    session(viewer).set_model(analysis.attribution.model, analysis.model_source)
    stim_layer = _show_analysis(viewer, analysis, events)
    docked = _dock_widgets(viewer, widgets, stim_layer, analysis, osr_sentence(osr))
    peak = _go_to_peak(viewer, analysis.attribution.response, events["omitted"])
    summary = {**_summary(analysis, events["omitted"], peak, viewer, docked), "osr_experiment": osr}
    summary["timing_s"] = {"analysis": round(t_analysis, 3)}
    if not headless:
        summary["timing_s"]["total"] = round(time.perf_counter() - t_start, 3)
        napari.run()
        return summary
    out = Path(DEFAULT_OUT_DIR if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary["screenshot"] = str(screenshot(viewer, out / SCREENSHOT_NAME))
    viewer.close()
    summary["timing_s"]["total"] = round(time.perf_counter() - t_start, 3)
    summary["summary_file"] = str(out / SUMMARY_NAME)
    write_summary(summary, out / SUMMARY_NAME)
    return summary


def summary_text(summary: dict) -> str:
    """What the demo showed in four short lines (the full summary is the JSON file ``summary_file``)."""
    stim, osr = summary["stimulus"], summary["osr_experiment"]
    lines = [
        f"napari-retina demo: {stim['n_flashes']} dark flashes every {stim['period'] * FRAME_MS:g} ms, then one "
        f"omitted; cell {summary['cell']}, attribution maps (invariance '{summary['invariance']}'), reduced circuit",
        f"  completeness error {summary['completeness_error']:.2e}; the reduced circuit explains "
        f"{summary['explained_variance']:.1%} of the response's variance with {', '.join(summary['kept_channels'])}",
        f"  response peak {summary['peak_latency_ms']:g} ms after the omitted flash (frame "
        f"{summary['peak_frame_after_omission']}); {osr_sentence(osr)}",
    ]
    last = [f"analysis {summary['timing_s']['analysis']:.1f} s, total {summary['timing_s']['total']:.1f} s",
            f"screenshot {summary['screenshot']}" if summary.get("screenshot") else "",
            f"full summary (JSON) {summary['summary_file']}" if summary.get("summary_file") else ""]
    lines.append("  " + "; ".join(part for part in last if part))
    return "\n".join(lines)


def osr_sentence(osr: dict) -> str:
    """The :func:`osr_verdict` in words: whether the model makes an omitted-stimulus response, and why."""
    return (f"an omitted-stimulus response by the osr experiment's criteria: {'yes' if osr['present'] else 'no'} "
            f"(latency from the last flash against the period, {len(osr['periods_ms'])} periods: slope "
            f"{osr['slope']:.2f}, r² {osr['r2']:.2f}; docs/EXPERIMENTS.md)")


def _require_qt() -> None:
    """An ImportError in one sentence when napari has no Qt binding to show a window with."""
    try:
        import qtpy.QtWidgets  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "the demo needs napari with a Qt binding; install one with pip install 'napari-retina[qt]' (PyQt6)"
        ) from exc


def _analyse(model, cell: int):
    """The demo stimulus and its analysis: ``(Analysis, flash_train events, seconds)``."""
    from .. import stimuli
    from ..analysis import run_analysis
    from ..checkpoint import load_model

    source = "shipped default" if model is None else "given model"
    model = load_model() if model is None else model
    stim, events = stimuli.flash_train(**DEMO_STIMULUS, return_events=True)
    t0 = time.perf_counter()
    analysis = run_analysis(model, stim, cell=cell, invariance="none", model_source=source, layer=DEMO_LAYER)
    return analysis, events, time.perf_counter() - t0


def osr_verdict(model, cell: int) -> dict:
    """The ``osr`` experiment on ``model``'s rates (its default seven flash periods; its criteria,
    docs/EXPERIMENTS.md; no attribution, ~1 s): ``present``, and the ``slope`` (ms/ms) and ``r2`` of the latency
    from the last flash against the period, over ``periods_ms``."""
    from .._predict import predict
    from ..experiments.registry import run_function

    cfg = model.config
    readout = run_function("osr", lambda stim: predict(model, stim), size=cfg.size, history=cfg.history,
                           cell=cell).readout
    return {"present": bool(readout["present"]), "slope": float(readout["slope"]), "r2": float(readout["r2"]),
            "periods_ms": [float(p) for p in readout["periods_ms"]]}


def _show_analysis(viewer, analysis, events: dict):
    """Add the stimulus layer (generator, parameters and events in its metadata) and the analysis layers."""
    from .. import viewer as nr_viewer
    from ._layers import stimulus_layer_kwargs

    stim = analysis.attribution.stimulus
    meta = {"stimulus": "flash_train", "parameters": DEMO_STIMULUS, "events": jsonable(events)}
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, DEMO_LAYER, meta))
    nr_viewer.show(analysis, viewer, stimulus_layer=stim_layer)
    return stim_layer


def _dock_widgets(viewer, names: tuple, stim_layer, analysis, osr: str = "") -> list[str]:
    """Dock the plugin's widgets (tabs); fill the Analyze widget in and raise its tab. Returns the names docked.

    Analyze's status line says what a run of it says (which maps, and why), and ``osr``, the osr experiment's
    verdict (:func:`osr_sentence`), so that the window, not only the terminal, says whether the flash train's
    answer after the omission is an omitted-stimulus response."""
    from ._widgets.analyze import done_status, summary_text

    docked = {}
    for name in names:
        try:
            docked[name] = viewer.window.add_plugin_dock_widget("napari-retina", name, tabify=True)
        except Exception as exc:  # a widget that cannot be built must not stop the demo
            print(f"napari-retina demo: could not add the {name} widget: {exc}")
    if "Analyze" in docked:
        dock, analyze = docked["Analyze"]
        analyze.layer.value = stim_layer
        analyze.invariance.value = "none"
        analyze.analysis = analysis
        analyze.result_label.value = summary_text(analysis)
        # the demo ran the analysis before the window opened: the bar says done, not 0 %
        analyze.task.progress.value = analyze.task.progress.max
        analyze.task.status.value = done_status("analysis done (run by the demo)", analysis.maps_note, osr)
        dock.raise_()  # show the Analyze tab
    return list(docked)


def _go_to_peak(viewer, response: np.ndarray, omitted: int) -> int:
    """Put the time slider on the response peak after the omitted flash; returns that frame."""
    after = np.asarray(response[omitted:], float)
    peak = omitted + (int(np.nanargmax(after)) if np.isfinite(after).any() else 0)
    viewer.dims.set_point(0, peak * FRAME_MS)
    return peak


def _summary(analysis, omitted: int, peak: int, viewer, docked: list) -> dict:
    """What the demo shows, as JSON-able numbers and names."""
    attr, red, model = analysis.attribution, analysis.reduction, analysis.attribution.model
    return {
        "model": dict(model.provenance) or {"kind": "unknown"},
        "model_scores": dict(model.scores),
        "stimulus": {"name": "flash_train", **DEMO_STIMULUS, "frames": int(attr.stimulus.shape[0]),
                     "omitted_frame": omitted},
        "cell": analysis.parameters["cell"],
        "invariance": attr.invariance,
        "completeness_error": float(attr.completeness_error),
        "explained_variance": float(red.explained_variance),
        "kept_channels": [red.label(c) for c in red.kept],
        "peak_frame_after_omission": peak,
        "peak_latency_ms": (peak - omitted) * FRAME_MS,
        "layers": [layer.name for layer in viewer.layers],
        "widgets": docked,
    }


def write_summary(summary: dict, path: Path) -> Path:
    """Write the demo's summary as JSON (strict: NaN as null), atomically."""
    return atomic_write_text(path, json.dumps(jsonable(summary, strict=True), indent=2) + "\n")


def screenshot(viewer, path: Path, size: tuple = SCREENSHOT_SIZE, dock_width: int = 340) -> Path:
    """Write a PNG of the whole napari window (works with ``show=False`` under Xvfb), atomically.

    The docks are narrowed to ``dock_width`` pixels, then
    :func:`napari_retina.viewer.screenshot` (``window=True``) sizes the window,
    fits the view to its canvas and takes the picture.
    """
    from .. import viewer as nr_viewer
    from ._viewer import process_events

    viewer.window.resize(*size)
    process_events()
    _narrow_docks(viewer, dock_width)
    return nr_viewer.screenshot(viewer, path, size=size, window=True)


def _narrow_docks(viewer, width: int) -> None:
    """Make the dock column ``width`` pixels wide so the canvas gets the room.

    The dock widgets are the Qt parents of ``viewer.window.dock_widgets``
    (as napari documents), and their parent is the main window.
    """
    from qtpy.QtCore import Qt

    from ._viewer import process_events

    docks = [getattr(w, "native", w).parent() for w in viewer.window.dock_widgets.values()]
    docks = [d for d in docks if d is not None]
    if docks:
        docks[0].parentWidget().resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)
        process_events()
