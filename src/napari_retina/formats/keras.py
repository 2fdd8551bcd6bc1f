"""deep-retina Keras ``bn_cnn`` weights (HDF5) as RetinaCNN weights, read with h5py (no TensorFlow).

Followed: baccuslab/deep-retina, ``deepretina/models.py`` (``bn_layer`` and
``bn_cnn``: Conv2D(data_format="channels_first") → Flatten → BatchNormalization
(axis=-1, one per unit) → Reshape → GaussianNoise → ReLU, twice; then
Flatten → Dense(use_bias=False) → BatchNormalization → softplus), and Keras 2's
HDF5 layout as written by ``model.save_weights`` or ``model.save``::

    [model_weights/]                       the latter nests the layers here
        attrs: layer_names, backend, keras_version
        <layer>/  attrs: weight_names      e.g. ["conv2d_1/kernel:0", "conv2d_1/bias:0"]
        <layer>/<weight name>              the arrays

Conversions: Conv2D kernels are stored (k, k, in, out) and become torch's
(out, in, k, k); a file saved by the Theano backend holds spatially flipped
kernels (Keras flips them on load; so does this reader). Dense kernels are
(in, out) and become (out, in). Keras' Flatten (image_data_format
"channels_last", the default) flattens the channels-first maps channel-major,
as torch does, so the batch-norm and readout order needs no permutation.
BatchNormalization weights are gamma, beta, moving_mean, moving_variance with
epsilon from the stored ``model_config`` (Keras' default 1e-3 when absent).
No normalisation statistics are stored: the imported model takes contrast units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .._json import parse_json
from ..io import _check_h5_read, _open_h5
from . import _net
from ._net import BatchNorm, Net

FORMAT = "deep-retina Keras"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DEFAULT_EPS = 1e-3
EXPECTED_ROLES = ["conv", "bn", "conv", "bn", "dense", "bn"]


def is_hdf5(path: Path) -> bool:
    """Whether the file starts with the HDF5 signature."""
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _bn_epsilons(path: Path, layers: Optional[list]) -> list[float]:
    """Epsilon of each BatchNormalization layer in order, from the stored model_config's ``layers``
    (:func:`_config_layers`; empty when there are none); an epsilon that is not a number >= 0 is a ValueError."""
    values = [layer["config"].get("epsilon", DEFAULT_EPS) for layer in layers or []
              if layer.get("class_name") == "BatchNormalization"]
    for value in values:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is None or not (np.isfinite(number) and number >= 0):
            raise ValueError(f"{str(path)!r} has a malformed model_config: a BatchNormalization epsilon is "
                             f"{value!r} (expected a number >= 0)")
    return [float(v) for v in values]


#: what a bn_cnn's model_config may say of each layer class (None: the key absent); anything else is a model
#: this reader would import as another (a strided or channels-last convolution, a tanh for a ReLU)
BN_CNN_CONFIG = {
    "Conv2D": {"data_format": (None, "channels_first"), "strides": (None, 1, (1, 1)),
               "dilation_rate": (None, 1, (1, 1)), "padding": (None, "valid"), "activation": (None, "linear")},
    "Dense": {"activation": (None, "linear")},
}
BN_CNN_ACTIVATIONS = ["relu", "relu", "softplus"]


def _config_layers(path: Path, h5) -> Optional[list]:
    """The layers of the stored model_config (dicts with "class_name" and "config"), or None when there is none
    or it is not of a layout this reader knows."""
    raw = h5.attrs.get("model_config")
    if raw is None:
        return None
    try:
        config = parse_json(_text(raw), f"{str(path)!r} model_config")
        layers = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
        return [layer for layer in layers if isinstance(layer, dict) and isinstance(layer.get("config"), dict)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_config(path: Path, layers: Optional[list]) -> None:
    """A ValueError in one sentence when the model_config describes layers a bn_cnn's weights would be imported as
    something else by: :data:`BN_CNN_CONFIG`, and the activations :data:`BN_CNN_ACTIVATIONS` in order (a helper's
    audit: a channels-last file imported with a 0.41 relative error, a stride-2 conv1 as stride 1, tanh as ReLU)."""
    if not layers:
        return
    for layer in layers:
        allowed = BN_CNN_CONFIG.get(layer.get("class_name"), {})
        for key, values in allowed.items():
            value = layer["config"].get(key)
            value = tuple(value) if isinstance(value, list) else value
            if value not in values:
                raise ValueError(f"{str(path)!r} is not a deep-retina bn_cnn napari-retina can import: its "
                                 f"model_config gives {layer['class_name']} {layer['config'].get('name', '')!r} "
                                 f"{key} {str(value)[:40]!r} (a bn_cnn's is {values[-1]!r})")
    activations = [layer["config"].get("activation") for layer in layers if layer.get("class_name") == "Activation"]
    if activations and activations != BN_CNN_ACTIVATIONS:
        raise ValueError(f"{str(path)!r} is not a deep-retina bn_cnn napari-retina can import: its model_config's "
                         f"activations are {', '.join(str(a)[:20] for a in activations)} (a bn_cnn's are "
                         f"{', '.join(BN_CNN_ACTIVATIONS)})")


def _member(path: Path, parent, name: str, what: str, kind: str):
    """``parent[name]`` as an h5py Group (``kind="group"``) or Dataset, or a ValueError naming ``what``.

    Links are not followed out of the file (an external link could make the
    reader open any file), and a damaged link is one sentence, not h5py's error.
    """
    import h5py

    link = parent.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise ValueError(f"{str(path)!r} is not self-contained Keras weights: {what} is a link to "
                         f"{link.filename!r}, which is not followed")
    try:
        member = parent[name]
    except (KeyError, RuntimeError, OSError) as exc:
        raise ValueError(f"{str(path)!r} is damaged Keras weights: {what} cannot be opened ({exc})") from exc
    expected = h5py.Group if kind == "group" else h5py.Dataset
    if not isinstance(member, expected):
        expected_kind = "a group" if kind == "group" else "an array"
        raise ValueError(f"{str(path)!r} is damaged Keras weights: {what} is not {expected_kind}")
    return member


def _names_attr(path: Path, value: Any, what: str) -> list[str]:
    """A list-of-names attribute (``layer_names``, ``weight_names``) as strings, or a ValueError naming it."""
    if np.ndim(value) != 1:
        raise ValueError(f"{str(path)!r} is damaged Keras weights: {what} is {np.ndim(value)}-D "
                         "(expected a list of names)")
    return [_text(v) for v in value]


def _first_repeated(names: list[str]) -> Optional[str]:
    """The first name of ``names`` that an earlier one equals, or None when all differ."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _layers(path: Path, root) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(layer name, {short weight name: array})] for the layers that hold weights, in model order."""
    names = root.attrs.get("layer_names")
    if names is None:
        raise ValueError(
            f"{str(path)!r} is an HDF5 file but not Keras weights (no layer_names attribute) nor of another "
            f"format napari-retina knows (expected {_net.known_formats()})"
        )
    out = []
    names = _names_attr(path, names, "layer_names")
    twice = _first_repeated(names)
    if twice is not None:
        raise ValueError(f"{str(path)!r} is damaged Keras weights: layer_names lists {twice!r} more than once "
                         "(a Keras model's layer names are unique)")
    for layer in names:
        if layer not in root:
            raise ValueError(f"{str(path)!r} is damaged Keras weights: layer_names lists {layer!r} but it has no group")
        group = _member(path, root, layer, f"layer {layer}", "group")
        weights = _names_attr(path, group.attrs.get("weight_names", []), f"layer {layer}'s weight_names")
        missing = [w for w in weights if w not in group]
        if missing:
            raise ValueError(f"{str(path)!r} is damaged Keras weights: layer {layer} lists {missing} but lacks them")
        if weights:
            out.append((layer, {w.split("/")[-1].split(":")[0]:
                                _read_array(path, layer, w, _member(path, group, w, f"layer {layer}'s {w}", "array"))
                                for w in weights}))
    return out


def _read_array(path: Path, layer: str, name: str, dataset) -> np.ndarray:
    """A weight array, checked before it is read: at most ``MAX_STATE_NUMBERS`` numbers (a small file can declare
    a huge, unwritten dataset), and nothing from outside the file nor beyond ``nr.io``'s checks (external storage,
    virtual datasets, object values: ``io._check_h5_read``)."""
    if dataset.size > _net.MAX_STATE_NUMBERS:
        raise ValueError(
            f"{str(path)!r} cannot be imported: layer {layer}'s {name} holds {dataset.size:,} numbers "
            f"(shape {list(dataset.shape)}); at most {_net.MAX_STATE_NUMBERS:,} are read"
        )
    _check_h5_read(dataset, dataset.name.lstrip("/"), path)
    try:
        return np.asarray(dataset[()])
    except Exception as exc:  # OSError from a damaged chunk or filter
        raise ValueError(f"{str(path)!r} is damaged Keras weights: layer {layer}'s {name} cannot be read "
                         f"({exc})") from exc


def _role(arrays: dict[str, np.ndarray]) -> str:
    if "moving_mean" in arrays:
        return "bn"
    kernel = arrays.get("kernel")
    if kernel is not None and kernel.ndim == 4:
        return "conv"
    if kernel is not None and kernel.ndim == 2:
        return "dense"
    return f"unknown ({', '.join(sorted(arrays))})"


def _tensor(path: Path, name: str, array: np.ndarray) -> torch.Tensor:
    return _net.as_float64(path, name, np.asarray(array))


def _conv(path: Path, layer: str, arrays: dict, theano: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # Keras stores (k, k, in, out); torch wants (out, in, k, k)
    kernel = _tensor(path, f"{layer}/kernel", arrays["kernel"]).permute(3, 2, 0, 1)
    if theano:
        kernel = kernel.flip(-1, -2)
    bias = _tensor(path, f"{layer}/bias", arrays["bias"]) if "bias" in arrays else torch.zeros(kernel.shape[0],
                                                                                                dtype=torch.float64)
    return kernel.contiguous(), bias


def _dense(path: Path, layer: str, arrays: dict) -> tuple[torch.Tensor, torch.Tensor]:
    kernel = _tensor(path, f"{layer}/kernel", arrays["kernel"]).T.contiguous()  # (in, out) -> (out, in)
    bias = _tensor(path, f"{layer}/bias", arrays["bias"]) if "bias" in arrays else torch.zeros(kernel.shape[0],
                                                                                                dtype=torch.float64)
    return kernel, bias


def _batch_norm(path: Path, layer: str, arrays: dict, eps: float) -> BatchNorm:
    mean = _tensor(path, f"{layer}/moving_mean", arrays["moving_mean"])
    if "moving_variance" not in arrays:
        raise ValueError(f"{str(path)!r} cannot be imported: the batch norm {layer} lacks moving_variance")
    var = _tensor(path, f"{layer}/moving_variance", arrays["moving_variance"])
    gamma = _tensor(path, f"{layer}/gamma", arrays["gamma"]) if "gamma" in arrays else torch.ones_like(mean)
    beta = _tensor(path, f"{layer}/beta", arrays["beta"]) if "beta" in arrays else torch.zeros_like(mean)
    names = {"weight": f"{layer}/gamma", "bias": f"{layer}/beta", "mean": f"{layer}/moving_mean",
             "var": f"{layer}/moving_variance"}
    return BatchNorm(gamma, beta, mean, var, eps, names)


def _names(layer: str, layout: str = "(out, in, k, k)") -> tuple[str, str]:
    """A layer's kernel and bias as named in messages; shapes there are in torch's layout, as said."""
    return f"{layer}/kernel (in torch's {layout} layout)", f"{layer}/bias"


def _read_file(path: Path) -> tuple[str, str, list[tuple[str, dict[str, np.ndarray]]], list[float]]:
    """(backend, Keras version, :func:`_layers`, :func:`_bn_epsilons`) of a weights file.

    A file whose HDF5 structure is damaged (h5py's RuntimeError, KeyError or
    OSError from a link table, heap or object header; names that are not UTF-8)
    is one ValueError naming it.
    """
    try:
        with _open_h5(path) as h5:
            root = _member(path, h5, "model_weights", "model_weights", "group") if "model_weights" in h5 else h5
            backend = _text(root.attrs.get("backend", h5.attrs.get("backend", "tensorflow")))
            version = _text(root.attrs.get("keras_version", h5.attrs.get("keras_version", "")))
            if version.startswith("1"):
                raise ValueError(
                    f"{str(path)!r} was written by Keras {version}; napari-retina reads Keras 2 weight files "
                    "(load it in Keras 2 and save_weights again)"
                )
            config = _config_layers(path, h5)
            _check_config(path, config)
            return backend, version, _layers(path, root), _bn_epsilons(path, config)
    except (RuntimeError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is damaged Keras weights: its HDF5 structure cannot be read "
                         f"({type(exc).__name__}: {exc})") from exc


def read(path: Path) -> tuple[Net, int, dict]:
    """A deep-retina bn_cnn weights file as (Net, stimulus size, config fields incl. provenance)."""
    backend, version, layers, epsilons = _read_file(path)
    roles = [_role(arrays) for _, arrays in layers]
    if roles != EXPECTED_ROLES:
        found = _net.listing([f"{name}: {role}" for (name, _), role in zip(layers, roles)])
        raise ValueError(
            f"{str(path)!r} does not have a bn_cnn's layers: expected {', '.join(EXPECTED_ROLES)}, found {found}"
        )
    if epsilons and len(epsilons) != 3:   # which epsilon belongs to which of the three norms is then unknown
        raise ValueError(f"{str(path)!r} has a malformed model_config: it lists {len(epsilons)} "
                         "BatchNormalization layers, and a bn_cnn's weights have 3")
    eps = epsilons or [DEFAULT_EPS] * 3
    (l1, a1), (lb1, ab1), (l2, a2), (lb2, ab2), (ld, ad), (lb3, ab3) = layers
    theano = backend == "theano"
    net = Net(_conv(path, l1, a1, theano), _batch_norm(path, lb1, ab1, eps[0]), _conv(path, l2, a2, theano),
              _batch_norm(path, lb2, ab2, eps[1]), _dense(path, ld, ad), _batch_norm(path, lb3, ab3, eps[2]), "unit")
    size = _net.assemble(path, net, {"conv1": _names(l1), "conv2": _names(l2), "linear": _names(ld, "(out, in)")})
    provenance = {"imported": {"format": FORMAT, "architecture": "bn_cnn", "backend": backend,
                               "keras_version": version}}
    fields = {"norm": {"mean": 0.0, "std": 1.0, "units": "contrast"}}
    return net, size, {"config": fields, "provenance": provenance, "scores": {}}
