"""The experiment battery: every experiment on a model, compared with a ground-truth retina.

Example
-------
>>> out = nr.experiments.battery(nr.load_model(), cell=0)          # doctest: +SKIP
>>> print(nr.experiments.format_table(out["rows"]))                # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .._progress import Progress, report

#: the readout numbers shown in the battery table, per experiment
KEY_NUMBERS = {
    "osr": ("slope", "r2"),
    "latency": ("spearman", "latency_range_ms"),
    "anticipation": ("lead_um",),
    "reversal": ("burst_ratio", "burst_latency_ms"),
    "doubling": ("f2_f1",),
}


def key_numbers(name: str, readout: Optional[dict]) -> dict:
    """The table's numbers of one readout (``{}`` for None)."""
    if readout is None:
        return {}
    return {k: readout.get(k) for k in KEY_NUMBERS.get(name, ()) if k in readout}


def default_retina(model) -> Any:
    """``nr.synthetic.Retina(seed=0)`` when it exists and sees the model's field size, else None."""
    try:
        from .. import synthetic
    except ImportError:  # pragma: no cover - the synthetic module ships with the package
        return None
    retina_cls = getattr(synthetic, "Retina", None)
    if retina_cls is None:
        return None
    retina = retina_cls(seed=0)
    if int(getattr(retina, "size", model.config.size)) != model.config.size:
        return None
    return retina


def battery(model, cell=0, *, retina: Any = "auto", names: Optional[list] = None, explain: float = 0.9,
            steps: Optional[int] = None, progress: Optional[Progress] = None, **params) -> dict:
    """Run experiments on ``model`` (and ``retina``) and tabulate them.

    Parameters
    ----------
    model : RetinaCNN
    cell : int or list of int
        Cell(s) analysed, in the model and in the retina alike.
    retina : object with ``respond(stimulus) -> (T, n_cells)``, None or "auto"
        The ground truth; "auto" uses ``nr.synthetic.Retina(seed=0)`` when its
        field matches the model's.
    names : list of str, optional
        Experiments to run (default: all registered).
    explain, steps : passed to :func:`napari_retina.experiments.run`.
    progress : callable, optional
        ``progress(done_experiments, total)``.
    **params : passed to every experiment (e.g. ``max_frames``).

    Returns
    -------
    dict with ``rows`` (one dict per experiment: name, truth_present,
    model_present, reduced_present, model (key numbers), truth (key numbers),
    explained_variance, kept), ``results`` (name → ExperimentResult), ``truth``
    (name → ExperimentResult or None) and ``recovery`` (name → the
    ``nr.synthetic.recovery_report`` of that experiment's reduction, when the
    synthetic module offers it).
    """
    from . import get, names as all_names, run, run_truth

    names = all_names() if names is None else list(names)
    for n in names:
        get(n)
    if isinstance(retina, str) and retina == "auto":
        retina = default_retina(model)
    recovery_fn = None
    if retina is not None:
        try:
            from .. import synthetic

            recovery_fn = getattr(synthetic, "recovery_report", None)
        except ImportError:  # pragma: no cover
            recovery_fn = None
    rows, results, truths, recovery = [], {}, {}, {}
    report(progress, 0, len(names))
    for i, n in enumerate(names):
        res = run(n, model, cell, explain=explain, steps=steps, **params)
        truth = run_truth(n, retina, cell, **params) if retina is not None else None
        results[n], truths[n] = res, truth
        if recovery_fn is not None:
            try:
                recovery[n] = recovery_fn(res.reduction, model, retina)
            except Exception as exc:  # a report failing must not lose the battery
                recovery[n] = {"error": f"{type(exc).__name__}: {exc}"}
        rows.append({
            "name": n,
            "truth_present": None if truth is None else bool(truth.readout["present"]),
            "model_present": bool(res.readout["present"]),
            "reduced_present": bool(res.readout["reduced"]["present"]),
            "model": key_numbers(n, res.readout),
            "truth": key_numbers(n, truth.readout if truth is not None else None),
            "reduced": key_numbers(n, res.readout["reduced"]),
            "explained_variance": float(res.reduction.explained_variance),
            "kept": list(res.readout["kept"]),
        })
        report(progress, i + 1, len(names))
    return {"rows": rows, "results": results, "truth": truths, "recovery": recovery}


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def format_table(rows: list) -> str:
    """A plain-text (Markdown) table of :func:`battery` rows."""
    head = ("phenomenon", "truth", "model", "reduced", "key numbers (model / truth)", "reduced EV", "kept channels")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        nums = ", ".join(
            f"{k} {_num(v)} / {_num(r['truth'].get(k)) if r['truth'] else '-'}" for k, v in r["model"].items()
        )
        lines.append("| " + " | ".join([
            r["name"], _num(r["truth_present"]), _num(r["model_present"]), _num(r["reduced_present"]), nums,
            f"{r['explained_variance']:.3f}", ", ".join(r["kept"]),
        ]) + " |")
    return "\n".join(lines)
