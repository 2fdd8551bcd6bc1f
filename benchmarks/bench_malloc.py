"""What keeping freed memory (napari_retina._malloc) buys the command on a CPU, measured in one run.

    python benchmarks/bench_malloc.py [--frames 1000] [--predict-frames 20000] [--repeats 3]

Each repeat starts two fresh processes, in alternating order: one as the
library leaves it (glibc's defaults), one after ``hold_freed_memory()`` as
the ``napari-retina`` command does. Each warms up, then times ``nr.attribute``
(defaults) on ``--frames`` white-noise frames and ``nr.predict`` on
``--predict-frames``, and reports its minor page faults and peak resident
memory. Prints a markdown table of medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import machine  # noqa: E402

WORK = """
import json, resource, sys, time
import numpy as np
if sys.argv[1] == "hold":
    from napari_retina._malloc import hold_freed_memory
    assert hold_freed_memory()
import napari_retina as nr
import torch
frames, predict_frames = int(sys.argv[2]), int(sys.argv[3])
m = nr.load_model()
H, S = m.config.history, m.config.size
rng = np.random.default_rng(0)
stim = rng.standard_normal((frames + H - 1, S, S)).astype(np.float32)
movie = rng.standard_normal((predict_frames, S, S)).astype(np.float32)
nr.attribute(m, stim[: H + 255]); nr.predict(m, movie[:2000])
flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = time.perf_counter(); nr.attribute(m, stim); attribute_s = time.perf_counter() - t
t = time.perf_counter(); nr.predict(m, movie); predict_s = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(attribute_s=attribute_s, predict_s=predict_s, faults=ru.ru_minflt - flt,
                      maxrss_mib=ru.ru_maxrss / 1024, threads=torch.get_num_threads())))
"""


def run(mode: str, frames: int, predict_frames: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WORK, mode, str(frames), str(predict_frames)],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--predict-frames", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res: dict[str, list] = {"default": [], "hold": []}
    for i in range(args.repeats):
        for mode in (("default", "hold") if i % 2 == 0 else ("hold", "default")):
            res[mode].append(run(mode, args.frames, args.predict_frames))
            print(mode, res[mode][-1], flush=True)
    med = {mode: {k: float(np.median([r[k] for r in rs])) for k in ("attribute_s", "predict_s", "faults",
                                                                        "maxrss_mib")} for mode, rs in res.items()}
    d, h = med["default"], med["hold"]
    print(f"\n{machine()}, {res['hold'][0]['threads']} torch threads; medians of {args.repeats} process pairs\n")
    print("| what | glibc defaults (the library) | freed memory held (the command) | ratio |\n|---|---|---|---|")
    print(f"| nr.attribute, {args.frames:,} white-noise frames, defaults | {d['attribute_s']:.2f} s | "
          f"{h['attribute_s']:.2f} s | ×{d['attribute_s'] / h['attribute_s']:.2f} faster |")
    print(f"| nr.predict, {args.predict_frames:,} frames | {d['predict_s']:.2f} s | {h['predict_s']:.2f} s | "
          f"×{d['predict_s'] / h['predict_s']:.2f} faster |")
    print(f"| minor page faults (both) | {d['faults']:,.0f} | {h['faults']:,.0f} | ×{d['faults'] / max(h['faults'], 1):.0f} fewer |")
    print(f"| peak resident memory | {d['maxrss_mib']:,.0f} MiB | {h['maxrss_mib']:,.0f} MiB | "
          f"×{h['maxrss_mib'] / d['maxrss_mib']:.2f} |")


if __name__ == "__main__":
    main()
