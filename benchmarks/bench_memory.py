"""Peak memory of the invariance check against nr.predict on the same long movie, in one run.

    python benchmarks/bench_memory.py [--frames 100000] [--old REV]

Every measurement runs in a fresh subprocess that imports napari_retina, loads
the shipped model, builds the same 50×50 float32 movie chunk by chunk (so
building it costs only the movie itself), reads its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), runs one call and reads the
peak again:

- ``predict``: ``nr.predict(model, movie)`` (the baseline);
- ``invariance``: ``analysis.resolve_invariance(movie, "auto")``, what the
  Analyze widget runs on a long movie (napari_retina._invariance, streamed);
- ``old invariance`` (with ``--old REV``): ``attribution.resolve_invariance``
  as it was at git revision REV (its source taken with ``git show``, the
  functions compiled on their own), same call.

Two movies: binary white noise (answer "none": the streamed check stops
after one chunk) and full-field flashes (answer "space": the worst case, every
frame read in both passes). predict runs once, on the first movie (its memory
does not depend on the values, and it takes minutes at 100,000 frames on a
CPU). Reports each peak, its increase over the process before the call
(imports, model, movie), and the ratio of each peak to predict's (target for
the invariance check: <= 1.5).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 50


def peak_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_movie(kind: str, frames: int, chunk: int = 1000) -> np.ndarray:
    """(frames, 50, 50) float32, filled chunk by chunk: binary noise or full-field flashes."""
    rng = np.random.default_rng(0)
    movie = np.empty((frames, SIZE, SIZE), np.float32)
    for a in range(0, frames, chunk):
        n = min(chunk, frames - a)
        if kind == "noise":
            movie[a : a + n] = np.sign(rng.standard_normal((n, SIZE, SIZE), dtype=np.float32))
        else:
            movie[a : a + n] = rng.choice(np.float32([-1, 0, 1]), n)[:, None, None]
    return movie


def old_resolve_invariance(rev: str):
    """``resolve_invariance`` from src/napari_retina/attribution.py at ``rev``, compiled on its own."""
    src = subprocess.check_output(["git", "-C", str(REPO), "show", f"{rev}:src/napari_retina/attribution.py"], text=True)
    tree = ast.parse(src)
    keep = [n for n in tree.body
            if (isinstance(n, ast.FunctionDef) and n.name in ("_axis_uniform", "resolve_invariance"))
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") in ("INVARIANCES", "UNIFORM_RTOL")
                                                  for t in n.targets))]
    namespace = {"np": np}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"{rev}:attribution.py", "exec"), namespace)
    return namespace["resolve_invariance"]


def worker(what: str, kind: str, frames: int, old: str) -> None:
    """One measurement; prints a JSON line."""
    import torch

    import napari_retina as nr
    from napari_retina import analysis

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = nr.load_model(device="cpu")
    old_fn = old_resolve_invariance(old) if what == "old invariance" else None
    movie = build_movie(kind, frames)
    before = peak_mib()
    t0 = time.perf_counter()
    if what == "predict":
        answer = str(nr.predict(model, movie).shape)
    elif what == "invariance":
        answer = analysis.resolve_invariance(movie, "auto")
    else:
        answer = old_fn(movie, "auto")
    dt = time.perf_counter() - t0
    print(json.dumps({"what": what, "kind": kind, "before": before, "peak": peak_mib(), "seconds": dt,
                      "answer": answer}))


def measure(what: str, kind: str, frames: int, old: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--worker", what, "--kind", kind, "--frames", str(frames),
                          "--old", old], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    import torch

    return (f"{platform.machine()} {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--old", default="", help="git revision whose attribution.resolve_invariance to measure too")
    ap.add_argument("--kinds", default="noise,flashes")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="noise", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.kind, args.frames, args.old)
    print(f"machine: {machine()}; movie {args.frames} x {SIZE} x {SIZE} float32 "
          f"= {args.frames * SIZE * SIZE * 4 / 2**20:.0f} MiB")
    whats = ["invariance"] + (["old invariance"] if args.old else [])
    kinds = args.kinds.split(",")
    base = measure("predict", kinds[0], args.frames, args.old)
    for i, kind in enumerate(kinds):
        rows = {"predict": base} if i == 0 else {}
        rows.update({w: measure(w, kind, args.frames, args.old) for w in whats})
        for w, r in rows.items():
            print(f"{kind:8s} {w:15s} peak {r['peak']:7.0f} MiB (+{r['peak'] - r['before']:6.0f} over "
                  f"{r['before']:.0f} before the call)  {r['peak'] / base['peak']:5.2f}x predict's peak  "
                  f"{r['seconds']:6.2f} s  -> {r['answer']}")


if __name__ == "__main__":
    main()
