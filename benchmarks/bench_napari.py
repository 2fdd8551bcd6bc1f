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

Printed as Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
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
        self.last, self.worst = None, 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


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
    from napari_retina._napari._layers import stimulus_layer_kwargs
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

    meter = StallMeter()
    direct, total, worker, stalls = [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        p = w.parameters()  # the widget's defaults: refined until tol (steps 0 in the widget)
        attr = nr.attribute(model, stim, cell=p["cell"], steps=p["steps"], tol=p["tol"], invariance=p["invariance"])
        nr.reduce(attr, explain=p["explain"])
        direct.append(time.perf_counter() - t0)
        settle(app)
        meter.start()
        t0 = time.perf_counter()
        assert w.run()
        w.task.wait(3_600_000)
        settle(app)  # the pass that paints the new layers and the plot
        total.append(time.perf_counter() - t0)
        stalls.append(meter.stop())
        worker.append(w.task.timings["returned"] - w.task.timings["started"])
        assert w.analysis is not None and w.task.last_error is None
        np.testing.assert_array_equal(w.analysis.attribution.channels, attr.channels)
    settle(app, 10)
    scrub(viewer, app, steps[:5])  # warm-up
    with_results = scrub(viewer, app, steps)
    n_layers = len(viewer.layers)
    viewer.close()

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


if __name__ == "__main__":
    main()
