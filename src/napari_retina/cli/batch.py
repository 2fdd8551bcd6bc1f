"""``napari-retina batch``: a grid of analyses over many recordings on a dask cluster."""

from __future__ import annotations

import argparse
import sys

from ._paths import check_out_dir
from ._progress import tqdm_progress, write_line


def _batch(args) -> int:
    from ..batch import connect, parse_spec, require, run

    spec = parse_spec(args.spec, out=args.out)
    check_out_dir(spec.out)  # --out or the spec's 'out': a folder that can be made and written, before any work
    require()
    client = connect(args.scheduler) if args.scheduler else None
    try:
        with tqdm_progress("batch", unit="task", disable=args.quiet) as progress:
            report = run(spec, client, force=args.force, workers=args.workers, progress=progress, log=write_line)
    finally:
        if client is not None:
            client.close()
    summary = (f"{len(report.done)} computed, {len(report.skipped)} already done, {len(report.failed)} failed "
               f"in {report.seconds:.1f} s; results in {spec.out}")
    print(summary)
    for label, message in report.failed:
        print(f"napari-retina batch: failed: {label}: {message}", file=sys.stderr)
    return report.exit_code


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the command ``batch`` to the command line's subparsers ``sub``."""
    batch = sub.add_parser(
        "batch", help="run a grid of analyses (models × stimuli × cells, experiments) on a dask cluster",
        description="Run the analyses a batch spec (JSON or YAML) names on a dask cluster, one task per "
                    "(model, stimulus, cell, analysis), per (model, stimulus) for predict (every cell at once) "
                    "and per (model, experiment, cell), into a Zarr results "
                    "store. Tasks already done are skipped. Exit status: 0 all succeeded, 1 some task failed, "
                    "2 bad spec.")
    batch.add_argument("spec", help="batch spec: .json, .yaml or .yml")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, default=None,
                       help="worker processes of a local cluster (default: one per core)")
    where.add_argument("--scheduler", default=None,
                       help="address of a running dask scheduler (e.g. tcp://host:8786) instead of a local cluster")
    batch.add_argument("--out", default=None, help="results folder (default: the spec's 'out')")
    batch.add_argument("--force", action="store_true", help="recompute tasks whose results exist")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.set_defaults(func=_batch)
