"""File ▸ Open Sample: stimuli ready to analyse with the shipped model.

Each sample is a 50×50 float32 stack in contrast units with at least the
model's 40-frame history, at physical scale (10 ms, 55 µm, 55 µm); the
generator's name, parameters and event times are in the layer's metadata
(``metadata["stimulus"]``, ``metadata["parameters"]``, ``metadata["events"]``).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any

from qtpy.QtCore import QTimer

from .._json import jsonable
from ._layers import stimulus_layer_kwargs

#: sample key -> (layer name, nr.stimuli generator, parameters)
SAMPLES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "omitted_flash_train": ("omitted flash train", "flash_train",
                            {"period": 6, "n_flashes": 8, "omit": True, "intensity": -2.0, "duration": 2}),
    "moving_bar": ("moving bar", "moving_bar", {"speed": 0.08, "start": -30.0, "stop": 30.0, "width": 2.0,
                                                "intensity": -1.0}),
    "reversing_bar": ("reversing bar", "reversing_bar", {"reversal": 0.0, "speed": 0.19, "start": -25.0,
                                                         "width": 2.0, "intensity": -1.0}),
    "white_noise": ("white noise", "white_noise", {"frames": 500, "size": 50, "seed": 0}),
}


def generate(generator: str, name: str, progress=None, **params) -> tuple:
    """Run ``nr.stimuli.<generator>(**params)`` and wrap it as an image layer-data tuple.

    ``progress(done, total)`` goes to a generator that reports it (the long ones: ``white_noise``,
    ``naturalistic``); it may raise to cancel.
    """
    from .. import stimuli

    fn = getattr(stimuli, generator)
    if progress is not None and "progress" in inspect.signature(fn).parameters:
        fn = functools.partial(fn, progress=progress)
    try:
        stim, events = fn(**params, return_events=True)
    except TypeError:  # a generator without events
        stim, events = fn(**params), {}
    meta = {"stimulus": generator, "parameters": dict(params),
            "events": jsonable(dict(events))}
    return (stim, stimulus_layer_kwargs(stim, name=name, metadata=meta), "image")


def sample(key: str) -> list[tuple]:
    """Layer data of the sample ``key`` (one of :data:`SAMPLES`); opened into an empty viewer, it starts at its
    first frame (:func:`start_at_first_frame`)."""
    import napari

    name, generator, params = SAMPLES[key]
    data = generate(generator, name, **params)
    viewer = napari.current_viewer()
    if viewer is not None and len(viewer.layers) == 0:
        start_at_first_frame(viewer, data[0])
    return [data]


def start_at_first_frame(viewer, stack) -> None:
    """Put the time slider at frame 0 as ``stack`` goes into ``viewer`` as a layer. napari puts it mid-movie, on
    frame 76 of the omitted flash train: a dark flash, a black square on a black canvas, as if nothing had
    loaded. Frame 0 is where the movie starts (grey before every sample's stimulus but the noise).

    Done as the layer is inserted (after napari has set the slider's range), so a script that moves the slider
    next keeps its time; the watch ends at the next event-loop pass (the sample went into another viewer than
    napari's current one: that one keeps napari's frame)."""
    ref = weakref.ref(viewer)

    def inserted(event) -> None:
        if event.value.data is stack:
            stop()
            viewer = ref()
            if viewer is not None and viewer.dims.ndim >= 3:
                viewer.dims.set_current_step(viewer.dims.ndim - 3, 0)

    def stop() -> None:
        viewer = ref()
        if viewer is not None:
            viewer.layers.events.inserted.disconnect(inserted)

    viewer.layers.events.inserted.connect(inserted)
    QTimer.singleShot(0, stop)


def omitted_flash_train() -> list[tuple]:
    """Full-field flashes of −2 every 60 ms, eight of them, then one omitted."""
    return sample("omitted_flash_train")


def moving_bar() -> list[tuple]:
    """A dark 2-px bar drifting at 0.08 px/frame (0.44 mm/s) across the field."""
    return sample("moving_bar")


def reversing_bar() -> list[tuple]:
    """A dark bar moving at 0.19 px/frame that reverses at the field centre."""
    return sample("reversing_bar")


def white_noise() -> list[tuple]:
    """500 frames (5 s) of binary checkerboard white noise, seed 0."""
    return sample("white_noise")
