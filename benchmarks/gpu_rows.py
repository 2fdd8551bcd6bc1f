"""Every GPU row of issue 15 in one run (≤ ~4–5 minutes on an H200): a markdown table, and JSON in $OUT.

Run:  PYTHONPATH=src python benchmarks/gpu_rows.py [--frames 10000] [--predict-frames 100000]
      [--captum-frames 1000] [--budget 240]

Needs torch with CUDA, numpy (h5py/tifffile come with the package); Captum is
optional (its rows are skipped, with a note, when it is missing). Rows, all
on the shipped model, cell 0 unless said, times best of ``--repeats`` after a
warm-up (CUDA synchronised around each):

A   white noise, ``--frames`` frames, nr.attribute defaults (tol=1e-3):
    time, frames/s, steps per frame, completeness error, and its work
    (bench_attribution.flops_per_frame at the points evaluated, 4 + 8 + …)
    as a fraction of the float32 matmul rate. A8: the old default (8 fixed
    kink_midpoint steps), the 1.06 s of the issue. Ab: defaults with
    ``batch_size=8192`` (the GPU default is 4096 since 2026-12-04).
H   A's host part: the same call with conv1 and the path integral stubbed
    (``bench_host.py``): validation, window search, the maps' allocation,
    copies and checks; its ratio to A is the floor the GPU cannot lower.
W   A's wall time in phases (:func:`phases`, by the progress callback):
    set-up before the first chunk, the chunk loop, and what follows the last
    chunk; the chunks' median and largest time.
V   variants of A, each timed right after A's defaults are timed again
    (the ratio is to that neighbour), and its maps compared with A's (max |Δ| /
    max |A|): the previous defaults (conv2 direct by cuDNN, TF32, 1024 points
    per block), conv2 direct at 4096, conv2 by FFT (the GPU default,
    attribution._head.CONV2_METHOD) at 1024 and 16384 points, the results
    copied to the host with a plain blocking copy instead of the side stream,
    pinned memory and worker thread of attribution._host_copy, and cuDNN's
    autotuner with conv2 direct.
P   where the time goes: torch.profiler over A's defaults on 1,000 frames,
    direct and FFT: the kernels with the most GPU time, and the GPU's busy
    share of the wall time (low: launch- or sync-bound; high: kernel-bound).
B   ``cell="all"`` (every cell summed), defaults: time and its ratio to A
    (the issue's target: ≤ 2×).
C   nr.predict on ``--predict-frames`` white-noise frames.
D   Captum LayerIntegratedGradients GL-50 on conv1 (20 frames per call,
    internal batch 1000) on the first ``--captum-frames`` frames, against
    nr.attribute defaults and nr.attribute GL-50 on the same frames; errors
    of the maps against a float64 2,000-step kink_midpoint reference (on the
    GPU) on 4 frames, and max |ours GL-50 − Captum| / max |Captum|.
E   checks: the adaptive default on the GPU against the CPU on 64
    white-noise frames (max |Δ| / max |maps|), and completeness ≤ tol on the
    GPU for white noise, a 2,000-frame full-field flash train (2-frame
    flashes of −2 every 8 frames, also timed) and a moving bar.
T   the repository's GPU tests (``pytest -k "gpu or cuda"`` on
    tests/test_attribution.py, test_experiments.py, test_predict.py), their
    summary line in the table and the JSON (``--no-tests`` skips them).

Rows that would start after ``--budget`` seconds are skipped and listed. A row
that raises (an out-of-memory error, a kernel this torch lacks) is recorded
with its error and the run goes on to the next; the JSON in $OUT is rewritten
after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import napari_retina as nr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attribution  # noqa: E402
import bench_host  # noqa: E402
from bench_attribution import flops_per_frame  # noqa: E402
from bench_tol import evaluated_points  # noqa: E402

DEV = torch.device("cuda")
ROWS: list[dict] = []
SKIPPED: list[str] = []
ERRORS: list[dict] = []
INFO: dict = {}
T0 = time.perf_counter()


def timed(fn):
    """``(fn(), seconds)`` on this script's device (bench_attribution.timed)."""
    return bench_attribution.timed(fn, DEV)


def best_of(fn, repeats: int):
    out, best = None, np.inf
    for _ in range(repeats):
        out, dt = timed(fn)
        best = min(best, dt)
    return out, best


def matmul_rate(tf32: bool = False) -> float:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    rate = bench_attribution.matmul_gflops(DEV)
    torch.backends.cuda.matmul.allow_tf32 = old
    return rate


def steps_hist(attr) -> dict:
    used = attr.steps_per_frame[attr.frames]
    return {int(k): int(v) for k, v in zip(*np.unique(used, return_counts=True))}


def work_gflop(attr) -> float:
    """Attribution work (GFLOP) at the points each frame evaluated (adaptive: 4 + 8 + … + its level)."""
    pts = evaluated_points(attr.steps_per_frame[attr.frames], attr.tol)
    return sum(flops_per_frame(attr.model.config, p, attr.rule) for p in pts) / 1e9


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def save() -> None:
    """Write what was measured so far to $OUT/gpu_rows.json (no-op without $OUT)."""
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_rows.json").write_text(json.dumps({"info": INFO, "rows": ROWS, "skipped": SKIPPED,
                                                             "errors": ERRORS}, indent=2, default=float))


def row(name: str, seconds: float, frames: int, **extra) -> None:
    ROWS.append({"row": name, "seconds": round(seconds, 4), "frames": frames,
                 "frames_per_s": round(frames / seconds) if seconds > 0 and frames else None, **extra})
    print(f"[{time.perf_counter() - T0:5.1f} s] {name}: {seconds:.3f} s, {extra}", flush=True)
    save()


class attempt:
    """Within: one row's work. An exception is recorded as that row's error, and the run goes on."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> "attempt":
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # KeyboardInterrupt and the like still stop the run
        ERRORS.append({"row": self.name, "error": f"{typ.__name__}: {exc}"[:500]})
        print(f"[{time.perf_counter() - T0:5.1f} s] {self.name} FAILED:", flush=True)
        traceback.print_exception(typ, exc, tb)
        if DEV.type == "cuda":
            torch.cuda.empty_cache()  # after an out-of-memory error, give the next row the memory back
        save()
        return True


def in_budget(name: str, budget: float) -> bool:
    if time.perf_counter() - T0 > budget:
        SKIPPED.append(name)
        print(f"skipped {name}: past the {budget:.0f} s budget", flush=True)
        return False
    return True


def phases(fn) -> dict:
    """Wall time of one ``fn(progress)`` (an nr.attribute call) in three phases, by its progress callback:
    ``setup`` until the first report (validation, window search, conv1's set-up, F(0)), ``loop`` from it to
    the last chunk's report (device work and its copies; the adaptive loop waits once per level), and
    ``finish`` after it (the copies' last writes, the checks, the completeness error). Seconds, and the
    chunks' median and largest time."""
    marks = []
    bench_attribution.sync(DEV)
    t0 = time.perf_counter()
    fn(lambda done, total: marks.append(time.perf_counter()))
    bench_attribution.sync(DEV)
    end = time.perf_counter()
    chunks = np.diff(marks) if len(marks) > 1 else np.zeros(1)
    return {"setup_s": round(marks[0] - t0, 4), "loop_s": round(marks[-1] - marks[0], 4),
            "finish_s": round(end - marks[-1], 4), "chunks": len(marks) - 1,
            "chunk_median_ms": round(1e3 * float(np.median(chunks)), 2), "chunk_max_ms": round(1e3 * float(chunks.max()), 2)}


def device_time_us(event) -> float:
    """An event's own time on the device (µs), whichever name this torch gives it; CPU time on a CPU run."""
    if DEV.type != "cuda":
        return float(event.self_cpu_time_total)
    return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))


def profile_top(fn, top: int = 10) -> tuple[float, float, list]:
    """(wall s, device-busy s, the ``top`` ops/kernels by own device time as [name, ms, share]) of one ``fn()``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        fn()
        if DEV.type == "cuda":
            torch.cuda.synchronize(DEV)
        wall = time.perf_counter() - t
    events = [e for e in prof.key_averages() if device_time_us(e) > 0]
    # an operator's device time is its kernels' again: the busy time counts the kernels and copies only
    own = [e for e in events if DEV.type != "cuda" or not e.key.startswith("aten::")]
    busy = sum(device_time_us(e) for e in own) / 1e6
    events.sort(key=device_time_us, reverse=True)
    return wall, busy, [[e.key[:60], round(device_time_us(e) / 1e3, 2), round(device_time_us(e) / 1e6 / busy, 3)]
                        for e in events[:top]]


class Variant:
    """A context that sets conv2's method, cuDNN's autotuner, TF32 for convolutions and the asynchronous
    copy of results to the host (None: as they are), and restores them."""

    def __init__(self, conv2: Optional[str] = None, benchmark: bool = False, tf32: bool = True,
                 async_copy: Optional[bool] = None) -> None:
        from napari_retina.attribution import _head, _host_copy

        self.tables = _head.CONV2_METHOD, _host_copy.ASYNC_COPY
        self.want = (conv2, benchmark, tf32, async_copy)

    def __enter__(self):
        cudnn, (methods, copies) = torch.backends.cudnn, self.tables
        self.old = (methods.get(DEV.type), cudnn.benchmark, cudnn.allow_tf32, copies.get(DEV.type))
        conv2, cudnn.benchmark, cudnn.allow_tf32, async_copy = self.want
        if conv2 is not None:
            methods[DEV.type] = conv2
        if async_copy is not None:
            copies[DEV.type] = async_copy
        return self

    def __exit__(self, *exc):
        cudnn, (methods, copies) = torch.backends.cudnn, self.tables
        conv2, cudnn.benchmark, cudnn.allow_tf32, async_copy = self.old
        for table, value in ((methods, conv2), (copies, async_copy)):
            if value is None:
                table.pop(DEV.type, None)
            else:
                table[DEV.type] = value


VARIANTS = {"V1 the previous defaults: conv2 direct (cuDNN, TF32), batch_size=1024":
            (dict(conv2="direct"), dict(batch_size=1024)),
            "V2 conv2 direct, batch_size=4096": (dict(conv2="direct"), dict(batch_size=4096)),
            "V3 conv2 by FFT, batch_size=1024": (dict(conv2="fft"), dict(batch_size=1024)),
            "V4 conv2 by FFT, batch_size=16384": (dict(conv2="fft"), dict(batch_size=16384)),
            "V5 results copied to the host with a blocking copy (pageable memory)": (dict(async_copy=False), {}),
            "V6 cudnn.benchmark, conv2 direct, batch_size=4096": (dict(conv2="direct", benchmark=True),
                                                                 dict(batch_size=4096))}


def flash_train(T: int, size: int) -> np.ndarray:
    f = np.zeros(T, np.float32)
    for t in range(0, T, 8):
        f[t : t + 2] = -2.0
    return np.broadcast_to(f[:, None, None], (T, size, size)).copy()


def captum_gl50(model, stim, idx, per_call: int = 20, ibs: int = 1000) -> np.ndarray:
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(lambda inp: model(inp)[:, [0]].sum(1), model.conv1)
    x_all = torch.from_numpy(stim).to(DEV)
    H = model.config.history
    out = []
    for i in range(0, len(idx), per_call):
        x = torch.stack([x_all[t - H + 1 : t + 1] for t in idx[i : i + per_call]])
        out.append(lig.attribute(x, baselines=torch.zeros_like(x), n_steps=50, method="gausslegendre",
                                 internal_batch_size=ibs).detach())
    return torch.cat(out).cpu().numpy()


def captum_row(model, stim: np.ndarray, args, have_captum: bool) -> None:
    """Row D: nr.attribute defaults and GL-50 vs Captum GL-50, errors against a float64 reference."""
    H = model.config.history
    m = min(args.captum_frames, len(stim) - H + 1)
    sub = stim[: m + H - 1]
    idx = np.arange(H - 1, len(sub))
    ref_idx = idx[np.linspace(0, len(idx) - 1, 4).astype(int)]
    m64 = copy.deepcopy(model).double()
    ref, t_ref = timed(lambda: nr.attribute(m64, sub, cell=0, steps=args.ref_steps, invariance="none",
                                            frames=ref_idx, batch_size=2048))
    R = ref.maps[ref_idx].astype(np.float64)
    ours, t_ours = best_of(lambda: nr.attribute(model, sub, cell=0, invariance="none"), args.repeats)
    gl, t_gl = best_of(lambda: nr.attribute(model, sub, cell=0, steps=50, rule="gausslegendre",
                                            invariance="none"), args.repeats)
    pos = np.searchsorted(idx, ref_idx)
    extra = {"ours_error": rel(ours.maps[ref_idx], R), "ours_gl50_error": rel(gl.maps[ref_idx], R),
             "reference_seconds": round(t_ref, 2)}
    if have_captum:
        captum_gl50(model, sub, idx[:40])  # warm-up
        cap, t_cap = timed(lambda: captum_gl50(model, sub, idx))
        extra.update(captum_seconds=round(t_cap, 3), captum_error=rel(cap[pos], R),
                     speedup_default=round(t_cap / t_ours, 1), speedup_gl50=round(t_cap / t_gl, 1),
                     accuracy_ratio=round(rel(cap[pos], R) / rel(ours.maps[ref_idx], R), 1),
                     gl50_vs_captum=float(np.abs(gl.maps[idx] - cap).max() / np.abs(cap).max()))
    else:
        extra["captum"] = "not installed: Captum rows skipped"
    row(f"D {m} white-noise frames: nr.attribute defaults vs Captum GL-50", t_ours, m,
        ours_gl50_seconds=round(t_gl, 3), **extra)


def checks_row(model, stim: np.ndarray, args) -> None:
    """Row E: GPU vs CPU maps, and completeness <= tol on white noise, a flash train (timed) and a bar."""
    cfg, H = model.config, model.config.history
    small = stim[: H + min(63, len(stim) - H)]
    gpu = nr.attribute(model, small, cell=0, invariance="none")
    cpu = nr.attribute(model, small, cell=0, invariance="none", device="cpu")
    diff = float(np.abs(gpu.maps[gpu.frames] - cpu.maps[cpu.frames]).max() / np.abs(cpu.maps[cpu.frames]).max())
    flashes = flash_train(2000, cfg.size)
    nr.attribute(model, flashes[:200], cell=0)
    fl, t_fl = best_of(lambda: nr.attribute(model, flashes, cell=0), args.repeats)
    bar = nr.stimuli.moving_bar(speed=0.5, size=cfg.size)
    br = nr.attribute(model, bar, cell=0)
    tol = nr.attribution.DEFAULT_TOL
    checks = {"gpu_vs_cpu_max_rel": diff,
              "gpu_steps_equal_cpu": bool((gpu.steps_per_frame == cpu.steps_per_frame).all()),
              "noise_completeness": gpu.completeness_error, "flash_completeness": fl.completeness_error,
              "bar_completeness": br.completeness_error,
              "all_within_tol": max(gpu.completeness_error, fl.completeness_error, br.completeness_error) <= tol}
    row("E checks; flash train 2,000 frames timed", t_fl, len(fl.frames), flash_steps_per_frame=steps_hist(fl),
        **checks)


def tests_row() -> None:
    """Row T: the repository's GPU tests (pytest -k "gpu or cuda"), their summary line."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "-k", "gpu or cuda",
           "tests/test_attribution.py", "tests/test_experiments.py", "tests/test_predict.py"]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root / "src")})
    lines = (done.stdout + done.stderr).strip().splitlines()
    print("\n".join(lines[-15 if done.returncode == 0 else -120:]), flush=True)  # a failure's traceback too
    counts = [line for line in lines if " passed" in line or " failed" in line or " error" in line]
    row("T GPU tests (pytest -k 'gpu or cuda')", time.perf_counter() - t, 0, exit_status=done.returncode,
        summary=counts[-1].strip("= ") if counts else (lines[-1] if lines else ""))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--predict-frames", type=int, default=100_000)
    ap.add_argument("--captum-frames", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget", type=float, default=240.0, help="seconds after which no new row starts")
    ap.add_argument("--ref-steps", type=int, default=2000, help="the float64 reference's steps (row D)")
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script with small sizes)")
    ap.add_argument("--no-tests", action="store_true", help="skip row T (the repository's GPU tests)")
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    if DEV.type == "cuda" and not torch.cuda.is_available():
        print("gpu_rows.py needs a CUDA GPU; torch.cuda.is_available() is False")
        return 2
    try:
        import captum  # noqa: F401
        have_captum = True
    except ImportError:
        have_captum = False
    model = nr.load_model(device=DEV)
    cfg, H = model.config, model.config.history
    INFO.update({"device": torch.cuda.get_device_name(DEV) if DEV.type == "cuda" else "cpu",
                 "torch": torch.__version__, "cuda": torch.version.cuda,
                 "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                 "cudnn_tf32": torch.backends.cudnn.allow_tf32, "captum": have_captum})
    INFO["matmul_fp32_gflops"] = round(matmul_rate(False))
    INFO["matmul_tf32_gflops"] = round(matmul_rate(True))
    print(json.dumps(INFO), flush=True)
    save()
    rate = INFO["matmul_fp32_gflops"]
    rng = np.random.default_rng(0)
    stim = rng.standard_normal((args.frames + H - 1, cfg.size, cfg.size)).astype(np.float32)
    n = args.frames
    warm = stim[: H + min(255, n - 1)]
    nr.attribute(model, warm, cell=0)  # warm-up: cuDNN's algorithm choice, allocator
    nr.attribute(model, warm, cell=0, steps=8)

    # ---- A: one cell, defaults (the rows after it compare with it; without it they record their error)
    a, t_a = None, float("nan")
    with attempt("A"):
        a, t_a = best_of(lambda: nr.attribute(model, stim, cell=0), args.repeats)
        gf = work_gflop(a)
        row("A white noise, one cell, defaults (tol=1e-3)", t_a, n, completeness=a.completeness_error,
            steps_per_frame=steps_hist(a), work_gflop=round(gf), fraction_of_fp32_matmul=round(gf / t_a / rate, 3))
    if in_budget("A8", args.budget):
        with attempt("A8"):
            a8, t = best_of(lambda: nr.attribute(model, stim, cell=0, steps=8), args.repeats)
            gf8 = work_gflop(a8)
            row("A8 white noise, one cell, steps=8 (the old default)", t, n, completeness=a8.completeness_error,
                fraction_of_fp32_matmul=round(gf8 / t / rate, 3))
            del a8
    if in_budget("Ab", args.budget):
        with attempt("Ab"):
            ab, t = best_of(lambda: nr.attribute(model, stim, cell=0, batch_size=8192), 1)
            row("Ab white noise, one cell, defaults, batch_size=8192", t, n, completeness=ab.completeness_error,
                ratio_to_A=round(t / t_a, 3),
                max_abs_diff_to_A=float(np.abs(ab.maps[ab.frames] - a.maps[a.frames]).max()
                                        / np.abs(a.maps[a.frames]).max()))
            del ab
    if in_budget("H", args.budget):  # what no GPU speeds up: checks, window search, result copies on the host
        with attempt("H"):
            t = bench_host.host_seconds(model, stim, args.repeats, cell=0)
            row("H host part of A (conv1 and the path integral stubbed, bench_host.py)", t, n,
                ratio_to_A=round(t / t_a, 3))
    if in_budget("W", args.budget):  # where A's wall time goes: before, during and after the chunk loop
        with attempt("W"):
            ph = min((phases(lambda p: nr.attribute(model, stim, cell=0, progress=p)) for _ in range(args.repeats)),
                     key=lambda d: d["setup_s"] + d["loop_s"] + d["finish_s"])
            row("W phases of A (setup / chunk loop / finish, by the progress callback)",
                ph["setup_s"] + ph["loop_s"] + ph["finish_s"], n, **ph)
    # ---- V: variants of A
    for name, (setting, kwargs) in VARIANTS.items():
        if not in_budget(name[:2], args.budget):
            continue
        with attempt(name[:2]):
            ref_maps = a.maps[a.frames]
            # the defaults timed again right before: the ratio compares neighbours, not the start of the run
            _, t_def = best_of(lambda: nr.attribute(model, stim, cell=0), args.repeats)
            with Variant(**setting):
                nr.attribute(model, warm, cell=0, **kwargs)  # warm-up: plans, autotuning
                v, t = best_of(lambda: nr.attribute(model, stim, cell=0, **kwargs), args.repeats)
            row(name, t, n, defaults_just_before_s=round(t_def, 4), ratio_to_defaults=round(t / t_def, 3),
                completeness=v.completeness_error,
                max_abs_diff_to_A=float(np.abs(v.maps[v.frames] - ref_maps).max() / np.abs(ref_maps).max()),
                steps_equal_A=bool(np.array_equal(v.steps_per_frame, a.steps_per_frame)))
            del v
    del a

    # ---- P: where the time goes
    for method in ("direct", "fft"):
        if not in_budget(f"P {method}", args.budget):
            continue
        with attempt(f"P {method}"):
            part = stim[: min(n, 1000) + H - 1]
            with Variant(conv2=method):
                nr.attribute(model, warm, cell=0)
                wall, busy, top = profile_top(lambda: nr.attribute(model, part, cell=0))
            row(f"P profile, conv2 {method}, {len(part) - H + 1} frames (under the profiler)", wall,
                len(part) - H + 1, device_busy_share=round(busy / wall, 3), top_ms_share=top)

    # ---- B: every cell
    if in_budget("B", args.budget):
        with attempt("B"):
            b, t = best_of(lambda: nr.attribute(model, stim, cell="all"), 1)
            row(f"B white noise, cell='all' ({cfg.n_cells} cells), defaults", t, n,
                completeness=b.completeness_error, steps_per_frame=steps_hist(b), ratio_to_A=round(t / t_a, 3),
                target="<= 2")
            del b

    # ---- C: predict
    if in_budget("C", args.budget):
        with attempt("C"):
            big = rng.standard_normal((args.predict_frames, cfg.size, cfg.size), dtype=np.float32)
            nr.predict(model, big[: min(2000, len(big))])
            _, t = best_of(lambda: nr.predict(model, big), args.repeats)
            row(f"C predict, {args.predict_frames:,} white-noise frames", t, args.predict_frames)
            del big

    # ---- D: Captum GL-50 on a subset
    if in_budget("D", args.budget):
        with attempt("D"):
            captum_row(model, stim, args, have_captum)

    # ---- E: checks
    if in_budget("E", args.budget):
        with attempt("E"):
            checks_row(model, stim, args)

    # ---- T: the GPU tests
    if not args.no_tests and in_budget("T", args.budget):
        with attempt("T"):
            tests_row()

    print(f"\n{INFO['device']}, torch {INFO['torch']} (CUDA {INFO['cuda']}), {INFO['date']}; float32 matmul "
          f"{INFO['matmul_fp32_gflops']:,} GFLOP/s (TF32 {INFO['matmul_tf32_gflops']:,}); "
          f"total {time.perf_counter() - T0:.0f} s\n")
    print("| row | time | frames/s | details |\n|---|---|---|---|")
    for r in ROWS:
        details = {k: v for k, v in r.items() if k not in ("row", "seconds", "frames", "frames_per_s")}
        fps = "—" if r["frames_per_s"] is None else f"{r['frames_per_s']:,}"
        print(f"| {r['row']} | {r['seconds']:.3f} s | {fps} | "
              + "; ".join(f"{k} {v:.2e}" if isinstance(v, float) and abs(v) < 1e-2 else f"{k} {v}"
                          for k, v in details.items()) + " |")
    if SKIPPED:
        print(f"\nskipped (past the budget): {', '.join(SKIPPED)}")
    for e in ERRORS:
        print(f"\nrow {e['row']} failed: {e['error']}")
    save()
    if os.environ.get("OUT"):
        print(f"wrote {Path(os.environ['OUT']) / 'gpu_rows.json'}")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
