"""The Stimulus dock widget: generate a stimulus, or give an existing layer the physical scale."""

from __future__ import annotations

import inspect
from typing import Optional

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, create_widget

from ... import stimuli
from .._sample_data import generate
from .._tasks import notify, one_sentence
from ._common import layer_picker, parameter_widget, set_physical_scale, scroll_contents, tabify_when_docked

GENERATORS = ("flash_train", "white_noise", "contrast_switching", "naturalistic", "flash", "step", "moving_bar",
              "flashed_bar", "reversing_bar", "reversing_grating")
"""The ``nr.stimuli`` generators offered, in menu order."""
_SIMPLE = (int, float, bool, str)
_INT_RANGE = {"min": -10**6, "max": 10**7}
_FLOAT_RANGE = {"min": -1e6, "max": 1e6, "step": 0.01}


def generator_parameters(fn) -> list[str]:
    """The parameters of generator ``fn`` the widget shows: those with an int, float, bool or str default."""
    return [name for name, p in inspect.signature(fn).parameters.items()
            if name != "return_events" and type(p.default) in _SIMPLE]


class StimulusWidget(Container):
    """Generate a stimulus with ``nr.stimuli`` (or give an existing layer physical scale).

    The new layer is (T, 50, 50) at (10 ms, 55 µm, 55 µm) with the generator
    and its parameters in ``metadata``; each generator's parameters appear
    with its defaults.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.generator = ComboBox(label="stimulus", choices=list(GENERATORS), value=GENERATORS[0],
                                  tooltip="The nr.stimuli generator; its parameters appear below with their "
                                          "defaults (frames are 10 ms, pixels 55 µm, values in contrast units).")
        self.params = Container(labels=True)
        self.name = create_widget(value="", annotation=str, label="layer name",
                                  options={"tooltip": "Name of the new layer (default: the generator's name)."})
        self.generate_button = PushButton(text="Generate", tooltip="Add the stimulus as a new image layer.")
        self.existing = layer_picker(viewer, label="or existing layer")
        self.existing.tooltip = "An image layer opened another way (napari's own reader: 1 px per frame)."
        self.scale_button = PushButton(text="Set physical scale (10 ms, 55 µm, 55 µm)",
                                       tooltip="Give the chosen layer the stimulus scale, units and axis labels, "
                                               "so result layers line up with it.")
        self.extend([self.generator, self.params, self.name, self.generate_button,
                     Label(value="—"), self.existing, self.scale_button])
        self.generator.changed.connect(self._build_params)
        self.generate_button.changed.connect(lambda *_: self.generate())
        self.scale_button.changed.connect(lambda *_: self.set_scale())
        self._build_params()
        self.scroll_area = scroll_contents(self)   # a dock a few lines tall on a laptop's screen
        tabify_when_docked(self)

    def _build_params(self, *_) -> None:
        self.params.clear()
        fn = getattr(stimuli, self.generator.value)
        for name in generator_parameters(fn):
            kind = type(inspect.signature(fn).parameters[name].default)
            ranges = _INT_RANGE if kind is int else _FLOAT_RANGE if kind is float else {}
            self.params.append(parameter_widget(fn, name, **ranges))

    def parameters(self) -> dict:
        """The chosen generator's parameters as shown in the widget."""
        return {w.name: w.value for w in self.params}

    def generate(self) -> Optional[napari.layers.Image]:
        """Add the chosen stimulus as a new layer (a notification on bad parameters)."""
        gen = self.generator.value
        name = self.name.value.strip() or gen.replace("_", " ")
        try:
            data, kwargs, _ = generate(gen, name, **self.parameters())
        except (ValueError, TypeError, MemoryError) as exc:  # MemoryError: frames or size far too large
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
        set_physical_scale(layer)
