"""napari-retina: make a deep-learning model of the retina explain itself.

Scripting API (see README.md)::

    import napari_retina as nr
    stim = nr.stimuli.white_noise(frames=1000, size=50, seed=0)   # float32 (T, H, W)
    model = nr.load_model()                  # the shipped default model
    rates = nr.predict(model, stim)          # (T, n_cells), NaN for the first history-1 frames
    attr = nr.attribute(model, stim, cell=0) # integrated gradients to conv1 units
    red = nr.reduce(attr)                    # the few units that carry the response

Conventions: 1 frame = 10 ms, 1 pixel = 55 µm, stimuli in contrast units
(0 = mean luminance), outputs aligned to stimulus frames, float32. A stack at
another pixel size or frame interval is resampled to the model's when given
them (``pixel_um=``, ``frame_ms=``; outputs then count the model's frames).

Viewers (needs napari; see docs/SCRIPTING.md)::

    import napari
    viewer = napari.Viewer()
    layers = nr.show(attr, viewer, reduction=red, name="cell 0")   # the layers added: maps and traces
    nr.viewer.screenshot(viewer, "cell0.png", size=(1200, 800))

The core imports numpy and torch only; everything napari lives in
``napari_retina._napari``, and its public face is ``napari_retina.viewer``
(``nr.show``), which only loads on first use: ``import napari_retina`` never
imports napari. Submodules and heavy functions load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from ._units import FRAME_MS, PIXEL_UM  # noqa: E402  (one home: _units.py)

_SUBMODULES = ("stimuli", "io", "synthetic", "experiments", "model", "checkpoint", "first_layer", "attribution",
               "reduction", "training", "analysis", "metrics", "plotting", "formats", "batch", "saved")
_LAZY = {
    "predict": ("_predict", "predict"),
    "load_model": ("checkpoint", "load_model"),
    "save_model": ("checkpoint", "save_model"),
    "RetinaCNN": ("model", "RetinaCNN"),
    "ModelConfig": ("model", "ModelConfig"),
    "attribute": ("attribution", "attribute"),
    "Attribution": ("attribution", "Attribution"),
    "reduce": ("reduction", "reduce"),
    "Reduction": ("reduction", "Reduction"),
    "train": ("training", "train"),
    "evaluate": ("training", "evaluate"),
    "Cancelled": ("_progress", "Cancelled"),
    "CancelToken": ("_progress", "CancelToken"),
    "StimulusUnitsWarning": ("_validate", "StimulusUnitsWarning"),
    "AccuracyWarning": ("attribution", "AccuracyWarning"),
    "available_devices": ("_device", "available_devices"),
    "read_analysis": ("saved", "read_analysis"),
    "wrap": ("_wrap", "wrap"),
    "WrappedModel": ("_wrap", "WrappedModel"),
}
_GUI_SUBMODULES = ("viewer",)
"""Submodules that need napari: loaded on first use, left out of ``__all__`` so that
``from napari_retina import *`` works without napari."""
_GUI_LAZY = {"show": ("viewer", "show")}

__all__ = ["FRAME_MS", "PIXEL_UM", "__version__", *_SUBMODULES, *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES or name in _GUI_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY or name in _GUI_LAZY:
        module, attr = _LAZY.get(name) or _GUI_LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_GUI_SUBMODULES, *_GUI_LAZY])
