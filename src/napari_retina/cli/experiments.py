"""``napari-retina experiment NAME|all``: in-silico experiments, headless.

Writes ``NAME.json`` (readout, reduction summary, ground-truth readout, the model
and the versions; strict JSON through :func:`napari_retina._json.jsonable`; the
layout is in docs/EXPERIMENTS.md) and ``NAME.png`` (stimulus,
response, kept channels' attributions, reduced circuit, and the readout as its paper's figure;
:func:`napari_retina.plotting.write_figure`) into ``--out``, each atomically;
``all`` also writes ``battery.json`` and ``battery.md`` and prints the battery
table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from functools import partial
from types import SimpleNamespace
from typing import Any

from .._atomic import atomic_write_set, atomic_write_text
from ..attribution import DEFAULT_TOL
from ..reduction import DEFAULT_EXPLAIN
from .._json import jsonable, parse_json
from ._paths import check_out_dir
from ._progress import tqdm_progress


def _parse_params(items) -> dict:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param takes KEY=VALUE (e.g. periods=[3,4,5]), got {item!r}")
        key, value = item.split("=", 1)
        if key.strip() in params:   # the last one silently won
            raise ValueError(f"--param {key.strip()} is given twice; give each parameter once")
        try:
            params[key.strip()] = parse_json(value, "it")
        except ValueError as exc:
            if value.lstrip().startswith(("[", "{")):  # meant as JSON: a typo, not a string
                got = repr(value) if len(value) <= 80 else f"{value[:77]!r}..."
                raise ValueError(f"--param {key.strip()} must be valid JSON (e.g. periods=[3,5,8]), got {got}: "
                                 f"{exc}") from None
            params[key.strip()] = value
    return params


def _check_params(names: list, params: dict, model) -> None:
    """Every --param value checked for each experiment that takes it, before any experiment runs (one sentence
    naming the experiment with 'all'): a battery would otherwise spend minutes on the others first."""
    from ..experiments import get
    from ..experiments.base import check_params
    from ..experiments.battery import route_params

    for n, given in route_params(names, params).items():
        try:
            check_params(get(n), given, model.config.size, model.config.history)
        except (ValueError, TypeError) as exc:
            if len(names) == 1:
                raise
            raise (ValueError if isinstance(exc, ValueError) else TypeError)(f"experiment {n!r}: {exc}") from None


def _check_run(args, model) -> None:
    """--cell, --explain and --tol or --steps checked before the output folder is made and any work starts."""
    from .._validate import check_cells
    from ..attribution import DEFAULT_RULE
    from ..attribution._adaptive import check_tol
    from ..attribution._quadrature import check_rule_steps
    from ..reduction import check_explain

    check_cells(args.cell, model.config.n_cells)
    check_explain(args.explain)
    if args.tol is not None:
        check_tol(args.tol)
    if args.steps is not None:   # attribute's own check of its steps
        check_rule_steps(DEFAULT_RULE, args.steps)


def _run_record(args, params: dict) -> dict:
    """How the experiments were run, as given on the command line: cell, explain, steps or tol, and --param."""
    return {"cell": args.cell, "explain": args.explain, "steps": args.steps,
            "tol": None if args.steps is not None else (args.tol if args.tol is not None else DEFAULT_TOL),
            "params": params}


def _params_text(params: dict) -> str:
    """The --param values as JSON text, or say there were none."""
    return json.dumps(jsonable(params, strict=True)) if params else "none (the defaults)"


def _retina_text(record) -> str:
    """The ground truth of :func:`~napari_retina.experiments.battery.retina_record` in words."""
    if record is None:
        return "none"
    return f"{record['type']}(seed={record['seed']}, version={record['version']})"


def _cells_text(cell) -> str:
    """``--cell`` as parsed, in words: "cell 0", "cells 0, 2 (rates summed)", "all cells (rates summed)"."""
    if isinstance(cell, list):
        return f"cells {', '.join(map(str, cell))} (rates summed)"
    return "all cells (rates summed)" if cell == "all" else f"cell {cell}"


def _battery_header(args, made_by: dict, params: dict) -> str:
    """battery.md's first lines: what was run on which model and cell, how, with which --param values, and what
    the key numbers are in."""
    from ..plotting import model_name

    rec = made_by["model"]
    how = f"steps {args.steps}" if args.steps is not None else f"tol {args.tol if args.tol is not None else DEFAULT_TOL:g}"
    model = SimpleNamespace(provenance=rec["provenance"])
    which = "the shipped model" if rec["path"] == "default" else rec["path"]
    return (f"# Battery: {_cells_text(args.cell)} of {which} ({model_name(model)}, weights sha256 "
            f"{rec['weights_sha256'][:12]}), explain {args.explain:g}, {how}, napari-retina "
            f"{made_by['versions']['napari_retina']}\n\n"
            f"parameters (--param): {_params_text(params)}; "
            f"ground truth: {_retina_text(made_by.get('truth_retina'))}\n\n"
            "present: yes/no by the criteria of docs/EXPERIMENTS.md; key numbers model / truth, in the units their "
            "names give (ms, µm; slope ms per ms, r2 and f2_f1 ratios); reduced EV: the reduced circuit's explained "
            "variance of the model's rate on the attributed frames.")


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as strict JSON (NaN as null, ±inf as "inf"/"-inf"), atomically."""
    atomic_write_text(path, json.dumps(jsonable(value, strict=True), indent=1))


def _summary(res, truth=None, recovery=None) -> dict:
    """What ``NAME.json`` holds: readout, parameters, reduction and attribution digests, conditions,
    the ground truth's readout and the pathway recovery (when there are)."""
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
        "attribution": {"steps": res.attribution.steps, "tol": res.attribution.tol, "rule": res.attribution.rule,
                        "invariance": res.attribution.invariance, "frames": len(res.attribution.frames),
                        "completeness_error": res.attribution.completeness_error},
        "conditions": res.conditions,
    }
    if truth is not None:
        out["truth_readout"] = truth.readout
    if recovery is not None:
        out["recovery"] = recovery
    return out


def _experiment(args) -> int:
    from .. import experiments
    from ..checkpoint import load_model, model_record, versions
    from ..experiments.battery import UNITS, default_retina, retina_record
    from ..plotting import require_matplotlib, write_figure
    from ..synthetic import Retina

    from .core import parse_cell

    name = args.name
    args.cell = parse_cell(args.cell)
    if name != "all":
        experiments.get(name)  # unknown names fail before the model loads
    params = _parse_params(args.param)
    out = check_out_dir(args.out)
    require_matplotlib()  # every experiment writes a figure: say so before the work, not after
    model = load_model(args.model)
    names = experiments.names() if name == "all" else [name]
    _check_params(names, params, model)
    _check_run(args, model)
    out.mkdir(parents=True, exist_ok=True)
    # --truth: the version the model names, else the default one (of another field size: battery's sentence)
    retina = None if args.no_truth else (default_retina(model) or Retina(seed=0)) if args.truth else "auto"
    with tqdm_progress("experiments", unit="experiment", disable=args.quiet) as progress:
        def whole(done: int, total: int) -> None:   # the bar counts finished experiments
            progress(done // UNITS, total // UNITS)

        bat = experiments.battery(model, args.cell, retina=retina, names=names, explain=args.explain,
                                  steps=args.steps, tol=args.tol, progress=whole, **params)
    errors, truth_errors = bat["errors"], bat["truth_errors"]
    # in every file written: the model, the versions, how it was run and which ground truth the truth_readout is of
    made_by = {"model": model_record(model, args.model), "versions": versions(), "run": _run_record(args, params),
               "truth_retina": retina_record(bat["retina"])}
    done = [n for n in names if n in bat["results"]]
    writers, stale = {}, []   # file name -> its writer; files of an earlier run that would read as this run's
    for n in names:
        if n in errors:
            writers[f"{n}.json"] = partial(_write_json, value={"name": n, "error": errors[n], **made_by})
            stale.append(f"{n}.png")
            continue
        res, truth = bat["results"][n], bat["truth"][n]
        summary = _summary(res, truth, bat["recovery"].get(n))
        if n in truth_errors:
            summary["truth_error"] = truth_errors[n]
        writers[f"{n}.json"] = partial(_write_json, value={**summary, **made_by})
        writers[f"{n}.png"] = (lambda path, res=res, truth=truth, rec=bat["recovery"].get(n):
                               write_figure(res, path, truth, rec))
    table = experiments.format_table(bat["rows"])
    failed = [f"failed: {n}: {msg}" for n, msg in errors.items()]
    if name == "all":
        writers["battery.json"] = partial(_write_json, value={"rows": bat["rows"], "recovery": bat["recovery"],
                                                              "errors": errors, "truth_errors": truth_errors,
                                                              **made_by})
        text = "\n".join([_battery_header(args, made_by, params), "", table] + failed) + "\n"
        writers["battery.md"] = partial(atomic_write_text, text=text)
    # all or nothing: a failed write or a Ctrl-C leaves the folder as the last run left it
    atomic_write_set(out, writers, stale)
    print(table)
    if name == "all":
        for n, rep in bat["recovery"].items():
            if isinstance(rep, dict) and "recovered" in rep:
                found = {k: v for k, v in rep["recovered"].items() if v}
                print(f"recovery ({n}): kept channels matched to ground-truth pathways {found}; "
                      f"missing {rep.get('missing', [])}")
            else:
                print(f"recovery ({n}): {json.dumps(jsonable(rep, strict=True))}")
    print(f"wrote {out}/" + ("{" + ",".join(done) + "}" if len(done) > 1 else done[0]) + ".{json,png}"
          + (f" and {out}/battery.{{json,md}}" if name == "all" else ""))
    for n, msg in truth_errors.items():
        print(f"napari-retina experiment: ground truth of {n} not compared: {msg}", file=sys.stderr)
    for line in failed:
        print(f"napari-retina experiment: {line}", file=sys.stderr)
    return 1 if errors else 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the command ``experiment`` to the command line's subparsers ``sub``."""
    p = sub.add_parser(
        "experiment",
        help="run an in-silico experiment (osr, latency, anticipation, reversal, doubling) or the whole battery "
             "(all)",
        description="Run an in-silico retinal experiment on a model: stimulus, rates, attribution, reduction, "
                    "readout; compared with the synthetic ground-truth retina the model was trained on (--truth: "
                    "with it even for another model that sees the same field). "
                    "Writes NAME.json and NAME.png (replacing those already in --out). With 'all' an experiment "
                    "that fails does not stop the others: its error goes to NAME.json, battery.json and stderr. "
                    "Exit status: 0 all finished, 1 some experiment failed, 2 bad input.",
    )
    p.add_argument("name", help="experiment name (osr, latency, anticipation, reversal, doubling) or 'all'")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--out", default="napari-retina-experiments", help="output folder (default ./napari-retina-experiments)")
    p.add_argument("--cell", default="0", help="cell index, comma-separated indices (rates summed) or 'all' "
                                               "(default 0), as for attribute")
    p.add_argument("--explain", type=float, default=DEFAULT_EXPLAIN, help="variance fraction the kept channels explain, in (0, 1] (default %(default)s)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--tol", type=float, default=None,
                       help="integrated-gradients accuracy: the quadrature is refined per frame until the "
                            f"completeness error and the maps' estimated error are within it (default "
                            f"{DEFAULT_TOL:g}, nr.attribute's)")
    steps.add_argument("--steps", type=int, default=None,
                       help="a fixed number of integrated-gradients steps instead of --tol")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="experiment parameter, JSON value (repeatable), e.g. --param periods=[3,5,8]; with 'all' "
                        "each goes to the experiments that take it, its value checked for each before any runs; "
                        "EXPERIMENT.KEY=VALUE goes to that experiment only, overriding a plain KEY, e.g. "
                        "--param anticipation.speed=[0.1,0.2] --param reversal.speed=0.19")
    truth = p.add_mutually_exclusive_group()
    truth.add_argument("--no-truth", action="store_true",
                       help="skip the ground-truth retina (compared by default when the model's provenance says it "
                            "was trained on one: the shipped model)")
    truth.add_argument("--truth", action="store_true",
                       help="compare with the synthetic retina, nr.synthetic.Retina(seed=0), even a model not "
                            "trained on it (a model of a recording: its phenomena beside the truth's, not a test of "
                            "what it learned)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_experiment)
