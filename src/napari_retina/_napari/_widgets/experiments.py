"""The Experiments dock widget: run the in-silico experiments, show their readouts, add a result's layers."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, Table

from ... import experiments
from ...attribution import MAX_STEPS
from .._session import session
from .._tasks import Task, notify, one_sentence
from .._viewer import add_result_layers
from ._common import parameter_widget


def readout_table(results: dict) -> dict:
    """Readouts as table columns: one row per experiment, one column per scalar readout key."""
    keys: list = []
    for res in results.values():
        for k, v in res.readout.items():
            if k not in keys and isinstance(v, (bool, int, float, str, np.generic)):
                keys.append(k)
    table: dict = {"experiment": list(results)}
    for k in keys:
        col = []
        for res in results.values():
            v = res.readout.get(k, "")
            col.append(f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v))
        table[k] = col
    return table


class ExperimentsWidget(Container):
    """Run the in-silico experiments on the current model; show readouts; add a result's layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        names = list(experiments.names())
        self.experiment = ComboBox(label="experiment", choices=names, value=names[0])
        self.cell = parameter_widget(experiments.run, "cell", annotation=int, min=0, max=999)
        self.steps = parameter_widget(experiments.run, "steps", value=0, annotation=int, min=0, max=MAX_STEPS,
                                      label="steps (0: by tol)",
                                      tooltip="a fixed number of quadrature steps; 0 refines each frame until "
                                              "nr.attribute's default tol")
        self.run_button = PushButton(text="Run")
        self.run_all_button = PushButton(text="Run all")
        self.task = Task("experiment run")
        self.table = Table(value={"experiment": [], "present": []})
        self.result_choice = ComboBox(label="result", choices=[])
        self.add_button = PushButton(text="Add layers of result")
        self.results: dict = {}
        self.extend([self.experiment, self.cell, self.steps, self.run_button, self.run_all_button,
                     *self.task.widgets, self.table, self.result_choice, self.add_button])
        self.run_button.changed.connect(lambda *_: self.run([self.experiment.value]))
        self.run_all_button.changed.connect(lambda *_: self.run(list(experiments.names())))
        self.add_button.changed.connect(lambda *_: self.add_layers())

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

        def job(task: Task) -> dict:
            out = {}
            cb = task.progress_callback("experiments")
            n = len(names)
            for i, name in enumerate(names):
                def each(done, total, i=i):
                    cb(i * max(total, 1) + done, n * max(total, 1))

                out[name] = experiments.run(name, model, cell=cell, steps=steps, progress=each)
            return out

        return self.task.start(job, self._show)

    def _show(self, results: dict) -> None:
        self.results.update(results)
        self.table.value = readout_table(self.results)
        self.result_choice.choices = list(self.results)
        self.result_choice.value = list(results)[-1]
        self.task.status.value = f"{len(results)} experiment(s) done"

    def add_layers(self) -> list:
        """Add the chosen result's stimulus, maps and traces."""
        name = self.result_choice.value
        if name not in self.results:
            notify("warning", "Run an experiment first.")
            return []
        try:
            return add_result_layers(self.viewer, self.results[name])
        except Exception as exc:
            notify("error", f"Could not add the layers of '{name}': {one_sentence(exc)}")
            return []
