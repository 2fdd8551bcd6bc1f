"""Attribution speed and accuracy: nr.attribute against Captum, same process, same inputs.

Run:  python benchmarks/bench_attribution.py [--frames 200] [--ref-frames 4] [--captum-frames 40]
      [--repeats 2] [--threads N] [--device cpu|cuda]

Both sides run on ``--device`` (Captum with the model and its inputs there).

Rows
----
(a) 50×50 white noise, ``--frames`` attributed frames, one cell: nr.attribute
    (default rule/steps) vs Captum LayerIntegratedGradients on conv1 with
    Captum's defaults (50 Gauss–Legendre steps), internal_batch_size tuned
    (best of several). Errors against a float64 2,000-step kink_midpoint
    reference on ``--ref-frames`` evenly spaced frames (its own error is
    estimated from a 1,000-step run).
(b) 2,000-frame full-field flash train (2-frame flashes of −2, period 6
    frames): nr.attribute vs Captum GL-50. Captum's time is measured on
    ``--captum-frames`` frames and scaled linearly (its cost per frame is
    constant); also a random-intensity flash train (no repeated windows).
Also: error vs steps per rule on the reference frames, and the machine's
torch matmul rate for the FLOP floor.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import time

import numpy as np
import torch

import napari_retina as nr


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


DEVICE = torch.device("cpu")


def sync(device=None):
    """Wait for ``device`` (default this script's DEVICE) to finish its queued work."""
    if (DEVICE if device is None else device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device=None, reps=10):
    """The float32 matmul rate of ``device`` (default DEVICE): best of ``reps`` n×n products (GFLOP/s)."""
    dev = DEVICE if device is None else device
    n = 8192 if dev.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    best = min(timed(lambda: a @ b, dev)[1] for _ in range(reps))
    return 2 * n**3 / best / 1e9


def windows(stim, history, idx):
    x = torch.from_numpy(stim)
    return torch.stack([x[t - history + 1 : t + 1] for t in idx]).to(DEVICE)


def captum_run(model, stim, idx, cells, steps, rule, ibs, per_call):
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(lambda inp: model(inp)[:, cells].sum(1), model.conv1)
    out = []
    for i in range(0, len(idx), per_call):
        x = windows(stim, model.config.history, idx[i : i + per_call])
        out.append(lig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method=rule,
                                 internal_batch_size=ibs).detach())
    return torch.cat(out).cpu().numpy()


def timed(fn, device=None):
    """``(fn(), seconds)``, synchronised with ``device`` (default DEVICE) before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def tune_captum(model, stim, idx, steps, rule):
    """Best (seconds per frame, per_call, internal_batch_size) on a few frames."""
    best = None
    for per_call, ibs in [(1, 50), (2, 100), (5, 250), (10, 500)]:
        sub = idx[:10]
        _, dt = timed(lambda: captum_run(model, stim, sub, [0], steps, rule, ibs, per_call))
        print(f"  captum tune: {per_call} frames/call, internal_batch_size {ibs}: {dt / len(sub) * 1e3:.0f} ms/frame")
        if best is None or dt / len(sub) < best[0]:
            best = (dt / len(sub), per_call, ibs)
    return best


def flops_per_frame(cfg, steps, rule):
    """Multiply-adds ×2 of nr.attribute's work per frame of a consecutive movie.

    conv1 by FFT (one new frame transformed, a complex history×C1 product per
    spatial frequency, C1 inverse transforms; FFTs counted as 2.5·N·log2 N),
    conv2 per point (forward, tangent for kink_midpoint, transpose) and one
    conv2 forward at α = 1.
    """
    (c1, c2), k2 = cfg.channels, cfg.kernels[1]
    h1, h2 = cfg.map_sizes
    npix = cfg.size * cfg.size
    fft = 2.5 * npix * np.log2(npix)
    conv1 = fft * (1 + c1) + 8 * cfg.history * c1 * cfg.size * (cfg.size // 2 + 1)
    conv2 = 2 * c1 * c2 * k2 * k2 * h2 * h2
    per_point = conv2 * (3 if rule == "kink_midpoint" else 2)  # forward, (tangent), transpose
    return conv1 + conv2 + steps * per_point


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--ref-frames", type=int, default=4)
    ap.add_argument("--captum-frames", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2, help="row (a): best of this many runs, Captum and ours")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both nr.attribute and Captum run there")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = nr.load_model(device=DEVICE)
    cfg = model.config
    H = cfg.history
    gpu = f", {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}{gpu}, device {DEVICE}, torch threads {torch.get_num_threads()}, "
          f"{datetime.date.today()}, torch {torch.__version__}")
    print(f"model: {cfg.channels} channels, kernels {cfg.kernels}, history {H}, size {cfg.size}, "
          f"provenance {str(model.provenance)[:80]}")
    gf = matmul_gflops()
    print(f"torch float32 matmul: {gf:.1f} GFLOP/s")

    # ---- reference and accuracy table (white noise)
    rng = np.random.default_rng(0)
    T = args.frames + H - 1
    stim = rng.standard_normal((T, cfg.size, cfg.size)).astype(np.float32)
    idx = np.arange(H - 1, T)
    ref_idx = idx[np.linspace(0, len(idx) - 1, args.ref_frames).astype(int)]
    m64 = copy.deepcopy(model).double()
    (ref, t_ref) = timed(lambda: nr.attribute(m64, stim, cell=0, steps=2000, rule="kink_midpoint",
                                              invariance="none", frames=ref_idx, batch_size=256))
    R = ref.maps[ref_idx].astype(np.float64)
    ref1k = nr.attribute(m64, stim, cell=0, steps=1000, rule="kink_midpoint", invariance="none",
                         frames=ref_idx, batch_size=256)
    print(f"reference: float64 kink_midpoint 2000 steps on frames {list(ref_idx)} ({t_ref:.0f} s); "
          f"1000 vs 2000 steps differ by {rel(ref1k.maps[ref_idx], R):.1e}; "
          f"completeness error {ref.completeness_error:.1e}")
    print("\nerror vs steps (relative Frobenius error of the maps vs the reference):")
    table = {}
    for rule in ("kink_midpoint", "kink1_midpoint", "gausslegendre", "riemann_middle", "riemann_right"):
        row = []
        for n in (4, 8, 16, 32, 50):
            a = nr.attribute(model, stim, cell=0, steps=n, rule=rule, invariance="none", frames=ref_idx)
            row.append(rel(a.maps[ref_idx], R))
        table[rule] = row
        print(f"  {rule:16s} " + "  ".join(f"{n:>3d}:{e:.1e}" for n, e in zip((4, 8, 16, 32, 50), row)))

    # ---- row (a)
    print(f"\n(a) white noise 50×50, {args.frames} frames, cell 0")
    gl50_err = table["gausslegendre"][-1]
    best = tune_captum(model, stim, idx, 50, "gausslegendre")
    t_cap = t_ours = t_same = np.inf
    for r in range(args.repeats):  # interleaved, best of each
        cap, dt = timed(lambda: captum_run(model, stim, idx, [0], 50, "gausslegendre", best[2], best[1]))
        t_cap = min(t_cap, dt)
        ours, dt = timed(lambda: nr.attribute(model, stim, cell=0, invariance="none"))
        t_ours = min(t_ours, dt)
        same, dt = timed(lambda: nr.attribute(model, stim, cell=0, steps=50, rule="gausslegendre", invariance="none"))
        t_same = min(t_same, dt)
        print(f"  run {r + 1}: captum {t_cap:.1f} s, ours {t_ours:.2f} s, ours GL-50 {t_same:.2f} s (best so far)")
    cap_err = rel(cap[np.searchsorted(idx, ref_idx)], R)
    ours_err = rel(ours.maps[ref_idx], R)
    print(f"  captum GL-50 ({best[1]} frames/call, ibs {best[2]}): {t_cap:.1f} s, error {cap_err:.1e}")
    print(f"  nr.attribute default ({ours.rule}, {ours.steps} steps): {t_ours:.2f} s, error {ours_err:.1e}, "
          f"speed ×{t_cap / t_ours:.1f}")
    print(f"  nr.attribute GL-50 (same rule): {t_same:.2f} s, error {rel(same.maps[ref_idx], R):.1e}, "
          f"speed ×{t_cap / t_same:.1f}; max |ours GL-50 − captum| / max|captum| = "
          f"{np.abs(same.maps[idx] - cap).max() / np.abs(cap).max():.1e}")
    floor = flops_per_frame(cfg, ours.steps, ours.rule) * args.frames / (gf * 1e9)
    print(f"  FLOP floor of the default at {gf:.0f} GFLOP/s: {floor:.2f} s -> nr.attribute at "
          f"{floor / t_ours * 100:.0f}% of the matmul rate")
    print(f"  (captum GL-50 error on these frames {gl50_err:.1e} via nr GL-50)")

    # ---- row (b)
    Tb = 2000
    flash = np.zeros(Tb, np.float32)
    for t in range(0, Tb, 6):
        flash[t : t + 2] = -2.0
    train = np.broadcast_to(flash[:, None, None], (Tb, cfg.size, cfg.size)).copy()
    ridx = np.arange(H - 1, Tb)
    cap_idx = ridx[: args.captum_frames]
    _, t_cap_sub = timed(lambda: captum_run(model, train, cap_idx, [0], 50, "gausslegendre", best[2], best[1]))
    t_cap_b = t_cap_sub / len(cap_idx) * len(ridx)
    print(f"\n(b) full-field flash train, {Tb} frames (period 6): captum GL-50 {t_cap_sub:.1f} s on "
          f"{len(cap_idx)} frames -> {t_cap_b:.0f} s for {len(ridx)} frames (linear)")
    for label, kw in (("default", {}), ("GL-50", dict(steps=50, rule="gausslegendre"))):
        a, dt = timed(lambda: nr.attribute(model, train, cell=0, **kw))
        print(f"  nr.attribute {label} ({a.invariance}, {a.rule}, {a.steps}): {dt:.2f} s, speed ×{t_cap_b / dt:.0f}")
    flash_r = np.zeros(Tb, np.float32)
    for t in range(0, Tb, 6):
        flash_r[t : t + 2] = rng.uniform(-3, 3)
    train_r = np.broadcast_to(flash_r[:, None, None], (Tb, cfg.size, cfg.size)).copy()
    for label, kw in (("default", {}), ("GL-50", dict(steps=50, rule="gausslegendre"))):
        a, dt = timed(lambda: nr.attribute(model, train_r, cell=0, **kw))
        print(f"  random-intensity train, nr.attribute {label}: {dt:.2f} s, speed ×{t_cap_b / dt:.0f} "
              "(no repeated windows)")


if __name__ == "__main__":
    main()
