"""Collapsing a linear stack of small convolutions into one k×k convolution (exact, float64).

torch-deep-retina's ``LinearStackedConv2d`` builds a k×k kernel from a chain
of small (3×3) valid convolutions with no nonlinearity between them, optionally
with per-channel batch norms (affine in eval mode) and dropout (identity in
eval mode) in between. The chain is one affine map, a single valid convolution
with kernel side ``sum(k_i - 1) + 1``; the lab's ``utils.stacked2conv`` replaces
the stack by it. :func:`collapse` computes it layer by layer:

- conv ``(V, c)`` after ``(W, b)``: ``W'[o, i] = sum_m V[o, m] * W[m, i]`` where
  ``*`` is the full 2-D convolution of the two kernels (so that correlating with
  ``W'`` equals correlating with ``W`` then ``V``), and
  ``b'[o] = c[o] + sum_{m, y, x} V[o, m, y, x] * b[m]``;
- channel affine ``(s, t)`` after ``(W, b)``: ``W' = s W``, ``b' = s b + t``.

The work grows with the number of convolutions times the square of the growing
kernel: :func:`collapse_cost` tells it from the shapes alone, so a reader can
refuse a stack beyond :data:`MAX_STACKED_CONVS` or :data:`MAX_COLLAPSE_MACS`
before any of it is computed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

#: a layer of a stack: ("conv", weight (out, in, k, k), bias (out,) or None) or ("affine", scale (C,), shift (C,))
Layer = tuple[str, torch.Tensor, Optional[torch.Tensor]]

MAX_STACKED_CONVS = 64
"""Most convolutions one stack may have. torch-deep-retina's have a handful: its default kernels
(15, 11) are stacks of 7 and 5 3x3 convolutions, and a kernel as wide as its 50-pixel field 25."""
MAX_COLLAPSE_MACS = 20_000_000_000
"""Most multiply-adds collapsing one stack may take (seconds on one core). The lab's 15-pixel stack of
8 channels over 40 frames takes 1.5e7, a 25-pixel stack of 64 channels 4.3e9."""


def compose(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """Kernel of correlating with ``first`` (M, I, a, a) then ``then`` (O, M, b, b): (O, I, a+b-1, a+b-1).

    ``W[o, i, p, q] = sum_{m, y, x} then[o, m, y, x] * first[m, i, p - y, q - x]``,
    computed as a correlation of the zero-padded ``first`` with the flipped ``then``.
    """
    pad = then.shape[-1] - 1
    source = F.pad(first.transpose(0, 1), (pad, pad, pad, pad))      # (I, M, a+2b-2, a+2b-2)
    return F.conv2d(source, then.flip(-1, -2)).transpose(0, 1).contiguous()


def collapse_cost(layers: list[Layer]) -> tuple[int, int]:
    """(K, multiply-adds) of :func:`collapse` on ``layers``, from their shapes alone: the collapsed kernel
    side K = sum(k_i - 1) + 1 and the work of composing each convolution onto the kernel so far.

    The convolutions must be 4-D with square kernels, each taking the previous one's channels.
    """
    side, work = 0, 0
    for kind, weight, _ in layers:
        if kind != "conv":
            continue
        out, inputs, k = (int(n) for n in weight.shape[:3])
        if side == 0:
            side, first_inputs = k, inputs
            continue
        side += k - 1
        work += first_inputs * out * inputs * side * side * k * k      # compose(): one conv2d
    return side, work


def collapse(layers: list[Layer]) -> tuple[torch.Tensor, torch.Tensor]:
    """One (weight, bias) equal to applying ``layers`` in order (float64, valid convolutions).

    The first layer must be a convolution. Returns weight (out, in, K, K) with
    K = sum(k_i - 1) + 1 and bias (out,).
    """
    kind, weight, bias = layers[0]
    if kind != "conv":
        raise ValueError("a stack of convolutions must start with a convolution")
    w = weight.to(torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.to(torch.float64)
    for kind, first, second in layers[1:]:
        if kind == "conv":
            v = first.to(torch.float64)
            c = torch.zeros(v.shape[0], dtype=torch.float64) if second is None else second.to(torch.float64)
            b = c + (v.sum(dim=(2, 3)) @ b)
            w = compose(w, v)
        else:
            s, t = first.to(torch.float64), second.to(torch.float64)
            w = s.view(-1, 1, 1, 1) * w
            b = s * b + t
    return w, b
