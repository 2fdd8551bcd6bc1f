"""Predict throughput against the machine's matmul FLOP rate, measured in one run.

    python benchmarks/bench_predict.py [--frames 2000] [--device cpu] [--repeats 5] [--movie noise|flash]

Interleaves, ``repeats`` times: a float32 matmul (the machine's rate), nr.predict
on a 50×50 binary white-noise movie with the shipped model, and the obvious
baseline (every 40-frame window gathered and passed through the model with
torch's direct conv1). Reports the best of each: frames/s, the first
convolution's direct-convolution FLOPs over predict's time as a fraction of
the matmul rate (the issue's target: >= 50%; above 100% means conv1 is done
with fewer FLOPs than the direct convolution, here by FFT), and the speed-up
over the baseline. ``--movie flash`` uses a full-field flash train instead
(2-frame flashes of −2, period 6) and also times ``nr.predict(...,
invariance="none")``, the general FFT path, against the default, which takes
first_layer's exact full-field path.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import napari_retina as nr
from napari_retina._frames import batches, gather_windows


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def conv1_flops_per_frame(cfg: nr.ModelConfig) -> float:
    h1 = cfg.map_sizes[0]
    return 2.0 * cfg.channels[0] * h1 * h1 * cfg.history * cfg.kernels[0] ** 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--movie", choices=("noise", "flash"), default="noise")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = nr.load_model(device=device)
    if args.movie == "noise":
        stim = np.sign(np.random.default_rng(0).standard_normal((args.frames, 50, 50))).astype(np.float32)
    else:
        n_flashes = (args.frames - 10) // 6
        stim = nr.stimuli.flash_train(period=6, n_flashes=n_flashes, pre=4, post=args.frames - 4 - 6 * n_flashes,
                                      size=50)[: args.frames]
    source = torch.from_numpy(stim)
    idx = np.arange(model.config.history - 1, args.frames)
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def baseline() -> None:
        with torch.inference_mode():
            for chunk in batches(idx, 256):
                model(gather_windows(source, chunk, model.config.history).to(device))

    def run() -> None:
        nr.predict(model, stim, batch_size=args.batch_size)

    def general() -> None:
        nr.predict(model, stim, batch_size=args.batch_size, invariance="none")

    run(), baseline(), a @ b  # warm-up
    best = {"matmul": np.inf, "predict": np.inf, "baseline": np.inf, "general": np.inf}
    for _ in range(args.repeats):
        best["matmul"] = min(best["matmul"], timed(lambda: a @ b, device))
        best["predict"] = min(best["predict"], timed(run, device))
        best["baseline"] = min(best["baseline"], timed(baseline, device))
        if args.movie == "flash":
            best["general"] = min(best["general"], timed(general, device))
    rate = 2 * n**3 / best["matmul"] / 1e9
    conv1 = conv1_flops_per_frame(model.config) * len(idx) / best["predict"] / 1e9
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}; best of {args.repeats}, interleaved")
    print(f"matmul float32 rate: {rate:.1f} GFLOP/s")
    print(f"predict {args.frames} frames: {best['predict']:.3f} s = {len(idx) / best['predict']:.0f} frames/s; "
          f"conv1 (direct-convolution FLOPs) {conv1:.1f} GFLOP/s = {conv1 / rate:.0%} of the matmul rate")
    print(f"baseline (windows + direct conv1): {best['baseline']:.3f} s; predict is "
          f"x{best['baseline'] / best['predict']:.1f} faster")
    if args.movie == "flash":
        print(f"general path (invariance='none', conv1 by FFT): {best['general']:.3f} s; the full-field path is "
              f"x{best['general'] / best['predict']:.1f} faster")


if __name__ == "__main__":
    main()
