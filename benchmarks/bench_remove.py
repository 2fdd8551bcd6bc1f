"""What removing a result's layers costs: the plugin's ``remove_layers`` against napari's own ways, in one run.

    xvfb-run -a python benchmarks/bench_remove.py [--layers 8,16,36] [--repeats 3]

Each measurement is a fresh process with a shown viewer holding a stimulus
layer (selected, as after an analysis) and ``n`` 30×16×16 image layers, which
are then removed by:

- ``remove_layers``: the plugin's (``_napari._viewer.remove_layers``: selects
  them, removes them in one batch of the layer list, one selection event);
- ``trash button``: napari's ``layers.remove_selected()`` after selecting
  them, what the layer list's trash button does;
- ``before``: ``remove_layers`` as it was before it held the selection's
  events (commit 3973491: selects them, one batch; napari's layer controls
  rebuild a panel of the selected layers left at each removal);
- ``plain``: ``viewer.layers.remove`` one by one, unselected (with Mesa's
  llvmpipe this can crash the process at a later repaint; README, "Known
  issues"; the time is taken before that).

Prints a markdown table of medians (seconds) and each way's ratio to
``remove_layers`` measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import machine  # noqa: E402

WORK = """
import sys, time
import numpy as np, napari
from qtpy.QtWidgets import QApplication
from napari_retina._napari._viewer import remove_layers

def pump(seconds):
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents(); time.sleep(0.01)

how, n = sys.argv[1], int(sys.argv[2])
v = napari.Viewer(show=True)
v.window.resize(1600, 1000)
stimulus = v.add_image(np.random.rand(30, 20, 20).astype(np.float32), name="stimulus")
maps = [v.add_image(np.random.rand(30, 16, 16).astype(np.float32), name=f"map {i}") for i in range(n)]
v.layers.selection = {stimulus}
pump(0.5)
t = time.perf_counter()
if how == "remove_layers":
    remove_layers(v, maps)
elif how == "before":
    v.layers.selection.clear(); v.layers.selection.update(maps)
    with v.layers.batched_update():
        for layer in maps:
            v.layers.remove(layer)
    v.layers.selection.clear(); v.layers.selection.update([stimulus])
elif how == "trash":
    v.layers.selection.clear(); v.layers.selection.update(maps); v.layers.remove_selected()
else:
    for layer in maps:
        v.layers.remove(layer)
print(time.perf_counter() - t, flush=True)
"""

WAYS = {"remove_layers": "remove_layers", "before": "before (3973491)", "trash": "trash button", "plain": "plain"}


def run(how: str, n: int) -> float:
    done = subprocess.run([sys.executable, "-c", WORK, how, str(n)], capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{how} with {n} layers printed nothing (exit {done.returncode}): {done.stderr[-500:]}")
    return float(lines[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="8,16,36")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print("| layers | " + " | ".join(f"{WAYS[w]} (s)" for w in WAYS) + " | "
          + " | ".join(f"{WAYS[w]} / remove_layers" for w in list(WAYS)[1:]) + " |")
    print("|---" * (2 * len(WAYS)) + "|")
    for n in (int(x) for x in args.layers.split(",")):
        times = {w: [] for w in WAYS}
        for _ in range(args.repeats):
            for w in WAYS:   # interleaved, so that a change of load hits every way alike
                times[w].append(run(w, n))
        med = {w: statistics.median(t) for w, t in times.items()}
        ratios = [med[w] / med["remove_layers"] for w in list(WAYS)[1:]]
        print(f"| {n} | " + " | ".join(f"{med[w]:.3f}" for w in WAYS) + " | "
              + " | ".join(f"{r:.2f}" for r in ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
