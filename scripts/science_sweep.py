"""A ground truth and its models: one prepared run for a GPU (docs/MODEL.md, issue "Science v2").

``--retina-version`` picks the truth (default 2, the shipped model's; 3, with gain control, shows latency
coding, anticipation, the reversal and doubling, and an OSR that rises too little for today's criterion; 4,
version 3 with a bank of tuned ON pathways; 5, version 4 searched for an OSR latency on a line); pass the same
version to the ``data`` and ``model`` stages.

Stages (``--stage``):

- ``data``: the training set of the shipped recipe, ``nr.synthetic.make_dataset(kind="mix")``
  (:func:`napari_retina.synthetic.training_mix`: naturalistic movies and white noise at 4, 2
  and 1 px; never the experiments' stimuli), written to OUT/mix.h5; ``--kind mix-switching``:
  the same with the noise's contrast switching every second (``synthetic.MIX_SWITCHING``);
  ``--kind mix-steps``: stepping to a random contrast every second (``synthetic.MIX_STEPS``);
  ``--kind mix-field``: those steps and whole-field steps too (``synthetic.MIX_FIELD``);
  ``--kind mix-quiet``: the same stepping down to near-grey, strong steps after rests (``synthetic.MIX_QUIET``);
  ``--kind mix-sparse``: mix-field with its whole-field block grey on 97% of frames (``synthetic.MIX_SPARSE``);
- ``model SEED``: train one model of the recipe with that seed (``nr.train``, the shipped
  settings), save OUT/model_SEED.pt, then score it and write OUT/row_SEED.json:
  fidelity (Pearson r against the true rates, frames with a full history, mean over the four
  cells) on held-out stimuli of each class (naturalistic; binary noise at 4, 2, 1 px;
  contrast-switching noise at 4 px; random contrast steps, ±0.25 to ±10, at 4 px; whole-field
  flicker, ±2) and on
  each experiment's own movie; the battery for each of the four cells (present in truth,
  model and reduced circuit; key numbers; reduced EV) and the recovery of every experiment's
  kept channels;
- ``score SEED``: score OUT/model_SEED.pt again (after the scoring changed), keeping its row's
  training fields;
- ``summary``: OUT/sweep.json and a Markdown table OUT/sweep.md of every row.

Run on a GPU (models train in parallel processes on the one device; ``scripts/science_sweep.sh``
does exactly this)::

    python scripts/science_sweep.py OUT --stage data
    for s in 0 1 2 3 4; do python scripts/science_sweep.py OUT --stage model --seed $s --device cuda & done; wait
    python scripts/science_sweep.py OUT --stage summary

Defaults are the shipped model's recipe (120,000 frames, 20 epochs at most, patience 3); the
first sweep of docs/MODEL.md passed ``--frames 60000 --epochs 10 --patience 2``.

Add ``--tiny`` for a smoke run on a CPU (1,000 frames, one epoch, two experiments, one cell).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import napari_retina as nr
from napari_retina._atomic import atomic_write_text
from napari_retina.experiments import battery, names
from napari_retina.synthetic import DEFAULT_VERSION, MIXES, VERSIONS, Retina, make_dataset
from seed_sweep import RECIPE                      # scripts/: the shipped settings

FIDELITY_FRAMES = 2000
#: the shipped model's recipe: RECIPE (scripts/seed_sweep.py) with these changes, on FRAMES frames of the mix
SHIPPED = {"epochs": 20, "patience": 3}
FRAMES = 120000


def fidelity_stimuli(tiny: bool) -> dict:
    """Held-out stimuli of each class (seeds unused by the training mix: 7xx)."""
    n = 300 if tiny else FIDELITY_FRAMES
    out = {"naturalistic": nr.stimuli.naturalistic(n, 50, 701, contrast=0.5)}
    for c in (4, 2, 1):
        out[f"noise {c} px"] = nr.stimuli.white_noise(n, 50, 700 + c, checker=c, contrast=2.0, grey=0.5)
    out["switching 4 px"] = nr.stimuli.contrast_switching(n, 50, 710, contrast=2.0, checker=4, grey=0.5)
    out["steps 4 px"] = nr.stimuli.contrast_switching(n, 50, 711, contrast=10.0, low_contrast=0.25, order="random",
                                                      checker=4, grey=0.5)
    out["full field"] = nr.stimuli.white_noise(n, 50, 720, checker=50, contrast=2.0, grey=0.5)
    # single whole-field frames of ±5 after rests (a frame in 33 is not grey): the rested answer
    out["sparse field"] = nr.stimuli.white_noise(n, 50, 721, checker=50, contrast=5.0, grey=0.97)
    return out


def mean_r(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over cells of Pearson r, frames where both are finite and the truth varies."""
    ok = np.isfinite(pred).all(1) & np.isfinite(true).all(1)
    rs = [nr.metrics.pearson(pred[ok, c], true[ok, c]) for c in range(true.shape[1])]
    return float(np.nanmean(rs))


def reversal_bursts(readout: dict) -> list:
    """``[(reversal position px from the centre, latency ms)]`` of the reversal readout's bursting positions."""
    return [(float(p), float(lat)) for p, lat, burst in zip(readout["reversal_positions_px"],
                                                          readout["burst_latencies_ms"], readout["bursting"]) if burst]


def flash_latencies(readout: dict) -> list:
    """``[(flash intensity, response latency ms)]`` of the latency readout (NaN where a flash gets no response)."""
    return [(float(i), float(lat)) for i, lat in zip(readout["intensities"], readout["latency_ms"])]


def model_and_truth(b: dict, name: str, key) -> dict:
    """``{"model": key(readout), "truth": key(readout)}`` of experiment ``name`` in battery ``b`` (where it ran)."""
    return {who: key(r[name].readout) for who, r in (("model", b["results"]), ("truth", b["truth"]))
            if r.get(name) is not None}


def score(model, gt: Retina, tiny: bool) -> dict:
    fid = {k: mean_r(np.asarray(nr.predict(model, s)), gt.respond(s)) for k, s in fidelity_stimuli(tiny).items()}
    exps = ["osr", "reversal"] if tiny else names()
    cells = [0] if tiny else list(range(gt.n_cells))
    per_cell, fid_exp = {}, {}
    for cell in cells:
        b = battery(model, cell, retina=gt, names=exps)
        per_cell[cell] = {r["name"]: {k: r[k] for k in ("truth_present", "model_present", "reduced_present", "model",
                                                        "truth", "reduced", "explained_variance", "kept")}
                          for r in b["rows"]}
        if "reversal" in exps:   # where the bar bursts: the truth only before its centre (docs/MODEL.md)
            per_cell[cell]["reversal"]["bursts"] = model_and_truth(b, "reversal", reversal_bursts)
        if "latency" in exps:    # latency per flash: the models' curves flatten past the training contrast
            per_cell[cell]["latency"]["latencies"] = model_and_truth(b, "latency", flash_latencies)
        for n in exps:
            per_cell[cell][n]["recovery"] = [
                {k: ch[k] for k in ("channel", "label", "pathway", "temporal_r", "spatial_r", "match_r", "margin",
                                    "recovers")} for ch in b["recovery"][n].get("channels", [])]
            if cell == 0:
                res, truth = b["results"][n], b["truth"][n]
                fid_exp[n] = mean_r(np.asarray(res.rates), np.asarray(truth.rates))
    return {"fidelity": fid, "fidelity_experiments": fid_exp, "cells": per_cell}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--stage", choices=("data", "model", "score", "summary"), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=SHIPPED["epochs"])
    ap.add_argument("--patience", type=int, default=SHIPPED["patience"])
    ap.add_argument("--retina-version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                    help="the ground truth recorded and scored against (2: the shipped model's; 3-5: gain control)")
    ap.add_argument("--history", type=int, default=None,
                    help="the model's history in frames (default: ModelConfig's, 40 = 400 ms)")
    ap.add_argument("--kind", default="mix", choices=tuple(MIXES),
                    help="the data stage's training stimulus: mix; mix-switching (its noise's contrast switches); "
                         "mix-steps (it steps to a random contrast every second); mix-field (those steps, and "
                         "whole-field steps too); mix-quiet (mix-field stepping down to near-grey too); mix-sparse "
                         "(mix-field with its whole-field block mostly grey)")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    data = args.out / "mix.h5"
    if args.stage == "data":
        t = time.time()
        make_dataset(data, frames=1000 if args.tiny else args.frames, test_frames=300 if args.tiny else 2000,
                     repeats=10, seed=0, kind=args.kind, retina=Retina(seed=0, version=args.retina_version))
        print(f"data: {time.time() - t:.1f} s", flush=True)
    elif args.stage == "model":
        gt = Retina(seed=0, version=args.retina_version)
        t = time.time()
        recipe = {**RECIPE, "epochs": 1 if args.tiny else args.epochs, "patience": args.patience}
        config = None if args.history is None else nr.ModelConfig(history=args.history, size=gt.size,
                                                                  n_cells=gt.n_cells, cell_names=gt.cell_names)
        model = nr.train(data, **recipe, config=config, seed=args.seed,
                         device=args.device, out=args.out / f"model_{args.seed}.pt",
                         command=f"scripts/science_sweep.py --stage model --seed {args.seed}")
        t_train = time.time() - t
        t = time.time()
        row = {"seed": args.seed, "frames": args.frames, "retina_version": args.retina_version,
               "history": model.config.history, "recipe": recipe, "train_s": round(t_train, 1),
               "r_true": model.scores.get("test_r_true_mean"),
               "ev_true": model.scores.get("test_ev_true_mean"), **score(model, gt, args.tiny)}
        row["score_s"] = round(time.time() - t, 1)
        write_row(args.out, row)
    elif args.stage == "score":
        path = args.out / f"row_{args.seed}.json"
        old = json.loads(path.read_text()) if path.exists() else {"seed": args.seed}
        gt = Retina(seed=0, version=old.get("retina_version", args.retina_version))
        model = nr.load_model(args.out / f"model_{args.seed}.pt")
        t = time.time()
        # a row scored afresh (none on disk) takes the test scores the checkpoint carries
        row = {"r_true": model.scores.get("test_r_true_mean"), "ev_true": model.scores.get("test_ev_true_mean"),
               **old, "history": model.config.history, **score(model, gt, args.tiny)}
        row["score_s"] = round(time.time() - t, 1)
        write_row(args.out, row)
    else:
        rows = [json.loads(p.read_text()) for p in sorted(args.out.glob("row_*.json"))]
        atomic_write_text(args.out / "sweep.json", json.dumps(rows, indent=1, default=float))
        atomic_write_text(args.out / "sweep.md", table(rows))
        print(table(rows))


def write_row(out: Path, row: dict) -> None:
    """OUT/row_SEED.json, atomically, and its headline numbers on stdout."""
    atomic_write_text(out / f"row_{row['seed']}.json", json.dumps(row, indent=1, default=float))
    print(json.dumps({k: row.get(k) for k in ("seed", "train_s", "score_s", "r_true", "fidelity")}, default=float),
          flush=True)


def table(rows: list) -> str:
    """One line per (seed, experiment): present in truth/model/reduced per cell, fidelity, EV."""
    lines = ["| seed | r true | fidelity nat / 4 / 2 / 1 px / switching / steps / field / sparse | experiment | truth "
             "| model | reduced | movie r | min EV |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fidelity"]
        fid = " / ".join(f"{f[k]:.2f}" if k in f else "–"   # rows scored before the switching noise was: a dash
                         for k in ("naturalistic", "noise 4 px", "noise 2 px", "noise 1 px", "switching 4 px",
                                   "steps 4 px", "full field", "sparse field"))
        for n in r["fidelity_experiments"]:
            cells = r["cells"].values()
            yn = lambda key: "".join("y" if c[n][key] else "n" for c in cells)   # noqa: E731
            ev = min(c[n]["explained_variance"] for c in cells)
            lines.append(f"| {r['seed']} | {r['r_true']:.3f} | {fid} | {n} | {yn('truth_present')} | "
                         f"{yn('model_present')} | {yn('reduced_present')} | {r['fidelity_experiments'][n]:.2f} | {ev:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
