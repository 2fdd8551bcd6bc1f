"""Seed sweep of the shipped model's recipe (docs/MODEL.md, "How robust the recipe is").

For each (grey fraction, training frames, seed): write the dataset with
``nr.synthetic.make_dataset`` (as ``napari-retina synth``), train with the
shipped command's settings, run the battery on cell 0 and record which
phenomena are present, the reduced circuits' explained variance and whether
the OSR reduction keeps channels matching both ON pathways. One JSON row per
model is appended to OUT/sweep.json as it finishes; models stop being started
``budget`` seconds after the start.

Run (the table in docs/MODEL.md: two runs on an H200, ~20 s per model there):

    python scripts/seed_sweep.py OUT --device cuda --budget 500 \\
        --plan 0.5:30000:0 0.5:30000:1 0.5:30000:2 0.5:30000:3 0.75:30000:0 0.5:60000:0 0.75:30000:1 0.5:60000:1
    python scripts/seed_sweep.py OUT2 --device cuda --budget 270 \\
        --plan 0.5:30000:0 0.5:60000:1 0.5:60000:2 0.5:60000:3 0.5:60000:4 0.5:60000:5

Add ``--tiny`` for a smoke run (300 frames, 1 epoch, the OSR experiment only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import napari_retina as nr
from napari_retina._atomic import atomic_write_text
from napari_retina.experiments import battery

#: the shipped model's training settings (docs/MODEL.md), for nr.train
RECIPE = {"epochs": 10, "batch_size": 192, "blocks_per_batch": 8, "lr": 2e-3, "l2": 1e-3, "l1_linear": 3e-5,
          "patience": 2}


def sweep_arguments(default_plan: str, plan_help: str) -> argparse.Namespace:
    """The sweep scripts' command line: OUT, --device, --budget, --plan ITEM..., --tiny."""
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds after which no new model is started")
    ap.add_argument("--plan", nargs="+", default=[default_plan], help=plan_help)
    ap.add_argument("--tiny", action="store_true", help="a smoke run: tiny data, one epoch")
    return ap.parse_args()


def main() -> None:
    args = sweep_arguments("0.5:30000:0", "grey:frames:seed")
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    rows, data = [], {}
    for item in args.plan:
        grey, frames, seed = float(item.split(":")[0]), int(item.split(":")[1]), int(item.split(":")[2])
        if time.time() > deadline:
            print("budget spent: stop", flush=True)
            break
        key = (grey, frames)
        if key not in data:
            data[key] = nr.synthetic.make_dataset(
                args.out / f"wn_g{int(grey * 100)}_{frames // 1000}k.h5", frames=300 if args.tiny else frames,
                test_frames=100 if args.tiny else 2000, repeats=10, seed=0, checker=4, contrast=2.0, grey=grey)
        t = time.time()
        model = nr.train(data[key], **{**RECIPE, "epochs": 1 if args.tiny else RECIPE["epochs"]}, seed=seed,
                         device=args.device)
        t_train = time.time() - t
        b = battery(model, 0, names=["osr"] if args.tiny else None)
        rec = b["recovery"]["osr"].get("recovered", {})
        row = {"grey": grey, "frames": frames, "seed": seed, "train_s": round(t_train, 1),
               "r_true": model.scores.get("test_r_true_mean"), "ev_true": model.scores.get("test_ev_true_mean"),
               "present": {r["name"]: r["model_present"] for r in b["rows"]},
               "model": {r["name"]: r["model"] for r in b["rows"]},
               "ev_reduced": {r["name"]: r["explained_variance"] for r in b["rows"]},
               "osr_recovered": rec}
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(args.out / "sweep.json", json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
