"""The Analyze widget against the same core calls made directly, the GUI's stalls, and scrubbing, in one run.

    xvfb-run -a python benchmarks/bench_napari.py [--frames 200] [--repeats 3] [--steps 60]

Same process, same model (the shipped one), same stimulus (binary white noise,
50×50), same parameters (cell 0, default steps and rule, invariance "auto"),
a 1600×1000 window with the Analyze dock, as a user has it. Rows (medians of
``--repeats``, direct and widget runs interleaved):

1. end-to-end: pressing Analyze until the result layers and the trace plot
   are shown, the first run (which builds them) and the later ones (same
   model: the layers and the plot's rows are updated in place) (the worker, the hand-over, building the layers and the plot,
   and the event loop's next pass that paints them), against the direct
   ``nr.attribute`` + ``nr.reduce`` call. Target ≤ 1.2×.
2. event-loop stall: the longest gap between two ticks of a 10 ms QTimer
   while Analyze runs (the worker runs in a thread; building layers runs in
   the GUI thread). Target ≤ 100 ms.
3. scrubbing: one time-slider step plus the event loop's pass that repaints,
   median over ``--steps`` steps, with the result layers and the trace plot
   shown against the same viewer with the stimulus only. Target ≤ 1.2×.
4. napari's own floors: a fresh viewer of the same size and stimulus, the
   same maps added with plain ``viewer.add_image`` (no plugin code), one
   layer per event-loop pass: the longest stall while adding and the
   generation-2 garbage collections (``gc.callbacks``) meanwhile (row 2's
   first run cannot stall less than napari building the same layers); then
   scrubbing with them, as many visible as Analyze leaves, vs without
   (row 3 cannot be cheaper than napari showing the same layers); then the
   stall of removing one of them (napari collects garbage on every removal).

Printed as Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import statistics
import time

import numpy as np
import torch


class StallMeter:
    """The longest gap between ticks of a ``period_ms`` QTimer, minus the period (ms), while started."""

    def __init__(self, period_ms: int = 10) -> None:
        from qtpy.QtCore import QTimer

        self.period = period_ms
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, (now - self.last) * 1000 - self.period)
        self.last = now

    def start(self) -> None:
        """Start measuring now: work done before the first tick counts as a gap too."""
        self.last, self.worst = time.perf_counter(), 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


class Gen2Pauses:
    """Durations (ms) of the generation-2 garbage collections while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms.append((time.perf_counter() - self._t0) * 1000)

    def remove(self) -> None:
        gc.callbacks.remove(self._callback)


def napari_floor(stim: np.ndarray, maps: np.ndarray, visible: list[bool], size: tuple[int, int],
                 steps: list[int]) -> dict:
    """What plain napari costs for the same layers: a fresh viewer of ``size`` (w, h) showing ``stim``.

    Adds ``maps`` (T, C, Y, X) with ``viewer.add_image``, one layer per
    event-loop pass, and then sets their visibility as the Analyze widget
    left its map layers (``visible``, one flag per channel). Returns the
    longest stall (ms), the generation-2 collections (ms) and the seconds
    spent adding, the median scrubbing step (s) before and after adding,
    and the stall (ms) of removing one of the layers.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_retina._napari._layers import stimulus_layer_kwargs

    app = QApplication.instance()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*size)
    kwargs = stimulus_layer_kwargs(stim, "stimulus")
    viewer.add_image(stim, **kwargs)
    settle(app, 10)
    scrub(viewer, app, steps[:5])  # warm-up
    without = scrub(viewer, app, steps)
    meter, pauses = StallMeter(), Gen2Pauses()
    meter.start()
    t0 = time.perf_counter()
    for c in range(maps.shape[1]):
        viewer.add_image(np.nan_to_num(maps[:, c]), name=f"map {c}", blending="additive", scale=kwargs["scale"])
        settle(app, 1)
    settle(app)
    adding = time.perf_counter() - t0
    stall = meter.stop()
    pauses.remove()
    for layer, shown in zip(viewer.layers[1:], visible):
        layer.visible = shown
    settle(app, 10)
    scrub(viewer, app, steps[:5])  # warm-up
    with_maps = scrub(viewer, app, steps)
    meter.start()
    viewer.layers.remove(viewer.layers[-1])  # napari's canvas runs a full gc.collect() on every removal
    settle(app)
    removal = meter.stop()
    viewer.close()
    return {"stall": stall, "gc": pauses.ms, "adding": adding, "without": without, "with": with_maps,
            "removal": removal}


def settle(app, rounds: int = 3) -> None:
    """Let the event loop run its pending work (layout, paints) a few passes."""
    for _ in range(rounds):
        app.processEvents()


def scrub(viewer, app, frames: list[int]) -> float:
    """Median seconds of one slider step plus the repaint it causes."""
    times = []
    for f in frames:
        t0 = time.perf_counter()
        viewer.dims.set_current_step(0, f)
        app.processEvents()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="slider steps per scrubbing measurement")
    args = ap.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    import napari_retina as nr
    from napari_retina._napari._layers import META, stimulus_layer_kwargs
    from napari_retina._napari._session import session
    from napari_retina._napari._widgets import AnalyzeWidget

    model = nr.load_model(device="cpu")
    stim = nr.stimuli.white_noise(frames=args.frames, size=model.config.size, seed=0)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    app = QApplication.instance()
    session(viewer).set_model(model, "shipped default")
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    w = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w, name="Analyze")
    w.layer.value = layer
    settle(app, 10)
    nr.reduce(nr.attribute(model, stim[: model.config.history + 4], cell=0))  # warm-up
    rng = np.random.default_rng(0)
    steps = [int(f) for f in rng.integers(0, args.frames, args.steps)]
    scrub(viewer, app, steps[:5])  # warm-up
    without = scrub(viewer, app, steps)

    meter, pauses = StallMeter(), Gen2Pauses()
    direct, total, worker, stalls, first_gc = [], [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        p = w.parameters()  # the widget's defaults: refined until tol (steps 0 in the widget)
        attr = nr.attribute(model, stim, cell=p["cell"], steps=p["steps"], tol=p["tol"], invariance=p["invariance"])
        nr.reduce(attr, explain=p["explain"])
        direct.append(time.perf_counter() - t0)
        settle(app)
        meter.start()
        pauses.ms.clear()
        t0 = time.perf_counter()
        assert w.run()
        w.task.wait(3_600_000)
        settle(app)  # the pass that paints the new layers and the plot
        total.append(time.perf_counter() - t0)
        stalls.append(meter.stop())
        first_gc = first_gc or list(pauses.ms)
        worker.append(w.task.timings["returned"] - w.task.timings["started"])
        assert w.analysis is not None and w.task.last_error is None
        np.testing.assert_array_equal(w.analysis.attribution.channels, attr.channels)
    settle(app, 10)
    scrub(viewer, app, steps[:5])  # warm-up
    with_results = scrub(viewer, app, steps)
    n_layers = len(viewer.layers)
    maps = w.analysis.attribution.maps
    visible = [layer.visible for layer in viewer.layers if layer.metadata.get(META, {}).get("role") == "map"]
    viewer.close()
    pauses.remove()
    floor = napari_floor(stim, maps, visible, (1600, 1000), steps)

    # the first run builds the layers and the plot; the next ones (same model) update them in place
    d, tot, wk = statistics.median(direct), statistics.median(total[1:] or total), statistics.median(worker)
    first = total[0]
    when = datetime.date.today().isoformat()
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU, Xvfb"
    cmd = (f"`xvfb-run -a python benchmarks/bench_napari.py --frames {args.frames} --repeats {args.repeats} "
           f"--steps {args.steps}`")
    what = f"{args.frames} frames 50×50, " + (f"steps {p['steps']}" if p["steps"] else f"tol {p['tol']:g}")
    print(f"| Analyze end-to-end (click → {n_layers - 1} layers and the trace plot shown) vs direct "
          f"nr.attribute + nr.reduce, {what} | direct {d:.2f} s; end-to-end first run (builds the layers) "
          f"{first:.2f} s, later runs (update them) {tot:.2f} s (worker {wk:.2f} s) | first {first / d:.2f}, "
          f"later {tot / d:.2f} (target ≤ 1.2) | {machine}, {when} | {cmd} |")
    print(f"| Longest event-loop stall during Analyze (10 ms timer), {what} | first run {stalls[0]:.0f} ms, "
          f"later runs {', '.join(f'{s:.0f}' for s in stalls[1:])} ms | first {stalls[0] / 100:.2f}, later "
          f"{max(stalls[1:] or stalls) / 100:.2f} of the 100 ms target | {machine}, {when} | {cmd} |")
    print(f"| Scrubbing: one slider step + repaint, with results ({n_layers - 1} layers + plot) vs stimulus only, "
          f"{args.steps} random steps | with {with_results * 1000:.1f} ms, without {without * 1000:.1f} ms | "
          f"{with_results / without:.2f} (target ≤ 1.2) | {machine}, {when} | {cmd} |")
    gcs = lambda ms: ", ".join(f"{m:.0f}" for m in ms) or "none"  # noqa: E731
    print(f"| napari's floor for the stall: plain viewer.add_image of the same {maps.shape[1]} maps, one per pass, "
          f"fresh viewer; and of removing one | plain napari {floor['stall']:.0f} ms (gen-2 collections "
          f"{gcs(floor['gc'])} ms), removing one layer {floor['removal']:.0f} ms; Analyze "
          f"first run {stalls[0]:.0f} ms (gen-2 collections {gcs(first_gc)} ms) | first run / floor "
          f"{stalls[0] / floor['stall']:.2f}; floor {floor['stall'] / 100:.2f} of the 100 ms target | {machine}, "
          f"{when} | {cmd} |")
    floor_first = (wk + floor["adding"]) / d
    print(f"| napari's floor for the first run's end-to-end: the worker plus plain napari adding the same "
          f"{maps.shape[1]} maps, one per pass (no plot) vs direct | worker {wk:.2f} s + adding {floor['adding']:.2f} s; "
          f"direct {d:.2f} s | {floor_first:.2f}; Analyze's first run {first / d:.2f} is {first / d / floor_first:.2f}× "
          f"this floor | {machine}, {when} | {cmd} |")
    floor_ratio = floor["with"] / floor["without"]
    print(f"| napari's floor for scrubbing: the same maps as plain layers, {sum(visible)} of {len(visible)} visible "
          f"as Analyze leaves them, no plot, vs stimulus only | with {floor['with'] * 1000:.1f} ms, without "
          f"{floor['without'] * 1000:.1f} ms | {floor_ratio:.2f}; Analyze's {with_results / without:.2f} is "
          f"{with_results / without / floor_ratio:.2f}× napari's own | {machine}, {when} | {cmd} |")

if __name__ == "__main__":
    main()
