"""What resampling a stack to the model's grid costs, measured in one run against baselines of the same run.

    PYTHONPATH=src python benchmarks/bench_resample.py [--frames 20000] [--repeats 3]

A uint8 stack of ``--frames`` frames is prepared for the shipped model
(``_validate.as_stimulus``, z-scored by its own statistics, as a uint8 TIFF is)
four ways: as it is on the model's grid (50 × 50 at 10 ms: the baseline), at
another pixel size (100 × 100 of 27.5 µm: ``pixel_um``), at another frame
interval (60 Hz frames, 50/3 ms: ``frame_ms``, each bin reading only its run of
frames, :func:`napari_retina._resample.band_sum`) and at both. For
``frame_ms``, the dense product of the time weights (``np.tensordot``, the
first version) is timed too, on the same stack, as the method's baseline; and
``nr.predict`` on the resampled stack says what the resampling costs next to
the model. Best of ``--repeats``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import machine  # noqa: E402


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def dense_time_means(stack: np.ndarray, frame_ms: float, mean: float, std: float,
                     chunk_values: int = 1 << 22) -> np.ndarray:
    """The first version's product: each chunk of bins as a dense (bins × frames) weights matrix times the frames."""
    from napari_retina._resample import area_weights, model_frame_count

    n_out = model_frame_count(len(stack), frame_ms)
    out = np.empty((n_out, *stack.shape[1:]), np.float32)
    step = max(1, int(chunk_values / (stack.shape[1] * stack.shape[2])))
    for k in range(0, n_out, step):
        n = min(step, n_out - k)
        rows, w = area_weights(frame_ms, k, n, len(stack), unit=10.0)
        out[k:k + n] = (np.tensordot(w, stack[rows].astype(np.float64), axes=1) - mean) / std
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import napari_retina as nr
    from napari_retina._validate import as_stimulus, mean_std

    model = nr.load_model()
    H, S = model.config.history, model.config.size
    rng = np.random.default_rng(0)
    own = rng.integers(0, 256, (args.frames, S, S), dtype=np.uint8)
    fine = rng.integers(0, 256, (args.frames, 2 * S, 2 * S), dtype=np.uint8)
    sixty = 50.0 / 3.0
    cases = [("model's grid (50 × 50, 10 ms): baseline", own, {}),
             ("pixel_um 27.5 (100 × 100 stack)", fine, {"pixel_um": 27.5}),
             ("frame_ms 50/3 (60 Hz), by runs", own, {"frame_ms": sixty}),
             ("pixel_um 27.5 and frame_ms 50/3", fine, {"pixel_um": 27.5, "frame_ms": sixty})]
    rows, base = [], None
    for label, stack, kwargs in cases:
        t, out = best(lambda: as_stimulus(stack, history=H, size=S, **kwargs), args.repeats)
        base = t if base is None else base
        rows.append((label, out.shape, t))
    mean, std = mean_std(own)
    t_dense, dense = best(lambda: dense_time_means(own, sixty, mean, std), args.repeats)
    by_runs = as_stimulus(own, history=H, size=S, frame_ms=sixty)
    assert np.abs(dense - by_runs).max() < 1e-5, "the two products differ"
    t_predict, _ = best(lambda: nr.predict(model, by_runs), 1)

    print(f"{machine()}, {args.frames:,} uint8 frames, best of {args.repeats}\n")
    print("| preparation (as_stimulus) | output | time | ratio |")
    print("|---|---|---|---|")
    for label, shape, t in rows:
        print(f"| {label} | {shape[0]:,} × {shape[1]} × {shape[2]} | {t:.3f} s | ×{t / base:.1f} the baseline |")
    t_runs = rows[2][2]
    print(f"| frame_ms 50/3, dense weights product (first version) | same | {t_dense:.3f} s | "
          f"×{t_dense / t_runs:.1f} the run-by-run sum |")
    print(f"| nr.predict on the 60 Hz stack's {len(by_runs):,} bins | rates | {t_predict:.3f} s | resampling is "
          f"{t_runs / t_predict:.1%} of it |")


if __name__ == "__main__":
    main()
