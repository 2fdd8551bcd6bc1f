"""The experiment battery: every experiment on a model, compared with a ground-truth retina.

Example
-------
>>> out = nr.experiments.battery(nr.load_model(), cell=0)          # doctest: +SKIP
>>> print(nr.experiments.format_table(out["rows"]))                # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .._json import parse_json
from .._progress import Cancelled, Progress, report, within
from .._types import AnyModel
from .._wrap import model_config
from ..attribution import Cells
from ..reduction import DEFAULT_EXPLAIN
from ..synthetic import DEFAULT_VERSION, VERSIONS, Retina
from . import recovery
from .base import COMMON_PARAMS
from .registry import get, names as all_names, run, run_truth

#: the phenomena of METHOD.md §4 (which ones each ground-truth version shows: docs/MODEL.md)
PHENOMENA = ("osr", "latency", "anticipation", "reversal")

#: progress units per experiment in :func:`battery`'s reports (the model's run gets
#: :data:`MODEL_UNITS` of them when a ground truth runs too, all of them otherwise)
UNITS = 1000
MODEL_UNITS = 800

#: the readout numbers shown in the battery table, per experiment
KEY_NUMBERS = {
    "osr": ("slope", "r2"),
    "latency": ("spearman", "latency_range_ms"),
    "anticipation": ("lead_um",),
    "reversal": ("burst_latency_ms", "burst_latency_slope_ms_per_px"),
    "doubling": ("f2_f1",),
}


def key_numbers(name: str, readout: Optional[dict]) -> dict:
    """The table's numbers of one readout (``{}`` for None)."""
    if readout is None:
        return {}
    return {k: readout.get(k) for k in KEY_NUMBERS.get(name, ()) if k in readout}


def agreement(result, truth) -> Optional[dict]:
    """How the model's rate of the analysed cells (summed) follows the truth's on the experiment's own movie, over
    the frames where both are finite: ``r`` (Pearson), ``explained_variance`` (of the truth by the model,
    :func:`~napari_retina.metrics.explained_variance`) and ``gain`` (the slope of the model's rate against the
    truth's, 1 for a model at the truth's scale). r alone hides a gain error: on the anticipation movie the
    shipped model's cell 1 has r 0.993 and answers 1.6× the truth (explained variance 0.61), and the criteria's
    floors are in spikes per bin, so such a gain can decide a flag. None without a truth."""
    from ..metrics import explained_variance, linear_fit, pearson

    if truth is None:
        return None
    cells = list(result.cells)
    model_rates, truth_rates = np.asarray(result.rates, np.float64), np.asarray(truth.rates, np.float64)
    same = (len(model_rates) == len(truth_rates) and cells
            and max(cells) < min(model_rates.shape[1], truth_rates.shape[1]))   # the same movie, and the cells
    if same:
        model_rate, truth_rate = model_rates[:, cells].sum(axis=1), truth_rates[:, cells].sum(axis=1)
        both = np.isfinite(model_rate) & np.isfinite(truth_rate)
    if not same or both.sum() < 2:
        return {"r": float("nan"), "explained_variance": float("nan"), "gain": float("nan")}
    m, t = model_rate[both], truth_rate[both]
    return {"r": float(pearson(m, t)), "explained_variance": float(explained_variance(t, m)),
            "gain": float(linear_fit(t, m)[0])}


def default_retina(model: AnyModel) -> Optional[Retina]:
    """The ground truth a model is compared with: ``nr.synthetic.Retina(seed=0)`` of the version whose
    data the model was trained on (its provenance's ``data_attrs["retina"]``; a description without a
    version is version 1's; no description: the default, :data:`~napari_retina.synthetic.DEFAULT_VERSION`), or None
    when the field sizes differ."""
    version = DEFAULT_VERSION
    described = _described_retina(model)
    if isinstance(described, str):
        try:
            version = int(parse_json(described, "the provenance's retina").get("version", 1))
        except (ValueError, TypeError, AttributeError):
            version = DEFAULT_VERSION
    retina = Retina(seed=0, version=version if version in VERSIONS else DEFAULT_VERSION)
    return retina if retina.size == model.config.size else None


def _described_retina(model) -> Any:
    """The ground truth described in the provenance of the data ``model`` was trained on (JSON text), or None
    (also for a provenance that is not the dicts a checkpoint of this package holds: a file may say anything)."""
    provenance = getattr(model, "provenance", None)
    attrs = provenance.get("data_attrs") if isinstance(provenance, dict) else None
    return attrs.get("retina") if isinstance(attrs, dict) else None


def trained_on_truth(model: AnyModel) -> bool:
    """Whether ``model`` was trained on the synthetic retina's responses (its provenance says which retina), so
    comparing it with :func:`default_retina` tests what it learned; a model of a recording says nothing of it."""
    return isinstance(_described_retina(model), str) and default_retina(model) is not None


def phenomena(retina: Optional[Retina] = None, cell: int = 0) -> dict:
    """The four phenomena of the ground truth for one cell (:data:`PHENOMENA`: the OSR, latency coding, motion
    anticipation and reversal; frequency doubling, the battery's fifth experiment, is not among them), read out as
    for a model.

    Runs :func:`~napari_retina.experiments.run_truth` ``(name, retina, cell)`` for each
    name in :data:`PHENOMENA` with its default stimuli, so the circuit and a model are
    judged by the same readouts and ``present`` criteria (documented in each
    experiment module).

    Parameters
    ----------
    retina : nr.synthetic.Retina, optional
        The ground truth (default ``Retina()``).
    cell : int
        The ganglion cell read out.

    Returns
    -------
    dict ``{name: readout dict}`` for the names in :data:`PHENOMENA`.

    Example
    -------
    >>> nr.experiments.phenomena(nr.synthetic.Retina(seed=0))["osr"]["present"]   # doctest: +SKIP
    True
    """
    gt = Retina() if retina is None else retina
    if not isinstance(gt, Retina):
        raise TypeError(f"retina must be an nr.synthetic.Retina, got {type(gt).__name__}")
    return {name: run_truth(name, gt, cell=cell).readout for name in PHENOMENA}


def _check_names(names: Any) -> list:
    """The experiments to run: every registered one for None, else ``names`` (a list of known names, at least
    one), or one sentence (a single name as a plain string is refused: it would read as its letters)."""
    if names is None:
        return all_names()
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"names must be a list of experiment names (e.g. ['osr']), got {type(names).__name__} "
                        f"{str(names)[:40]!r}")
    if not names:
        raise ValueError(f"names is empty: give at least one experiment of {', '.join(all_names())}")
    for n in names:
        get(n)
    return list(names)


def battery(model: AnyModel, cell: Cells = 0, *, retina: Any = "auto", names: Optional[list] = None,
            explain: float = DEFAULT_EXPLAIN, steps: Optional[int] = None, tol: Optional[float] = None,
            progress: Optional[Progress] = None, **params: Any) -> dict:
    """Run experiments on ``model`` (and ``retina``) and tabulate them.

    Parameters
    ----------
    model : RetinaCNN or WrappedModel
        E.g. ``nr.load_model()`` or a user's module through ``nr.wrap``.
    cell : int or list of int
        Cell(s) analysed, in the model and in the retina alike.
    retina : object with ``respond(stimulus) -> (T, n_cells)``, None or "auto"
        The ground truth; "auto" uses the one the model was trained on
        (:func:`default_retina`, when :func:`trained_on_truth`: its provenance
        names a synthetic retina of its field size), else none: a model of a
        recording, or one without provenance, is not scored against a retina it
        never saw (pass ``nr.synthetic.Retina()`` to compare it all the same,
        as the Experiments dock's "compare" box does). It is shown each experiment's stimulus as the
        model saw it (built for the model's history and size, with the model
        run's parameters); a retina of another field size is a ValueError.
    names : list of str, optional
        Experiments to run (default: all registered).
    explain : float
        Fraction in (0, 1] of the response's variance the reduced circuit must explain (for each experiment).
    steps, tol : int, float, optional
        The quadrature: fixed ``steps`` points, or adaptive to the relative completeness error ``tol``
        (default); passed to :func:`napari_retina.experiments.run`.
    progress : callable, optional
        ``progress(done, total)`` with ``total`` = :data:`UNITS` × the number of
        experiments (``done / UNITS``: experiments done, fractions included),
        reported from inside each run (the model's stages, then the ground
        truth's responses), so a :class:`~napari_retina._progress.Cancelled`
        it raises stops the battery within a block of work.
    **params : each passed to the experiments that take it (``max_frames`` to all,
        ``periods`` to ``osr``...); a parameter that none of ``names`` takes is a
        ValueError before anything runs. ``EXPERIMENT.PARAM`` goes to that experiment
        only (overriding a plain ``PARAM``), e.g. ``**{"anticipation.speed": [0.1, 0.2]}``
        (:func:`route_params`).

    An experiment that fails (a parameter its stimulus cannot take, a model that
    gives non-finite rates on it) does not lose the others: its message is kept
    under ``errors`` and the battery goes on. When every experiment fails, the
    first one's exception is raised (the input is wrong for all of them). A
    ground-truth run that fails likewise keeps the model's result: ``truth`` is
    None for it and its message is in ``truth_errors``.

    Returns
    -------
    dict with ``rows`` (one dict per finished experiment: name, truth_present,
    model_present, reduced_present, model (key numbers), truth (key numbers),
    explained_variance, kept), ``results`` (name → ExperimentResult), ``truth``
    (name → ExperimentResult or None) and ``recovery`` (name → the
    :func:`~napari_retina.experiments.recovery_report` of that experiment's reduction
    against ``retina``, or ``{"error": message}`` when it cannot be scored; empty
    without a retina), ``errors`` (name → "ExceptionType: message" of each experiment
    that failed; empty when all finished), ``truth_errors`` (the same for the
    ground-truth runs) and ``retina`` (the ground truth used, "auto" resolved; None
    when there was none; :func:`retina_record` describes it).
    """
    cfg = model_config(model)
    names = _check_names(names)
    routed = route_params(names, params)
    if isinstance(retina, str) and retina == "auto":
        retina = default_retina(model) if trained_on_truth(model) else None
    elif retina is not None and not callable(getattr(retina, "respond", None)):
        raise TypeError(f"retina must be 'auto', None or a ground truth with respond(stimulus) -> (T, n_cells) "
                        f"(e.g. nr.synthetic.Retina()), got {type(retina).__name__} {str(retina)[:40]!r}")
    if retina is not None and hasattr(retina, "respond") and int(getattr(retina, "size", 50)) != cfg.size:
        raise ValueError(
            f"retina sees a {int(getattr(retina, 'size', 50))}-pixel field but the model a {cfg.size}-pixel one, so "
            "they cannot be shown the same stimulus; pass a retina of the model's size or retina=None"
        )
    rows, results, truths, reports, errors, truth_errors = [], {}, {}, {}, {}, {}
    first_exc: Optional[Exception] = None
    total = UNITS * len(names)
    split = MODEL_UNITS if retina is not None else UNITS
    report(progress, 0, total)
    for i, n in enumerate(names):
        start = i * UNITS
        try:
            res = run(n, model, cell, explain=explain, steps=steps, tol=tol,
                      progress=within(progress, start, start + split, total), **routed[n])
        except Cancelled:
            raise
        except Exception as exc:  # one experiment failing must not lose the others
            errors[n] = _message(exc)
            first_exc = first_exc or exc
            report(progress, start + UNITS, total)
            continue
        truth = None
        if retina is not None:
            try:
                # the model's stimulus: its history sizes the defaults, its resolved parameters the rest
                truth = run_truth(n, retina, cell, history=cfg.history,
                                  progress=within(progress, start + split, start + UNITS, total), **res.params)
            except Cancelled:
                raise
            except Exception as exc:
                truth_errors[n] = _message(exc)
        results[n], truths[n] = res, truth
        if retina is not None:
            try:
                reports[n] = recovery.recovery_report(res.reduction, model, retina)
            except Exception as exc:  # a report failing must not lose the battery
                reports[n] = {"error": f"{type(exc).__name__}: {exc}"}
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
            "agreement": agreement(res, truth),
        })
        report(progress, start + UNITS, total)
    if errors and not results:
        raise first_exc
    return {"rows": rows, "results": results, "truth": truths, "recovery": reports, "errors": errors,
            "truth_errors": truth_errors, "retina": retina}


def retina_record(retina: Any) -> Optional[dict]:
    """What says which ground truth a battery compared with, for a run's record: ``{"type", "seed", "version"}``
    (seed and version None when ``retina`` has none), or None without one."""
    if retina is None:
        return None
    kind = type(retina)
    return {"type": f"{kind.__module__}.{kind.__qualname__}", "seed": getattr(retina, "seed", None),
            "version": getattr(retina, "version", None)}


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def route_params(names: list, params: dict) -> dict:
    """``{name: the params experiment name takes}``; a parameter none of ``names`` takes is a ValueError.

    A plain name (``speed``) goes to every experiment in ``names`` that takes it;
    a qualified one, ``EXPERIMENT.PARAM`` (``anticipation.speed``), only to that
    experiment, where it replaces the plain one: ``battery(model, speed=0.2,
    **{"anticipation.speed": [0.1, 0.2]})``. A qualified name of an experiment not in
    ``names``, or of a parameter it does not take, is a ValueError. With one name
    every plain parameter goes to it, so its own sentence names an unknown one.
    """
    plain = {k: v for k, v in params.items() if "." not in str(k)}
    qualified = _qualified(names, {k: v for k, v in params.items() if "." in str(k)})
    if len(names) == 1:
        return {names[0]: {**plain, **qualified[names[0]]}}
    takes = {n: set(get(n).DEFAULTS) | set(COMMON_PARAMS) for n in names}
    for k in plain:
        if not any(k in t for t in takes.values()):
            valid = sorted(set().union(*takes.values()))
            raise ValueError(f"unknown parameter {k!r}: none of the experiments {', '.join(names)} takes it; "
                             f"valid parameters: {', '.join(valid)} (or EXPERIMENT.PARAM for one experiment)")
    return {n: {**{k: v for k, v in plain.items() if k in takes[n]}, **qualified[n]} for n in names}


def _qualified(names: list, params: dict) -> dict:
    """``{name: {param: value}}`` from ``EXPERIMENT.PARAM`` keys, each checked: an experiment among ``names``,
    a parameter it takes."""
    out: dict = {n: {} for n in names}
    for key, value in params.items():
        experiment, _, name = str(key).partition(".")
        if experiment not in names:
            raise ValueError(f"parameter {key!r} names experiment {experiment!r}, which is not among those run "
                             f"({', '.join(names)}); qualify a parameter with one of them (names are lower case)")
        valid = list(get(experiment).DEFAULTS) + list(COMMON_PARAMS)
        if name not in valid:
            raise ValueError(f"unknown parameter {name!r} in {key!r} for experiment {experiment!r}; valid "
                             f"parameters: {', '.join(valid)}")
        out[experiment][name] = value
    return out


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
    head = ("phenomenon", "truth", "model", "reduced", "key numbers (model / truth)",
            "model vs truth (r / EV / gain)", "reduced EV", "kept channels")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        nums = ", ".join(
            f"{k} {_num(v)} / {_num(r['truth'].get(k)) if r['truth'] else '-'}" for k, v in r["model"].items()
        )
        agree = r.get("agreement")
        fit = "-" if not agree else " / ".join(_num(agree[k]) for k in ("r", "explained_variance", "gain"))
        lines.append("| " + " | ".join([
            r["name"], _num(r["truth_present"]), _num(r["model_present"]), _num(r["reduced_present"]), nums, fit,
            f"{r['explained_variance']:.3f}", ", ".join(r["kept"]),
        ]) + " |")
    return "\n".join(lines)
