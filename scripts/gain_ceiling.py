"""Does a divisive gain control let the BN-CNN code latency? The experiment docs/MODEL.md points to.

The version-3 truth codes latency with its ganglion gain control: its rate is divided by
``1 + k · (its own drive averaged over the past, τ 122 ms)``, which cuts a strong response short,
so that it crosses its own 20% level sooner (docs/MODEL.md). The BN-CNN has no such stage, and
trained even on the latency experiment's own movie it codes latency over 10–15 ms where the truth
spans 24 ms (``scripts/flash_ceiling.py --movie experiment``). This script adds the one stage the
truth has and the BN-CNN lacks, on top of an otherwise unchanged BN-CNN, and trains both the plain
and the gain-controlled model with the same loop, data and seed::

    N_t    = BN-CNN(stimulus window ending at t)                   (T, cells), as nr.predict gives
    rate_t = g_c · N_t / (1 + k_c · Σ_{l=1..L} w_l N_{t−l}),   w_l ∝ exp(−l / τ_c), Σ w_l = 1   (per cell c)

with ``k_c ≥ 0``, ``τ_c ≥ 1`` frame and ``g_c > 0`` learnt, and ``L`` = :data:`LAGS` past outputs (600 ms):
the truth's ganglion stage exactly, given the truth's N (``g_c`` its ``gain_j``; a test checks this). The
divisor is the model's own output over the past, as the truth's is its own; the stage is causal (the
current frame does not divide itself). A batch is made of blocks of ``L`` context windows and
``P`` = :data:`PER_BLOCK` scored windows, all in one forward pass. ``--no-gain`` trains the plain
BN-CNN with the same loop (``L`` = 0), the control; ``--init OUT/plain_SEED.pt`` starts a gain-controlled
model from that control's BN-CNN (and ``--init OUT/gain_SEED.pt`` lets a gain-controlled run go on);
``--k``, ``--tau`` and ``--fixed`` set the stage's start, or fix it
(the truth's own values, k 1.18 and τ 12.2 frames in version 3, ask whether the BN-CNN learns the undivided
drive when the stage is given; ``--truth-stages`` starts every stage at the asked truth's own k and τ).
``--targets drive --no-gain`` asks whether it can represent that drive at all: the plain BN-CNN is trained on
the truth's undivided drive ``softplus(drive)`` itself (OUT/{movie}_drive.h5) and scored, as OUT/drive_SEED.pt,
with the truth's own stage on top. ``--loss log`` fits ``log(ε + output)`` to ``log(ε + target)`` by squared
error (ε = :data:`LOG_FLOOR`) instead of the Poisson loss, so that a weak flash's answer weighs as much as a
strong one's: a fit to the drive is otherwise ruled by the strong flashes' hundreds of spikes per bin, and the
latency code lives in the weak flashes' timing.
``--loss both`` sums the two. ``--score MODEL… --committee NAME`` scores the mean of the models' rates as one
model (a committee of seeds, :class:`Committee`), and ``--draw K…`` adds 20 committees of K of them drawn
at random, per K: does latency coding need the passing seeds, or do the seeds' errors average out?
``--battery`` runs the five experiments of the truth's phenomena on the committee and on each member, and
gives each one's r with the truth on each experiment's movie.
``--movie battery`` trains on those five experiments' own movies (two copies, the second held out) instead of
the latency movie alone: can the model show all five when it is trained on what they ask?
``--off-stage`` adds the truth's other gain control, the OFF stage's (τ 225 ms, reaching 1.2 s back, beyond the
BN-CNN's 400 ms history), before the ganglion's: the BN-CNN gives two outputs per cell, the OFF stage and the ON
inputs, and :class:`OffStage` divides the first by its own past and joins them as the truth does. With ``--fixed``
both stages keep the k and τ given (``--k --tau --off-k --off-tau``); OUT/twostage_SEED.pt. ``--targets split
--no-gain`` asks whether the BN-CNN can make the split the truth makes: its two outputs per cell are trained on the
truth's O and R themselves (OUT/{movie}_split.h5, ``Retina.off_and_on``) and it is saved, as OUT/split_SEED.pt,
with both of the truth's stages on top; ``--off-stage --fixed --init OUT/split_SEED.pt`` then trains it on the
rates with those stages held (β and g learn). ``--score`` of a two-stage model also runs the omitted-stimulus
experiment with the truth's stages on the model's or the truth's O and R (:func:`osr_by_input`): which of the two
keeps the model's OSR from the truth's? And how much of the model's error in R does the truth's OSR survive
(:func:`osr_margin`), and version 4's, given the same error (``onto``; docs/MODEL.md, "Ground truth v4")?
``--movie osr`` trains on that experiment's movie alone (three copies). ``--channels C1 C2`` sizes the BN-CNN's
layers from scratch (default 8 8; version 4 and 5's truths have twelve pathways).
``--plant NOISE`` trains nothing: it builds the truth into a two-output BN-CNN with twelve channels and its two stages
(:func:`planted`, NOISE times each kernel's rms added), writes OUT/planted_SEED.pt and scores it: can the BN-CNN hold
the truth? ``--init OUT/planted_SEED.pt`` then asks whether training keeps it, with ``--lr`` (Adam's rate) and
``--frozen-bn`` (the batch norms keep the init's statistics instead of each batch's). ``--rectified`` plants a
:class:`RectifiedCNN`, whose outputs can be exactly 0 as the truth's O and R are, or trains one from scratch (a run
from an init keeps the init's kind). ``--no-penalty`` trains on the loss alone, without the recipe's weight penalty.

Command::

    python scripts/gain_ceiling.py OUT [--seeds 0] [--no-gain] [--epochs 60] [--patience 15] [--lr-patience 5]
                                       [--warmup 0] [--movie experiment|osr|flashes|battery] [--frames 20000]
                                       [--targets rates|counts|drive|split] [--loss poisson|log|both] [--noise 0]
                                       [--device cpu] [--init MODEL] [--name NAME] [--k 0.5] [--tau 10] [--fixed]
                                       [--channels 8 8] [--lr 0.002] [--frozen-bn] [--rectified] [--no-penalty]
                                       [--off-stage [--off-k 0.5] [--off-tau 10]] [--truth-stages]
    python scripts/gain_ceiling.py OUT --score MODEL... [--committee NAME [--draw K...] [--battery]]
    python scripts/gain_ceiling.py OUT --data
    python scripts/gain_ceiling.py OUT --plant NOISE [--rectified] [--seeds 0] [--channels 12 8] [--name planted]
    (each with [--retina-version 3-6]: the truth, version 3 by default; one OUT per version)

writes OUT/{movie}.h5 (the dataset of ``flash_ceiling.py``, once), OUT/{gain|plain|drive|split|twostage}_SEED.pt
(at each improvement of the held-out loss; read back with ``torch.load(weights_only=True)``) and
OUT/latency_{gain|plain|drive}_SEED.json, and prints per cell what ``flash_ceiling.py`` prints: latency
coding present or not, the latencies at −0.5 … −10, where the remaining loss on held-out flashes
lies, and here also the learnt ``k``, ``τ`` and ``g``. These are models for an experiment, not checkpoints
``nr.load_model`` opens.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import napari_retina as nr
from napari_retina import synthetic as syn
from napari_retina._atomic import atomic_write
from napari_retina._units import FRAME_MS
from napari_retina.training import TrainConfig, _norm_for, _poisson as poisson, init_readout, weight_penalty
from flash_ceiling import HOLDOUT, PHENOMENA, flash_onsets, latency_summary, loss_by_strength, noise_free, record, \
    report, with_train_responses
from seed_sweep import RECIPE

LAGS = 60
"""Past outputs the gain signal averages (frames; 600 ms, 5 τ of the truth's ganglion gain control)."""
OFF_LAGS = 120
"""Past OFF-stage outputs its gain signal averages (frames; 1.2 s, 5.3 τ of the truth's OFF-stage gain control,
which holds 99.5% of its weight there): :class:`OffStage`."""
PER_BLOCK = 64
"""Scored windows per block; each block also computes its ``LAGS`` context windows."""
BLOCKS = 3
"""Blocks per Adam step (192 scored windows, the shipped recipe's batch)."""
CHUNK = 512
"""Windows per forward pass when predicting."""
EARLY_FRAMES = 4
"""Frames after a flash's onset in which the truth's answer to a weak flash has not begun (40 ms; it begins
at 47.5 ms for −0.5): :func:`early_share`."""
LOG_FLOOR = 0.1
"""ε of ``--loss log`` (spikes per bin): under the truth's drive at grey (0.24), so that the rise from rest counts."""


def log_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``log(ε + pred)`` against ``log(ε + target)`` (ε = :data:`LOG_FLOOR`): a loss
    in which an answer's relative error counts, whatever its size. pred, target (N, cells) ≥ 0."""
    return (torch.log(LOG_FLOOR + pred) - torch.log(LOG_FLOOR + target)).pow(2).mean()


def both_losses(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Poisson loss plus :func:`log_error`: the amplitudes the first asks for, the weak answers the second weighs."""
    return poisson(pred, target) + log_error(pred, target)


LOSSES = {"poisson": poisson, "log": log_error, "both": both_losses}
"""The training losses ``--loss`` chooses from: the recipe's Poisson loss, :func:`log_error`, and their sum."""


class GainControl(nn.Module):
    """Per-cell divisive gain control by the model's own past output, the v3 truth's form.

    ``forward(drive)``: drive (B, lags + P, cells) ≥ 0, consecutive frames → rates (B, P, cells),
    ``rate_t = g · drive_t / (1 + k · Σ_{l=1..lags} w_l drive_{t−l})`` for the last P frames, with
    ``w_l ∝ exp(−l / τ)`` summing to 1. ``lags = 0`` is the identity. The output gain ``g`` (the truth's
    ``gain_j``) frees ``k`` from setting the response's scale: without it, lowering ``k`` is the only
    quick way to raise a strong response (the drive's scale moves slowly), and ``k`` fell so in training.
    """

    def __init__(self, n_cells: int, lags: int = LAGS, strength: float = 0.5, tau: float = 10.0,
                 scale: float = 1.0) -> None:
        super().__init__()
        self.lags = int(lags)
        inv_softplus = lambda v: math.log(math.expm1(v))   # noqa: E731
        self.raw_strength = nn.Parameter(torch.full((n_cells,), inv_softplus(strength)))
        self.raw_tau = nn.Parameter(torch.full((n_cells,), inv_softplus(tau - 1.0)))
        self.log_scale = nn.Parameter(torch.full((n_cells,), math.log(scale)))

    @property
    def strength(self) -> torch.Tensor:
        """k per cell (≥ 0)."""
        return F.softplus(self.raw_strength)

    @property
    def scale(self) -> torch.Tensor:
        """g per cell (> 0)."""
        return self.log_scale.exp()

    @property
    def tau(self) -> torch.Tensor:
        """τ per cell, frames (≥ 1)."""
        return 1.0 + F.softplus(self.raw_tau)

    def weights(self) -> torch.Tensor:
        """w (cells, lags) over lags 1..lags, each row summing to 1."""
        lag = torch.arange(1, self.lags + 1, dtype=self.raw_tau.dtype, device=self.raw_tau.device)
        return torch.softmax(-lag[None] / self.tau[:, None], dim=1)

    def forward(self, drive: torch.Tensor) -> torch.Tensor:
        if self.lags == 0:
            return drive
        return self.scale * drive[:, self.lags:] / self.divisor(drive)

    def divisor(self, drive: torch.Tensor) -> torch.Tensor:
        """``1 + k · Σ_{l=1..lags} w_l drive_{t−l}`` (B, P, cells) for the last P frames of drive (B, lags + P,
        cells): what the stage divides by. Unlike k, g and the drive's scale, which trade against each other
        (drive · c with k / c and g / c gives the same rates), it is fixed by the rates the stage makes."""
        n = drive.shape[1] - self.lags
        if n < 1:
            raise ValueError(f"the drive has {drive.shape[1]} frames; the gain control needs more than {self.lags}")
        past = drive[:, :-1].unfold(1, self.lags, 1)            # (B, n, cells, lags): frames t-lags .. t-1
        signal = (past * self.weights().flip(1)).sum(-1)       # lag l sits at position lags - l
        return 1.0 + self.strength * signal


class OffStage(nn.Module):
    """The v3 truth's OFF stage and its gain control, joining the ON inputs, on a BN-CNN with two outputs per cell.

    ``forward(n)``: n (B, lags + P, 2 · cells) ≥ 0 on consecutive frames, the BN-CNN's outputs: per cell c the
    rectified OFF stage O (column c) and the ON inputs R (column cells + c) → N (B, P, cells) ≥ 0 for the last P::

        N_t = softplus(O_t / (1 + k_off · Σ_{l=1..lags} w_l O_{t−l}) + R_t + β_c),   w_l ∝ exp(−l / τ_off)

    the truth's ``N_j`` exactly, given its O, its ON inputs (a sum of rectified pathways with positive weights,
    ≥ 0 as the BN-CNN's softplus output is) and its bias as β. k_off and τ_off are a :class:`GainControl`'s,
    whose output gain is held at 1 (the BN-CNN's readout sets O's scale).
    """

    def __init__(self, n_cells: int, lags: int = OFF_LAGS, strength: float = 0.5, tau: float = 10.0,
                 bias: float = 0.0) -> None:
        super().__init__()
        self.control = GainControl(n_cells, lags, strength, tau)
        self.control.log_scale.requires_grad_(False)
        self.bias = nn.Parameter(torch.full((n_cells,), float(bias)))
        self.lags = self.control.lags

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        cells = len(self.bias)
        return F.softplus(self.control(n[..., :cells]) + n[:, self.lags:, cells:] + self.bias)


class GainModel:
    """A BN-CNN and its gain control, and optionally the OFF stage's before it (:class:`OffStage`; the BN-CNN then
    gives two outputs per cell), with ``respond(stimulus)`` as a ground-truth retina has (``nr.experiments.run_truth``
    runs the experiments on it)."""

    def __init__(self, cnn: nr.RetinaCNN, gain: GainControl, off: Optional[OffStage] = None) -> None:
        self.cnn, self.gain, self.off = cnn, gain, off
        self.history, self.size, self.n_cells = cnn.config.history, cnn.config.size, gain.log_scale.numel()

    @property
    def context(self) -> int:
        """BN-CNN outputs before a frame that its rate depends on (frames): the stages' lags."""
        return self.gain.lags + (self.off.lags if self.off is not None else 0)

    def stages(self, n: torch.Tensor) -> torch.Tensor:
        """Rates (B, P, cells) from the BN-CNN's outputs n (B, context + P, outputs) on consecutive frames."""
        return self.gain(self.off(n) if self.off is not None else n)

    def trainable(self, fixed: bool) -> list:
        """The stages' parameters to train: g (and the OFF stage's β), and every k and τ unless ``fixed``."""
        shape = lambda stage: [] if fixed else [stage.raw_strength, stage.raw_tau]   # noqa: E731
        own = [self.gain.log_scale] + shape(self.gain)
        return own if self.off is None else own + [self.off.bias] + shape(self.off.control)

    def outputs(self, stimulus: np.ndarray) -> torch.Tensor:
        """The BN-CNN's outputs (context + T, outputs) for a contrast stimulus (T, size, size) with grey before
        it: the ``context`` frames before the stimulus, then one per stimulus frame."""
        stim = np.asarray(stimulus, dtype=np.float32)
        pad = np.zeros((self.history - 1 + self.context,) + stim.shape[1:], np.float32)
        full = torch.from_numpy(np.concatenate([pad, stim]))
        return drive(self.cnn, full, np.arange(self.history - 1, len(full)))

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """Rates (T, cells), spikes per 10 ms bin, for a contrast stimulus (T, size, size), grey before it."""
        with torch.inference_mode():
            return self.stages(self.outputs(stimulus)[None])[0].numpy()


class Committee:
    """Several trained models answering as one: ``respond`` is the mean of their rates (a committee, or
    ensemble, of seeds). It has no one stage (``gain`` None), so :func:`result` reports no k, τ or g for it."""

    gain = None

    def __init__(self, members: list) -> None:
        if not members:
            raise ValueError("a committee needs at least one model")
        first = members[0]
        if any((m.history, m.size, m.n_cells) != (first.history, first.size, first.n_cells) for m in members):
            raise ValueError("a committee's models must share their history, size and cells")
        self.members = members
        self.history, self.size, self.n_cells = first.history, first.size, first.n_cells

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """The members' mean rates (T, cells), spikes per 10 ms bin, each member's grey before the stimulus."""
        return np.mean([m.respond(stimulus) for m in self.members], axis=0, dtype=np.float64).astype(np.float32)


class Remembered:
    """A model whose ``respond`` keeps each answer, by the stimulus's bytes: the committees drawn from the same
    members (:func:`committee_draws`) then run each member once per movie."""

    def __init__(self, model) -> None:
        self.model, self.history, self.size, self.n_cells = model, model.history, model.size, model.n_cells
        self._answers: dict = {}

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """``model.respond(stimulus)``, computed once per distinct stimulus (T, size, size)."""
        stim = np.ascontiguousarray(stimulus, dtype=np.float32)
        key = (stim.shape, hashlib.blake2b(stim.tobytes(), digest_size=16).digest())
        if key not in self._answers:
            self._answers[key] = self.model.respond(stim)
        return self._answers[key]


def committee_draws(members: list, names: list[str], sizes: list[int], draws: int = 20,
                    seed: int = 0) -> dict:
    """Whether committees of ``sizes`` members code latency: per size k, ``draws`` distinct k-member committees
    drawn at random (all of them when there are no more), each run through the latency experiment in every
    cell. Returns ``{k: [{"members": names, "present": per cell, "range_ms": per cell}, ...]}``; wrap the
    members in :class:`Remembered` so that each runs once."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in sizes:
        combos = list(itertools.combinations(range(len(members)), k))
        picked = [combos[i] for i in sorted(rng.choice(len(combos), min(draws, len(combos)), replace=False))]
        rows = []
        for combo in picked:
            committee = Committee([members[i] for i in combo])
            cells = [latency_summary(nr.experiments.run_truth("latency", committee, c).readout)
                     for c in range(committee.n_cells)]
            rows.append({"members": [names[i] for i in combo], "present": [c["present"] for c in cells],
                         "range_ms": [c["latency_range_ms"] for c in cells]})
        out[k] = rows
    return out


def report_draws(who: str, draws: dict) -> None:
    """Print, per committee size, how many drawn committees code latency in every cell, and their ranges."""
    for k, rows in draws.items():
        passing = sum(all(r["present"]) for r in rows)
        ranges = [x for r in rows for x in r["range_ms"]]
        print(f"{who}: committees of {k}: {passing} of {len(rows)} code latency in every cell "
              f"(ranges {min(ranges):.1f}-{max(ranges):.1f} ms)", flush=True)


def run_battery(retina, truth, cells: int) -> dict:
    """Each of :data:`PHENOMENA` on ``retina`` (anything with ``respond``), per cell, by the experiments' own
    criteria at their defaults (``nr.experiments.run_truth``): ``{"present": {name: [bool, ...]}, "r": {name:
    [r, ...]}}``, r the Pearson correlation of the cell's rate with ``truth``'s (also anything with ``respond``;
    wrap it in :class:`Remembered`) on that run's own movie, over its frames with a full history."""
    out = {"present": {}, "r": {}}
    for name in PHENOMENA:
        runs = [nr.experiments.run_truth(name, retina, c) for c in range(cells)]
        out["present"][name] = [bool(run.readout["present"]) for run in runs]
        out["r"][name] = [float(nr.metrics.pearson(run.rates[retina.history - 1:, c],
                                                   truth.respond(run.stimulus)[retina.history - 1:, c]))
                          for c, run in enumerate(runs)]
    return out


def report_battery(who: str, battery: dict) -> None:
    """Print, per phenomenon, in how many cells the committee shows it and how many of its members show it in
    every cell, and the r of their rates with the truth's on its movies (the committee's and the members')."""
    members = battery["members"].values()
    for name, cells in battery["committee"]["present"].items():
        showing = sum(all(m["present"][name]) for m in members)
        r = battery["committee"]["r"][name]
        rm = [x for m in members for x in m["r"][name]]
        print(f"{who}: {name} in {sum(cells)} of {len(cells)} cells; {showing} of {len(members)} members show it "
              f"in every cell; r with the truth on its movies {min(r):.3f}-{max(r):.3f} (members "
              f"{min(rm):.3f}-{max(rm):.3f})", flush=True)


def drive(cnn: nr.RetinaCNN, stim: torch.Tensor, ends: np.ndarray) -> torch.Tensor:
    """The BN-CNN's output (len(ends), cells) for the windows ending at ``ends``, in eval mode."""
    cnn.eval()
    with torch.inference_mode():
        return torch.cat([cnn.from_first_layer(cnn.first_layer_windows(stim, ends[i:i + CHUNK]))
                          for i in range(0, len(ends), CHUNK)])


def truth_stage(gt: syn.Retina, lags: int = LAGS) -> GainControl:
    """The v3 truth's ganglion gain control as a :class:`GainControl` on its undivided drive
    ``softplus(drive)``: the truth's ``k`` and ``τ``, its ``gain_j`` as g, ``lags`` past frames."""
    g = gt.params["gain_control"]["ganglion"]
    stage = GainControl(gt.n_cells, lags, g["strength"], g["tau"])
    with torch.no_grad():
        stage.log_scale.copy_(torch.log(torch.as_tensor(gt.cell_gain, dtype=torch.float32)))
    return stage


class TruthDrive:
    """The v3 truth's undivided drive as a retina's ``respond``: what its ganglion gain control averages and
    divides (``nr.experiments.run_truth`` runs the experiments on it)."""

    def __init__(self, gt: syn.Retina) -> None:
        self.gt, self.history, self.size, self.n_cells = gt, gt.history, gt.size, gt.n_cells

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """``softplus(drive)`` (T, cells), float32, for a contrast stimulus (T, size, size), grey before it."""
        return F.softplus(torch.from_numpy(self.gt.drive(stimulus))).numpy()


def undivided(counts: Path, path: Path, gt: syn.Retina) -> Path:
    """``path``: a copy of the dataset ``counts`` whose training responses are the v3 truth's undivided drive
    (:class:`TruthDrive`), so that :func:`truth_stage` on them gives the truth's rates (written once)."""
    def responses(src) -> np.ndarray:
        return TruthDrive(gt).respond(src["train/stimulus"][...]).T
    return with_train_responses(counts, path, responses,
                                "train: the truth's undivided drive softplus(drive), before its ganglion gain control "
                                "and gain_j; test: mean of repeats (spikes per 10 ms bin)")


def truth_off_stage(gt: syn.Retina, lags: int = OFF_LAGS) -> OffStage:
    """The v3 truth's OFF-stage gain control and its joining of the ON inputs as an :class:`OffStage` on the truth's
    own O and R (``Retina.off_and_on``): its k_off and τ_off, its bias as β, ``lags`` past frames."""
    g = gt.params["gain_control"]["off"]
    return OffStage(gt.n_cells, lags, g["strength"], g["tau"], gt.params["bias"])


def two_outputs(names: list[str]) -> list[str]:
    """The names of a two-stage BN-CNN's outputs for cells ``names``: each cell's OFF stage, then each one's ON inputs."""
    return [f"{n} OFF stage" for n in names] + [f"{n} ON inputs" for n in names]


def split_inputs(counts: Path, path: Path, gt: syn.Retina) -> Path:
    """``path``: the dataset ``counts`` with the v3 truth's two inputs, O (its rectified OFF stage before the OFF
    stage's gain control) and R (its ON inputs), as the responses of both splits, (T, 2 · cells) named by
    :func:`two_outputs`: what the BN-CNN of a two-stage model gives, so that :func:`truth_off_stage` and
    :func:`truth_stage` on them give the truth's rates (written once; no repeats)."""
    if not path.exists():
        ds = nr.io.read_dataset(counts)
        splits = {name: nr.io.Split(part.stimulus, gt.off_and_on(part.stimulus))
                  for name, part in (("train", ds.train), ("test", ds.test))}
        attrs = dict(ds.attrs, units="the truth's rectified OFF stage before its gain control, then its ON inputs "
                                     "(contrast-filter units, noise-free)")
        nr.io.write_dataset(path, nr.io.Dataset(splits["train"], splits["test"], two_outputs(ds.cell_names), attrs))
    return path


def read_targets(data: Path) -> nr.io.Dataset:
    """The dataset ``data`` a model is trained on. The truth's drive and its O and R (OUT/*_drive.h5, *_split.h5:
    :func:`undivided`, :func:`split_inputs`) are in the truth's own units, not spikes per bin, so the warning for
    rates that look like Hz is not given for them; every other dataset is read as :func:`napari_retina.io.read_dataset`
    reads it."""
    with warnings.catch_warnings():
        if data.stem.endswith(("_drive", "_split")):
            warnings.filterwarnings("ignore", message=".* look like Hz", category=UserWarning)
        return nr.io.read_dataset(data)


def _pass_through(bn: nn.BatchNorm1d, x: torch.Tensor, scale: float = 1.0) -> None:
    """Set ``bn`` to give back its input divided by ``scale``, in eval mode, on data like ``x`` (N, features): its
    running statistics are ``x``'s and its affine undoes them, so that in training mode too it changes a batch of such
    data little (but for the division)."""
    mean, var = x.mean(0), x.var(0, unbiased=False)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_(torch.sqrt(var + bn.eps) / scale)
    bn.bias.copy_(mean / scale)


class RectifiedCNN(nr.RetinaCNN):
    """A BN-CNN whose outputs are rectified, max(·, 0), in place of the softplus: answers that can be exactly 0, as the
    truth's O and R are (the two outputs of a :func:`planted` model with ``rectified``; saved and loaded as such)."""

    def from_activation(self, a: torch.Tensor) -> torch.Tensor:
        a2 = F.relu(self._noise(self.bn2(self.conv2(a))))
        return F.relu(self.bn3(self.linear(a2.flatten(1))))


def init_outputs(cnn: nr.RetinaCNN, rates: np.ndarray) -> None:
    """Start ``cnn``'s outputs at the firing-rate scale of ``rates`` (T, outputs), as ``init_readout`` does for the
    softplus; for a :class:`RectifiedCNN` the readout's β is the mean rate itself (max(β, 0) answers β where
    softplus answers softplus(β)), so that a typical frame answers the mean either way."""
    init_readout(cnn, rates)
    if isinstance(cnn, RectifiedCNN):
        readout = cnn.bn3 if isinstance(cnn.bn3, nn.BatchNorm1d) else cnn.linear
        with torch.no_grad():
            readout.bias.copy_(torch.from_numpy(np.maximum(np.nanmean(rates, 0), 1e-3).astype(np.float32)))


def cnn_class(state: Optional[dict]) -> type:
    """The BN-CNN class of a state :func:`save` wrote (None: the plain BN-CNN's)."""
    return RectifiedCNN if state is not None and state.get("output") == "relu" else nr.RetinaCNN


PLANT_RMS = (0.015, 0.02, 0.025)
"""The rms of a planted BN-CNN's conv1, conv2 and readout weights (:func:`planted`): the shipped model's, rounded. Each
batch norm makes the layer before it free of scale, but Adam's steps (about ``lr`` = 2e-3 per weight at first) and the
weight penalty act on a weight's own size: at the truth's own scale (its kernels' rms ~1.2e-3, smaller than one such
step) a run from the plant would test that scale, not the truth."""


def planted(gt: syn.Retina, stimulus: np.ndarray, c2: int = 8, noise: float = 0.0, seed: int = 0,
            windows: int = 3000, rms: Optional[tuple] = PLANT_RMS, rectified: bool = False) -> GainModel:
    """The truth ``gt`` (a gained version) built into a two-output BN-CNN, with its two stages on top: the split fit
    a perfect optimiser would find, if the BN-CNN can hold the truth at all. conv1 has one channel per pathway (the
    pathway's filter :meth:`syn.Pathway.kernel`, bias −threshold; twelve for versions 4 and 5), conv2 sums them at its
    centre tap into three channels (the ON inputs with their weights; the OFF stage's positive and negative parts),
    and the readout pools each by the cell's Gaussian (``gt.ganglion_pools``, the part over conv2's 26×26 map): per
    cell, O before its rectification (which the output's softplus stands in for) and R. Each batch norm passes its
    input through on ``windows`` windows of ``stimulus`` (T, 50, 50) contrast, the training movie
    (:func:`_pass_through`). ``noise`` > 0 adds to each conv1 kernel Gaussian noise of that many times its own rms
    (``seed``): a start near the truth, not at it. Each layer's weights and bias are then scaled so that its weights'
    rms is ``rms`` (:data:`PLANT_RMS`; None: the truth's own numbers), which the batch norms make no change to the
    model's answers. ``rectified``: a :class:`RectifiedCNN`, whose outputs are the truth's O and R themselves (but
    for the pools' cut). Returns the model on the CPU in eval mode."""
    if c2 < 3:
        raise ValueError(f"planted: conv2 needs 3 channels (the ON inputs, the OFF stage's two signs), got {c2}")
    paths = gt.pathways
    stage = gt._off_stage.tolist()                   # the retina's own rule: which pathways make its OFF stage
    names = [f"cell{j}" for j in range(gt.n_cells)]
    stim = np.ascontiguousarray(stimulus, np.float32)
    config = nr.ModelConfig(size=stim.shape[1], n_cells=2 * gt.n_cells, noise=0.0, cell_names=two_outputs(names),
                            channels=(len(paths), c2))
    config.norm = _norm_for(stim)
    cnn = (RectifiedCNN if rectified else nr.RetinaCNN)(config).eval()
    (k1, k2), (_, h2) = config.kernels, config.map_sizes
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c, q in enumerate(paths):
            k = torch.from_numpy(q.kernel().copy())
            cnn.conv1.weight[c] = k + noise * k.pow(2).mean().sqrt() * torch.randn(k.shape, generator=gen)
            cnn.conv1.bias[c] = -q.threshold
        cnn.conv2.weight.zero_()
        cnn.conv2.bias.zero_()
        for c, (q, off) in enumerate(zip(paths, stage)):
            out = 0 if not off else 1 if q.weight > 0 else 2
            cnn.conv2.weight[out, c, k2 // 2, k2 // 2] = abs(q.weight)
        o = k1 // 2 + k2 // 2                                       # the stimulus pixel under conv2's map pixel 0
        w = cnn.linear.weight.view(2 * gt.n_cells, c2, h2, h2)
        w.zero_()
        cnn.linear.bias.zero_()
        for j, pool in enumerate(torch.from_numpy(gt.ganglion_pools.astype(np.float32))):
            pool = pool[o:o + h2, o:o + h2]
            w[j, 1], w[j, 2], w[gt.n_cells + j, 0] = pool, -pool, pool
        f1, f2, f3 = [1.0] * 3 if rms is None else [target / float(layer.weight.pow(2).mean().sqrt())
                                                     for layer, target in zip((cnn.conv1, cnn.conv2, cnn.linear), rms)]
        for layer, factor in zip((cnn.conv1, cnn.conv2, cnn.linear), (f1, f2, f3)):
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)
        t = torch.from_numpy(stim)
        ends = np.linspace(config.history - 1, len(stim) - 1, min(windows, len(stim) - config.history + 1)).astype(int)
        z1 = cnn.first_layer_windows(t, ends)
        _pass_through(cnn.bn1.bn, z1.flatten(1), f1)
        z2 = cnn.conv2(F.relu(cnn.bn1(z1)))
        _pass_through(cnn.bn2.bn, z2.flatten(1), f2)
        _pass_through(cnn.bn3, cnn.linear(F.relu(cnn.bn2(z2)).flatten(1)), f3)
    return GainModel(cnn, truth_stage(gt), truth_off_stage(gt))


def split(n_frames: int, history: int, lags: int, holdout: float) -> tuple[int, int, np.ndarray]:
    """First and last scored fit window end, and the held-out window ends (the tail): every scored
    window has ``lags`` full-history windows before it, and the held-out windows, with their context,
    share no stimulus frame with a fit window."""
    valid = np.arange(history - 1 + lags, n_frames)
    hold = valid[-max(1, int(round(holdout * len(valid)))):]
    return int(valid[0]), int(hold[0] - lags - history), hold


def heldout(model: GainModel, stim: torch.Tensor, rates: np.ndarray, hold: np.ndarray,
            loss_fn=poisson) -> tuple[float, float]:
    """Held-out loss (``loss_fn``, the Poisson loss by default) and mean Pearson r over cells."""
    ends = np.arange(hold[0] - model.context, hold[-1] + 1)
    with torch.inference_mode():
        pred = model.stages(drive(model.cnn, stim, ends)[None])[0].cpu()  # scored on the host, whatever the device
    target = torch.from_numpy(rates[hold])
    return float(loss_fn(pred, target)), float(np.nanmean(nr.metrics.pearson(pred.numpy(), rates[hold])))


def train_gain(data: Path, seed: int, gain: bool, epochs: int, patience: int, lr_patience: int, noise: float,
               holdout: float, out: Path, device: str = "cpu", init: Optional[Path] = None,
               strength: float = 0.5, tau: float = 10.0, fixed: bool = False,
               saved_stages: Optional[tuple[GainControl, Optional[OffStage]]] = None, loss_fn=poisson,
               warmup: int = 0, off: Optional[tuple[float, float]] = None,
               channels: tuple[int, int] = (8, 8), frozen_bn: bool = False,
               lr: float = RECIPE["lr"], rectified: bool = False, penalty: bool = True) -> tuple[GainModel, list]:
    """Train a BN-CNN with (``gain``) or without its gain control on the dataset ``data``, from scratch or
    from the model saved at ``init`` (its BN-CNN, and its stage when it has one); the gain control starts
    at ``strength`` and ``tau`` (frames) and g = 1 otherwise, and is learnt, but for k and τ when ``fixed``.
    The best state by held-out loss is saved to ``out`` at each improvement and returned (on the CPU) with
    the history; saved with ``saved_stages`` (the ganglion's stage, and the OFF stage's or None) in place of
    the trained ones when given (``--targets drive``: the BN-CNN learns the undivided drive, and is saved and
    scored with the truth's stage on it; ``--targets split``: it learns the truth's O and R, and is saved with
    both of the truth's stages). ``loss_fn``
    (pred, target) → scalar is the training and held-out loss (:data:`LOSSES`). The first ``warmup`` epochs'
    held-out losses count for nothing: no best, no patience, no step of the learning-rate schedule (each is
    saved, so that a run that ends there still leaves a model); an early dip of the held-out loss otherwise
    stands as the best while the schedule halves the rate every ``lr_patience`` epochs (docs/MODEL.md).
    ``off`` = (k_off, τ_off) adds the OFF stage's gain control (:class:`OffStage`, starting there, fixed with
    ``fixed``, β from 0) before the ganglion's, on a BN-CNN with two outputs per cell. ``channels``: the BN-CNN's
    (first, second) layer's channels from scratch; from ``init``, the init's own. ``frozen_bn``: the batch norms
    normalise by their running statistics in training too (the init's; their affine still learns), not by each
    batch's, whose few blocks of consecutive frames can differ much from the whole movie. From an ``init`` the
    held-out loss and r before the first step are printed and kept in the history as epoch 0 (not a best). ``lr``:
    Adam's learning rate at the start (the recipe's by default). ``rectified``: from scratch, a :class:`RectifiedCNN`
    whose outputs start at the rates' mean (the readout's β is the mean itself, not softplus⁻¹ of it); from
    ``init``, the init's own kind (rectified with a softplus init is an error). ``penalty``: the recipe's weight
    penalty (L2 on the kernels, L1 on the readout) is added to the training loss; without it, the loss alone."""
    ds = read_targets(data)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cells, names = ds.train.rates.shape[1], list(ds.cell_names)
    if off is not None:
        names = two_outputs(names)
    state = None if init is None else torch.load(init, map_location="cpu", weights_only=True)
    if state is not None:
        channels = tuple(state["config"]["channels"])
    config = nr.ModelConfig(size=ds.train.stimulus.shape[1], n_cells=len(names), noise=noise, cell_names=names,
                            channels=channels)
    config.norm = _norm_for(ds.train.stimulus)
    if rectified and state is not None and cnn_class(state) is not RectifiedCNN:
        raise ValueError(f"rectified, but the init {init} has softplus outputs: a run keeps its init's kind")
    cnn = cnn_class(state)(config) if state is not None else (RectifiedCNN if rectified else nr.RetinaCNN)(config)
    lags = LAGS if gain else 0
    rates = ds.train.rates.astype(np.float32)
    offstage = None if off is None else OffStage(cells, OFF_LAGS, *off)
    model = GainModel(cnn, GainControl(cells, lags, strength, tau), offstage)
    fit_lo, fit_hi, hold = split(len(rates), config.history, model.context, holdout)
    if init is None:        # with the OFF stage, each of a cell's two outputs starts at half its rate
        fit = rates[fit_lo:fit_hi + 1]
        init_outputs(cnn, fit if off is None else np.tile(fit / 2, (1, 2)))
    else:
        cnn.load_state_dict(saved_cnn(state).state_dict())
        if lags and state["lags"] == lags:      # its stages too: a run goes on
            model.gain.load_state_dict(state["gain"])
            if offstage is not None and "off" in state:
                offstage.load_state_dict(state["off"])
    model = GainModel(cnn.to(device), model.gain.to(device), None if offstage is None else offstage.to(device))
    stim = torch.from_numpy(np.ascontiguousarray(ds.train.stimulus, np.float32)).to(device)
    target = torch.from_numpy(rates).to(device)
    params = list(cnn.parameters()) + model.trainable(fixed)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=lr_patience - 1)
    saved = model if saved_stages is None else GainModel(cnn, *saved_stages)     # what is saved: the same modules
    best, bad, history, t0 = math.inf, 0, [], time.time()
    if init is not None:
        loss, r = heldout(model, stim, rates, hold, loss_fn)
        history.append({"epoch": 0, "heldout_loss": loss, "heldout_r": r})
        print(json.dumps({k: round(v, 3) for k, v in history[-1].items()}), flush=True)
    for epoch in range(1, epochs + 1):
        cnn.train()
        if frozen_bn:
            for module in cnn.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        offset = int(torch.randint(0, PER_BLOCK, (1,), generator=gen))
        starts = np.arange(fit_lo + offset, fit_hi - PER_BLOCK + 2, PER_BLOCK)
        starts = starts[torch.randperm(len(starts), generator=gen).numpy()]
        losses = []
        for i in range(0, len(starts) - BLOCKS + 1, BLOCKS):
            ends = np.concatenate([np.arange(s - model.context, s + PER_BLOCK) for s in starts[i:i + BLOCKS]])
            n = cnn.from_first_layer(cnn.first_layer_windows(stim, ends)).view(BLOCKS, model.context + PER_BLOCK, -1)
            scored = np.concatenate([np.arange(s, s + PER_BLOCK) for s in starts[i:i + BLOCKS]])
            loss = loss_fn(model.stages(n).reshape(-1, cells), target[torch.from_numpy(scored).to(device)])
            opt.zero_grad(set_to_none=True)
            (loss + weight_penalty(cnn, RECIPE["l2"], RECIPE["l1_linear"]) if penalty else loss).backward()
            opt.step()
            losses.append(float(loss.detach()))
        loss, r = heldout(model, stim, rates, hold, loss_fn)
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)), "heldout_loss": loss, "heldout_r": r,
                 "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0}
        if lags:
            entry.update(k=model.gain.strength.tolist(), tau=model.gain.tau.tolist(), g=model.gain.scale.tolist())
        if offstage is not None:
            entry.update(k_off=offstage.control.strength.tolist(), tau_off=offstage.control.tau.tolist(),
                         bias=offstage.bias.tolist())
        history.append(entry)
        print(json.dumps({k: (float(f"{v:.3g}") if k == "lr" else np.round(v, 3).tolist()
                              if isinstance(v, (list, float)) else v) for k, v in entry.items()}), flush=True)
        if epoch <= warmup:
            save(out, saved, history)
            continue
        sched.step(loss)
        if loss < best - 1e-4:
            best, bad = loss, 0
            save(out, saved, history)
        else:
            bad += 1
            if bad >= patience:
                break
    return load(out), history


def save(path: Path, model: GainModel, history: list) -> None:
    """The model's states and architecture, as tensors, lists and numbers only (``weights_only`` loads it)."""
    tensors = lambda module: {k: v.detach().cpu() for k, v in module.state_dict().items()}   # noqa: E731
    state = {"config": model.cnn.config.to_dict(), "lags": model.gain.lags, "history": history,
             "cnn": tensors(model.cnn), "gain": tensors(model.gain),
             "output": "relu" if isinstance(model.cnn, RectifiedCNN) else "softplus"}
    if model.off is not None:
        state.update(off_lags=model.off.lags, off=tensors(model.off))
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: Path) -> GainModel:
    """A model :func:`save` wrote, on the CPU, in eval mode; no code from the file runs."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    cnn = saved_cnn(state)
    cells = state["gain"]["log_scale"].numel()
    gain = GainControl(cells, state["lags"])
    gain.load_state_dict(state["gain"])
    off = None
    if "off" in state:
        off = OffStage(cells, state["off_lags"])
        off.load_state_dict(state["off"])
    return GainModel(cnn, gain, off)


def saved_cnn(state: dict) -> nr.RetinaCNN:
    """The BN-CNN of a state :func:`save` wrote, in eval mode."""
    cnn = cnn_class(state)(nr.ModelConfig.from_dict(state["config"]))
    cnn.load_state_dict(state["cnn"])
    return cnn.eval()


def division(stage: GainControl, undivided, movie: np.ndarray) -> dict:
    """How much ``stage`` divides on a flash movie (the latency experiment's): its :meth:`GainControl.divisor`
    on ``undivided(movie)`` (a ``respond``: the drive N, (T, cells), grey before the movie), per cell, at rest
    (the frame before the first flash) and at its largest between each flash and the next, by the flash's
    intensity (the movie's level at its first frame)."""
    grey = np.zeros((stage.lags,) + movie.shape[1:], np.float32)
    n = torch.from_numpy(np.asarray(undivided(np.concatenate([grey, movie])), np.float32))
    with torch.no_grad():
        d = stage.divisor(n[None])[0].numpy()
    level = movie[:, 0, 0]
    onsets = flash_onsets(movie)
    ends = np.r_[onsets[1:], len(movie)]
    return {"rest": d[onsets[0] - 1].tolist(),
            "peak": {float(level[t]): d[t:e].max(0).tolist() for t, e in zip(onsets, ends)}}


def early_share(respond, movie: np.ndarray, window: int = 30, before: int = 20) -> dict:
    """Per flash of a flash movie (by its intensity) and per cell: the response's largest rise above its
    grey level (the median of the ``before`` frames before the flash) in the first :data:`EARLY_FRAMES`
    frames from the onset, as a fraction of its largest rise in ``window`` frames. At 0.2 or more
    (the latency readout's ``ONSET_FRACTION``) the readout finds the answer's onset in that early part."""
    r = np.asarray(respond(movie), np.float64)
    out = {}
    for t in flash_onsets(movie):
        rise = r[t:t + window] - np.median(r[t - before:t], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):        # no answer: inf or nan
            out[float(movie[t, 0, 0])] = (rise[:EARLY_FRAMES].max(0) / rise.max(0)).tolist()
    return out


def off_stage_vs_truth(model: GainModel, gt: syn.Retina, cell: int = 0) -> dict:
    """Does the model carry the OFF signal through its OFF stage? Per experiment of :data:`PHENOMENA` (on cell
    ``cell``'s movie, grey before it): the OFF stage's share of the cell's excitatory input, ``Σ_t O'_t / Σ_t
    (O'_t + R_t)`` over the movie's frames, O' the OFF stage after its gain control and R the ON inputs, the
    model's (:class:`OffStage`) and the truth's (``Retina.contributions``), and the Pearson r of the model's O'
    with the truth's over the frames with a full history: ``{name: {"model": s, "truth": s, "r": r}}``."""
    out = {}
    for name in PHENOMENA:
        movie = np.asarray(nr.experiments.run_truth(name, gt, cell).stimulus, np.float32)
        n, cells = model.outputs(movie), model.n_cells
        with torch.inference_mode():
            off = model.off.control(n[None, :, :cells])[0, -len(movie):, cell]
        on = n[-len(movie):, cells + cell]
        parts = gt.contributions(movie, cell)
        truth_on = sum(v for k, v in parts.items() if k not in ("OFF stage", "bias"))
        full = slice(model.history - 1, None)
        out[name] = {"model": float(off.sum() / (off + on).sum()),
                     "truth": float(parts["OFF stage"].sum() / (parts["OFF stage"] + truth_on).sum()),
                     "r": float(nr.metrics.pearson(off.numpy()[full], parts["OFF stage"][full]))}
    return out


class MixedInputs:
    """The truth's two stages (:func:`truth_off_stage`, :func:`truth_stage`) on the OFF stage O of one source and
    the ON inputs R of another, as a retina's ``respond``: each the model's (the two outputs per cell of its BN-CNN,
    :meth:`GainModel.outputs`) or the truth's (``Retina.off_and_on``), ``off_from`` and ``on_from`` "model" or
    "truth". Which of a two-stage model's inputs makes an experiment's result differ from the truth's? With
    ``on_from`` "model", ``on_share`` keeps that share of the model's error in R: R_truth + on_share · (R_model −
    R_truth) (1, the default: the model's R; how much of its error does a result survive?). ``onto``, another
    truth (e.g. ``Retina(version=4)``), carries that error over to it: its stages, its O (with ``off_from``
    "truth") and R_onto + on_share · (R_model − R_truth), the error still measured against ``gt``, the truth the
    model was fitted to (how much of such an error would the other truth's result survive?)."""

    def __init__(self, model: GainModel, gt: syn.Retina, off_from: str, on_from: str, on_share: float = 1.0,
                 onto: syn.Retina | None = None) -> None:
        if model.off is None:
            raise ValueError("MixedInputs needs a model with an OFF stage (two outputs per cell)")
        if not {off_from, on_from} <= {"model", "truth"}:
            raise ValueError(f"off_from and on_from must be 'model' or 'truth', got {off_from!r} and {on_from!r}")
        self.model, self.gt, self.off_from, self.on_from, self.on_share = model, gt, off_from, on_from, on_share
        self.onto = gt if onto is None else onto
        self.history, self.size, self.n_cells = model.history, model.size, model.n_cells
        self.truths = GainModel(model.cnn, truth_stage(self.onto, model.gain.lags),
                                truth_off_stage(self.onto, model.off.lags))

    def inputs(self, source: str, stimulus: np.ndarray, truth: syn.Retina | None = None) -> torch.Tensor:
        """O then R, (context + T, 2 · cells), of ``source`` for a contrast stimulus (T, size, size), grey before it;
        "truth": ``truth``'s (default: ``onto``'s)."""
        if source == "model":
            return self.model.outputs(stimulus)
        stim = np.asarray(stimulus, dtype=np.float32)
        grey = np.zeros((self.model.context,) + stim.shape[1:], np.float32)
        return torch.from_numpy((self.onto if truth is None else truth).off_and_on(np.concatenate([grey, stim])))

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """Rates (T, cells), spikes per 10 ms bin: the truth's stages on O of ``off_from`` and R of ``on_from``."""
        off = self.inputs(self.off_from, stimulus)
        on = off if self.on_from == self.off_from else self.inputs(self.on_from, stimulus)
        if self.on_from == "model" and (self.on_share != 1.0 or self.onto is not self.gt):
            truth = off if self.off_from == "truth" else self.inputs("truth", stimulus)
            fitted = truth if self.onto is self.gt else self.inputs("truth", stimulus, self.gt)
            on = truth + self.on_share * (on - fitted)
        n = torch.cat([off[:, :self.n_cells], on[:, self.n_cells:]], 1)
        with torch.inference_mode():
            return self.truths.stages(n[None])[0].numpy()


#: the (O, R) sources :func:`osr_by_input` puts the truth's stages on
INPUT_PAIRS = (("truth", "truth"), ("model", "truth"), ("truth", "model"), ("model", "model"))


def osr_summary(retina, cell: int = 0) -> dict:
    """The omitted-stimulus experiment on cell ``cell`` of ``retina`` (anything with ``respond``): its readout's
    latency slope, r², smallest rise share over the periods (``omitted_share``: the criterion asks
    ``osr.MIN_RISE_SHARE`` of each; NaN where the train raised nothing) and criterion,
    ``{"slope": s, "r2": r², "share": share, "present": bool}``."""
    ro = nr.experiments.run_truth("osr", retina, cell).readout
    return {"slope": float(ro["slope"]), "r2": float(ro["r2"]), "share": float(np.min(ro["omitted_share"])),
            "present": bool(ro["present"])}


def osr_words(summary: dict) -> str:
    """An :func:`osr_summary` in words: its slope, r² and smallest share, and whether the criterion passes."""
    return (f"slope {summary['slope']:.2f}, r2 {summary['r2']:.2f}, share {summary['share']:.2f}"
            f"{' (present)' if summary['present'] else ''}")


def margin_words(margin: dict) -> str:
    """An :func:`osr_margin` in words: each share and :func:`osr_words` of its OSR."""
    return "; ".join(f"{share:g}: {osr_words(o)}" for share, o in margin.items())


def osr_by_input(model: GainModel, gt: syn.Retina, cell: int = 0) -> dict:
    """:func:`osr_summary` on cell ``cell`` of :class:`MixedInputs` for each pair of :data:`INPUT_PAIRS`, by pair:
    ``{"O truth, R model": summary, ...}``. Does the model's OFF stage or its ON inputs keep its OSR from the
    truth's?"""
    return {f"O {off_from}, R {on_from}": osr_summary(MixedInputs(model, gt, off_from, on_from), cell)
            for off_from, on_from in INPUT_PAIRS}


#: the shares of a model's error in R that :func:`osr_margin` tries
R_ERROR_SHARES = (0.05, 0.1, 0.2, 0.5)


def osr_margin(model: GainModel, gt: syn.Retina, shares: tuple = R_ERROR_SHARES, cell: int = 0,
               onto: syn.Retina | None = None) -> dict:
    """How much of the model's error in its ON inputs the truth's OSR survives: :func:`osr_summary` on cell ``cell``
    with the truth's O and stages and R = R_truth + share · (R_model − R_truth) (:class:`MixedInputs`), by share:
    ``{share: summary}``; with ``onto``, that truth's O, stages and R plus the share of the error against ``gt``."""
    return {float(share): osr_summary(MixedInputs(model, gt, "truth", "model", share, onto), cell) for share in shares}


def result(model: GainModel | Committee, gt: syn.Retina, test_stimulus: np.ndarray) -> dict:
    """r against the truth's rates on the test stimulus, the latency summary per cell, the loss by flash
    strength (``flash_ceiling.loss_by_strength``), how early each flash's answer begins (``early``:
    :func:`early_share` on the latency movie), the learnt k, τ and g, and, with a stage, what comes
    before it (``undivided``: the BN-CNN's output and the truth's :class:`TruthDrive`, cell 0's latencies
    and each cell's level at grey) and how much each stage divides on the latency movie (``division``: the
    model's and the truth's, :func:`division`), and with an OFF stage its k, τ and β, :func:`off_stage_vs_truth`,
    :func:`osr_by_input` and :func:`osr_margin` (``off``)."""
    pred, true = model.respond(test_stimulus)[model.history - 1:], gt.respond(test_stimulus)[model.history - 1:]
    r = np.nanmean(nr.metrics.pearson(pred, true))
    latency = lambda retina, cell=0: latency_summary(nr.experiments.run_truth("latency", retina, cell).readout)  # noqa: E731
    movie = nr.experiments.run_truth("latency", gt, 0).stimulus
    out = {"r_true": float(r), "k": None, "tau_frames": None, "g": None,
           "cells": [latency(model, c) for c in range(gt.n_cells)], "loss": loss_by_strength(model.respond, gt),
           "early": early_share(model.respond, movie)}
    if model.gain is not None and model.gain.lags:      # none without the stage (the plain control, a committee)
        with torch.no_grad():
            out.update(k=model.gain.strength.tolist(), tau_frames=model.gain.tau.tolist(), g=model.gain.scale.tolist())
            if model.off is not None:
                out["off"] = {"truth": {"k": gt.params["gain_control"]["off"]["strength"], "bias": gt.params["bias"],
                                        "tau_frames": gt.params["gain_control"]["off"]["tau"]},
                              "k": model.off.control.strength.tolist(), "tau_frames": model.off.control.tau.tolist(),
                              "bias": model.off.bias.tolist(), "vs_truth": off_stage_vs_truth(model, gt),
                              "osr_by_input": osr_by_input(model, gt), "osr_margin": osr_margin(model, gt)}
                if gt.version != 4:                     # a model of another truth: its error carried over to 4
                    out["off"]["osr_margin_v4"] = osr_margin(model, gt, R_ERROR_SHARES + (1.0,),
                                                             onto=syn.Retina(seed=0, version=4))
        before, truth = GainModel(model.cnn, GainControl(gt.n_cells, 0), model.off), TruthDrive(gt)
        grey = np.zeros((gt.history + 1, gt.size, gt.size), np.float32)
        out["undivided"] = {"model": latency(before)["latency_ms"], "truth": latency(truth)["latency_ms"],
                            "grey_model": before.respond(grey)[-1].tolist(), "grey_truth": truth.respond(grey)[-1].tolist()}
        out["division"] = {"model": division(model.gain, before.respond, movie),
                           "truth": division(truth_stage(gt, syn.GAIN_HISTORY), truth.respond, movie)}
    return out


def report_stage(who: str, res: dict) -> None:
    """Print the early shares of the two weakest flashes' answers over the cells, and for a gain-controlled
    model its k, τ and g, cell 0's latencies before its stage and the truth's, both drives at grey, how
    much each stage divides cell 0 at rest and after the weakest and the strongest flash, and the OFF stage's
    k, τ and β, its share of cell 0's input on each movie and its r with the truth's, and cell 0's OSR with the
    truth's stages on the model's or the truth's O and R and with a share of its error in R, when it has one."""
    weakest = sorted(res["early"], reverse=True)[:2]
    shares = "; ".join(f"{i:g}: {min(res['early'][i]):.2f}-{max(res['early'][i]):.2f}" for i in weakest)
    print(f"{who}: answer in the first {EARLY_FRAMES * FRAME_MS:g} ms, share of its peak over the cells: {shares}",
          flush=True)
    if res["k"] is not None:
        print(f"{who}: k {np.round(res['k'], 3)}, tau {np.round(res['tau_frames'], 1)} frames, "
              f"g {np.round(res['g'], 3)}; before the stage, cell 0's latency {np.round(res['undivided']['model'], 1)} "
              f"ms (the truth's undivided drive: {np.round(res['undivided']['truth'], 1)} ms), at grey "
              f"{np.round(res['undivided']['grey_model'], 3)} (the truth's: {np.round(res['undivided']['grey_truth'], 3)})",
              flush=True)
        print(f"{who}: the stage divides cell 0 by {divides(res['division']['model'])} (the truth's: "
              f"{divides(res['division']['truth'])})", flush=True)
    if res.get("off") is not None:
        t = res["off"]["truth"]
        print(f"{who}: OFF stage k {np.round(res['off']['k'], 3)}, tau {np.round(res['off']['tau_frames'], 1)} frames, "
              f"bias {np.round(res['off']['bias'], 2)} (the truth's: k {t['k']:g}, tau {t['tau_frames']:g}, "
              f"bias {t['bias']:g})", flush=True)
        shares = ", ".join(f"{name} {s['model']:.2f} ({s['truth']:.2f}; r {s['r']:.2f})"
                           for name, s in res["off"]["vs_truth"].items())
        print(f"{who}: the OFF stage's share of cell 0's input on each movie (the truth's; r of the two OFF stages): "
              f"{shares}", flush=True)
        mixed = "; ".join(f"{pair} {osr_words(o)}" for pair, o in res["off"]["osr_by_input"].items())
        print(f"{who}: cell 0's OSR with the truth's stages on the model's or the truth's O and R: {mixed}", flush=True)
        print(f"{who}: cell 0's OSR with the truth's O and R plus a share of the model's error in R: "
              f"{margin_words(res['off']['osr_margin'])}", flush=True)
        if "osr_margin_v4" in res["off"]:
            print(f"{who}: the same error carried over to version 4 (its O, R and stages): "
                  f"{margin_words(res['off']['osr_margin_v4'])}", flush=True)


def divides(division_: dict) -> str:
    """Cell 0's divisor at rest and at its largest after the weakest and the strongest flash, in words."""
    peak = division_["peak"]
    weak, strong = max(peak), min(peak)
    return (f"{division_['rest'][0]:.3g} at rest, up to {peak[weak][0]:.3g} after {weak:g} and "
            f"{peak[strong][0]:.3g} after {strong:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--no-gain", action="store_true", help="the control: the plain BN-CNN, trained the same way")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--lr-patience", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=0,
                    help="epochs whose held-out loss counts for nothing (no best, patience or learning-rate step)")
    ap.add_argument("--movie", choices=("experiment", "osr", "flashes", "battery"), default="experiment",
                    help="experiment (default): the latency experiment's movie, three copies; osr: the omitted-stimulus "
                         "experiment's, the same way; flashes: random flashes; "
                         "battery: the five experiments' movies (PHENOMENA), two copies, the second held out")
    ap.add_argument("--frames", type=int, default=20000, help="frames of random flashes (--movie flashes)")
    ap.add_argument("--targets", choices=("rates", "counts", "drive", "split"), default="rates",
                    help="rates (default), counts, or drive: the truth's undivided drive, learnt by the plain BN-CNN "
                         "(with --no-gain) and scored with the truth's own stage on top; split: the truth's OFF stage "
                         "and ON inputs, two outputs per cell (with --no-gain), scored with both of its stages on top")
    ap.add_argument("--loss", choices=tuple(LOSSES), default="poisson",
                    help="poisson (default); log: squared error of log(0.1 + output), each answer's relative error; "
                         "both: their sum")
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--channels", type=int, nargs=2, default=[8, 8], metavar=("C1", "C2"),
                    help="the BN-CNN's channels per layer from scratch (default 8 8; with --init, the init's)")
    ap.add_argument("--frozen-bn", action="store_true",
                    help="the batch norms keep their running statistics in training (from --init: the init's), not "
                         "each batch's")
    ap.add_argument("--rectified", action="store_true",
                    help="the BN-CNN's outputs rectified (ReLU) in place of the softplus, as the truth's O and R "
                         "are (RectifiedCNN): planted (--plant) or trained from scratch; a run from an --init keeps "
                         "the init's kind, so give --rectified with a rectified init only")
    ap.add_argument("--lr", type=float, default=RECIPE["lr"], help=f"Adam's learning rate (default {RECIPE['lr']:g})")
    ap.add_argument("--no-penalty", action="store_true",
                    help="train on the loss alone, without the recipe's weight penalty (L2 on the kernels, L1 on the "
                         "readout; with --frozen-bn no longer free of scale)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--init", type=Path, metavar="MODEL",
                    help="start from this saved model: its BN-CNN (OUT/plain_SEED.pt), and its stage when it has "
                         "one (OUT/gain_SEED.pt: the run goes on)")
    ap.add_argument("--name", help="the outputs' name (default gain, plain or drive)")
    ap.add_argument("--k", type=float, default=0.5, help="the gain control's starting strength (default 0.5)")
    ap.add_argument("--tau", type=float, default=10.0, help="its starting time constant, frames (default 10)")
    ap.add_argument("--fixed", action="store_true", help="keep k and tau as given: learn the BN-CNN and g")
    ap.add_argument("--off-stage", action="store_true",
                    help="add the truth's OFF-stage gain control before the ganglion's (OffStage): the BN-CNN gives "
                         "each cell's OFF stage and ON inputs; --fixed keeps its k and tau too")
    ap.add_argument("--off-k", type=float, default=0.5, help="the OFF stage's starting strength (default 0.5)")
    ap.add_argument("--off-tau", type=float, default=10.0, help="its starting time constant, frames (default 10)")
    ap.add_argument("--truth-stages", action="store_true",
                    help="start each gain control at the truth's own k and tau (the --retina-version asked for), in "
                         "place of --k, --tau, --off-k and --off-tau; with --fixed they stay there")
    ap.add_argument("--score", type=Path, nargs="+", metavar="MODEL", help="train nothing: report these models")
    ap.add_argument("--committee", metavar="NAME", help="with --score: score the mean of the models' rates as one "
                    "model, written to OUT/latency_NAME.json")
    ap.add_argument("--draw", type=int, nargs="+", default=[], metavar="K",
                    help="with --committee: also score 20 committees of K of the models, drawn at random, per K")
    ap.add_argument("--battery", action="store_true",
                    help="with --committee: also run the five experiments of the truth's phenomena on the committee "
                         "and on each member, every cell, with each one's r with the truth on those movies")
    ap.add_argument("--data", action="store_true", help="write the datasets (counts, rates, drive, split) and stop")
    ap.add_argument("--plant", type=float, metavar="NOISE",
                    help="train nothing: build the truth into a two-output BN-CNN with its two stages (planted: one "
                         "conv1 channel per pathway, NOISE times each kernel's rms added, 0 for none; conv2's channels "
                         "from --channels), write it to OUT/{--name or planted}_SEED.pt and score it; --init it to "
                         "train from the truth")
    ap.add_argument("--retina-version", type=int, choices=syn.GAINED_VERSIONS, default=3,
                    help="the truth: 3 (default) or 4 (3 with a bank of tuned ON pathways); use one OUT per version")
    args = ap.parse_args()
    if args.committee and not args.score:
        ap.error("--committee scores the models given with --score")
    if (args.draw or args.battery) and not args.committee:
        ap.error("--draw and --battery score a committee: give --committee NAME")
    if any(not 1 <= k <= len(args.score or []) for k in args.draw):
        ap.error(f"--draw sizes must be between 1 and the {len(args.score or [])} models given")
    torch.set_num_threads(args.threads)
    gt = syn.Retina(seed=0, version=args.retina_version)
    if args.truth_stages:
        stages = gt.params["gain_control"]
        args.k, args.tau = stages["ganglion"]["strength"], stages["ganglion"]["tau"]
        args.off_k, args.off_tau = stages["off"]["strength"], stages["off"]["tau"]
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"{args.movie}.h5"
    if not data.exists():
        record(data, args.movie, args.frames, gt)
    if args.data:
        noise_free(data, args.out / f"{args.movie}_rates.h5")
        undivided(data, args.out / f"{args.movie}_drive.h5", gt)
        split_inputs(data, args.out / f"{args.movie}_split.h5", gt)
        return
    if args.plant is not None:
        dataset = nr.io.read_dataset(data)                # one read for the plant's movie and the scores' test
        train, test = dataset.train.stimulus, dataset.test.stimulus
        for seed in args.seeds:
            path = args.out / f"{args.name or 'planted'}_{seed}.pt"
            model = planted(gt, train, args.channels[1], args.plant, seed, rectified=args.rectified)
            save(path, model, [])
            res = result(model, gt, test)
            report(path.with_name(f"latency_{path.stem}.json"), path.stem, res)
            report_stage(path.stem, res)
        return
    test = nr.io.read_dataset(data).test.stimulus
    if args.score and args.committee:
        members = [Remembered(load(path)) for path in args.score]
        committee = Committee(members)
        res = result(committee, gt, test)
        names = [f"{path.parent.name}/{path.stem}" for path in args.score]
        if args.draw:
            res["draws"] = committee_draws(members, names, args.draw)
        if args.battery:
            truth = Remembered(gt)
            res["battery"] = {"committee": run_battery(committee, truth, committee.n_cells),
                              "members": {n: run_battery(m, truth, m.n_cells) for n, m in zip(names, members)}}
        report(args.out / f"latency_{args.committee}.json", args.committee, res)
        report_stage(args.committee, res)
        report_draws(args.committee, res.get("draws", {}))
        if args.battery:
            report_battery(args.committee, res["battery"])
        return
    if args.score:
        for path in args.score:
            res = result(load(path), gt, test)
            report(path.with_name(f"latency_{path.stem}.json"), path.stem, res)
            report_stage(path.stem, res)
        return
    if args.targets in ("drive", "split") and not args.no_gain:
        ap.error(f"--targets {args.targets} trains the plain BN-CNN (--no-gain); the truth's stages are put on it "
                 "to score it")
    if args.off_stage and args.no_gain:
        ap.error("--off-stage comes before the ganglion's gain control: it cannot go with --no-gain")
    if args.targets == "rates":
        data = noise_free(data, args.out / f"{args.movie}_rates.h5")
    elif args.targets == "drive":
        data = undivided(data, args.out / f"{args.movie}_drive.h5", gt)
    elif args.targets == "split":
        data = split_inputs(data, args.out / f"{args.movie}_split.h5", gt)
    saved = {"drive": (truth_stage(gt), None), "split": (truth_stage(gt), truth_off_stage(gt))}.get(args.targets)
    kind = args.name or (args.targets if args.targets in ("drive", "split") else "plain" if args.no_gain
                         else "twostage" if args.off_stage else "gain")
    for seed in args.seeds:
        model, _ = train_gain(data, seed, not args.no_gain, args.epochs, args.patience, args.lr_patience, args.noise,
                              HOLDOUT.get(args.movie, {}).get("holdout", TrainConfig.holdout),
                              args.out / f"{kind}_{seed}.pt", args.device, args.init, args.k, args.tau, args.fixed,
                              saved, LOSSES[args.loss], args.warmup,
                              (args.off_k, args.off_tau) if args.off_stage else None, tuple(args.channels),
                              args.frozen_bn, args.lr, args.rectified, not args.no_penalty)
        res = result(model, gt, test)
        report(args.out / f"latency_{kind}_{seed}.json", f"{kind} {seed}", res)
        report_stage(f"{kind} {seed}", res)


if __name__ == "__main__":
    main()
