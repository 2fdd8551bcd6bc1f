"""The synthetic retina's speed: ``Retina.respond`` against its previous filtering, measured in one run.

    python benchmarks/bench_truth.py [--repeats 3] [--threads 1]

The truth filters each frame with every pathway's 15×15 Gaussian and pools the rectified
subunits over each cell's Gaussian. Since 2026-12-03 it does both with matmuls (a Gaussian is
separable: a frame X filtered is A X Aᵀ, A banded; the pooling is one matmul in the subunits'
memory order). The baseline is the previous code, kept here: ``F.conv2d`` with the 15×15 kernels
and an ``einsum`` pooling. Both run alternately, ``repeats`` times, on a 2,000-frame white noise
(versions 2 and 3) and on the reversal experiment's movie (version 3, cell 3, the test suite's
slowest truth); the table gives the best of each, the ratio, and the largest difference of the
rates (spikes/bin).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F

import napari_retina as nr
from napari_retina import synthetic as syn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import machine  # noqa: E402


class Conv2dRetina(syn.Retina):
    """The truth as it filtered before: a 15×15 ``conv2d`` per pathway (pooling: :func:`einsum_pooling`)."""

    def _build(self) -> None:
        super()._build()
        self._kernels = torch.tensor(np.stack([q.spatial for q in self.candidates])[:, None], dtype=torch.float32)

    def _subunits(self, chunk: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_k = len(self.candidates)
        x = F.conv2d(chunk[:, None], self._kernels, padding=syn.KERNEL // 2)          # (T, K, H, W)
        T, _, H, W = x.shape
        x = F.pad(x.permute(2, 3, 1, 0).reshape(H * W, n_k, T), (self.history - 1, 0))
        u = F.conv1d(x, self._temporal, groups=n_k).reshape(H, W, n_k, T).permute(3, 2, 0, 1)[-keep:]
        return u, torch.relu(u - self._thresholds.view(1, -1, 1, 1))


@contextlib.contextmanager
def einsum_pooling():
    """The previous pooling, ``einsum("tkhw,chw->tck")``, in place of ``synthetic._pool``."""
    matmul = syn._pool
    syn._pool = lambda b, pools: torch.einsum("tkhw,chw->tck", b, pools)
    try:
        yield
    finally:
        syn._pool = matmul


def timed(fn, context=contextlib.nullcontext) -> tuple[float, np.ndarray]:
    """``fn()``'s wall time (s) inside ``context()``, and its result."""
    with context():
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    noise = nr.stimuli.white_noise(frames=2000, size=50, seed=0)
    cases = [("white noise, 2,000 frames, version 2", 2, lambda gt: gt.respond(noise)),
             ("white noise, 2,000 frames, version 3", 3, lambda gt: gt.respond(noise)),
             ("run_truth('reversal', cell 3), version 3", 3,
              lambda gt: nr.experiments.run_truth("reversal", gt, 3).response)]
    print(f"{machine()}, {args.threads} torch thread(s), load average {os.getloadavg()[0]:.1f}")
    print("| what | conv2d + einsum (before) | matmuls (now) | ratio | max |Δ rate| |")
    print("|---|---|---|---|---|")
    for name, version, run in cases:
        now, before = syn.Retina(seed=0, version=version), Conv2dRetina(seed=0, version=version)
        run(now)                                                                        # warm-up
        t_now, t_before = [], []
        for _ in range(args.repeats):                                                   # alternating
            t, r_now = timed(lambda: run(now))
            t_now.append(t)
            t, r_before = timed(lambda: run(before), einsum_pooling)
            t_before.append(t)
        diff = float(np.abs(np.asarray(r_now) - np.asarray(r_before)).max())
        print(f"| {name} | {min(t_before):.2f} s | {min(t_now):.2f} s | ×{min(t_before) / min(t_now):.1f} | "
              f"{diff:.1e} |")


if __name__ == "__main__":
    main()
