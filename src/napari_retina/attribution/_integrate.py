"""The path integral G = ∫₀¹ ∂F/∂z dα for a chunk of frames (METHOD.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

from .._wrap import is_wrapped
from ._head import Head
from ._quadrature import KINK_RULES, Rule, active_interval, cell_overlap, quadrature_tensors, switch_fraction


#: path points (frames × α) per block when ``batch_size`` is not given, by device type (others: 1024).
#: On an H200, 4096 ran the default attribution of 10,000 frames 1.5× faster than 1024 with conv2 by FFT
#: (0.59 against 0.88 s) and 1.2× with direct conv2 (0.74 against 0.92 s) (BENCHMARKS.md, "GPU rows",
#: 2026-12-04); a block of 4096 points needs about 1 GB of device memory with the shipped model.
BATCH_POINTS: dict[str, int] = {"cpu": 256, "cuda": 4096}


def default_points(device: torch.device) -> int:
    """Path points per block on ``device`` when the caller gives no ``batch_size`` (:data:`BATCH_POINTS`)."""
    return BATCH_POINTS.get(device.type, 1024)


def default_batch_points(model) -> int:
    """Path points per block ``nr.attribute`` uses on ``model`` without ``batch_size``: a wrapped module's
    ``config.batch_size`` (:mod:`._wrapped`; fewer for a heavy module), else :func:`default_points` of the
    model's device (256 on a CPU, 4096 on a CUDA GPU)."""
    return model.config.batch_size if is_wrapped(model) else default_points(model.device)


@dataclass
class _Points:
    """The quadrature's α points and weights as tensors, and its rule."""

    alphas: torch.Tensor  # (m,)
    weights: torch.Tensor  # (m,)
    rule: Rule

    @property
    def kink(self) -> bool:
        return self.rule in KINK_RULES


def _block(head: Head, a0: torch.Tensor, cf: torch.Tensor, interval: Optional[tuple], pts: _Points,
           j0: int, ga: int) -> torch.Tensor:
    """Σ over α points j0 .. j0+ga-1 of the weighted ∂F/∂y1 samples, (nf, C, h, w), for frames ``cf``.

    ``cf`` (nf, 1, C, h, w) is scale·d per frame; ``interval`` the first-layer
    active intervals (kink rules) or None. Per point, the weights of the kink
    rules are ``w1 = |[lo, hi] ∩ cell|`` (exact first-layer switches) and, for
    ``kink_midpoint``, ``w2`` = the fraction of the cell where the tangent of
    u2 at the midpoint is positive; the other rules weight the masked sample
    by their quadrature weight.
    """
    m = len(pts.alphas)
    alpha = pts.alphas[j0 : j0 + ga].view(1, ga, 1, 1, 1)
    u1 = torch.addcmul(a0, alpha, cf)  # (nf, ga, C, h, w)
    mask = u1 > 0
    y = (u1 * mask).flatten(0, 1)
    if pts.kink:
        w1 = cell_overlap(*interval, j0, ga, m)
    else:
        w1 = pts.weights[j0 : j0 + ga].view(1, ga, 1, 1, 1) * mask
    u2 = torch.addcmul(head.u2_zero, head.conv(y), head.scale2)
    if pts.rule == "kink_midpoint":
        # u2 is piecewise linear in α; its tangent at the midpoint places the
        # second-layer switches inside the cell
        slope = head.conv((cf * mask).flatten(0, 1)).mul_(head.scale2).abs_().mul_(1.0 / m)
        w2 = switch_fraction(u2, slope)
    else:
        w2 = u2 > 0
    q = head.vjp(head.grad_a2(u2, scaled=True).mul_(w2))
    return (q.view(cf.shape[0], ga, *q.shape[1:]) * w1).sum(1)


def chunk_rates(head: Head, a0: torch.Tensor, c: torch.Tensor, batch_size: int) -> torch.Tensor:
    """F(s_t), (n,), from c = scale·d (n, C, h, w): u2 at α = 1 in the model's own modules."""
    u2_one = torch.cat([head.u2(F.relu(a0 + c[i : i + batch_size])) for i in range(0, len(c), batch_size)])
    return head.out(F.relu(u2_one))


def path_integral(head: Head, c: torch.Tensor, a0: torch.Tensor, rule: Rule, steps: int,
                  batch_size: int) -> torch.Tensor:
    """Σ over the rule's points of the weighted ∂F/∂y1 samples, (n, C, h, w), for c = scale·d (n, C, h, w).

    Times ``scale`` this is G = ∫ ∂F/∂z dα (:func:`integrate_chunk`). The
    ``steps`` points of ``rule`` (:func:`~._quadrature.quadrature_tensors`) are
    processed as (frames, α) blocks of at most ``batch_size`` points (whole
    frames when ``batch_size >= steps``), so the sum over α is a plain
    reduction. Per frame, the first-layer active interval is computed once.
    Nothing here waits for the device (no host synchronisation).
    """
    n = c.shape[0]
    pts = _Points(*quadrature_tensors(rule, steps, c.dtype, c.device), rule)
    m = steps
    G = torch.zeros_like(c)
    per_frames = max(1, batch_size // m)
    group = min(m, batch_size)
    for f0 in range(0, n, per_frames):
        cf = c[f0 : f0 + per_frames, None]  # (nf, 1, C, h, w)
        interval = active_interval(a0, cf) if pts.kink else None
        for j0 in range(0, m, group):
            G[f0 : f0 + cf.shape[0]] += _block(head, a0, cf, interval, pts, j0, min(group, m - j0))
    return G


def integrate_chunk(head: Head, d: torch.Tensor, a0: torch.Tensor, scale: torch.Tensor, rule: Rule, steps: int,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G = ∫ ∂F/∂z dα for each frame of a chunk, (n, C, h, w), and F(s_t), (n,).

    ``d``: (n, C, h, w) = W⊛s per frame, so z(α) = b + α·d and bn1's output
    is u1(α) = a0 + α·c with a0 = scale·b + shift (C, h, w), c = scale·d.
    ``rule`` at ``steps`` points, batched as in :func:`path_integral`.
    """
    c = scale * d
    return path_integral(head, c, a0, rule, steps, batch_size) * scale, chunk_rates(head, a0, c, batch_size)
