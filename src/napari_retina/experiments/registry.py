"""The registry of experiments: names, parameters, and running one on a model, a retina or any function.

Each registered module (one per phenomenon) defines ``NAME``, ``DEFAULTS``,
``build`` and ``readout`` (see :mod:`.base`). This module sits below the
battery (which runs every registered experiment) and is re-exported by the
package: ``nr.experiments.run`` is :func:`run`.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from .._progress import Progress, report, within
from .._types import AnyModel, ArrayLike
from .._validate import check_cells, check_int, is_int
from ..attribution import Cells
from ..reduction import DEFAULT_EXPLAIN
from . import anticipation, doubling, latency, osr, reversal
from .base import COMMON_DEFAULTS, NAN_UNDEFINED, ExperimentResult, readout_units_of, run_model, run_response

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..synthetic import Retina

_REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (osr, latency, anticipation, reversal, doubling)}


def names() -> list[str]:
    """Names of the registered experiments, in battery order."""
    return list(_REGISTRY)


def get(name: str) -> ModuleType:
    """The module of experiment ``name`` (with ``build``, ``readout``, ``DEFAULTS``)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def readout_units(name: str) -> dict:
    """The unit of every readout key of experiment ``name``: its module's ``UNITS`` and those of the keys every
    model run adds (:data:`~.base.COMMON_UNITS`); "" where a value has none (yes/no, channel labels;
    :data:`~.base.READOUT_UNITS`)."""
    return readout_units_of(get(name))


def nan_reason(name: str, key: str) -> str:
    """Why readout ``key`` of experiment ``name`` is NaN, as its docs say (its module's ``NAN_REASONS``);
    :data:`~.base.NAN_UNDEFINED` where they say nothing."""
    return get(name).NAN_REASONS.get(key, NAN_UNDEFINED)


def parameters(name: str) -> dict:
    """Parameters of experiment ``name`` and their defaults (None: derived from the model)."""
    p = dict(get(name).DEFAULTS)
    p.update(COMMON_DEFAULTS)
    return p


def run(name: str, model: AnyModel, cell: Cells = 0, *, explain: float = DEFAULT_EXPLAIN, steps: Optional[int] = None,
        tol: Optional[float] = None, progress: Optional[Progress] = None, **params: Any) -> ExperimentResult:
    """Run experiment ``name`` on ``model``: stimulus, rates, attribution, reduction, readout.

    Parameters
    ----------
    name : str
        One of :func:`names`.
    model : RetinaCNN or WrappedModel
        E.g. ``nr.load_model()`` or ``nr.wrap(module, ...)``; stimuli are built
        for its size and history (a wrapped module is attributed with
        Captum's rules, refined until ``tol`` or at fixed ``steps``).
    cell : int, list of int or "all"
        Cell(s) whose summed rate is analysed.
    explain : float in (0, 1]
        Passed to :func:`napari_retina.reduce`.
    steps : int, optional
        A fixed number of integrated-gradients quadrature points, as in
        :func:`napari_retina.attribute`; not with ``tol``.
    tol : float, optional
        Without ``steps``, the quadrature is refined per frame until it meets
        ``tol`` (relative: the completeness gap and the maps' estimated error, as
        in :func:`napari_retina.attribute`; default ``nr.attribution.DEFAULT_TOL``, 1e-3).
    progress : callable, optional
        ``progress(done, total)`` from inside each stage (:func:`~.base.run_model`:
        the protocol's probe runs, the rates, the attribution, the reduction).
    **params
        The experiment's parameters (see :func:`parameters` and its module);
        ``gap`` (grey frames between conditions, ≥ history), ``window``
        (response frames after an event) and ``max_frames`` (most frames
        attributed) are common to all.

    Returns
    -------
    ExperimentResult
        ``readout`` (the experiment's numbers, ``present``, and the reduced circuit's
        readout under ``reduced``), ``reduction`` (``kept``, ``explained_variance``...),
        ``attribution``, ``rates`` (T, n_cells) spikes per 10 ms bin, ``stimulus``
        (T, H, W) contrast units, ``conditions`` (event frames), ``params`` (every
        parameter, defaults resolved) and ``cells``.

    Example
    -------
    >>> res = run("latency", nr.load_model(), intensities=[-2, -5, -10])   # doctest: +SKIP
    >>> res.readout["spearman"]                                             # doctest: +SKIP
    """
    return run_model(get(name), model, cell, explain=explain, steps=steps, tol=tol, progress=progress, **params)


def readout(name: str, response: ArrayLike, conditions: list) -> dict:
    """Experiment ``name``'s readout of any (T,) response for the given conditions.

    ``response`` is a (T,) array of rates over the experiment's movie;
    ``conditions`` the list of condition dicts of the same movie
    (``ExperimentResult.conditions``, absolute frame indices).

    Example
    -------
    >>> res = run("osr", nr.load_model(), cell=0)                           # doctest: +SKIP
    >>> readout("osr", res.reduction.reduced_rates, res.conditions)["slope"]  # doctest: +SKIP
    """
    module = get(name)
    r = _readout_response(response)
    conditions = _readout_conditions(conditions, len(r))
    _refuse_non_finite_in_conditions(r, conditions)
    try:
        return module.readout(r, conditions)
    except KeyError as exc:
        raise ValueError(
            f"readout {name!r} expects the conditions of a {name!r} run (ExperimentResult.conditions), "
            f"but a condition lacks the key {exc.args[0]!r}"
        ) from None


def _readout_response(response) -> np.ndarray:
    """``response`` as a float64 (T,) array, or a clear error."""
    try:
        r = np.asarray(response, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"readout expects response as a (T,) array of rates, got {type(response).__name__}") from exc
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"readout expects response as a non-empty (T,) array of rates, got shape {r.shape}")
    return r


def _refuse_non_finite_in_conditions(r: np.ndarray, conditions: list) -> None:
    """A ValueError naming the first frame inside a condition (``start`` to ``stop``) where the response ``r`` is
    NaN or infinite: a readout over it would shift its peaks and latencies without a word. The NaN that
    opens a model's response (frames without a full history) is not counted; a response with no finite
    value is refused."""
    finite = np.isfinite(r)
    if not finite.any():
        raise ValueError(f"readout expects finite rates, but all {r.size} frames of the response are NaN or "
                         "infinite")
    first = int(np.argmax(finite))   # the frames before it: no full history yet
    for i, c in enumerate(conditions):
        start = c.get("start", 0)
        start = int(start) if is_int(start) else 0
        begin = max(0, start, first)
        bad = np.flatnonzero(~finite[begin:int(c["stop"])])
        if bad.size:
            frame = begin + int(bad[0])
            raise ValueError(
                f"readout expects finite rates inside each condition, but the response is {r[frame]} at frame "
                f"{frame} (condition {i}, frames {start}-{int(c['stop'])}, {bad.size} such frames): pass the rates "
                "of a run on the whole movie"
            )


def _readout_conditions(conditions, n_frames: int) -> list:
    """``conditions`` as a non-empty list of dicts inside ``n_frames``, or a clear error."""
    if not isinstance(conditions, (list, tuple)):
        got = type(conditions).__name__
    elif not conditions:
        got = "an empty list"
    elif not all(isinstance(c, dict) for c in conditions):
        got = "a list holding " + ", ".join(sorted({type(c).__name__ for c in conditions if not isinstance(c, dict)}))
    else:
        got = None
    if got is not None:
        raise (ValueError if got == "an empty list" else TypeError)(
            "readout expects conditions as a non-empty list of dicts, one per condition with its event frames "
            f"(ExperimentResult.conditions), got {got}"
        )
    stops = [c.get("stop", 0) for c in conditions]
    wrong = [v for v in stops if not is_int(v)]
    if wrong:
        raise TypeError(f"readout expects each condition's 'stop' as a frame index (an int), got "
                        f"{type(wrong[0]).__name__} {wrong[0]!r}; pass the conditions of the run "
                        f"(ExperimentResult.conditions)")
    stop = max(int(v) for v in stops)
    if stop > n_frames:
        raise ValueError(
            f"the conditions reach frame {stop} but the response has {n_frames} frames; "
            "pass the response of the same movie as the conditions"
        )
    return list(conditions)


def run_truth(name: str, retina: "Retina", cell: Cells = 0, *, history: Optional[int] = None,
              progress: Optional[Progress] = None, **params: Any) -> ExperimentResult:
    """Run experiment ``name`` on a ground-truth retina (``retina.respond(stimulus) -> (T, n_cells)``).

    The stimulus is built for ``retina.size`` (default 50) and sized (default
    ``gap`` and ``window``) for ``history`` frames: by default ``retina.history``
    (40 when it has none). To show the truth the stimulus a model saw, pass the
    model's history and the model run's parameters (``ExperimentResult.params``),
    as :func:`~napari_retina.experiments.battery` does. ``attribution`` and
    ``reduction`` are None. ``progress(done, 100)``: from inside each response
    when ``retina.respond`` takes ``progress=`` (:meth:`nr.synthetic.Retina.respond
    <napari_retina.synthetic.Retina.respond>` does, so Cancel acts within a
    block of frames), else after each response; never going back.

    Returns
    -------
    ExperimentResult
        ``readout`` (the experiment's numbers and ``present``, of the retina's
        response), ``rates`` (T, n_cells) the retina's true rates, ``stimulus``
        (T, H, W), ``conditions``, ``params`` and ``cells``; ``attribution`` and
        ``reduction`` None.

    Example
    -------
    >>> truth = run_truth("osr", nr.synthetic.Retina(seed=0), cell=0)   # doctest: +SKIP
    >>> truth.readout["present"]                                         # doctest: +SKIP
    """
    if not hasattr(retina, "respond"):
        raise TypeError(f"retina must have a respond(stimulus) method, got {type(retina).__name__}")
    size = check_int(getattr(retina, "size", 50), "retina.size", 1)
    history = check_int(getattr(retina, "history", 40), "retina.history", 1) if history is None else history
    if is_int(getattr(retina, "n_cells", None)):   # a synthetic retina: its cells checked before any response
        check_cells(cell, retina.n_cells, "the ground truth has")
    respond = retina.respond
    if progress is not None:
        takes_progress = "progress" in inspect.signature(retina.respond).parameters
        done = [0]

        def reporting(stimulus):
            # the protocol asks for an unknown number of responses: each one fills half of what is left
            stop = done[0] + (100 - done[0]) // 2
            each = within(progress, done[0], stop, 100)
            out = retina.respond(stimulus, progress=each) if takes_progress else retina.respond(stimulus)
            report(progress, stop, 100)
            done[0] = stop
            return out

        respond = reporting

        report(progress, 0, 100)
    result = run_response(get(name), respond, size=size, history=history, cell=cell, **params)
    report(progress, 100, 100)
    return result


def run_function(name: str, respond: Callable, size: int = 50, history: int = 40, cell: Cells = 0,
                 **params: Any) -> ExperimentResult:
    """Run experiment ``name`` on any response function ``stimulus -> (T,) or (T, n_cells)``.

    ``respond`` must answer one row of real numbers per stimulus frame, finite
    from frame ``history - 1`` on (NaN before it, as the model's own rates
    have) and within float32; anything else is a TypeError or ValueError that
    names ``respond`` (see :func:`napari_retina.experiments.base.check_response`).
    The stimulus is built for a ``size`` × ``size`` field and sized for ``history``
    frames; ``cell`` picks the column(s) summed from a (T, n_cells) answer.

    Returns
    -------
    ExperimentResult
        As :func:`run_truth`'s: ``readout``, ``rates`` (T, n_cells; (T, 1) for a
        (T,) answer), ``stimulus``, ``conditions``, ``params`` and ``cells``;
        ``attribution`` and ``reduction`` None.

    Example
    -------
    >>> run_function("osr", lambda s: 1.0 - s.mean(axis=(1, 2)), periods=[5, 9]).rates.shape
    (326, 1)
    """
    return run_response(get(name), respond, size=size, history=history, cell=cell, **params)
