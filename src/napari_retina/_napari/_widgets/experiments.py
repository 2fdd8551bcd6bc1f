"""The Experiments dock widget: run the in-silico experiments, show their readouts, add a result's layers.

The last run of each experiment in this viewer stays listed (the list is
rebuilt from ``results``, so napari refreshing its choices on layer changes
keeps it; a run of the same experiment on another cell replaces it, and the
overview says which cell each result is of); the results are all of the
current model: when the model changes they are cleared (the status line says
so), and a run that ends after the model changed is dropped; the table shows the chosen
experiment's readout, one row per key; each result's layers are placed below
the layers already shown, never on top.
"""

from __future__ import annotations

from typing import Optional

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, Table

from ... import experiments
from ...attribution import MAX_STEPS
from .._session import session
from .._tasks import Task, notify, one_sentence
from ... import viewer as nr_viewer
from ._common import TERMS, PARAMETER_HELP, parameter_widget, rich_label, tabify_when_docked, term_link

TABLE_HEIGHT = 260
"""Minimum height (px) of the readout table, so its rows are readable."""
GAP = 0.1
"""Blank space between stacked results, as a fraction of the new result's height."""


SHOWN_ITEMS = 6
"""A list readout shows this many values in its table cell; its tooltip shows them all."""


def _cell(value, limit: Optional[int] = SHOWN_ITEMS) -> str:
    """A readout value as text: 4 significant digits, lists of more than ``limit`` values shortened (None: all)."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [_cell(v, limit) for v in list(np.asarray(value, dtype=object).ravel())]
        if limit is None or len(items) <= limit:
            return "[" + ", ".join(items) + "]"
        return "[" + ", ".join(items[:limit]) + f", … ({len(items)} values)]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v, limit)}" for k, v in value.items())
    return str(value)


def _full(value) -> str:
    """A readout value in full, for its cell's tooltip: every value, and a dict one key per line."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_cell(v, None)}" for k, v in value.items())
    return _cell(value, None)


def _keys(readout: dict) -> list:
    """The readout's keys in table order: ``present`` first."""
    return (["present"] if "present" in readout else []) + [k for k in readout if k != "present"]


def readout_table(result) -> dict:
    """One experiment's readout as table columns ``readout`` and ``value``: ``present`` first, one row per key."""
    keys = _keys(result.readout)
    return {"readout": keys, "value": [_cell(result.readout[k]) for k in keys]}


def readout_tooltips(result) -> list[str]:
    """Each row's full value (:func:`_full`), in :func:`readout_table`'s order."""
    return [_full(result.readout[k]) for k in _keys(result.readout)]


def terms_text(result) -> str:
    """Links to the definitions of the readout keys of ``result`` that docs/EXPERIMENTS.md defines (rich text)."""
    keys = [k for k in result.readout if k in TERMS]
    return ("what the readouts mean: " + " · ".join(term_link(k) for k in keys)) if keys else ""


def _cells(result) -> str:
    """``"cell 1"`` (``"cells 0, 2"``): the cell(s) a result analysed, or "" when it does not say."""
    cells = list(getattr(result, "cells", None) or [])
    return f"cell{'s' if len(cells) > 1 else ''} {', '.join(str(c) for c in cells)}" if cells else ""


def overview_text(results: dict) -> str:
    """One line per experiment run: its cell, present or not, and its reduced circuit's explained variance
    (rich text)."""
    lines = []
    for name, res in results.items():
        ro = res.readout
        cells = f" ({_cells(res)})" if _cells(res) else ""
        line = f"<b>{name}</b>{cells}: {term_link('present')} {_cell(bool(ro.get('present')))}"
        if "explained_variance" in ro:
            line += f", {term_link('explained variance', 'EV')} {_cell(ro['explained_variance'])}"
        lines.append(line)
    return "<br>".join(lines)


def stack_below(viewer, layers: list) -> None:
    """Move ``layers`` (just added) below every other layer of ``viewer``, so results do not overlap.

    The shift is along y (world units), applied to each layer's translate.
    """
    others = [layer for layer in viewer.layers if layer not in layers and layer.visible]
    if not others or not layers:
        return
    bottom = max(float(np.asarray(layer.extent.world)[1, -2]) for layer in others)
    ext = np.array([np.asarray(layer.extent.world)[:, -2] for layer in layers], float)
    top, height = float(ext[:, 0].min()), float(ext[:, 1].max() - ext[:, 0].min())
    shift = bottom - top + GAP * height
    if shift <= 0:
        return
    for layer in layers:
        translate = np.array(layer.translate, float)
        translate[-2] += shift
        layer.translate = translate


class ExperimentsWidget(Container):
    """Run the in-silico experiments on the current model; show readouts; add a result's layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        names = list(experiments.names())
        self.experiment = ComboBox(label="experiment", choices=names, value=names[0],
                                   tooltip=PARAMETER_HELP["experiment"][1])
        self.cell = parameter_widget(experiments.run, "cell", annotation=int, min=0, max=999)
        self.steps = parameter_widget(experiments.run, "steps", value=0, annotation=int, min=0, max=MAX_STEPS)
        self.run_button = PushButton(text="Run", tooltip="Run the chosen experiment on the current model.")
        self.run_all_button = PushButton(text="Run all", tooltip="Run every experiment, one after the other.")
        self.task = Task("experiment run")
        self.results: dict = {}
        self.results_model = None
        """The model that ``results`` are of (None while there are none)."""
        self.overview = rich_label("")
        self.result_choice = ComboBox(label="result", choices=lambda _w: list(self.results),
                                      tooltip="The experiment whose readout the table shows and whose layers "
                                              "'Add layers of result' adds.")
        self.table = Table(value={"readout": [], "value": []})
        self.table.native.setMinimumHeight(TABLE_HEIGHT)
        self.table.native.horizontalHeader().setStretchLastSection(True)
        self.terms = rich_label("")
        self.add_button = PushButton(text="Add layers of result",
                                     tooltip="Add the chosen result's stimulus, maps and traces below the layers "
                                             "already shown.")
        self.extend([self.experiment, self.cell, self.steps, self.run_button, self.run_all_button,
                     *self.task.widgets, self.overview, self.result_choice, self.table, self.terms,
                     self.add_button])
        self.run_button.changed.connect(lambda *_: self.run([self.experiment.value]))
        self.run_all_button.changed.connect(lambda *_: self.run(list(experiments.names())))
        self.add_button.changed.connect(lambda *_: self.add_layers())
        self.result_choice.changed.connect(self._show_table)
        self.session.model_changed.connect(self._model_changed)
        if self.session.has_model():
            self._model_changed(self.session.model)
        tabify_when_docked(self)

    def _model_changed(self, model) -> None:
        self.cell.max = model.config.n_cells - 1
        if self.results and model is not self.results_model:
            self.clear_results()
            self.task.status.value = "The model changed: the results of the previous model were cleared."

    def clear_results(self) -> None:
        """Forget every result (the overview, the result list and the table empty); layers already added stay."""
        self.results, self.results_model = {}, None
        self.overview.value = ""
        self.result_choice.reset_choices()
        self.table.value = {"readout": [], "value": []}
        self.terms.value = ""

    def run(self, names: list) -> bool:
        """Run the named experiments in a worker; results fill the table."""
        names = [n for n in names if n]
        if not names:
            notify("warning", "Choose an experiment first.")
            return False
        try:
            model = self.session.model
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return False
        cell, steps = int(self.cell.value), int(self.steps.value) or None  # 0: nr.attribute's tol
        if cell >= model.config.n_cells:
            notify("error", f"Cell {cell} does not exist; the model has cells 0–{model.config.n_cells - 1}.")
            return False

        def job(task: Task) -> tuple[dict, dict]:
            out, failed = {}, {}
            cb = task.progress_callback("experiments")
            n = len(names)
            for i, name in enumerate(names):
                def each(done, total, i=i):
                    cb(i * max(total, 1) + done, n * max(total, 1))

                try:
                    out[name] = experiments.run(name, model, cell=cell, steps=steps, progress=each)
                except (ValueError, TypeError, RuntimeError, MemoryError) as exc:
                    if len(names) == 1:
                        raise
                    failed[name] = one_sentence(exc)   # Run all: the others go on, their results are kept
            if not out:
                raise ValueError(f"every experiment failed; {next(iter(failed))}: {next(iter(failed.values()))}")
            return out, failed

        return self.task.start(job, lambda done: self._show(*done, model=model))

    def _show(self, results: dict, failed: Optional[dict] = None, model=None) -> None:
        if model is not None and model is not self.session.model:
            self.task.status.value = "The model changed during the run: its results were dropped."
            notify("warning", "The model changed during the experiment run, so its results, "
                              "of the previous model, were dropped.")
            return
        if model is not None and model is not self.results_model:
            self.clear_results()
            self.results_model = model
        self.results.update(results)
        self.overview.value = overview_text(self.results)
        self.result_choice.reset_choices()
        self.result_choice.value = list(results)[-1]
        self._show_table()
        self.task.status.value = f"{len(results)} experiment(s) done"
        if failed:
            said = "; ".join(f"{name}: {why}" for name, why in failed.items())
            self.task.status.value += f", {len(failed)} failed ({', '.join(failed)})"
            notify("warning", f"{len(failed)} experiment(s) failed, the others' results are shown: {said}")

    def _show_table(self, *_) -> None:
        name = self.result_choice.value
        if name in self.results:
            self.table.value = readout_table(self.results[name])
            for row, text in enumerate(readout_tooltips(self.results[name])):
                item = self.table.native.item(row, 1)
                if item is not None:
                    item.setToolTip(text)
            self.table.native.resizeColumnsToContents()
            self.terms.value = terms_text(self.results[name])

    def add_layers(self) -> list:
        """Add the chosen result's stimulus, maps and traces below the layers already shown."""
        name = self.result_choice.value
        if name not in self.results:
            notify("warning", "Run an experiment first.")
            return []
        try:
            layers = nr_viewer.show(self.results[name], self.viewer, replace=False)  # the scripting API's path
        except Exception as exc:
            notify("error", f"Could not add the layers of '{name}': {one_sentence(exc)}")
            return []
        stack_below(self.viewer, layers)
        return layers
