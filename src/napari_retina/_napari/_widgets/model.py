"""The Model dock widget: choose the model (shipped default or a checkpoint), the device, or train one."""

from __future__ import annotations

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton

from ..._device import available_devices, resolve_device
from ..._predict import model_on
from ..._subprocess import call_in_subprocess
from ..._units import FRAME_MS
from ...checkpoint import load_model
from ...formats import describe
from ...model import RetinaCNN
from ...training import train
from .._session import session
from .._tasks import Task, notify, one_sentence
from ._common import parameter_widget

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The device choices (``nr.load_model(device=...)``); one that is not here is refused with a notification."""


def model_summary(model: RetinaCNN, source: str) -> str:
    """Cells, architecture, held-out scores and provenance in a few lines."""
    cfg = model.config
    lines = [f"{describe(model)}: {source}",
             f"{cfg.n_cells} cells ({', '.join(cfg.cell_names)}); history {cfg.history} frames "
             f"({cfg.history * FRAME_MS:g} ms), {cfg.size}×{cfg.size} px, "
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
        self.path = FileEdit(label="checkpoint", mode="r", filter="*.pt *.pth *.p *.h5 *.hdf5")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.load_button = PushButton(text="Load model")
        self.summary = Label(value="(no model loaded yet; the shipped default is used)")
        self.summary.native.setWordWrap(True)
        self.dataset = FileEdit(label="dataset (HDF5)", mode="r", filter="*.h5 *.hdf5")
        self.epochs = parameter_widget(train, "epochs", min=1, max=10000)
        self.train_button = PushButton(text="Train")
        self.task = Task("training")
        self.extend([self.source, self.path, self.device, self.load_button, self.summary,
                     Label(value="— train from a dataset —"), self.dataset, self.epochs, self.train_button,
                     *self.task.widgets])
        self.load_button.changed.connect(lambda *_: self.load())
        self.device.changed.connect(self._device_changed)
        self.train_button.changed.connect(lambda *_: self.train())
        self.session.model_changed.connect(self._show)
        self._device_ok = "auto"

    def _show(self, model: RetinaCNN) -> None:
        self.summary.value = model_summary(model, self.session.source)

    def _device_changed(self, value: str) -> None:
        try:
            resolve_device(value)
        except ValueError:
            notify("error", f"Device '{value}' is not available here; available: "
                            f"{', '.join(available_devices())}.")
            self.device.value = self._device_ok  # back to what works
            return
        self._device_ok = value
        self.session.device = value
        if self.session.has_model():
            try:
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
            model = load_model(path, device=self.device.value)
        except Exception as exc:
            notify("error", f"Could not load the model: {one_sentence(exc)}")
            return None
        self.session.set_model(model, str(path) if use_file else "shipped default")
        return model

    def train(self) -> bool:
        """Train a model on the chosen dataset in a child process (live progress, cancel)."""
        path = Path(self.dataset.value)
        if not path.is_file():
            notify("error", f"No dataset file at '{path}'; choose an HDF5 file in the lab layout.")
            return False
        epochs, device = int(self.epochs.value), self.device.value

        def job(task: Task) -> RetinaCNN:
            # in a child process: a torch optimiser imports triton (CUDA builds of torch), which
            # crashes a process that shows a viewer (see napari_retina._subprocess)
            return call_in_subprocess(train, str(path), epochs=epochs, device=device,
                                      progress=task.progress_callback("batch"))

        def done(model: RetinaCNN) -> None:
            self.session.set_model(model, f"trained on {path.name}")
            notify("info", f"Training finished; the new model is in use ({path.name}).")

        return self.task.start(job, done)
