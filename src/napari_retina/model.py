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
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

BN_KINDS = ("unit", "channel", "none")


@dataclass
class ModelConfig:
    """Architecture and data conventions of a :class:`RetinaCNN`.

    Attributes
    ----------
    history : int
        Frames of stimulus the model sees (10 ms each); 40 = 400 ms.
    size : int
        Stimulus width and height in pixels (55 µm each); the stimulus is square.
    channels : tuple of int
        Units per location in conv1 and conv2, e.g. ``(8, 8)``.
    kernels : tuple of int
        Spatial kernel sizes of conv1 and conv2 (pixels), e.g. ``(15, 11)``.
    n_cells : int
        Number of ganglion cells (outputs).
    bn : str
        Batch-norm kind: ``"unit"`` (one per unit, BatchNorm1d over the flattened
        layer, as in the lab's model), ``"channel"`` (BatchNorm2d) or ``"none"``.
    noise : float
        Std of the Gaussian noise added after bn1/bn2 in training only.
    cell_names : list of str
        One name per cell; defaults to ``cell0``, ``cell1``, ...
    norm : dict
        Stimulus normalisation: ``{"mean": m, "std": s, "units": "contrast"|"raw"}``.
        Inputs are mapped as ``(x - mean) / std``; see :func:`napari_retina._validate.as_stimulus`.
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
        self.channels = tuple(int(c) for c in self.channels)
        self.kernels = tuple(int(k) for k in self.kernels)
        for name in ("history", "size", "n_cells"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if len(self.channels) != 2 or len(self.kernels) != 2 or min(self.channels + self.kernels) < 1:
            raise ValueError(
                "ModelConfig.channels and .kernels must be two positive ints each, "
                f"got channels={self.channels}, kernels={self.kernels}"
            )
        if self.map_sizes[1] < 1:
            raise ValueError(
                f"ModelConfig: kernels {self.kernels} do not fit a {self.size}x{self.size} stimulus"
            )
        if self.bn not in BN_KINDS:
            raise ValueError(f"ModelConfig.bn must be one of {BN_KINDS}, got {self.bn!r}")
        if not self.cell_names:
            self.cell_names = [f"cell{i}" for i in range(self.n_cells)]
        self.cell_names = [str(c) for c in self.cell_names]
        if len(self.cell_names) != self.n_cells:
            raise ValueError(
                f"ModelConfig has {self.n_cells} cells but {len(self.cell_names)} cell names"
            )
        if float(self.norm.get("std", 1.0)) <= 0:
            raise ValueError(f"ModelConfig.norm['std'] must be > 0, got {self.norm.get('std')!r}")

    @property
    def map_sizes(self) -> tuple[int, int]:
        """Side lengths (pixels) of the conv1 and conv2 maps (valid convolutions)."""
        h1 = self.size - self.kernels[0] + 1
        return h1, h1 - self.kernels[1] + 1

    @property
    def first_layer_offset(self) -> int:
        """Stimulus pixel under conv1 map pixel 0: map (i, j) sits on (i+k//2, j+k//2)."""
        return self.kernels[0] // 2

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        out["kernels"] = list(self.kernels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)


class _UnitBatchNorm(nn.Module):
    """Batch norm with one mean/variance per unit of a (N, C, H, W) layer."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.bn = nn.BatchNorm1d(shape[0] * shape[1] * shape[2], eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.flatten(1)).view(x.shape)


def _layer_norm(kind: str, shape: tuple[int, int, int]) -> nn.Module:
    if kind == "unit":
        return _UnitBatchNorm(shape)
    if kind == "channel":
        return nn.BatchNorm2d(shape[0], eps=1e-3, momentum=0.01)
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
        self.bn3 = nn.BatchNorm1d(config.n_cells, eps=1e-3, momentum=0.01) if config.bn != "none" else nn.Identity()
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

    def first_layer_movie(self, frames: torch.Tensor) -> torch.Tensor:
        """conv1 pre-activation for every full window of a movie, computed frame by frame.

        ``frames`` (n + history - 1, H, W) -> z (n, C1, h1, h1), where z[j] equals
        ``first_layer(frames[j : j + history][None])[0]``. Each frame is convolved
        once with all C1 × history kernels (one well-shaped convolution with one
        input channel) and the results are summed along the lags, instead of
        convolving every 40-frame window again. Same FLOPs, no window copies.
        Temporary memory: (n + history - 1) × C1 × history × h1² floats.
        """
        c1, hist = self.config.channels[0], self.config.history
        n = frames.shape[0] - hist + 1
        if n < 1:
            raise ValueError(f"first_layer_movie needs at least {hist} frames, got {frames.shape[0]}")
        k = self.conv1.weight.shape[-1]
        per_frame = F.conv2d(frames[:, None], self.conv1.weight.reshape(c1 * hist, 1, k, k))
        per_frame = per_frame.view(frames.shape[0], c1, hist, *per_frame.shape[-2:])
        z = per_frame[hist - 1 :, :, hist - 1] + self.conv1.bias.view(1, c1, 1, 1)
        for lag in range(hist - 1):
            z += per_frame[lag : lag + n, :, lag]
        return z

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
        c1 = self.config.channels[0]
        h1 = self.config.map_sizes[0]
        bn = self.bn1.bn if isinstance(self.bn1, _UnitBatchNorm) else self.bn1
        if isinstance(bn, nn.Identity):
            one = torch.ones(c1, h1, h1, device=self.conv1.weight.device)
            return one, torch.zeros_like(one)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        if isinstance(self.bn1, _UnitBatchNorm):
            return scale.view(c1, h1, h1), shift.view(c1, h1, h1)
        return (scale.view(c1, 1, 1).expand(c1, h1, h1), shift.view(c1, 1, 1).expand(c1, h1, h1))

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device
