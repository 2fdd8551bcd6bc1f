"""Dock widgets: Stimulus, Model, Analyze, Experiments (Plugins ▸ napari-retina).

Widgets are thin: they gather parameters, run the core call in a worker
thread (see :mod:`._tasks`), and turn its result into layers with the plain
functions of :mod:`._layers`. Bad input and failures become one-sentence
napari notifications; a cancelled or failed run adds no layers.
"""

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any, Optional

import napari
import napari.layers
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    Table,
    create_widget,
)

import napari_retina as nr

from . import _layers, lazy
from ._tasks import Task, is_out_of_memory, notify, one_sentence, session

META = _layers.META
INVARIANCES = ("auto", "none", "x", "y", "space")
DEVICES = ("auto", "cpu", "cuda", "mps")
STIMULUS_GENERATORS = ("flash_train", "white_noise", "naturalistic", "flash", "step", "moving_bar",
                       "flashed_bar", "reversing_bar", "reversing_grating")
MIN_OOM_BATCH = 8


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(f"napari_retina.{name}") is not None


def _image_layers(viewer) -> list:
    """Image layers that can be stimuli (not the plugin's own attribution maps)."""
    return [layer for layer in viewer.layers if isinstance(layer, napari.layers.Image)
            and layer.metadata.get(META, {}).get("role") != "map"]


class _LayerChoice(ComboBox):
    """A combo box of the viewer's image layers, kept up to date."""

    def __init__(self, viewer, label: str = "stimulus layer") -> None:
        self._viewer = viewer
        super().__init__(label=label, choices=self._choices, nullable=True)
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed,
                   viewer.layers.events.reordered):
            ev.connect(self._refresh)
        self._refresh()

    def _choices(self, _widget=None):
        return [(layer.name, layer) for layer in _image_layers(self._viewer)]

    def _refresh(self, *_) -> None:
        current = self.value
        self.reset_choices()
        layers = _image_layers(self._viewer)
        if current in layers:
            self.value = current
        elif layers:
            self.value = layers[-1] if self._viewer.layers.selection.active not in layers \
                else self._viewer.layers.selection.active


# ---------------------------------------------------------------- Stimulus ---

class StimulusWidget(Container):
    """Generate a stimulus with ``nr.stimuli`` (or give an existing layer physical scale).

    The new layer is (T, 50, 50) at (10 ms, 55 µm, 55 µm) with the generator
    and its parameters in ``metadata``.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        names = [n for n in STIMULUS_GENERATORS if hasattr(nr.stimuli, n)]
        self.generator = ComboBox(label="stimulus", choices=names, value=names[0])
        self.params = Container(labels=True)
        self.name = create_widget(value="", annotation=str, label="layer name")
        self.generate_button = PushButton(text="Generate")
        self.existing = _LayerChoice(viewer, label="or existing layer")
        self.scale_button = PushButton(text="Set physical scale (10 ms, 55 µm, 55 µm)")
        self.extend([self.generator, self.params, self.name, self.generate_button,
                     Label(value="—"), self.existing, self.scale_button])
        self.generator.changed.connect(self._build_params)
        self.generate_button.changed.connect(lambda *_: self.generate())
        self.scale_button.changed.connect(lambda *_: self.set_scale())
        self._build_params()

    def _build_params(self, *_) -> None:
        self.params.clear()
        fn = getattr(nr.stimuli, self.generator.value)
        for pname, p in inspect.signature(fn).parameters.items():
            if pname == "return_events" or p.default is inspect.Parameter.empty or p.default is None:
                continue
            kind = type(p.default)
            if kind not in (int, float, bool, str):
                continue
            opts: dict[str, Any] = {}
            if kind is int:
                opts = {"min": -10**6, "max": 10**7}
            elif kind is float:
                opts = {"min": -1e6, "max": 1e6, "step": 0.01}
            w = create_widget(value=p.default, annotation=kind, name=pname, label=pname, options=opts)
            self.params.append(w)

    def parameters(self) -> dict:
        """The chosen generator's parameters as shown in the widget."""
        return {w.name: w.value for w in self.params}

    def generate(self) -> Optional[napari.layers.Image]:
        """Add the chosen stimulus as a new layer (a notification on bad parameters)."""
        from ._sample_data import generate

        gen = self.generator.value
        name = self.name.value.strip() or gen.replace("_", " ")
        try:
            data, kwargs, _ = generate(gen, name, **self.parameters())
        except (ValueError, TypeError) as exc:
            notify("error", f"Cannot generate {gen}: {one_sentence(exc)}")
            return None
        return self.viewer.add_image(data, **kwargs)

    def set_scale(self) -> None:
        """Give the chosen existing layer the stimulus scale, units and axis labels."""
        layer = self.existing.value
        if layer is None:
            notify("warning", "Choose an image layer first.")
            return
        if layer.ndim != 3 or layer.rgb:
            notify("error", f"Layer '{layer.name}' is not a (T, y, x) greyscale stack.")
            return
        layer.scale = _layers.SCALE
        try:
            layer.units = _layers.UNITS
            layer.axis_labels = _layers.AXIS_LABELS
        except Exception:  # older napari without units on layers
            pass
        layer.metadata.setdefault(META, {})["role"] = "stimulus"


# ------------------------------------------------------------------- Model ---

def model_summary(model, source: str) -> str:
    """Cells, architecture, held-out scores and provenance in a few lines."""
    cfg = model.config
    lines = [f"source: {source}",
             f"cells ({cfg.n_cells}): {', '.join(cfg.cell_names)}",
             f"history {cfg.history} frames ({cfg.history * nr.FRAME_MS:g} ms), {cfg.size}×{cfg.size} px, "
             f"channels {cfg.channels}, kernels {cfg.kernels}, device {model.device}"]
    if model.scores:
        lines.append("held-out: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in model.scores.items()
            if not isinstance(v, (list, dict))))
    else:
        lines.append("held-out scores: none recorded")
    prov = model.provenance or {}
    if prov:
        lines.append("provenance: " + ", ".join(f"{k}={v}" for k, v in list(prov.items())[:4]))
    return "\n".join(lines)


class ModelWidget(Container):
    """Choose the model (shipped default or a checkpoint), the device, or train one."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.source = ComboBox(label="model", choices=["shipped default", "checkpoint file"],
                               value="shipped default")
        self.path = FileEdit(label="checkpoint", mode="r", filter="*.pt")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.load_button = PushButton(text="Load model")
        self.summary = Label(value="(no model loaded yet; the shipped default is used)")
        self.summary.native.setWordWrap(True)
        self.dataset = FileEdit(label="dataset (HDF5)", mode="r", filter="*.h5 *.hdf5")
        self.epochs = SpinBox(label="epochs", value=nr.training.DEFAULTS.epochs, min=1, max=10000)
        self.train_button = PushButton(text="Train", enabled=_has_module("training"))
        self.task = Task("training")
        self.extend([self.source, self.path, self.device, self.load_button, self.summary,
                     Label(value="— train from a dataset —"), self.dataset, self.epochs, self.train_button,
                     *self.task.widgets])
        self.load_button.changed.connect(lambda *_: self.load())
        self.device.changed.connect(self._device_changed)
        self.train_button.changed.connect(lambda *_: self.train())
        self.session.model_changed.connect(self._show)
        self._device_ok = "auto"

    def _show(self, model) -> None:
        self.summary.value = model_summary(model, self.session.source)

    def _device_changed(self, value: str) -> None:
        try:
            from .._device import resolve_device

            resolve_device(value)
        except ValueError:
            notify("error", f"Device '{value}' is not available here; available: "
                            f"{', '.join(nr.available_devices())}.")
            self.device.value = self._device_ok  # back to what works
            return
        self._device_ok = value
        self.session.device = value
        if self.session.has_model():
            try:
                from .._predict import model_on

                self.session.set_model(model_on(self.session.model, value), self.session.source)
            except Exception as exc:
                notify("error", f"Could not move the model to {value}: {one_sentence(exc)}")

    def load(self):
        """Load the chosen model; on failure the current model stays and a notification says why."""
        use_file = self.source.value == "checkpoint file"
        path = Path(self.path.value) if use_file else None
        if use_file and (path is None or str(path) in ("", ".") or not path.is_file()):
            notify("error", f"No checkpoint file at '{path}'; choose a .pt file written by nr.save_model.")
            return None
        try:
            model = nr.load_model(path, device=self.device.value)
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return None
        self.session.set_model(model, str(path) if use_file else "shipped default")
        return model

    def train(self) -> bool:
        """Train a model on the chosen dataset in a child process (live progress, cancel)."""
        if not _has_module("training"):
            notify("warning", "Training is not available in this installation.")
            return False
        path = Path(self.dataset.value)
        if not path.is_file():
            notify("error", f"No dataset file at '{path}'; choose an HDF5 file in the lab layout.")
            return False
        epochs, device = int(self.epochs.value), self.device.value

        def job(task: Task):
            # in a child process: a torch optimiser imports triton (CUDA builds of torch), which
            # crashes a process that shows a viewer (see napari_retina._subprocess)
            from .._subprocess import call_in_subprocess
            from ..training import train

            return call_in_subprocess(train, str(path), epochs=epochs, device=device,
                                      progress=task.progress_callback("batch"))

        def done(model) -> None:
            self.session.set_model(model, f"trained on {path.name}")
            notify("info", f"Training finished; the new model is in use ({path.name}).")

        return self.task.start(job, done)


# ----------------------------------------------------------------- Analyze ---

def check_stimulus_layer(layer, model, crop: str) -> np.ndarray:
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


def _oom_retry(call, batch_size=None):
    """Run ``call(batch_size)``; on out-of-memory retry with half the batch down to MIN_OOM_BATCH."""
    try:
        return call(batch_size)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        err = exc
    import torch

    from .._predict import default_batch_size

    bs = default_batch_size(torch.device("cuda")) // 2
    while bs >= MIN_OOM_BATCH:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            return call(bs)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            err = exc
        bs //= 2
    raise err


def run_analysis(model, stimulus, *, cell=0, steps=None, invariance="auto", crop=None, reduce=True,
                 explain=0.9, lazy_threshold=lazy.LAZY_MAP_BYTES, progress=None, reduce_progress=None) -> dict:
    """What the Analyze widget computes (no Qt): attribution, reduction, lazy maps for long movies.

    Short movies: exactly ``nr.attribute(model, stimulus, cell=, steps=,
    invariance=, crop=, progress=)`` then ``nr.reduce(attr, explain=)``. When
    the full maps would exceed ``lazy_threshold`` bytes, the traces are
    attributed in chunks (maps discarded) and ``result["maps"]`` is a lazy
    dask array (see :mod:`.lazy`).
    """
    from .._validate import as_stimulus

    cfg = model.config
    crop_arg = None if crop in (None, "none") else crop
    result: dict = {"maps": None, "limit": None, "lazy": False}
    T = int(np.shape(stimulus)[0])
    big = lazy.map_bytes(model, T, "none") > lazy_threshold
    if big:
        stim = as_stimulus(stimulus, history=cfg.history, size=cfg.size, crop=crop_arg, norm=cfg.norm)
        inv = lazy.resolve_invariance(model, stim, invariance)
        big = lazy.map_bytes(model, T, inv) > lazy_threshold
    if not big:
        attr = _oom_retry(lambda bs: nr.attribute(model, stimulus, cell=cell, steps=steps, invariance=invariance,
                                                  crop=crop_arg, batch_size=bs, progress=progress))
    else:
        attr = _oom_retry(lambda bs: lazy.attribute_traces(model, stim, cell=cell, steps=steps, invariance=inv,
                                                           batch_size=bs, progress=progress))
        maps = lazy.lazy_maps(model, stim, cell=cell, steps=steps, invariance=inv)
        # the shared contrast limit from a block near the strongest response
        peak = int(np.nanargmax(np.abs(attr.response))) if np.isfinite(attr.response).any() else T - 1
        a = max(cfg.history - 1, min(peak - 4, T - 8))
        result.update(maps=maps, limit=_layers.map_limit(np.asarray(maps[a:a + 8])), lazy=True)
    result["attribution"] = attr
    result["reduction"] = None
    if reduce and _has_module("reduction"):
        result["reduction"] = nr.reduce(attr, explain=explain, progress=reduce_progress)
    return result


class AnalyzeWidget(Container):
    """Predict, attribute and reduce on a stimulus layer, in a worker; add the result layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.layer = _LayerChoice(viewer)
        self.cell = SpinBox(label="cell", value=0, min=0, max=999)
        self.steps = SpinBox(label="steps", value=nr.attribution.DEFAULT_STEPS, min=1, max=nr.attribution.MAX_STEPS)
        self.invariance = ComboBox(label="invariance", choices=list(INVARIANCES), value="auto")
        self.crop = ComboBox(label="crop", choices=["none", "center"], value="none")
        self.do_reduce = CheckBox(label="reduce", value=True)
        self.explain = FloatSpinBox(label="explain", value=0.9, min=0.01, max=1.0, step=0.05)
        self.run_button = PushButton(text="Analyze")
        self.task = Task("analysis")
        self.result_label = Label(value="")
        self.result_label.native.setWordWrap(True)
        self.save_path = FileEdit(label="save to", mode="w", filter="*.h5 *.hdf5 *.csv")
        self.save_button = PushButton(text="Save analysis (.h5) / traces (.csv)")
        self.extend([self.layer, self.cell, self.steps, self.invariance, self.crop, self.do_reduce, self.explain,
                     self.run_button, *self.task.widgets, self.result_label, self.save_path, self.save_button])
        self.run_button.changed.connect(lambda *_: self.run())
        self.save_button.changed.connect(lambda *_: self.save(Path(self.save_path.value)))
        self.session.model_changed.connect(self._model_changed)
        self.last: Optional[dict] = None
        self.added_layers: list = []

    def _model_changed(self, model) -> None:
        self.cell.max = model.config.n_cells - 1

    def parameters(self) -> dict:
        return {"cell": int(self.cell.value), "steps": int(self.steps.value), "invariance": self.invariance.value,
                "crop": self.crop.value, "reduce": bool(self.do_reduce.value), "explain": float(self.explain.value)}

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
        stimulus = np.asarray(data)
        p = dict(params)

        def job(task: Task) -> dict:
            return run_analysis(model, stimulus, cell=p["cell"], steps=p["steps"], invariance=p["invariance"],
                                crop=p["crop"], reduce=p["reduce"], explain=p["explain"],
                                progress=task.progress_callback("attribute"),
                                reduce_progress=task.progress_callback("reduce"))

        return self.task.start(job, lambda result: self._add(result, layer, p, model))

    def _add(self, result: dict, layer, params: dict, model) -> None:
        if layer not in self.viewer.layers:
            notify("warning", f"The stimulus layer '{layer.name}' was deleted during the analysis; "
                              "no layers were added.")
            return
        attr, red = result["attribution"], result["reduction"]
        geo = _layers.layer_geometry(layer)
        if params["crop"] == "center":  # the analysed window sits in the middle of the layer
            H, W = geo["shape"][1:]
            size = model.config.size
            y0, x0 = (H - size) // 2, (W - size) // 2
            geo["translate"] = geo["translate"] + np.array([0, y0, x0]) * geo["scale"]
            geo["shape"] = (geo["shape"][0], size, size)
        prefix = f"{layer.name}: "
        data = _layers.analysis_layer_data(attr, red, geo, maps=result["maps"], limit=result["limit"],
                                           prefix=prefix)
        for _, kwargs, _ in data:
            kwargs["metadata"][META]["prefix"] = prefix
        _layers.remove_analysis_layers(self.viewer, prefix)
        added = _layers.add_layer_data(self.viewer, data)
        _layers.connect_time_cursor(self.viewer, added[-1])
        self.viewer.layers.selection.active = layer
        self.added_layers = added
        self.last = {"attribution": attr, "reduction": red, "parameters": params, "layer": layer.name,
                     "model": model, "model_source": self.session.source, "lazy": result["lazy"]}
        text = f"completeness error {attr.completeness_error:.2e}"
        if red is not None:
            text += (f"; reduced circuit explains {red.explained_variance:.1%} of the variance with "
                     f"{', '.join(red.label(c) for c in red.kept)}")
        self.result_label.value = text
        self.task.status.value = "analysis done" + (" (maps computed on demand)" if result["lazy"] else "")

    def save(self, path: Path) -> Optional[Path]:
        """Write the last analysis to ``.h5``/``.hdf5`` (everything) or ``.csv`` (the traces)."""
        if self.last is None:
            notify("warning", "Run an analysis first; there is nothing to save yet.")
            return None
        try:
            if path.suffix.lower() == ".csv":
                return nr.io.write_traces_csv(path, self.last["attribution"], self.last["reduction"])
            if path.suffix.lower() in (".h5", ".hdf5"):
                return nr.io.write_results(path, analysis_results(self.last))
            raise ValueError(f"Save to a .h5/.hdf5 file (everything) or a .csv file (traces), got '{path.name}'.")
        except (ValueError, TypeError, OSError) as exc:
            notify("error", f"Could not save: {one_sentence(exc)}")
            return None


def analysis_results(last: dict) -> dict:
    """The nested dict ``nr.io.write_results`` writes for an analysis (arrays, parameters, provenance)."""
    attr, red, model = last["attribution"], last["reduction"], last["model"]
    out: dict = {
        "parameters": {**{k: v for k, v in last["parameters"].items()}, "stimulus_layer": last["layer"],
                       "frame_ms": nr.FRAME_MS, "pixel_um": nr.PIXEL_UM},
        "attribution": {
            "channels": attr.channels, "response": attr.response, "rates": attr.rates,
            "baseline_rate": float(attr.baseline_rate), "completeness_error": float(attr.completeness_error),
            "cells": np.asarray(attr.cells), "steps": int(attr.steps), "rule": attr.rule,
            "invariance": attr.invariance, "frames": np.asarray(attr.frames), "offset": int(attr.offset),
            "history": int(attr.history),
        },
        "stimulus": attr.stimulus,
        "model": {"source": last["model_source"], "config": json.dumps(model.config.to_dict()),
                  "provenance": json.dumps(model.provenance, default=str),
                  "scores": json.dumps(model.scores, default=str)},
    }
    if attr.maps is not None:
        out["attribution"]["maps"] = attr.maps
    if red is not None:
        out["reduction"] = {
            "kept": np.asarray(red.kept), "labels": json.dumps([red.label(c) for c in range(len(red.importance))]),
            "importance": red.importance, "sign": np.asarray(red.sign), "polarity": json.dumps(list(red.polarity)),
            "latency_ms": np.asarray(red.latency_ms), "kinetics": json.dumps(list(red.kinetics)),
            "traces": red.traces, "reduced_response": red.reduced_response,
            "explained_variance": float(red.explained_variance),
        }
    return out


# ------------------------------------------------------------- Experiments ---

class ExperimentsWidget(Container):
    """Run the in-silico experiments on the current model; show readouts; add a result's layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        names = self._names()
        self.experiment = ComboBox(label="experiment", choices=names, value=names[0] if names else None)
        self.cell = SpinBox(label="cell", value=0, min=0, max=999)
        self.steps = SpinBox(label="steps", value=nr.attribution.DEFAULT_STEPS, min=1, max=nr.attribution.MAX_STEPS)
        self.run_button = PushButton(text="Run", enabled=bool(names))
        self.run_all_button = PushButton(text="Run all", enabled=bool(names))
        self.task = Task("experiment run")
        self.table = Table(value={"experiment": [], "present": []})
        self.result_choice = ComboBox(label="result", choices=[])
        self.add_button = PushButton(text="Add layers of result")
        self.results: dict = {}
        self.extend([self.experiment, self.cell, self.steps, self.run_button, self.run_all_button,
                     *self.task.widgets,
                     self.table, self.result_choice, self.add_button])
        self.run_button.changed.connect(lambda *_: self.run([self.experiment.value]))
        self.run_all_button.changed.connect(lambda *_: self.run(self._names()))
        self.add_button.changed.connect(lambda *_: self.add_layers())
        if not names:
            self.task.status.value = "no experiments available in this installation"

    @staticmethod
    def _names() -> list:
        if not _has_module("experiments"):
            return []
        try:
            return list(nr.experiments.names())
        except Exception:
            return []

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
        cell, steps = int(self.cell.value), int(self.steps.value)
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

                out[name] = nr.experiments.run(name, model, cell=cell, steps=steps, progress=each)
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
            return _layers.add_result_layers(self.viewer, self.results[name])
        except Exception as exc:
            notify("error", f"Could not add the layers of '{name}': {one_sentence(exc)}")
            return []


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
