"""Batch runs on a local dask cluster: speed-up, per-task overhead, tiny-task rate, memory per worker.

    python benchmarks/bench_batch.py [--part grid|tiny|memory|all] [--workers 1,2] [--stimuli 6]
                                     [--tiny-workers 2] [--cpu-only] [--json out.json]

- ``grid``: the same grid (the shipped model, ``--stimuli`` white-noise
  stimuli of 300 frames, predict + attribute of cell 0, 8 steps, unsplit) on
  a LocalCluster of each of ``--workers`` worker processes (one torch thread
  each; on the GPU when the workers see one, unless ``--cpu-only``), each
  started before the clock runs. Reports the wall time, the speed-up, the summed
  compute time the workers reported, and the per-task overhead
  ``(wall × workers − Σ compute) / tasks`` (scheduling, pickling, Zarr writes,
  renames, idle tails).
- ``tiny``: 60 predict tasks of a tiny model (history 8, 12×12 pixels) on
  20-frame stimuli on ``--tiny-workers`` workers: tasks per second end to end, the same
  overhead, and the raw dask rate of no-op tasks on the same cluster.
- ``memory``: predict on ``--frames`` (2,000/8,000/32,000)-frame movies on 1
  worker, split (``block_frames=1024``) and unsplit, each in a fresh cluster: the worker's
  peak RSS (``ru_maxrss``) as the blocks report it.

Prints one Markdown row per measurement (and the machine line).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import napari_retina as nr  # noqa: E402
from napari_retina import batch  # noqa: E402


ENV = {"OMP_NUM_THREADS": "1"}


def _cluster(workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env=ENV)
    client = Client(cluster)
    client.run(lambda: __import__("napari_retina.batch") and __import__("torch").zeros(1) and None)   # warm imports
    return client


def _run(spec: dict, workers: int) -> tuple[batch.Report, float]:
    client = _cluster(workers)
    try:
        t0 = time.perf_counter()
        report = batch.run(spec, client)
        wall = time.perf_counter() - t0
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert not report.failed, report.failed
    return report, wall


def _overhead(report: batch.Report, wall: float, workers: int) -> float:
    return (wall * workers - sum(report.task_seconds)) / max(len(report.done), 1)


def _devices(out: Path) -> list:
    return sorted({r.attrs["provenance"]["device"] for r in batch.load(out).values()})


def grid(tmp: Path, args) -> list[dict]:
    rng = np.random.default_rng(0)
    for i in range(args.stimuli):
        np.save(tmp / f"s{i:02d}.npy", np.sign(rng.standard_normal((300, 50, 50))).astype(np.float32))
    rows = []
    for workers in args.workers:
        spec = {"stimuli": [str(tmp / "s*.npy")], "cells": [0], "analyses": ["predict", "attribute"],
                "out": str(tmp / f"grid{workers}"), "steps": 8, "block_frames": 100_000}
        report, wall = _run(spec, workers)
        rows.append({"part": "grid", "workers": workers, "tasks": len(report.done), "wall_s": wall,
                     "compute_s": sum(report.task_seconds), "overhead_s": _overhead(report, wall, workers),
                     "task_s": float(np.mean(report.task_seconds)), "devices": _devices(tmp / f"grid{workers}")})
        rows[-1]["speedup"] = rows[0]["wall_s"] / rows[-1]["wall_s"]
    return rows


def tiny(tmp: Path, args) -> list[dict]:
    import torch

    torch.manual_seed(0)
    model = nr.RetinaCNN(nr.ModelConfig(history=8, size=12, channels=(3, 3), kernels=(5, 3), n_cells=2)).eval()
    nr.save_model(model, tmp / "tiny.pt")
    rng = np.random.default_rng(0)
    for i in range(60):
        np.save(tmp / f"t{i:02d}.npy", rng.standard_normal((20, 12, 12)).astype(np.float32))
    spec = {"model": str(tmp / "tiny.pt"), "stimuli": [str(tmp / "t*.npy")], "analyses": ["predict"],
            "out": str(tmp / "tiny")}
    client = _cluster(args.tiny_workers)
    try:
        t0 = time.perf_counter()
        report = batch.run(spec, client)
        wall = time.perf_counter() - t0
        n = 2000
        t0 = time.perf_counter()
        client.gather(client.map(lambda x: x, range(n), pure=False))
        noop = n / (time.perf_counter() - t0)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    return [{"part": "tiny", "workers": args.tiny_workers, "tasks": len(report.done), "wall_s": wall,
             "tasks_per_s": len(report.done) / wall, "overhead_s": _overhead(report, wall, args.tiny_workers),
             "task_s": float(np.mean(report.task_seconds)), "noop_tasks_per_s": noop}]


def memory(tmp: Path, args) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for frames in args.frames:
        path = tmp / f"m{frames}.npy"
        movie = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(frames, 50, 50))
        for a in range(0, frames, 1000):
            movie[a:a + 1000] = np.sign(rng.standard_normal((min(1000, frames - a), 50, 50)))
        del movie
        for block in args.blocks:
            spec = {"stimuli": [str(path)], "analyses": ["predict"], "out": str(tmp / f"mem{frames}-{block}"),
                    "block_frames": block}
            report, wall = _run(spec, 1)
            rows.append({"part": "memory", "frames": frames, "block_frames": block if block < 10 ** 9 else "unsplit",
                         "peak_mb": max(report.peak_mb), "wall_s": wall})
        path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("grid", "tiny", "memory", "all"), default="all")
    parser.add_argument("--workers", default="1,2", help="worker counts for the grid, e.g. 1,2,4,8")
    parser.add_argument("--stimuli", type=int, default=6, help="stimuli in the grid (2 tasks each)")
    parser.add_argument("--tiny-workers", type=int, default=2)
    parser.add_argument("--cpu-only", action="store_true", help="hide GPUs from the workers")
    parser.add_argument("--frames", default="2000,8000,32000", help="movie lengths for the memory part")
    parser.add_argument("--blocks", default="1024,1000000000", help="block_frames for the memory part (huge: unsplit)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.frames = [int(f) for f in args.frames.split(",")]
    args.blocks = [int(b) for b in args.blocks.split(",")]
    if args.cpu_only:
        ENV["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    print(f"machine: {os.cpu_count()}-core {platform.machine()}, load {os.getloadavg()[0]:.1f}, torch "
          f"{torch.__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for part in (("grid", "tiny", "memory") if args.part == "all" else (args.part,)):
            rows += globals()[part](Path(d), args)
            for row in rows:
                if row["part"] == part:
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
