"""Can the BN-CNN code latency at all? Train it on the latency experiment's own kind of stimulus.

Every model trained on the training mixes answers strong flashes late: its onset latency stops falling
near −2 where the version-3 truth's goes on falling to −10 (docs/MODEL.md). This script asks whether
that is the training stimulus or the architecture: it records the truth on nothing but full-field
dark flashes, 2 frames each at intensities drawn uniformly in [−10, 0], each after a grey gap of
``GAP`` frames drawn uniformly (20 ms to 1.5 s: adapted to rested), trains models of the shipped
recipe on them and runs the latency experiment on each. A model trained on the test stimulus' own
class is a ceiling for the architecture at this recipe, not a result about the retina: if it does not
code latency, no training mix will teach it to at this recipe.

Command::

    python scripts/flash_ceiling.py OUT [--frames 20000] [--seeds 0 1] [--epochs 20] [--patience 5] [--device cpu]
                                        [--targets counts|rates] [--noise 0.05] [--lr-patience 2] [--movie flashes|experiment]
    python scripts/flash_ceiling.py OUT --score MODEL...

writes OUT/flashes.h5 (the dataset, once), OUT/model_SEED.pt and OUT/latency_SEED.json (the truth's:
OUT/latency_truth.json), and prints per cell whether latency coding is present, its latencies at
−0.5, −1, −2, −4, −6 and −10, and the response's amplitude there, and where its remaining loss
lies: the excess Poisson loss on 6,000 frames of held-out flashes, per flash by strength and in the
grey gaps (:func:`loss_by_strength`). ``--score MODEL...`` reports saved checkpoints so. Seeds run one after another; run
one process per seed (after a first with ``--seeds`` and no seed, which only writes the dataset) to
train them side by side.

Two controls ask what limits the fit: ``--targets rates`` trains on the truth's noise-free rates
(OUT/flashes_rates.h5, the same movie) instead of one trial's Poisson counts, and ``--noise`` sets
the Gaussian noise the model adds after each batch norm in training (``ModelConfig.noise``, default
0.05). ``--movie experiment`` asks whether the architecture can code latency at all: it trains on the
latency experiment's own movie (three copies; a test of capacity, with nothing held out but a copy).
Keep one OUT per setting: the outputs' names do not carry it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch

import napari_retina as nr
from napari_retina import synthetic as syn
from napari_retina._atomic import atomic_write, atomic_write_text
from napari_retina.training import TrainConfig
from seed_sweep import RECIPE                      # scripts/: the shipped settings

#: the grey gap before each flash, in frames (drawn uniformly): from a still-adapted 20 ms to a rested 1.5 s
GAP = (2, 150)
#: frames after each flash before the next gap: the experiment's response window
WINDOW = 40
#: the intensities the summary shows (a subset of the experiment's 21)
SHOW = (-0.5, -1.0, -2.0, -4.0, -6.0, -10.0)
#: training settings per ``--movie`` beyond the recipe: the experiment's movie, three copies, holds out
#: its last 30% (within the third copy, so every flash is also trained on); the battery's two copies, the second
HOLDOUT = {"experiment": {"holdout": 0.3}, "osr": {"holdout": 0.3}, "battery": {"holdout": 0.5}}
#: the experiments of ``--movie battery`` (gain_ceiling.py): the five whose phenomena the v3 truth shows in every cell
PHENOMENA = ("osr", "latency", "anticipation", "reversal", "doubling")
#: |intensity| classes (lo, hi] of :func:`loss_by_strength`: weak, middling, strong flashes (all of (0, 10])
STRENGTHS = ((0.0, 2.0), (2.0, 5.0), (5.0, 10.0))
#: a flash's frames in :func:`loss_by_strength`: from this many before its onset to the end of its window
BEFORE = 5


def flash_movie(frames: int, seed: int, size: int = syn.SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Dark full-field flashes after random grey gaps: float32 (frames, size, size) and each flash's intensity.

    Flash ``k``: ``GAP``-drawn grey frames, 2 frames at an intensity uniform in [−10, 0], ``WINDOW``
    grey frames; the movie is cut to ``frames``.
    """
    rng = np.random.default_rng([seed, 7])
    parts, intensities, n = [], [], 0
    while n < frames:
        inten = float(rng.uniform(-10.0, 0.0))
        part = nr.stimuli.flash(intensity=inten, duration=2, pre=int(rng.integers(GAP[0], GAP[1] + 1)),
                                post=WINDOW, size=size)
        parts.append(part)
        intensities.append(inten)
        n += len(part)
    return np.concatenate(parts)[:frames], np.asarray(intensities)


def flash_onsets(movie: np.ndarray) -> np.ndarray:
    """First frames of the flashes of a full-field flash movie (T, y, x) on grey."""
    lit = np.flatnonzero(movie[:, 0, 0])
    return lit[np.r_[True, np.diff(lit) > 1]]


def latency_summary(readout: dict) -> dict:
    """present, and latency (ms) and amplitude (spikes/bin) at :data:`SHOW`, of a latency readout."""
    at = {round(float(i), 3): k for k, i in enumerate(readout["intensities"])}
    pick = lambda key: [float(readout[key][at[i]]) for i in SHOW]   # noqa: E731
    return {"present": bool(readout["present"]), "latency_ms": pick("latency_ms"), "amplitude": pick("amplitude"),
            "largest_rise_ms": float(readout["largest_rise_ms"]), "largest_step_ms": float(readout["largest_step_ms"]),
            "latency_range_ms": float(readout["latency_range_ms"])}


def excess_poisson_loss(rates: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per frame, summed over cells: the Poisson loss of ``pred`` beyond that of the true ``rates`` themselves
    (the deviance / 2, >= 0; in expectation over spike counts, what training on counts pays for the error).

    rates, pred: (T, cells) spikes per 10 ms bin. Returns (T,).
    """
    y, lam = np.asarray(rates, np.float64), np.maximum(np.asarray(pred, np.float64), 1e-6)
    ratio = np.where(y > 0, y / lam, 1.0)
    return (y * np.log(ratio) - (y - lam)).sum(axis=1)


def loss_by_strength(respond, retina: syn.Retina, frames: int = 6000, seed: int = 1) -> dict:
    """Where a model's remaining loss lies on held-out flashes (``flash_movie(frames, seed)``).

    ``respond(movie)`` gives (T, cells) rates. Each flash's frames run from ``BEFORE`` frames before its
    onset to the end of its window; the frames before the first full history are skipped. Returns
    ``{"strengths": STRENGTHS, "flashes": count per class, "per_flash": mean excess loss per flash
    (spikes·nats summed over cells), "share": each class's fraction of the total, "outside": the
    fraction in no flash's frames (the grey gaps), "total": the total}``.
    """
    movie, _ = flash_movie(frames, seed)
    excess = excess_poisson_loss(retina.respond(movie), respond(movie))
    level = movie[:, 0, 0]
    onsets = flash_onsets(movie)
    onsets = onsets[(onsets - BEFORE >= syn.HISTORY) & (onsets + WINDOW <= frames)]
    per = np.array([excess[t - BEFORE:t + WINDOW].sum() for t in onsets])
    strength = -level[onsets]
    total = float(excess[syn.HISTORY:].sum())
    classes = [(strength > lo) & (strength <= hi) for lo, hi in STRENGTHS]
    return {"strengths": STRENGTHS, "flashes": [int(k.sum()) for k in classes],
            "per_flash": [float(per[k].mean()) if k.any() else float("nan") for k in classes],
            "share": [float(per[k].sum() / total) if total > 0 else 0.0 for k in classes],
            "outside": float(1 - per.sum() / total) if total > 0 else 0.0,
            "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--lr-patience", type=int, default=RECIPE.get("lr_patience", TrainConfig.lr_patience),
                    help="epochs without improvement before the learning rate is halved")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where to train: cpu, cuda, ... (default cpu)")
    ap.add_argument("--targets", choices=("counts", "rates"), default="counts",
                    help="train on one trial's Poisson counts (default) or on the truth's noise-free rates")
    ap.add_argument("--noise", type=float, default=nr.ModelConfig.noise,
                    help=f"the model's training noise after each batch norm (default {nr.ModelConfig.noise})")
    ap.add_argument("--movie", choices=("flashes", "experiment"), default="flashes",
                    help="train on random flashes (default) or on the latency experiment's own movie (a capacity "
                         "test: three copies, the held-out tail in the third; --frames is then ignored)")
    ap.add_argument("--score", type=Path, nargs="+", metavar="MODEL",
                    help="train nothing: report these checkpoints' latency and loss by flash strength")
    args = ap.parse_args()
    if args.score:
        return score(args.score)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    gt = syn.Retina(seed=0, version=3)
    data = args.out / f"{args.movie}.h5"
    if not data.exists():
        record(data, args.movie, args.frames, gt)
    if args.targets == "rates":
        data = noise_free(data, args.out / f"{args.movie}_rates.h5")
    report(args.out / "latency_truth.json", "truth",
           {"cells": [latency_summary(nr.experiments.run_truth("latency", gt, c).readout) for c in range(gt.n_cells)]})
    for seed in args.seeds:
        model = nr.train(data, **{**RECIPE, "epochs": args.epochs, "patience": args.patience,
                                    "lr_patience": args.lr_patience, **HOLDOUT.get(args.movie, {})}, seed=seed,
                         config=nr.ModelConfig(noise=args.noise), device=args.device,
                         out=args.out / f"model_{seed}.pt",
                         command=f"scripts/flash_ceiling.py --seeds {seed} --targets {args.targets} --noise {args.noise} "
                                 f"--epochs {args.epochs} --patience {args.patience} --lr-patience {args.lr_patience} "
                                 f"--movie {args.movie}")
        report(args.out / f"latency_{seed}.json", f"model {seed}", model_result(model, gt))


def model_result(model: nr.RetinaCNN, gt: syn.Retina) -> dict:
    """A trained model's r on the test split, latency summary per cell and :func:`loss_by_strength`."""
    return {"r_true": model.scores.get("test_r_true_mean"),
            "cells": [latency_summary(nr.experiments.run("latency", model, cell=c).readout) for c in range(gt.n_cells)],
            "loss": loss_by_strength(lambda movie: nr.predict(model, movie), gt)}


def score(paths: list) -> None:
    """``--score``: report each checkpoint as training would have, writing latency_NAME.json beside it."""
    gt = syn.Retina(seed=0, version=3)
    for path in paths:
        report(path.with_name(f"latency_{path.stem}.json"), f"{path.parent.name}/{path.stem}",
               model_result(nr.load_model(path), gt))


def record(path: Path, movie: str, frames: int, gt: syn.Retina) -> None:
    """Write the training dataset: ``"flashes"``, ``frames`` of :func:`flash_movie` (test: 2,000 other frames,
    10 repeats); ``"experiment"``, the latency experiment's movie three times (test: once, 2 repeats); ``"osr"``,
    the omitted-stimulus experiment's (cell 0's) the same way;
    ``"battery"``, the movies of the :data:`PHENOMENA` experiments (cell 0's, as ``run_truth`` makes them) one
    after another, twice (test: once, 2 repeats)."""
    if movie == "flashes":
        train, test, repeats = flash_movie(frames, 0)[0], flash_movie(2000, 1)[0], 10
    elif movie == "battery":
        test, repeats = np.concatenate([nr.experiments.run_truth(name, gt, 0).stimulus for name in PHENOMENA]), 2
        train = np.concatenate([test] * 2)
    else:
        test, repeats = nr.experiments.run_truth("latency" if movie == "experiment" else movie, gt, 0).stimulus, 2
        train = np.concatenate([test] * 3)
    syn.record_dataset(path, train, test, repeats=repeats, retina=gt, attrs={"kind": movie})


def noise_free(counts: Path, path: Path) -> Path:
    """``path``: a copy of the dataset ``counts`` whose training responses are its true rates (written once)."""
    return with_train_responses(counts, path, lambda src: src["train/true_rates"][...],
                                "train: the truth's noise-free rate; test: mean of repeats (spikes per 10 ms bin)")


def with_train_responses(counts: Path, path: Path, responses, units: str) -> Path:
    """``path``: a copy of the dataset ``counts`` whose training responses are ``responses(src)`` ((cells, T), from
    the open source file), its ``units`` attribute ``units``; written once, atomically."""
    if not path.exists():
        def write(tmp: str) -> None:
            with h5py.File(counts, "r") as src, h5py.File(tmp, "w") as dst:
                for key in src:
                    src.copy(src[key], dst, name=key)
                dst.attrs.update(dict(src.attrs))
                dst.attrs["units"] = units
                dst["train/response/firing_rate_10ms"][...] = responses(src)
        atomic_write(path, write)
    return path


def report(path: Path, who: str, result: dict) -> None:
    """Write ``result`` to ``path`` (JSON, atomically) and print it, a line per cell."""
    atomic_write_text(path, json.dumps(result, indent=1))
    if result.get("r_true") is not None:
        print(f"{who}: r {result['r_true']:.3f} against the test split's true rates")
    for c, s in enumerate(result["cells"]):
        print(f"{who} cell {c}: present {s['present']!s:5s} latency {np.round(s['latency_ms'], 1)} ms, "
              f"amplitude {np.round(s['amplitude'], 1)}, largest rise {s['largest_rise_ms']:.1f} ms, "
              f"step {s['largest_step_ms']:.1f} of {s['latency_range_ms']:.1f} ms", flush=True)
    if "loss" in result:
        loss = result["loss"]
        parts = [f"|I| {lo:g}-{hi:g}: {n} flashes, {per:.1f} per flash, {share:.0%}" for (lo, hi), n, per, share
                 in zip(loss["strengths"], loss["flashes"], loss["per_flash"], loss["share"])]
        print(f"{who} excess Poisson loss on held-out flashes {loss['total']:.0f}: " + "; ".join(parts)
              + f"; grey gaps {loss['outside']:.0%}", flush=True)


if __name__ == "__main__":
    main()
