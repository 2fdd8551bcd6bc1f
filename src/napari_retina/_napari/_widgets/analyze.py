"""The Analyze dock widget: attribute and reduce on a stimulus layer in a worker; add the result layers.

The computation is :func:`napari_retina.analysis.run_analysis` (lazy maps for
long movies, the out-of-memory retry); the widget gathers its parameters,
runs it through :class:`.._tasks.Task` and adds the layers with
:func:`.._viewer.add_analysis`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton

from ...analysis import Analysis, run_analysis
from ...attribution import DEFAULT_TOL, MAX_STEPS, MIN_TOL, attribute
from ...model import RetinaCNN
from ..._validate import StimulusUnitsWarning, warn_if_not_contrast
from ...reduction import reduce
from .._session import session
from .._tasks import Task, notify, one_sentence
from .._viewer import add_analysis
from ._common import layer_picker, parameter_widget

CROPS = ("none", "center")
"""The crops offered (``nr.attribute(crop=...)``): the whole layer, or its centre."""


def check_stimulus_layer(layer, model: RetinaCNN, crop: str) -> np.ndarray:
    """The layer's data as a (T, H, W) stack the model accepts, or a one-sentence ValueError."""
    if layer is None:
        raise ValueError("Choose a stimulus layer first (open a stack or generate one in the Stimulus widget).")
    cfg = model.config
    if getattr(layer, "rgb", False):
        raise ValueError(f"Layer '{layer.name}' is RGB; the model needs a greyscale (T, y, x) stack.")
    if layer.ndim != 3:
        raise ValueError(f"Layer '{layer.name}' is {layer.ndim}-D; the model needs a (T, y, x) stack.")
    T, H, W = layer.data.shape
    if H < cfg.size or W < cfg.size:
        raise ValueError(f"Layer '{layer.name}' is {H}×{W} pixels, smaller than the model's "
                         f"{cfg.size}×{cfg.size} input.")
    if (H, W) != (cfg.size, cfg.size) and crop == "none":
        raise ValueError(f"Layer '{layer.name}' is {H}×{W} pixels but the model takes {cfg.size}×{cfg.size}; "
                         "choose crop 'center'.")
    if T < cfg.history:
        raise ValueError(f"Layer '{layer.name}' has {T} frames but the model needs at least {cfg.history}.")
    return layer.data


def summary_text(analysis: Analysis) -> str:
    """The result line: completeness error and, with a reduction, what the reduced circuit explains."""
    attr, red = analysis.attribution, analysis.reduction
    text = f"completeness error {attr.completeness_error:.2e}"
    if red is not None:
        text += (f"; reduced circuit explains {red.explained_variance:.1%} of the variance with "
                 f"{', '.join(red.label(c) for c in red.kept)}")
    return text


def warn_units(stimulus: np.ndarray, model: RetinaCNN, name: str) -> None:
    """A warning notification when a float stack is far from contrast units (the core's rule and sentence)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StimulusUnitsWarning)
        warn_if_not_contrast(stimulus, model.config.norm, f"the layer '{name}'")
    for w in caught:
        if issubclass(w.category, StimulusUnitsWarning):
            notify("warning", str(w.message).replace("pass normalize='zscore' (command line: --normalize)",
                                                     "tick 'normalize (z-score)'"))


class AnalyzeWidget(Container):
    """Predict, attribute and reduce on a stimulus layer, in a worker; add the result layers.

    ``analysis`` holds the last :class:`~napari_retina.analysis.Analysis` (None before the first).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.layer = layer_picker(viewer)
        self.cell = parameter_widget(attribute, "cell", annotation=int, min=0, max=999)
        self.tol = parameter_widget(attribute, "tol", value=DEFAULT_TOL, annotation=float, min=MIN_TOL, max=0.5,
                                    step=MIN_TOL, tooltip="accuracy: each frame's quadrature is refined until the "
                                    "completeness error and the maps' estimated error are within it")
        self.steps = parameter_widget(attribute, "steps", value=0, annotation=int, min=0, max=MAX_STEPS,
                                      label="steps (0: by tol)",
                                      tooltip="a fixed number of quadrature steps instead of tol; 0 refines by tol")
        self.steps.changed.connect(lambda value: setattr(self.tol, "enabled", value == 0))
        self.invariance = parameter_widget(attribute, "invariance")
        self.crop = ComboBox(label="crop", choices=list(CROPS), value="none")
        self.normalize = CheckBox(label="normalize (z-score)", value=False,
                                  tooltip="z-score a float stack by its own mean and std before the model sees it: "
                                          "for raw intensities (0–255, say) that are not in contrast units. "
                                          "Integer stacks are normalised anyway.")
        self.do_reduce = CheckBox(label="reduce", value=True)
        self.explain = parameter_widget(reduce, "explain", min=0.01, max=1.0, step=0.05)
        self.run_button = PushButton(text="Analyze")
        self.task = Task("analysis")
        self.result_label = Label(value="")
        self.result_label.native.setWordWrap(True)
        self.task.status.native.setWordWrap(True)  # the status says which maps were computed and why
        self.save_path = FileEdit(label="save to", mode="w", filter="*.h5 *.hdf5 *.csv")
        self.save_button = PushButton(text="Save analysis (.h5) / traces (.csv)")
        self.extend([self.layer, self.cell, self.tol, self.steps, self.invariance, self.crop, self.normalize,
                     self.do_reduce, self.explain,
                     self.run_button, *self.task.widgets, self.result_label, self.save_path, self.save_button])
        self.run_button.changed.connect(lambda *_: self.run())
        self.save_button.changed.connect(lambda *_: self.save(Path(self.save_path.value)))
        self.session.model_changed.connect(self._model_changed)
        self.analysis: Optional[Analysis] = None
        self.added_layers: list = []

    def _model_changed(self, model: RetinaCNN) -> None:
        self.cell.max = model.config.n_cells - 1

    def parameters(self) -> dict:
        """The parameters of :func:`~napari_retina.analysis.run_analysis` as shown in the widget."""
        steps = int(self.steps.value) or None  # 0: refined until tol
        return {"cell": int(self.cell.value), "steps": steps, "tol": None if steps else float(self.tol.value),
                "invariance": self.invariance.value,
                "crop": self.crop.value, "normalize": "zscore" if self.normalize.value else False,
                "reduce": bool(self.do_reduce.value), "explain": float(self.explain.value)}

    def run(self) -> bool:
        """Start an analysis of the chosen layer; returns whether it started."""
        if self.task.running:
            notify("warning", "An analysis is already running; wait for it to finish or cancel it first.")
            return False
        layer = self.layer.value
        try:
            model = self.session.model
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return False
        try:
            data = check_stimulus_layer(layer, model, self.crop.value)
            params = self.parameters()
            if params["cell"] >= model.config.n_cells:
                raise ValueError(f"Cell {params['cell']} does not exist; the model has cells 0–"
                                 f"{model.config.n_cells - 1}.")
        except ValueError as exc:
            notify("error", str(exc))
            return False
        stimulus, source = np.asarray(data), self.session.source
        if not params["normalize"]:
            warn_units(stimulus, model, layer.name)

        def job(task: Task) -> Analysis:
            return run_analysis(model, stimulus, **params, progress=task.progress_callback("attribute"),
                                reduce_progress=task.progress_callback("reduce"), model_source=source,
                                layer=layer.name)

        return self.task.start(job, lambda result: self._add(result, layer))

    def _add(self, result: Analysis, layer) -> None:
        if layer not in self.viewer.layers:
            notify("warning", f"The stimulus layer '{layer.name}' was deleted during the analysis; "
                              "no layers were added.")
            return
        self.added_layers = add_analysis(self.viewer, result.attribution, result.reduction, layer,
                                         maps=result.maps, limit=result.limit)
        self.analysis = result
        self.result_label.value = summary_text(result)
        self.task.status.value = f"analysis done: {result.maps_note}" if result.maps_note else "analysis done"

    def save(self, path: Path) -> Optional[Path]:
        """Write the last analysis to ``.h5``/``.hdf5`` (everything) or ``.csv`` (the traces)."""
        if self.analysis is None:
            notify("warning", "Run an analysis first; there is nothing to save yet.")
            return None
        try:
            return self.analysis.save(path)
        except (ValueError, TypeError, OSError) as exc:
            notify("error", f"Could not save: {one_sentence(exc)}")
            return None
