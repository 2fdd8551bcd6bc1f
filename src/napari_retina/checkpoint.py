"""Saving and loading models: weights plus a JSON config, never pickled code.

A checkpoint is a ``torch.save`` file holding only a dict of tensors and
strings::

    {"format": "napari-retina-checkpoint", "version": 1,
     "config": "<JSON: ModelConfig.to_dict()>",
     "info": "<JSON: {'provenance': {...}, 'scores': {...}}>",
     "weights_sha256": "<hex: weights_sha256(state_dict)>",
     "state_dict": {name: tensor}}

It is read with ``torch.load(weights_only=True)``, which refuses any pickled
object other than tensors and plain containers, so loading never executes
code from the file. Before a network is built, the config is checked against
:class:`~napari_retina.model.ModelConfig`'s bounds and the weights against the
shapes it implies, so a crafted file cannot make loading allocate more than
the file holds; then the checksum (checkpoints saved before it existed load
with a warning) and finiteness of the weights are checked.

Other labs' files load too (:mod:`napari_retina.formats`): torch-deep-retina
``BNCNN``/``LinearStackedBNCNN`` checkpoints, read with the same weights-only
unpickler (numpy scalars and arrays, which those files hold, are allowed as
data), and deep-retina Keras ``bn_cnn`` HDF5 weights, read with h5py. They are
converted to a RetinaCNN's config and weights, then checked like a checkpoint's.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ._atomic import atomic_write_in_memory
from ._device import DeviceLike, resolve_device
from ._json import jsonable, parse_json
from ._types import PathLike
from ._validate import file_path, unusable_weights
from .formats import check_dense, is_hdf5, known_formats, read_foreign
from .model import ModelConfig, RetinaCNN

__all__ = [
    "default_model_path", "checkpoint_path", "save_model", "weights_sha256", "model_record", "versions", "load_model",
    "FORMAT", "VERSION",
    "DEFAULT_MODEL", "CHECKPOINT_SUFFIXES", "REQUIRED_KEYS", "OPTIONAL_KEYS", "INFO_KEYS"
]

FORMAT = "napari-retina-checkpoint"
VERSION = 1
DEFAULT_MODEL = "default_model.pt"
#: the suffix of a checkpoint the command line writes (``train --out``)
CHECKPOINT_SUFFIXES = (".pt",)
#: top-level keys of a checkpoint; ``weights_sha256`` is absent from older ones
REQUIRED_KEYS = ("format", "version", "config", "info", "state_dict")
OPTIONAL_KEYS = ("weights_sha256",)
INFO_KEYS = ("provenance", "scores")


def default_model_path() -> Path:
    """Path of the shipped default model inside the installed package."""
    return Path(str(resources.files("napari_retina") / "data" / DEFAULT_MODEL))


def checkpoint_path(path: PathLike, name: str = "path") -> Path:
    """``path`` as where a checkpoint may be written (:func:`~napari_retina._validate.file_path`), with a
    :data:`CHECKPOINT_SUFFIXES` suffix: :func:`load_model` reads ``.h5`` and others as the lab's formats, so a
    checkpoint written under such a name would not load. Else one ValueError."""
    path = file_path(path, name, writing=True)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ValueError(f"a checkpoint is written to a {'/'.join(CHECKPOINT_SUFFIXES)} file (load_model reads other "
                         f"suffixes as other formats), got {path.name!r}")
    return path


def save_model(model: RetinaCNN, path: PathLike) -> Path:
    """Write ``model`` (weights, config, provenance, scores) to ``path`` atomically.

    The file is written to a temporary name and renamed, so an interrupted save
    never leaves a half-written checkpoint. A model whose weights
    :func:`load_model` would refuse (NaN, infinite, a negative variance) is
    refused here, before anything is written. Returns the path.

    Example
    -------
    >>> nr.save_model(model, "m.pt")                     # doctest: +SKIP
    """
    if not isinstance(model, RetinaCNN):
        raise TypeError(f"save_model expects a RetinaCNN, got {type(model).__name__}")
    path = checkpoint_path(path)   # None, a folder or another suffix: one sentence before the weights are serialised
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    problem = unusable_weights(state)   # load_model would refuse the file: keep the one at path instead
    if problem:
        raise ValueError(f"the model has unusable weights, not saved to {str(path)!r}: {problem}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps(model.config.to_dict()),
        # NumPy scores (np.float32(0.61)) as numbers, other objects (a date) as their text: a raw TypeError before
        "info": json.dumps(jsonable({"provenance": model.provenance, "scores": model.scores})),
        "weights_sha256": weights_sha256(state),
        "state_dict": state,
    }
    # in memory: torch.save onto a full disk raises a RuntimeError from its zip writer, no OSError
    return atomic_write_in_memory(path, lambda image: torch.save(payload, image))


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (64 hex digits) of a state dict's tensors, independent of how they are stored.

    The tensors are hashed in sorted-name order; each one as an 8-byte
    little-endian length, then the UTF-8 JSON ``[name, dtype, shape]`` (e.g.
    ``["conv1.bias", "float32", [8]]``), then its elements in C order as raw
    bytes (the machine's byte order, little-endian on every platform torch
    ships for). The same weights give the same digest on CPU or GPU, contiguous
    or not; one flipped bit gives another.

    Example
    -------
    >>> weights_sha256(model.state_dict())              # doctest: +SKIP
    '3f1c...'
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]).encode()
        digest.update(struct.pack("<Q", len(header)) + header)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_record(model: RetinaCNN, path: Optional[PathLike] = None) -> dict:
    """Which model made a result, as the commands record it under ``"model"``.

    ``{"path": the checkpoint as given (``"default"`` for the shipped model),
    "weights_sha256": weights_sha256(model.state_dict()), "provenance": model.provenance}``:
    the path names the file, the digest the weights whatever the file is
    called now, the provenance how they were trained or imported.
    """
    return {"path": str(path or "default"), "weights_sha256": weights_sha256(model.state_dict()),
            "provenance": model.provenance}


def versions() -> dict:
    """The versions a result was computed with: ``{"napari_retina", "torch", "numpy", "python"}``."""
    import platform
    import sys

    import numpy as np

    version = sys.modules[__package__].__version__   # the package is loaded with any of its modules
    return {"napari_retina": version, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _numpy_data_globals() -> list:
    """numpy's array and scalar reconstructors (data only, no code), under numpy 2's and numpy 1's names.

    torch-deep-retina checkpoints hold numpy floats and arrays (norm_stats,
    scores). Allowing these constructors lets the weights-only unpickler read
    them; every other global is still refused.
    """
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [np.ndarray, np.dtype, core.scalar, core._reconstruct]
    allowed += sorted({type(np.dtype(code)) for code in "?bhilqpBHILQPefdgFDG"}, key=str)  # numeric dtypes' classes
    for name in ("scalar", "_reconstruct"):
        allowed += [(getattr(core, name), f"numpy.core.multiarray.{name}"),
                    (getattr(core, name), f"numpy._core.multiarray.{name}")]
    return allowed


def _starts_like_a_torch_file(path: Path) -> bool:
    """Whether ``path`` starts as torch.save writes: a zip archive, or (legacy) a pickle of protocol >= 2."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _check_zip_checksums(path: Path) -> None:
    """Refuse a torch zip file with an entry that fails its CRC-32: torch's reader does not check them, so a
    damaged weight loaded as other numbers (a lab's file has no SHA-256 of its own to catch it). Files that
    are no zip archive, or too broken to open as one, are left to torch's reader and its refusal."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return
    except NotImplementedError as exc:   # a version or compression torch.save never writes: one damaged byte
        raise ValueError(f"{str(path)!r} is damaged: its zip directory asks for what torch.save never writes "
                         f"({exc}), so its checksums cannot be checked; use an intact copy") from None
    if bad is not None:
        raise ValueError(f"{str(path)!r} is damaged: its entry {bad!r} fails its checksum (CRC-32), so its numbers "
                         "are not the ones saved; use an intact copy")


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with numpy data allowed; refusals are one ValueError sentence."""
    _check_zip_checksums(path)
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()), warnings.catch_warnings():
            # a plain pickle (not a torch file) draws torch's protocol warning before the refusal below:
            # noise beside the one sentence the user gets, and its advice (file an issue) is torch's
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _starts_like_a_torch_file(path):  # e.g. a .npy stimulus given as the model
            raise ValueError(f"{str(path)!r} is not a checkpoint: it is neither a torch file (a zip archive, or "
                             "a pickle of protocol 2 or later, as torch.save writes) nor Keras HDF5 weights") from exc
        if "weights only" in str(exc).lower():
            raise ValueError(
                f"{str(path)!r} is not a napari-retina checkpoint: it holds pickled objects other than "
                "weights, which are refused because loading them could execute code"
            ) from exc
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (corrupt or truncated)") from exc
    except Exception as exc:  # torch raises many kinds on garbage: RuntimeError, KeyError, EOFError...
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (corrupt or truncated)") from exc


def _read_payload(path: Path, payload: Any) -> dict:
    """``payload`` if it is a napari-retina checkpoint of this version, else one ValueError sentence."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is a torch file but not a napari-retina checkpoint (no '{FORMAT}' header) nor of "
            f"another format napari-retina knows (expected {known_formats()})"
        )
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{str(path)!r} is checkpoint version {payload.get('version')!r}; this napari-retina reads version {VERSION}"
        )
    return payload


def _json_object(path: Path, payload: dict, key: str) -> dict:
    """``payload[key]`` parsed as a JSON object, or one ValueError sentence naming the file."""
    text = payload[key]
    if not isinstance(text, str):
        raise ValueError(f"{str(path)!r} has a malformed {key}: expected a JSON string, got {type(text).__name__}")
    try:
        value = parse_json(text, "it")
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} has a malformed {key}: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r} has a malformed {key}: expected a JSON object, got a {type(value).__name__}")
    return value


def _check_keys(path: Path, payload: dict) -> None:
    """Refuse a checkpoint that lacks a required top-level key or holds an unknown one."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    unknown = sorted(map(str, set(payload) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)))
    if missing or unknown:
        what = f"lacks {missing}" if missing else f"holds unknown entries {unknown}"
        raise ValueError(
            f"{str(path)!r} is a malformed napari-retina checkpoint: it {what} "
            f"(expected {list(REQUIRED_KEYS)}, optionally {list(OPTIONAL_KEYS)})"
        )


def _read_config(path: Path, payload: dict) -> ModelConfig:
    """The checkpoint's :class:`ModelConfig` (every field present, within bounds)."""
    data = _json_object(path, payload, "config")
    try:
        return ModelConfig.from_dict(data, complete=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} has an invalid model config: {exc}") from exc


def _read_info(path: Path, payload: dict) -> dict:
    """The checkpoint's info: ``{"provenance": dict, "scores": dict}``, nothing else."""
    info = _json_object(path, payload, "info")
    bad = sorted(set(info) ^ set(INFO_KEYS)) or [k for k in INFO_KEYS if not isinstance(info[k], dict)]
    if bad:
        got = {k: type(v).__name__ for k, v in info.items()}
        raise ValueError(
            f"{str(path)!r} has a malformed info: expected a JSON object with exactly "
            f"{list(INFO_KEYS)}, each an object, got {got}"
        )
    return info


def _some(names: list[str], shown: int = 5) -> str:
    """``"3 (a, b, c)"``, or ``"20 (a, b, c, d, e and 15 more)"``: a count and the first few names."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"


def _check_state(path: Path, state: Any, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Refuse weights that do not have the names, shapes and kinds ``config`` implies.

    Runs before the network is built: every tensor must be present with the
    expected shape, dense, floating point (``num_batches_tracked``: integer), and
    backed by its own data (no sparse or meta tensors, no zero-stride views claiming more than the file holds).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        got = type(state).__name__ if not isinstance(state, dict) else "a dict holding non-tensors"
        raise ValueError(f"{str(path)!r} has malformed weights: expected a dict of named tensors, got {got}")
    expected = config.state_shapes()
    missing = [k for k in expected if k not in state]
    unexpected = sorted(map(str, set(state) - set(expected)))
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} has weights that do not match its own config: missing "
            f"{_some(missing) + ' of its ' + str(len(expected)) + ' tensors' if missing else 'none'}, "
            f"unexpected {_some(unexpected) if unexpected else 'none'}"
        )
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{str(path)!r} has weights that do not match its own config: {name} should be "
                f"{list(shape)} but is {list(tensor.shape)} in the file"
            )
        check_dense(path, name, tensor)
        integer = name.endswith("num_batches_tracked")
        if tensor.is_floating_point() == integer or tensor.is_complex():
            kind = "an integer" if integer else "a floating-point"
            raise ValueError(f"{str(path)!r} has malformed weights: {name} should be {kind} tensor, got {tensor.dtype}")
        if tensor.untyped_storage().nbytes() < tensor.numel() * tensor.element_size():
            raise ValueError(
                f"{str(path)!r} has malformed weights: {name} claims {tensor.numel()} elements "
                f"but the file holds only {tensor.untyped_storage().nbytes()} bytes for it"
            )
    return state


def _check_checksum(path: Path, payload: dict, state: dict) -> None:
    """Refuse weights whose SHA-256 differs from the stored one; warn when none is stored."""
    stored = payload.get("weights_sha256")
    if stored is None:
        warnings.warn(
            f"{str(path)!r} has no weights checksum (saved by an older napari-retina), so corruption "
            "cannot be detected; re-save it with nr.save_model to add one",
            UserWarning,
            stacklevel=3,
        )
        return
    if not (isinstance(stored, str) and len(stored) == 64 and all(c in "0123456789abcdef" for c in stored)):
        got = f"{stored!r}" if isinstance(stored, str) and len(stored) < 80 else f"a {type(stored).__name__}"
        raise ValueError(f"{str(path)!r} has a malformed weights_sha256: expected 64 lowercase hex digits, got {got}")
    actual = weights_sha256(state)
    if stored != actual:
        raise ValueError(
            f"{str(path)!r} is corrupt: its weights hash to SHA-256 {actual[:16]}... but it was saved "
            f"with {stored[:16]}..."
        )


def _check_finite(path: Path, state: dict) -> None:
    """Refuse a state dict with :func:`unusable_weights`."""
    problem = unusable_weights(state)
    if problem:
        raise ValueError(f"{str(path)!r} has unusable weights: {problem}")


def _read_any(path: Path) -> tuple[ModelConfig, dict, dict]:
    """(config, checked state dict, info) of a napari-retina checkpoint or a known foreign format."""
    if is_hdf5(path):
        foreign = read_foreign(path, None)
    else:
        payload = _load_weights_only(path)
        foreign = read_foreign(path, payload)
        if foreign is None:
            payload = _read_payload(path, payload)
            _check_keys(path, payload)
            config = _read_config(path, payload)
            info = _read_info(path, payload)
            state = _check_state(path, payload["state_dict"], config)
            _check_checksum(path, payload, state)
            _check_finite(path, state)
            return config, state, info
    config, state, info = foreign
    _check_finite(path, _check_state(path, state, config))
    return config, state, info


def load_model(path: Optional[PathLike] = None, device: DeviceLike = None) -> RetinaCNN:
    """Load a checkpoint (default: the shipped model) in eval mode on ``device``.

    The file is checked before a network is built: its config (every field,
    within :class:`ModelConfig`'s bounds), its info, and its weights (every
    tensor present with the shape the config implies, finite, and matching
    the SHA-256 stored at save). Any problem is one ValueError sentence
    naming the file; a checkpoint saved before checksums existed loads with
    a ``UserWarning``.

    Parameters
    ----------
    path : str or Path, optional
        A file written by :func:`save_model`, a torch-deep-retina ``BNCNN`` or
        ``LinearStackedBNCNN`` checkpoint, or deep-retina Keras ``bn_cnn``
        weights (HDF5); see :mod:`napari_retina.formats`. An imported model
        records what it came from in ``model.provenance["imported"]``. ``None``
        loads the shipped default model (trained on the synthetic retina; see
        ``model.provenance``).
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
    path = default_model_path() if path is None else file_path(path, or_none=True)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    config, state, info = _read_any(path)
    model = RetinaCNN(config)
    model.load_state_dict(state, strict=True)
    model.provenance = dict(info["provenance"])
    model.scores = dict(info["scores"])
    return model.to(dev).eval()
