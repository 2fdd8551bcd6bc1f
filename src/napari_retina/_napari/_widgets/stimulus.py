"""The Stimulus dock widget: generate a stimulus, or give an existing layer the physical scale."""

from __future__ import annotations

import inspect
from typing import Optional

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, create_widget

from ... import stimuli
from .._sample_data import generate
from .._tasks import Task, notify, one_sentence, wrapping
from ._common import layer_picker, parameter_widget, set_physical_scale, scroll_contents, tabify_when_docked

GENERATORS = ("flash_train", "white_noise", "contrast_switching", "naturalistic", "flash", "step", "moving_bar",
              "flashed_bar", "reversing_bar", "reversing_grating")
"""The ``nr.stimuli`` generators offered, in menu order."""
_SIMPLE = (int, float, bool, str)
_INT_RANGE = {"min": -10**6, "max": 10**7}
_FLOAT_RANGE = {"min": -1e6, "max": 1e6, "step": 0.01}
FLOAT_DECIMALS = 6
"""Decimals a float parameter keeps (the arrows still step by 0.01): a bar at 0.004 px/frame, or any value a
generator takes down to 1e-6, can be typed; 2 (magicgui's default for step 0.01) made 0.004 a refused 0."""


def generator_parameters(fn) -> list[str]:
    """The parameters of generator ``fn`` the widget shows: those with an int, float, bool or str default."""
    return [name for name, p in inspect.signature(fn).parameters.items()
            if name != "return_events" and type(p.default) in _SIMPLE]


class _NotEnoughMemory(Exception):
    """A generator's MemoryError as a plain error (the Task reads a MemoryError as an attribution's, with advice
    about chunks and the CPU): the movie is beyond this machine's memory, or beyond what is free now."""


class StimulusWidget(Container):
    """Generate a stimulus with ``nr.stimuli`` (or give an existing layer physical scale).

    The new layer is (T, 50, 50) at (10 ms, 55 µm, 55 µm) with the generator
    and its parameters in ``metadata``; each generator's parameters appear
    with its defaults. Generation runs in the background (:attr:`task`: a
    progress bar, busy for the quick generators that report none, Cancel, a
    status line); the layer is added when it is done.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.generator = ComboBox(label="stimulus", choices=list(GENERATORS), value=GENERATORS[0],
                                  tooltip="The nr.stimuli generator; its parameters appear below with their "
                                          "defaults (frames are 10 ms, pixels 55 µm, values in contrast units).")
        self._params: list = []
        self.name = create_widget(value="", annotation=str, label="layer name",
                                  options={"tooltip": "Name of the new layer (default: the generator's name)."})
        self.generate_button = PushButton(text="Generate", tooltip="Make the stimulus in the background and add it "
                                                                   "as a new image layer; Cancel stops it.")
        self.task = Task("stimulus generation")
        self.task.close_with_dock(self)  # closing the dock cancels a run
        self.last_layer: Optional[napari.layers.Image] = None
        """The layer the last finished generation added (None before one finished)."""
        self.existing = layer_picker(viewer, label="image layer")
        self.existing.tooltip = "An image layer opened another way (napari's own reader: 1 px per frame)."
        self.scale_button = PushButton(text="Set physical scale (10 ms, 55 µm, 55 µm)",
                                       tooltip="Give the chosen layer the stimulus scale, units and axis labels, "
                                               "so result layers line up with it.")
        self.extend([self.generator, self.name, self.generate_button, *self.task.widgets,
                     wrapping(Label(value="or, for a stack opened another way:")), self.existing,
                     self.scale_button])
        self.generator.changed.connect(self._build_params)
        self.generate_button.changed.connect(lambda *_: self.generate())
        self.scale_button.changed.connect(lambda *_: self.set_scale())
        self._build_params()
        self.scroll_area = scroll_contents(self)   # a dock a few lines tall on a laptop's screen
        tabify_when_docked(self)

    @property
    def params(self) -> list:
        """The chosen generator's parameter widgets, in the dock's own label column (a nested container had a
        narrower one, which cut "intensity (contrast)" short at napari's default width)."""
        return list(self._params)

    def _build_params(self, *_) -> None:
        for widget in self._params:
            self.remove(widget)
        self._params = []
        fn = getattr(stimuli, self.generator.value)
        at = self.index(self.generator) + 1
        for name in generator_parameters(fn):
            default = inspect.signature(fn).parameters[name].default
            kind = type(default)
            ranges = _INT_RANGE if kind is int else _FLOAT_RANGE if kind is float else {}
            widget = parameter_widget(fn, name, **ranges)
            if kind is float:
                widget.native.setDecimals(FLOAT_DECIMALS)
                widget.value = default   # made with 2 decimals: the default again, unrounded
            self.insert(at + len(self._params), widget)
            self._params.append(widget)

    def parameters(self) -> dict:
        """The chosen generator's parameters as shown in the widget."""
        return {w.name: w.value for w in self.params}

    def generate(self):
        """Start making the chosen stimulus in the background; its layer is added when it is done.

        Returns the worker (``task.wait()`` waits for it; the layer is then
        :attr:`last_layer`), or None when a generation is already running. Bad
        parameters fail the run at once with the generator's own sentence (its
        checks come before any work), and nothing is added.
        """
        if self.task.refuse_if_busy():
            return None
        gen = self.generator.value
        name = self.name.value.strip() or gen.replace("_", " ")
        params = self.parameters()

        def job(task: Task) -> tuple:
            try:   # the long generators report progress, and Cancel stops them there
                return generate(gen, name, progress=task.progress_callback(f"generating {gen}"), **params)
            except MemoryError as exc:   # the generator's own sentence (a movie beyond this machine), or numpy's
                own = "Unable to allocate" not in str(exc)   # "Unable to allocate ... for an array with shape ..."
                raise _NotEnoughMemory(one_sentence(exc) if own else
                                       f"there is not enough free memory for {gen} with these parameters; close "
                                       "other programs or choose fewer frames or a smaller size") from None

        def added(result: tuple) -> None:
            data, kwargs, _ = result
            self._idle(done=True)
            self.last_layer = self.viewer.add_image(data, **kwargs)
            self.task.status.value = f"added '{self.last_layer.name}' ({len(data):,} frames)"

        if not self.task.start(job, added, on_failure=self._idle):
            return None
        self.progress_busy()
        self.task.status.value = f"generating {gen}..."
        return self.task.worker

    def progress_busy(self) -> None:
        """Show the progress bar as busy until the generator reports progress (the quick ones never do)."""
        self.task.progress.max = 0
        self.task.progress.value = 0

    def _idle(self, done: bool = False) -> None:
        """A still progress bar again: full after a finished run, empty after a failed or cancelled one."""
        self.task.progress.max = 1
        self.task.progress.value = 1 if done else 0

    def set_scale(self) -> None:
        """Give the chosen existing layer the stimulus scale, units and axis labels."""
        layer = self.existing.value
        if layer is None:
            notify("warning", "Choose an image layer first.")
            return
        if layer.ndim != 3 or layer.rgb:
            notify("error", f"Layer '{layer.name}' is not a (T, y, x) greyscale stack.")
            return
        if set_physical_scale(layer, viewer=self.viewer):
            notify("warning", f"'{layer.name}' now has 10 ms frames and 55 µm pixels; the maps and traces drawn over "
                              "it moved with it and still show the result computed at the earlier scale: Analyze "
                              "again for this one.")
