"""How well a trained model's first layer recovers the ground truth's pathways.

A model trained on the synthetic retina (``nr.synthetic.Retina``, e.g. the
shipped default) should learn the circuit's bipolar filters in its conv1
channels. :func:`recovery_report` scores the channels a reduction kept (or
any list of channels) against every pathway of the truth: the Pearson r of the
temporal filters (:func:`napari_retina.metrics.pearson`), the best r of the
spatial filters over small shifts, and whether the reduction's ON/OFF label and
sign agree with the pathway's. :func:`channel_filters` gives the rank-1
description of one channel that the scores use.

Example
-------
>>> from napari_retina.experiments.recovery import recovery_report     # doctest: +SKIP
>>> rep = recovery_report(None, nr.load_model(), nr.synthetic.Retina(), channels=range(8))  # doctest: +SKIP
>>> rep["recovered"]                                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .._types import AnyModel
from .._validate import check_int
from .._wrap import is_wrapped
from ..first_layer import bn1_sign
from ..metrics import pearson
from ..synthetic import Retina

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from ..reduction import Reduction


def _fit_size(img: np.ndarray, k: int) -> np.ndarray:
    """Centre-crop or zero-pad a square image to k × k."""
    n = img.shape[0]
    if n == k:
        return img
    if n > k:
        o = (n - k) // 2
        return img[o : o + k, o : o + k]
    out = np.zeros((k, k))
    o = (k - n) // 2
    out[o : o + n, o : o + n] = img
    return out


def _shifted_corr(a: np.ndarray, b: np.ndarray, max_shift: int) -> float:
    """Largest correlation of image ``a`` with ``b`` shifted by up to ``max_shift`` px (zero fill)."""
    best = -np.inf
    k = a.shape[0]
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            sb = np.zeros_like(b)
            ys, yd = (slice(0, k - dy), slice(dy, k)) if dy >= 0 else (slice(-dy, k), slice(0, k + dy))
            xs, xd = (slice(0, k - dx), slice(dx, k)) if dx >= 0 else (slice(-dx, k), slice(0, k + dx))
            sb[yd, xd] = b[ys, xs]
            best = max(best, pearson(a.ravel(), sb.ravel()))
    return float(best)


def first_kernels(model: AnyModel) -> np.ndarray:
    """The first layer's kernels float64 (C, taps, k, k), index 0 = oldest tap, oriented like the ground truth.

    RetinaCNN: ``conv1.weight`` times the sign of each channel's bn1 scale (so
    that "positive" means light increases the unit's activation). A wrapped
    module (``nr.wrap``) whose first layer is a convolution of the stimulus:
    its kernels as they are (a Conv3d's (C, 1, kt, k, k) as (C, kt, k, k)),
    what follows the layer being unknown. Anything else: one TypeError.
    """
    if is_wrapped(model):
        if model.first_conv is None:
            raise TypeError(f"recovery needs the first layer's kernels, and the wrapped module's first layer "
                            f"{model.config.first_layer!r} is not a convolution of the stimulus")
        w = model.first_conv.weight.detach().double().cpu().numpy()
        return w if w.ndim == 4 else w[:, 0]
    if not hasattr(model, "conv1") or not hasattr(model, "first_layer_affine"):
        raise TypeError(f"model must be a RetinaCNN or a wrapped module (nr.wrap), got {type(model).__name__}")
    return model.conv1.weight.detach().double().cpu().numpy() * bn1_sign(model)[:, None, None, None]


def channel_filters(model: AnyModel, channel: int) -> dict:
    """Rank-1 description of one first-layer channel, oriented like the ground truth.

    The kernel (taps, k, k) of :func:`first_kernels` (RetinaCNN: conv1's
    times the sign of the channel's bn1 scale, so that "positive" means light
    increases the unit's activation), then

    - ``temporal``: float64 (history,) the spatially summed filter in lag order
      (``[τ]`` weighs the frame τ frames ago, like :attr:`napari_retina.synthetic.Pathway.temporal`);
    - ``svd_temporal`` / ``spatial``: the first SVD components of the
      (history, k·k) kernel, the spatial one signed to have a positive sum and
      scaled to unit sum; ``rank1`` the share of the kernel's energy in them.
    """
    w = first_kernels(model)[channel]
    hist, k, _ = w.shape
    lagged = w[::-1]                                        # [τ] = τ frames ago
    u, s, vt = np.linalg.svd(lagged.reshape(hist, k * k), full_matrices=False)
    spatial = vt[0].reshape(k, k)
    temporal_svd = u[:, 0] * s[0]
    if spatial.sum() < 0:
        spatial, temporal_svd = -spatial, -temporal_svd
    total = spatial.sum()
    if abs(total) > 1e-12:
        temporal_svd = temporal_svd * total
        spatial = spatial / total
    return {"temporal": lagged.sum(axis=(1, 2)), "svd_temporal": temporal_svd, "spatial": spatial,
            "rank1": float(s[0] ** 2 / (s ** 2).sum())}


def recovery_report(reduction: Reduction, model: AnyModel, retina: Optional[Retina] = None, threshold: float = 0.8,
                    max_shift: int = 3, channels: Optional[Sequence[int]] = None) -> dict:
    """Match the kept channels of a :class:`~napari_retina.reduction.Reduction` to the ground-truth pathways.

    For a model trained on the synthetic retina (e.g. the shipped default),
    each kept conv1 channel c (``model.conv1.weight[c]``, see
    :func:`channel_filters`) is compared with every filtered input of ``retina``
    (:attr:`~napari_retina.synthetic.Retina.candidates`: every pathway, the gain-control
    pathway and, in version 1, the terminal inhibitor):

    - ``temporal_r``: Pearson r between the channel's spatially summed temporal
      filter and the pathway's temporal filter (lag order, sign included, so an
      ON channel correlates negatively with an OFF pathway);
    - ``spatial_r``: r between the channel's rank-1 spatial profile and the
      pathway's spatial filter, the best over shifts of up to ``max_shift`` px
      (a CNN may place its subunit off the kernel centre);
    - ``match_r`` = min(temporal_r, spatial_r): a match needs both;
    - ``polarity_match`` / ``sign_match``: the reduction's ON/OFF label and sign equal
      the pathway's.

    Each channel is assigned to the candidate with the largest ``match_r``. It
    *recovers* that pathway when ``match_r >= threshold`` and its ``temporal_r`` with
    that pathway exceeds its ``temporal_r`` with every other candidate (closer to it
    than to any other: truth filters can correlate strongly with each other, so a
    channel above threshold for two pathways recovers neither unambiguously).

    Parameters
    ----------
    reduction : Reduction (uses ``kept``, ``sign``, ``polarity``, ``label``), or None with ``channels``.
    model : RetinaCNN trained on the synthetic retina, or a wrapped module (``nr.wrap``) whose
        first layer is a convolution of the stimulus (its kernels, see :func:`first_kernels`).
    retina : the ground truth (default ``Retina()``).
    threshold : correlation needed on both filters to call a pathway recovered.
    channels : channels to score instead of ``reduction.kept`` (e.g. ``range(8)``).

    Returns
    -------
    dict: ``channels`` (one dict per scored channel: ``channel``, ``label`` (the
    reduction's label, the one used in every table), ``pathway`` (best candidate),
    ``temporal_r``, ``spatial_r``, ``match_r``, ``margin`` (its temporal_r minus the next
    best candidate's), ``recovers`` (bool), ``rank1``, ``polarity``, ``polarity_match``,
    ``sign``, ``sign_match``, ``all_temporal_r`` and ``all_spatial_r`` {pathway: r}),
    ``recovered`` {pathway: [channels]}, ``missing`` [pathways], ``threshold``.

    Example
    -------
    >>> red = nr.reduce(nr.attribute(model, stim, cell=0))            # doctest: +SKIP
    >>> nr.experiments.recovery_report(red, model)["recovered"]        # doctest: +SKIP
    {'ON fast': [3], 'ON slow': [5], 'ON tuned': [], 'OFF fast': [0], 'OFF gain': []}
    """
    gt = Retina() if retina is None else retina
    if not isinstance(gt, Retina):
        raise TypeError(f"retina must be an nr.synthetic.Retina, got {type(gt).__name__}")
    kernels = first_kernels(model)
    n_ch = int(kernels.shape[0])
    if channels is None:
        if reduction is None or not hasattr(reduction, "kept"):
            raise TypeError("recovery_report needs a Reduction (nr.reduce) or an explicit list of channels")
        chans = [int(c) for c in reduction.kept]
    else:
        chans = [check_int(int(c), "channel", 0, n_ch) for c in channels]
    bad = [c for c in chans if not 0 <= c < n_ch]
    if bad:
        raise ValueError(f"channels {bad} do not exist: the model has {n_ch} first-layer channels")
    hist, k = int(kernels.shape[1]), int(kernels.shape[2])
    candidates = gt.candidates
    rows = []
    for c in chans:
        f = channel_filters(model, c)
        t_r, s_r = {}, {}
        for q in candidates:
            n = min(hist, len(q.temporal))
            t_r[q.name] = pearson(f["temporal"][:n], q.temporal[:n])
            s_r[q.name] = _shifted_corr(f["spatial"], _fit_size(q.spatial, k), max_shift)
        match = {name: min(t_r[name], s_r[name]) for name in t_r}
        best = max(match, key=lambda name: match[name])
        others = [v for name, v in t_r.items() if name != best]
        margin = float(t_r[best] - max(others)) if others else float("inf")
        q = gt.pathway(best)
        pol = None if reduction is None else str(reduction.polarity[c])
        sgn = None if reduction is None else int(reduction.sign[c])
        rows.append({
            "channel": c, "label": None if reduction is None else reduction.label(c), "pathway": best,
            "temporal_r": t_r[best], "spatial_r": s_r[best], "match_r": match[best], "margin": margin,
            "recovers": bool(match[best] >= threshold and margin > 0),
            "rank1": f["rank1"], "polarity": pol, "polarity_match": None if pol is None else pol == q.polarity,
            "sign": sgn, "sign_match": None if sgn is None else sgn == q.sign,
            "all_temporal_r": t_r, "all_spatial_r": s_r,
        })
    recovered = {q.name: [r["channel"] for r in rows if r["pathway"] == q.name and r["recovers"]] for q in candidates}
    return {"channels": rows, "recovered": recovered,
            "missing": [name for name, cs in recovered.items() if not cs], "threshold": threshold}


def channel_labels(reduction: Reduction, recovery: Optional[dict] = None) -> dict:
    """{kept channel: label}: ``reduction.label(c)``, with "≈ truth <pathway>" for each ground-truth
    pathway ``recovery`` (:func:`recovery_report`) says the channel recovers.

    >>> channel_labels(red, {"recovered": {"ON slow": [6]}})[6]     # doctest: +SKIP
    'A6 ON fast + ≈ truth ON slow'
    """
    found: dict = {}
    for pathway, chans in ((recovery or {}).get("recovered") or {}).items():
        for c in chans:
            found.setdefault(int(c), []).append(pathway)
    return {int(c): reduction.label(c) + (f" ≈ truth {', '.join(found[int(c)])}" if int(c) in found else "")
            for c in reduction.kept}
