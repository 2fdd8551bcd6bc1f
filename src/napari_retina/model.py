"""The retina CNN ("BN-CNN", McIntosh et al. 2016; METHOD.md §1).

Input: the last ``history`` frames (10 ms each) of a ``size × size`` stimulus
in contrast units, used as the input channels of a 2-D convolution.

====================  =========================  ==============================
layer                 output shape               notes
====================  =========================  ==============================
conv1 (first layer)   (C1, h1, h1), h1=size-k1+1 "bipolar-like"; attributions
bn1 (per unit)        same                       eps 1e-3, momentum 0.01
noise σ, ReLU         same                       noise only in training
conv2                 (C2, h2, h2), h2=h1-k2+1   "amacrine-like"
bn2 (per unit), ReLU  same
linear                (n_cells,)
bn3 (per cell)        (n_cells,)
softplus              (n_cells,)                 rate, spikes per 10 ms bin
====================  =========================  ==============================

``model.eval()`` makes inference deterministic (no noise, running batch-norm
statistics). :meth:`RetinaCNN.first_layer` and :meth:`RetinaCNN.from_first_layer`
split the network at conv1's pre-activation ``z`` for attribution.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._types import ArrayLike
from ._validate import FLOAT32_MAX, is_int, is_real
from .first_layer import conv1_fft

__all__ = [
    "ModelConfig", "RetinaCNN", "BN_KINDS", "MAX_HISTORY", "MAX_SIZE", "MAX_CHANNELS", "MAX_KERNEL", "MAX_CELLS",
    "MAX_STATE_NUMBERS", "NORM_UNITS", "BN_EPS"
]

BN_KINDS = ("unit", "channel", "none")


#: Sanity bounds of a :class:`ModelConfig`, generous for real use (the shipped
#: model: history 40, size 50, channels (8, 8), kernels (15, 11), 4 cells,
#: 0.2 M numbers). They keep a crafted checkpoint from making ``load_model``
#: allocate gigabytes before it can tell that the weights do not fit.
MAX_HISTORY = 1000  # frames (10 s)
MAX_SIZE = 1024  # pixels (56 mm)
MAX_CHANNELS = 1024  # units per location, each layer
MAX_KERNEL = 255  # pixels, each layer
MAX_CELLS = 10_000
MAX_STATE_NUMBERS = 100_000_000  # weights and buffers in all (400 MB of float32)
NORM_UNITS = ("contrast", "raw")
#: epsilon of every batch norm in a RetinaCNN (the lab's value; Keras' default)
BN_EPS = 1e-3


def _bounded_int(name: str, value: Any, high: int) -> int:
    """``value`` as an int in 1..high, or a ValueError naming ``name``."""
    if not is_int(value) or not 1 <= value <= high:
        raise ValueError(f"ModelConfig.{name} must be a positive int up to {high}, got {value!r}")
    return int(value)


def _int_pair(name: str, value: Any, high: int) -> tuple[int, int]:
    """``value`` as two ints in 1..high (one per layer), or a ValueError naming ``name``."""
    ok = isinstance(value, (list, tuple, np.ndarray)) and len(value) == 2
    ok = ok and all(is_int(v) and 1 <= v <= high for v in value)
    if not ok:
        raise ValueError(f"ModelConfig.{name} must be two positive ints up to {high} (one per layer), got {value!r}")
    return int(value[0]), int(value[1])


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, str or container)."""
    if not is_real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


FLOAT32_TINY = float(np.finfo(np.float32).tiny)
"""The smallest normal float32 (1.2e-38): a smaller ``norm["std"]`` divides every pixel into infinity."""


def _check_norm(norm: Any) -> None:
    """Refuse a ``norm`` that is not ``{"mean": finite, "std": finite > 0, "units": "contrast"|"raw"}``."""
    expected = ("a dict {'mean': finite number, 'std': finite number > 0, 'units': 'contrast' or 'raw'}, "
                "both within float32 (the precision a stimulus is mapped in)")
    if not isinstance(norm, dict) or set(norm) != {"mean", "std", "units"}:
        got = f"keys {sorted(map(str, norm))}" if isinstance(norm, dict) else repr(norm)
        raise ValueError(f"ModelConfig.norm must be {expected}, got {got}")
    mean, std = norm["mean"], norm["std"]
    bad = [k for k, ok in (("mean", _is_real(mean) and abs(mean) <= FLOAT32_MAX),
                           ("std", _is_real(std) and FLOAT32_TINY <= std <= FLOAT32_MAX),
                           ("units", norm["units"] in NORM_UNITS)) if not ok]
    if bad:
        raise ValueError(f"ModelConfig.norm must be {expected}, got {bad[0]}={norm[bad[0]]!r}")


def _cell_names(names: Any, n_cells: int) -> list[str]:
    """One str name per cell (ints are turned into str); ``[]`` gives ``cell0``, ``cell1``, ..."""
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(c, str) or is_int(c) for c in names
    ):
        raise ValueError(f"ModelConfig.cell_names must be a list of str, got {names!r}")
    names = [str(c) for c in names] or [f"cell{i}" for i in range(n_cells)]
    if len(names) != n_cells:
        raise ValueError(f"ModelConfig has {n_cells} cells but {len(names)} cell names")
    return names


def _batch_norm_shapes(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    """State-dict entries of a BatchNorm over ``n`` features, named under ``prefix``."""
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


@dataclass
class ModelConfig:
    """Architecture and data conventions of a :class:`RetinaCNN`.

    Attributes
    ----------
    history : int
        Frames of stimulus the model sees (10 ms each); 40 = 400 ms. At most
        ``MAX_HISTORY`` (1000 frames, 10 s).
    size : int
        Stimulus width and height in pixels (55 µm each); the stimulus is square.
        At most ``MAX_SIZE`` (1024 pixels).
    channels : tuple of int
        Units per location in conv1 and conv2, e.g. ``(8, 8)``; each at most
        ``MAX_CHANNELS`` (1024).
    kernels : tuple of int
        Spatial kernel sizes of conv1 and conv2 (pixels), e.g. ``(15, 11)``;
        each at most ``MAX_KERNEL`` (255), and both must fit the stimulus.
    n_cells : int
        Number of ganglion cells (outputs); at most ``MAX_CELLS`` (10 000).
    bn : str
        Batch-norm kind: ``"unit"`` (one per unit, BatchNorm1d over the flattened
        layer, as in the lab's model), ``"channel"`` (BatchNorm2d) or ``"none"``.
    noise : float
        Std of the Gaussian noise added after bn1/bn2 in training only (finite, >= 0).
    cell_names : list of str
        One name per cell; defaults to ``cell0``, ``cell1``, ... Integer names (a
        lab's cell ids) are accepted and kept as their text, ``[3, 7]`` → ``["3", "7"]``,
        here and in a checkpoint's config alike (the name is a label; nothing is lost).
    norm : dict
        Stimulus normalisation: ``{"mean": m, "std": s, "units": "contrast"|"raw"}``
        (m finite, s finite and > 0). Inputs are mapped as ``(x - mean) / std``;
        see :func:`napari_retina._validate.as_stimulus`.

    All together the network may hold at most ``MAX_STATE_NUMBERS`` (10^8)
    weights and buffers (see :meth:`state_shapes`). These bounds are far above
    real use and exist so that a crafted checkpoint is refused before the
    network is built. A bad value raises a ValueError naming the field.
    """

    history: int = 40
    size: int = 50
    channels: tuple = (8, 8)
    kernels: tuple = (15, 11)
    n_cells: int = 4
    bn: str = "unit"
    noise: float = 0.05
    cell_names: list = field(default_factory=list)
    norm: dict = field(default_factory=lambda: {"mean": 0.0, "std": 1.0, "units": "contrast"})

    def __post_init__(self) -> None:
        self.history = _bounded_int("history", self.history, MAX_HISTORY)
        self.size = _bounded_int("size", self.size, MAX_SIZE)
        self.n_cells = _bounded_int("n_cells", self.n_cells, MAX_CELLS)
        self.channels = _int_pair("channels", self.channels, MAX_CHANNELS)
        self.kernels = _int_pair("kernels", self.kernels, MAX_KERNEL)
        if self.map_sizes[1] < 1:
            raise ValueError(
                f"ModelConfig: kernels {self.kernels} do not fit a {self.size}x{self.size} stimulus"
            )
        if not isinstance(self.bn, str) or self.bn not in BN_KINDS:
            raise ValueError(f"ModelConfig.bn must be one of {BN_KINDS}, got {self.bn!r}")
        if not _is_real(self.noise) or self.noise < 0:
            raise ValueError(f"ModelConfig.noise must be a finite number >= 0, got {self.noise!r}")
        self.cell_names = _cell_names(self.cell_names, self.n_cells)
        _check_norm(self.norm)
        numbers = sum(math.prod(s) for s in self.state_shapes().values())
        if numbers > MAX_STATE_NUMBERS:
            raise ValueError(
                f"ModelConfig describes a network of {numbers:,} weights and buffers, more than the "
                f"{MAX_STATE_NUMBERS:,} allowed (history {self.history}, size {self.size}, "
                f"channels {self.channels}, kernels {self.kernels}, {self.n_cells} cells)"
            )

    @property
    def map_sizes(self) -> tuple[int, int]:
        """Side lengths (pixels) of the conv1 and conv2 maps (valid convolutions)."""
        h1 = self.size - self.kernels[0] + 1
        return h1, h1 - self.kernels[1] + 1

    @property
    def first_layer_offset(self) -> int:
        """Stimulus pixel under conv1 map pixel 0: map (i, j) sits on (i+k//2, j+k//2)."""
        return self.kernels[0] // 2

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor in a :class:`RetinaCNN`'s ``state_dict()``, without building it.

        ``num_batches_tracked`` entries are 0-d (shape ``()``); everything else
        is float32. Used to check a checkpoint's weights before allocating a network.
        """
        (c1, c2), (k1, k2) = self.channels, self.kernels
        h1, h2 = self.map_sizes
        shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (c1, self.history, k1, k1), "conv1.bias": (c1,)}
        if self.bn == "unit":
            shapes.update(_batch_norm_shapes("bn1.bn", c1 * h1 * h1))
        elif self.bn == "channel":
            shapes.update(_batch_norm_shapes("bn1", c1))
        shapes.update({"conv2.weight": (c2, c1, k2, k2), "conv2.bias": (c2,)})
        if self.bn == "unit":
            shapes.update(_batch_norm_shapes("bn2.bn", c2 * h2 * h2))
        elif self.bn == "channel":
            shapes.update(_batch_norm_shapes("bn2", c2))
        shapes.update({"linear.weight": (self.n_cells, c2 * h2 * h2), "linear.bias": (self.n_cells,)})
        if self.bn != "none":
            shapes.update(_batch_norm_shapes("bn3", self.n_cells))
        return shapes

    def to_dict(self) -> dict:
        """Every field as plain JSON-able values (``channels`` and ``kernels`` as lists), as a checkpoint
        stores the config; :meth:`from_dict` reads it back."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        out["kernels"] = list(self.kernels)
        return out

    @classmethod
    def from_dict(cls, data: dict, complete: bool = False) -> "ModelConfig":
        """Config from a :meth:`to_dict` dict; unknown keys are refused, and missing ones too if ``complete``."""
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a dict of its fields, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = set(map(str, data)) - set(known)
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)} (expected {known})")
        missing = [k for k in known if k not in data]
        if complete and missing:
            raise ValueError(f"the model config lacks keys {missing} (expected all of {known})")
        return cls(**data)


class _UnitBatchNorm(nn.Module):
    """Batch norm with one mean/variance per unit of a (N, C, H, W) layer."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.bn = nn.BatchNorm1d(shape[0] * shape[1] * shape[2], eps=BN_EPS, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.flatten(1)).view(x.shape)


def _layer_norm(kind: str, shape: tuple[int, int, int]) -> nn.Module:
    if kind == "unit":
        return _UnitBatchNorm(shape)
    if kind == "channel":
        return nn.BatchNorm2d(shape[0], eps=BN_EPS, momentum=0.01)
    return nn.Identity()


class RetinaCNN(nn.Module):
    """The two-layer BN-CNN of METHOD.md §1, built from a :class:`ModelConfig`.

    ``forward(x)`` maps windows ``x`` of shape (N, history, size, size), float32
    contrast units, to firing rates (N, n_cells) in spikes per 10 ms bin.

    Example
    -------
    >>> model = RetinaCNN(ModelConfig(n_cells=2)).eval()
    >>> model(torch.zeros(3, 40, 50, 50)).shape
    torch.Size([3, 2])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        (c1, c2), (k1, k2) = config.channels, config.kernels
        h1, h2 = config.map_sizes
        self.conv1 = nn.Conv2d(config.history, c1, k1)
        self.bn1 = _layer_norm(config.bn, (c1, h1, h1))
        self.conv2 = nn.Conv2d(c1, c2, k2)
        self.bn2 = _layer_norm(config.bn, (c2, h2, h2))
        self.linear = nn.Linear(c2 * h2 * h2, config.n_cells)
        self.bn3 = nn.BatchNorm1d(config.n_cells, eps=BN_EPS, momentum=0.01) if config.bn != "none" else nn.Identity()
        #: training provenance (JSON-able), filled by training / checkpoints
        self.provenance: dict[str, Any] = {}
        #: held-out scores (JSON-able), filled by training / evaluation
        self.scores: dict[str, Any] = {}

    @property
    def first_layer_module(self) -> nn.Conv2d:
        """conv1, the layer whose units are attributed (for Captum and hooks)."""
        return self.conv1

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.noise > 0:
            return x + self.config.noise * torch.randn_like(x)
        return x

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 pre-activation z = W⊛x + b: (N, history, H, W) -> (N, C1, h1, h1)."""
        return self.conv1(x)

    def first_layer_windows(self, source: torch.Tensor, idx: ArrayLike, bias: bool = True) -> torch.Tensor:
        """conv1 for the windows ending at frames ``idx`` of a movie, by FFT.

        ``source`` (T, H, W), ``idx`` (n,) frame indices >= history-1 ->
        z (n, C1, h1, h1) equal (to float32 rounding, ~1e-6 relative) to
        ``first_layer(stack of source[t-history+1 : t+1])``; without the bias
        when ``bias=False`` (the linear part W⊛s). See
        :func:`napari_retina.first_layer.conv1_fft`; :class:`napari_retina.first_layer.FirstLayer`
        adds the exact cheap paths for stimuli uniform over space or along an axis.
        """
        z = conv1_fft(self.conv1.weight, source, idx)
        return z + self.conv1.bias.view(1, -1, 1, 1) if bias else z

    def first_layer_activation(self, z: torch.Tensor) -> torch.Tensor:
        """bn1 (+ training noise) and ReLU of conv1's pre-activation."""
        return F.relu(self._noise(self.bn1(z)))

    def from_activation(self, a: torch.Tensor) -> torch.Tensor:
        """Rates (N, n_cells) from the rectified first-layer activation (N, C1, h1, h1)."""
        a2 = F.relu(self._noise(self.bn2(self.conv2(a))))
        return F.softplus(self.bn3(self.linear(a2.flatten(1))))

    def from_first_layer(self, z: torch.Tensor) -> torch.Tensor:
        """Rates (N, n_cells) from conv1's pre-activation z (N, C1, h1, h1)."""
        return self.from_activation(self.first_layer_activation(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_first_layer(self.first_layer(x))

    def first_layer_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """bn1 in eval mode as ``bn1(z) = scale * z + shift``, each (C1, h1, h1)."""
        return self.norm_affine(1)

    def norm_affine(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch norm ``layer`` (1, 2 or 3) in eval mode as ``bn(x) = scale * x + shift``.

        Each is (C, h, h) for layers 1 and 2 (a channel norm's values repeated over
        space) and (n_cells,) for layer 3, in the weights' dtype. Computed in float64
        from the norm's parameters, not as differences of its outputs: those lose the
        digits of a small scale under a large shift (a cell trained never to fire).
        """
        norm = {1: self.bn1, 2: self.bn2, 3: self.bn3}[layer]
        if layer == 3:
            shape: tuple[int, ...] = (self.config.n_cells,)
        else:
            shape = (self.config.channels[layer - 1],) + (self.config.map_sizes[layer - 1],) * 2
        weight = self.conv1.weight
        if isinstance(norm, _UnitBatchNorm):
            norm = norm.bn
        if isinstance(norm, nn.Identity):
            one = torch.ones(shape, dtype=weight.dtype, device=weight.device)
            return one, torch.zeros_like(one)
        f64 = {"dtype": torch.float64}
        scale = norm.weight.to(**f64) / torch.sqrt(norm.running_var.to(**f64) + norm.eps)
        shift = norm.bias.to(**f64) - norm.running_mean.to(**f64) * scale
        scale, shift = scale.to(weight.dtype), shift.to(weight.dtype)
        if scale.numel() == shape[0] and len(shape) == 3:  # a channel norm (BatchNorm2d)
            return scale.view(-1, 1, 1).expand(shape), shift.view(-1, 1, 1).expand(shape)
        return scale.view(shape), shift.view(shape)

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device
