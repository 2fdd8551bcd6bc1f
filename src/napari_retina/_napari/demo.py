"""``napari-retina demo``: napari with the shipped model and an omitted-stimulus analysis ready."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Optional

import numpy as np

DEMO_CELL = 0
DEMO_WIDGETS = ("Analyze", "Model", "Stimulus", "Experiments")
SCREENSHOT_SIZE = (1600, 860)


def _has_reduction() -> bool:
    return importlib.util.find_spec("napari_retina.reduction") is not None


def run_demo(headless: bool = False, out_dir: Optional[Path] = None, *, model=None,
             cell: int = DEMO_CELL, widgets: tuple = DEMO_WIDGETS) -> dict:
    """Open napari with the shipped model, an omitted-stimulus flash train and its analysis.

    The stimulus is ``nr.stimuli.flash_train(period=6)`` (eight dark full-field
    flashes every 60 ms, then one omitted); the analysis attributes cell
    ``cell``'s response to the conv1 channels with full spatial maps
    (``invariance="none"``, so the maps can be seen over the stimulus) and
    reduces it with ``nr.reduce``. The plugin's dock widgets are added and the
    time slider is put on the response peak after the omitted flash.

    Parameters
    ----------
    headless : bool
        True: no window is shown (``napari.Viewer(show=False)``; under Xvfb on
        a server); a PNG screenshot of the whole window is written and the
        viewer closed. False: show the window and run the event loop.
    out_dir : Path, optional
        Folder for ``napari-retina-demo.png`` (headless; default
        ``./napari-retina-demo``).
    model : RetinaCNN, optional
        Defaults to ``nr.load_model()`` (the shipped model).

    Returns
    -------
    dict: model provenance, stimulus, cell, completeness error, explained
    variance, kept channels (labels), timings (s), screenshot path (headless).
    """
    import napari

    import napari_retina as nr

    from ._layers import stimulus_layer_kwargs
    from ._viewer import add_analysis

    t_start = time.perf_counter()
    model = nr.load_model() if model is None else model
    params = {"period": 6, "n_flashes": 8, "omit": True, "intensity": -2.0, "duration": 2}
    stim, events = nr.stimuli.flash_train(**params, return_events=True)

    t0 = time.perf_counter()
    attr = nr.attribute(model, stim, cell=cell, invariance="none")
    t_attr = time.perf_counter() - t0
    red, t_red = None, 0.0
    if _has_reduction():
        t0 = time.perf_counter()
        red = nr.reduce(attr)
        t_red = time.perf_counter() - t0

    viewer = napari.Viewer(show=not headless, title="napari-retina demo: omitted-stimulus response")
    meta = {"stimulus": "flash_train", "parameters": params,
            "events": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in events.items()}}
    stim_layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "omitted flash train", meta))
    add_analysis(viewer, attr, red, stim_layer)
    docked, docks = [], {}
    for name in widgets:
        try:
            docks[name] = viewer.window.add_plugin_dock_widget("napari-retina", name, tabify=True)
            docked.append(name)
        except Exception as exc:  # a widget that cannot be built must not stop the demo
            print(f"napari-retina demo: could not add the {name} widget: {exc}")
    if "Analyze" in docks:
        dock, analyze = docks["Analyze"]
        analyze.layer.value = stim_layer
        analyze.invariance.value = "none"
        analyze.result_label.value = (
            f"completeness error {attr.completeness_error:.2e}" + ("" if red is None else
            f"; reduced circuit explains {red.explained_variance:.1%} with "
            f"{', '.join(red.label(c) for c in red.kept)}"))
        try:
            dock.raise_()  # show the Analyze tab
        except Exception:
            pass

    # show the frame where the response after the omitted flash peaks
    omitted = events["omitted"]
    after = np.asarray(attr.response[omitted:], float)
    peak = omitted + (int(np.nanargmax(after)) if np.isfinite(after).any() else 0)
    viewer.dims.set_point(0, peak * nr.FRAME_MS)
    viewer.layers.selection.active = stim_layer

    summary = {
        "model": dict(model.provenance) or {"kind": "unknown"},
        "model_scores": dict(model.scores),
        "stimulus": {"name": "flash_train", **params, "frames": int(stim.shape[0]), "omitted_frame": omitted},
        "cell": cell,
        "invariance": attr.invariance,
        "completeness_error": float(attr.completeness_error),
        "explained_variance": None if red is None else float(red.explained_variance),
        "kept_channels": [] if red is None else [red.label(c) for c in red.kept],
        "peak_frame_after_omission": peak,
        "peak_latency_ms": (peak - omitted) * nr.FRAME_MS,
        "layers": [layer.name for layer in viewer.layers],
        "widgets": docked,
        "timing_s": {"attribute": round(t_attr, 3), "reduce": round(t_red, 3)},
    }
    if red is None:
        summary["note"] = "nr.reduce is not available yet: no reduction shown"

    if headless:
        out_dir = Path("napari-retina-demo") if out_dir is None else Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "napari-retina-demo.png"
        screenshot(viewer, path)
        summary["screenshot"] = str(path)
        summary["timing_s"]["total"] = round(time.perf_counter() - t_start, 3)
        viewer.close()
        return summary
    summary["timing_s"]["total"] = round(time.perf_counter() - t_start, 3)
    napari.run()
    return summary


def screenshot(viewer, path: Path, size: tuple = SCREENSHOT_SIZE, dock_width: int = 340) -> Path:
    """Write a PNG of the whole napari window (works with ``show=False`` under Xvfb), atomically."""
    from napari.utils.io import imsave_png
    from qtpy.QtWidgets import QApplication

    from .._atomic import atomic_write

    viewer.window.resize(*size)
    for _ in range(3):
        QApplication.processEvents()
    try:  # keep the dock column narrow so the canvas gets the room
        from qtpy.QtCore import Qt

        docks = []
        for w in viewer.window.dock_widgets.values():
            native = getattr(w, "native", w)
            if native.parent() is not None:
                docks.append(native.parent())
        if docks:
            viewer.window._qt_window.resizeDocks(docks, [dock_width] * len(docks),  # noqa: SLF001
                                                 Qt.Orientation.Horizontal)
        for _ in range(3):
            QApplication.processEvents()
    except Exception:
        pass
    fit_view(viewer)
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    return atomic_write(path, lambda tmp: imsave_png(tmp, image))


def fit_view(viewer, margin: float = 0.03, right: float = 0.3) -> None:
    """Centre the 2-D view on every layer and zoom so that they fill the canvas.

    ``right`` adds room (a fraction of the width) for the trace legend's text.
    """
    viewer.reset_view()
    try:
        canvas_h, canvas_w = viewer.window._qt_viewer.canvas.size  # noqa: SLF001 - no public accessor
    except Exception:
        return
    ext = np.asarray(viewer.layers.extent.world, float)[:, -2:]
    ext[1, 1] += right * (ext[1, 1] - ext[0, 1])
    span = np.maximum(ext[1] - ext[0], 1e-9)
    viewer.camera.center = tuple((ext[0] + ext[1]) / 2)
    viewer.camera.zoom = (1 - 2 * margin) * min(canvas_h / span[0], canvas_w / span[1])
