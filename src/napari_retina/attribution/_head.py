"""The network above conv1 as affine maps, split where the quadrature needs it (eval mode)."""

from __future__ import annotations

from typing import Literal, Optional, get_args

import torch
from torch.nn import functional as F

from ..model import RetinaCNN

Conv2Method = Literal["direct", "channels_last", "fft"]
CONV2_METHODS: tuple[str, ...] = get_args(Conv2Method)

#: how conv2 and its transpose run at each quadrature point, by device type (others: "direct").
#: "direct" (F.conv2d / conv_transpose2d) is ~1.3× faster than "fft" on a 2-core CPU (BENCHMARKS.md);
#: "channels_last" runs the forward convolutions in channels_last as well as the transpose (cuDNN's
#: NHWC kernels), ~1.04× slower than "direct" on that CPU (within its noise).
#: "fft" does ~17× fewer operations for the shipped 8→8-channel 11×11 conv2 (an FFT counted as
#: 2.5·N·log₂N). On an H200 it ran the default attribution of 10,000 frames 1.26× faster than "direct"
#: at 4096 points per block (0.59 against 0.74 s), in strict float32 where cuDNN's direct convolutions
#: use TF32 (their maps 4e-4 of the largest apart; BENCHMARKS.md, "GPU rows", 2026-12-04).
#: ``benchmarks/gpu_rows.py`` row V times each.
CONV2_METHOD: dict[str, Conv2Method] = {"cpu": "direct", "cuda": "fft"}


class FFTConv2:
    """conv2 without bias, and its transpose, by FFTs of the h1 × h1 first-layer map (exact: no wrap-around).

    conv2 is a valid cross-correlation (h1 → h2 = h1 − k + 1): the cyclic
    correlation of size h1 agrees with it on [0, h2)², because i + k < h1
    there. Its transpose is a full convolution (h2 → h1 = h2 + k − 1), which
    the cyclic convolution of size h1 computes without wrap-around. The
    channel sums are complex (C2 × C1) products per spatial frequency.
    """

    def __init__(self, weight: torch.Tensor, h1: int) -> None:
        self.h1, self.h2 = h1, h1 - weight.shape[-1] + 1
        self.spectrum = torch.fft.rfft2(weight, s=(h1, h1))  # (C2, C1, h1, h1 // 2 + 1)
        self.spectrum_conj = self.spectrum.conj().resolve_conj()

    def conv(self, y: torch.Tensor) -> torch.Tensor:
        """(N, C1, h1, h1) -> (N, C2, h2, h2), as F.conv2d(y, weight)."""
        spec = torch.einsum("nihw,oihw->nohw", torch.fft.rfft2(y), self.spectrum_conj)
        return torch.fft.irfft2(spec, s=(self.h1, self.h1))[..., : self.h2, : self.h2]

    def transpose(self, g: torch.Tensor) -> torch.Tensor:
        """(N, C2, h2, h2) -> (N, C1, h1, h1), as F.conv_transpose2d(g, weight)."""
        spec = torch.einsum("nohw,oihw->nihw", torch.fft.rfft2(g, s=(self.h1, self.h1)), self.spectrum)
        return torch.fft.irfft2(spec, s=(self.h1, self.h1))


class Head:
    """The network above conv1 for the summed rate ``F`` of ``cells`` (eval mode, no parameter gradients).

    ``u2 = bn2(conv2(y))`` is affine in the rectified first-layer activation y
    (C1, h1, h1) (eval batch norm): ``u2 = scale2·conv2₀(y) + u2_zero`` with
    ``conv2₀`` conv2 without bias, so its tangent and its vector-Jacobian
    product are conv2₀ and its transpose scaled by ``scale2``. The output head
    ``F = Σ_cells softplus(scale3·(L·a2 + b) + shift3)`` is differentiated by
    hand: ``∂F/∂a2 = Σ_cells σ(·)·scale3·L_cell`` (no autograd). Both splits
    are checked against the model at construction. ``conv2``: how
    :meth:`conv` and :meth:`vjp` run (default: :data:`CONV2_METHOD` of the
    model's device type).
    """

    def __init__(self, net: RetinaCNN, cells: list[int], conv2: Optional[Conv2Method] = None) -> None:
        self.net, self.cells = net, cells
        p = net.conv2.weight
        self.weight2 = p
        # the transposed conv2 runs ~2× faster on CPU in channels_last (BENCHMARKS.md)
        self.weight2_cl = p.contiguous(memory_format=torch.channels_last)
        c1, h1 = net.config.channels[0], net.config.map_sizes[0]
        method = CONV2_METHOD.get(p.device.type, "direct") if conv2 is None else conv2
        if method not in CONV2_METHODS:
            raise ValueError(f"conv2 must be one of {', '.join(map(repr, CONV2_METHODS))}, got {method!r}")
        self.fft = FFTConv2(p, h1) if method == "fft" else None
        self.channels_last = method == "channels_last"
        zero = torch.zeros(1, c1, h1, h1, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            self.u2_zero = net.bn2(net.conv2(zero))
            self.scale2 = net.norm_affine(2)[0][None]  # (1, C2, h2, h2)
            scale3, shift3 = net.norm_affine(3)
            self.shift3, self.scale3 = shift3[cells], scale3[cells]
            self.lin_w = net.linear.weight[cells]  # (n_cells, C2·h2²)
            self.lin_b = net.linear.bias[cells]
            # ∂F/∂u2 through the mask is (∂F/∂a2)·w2; fold scale2 into the rows of L
            self.lin_w_scaled = self.lin_w * self.scale2.flatten()[None]
        self._check(zero)

    def _check(self, zero: torch.Tensor) -> None:
        """Refuse a model whose forward pass no longer matches this split (a structural guard)."""
        net, p = self.net, self.weight2
        with torch.no_grad():
            check = self.rates(zero)[0]
            expected = net.from_activation(zero)[0, self.cells].sum()
            probe = torch.randn(2, *self.u2_zero.shape[1:], generator=torch.Generator().manual_seed(0))
            probe = probe.to(dtype=p.dtype, device=p.device)
        a2 = F.relu(probe).requires_grad_(True)
        with torch.enable_grad():
            (auto,) = torch.autograd.grad(self.out(a2).sum(), a2)
        with torch.no_grad():
            manual = self.grad_a2(probe)
        ok = torch.allclose(check, expected, rtol=1e-5, atol=1e-6)
        ok = ok and torch.allclose(manual, auto, rtol=1e-4, atol=1e-6 * float(auto.abs().max()) + 1e-12)
        if not ok:  # pragma: no cover - structural guard
            raise RuntimeError("RetinaCNN.from_activation no longer matches the attribution's split of the network")

    def u2(self, y: torch.Tensor) -> torch.Tensor:
        """bn2(conv2(y)), (N, C2, h2, h2), in the model's own modules."""
        return self.net.bn2(self.net.conv2(y))

    def rates(self, y: torch.Tensor) -> torch.Tensor:
        """F (N,) from the rectified first-layer activation y (N, C1, h1, h1)."""
        return self.out(F.relu(self.u2(y)))

    def out(self, a2: torch.Tensor) -> torch.Tensor:
        """F (N,) from the rectified second-layer activation a2 (N, C2, h2, h2)."""
        net = self.net
        return F.softplus(net.bn3(net.linear(a2.flatten(1))))[:, self.cells].sum(1)

    def grad_a2(self, u2: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        """∂F/∂a2 at a2 = relu(u2), (N, C2, h2, h2); times scale2 if ``scaled``."""
        a2 = F.relu(u2).flatten(1)
        pre = torch.addmm(self.lin_b, a2, self.lin_w.T) * self.scale3 + self.shift3
        g = torch.sigmoid(pre) * self.scale3  # softplus' = sigmoid (float32: equal to 1 past softplus's threshold 20)
        return (g @ (self.lin_w_scaled if scaled else self.lin_w)).view(u2.shape)

    def conv(self, y: torch.Tensor) -> torch.Tensor:
        """conv2 without bias: (N, C1, h1, h1) -> (N, C2, h2, h2)."""
        if self.fft is not None:
            return self.fft.conv(y)
        if self.channels_last:
            return F.conv2d(y.contiguous(memory_format=torch.channels_last), self.weight2_cl)
        return F.conv2d(y, self.weight2)

    def vjp(self, g: torch.Tensor) -> torch.Tensor:
        """conv2's transpose: (N, C2, h2, h2) -> (N, C1, h1, h1) (direct: in channels_last, and so is the result)."""
        if self.fft is not None:
            return self.fft.transpose(g)
        return F.conv_transpose2d(g.contiguous(memory_format=torch.channels_last), self.weight2_cl)
