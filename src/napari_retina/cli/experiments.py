"""``napari-retina experiment NAME|all``: in-silico experiments, headless.

Writes ``NAME.json`` (readout, reduction summary, ground-truth readout) and
``NAME.png`` (stimulus, response, kept channels' attributions, reduced
circuit) into ``--out``; ``all`` also writes ``battery.json`` and
``battery.md`` and prints the battery table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .._atomic import atomic_write, atomic_write_text
from ._paths import check_out_dir
from ._progress import tqdm_progress


def _parse_params(items) -> dict:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param takes KEY=VALUE (e.g. periods=[3,4,5]), got {item!r}")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _summary(res, truth=None, recovery=None) -> dict:
    red = res.reduction
    out = {
        "name": res.name,
        "cells": res.cells,
        "params": res.params,
        "readout": res.readout,
        "reduction": {
            "kept": red.kept,
            "channels": red.summary(),
            "importance": red.importance,
            "explained_variance": red.explained_variance,
            "explained_variance_all_frames": red.explained_variance_all,
            "kept_variance": red.kept_variance,
            "kinetics_split_ms": red.kinetics_split_ms,
            "pools": red.pools,
            "bias": red.bias,
        },
        "attribution": {"steps": res.attribution.steps, "rule": res.attribution.rule,
                        "invariance": res.attribution.invariance, "frames": len(res.attribution.frames),
                        "completeness_error": res.attribution.completeness_error},
        "conditions": res.conditions,
    }
    if truth is not None:
        out["truth_readout"] = truth.readout
    if recovery is not None:
        out["recovery"] = recovery
    return _jsonable(out)


def write_figure(res, path: Path, truth=None) -> Path:
    """PNG of the stimulus, the response (model, reduced circuit, truth), the kept channels' A_c(t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stim = res.stimulus
    T = len(stim)
    t_ms = np.arange(T) * 10.0
    fig, axes = plt.subplots(4, 1, figsize=(11, 9), sharex=True,
                             gridspec_kw={"height_ratios": [1.2, 1.5, 1.5, 1.2]})
    ax = axes[0]
    if res.attribution.invariance == "space":
        ax.plot(t_ms, stim[:, 0, 0], color="k", lw=0.8)
        ax.set_ylabel("contrast")
    else:  # bars uniform along y: an x-t image of the middle row
        size = stim.shape[2]
        ax.imshow(stim[:, stim.shape[1] // 2, :].T, aspect="auto", cmap="gray", vmin=-1, vmax=1,
                  extent=(0, T * 10.0, size / 2 * 55, -size / 2 * 55), interpolation="nearest")
        ax.set_ylabel("x (µm)")
    ax.set_title(f"{res.name}: stimulus")
    ax = axes[1]
    ax.plot(t_ms, res.response, color="k", lw=1, label="model")
    ax.plot(t_ms, res.reduction.reduced_rates, color="tab:red", lw=1, ls="--",
            label=f"reduced circuit (EV {res.reduction.explained_variance:.2f})")
    if truth is not None:
        ax.plot(t_ms, truth.response, color="tab:green", lw=0.8, alpha=0.7, label="ground truth")
    ax.set_ylabel("rate (spikes/bin)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"response; present: model {res.readout['present']}"
                 + (f", truth {truth.readout['present']}" if truth is not None else ""))
    ax = axes[2]
    frames = np.asarray(res.attribution.frames)
    step = int(np.median(np.diff(frames))) if len(frames) > 1 else 1
    cuts = np.flatnonzero(np.diff(frames) > step) + 1  # break the line between attributed windows
    for k, c in enumerate(res.reduction.kept):
        tr = res.reduction.traces[frames, k].astype(float)
        ax.plot(np.insert(t_ms[frames], cuts, np.nan), np.insert(tr, cuts, np.nan), lw=0.9, marker=".", ms=2,
                label=res.reduction.label(c))
    ax.set_ylabel("A_c(t)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("kept channels' attributions (attributed frames)")
    ax = axes[3]
    contrib = res.reduction.contributions
    for k, c in enumerate(res.reduction.kept):
        ax.plot(t_ms, contrib[:, k], lw=0.9, label=f"Σ_p β·d  {res.reduction.label(c)}")
    ax.set_ylabel("channel contribution")
    ax.set_xlabel("time (ms)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"reduced circuit: r = softplus(Σ_cp β_cp d_cp + β_0), pools {', '.join(res.reduction.pools)}")
    fig.tight_layout()
    fmt = Path(path).suffix[1:].lower() or "png"  # the temporary file's name has no image suffix
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format=fmt))
    finally:
        plt.close(fig)
    return path


def _experiment(args) -> int:
    from .. import experiments
    from ..checkpoint import load_model

    name = args.name
    if name != "all":
        experiments.get(name)  # unknown names fail before the model loads
    params = _parse_params(args.param)
    out = check_out_dir(args.out)
    model = load_model(args.model)
    out.mkdir(parents=True, exist_ok=True)
    names = experiments.names() if name == "all" else [name]
    retina = "auto" if not args.no_truth else None
    with tqdm_progress("experiments", unit="experiment", disable=args.quiet) as progress:
        bat = experiments.battery(model, args.cell, retina=retina, names=names, explain=args.explain,
                                  steps=args.steps, progress=progress, **params)
    for n in names:
        res, truth = bat["results"][n], bat["truth"][n]
        atomic_write_text(out / f"{n}.json", json.dumps(_summary(res, truth, bat["recovery"].get(n)), indent=1))
        write_figure(res, out / f"{n}.png", truth)
    table = experiments.format_table(bat["rows"])
    print(table)
    if name == "all":
        atomic_write_text(out / "battery.json",
                          json.dumps(_jsonable({"rows": bat["rows"], "recovery": bat["recovery"]}), indent=1))
        atomic_write_text(out / "battery.md", table + "\n")
        for n, rep in bat["recovery"].items():
            if isinstance(rep, dict) and "recovered" in rep:
                found = {k: v for k, v in rep["recovered"].items() if v}
                print(f"recovery ({n}): kept channels matched to ground-truth pathways {found}; "
                      f"missing {rep.get('missing', [])}")
            else:
                print(f"recovery ({n}): {json.dumps(_jsonable(rep))}")
    print(f"wrote {out}/" + ("{" + ",".join(names) + "}" if len(names) > 1 else names[0]) + ".{json,png}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="run an in-silico experiment (osr, latency, anticipation, reversal) or the whole battery (all)",
        description="Run an in-silico retinal experiment on a model: stimulus, rates, attribution, reduction, "
                    "readout; compared with the synthetic ground-truth retina when it sees the same field. "
                    "Writes NAME.json and NAME.png.",
    )
    p.add_argument("name", help="experiment name (osr, latency, anticipation, reversal) or 'all'")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--out", default="napari-retina-experiments", help="output folder (default ./napari-retina-experiments)")
    p.add_argument("--cell", type=int, default=0, help="cell index (default 0)")
    p.add_argument("--explain", type=float, default=0.9, help="variance fraction the kept channels explain (0, 1]")
    p.add_argument("--steps", type=int, default=None, help="integrated-gradients steps (default: nr.attribute's)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="experiment parameter, JSON value (repeatable), e.g. --param periods=[3,5,8]")
    p.add_argument("--no-truth", action="store_true", help="skip the ground-truth retina")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_experiment)
