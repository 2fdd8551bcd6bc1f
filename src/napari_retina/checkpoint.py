"""Saving and loading models: weights plus a JSON config, never pickled code.

A checkpoint is a ``torch.save`` file holding only a dict of tensors and
strings::

    {"format": "napari-retina-checkpoint", "version": 1,
     "config": "<JSON: ModelConfig.to_dict()>",
     "info": "<JSON: {'provenance': {...}, 'scores': {...}}>",
     "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True)``, which refuses any pickled
object other than tensors and plain containers, so loading never executes
code from the file.
"""

from __future__ import annotations

import json
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import torch

from ._atomic import atomic_write
from ._device import DeviceLike, resolve_device
from .model import ModelConfig, RetinaCNN

FORMAT = "napari-retina-checkpoint"
VERSION = 1
DEFAULT_MODEL = "default_model.pt"

PathLike = Union[str, os.PathLike]


def default_model_path() -> Path:
    """Path of the shipped default model inside the installed package."""
    return Path(str(resources.files("napari_retina") / "data" / DEFAULT_MODEL))


def save_model(model: RetinaCNN, path: PathLike) -> Path:
    """Write ``model`` (weights, config, provenance, scores) to ``path`` atomically.

    The file is written to a temporary name and renamed, so an interrupted save
    never leaves a half-written checkpoint. Returns the path.

    Example
    -------
    >>> nr.save_model(model, "m.pt")                     # doctest: +SKIP
    """
    if not isinstance(model, RetinaCNN):
        raise TypeError(f"save_model expects a RetinaCNN, got {type(model).__name__}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(model.config.to_dict()),
        "info": json.dumps({"provenance": model.provenance, "scores": model.scores}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _read_payload(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise ValueError(
                f"{str(path)!r} is not a napari-retina checkpoint: it holds pickled objects other than "
                "weights, which are refused because loading them could execute code"
            ) from exc
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (corrupt or truncated)") from exc
    except Exception as exc:  # torch raises many kinds on garbage: RuntimeError, KeyError, EOFError...
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (corrupt or truncated)") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is a torch file but not a napari-retina checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{str(path)!r} is checkpoint version {payload.get('version')!r}; this napari-retina reads version {VERSION}"
        )
    return payload


def load_model(path: Optional[PathLike] = None, device: DeviceLike = None) -> RetinaCNN:
    """Load a checkpoint (default: the shipped model) in eval mode on ``device``.

    Parameters
    ----------
    path : str or Path, optional
        A file written by :func:`save_model`. ``None`` loads the shipped default
        model (trained on the synthetic retina; see ``model.provenance``).
    device : str, optional
        ``None``/``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.

    Returns
    -------
    RetinaCNN in ``eval()`` mode, with ``.config``, ``.provenance`` and ``.scores``.

    Example
    -------
    >>> model = nr.load_model()                         # doctest: +SKIP
    >>> model.config.history, model.config.size         # doctest: +SKIP
    (40, 50)
    """
    dev = resolve_device(device)
    path = default_model_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    payload = _read_payload(path)
    try:
        config = ModelConfig.from_dict(json.loads(payload["config"]))
        info = json.loads(payload.get("info", "{}"))
        model = RetinaCNN(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is an incomplete napari-retina checkpoint: {exc}") from exc
    except RuntimeError as exc:  # state dict does not match the config
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{str(path)!r} has weights that do not match its own config: {first}") from exc
    model.provenance = dict(info.get("provenance", {}))
    model.scores = dict(info.get("scores", {}))
    return model.to(dev).eval()
