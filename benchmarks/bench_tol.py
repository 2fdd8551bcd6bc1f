"""Attribution by tolerance (issue 15): speed and accuracy against Captum, and both against the matmul rate.

Run:  python benchmarks/bench_tol.py [--frames 40] [--ref-frames 2] [--captum-frames 40] [--flash-frames 2000]
      [--repeats 2] [--threads 2] [--device cpu|cuda]

Everything in one process, on one device, the shipped model, cell 0:

(a) white noise, ``--frames`` attributed frames: nr.attribute at ``tol=1e-3``
    (the default) and at the old default (8 kink_midpoint steps) against
    Captum LayerIntegratedGradients on conv1 with its defaults (50
    Gauss–Legendre steps; 5 frames per call, internal batch 250, the best
    setting measured in BENCHMARKS.md), interleaved, best of ``--repeats``.
    Accuracy: relative Frobenius error of the maps against a float64
    2,000-step kink_midpoint reference on ``--ref-frames`` evenly spaced frames.
(b) full-field flash train, ``--flash-frames`` frames (2-frame flashes of −2
    every 8 frames): nr.attribute at ``tol=1e-3`` (completeness error, time)
    against Captum GL-50 timed on ``--captum-frames`` frames and scaled
    linearly (its cost per frame is constant).
(c) the machine's float32 matmul rate; attribution's work by
    ``bench_attribution.flops_per_frame`` with the points each frame actually
    evaluated (4 + 8 + … + its final level), and predict on 2,000
    white-noise frames by conv1's direct-convolution FLOPs (as
    ``bench_predict.py``), each as a fraction of that rate.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys

import numpy as np
import torch

import napari_retina as nr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attribution  # noqa: E402
from bench_attribution import flops_per_frame  # noqa: E402
from bench_predict import conv1_flops_per_frame  # noqa: E402

DEVICE = torch.device("cpu")


def timed(fn):
    """``(fn(), seconds)`` on this script's DEVICE (bench_attribution.timed)."""
    return bench_attribution.timed(fn, DEVICE)


def captum_gl50(model, stim, idx, per_call: int = 5, ibs: int = 250) -> np.ndarray:
    """Captum LayerIntegratedGradients on conv1, its defaults (GL-50), cell 0: maps (len(idx), C, h, w)."""
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(lambda inp: model(inp)[:, [0]].sum(1), model.conv1)
    x_all = torch.from_numpy(stim)
    H = model.config.history
    out = []
    for i in range(0, len(idx), per_call):
        x = torch.stack([x_all[t - H + 1 : t + 1] for t in idx[i : i + per_call]]).to(DEVICE)
        out.append(lig.attribute(x, baselines=torch.zeros_like(x), n_steps=50, method="gausslegendre",
                                 internal_batch_size=ibs).detach())
    return torch.cat(out).cpu().numpy()


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def evaluated_points(per_frame: np.ndarray, tol) -> np.ndarray:
    """Points each frame evaluated: 4 + 8 + … + its final level (adaptive), or its fixed steps."""
    per_frame = np.asarray(per_frame, np.float64)
    return 2 * per_frame - nr.attribution.ADAPTIVE_START_STEPS if tol is not None else per_frame


def work_fraction(cfg, attr, seconds: float, rate: float) -> float:
    """Attribution's FLOPs (flops_per_frame at the points evaluated) over its time, as a fraction of ``rate``."""
    pts = evaluated_points(attr.steps_per_frame[attr.frames], attr.tol)
    flops = sum(flops_per_frame(cfg, p, attr.rule) for p in pts)
    return flops / seconds / (rate * 1e9)


def flash_train(T: int, size: int) -> np.ndarray:
    f = np.zeros(T, np.float32)
    for t in range(0, T, 8):
        f[t : t + 2] = -2.0
    return np.broadcast_to(f[:, None, None], (T, size, size)).copy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--ref-frames", type=int, default=2)
    ap.add_argument("--captum-frames", type=int, default=40)
    ap.add_argument("--flash-frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nr.load_model(device=DEVICE)
    cfg, H = model.config, model.config.history
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {DEVICE}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {load:.1f}, "
          f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC")
    rate = bench_attribution.matmul_gflops(DEVICE)
    print(f"float32 matmul: {rate:.1f} GFLOP/s")

    # ---- (a) white noise
    rng = np.random.default_rng(0)
    stim = rng.standard_normal((args.frames + H - 1, cfg.size, cfg.size)).astype(np.float32)
    idx = np.arange(H - 1, len(stim))
    ref_idx = idx[np.linspace(0, len(idx) - 1, args.ref_frames).astype(int)]
    m64 = copy.deepcopy(model).double()
    ref, t_ref = timed(lambda: nr.attribute(m64, stim, cell=0, steps=2000, invariance="none", frames=ref_idx,
                                            batch_size=512))
    R = ref.maps[ref_idx].astype(np.float64)
    print(f"reference: float64 kink_midpoint 2,000 steps on frames {list(ref_idx)}: {t_ref:.0f} s")
    best = {"captum": np.inf, "tol": np.inf, "steps8": np.inf}
    for r in range(args.repeats):
        cap, dt = timed(lambda: captum_gl50(model, stim, idx))
        best["captum"] = min(best["captum"], dt)
        ours, dt = timed(lambda: nr.attribute(model, stim, cell=0, invariance="none"))
        best["tol"] = min(best["tol"], dt)
        old, dt = timed(lambda: nr.attribute(model, stim, cell=0, steps=8, invariance="none"))
        best["steps8"] = min(best["steps8"], dt)
        print(f"  run {r + 1}: captum {best['captum']:.2f} s, tol=1e-3 {best['tol']:.2f} s, "
              f"8 steps {best['steps8']:.2f} s (best so far)")
    pos = np.searchsorted(idx, ref_idx)
    e_cap, e_tol, e_old = rel(cap[pos], R), rel(ours.maps[ref_idx], R), rel(old.maps[ref_idx], R)
    used = ours.steps_per_frame[idx]
    hist = dict(zip(*np.unique(used, return_counts=True)))
    print(f"\n(a) white noise, {len(idx)} frames, cell 0")
    print(f"| Captum GL-50 | {best['captum']:.2f} s | error {e_cap:.1e} | completeness — |")
    print(f"| nr.attribute tol=1e-3 (default) | {best['tol']:.2f} s | error {e_tol:.1e} | completeness "
          f"{ours.completeness_error:.1e} | ×{best['captum'] / best['tol']:.1f} faster, {e_cap / e_tol:.1f}× more "
          f"accurate | steps per frame {{{', '.join(f'{int(k)}: {int(v)}' for k, v in hist.items())}}} |")
    print(f"| nr.attribute steps=8 (old default) | {best['steps8']:.2f} s | error {e_old:.1e} | completeness "
          f"{old.completeness_error:.1e} | ×{best['captum'] / best['steps8']:.1f} faster |")
    f_tol = work_fraction(cfg, ours, best["tol"], rate)
    f_old = work_fraction(cfg, old, best["steps8"], rate)
    print(f"  work: tol=1e-3 at {f_tol:.0%} of the matmul rate, steps=8 at {f_old:.0%}")

    # ---- (b) flash train
    train = flash_train(args.flash_frames, cfg.size)
    ridx = np.arange(H - 1, len(train))
    _, t_sub = timed(lambda: captum_gl50(model, train, ridx[: args.captum_frames]))
    t_cap_b = t_sub / args.captum_frames * len(ridx)
    fl, t_fl = np.inf, np.inf
    for _ in range(args.repeats):
        fl, dt = timed(lambda: nr.attribute(model, train, cell=0))
        t_fl = min(t_fl, dt)
    hist = ", ".join(f"{int(k)}: {int(v)}" for k, v in zip(*np.unique(fl.steps_per_frame[fl.frames],
                                                                          return_counts=True)))
    print(f"\n(b) full-field flash train, {args.flash_frames} frames (2-frame flashes of −2 every 8 frames)")
    print(f"| Captum GL-50 | {t_sub:.2f} s on {args.captum_frames} frames → {t_cap_b:.0f} s for {len(ridx)} |")
    print(f"| nr.attribute tol=1e-3 ({fl.invariance}) | {t_fl:.2f} s | completeness {fl.completeness_error:.1e} | "
          f"×{t_cap_b / t_fl:.0f} faster | steps per frame {{{hist}}} |")

    # ---- (c) predict
    noise = np.sign(np.random.default_rng(0).standard_normal((2000, cfg.size, cfg.size))).astype(np.float32)
    nr.predict(model, noise[:100])
    t_pred = min(timed(lambda: nr.predict(model, noise))[1] for _ in range(args.repeats))
    n_out = len(noise) - H + 1
    f_pred = conv1_flops_per_frame(cfg) * n_out / t_pred / (rate * 1e9)
    print(f"\n(c) predict, 2,000 white-noise frames: {t_pred:.3f} s ({n_out / t_pred:,.0f} frames/s), conv1 in "
          f"direct-convolution FLOPs at {f_pred:.0%} of the matmul rate ({rate:.0f} GFLOP/s); attribution tol=1e-3 "
          f"at {f_tol:.0%}")


if __name__ == "__main__":
    main()
