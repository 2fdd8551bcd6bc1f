"""Screenshots of the real plugin for the README and docs/TOUR.md, taken under Xvfb.

    xvfb-run -a python scripts/make_screenshots.py [--out docs/images] [--experiment reversal]

Drives napari and the plugin through public APIs only, as a user would click:
``viewer.open_sample`` (the plugin's omitted-flash sample), the plugin's dock
widgets from ``add_plugin_dock_widget``, the Analyze button (the widget's
``run``: worker, then the result added over event-loop passes), the time
slider, and the Experiments widget's Run and "Add layers of result". Each
picture is ``viewer.screenshot(canvas_only=False)`` (the whole window,
docks and the trace plot included), stored as a 256-colour PNG to stay
small (< 300 KB), with napari's scale bar (µm, from the layers' units) at the bottom right and the
time slider's position (ms) at the top left:

1. ``tour-1-sample.png``: the sample stimulus open, the Analyze dock ready.
2. ``tour-2-running.png``: Analyze running: progress and time left; the
   window stays usable.
3. ``tour-3-result.png``: the channel maps over the stimulus, the colour
   bar, the Traces dock with the cursor at the slider (also written as the
   README's ``napari-retina-demo.png``).
4. ``tour-4-experiment.png``: an in-silico experiment's readout table and its
   result layers below the analysis.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SIZE = (1600, 1000)
"""Window size (pixels) of every screenshot."""
DOCK_WIDTH = 420
WIDGETS = ("Analyze", "Model", "Stimulus", "Experiments")
SAMPLE = "omitted_flash_train"
README_IMAGE = "napari-retina-demo.png"


def process_events(seconds: float = 0.0, rounds: int = 3) -> None:
    """Let Qt lay out and paint (``rounds`` passes, then more for ``seconds``)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def show_scale(viewer) -> None:
    """napari's scale bar (its unit from the layers': µm) at the bottom right, in a box that keeps it readable
    over the stimulus."""
    bar = viewer.canvas.overlays.scale_bar
    bar.visible, bar.box, bar.font_size = True, True, 12


def stamp_time(viewer) -> None:
    """The time slider's position, in ms (the stimulus layers' time unit), at the canvas' top left."""
    text = viewer.canvas.overlays.text
    text.text = f"t = {viewer.dims.point[0]:,.0f} ms"
    text.visible, text.position, text.font_size = True, "top_left", 12


def save_png(viewer, path: Path) -> Path:
    """The whole window as a 256-colour PNG (the screenshots have few colours; this keeps them small), dithered so
    that the colour bar's and the maps' gradients do not fall into flat steps; the time stamped first."""
    from PIL import Image

    stamp_time(viewer)
    process_events()
    image = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(np.asarray(image)[..., :3]).quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG).save(
        path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")
    return path


def arrange(viewer, docks: dict) -> None:
    """Narrow the right dock column (Qt's public ``resizeDocks``) and let the trace plot's dock grow to its rows."""
    from qtpy.QtCore import Qt

    from napari_retina._napari._plot import DOCK_NAME

    right = [docks[name][0] for name in docks]
    main = right[0].parentWidget()
    main.resizeDocks(right, [DOCK_WIDTH] * len(right), Qt.Orientation.Horizontal)
    plot = viewer.window.dock_widgets.get(DOCK_NAME)
    if plot is not None:
        plot.fit_dock()
    process_events()


def show_tab(docks: dict, name: str) -> None:
    """Bring the tab of the plugin dock ``name`` to the front (after Qt has tabbed the docks)."""
    process_events()
    docks[name][0].raise_()
    process_events()


def peak_after_omission(layer, response: np.ndarray) -> int:
    """Frame of the response peak after the omitted flash (the sample's events say when), else the peak."""
    events = layer.metadata.get("events", {}) if isinstance(layer.metadata, dict) else {}
    start = int(events.get("omitted", 0) or 0)
    after = np.asarray(response[start:], float)
    return start + (int(np.nanargmax(after)) if np.isfinite(after).any() else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--experiment", default="reversal",
                    help="the experiment of the last screenshot (reversal: its bar gets maps; a full-field one none)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_retina import viewer as nrv
    from napari_retina._napari._plot import DOCK_NAME

    viewer = napari.Viewer(title="napari-retina")
    viewer.window.resize(*SIZE)
    show_scale(viewer)
    layer = viewer.open_sample("napari-retina", SAMPLE)[0]
    docks = {name: viewer.window.add_plugin_dock_widget("napari-retina", name, tabify=True) for name in WIDGETS}
    analyze = docks["Analyze"][1]
    analyze.layer.value = layer
    arrange(viewer, docks)
    show_tab(docks, "Analyze")
    viewer.dims.set_point(0, 3 * layer.scale[0])  # mean grey, before the first flash
    nrv.fit(viewer, viewer.canvas.size)   # the visible layers, clear of the colour bar (not hidden ones)
    save_png(viewer, args.out / "tour-1-sample.png")

    assert analyze.run(), analyze.task.status.value
    while analyze.task.worker is not None and analyze.task.progress.value < 0.4 * analyze.task.progress.max:
        process_events(0.05)
    save_png(viewer, args.out / "tour-2-running.png")
    analyze.task.wait(3_600_000)
    if analyze.task.last_error is not None:
        raise SystemExit(f"Analyze failed: {analyze.task.last_error}")
    arrange(viewer, docks)
    viewer.dims.set_point(0, peak_after_omission(layer, analyze.analysis.attribution.response) * layer.scale[0])
    nrv.fit(viewer, viewer.canvas.size)   # the visible layers, clear of the colour bar (not hidden ones)
    process_events(0.5)
    shot = save_png(viewer, args.out / "tour-3-result.png")
    (args.out / README_IMAGE).write_bytes(shot.read_bytes())

    experiments = docks["Experiments"][1]
    experiments.experiment.value = args.experiment
    show_tab(docks, "Experiments")
    assert experiments.run([args.experiment])
    experiments.task.wait(3_600_000)
    if experiments.task.last_error is not None:
        raise SystemExit(f"the experiment failed: {experiments.task.last_error}")
    adding = experiments.add_layers()
    adding.wait(600_000)
    added = adding.layers
    for lay in viewer.layers:  # show the experiment's result, not the analysis under it
        lay.visible = lay in added and lay.visible
    viewer.layers.selection.active = added[0]
    response = experiments.results[args.experiment].attribution.response
    viewer.dims.set_point(0, added[0].translate[0] + float(np.nanargmax(response)) * added[0].scale[0])
    arrange(viewer, docks)
    nrv.fit(viewer, viewer.canvas.size)   # the visible layers, clear of the colour bar (not hidden ones)
    process_events(0.5)
    assert DOCK_NAME in viewer.window.dock_widgets
    save_png(viewer, args.out / "tour-4-experiment.png")
    viewer.close()


if __name__ == "__main__":
    main()
