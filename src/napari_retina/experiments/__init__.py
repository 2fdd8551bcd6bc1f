"""In-silico retinal experiments (METHOD.md §4): one module per phenomenon plus this registry.

Each experiment builds its stimulus (all conditions in one movie, separated by
grey), runs the model, attributes the chosen cell's response to first-layer
units with the stimulus' invariance (full-field → "space", bars → "y"),
reduces the model, and reads the phenomenon out of the response.

=============  =============================================================
name           phenomenon (module)
=============  =============================================================
osr            omitted stimulus response (:mod:`.osr`)
latency        latency coding with flash strength (:mod:`.latency`)
anticipation   motion anticipation, moving vs flashed bars (:mod:`.anticipation`)
reversal       motion reversal burst (:mod:`.reversal`)
doubling       frequency doubling, F2/F1 of a reversing grating (:mod:`.doubling`)
=============  =============================================================

Readout keys are documented in each module's docstring; every readout has
``present`` (bool). Readouts are pure functions of a (T,) response and the
conditions' event frames, so the same code scores the model, its reduced
circuit and the ground-truth retina (:func:`run_truth`).

Layout (every import points down): the phenomenon modules use :mod:`.base`;
:mod:`.registry` lists them and runs one (:func:`run`, :func:`run_truth`,
:func:`run_function`); :mod:`.recovery` scores a model's first layer against the
ground truth's pathways (:func:`recovery_report`); :mod:`.battery` runs them all
against the ground truth (:func:`battery`, :func:`phenomena`). This package
imports ``napari_retina.synthetic``; the synthetic retina never imports it.

Example
-------
>>> import napari_retina as nr
>>> nr.experiments.names()
['osr', 'latency', 'anticipation', 'reversal', 'doubling']
>>> res = nr.experiments.run("osr", nr.load_model(), cell=0)        # doctest: +SKIP
>>> res.readout["latency_ms"], res.readout["present"]               # doctest: +SKIP
>>> res.reduction.explained_variance                                # doctest: +SKIP
"""

from __future__ import annotations

from .base import ExperimentResult, Protocol
from .battery import PHENOMENA, battery, format_table, phenomena
from .recovery import channel_filters, channel_labels, recovery_report
from .registry import get, names, nan_reason, parameters, readout, readout_units, run, run_function, run_truth

__all__ = ["names", "get", "parameters", "readout_units", "nan_reason", "run", "run_truth", "run_function",
           "readout", "battery",
           "format_table", "phenomena", "PHENOMENA", "recovery_report", "channel_filters", "channel_labels",
           "ExperimentResult", "Protocol"]
