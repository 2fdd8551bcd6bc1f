"""The Model dock widget: choose the model (shipped default or a checkpoint), the device, or train one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton

from ..._device import available_devices, resolve_device
from ..._wrap import is_wrapped, model_on
from ..._subprocess import call_in_subprocess
from ..._units import FRAME_MS
from ...checkpoint import load_model, save_model
from ...formats import describe
from ...model import RetinaCNN
from ...training import train
from .._session import session
from .._tasks import Task, notify, one_sentence
from ._common import file_choice_problem, parameter_widget, scroll_contents, tabify_when_docked, wrapping

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The device choices (``nr.load_model(device=...)``); one that is not here is refused with a notification."""


SUMMARY_CHARS = 90
"""Longest line of the model summary and its details (characters); longer values are shortened."""


def _short(value, limit: int = SUMMARY_CHARS // 2) -> str:
    """A value as text of at most ``limit`` characters (numbers to 3 digits; long text ends in '…')."""
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        text = "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(map(str, value)) + "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(text: str, limit: int) -> str:
    """``text`` cut from the left to at most ``limit`` characters (a path keeps its file name)."""
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1:]


def describe_model(model) -> str:
    """What the model is, in a few words: a file's format and architecture, or a wrapped module's class,
    input layout and first layer (see :func:`napari_retina.formats.describe`, ``WrappedModel.describe``)."""
    return model.describe() if is_wrapped(model) else describe(model)


SCORE_WORDS = {
    "test_r_true_mean": "r with the true rates, test split",
    "test_r_mean": "r with the recorded rates, test split",
    "heldout_r_mean": "r with one noisy trial, training's held-out tail",
    "heldout_loss": "Poisson loss, training's held-out tail",
    "test_ev_true_mean": "explained variance of the true rates, test split",
    "test_reliability_split_half_mean": "split-half reliability, test split",
}
"""Plain words for the scores ``nr.train``/``nr.evaluate`` record: ``heldout_*`` come from the last 5% of the
training movie (one trial: noisy, so its r is lower), ``test_*`` from the test split (averaged repeats, and the
true rates where the data has them)."""


def score_words(key: str) -> str:
    """``key`` with its plain words (:data:`SCORE_WORDS`), e.g. "r with the true rates, test split
    (test_r_true_mean)"; the key alone when it has none."""
    return f"{SCORE_WORDS[key]} ({key})" if key in SCORE_WORDS else key


def model_summary(model: RetinaCNN, source: str) -> str:
    """What was loaded (format, architecture, source), its cells and input, its held-out score and
    device: three short lines. ``model``: a RetinaCNN or a wrapped module (``nr.wrap``)."""
    cfg = model.config
    scores = model.scores or {}
    numbers = [k for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    key = next((k for k in ("test_r_true_mean", "test_r_mean", "heldout_r_mean") if k in scores),
               numbers[0] if numbers else None)
    score = ("held-out scores: none recorded" if key is None else f"{SCORE_WORDS[key]} {_short(scores[key])}"
             if key in SCORE_WORDS else f"{key} = {_short(scores[key])}")
    what = f"{describe_model(model)}: "
    cells = f"{cfg.n_cells} cells ({_short(', '.join(cfg.cell_names), SUMMARY_CHARS // 2)}); "
    lines = [what + _tail(str(source), max(12, SUMMARY_CHARS - len(what))),
             cells + f"history {cfg.history} frames ({cfg.history * FRAME_MS:g} ms), {cfg.size}×{cfg.size} px",
             f"{score}; on {model.device}"]
    return "\n".join(line if i == 0 else _short(line, SUMMARY_CHARS) for i, line in enumerate(lines))


def model_details(model: RetinaCNN) -> str:
    """The architecture, every held-out score and the provenance, one short line each (values shortened)."""
    cfg = model.config
    layers = (f"first layer {cfg.first_layer!r}: units {tuple(cfg.units)}" if is_wrapped(model)
              else f"channels {cfg.channels}, kernels {cfg.kernels}")
    lines = [f"cells: {_short(', '.join(cfg.cell_names), SUMMARY_CHARS - 7)}", layers]
    lines += [f"{score_words(k)}: {_short(v)}" for k, v in (model.scores or {}).items()]
    lines += [f"{k}: {_short(v)}" for k, v in (model.provenance or {}).items()]
    return "\n".join(_short(line, SUMMARY_CHARS) for line in lines)


CHECKPOINT_KINDS = ("a checkpoint file (.pt, .pth, .p or Keras .h5: nr.save_model's, torch-deep-retina's "
                    "or deep-retina's)")
"""What the checkpoint box takes, as the missing-file message names it (the box's tooltip says it in full)."""


class ModelWidget(Container):
    """Choose the model (shipped default or a checkpoint), the device, or train one."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.source = ComboBox(label="model", choices=["shipped default", "checkpoint file"],
                               value="shipped default",
                               tooltip="The model shipped with the plugin, or a checkpoint file: this project's, "
                                       "or one of the lab formats README 'Your own model' lists.")
        self.path = FileEdit(label="checkpoint", mode="r", filter="*.pt *.pth *.p *.h5 *.hdf5",
                             tooltip="A checkpoint written by nr.save_model (.pt), a torch-deep-retina "
                                     "checkpoint (.pt, .pth, .p) or deep-retina Keras weights (.h5).")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto",
                               tooltip="Where the model runs: 'auto' picks CUDA, then MPS, then the CPU.")
        self.load_button = PushButton(text="Load model", tooltip="Load the chosen model; it replaces the current one.")
        self.summary = wrapping(Label(value="(no model loaded yet; the shipped default is used)"))
        self.show_details = CheckBox(text="details", value=False,
                                     tooltip="Show the architecture, every held-out score and the provenance.")
        self.details = wrapping(Label(value=""))
        self.details.visible = False
        self.dataset = FileEdit(label="dataset (HDF5)", mode="r", filter="*.h5 *.hdf5",
                                tooltip="An HDF5 file in the lab layout (train/test splits of stimulus and "
                                        "responses), e.g. written by napari-retina synth.")
        self.epochs = parameter_widget(train, "epochs", min=1, max=10000)
        self.train_button = PushButton(text="Train", tooltip="Train a new model on the dataset in a child "
                                                                   "process; it replaces the current one when done.")
        self.task = Task("training")
        self.task.close_with_dock(self)  # closing the dock cancels a run
        self.save_path = FileEdit(label="save to (.pt)", mode="w", filter="*.pt",
                                  tooltip="Where Save model writes the model in use (nr.save_model): a trained one "
                                          "is lost with the session otherwise.")
        self.save_button = PushButton(text="Save model (.pt)", tooltip="Write the model in use to the .pt file "
                                                                       "above; Load model reads it back.")
        self.extend([self.source, self.path, self.device, self.load_button, self.summary, self.show_details,
                     self.details,
                     Label(value="— train from a dataset —"), self.dataset, self.epochs, self.train_button,
                     *self.task.widgets, self.save_path, self.save_button])
        self.load_button.changed.connect(lambda *_: self.load())
        self.device.changed.connect(self._device_changed)
        self.train_button.changed.connect(lambda *_: self.train())
        self.save_button.changed.connect(lambda *_: self.save(Path(self.save_path.value)))
        self.show_details.changed.connect(lambda value: setattr(self.details, "visible", bool(value)))
        self.session.model_changed.connect(self._show)
        if self.session.has_model():  # set before this dock opened (a script's use_model, another dock's load)
            self._show(self.session.model)
        self._device_ok = "auto"
        self.scroll_area = scroll_contents(self)   # a dock a few lines tall on a laptop's screen
        tabify_when_docked(self)

    def _show(self, model: RetinaCNN) -> None:
        self.summary.value = model_summary(model, self.session.source)
        self.details.value = model_details(model)

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
        problem = file_choice_problem(path, CHECKPOINT_KINDS) if use_file else None
        if problem:
            notify("error", problem)
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
        problem = file_choice_problem(path, "a dataset file (HDF5 in the lab layout)")
        if problem:
            notify("error", problem)
            return False
        epochs, device = int(self.epochs.value), self.device.value
        warned: list = []   # the child's warnings ("did not improve on the starting model"), said when it is done

        def job(task: Task) -> RetinaCNN:
            # in a child process: a torch optimiser imports triton (CUDA builds of torch), which
            # crashes a process that shows a viewer (see napari_retina._subprocess)
            return call_in_subprocess(train, str(path), epochs=epochs, device=device,
                                      progress=task.progress_callback("batch"), warned=warned)

        def done(model: RetinaCNN) -> None:
            self.session.set_model(model, f"trained on {path.name}")
            said = [message for _, message in warned]
            self.task.status.value = (f"training done: the model in use is trained on {path.name}"
                                      + "".join(f"; warning: {m}" for m in said))
            for message in said:
                notify("warning", f"Training: {message}")
            notify("info", f"Training finished; the new model is in use ({path.name}); Save model keeps it.")

        return self.task.start(job, done)

    def save(self, path: Path) -> Optional[Path]:
        """Write the model in use to ``path`` (.pt, :func:`napari_retina.save_model`); the path, or None and a
        notification saying why not."""
        problem = file_choice_problem(path, "a .pt file to save the model to", must_exist=False)
        if problem:
            notify("error", problem)
            return None
        if not self.session.has_model():
            notify("error", "No model was loaded or trained yet: the shipped default is in the package already.")
            return None
        if is_wrapped(self.session.model):
            notify("error", "The model in use is a wrapped module: save it with torch, by its own code.")
            return None
        try:
            saved = save_model(self.session.model, path)
        except Exception as exc:
            notify("error", f"Could not save the model: {one_sentence(exc)}")
            return None
        self.task.status.value = f"saved the model in use to {saved}"
        notify("info", f"Saved the model in use to {saved}.")
        return saved
