"""Which training stimulus lets a trained model show motion anticipation? (docs/MODEL.md)

For each plan item ``gt:grey:frames:seed:checker:hold`` this writes a training set
of the synthetic retina with :func:`napari_retina.synthetic.record_dataset`,
trains with the shipped model's settings (docs/MODEL.md), runs the battery on
cell 0 and records, next to the phenomena, how well the model reproduces the
responses the anticipation experiment is made of: the peak response (above
grey) to 2-frame flashed bars (width 2, 4, 8 px; dark −1, −2; bright +2) and to
the experiment's moving bar, each as a ratio model/truth.

- ``gt``: ``d`` the default circuit, ``v`` a variant with a larger moving-bar
  response (OFF fast weight 20, ON slow weight 12, bias −1; its own battery
  still shows all four phenomena, anticipation bump 0.22 instead of 0.06
  spikes/bin).
- ``grey``, ``checker``, ``hold``: the white noise (``nr.stimuli.white_noise``
  with contrast ±2): probability of a grey frame, checker size (px) and frames
  each noise frame is held for. ``a+b`` values make a mixture: the movie is cut
  into 500-frame blocks and block ``i`` takes the ``i``-th value of each list
  (cyclically); block ``i`` of a movie with seed ``s`` has seed ``1000 s + i``.
  The test split is the same mixture with seed 1, the training split seed 0.

One JSON row per model is appended to OUT/sweep.json as it finishes; no model is
started ``budget`` seconds after the start. The table in docs/MODEL.md is

    python scripts/distribution_sweep.py OUT --device cuda --budget 470 --plan \\
        v:0.9:60000:0:2:1 d:0.5+0.9:60000:0:4+2:1 v:0.5+0.9:60000:0:4+2:1 d:0.9:60000:0:2:3 \\
        v:0.9:60000:0:2:3 v:0.5:30000:0:4:1 d:0.9:60000:1:2:1 v:0.9:60000:1:2:1 \\
        v:0.5+0.9:60000:1:4+2:1 d:0.5+0.9:60000:1:4+2:1 v:0.9:60000:2:2:1 d:0.9:60000:2:2:1

(407 s on an H200). Add ``--tiny`` for a smoke run (600 frames, 1 epoch, two experiments).
"""

from __future__ import annotations

import json
import time

import numpy as np

import napari_retina as nr
from napari_retina._atomic import atomic_write_text
from napari_retina.experiments import battery
from napari_retina.synthetic import DEFAULT_PARAMS, Retina, record_dataset
from seed_sweep import RECIPE, sweep_arguments     # scripts/: the shipped settings and the command line

BLOCK = 500
#: the variant circuit "v" (overrides of DEFAULT_PARAMS)
VARIANT = {"OFF fast weight": 20.0, "ON slow weight": 12.0, "bias": -1.0}


def retina(tag: str) -> Retina:
    """The default circuit ("d") or the variant with a larger moving-bar response ("v")."""
    if tag == "d":
        return Retina(seed=0)
    p = json.loads(json.dumps(DEFAULT_PARAMS))
    p["pathways"]["OFF fast"]["weight"] = VARIANT["OFF fast weight"]
    p["pathways"]["ON slow"]["weight"] = VARIANT["ON slow weight"]
    p["bias"] = VARIANT["bias"]
    return Retina(seed=0, params=p)


def noise(frames: int, seed: int, greys: list, checkers: list, holds: list) -> np.ndarray:
    """Block mixture of ±2 white noise, float32 (frames, 50, 50); see the module docstring."""
    blocks = []
    for i, start in enumerate(range(0, frames, BLOCK)):
        n = min(BLOCK, frames - start)
        hold = holds[i % len(holds)]
        b = nr.stimuli.white_noise(-(-n // hold), 50, seed * 1000 + i, checker=checkers[i % len(checkers)],
                                   contrast=2.0, grey=greys[i % len(greys)])
        blocks.append(np.repeat(b, hold, axis=0)[:n])
    return np.concatenate(blocks)


def probes(gt: Retina) -> dict:
    """Stimuli of the response checks and the truth's peak above grey (spikes/bin) for each."""
    out = {}
    for w, c in ((2, -1), (4, -2), (8, -2), (4, 2)):
        out[f"flash w{w} {c:+d}"] = nr.stimuli.flashed_bar(position=0, width=w, duration=2, intensity=c, pre=60,
                                                           post=40, size=50, axis="x")
    out["moving bar"] = nr.stimuli.moving_bar(speed=0.08, start=-30, stop=30, width=2, intensity=-1, pre=60,
                                              post=60, size=50, axis="x")
    return {k: (s, peak_above_grey(gt.respond(s)[:, 0])) for k, s in out.items()}


def peak_above_grey(r: np.ndarray) -> float:
    """Largest response after the 60 grey frames every probe starts with, minus the grey level."""
    return float(r[60:].max() - r[50])


def main() -> None:
    args = sweep_arguments("d:0.9:60000:0:2:1", "gt:grey:frames:seed:checker:hold")
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    circuits, data, rows = {}, {}, []
    for item in args.plan:
        tag, grey, frames, seed, checker, hold = item.split(":")
        if time.time() > deadline:
            print("budget spent: stop", flush=True)
            break
        if tag not in circuits:
            gt = retina(tag)
            circuits[tag] = (gt, probes(gt))
        gt, checks = circuits[tag]
        key = (tag, grey, frames, checker, hold)
        if key not in data:
            mix = dict(greys=[float(g) for g in grey.split("+")], checkers=[int(c) for c in checker.split("+")],
                       holds=[int(h) for h in hold.split("+")])
            n_train, n_test = (600, 100) if args.tiny else (int(frames), 2000)
            data[key] = record_dataset(args.out / ("_".join(key).replace("+", "-") + ".h5"),
                                       noise(n_train, 0, **mix), noise(n_test, 1, **mix), repeats=10, seed=0,
                                       retina=gt, attrs={"mixture": json.dumps(mix)})
        t = time.time()
        model = nr.train(data[key], **{**RECIPE, "epochs": 1 if args.tiny else RECIPE["epochs"]}, seed=int(seed),
                         device=args.device)
        t_train = time.time() - t
        model = model.to("cpu")
        b = battery(model, 0, names=["osr", "anticipation"] if args.tiny else None)
        ratios = {k: round(peak_above_grey(np.asarray(nr.predict(model, s))[:, 0]) / truth, 3)
                  for k, (s, truth) in checks.items()}
        row = {"item": item, "train_s": round(t_train, 1), "r_true": model.scores.get("test_r_true_mean"),
               "ev_true": model.scores.get("test_ev_true_mean"), "response_ratio": ratios,
               "present": {r["name"]: r["model_present"] for r in b["rows"]},
               "model": {r["name"]: r["model"] for r in b["rows"]},
               "ev_reduced": {r["name"]: r["explained_variance"] for r in b["rows"]},
               "osr_recovered": b["recovery"]["osr"].get("recovered")}
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
        atomic_write_text(args.out / "sweep.json", json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
