"""A synthetic retina with a known circuit: the ground truth for training and analyses.

:class:`Retina` is a documented bipolar → amacrine → ganglion cascade on the
50×50 grid (1 px = 55 µm) at 10 ms per frame, built so that (i) the BN-CNN of
METHOD.md §1 can fit it (every stage is a 40-frame, 15×15 px linear filter,
a rectification, a spatial pooling or a pointwise nonlinearity) and (ii) the
circuit itself shows the four phenomena of METHOD.md §4.

This module is the circuit and the recording of datasets only; what is measured on
it lives above it and imports it: the phenomena (``nr.experiments.phenomena``) and
the scoring of a trained model's first layer against :attr:`Retina.pathways`
(``nr.experiments.recovery_report``).

Circuit (all filters exposed through :attr:`Retina.pathways`; numbers are the
defaults in :data:`DEFAULT_PARAMS`)::

    stimulus s(t, y, x), contrast units
      │ bipolar pathway k: separable filter  u_k = f_k(τ) * (g_k ⊛ s)       (40 frames × 15×15 px)
      │                    subunit output    b_k = max(u_k − θ_k, 0)         (rectified, one per pixel)
      ├─ ON fast   biphasic, peak 30 ms, σ 1.0 px, θ 1.0, w 16  ─┐
      ├─ ON slow   biphasic, peak 90 ms, σ 1.2 px, θ 0.5, w 6   ─┼─ excitatory, pooled by each ganglion cell
      ├─ OFF fast  biphasic, peak 50 ms, σ 1.0 px, θ 0.1, w 10  ─┘  (terminals: b ← max(b − 1.75·G_i ⊛ i, 0))
      ├─ OFF transient inhibitor  band-pass (rebound 0.9), peak 110 ms, σ 1.2 px, θ 0.1
      │                           i = max(u_i − θ_i, 0), pooled over G_i (σ 1.0 px): presynaptic
      │                           inhibition of the OFF fast terminals (``retina.inhibitor``)
      └─ OFF slow  biphasic, peak 70 ms, σ 1.2 px, θ 0.1 ── amacrine a = max(G_a ⊛ b_OFFslow − θ_a, 0)
                                                            (σ_a 2.5 px, θ_a 1.5), inhibitory, w_a 4
    ganglion cell j at (y_j, x_j) (four cells, at the field centre and 3 px away):
      drive_j = Σ_k w_k Σ_xy G_g(x − x_j) b_k  −  w_a Σ_xy G_g(x − x_j) a  + bias     (σ_g 3 px, bias −1.5)
      rate_j  = gain_j · softplus(drive_j)      (spikes per 10 ms bin; gain_j = 1 ± 10%, seeded)

Biphasic filters are differences of two gamma-shaped lobes (:func:`temporal_filter`);
the ganglion pooling and the amacrine pooling are Gaussians over the subunit grid.
The amacrine threshold is high enough that white noise never reaches it: it
is engaged by strong, coherent stimuli (full-field flashes), and a model
trained on white noise cannot learn it.

How the phenomena arise (no adaptation state: every stage is a 40-frame filter, a rectification,
a spatial pooling, a subtraction or a pointwise nonlinearity; ``nr.experiments.phenomena`` reads
them out with the same readouts as for a model):

- omitted-stimulus response: a missing dark flash is a brightening relative to
  the train. The thresholded ON fast pathway sums the rebounds of closely
  spaced flashes and carries the response at short periods (peak ~80 ms after
  the last flash); at longer periods it stays below threshold and the ON slow
  pathway carries it (peak ~190–230 ms): the latency grows with the period,
  the two-pathway mechanism of Tanaka et al. 2019.
- latency coding: stronger dark flashes recruit the thresholded amacrine
  inhibition, which cuts the OFF response short and moves its peak earlier.
- motion anticipation: the over-balanced transient OFF fast filter responds
  to the darkening on the bar's leading flank, so the moving bar's response
  peaks before the bar reaches the receptive-field centre.
- motion reversal: a dark bar that reverses darkens the pixels just behind the
  reversal point twice in quick succession; the ON slow pathway sums the
  rebounds of both darkenings and responds ~3x more after the reversal than
  during the approach. The delayed, transient OFF inhibitor suppresses the OFF
  fast terminals during the bar's steady approach (it is driven by the bar's
  edges ~60 ms after the OFF fast subunits), which would otherwise mask that
  ON slow response: the result is a burst ~280 ms after the reversal at every
  reversal position (burst ratio ≈ 2.2, latency sd ≈ 47 ms with the
  ``nr.experiments`` readout). The inhibitor also sharpens anticipation
  (the OFF fast response to a slowly moving bar is cut on its trailing side).

Example
-------
>>> gt = Retina(seed=0)
>>> stim = nr.stimuli.white_noise(frames=200, seed=1)        # doctest: +SKIP
>>> gt.respond(stim).shape                                    # doctest: +SKIP
(200, 4)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch.nn import functional as F

from ._units import FRAME_MS
from ._validate import as_stack, check_int

HISTORY = 40
"""Temporal filter length of every pathway (frames; 400 ms)."""
KERNEL = 15
"""Spatial support of every bipolar filter (pixels), the CNN's conv1 kernel size."""
SIZE = 50

PathLike = Union[str, os.PathLike]


def _gamma_lobe(lag: np.ndarray, peak: float, order: float) -> np.ndarray:
    """A gamma-shaped lobe over lags (frames) with its maximum 1 at ``peak``."""
    x = np.maximum(lag, 0.0) / peak
    with np.errstate(divide="ignore"):
        out = np.where(x > 0, np.exp(order * (np.log(np.maximum(x, 1e-300)) - x + 1.0)), 0.0)
    return out


def temporal_filter(peak: float, rebound: float, order: float = 3.0, ratio: float = 2.0,
                    history: int = HISTORY) -> np.ndarray:
    """A biphasic bipolar-like temporal filter over lags 0..history-1 (frames).

    ``f(τ) = L(τ; peak) − rebound · L(τ; ratio·peak)`` with gamma-shaped
    lobes ``L`` of height 1, normalised to unit L2 norm and a positive main
    lobe. ``rebound`` near 1 gives a transient (band-pass) filter, near 0 a
    sustained (low-pass) one. ``f[τ]`` weighs the frame ``τ`` frames ago.
    """
    lag = np.arange(history, dtype=np.float64)
    f = _gamma_lobe(lag, peak, order) - rebound * _gamma_lobe(lag, ratio * peak, order)
    return f / np.linalg.norm(f)


def gaussian_2d(sigma: float, size: int = KERNEL) -> np.ndarray:
    """A centred ``size × size`` Gaussian (σ in pixels) with unit sum."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    g2 = np.outer(g, g)
    return g2 / g2.sum()


@dataclass
class Pathway:
    """One ground-truth pathway (a bipolar type; ``role`` says where it goes).

    Attributes
    ----------
    name : e.g. ``"ON fast"``.
    polarity : ``"ON"`` (excited by brightening) or ``"OFF"``.
    kinetics : ``"fast"`` (transient) or ``"slow"`` (sustained).
    sign : +1 excites the ganglion cells, −1 inhibits them (through the amacrine cell).
    role : ``"bipolar"`` (pooled by ganglion cells) or ``"amacrine"`` (feeds the amacrine cell).
    temporal : float64 (history,) ``temporal[τ]`` weighs the frame τ frames (10 ms each) ago;
        sign included (an OFF filter's main lobe is negative).
    spatial : float64 (15, 15) centred spatial filter, unit sum, 1 px = 55 µm.
    threshold : rectification threshold θ of the subunit (contrast-filter units).
    weight : pooling weight into the ganglion cell (or into the amacrine cell).
    peak_ms : latency of the temporal filter's largest tap (ms).
    """

    name: str
    polarity: str
    kinetics: str
    sign: int
    role: str
    temporal: np.ndarray
    spatial: np.ndarray
    threshold: float
    weight: float
    peak_ms: float

    def kernel(self) -> np.ndarray:
        """The pathway's filter in the CNN's conv1 layout: float32 (history, 15, 15).

        Index ``history-1`` is the current frame (the window's last frame),
        as in ``model.conv1.weight[c]``.
        """
        return (self.temporal[::-1, None, None] * self.spatial[None]).astype(np.float32)


#: default circuit parameters (frames, pixels, contrast units); see the module docstring.
#: Each pathway: polarity, kinetics, temporal filter (peak lag in frames, rebound, order),
#: spatial σ (px), rectification threshold, weight onto the ganglion cells ("weight") and
#: onto the amacrine cell ("amacrine").
DEFAULT_PARAMS: dict = {
    "pathways": {
        "ON fast": {"polarity": "ON", "kinetics": "fast", "peak": 3.0, "rebound": 0.45, "order": 3.0,
                    "sigma": 1.0, "threshold": 1.0, "weight": 16.0, "amacrine": 0.0},
        "ON slow": {"polarity": "ON", "kinetics": "slow", "peak": 10.0, "rebound": 0.45, "order": 4.0,
                    "sigma": 1.2, "threshold": 0.5, "weight": 6.0, "amacrine": 0.0},
        "OFF fast": {"polarity": "OFF", "kinetics": "fast", "peak": 6.0, "rebound": 0.6, "order": 3.0,
                     "sigma": 1.0, "threshold": 0.1, "weight": 10.0, "amacrine": 0.0},
        "OFF slow": {"polarity": "OFF", "kinetics": "slow", "peak": 8.0, "rebound": 0.5, "order": 4.0,
                     "sigma": 1.2, "threshold": 0.1, "weight": 0.0, "amacrine": 1.0},
    },
    "amacrine_sigma": 2.5,      # px, wider pooling than the bipolar subunits
    "amacrine_threshold": 1.5,
    "amacrine_weight": 4.0,     # inhibition onto the ganglion cells
    "ganglion_sigma": 3.0,      # px, pooling of subunits by a ganglion cell
    "cells": [[24.5, 24.5], [21.5, 27.5], [27.5, 21.5], [27.5, 27.5]],   # (y, x) px
    "bias": -1.5,
    "gain": 1.0,
    # presynaptic inhibition of the OFF fast terminals by a delayed, transient OFF amacrine
    # (its own 40-frame x 15x15 px filter and threshold, pooled over a Gaussian of σ "sigma" px):
    # b_OFFfast <- max(b_OFFfast - weight * G ⊛ max(u_inh - θ_inh, 0), 0). weight 0 switches it off.
    "terminal_inhibition": {"target": "OFF fast", "polarity": "OFF", "peak": 12.0, "rebound": 0.9, "order": 4.0,
                            "filter_sigma": 1.2, "threshold": 0.1, "sigma": 1.0, "weight": 1.75},
}


class Retina:
    """The ground-truth retina circuit (see the module docstring).

    Parameters
    ----------
    seed : int
        Seeds the spiking noise of :meth:`record` when no seed is given there,
        and the small per-cell gain jitter (±10%); the circuit is otherwise fixed.
    params : dict, optional
        Overrides of :data:`DEFAULT_PARAMS` (top-level keys).

    Attributes
    ----------
    pathways : list of :class:`Pathway` (ON fast, ON slow, OFF fast, OFF slow)
    cell_positions : float64 (n_cells, 2) (y, x) of each ganglion cell, stimulus pixels
    cell_names : list of str
    history, size : 40 frames, 50 px

    Example
    -------
    >>> gt = Retina(seed=0)
    >>> [p.name for p in gt.pathways]
    ['ON fast', 'ON slow', 'OFF fast', 'OFF slow']
    >>> gt.respond(np.zeros((50, 50, 50), np.float32)).shape
    (50, 4)
    """

    history = HISTORY
    size = SIZE

    def __init__(self, seed: int = 0, params: Optional[dict] = None) -> None:
        self.seed = check_int(seed, "seed", 0)
        p = json.loads(json.dumps(DEFAULT_PARAMS))
        if params:
            unknown = set(params) - set(p)
            if unknown:
                raise ValueError(f"unknown Retina parameters {sorted(unknown)}; known: {sorted(p)}")
            p.update(json.loads(json.dumps(params)))
        self.params = p
        self.pathways: list[Pathway] = []
        for name, q in p["pathways"].items():
            f = temporal_filter(q["peak"], q["rebound"], q["order"], q.get("ratio", 2.0))
            if q["polarity"] == "OFF":
                f = -f
            lag = int(np.argmax(np.abs(f)))
            inhibitory = q["weight"] <= 0 and q["amacrine"] > 0
            self.pathways.append(Pathway(name, q["polarity"], q["kinetics"], -1 if inhibitory else 1,
                                         "amacrine" if inhibitory else "bipolar", f, gaussian_2d(q["sigma"]), float(q["threshold"]),
                                         float(q["weight"]), FRAME_MS * lag))
        self._amacrine_in = np.array([q["amacrine"] for q in p["pathways"].values()], dtype=np.float64)
        ti = p["terminal_inhibition"]
        f = temporal_filter(ti["peak"], ti["rebound"], ti["order"], ti.get("ratio", 2.0))
        if ti["polarity"] == "OFF":
            f = -f
        names = [q.name for q in self.pathways]
        if ti["target"] not in names:
            raise ValueError(f"terminal_inhibition target {ti['target']!r} is not a pathway; pathways: {names}")
        self._target = names.index(ti["target"])
        #: the delayed transient amacrine input that inhibits the target pathway's terminals
        #: (a :class:`Pathway` with role "terminal inhibition"; not in :attr:`pathways`)
        self.inhibitor = Pathway("OFF transient inhibitor" if ti["polarity"] == "OFF" else "ON transient inhibitor",
                                 ti["polarity"], "slow", -1, "terminal inhibition", f, gaussian_2d(ti["filter_sigma"]),
                                 float(ti["threshold"]), float(ti["weight"]), FRAME_MS * int(np.argmax(np.abs(f))))
        self.cell_positions = np.asarray(p["cells"], dtype=np.float64).reshape(-1, 2)
        self.n_cells = len(self.cell_positions)
        self.cell_names = [f"gc{i}" for i in range(self.n_cells)]
        rng = np.random.default_rng(self.seed)
        self.cell_gain = p["gain"] * (1.0 + 0.1 * rng.uniform(-1, 1, self.n_cells))
        self._build()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        p = self.params
        bank = self.pathways + [self.inhibitor]           # the inhibitor is filtered with the pathways
        self._spatial = torch.tensor(np.stack([q.spatial for q in bank])[:, None], dtype=torch.float32)
        # conv1d weight for causal filtering: w[i] = f[history-1-i]
        self._temporal = torch.tensor(np.stack([q.temporal[::-1].copy() for q in bank])[:, None],
                                      dtype=torch.float32)
        self._thresholds = torch.tensor([q.threshold for q in bank], dtype=torch.float32)
        self._inhibition_kernel = torch.tensor(gaussian_2d(p["terminal_inhibition"]["sigma"], 15)[None, None],
                                               dtype=torch.float32)
        self._amacrine_kernel = torch.tensor(gaussian_2d(p["amacrine_sigma"], 15)[None, None], dtype=torch.float32)
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float64)
        s = p["ganglion_sigma"]
        pools = []
        for (cy, cx) in self.cell_positions:
            g = np.exp(-0.5 * (((yy - cy) / s) ** 2 + ((xx - cx) / s) ** 2))
            pools.append(g / g.sum())
        #: float64 (n_cells, 50, 50) spatial pooling weights of each ganglion cell
        self.ganglion_pools = np.stack(pools)
        self._pools = torch.tensor(self.ganglion_pools, dtype=torch.float32)

    def pathway(self, name: str) -> Pathway:
        """The :class:`Pathway` called ``name`` (e.g. ``"ON fast"``)."""
        for q in self.pathways:
            if q.name == name:
                return q
        raise ValueError(f"no pathway {name!r}; the retina has {[q.name for q in self.pathways]}")

    def describe(self) -> dict:
        """A JSON-able summary of the circuit (parameters, pathway latencies, cells)."""
        return {
            "params": self.params,
            "seed": self.seed,
            "cell_gain": self.cell_gain.tolist(),
            "pathways": [
                {k: v for k, v in dataclasses.asdict(q).items() if k not in ("temporal", "spatial")}
                for q in self.pathways
            ],
        }

    # ------------------------------------------------------------- responses
    def _check(self, stimulus) -> np.ndarray:
        arr = as_stack(stimulus, "stimulus")
        if arr.shape[1:] != (self.size, self.size):
            raise ValueError(
                f"the synthetic retina sees a {self.size}x{self.size} field, got a stimulus of {arr.shape[1]}x{arr.shape[2]}"
            )
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _stages(self, chunk: torch.Tensor, keep: int) -> dict:
        """All stages for a (T, H, W) chunk; the last ``keep`` frames are returned."""
        n_k = len(self.pathways) + 1                                                # + the inhibitor
        x = F.conv2d(chunk[:, None], self._spatial, padding=KERNEL // 2)          # (T, K+1, H, W)
        T, _, H, W = x.shape
        x = x.permute(2, 3, 1, 0).reshape(H * W, n_k, T)
        x = F.pad(x, (self.history - 1, 0))
        u = F.conv1d(x, self._temporal, groups=n_k)                                # (HW, K, T)
        u = u.reshape(H, W, n_k, T).permute(3, 2, 0, 1)[-keep:]                     # (keep, K, H, W)
        b = torch.relu(u - self._thresholds.view(1, -1, 1, 1))
        inh = F.conv2d(b[:, -1:], self._inhibition_kernel, padding=7)[:, 0]         # (keep, H, W)
        u, b = u[:, :-1], b[:, :-1].clone()
        k = self._target
        b[:, k] = torch.relu(b[:, k] - self.inhibitor.weight * inh)
        ama_in = torch.einsum("tkhw,k->thw", b, torch.tensor(self._amacrine_in, dtype=torch.float32))
        a = torch.relu(F.conv2d(ama_in[:, None], self._amacrine_kernel, padding=7)[:, 0]
                       - self.params["amacrine_threshold"])
        exc = torch.einsum("tkhw,k->thw", b, torch.tensor([q.weight for q in self.pathways], dtype=torch.float32))
        net = exc - self.params["amacrine_weight"] * a                               # (keep, H, W)
        drive = torch.einsum("thw,chw->tc", net, self._pools) + self.params["bias"]
        return {"u": u, "b": b, "amacrine": a, "inhibition": inh, "drive": drive}

    def _run(self, stimulus, what: str = "rates", chunk: int = 2000) -> np.ndarray:
        stim = torch.from_numpy(self._check(stimulus))
        outs = []
        with torch.no_grad():
            for start in range(0, len(stim), chunk):
                lo = max(0, start - (self.history - 1))
                block = stim[lo : start + chunk]
                st = self._stages(block, keep=len(block) - (start - lo))
                if what == "rates":
                    outs.append((torch.nn.functional.softplus(st["drive"]) * torch.tensor(self.cell_gain, dtype=torch.float32)).numpy())
                else:
                    outs.append(st[what].numpy())
        return np.concatenate(outs).astype(np.float32)

    def contributions(self, stimulus, cell: int = 0) -> dict:
        """Each pathway's share of one cell's drive, float32 (T,) each.

        Keys: the pathway names (excitatory bipolar input, ``weight × pooled
        subunit output``), ``"amacrine"`` (the inhibition, negative) and
        ``"bias"``; they sum to :meth:`drive`.
        """
        cell = check_int(cell, f"cell (the retina has {self.n_cells} cells)", 0, self.n_cells)
        b = self._run(stimulus, "b")
        a = self._run(stimulus, "amacrine")
        pool = self.ganglion_pools[cell].astype(np.float32)
        out = {q.name: q.weight * np.einsum("thw,hw->t", b[:, i], pool) for i, q in enumerate(self.pathways)}
        out["amacrine"] = -self.params["amacrine_weight"] * np.einsum("thw,hw->t", a, pool)
        out["bias"] = np.full(len(a), self.params["bias"], np.float32)
        return out

    def respond(self, stimulus) -> np.ndarray:
        """True firing rates of every ganglion cell, aligned to stimulus frames.

        Parameters
        ----------
        stimulus : array (T, 50, 50), contrast units (0 = mean luminance); frames
            before the first are taken to be mean grey.

        Returns
        -------
        float32 (T, n_cells), spikes per 10 ms bin (expected counts), all finite.

        Example
        -------
        >>> Retina().respond(np.zeros((3, 50, 50), np.float32)).round(3).shape
        (3, 4)
        """
        return self._run(stimulus, "rates")

    def drive(self, stimulus) -> np.ndarray:
        """Ganglion-cell drive before the output nonlinearity, float32 (T, n_cells)."""
        return self._run(stimulus, "drive")

    def bipolar(self, stimulus) -> np.ndarray:
        """Rectified subunit outputs of every pathway, float32 (T, K, 50, 50)."""
        return self._run(stimulus, "b")

    def record(self, stimulus, seed: Optional[int] = None, repeats: Optional[int] = None) -> np.ndarray:
        """Poisson spike counts in 10 ms bins.

        Returns float32 (T, n_cells) counts, or (repeats, T, n_cells) when
        ``repeats`` is given. ``seed`` (default: the retina's seed) makes the
        noise reproducible.

        Example
        -------
        >>> gt = Retina(seed=0)
        >>> counts = gt.record(np.zeros((20, 50, 50), np.float32), seed=3)
        >>> counts.shape, bool((counts == np.round(counts)).all())
        ((20, 4), True)
        """
        rates = self.respond(stimulus)
        rng = np.random.default_rng(self.seed if seed is None else check_int(seed, "seed", 0))
        if repeats is None:
            return rng.poisson(rates.astype(np.float64)).astype(np.float32)
        reps = check_int(repeats, "repeats", 1)
        return rng.poisson(rates.astype(np.float64), size=(reps,) + rates.shape).astype(np.float32)


# ---------------------------------------------------------------------------
# datasets

#: default white noise of the synthetic datasets, the shipped model's (docs/MODEL.md): binary ±2 on
#: 4 px (220 µm) checkers, each frame grey with probability 0.5. The true rates of the four cells
#: then average ~2.9 spikes per 10 ms bin (sd ~2.3); grey alone gives ~0.2.
DATASET_FRAMES = 30000
DATASET_CHECKER = 4
DATASET_CONTRAST = 2.0
DATASET_GREY = 0.5


def make_dataset(
    path: PathLike,
    frames: int = DATASET_FRAMES,
    test_frames: int = 2000,
    repeats: int = 10,
    seed: int = 0,
    checker: int = DATASET_CHECKER,
    retina: Optional[Retina] = None,
    progress=None,
    contrast: float = DATASET_CONTRAST,
    kind: str = "binary",
    grey: float = DATASET_GREY,
):
    """Write a white-noise dataset of the synthetic retina in the lab's HDF5 layout.

    ``train``: ``frames`` frames of white noise (``kind`` "binary": ±``contrast``, or
    "gaussian" with standard deviation ``contrast``; ``checker`` px checkers; each frame grey
    with probability ``grey``, see ``nr.stimuli.white_noise``; seed ``seed``) and one trial of
    Poisson spike counts per 10 ms bin.
    ``test``: ``test_frames`` frames of another white noise (seed ``seed + 1``),
    ``repeats`` trials (``test/repeats/cellNN``), their mean as the test rates,
    and the true rates under ``test/true_rates`` (cells, T) with the attribute
    ``synthetic=1``. Recorded and written by :func:`record_dataset`, so the same
    training code reads it as it reads a lab's recordings.

    Returns the path. ``progress(done, 4)`` is called after each stage.

    Example
    -------
    >>> make_dataset("wn.h5", frames=2000, test_frames=300)       # doctest: +SKIP
    """
    from .stimuli import white_noise

    frames = check_int(frames, "frames", HISTORY + 1)
    test_frames = check_int(test_frames, "test_frames", HISTORY)
    seed = check_int(seed, "seed", 0)
    checker = check_int(checker, "checker", 1)
    train = white_noise(frames, SIZE, seed, checker=checker, kind=kind, contrast=contrast, grey=grey)
    test = white_noise(test_frames, SIZE, seed + 1, checker=checker, kind=kind, contrast=contrast, grey=grey)
    return record_dataset(path, train, test, repeats=repeats, seed=seed, retina=retina, progress=progress,
                          attrs={"source": "napari_retina.synthetic.make_dataset", "checker_px": checker,
                                 "contrast": float(contrast), "kind": kind, "grey": float(grey)})


def record_dataset(path: PathLike, train, test, repeats: int = 10, seed: int = 0,
                   retina: Optional[Retina] = None, progress=None, attrs: Optional[dict] = None):
    """Record the synthetic retina's responses to any stimuli and write them as a dataset.

    Parameters
    ----------
    path : the HDF5 file to write (atomically; the lab's layout, ``nr.io.write_dataset``).
    train : array (T, 50, 50), contrast units; recorded once (Poisson counts per 10 ms bin).
    test : array (T_test, 50, 50); recorded ``repeats`` times, their mean is the test rates.
    repeats : number of test trials (>= 1).
    seed : seeds the spiking noise (``numpy.random.default_rng([seed, 1])``: train, then test).
    retina : the circuit (default ``Retina(seed=0)``).
    progress : ``progress(done, 4)`` after each stage.
    attrs : extra file attributes describing the stimulus (JSON-able values).

    The true rates are stored too, (cells, T) under ``train/true_rates`` and
    ``test/true_rates``, with the file attribute ``synthetic=1``; returns the path.

    Example
    -------
    >>> stim = nr.stimuli.white_noise(3000, checker=2, contrast=2.0, grey=0.9)   # doctest: +SKIP
    >>> record_dataset("mine.h5", stim[:2500], stim[2500:])                       # doctest: +SKIP
    """
    from . import io
    from ._progress import report

    repeats = check_int(repeats, "repeats", 1)
    seed = check_int(seed, "seed", 0)
    gt = Retina(seed=0) if retina is None else retina
    if not isinstance(gt, Retina):
        raise TypeError(f"retina must be an nr.synthetic.Retina, got {type(gt).__name__}")
    train, test = gt._check(train), gt._check(test)
    if len(train) <= HISTORY or len(test) < HISTORY:
        raise ValueError(f"the training stimulus needs more than {HISTORY} frames and the test stimulus at "
                         f"least {HISTORY} (the filters' history), got {len(train)} and {len(test)}")
    path = os.fspath(path)
    report(progress, 0, 4)
    train_true = gt.respond(train)
    rng = np.random.default_rng([seed, 1])
    train_counts = rng.poisson(train_true.astype(np.float64)).astype(np.float32)
    report(progress, 1, 4)
    test_true = gt.respond(test)
    reps = rng.poisson(test_true.astype(np.float64), size=(repeats,) + test_true.shape).astype(np.float32)
    report(progress, 2, 4)
    ds = io.Dataset(
        train=io.Split(train, train_counts),
        test=io.Split(test, reps.mean(0), np.ascontiguousarray(reps.transpose(2, 0, 1))),
        cell_names=list(gt.cell_names),
        attrs={
            "synthetic": 1,
            "source": "napari_retina.synthetic.record_dataset",
            "retina": json.dumps(gt.describe()),
            "seed": seed,
            **(attrs or {}),
            "units": "spike counts per 10 ms bin (train: one trial; test: mean of repeats)",
        },
    )

    def fill(h5) -> None:
        io._fill_dataset(h5, ds)
        h5["test/true_rates"] = test_true.T
        h5["test/true_rates"].attrs["units"] = "expected spikes per 10 ms bin (ground truth)"
        h5["train/true_rates"] = train_true.T
        h5["train/true_rates"].attrs["units"] = "expected spikes per 10 ms bin (ground truth)"

    report(progress, 3, 4)
    out = io._atomic_h5(path, fill)  # one temporary file: none left behind by a nested write
    report(progress, 4, 4)
    return out
