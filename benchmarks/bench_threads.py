"""How steady torch's CPU threads are on this machine: the same nr.attribute call timed in fresh processes.

    PYTHONPATH=src python benchmarks/bench_threads.py [--runs 3] [--calls 6] [--frames 100]

Each run starts one process per setting, in alternating order: torch with one
thread, with two (torch's default on a 2-core machine), and with two and
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at barriers instead of
spinning). A process loads the shipped model and times ``--calls`` calls of
``nr.attribute`` (defaults, cell 0) on ``--frames`` white-noise frames; the
first call includes torch's warm-up. On a machine shared with other jobs, a
thread spinning at a barrier can hold the core its partner needs: the spread
of the times is what this script shows (BENCHMARKS.md, "Reading CPU rows").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {"1 thread": ({}, 1), "2 threads": ({}, 2), "2 threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2)}

CHILD = """
import json, sys, time
import numpy as np, torch
import napari_retina as nr
torch.set_num_threads({threads})
model = nr.load_model(device="cpu")
stim = nr.stimuli.white_noise(frames={frames} + model.config.history - 1, seed=0)
times = []
for _ in range({calls}):
    t0 = time.perf_counter()
    nr.attribute(model, stim, cell=0)
    times.append(round(time.perf_counter() - t0, 3))
print(json.dumps(times))
"""


def run_child(env_extra: dict, threads: int, calls: int, frames: int) -> list[float]:
    """The ``calls`` times (s) of one fresh process with ``threads`` torch threads and ``env_extra`` set."""
    code = CHILD.format(threads=threads, calls=calls, frames=frames)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env_extra}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    results: dict[str, list[list[float]]] = {name: [] for name in SETTINGS}
    for run in range(args.runs):
        order = list(SETTINGS) if run % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            env_extra, threads = SETTINGS[name]
            load = os.getloadavg()[0]
            times = run_child(env_extra, threads, args.calls, args.frames)
            results[name].append(times)
            print(f"run {run + 1}, {name}: {times} (load {load:.1f})", flush=True)
    print("\n| torch threads | times of the calls (s), one group per run | spread |\n|---|---|---|")
    for name, runs in results.items():
        flat = [t for r in runs for t in r]
        groups = " · ".join(" ".join(f"{t:.2f}" for t in r) for r in runs)
        print(f"| {name} | {groups} | {min(flat):.2f}–{max(flat):.2f} (×{max(flat) / min(flat):.0f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
