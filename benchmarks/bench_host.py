"""The host's share of a long attribution: nr.attribute with its device work stubbed out, in one run.

    PYTHONPATH=src python benchmarks/bench_host.py [--frames 10000] [--device cpu] [--repeats 5] [--no-real]

Issue 15's GPU target is 10,000 white-noise frames in <= 0.2 s. Besides the
device's work (conv1 and the path integral), a call checks the movie (finite,
contrast units), looks for its invariance and for repeated windows, allocates
the (T, C, h, w) maps, copies each chunk's results into them and checks them
for NaN: work on the host that no GPU speeds up. This script times that part:
nr.attribute on the shipped model with ``FirstLayer.linear`` and the adaptive
path integral replaced by constant tensors of the same shapes on ``--device``
(so the device-to-host copies stay), best of ``--repeats`` after a warm-up;
then the real call on the same frames (best of 1 on a CPU, ``--repeats`` on a
GPU) and the stubbed call's share of it; and a profile of the stubbed call
(the functions with the most own time). gpu_rows.py imports
:func:`host_seconds` for its row H.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import sys
import time

import numpy as np
import torch

import napari_retina as nr
from napari_retina import first_layer
from napari_retina.attribution import _attribute

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import machine  # noqa: E402


def _stub_linear(self, idx):
    """d = W⊛s replaced by ones of its shape (len(idx), C1, h1, h1) on the model's device."""
    return torch.ones(len(idx), self.weight.shape[0], self.size, self.size, device=self.weight.device)


def _stub_integral(head, d, a0, scale, rule, tol, batch_size, f0, invariance, scales):
    """(G, rates, steps per frame) of integrate_adaptive's shapes: constants, finite, 8 points per frame."""
    n = d.shape[0]
    return (torch.full_like(d, 1e-3), torch.full((n,), 1.0 + f0, dtype=d.dtype, device=d.device),
            np.full(n, 8, dtype=np.int64))


@contextlib.contextmanager
def device_work_stubbed():
    """Within: nr.attribute's conv1 and adaptive integral are the stubs above (restored on exit)."""
    saved = first_layer.FirstLayer.linear, _attribute.integrate_adaptive
    first_layer.FirstLayer.linear, _attribute.integrate_adaptive = _stub_linear, _stub_integral
    try:
        yield
    finally:
        first_layer.FirstLayer.linear, _attribute.integrate_adaptive = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs, the device synchronised around each."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def host_seconds(model, stim: np.ndarray, repeats: int = 5, **kwargs) -> float:
    """Best time of ``nr.attribute(model, stim, **kwargs)`` with the device work stubbed (warm-up first)."""
    with device_work_stubbed():
        nr.attribute(model, stim[: model.config.history + 100], **kwargs)
        return best_seconds(lambda: nr.attribute(model, stim, **kwargs), model.device, repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-real", action="store_true", help="skip the real call (minutes on a CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = nr.load_model(device=args.device)
    device = model.device
    stim = nr.stimuli.white_noise(frames=args.frames + model.config.history - 1, seed=2)
    print(f"{machine()}, device {device}, torch threads {torch.get_num_threads()}; "
          f"{args.frames:,} white-noise frames, cell 0, defaults")
    t_host = host_seconds(model, stim, args.repeats)
    print(f"host part (device work stubbed), best of {args.repeats}: {t_host:.3f} s")
    if not args.no_real:
        real_repeats = args.repeats if device.type == "cuda" else 1
        nr.attribute(model, stim[: model.config.history + 100])
        t_real = best_seconds(lambda: nr.attribute(model, stim), device, real_repeats)
        print(f"real call, best of {real_repeats}: {t_real:.3f} s; host part {100 * t_host / t_real:.2g}% of it")
    with device_work_stubbed():
        prof = cProfile.Profile()
        prof.runcall(nr.attribute, model, stim)
    print("stubbed call, the functions with the most own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
