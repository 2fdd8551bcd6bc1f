"""Model reduction: the few first-layer channels that carry a response (METHOD.md §3).

Given an :class:`~napari_retina.attribution.Attribution` of a cell's response to a
stimulus, :func:`reduce` decides, automatically and reproducibly (no hand-picked
channels, no hand-tuned thresholds):

- **importance** of channel c: its share of ``Σ_t |A_c(t)|`` over the attributed frames;
- **kept** channels: the smallest set whose summed attribution ``Σ_{c∈S} A_c(t)``
  explains at least ``explain`` of the variance of the response ``F(s_t) − F(0)``
  (exhaustive search over subsets for up to 12 channels, greedy forward selection
  above that); listed most important first;
- **sign**: +1 (excitatory) / −1 (inhibitory), the sign of ``Σ_t A_c(t)`` on this stimulus;
- **polarity, latency, kinetics** of every channel from its conv1 kernel alone
  (a property of the model, not of the stimulus):
  :func:`napari_retina.first_layer.filter_properties`; for a wrapped module
  (``nr.wrap``) from its first convolution's kernels
  (:func:`napari_retina._wrap.filter_labels`), and omitted (None) when its
  first layer is not a convolution of the stimulus;
- a **reduced circuit** fitted to the full model on the stimulus, see :func:`reduce`.

Example
-------
>>> attr = nr.attribute(model, stim, cell=0)        # doctest: +SKIP
>>> red = nr.reduce(attr, explain=0.9)              # doctest: +SKIP
>>> [red.label(c) for c in red.kept]                # doctest: +SKIP
['A3 ON fast +', 'A5 ON slow +']
>>> red.explained_variance                          # doctest: +SKIP
0.93
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Union, get_args

import numpy as np
import torch
from torch.nn import functional as F

from ._frames import batches, gather_windows
from ._invariance import InvarianceArg
from ._json import jsonable
from ._predict import callers_modes
from ._progress import Progress, report
from ._units import FRAME_MS
from ._validate import check_finite_output, check_int, frames_per_chunk, is_real, stimulus_tensor
from .first_layer import DEFAULT_IGNORE_OLDEST_MS, FirstLayer, filter_properties
from ._wrap import WrappedModel, filter_labels, is_wrapped, private_copy
from .metrics import MapMeans, explained_variance

if TYPE_CHECKING:  # attribution and the model are only read here
    from .attribution import Attribution
    from .model import RetinaCNN

__all__ = [
    "Reduction", "is_flat", "select_channels", "compute_drives", "compute_wrapped_drives", "fit_output",
    "check_explain", "reduce", "DEFAULT_EXPLAIN", "EXHAUSTIVE_MAX_CHANNELS", "MEANS_CHUNK_VALUES", "WEIGHTINGS"
]

#: the fraction of the response's variance the kept channels explain when a caller does not say (the one default
#: of ``nr.reduce``, the analysis, the experiments, the battery, the command line and the Analyze dock)
DEFAULT_EXPLAIN = 0.9
#: exhaustive subset search up to this many channels (2**12 subsets), greedy above
EXHAUSTIVE_MAX_CHANNELS = 12
#: map values (of the kept channels) the pooling weights read at a time (their means,
#: :class:`~napari_retina.metrics.MapMeans`): a few float64 arrays of 2 MiB each, whatever the movie's length
MEANS_CHUNK_VALUES = 1 << 18


@dataclass
class Reduction:
    """The result of :func:`reduce` (shapes: T frames, C first-layer channels, K kept).

    Attributes
    ----------
    importance : float (C,)
        Share of ``Σ_t |A_c(t)|`` over the attributed frames; sums to 1.
    kept : list of int
        Kept channels, most important first.
    sign : int (C,)
        +1 excitatory / −1 inhibitory on this stimulus (sign of ``Σ_t A_c(t)``).
    polarity : list of str (C,)
        ``"ON"`` / ``"OFF"`` from the spatially summed conv1 kernel; None for
        each channel of a wrapped module whose first layer is not a
        convolution of the stimulus (not guessed).
    latency_ms : float (C,)
        Peak latency (ms) of that temporal filter (NaN where polarity is None).
    kinetics : list of str (C,)
        ``"fast"`` / ``"slow"``: latency at or below ``kinetics_split_ms`` is
        fast (None where polarity is None).
    traces : float32 (T, K)
        ``A_c(t)`` of the kept channels (NaN on frames not attributed).
    reduced_response : float32 (T,)
        Reduced circuit's rate minus the model's baseline ``F(0)``, comparable
        with ``Attribution.response``; on every frame with a full history (NaN
        on the first ``history-1`` frames), although fitted on the attributed ones.
    explained_variance : float
        ``1 − var(full − reduced) / var(full)`` of the full model's rate over the
        attributed frames.
    reduced_rates : float32 (T,)
        Reduced circuit's rate (spikes per 10 ms bin), comparable with ``Attribution.rates``.
    drives : float32 (T, K, P)
        The kept channels' pooled drives ``d_cp(t)`` (rectified activations
        pooled with the weights of pool p, see ``pools``; for a wrapped module
        the first layer's outputs, see :func:`reduce`), NaN on the first
        ``history-1`` frames.
    weights : float (K, P)
        Fitted ``β_cp`` per unit of drive; ``bias`` is ``β_0``.
    contributions : float32 (T, K)
        ``Σ_p β_cp d_cp(t)``: what each kept channel adds to the circuit's
        softplus argument.
    bias : float
        ``β_0``, the constant in the circuit's softplus argument (the argument's units, as
        ``contributions``): not fitted but set so that on a grey window (every drive at its resting
        value) the circuit's rate is exactly the model's resting rate ``F(0)`` (``attr.baseline_rate``).
    kept_variance : float
        Fraction of the response's variance (at most 1) that the kept channels' summed attribution
        explains: ``1 − var(response − Σ_{c∈kept} A_c) / var(response)`` over the attributed frames
        (1.0 for a flat response).
    explained_variance_all : float
        As ``explained_variance`` but over every frame with a full history
        (the circuit is fitted on the attributed frames only).
    explain : float
        The fraction asked for.
    kinetics_split_ms : float
        Latency threshold between fast and slow (2-means split of all channels' latencies).
    frames : int (n,)
        Attributed frames (those the circuit was fitted and scored on).
    weighting : str
        How each kept channel's units were pooled ("both", "signed" or "abs").
    pools : list of str
        Names of the P pools per channel: ["abs", "signed"], ["signed"], ["abs"]
        or ["uniform"] (space summed out).
    """

    importance: np.ndarray
    kept: list
    sign: np.ndarray
    polarity: list
    latency_ms: np.ndarray
    kinetics: list
    traces: np.ndarray = field(repr=False)
    reduced_response: np.ndarray = field(repr=False)
    explained_variance: float = float("nan")
    reduced_rates: np.ndarray = field(default=None, repr=False)
    drives: np.ndarray = field(default=None, repr=False)
    weights: np.ndarray = field(default=None)
    bias: float = 0.0
    kept_variance: float = float("nan")
    explained_variance_all: float = float("nan")
    explain: float = DEFAULT_EXPLAIN
    kinetics_split_ms: float = float("nan")
    frames: np.ndarray = field(default=None, repr=False)
    weighting: Weighting = "both"
    pools: list = field(default_factory=list)
    contributions: np.ndarray = field(default=None, repr=False)

    def label(self, c: int) -> str:
        """Short description of channel ``c``, e.g. ``"A3 ON fast +"`` (``"A3 +"`` without polarity and kinetics)."""
        c = check_int(c, "channel", 0, len(self.importance))
        words = [f"A{c}", self.polarity[c], self.kinetics[c], "+" if self.sign[c] > 0 else "-"]
        return " ".join(w for w in words if w is not None)

    def to_dict(self) -> dict[str, Any]:
        """Arrays and parameters as a flat dict for :func:`napari_retina.io.write_results`.

        NumPy arrays for the per-channel and per-frame values (``kept`` (K,),
        ``importance``, ``sign``, ``latency_ms`` (C,), ``traces``,
        ``reduced_response``, ``reduced_rates``, ``contributions``, ``drives``
        (T, …), ``weights`` (K, P), ``frames`` (n,)); plain Python numbers for
        the scalars; the lists of names (``labels`` of every channel,
        ``polarity``, ``kinetics``, ``pools``) as JSON text, which HDF5
        attributes and ``.npz`` files both hold. Entries that are None are left out.

        >>> nr.io.write_results("r.h5", {"reduction": red.to_dict()})   # doctest: +SKIP
        """
        arrays = {
            "kept": np.asarray(self.kept, dtype=np.int64), "importance": self.importance,
            "sign": np.asarray(self.sign), "latency_ms": np.asarray(self.latency_ms), "traces": self.traces,
            "reduced_response": self.reduced_response, "reduced_rates": self.reduced_rates,
            "contributions": self.contributions, "drives": self.drives, "weights": self.weights,
            "frames": self.frames,
        }
        out: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        names = {"labels": [self.label(c) for c in range(len(self.importance))], "polarity": self.polarity,
                 "kinetics": self.kinetics, "pools": self.pools}
        out.update({k: json.dumps(jsonable(list(v))) for k, v in names.items()})
        out.update(jsonable({
            "explained_variance": self.explained_variance, "explained_variance_all": self.explained_variance_all,
            "kept_variance": self.kept_variance, "bias": self.bias, "explain": self.explain,
            "kinetics_split_ms": self.kinetics_split_ms, "weighting": self.weighting,
        }))
        return out

    def summary(self) -> list[dict]:
        """One JSON-able dict per kept channel (label, importance, sign, polarity, latency, weight)."""
        out = []
        for k, c in enumerate(self.kept):
            out.append(
                {
                    "channel": int(c),
                    "label": self.label(c),
                    "importance": float(self.importance[c]),
                    "sign": int(self.sign[c]),
                    "polarity": self.polarity[c],
                    "latency_ms": float(self.latency_ms[c]),
                    "kinetics": self.kinetics[c],
                    "weights": dict(zip(self.pools, np.asarray(self.weights)[k].tolist()))
                    if self.weights is not None else {},
                }
            )
        return out


# ----------------------------------------------------------------------------- selection


#: a response whose range is within this fraction of max(1, its largest |value|) (spikes/bin) does not vary: a
#: float32 model's rounding (~6e-8 relative), with room; the dock's status line and nr.reduce read it alike
FLAT_RANGE = 1e-6


def is_flat(response: np.ndarray) -> bool:
    """Whether ``response`` (n,) spikes/bin does not vary (its range within :data:`FLAT_RANGE` of max(1, its
    largest |value|): a float32 model's rounding; or one frame): nothing for a reduced circuit to explain."""
    r = np.asarray(response, dtype=np.float64)
    return len(r) < 2 or bool(np.ptp(r) <= FLAT_RANGE * max(1.0, float(np.abs(r).max())))


def select_channels(A: np.ndarray, response: np.ndarray, explain: float,
                    importance: Optional[np.ndarray] = None) -> tuple[list[int], float]:
    """Smallest channel set whose summed attribution explains ``explain`` of the response variance.

    ``A`` is (n, C) attributions on the attributed frames, ``response`` (n,).
    Exhaustive over subsets of each size for C ≤ 12 (the best-explaining subset
    of the smallest sufficient size), greedy forward selection above. When even
    all channels fall short (completeness error), the target becomes what all
    channels explain. Returns (kept channels most important first, explained fraction).
    """
    A = np.asarray(A, dtype=np.float64)
    r = np.asarray(response, dtype=np.float64)
    n, C = A.shape
    imp = np.abs(A).sum(0) if importance is None else np.asarray(importance, dtype=np.float64)
    order = lambda cs: sorted(cs, key=lambda c: (-imp[c], c))  # noqa: E731
    vr = r.var()
    if is_flat(r):
        return [int(np.argmax(imp))], 1.0
    Ac = A - A.mean(0)
    rc = r - r.mean()

    def ev(cols) -> np.ndarray:  # cols: (S, C) 0/1 -> explained fraction per subset
        resid = rc[None, :] - cols @ Ac.T
        return 1.0 - (resid ** 2).mean(1) / vr

    target = min(float(explain), float(ev(np.ones((1, C)))[0]) - 1e-9)
    if C <= EXHAUSTIVE_MAX_CHANNELS:
        for k in range(1, C + 1):
            combos = list(itertools.combinations(range(C), k))
            cols = np.zeros((len(combos), C))
            for i, cs in enumerate(combos):
                cols[i, list(cs)] = 1.0
            scores = ev(cols)
            # among sufficient subsets take the best-explaining; ties -> more important channels
            best = int(np.argmax(scores + 1e-12 * (cols @ imp) / max(imp.sum(), 1e-30)))
            if scores[best] >= target:
                return order(combos[best]), float(scores[best])
    chosen: list[int] = []
    score = -np.inf
    while len(chosen) < C:
        cand = [c for c in range(C) if c not in chosen]
        cols = np.zeros((len(cand), C))
        for i, c in enumerate(cand):
            cols[i, chosen + [c]] = 1.0
        scores = ev(cols)
        i = int(np.argmax(scores))
        chosen.append(cand[i])
        score = float(scores[i])
        if score >= target:
            break
    return order(chosen), score


# ----------------------------------------------------------------------------- reduced circuit


Weighting = Literal["both", "signed", "abs"]
"""How a kept channel's units are pooled into drives (see :func:`reduce`)."""
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)


def _unit_weights(attr: Attribution, kept: list[int], units: tuple[int, ...],
                  weighting: Weighting = "both",
                  pool_maps: Optional[dict] = None) -> tuple[list[str], torch.Tensor]:
    """Pooling weights of the kept channels' units: (pool names, (P, K, *units)).

    ``units`` is one channel's unit shape: (h1, h1) for RetinaCNN's conv1, a
    wrapped module's first-layer output shape without its channel axis (e.g.
    (T', h, w) for a Conv3d). Pools: ``"abs"``, each channel's time-averaged
    |A_cxy| map; ``"signed"``, its time-averaged A_cxy map;
    ``weighting="both"`` uses the two. Each map is divided by its summed
    magnitude (Σ|w| = 1). When the attribution has no maps (space summed out,
    or a wrapped module's generic path) there is one ``"uniform"`` pool (1 /
    the number of units). Maps summed along an axis (y, x, or a Conv3d's time
    axis) are spread evenly along it; an all-zero map becomes uniform.
    ``pool_maps`` (``{"abs": mean_t |A_cxy|, "signed": mean_t A_cxy}``, each
    (C, h, w) over the attributed frames) stands for the maps of an
    attribution that holds traces only (see :func:`reduce`).
    """
    K, n_units = len(kept), int(np.prod(units))
    if attr.maps is None and not pool_maps:
        names, ws = ["uniform"], [np.ones((K, *units))]
    else:
        if attr.maps is not None:   # the kept channels' means over the attributed frames, a chunk at a time
            maps, acc = np.asarray(attr.maps), MapMeans()
            step = frames_per_chunk((len(kept), *maps.shape[2:]), MEANS_CHUNK_VALUES)
            for chunk in batches(np.asarray(attr.frames), step):
                acc.add(maps[chunk][:, kept])
            found = acc.means()
            means = {name: (lambda name=name: found[name]) for name in ("abs", "signed")}
        else:
            means = {name: (lambda name=name: np.asarray(pool_maps[name], dtype=np.float64)[kept])
                     for name in ("abs", "signed")}
        names = ["abs", "signed"] if weighting == "both" else [weighting]
        ws = []
        for name in names:
            m = means[name]()  # (K, h, w); h or w may be 1
            m = m.reshape(K, *([1] * (len(units) - 2)), *m.shape[1:])         # leading unit axes (a Conv3d's time)
            ws.append(np.broadcast_to(m, (K, *units)).copy())
    out = []
    for w in ws:
        tot = np.abs(w).reshape(K, -1).sum(1).reshape(K, *([1] * len(units)))
        out.append(np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 1.0 / n_units))
    return names, torch.from_numpy(np.stack(out).astype(np.float32))


def compute_drives(model: RetinaCNN, stimulus: np.ndarray, frames: np.ndarray, kept: list[int],
                   weights: torch.Tensor, invariance: InvarianceArg = "auto", batch_size: int = 256,
                   cells: Optional[list[int]] = None,
                   progress: Optional[Progress] = None) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Drives ``d_c(t) = Σ_xy w_cxy · relu(bn1(z))_cxy(t)`` (n, K) float64 on ``frames`` (n,).

    ``stimulus`` float32 (T, H, W) contrast units; ``weights`` is (K, h1, h1);
    conv1 by :class:`napari_retina.first_layer.FirstLayer` with ``invariance``
    ("auto": detected on the whole stimulus). With ``cells`` given, also
    returns the full model's summed rate of those cells (n,) (spikes per bin)
    from the same first-layer pass: ``(drives, rates)``.
    """
    layer = FirstLayer(model, stimulus, invariance)
    w = weights.to(model.device)
    out = np.zeros((len(frames), len(kept)))
    rates = np.zeros(len(frames))
    done = 0
    with callers_modes(model), torch.inference_mode():
        model.eval()
        for chunk in batches(np.asarray(frames), batch_size):
            a = model.first_layer_activation(layer.z(chunk))
            out[done:done + len(chunk)] = torch.einsum("nkhw,khw->nk", a[:, kept], w).double().cpu().numpy()
            if cells is not None:
                rates[done:done + len(chunk)] = model.from_activation(a)[:, cells].sum(1).double().cpu().numpy()
            done += len(chunk)
            report(progress, done, len(frames))
    return out if cells is None else (out, rates)


def compute_wrapped_drives(model: WrappedModel, stimulus: np.ndarray, frames: np.ndarray, kept: list[int],
                           weights: torch.Tensor, cells: list[int], batch_size: Optional[int] = None,
                           progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """A wrapped module's drives ``d_c(t) = Σ_u w_cu · o_cu(t)`` (n, K) float64 and summed rate (n,) on ``frames``.

    ``o`` is the first layer's output on the window ending at each frame
    (N, C, *units), taken by a hook in the same pass that gives the module's
    rates of ``cells`` (spikes per bin); ``weights`` is (K, *units);
    ``stimulus`` float32 (T, H, W) contrast units of the module's size.
    """
    history = model.config.history
    batch_size = model.config.batch_size if batch_size is None else batch_size
    # the hook that reads the first layer goes on a copy: on the user's module itself it would fire in any
    # other thread's forward pass too (the Experiments dock's predict while Analyze reduces) and mix the two
    model = private_copy(model).eval()
    source = stimulus_tensor(np.ascontiguousarray(stimulus, dtype=np.float32))
    w = weights.to(model.device).reshape(len(kept), -1)  # a unit per channel (a Linear layer's) gives (K, 1)
    out = np.zeros((len(frames), len(kept)))
    rates = np.zeros(len(frames))
    done = 0
    with torch.inference_mode():
        for chunk in batches(np.asarray(frames), batch_size):
            o, r = model.layer_and_rates(gather_windows(source, chunk, history).to(model.device))
            units = o[:, kept].reshape(len(chunk), len(kept), -1)
            out[done:done + len(chunk)] = (units * w).sum(2).double().cpu().numpy()
            rates[done:done + len(chunk)] = r[:, cells].sum(1).double().cpu().numpy()
            done += len(chunk)
            report(progress, done, len(frames))
    return out, rates


def _softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + e^z)`` without overflow (float64)."""
    return np.logaddexp(0.0, z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^-z)``, the derivative of :func:`_softplus`, without overflow."""
    return np.exp(-np.logaddexp(0.0, -z))


def _damped_step(J: np.ndarray, r: np.ndarray, lam: float, D: np.ndarray) -> np.ndarray:
    """The Levenberg–Marquardt step δ (p,): least squares of ``[J; √λ·diag(D)] δ = [−r; 0]``.

    J (n, p), r (n,), D (p,). Solved by ``lstsq`` on the stacked system, which
    does not square J's condition number as the normal equations would.
    """
    A = np.concatenate([J, np.diag(np.sqrt(lam) * D)])
    return np.linalg.lstsq(A, np.concatenate([-r, np.zeros(len(D))]), rcond=None)[0]


def _levenberg_marquardt(X: np.ndarray, y: np.ndarray, theta: np.ndarray, max_iter: int,
                         tol: float = 1e-12, offset: float = 0.0) -> np.ndarray:
    """Least-squares ``θ`` (p,) of ``softplus(X @ θ + offset) ≈ y`` by Levenberg–Marquardt (float64).

    X (n, p), y (n,), θ (p,) the start, ``offset`` a fixed term. Each iteration takes the damped
    Gauss–Newton step of :func:`_damped_step` (J = ∂r/∂θ, D = the column
    norms of J, Marquardt's scaling) and adapts λ from the ratio of actual to
    predicted reduction (Nielsen's rule), raising it until the cost drops.
    Stops when the residual is orthogonal to every column of J to ``tol``
    (cosine), when a step changes neither the cost nor θ by more than ``tol``
    (relative), when λ has damped the step to nothing without lowering the
    cost (a minimum to machine precision), or after ``max_iter`` iterations.
    """
    def residual(t):
        return _softplus(X @ t + offset) - y

    def negligible(step):  # also true for a NaN step
        return not np.linalg.norm(step) > tol * (np.linalg.norm(theta) + tol)

    r = residual(theta)
    cost = float(r @ r)
    lam, nu = None, 2.0
    for _ in range(int(max_iter)):
        J = _sigmoid(X @ theta + offset)[:, None] * X
        col = np.sqrt((J * J).sum(0))
        if cost == 0.0 or np.max(np.abs(J.T @ r) / np.maximum(col, 1e-300)) <= tol * np.sqrt(cost):
            break
        D = np.maximum(col, 1e-12 * col.max())
        lam = 1e-3 * col.max() ** 2 if lam is None else lam
        while True:
            step = _damped_step(J, r, lam, D)
            if negligible(step):
                return theta
            lin = r + J @ step
            predicted = cost - float(lin @ lin)
            r_new = residual(theta + step)
            cost_new = float(r_new @ r_new)
            if predicted > 0 and cost_new < cost:
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * (cost - cost_new) / predicted - 1.0) ** 3)
                nu = 2.0
                break
            lam *= nu
            nu *= 2.0
        converged = cost - cost_new <= tol * cost and negligible(step)
        theta, r, cost = theta + step, r_new, cost_new
        if converged:
            break
    return theta


def _softplus_inverse(y: np.ndarray) -> np.ndarray:
    """``log(e^y − 1)`` for y > 0, written so that no e^y overflows."""
    return y + np.log(-np.expm1(-y))


def fit_output(drives: np.ndarray, target: np.ndarray, steps: int = 200,
               rest: Optional[tuple[np.ndarray, float]] = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Fit ``r = softplus(drives @ β + β_0)`` to ``target`` by least squares (float64).

    drives (n, K), target (n,). Returns (β (K,), β_0, fitted r (n,)). With
    ``rest = (d_rest (K,), r_rest)`` (the drives and the rate at rest, in
    spikes per bin) the circuit is anchored there: β_0 is set so that
    ``softplus(d_rest @ β + β_0) = r_rest`` exactly and only β is fitted;
    without it β_0 is fitted too. The
    drives are standardised for the fit and β is returned per unit of the
    original drive. Initialised from the linear regression of
    ``softplus⁻¹(target)`` on the drives, then Levenberg–Marquardt in numpy
    (:func:`_levenberg_marquardt`; with ≤ 17 parameters it converges in tens
    of iterations; ``steps`` bounds them). Plain numpy on purpose: a torch
    optimiser would import ``torch._dynamo`` and with it triton, whose LLVM
    crashes a process that already shows a napari viewer (Mesa's LLVM).
    """
    D = np.asarray(drives, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    sd = D.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    inv = _softplus_inverse(np.clip(y, 1e-4, None))
    if rest is None:
        mu, offset = D.mean(0), 0.0
        X = np.concatenate([(D - mu) / sd, np.ones((len(D), 1))], axis=1)
    else:
        mu = np.asarray(rest[0], dtype=np.float64)
        offset = float(_softplus_inverse(np.float64(max(float(rest[1]), 1e-6))))
        X = (D - mu) / sd
    coef, *_ = np.linalg.lstsq(X, inv - offset, rcond=None)
    theta = _levenberg_marquardt(X, y, coef, int(steps), offset=offset)
    fitted = _softplus(X @ theta + offset)
    beta, b0 = (theta[:-1], float(theta[-1])) if rest is None else (theta, offset)
    return beta / sd, b0 - float((beta * mu / sd).sum()), fitted


# ----------------------------------------------------------------------------- reduce


def _check_attribution(attr) -> None:
    needed = ("channels", "response", "rates", "frames", "model", "stimulus", "maps", "baseline_rate")
    missing = [n for n in needed if not hasattr(attr, n)]
    if missing:
        raise TypeError(
            f"reduce expects an Attribution (from nr.attribute), got {type(attr).__name__} "
            f"without {', '.join(missing)}"
        )


def check_explain(explain: Any) -> float:
    """``explain`` as a float in (0, 1], or a clear error."""
    if not is_real(explain):
        raise TypeError(f"explain must be a number in (0, 1], got {type(explain).__name__} {explain!r}")
    explain = float(explain)
    if not (0.0 < explain <= 1.0) or math.isnan(explain):
        raise ValueError(f"explain must be a fraction in (0, 1], got {explain}")
    return explain


def reduce(attr: Attribution, explain: float = DEFAULT_EXPLAIN, *, fit_steps: int = 200,
           ignore_oldest_ms: Optional[float] = None, weighting: Weighting = "both",
           progress: Optional[Progress] = None, pool_maps: Optional[dict] = None) -> Reduction:
    """Reduce the model to the few first-layer channels that carry a response.

    Parameters
    ----------
    attr : Attribution
        From :func:`napari_retina.attribute`; its ``.model`` and ``.stimulus``
        are used to recompute first-layer activations for the reduced circuit.
    explain : float in (0, 1]
        Fraction of the variance of the response ``F(s_t) − F(0)`` (over the
        attributed frames) that the kept channels' summed attribution must explain.
    fit_steps : int
        Maximum Levenberg–Marquardt iterations of the reduced circuit's output
        fit (:func:`fit_output`).
    ignore_oldest_ms : float, optional
        Oldest part of the temporal filters ignored when finding their peak
        (at most the older half of the history is ignored, see
        :func:`napari_retina.first_layer.filter_properties`); finite, >= 0 and less than the history
        (``history × 10`` ms). Default 150 ms.
    weighting : "both", "signed" or "abs"
        How a kept channel's units are pooled into drives (see below).
    progress : callable, optional
        ``progress(done_frames, total_frames)`` while activations are recomputed.
    pool_maps : dict, optional
        For an attribution that holds traces only (``maps`` None although its
        invariance has maps: a long movie's, see
        :func:`napari_retina.analysis.attribute_traces`), the time-averaged maps
        of every channel over its attributed frames, ``{"abs": mean_t |A_cxy|,
        "signed": mean_t A_cxy}``, each float (C, h, w) (h or w 1 for maps summed
        along an axis): the pools below are made from them, as from the maps.
        Ignored when the attribution has maps.

    Returns
    -------
    Reduction (see its attributes).

    The reduced circuit: each kept channel c contributes pooled drives
    ``d_cp(t) = Σ_xy w_cpxy · relu(bn1(z))_cxy(t)`` of its rectified first-layer
    activations. With ``weighting="both"`` (default) there are two pools per
    channel: ``w = mean_t |A_cxy|`` (where the channel mattered) and
    ``w = mean_t A_cxy`` (in which direction each unit moved the rate: a
    channel's units can excite the cell at some positions and inhibit it at
    others through conv2, a centre-surround pooling that |A| alone discards);
    each map is normalised to ``Σ_xy |w| = 1``. "signed" or "abs" keep one of
    them (docs/METHOD.md §3 says why both). When the attribution summed space
    out (full-field stimuli) a uniform pool replaces them.
    The two drives of a channel can be strongly correlated (most of its units
    pushed the rate the same way); their small difference (the units pushing
    the other way) can still matter, so both are kept, and then the fitted
    ``β_c,abs`` and ``β_c,signed`` may be large with opposite signs: read a
    channel's part in the circuit from ``contributions`` (Σ_p β_cp d_cp(t)),
    which is well defined, not from its individual β.
    The circuit's rate is
    ``r(t) = softplus(Σ_cp β_cp d_cp(t) + β_0)``, the same output nonlinearity as
    the full model, with ``β`` fitted by least squares to the full model's rate
    on the attributed frames (:func:`fit_output`, float64; ``fit_steps``
    bounds its iterations) and ``β_0`` set so that the circuit rests exactly
    at the model's resting rate (``attr.baseline_rate``, F(0), on a grey window),
    the grey level that readouts subtract; ``explained_variance_all`` scores every frame,
    most of them unfitted.
    The sign of ``β`` is free, so a channel can act as excitatory or
    inhibitory as in the full model. ``explained_variance`` is
    ``1 − var(full − reduced) / var(full)`` over the attributed frames; the
    fitted circuit is then run on every frame with a full history
    (``reduced_rates``, ``explained_variance_all``), its first layer computed
    by :class:`napari_retina.first_layer.FirstLayer` (exact cheap paths for
    stimuli uniform over space or along an axis).

    A wrapped module (``nr.wrap``): the same selection, pools and fit, with
    the drives pooled from the first layer's outputs ``o_cu(t)`` as the module
    computes them (the units its attribution attributes), taken by a hook
    while the module runs on each window (:func:`compute_wrapped_drives`).
    The wrapper does not know which nonlinearity follows that layer, so none
    is added: with a convolution as ``first_layer`` each drive is linear in
    the stimulus; name the layer after the module's nonlinearity as
    ``first_layer`` for rectified drives (the generic path: one uniform pool
    per channel, and no ON/OFF or kinetics labels, which need the
    convolution's kernels). A Conv3d's maps (summed over its time axis) are
    spread evenly over that axis.

    Example
    -------
    >>> red = nr.reduce(nr.attribute(model, stim, cell=0), explain=0.9)   # doctest: +SKIP
    >>> red.kept, red.explained_variance                                   # doctest: +SKIP
    ([3, 5], 0.91)
    """
    _check_attribution(attr)
    explain = check_explain(explain)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(repr(w) for w in WEIGHTINGS)}, got {weighting!r}")
    fit_steps = check_int(fit_steps, "fit_steps", low=1)
    if ignore_oldest_ms is None:
        ignore_oldest_ms = DEFAULT_IGNORE_OLDEST_MS
    else:
        ignore_oldest_ms = _check_ignore_oldest(ignore_oldest_ms, attr.model.config.history)
    frames = np.asarray(attr.frames, dtype=np.int64)
    channels = np.asarray(attr.channels, dtype=np.float64)
    T, C = channels.shape
    if frames.size == 0:
        raise ValueError("the attribution covers no frame; attribute at least one frame first")
    A = channels[frames]
    resp = np.asarray(attr.response, dtype=np.float64)[frames]
    if not (np.isfinite(A).all() and np.isfinite(resp).all()):
        raise ValueError("the attribution has NaN or infinite values on its attributed frames")

    if attr.maps is None and pool_maps is not None:
        pool_maps = _check_pool_maps(pool_maps, C)
    total = np.abs(A).sum(0)
    importance = total / total.sum() if total.sum() > 0 else np.full(C, 1.0 / C)
    kept, kept_var = select_channels(A, resp, explain, importance)
    if is_flat(resp):
        warnings.warn(f"the model's response does not vary over the {len(resp)} attributed frame"
                      f"{'s' if len(resp) != 1 else ''}: a reduced circuit has nothing to explain there, so its "
                      f"explained variance of 1.0 says nothing and channel {kept[0]} was kept only as the most "
                      "important; attribute more frames of a stimulus that drives the cell", UserWarning,
                      stacklevel=2)

    model = attr.model
    with callers_modes(model):
        model.eval()
        red = _reduce(attr, model, frames, A, resp, importance, kept, kept_var, explain,
                      fit_steps, ignore_oldest_ms, weighting, progress, pool_maps)
    valid = np.arange(model.config.history - 1, T)
    check_finite_output(red.reduced_rates, valid, "the reduced circuit's rates",
                        remedy="the fit of its output weights did not give a usable circuit")
    return red


def _check_pool_maps(pool_maps, n_channels: int) -> dict:
    """``pool_maps`` as {"abs", "signed"} finite float64 arrays (C, ...) of the same shape, or a clear error."""
    if not isinstance(pool_maps, dict) or not {"abs", "signed"} <= set(pool_maps):
        raise TypeError("pool_maps must be a dict with the time-averaged maps 'abs' and 'signed', "
                        f"got {type(pool_maps).__name__}")
    out = {k: np.asarray(pool_maps[k], dtype=np.float64) for k in ("abs", "signed")}
    shape = out["abs"].shape
    if out["signed"].shape != shape or len(shape) < 2 or shape[0] != n_channels:
        raise ValueError(f"pool_maps must hold two maps of shape ({n_channels}, ...), one per channel, "
                         f"got {out['abs'].shape} and {out['signed'].shape}")
    if not (np.isfinite(out["abs"]).all() and np.isfinite(out["signed"]).all()):
        raise ValueError("pool_maps hold NaN or infinite values")
    return out


def _check_ignore_oldest(value, history: int) -> float:
    """``ignore_oldest_ms`` as a float in [0, history·10) ms, or a clear error."""
    if not is_real(value):
        raise TypeError(f"ignore_oldest_ms must be a number of milliseconds, got {type(value).__name__} {value!r}")
    span = history * FRAME_MS
    if not (math.isfinite(value) and 0.0 <= value < span):
        raise ValueError(
            f"ignore_oldest_ms must be finite, >= 0 and less than the model's history of {span:g} ms, got {value}"
        )
    return float(value)


def _channel_properties(model, n_channels: int, ignore_oldest_ms: float) -> dict[str, Any]:
    """Polarity, latency, kinetics and split of every first-layer channel (see :func:`filter_properties`).

    For a wrapped module from its first convolution's kernels; None labels and
    NaN latencies when its first layer is not a convolution of the stimulus.
    """
    if not is_wrapped(model):
        return filter_properties(model, ignore_oldest_ms)
    props = filter_labels(model, ignore_oldest_ms)
    if props is None:
        none = [None] * n_channels
        return {"polarity": none, "latency_ms": np.full(n_channels, np.nan), "kinetics": list(none),
                "split_ms": float("nan")}
    return props


def _reduce(attr, model, frames, A, resp, importance, kept, kept_var, explain, fit_steps,
            ignore_oldest_ms, weighting, progress, pool_maps=None) -> Reduction:
    T, C = np.shape(attr.channels)
    sign = np.where(A.sum(0) >= 0, 1, -1).astype(np.int64)
    props = _channel_properties(model, C, ignore_oldest_ms)

    history = model.config.history
    K = len(kept)
    units = tuple(model.config.units[1:]) if is_wrapped(model) else (model.config.map_sizes[0],) * 2
    pools, w = _unit_weights(attr, kept, units, weighting, pool_maps)  # (P, K, *units)
    P = len(pools)
    all_frames = np.arange(history - 1, T)
    drive = compute_wrapped_drives if is_wrapped(model) else compute_drives
    flat, full = drive(model, attr.stimulus, all_frames, list(kept) * P, w.reshape(P * K, *units),
                       cells=list(attr.cells), progress=progress)
    # the model's rate on frames the attribution skipped must be finite too (explained_variance_all)
    check_finite_output(np.concatenate([np.full(history - 1, np.nan), full]), all_frames, "the model's rates",
                        attr.stimulus)
    drives = flat.reshape(len(all_frames), P, K).transpose(0, 2, 1)  # (n, K, P)
    fit_rows = frames - (history - 1)
    target = np.asarray(attr.rates, dtype=np.float64)[frames]
    # the drives at rest (a grey window): the circuit is anchored at the model's resting rate F(0)
    grey = np.zeros((history,) + tuple(np.shape(attr.stimulus)[1:]), dtype=np.float32)
    rest = drive(model, grey, np.array([history - 1]), list(kept) * P, w.reshape(P * K, *units),
                 cells=list(attr.cells))[0][0]
    beta, bias, fitted = fit_output(flat[fit_rows], target, steps=int(fit_steps), rest=(rest, attr.baseline_rate))
    beta = beta.reshape(P, K).T  # (K, P)
    ev = explained_variance(target, fitted)
    contrib = (drives * beta[None]).sum(2)  # (n, K)
    with torch.no_grad():
        pred = F.softplus(torch.from_numpy(contrib.sum(1) + bias)).numpy()
    # the model's rate on every frame (attr.rates only covers the attributed ones)
    ev_all = explained_variance(full, pred)

    reduced_rates = np.full(T, np.nan, dtype=np.float32)
    reduced_rates[all_frames] = pred
    drive_t = np.full((T, K, P), np.nan, dtype=np.float32)
    drive_t[all_frames] = drives
    contrib_t = np.full((T, K), np.nan, dtype=np.float32)
    contrib_t[all_frames] = contrib
    return Reduction(
        importance=importance.astype(np.float64),
        kept=[int(c) for c in kept],
        sign=sign,
        polarity=props["polarity"],
        latency_ms=props["latency_ms"],
        kinetics=props["kinetics"],
        traces=np.asarray(attr.channels, dtype=np.float32)[:, kept],
        reduced_response=(reduced_rates - np.float32(attr.baseline_rate)).astype(np.float32),
        explained_variance=float(ev),
        reduced_rates=reduced_rates,
        drives=drive_t,
        weights=beta,
        bias=bias,
        kept_variance=float(kept_var),
        explained_variance_all=float(ev_all),
        explain=explain,
        kinetics_split_ms=float(props["split_ms"]),
        frames=frames,
        weighting=weighting,
        pools=pools,
        contributions=contrib_t,
    )
