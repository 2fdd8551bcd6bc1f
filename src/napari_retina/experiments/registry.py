"""The registry of experiments: names, parameters, and running one on a model, a retina or any function.

Each registered module (one per phenomenon) defines ``NAME``, ``DEFAULTS``,
``build`` and ``readout`` (see :mod:`.base`). This module sits below the
battery (which runs every registered experiment) and is re-exported by the
package: ``nr.experiments.run`` is :func:`run`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Optional

import numpy as np

from .._progress import Progress
from . import anticipation, doubling, latency, osr, reversal
from .base import ExperimentResult, run_model, run_response

_REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (osr, latency, anticipation, reversal, doubling)}


def names() -> list[str]:
    """Names of the registered experiments, in battery order."""
    return list(_REGISTRY)


def get(name: str) -> ModuleType:
    """The module of experiment ``name`` (with ``build``, ``readout``, ``DEFAULTS``)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def parameters(name: str) -> dict:
    """Parameters of experiment ``name`` and their defaults (None: derived from the model)."""
    p = dict(get(name).DEFAULTS)
    p.update({"gap": None, "window": None, "max_frames": 300})
    return p


def run(name: str, model, cell=0, *, explain: float = 0.9, steps: Optional[int] = None,
        progress: Optional[Progress] = None, **params) -> ExperimentResult:
    """Run experiment ``name`` on ``model``: stimulus, rates, attribution, reduction, readout.

    Parameters
    ----------
    name : str
        One of :func:`names`.
    model : RetinaCNN
        E.g. ``nr.load_model()``; stimuli are built for its size and history.
    cell : int, list of int or "all"
        Cell(s) whose summed rate is analysed.
    explain : float in (0, 1]
        Passed to :func:`napari_retina.reduce`.
    steps : int, optional
        Integrated-gradients steps (default: ``nr.attribute``'s).
    progress : callable, optional
        ``progress(done, 3)`` after the rates, the attribution and the reduction.
    **params
        The experiment's parameters (see :func:`parameters` and its module);
        ``gap`` (grey frames between conditions, ≥ history), ``window``
        (response frames after an event) and ``max_frames`` (most frames
        attributed) are common to all.

    Returns
    -------
    ExperimentResult

    Example
    -------
    >>> res = run("latency", nr.load_model(), intensities=[-2, -5, -10])   # doctest: +SKIP
    >>> res.readout["spearman"]                                             # doctest: +SKIP
    """
    return run_model(get(name), model, cell, explain=explain, steps=steps, progress=progress, **params)


def readout(name: str, response, conditions: list) -> dict:
    """Experiment ``name``'s readout of any (T,) response for the given conditions."""
    return get(name).readout(np.asarray(response, dtype=np.float64), conditions)


def run_truth(name: str, retina, cell=0, **params) -> ExperimentResult:
    """Run experiment ``name`` on a ground-truth retina (``retina.respond(stimulus) -> (T, n_cells)``).

    The stimulus is built for ``retina.size`` (default 50) and sized as for a
    40-frame model (``retina.history`` when it has one), so it matches the
    model run. ``attribution`` and ``reduction`` are None.

    Example
    -------
    >>> truth = run_truth("osr", nr.synthetic.Retina(seed=0), cell=0)   # doctest: +SKIP
    >>> truth.readout["present"]                                         # doctest: +SKIP
    """
    if not hasattr(retina, "respond"):
        raise TypeError(f"retina must have a respond(stimulus) method, got {type(retina).__name__}")
    size = int(getattr(retina, "size", 50))
    history = int(getattr(retina, "history", 40))
    return run_response(get(name), retina.respond, size=size, history=history, cell=cell, **params)


def run_function(name: str, respond: Callable, size: int = 50, history: int = 40, cell=0,
                 **params) -> ExperimentResult:
    """Run experiment ``name`` on any response function ``stimulus -> (T,) or (T, n_cells)``."""
    return run_response(get(name), respond, size=size, history=history, cell=cell, **params)
