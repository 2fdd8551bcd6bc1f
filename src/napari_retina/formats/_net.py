"""A foreign BN-CNN in RetinaCNN's terms, and its conversion to a config and state dict.

Every reader (torch-deep-retina, Keras) fills a :class:`Net` with float64
tensors in torch's layout; :func:`to_state` turns it into a
:class:`~napari_retina.model.ModelConfig` and a float32 state dict that
:class:`~napari_retina.model.RetinaCNN` loads exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .._validate import unusable_weights
from ..model import BN_EPS, MAX_STATE_NUMBERS, ModelConfig

#: what load_model reads, in the words its errors use
KNOWN_FORMATS = (
    "a napari-retina checkpoint (nr.save_model)",
    "a torch-deep-retina BNCNN or LinearStackedBNCNN checkpoint (.pt with model_type and model_state_dict)",
    "deep-retina Keras bn_cnn weights (HDF5 with layer_names)",
)


def known_formats() -> str:
    """The known formats as one phrase, for error messages."""
    return "; ".join(KNOWN_FORMATS)


def listing(items: list[str], most: int = 8) -> str:
    """``items`` joined by commas for a message, the first ``most`` of them and how many there are in all
    when there are more (a crafted file may list thousands)."""
    if len(items) <= most:
        return ", ".join(items)
    return f"{', '.join(items[:most])}, ... ({len(items)} in all)"


def shape_error(path: Path, name: str, shape: tuple, expected: tuple, why: str = "") -> ValueError:
    """The one sentence for a tensor of the wrong shape: the file, the tensor and both shapes."""
    reason = f" ({why})" if why else ""
    return ValueError(
        f"{str(path)!r} cannot be imported: {name} has shape {list(shape)} but {list(expected)} "
        f"was expected{reason}"
    )


def expect_shape(path: Path, name: str, tensor: torch.Tensor, expected: tuple, why: str = "") -> torch.Tensor:
    """``tensor`` if its shape is ``expected``, else :func:`shape_error`."""
    if tuple(tensor.shape) != tuple(expected):
        raise shape_error(path, name, tuple(tensor.shape), tuple(expected), why)
    return tensor


def check_dense(path: Path, name: str, tensor: torch.Tensor) -> None:
    """A ValueError naming ``name`` unless ``tensor`` is dense and holds its values on the CPU.

    torch's weights-only loader accepts sparse tensors and meta tensors (shapes
    without values); the checks that read a tensor's storage or values fail on
    them with torch's own errors.
    """
    if tensor.layout != torch.strided or tensor.device.type != "cpu":
        raise ValueError(f"{str(path)!r} has malformed weights: {name} is a {str(tensor.layout).split('.')[-1]} "
                         f"tensor on device {tensor.device.type!r}; expected a dense tensor with its values in "
                         "the file")


def as_float64(path: Path, name: str, value: Any) -> torch.Tensor:
    """A floating-point tensor or array as a float64 tensor, or a ValueError naming it.

    A tensor that claims more elements than ``MAX_STATE_NUMBERS`` or than its
    storage holds (a crafted zero-stride view) is refused before it is copied.
    """
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        check_dense(path, name, value)
        held = value.untyped_storage().nbytes() // value.element_size()
        if value.numel() > min(held, MAX_STATE_NUMBERS):
            raise ValueError(
                f"{str(path)!r} has malformed weights: {name} claims {value.numel()} elements but the file "
                f"holds {held} for it (at most {MAX_STATE_NUMBERS:,} are read)"
            )
        return value.detach().to(torch.float64).cpu()
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            return torch.from_numpy(np.array(value, dtype=np.float64))
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    kind = getattr(value, "dtype", type(value).__name__)
    raise ValueError(f"{str(path)!r} cannot be imported: {name} should be a floating-point tensor, got {kind}")


@dataclass
class BatchNorm:
    """Eval-mode batch norm ``weight * (x - mean) / sqrt(var + eps) + bias``, each (n,) float64."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    eps: float
    #: source name of each field (``weight``, ``bias``, ``mean``, ``var``), for error messages
    names: dict

    def check(self, path: Path, n: int, why: str) -> None:
        """Refuse a field that is not (n,), naming its source tensor and both shapes."""
        for field in ("weight", "bias", "mean", "var"):
            expect_shape(path, self.names[field], getattr(self, field), (n,), why)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """RetinaCNN's entries for this norm at its epsilon ``BN_EPS``: the same affine map.

        The weight is rescaled by ``sqrt(var + BN_EPS) / sqrt(var + eps)`` (1 when
        the source used 1e-3 too), so outputs agree to float32 rounding.
        """
        weight = self.weight * torch.sqrt(self.var + BN_EPS) / torch.sqrt(self.var + self.eps)
        out = {"weight": weight, "bias": self.bias, "running_mean": self.mean, "running_var": self.var}
        state = {f"{prefix}.{k}": v.to(torch.float32).contiguous() for k, v in out.items()}
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        return state


@dataclass
class Net:
    """A two-layer BN-CNN read from a foreign file, float64, torch layout.

    ``conv1`` (C1, history, k1, k1) and its bias (C1,); ``conv2`` (C2, C1, k2, k2)
    and bias (C2,); ``linear`` (cells, C2·h2·h2) and bias (cells,); batch norms
    over units (``bn="unit"``: C·h·h features, flattened channel-major) or
    channels (``bn="channel"``), and one per cell.
    """

    conv1: tuple[torch.Tensor, torch.Tensor]
    bn1: BatchNorm
    conv2: tuple[torch.Tensor, torch.Tensor]
    bn2: BatchNorm
    linear: tuple[torch.Tensor, torch.Tensor]
    bn3: BatchNorm
    bn: str


def map_side(path: Path, name: str, features: int, channels: int, what: str) -> int:
    """Side h of square maps from ``features = channels * h * h``, or a ValueError naming the tensor."""
    side = math.isqrt(features // channels) if channels > 0 else 0
    if side < 1 or channels * side * side != features:
        raise ValueError(
            f"{str(path)!r} cannot be imported: {name} has {features} {what}, which is not "
            f"{channels} channels times a square map (expected {channels}·h·h)"
        )
    return side


def to_state(path: Path, net: Net, size: int, **config: Any) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """``net`` as a RetinaCNN config (``size`` px, plus ``config`` fields) and float32 state dict."""
    w1, b1 = net.conv1
    w2, b2 = net.conv2
    wl, bl = net.linear
    try:
        cfg = ModelConfig(history=w1.shape[1], size=size, channels=(w1.shape[0], w2.shape[0]),
                          kernels=(w1.shape[-1], w2.shape[-1]), n_cells=wl.shape[0], bn=net.bn, **config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} cannot be imported: {exc}") from exc
    state = {"conv1.weight": w1, "conv1.bias": b1, "conv2.weight": w2, "conv2.bias": b2,
             "linear.weight": wl, "linear.bias": bl}
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    prefix = "bn1.bn" if net.bn == "unit" else "bn1"
    state.update(net.bn1.state(prefix))
    state.update(net.bn2.state("bn2.bn" if net.bn == "unit" else "bn2"))
    state.update(net.bn3.state("bn3"))
    return cfg, state


def _conv(path: Path, names: tuple[str, str], conv: tuple[torch.Tensor, torch.Tensor],
          in_channels: Optional[int]) -> tuple[int, int]:
    """(out channels, kernel) of a square conv (C, in, k, k) with bias (C,), or a shape error naming it."""
    (w, b), (w_name, b_name) = conv, names
    if w.ndim != 4:
        raise shape_error(path, w_name, tuple(w.shape), ("C", "in", "k", "k"), "a 2-D convolution kernel")
    c, k = int(w.shape[0]), int(w.shape[-1])
    inputs = int(w.shape[1]) if in_channels is None else in_channels
    why = "a square kernel" if in_channels is None else f"the layer before has {in_channels} channels"
    expect_shape(path, w_name, w, (c, inputs, k, k), why)
    expect_shape(path, b_name, b, (c,), f"one bias per channel of {w_name}")
    return c, k


def assemble(path: Path, net: Net, names: dict[str, tuple[str, str]]) -> int:
    """Check every tensor of ``net`` against the others; return the stimulus size (px).

    ``names`` gives the source names (weight, bias) of ``conv1``, ``conv2`` and
    ``linear`` for messages, with the layout shapes are reported in. The
    readout's inputs fix the conv2 map side h2 = sqrt(in / C2);
    then h1 = h2 + k2 - 1 and size = h1 + k1 - 1. ``net.bn`` is set from bn1's
    length: C1·h1·h1 (per unit) or C1 (per channel). Any disagreement is one
    ValueError naming the tensor and both shapes.
    """
    c1, k1 = _conv(path, names["conv1"], net.conv1, None)
    c2, k2 = _conv(path, names["conv2"], net.conv2, c1)
    wl, bl = net.linear
    if wl.ndim != 2:
        raise shape_error(path, names["linear"][0], tuple(wl.shape), ("cells", f"{c2}·h·h"), "a 2-D readout")
    n = int(wl.shape[0])
    h2 = map_side(path, names["linear"][0], int(wl.shape[1]), c2, "inputs")
    expect_shape(path, names["linear"][1], bl, (n,), "one bias per cell")
    h1 = h2 + k2 - 1
    unit = net.bn1.weight.ndim == 1 and net.bn1.weight.shape[0] == c1 * h1 * h1
    net.bn = "unit" if unit else "channel"
    why = "one per unit of the layer's map" if unit else "one per channel"
    net.bn1.check(path, c1 * h1 * h1 if unit else c1, f"{why}: {c1} channels of {h1}x{h1}")
    net.bn2.check(path, c2 * h2 * h2 if unit else c2, f"{why}: {c2} channels of {h2}x{h2}")
    net.bn3.check(path, n, f"one per cell, {n} cells")
    _check_values(path, net, names)
    return h1 + k1 - 1


def _check_values(path: Path, net: Net, names: dict[str, tuple[str, str]]) -> None:
    """Refuse NaN/inf values, negative variances and a non-positive ``var + eps``, under the file's own names
    (after the conversion they would read as NaN in RetinaCNN's tensors, which the file does not have)."""
    tensors = {}
    for layer in ("conv1", "conv2", "linear"):
        tensors.update(zip(names[layer], getattr(net, layer)))
    norms = (net.bn1, net.bn2, net.bn3)
    for bn in norms:
        tensors.update((bn.names[f], getattr(bn, f)) for f in ("weight", "bias", "mean", "var"))
    problem = unusable_weights(tensors, variances=[bn.names["var"] for bn in norms])
    if problem:
        raise ValueError(f"{str(path)!r} has unusable weights: {problem}")
    for bn in norms:
        if not (math.isfinite(bn.eps) and bn.eps >= 0) or bool((bn.var + bn.eps <= 0).any()):
            raise ValueError(f"{str(path)!r} has unusable weights: the batch norm of {bn.names['var']} has epsilon "
                             f"{bn.eps} (expected a number >= 0 with variance + epsilon > 0)")
