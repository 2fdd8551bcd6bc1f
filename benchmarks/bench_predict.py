"""Predict throughput against the machine's matmul FLOP rate, measured in one run.

    python benchmarks/bench_predict.py [--frames 2000] [--device cpu]

Prints frames/s and the first convolution's FLOPs over the time taken as a
fraction of the float32 matmul rate measured in the same process (the issue's
target: >= 50%).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import napari_retina as nr


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def conv1_flops_per_frame(cfg: nr.ModelConfig) -> float:
    h1 = cfg.map_sizes[0]
    return 2.0 * cfg.channels[0] * h1 * h1 * cfg.history * cfg.kernels[0] ** 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    model = nr.load_model(device=device)
    stim = np.sign(np.random.default_rng(0).standard_normal((args.frames, 50, 50))).astype(np.float32)
    nr.predict(model, stim[:200], batch_size=args.batch_size)  # warm-up
    rate = matmul_gflops(device)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        nr.predict(model, stim, batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    rate_after = matmul_gflops(device)
    n_out = args.frames - model.config.history + 1
    conv1 = conv1_flops_per_frame(model.config) * n_out / best / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    print(f"matmul float32 rate: {rate:.1f} GFLOP/s before, {rate_after:.1f} after")
    print(f"predict {args.frames} frames: {best:.3f} s = {n_out / best:.0f} frames/s; "
          f"conv1 {conv1:.1f} GFLOP/s = {conv1 / max(rate, rate_after):.0%} of the matmul rate")


if __name__ == "__main__":
    main()
