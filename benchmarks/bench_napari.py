"""The Analyze widget's run time against the same nr.attribute call made directly.

    xvfb-run -a python benchmarks/bench_napari.py [--frames 100] [--repeats 3]

Same process, same model (the shipped one), same stimulus (binary white noise,
50×50), same parameters (cell 0, default steps and rule, invariance "auto").
Direct and widget runs are interleaved; the ratio of medians is reported.
The widget's worker time runs from pressing Analyze until the worker's result
is back in the GUI thread (thread start, the core call with its progress
relay, the hand-over); the end-to-end time adds building the layers (napari's
fixed cost of about a dozen layers). Reduction is off so both sides do the same
computation (a second row times reduce on both sides). Target: worker ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import napari

    import napari_retina as nr
    from napari_retina._napari._layers import stimulus_layer_kwargs
    from napari_retina._napari._session import session
    from napari_retina._napari._widgets import AnalyzeWidget

    model = nr.load_model(device="cpu")
    stim = nr.stimuli.white_noise(frames=args.frames, size=model.config.size, seed=0)
    viewer = napari.Viewer(show=False)
    session(viewer).set_model(model, "shipped default")
    layer = viewer.add_image(stim, **stimulus_layer_kwargs(stim, "noise"))
    w = AnalyzeWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    nr.attribute(model, stim[: model.config.history + 4], cell=0)  # warm-up

    rows = {}
    for reduce in (False, True):
        w.do_reduce.value = reduce
        direct, widget, total = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            attr = nr.attribute(model, stim, cell=0, steps=int(w.steps.value), invariance="auto")
            if reduce:
                nr.reduce(attr, explain=float(w.explain.value))
            direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert w.run()
            w.task.wait(3_600_000)
            total.append(time.perf_counter() - t0)
            widget.append(w.task.timings["returned"] - w.task.timings["started"])
            assert w.analysis is not None and w.task.last_error is None
            np.testing.assert_array_equal(w.analysis.attribution.channels, attr.channels)
        rows[reduce] = (statistics.median(direct), statistics.median(widget), statistics.median(total))
    viewer.close()

    when = datetime.date.today().isoformat()
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU"
    for reduce, (d, wt, tot) in rows.items():
        what = "attribute + reduce" if reduce else "attribute"
        print(f"| Analyze widget vs direct ({what}), {args.frames} frames 50×50, steps {int(w.steps.value)} | "
              f"direct {d:.2f} s, widget worker {wt:.2f} s, end-to-end with layers {tot:.2f} s | "
              f"worker ratio {wt / d:.3f} (end-to-end {tot / d:.2f}) | {machine}, {when} | "
              f"`xvfb-run -a python benchmarks/bench_napari.py --frames {args.frames} --repeats {args.repeats}` |")


if __name__ == "__main__":
    main()
