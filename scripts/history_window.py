"""What a model with a history of H frames could reach on the version-3 ground truth (docs/MODEL.md).

A BN-CNN of history H sees, at frame t, only the stimulus frames t−H+1 … t. One thing such a model
could compute is the truth's own response to that window with nothing before it: grey, as the
truth's start is (``Retina.respond``); that is, the truth with its memory cut to H frames.
:func:`windowed` computes it for every frame of a movie, on the 1-D circuit of
``scripts/truth_search.py`` (every experiment's stimulus is uniform along y); :func:`windowed_2d`
on any stimulus with the 2-D ``Retina``. Version 3's filters reach 400 ms back and each of its two
cascaded gain signals 2 s more, so a model of 400 ms sees a small part of what the truth remembers.

Being a function of the window alone, the cut truth is a *floor* on what a model of that history
can reach, not a ceiling: a model may do better by inferring the past from the window (a periodic
flash train, a bar moving steadily) or by assuming the training stimulus' statistics before it
(the trained models do, on the test split). Where the cut truth shows a phenomenon, a model of
that history can show it; where it does not, the question stays open.

Command::

    python scripts/history_window.py [--histories 40 70 100 150 240] [--cells 0 1 2 3]
                                     [--test-set MIX.h5 [--every 8] [--models A.pt ...]]

prints, per history, the cells (of 4) in which the cut truth shows each phenomenon by the
experiments' own readouts and ``present`` criteria, cell 0's leads and reversal bursts, and r
between the cut and the full truth on each experiment's movie (cell 0); with ``--test-set`` (a
version-3 dataset, ``science_sweep.py --stage data``), first r against its test split's true
rates, for the cut truth and for each of ``--models`` on the same frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import torch

from napari_retina import synthetic as syn
from napari_retina.experiments import run_function
from truth_search import NAMES, ROW, Line


def windowed(line: Line, stimulus: np.ndarray, history: int, block: int = 64) -> np.ndarray:
    """Rates (T, cells) where frame t's is the truth's response to frames t−history+1 … t of
    ``stimulus`` (T, y, x), grey before them (as much grey as ``Retina.respond`` puts before a movie):
    the truth with its memory cut to ``history`` frames, one thing a model of that history could predict.

    A ``history`` longer than the movie gives ``line.respond(stimulus)``; the truth's own memory is
    ``syn.HISTORY − 1 + 2·syn.GAIN_HISTORY`` frames (its filters, then two cascaded gain signals).
    """
    row = torch.tensor(np.ascontiguousarray(np.asarray(stimulus)[:, ROW, :]), dtype=line.dtype)
    n_frames, width = row.shape
    grey = line.history - 1 + syn.GAIN_HISTORY                 # the grey Retina.respond puts before a movie
    padded = torch.cat([torch.zeros((grey + history - 1, width), dtype=line.dtype), row])
    out = []
    for start in range(0, n_frames, block):
        stop = min(start + block, n_frames)
        # window i ends at movie frame start + i, i.e. padded frame grey + history − 1 + start + i
        windows = padded[start:stop + grey + history - 1].unfold(0, grey + history, 1)    # (B, 50, grey + history)
        windows = windows.permute(0, 2, 1).clone()
        windows[:, :grey] = 0.0                                # nothing before the window: grey
        out.append(line.rates(windows)[:, -1])
    return torch.cat(out).numpy()


def windowed_2d(retina: syn.Retina, stimulus: np.ndarray, history: int, frames, batch: int = 32,
                past: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """:func:`windowed` on any stimulus (T, y, x), with the 2-D ``retina`` itself, at the given ``frames``
    only: rates (len(frames), cells). Each window is preceded by enough grey for the truth to forget the
    one before (its filters' and both gain signals' past), and all go through ``retina.respond`` at once.

    ``past`` (P, y, x), optional: each window is preceded by a stretch of it instead of grey, from a random
    start (``seed``): what the truth does with the window when what came before is like ``past`` (a
    training stimulus) rather than grey.
    """
    span = retina.history - 1 + 2 * syn.GAIN_HISTORY + history
    frames = list(frames)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        movie = np.zeros((len(chunk) * span, *stimulus.shape[1:]), np.float32)
        for j, t in enumerate(chunk):
            seg = stimulus[max(0, t - history + 1):t + 1]
            end = (j + 1) * span
            movie[end - len(seg):end] = seg
            if past is not None:
                start = int(rng.integers(0, len(past) - span + len(seg) + 1))
                movie[end - span:end - len(seg)] = past[start:start + span - len(seg)]
        out.append(retina.respond(movie)[span - 1::span])
    return np.concatenate(out)


def test_split_r(path: str, histories, every: int = 8, models=()) -> list[dict]:
    """r (mean over cells) against the true rates of ``path``'s test split, on every ``every``-th frame with
    the truth's whole past (frames ≥ HISTORY + 2·GAIN_HISTORY): the truth cut to each history (the measure
    docs/MODEL.md reports as ``test_r_true``), and on the same frames each of ``models`` (checkpoint paths)."""
    import h5py

    import napari_retina as nr

    with h5py.File(path, "r") as f:
        stimulus, true = f["test/stimulus"][()], f["test/true_rates"][()].T
    retina = syn.Retina(seed=0, version=3)
    frames = list(range(syn.HISTORY + 2 * syn.GAIN_HISTORY, len(stimulus), every))
    full = retina.respond(stimulus)[frames]
    assert np.allclose(full, true[frames], rtol=1e-3, atol=1e-3), "the test split is not this truth's"

    def row(label: str, got: np.ndarray) -> dict:
        r = [float(np.corrcoef(got[:, c], full[:, c])[0, 1]) for c in range(full.shape[1])]
        return {label: "", "test_r_true_mean": float(np.mean(r)), "per_cell": r, "frames": len(frames)}

    rows = [{"history": h, **row("truth cut to the history", windowed_2d(retina, stimulus, h, frames))}
            for h in histories]
    for m in models:
        model = nr.load_model(m)
        rows.append({"history": model.config.history, **row(str(m), nr.predict(model, stimulus)[frames])})
    return rows


def phenomena_by_history(histories, cells=(0, 1, 2, 3)) -> list[dict]:
    """For each history, the truth cut to it: ``{"history", "present": {phenomenon: cells showing it}, "lead_um"
    (per speed and direction), "reversal_bursts" ({position from the centre: latency ms}),
    "reversal_slope_ms_per_px", "r_movie": {phenomenon: r with the full truth on cell 0}}``;
    a history of ``None`` is the full truth."""
    line, cache = Line(), {}

    def respond(stimulus: np.ndarray, history: int | None) -> np.ndarray:
        key = (history, hashlib.sha1(np.ascontiguousarray(stimulus[:, ROW, :]).tobytes()).hexdigest())
        if key not in cache:
            cache[key] = line.respond(stimulus) if history is None else windowed(line, stimulus, history)
        return cache[key]

    rows = []
    for h in histories:
        runs = {c: {n: run_function(n, lambda s, h=h: respond(s, h), cell=c) for n in NAMES} for c in cells}
        row = {"history": h, "present": {n: sum(bool(runs[c][n].readout["present"]) for c in cells) for n in NAMES}}
        first = runs[cells[0]]
        row["lead_um"] = first["anticipation"].readout.get("lead_um_per_direction")
        rev = first["reversal"].readout
        row["reversal_bursts"] = {f"{x - rev['center_px']:+.1f} px": lat for x, lat, b in
                                  zip(rev["reversal_positions_px"], rev["burst_latencies_ms"], rev["bursting"]) if b}
        row["reversal_slope_ms_per_px"] = rev.get("burst_latency_slope_ms_per_px")
        row["r_movie"] = {n: float(np.corrcoef(respond(first[n].stimulus, h)[:, cells[0]],
                                               respond(first[n].stimulus, None)[:, cells[0]])[0, 1]) for n in NAMES}
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--histories", type=int, nargs="+", default=[40, 70, 100, 150, 240])
    ap.add_argument("--cells", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--test-set", default=None, help="a version-3 dataset (science_sweep.py --stage data): "
                    "also r against its test split's true rates")
    ap.add_argument("--every", type=int, default=8, help="with --test-set: every how many test frames")
    ap.add_argument("--models", nargs="*", default=[], help="with --test-set: checkpoints scored on the same frames")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.test_set:
        for row in test_split_r(args.test_set, args.histories, args.every, args.models):
            print(json.dumps(row), flush=True)
    for row in phenomena_by_history([*args.histories, None], tuple(args.cells)):
        print(json.dumps(row, default=lambda x: np.round(np.asarray(x, dtype=float), 1).tolist()), flush=True)


if __name__ == "__main__":
    main()
