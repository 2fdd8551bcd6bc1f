"""Other labs' model files, imported into :class:`~napari_retina.model.RetinaCNN` exactly.

:func:`napari_retina.load_model` recognises, besides napari-retina's own checkpoints:

- ``tdr``: torch-deep-retina checkpoints of ``BNCNN`` and ``LinearStackedBNCNN``
  (stacks of 3×3 convolutions collapsed into one k×k kernel; absolute-value
  batch-norm scales), with their stored stimulus statistics and cell ids
  (:mod:`napari_retina.formats.tdr`);
- ``keras``: deep-retina Keras ``bn_cnn`` weights in HDF5, read with h5py
  (:mod:`napari_retina.formats.keras`).

Each reader yields a :class:`~napari_retina.formats._net.Net` in torch's
layout; :func:`read_foreign` turns it into a config, a float32 state dict
and the provenance, which the checkpoint loader checks like its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from .._types import AnyModel
from ..model import ModelConfig
from . import keras, tdr
from ._net import KNOWN_FORMATS, check_dense, known_formats, to_state

__all__ = ["KNOWN_FORMATS", "check_dense", "known_formats", "is_hdf5", "read_foreign", "describe", "keras", "tdr"]


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (Keras weights are HDF5)."""
    return keras.is_hdf5(path)


Imported = tuple[ModelConfig, dict[str, torch.Tensor], dict]
"""(config, float32 state dict in RetinaCNN's names, {"provenance": ..., "scores": ...})"""


def read_foreign(path: Path, payload: Optional[Any] = None) -> Optional[Imported]:
    """(config, state dict, info) of a foreign model file, or None when ``payload`` is of no known foreign format.

    ``payload``: what ``torch.load(weights_only=True)`` returned for a torch
    file, or None for an HDF5 file. ``info`` is ``{"provenance": ..., "scores": ...}``.
    A file of a known format that cannot be imported is one ValueError naming it.
    """
    if payload is None:
        net, size, extra = keras.read(path)
    elif tdr.is_tdr(payload):
        net, size, extra = tdr.read(path, payload)
    else:
        return None
    config, state = to_state(path, net, size, **extra["config"])
    provenance = dict(extra["provenance"])
    provenance["imported"] = {**provenance["imported"], "file": path.name}
    return config, state, {"provenance": provenance, "scores": extra["scores"]}


def describe(model: AnyModel) -> str:
    """What a loaded model is, in a few words: its file format and the architecture it came from.

    ``model``: a :class:`~napari_retina.model.RetinaCNN` (its ``provenance["imported"]``
    says when it was imported). E.g. ``"torch-deep-retina LinearStackedBNCNN
    (3+2 stacked convolutions collapsed), as a BN-CNN"`` or ``"napari-retina
    checkpoint, BN-CNN"``.
    """
    imported = (getattr(model, "provenance", None) or {}).get("imported")
    if not isinstance(imported, dict):
        return "napari-retina checkpoint, BN-CNN"
    stacks = imported.get("convolutions_per_layer")
    collapsed = f" ({'+'.join(map(str, stacks))} stacked convolutions collapsed)" \
        if isinstance(stacks, list) and any(n > 1 for n in stacks if isinstance(n, int)) else ""
    return f"{imported.get('format', 'imported')} {imported.get('architecture', '')}{collapsed}, as a BN-CNN"
